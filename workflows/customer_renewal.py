"""Customer renewal: one long-lived run per account, a review every cycle.

Score the account's health from the CRM's signals (usage trend, open
tickets, NPS) -> a model explains the score -> a model recommends what to do
before the renewal, with its reasons -> the account's CSM approves it or
overrides it -> a model drafts the outreach e-mail from the recommendation
as approved -> it goes out through the CRM's outbox, once -> wait for the
customer's reply (an event from the mail webhook); none in time: one
follow-up and a second wait -> the cycle's outcome in the CRM (replied,
replied after the follow-up, no answer) -> wait until the next review ->
score again.

Every duration comes from ``[policies.renewal]`` in baton.toml. The model
never decides: its recommendation is the CSM's to accept or change, and a
reply counts only when the mail webhook, a service, reports it about this
account. A closed account ends the run after its cycle.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.renewal import (
        RecordedOutcome,
        record_outcome,
        score_account_health,
        send_follow_up,
        send_outreach,
    )
    from activities.renewal_models import (
        EmailDraft,
        HealthRationale,
        HealthScore,
        Recommendation,
        RenewalPolicy,
        draft_problems,
        load_policy,
        recommendation_problems,
    )
    from baton.graph import Approvers, Ask, Await, Awaited, Back, Gate, Graph, Step, Wait, hours
    from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
    from workflows.common import WRITE_RETRY, WRITE_TIMEOUT

POLICY = "renewal"
REPLY_EVENT = "customer.replied"
PROCESS = "customer_renewal"


class RenewalRequest(RunInput):
    account_id: str


def renewal_workflow_id(request: Any) -> str:
    """One run per account: a second start for it is refused while one runs."""
    return f"{PROCESS}-{request.account_id}"


def renewal_policy(table: Any) -> RenewalPolicy:
    return load_policy(table, source=f"[policies.{POLICY}]")


def _policy(run: RunView) -> RenewalPolicy:
    return run.policy(POLICY, RenewalPolicy)


def _health(run: RunView) -> HealthScore:
    health = run.get("health", HealthScore)
    assert health is not None
    return health


def account_id(run: RunView) -> str:
    """What a reply must be about: this run's account."""
    request = run.input
    assert isinstance(request, RenewalRequest)
    return request.account_id


def account_csm(run: RunView) -> Approvers:
    """The account's own CSM decides, until the gate escalates."""
    account = _health(run).account
    return Approvers(
        roles=["csm"], assignees=[account.csm], rule=f"the CSM of {account.account_id}"
    )


def approval_reasons(run: RunView) -> list[str]:
    health = _health(run)
    return [
        f"renewal cycle {health.cycle}: health score {health.score}/100 ({health.band})",
        *health.factors,
        "approve the recommendation as it is, or edit it (with a reason) before it is sent",
    ]


def reply_wait(run: RunView) -> timedelta:
    return timedelta(days=_policy(run).reply_wait_days)


def follow_up_wait(run: RunView) -> timedelta:
    return timedelta(days=_policy(run).follow_up_wait_days)


def review_interval(run: RunView) -> timedelta:
    return timedelta(days=_policy(run).review_every_days)


def no_reply(run: RunView) -> bool:
    awaited = run.get("reply", Awaited)
    return awaited is not None and not awaited.received


def account_open(run: RunView) -> bool:
    recorded = run.get("outcome", RecordedOutcome)
    return recorded is not None and recorded.account_open


def _checked_recommendation(value: Any) -> list[str]:
    return recommendation_problems(Recommendation.model_validate(value))


def _checked_draft(value: Any) -> list[str]:
    return draft_problems(EmailDraft.model_validate(value))


GRAPH = Graph(
    name=PROCESS,
    input=RenewalRequest,
    description=__doc__ or "",
    purpose="Review customer accounts ahead of their renewal, recommend an action for the "
    "account's CSM to approve, reach out to the customer and record the outcome",
    risk_class="not high-risk: account management is not listed in AI Act Annex III; the "
    "model recommends, a person decides, and the trail follows Art. 12 and 14 voluntarily",
    stop_roles=("admin", "cs_lead"),
    policies={POLICY: renewal_policy},
    event_keys={REPLY_EVENT: account_id},
    workflow_id=renewal_workflow_id,
    nodes=(
        Step(
            "health",
            activity=score_account_health,
            inputs={
                "account_id": "input.account_id",
                "healthy_at": f"policy.{POLICY}.healthy_at",
                "churning_below": f"policy.{POLICY}.churning_below",
            },
        ),
        Ask(
            "rationale",
            task="renewal_rationale",
            output=HealthRationale,
            instructions="Explain the account's health score to its CSM: what weighs against "
            "the renewal and what for it. Use only the signals given.",
            inputs={"health": "health"},
        ),
        Ask(
            "recommend",
            task="recommend_renewal_action",
            output=Recommendation,
            instructions="Recommend one action before the renewal that fits the account's "
            "band, with the reasons it rests on. Repeat the band you were given.",
            inputs={"health": "health", "rationale": "rationale"},
            checks=(_checked_recommendation,),
        ),
        Gate(
            "approve",
            route=account_csm,
            subject="recommend",
            why=approval_reasons,
            inputs={"health": "health", "rationale": "rationale"},
            sla=hours(72),
            escalate_to=("cs_lead",),
        ),
        Ask(
            "draft",
            task="draft_renewal_email",
            output=EmailDraft,
            instructions="Draft a short, plain e-mail from the CSM to the account's contact "
            "that carries out the approved recommendation and asks for a reply.",
            inputs={"health": "health", "recommendation": "recommend"},
            checks=(_checked_draft,),
        ),
        Step(
            "send",
            activity=send_outreach,
            inputs={"health": "health", "draft": "draft"},
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
        ),
        Await(
            "reply",
            event=REPLY_EVENT,
            senders=("mail_webhook",),
            wait=reply_wait,
            key=account_id,
        ),
        Step(
            "follow_up",
            activity=send_follow_up,
            when=no_reply,
            inputs={"health": "health", "original": "send"},
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
        ),
        Await(
            "follow_up_reply",
            event=REPLY_EVENT,
            senders=("mail_webhook",),
            wait=follow_up_wait,
            key=account_id,
            when=no_reply,
        ),
        Step(
            "outcome",
            activity=record_outcome,
            inputs={
                "health": "health",
                "recommendation": "recommend",
                "approved_by": "approve.user",
                "reply": "reply",
                "follow_up_reply": "follow_up_reply",
            },
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
        ),
        # Each cycle goes on in a fresh history: an account's run lives for
        # years, and Temporal would refuse its history long before.
        Wait("next_review", wait=review_interval, when=account_open, fresh_history=True),
        # The bound guards against a loop gone wrong, not an account's life:
        # 400 quarterly reviews are a century.
        Back("next_cycle", to="health", when=account_open, max_visits=400),
    ),
)


@workflow.defn(name=PROCESS)
class CustomerRenewal(GraphWorkflow):
    graph = GRAPH

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        # Taken raw (a RenewalRequest as sent): GraphWorkflow.execute validates it.
        return await self.execute(request)
