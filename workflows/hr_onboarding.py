"""HR onboarding: from an accepted offer to the hire's first day.

Read the offer -> provision the hire, in parallel, in the systems their
department and country call for (account and mailbox, HRIS record, laptop
order; a badge for an office hire) -> HR and finance approve the bank
details together (four-eyes across roles) -> payroll -> for engineers,
security approves admin access -> grant it -> the day-one checklist -> the
hiring manager confirms.

Whoever started the run decides none of its gates, and the hire's own
manager approves neither their bank details nor their access, whatever
roles they hold. Withdrawing the offer (a signed stop by HR or the
recruiter) undoes everything provisioned, the step still running included;
a system that fails for good has the others undone and fails the run with
its reason.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.onboarding import (
        cancel_laptop_order,
        create_account,
        create_hris_record,
        enroll_in_payroll,
        grant_admin_access,
        issue_badge,
        order_laptop,
        prepare_checklist,
        read_offer,
        remove_account,
        remove_hris_record,
        remove_payroll_enrolment,
        revoke_admin_access,
        revoke_badge,
    )
    from activities.onboarding_models import Hire, systems_for
    from baton.document_store import DocumentRef
    from baton.graph import Approvers, Gate, Graph, Retry, Step, hours
    from baton.runner import GraphWorkflow, RunInput, RunResult, RunView

# Systems answer in milliseconds and confirm slow work (a laptop order) while
# the step heartbeats: the heartbeat is how a withdrawn offer reaches it. The
# retries ride out an outage of about two minutes; a longer one fails the run,
# which undoes the rest, rather than leave a hire half provisioned.
PROVISION: dict[str, Any] = {
    "timeout": timedelta(minutes=30),
    "heartbeat": timedelta(seconds=2),
    "retry": Retry(
        max_attempts=8,
        initial_interval=timedelta(seconds=1),
        max_interval=timedelta(minutes=1),
    ),
}
HIRE = {"hire": "hire"}


class OfferAccepted(RunInput):
    # By reference: the offer holds bank details, and the starter puts it in
    # the document store.
    offer: DocumentRef


def _hire(run: RunView) -> Hire:
    hire = run.get("hire", Hire)
    assert hire is not None
    return hire


def works_in_an_office(run: RunView) -> bool:
    return "badge" in systems_for(_hire(run))


def is_engineer(run: RunView) -> bool:
    return "admin_access" in systems_for(_hire(run))


def _excluding_the_manager(run: RunView) -> dict[str, str]:
    manager = _hire(run).hiring_manager
    return {manager: f"{manager} is the hiring manager of this hire"}


def bank_details_approvers(run: RunView) -> Approvers:
    return Approvers(
        roles=["hr", "finance"],
        excluded=_excluding_the_manager(run),
        rule="a hire's bank details: HR and finance, one approval each",
    )


def admin_access_approvers(run: RunView) -> Approvers:
    return Approvers(
        roles=["security"],
        excluded=_excluding_the_manager(run),
        rule="admin access: security, never the hire's own manager",
    )


def hiring_manager(run: RunView) -> Approvers:
    manager = _hire(run).hiring_manager
    return Approvers(
        roles=["hiring_manager"],
        assignees=[manager],
        rule=f"the hire's manager, {manager}, confirms day one",
    )


GRAPH = Graph(
    name="hr_onboarding",
    input=OfferAccepted,
    description=__doc__ or "",
    purpose="Provision a new hire's accounts, pay and equipment once their offer is accepted, "
    "with people approving bank details and admin access, and undo it if the offer is withdrawn",
    risk_class="not high-risk: no AI decides anything in this process; segregation of duties "
    "and four-eyes apply to payroll and access",
    stop_roles=("hr", "recruiter", "admin"),
    on_failure="compensate",
    nodes=(
        Step("hire", activity=read_offer, inputs={"offer": "input.offer"}),
        Step(
            "directory",
            activity=create_account,
            inputs=HIRE,
            compensate=remove_account,
            **PROVISION,
        ),
        Step(
            "hris",
            activity=create_hris_record,
            inputs=HIRE,
            compensate=remove_hris_record,
            after=("hire",),
            **PROVISION,
        ),
        Step(
            "laptop",
            activity=order_laptop,
            inputs=HIRE,
            compensate=cancel_laptop_order,
            after=("hire",),
            **PROVISION,
        ),
        Step(
            "badge",
            activity=issue_badge,
            inputs=HIRE,
            compensate=revoke_badge,
            when=works_in_an_office,
            after=("hire",),
            **PROVISION,
        ),
        Gate(
            "bank_details",
            route=bank_details_approvers,
            inputs={"employee": "hire.employee_id", "name": "hire.name", "bank": "hire.bank"},
            after=("hris",),
            sla=hours(48),
        ),
        Step(
            "payroll",
            activity=enroll_in_payroll,
            inputs={
                **HIRE,
                "hris_record": "hris.reference",
                "approved_by": "bank_details.approved_by",
            },
            compensate=remove_payroll_enrolment,
            **PROVISION,
        ),
        Gate(
            "admin_approval",
            route=admin_access_approvers,
            when=is_engineer,
            inputs={
                "employee": "hire.employee_id",
                "name": "hire.name",
                "role": "hire.role",
                "account": "directory.reference",
            },
            after=("directory",),
            sla=hours(48),
        ),
        Step(
            "admin_access",
            activity=grant_admin_access,
            inputs={
                **HIRE,
                "account": "directory.reference",
                "approved_by": "admin_approval.approved_by",
            },
            compensate=revoke_admin_access,
            when=is_engineer,
            **PROVISION,
        ),
        Step(
            "checklist",
            activity=prepare_checklist,
            local=True,
            inputs={
                **HIRE,
                "account": "directory",
                "hris": "hris",
                "payroll": "payroll",
                "laptop": "laptop",
                "badge": "badge",
                "admin_access": "admin_access",
            },
            after=("directory", "payroll", "laptop", "badge", "admin_access"),
        ),
        Gate(
            "confirm",
            route=hiring_manager,
            inputs={"checklist": "checklist"},
            sla=hours(72),
            escalate_to=("hr",),
        ),
    ),
)


@workflow.defn(name="hr_onboarding")
class HrOnboarding(GraphWorkflow):
    graph = GRAPH

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        # Taken raw (an OfferAccepted as sent): GraphWorkflow.execute validates it.
        return await self.execute(request)
