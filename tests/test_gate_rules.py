"""The rules of human gates on document intake, on Temporal's time-skipping
server: four-eyes, change requests, SLA reminders and escalation, the safe
end of an exhausted chain, and the stop button."""

from __future__ import annotations

import contextlib
from collections.abc import Callable
from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.documents import EnterRequest, EntryReceipt, enter_document, void_document
from baton import search
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.cli import format_status
from baton.client import DecisionRefused, decide, run_status, sign_stop, start_run, stop_run
from baton.gates import SLA_ACTOR, Decision, StopRequest
from baton.graph import Gate, Graph, Step, hours
from baton.keys import Signer
from baton.runner import GraphWorkflow, RunInput, RunResult
from systems.erp import DocumentRegister
from systems.outbox import Outbox
from tests.conftest import SAMPLES
from tests.fake_llm import Reply, ScriptedLLMServer
from tests.helpers import (
    STARTED,
    WORKER_CONFIG,
    eventually,
    search_attributes,
    settled,
    start_intake,
)
from tests.routing_config import KEY_ENV, UNSURE, VALID, answer, config
from worker import build_worker

LARGE = SAMPLES / "invoice-brightline-bl-88317.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"


def decision(
    user: str, outcome: str = "approve", comment: str = "checked", **extra: Any
) -> Decision:
    return Decision(gate="review", user=user, outcome=outcome, comment=comment, **extra)  # type: ignore[arg-type]


async def refused(client: Client, workflow_id: str, attempt: Decision) -> str:
    with pytest.raises(DecisionRefused) as refusal:
        await decide(client, workflow_id, attempt)
    return refusal.value.reason


async def review_gate(client: Client, workflow_id: str) -> Any:
    status = await run_status(client, workflow_id)
    return next((g for g in status.gates if g.gate == "review"), None)


# -- four-eyes ---------------------------------------------------------------


async def test_large_amount_needs_a_reviewer_and_a_controller(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE)
    await settled(client, handle.id)
    gate = await review_gate(client, handle.id)
    assert gate.approvals_needed == 2
    assert gate.roles == ["reviewer", "controller"]
    attributes = await search_attributes(client, handle.id)
    assert attributes[search.PENDING_ROLES.name] == ["controller", "reviewer"]

    first = await decide(client, handle.id, decision("rita"))
    assert (first.approved_by, first.awaiting) == (["rita"], 1)
    assert (await run_status(client, handle.id)).state == "waiting"
    attributes = await search_attributes(client, handle.id)
    assert attributes[search.PENDING_ROLES.name] == ["controller"]
    assert DocumentRegister().entries(handle.id) == []

    repeated = await refused(client, handle.id, decision("rita"))
    assert repeated.startswith("user 'rita' has already approved gate 'review'")
    again = await refused(client, handle.id, decision("rita", comment="me again"))
    assert "has already approved" in again and "different users" in again
    same_role = await refused(client, handle.id, decision("sam"))
    assert "a role other than reviewer" in same_role

    second = await decide(client, handle.id, decision("vera"))
    assert (second.approved_by, second.awaiting, second.role) == (["rita", "vera"], 0, "controller")
    result = await handle.result()
    assert result.outcome == "completed"
    assert result.outputs["review"]["approved_by"] == ["rita", "vera"]
    assert len(DocumentRegister().entries(handle.id)) == 1


async def test_an_override_needs_fresh_approvals_and_its_output_is_entered(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE)
    status = await settled(client, handle.id)
    ai_output = status.gates[0].shown["subject"]["output"]
    await decide(client, handle.id, decision("rita"))

    edited = {**ai_output, "number": "BL-88317-CORRECTED"}
    no_reason = await refused(client, handle.id, decision("vera", comment=" ", output=edited))
    assert no_reason == "an edited output needs a reason: say why in the comment"
    override = await decide(
        client, handle.id, decision("vera", comment="number misread", output=edited)
    )
    assert (override.edited, override.approved_by, override.awaiting) == (True, ["vera"], 1)

    final = await decide(client, handle.id, decision("rita", comment="edit confirmed"))
    assert final.approved_by == ["vera", "rita"]
    result = await handle.result()
    assert result.outputs["extract"]["number"] == "BL-88317-CORRECTED"
    assert DocumentRegister().entries(handle.id)[0]["number"] == "BL-88317-CORRECTED"


# -- request changes ---------------------------------------------------------


async def test_request_changes_sends_the_run_back_with_the_note_and_is_bounded(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    client = time_skipping_env.client
    with ScriptedLLMServer() as llm:
        # Accepted by routing (minimum 0.1), doubtful enough for review (0.9).
        llm.script("gpt-cheap", *[Reply(answer(VALID), logprobs=UNSURE)] * 3)
        run_config = config(llm, cascade=["cheap"], min_confidence=0.1)
        run_config = run_config.model_copy(update={"thresholds": {"review_min_confidence": 0.9}})
        WORKER_CONFIG.config = run_config
        handle = await start_intake(client, task_queue, SAMPLES / "invoice-acme-2026-0142.txt")
        await settled(client, handle.id)

        no_note = await refused(client, handle.id, decision("rita", "request_changes", comment=""))
        assert no_note == "a change request needs a comment: say what must change"
        changed = await decide(
            client, handle.id, decision("rita", "request_changes", comment="the party is Acme GmbH")
        )
        assert changed.outcome == "request_changes"

        await reopened(client, handle.id, changes_left=1)
        second_request = llm.requests_for("gpt-cheap")[1].body["messages"][-1]["content"]
        assert "the reviewer (rita) asked for changes: the party is Acme GmbH" in second_request
        assert '"number": "INV-1"' in second_request, "the answer under review goes back too"

        await decide(client, handle.id, decision("sam", "request_changes", comment="still wrong"))
        await reopened(client, handle.id, changes_left=0)
        reopened_status = await run_status(client, handle.id)
        gate = next(g for g in reopened_status.gates if g.gate == "review")
        assert [(d.user, d.outcome, d.comment) for d in gate.earlier] == [
            ("rita", "request_changes", "the party is Acme GmbH"),
            ("sam", "request_changes", "still wrong"),
        ]
        shown = format_status(reopened_status)
        assert "earlier round of review: request_changes by sam (reviewer) still wrong" in shown
        bound = await refused(client, handle.id, decision("rita", "request_changes", comment="x"))
        assert "as often as it allows" in bound
        await decide(client, handle.id, decision("rita"))
        result = await handle.result()

    assert result.outcome == "completed"
    status = await run_status(client, handle.id)
    extract = next(n for n in status.nodes if n.node == "extract")
    assert extract.visits == 3
    assert result.path == ["load", *["extract", "duplicates", "validate", "review"] * 3, "enter"]


async def reopened(client: Client, workflow_id: str, *, changes_left: int) -> None:
    """Wait until the review gate is open again with ``changes_left``."""
    await eventually(
        lambda: review_gate(client, workflow_id),
        lambda gate: (
            gate is not None and gate.decision is None and gate.changes_left == changes_left
        ),
    )


# -- SLA ---------------------------------------------------------------------


async def test_sla_reminds_escalates_then_holds_for_an_administrator(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)

    await time_skipping_env.sleep(timedelta(hours=12, minutes=1))
    gate = await review_gate(client, handle.id)
    assert [r.roles for r in gate.reminders] == [["reviewer"]]
    assert gate.escalations == []

    await time_skipping_env.sleep(timedelta(hours=12))
    gate = await review_gate(client, handle.id)
    assert [e.to_role for e in gate.escalations] == ["supervisor"]

    await time_skipping_env.sleep(timedelta(hours=24))
    gate = await review_gate(client, handle.id)
    assert gate.holding and gate.due_at is None
    assert gate.roles == ["reviewer", "supervisor", "admin"]
    assert gate.decision is None, "an exhausted chain never approves"
    notices = [(n["kind"], n["roles"]) for n in Outbox().notices(handle.id)]
    assert notices == [
        ("reminder", ["reviewer"]),
        ("escalation", ["reviewer", "supervisor"]),
        ("reminder", ["reviewer", "supervisor"]),
        ("hold", ["reviewer", "supervisor", "admin"]),
    ]
    attributes = await search_attributes(client, handle.id)
    assert attributes[search.PENDING_ROLES.name] == ["admin", "reviewer", "supervisor"]
    assert search.GATE_DUE.name not in attributes or attributes[search.GATE_DUE.name] is None

    accepted = await decide(client, handle.id, decision("ada", comment="decided on hold"))
    assert accepted.role == "admin"
    assert (await handle.result()).outcome == "completed"


def toy_worker(
    client: Client, queue: str, workflow_class: type, activity: Callable[..., Any]
) -> Worker:
    """A worker for a test's own process, audited like every Baton worker."""
    return build_worker(
        client, task_queue=queue, extra_workflows=[workflow_class], extra_activities=[activity]
    )


class Item(RunInput):
    name: str


class Written(BaseModel):
    name: str


@activity.defn
async def echo_item(item: Written) -> Written:
    return item


REJECT_WHEN_LATE = Graph(
    name="reject_when_late",
    input=Item,
    nodes=(
        Step("first", activity=echo_item, inputs={"name": "input.name"}),
        Gate("approve", role="reviewer", sla=hours(1), on_exhausted="reject", remind_at=None),
        Step("second", activity=echo_item, inputs={"name": "first.name"}),
    ),
)


@workflow.defn(name="reject_when_late", sandboxed=False)
class RejectWhenLate(GraphWorkflow):
    graph = REJECT_WHEN_LATE

    @workflow.run
    async def run(self, request: Item) -> RunResult:
        return await self.execute(request)


async def test_a_gate_declared_to_reject_rejects_when_its_chain_is_exhausted(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with toy_worker(client, task_queue, RejectWhenLate, echo_item):
        handle = await start_run(
            client,
            RejectWhenLate,
            Item(name="x", requested_by="carl"),
            task_queue=task_queue,
            workflow_id=f"late-{task_queue}",
        )
        STARTED.append(handle)
        result = await handle.result()
    assert result.outcome == "rejected"
    assert result.outputs["approve"]["user"] == SLA_ACTOR
    assert "rejected as declared" in result.outputs["approve"]["comment"]
    assert "second" in result.skipped


# -- stop --------------------------------------------------------------------


@activity.defn
async def enter_item(item: Written) -> EntryReceipt:
    return enter_document(EnterRequest.model_validate({"document": {**VALID, "number": item.name}}))


WRITE_THEN_CONFIRM = Graph(
    name="write_then_confirm",
    input=Item,
    stop_roles=("admin",),
    nodes=(
        Step("write", activity=enter_item, inputs={"name": "input.name"}, compensate=void_document),
        Gate("confirm", role="reviewer"),
    ),
)


@workflow.defn(name="write_then_confirm", sandboxed=False)
class WriteThenConfirm(GraphWorkflow):
    graph = WRITE_THEN_CONFIRM

    @workflow.run
    async def run(self, request: Item) -> RunResult:
        return await self.execute(request)


@contextlib.asynccontextmanager
async def write_then_confirm(env: WorkflowEnvironment, queue: str) -> Any:
    async with toy_worker(env.client, queue, WriteThenConfirm, enter_item):
        handle = await start_run(
            env.client,
            WriteThenConfirm,
            Item(name="INV-STOP", requested_by="carl"),
            task_queue=queue,
            workflow_id=f"stop-{queue}",
        )
        STARTED.append(handle)
        await settled(env.client, handle.id)
        yield handle


async def test_stop_compensates_the_write_and_is_recorded(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    keyring: dict[str, Ed25519PrivateKey],
) -> None:
    client = time_skipping_env.client
    async with write_then_confirm(time_skipping_env, task_queue) as handle:
        for user, reason, why in [
            ("rita", "wrong", "may not stop this run; it needs one of: admin"),
            ("nobody", "wrong", "unknown user 'nobody'"),
            ("ada", "  ", "stopping a run needs a reason"),
        ]:
            signer = Signer(user, keyring["mallory" if user == "nobody" else user])
            with pytest.raises(DecisionRefused, match=why):
                await stop_run(client, handle.id, StopRequest(user=user, reason=reason), signer)
        assert len(DocumentRegister().entries(handle.id)) == 1

        stopped = await stop_run(
            client, handle.id, StopRequest(user="ada", reason="supplier under investigation")
        )
        assert (stopped.user, stopped.role) == ("ada", "admin")
        result = await handle.result()
        status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert result.skipped == {"confirm": "the run was stopped by ada"}
    entry = DocumentRegister().entries(handle.id)[0]
    assert entry["voided_at"] is not None
    assert entry["void_reason"] == f"run {handle.id} was undone at 'write'"
    assert status.state == "stopped"
    assert status.stopped is not None and status.stopped.compensated == ["write"]
    assert [r.user for r in status.refusals] == ["rita", "nobody", "ada"]
    records = open_store(AuditSettings.from_env().url).records(handle.id)
    kinds = [r.event_type for r in records]
    assert kinds.count("stop.refused") == 3
    stopped_record = next(r for r in records if r.event_type == "run.stopped")
    assert stopped_record.actor is not None and stopped_record.actor.id == "ada"
    assert stopped_record.data["reason"] == "supplier under investigation"
    assert [r.data["outcome"] for r in records if r.event_type == "run.ended"] == ["stopped"]


async def test_a_refused_stop_signal_changes_nothing_and_a_valid_one_stops(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with write_then_confirm(time_skipping_env, task_queue) as handle:
        carl_stops = await sign_stop(client, handle.id, StopRequest(user="carl", reason="mine"))
        await handle.signal("stop", carl_stops)
        status = await settled(client, handle.id)
        assert status.state == "waiting" and status.stopped is None
        assert "may not stop this run" in status.refusals[0].reason
        ada_stops = StopRequest(user="ada", reason="duplicate")
        # Both signed before either is sent: the first ends the run.
        first, second = [await sign_stop(client, handle.id, ada_stops) for _ in range(2)]
        await handle.signal("stop", first)
        await handle.signal("stop", second)
        result = await handle.result()
        status = await run_status(client, handle.id)
    assert result.outcome == "stopped"
    assert "already stopped by ada" in status.refusals[-1].reason


async def test_cancelling_from_temporal_also_compensates(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    async with write_then_confirm(time_skipping_env, task_queue) as handle:
        await handle.cancel()
        with pytest.raises(WorkflowFailureError):
            await handle.result()
    assert DocumentRegister().entries(handle.id)[0]["voided_at"] is not None


async def test_stop_at_review_ends_document_intake_without_entering(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle: WorkflowHandle[Any, RunResult] = await start_intake(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    await stop_run(client, handle.id, StopRequest(user="sam", reason="sent to the wrong company"))
    result = await handle.result()
    assert result.outcome == "stopped"
    assert set(result.skipped) == {"review", "enter"}
    assert DocumentRegister().entries(handle.id) == []
    late = await run_status(client, handle.id)
    assert late.state == "stopped"
