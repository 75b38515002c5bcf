"""Approval gates: who may decide, what a decision is, what a refusal says.

Pure and deterministic: the runner calls these from workflow code, update
validators and signal handlers, so a refusal is decided the same way on every
replay. Users and roles come from the directory snapshotted into the run.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, computed_field

Outcome = Literal["approve", "reject"]
Channel = Literal["update", "signal"]


class Decision(BaseModel):
    """What a reviewer sends to a gate, through the `decide` update or signal."""

    gate: str
    user: str
    outcome: Outcome
    comment: str = ""
    output: dict[str, Any] | None = Field(
        default=None,
        description="An edited output that replaces the AI's (an override); needs a reason",
    )


class GateDecision(BaseModel):
    """A gate's output: the accepted decision that later nodes read."""

    outcome: Outcome
    user: str
    role: str
    comment: str = ""
    decided_at: datetime
    edited: bool = Field(default=False, description="The reviewer replaced the AI output")


class Escalation(BaseModel):
    at: datetime
    to_role: str


class Refusal(BaseModel):
    """A decision attempt that changed nothing, kept so it can be audited."""

    at: datetime
    channel: Channel
    decision: Decision
    reason: str


class GateState(BaseModel):
    gate: str
    roles: list[str]
    chain: list[str] = Field(default_factory=list)
    opened_at: datetime
    due_at: datetime | None = None
    holding: bool = False
    escalations: list[Escalation] = Field(default_factory=list)
    shown: dict[str, Any] = Field(default_factory=dict)
    decision: GateDecision | None = None
    edited_output: dict[str, Any] | None = None

    @computed_field  # type: ignore[prop-decorator]
    @property
    def status(self) -> Literal["waiting", "decided"]:
        """Derived from the decision, so the two can never disagree."""
        return "waiting" if self.decision is None else "decided"

    def escalate(self, now: datetime) -> str:
        """Hand the gate to the next role in the chain; earlier roles keep the
        right to decide, since a late decision beats none."""
        role = self.chain.pop(0)
        self.roles.append(role)
        self.escalations.append(Escalation(at=now, to_role=role))
        return role


class User(BaseModel):
    name: str = ""
    roles: list[str] = Field(default_factory=list)


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
    if role_for(user, gate) is None:
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
    return _output_refusal(decision, gate.gate, output_check, output_required)


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


def role_for(user: User, gate: GateState) -> str | None:
    """The gate role the user decides in, preferring the gate's first role."""
    for role in gate.roles:
        if role in user.roles:
            return role
    return None
