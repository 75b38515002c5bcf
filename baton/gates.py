"""Approval gates: who may decide, what a decision is, what a refusal says.

Pure and deterministic: the runner calls these from workflow code, update
validators and signal handlers, so a refusal is decided the same way on every
replay. Users and roles come from the directory snapshotted into the run.
"""

from __future__ import annotations

from collections.abc import Callable, Collection, Mapping
from datetime import datetime, timedelta
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

from baton.outside import Act, ExternalEvent, SignedAct
from baton.signing import Passkey, Signature, subject_digest

Outcome = Literal["approve", "reject", "request_changes"]
Channel = Literal["update", "signal"]
# Who decides when nobody did: an exhausted SLA chain rejecting by declaration.
SLA_ACTOR = "baton-sla"


# The key of what a gate shows when it approves an agent's call of a tool
# with side effects (baton.nodes.agent_calls): the call runs as the model
# asked, so such a gate takes approve or reject, never an edited output.
APPROVES_A_CALL = "tool"


class GateDecision(BaseModel):
    """A gate's output: the accepted decision that later nodes read."""

    outcome: Outcome
    user: str
    role: str
    comment: str = ""
    decided_at: datetime
    edited: bool = Field(default=False, description="The reviewer replaced the AI output")
    approved_by: list[str] = Field(
        default_factory=list, description="Every approver in order: two under four-eyes"
    )
    awaiting: int = Field(
        default=0, description="Approvals still needed before the gate approves (four-eyes)"
    )


class Decision(SignedAct):
    """What a reviewer sends to a gate, through the `decide` update or signal."""

    action = "decide"
    answer = GateDecision
    signed = ("gate", "user", "outcome", "comment")
    digested = ("output",)

    gate: str
    user: str
    outcome: Outcome
    comment: str = ""
    output: dict[str, Any] | None = Field(
        default=None,
        description="An edited output that replaces the AI's (an override); needs a reason",
    )
    signature: Signature | None = Field(
        default=None, description="The deciding user's signature; an unsigned decision is refused"
    )


class Escalation(BaseModel):
    at: datetime
    to_role: str


class Reminder(BaseModel):
    at: datetime
    roles: list[str]


class StopRecord(BaseModel):
    user: str
    role: str
    reason: str
    at: datetime
    compensated: list[str] = Field(default_factory=list)
    compensation_failed: str | None = None


class StopRequest(SignedAct):
    """Stop a run: the AI Act's stop button. The run compensates the steps it
    declared compensable and ends as stopped."""

    action = "stop"
    answer = StopRecord
    signed = ("user", "reason")

    user: str
    reason: str
    signature: Signature | None = Field(
        default=None, description="The stopping user's signature; an unsigned stop is refused"
    )


class Refusal(BaseModel):
    """A decision or stop attempt that changed nothing, kept so it can be audited."""

    at: datetime
    channel: Channel
    act: Act = "decide"
    user: str = Field(default="", description="Who the act claimed to be from (unproven)")
    decision: Decision | StopRequest | ExternalEvent | None = Field(
        default=None, description="The act as sent; None when it was not a valid act at all"
    )
    received: str = Field(
        default="", description="A malformed or oversized act's payload, cut short"
    )
    reason: str


class Notice(BaseModel):
    """What the runner asks the notification activity to tell a gate's roles."""

    workflow_id: str
    process: str
    gate: str
    kind: Literal["reminder", "escalation", "hold"]
    roles: list[str]
    due_at: datetime | None = None


class GateState(BaseModel):
    """An open gate: its policy, as the node declared it for this run, and
    its progress."""

    gate: str
    round: int = Field(default=1, description="How many times this gate has opened in the run")
    roles: list[str]
    assignees: list[str] = Field(
        default_factory=list,
        description="Only these users decide until the gate escalates; empty: anyone in the roles",
    )
    excluded: list[str] = Field(
        default_factory=list,
        description="Users who decided an earlier gate this one is kept apart from (not_by=)",
    )
    barred: dict[str, str] = Field(
        default_factory=dict,
        description="Users the gate's route kept out of this run's decision, with why "
        "(Approvers.excluded)",
    )
    chain: list[str] = Field(default_factory=list)
    opened_at: datetime
    sla: timedelta | None = None
    due_at: datetime | None = None
    remind_fraction: float | None = None
    remind_at: datetime | None = None
    on_exhausted: Literal["hold", "reject"] = "hold"
    hold_for: str = "admin"
    holding: bool = False
    approvals_needed: int = 1
    distinct_roles: bool = False
    changes_left: int | None = Field(
        default=None, description="Change requests still allowed; None when the gate has no edge"
    )
    escalations: list[Escalation] = Field(default_factory=list)
    reminders: list[Reminder] = Field(default_factory=list)
    approvals: list[GateDecision] = Field(default_factory=list)
    shown: dict[str, Any] = Field(default_factory=dict)
    shown_digest: str = Field(
        default="", description="subject_digest of shown and edited_output: what a signer binds"
    )
    decision: GateDecision | None = None
    edited_output: dict[str, Any] | None = None
    earlier: list[GateDecision] = Field(
        default_factory=list,
        description="The decisions of this gate's earlier rounds, oldest first: the run came back",
    )

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["waiting", "decided"]:
        """Derived from the decision, so the two can never disagree."""
        return "waiting" if self.decision is None else "decided"

    def waiting_for(self) -> list[str]:
        """The roles that can move the gate on now: under four-eyes across
        roles, the role the first approver used is done."""
        taken = {a.role for a in self.approvals} if self.distinct_roles else set()
        return [role for role in self.roles if role not in taken]

    def start_clock(self, now: datetime) -> None:
        """Set the due time and the reminder for the current level of the chain."""
        self.due_at = now + self.sla if self.sla else None
        self.remind_at = (
            now + self.sla * self.remind_fraction if self.sla and self.remind_fraction else None
        )

    def refresh_digest(self) -> None:
        """Recompute what a decider's signature must bind, after what the
        gate shows changed (it opened, or an approver edited the output)."""
        self.shown_digest = subject_digest(self.shown, self.edited_output)

    def next_deadline(self) -> datetime | None:
        return self.remind_at or self.due_at

    def escalate(self, now: datetime) -> str:
        """Hand the gate to the next role in the chain; earlier roles keep the
        right to decide, since a late decision beats none."""
        role = self.chain.pop(0)
        self.roles.append(role)
        self.escalations.append(Escalation(at=now, to_role=role))
        self.start_clock(now)
        return role

    def hold(self) -> None:
        """The chain is exhausted: stop the clock and let an administrator decide too."""
        self.due_at = self.remind_at = None
        self.holding = True
        if self.hold_for not in self.roles:
            self.roles.append(self.hold_for)


class User(BaseModel):
    """A person or service as a run's directory snapshot holds them: roles,
    and the public keys their acts must be signed with."""

    name: str = ""
    kind: Literal["person", "service"] = "person"
    roles: list[str] = Field(default_factory=list)
    keys: list[str] = Field(default_factory=list, description="Ed25519 public keys, ed25519:<b64>")
    passkeys: list[Passkey] = Field(default_factory=list)


class Directory(BaseModel):
    users: dict[str, User] = Field(default_factory=dict)


OutputCheck = Callable[[dict[str, Any]], list[str]]


def refusal_reason(
    *,
    decision: Decision,
    gates: Mapping[str, GateState],
    declared_gates: set[str],
    directory: Directory,
    requested_by: str,
    output_check: OutputCheck | None = None,
    output_required: bool = False,
) -> str | None:
    """Why ``decision`` may not be applied now, in words for the person who
    sent it; None when it may."""
    gate = gates.get(decision.gate)
    if gate is None:
        if decision.gate in declared_gates:
            return f"gate '{decision.gate}' is not open: the run has not reached it or skipped it"
        known = ", ".join(sorted(declared_gates)) or "none"
        return f"this process has no gate '{decision.gate}' (its gates: {known})"
    if gate.decision is not None:
        done = gate.decision
        return (
            f"gate '{gate.gate}' was already decided: {done.outcome} by {done.user} "
            f"at {done.decided_at.isoformat()}"
        )
    user = directory.users.get(decision.user)
    if user is None:
        return f"unknown user '{decision.user}': users and their roles come from the directory"
    if user.kind == "service":
        return (
            f"'{decision.user}' is a service: a person decides a gate, never an AI or "
            "another system"
        )
    if not any(role in user.roles for role in gate.roles):
        held = ", ".join(user.roles) or "no roles"
        return (
            f"user '{decision.user}' ({held}) may not decide gate '{gate.gate}'; "
            f"it needs one of: {', '.join(gate.roles)}"
        )
    if decision.user == requested_by:
        return (
            f"user '{decision.user}' requested this run and may not decide its gates "
            "(segregation of duties)"
        )
    if decision.user in gate.excluded:
        return (
            f"user '{decision.user}' decided an earlier gate of this run that gate "
            f"'{gate.gate}' is kept apart from: another person decides it (segregation of duties)"
        )
    if decision.user in gate.barred:
        return (
            f"user '{decision.user}' may not decide gate '{gate.gate}' in this run: "
            f"{gate.barred[decision.user]} (segregation of duties)"
        )
    if gate.assignees and decision.user not in gate.assignees and not _escalated_to(user, gate):
        return (
            f"gate '{gate.gate}' is assigned to {', '.join(gate.assignees)}; "
            f"'{decision.user}' may decide it once it escalates to a role they hold"
        )
    if decision.outcome == "request_changes":
        return _change_refusal(decision, gate)
    if decision.outcome == "approve":
        refusal = _four_eyes_refusal(decision, gate, user)
        if refusal is not None:
            return refusal
    return _output_refusal(decision, gate.gate, output_check, output_required)


def _change_refusal(decision: Decision, gate: GateState) -> str | None:
    if gate.changes_left is None:
        return (
            f"gate '{gate.gate}' declares no edge for changes: approve, approve with an edited "
            "output, or reject"
        )
    if gate.changes_left == 0:
        return (
            f"changes were requested at gate '{gate.gate}' as often as it allows: approve, "
            "approve with an edited output, or reject"
        )
    if not decision.comment.strip():
        return "a change request needs a comment: say what must change"
    return None


def _four_eyes_refusal(decision: Decision, gate: GateState, user: User) -> str | None:
    if any(a.user == decision.user for a in gate.approvals):
        return (
            f"user '{decision.user}' has already approved gate '{gate.gate}'; it needs "
            f"{gate.approvals_needed} approvals from different users (four-eyes)"
        )
    if role_for(user, gate) is None:
        used = ", ".join(a.role for a in gate.approvals)
        return (
            f"gate '{gate.gate}' needs its next approval in a role other than {used} "
            f"(four-eyes across roles); user '{decision.user}' holds only "
            f"{', '.join(user.roles)}"
        )
    return None


def _output_refusal(
    decision: Decision, gate: str, check: OutputCheck | None, required: bool
) -> str | None:
    if decision.outcome == "reject":
        return None
    if decision.output is None:
        if required:
            return (
                f"gate '{gate}' has no valid AI answer to approve: approve with an edited "
                "output, or reject"
            )
        return None
    if check is None:
        return f"gate '{gate}' has no AI output that an edit could replace"
    if not decision.comment.strip():
        return "an edited output needs a reason: say why in the comment"
    problems = check(decision.output)
    if problems:
        return f"the edited output is invalid: {'; '.join(problems)}"
    return None


def _escalated_to(user: User, gate: GateState) -> bool:
    """Whether the gate escalated (or is held) to a role the user holds."""
    later = [e.to_role for e in gate.escalations] + ([gate.hold_for] if gate.holding else [])
    return any(role in user.roles for role in later)


def role_for(user: User, gate: GateState) -> str | None:
    """The gate role the user decides in, preferring the gate's first role.
    Under four-eyes across roles, a role an earlier approver used is taken."""
    return next((role for role in gate.waiting_for() if role in user.roles), None)


def stop_refusal(
    request: StopRequest,
    *,
    directory: Directory,
    stop_roles: Collection[str],
    stopped: StopRecord | None,
    finished: bool,
) -> str | None:
    """Why ``request`` may not stop the run; None when it may."""
    if stopped is not None:
        return (
            f"the run was already stopped by {stopped.user} at {stopped.at.isoformat()}: "
            f"{stopped.reason}"
        )
    if finished:
        return "the run has already finished; there is nothing to stop"
    user = directory.users.get(request.user)
    if user is None:
        return f"unknown user '{request.user}': users and their roles come from the directory"
    if stop_role(user, stop_roles) is None:
        return (
            f"user '{request.user}' ({', '.join(user.roles) or 'no roles'}) may not stop "
            f"this run; it needs one of: {', '.join(stop_roles)}"
        )
    if not request.reason.strip():
        return "stopping a run needs a reason: say why"
    return None


def stop_role(user: User, stop_roles: Collection[str]) -> str | None:
    return next((role for role in stop_roles if role in user.roles), None)


def reasons_of(shown: Mapping[str, Any]) -> list[str]:
    """Why a gate was opened, as it showed it: a list of reasons (a Gate's
    ``why=``), or one (an escalated Ask's), or none (runs before either)."""
    why = shown.get("why")
    if isinstance(why, str):
        return [why] if why else []
    return [str(reason) for reason in why] if isinstance(why, list) else []
