"""Gate: a person's decision, and how the run waits for one.

What a gate is and who may decide it is in :mod:`baton.gates`; here the
run opens it, waits with its SLA (reminders, escalation along the chain,
then a hold or a rejection as declared) and takes its decision. An Ask that
escalates to a person waits the same way (:func:`await_decision`)."""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError

from baton.audit.events import Actor
from baton.gates import SLA_ACTOR, GateDecision, GateState, Notice, Reminder
from baton.nodes.base import (
    ActivityRef,
    Done,
    GraphError,
    Node,
    Predicate,
    Reasons,
    Retry,
    Run,
    model_fields,
    resumed,
    root_message,
)
from baton.routing import Attempt
from baton.state import NodeRecord, RunState, RunView

if TYPE_CHECKING:
    from baton.graph import Graph

NOTIFY_ACTIVITY = "notify_reviewers"
NOTICE_RETRY = Retry(max_attempts=3)
# What a gate.opened event says of the gate (with its SLA in seconds): who
# may decide, by when, and what they were shown.
OPENED_FACTS = {
    "roles",
    "assignees",
    "excluded",
    "chain",
    "due_at",
    "remind_at",
    "on_exhausted",
    "approvals_needed",
    "changes_left",
    "shown",
}
# What a gate shows is what its deciders sign, and every replay computes it
# again, so it must come out the same: no readings of workflow.now(). The SDK
# does not always replay those as they were first read: a worker that answers
# a query on a run it does not hold applies the events that came after the
# last workflow task at that task's time, while a replay applies them at the
# next task's. The times of model attempts stay in the status and the trail
# (ai.inference). Runs started before this change keep the old view. The patch
# is taken in a run's first activation: taken later, at a gate, it was missed
# on replay when a local activity's result and the gate fell in one task there
# but in two when the run went live.
CLOCKLESS_GATE_VIEW = "gate-view-without-clock"
_CLOCK_FIELDS = frozenset({"started_at", "finished_at"})
# A gate shows why the run came to it (the node's `why=`) and model attempts
# show their provider's notes. Both are part of what a decider signs, so runs
# started before this change keep the view they were decided on; taken in the
# first activation for the reason given above.
GATE_STATES_WHY = "gate-states-why"
_ATTEMPT_FACTS_SINCE_WHY = frozenset({"notes", "response_id", "finish_reason"})


class FourEyes(BaseModel):
    """Two approvals from two different users before a gate approves.
    ``when`` limits the rule to some runs (a large amount, say); without it
    every approval of the gate needs a second. With ``other_role`` the two
    approvers decide in two different roles: the gate's own and this one."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    when: Predicate | None = None
    other_role: str | None = None


class Approvers(BaseModel):
    """Who decides a gate in this run, as its ``route=`` function computed
    it from the run's data (an approval matrix by amount and cost centre).
    Two roles: two approvals, one in each (four-eyes across roles)."""

    roles: list[str] = Field(min_length=1, max_length=2)
    assignees: list[str] = Field(
        default_factory=list,
        description="Only these users decide, until the gate escalates; empty: anyone in the roles",
    )
    rule: str = Field(default="", description="Which rule chose them, in words, for the trail")
    excluded: dict[str, str] = Field(
        default_factory=dict,
        description="Users who may not decide the gate in this run whatever roles they hold, "
        "each with why (a hire's own manager, named in the run's data)",
    )


Route = Callable[[RunView], Approvers]


class Gate(Node):
    """A human decision. The run waits until a user holding one of the gate's
    roles decides. ``subject`` names the node whose output the reviewer judges
    (and may override); ``inputs`` add what else they need to see.

    SLA: at ``remind_at`` of ``sla`` the gate's roles are reminded; at the SLA
    it escalates to the next role in ``escalate_to`` and each level gets the
    SLA again. When the chain is exhausted the gate ends as declared by
    ``on_exhausted``: ``"hold"`` adds ``hold_for`` (an administrator) and
    waits, ``"reject"`` rejects. A gate never approves by itself.

    ``changes_to`` lets a reviewer request changes: the run goes back to that
    node and through the gate again, at most ``max_changes`` times.

    ``why`` states, in sentences a reviewer reads, each reason the run came to
    the gate (a failed check, a confidence below its threshold, a missing
    field); they are shown with the subject, so they are part of what the
    decider signs, and the trail, status and reports carry them.

    ``route``, a function of the run, chooses the deciders from its data
    instead of ``role`` (an approval matrix); what it chose is in the gate's
    ``gate.opened`` record. ``not_by`` names earlier gates whose deciders
    may not decide this one (the clerk, the approver and the payment
    releaser are three people)."""

    role: str = ""
    route: Route | None = None
    not_by: tuple[str, ...] = ()
    subject: str | None = None
    why: Reasons | None = None
    sla: timedelta | None = None
    remind_at: float | None = Field(default=0.5, gt=0, lt=1)
    escalate_to: tuple[str, ...] = ()
    on_exhausted: Literal["hold", "reject"] = "hold"
    hold_for: str = "admin"
    four_eyes: FourEyes | None = None
    changes_to: str | None = None
    max_changes: int = Field(default=2, ge=1)
    timeout: timedelta = timedelta(0)

    kind: ClassVar[str] = "gate"
    opens_gate: ClassVar[bool] = True
    __init__ = Node.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(GateDecision)

    def edited_model(self, graph: Graph) -> type[BaseModel] | None:
        return None if self.subject is None else graph.node(self.subject).answer_model()

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        if not self.role.strip() and self.route is None:
            raise GraphError(
                f"node '{self.id}': a gate needs a role that may decide it, or a route= "
                "function that chooses its deciders"
            )
        if self.role.strip() and self.route is not None:
            raise GraphError(
                f"node '{self.id}': give role= or route=, not both; route= chooses the roles"
            )
        if self.route is not None and self.four_eyes is not None:
            raise GraphError(
                f"node '{self.id}': with route=, four-eyes is the route's choice (two roles); "
                "leave four_eyes= out"
            )
        for gate in self.not_by:
            if gate not in ancestors or not graph.node(gate).opens_gate:
                raise GraphError(
                    f"node '{self.id}': not_by names '{gate}', which must be a gate that "
                    "runs before it"
                )
        if self.subject is not None and self.subject not in ancestors:
            raise GraphError(
                f"node '{self.id}': subject '{self.subject}' must be a node that runs before it"
            )
        if self.four_eyes is not None and self.four_eyes.other_role == self.role:
            raise GraphError(
                f"node '{self.id}': four_eyes.other_role must differ from the gate's role "
                f"'{self.role}'; leave it out for two approvers of the same role"
            )
        if self.changes_to is not None and self.changes_to not in ancestors:
            raise GraphError(
                f"node '{self.id}': changes_to='{self.changes_to}' must be a node that runs "
                "before it"
            )

    def activities(self) -> Sequence[ActivityRef]:
        return [NOTIFY_ACTIVITY]

    async def run(self, run: Run, record: NodeRecord) -> Done:
        state = run.state
        if resumed(record):
            gate = state.gates[self.id]
            decision = await _decision_in(run, gate, record, parkable=True)
        else:
            gate = self._open(run, record)
            decision = await await_decision(run, gate, record, parkable=True)
        return self._decided(run, record, gate, decision)

    def _open(self, run: Run, record: NodeRecord) -> GateState:
        """This visit's gate, as its deciders will see it."""
        state = run.state
        shown = run.resolve(self.inputs)
        if self.subject is not None:
            subject = state.records[self.subject]
            meta = dict(subject.meta)
            if "attempts" in meta:
                meta["attempts"] = shown_attempts(run, meta["attempts"])
            shown["subject"] = {"node": self.subject, "output": subject.output, **meta}
        if self.why is not None and state.states_why:
            shown["why"] = list(self.why(run.view()))
        approvers, approvals_needed = self._approvers(run)
        if self.route is not None:
            # Left out when empty: what routed gates of runs already going
            # showed, and their deciders signed, stays the same.
            shown["approvers"] = approvers.model_dump(
                mode="json", exclude=None if approvers.excluded else {"excluded"}
            )
        # A reopened gate replaces its decided self; its reviewer still sees why it came back.
        previous = state.gates.get(self.id)
        earlier = [*previous.earlier, previous.decision] if previous and previous.decision else []
        return GateState(
            gate=self.id,
            round=record.visits,
            roles=list(approvers.roles),
            assignees=list(approvers.assignees),
            excluded=_deciders(state, self.not_by),
            barred=dict(approvers.excluded),
            chain=list(self.escalate_to),
            opened_at=workflow.now(),
            sla=self.sla,
            remind_fraction=self.remind_at,
            on_exhausted=self.on_exhausted,
            hold_for=self.hold_for,
            approvals_needed=approvals_needed,
            distinct_roles=len(approvers.roles) > 1,
            changes_left=None
            if self.changes_to is None
            else self.max_changes - state.changes_requested.get(self.id, 0),
            shown=shown,
            earlier=earlier,
        )

    def _decided(
        self, run: Run, record: NodeRecord, gate: GateState, decision: GateDecision
    ) -> Done:
        state = run.state
        if decision.outcome == "request_changes":
            state.changes_requested[self.id] = state.changes_requested.get(self.id, 0) + 1
            assert self.changes_to is not None
            # The answer under review goes back with the note, when it is the one to redo.
            redone = self.changes_to
            reviewed = state.records[redone].output if self.subject in (None, redone) else None
            state.feedback[redone] = (
                [f"the reviewer ({decision.user}) asked for changes: {decision.comment}"],
                reviewed,
            )
            record.detail = f"changes requested by {decision.user}; back to '{self.changes_to}'"
            return Done(decision.model_dump(mode="json"), back_to=self.changes_to)
        if decision.edited and self.subject is not None:
            subject = state.records[self.subject]
            subject.meta.update(original_output=subject.output, overridden_by=decision.user)
            subject.output = gate.edited_output
        return Done(decision.model_dump(mode="json"))

    def _approvers(self, run: Run) -> tuple[Approvers, int]:
        """Who decides in this run, and how many approvals it takes."""
        if self.route is not None:
            chosen = self.route(run.view())
            return chosen, len(chosen.roles)
        four_eyes = self.four_eyes
        if four_eyes is None or (four_eyes.when is not None and not four_eyes.when(run.view())):
            return Approvers(roles=[self.role]), 1
        other = [] if four_eyes.other_role is None else [four_eyes.other_role]
        return Approvers(roles=[self.role, *other]), 2

    def mermaid_shape(self) -> str:
        who = self.role if self.route is None else f"{self.route.__name__}()"
        return f'{{"{self.id}<br/><small>human: {who}</small>"}}'

    def mermaid_edges(self) -> list[str]:
        if self.changes_to is None:
            return []
        return [f"{self.id} -.->|changes requested, at most {self.max_changes}x| {self.changes_to}"]


def _deciders(state: RunState, gates: Sequence[str]) -> list[str]:
    """Everyone who approved or decided ``gates`` in this run."""
    users: list[str] = []
    for gate_id in gates:
        gate = state.gates.get(gate_id)
        if gate is None:
            continue
        for decision in [*gate.earlier, *gate.approvals, gate.decision]:
            if decision is not None and decision.user not in users:
                users.append(decision.user)
    return users


def shown_attempts(run: Run, attempts: list[Attempt]) -> list[dict[str, Any]]:
    """Model attempts as a gate shows them: without their times (see
    CLOCKLESS_GATE_VIEW), and in runs started before GATE_STATES_WHY
    without what that change added."""
    hidden: set[str] = set()
    if run.state.clockless_view:
        hidden |= _CLOCK_FIELDS
    if not run.state.states_why:
        hidden |= _ATTEMPT_FACTS_SINCE_WHY
    return [a.model_dump(mode="json", exclude=hidden) for a in attempts]


async def await_decision(
    run: Run, gate: GateState, record: NodeRecord, *, parkable: bool = False
) -> GateDecision:
    """Open ``gate`` and wait for an accepted decision, reminding,
    escalating and finally holding or rejecting as its SLA says.
    ``parkable``: the run may carry the wait into its next execution
    (baton.carry), where the node resumes it with :func:`_decision_in`."""
    gate.start_clock(gate.opened_at)
    # As a decider's client receives it (the status query's JSON), so that
    # both sides digest the same values.
    gate.shown = pydantic_core.from_json(pydantic_core.to_json(gate.shown))
    gate.refresh_digest()
    run.state.gates[gate.gate] = gate
    record.status = "waiting"
    run.trail.ship_soon()
    gate_event(
        run,
        gate,
        "gate.opened",
        sla_seconds=gate.sla.total_seconds() if gate.sla else None,
        **gate.model_dump(include=OPENED_FACTS),
    )
    run.publish()
    return await _decision_in(run, gate, record, parkable=parkable)


async def _decision_in(
    run: Run, gate: GateState, record: NodeRecord, *, parkable: bool
) -> GateDecision:
    """Wait at the open ``gate`` for its decision, its SLA clock running
    from the deadlines the gate keeps."""
    while gate.decision is None:
        deadline = gate.next_deadline()
        try:
            with run.parked(gate.gate) if parkable else contextlib.nullcontext():
                await workflow.wait_condition(
                    lambda: gate.decision is not None,
                    timeout=None
                    if deadline is None
                    else max(deadline - workflow.now(), timedelta(milliseconds=1)),
                    timeout_summary=f"SLA of gate {gate.gate}",
                )
        except TimeoutError:
            await _on_deadline(run, gate, record)
    record.status = "running"
    record.meta.update(decided_by=gate.decision.user, role=gate.decision.role)
    if gate.decision.outcome == "reject":
        run.state.rejected = True
    return gate.decision


def gate_event(run: Run, gate: GateState, event_type: str, what: str = "", **data: Any) -> None:
    """Record an event of ``gate``'s current round; ``what`` names which one
    of its type in that round (a role escalated to, a signed act's nonce)."""
    about = f"r{gate.round}/{what}" if what else f"r{gate.round}"
    run.trail.record(event_type, node=gate.gate, about=about, **data)


async def _on_deadline(run: Run, gate: GateState, record: NodeRecord) -> None:
    now = workflow.now()
    if gate.remind_at is not None and now >= gate.remind_at:
        gate.remind_at = None
        gate.reminders.append(Reminder(at=now, roles=list(gate.roles)))
        gate_event(
            run,
            gate,
            "gate.reminded",
            roles=gate.roles,
            due_at=gate.due_at,
        )
        await _notify(run, gate, "reminder", record)
        return
    if gate.chain:
        role = gate.escalate(now)
        record.detail = f"escalated to {role}"
        gate_event(
            run,
            gate,
            "gate.escalated",
            role,
            to_role=role,
            roles=gate.roles,
            due_at=gate.due_at,
        )
        run.publish()
        await _notify(run, gate, "escalation", record)
    elif gate.on_exhausted == "reject":
        gate.due_at = None
        reason = "no decision before the SLA of every role in the chain; rejected as declared"
        gate.decision = GateDecision(
            outcome="reject", user=SLA_ACTOR, role="sla", comment=reason, decided_at=now
        )
        record.detail = reason
        gate_event(
            run,
            gate,
            "gate.decided",
            "sla",
            actor=Actor(type="service", id=SLA_ACTOR),
            outcome="reject",
            comment=reason,
            shown=gate.shown,
            waited_seconds=(now - gate.opened_at).total_seconds(),
            escalations=len(gate.escalations),
        )
    else:
        gate.hold()
        record.detail = f"SLA chain exhausted; holding for {gate.hold_for} or the roles before"
        gate_event(
            run,
            gate,
            "gate.escalated",
            "hold",
            holding=True,
            roles=gate.roles,
        )
        run.publish()
        await _notify(run, gate, "hold", record)


async def _notify(
    run: Run,
    gate: GateState,
    kind: Literal["reminder", "escalation", "hold"],
    record: NodeRecord,
) -> None:
    """Tell the gate's roles. A notice that cannot be delivered is
    recorded; it never fails the run, which still waits for its decision."""
    notice = Notice(
        workflow_id=workflow.info().workflow_id,
        process=run.graph.name,
        gate=gate.gate,
        kind=kind,
        roles=list(gate.roles),
        due_at=gate.due_at,
    )
    sent = len(gate.reminders) + len(gate.escalations) + int(gate.holding)
    try:
        await workflow.execute_activity(
            NOTIFY_ACTIVITY,
            notice,
            activity_id=f"{gate.gate}#{record.visits}.notice{sent}",
            start_to_close_timeout=timedelta(seconds=10),
            # Bounded: the gate waits for its decision while a notice is sent.
            retry_policy=NOTICE_RETRY.to_temporal(),
            summary=f"{gate.gate}: {kind} to {', '.join(gate.roles)}",
        )
    except ActivityError as err:
        gate_event(
            run,
            gate,
            "gate.notice_failed",
            kind,
            kind=kind,
            error=root_message(err),
        )
