"""Compensation that always finishes, on Temporal's time-skipping server:
a stop or cancel while a write runs undoes it, an undo tolerates nothing to
undo, a failure undoes what was done and fails with its own reason,
parallel branches are undone in parallel in reverse topological order, and
a stop during a model call ends the run without opening a gate.

The writes are real: the ERP register (systems.erp) under the step's
idempotency key, undone by voiding the entry found by that key."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.documents import ExtractedDocument
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import run_status, start_run, stop_run
from baton.compensation import Undo
from baton.gates import StopRequest
from baton.graph import Ask, Gate, Graph, Step
from baton.idempotency import idempotency_key
from baton.runner import GraphWorkflow, RunInput, RunResult, RunStatus
from systems.erp import DocumentRegister
from tests.fake_llm import Delay, Reply, ScriptedLLMServer
from tests.helpers import STARTED, WORKER_CONFIG, eventually, settled
from tests.routing_config import SURE, VALID, answer, config
from worker import build_worker


class Account(RunInput):
    name: str


class AccountRequest(BaseModel):
    name: str


class Provisioned(BaseModel):
    entry_id: int
    idempotency_key: str


class Deprovisioned(BaseModel):
    voided: list[int]
    nothing_to_undo: bool


# Which runs' slow activities have started, and when each undo ran: the
# activities run in this process, on the test's worker.
BEGUN: set[str] = set()
UNDOS: list[tuple[str, float, float]] = []


def _write(name: str) -> Provisioned:
    key = idempotency_key()
    entry = DocumentRegister().enter(
        idempotency_key=key, document={"doc_type": "account", "number": name}
    )
    return Provisioned(entry_id=entry.entry_id, idempotency_key=key)


async def _take(seconds: float) -> None:
    """Work for ``seconds``, heartbeating: a cancellation reaches the
    activity through its heartbeats."""
    for _ in range(round(seconds / 0.1)):
        activity.heartbeat()
        await asyncio.sleep(0.1)


@activity.defn
async def provision(request: AccountRequest) -> Provisioned:
    """Writes at once, then takes 1.5 s to finish."""
    written = _write(request.name)
    BEGUN.add(activity.info().workflow_id)
    await _take(1.5)
    return written


@activity.defn
async def provision_late(request: AccountRequest) -> Provisioned:
    """Takes 1.5 s, and writes only at its end."""
    BEGUN.add(activity.info().workflow_id)
    await _take(1.5)
    return _write(request.name)


@activity.defn
async def provision_now(request: AccountRequest) -> Provisioned:
    return _write(request.name)


@activity.defn
async def deprovision(undo: Undo) -> Deprovisioned:
    """Void the writes of the visit, found by its idempotency key: the
    step's output is not needed (a visit stopped in flight has none)."""
    began = time.monotonic()
    await asyncio.sleep(0.3)
    register = DocumentRegister()
    voided = [
        row["entry_id"]
        for row in register.entries(undo.idempotency_key)
        if undo.writes(row["idempotency_key"])
    ]
    for entry_id in voided:
        register.void(entry_id, reason=f"{undo.node}#{undo.visit} undone")
    UNDOS.append((undo.node, began, time.monotonic()))
    return Deprovisioned(voided=voided, nothing_to_undo=not voided)


@activity.defn
async def charge(request: AccountRequest) -> Provisioned:
    raise ApplicationError("card declined", type="Declined", non_retryable=True)


def steps(*nodes: Any, on_failure: str = "fail", name: str) -> Graph:
    return Graph(
        name=name, input=Account, stop_roles=("admin",), nodes=nodes, on_failure=on_failure
    )


HEARTBEAT = {"heartbeat": timedelta(seconds=1)}
NAME = {"name": "input.name"}

PROVISION = steps(
    Step("provision", activity=provision, inputs=NAME, compensate=deprovision, **HEARTBEAT),
    Gate("confirm", role="reviewer"),
    name="provision_account",
)
PROVISION_LATE = steps(
    Step("provision", activity=provision_late, inputs=NAME, compensate=deprovision, **HEARTBEAT),
    Gate("confirm", role="reviewer"),
    name="provision_late",
)
PROVISION_THEN_CHARGE = steps(
    Step("provision", activity=provision_now, inputs=NAME, compensate=deprovision),
    Step("charge", activity=charge, inputs=NAME),
    on_failure="compensate",
    name="provision_then_charge",
)
BRANCHES = steps(
    Step("account", activity=provision_now, inputs=NAME, compensate=deprovision),
    Step(
        "mailbox", activity=provision_now, inputs=NAME, compensate=deprovision, after=("account",)
    ),
    Step(
        "storage", activity=provision_now, inputs=NAME, compensate=deprovision, after=("account",)
    ),
    Gate("confirm", role="reviewer", after=("mailbox", "storage")),
    name="provision_branches",
)
PROVISION_THEN_ASK = steps(
    Step("provision", activity=provision_now, inputs=NAME, compensate=deprovision),
    Ask("extract", task="extract_fields", output=ExtractedDocument, inputs=NAME),
    name="provision_then_ask",
)


@workflow.defn(name="provision_account", sandboxed=False)
class ProvisionAccount(GraphWorkflow):
    graph = PROVISION

    @workflow.run
    async def run(self, request: Account) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="provision_late", sandboxed=False)
class ProvisionLate(GraphWorkflow):
    graph = PROVISION_LATE

    @workflow.run
    async def run(self, request: Account) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="provision_then_charge", sandboxed=False)
class ProvisionThenCharge(GraphWorkflow):
    graph = PROVISION_THEN_CHARGE

    @workflow.run
    async def run(self, request: Account) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="provision_branches", sandboxed=False)
class ProvisionBranches(GraphWorkflow):
    graph = BRANCHES

    @workflow.run
    async def run(self, request: Account) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="provision_then_ask", sandboxed=False)
class ProvisionThenAsk(GraphWorkflow):
    graph = PROVISION_THEN_ASK

    @workflow.run
    async def run(self, request: Account) -> RunResult:
        return await self.execute(request)


WORKFLOWS = [
    ProvisionAccount,
    ProvisionLate,
    ProvisionThenCharge,
    ProvisionBranches,
    ProvisionThenAsk,
]
ACTIVITIES = [provision, provision_late, provision_now, deprovision, charge]


@pytest.fixture
async def worker(time_skipping_env: WorkflowEnvironment, task_queue: str) -> Any:
    async with build_worker(
        time_skipping_env.client,
        task_queue=task_queue,
        extra_workflows=WORKFLOWS,
        extra_activities=ACTIVITIES,
        run_config=WORKER_CONFIG,
    ) as running:
        yield running


async def begin(client: Client, queue: str, workflow_class: type) -> WorkflowHandle[Any, RunResult]:
    handle = await start_run(
        client,
        workflow_class,
        Account(name=f"ACC-{uuid.uuid4().hex[:6]}", requested_by="carl"),
        task_queue=queue,
        workflow_id=f"comp-{uuid.uuid4().hex[:8]}",
    )
    STARTED.append(handle)
    return handle


async def begun(workflow_id: str) -> None:
    async def probe() -> bool:
        return workflow_id in BEGUN

    await eventually(probe, bool)


async def ended(handle: WorkflowHandle[Any, RunResult]) -> RunResult:
    # A run that never ends (a gate opened after the stop) hangs here until
    # pytest-timeout fails the test: a result call cancelled by a timeout of
    # ours would leave the time-skipping server's clock locked for later tests.
    return await handle.result()


def node(status: RunStatus, node_id: str) -> Any:
    return next(n for n in status.nodes if n.node == node_id)


def trail(workflow_id: str) -> list[Any]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


def stop(reason: str = "ordered by mistake") -> StopRequest:
    return StopRequest(user="ada", reason=reason)


# -- a stop or cancel while the write runs ------------------------------------


async def test_a_stop_while_the_write_runs_undoes_it(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await begin(client, task_queue, ProvisionAccount)
    await begun(handle.id)
    await stop_run(client, handle.id, stop())
    result = await ended(handle)
    status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert status.stopped is not None and status.stopped.compensated == ["provision"]
    (entry,) = DocumentRegister().entries(handle.id)
    assert entry["voided_at"] is not None, "the write the stopped step made is undone"
    assert entry["void_reason"] == "provision#1 undone"
    assert node(status, "provision").status == "cancelled"
    assert node(status, "confirm").status == "skipped"
    kinds = [r.event_type for r in trail(handle.id)]
    assert kinds.count("compensation.started") == kinds.count("compensation.finished") == 1
    assert "node.cancelled" in kinds and "node.failed" not in kinds


async def test_cancelling_while_the_write_runs_undoes_it(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await begin(client, task_queue, ProvisionAccount)
    await begun(handle.id)
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await ended(handle)
    (entry,) = DocumentRegister().entries(handle.id)
    assert entry["voided_at"] is not None
    status = await run_status(client, handle.id)
    assert node(status, "provision").status == "cancelled"
    assert status.compensated == ["provision"]


async def test_an_undo_tolerates_nothing_to_undo(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await begin(client, task_queue, ProvisionLate)
    await begun(handle.id)
    await stop_run(client, handle.id, stop())
    result = await ended(handle)
    status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert DocumentRegister().entries(handle.id) == [], "stopped before it wrote"
    assert status.stopped is not None and status.stopped.compensated == ["provision"]
    undo = node(status, "provision").meta["compensation"]
    assert undo == {"voided": [], "nothing_to_undo": True}


# -- on failure ---------------------------------------------------------------


async def test_a_failure_undoes_what_was_done_and_fails_with_its_reason(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await begin(client, task_queue, ProvisionThenCharge)
    with pytest.raises(WorkflowFailureError) as failure:
        await ended(handle)
    assert "node 'charge' failed: card declined" in str(failure.value.cause)
    (entry,) = DocumentRegister().entries(handle.id)
    assert entry["voided_at"] is not None
    status = await run_status(client, handle.id)
    assert status.state == "failed"
    assert status.error == "node 'charge' failed: card declined"
    assert status.compensated == ["provision"]
    assert node(status, "charge").status == "failed"
    kinds = [r.event_type for r in trail(handle.id)]
    assert kinds.count("compensation.finished") == 1


# -- parallel branches ---------------------------------------------------------


async def test_parallel_branches_are_undone_in_parallel_before_what_they_depend_on(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await begin(client, task_queue, ProvisionBranches)
    await settled(client, handle.id)
    UNDOS.clear()
    await stop_run(client, handle.id, stop())
    result = await ended(handle)
    status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert all(e["voided_at"] is not None for e in DocumentRegister().entries(handle.id))
    assert len(DocumentRegister().entries(handle.id)) == 3
    undone = {name: (began, finished) for name, began, finished in UNDOS}
    assert set(undone) == {"account", "mailbox", "storage"}
    (mailbox_began, mailbox_done), (storage_began, storage_done) = (
        undone["mailbox"],
        undone["storage"],
    )
    assert mailbox_began < storage_done and storage_began < mailbox_done, "in parallel"
    assert undone["account"][0] >= max(mailbox_done, storage_done), "dependents first"
    assert status.stopped is not None and status.stopped.compensated[-1] == "account"
    assert sorted(status.stopped.compensated[:2]) == ["mailbox", "storage"]


# -- a stop during a model call --------------------------------------------------


async def test_a_stop_during_a_model_call_never_opens_a_gate(
    time_skipping_env: WorkflowEnvironment, worker: Worker, task_queue: str, llm: ScriptedLLMServer
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", Delay(3, Reply(answer(VALID), logprobs=SURE)))
    WORKER_CONFIG.config = config(llm, cascade=["cheap", "human"], repairs=0)
    handle = await begin(client, task_queue, ProvisionThenAsk)

    async def asked() -> int:
        return len(llm.requests_for("gpt-cheap"))

    await eventually(asked, bool)
    await stop_run(client, handle.id, stop())
    result = await ended(handle)
    status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert status.gates == [], "no gate opened for a stopped run"
    assert len(llm.requests) == 1, "no model called after the stop"
    extract = node(status, "extract")
    assert extract.status == "cancelled"
    assert [a.outcome for a in extract.meta["attempts"]] == []
    assert status.stopped is not None and status.stopped.compensated == ["provision"]
    (entry,) = DocumentRegister().entries(handle.id)
    assert entry["voided_at"] is not None
