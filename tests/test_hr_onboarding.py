"""HR onboarding end to end, on the time-skipping server, against the
reference systems of systems/onboarding.py with the faults each test sets:
a hire is provisioned in the systems their department and country call
for, bank details need HR and finance, admin access needs security and
never the hire's own manager, a withdrawn offer undoes everything (the step
still running included), and a system failing for good undoes the rest."""

from __future__ import annotations

import uuid
from typing import Any

import pytest
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.onboarding_models import Hire, System, systems_for
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, build_input, decide, run_status, start_run, stop_run
from baton.gates import Decision, StopRequest
from baton.runner import RunResult, RunStatus
from systems.onboarding import Faults, OnboardingSystems, WriteUndone
from tests.conftest import ROOT
from tests.helpers import STARTED, eventually
from workflows.hr_onboarding import HrOnboarding

SAMPLES = ROOT / "samples" / "hr_onboarding"
# E-1042, an engineer in Berlin managed by max (who holds security too): every system.
ENGINEER = "engineer-berlin.json"
# E-1043, sales, remote in Spain, managed by nora: no badge, no admin access.
REMOTE = "sales-remote-spain.json"
PROVISIONED: tuple[System, ...] = (
    "directory",
    "hris",
    "laptop",
    "badge",
    "payroll",
    "admin_access",
)
NOTHING: dict[System, list[dict[str, Any]]] = {system: [] for system in PROVISIONED}


def hire_of(sample: str) -> Hire:
    return Hire.model_validate_json((SAMPLES / sample).read_text())


async def start(client: Client, queue: str, sample: str) -> WorkflowHandle[Any, RunResult]:
    request = build_input(HrOnboarding, [str(SAMPLES / sample)], requested_by="rachel")
    handle = await start_run(
        client,
        HrOnboarding,
        request,
        task_queue=queue,
        workflow_id=f"onboard-{uuid.uuid4().hex[:8]}",
    )
    STARTED.append(handle)
    return handle


def approve(gate: str, user: str) -> Decision:
    return Decision(gate=gate, user=user, outcome="approve", comment="checked")


async def refusal(client: Client, workflow_id: str, decision: Decision) -> str:
    with pytest.raises(DecisionRefused) as refused:
        await decide(client, workflow_id, decision)
    return refused.value.reason


async def waiting_at(client: Client, workflow_id: str, *gates: str) -> RunStatus:
    def open_(status: RunStatus) -> set[str]:
        return {g.gate for g in status.gates if g.decision is None}

    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: s.state == "waiting" and set(gates) <= open_(s),
    )


def node(status: RunStatus, node_id: str) -> Any:
    return next(n for n in status.nodes if n.node == node_id)


def records(employee_id: str) -> dict[System, list[dict[str, Any]]]:
    return OnboardingSystems().records_of(employee_id)


def trail(workflow_id: str) -> list[Any]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


def test_a_write_that_arrives_after_its_undo_is_refused() -> None:
    # An attempt still running when its run was stopped: the undo found
    # nothing under its key, then the write came (seen once in the demo).
    systems = OnboardingSystems()
    key = "hr_onboarding-late/run/badge#1"
    assert systems.remove("badge", key) == []
    with pytest.raises(WriteUndone, match="undone before it arrived"):
        systems.provision("badge", idempotency_key=key, employee_id="E-9", record={"n": 1})
    with pytest.raises(WriteUndone):
        systems.provision("badge", idempotency_key=f"{key}/E-9", employee_id="E-9", record={"n": 1})
    assert systems.records_of("E-9")["badge"] == []
    # Another write's key is not affected.
    systems.provision("badge", idempotency_key=f"{key}-other", employee_id="E-9", record={})
    assert len(systems.records_of("E-9")["badge"]) == 1


def test_the_systems_follow_department_and_country() -> None:
    assert set(systems_for(hire_of(ENGINEER))) == set(PROVISIONED)
    assert systems_for(hire_of(REMOTE)) == ["directory", "hris", "payroll", "laptop"]


# -- the happy path ---------------------------------------------------------------


async def test_an_engineer_is_provisioned_everywhere_approved_and_confirmed(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """The HRIS is down for two calls: its step retries, and writes once."""
    client = time_skipping_env.client
    Faults().fail("hris", times=2)
    handle = await start(client, task_queue, ENGINEER)
    await waiting_at(client, handle.id, "bank_details", "admin_approval")
    await decide(client, handle.id, approve("bank_details", "helen"))
    await decide(client, handle.id, approve("bank_details", "frank"))
    await decide(client, handle.id, approve("admin_approval", "sofia"))
    status = await waiting_at(client, handle.id, "confirm")
    [confirm] = [g for g in status.gates if g.gate == "confirm"]
    assert confirm.assignees == ["max"]
    assert len(confirm.shown["checklist"]["items"]) == 6
    assert "assigned to max" in await refusal(client, handle.id, approve("confirm", "nora"))
    await decide(client, handle.id, approve("confirm", "max"))
    result = await handle.result()

    assert result.outcome == "completed"
    assert result.skipped == {}
    held = records("E-1042")
    assert {system: len(rows) for system, rows in held.items()} == dict.fromkeys(PROVISIONED, 1)
    payroll = result.outputs["payroll"]
    [enrolment] = held["payroll"]
    assert enrolment["reference"] == payroll["reference"]
    assert '"approved_by": ["helen", "frank"]' in enrolment["payload"]
    assert '"iban": "DE89370400440532013000"' in enrolment["payload"]
    assert result.outputs["confirm"]["user"] == "max"
    hris_attempts = [
        (r.data["attempt"], r.data["error"])
        for r in trail(handle.id)
        if r.event_type == "activity.attempt" and r.node == "hris"
    ]
    assert [attempt for attempt, _ in hris_attempts] == [1, 2, 3]
    assert ["the HRIS is unavailable" in (error or "") for _, error in hris_attempts] == [
        True,
        True,
        False,
    ]


async def test_a_remote_hire_outside_engineering_gets_no_badge_and_no_admin_access(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, REMOTE)
    await waiting_at(client, handle.id, "bank_details")
    await decide(client, handle.id, approve("bank_details", "hugo"))
    await decide(client, handle.id, approve("bank_details", "frank"))
    await waiting_at(client, handle.id, "confirm")
    await decide(client, handle.id, approve("confirm", "nora"))
    result = await handle.result()

    assert result.outcome == "completed"
    assert result.skipped == {
        "badge": "condition works_in_an_office was false",
        "admin_approval": "condition is_engineer was false",
        "admin_access": "condition is_engineer was false",
    }
    held = {system: len(rows) for system, rows in records("E-1043").items()}
    assert held == {**dict.fromkeys(PROVISIONED, 1), "badge": 0, "admin_access": 0}
    assert any("couriered" in item for item in result.outputs["checklist"]["items"])


# -- who approves ---------------------------------------------------------------------


async def test_bank_details_need_one_approval_in_hr_and_one_in_finance(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, REMOTE)
    await waiting_at(client, handle.id, "bank_details")
    first = await decide(client, handle.id, approve("bank_details", "helen"))
    assert (first.role, first.awaiting) == ("hr", 1)

    # One HR approval alone does not pass; nor does a second one from HR.
    status = await run_status(client, handle.id)
    assert node(status, "payroll").status == "pending"
    second_hr = await refusal(client, handle.id, approve("bank_details", "hugo"))
    assert "needs its next approval in a role other than hr" in second_hr
    assert "already approved" in await refusal(client, handle.id, approve("bank_details", "helen"))
    # The recruiter who started the run approves nothing of it.
    assert "may not decide" in await refusal(client, handle.id, approve("bank_details", "rachel"))
    status = await waiting_at(client, handle.id, "bank_details")
    assert node(status, "payroll").status == "pending"
    assert records("E-1043")["payroll"] == []

    done = await decide(client, handle.id, approve("bank_details", "frank"))
    assert (done.role, done.awaiting, done.approved_by) == ("finance", 0, ["helen", "frank"])
    await waiting_at(client, handle.id, "confirm")
    [enrolment] = records("E-1043")["payroll"]
    assert '"approved_by": ["helen", "frank"]' in enrolment["payload"]
    refused = [r.reason for r in (await run_status(client, handle.id)).refusals]
    assert len(refused) == 3


async def test_the_hiring_manager_may_not_approve_their_own_hires_admin_access(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """Max manages the hire and holds the security role: the role is not enough."""
    client = time_skipping_env.client
    handle = await start(client, task_queue, ENGINEER)
    await waiting_at(client, handle.id, "admin_approval")

    refused = await refusal(client, handle.id, approve("admin_approval", "max"))
    assert "max is the hiring manager of this hire" in refused
    status = await waiting_at(client, handle.id, "admin_approval")
    assert node(status, "admin_access").status == "pending"
    assert records("E-1042")["admin_access"] == []
    [recorded] = status.refusals
    assert (recorded.user, recorded.reason) == ("max", refused)
    [refused_record] = [r for r in trail(handle.id) if r.event_type == "decision.refused"]
    assert refused_record.actor is not None and refused_record.actor.id == "max"
    assert refused_record.node == "admin_approval"
    assert refused_record.data["reason"] == refused
    [gate] = [g for g in status.gates if g.gate == "admin_approval"]
    assert gate.shown["approvers"]["excluded"] == {"max": "max is the hiring manager of this hire"}

    await decide(client, handle.id, approve("admin_approval", "sofia"))
    status = await eventually(
        lambda: run_status(client, handle.id),
        lambda s: node(s, "admin_access").status == "finished",
    )
    [grant] = records("E-1042")["admin_access"]
    assert '"approved_by": ["sofia"]' in grant["payload"]


# -- withdrawn, failed, refused --------------------------------------------------------


async def test_withdrawing_the_offer_undoes_everything_the_step_in_flight_included(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """The laptop vendor takes the order but is slow to confirm it: the
    offer is withdrawn while that step runs, after everything else is in."""
    client = time_skipping_env.client
    Faults().slow("laptop", seconds=600)
    handle = await start(client, task_queue, ENGINEER)
    await waiting_at(client, handle.id, "bank_details", "admin_approval")
    await decide(client, handle.id, approve("bank_details", "helen"))
    await decide(client, handle.id, approve("bank_details", "frank"))
    await decide(client, handle.id, approve("admin_approval", "sofia"))
    others = ("directory", "hris", "badge", "payroll", "admin_access")
    status = await eventually(
        lambda: run_status(client, handle.id),
        lambda s: all(node(s, n).status == "finished" for n in others),
    )
    assert node(status, "laptop").status == "running"

    async def laptop_orders() -> list[dict[str, Any]]:
        return records("E-1042")["laptop"]

    [order] = await eventually(laptop_orders, bool)

    refused = StopRequest(user="frank", reason="not finance's call")
    with pytest.raises(DecisionRefused, match="may not stop this run"):
        await stop_run(client, handle.id, refused)
    await stop_run(client, handle.id, StopRequest(user="rachel", reason="offer withdrawn"))
    result = await handle.result()
    status = await run_status(client, handle.id)

    assert result.outcome == "stopped"
    assert status.stopped is not None and status.stopped.user == "rachel"
    assert sorted(status.stopped.compensated) == sorted(PROVISIONED)
    assert records("E-1042") == NOTHING
    laptop = node(status, "laptop")
    assert laptop.status == "cancelled"
    assert laptop.meta["compensation"] == {
        "system": "laptop",
        "removed": [order["reference"]],
        "nothing_to_undo": False,
    }
    assert node(status, "checklist").status == "skipped"
    assert node(status, "confirm").status == "skipped"
    kinds = [r.event_type for r in trail(handle.id)]
    assert kinds.count("compensation.finished") == len(PROVISIONED)
    assert "compensation.failed" not in kinds


async def test_a_system_failing_for_good_undoes_the_others_and_fails_the_run(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    Faults().fail("badge")
    handle = await start(client, task_queue, ENGINEER)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    reason = "node 'badge' failed: the building badge system is unavailable"
    assert reason in str(failure.value.cause)
    status = await run_status(client, handle.id)

    assert (status.state, status.error) == ("failed", reason)
    assert node(status, "badge").status == "failed"
    assert {"directory", "hris", "laptop"} <= set(status.compensated)
    assert records("E-1042") == NOTHING
    undo = node(status, "badge").meta["compensation"]
    assert undo == {"system": "badge", "removed": [], "nothing_to_undo": True}
    assert node(status, "payroll").status == "skipped"


async def test_an_offer_that_breaks_a_rule_fails_the_run_saying_what_to_fix(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, "onsite-without-office.json")
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    message = str(failure.value.cause)
    assert "offer 'onsite-without-office.json' does not describe a hire" in message
    assert "there is no office in ES" in message and 'set "remote": true' in message
    assert records("E-1045") == NOTHING
