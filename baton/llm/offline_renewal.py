"""The offline "model" of the customer renewal tasks: the rationale of a
health score, the recommended action, and the outreach e-mail.

Each answer is a function of the step's inputs alone (the score's factors,
the band, the account, the recommendation as the CSM approved it), so the
demo and the tests get the same words every time. Inputs that do not read
as the process sends them are refused: the answer is empty, fails its
schema, and the cascade goes on to its next tier or a person.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

from typing import Any

from pydantic import ValidationError

from activities.renewal_models import (
    Action,
    EmailDraft,
    HealthRationale,
    HealthScore,
    Recommendation,
)
from baton.llm.offline_answer import RulesAnswer

METHOD = "rules_renewal"
# The rules read structured fields, not prose: sure of what they read.
CONFIDENCE = 0.9


class RenewalRules(RulesAnswer):
    method: str = METHOD


def _health(inputs: dict[str, Any]) -> HealthScore | str:
    try:
        return HealthScore.model_validate(inputs.get("health"))
    except ValidationError as err:
        return f"the input 'health' is not a health score ({err.error_count()} problems)"


def _refused(reason: str) -> RenewalRules:
    return RenewalRules(confidence=0.0, missing=["health"], refused=reason)


def health_rationale(inputs: dict[str, Any]) -> RenewalRules:
    health = _health(inputs)
    if isinstance(health, str):
        return _refused(health)
    account = health.account
    risks: list[str] = []
    strengths: list[str] = []
    for signal, factor in zip(("usage", "tickets", "nps"), health.factors, strict=True):
        weak = {
            "usage": account.usage_trend_pct < 0,
            "tickets": account.open_tickets >= 3,
            "nps": account.nps < 0,
        }[signal]
        (risks if weak else strengths).append(factor)
    band = health.band.replace("_", " ")
    summary = (
        f"{account.name} scores {health.score}/100 ({band}) ahead of its renewal on "
        f"{account.renewal_date.isoformat()}: {len(risks)} signal(s) weigh against it, "
        f"{len(strengths)} for it."
    )
    rationale = HealthRationale(summary=summary, risks=risks, strengths=strengths)
    return RenewalRules(
        output=rationale.model_dump(mode="json"),
        confidence=CONFIDENCE,
        matched=["score", "band", "factors"],
    )


def recommend_action(inputs: dict[str, Any]) -> RenewalRules:
    health = _health(inputs)
    if isinstance(health, str):
        return _refused(health)
    account = health.account
    action: Action
    if health.band == "healthy":
        growing = account.usage_trend_pct >= 10
        action = "offer_expansion" if growing else "renew_as_is"
        why = "usage is growing: room for more seats" if growing else "steady use, few issues"
    elif health.band == "at_risk":
        unhappy = account.nps < 0
        action = "executive_outreach" if unhappy else "success_review"
        why = (
            "detractors outweigh promoters: a sponsor must hear it from us"
            if unhappy
            else "a success review can turn the trend before the renewal"
        )
    else:
        action = "rescue_plan"
        why = "usage, support and sentiment all point to churn"
    recommendation = Recommendation(
        band=health.band,
        action=action,
        reasons=[f"health score {health.score}/100 ({health.band})", why, *health.factors],
    )
    return RenewalRules(
        output=recommendation.model_dump(mode="json"),
        confidence=CONFIDENCE,
        matched=["band", "usage_trend_pct", "nps"],
    )


# What the outreach asks the contact for, per action.
_ASKS: dict[str, tuple[str, str]] = {
    "offer_expansion": (
        "Growing with {name}",
        "Your team's use of the platform has grown steadily, and I would like to show you "
        "what the next tier would add before your renewal.",
    ),
    "renew_as_is": (
        "Your renewal with us",
        "Your renewal is coming up, and I would like to confirm that everything is set for "
        "another year on your current plan.",
    ),
    "success_review": (
        "A success review for {name}",
        "I would like to go through how your team uses the platform, what is not working yet, "
        "and agree on a plan we both check before your renewal.",
    ),
    "executive_outreach": (
        "{name} and us: a conversation",
        "Our leadership would like to hear, first hand, where we have fallen short of what "
        "you expected, and what it would take to put it right.",
    ),
    "rescue_plan": (
        "Putting things right for {name}",
        "I know the past months have not been what you expected. I would like to propose a "
        "concrete recovery plan, with dates and owners on our side.",
    ),
}


def draft_email(inputs: dict[str, Any]) -> RenewalRules:
    health = _health(inputs)
    if isinstance(health, str):
        return _refused(health)
    try:
        recommendation = Recommendation.model_validate(inputs.get("recommendation"))
    except ValidationError as err:
        return RenewalRules(
            confidence=0.0,
            missing=["recommendation"],
            refused=f"the input 'recommendation' is not one ({err.error_count()} problems)",
        )
    account = health.account
    subject, ask = _ASKS[recommendation.action]
    body = (
        f"Dear {account.contact_name},\n\n"
        f"{ask}\n\n"
        f"Your renewal date is {account.renewal_date:%d %B %Y}. Would you have thirty "
        "minutes in the next two weeks? Reply to this e-mail with a time that suits you.\n\n"
        "Kind regards"
    )
    draft = EmailDraft(subject=subject.format(name=account.name), body=body)
    return RenewalRules(
        output=draft.model_dump(mode="json"),
        confidence=CONFIDENCE,
        matched=["action", "contact_name", "renewal_date"],
    )
