"""Accounts payable rules: duplicates, the per-line match, tolerances from
policy, the approval matrix and reconciliation, every branch."""

from __future__ import annotations

import tomllib
from datetime import date, datetime
from decimal import Decimal
from typing import Any

import pytest

from activities.matching import (
    find_duplicates,
    invoice_number_key,
    masked_iban,
    match_invoice,
    reconcile,
)
from activities.payables_models import (
    Finding,
    GoodsReceipt,
    InvoiceLine,
    PayableInvoice,
    Payment,
    PoLine,
    PriorInvoice,
    PurchaseOrder,
    RecordedInvoice,
    Vendor,
)
from activities.payables_policy import (
    ApprovalMatrix,
    ApprovalRule,
    PolicyError,
    Tolerances,
    approval_route,
    load_policy,
)
from tests.conftest import ROOT

AP = ROOT / "samples" / "accounts_payable"
POLICY = load_policy(tomllib.loads((ROOT / "baton.toml").read_text())["policies"]["payables"])
TOLERANCES = Tolerances(price_pct=Decimal(2), quantity_pct=Decimal(0), amount_abs=Decimal(50))
IBAN = "NL91ABNA0417164300"
VENDOR = Vendor(vendor_id="V-1", name="Acme", vat_id="NL1", iban=IBAN, payment_terms_days=30)


def po(*lines: PoLine, vendor_id: str = "V-1", currency: str = "EUR") -> PurchaseOrder:
    return PurchaseOrder(
        po_number="PO-1",
        vendor_id=vendor_id,
        cost_centre="CC-OPS",
        currency=currency,
        lines=list(lines),
    )


def po_line(
    line_no: int = 1,
    item: str = "HP-400",
    kind: str = "goods",
    quantity: str = "10",
    price: str = "100.00",
    invoiced: str = "0",
) -> PoLine:
    return PoLine.model_validate(
        {
            "line_no": line_no,
            "item": item,
            "kind": kind,
            "quantity": quantity,
            "unit_price": price,
            "quantity_invoiced": invoiced,
        }
    )


def line(description: str, quantity: str, price: str, *, names: int | None = None) -> InvoiceLine:
    """An invoice line; ``names`` is the PO line it states, if it states one."""
    q, p = Decimal(quantity), Decimal(price)
    return InvoiceLine(
        description=description, quantity=q, unit_price=p, amount=q * p, po_line=names
    )


def invoice(*lines: InvoiceLine, iban: str | None = None) -> PayableInvoice:
    total = sum((item.amount for item in lines), Decimal(0))
    return PayableInvoice(
        vendor_id="V-1",
        number="INV-1",
        issue_date=date(2026, 3, 16),
        currency="EUR",
        total=total,
        po_number="PO-1",
        lines=list(lines),
        iban=iban,
    )


def received(quantity: str, line_no: int = 1) -> GoodsReceipt:
    return GoodsReceipt(
        receipt_number=f"GR-{line_no}-{quantity}",
        po_number="PO-1",
        line_no=line_no,
        quantity=Decimal(quantity),
        received_at=date(2026, 3, 10),
    )


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


# -- duplicates ------------------------------------------------------------------


@pytest.mark.parametrize(
    ("number", "same"),
    [
        ("ACME-2026-0098", True),
        ("acme 2026 98", True),
        ("ACME/2026/098", True),
        ("ACME-2026-0099", False),
        ("ACME-2026-00980", False),
    ],
)
def test_invoice_numbers_compare_without_punctuation_case_or_leading_zeros(
    number: str, same: bool
) -> None:
    assert (invoice_number_key(number) == invoice_number_key("ACME-2026-0098")) is same


def prior(number: str, total: str, day: int, vendor_id: str = "V-1") -> PriorInvoice:
    return PriorInvoice(
        invoice_id=day,
        vendor_id=vendor_id,
        number=number,
        issue_date=date(2026, 3, day),
        total=Decimal(total),
    )


def test_the_same_vendor_and_number_is_a_duplicate_whatever_the_amount() -> None:
    report = find_duplicates(invoice(line("HP-400", "1", "10")), [prior("inv 1", "99", 1)], 14)
    assert report.duplicate and report.earlier == [1]
    assert codes(report.findings) == ["duplicate_number"]


def test_the_same_vendor_and_total_within_the_window_is_a_possible_duplicate() -> None:
    candidate = invoice(line("HP-400", "1", "10"))  # 2026-03-16, total 10
    report = find_duplicates(
        candidate,
        [
            prior("INV-A", "10", 2),  # 14 days before: inside the window
            prior("INV-B", "10", 1),  # 15 days before: outside
            prior("INV-C", "11", 16),  # another total
            prior("INV-1", "10", 16, vendor_id="V-2"),  # another vendor
        ],
        14,
    )
    assert report.earlier == [2]
    assert codes(report.findings) == ["duplicate_amount_and_date"]


def test_no_earlier_invoice_is_no_duplicate() -> None:
    report = find_duplicates(invoice(line("HP-400", "1", "10")), [], 14)
    assert not report.duplicate and report.findings == []


# -- three-way and two-way match ---------------------------------------------------


def test_goods_that_match_order_price_and_receipt_are_matched() -> None:
    report = match_invoice(
        invoice(line("HP-400 Hydraulic pump", "10", "100.00")),
        VENDOR,
        po(po_line()),
        [received("6"), received("4")],
        TOLERANCES,
    )
    assert report.outcome == "matched" and report.findings == []
    [matched] = report.lines
    assert (matched.po_line, matched.kind, matched.received) == (1, "goods", Decimal(10))


@pytest.mark.parametrize(
    ("price", "breach"),
    [
        ("102.00", False),  # 2%, 20.00 on the line: at both limits
        ("102.01", True),  # just over 2%
        ("90.00", False),  # cheaper than ordered is never a breach
    ],
)
def test_price_is_held_above_the_percentage_tolerance(price: str, breach: bool) -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", price)), VENDOR, po(po_line()), [received("10")], TOLERANCES
    )
    assert codes(report.findings) == (["price_over_tolerance"] if breach else [])


def test_price_within_the_percentage_is_held_above_the_absolute_amount() -> None:
    # 1% over on 100 units is 100.00 on the line: above the 50.00 limit.
    report = match_invoice(
        invoice(line("HP-400", "100", "101.00")),
        VENDOR,
        po(po_line(quantity="100")),
        [received("100")],
        TOLERANCES,
    )
    assert codes(report.findings) == ["price_over_tolerance"]
    assert "1.00% above the PO's 100.00 (100.00 on the line)" in report.findings[0].message


def test_a_price_on_an_item_ordered_free_is_held() -> None:
    report = match_invoice(
        invoice(line("HP-400", "1", "5.00")),
        VENDOR,
        po(po_line(price="0")),
        [received("1")],
        TOLERANCES,
    )
    assert codes(report.findings) == ["price_over_tolerance"]
    assert "a free item" in report.findings[0].message


def test_goods_without_any_receipt_wait_for_it() -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", "100")), VENDOR, po(po_line()), [], TOLERANCES
    )
    assert report.outcome == "awaiting_receipt"
    assert codes(report.findings) == ["receipt_missing"]


def test_goods_billed_beyond_what_was_received_are_held() -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", "100")), VENDOR, po(po_line()), [received("8")], TOLERANCES
    )
    assert report.outcome == "exception"
    assert codes(report.findings) == ["quantity_not_received"]
    assert "received 8, invoiced before 0" in report.findings[0].message


def test_a_breach_beside_a_missing_receipt_goes_to_review_at_once() -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", "100"), line("PH-200", "1", "50")),
        VENDOR,
        po(po_line(), po_line(2, "PH-200", price="40")),
        [received("1", line_no=2)],
        TOLERANCES,
    )
    assert report.outcome == "exception"
    assert [m.status for m in report.lines] == ["awaiting_receipt", "exception"]


def test_services_match_two_ways_without_receipts() -> None:
    report = match_invoice(
        invoice(line("CONS-D Consulting day", "5", "950")),
        VENDOR,
        po(po_line(item="CONS-D", kind="services", quantity="5", price="950")),
        [],
        TOLERANCES,
    )
    assert report.outcome == "matched"
    assert report.lines[0].received is None


def test_quantity_beyond_the_order_is_held_and_the_tolerance_allows_a_little() -> None:
    order = po(po_line(item="CONS-H", kind="services", quantity="20", price="140"))
    over = invoice(line("CONS-H", "21", "140"))
    assert codes(match_invoice(over, VENDOR, order, [], TOLERANCES).findings) == [
        "quantity_over_po"
    ]
    lenient = TOLERANCES.model_copy(update={"quantity_pct": Decimal(5)})
    assert match_invoice(over, VENDOR, order, [], lenient).outcome == "matched"


def test_quantities_are_matched_net_of_what_was_invoiced_before() -> None:
    order = po(po_line(quantity="100", invoiced="60"))
    receipts = [received("100")]
    fits = match_invoice(invoice(line("HP-400", "40", "100")), VENDOR, order, receipts, TOLERANCES)
    assert fits.outcome == "matched"
    assert fits.lines[0].invoiced_before == Decimal(60)
    over = match_invoice(invoice(line("HP-400", "50", "100")), VENDOR, order, receipts, TOLERANCES)
    assert codes(over.findings) == ["quantity_over_po", "quantity_not_received"]


def test_two_lines_on_one_po_line_count_together() -> None:
    report = match_invoice(
        invoice(line("HP-400 first part", "6", "100"), line("HP-400 rest", "6", "100")),
        VENDOR,
        po(po_line()),
        [received("10")],
        TOLERANCES,
    )
    assert [m.status for m in report.lines] == ["matched", "exception"]
    assert report.lines[1].invoiced_before == Decimal(6)


def test_a_credit_note_credits_what_was_invoiced_and_no_more() -> None:
    order = po(po_line(quantity="20", invoiced="10"))
    for written_quantity in ("-2", "2"):  # credit notes write the sign either way
        credit = invoice(
            InvoiceLine(
                description="HP-400 returned",
                quantity=Decimal(written_quantity),
                unit_price=Decimal(100),
                amount=Decimal(-200),
            )
        )
        report = match_invoice(credit, VENDOR, order, [], TOLERANCES)
        assert credit.is_credit_note
        assert report.outcome == "matched" and report.lines[0].quantity == Decimal(-2)
    too_much = invoice(line("HP-400 returned", "-15", "100"))
    report = match_invoice(too_much, VENDOR, order, [], TOLERANCES)
    assert codes(report.findings) == ["credit_exceeds_invoiced"]


def test_a_line_the_order_does_not_have_is_held() -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", "100"), line("EXP-1 Express surcharge", "1", "85")),
        VENDOR,
        po(po_line()),
        [received("10")],
        TOLERANCES,
    )
    assert codes(report.findings) == ["not_on_purchase_order"]
    assert report.lines[1].po_line is None


def test_a_line_that_names_its_po_line_is_matched_to_it() -> None:
    report = match_invoice(
        invoice(line("Pump, as ordered", "10", "100", names=1)),
        VENDOR,
        po(po_line()),
        [received("10")],
        TOLERANCES,
    )
    assert report.outcome == "matched" and report.lines[0].po_line == 1


def test_no_purchase_order_holds_every_line() -> None:
    report = match_invoice(invoice(line("HP-400", "1", "100")), VENDOR, None, [], TOLERANCES)
    assert report.outcome == "exception"
    assert codes(report.findings) == ["no_purchase_order"]
    assert report.lines[0].status == "exception"


def test_an_order_of_another_vendor_or_currency_is_held() -> None:
    report = match_invoice(
        invoice(line("HP-400", "10", "100")),
        VENDOR,
        po(po_line(), vendor_id="V-2", currency="USD"),
        [received("10")],
        TOLERANCES,
    )
    assert codes(report.findings) == ["vendor_mismatch", "currency_mismatch"]


def test_an_invoice_without_lines_cannot_be_matched() -> None:
    report = match_invoice(invoice(), VENDOR, po(po_line()), [], TOLERANCES)
    assert report.outcome == "exception" and codes(report.findings) == ["no_lines"]


def test_a_bank_account_other_than_the_vendor_masters_is_a_finding() -> None:
    same = invoice(line("HP-400", "10", "100"), iban="nl91 abna 0417 1643 00")
    assert match_invoice(same, VENDOR, po(po_line()), [received("10")], TOLERANCES).findings == []

    other = invoice(line("HP-400", "10", "100"), iban="BE68 5390 0754 7034")
    report = match_invoice(other, VENDOR, po(po_line()), [received("10")], TOLERANCES)
    assert report.outcome == "exception"
    assert codes(report.findings) == ["bank_account_differs"]
    message = report.findings[0].message
    assert "BE68 ... 7034" in message and "NL91 ... 4300" in message
    assert "BE68539007547034" not in message and IBAN not in message


def test_a_short_account_is_masked_whole() -> None:
    assert masked_iban("NL91 ABNA") == "****"


# -- policy ------------------------------------------------------------------------


def policy_table() -> dict[str, Any]:
    policies: dict[str, Any] = tomllib.loads((ROOT / "baton.toml").read_text())["policies"]
    return dict(policies["payables"])


def test_the_sample_policy_loads() -> None:
    assert POLICY.tolerances == Tolerances(
        price_pct=Decimal(2), quantity_pct=Decimal(0), amount_abs=Decimal("50.00")
    )
    assert (POLICY.duplicate_window_days, POLICY.receipt_wait_days) == (14, 5)
    assert len(POLICY.approval.rules) == 5


@pytest.mark.parametrize("blank", ["", "  ", None])
def test_a_blank_or_missing_tolerance_is_a_config_error_not_unlimited(blank: str | None) -> None:
    table = policy_table()
    if blank is None:
        del table["tolerances"]["price_pct"]
    else:
        table["tolerances"]["price_pct"] = blank
    blank_message = (
        r"\[payables\]\.tolerances\.price_pct is blank or missing; "
        r"a blank limit is not 'unlimited'"
    )
    with pytest.raises(PolicyError, match=blank_message):
        load_policy(table)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"tolerances": {"price_pct": "-1", "quantity_pct": 0, "amount_abs": 1}}, "at least 0"),
        ({"tolerances": {"price_pct": "two", "quantity_pct": 0, "amount_abs": 1}}, "not a number"),
        ({"tolerances": {"price_pct": True, "quantity_pct": 0, "amount_abs": 1}}, "not a number"),
        ({"tolerances": None}, r"\.tolerances is missing"),
        ({"receipt_wait_days": 0}, "receipt_wait_days = 0 must be a whole number of at least 1"),
        ({"duplicate_window_days": "14"}, "duplicate_window_days = '14' must be a whole"),
    ],
)
def test_an_unusable_policy_names_the_setting(change: dict[str, Any], message: str) -> None:
    table = policy_table() | change
    with pytest.raises(PolicyError, match=message):
        load_policy(table)


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        ([], "rules is missing or empty"),
        ([{"up_to": "100", "roles": ["ap_approver"]}], "the last rule must be cost_centre = '\\*'"),
        ([{"cost_centre": "CC-IT", "roles": ["a", "b"]}], "the last rule must be"),
        ([{"roles": ["controller"]}], r"rules\[1\] applies above four_eyes_above"),
        ([{"up_to": "20000", "roles": ["a"]}, {"roles": ["a", "b"]}], r"rules\[1\] applies above"),
        ([{"roles": ["a", "a"]}], "names a role twice"),
        ([{"roles": []}], r"rules\[1\]\.roles must list at least one role"),
        (["ap_approver"], r"rules\[1\] is not a table"),
    ],
)
def test_an_approval_matrix_with_a_gap_is_refused(rules: list[Any], message: str) -> None:
    table = policy_table()
    table["approval"]["rules"] = rules
    with pytest.raises(PolicyError, match=message):
        load_policy(table)


# -- approval matrix ---------------------------------------------------------------


@pytest.mark.parametrize(
    ("amount", "cost_centre", "roles", "rule"),
    [
        ("2500.00", "CC-OPS", ["ap_approver"], 3),
        ("2500.01", "CC-OPS", ["budget_owner"], 4),
        ("10000.00", "CC-OPS", ["budget_owner"], 4),
        ("10000.01", "CC-OPS", ["budget_owner", "controller"], 5),
        ("100.00", "CC-IT", ["it_budget_owner"], 1),
        ("14762.00", "CC-IT", ["it_budget_owner", "controller"], 2),
        ("-116.16", "CC-LAB", ["ap_approver"], 3),  # a credit note by its size
        ("-12000", "", ["budget_owner", "controller"], 5),  # no PO, no cost centre
    ],
)
def test_the_approval_matrix_routes_by_amount_and_cost_centre(
    amount: str, cost_centre: str, roles: list[str], rule: int
) -> None:
    route = approval_route(Decimal(amount), cost_centre, POLICY.approval)
    assert (route.roles, route.four_eyes, route.rule) == (roles, len(roles) == 2, rule)


def test_a_matrix_built_without_a_catch_all_says_which_invoice_found_no_rule() -> None:
    matrix = ApprovalMatrix(
        four_eyes_above=Decimal(10), rules=[ApprovalRule(cost_centre="CC-IT", roles=["a", "b"])]
    )
    with pytest.raises(PolicyError, match="no approval rule fits 5 on cost centre CC-OPS"):
        approval_route(Decimal(5), "CC-OPS", matrix)


# -- reconciliation ----------------------------------------------------------------


def recorded(total: str) -> RecordedInvoice:
    return RecordedInvoice(
        invoice_id=7,
        vendor_id="V-1",
        number="INV-1",
        issue_date=date(2026, 3, 16),
        currency="EUR",
        total=Decimal(total),
    )


def paid(payment_id: int, amount: str, iban: str = IBAN, currency: str = "EUR") -> Payment:
    return Payment(
        payment_id=payment_id,
        invoice_id=7,
        vendor_id="V-1",
        iban=iban,
        amount=Decimal(amount),
        currency=currency,
        released_by="paula",
        paid_at=datetime(2026, 3, 20),
    )


@pytest.mark.parametrize(
    ("total", "payments", "found"),
    [
        ("100.00", [paid(1, "100.00")], []),
        ("100.00", [], ["unpaid"]),
        (
            "100.00",
            [paid(1, "100.00"), paid(2, "100.00")],
            ["paid_more_than_once", "amount_differs"],
        ),
        ("100.00", [paid(1, "90.00")], ["amount_differs"]),
        ("100.00", [paid(1, "100.00", currency="USD")], ["currency_differs"]),
        ("100.00", [paid(1, "100.00", iban="BE68539007547034")], ["paid_to_other_account"]),
        ("-50.00", [], []),
        ("-50.00", [paid(1, "50.00")], ["credit_note_paid"]),
    ],
)
def test_reconciliation_finds_every_way_a_payment_can_be_wrong(
    total: str, payments: list[Payment], found: list[str]
) -> None:
    report = reconcile(recorded(total), payments, VENDOR)
    assert codes(report.findings) == found
    assert report.reconciled is (not found)
    assert report.paid == sum((p.amount for p in payments), Decimal(0))
