"""What a customer renewal review works with: the account's signals, its
health score, the model's rationale and recommendation, the e-mails and the
cycle's outcome; and the renewal policy a run steers by.

Pure models and rules, no I/O: the renewal activities, the offline rules and
workflow code share them (a workflow imports these, never ``systems/``).
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import date
from typing import Any, Literal

from pydantic import BaseModel, Field

Band = Literal["healthy", "at_risk", "churning"]
Action = Literal[
    "offer_expansion", "renew_as_is", "success_review", "executive_outreach", "rescue_plan"
]
# What each band may be recommended. A CSM may still decide otherwise at
# the approval gate (an override, with a reason): the rule binds the model.
FITTING: dict[Band, tuple[Action, ...]] = {
    "healthy": ("offer_expansion", "renew_as_is"),
    "at_risk": ("success_review", "executive_outreach", "renew_as_is"),
    "churning": ("rescue_plan", "executive_outreach"),
}
OutcomeCode = Literal["replied", "replied_after_follow_up", "no_answer"]


class Account(BaseModel):
    """An account as the CRM holds it."""

    account_id: str
    name: str
    contact_name: str
    contact_email: str
    csm: str = Field(description="The directory user who manages the account (role csm)")
    usage_trend_pct: int = Field(description="Change of usage over the last 90 days, in percent")
    open_tickets: int = Field(ge=0)
    nps: int = Field(ge=-100, le=100)
    renewal_date: date
    status: Literal["active", "closed"] = "active"


class HealthScore(BaseModel):
    """The deterministic score of an account's signals, 0 to 100, its band,
    and what each signal contributed."""

    account: Account
    cycle: int = Field(ge=1, description="Which renewal cycle of the account this is")
    score: int = Field(ge=0, le=100)
    band: Band
    factors: list[str] = Field(min_length=3)


class HealthRationale(BaseModel):
    """The model's reading of the score, for the CSM."""

    summary: str = Field(min_length=10, max_length=600)
    risks: list[str] = Field(default_factory=list)
    strengths: list[str] = Field(default_factory=list)


class Recommendation(BaseModel):
    """What to do before the renewal, and why. ``band`` repeats the band the
    recommendation was made for, so its fit is checked with the answer."""

    band: Band
    action: Action
    reasons: list[str] = Field(min_length=1, max_length=6)


class EmailDraft(BaseModel):
    subject: str = Field(min_length=5, max_length=120)
    body: str = Field(min_length=40, max_length=4000)


def recommendation_problems(recommendation: Recommendation) -> list[str]:
    """The recommendation's action must fit its band, and every reason say something."""
    problems = []
    fitting = FITTING[recommendation.band]
    if recommendation.action not in fitting:
        problems.append(
            f"action '{recommendation.action}' does not fit a {recommendation.band} account: "
            f"choose one of {', '.join(fitting)}"
        )
    if any(len(reason.strip()) < 5 for reason in recommendation.reasons):
        problems.append("every reason must say something: at least 5 characters")
    return problems


PLACEHOLDER_MARKS = ("[", "{{", "<", "TODO", "XXX")


def draft_problems(draft: EmailDraft) -> list[str]:
    """A draft goes to a customer as written: no placeholder left in it."""
    left = [mark for mark in PLACEHOLDER_MARKS if mark in draft.subject or mark in draft.body]
    if left:
        return [f"the draft still holds placeholders ({', '.join(left)}): fill them in"]
    return []


def health_score(
    account: Account, *, cycle: int, healthy_at: int, churning_below: int
) -> HealthScore:
    """Usage trend up to 40 points (20 at a flat trend, one per 2% either
    way), open tickets up to 30 (6 fewer per ticket), NPS up to 30 (scaled
    from -100..100)."""
    usage = min(40.0, max(0.0, 20 + account.usage_trend_pct / 2))
    tickets = max(0, 30 - 6 * account.open_tickets)
    nps = (account.nps + 100) * 30 / 200
    score = round(usage + tickets + nps)
    band: Band = (
        "healthy" if score >= healthy_at else "churning" if score < churning_below else "at_risk"
    )
    trend = f"{'up' if account.usage_trend_pct >= 0 else 'down'} {abs(account.usage_trend_pct)}%"
    return HealthScore(
        account=account,
        cycle=cycle,
        score=score,
        band=band,
        factors=[
            f"usage {trend} over 90 days: {usage:.0f} of 40 points",
            f"{account.open_tickets} open support ticket(s): {tickets} of 30 points",
            f"NPS {account.nps}: {nps:.0f} of 30 points",
        ],
    )


# -- the policy -------------------------------------------------------------


class PolicyError(ValueError):
    """The ``[policies.renewal]`` table cannot be used; the message names the setting."""


class RenewalPolicy(BaseModel):
    """Durations are days; fractions are allowed, so that a demo or a test
    can wait seconds (0.0001 days is 8.64 s) without another setting."""

    reply_wait_days: float = Field(gt=0)
    follow_up_wait_days: float = Field(gt=0)
    review_every_days: float = Field(gt=0)
    healthy_at: int = Field(ge=1, le=100)
    churning_below: int = Field(ge=1, le=100)


DAYS = ("reply_wait_days", "follow_up_wait_days", "review_every_days")
SCORES = ("healthy_at", "churning_below")


def load_policy(table: Mapping[str, Any], source: str = "[policies.renewal]") -> RenewalPolicy:
    """The policy in ``table``; :class:`PolicyError` names the first problem."""
    unknown = sorted(set(table) - {*DAYS, *SCORES})
    if unknown:
        raise PolicyError(
            f"{source} has unknown setting(s) {', '.join(unknown)}: it takes "
            f"{', '.join((*DAYS, *SCORES))}"
        )
    values: dict[str, Any] = {}
    for name in DAYS:
        value = table.get(name)
        if isinstance(value, bool) or not isinstance(value, int | float) or value <= 0:
            raise PolicyError(
                f"{source}.{name} = {value!r} must be a number of days above 0 "
                "(fractions allowed: 0.5 is twelve hours)"
            )
        values[name] = float(value)
    for name in SCORES:
        value = table.get(name)
        if isinstance(value, bool) or not isinstance(value, int) or not 1 <= value <= 100:
            raise PolicyError(f"{source}.{name} = {value!r} must be a whole score from 1 to 100")
        values[name] = value
    if values["churning_below"] > values["healthy_at"]:
        raise PolicyError(
            f"{source}: churning_below ({values['churning_below']}) is above healthy_at "
            f"({values['healthy_at']}); a score cannot be both: lower churning_below"
        )
    return RenewalPolicy(**values)
