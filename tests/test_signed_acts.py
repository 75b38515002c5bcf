"""Attacks on a run by someone who can reach Temporal, each refused by the run
itself and recorded: starts that are not signed by their requester or that
bring their own configuration, decisions and stops that are unsigned,
forged, signed with a stranger's key, or replayed onto another run, gate
round or view; malformed payloads. On Temporal's time-skipping server."""

from __future__ import annotations

import asyncio
import json
import subprocess
import uuid
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.client import (
    Client,
    WorkflowFailureError,
    WorkflowHandle,
    WorkflowUpdateFailedError,
)
from temporalio.common import RawValue
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import (
    DecisionRefused,
    build_input,
    decide,
    run_status,
    sign_decision,
    start_run,
    stop_run,
)
from baton.gates import Decision, StopRequest
from baton.graph import Gate, Graph, Step
from baton.keys import Signer
from baton.runner import GraphWorkflow, RunInput, RunResult
from baton.server import EmbeddedServer, temporal_binary
from systems.erp import DocumentRegister
from tests.conftest import SAMPLES
from tests.helpers import (
    STARTED,
    eventually,
    reference,
    settled,
    start_intake,
    stored,
    stored_json,
)
from workflows.document_intake import DocumentIntake, IntakeRequest

MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"
LARGE = SAMPLES / "invoice-brightline-bl-88317.txt"


def approve(user: str, comment: str = "checked", **extra: Any) -> Decision:
    return Decision(gate="review", user=user, outcome="approve", comment=comment, **extra)


async def refusal(client: Client, workflow_id: str, attempt: Decision) -> str:
    with pytest.raises(DecisionRefused) as refused:
        await decide(client, workflow_id, attempt)
    return refused.value.reason


async def raw_refusal(handle: WorkflowHandle[Any, RunResult], update: str, payload: Any) -> str:
    """The run's reason for refusing ``payload`` sent as it is, as any
    Temporal client can send it."""
    with pytest.raises(WorkflowUpdateFailedError) as refused:
        await handle.execute_update(update, payload)
    return str(refused.value.cause)


async def trail_has(workflow_id: str, event_type: str, reason_part: str) -> None:
    """The audit store holds a ``event_type`` record of the run whose reason
    contains ``reason_part`` (refusals are shipped as soon as they happen)."""
    store = open_store(AuditSettings.from_env().url)

    async def records() -> list[Any]:
        return store.records(workflow_id)

    await eventually(
        records,
        lambda rs: any(
            r.event_type == event_type and reason_part in str(r.data.get("reason")) for r in rs
        ),
    )


async def start_raw(
    client: Client, queue: str, payload: dict[str, Any], workflow_id: str | None = None
) -> WorkflowHandle[Any, RunResult]:
    """Start document intake with ``payload`` as given, as `temporal workflow
    start --input` would: no Baton client in between."""
    handle = await client.start_workflow(
        "document_intake",
        payload,
        id=workflow_id or f"attack-{uuid.uuid4().hex[:8]}",
        task_queue=queue,
        result_type=RunResult,
    )
    STARTED.append(handle)
    return handle


def signed_start(
    signer: Signer, workflow_id: str, request: IntakeRequest, **tamper: Any
) -> dict[str, Any]:
    """The JSON of a start of ``request`` signed by ``signer`` for
    ``workflow_id``, then changed by ``tamper`` (after signing)."""
    signature = signer.sign(
        "start", request.signed_fields("document_intake"), workflow_id=workflow_id
    )
    return {**request.model_dump(mode="json"), "signature": signature.model_dump(), **tamper}


async def failure_of(handle: WorkflowHandle[Any, RunResult]) -> str:
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    cause = failed.value.cause
    assert isinstance(cause, ApplicationError)
    return cause.message


# -- starts --------------------------------------------------------------------


async def test_a_start_that_brings_its_own_configuration_is_refused(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    workflow_id = f"attack-{uuid.uuid4().hex[:8]}"
    request = IntakeRequest(document=stored(LARGE), requested_by="rita")
    injected = {"directory": {"users": {"mallory": {"roles": ["reviewer", "controller"]}}}}
    payload = signed_start(Signer.load("rita"), workflow_id, request, config=injected)

    handle = await start_raw(client, task_queue, payload, workflow_id)

    message = await failure_of(handle)
    assert message.startswith("run refused: the input does not fit IntakeRequest: config:")
    assert "Extra inputs are not permitted" in message
    await trail_has(workflow_id, "run.refused", "config")
    assert DocumentRegister().entries(workflow_id) == []


async def test_an_unsigned_start_fails_at_once_with_the_reason(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    payload = {"document": stored_json(MISSING_TOTAL), "requested_by": "carl"}
    handle = await start_raw(time_skipping_env.client, task_queue, payload)

    message = await failure_of(handle)
    assert message.startswith("run refused: the start is not signed")
    status = await run_status(time_skipping_env.client, handle.id)
    assert status.state == "failed"
    assert status.nodes[0].status == "pending", "no step ran"
    await trail_has(handle.id, "run.refused", "not signed")


async def test_a_start_claiming_another_requester_is_refused(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """rita starts a run as carl, to approve it herself afterwards: her key
    is not carl's, so the run never starts."""
    workflow_id = f"attack-{uuid.uuid4().hex[:8]}"
    as_carl = IntakeRequest(document=stored(MISSING_TOTAL), requested_by="carl")
    payload = signed_start(Signer("carl", Signer.load("rita")._key), workflow_id, as_carl)

    handle = await start_raw(time_skipping_env.client, task_queue, payload, workflow_id)

    assert "not one of user 'carl''s keys" in await failure_of(handle)


@pytest.mark.parametrize(
    ("tamper", "reason"),
    [
        ({"document": reference(LARGE)}, "the signature is not valid"),
        ({"requested_by": "vera"}, "not one of user 'vera''s keys"),
        ({"requested_by": "mallory"}, "unknown user 'mallory'"),
    ],
)
async def test_a_start_changed_after_signing_is_refused(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tamper: dict[str, Any],
    reason: str,
) -> None:
    workflow_id = f"attack-{uuid.uuid4().hex[:8]}"
    request = IntakeRequest(document=stored(MISSING_TOTAL), requested_by="carl")
    payload = signed_start(Signer.load("carl"), workflow_id, request, **tamper)

    handle = await start_raw(time_skipping_env.client, task_queue, payload, workflow_id)

    assert reason in await failure_of(handle)


async def test_a_signed_start_replayed_under_another_workflow_id_is_refused(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    request = IntakeRequest(document=stored(MISSING_TOTAL), requested_by="carl")
    payload = signed_start(Signer.load("carl"), "intake-the-original", request)

    handle = await start_raw(time_skipping_env.client, task_queue, payload)

    message = await failure_of(handle)
    assert "signed for another run (intake-the-original)" in message


async def test_a_service_starts_runs_with_its_own_key(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL, by="mailroom")
    status = await settled(client, handle.id)

    assert (status.state, status.requested_by) == ("waiting", "mailroom")
    records = open_store(AuditSettings.from_env().url).records(handle.id)
    admitted = next(r for r in records if r.event_type == "run.admitted")
    assert admitted.actor is not None
    assert (admitted.actor.type, admitted.actor.id) == ("service", "mailroom")
    assert admitted.data["signature"]["method"] == "ed25519"


# -- decisions -----------------------------------------------------------------


@pytest.fixture
async def at_review(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> WorkflowHandle[Any, RunResult]:
    """A run started by carl (a clerk), waiting at its review gate."""
    handle = await start_intake(time_skipping_env.client, task_queue, MISSING_TOTAL, by="carl")
    await settled(time_skipping_env.client, handle.id)
    return handle


async def signed(client: Client, workflow_id: str, decision: Decision, signer: Signer) -> Decision:
    return await sign_decision(client, workflow_id, decision, signer)


async def test_an_unsigned_decision_is_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment, at_review: WorkflowHandle[Any, RunResult]
) -> None:
    client = time_skipping_env.client
    reason = await raw_refusal(at_review, "decide", approve("rita").model_dump(mode="json"))
    assert "the decide is not signed" in reason

    status = await run_status(client, at_review.id)
    assert status.state == "waiting"
    assert [(r.user, r.channel) for r in status.refusals] == [("rita", "update")]
    assert status.refusals[0].reason.startswith("the decide is not signed")
    await trail_has(at_review.id, "decision.refused", "not signed")


async def test_forged_decisions_are_refused(
    time_skipping_env: WorkflowEnvironment,
    at_review: WorkflowHandle[Any, RunResult],
    keyring: dict[str, Ed25519PrivateKey],
) -> None:
    client = time_skipping_env.client
    workflow_id = at_review.id
    rita = Signer.load("rita")

    honest = await signed(client, workflow_id, approve("rita", "looks fine"), rita)
    edited = honest.model_copy(update={"comment": "looks fine, and pay account X"})
    assert "the signature is not valid" in await refusal(client, workflow_id, edited)

    as_rita_by_mallory = Signer("rita", keyring["mallory"])
    stranger = await signed(client, workflow_id, approve("rita"), as_rita_by_mallory)
    assert "not one of user 'rita''s keys" in await refusal(client, workflow_id, stranger)

    mallory = await signed(client, workflow_id, approve("mallory"), Signer.load("mallory"))
    assert "unknown user 'mallory'" in await refusal(client, workflow_id, mallory)

    status = await run_status(client, workflow_id)
    assert status.state == "waiting"
    assert len(status.refusals) == 3
    gate = next(g for g in status.gates if g.gate == "review")
    assert gate.decision is None and gate.approvals == []


async def test_a_decision_signed_for_one_run_is_refused_by_another(
    time_skipping_env: WorkflowEnvironment,
    at_review: WorkflowHandle[Any, RunResult],
    task_queue: str,
) -> None:
    client = time_skipping_env.client
    other = await start_intake(client, task_queue, MISSING_TOTAL, by="carl")
    await settled(client, other.id)
    for_other = await signed(client, other.id, approve("rita"), Signer.load("rita"))

    reason = await refusal(client, at_review.id, for_other)

    assert reason.startswith(f"the decide was signed for another run ({other.id} ")
    assert (await decide(client, other.id, for_other)).outcome == "approve"


async def test_a_decision_over_another_view_of_the_gate_is_refused(
    time_skipping_env: WorkflowEnvironment, at_review: WorkflowHandle[Any, RunResult]
) -> None:
    """What the person was shown is bound: a client that showed rita other
    fields than the run's gets no decision out of her signature."""
    client = time_skipping_env.client
    rita = Signer.load("rita")
    status = await run_status(client, at_review.id)
    gate = next(g for g in status.gates if g.gate == "review")
    decision = approve("rita")
    signature = rita.sign(
        "decide",
        decision.signed_fields(),
        workflow_id=at_review.id,
        run_id=status.run_id,
        round=gate.round,
        shown_digest="0" * 64,
    )

    reason = await refusal(
        client, at_review.id, decision.model_copy(update={"signature": signature})
    )

    assert "signed over another view of gate 'review'" in reason


async def test_the_same_signed_decision_delivered_twice_counts_once(
    time_skipping_env: WorkflowEnvironment, task_queue: str, skipping_worker: Worker
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE, by="carl")
    await settled(client, handle.id)
    act = await signed(client, handle.id, approve("rita"), Signer.load("rita"))

    first = await decide(client, handle.id, act)
    replay = await refusal(client, handle.id, act)
    await handle.signal("decide", act.model_dump(mode="json"))

    assert (first.approved_by, first.awaiting) == (["rita"], 1)
    assert replay.startswith("this signed decide was delivered before (nonce ")
    status = await eventually(lambda: run_status(client, handle.id), lambda s: len(s.refusals) == 2)
    assert [r.channel for r in status.refusals] == ["update", "signal"]
    gate = next(g for g in status.gates if g.gate == "review")
    assert [a.user for a in gate.approvals] == ["rita"]
    records = open_store(AuditSettings.from_env().url).records(handle.id)
    approvals = [r for r in records if r.event_type == "gate.approval"]
    assert len(approvals) == 1
    assert approvals[0].data["signature"]["nonce"] == act.signature.nonce  # type: ignore[union-attr]


async def test_an_approval_after_a_changes_round_counts_and_an_old_round_does_not(
    time_skipping_env: WorkflowEnvironment, task_queue: str, skipping_worker: Worker
) -> None:
    """Four-eyes: rita approves, vera asks for changes, the gate reopens. Her
    identical second approval is a new act and counts; an approval she had
    signed for round 1 does not."""
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE, by="carl")
    await settled(client, handle.id)
    rita = Signer.load("rita")
    kept_for_later = await signed(client, handle.id, approve("rita"), rita)
    await decide(client, handle.id, approve("rita"))
    changes = Decision(gate="review", user="vera", outcome="request_changes", comment="recheck")
    await decide(client, handle.id, changes)
    await eventually(
        lambda: run_status(client, handle.id),
        lambda s: any(g.gate == "review" and g.round == 2 and g.decision is None for g in s.gates),
    )

    old_round = await refusal(client, handle.id, kept_for_later)
    again = await decide(client, handle.id, approve("rita"))
    final = await decide(client, handle.id, approve("vera", "second approval"))

    assert "signed for round 1 of gate 'review', which is in round 2" in old_round
    assert (again.approved_by, again.awaiting) == (["rita"], 1)
    assert final.approved_by == ["rita", "vera"]
    assert (await handle.result()).outcome == "completed"


async def test_a_requester_cannot_decide_their_own_run(
    time_skipping_env: WorkflowEnvironment, task_queue: str, skipping_worker: Worker
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL, by="rita")
    await settled(client, handle.id)

    reason = await refusal(client, handle.id, approve("rita"))

    assert "requested this run and may not decide its gates" in reason


async def test_malformed_acts_are_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment, at_review: WorkflowHandle[Any, RunResult]
) -> None:
    client = time_skipping_env.client
    await at_review.signal("decide", {"gate": "review", "user": "rita", "outcome": "yes please"})
    await at_review.signal("stop", ["not", "a", "stop"])
    assert "not a valid decide request" in await raw_refusal(at_review, "decide", 42)

    status = await eventually(
        lambda: run_status(client, at_review.id), lambda s: len(s.refusals) == 3
    )
    first, second, third = status.refusals
    assert (first.act, first.channel, first.user) == ("decide", "signal", "rita")
    assert first.reason.startswith("not a valid decide request: outcome:")
    assert '"outcome":"yes please"' in first.received
    assert (second.act, second.reason.split(":")[0]) == ("stop", "not a valid stop request")
    assert (third.channel, third.received) == ("update", "42")
    await trail_has(at_review.id, "stop.refused", "not a valid stop request")


# -- stops ---------------------------------------------------------------------


async def test_unsigned_and_forged_stops_are_refused_and_a_signed_one_stops(
    time_skipping_env: WorkflowEnvironment,
    at_review: WorkflowHandle[Any, RunResult],
    keyring: dict[str, Ed25519PrivateKey],
) -> None:
    client = time_skipping_env.client
    stop = StopRequest(user="ada", reason="sent to us by mistake")
    unsigned = await raw_refusal(at_review, "stop", stop.model_dump(mode="json"))
    assert "the stop is not signed" in unsigned
    with pytest.raises(DecisionRefused) as forged:
        await stop_run(client, at_review.id, stop, Signer("ada", keyring["mallory"]))
    assert "not one of user 'ada''s keys" in forged.value.reason
    assert (await run_status(client, at_review.id)).state == "waiting"

    stopped = await stop_run(client, at_review.id, stop)

    assert (stopped.user, stopped.role) == ("ada", "admin")
    assert (await at_review.result()).outcome == "stopped"
    await trail_has(at_review.id, "stop.refused", "not one of user 'ada''s keys")


# -- a decision made before its gate opened --------------------------------------

RELEASE = asyncio.Event()


class Ticket(BaseModel):
    text: str = "ticket"


@activity.defn
async def wait_for_release(ticket: Ticket) -> Ticket:
    await RELEASE.wait()
    return ticket


class TicketRequest(RunInput):
    text: str = "ticket"


@workflow.defn(name="held_ticket", sandboxed=False)
class HeldTicket(GraphWorkflow):
    graph = Graph(
        name="held_ticket",
        input=TicketRequest,
        nodes=(
            Step("prepare", activity=wait_for_release, inputs={"text": "input.text"}),
            Gate("review", role="reviewer", inputs={"ticket": "prepare.text"}),
        ),
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


async def test_a_decision_refused_before_the_gate_opened_is_accepted_once_it_is_open(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    from worker import build_worker

    client = time_skipping_env.client
    RELEASE.clear()
    async with build_worker(
        client,
        task_queue=task_queue,
        extra_workflows=[HeldTicket],
        extra_activities=[wait_for_release],
    ):
        handle = await start_run(
            client,
            HeldTicket,
            build_input(HeldTicket, [], requested_by="carl"),
            task_queue=task_queue,
            workflow_id=f"held-{uuid.uuid4().hex[:8]}",
        )
        STARTED.append(handle)
        await eventually(
            lambda: run_status(client, handle.id),
            lambda s: s.nodes[0].status == "running",
        )
        early = await refusal(client, handle.id, approve("rita"))
        RELEASE.set()
        await settled(client, handle.id)
        accepted = await decide(client, handle.id, approve("rita"))
        result = await handle.result()

    assert early == "gate 'review' is not open: the run has not reached it or skipped it"
    assert accepted.outcome == "approve"
    assert result.outcome == "completed"


async def test_the_client_refuses_to_sign_a_start_for_someone_else(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    from baton.client import StartError

    request = build_input(DocumentIntake, [str(MISSING_TOTAL)], requested_by="carl")
    with pytest.raises(StartError, match="requested by 'carl' but would be signed by 'rita'"):
        await start_run(
            time_skipping_env.client,
            DocumentIntake,
            request,
            task_queue=task_queue,
            signer=Signer.load("rita"),
        )


# -- with the official `temporal` CLI, on the real dev server --------------------


async def temporal_cli(server: EmbeddedServer, *args: str) -> subprocess.CompletedProcess[str]:
    """Run the `temporal` CLI off the event loop: the worker under test lives
    in this process and must keep working meanwhile."""
    argv = [temporal_binary(), *args, "--address", server.address]
    return await asyncio.to_thread(subprocess.run, argv, capture_output=True, text=True, timeout=60)


async def test_the_temporal_cli_cannot_start_decide_or_stop_without_a_signature(
    dev_server: EmbeddedServer, dev_client: Client, dev_worker: Worker, task_queue: str
) -> None:
    injected = {
        "document": stored_json(LARGE),
        "requested_by": "mallory",
        "config": {"directory": {"users": {"mallory": {"roles": ["reviewer", "controller"]}}}},
    }
    bad_start = await temporal_cli(
        dev_server,
        *("workflow", "start", "--type", "document_intake", "--task-queue", task_queue),
        *("--workflow-id", f"cli-{uuid.uuid4().hex[:8]}", "--input", json.dumps(injected)),
    )
    assert bad_start.returncode == 0, bad_start.stderr
    started = dev_client.get_workflow_handle(
        bad_start.stdout.split("WorkflowId")[1].split()[0], result_type=RunResult
    )
    assert "the input does not fit IntakeRequest: config:" in await failure_of(started)

    handle = await start_intake(dev_client, task_queue, LARGE, by="carl")
    await settled(dev_client, handle.id)
    by = ("--workflow-id", handle.id)
    unsigned = json.dumps(approve("rita").model_dump(mode="json"))
    update = await temporal_cli(
        dev_server, "workflow", "update", "execute", *by, "--name", "decide", "--input", unsigned
    )
    assert update.returncode != 0
    # The refusal's words are encrypted like every failure: the plain CLI
    # sees its type only (with the codec server, its words too).
    assert "Encoded failure (type: DecisionRefused" in update.stderr
    assert "not signed" not in update.stderr + update.stdout
    signal = await temporal_cli(
        dev_server, "workflow", "signal", *by, "--name", "decide", "--input", unsigned
    )
    assert signal.returncode == 0, signal.stderr
    stop = json.dumps({"user": "ada", "reason": "from a shell"})
    stopped = await temporal_cli(
        dev_server, "workflow", "update", "execute", *by, "--name", "stop", "--input", stop
    )
    assert stopped.returncode != 0
    assert "Encoded failure" in stopped.stderr

    status = await eventually(
        lambda: run_status(dev_client, handle.id), lambda s: len(s.refusals) == 3
    )
    assert [(r.act, r.channel) for r in status.refusals] == [
        ("decide", "update"),
        ("decide", "signal"),
        ("stop", "update"),
    ]
    assert [r.reason.split(":")[0] for r in status.refusals] == [
        "the decide is not signed",
        "the decide is not signed",
        "the stop is not signed",
    ]
    assert status.state == "waiting"

    # A signed act is JSON like any other: the CLI can carry it, once.
    act = await sign_decision(dev_client, handle.id, approve("rita"), Signer.load("rita"))
    signed_json = act.model_dump_json()
    accepted = await temporal_cli(
        dev_server, "workflow", "update", "execute", *by, "--name", "decide", "--input", signed_json
    )
    # The run's answer is encrypted, so the plain CLI cannot show it; the
    # act took effect all the same.
    assert "encoding binary/encrypted: payload encoding is not supported" in accepted.stderr
    gate = next(g for g in (await run_status(dev_client, handle.id)).gates if g.gate == "review")
    assert [a.user for a in gate.approvals] == ["rita"]
    replayed = await temporal_cli(
        dev_server, "workflow", "update", "execute", *by, "--name", "decide", "--input", signed_json
    )
    assert replayed.returncode != 0
    assert "Encoded failure (type: DecisionRefused" in replayed.stderr
    refusals = (await run_status(dev_client, handle.id)).refusals
    assert "this signed decide was delivered before" in refusals[-1].reason
    await decide(dev_client, handle.id, approve("vera", "second approval"))
    assert (await handle.result()).outcome == "completed"


async def test_a_payload_with_values_json_cannot_hold_is_refused_and_the_run_goes_on(
    time_skipping_env: WorkflowEnvironment, at_review: WorkflowHandle[Any, RunResult]
) -> None:
    """NaN and Infinity decode from Temporal's JSON payloads; a handler that
    failed on them would fail the workflow task again and again, a stuck run."""
    client = time_skipping_env.client
    raw = b'{"gate": "review", "user": "rita", "outcome": "approve", "output": {"total": NaN}}'
    payload = RawValue(Payload(metadata={"encoding": b"json/plain"}, data=raw))
    await at_review.signal("decide", payload)
    assert "the decide is not signed" in await raw_refusal(at_review, "decide", payload)

    status = await eventually(
        lambda: run_status(client, at_review.id), lambda s: len(s.refusals) == 2
    )
    assert [r.channel for r in status.refusals] == ["signal", "update"]
    await trail_has(at_review.id, "decision.refused", "the decide is not signed")
    assert (await decide(client, at_review.id, approve("rita"))).outcome == "approve"
    assert (await at_review.result()).outcome == "completed"


@pytest.mark.parametrize(
    ("payload", "named"),
    [
        ({"requested_by": "carl"}, "document: Field required"),
        (
            {"document": 123, "requested_by": "carl"},
            "document: Input should be a valid dictionary or instance of DocumentRef",
        ),
        (
            {"path": "/etc/passwd", "requested_by": "carl"},
            "path: Extra inputs are not permitted",
        ),
        (None, "Input should be a valid dictionary or instance of IntakeRequest"),
        ([1, 2], "Input should be a valid dictionary or instance of IntakeRequest"),
    ],
)
async def test_a_malformed_start_fails_at_once_naming_the_field(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    payload: Any,
    named: str,
) -> None:
    handle = await start_raw(time_skipping_env.client, task_queue, payload)

    message = await failure_of(handle)
    assert message.startswith("run refused: the input does not fit IntakeRequest: ")
    assert named in message
    status = await run_status(time_skipping_env.client, handle.id)
    assert (status.state, status.error) == ("failed", message)
    await trail_has(handle.id, "run.refused", named)


async def test_oversized_refused_acts_are_kept_cut_short(
    time_skipping_env: WorkflowEnvironment, at_review: WorkflowHandle[Any, RunResult]
) -> None:
    """Refusals are kept in the status, which every reviewer's page loads:
    unsigned acts of a megabyte each would soon make it too large to answer."""
    client = time_skipping_env.client
    huge = approve("rita", comment="x" * 1_000_000).model_dump(mode="json")
    for _ in range(3):
        await at_review.signal("decide", huge)

    status = await eventually(
        lambda: run_status(client, at_review.id), lambda s: len(s.refusals) == 3
    )

    assert status.model_dump_json().__len__() < 100_000
    for refusal in status.refusals:
        assert (refusal.decision, refusal.user) == (None, "rita")
        assert refusal.reason.startswith("the decide is not signed")
        assert refusal.received.startswith('{"comment":"xxx') and refusal.received.endswith("…")
    await at_review.signal("decide", approve("y" * 1_000_000).model_dump(mode="json"))
    status = await eventually(
        lambda: run_status(client, at_review.id), lambda s: len(s.refusals) == 4
    )
    assert status.refusals[-1].user == "y" * 63 + "…"
    assert status.model_dump_json().__len__() < 100_000
    records = open_store(AuditSettings.from_env().url).records(at_review.id)
    assert sum(len(r.model_dump_json()) for r in records) < 200_000
