"""Customer renewal activities: score an account's health from the CRM,
queue the outreach e-mail and its follow-up in the CRM's outbox, and record
the cycle's outcome.

Writes are keyed by baton.idempotency with the account and cycle as the
business key, so a retried step finds its earlier write and a later cycle
never collides with an earlier one. The CRM is imported inside the
activities: the workflow imports this module, never systems/.
"""

from __future__ import annotations

from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.renewal_models import (
    Account,
    EmailDraft,
    HealthScore,
    OutcomeCode,
    Recommendation,
    health_score,
)
from baton.graph import Awaited
from baton.idempotency import idempotency_key


class HealthQuery(BaseModel):
    account_id: str
    healthy_at: int
    churning_below: int


class OutreachRequest(BaseModel):
    health: HealthScore
    draft: EmailDraft


class SentEmail(BaseModel):
    email_id: int
    kind: Literal["outreach", "follow_up"]
    to_address: str
    subject: str
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already queued it")


class FollowUpRequest(BaseModel):
    health: HealthScore
    original: SentEmail


class OutcomeRequest(BaseModel):
    health: HealthScore
    recommendation: Recommendation = Field(description="As approved: the CSM's edit, if any")
    approved_by: str
    reply: Awaited
    follow_up_reply: Awaited | None = Field(
        default=None, description="None when the customer answered the first e-mail"
    )


class RecordedOutcome(BaseModel):
    outcome_id: int
    cycle: int
    outcome: OutcomeCode
    account_open: bool = Field(description="Read again after recording: a closed account ends")
    created: bool


def _business_key(health: HealthScore) -> str:
    return f"{health.account.account_id}/cycle-{health.cycle}"


@activity.defn
def score_account_health(query: HealthQuery) -> HealthScore:
    """The account's signals as the CRM holds them now, scored; the cycle is
    the next one without an outcome."""
    from systems.crm import Crm

    crm = Crm()
    row = crm.account(query.account_id)
    if row is None:
        raise ApplicationError(
            f"the CRM has no account '{query.account_id}': start the renewal with the id of "
            "an account in the CRM",
            type="UnknownAccount",
            non_retryable=True,
        )
    return health_score(
        Account.model_validate(row),
        cycle=crm.cycles_recorded(query.account_id) + 1,
        healthy_at=query.healthy_at,
        churning_below=query.churning_below,
    )


@activity.defn
def send_outreach(request: OutreachRequest) -> SentEmail:
    """Queue the approved draft to the account's contact, once per cycle."""
    account = request.health.account
    return _queue(
        request.health,
        kind="outreach",
        subject=request.draft.subject,
        body=request.draft.body,
        to_address=account.contact_email,
    )


@activity.defn
def send_follow_up(request: FollowUpRequest) -> SentEmail:
    """One short reminder in the same thread, written from the original:
    no model call, since it says nothing new."""
    account = request.health.account
    body = (
        f"Dear {account.contact_name},\n\n"
        f"I wanted to make sure my note about {account.name}'s renewal on "
        f"{account.renewal_date:%d %B %Y} reached you. A short reply with a time that "
        "suits you is all it takes.\n\nKind regards"
    )
    return _queue(
        request.health,
        kind="follow_up",
        subject=f"Re: {request.original.subject}",
        body=body,
        to_address=request.original.to_address,
    )


def _queue(
    health: HealthScore,
    *,
    kind: Literal["outreach", "follow_up"],
    subject: str,
    body: str,
    to_address: str,
) -> SentEmail:
    from systems.crm import Crm

    key = idempotency_key(_business_key(health))
    email = {
        "account_id": health.account.account_id,
        "cycle": health.cycle,
        "kind": kind,
        "to_address": to_address,
        "subject": subject,
        "body": body,
    }
    written = Crm().queue_email(idempotency_key=key, email=email)
    return SentEmail(
        email_id=written.row_id,
        kind=kind,
        to_address=to_address,
        subject=subject,
        idempotency_key=key,
        created=written.created,
    )


@activity.defn
def record_outcome(request: OutcomeRequest) -> RecordedOutcome:
    from systems.crm import Crm

    follow_up = request.follow_up_reply
    outcome: OutcomeCode = (
        "replied"
        if request.reply.received
        else "replied_after_follow_up"
        if follow_up is not None and follow_up.received
        else "no_answer"
    )
    crm = Crm()
    health = request.health
    written = crm.record_outcome(
        idempotency_key=idempotency_key(_business_key(health)),
        outcome={
            "account_id": health.account.account_id,
            "cycle": health.cycle,
            "outcome": outcome,
            "action": request.recommendation.action,
            "approved_by": request.approved_by,
        },
    )
    account = crm.account(health.account.account_id)
    return RecordedOutcome(
        outcome_id=written.row_id,
        cycle=health.cycle,
        outcome=outcome,
        account_open=account is not None and account["status"] == "active",
        created=written.created,
    )
