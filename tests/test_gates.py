"""Who may decide a gate, and what a refusal says (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime

from baton.gates import Decision, Directory, GateDecision, GateState, User, refusal_reason

NOW = datetime(2026, 11, 26, 9, 0, tzinfo=UTC)
DIRECTORY = Directory(
    users={
        "rita": User(roles=["reviewer"]),
        "sam": User(roles=["supervisor"]),
        "carl": User(roles=["clerk"]),
    }
)


def gate(**changes: object) -> GateState:
    return GateState(
        gate="review", roles=["reviewer"], chain=["supervisor"], opened_at=NOW
    ).model_copy(update=changes)


def reason(
    decision: Decision, state: GateState | None = None, requested_by: str = "x"
) -> str | None:
    return refusal_reason(
        decision=decision,
        gates={} if state is None else {state.gate: state},
        declared_gates={"review"},
        directory=DIRECTORY,
        requested_by=requested_by,
    )


def test_reviewer_may_decide_an_open_gate() -> None:
    assert reason(Decision(gate="review", user="rita", outcome="approve"), gate()) is None


def test_already_decided_gate_names_who_decided() -> None:
    decided = gate(
        decision=GateDecision(outcome="reject", user="rita", role="reviewer", decided_at=NOW),
    )
    text = reason(Decision(gate="review", user="rita", outcome="approve"), decided)
    assert text == "gate 'review' was already decided: reject by rita at 2026-11-26T09:00:00+00:00"


def test_declared_gate_not_open_yet() -> None:
    text = reason(Decision(gate="review", user="rita", outcome="approve"))
    assert text is not None and "is not open" in text


def test_escalation_gives_the_next_role_the_right_to_decide() -> None:
    state = gate()
    supervisor = Decision(gate="review", user="sam", outcome="approve")
    assert reason(supervisor, state) is not None
    assert state.escalate(NOW) == "supervisor"
    assert reason(supervisor, state) is None
    assert state.chain == [] and state.roles == ["reviewer", "supervisor"]


def test_requester_may_not_decide_their_own_run() -> None:
    text = reason(Decision(gate="review", user="rita", outcome="approve"), gate(), "rita")
    assert text is not None and "segregation of duties" in text
