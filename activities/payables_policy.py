"""The accounts payable policy a run steers by: match tolerances, the
duplicate window, how long to wait for a goods receipt, and the approval
matrix. Read from the ``[payables]`` table of the run configuration and
checked whole, so a gap is an error at start-up, never a surprise mid-run.

Pure (no I/O): workflow code computes a gate's approvers with
:func:`approval_route` from the policy snapshotted into the run.
"""

from __future__ import annotations

from collections.abc import Mapping
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel, Field

from activities.payables_models import ApprovalRoute

TOLERANCES = ("price_pct", "quantity_pct", "amount_abs")
ANY_COST_CENTRE = "*"


class PolicyError(ValueError):
    """The ``[payables]`` configuration cannot be used; the message names the
    setting and how to fix it."""


class Tolerances(BaseModel):
    """How far an invoice may exceed the PO or the receipts before it is held.
    Only excess counts: a lower price or a smaller quantity is never a breach."""

    price_pct: Decimal = Field(ge=0, description="Unit price above the PO's, in percent")
    quantity_pct: Decimal = Field(
        ge=0, description="Quantity above what is open on the PO (or received), in percent"
    )
    amount_abs: Decimal = Field(
        ge=0, description="A line's total price excess, in the invoice's currency"
    )


class ApprovalRule(BaseModel):
    cost_centre: str = ANY_COST_CENTRE
    up_to: Decimal | None = Field(default=None, description="None: any amount")
    roles: list[str] = Field(min_length=1)


class ApprovalMatrix(BaseModel):
    """Rules in order; the first whose cost centre and amount fit applies."""

    four_eyes_above: Decimal = Field(ge=0)
    rules: list[ApprovalRule] = Field(min_length=1)


class PayablesPolicy(BaseModel):
    tolerances: Tolerances
    duplicate_window_days: int = Field(ge=0)
    receipt_wait_days: int = Field(ge=1)
    approval: ApprovalMatrix


def load_policy(table: Mapping[str, Any], source: str = "[payables]") -> PayablesPolicy:
    """The policy in ``table`` (the ``[payables]`` table of a TOML file);
    :class:`PolicyError` names the first problem found."""
    tolerances = _section(table, "tolerances", source)
    approval = _section(table, "approval", source)
    rules = [
        _rule(rule, f"{source}.approval.rules[{index}]")
        for index, rule in enumerate(_list(approval, "rules", f"{source}.approval"), start=1)
    ]
    matrix = ApprovalMatrix(
        four_eyes_above=_amount(approval, "four_eyes_above", f"{source}.approval"), rules=rules
    )
    _check_matrix(matrix, f"{source}.approval")
    return PayablesPolicy(
        tolerances=Tolerances(
            **{name: _amount(tolerances, name, f"{source}.tolerances") for name in TOLERANCES}
        ),
        duplicate_window_days=_days(table, "duplicate_window_days", source, minimum=0),
        receipt_wait_days=_days(table, "receipt_wait_days", source, minimum=1),
        approval=matrix,
    )


def _section(table: Mapping[str, Any], name: str, source: str) -> Mapping[str, Any]:
    value = table.get(name)
    if not isinstance(value, Mapping):
        raise PolicyError(f"{source}.{name} is missing: accounts payable cannot run without it")
    return value


def _list(table: Mapping[str, Any], name: str, source: str) -> list[Any]:
    value = table.get(name)
    if not isinstance(value, list) or not value:
        raise PolicyError(f"{source}.{name} is missing or empty: add at least one rule")
    return value


def _amount(table: Mapping[str, Any], name: str, source: str) -> Decimal:
    value = table.get(name)
    # A blank tolerance read as "no limit" would pay any price: it is an error.
    if value is None or (isinstance(value, str) and not value.strip()):
        raise PolicyError(
            f"{source}.{name} is blank or missing; a blank limit is not 'unlimited': "
            "set a number (0 allows no excess at all)"
        )
    if isinstance(value, bool):
        raise PolicyError(f"{source}.{name} = {value!r} is not a number")
    try:
        amount = Decimal(str(value).strip())
    except InvalidOperation:
        raise PolicyError(f"{source}.{name} = {value!r} is not a number") from None
    if not amount.is_finite() or amount < 0:
        raise PolicyError(f"{source}.{name} = {value!r} must be a number of at least 0")
    return amount


def _days(table: Mapping[str, Any], name: str, source: str, *, minimum: int) -> int:
    value = table.get(name)
    if not isinstance(value, int) or isinstance(value, bool) or value < minimum:
        raise PolicyError(
            f"{source}.{name} = {value!r} must be a whole number of at least {minimum}"
        )
    return value


def _rule(raw: Any, source: str) -> ApprovalRule:
    if not isinstance(raw, Mapping):
        raise PolicyError(f"{source} is not a table")
    roles = raw.get("roles")
    if not isinstance(roles, list) or not roles or not all(isinstance(r, str) and r for r in roles):
        raise PolicyError(f"{source}.roles must list at least one role")
    if len(set(roles)) != len(roles):
        raise PolicyError(f"{source}.roles names a role twice: four-eyes needs distinct roles")
    return ApprovalRule(
        cost_centre=str(raw.get("cost_centre", ANY_COST_CENTRE)),
        up_to=None if "up_to" not in raw else _amount(raw, "up_to", source),
        roles=roles,
    )


def _check_matrix(matrix: ApprovalMatrix, source: str) -> None:
    """Every amount in every cost centre has a rule, and every rule that can
    apply above the four-eyes limit names two roles."""
    last = matrix.rules[-1]
    if last.cost_centre != ANY_COST_CENTRE or last.up_to is not None:
        raise PolicyError(
            f"{source}.rules: the last rule must be cost_centre = '*' with no up_to, "
            "so that every invoice has approvers"
        )
    for index, rule in enumerate(matrix.rules, start=1):
        above_limit = rule.up_to is None or rule.up_to > matrix.four_eyes_above
        if above_limit and len(rule.roles) < 2:
            raise PolicyError(
                f"{source}.rules[{index}] applies above four_eyes_above "
                f"({matrix.four_eyes_above}) but names one role: list two (four-eyes), "
                f"or set its up_to to at most {matrix.four_eyes_above}"
            )


def approval_route(amount: Decimal, cost_centre: str, matrix: ApprovalMatrix) -> ApprovalRoute:
    """The roles that must approve an invoice of ``amount`` (gross; a credit
    note by its absolute value) on ``cost_centre``: the first rule whose cost
    centre (or '*') and ``up_to`` fit. The matrix always ends in a catch-all
    rule (checked at load), so there is always an answer."""
    size = abs(amount)
    for index, rule in enumerate(matrix.rules, start=1):
        if rule.cost_centre not in (cost_centre, ANY_COST_CENTRE):
            continue
        if rule.up_to is not None and size > rule.up_to:
            continue
        return ApprovalRoute(roles=list(rule.roles), four_eyes=len(rule.roles) > 1, rule=index)
    raise PolicyError(f"no approval rule fits {amount} on cost centre {cost_centre}")
