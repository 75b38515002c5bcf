"""Signed acts on a run: its start, a decision at a gate, a stop, an event
from outside that the run awaits.

Each act is judged inside the workflow, signature first, against the
directory the run snapshotted: an accepted act changes the run's state, a
refused one is recorded in its status and trail and changes nothing else.
Called from :class:`~baton.runner.GraphWorkflow` and its handlers.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Mapping
from functools import partial
from typing import Any, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.audit.events import Actor
from baton.gates import (
    APPROVES_A_CALL,
    Channel,
    Decision,
    GateDecision,
    GateState,
    Refusal,
    StopRecord,
    StopRequest,
    refusal_reason,
    role_for,
    stop_refusal,
    stop_role,
)
from baton.nodes.base import Run, problems, schema_problems
from baton.nodes.gate import gate_event
from baton.outside import EVENT_DATA_LIMIT, Act, ExternalEvent, ReceivedEvent
from baton.signing import Action, Signature, canonical, statement, verify
from baton.state import RunInput, run_policy

M = TypeVar("M", bound=BaseModel)

_VERB: dict[Action, str] = {"start": "start", "decide": "approve", "stop": "stop", "event": "event"}
_REFUSED_EVENT_TYPE: dict[Act, str] = {
    "decide": "decision.refused",
    "stop": "stop.refused",
    "event": "event.refused",
}
_STARTING = "the run is still starting; try again in a moment"
# A malformed act is kept in the status and trail only this far.
_RECEIVED_LIMIT = 500
_CLAIMED_NAME_LIMIT = 64
# Refused acts larger than this are kept cut short (see _refuse).
_KEPT_ACT_LIMIT = 4096


def admit(run: Run, raw_input: Any) -> RunInput:
    """The run's input, if it fits the process and its requester signed
    it; else the run fails here with the reason, recorded."""
    graph = run.graph
    try:
        request = graph.input.model_validate(raw_input)
    except ValidationError as err:
        refuse_start(
            run,
            f"the input does not fit {graph.input.__name__}: {'; '.join(problems(err))}",
            raw_input.get("requested_by") if isinstance(raw_input, dict) else None,
        )
    assert isinstance(request, RunInput)
    signature = request.signature
    reason = act_refusal(
        run, "start", request.signed_fields(graph.name), signature, request.requested_by
    )
    if reason is not None:
        refuse_start(run, reason, request.requested_by)
    assert signature is not None and run.state.config is not None
    requester = run.state.config.directory.users[request.requested_by]
    run.trail.record(
        "run.admitted",
        actor=Actor(
            type="human" if requester.kind == "person" else "service",
            id=request.requested_by,
            role="requester",
        ),
        signature=signature.model_dump(),
    )
    return request


def check_policies(run: Run, raw_input: Any) -> None:
    """Fail the run at once, with the setting to fix, when the configuration
    it snapshotted cannot steer its process (a blank tolerance, an approval
    matrix with a gap): never halfway through, at the step that reads it."""
    config = run.state.config
    assert config is not None
    for name in run.graph.policies:
        try:
            run_policy(config, run.graph.policies, name)
        except ValueError as err:
            refuse_start(
                run,
                f"the configuration cannot run {run.graph.name}: {err} "
                f"(in [policies.{name}] of {config.source})",
                raw_input.get("requested_by") if isinstance(raw_input, dict) else None,
            )


def refuse_start(run: Run, reason: str, claimed_by: Any) -> NoReturn:
    run.trail.record(
        "run.refused",
        actor=Actor(type="unproven", id=str(claimed_by or "unknown"), role="requester"),
        reason=reason,
    )
    raise ApplicationError(f"run refused: {reason}", type="StartRefused", non_retryable=True)


def act_refusal(
    run: Run,
    action: Action,
    fields: Mapping[str, Any],
    signature: Signature | None,
    user_name: str,
    gate: GateState | None = None,
) -> str | None:
    """Why an act is not proven to be ``user_name``'s own, made for this
    run (and this round of ``gate``, over what it shows) and not used
    before; None when it is. A proven act's nonce is spent here."""
    config = run.state.config
    assert config is not None
    if signature is None:
        return (
            f"the {action} is not signed: every act on a run carries its user's signature "
            f"(`baton {_VERB[action]} ... --as USER` signs with USER's key; the inbox signs "
            "with the reviewer's passkey)"
        )
    user = config.directory.users.get(user_name)
    if user is None:
        return f"unknown user '{user_name}': users, roles and keys come from the directory"
    problem = verify(statement(action, fields, signature), signature, user_name, user)
    if problem is not None:
        return problem
    info = workflow.info()
    run_id = "" if action == "start" else info.first_execution_run_id or info.run_id
    if (signature.workflow_id, signature.run_id) != (info.workflow_id, run_id):
        signed_for = " ".join(filter(None, (signature.workflow_id, signature.run_id)))
        return (
            f"the {action} was signed for another run ({signed_for}); a signed act "
            "cannot be replayed onto this one"
        )
    if gate is not None and signature.round != gate.round:
        return (
            f"the decision was signed for round {signature.round} of gate '{gate.gate}', "
            f"which is in round {gate.round} now: look at it again and decide anew"
        )
    if gate is not None and signature.shown_digest != gate.shown_digest:
        return (
            f"the decision was signed over another view of gate '{gate.gate}' than the one "
            "it shows now (it changed, or the signer was shown something else): look at it "
            "again and decide anew"
        )
    if signature.nonce in run.state.nonces:
        return (
            f"this signed {action} was delivered before (nonce {signature.nonce}): "
            "a replayed act changes nothing"
        )
    run.state.nonces.add(signature.nonce)
    return None


def _unready(run: Run, act: Literal["decide", "event"]) -> str | None:
    """Why the run takes no decision or event now, whatever it says: it has
    not started, or it was stopped."""
    state = run.state
    if state.input is None or state.config is None:
        return "the run did not start: it takes no events" if act == "event" else _STARTING
    if state.stop is not None:
        return f"the run was stopped by {state.stop.user}: {state.stop.reason}"
    return None


# -- decisions -----------------------------------------------------------------


def _decision_refusal(run: Run, decision: Decision) -> str | None:
    """Why a run that is ready (see _unready) refuses ``decision``."""
    state = run.state
    assert state.input is not None and state.config is not None
    gate = state.gates.get(decision.gate)
    open_gate = gate if gate is not None and gate.decision is None else None
    proof = act_refusal(
        run, "decide", decision.signed_fields(), decision.signature, decision.user, open_gate
    )
    if proof is not None:
        return proof
    approves_a_call = open_gate is not None and APPROVES_A_CALL in open_gate.shown
    editable = None if approves_a_call else run.graph.editable_model(decision.gate)
    return refusal_reason(
        decision=decision,
        gates=state.gates,
        declared_gates={n.id for n in run.graph.nodes if n.opens_gate},
        directory=state.config.directory,
        requested_by=state.input.requested_by,
        output_check=None if editable is None else partial(schema_problems, editable),
        output_required=gate is not None
        and gate.edited_output is None
        and "proposed" in gate.shown
        and gate.shown["proposed"] is None,
    )


def _apply(run: Run, decision: Decision) -> GateDecision:
    """Apply an accepted decision. Under four-eyes an approval short of
    the count is recorded and the gate stays open; an edit restarts the
    count, since earlier approvers did not see it."""
    assert run.state.config is not None
    gate = run.state.gates[decision.gate]
    user = run.state.config.directory.users[decision.user]
    role = role_for(user, gate) or next(r for r in gate.roles if r in user.roles)
    edited = decision.outcome == "approve" and decision.output is not None
    if edited:
        model = run.graph.editable_model(decision.gate)
        assert model is not None
        gate.edited_output = model.model_validate(decision.output).model_dump(mode="json")
        gate.approvals.clear()
        # The next approver approves the edit, so that is what they must sign over.
        gate.refresh_digest()
    accepted = GateDecision(
        outcome=decision.outcome,
        user=decision.user,
        role=role,
        comment=decision.comment,
        decided_at=workflow.now(),
        edited=gate.edited_output is not None and decision.outcome == "approve",
    )
    if decision.outcome == "approve":
        gate.approvals.append(accepted)
        accepted.approved_by = [a.user for a in gate.approvals]
        accepted.awaiting = gate.approvals_needed - len(gate.approvals)
        if accepted.awaiting > 0:
            return accepted
    gate.decision = accepted
    return accepted


def deliver(run: Run, decision: Decision, channel: Channel) -> GateDecision:
    """Judge and apply a decision attempt; either way it is recorded, and
    a refusal changes nothing else."""
    reason = _unready(run, "decide") or _decision_refusal(run, decision)
    if reason is not None:
        _refuse(run, decision, channel, reason, _role_of(run, decision.user))
    assert decision.signature is not None
    accepted = _apply(run, decision)
    gate = run.state.gates[decision.gate]
    actor = Actor(type="human", id=accepted.user, role=accepted.role)
    if accepted.edited and decision.output is not None:
        gate_event(
            run,
            gate,
            "override",
            decision.signature.nonce,
            actor=actor,
            reason=accepted.comment,
            ai_output=gate.shown.get("proposed", gate.shown.get("subject")),
            edited_output=gate.edited_output,
        )
    gate_event(
        run,
        gate,
        "gate.approval" if accepted.awaiting else "gate.decided",
        decision.signature.nonce,
        actor=actor,
        channel=channel,
        **accepted.model_dump(include={"outcome", "comment", "edited", "approved_by", "awaiting"}),
        shown=gate.shown,
        shown_digest=gate.shown_digest,
        round=gate.round,
        signature=decision.signature.model_dump(),
        waited_seconds=(accepted.decided_at - gate.opened_at).total_seconds(),
        escalations=len(gate.escalations),
    )
    # A person's decision leaves the run now, not when the gate closes: a
    # run ended in between must not take the first approval with it.
    run.trail.ship_soon()
    run.publish()
    return accepted


# -- stopping ------------------------------------------------------------------


def request_stop(run: Run, request: StopRequest, channel: Channel) -> StopRecord:
    """Judge a stop request; an accepted one ends the run at its next step
    (see ``GraphWorkflow._run_graph``), a refused one is recorded and
    changes nothing."""
    state = run.state
    if state.config is None or state.input is None:
        reason: str | None = _STARTING
    else:
        reason = act_refusal(
            run, "stop", request.signed_fields(), request.signature, request.user
        ) or stop_refusal(
            request,
            directory=state.config.directory,
            stop_roles=run.graph.stop_roles,
            stopped=state.stop,
            finished=state.outcome not in ("running", "waiting"),
        )
    if reason is not None:
        _refuse(run, request, channel, reason, _role_of(run, request.user))
    assert state.config is not None
    role = stop_role(state.config.directory.users[request.user], run.graph.stop_roles)
    assert role is not None
    state.stop = StopRecord(user=request.user, role=role, reason=request.reason, at=workflow.now())
    run.trail.ship_soon()
    assert request.signature is not None
    run.trail.record(
        "run.stop_requested",
        about=request.signature.nonce,
        actor=Actor(type="human", id=request.user, role=role),
        channel=channel,
        reason=request.reason,
        signature=request.signature.model_dump(),
    )
    return state.stop


# -- events from outside ---------------------------------------------------------


def accept_event(run: Run, event: ExternalEvent, channel: Channel) -> ReceivedEvent:
    """Judge an event and keep it for the Await that takes it; a refused one
    is recorded and changes nothing else."""
    reason = _unready(run, "event") or _event_refusal(run, event)
    if reason is not None:
        _refuse(run, event, channel, reason, _role_of(run, event.user))
    assert run.state.config is not None and event.signature is not None
    user = run.state.config.directory.users[event.user]
    senders = {r for n in run.graph.nodes for r in n.awaited_events().get(event.event, ())}
    role = next(r for r in user.roles if r in senders)
    received = ReceivedEvent(
        event=event.event,
        user=event.user,
        sender="human" if user.kind == "person" else "service",
        role=role,
        key=event.key,
        data=event.data,
        received_at=workflow.now(),
        nonce=event.signature.nonce,
    )
    run.state.events.append(received)
    run.trail.record(
        "event.received",
        about=event.signature.nonce,
        actor=Actor(type=received.sender, id=event.user, role=role),
        channel=channel,
        event=event.event,
        key=event.key,
        data=event.data,
        signature=event.signature.model_dump(),
    )
    run.trail.ship_soon()
    return received


def _event_refusal(run: Run, event: ExternalEvent) -> str | None:
    """Why a run that is ready (see _unready) refuses ``event``."""
    state = run.state
    assert state.config is not None
    if state.outcome not in ("running", "waiting"):
        return f"the run has ended ({state.outcome}); it awaits nothing"
    awaiting = [n for n in run.graph.nodes if event.event in n.awaited_events()]
    if not awaiting:
        known = sorted({name for n in run.graph.nodes for name in n.awaited_events()})
        return (
            f"this process awaits no event '{event.event}' "
            f"(it awaits: {', '.join(known) or 'none'})"
        )
    proof = act_refusal(run, "event", event.signed_fields(), event.signature, event.user)
    if proof is not None:
        return proof
    user = state.config.directory.users[event.user]
    senders = sorted({r for n in awaiting for r in n.awaited_events()[event.event]})
    if not set(user.roles) & set(senders):
        held = ", ".join(user.roles) or "no roles"
        return (
            f"user '{event.user}' ({held}) may not send '{event.event}' to this run; "
            f"it needs one of: {', '.join(senders)}"
        )
    own_key = run.graph.event_keys.get(event.event)
    if own_key is not None and event.key != (expected := own_key(run.view())):
        return (
            f"this run takes '{event.event}' only about '{expected}', and this one is about "
            f"'{event.key or 'nothing'}': send it to the run of '{event.key}'"
        )
    size = len(canonical(event.data))
    if size > EVENT_DATA_LIMIT:
        return (
            f"the event's data is {size} bytes; at most {EVENT_DATA_LIMIT} are taken: send "
            "news and a reference, and let the process read the rest from its system"
        )
    if all(state.records[n.id].status in ("finished", "skipped", "failed") for n in awaiting):
        passed = ", ".join(n.id for n in awaiting)
        return f"the run no longer waits for '{event.event}': {passed} passed"
    return None


# -- refusals ------------------------------------------------------------------


def parse(run: Run, model: type[M], payload: Any, channel: Channel, act: Act) -> M:
    """``payload`` as ``model``, or a recorded refusal: a malformed act is
    an act too, and the trail keeps it (cut short)."""
    try:
        return model.model_validate(payload)
    except ValidationError as err:
        user = payload.get("user") if isinstance(payload, dict) else None
        reason = f"not a valid {act} request: {'; '.join(problems(err))}"
    _refused(run, channel, act, str(user or ""), reason, received=_cut(payload))


def _refuse(
    run: Run,
    request: Decision | StopRequest | ExternalEvent,
    channel: Channel,
    reason: str,
    role: str | None,
) -> NoReturn:
    sent = request.model_dump(mode="json")
    # A refused act is kept whole only if small: the status, which every
    # reviewer's page loads, must not grow by what anyone cares to send.
    whole = len(canonical(sent)) <= _KEPT_ACT_LIMIT
    _refused(
        run,
        channel,
        request.action,
        request.user,
        reason,
        decision=request if whole else None,
        received="" if whole else _cut(sent),
        node=request.gate if isinstance(request, Decision) else None,
        role=role,
    )


def _refused(
    run: Run,
    channel: Channel,
    act: Act,
    user: str,
    reason: str,
    *,
    decision: Decision | StopRequest | ExternalEvent | None = None,
    received: str = "",
    node: str | None = None,
    role: str | None = None,
) -> NoReturn:
    """Record a refused act in the status and the trail, and refuse it."""
    refusal = Refusal(
        at=workflow.now(),
        channel=channel,
        act=act,
        # The claimed name is the sender's to choose, its length too.
        user=_cut(user, _CLAIMED_NAME_LIMIT) if user else "",
        decision=decision,
        received=received,
        reason=reason,
    )
    run.state.refusals.append(refusal)
    run.trail.record(
        _REFUSED_EVENT_TYPE[act],
        node=node,
        actor=Actor(type="unproven", id=refusal.user or "unknown", role=role),
        channel=channel,
        decision=decision,
        received=received,
        reason=reason,
    )
    run.trail.ship_soon()
    raise ApplicationError(reason, type="DecisionRefused", non_retryable=True)


def _role_of(run: Run, user_name: str) -> str | None:
    config = run.state.config
    user = config.directory.users.get(user_name) if config else None
    return ",".join(user.roles) if user else None


def _cut(payload: Any, limit: int = _RECEIVED_LIMIT) -> str:
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = canonical(payload).decode()
        except (TypeError, ValueError):
            text = repr(payload)
    return text if len(text) <= limit else text[: limit - 1] + "…"
