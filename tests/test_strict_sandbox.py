"""The strict sandbox (BATON_STRICT_SANDBOX=1, which `make test` sets for its
second pass over the workflow tests): Baton and process code run checked,
so a `when=` predicate that reads the wall clock fails its run's workflow
task, where the worker's usual sandbox trusts it; and workflow code never
imports the systems of record."""

from __future__ import annotations

import ast
import dataclasses
import uuid
from pathlib import Path

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

import baton.graph
from baton.client import start_run
from baton.plugin import SANDBOX, STRICT_SANDBOX, STRICT_SANDBOX_ENV, BatonPlugin
from baton.runner import RunResult
from tests.conftest import DATA_CONVERTER
from tests.helpers import STARTED, eventually
from tests.strict_sandbox_process import HOST_MARK, Ping, WallClockProcess, WhereBatonLoads
from tests.strict_sandbox_systems import ReadsTheErp
from workflows import PROCESSES

WORKFLOWS = Path(__file__).resolve().parent.parent / "workflows"

# The worker's usual sandbox, with the test's process passed through as it
# passes through every module of workflows/.
AS_A_PROCESS_UNDER_WORKFLOWS = dataclasses.replace(
    SANDBOX, restrictions=SANDBOX.restrictions.with_passthrough_modules(WallClockProcess.__module__)
)


def worker(client: Client, queue: str, runner: SandboxedWorkflowRunner) -> Worker:
    """A worker for the test's processes, whose runs run in ``runner``."""
    plugin = BatonPlugin([WallClockProcess], audit=None)
    plugin.workflow_runner = runner
    return Worker(client, task_queue=queue, workflows=[WhereBatonLoads], plugins=[plugin])


async def start_probe(client: Client, queue: str) -> WorkflowHandle[WallClockProcess, RunResult]:
    handle = await start_run(
        client,
        WallClockProcess,
        Ping(word="tick", requested_by="carl"),
        task_queue=queue,
        workflow_id=f"strict-{uuid.uuid4().hex[:8]}",
    )
    STARTED.append(handle)
    return handle


async def task_failures(
    handle: WorkflowHandle[WallClockProcess, RunResult],
) -> list[BaseException]:
    """Why each of the run's workflow tasks failed, decrypted."""
    failures = [
        event.workflow_task_failed_event_attributes.failure
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_FAILED
    ]
    return [await DATA_CONVERTER.decode_failure(failure) for failure in failures]


async def test_the_strict_sandbox_fails_a_predicate_that_reads_the_wall_clock(
    dev_client: Client,
) -> None:
    # On the dev server: a run whose workflow task keeps failing held the
    # time-skipping server's clock for every later test, even once terminated.
    client, queue = dev_client, f"strict-{uuid.uuid4().hex[:6]}"
    async with worker(client, queue, STRICT_SANDBOX):
        handle = await start_probe(client, queue)
        failures = await eventually(lambda: task_failures(handle), bool)
    error = failures[0]
    assert isinstance(error, ApplicationError) and error.type == "RestrictedWorkflowAccessError"
    assert error.message.startswith(
        "Cannot access datetime.datetime.now.__call__ from inside a workflow"
    )
    # The run did not get past the predicate: `second` was never scheduled.
    description = await handle.describe()
    assert description.status == WorkflowExecutionStatus.RUNNING
    scheduled = [
        event.activity_task_scheduled_event_attributes.activity_id
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
    ]
    assert scheduled == ["first#1"]


async def test_the_usual_sandbox_lets_a_process_read_the_wall_clock(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    """Why the strict pass exists: a process under workflows/ is passed
    through, and its predicate's datetime.now() runs unchecked."""
    client, queue = time_skipping_env.client, f"strict-{uuid.uuid4().hex[:6]}"
    async with worker(client, queue, AS_A_PROCESS_UNDER_WORKFLOWS):
        handle = await start_probe(client, queue)
        result = await handle.result()
    assert result.path == ["first", "second"]
    assert await task_failures(handle) == []


@pytest.mark.parametrize(
    ("strict", "where"),
    [(False, "passed through"), (True, "imported in the sandbox")],
    ids=["usual", "strict"],
)
async def test_the_strict_sandbox_imports_baton_even_where_it_is_passed_through(
    time_skipping_env: WorkflowEnvironment,
    monkeypatch: pytest.MonkeyPatch,
    strict: bool,
    where: str,
) -> None:
    """A workflow module's `imports_passed_through()` does not take Baton
    or process code out of the strict sandbox's checks."""
    monkeypatch.setattr(baton.graph, HOST_MARK, True, raising=False)
    client, queue = time_skipping_env.client, f"strict-{uuid.uuid4().hex[:6]}"
    async with worker(client, queue, STRICT_SANDBOX if strict else SANDBOX):
        answer = await client.execute_workflow(
            WhereBatonLoads.run, id=f"where-{uuid.uuid4().hex[:8]}", task_queue=queue
        )
    assert answer == where


async def load(client: Client, workflow_class: type, runner: SandboxedWorkflowRunner) -> None:
    """Load ``workflow_class`` as a worker does before it polls (the SDK
    imports it into a sandbox once to validate it)."""
    queue = f"load-{uuid.uuid4().hex[:6]}"
    async with Worker(client, task_queue=queue, workflows=[workflow_class], workflow_runner=runner):
        pass


async def test_the_strict_sandbox_refuses_a_workflow_that_imports_a_system(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    client = time_skipping_env.client
    with pytest.raises(RuntimeError, match="Failed validating workflow") as refused:
        await load(client, ReadsTheErp, STRICT_SANDBOX)
    assert "Cannot access systems.erp from inside a workflow" in str(refused.value.__cause__)
    # The usual sandbox passes systems/ through.
    await load(client, ReadsTheErp, SANDBOX)


@pytest.mark.parametrize("name", sorted(PROCESSES))
async def test_every_process_loads_in_the_strict_sandbox(
    time_skipping_env: WorkflowEnvironment, name: str
) -> None:
    """A process whose module reaches systems/, even through an activity
    module it imports, fails here naming the system."""
    await load(time_skipping_env.client, PROCESSES[name].workflow, STRICT_SANDBOX)


@pytest.mark.parametrize(("value", "strict"), [(None, False), ("0", False), ("1", True)])
def test_baton_strict_sandbox_chooses_the_sandbox(
    monkeypatch: pytest.MonkeyPatch, value: str | None, strict: bool
) -> None:
    if value is None:
        monkeypatch.delenv(STRICT_SANDBOX_ENV, raising=False)
    else:
        monkeypatch.setenv(STRICT_SANDBOX_ENV, value)
    runner = BatonPlugin([WallClockProcess]).workflow_runner
    assert runner is (STRICT_SANDBOX if strict else SANDBOX)


def test_no_workflow_module_imports_a_system_of_record() -> None:
    """Workflow modules import activities' models, never systems/: the
    systems are reached through activities, outside the workflow."""
    offenders = []
    for path in sorted(WORKFLOWS.glob("*.py")):
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            names = (
                [a.name for a in node.names]
                if isinstance(node, ast.Import)
                else [node.module or ""]
                if isinstance(node, ast.ImportFrom) and node.level == 0
                else []
            )
            offenders += [f"{path.name}: {n}" for n in names if n.split(".")[0] == "systems"]
    assert offenders == []
