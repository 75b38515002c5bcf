"""What a person is told when Temporal, not the run, refuses a decision."""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import uuid

import pytest
from temporalio import workflow
from temporalio.client import Client
from temporalio.worker import Worker

from baton.client import DecisionRefused, RunNotReady, decide
from baton.gates import Decision, GateDecision
from baton.server import EmbeddedServer


@workflow.defn(name="broken_before_its_gate", sandboxed=False)
class BrokenBeforeItsGate:
    """A run whose workflow task fails every time: Temporal retries it and
    refuses updates meanwhile."""

    @workflow.run
    async def run(self) -> None:
        raise RuntimeError("a bug in workflow code fails the task, not the run")

    @workflow.update
    async def decide(self, decision: Decision) -> GateDecision:
        raise AssertionError("never reached")


async def test_a_run_whose_task_keeps_failing_is_not_ready_and_says_so(
    dev_server: EmbeddedServer, dev_client: Client, task_queue: str
) -> None:
    async with Worker(dev_client, task_queue=task_queue, workflows=[BrokenBeforeItsGate]):
        handle = await dev_client.start_workflow(
            BrokenBeforeItsGate.run, id=f"broken-{uuid.uuid4().hex[:6]}", task_queue=task_queue
        )
        decision = Decision(gate="review", user="rita", outcome="approve")
        with pytest.raises(RunNotReady, match="is running but cannot take the decision now"):
            await decide(dev_client, handle.id, decision)
        env = dict(os.environ, TEMPORAL_ADDRESS=dev_server.address, BATON_TASK_QUEUE=task_queue)
        status = await asyncio.to_thread(
            subprocess.run,
            [sys.executable, "-m", "baton.cli", "status", handle.id],
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )
        await handle.terminate("test over")
    assert status.returncode == 2
    assert "Traceback" not in status.stderr
    assert status.stderr.startswith("baton: ")
    assert len(status.stderr.strip().splitlines()) == 1, status.stderr


async def test_a_decision_for_an_unknown_run_names_the_id(dev_client: Client) -> None:
    decision = Decision(gate="review", user="rita", outcome="approve")
    with pytest.raises(DecisionRefused, match="there is no run 'nobody-started-this'"):
        await decide(dev_client, "nobody-started-this", decision)
