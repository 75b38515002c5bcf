"""Small helpers for tests that drive runs."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
import uuid
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any, TypeVar

from temporalio.client import (
    Client,
    Interceptor,
    OutboundInterceptor,
    StartWorkflowInput,
    WorkflowHandle,
    WorkflowHistory,
)
from temporalio.service import RPCError

from baton.client import build_input, describe_execution, run_status, start_run
from baton.config import RunConfig, load_run_config
from baton.document_store import DocumentRef, document_store, put_file
from baton.runner import RunResult, RunStatus
from workflows.document_intake import DocumentIntake

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float = 30
) -> T:
    """Poll ``probe`` until ``accept`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def settled(client: Client, workflow_id: str, *, timeout: float = 30) -> RunStatus:
    """The run's status once it waits for a person or has ended."""
    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: s.state not in ("starting", "running"),
        timeout=timeout,
    )


async def search_attributes(client: Client, workflow_id: str) -> dict[str, Any]:
    """A run's search attributes as the server stores them (JSON values).

    Read raw because the time-skipping test server encodes Datetime
    attributes in a form the SDK's typed decoder rejects."""
    raw = await describe_execution(client, workflow_id)
    fields = raw.workflow_execution_info.search_attributes.indexed_fields
    return {
        name: json.loads(payload.data) if payload.data else None for name, payload in fields.items()
    }


class WorkerConfig:
    """The configuration the test workers (conftest's skipping_worker and
    dev_worker) give runs that start from now on: the test's files unless a
    test sets one. Worker-side, as in production: never workflow input."""

    def __init__(self) -> None:
        self.config: RunConfig | None = None

    def __call__(self) -> RunConfig:
        return self.config or load_run_config()


WORKER_CONFIG = WorkerConfig()


# Runs a test started: those left waiting at a gate would hold the
# time-skipping server's clock for later tests (no worker serves them after
# their test: each timer that fires leaves a workflow task nobody takes, and
# a later test's sleep times out), so conftest terminates them when each test
# ends. The time-skipping server's client records every start (RecordStarts).
STARTED: list[WorkflowHandle[Any, RunResult]] = []


class _RecordingOutbound(OutboundInterceptor):
    async def start_workflow(self, input: StartWorkflowInput) -> WorkflowHandle[Any, Any]:
        handle = await super().start_workflow(input)
        STARTED.append(handle)
        return handle


class RecordStarts(Interceptor):
    """Puts every run its client starts in STARTED."""

    def intercept_client(self, next: OutboundInterceptor) -> OutboundInterceptor:
        return _RecordingOutbound(next)


HISTORIES = Path(__file__).parent / "histories"


async def continued_as_new(client: Client, workflow_id: str, times: int = 1) -> None:
    """Wait, without querying, until the run has continued as new ``times``
    times. A query in flight as a run continues as new is lost with its
    execution, and on the time-skipping server it also keeps the clock
    from moving for good: tests wait for the new execution first."""

    async def executions_so_far() -> int:
        return len(await executions(client, workflow_id))

    await eventually(executions_so_far, lambda n: n > times)


async def executions(client: Client, workflow_id: str) -> list[WorkflowHistory]:
    """Each history of the run, oldest first: one per execution it continued
    as new into (baton.carry)."""
    histories: list[WorkflowHistory] = []
    run_id: str | None = None
    while True:
        history = await client.get_workflow_handle(workflow_id, run_id=run_id).fetch_history()
        histories.append(history)
        started = history.events[0].workflow_execution_started_event_attributes
        run_id = started.continued_execution_run_id
        if not run_id:
            return list(reversed(histories))


def recorded_histories(process: str) -> list[Path]:
    """The histories in tests/histories/ of runs of ``process``."""

    def workflow_type(path: Path) -> str:
        first = json.loads(path.read_text())["events"][0]
        return str(first["workflowExecutionStartedEventAttributes"]["workflowType"]["name"])

    return [p for p in sorted(HISTORIES.glob("*.json")) if workflow_type(p) == process]


def stored(path: Path) -> DocumentRef:
    """``path`` put in the test's document store, as `baton start` does."""
    return put_file(document_store(), path)


def stored_json(path: Path) -> dict[str, Any]:
    return stored(path).model_dump(mode="json")


def reference(path: Path) -> dict[str, Any]:
    """The reference ``path`` would have, without storing it: for inputs a
    run must refuse before it reads anything."""
    return DocumentRef.of(path.read_bytes(), name=path.name).model_dump(mode="json")


async def start_intake(
    client: Client,
    queue: str,
    path: Path,
    *,
    by: str = "clerk-1",
) -> WorkflowHandle[Any, RunResult]:
    request = build_input(DocumentIntake, [str(path)], requested_by=by)
    handle = await start_run(
        client,
        DocumentIntake,
        request,
        task_queue=queue,
        workflow_id=f"intake-{uuid.uuid4().hex[:8]}",
    )
    STARTED.append(handle)
    return handle


async def terminate_started() -> None:
    while STARTED:
        started = STARTED.pop()
        # The run as it is now: a handle from the start names the first
        # execution, which a run that continued as new has closed, and
        # terminating that one would leave the execution that took over
        # waiting, and the test server's clock held when its timer fires.
        # (WorkflowHandle keeps the client it was made by privately.)
        current = started._client.get_workflow_handle(
            started.id, first_execution_run_id=started.first_execution_run_id
        )
        with contextlib.suppress(RPCError):
            await current.terminate(reason="test finished")


async def reaches(
    client: Client, workflow_id: str, accept: Callable[[RunStatus], bool]
) -> RunStatus:
    """The run's status once ``accept`` holds of it."""
    return await eventually(lambda: run_status(client, workflow_id), accept)


def gate_open(gate: str, round_: int = 1) -> Callable[[RunStatus], bool]:
    return lambda status: any(
        g.gate == gate and g.round == round_ and g.decision is None for g in status.gates
    )


def record(status: RunStatus, node: str) -> Any:
    return next(r for r in status.nodes if r.node == node)
