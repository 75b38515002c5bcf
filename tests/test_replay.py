"""Recorded histories still replay: a code change that would break runs
already in flight fails here (then it needs `workflow.patched`).

tests/record_history.py records one document-intake run per path through its
gates, and a run of each other process; the tests below the replay check
that each recording took its path, so a recording that went another way (a
refused decision, a gate that never opened) fails here instead of replaying
a path no one meant to test."""

from __future__ import annotations

import base64
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import WorkflowHistory

from worker import build_replayer

FOLDER = Path(__file__).parent / "histories"
HISTORIES = sorted(FOLDER.glob("*.json"))
# Recorded by older code: they show today's code still runs yesterday's runs.
OLDEST = {"document_intake_clean", "document_intake_reviewed"}
GATE_PATHS = {
    "gate_approve",
    "gate_reject",
    "gate_changes",
    "gate_four_eyes",
    "gate_sla_escalation",
    "gate_stop",
    "gate_cascade_to_person",
}
PROCESSES = {
    "hr_onboarding_completed",
    "renewal_one_cycle",
    "renewal_one_cycle.carried2",
    "rfp_response_changes",
}


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = build_replayer()
    # <workflow id>.json, or <workflow id>.carried<n>.json for the later
    # executions of a run that continued as new: those check the id they resume.
    history = WorkflowHistory.from_json(path.stem.partition(".")[0], path.read_text())
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


def test_histories_are_recorded() -> None:
    """Every gate path and process has its recording (`python -m tests.record_history`)."""
    assert {p.stem for p in HISTORIES} >= OLDEST | GATE_PATHS | PROCESSES


# What a recorded run did, read from its history's JSON.


@dataclass
class Step:
    """One thing the run did, in history order: an activity it scheduled (with
    its result once completed), a timer that fired, an update it completed
    (``result`` None when it refused it) or its end."""

    kind: str  # "activity", "timer_fired", "update" or "end"
    name: str = ""
    input: Any = None
    result: Any = None


def _decoded(payloads: dict[str, Any] | None) -> Any:
    if not payloads or not payloads.get("payloads"):
        return None
    (payload,) = payloads["payloads"]
    encoding = base64.b64decode(payload["metadata"]["encoding"]).decode()
    if encoding == "binary/null":
        return None
    assert encoding == "json/plain", f"a {encoding} payload: record without encryption"
    return json.loads(base64.b64decode(payload["data"]))


def steps_of(name: str) -> list[Step]:
    events = json.loads((FOLDER / f"{name}.json").read_text())["events"]
    steps: list[Step] = []
    activities: dict[str, Step] = {}
    updates: dict[str, Step] = {}
    for event in events:
        kind = event["eventType"].removeprefix("EVENT_TYPE_")
        attrs = next((v for k, v in event.items() if k.endswith("EventAttributes")), {})
        if kind == "ACTIVITY_TASK_SCHEDULED":
            step = Step("activity", attrs["activityType"]["name"], _decoded(attrs.get("input")))
            activities[event["eventId"]] = step
            steps.append(step)
        elif kind == "ACTIVITY_TASK_COMPLETED":
            activities[attrs["scheduledEventId"]].result = _decoded(attrs.get("result"))
        elif kind == "TIMER_FIRED":
            steps.append(Step("timer_fired"))
        elif kind == "WORKFLOW_EXECUTION_UPDATE_ACCEPTED":
            request = attrs["acceptedRequest"]
            updates[request["meta"]["updateId"]] = Step(
                "update", request["input"]["name"], _decoded(request["input"].get("args"))
            )
        elif kind == "WORKFLOW_EXECUTION_UPDATE_COMPLETED":
            step = updates[attrs["meta"]["updateId"]]
            step.result = _decoded(attrs["outcome"].get("success"))
            steps.append(step)
        elif kind == "WORKFLOW_EXECUTION_COMPLETED":
            steps.append(Step("end", result=_decoded(attrs.get("result"))))
        elif kind == "WORKFLOW_EXECUTION_CONTINUED_AS_NEW":
            steps.append(Step("continued"))
    return steps


def acts(steps: list[Step]) -> list[tuple[str, str, str, str]]:
    """The decisions and stops the run accepted, each signed: (update, gate, user, outcome)."""
    updates = [s for s in steps if s.kind == "update"]
    assert all(s.result is not None for s in updates), "the recording holds a refused act"
    assert all(s.input["signature"]["value"] for s in updates), "an unsigned act"
    return [
        (s.name, s.input.get("gate", ""), s.input["user"], s.input.get("outcome", ""))
        for s in updates
    ]


def outcome(steps: list[Step]) -> str:
    assert steps[-1].kind == "end", "the run did not complete"
    return str(steps[-1].result["outcome"])


def activities(steps: list[Step], name: str) -> list[Step]:
    return [s for s in steps if s.kind == "activity" and s.name == name]


def first_update(steps: list[Step]) -> int:
    return next(i for i, s in enumerate(steps) if s.kind == "update")


def test_approve_enters_the_document_after_ritas_approval() -> None:
    steps = steps_of("gate_approve")
    assert acts(steps) == [("decide", "review", "rita", "approve")]
    assert activities(steps[first_update(steps) :], "enter_document")
    assert outcome(steps) == "completed"


def test_reject_ends_the_run_without_entering_anything() -> None:
    steps = steps_of("gate_reject")
    assert acts(steps) == [("decide", "review", "rita", "reject")]
    assert not activities(steps, "enter_document")
    assert outcome(steps) == "rejected"


def test_changes_send_the_document_back_and_the_second_round_approves() -> None:
    steps = steps_of("gate_changes")
    assert acts(steps) == [
        ("decide", "review", "rita", "request_changes"),
        ("decide", "review", "rita", "approve"),
    ]
    decisions = [s for s in steps if s.kind == "update"]
    assert [d.input["signature"]["round"] for d in decisions] == [1, 2]
    # The model reads the document again between the two rounds, with rita's note.
    between = steps[steps.index(decisions[0]) : steps.index(decisions[1])]
    (again,) = activities(between, "ask")
    assert "asked for changes" in json.dumps(again.input)
    assert outcome(steps) == "completed"


def test_four_eyes_takes_two_accepted_approvals() -> None:
    steps = steps_of("gate_four_eyes")
    assert acts(steps) == [
        ("decide", "review", "rita", "approve"),
        ("decide", "review", "vera", "approve"),
    ]
    first, second = (s.result for s in steps if s.kind == "update")
    assert (first["role"], first["awaiting"]) == ("reviewer", 1)
    assert (second["role"], second["approved_by"], second["awaiting"]) == (
        "controller",
        ["rita", "vera"],
        0,
    )
    assert outcome(steps) == "completed"


def test_sla_reminds_escalates_to_the_supervisor_who_decides() -> None:
    steps = steps_of("gate_sla_escalation")
    waited = steps[: first_update(steps)]
    assert sum(s.kind == "timer_fired" for s in waited) >= 2
    notices = [s.input for s in activities(waited, "notify_reviewers")]
    assert [n["kind"] for n in notices] == ["reminder", "escalation"]
    assert "supervisor" in notices[1]["roles"]
    assert acts(steps) == [("decide", "review", "sam", "approve")]
    assert outcome(steps) == "completed"


def test_stop_is_a_supervisors_stop_at_the_gate() -> None:
    steps = steps_of("gate_stop")
    assert acts(steps) == [("stop", "", "sam", "")]
    stop = next(s for s in steps if s.kind == "update")
    assert stop.result["role"] == "supervisor"
    assert not activities(steps, "enter_document")
    assert outcome(steps) == "stopped"


def test_cascade_asks_every_model_then_a_person() -> None:
    steps = steps_of("gate_cascade_to_person")
    asked = activities(steps[: first_update(steps)], "ask")
    assert [a.result["model"] for a in asked] == ["gpt-cheap", "claude-strong"]
    assert all(a.result["confidence"] < 0.8 for a in asked)
    assert acts(steps) == [("decide", "extract", "rita", "approve")]
    assert outcome(steps) == "completed"


def test_onboarding_provisions_after_four_eyes_and_security_then_the_manager_confirms() -> None:
    steps = steps_of("hr_onboarding_completed")
    assert acts(steps) == [
        ("decide", "bank_details", "helen", "approve"),
        ("decide", "bank_details", "frank", "approve"),
        ("decide", "admin_approval", "sofia", "approve"),
        ("decide", "confirm", "max", "approve"),
    ]
    decisions = [s for s in steps if s.kind == "update"]
    assert [d.result["role"] for d in decisions] == ["hr", "finance", "security", "hiring_manager"]
    provisioned = [
        "create_account",
        "create_hris_record",
        "order_laptop",
        "issue_badge",
        "enroll_in_payroll",
        "grant_admin_access",
    ]
    assert all(len(activities(steps, name)) == 1 for name in provisioned)
    # Payroll only once both approved the bank details; admin access after security.
    (payroll,) = activities(steps, "enroll_in_payroll")
    assert steps.index(payroll) > steps.index(decisions[1])
    assert payroll.input["approved_by"] == ["helen", "frank"]
    (grant,) = activities(steps, "grant_admin_access")
    assert steps.index(grant) > steps.index(decisions[2])
    assert outcome(steps) == "completed"


def test_renewal_sends_once_records_the_reply_and_loops_to_the_next_cycle() -> None:
    first, carried = steps_of("renewal_one_cycle"), steps_of("renewal_one_cycle.carried2")
    # The cycle ends waiting for the next review in a fresh history.
    assert first[-1].kind == "continued" and not [s for s in first if s.kind == "timer_fired"]
    steps = first + carried
    assert acts(steps) == [
        ("decide", "approve", "cora", "approve"),
        ("event", "", "mailhook", ""),
        ("stop", "", "colin", ""),
    ]
    event = next(s for s in steps if s.kind == "update" and s.name == "event")
    assert (event.input["event"], event.input["key"]) == ("customer.replied", "ACC-1001")
    (sent,) = activities(steps, "send_outreach")
    assert steps.index(sent) > first_update(steps), "sent only after the CSM approved"
    (recorded,) = activities(steps, "record_outcome")
    assert recorded.result["outcome"] == "replied"
    assert not activities(steps, "send_follow_up")
    # The 90-day timer fired, and the second cycle scored the account again.
    first, second = activities(steps, "score_account_health")
    assert (first.result["cycle"], second.result["cycle"]) == (1, 2)
    assert steps.index(second) > steps.index(recorded)
    assert outcome(steps) == "stopped"


def test_an_rfp_is_drafted_by_agents_with_tools_sent_back_and_submitted_once() -> None:
    steps = steps_of("rfp_response_changes")
    assert acts(steps) == [
        ("decide", "review", "rita", "request_changes"),
        ("decide", "review", "rita", "approve"),
    ]
    changes, approval = (s for s in steps if s.kind == "update")
    # Each round drafts with model turns and tool calls before its review.
    for start, end in ((0, steps.index(changes)), (steps.index(changes), steps.index(approval))):
        between = steps[start:end]
        assert activities(between, "agent_turn")
        assert activities(between, "search_answer_library")
    # The reviewer's note reaches the drafter's next turns.
    redrafted = activities(steps[steps.index(changes) :], "agent_turn")
    assert any("recorded: more detail" in json.dumps(turn.input) for turn in redrafted)
    (submitted,) = activities(steps, "submit_response")
    assert steps.index(submitted) > steps.index(approval)
    assert outcome(steps) == "completed"
