"""HR onboarding activities: read the accepted offer, provision the hire in
each system and undo it, and draw up the day-one checklist.

Every provisioning activity writes under baton.idempotency's key (a retry
finds its earlier record) and waits, heartbeating, until the system has
confirmed the write: a withdrawn offer cancels it there, and its undo finds
the write by the same key (baton.compensation.Undo), whether the step
returned or not. An undo that finds nothing says so; it never fails for it.
The systems are imported inside the activities: the workflow imports this
module, never systems/.
"""

from __future__ import annotations

import json
import time
from datetime import date

from pydantic import BaseModel, Field, ValidationError
from temporalio import activity
from temporalio.exceptions import ApplicationError, ApplicationErrorCategory

from activities.onboarding_models import PAYROLL_ENTITIES, Hire, System
from baton.compensation import Undo
from baton.document_store import (
    DocumentNotInStore,
    DocumentRef,
    DocumentTampered,
    DocumentTooLarge,
    document_store,
)
from baton.idempotency import idempotency_key
from baton.nodes.base import problems

# How often a provisioning step asks whether its write is confirmed.
CONFIRMATION_POLL = 0.2


class OfferRequest(BaseModel):
    offer: DocumentRef


class HireRequest(BaseModel):
    hire: Hire


class PayrollRequest(BaseModel):
    hire: Hire
    hris_record: str = Field(description="The HRIS record payroll pays against")
    approved_by: list[str] = Field(description="The HR and finance approvers of the bank details")


class AdminAccessRequest(BaseModel):
    hire: Hire
    account: str = Field(description="The directory account the access is granted to")
    approved_by: list[str] = Field(description="The security approver")


class Provisioned(BaseModel):
    system: System
    reference: str = Field(description="The record's number in its system: HR-00012, LT-00003")
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already written it")


class Deprovisioned(BaseModel):
    system: System
    removed: list[str] = Field(description="The references of the records removed")
    nothing_to_undo: bool = Field(description="The step had written nothing (yet)")


class ChecklistRequest(BaseModel):
    hire: Hire
    account: Provisioned
    hris: Provisioned
    payroll: Provisioned
    laptop: Provisioned
    badge: Provisioned | None = None
    admin_access: Provisioned | None = None


class Checklist(BaseModel):
    employee_id: str
    start_date: date
    items: list[str]


@activity.defn
def read_offer(request: OfferRequest) -> Hire:
    """The hire the accepted offer describes (its JSON, from the document
    store). An offer that is not one fails the run at once, saying what to fix."""
    name = request.offer.name
    try:
        raw = document_store().read(request.offer)
    except (DocumentNotInStore, DocumentTampered, DocumentTooLarge) as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
    try:
        return Hire.model_validate(json.loads(raw))
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        why = f"is not JSON ({err})"
    except ValidationError as err:
        why = f"does not describe a hire: {'; '.join(problems(err, 'offer'))}"
    raise ApplicationError(
        f"offer '{name}' {why}; fix the file (samples/hr_onboarding/ shows the fields) and "
        "start a new run",
        type="InvalidOffer",
        non_retryable=True,
        # The offer is wrong, not a system: the run says so to the recruiter,
        # and the worker's log gets no warning and traceback for it.
        category=ApplicationErrorCategory.BENIGN,
    )


def _provision(system: System, hire: Hire, record: dict[str, object]) -> Provisioned:
    from systems.onboarding import OnboardingSystems

    systems = OnboardingSystems()
    key = idempotency_key()
    written = systems.provision(
        system,
        idempotency_key=key,
        employee_id=hire.employee_id,
        record={"employee_id": hire.employee_id, **record},
    )
    # A cancellation reaches a running activity through its heartbeats.
    while not systems.confirmed(system, key):
        activity.heartbeat()
        time.sleep(CONFIRMATION_POLL)
    return Provisioned(
        system=system, reference=written.reference, idempotency_key=key, created=written.created
    )


def _remove(system: System, undo: Undo) -> Deprovisioned:
    from systems.onboarding import OnboardingSystems

    removed = OnboardingSystems().remove(system, undo.idempotency_key)
    return Deprovisioned(system=system, removed=removed, nothing_to_undo=not removed)


@activity.defn
def create_account(request: HireRequest) -> Provisioned:
    """The directory account and its mailbox."""
    hire = request.hire
    return _provision("directory", hire, {"name": hire.name, "email": hire.email})


@activity.defn
def remove_account(undo: Undo) -> Deprovisioned:
    return _remove("directory", undo)


@activity.defn
def create_hris_record(request: HireRequest) -> Provisioned:
    hire = request.hire
    return _provision(
        "hris",
        hire,
        {
            "name": hire.name,
            "role": hire.role,
            "department": hire.department,
            "country": hire.country,
            "start_date": hire.start_date.isoformat(),
            "manager": hire.hiring_manager,
        },
    )


@activity.defn
def remove_hris_record(undo: Undo) -> Deprovisioned:
    return _remove("hris", undo)


@activity.defn
def enroll_in_payroll(request: PayrollRequest) -> Provisioned:
    """Payroll, with the bank details HR and finance approved."""
    hire = request.hire
    return _provision(
        "payroll",
        hire,
        {
            "entity": PAYROLL_ENTITIES[hire.country],
            "hris_record": request.hris_record,
            "account_holder": hire.bank.account_holder,
            "iban": hire.bank.iban,
            "approved_by": request.approved_by,
        },
    )


@activity.defn
def remove_payroll_enrolment(undo: Undo) -> Deprovisioned:
    return _remove("payroll", undo)


@activity.defn
def order_laptop(request: HireRequest) -> Provisioned:
    hire = request.hire
    model = "developer" if hire.department == "engineering" else "standard"
    ship_to = hire.office or f"the hire's home ({hire.country})"
    return _provision("laptop", hire, {"model": model, "ship_to": ship_to})


@activity.defn
def cancel_laptop_order(undo: Undo) -> Deprovisioned:
    return _remove("laptop", undo)


@activity.defn
def issue_badge(request: HireRequest) -> Provisioned:
    hire = request.hire
    return _provision("badge", hire, {"name": hire.name, "office": hire.office})


@activity.defn
def revoke_badge(undo: Undo) -> Deprovisioned:
    return _remove("badge", undo)


@activity.defn
def grant_admin_access(request: AdminAccessRequest) -> Provisioned:
    return _provision(
        "admin_access",
        request.hire,
        {"account": request.account, "approved_by": request.approved_by},
    )


@activity.defn
def revoke_admin_access(undo: Undo) -> Deprovisioned:
    return _remove("admin_access", undo)


@activity.defn
def prepare_checklist(request: ChecklistRequest) -> Checklist:
    """What the hire and the manager go through on day one. Pure: a local
    activity."""
    hire = request.hire
    items = [
        f"sign in as {hire.email} (account {request.account.reference})",
        f"check the HRIS record {request.hris.reference}: role {hire.role}, "
        f"manager {hire.hiring_manager}",
        f"payroll {request.payroll.reference} with {PAYROLL_ENTITIES[hire.country]}",
    ]
    if hire.office is None:
        items.append(f"laptop order {request.laptop.reference} is couriered to the hire's home")
    else:
        items.append(f"collect the laptop (order {request.laptop.reference}) in {hire.office}")
    if request.badge is not None:
        items.append(f"collect badge {request.badge.reference} at the {hire.office} reception")
    if request.admin_access is not None:
        items.append(f"admin access {request.admin_access.reference} is granted: walk through it")
    return Checklist(employee_id=hire.employee_id, start_date=hire.start_date, items=items)
