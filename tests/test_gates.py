"""Who may decide a gate, and what a refusal says (pure rules)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from baton.gates import (
    Decision,
    Directory,
    GateDecision,
    GateState,
    StopRecord,
    StopRequest,
    User,
    refusal_reason,
    role_for,
    stop_refusal,
)

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


def test_a_change_request_needs_a_declared_edge_a_note_and_budget_left() -> None:
    ask = Decision(gate="review", user="rita", outcome="request_changes", comment="fix the date")
    assert "declares no edge for changes" in (reason(ask, gate()) or "")
    assert reason(ask, gate(changes_left=1)) is None
    assert "as often as it allows" in (reason(ask, gate(changes_left=0)) or "")
    silent = ask.model_copy(update={"comment": " "})
    assert reason(silent, gate(changes_left=1)) == (
        "a change request needs a comment: say what must change"
    )


def test_four_eyes_across_roles_takes_the_role_the_first_approver_used() -> None:
    first = GateDecision(outcome="approve", user="rita", role="reviewer", decided_at=NOW)
    state = gate(
        roles=["reviewer", "controller"], approvals_needed=2, distinct_roles=True, approvals=[first]
    )
    directory = Directory(
        users={
            **DIRECTORY.users,
            "vera": User(roles=["controller", "reviewer"]),
            "rob": User(roles=["reviewer"]),
        }
    )

    def why(user: str) -> str | None:
        return refusal_reason(
            decision=Decision(gate="review", user=user, outcome="approve"),
            gates={"review": state},
            declared_gates={"review"},
            directory=directory,
            requested_by="x",
        )

    assert "a role other than reviewer" in (why("rob") or "")
    assert "has already approved" in (why("rita") or "")
    assert why("vera") is None
    assert role_for(directory.users["vera"], state) == "controller"


def test_the_sla_clock_reminds_first_then_falls_due_and_holding_adds_the_administrator() -> None:
    state = gate(sla=timedelta(hours=24), remind_fraction=0.5)
    state.start_clock(NOW)
    assert state.next_deadline() == NOW + timedelta(hours=12)
    state.remind_at = None
    assert state.next_deadline() == NOW + timedelta(hours=24)
    state.escalate(NOW + timedelta(hours=24))
    assert state.roles == ["reviewer", "supervisor"]
    assert state.next_deadline() == NOW + timedelta(hours=36), "each level is reminded again"
    state.hold()
    assert (state.holding, state.next_deadline(), state.roles[-1]) == (True, None, "admin")


def test_only_a_stop_role_may_stop_and_only_with_a_reason() -> None:
    def why(user: str, text: str = "fraud suspected", **state: object) -> str | None:
        return stop_refusal(
            StopRequest(user=user, reason=text),
            directory=Directory(users={**DIRECTORY.users, "ada": User(roles=["admin"])}),
            stop_roles=("admin",),
            stopped=state.get("stopped"),  # type: ignore[arg-type]
            finished=bool(state.get("finished")),
        )

    assert why("ada") is None
    assert "may not stop this run; it needs one of: admin" in (why("rita") or "")
    assert why("ada", " ") == "stopping a run needs a reason: say why"
    assert "already finished" in (why("ada", finished=True) or "")
    earlier = StopRecord(user="ada", role="admin", reason="dup", at=NOW)
    assert "already stopped by ada" in (why("ada", stopped=earlier) or "")
