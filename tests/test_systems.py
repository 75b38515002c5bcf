"""The AP systems of record: every write once per key, the same key with
other content refused loudly, an invoice paid once and only to the vendor
master's account; the AP activities over them; the seed file."""

from __future__ import annotations

import dataclasses
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment

from activities.matching import invoice_number_key
from activities.payables import (
    DuplicateQuery,
    MatchRequest,
    PaymentRequest,
    PoQuery,
    ReconcileRequest,
    RecordRequest,
    VendorQuery,
    check_duplicates,
    look_up_purchase_order,
    look_up_vendor,
    match_lines,
    pay_invoice,
    reconcile_invoice,
    record_invoice,
)
from activities.payables_models import PayableInvoice
from activities.payables_policy import Tolerances
from systems.keyed import IdempotencyConflict
from systems.ledger import InvoiceLedger, Payments
from systems.payables_seed import SeedError, deliver_late_receipts, load_seed
from systems.purchasing import GoodsReceipts, PurchaseOrders, VendorMaster
from tests.conftest import ROOT

SEED = ROOT / "samples" / "accounts_payable" / "seed.toml"
ACME = {
    "vendor_id": "V-1",
    "name": "ACME Industrial Supply B.V.",
    "vat_id": "NL812345678B01",
    "iban": "NL91ABNA0417164300",
    "payment_terms_days": 30,
}
ORDER = {
    "po_number": "PO-1",
    "vendor_id": "V-1",
    "cost_centre": "CC-OPS",
    "currency": "EUR",
    "lines": [
        {"line_no": 1, "item": "HP-400", "kind": "goods", "quantity": "10", "unit_price": "100"},
        {"line_no": 2, "item": "INST", "kind": "services", "quantity": "5", "unit_price": "80"},
    ],
}
INVOICE = {
    "vendor_id": "V-1",
    "number": "INV-0042",
    "issue_date": "2026-03-16",
    "currency": "EUR",
    "total": "1210.00",
    "po_number": "PO-1",
}


@pytest.fixture
def acme() -> None:
    VendorMaster().put(idempotency_key="seed/V-1", vendor=ACME, edited_by="vera")
    PurchaseOrders().create(idempotency_key="seed/PO-1", order=ORDER)


def record(key: str, invoice: dict[str, Any] = INVOICE, quantity: str = "10") -> int:
    return (
        InvoiceLedger()
        .record(
            idempotency_key=key,
            invoice=invoice,
            number_key=invoice_number_key(invoice["number"]),
            allocations=[{"line_no": 1, "quantity": quantity}],
        )
        .row_id
    )


def invoiced(line_no: int = 1) -> str:
    order = PurchaseOrders().get("PO-1")
    assert order is not None
    return str(order["lines"][line_no - 1]["quantity_invoiced"])


# -- vendor master -----------------------------------------------------------------


def test_a_vendor_edit_happens_once_per_key_and_a_forged_one_is_refused() -> None:
    master = VendorMaster()
    first = master.put(idempotency_key="edit-1", vendor=ACME, edited_by="vera")
    again = master.put(idempotency_key="edit-1", vendor=ACME, edited_by="vera")
    assert first.created and (again.row_id, again.created) == (first.row_id, False)

    with pytest.raises(IdempotencyConflict, match="vendor master: idempotency key 'edit-1'"):
        master.put(
            idempotency_key="edit-1", vendor={**ACME, "iban": "BE68539007547034"}, edited_by="vera"
        )
    assert master.get("V-1") == {**ACME, "edit_id": first.row_id}


def test_a_bank_account_change_is_an_edit_of_its_own_that_stays_on_record() -> None:
    master = VendorMaster()
    master.put(idempotency_key="edit-1", vendor=ACME, edited_by="vera")
    master.put(
        idempotency_key="edit-2", vendor={**ACME, "iban": "BE68539007547034"}, edited_by="sam"
    )
    vendor = master.get("V-1")
    assert vendor is not None and vendor["iban"] == "BE68539007547034"
    assert [(e["idempotency_key"], e["edited_by"]) for e in master.edits("V-1")] == [
        ("edit-1", "vera"),
        ("edit-2", "sam"),
    ]


@pytest.mark.parametrize(
    ("query", "found"),
    [
        ({"vat_id": "NL 8123.45.678.B01"}, True),
        ({"vat_id": "NL000000000B01", "name": "acme industrial supply b.v. "}, True),
        ({"name": "ACME Industrial"}, False),
        ({}, False),
    ],
)
def test_a_vendor_is_found_by_vat_id_however_punctuated_else_by_exact_name(
    query: dict[str, str], found: bool
) -> None:
    VendorMaster().put(idempotency_key="edit-1", vendor=ACME, edited_by="vera")
    assert (VendorMaster().find(**query) is not None) is found


# -- purchasing --------------------------------------------------------------------


def test_a_purchase_order_is_created_once_with_its_lines(acme: None) -> None:
    again = PurchaseOrders().create(idempotency_key="seed/PO-1", order=ORDER)
    assert not again.created
    order = PurchaseOrders().get("PO-1")
    assert order is not None
    assert [(line["item"], line["quantity_invoiced"]) for line in order["lines"]] == [
        ("HP-400", "0"),
        ("INST", "0"),
    ]
    assert PurchaseOrders().get("PO-404") is None
    with pytest.raises(IdempotencyConflict, match="purchasing"):
        PurchaseOrders().create(idempotency_key="seed/PO-1", order={**ORDER, "cost_centre": "X"})


def test_a_goods_receipt_is_recorded_once_and_only_for_a_line_on_order(acme: None) -> None:
    receipt = {
        "receipt_number": "GR-1",
        "po_number": "PO-1",
        "line_no": 1,
        "quantity": "6",
        "received_at": "2026-03-10",
    }
    receipts = GoodsReceipts()
    assert receipts.record(idempotency_key="gr-1", receipt=receipt).created
    assert not receipts.record(idempotency_key="gr-1", receipt=receipt).created
    assert [r["quantity"] for r in receipts.for_order("PO-1")] == ["6"]
    with pytest.raises(IdempotencyConflict):
        receipts.record(idempotency_key="gr-1", receipt={**receipt, "quantity": "60"})
    with pytest.raises(LookupError, match="PO-1 has no line 9"):
        receipts.record(idempotency_key="gr-2", receipt={**receipt, "line_no": 9})


# -- invoice ledger ----------------------------------------------------------------


def test_recording_an_invoice_adds_to_its_po_line_once_however_often_it_is_retried(
    acme: None,
) -> None:
    first = record("run/record#1")
    assert record("run/record#1") == first
    assert invoiced() == "10", "the retry did not bill the line twice"

    with pytest.raises(IdempotencyConflict, match="invoice ledger"):
        record("run/record#1", quantity="9")
    assert invoiced() == "10"


def test_the_ledger_refuses_a_vendors_invoice_number_twice_under_another_key(acme: None) -> None:
    first = record("run-a/record#1")
    renumbered = {**INVOICE, "number": "inv 42"}
    with pytest.raises(ApplicationError) as refused:
        record("run-b/record#1", invoice=renumbered)
    assert refused.value.type == "DuplicateInvoice" and refused.value.non_retryable
    assert f"already in the ledger as #{first} (INV-0042)" in refused.value.message
    assert invoiced() == "10"


def test_a_credit_note_takes_its_quantity_back_from_the_po_line(acme: None) -> None:
    record("run-a/record#1")
    credit = {**INVOICE, "number": "CN-7", "total": "-242.00"}
    record("run-b/record#1", invoice=credit, quantity="-2")
    assert invoiced() == "8"


# -- payments ----------------------------------------------------------------------


def test_an_invoice_is_paid_once_to_the_vendor_masters_account(acme: None) -> None:
    invoice_id = record("run/record#1")
    payments = Payments()
    first = payments.pay(idempotency_key="run/pay#1", invoice_id=invoice_id, released_by="paula")
    again = payments.pay(idempotency_key="run/pay#1", invoice_id=invoice_id, released_by="paula")
    assert first.created and (again.row_id, again.created) == (first.row_id, False)
    [paid] = payments.for_invoice(invoice_id)
    assert (paid["iban"], paid["amount"], paid["currency"]) == (ACME["iban"], "1210.00", "EUR")

    with pytest.raises(IdempotencyConflict, match="payments"):
        payments.pay(idempotency_key="run/pay#1", invoice_id=invoice_id, released_by="mallory")
    with pytest.raises(ApplicationError) as twice:
        payments.pay(idempotency_key="other/pay#1", invoice_id=invoice_id, released_by="paula")
    assert twice.value.type == "AlreadyPaid"
    assert f"payment #{first.row_id} under key 'run/pay#1'" in twice.value.message
    assert len(payments.for_invoice(invoice_id)) == 1


@pytest.mark.parametrize(
    ("invoice_id", "kind"),
    [(None, "NotPayable"), (404, "UnknownInvoice")],
)
def test_a_credit_note_or_an_unknown_invoice_is_never_paid(
    acme: None, invoice_id: int | None, kind: str
) -> None:
    credit = record("run/record#1", invoice={**INVOICE, "total": "-242.00"}, quantity="0")
    with pytest.raises(ApplicationError) as refused:
        Payments().pay(
            idempotency_key="run/pay#1", invoice_id=invoice_id or credit, released_by="paula"
        )
    assert refused.value.type == kind and refused.value.non_retryable


def test_a_vendor_missing_from_the_master_is_never_paid() -> None:
    PurchaseOrders().create(idempotency_key="seed/PO-1", order=ORDER)
    invoice_id = record("run/record#1")
    with pytest.raises(ApplicationError) as refused:
        Payments().pay(idempotency_key="run/pay#1", invoice_id=invoice_id, released_by="paula")
    assert refused.value.type == "UnknownVendor"


# -- the activities ------------------------------------------------------------------


def in_run(workflow_id: str, activity_id: str, attempt: int = 1) -> ActivityEnvironment:
    """An activity context of ``workflow_id``; without the run header, so
    keys take the ``<workflow id>/<activity id>`` form."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(
        env.info, workflow_id=workflow_id, activity_id=activity_id, attempt=attempt
    )
    return env


async def test_the_activities_look_up_match_record_pay_and_reconcile(acme: None) -> None:
    GoodsReceipts().record(
        idempotency_key="gr-1",
        receipt={
            "receipt_number": "GR-1",
            "po_number": "PO-1",
            "line_no": 1,
            "quantity": "10",
            "received_at": "2026-03-10",
        },
    )
    vendor = look_up_vendor(VendorQuery(vat_id="NL812345678B01")).vendor
    order = look_up_purchase_order(PoQuery(po_number="PO-1")).purchase_order
    assert vendor is not None and order is not None
    assert look_up_vendor(VendorQuery(name="Nobody")).vendor is None
    assert look_up_purchase_order(PoQuery()).purchase_order is None

    invoice = PayableInvoice.model_validate(
        {
            **INVOICE,
            "lines": [
                {"description": "HP-400", "quantity": "10", "unit_price": "100", "amount": "1000"},
            ],
        }
    )
    # The match reads the order's receipts itself, as they are when it runs.
    report = match_lines(
        MatchRequest(
            invoice=invoice,
            vendor=vendor,
            purchase_order=order,
            tolerances=Tolerances(
                price_pct=Decimal(0), quantity_pct=Decimal(0), amount_abs=Decimal(0)
            ),
        )
    )
    assert report.outcome == "matched"
    assert report.lines[0].received == Decimal(10)

    recorded = in_run("wf", "record#1").run(
        record_invoice, RecordRequest(invoice=invoice, match=report)
    )
    assert (recorded.idempotency_key, recorded.created) == ("wf/record#1", True)
    assert invoiced() == "10"

    paid = in_run("wf", "pay#1").run(
        pay_invoice, PaymentRequest(invoice_id=recorded.invoice_id, released_by="paula")
    )
    # The worker died before reporting; the retry finds the payment.
    retried = in_run("wf", "pay#1", attempt=2).run(
        pay_invoice, PaymentRequest(invoice_id=recorded.invoice_id, released_by="paula")
    )
    assert paid.created and not retried.created
    assert retried.payment == paid.payment and paid.payment.iban == ACME["iban"]

    reconciled = in_run("wf", "reconcile#1").run(
        reconcile_invoice, ReconcileRequest(invoice_id=recorded.invoice_id)
    )
    assert reconciled.reconciled and reconciled.paid == Decimal("1210.00")


def test_the_duplicate_check_leaves_out_the_runs_own_record(acme: None) -> None:
    own = record("wf/record#1")
    invoice = PayableInvoice.model_validate(INVOICE)
    query = DuplicateQuery(invoice=invoice, window_days=14)

    assert not in_run("wf", "duplicates#1").run(check_duplicates, query).duplicate
    other_run = in_run("wf-2", "duplicates#1").run(check_duplicates, query)
    assert other_run.earlier == [own]


def test_reconciling_an_unknown_invoice_fails_with_the_reason() -> None:
    with pytest.raises(ApplicationError, match="no invoice #9 to reconcile"):
        in_run("wf", "reconcile#1").run(reconcile_invoice, ReconcileRequest(invoice_id=9))


# -- the seed file -----------------------------------------------------------------


def test_the_seed_loads_once_and_holds_late_receipts_back_until_delivered() -> None:
    counts = load_seed(SEED)
    assert counts == {"vendors": 8, "purchase_orders": 20, "receipts": 18, "invoices": 4}
    assert load_seed(SEED) == counts, "loading again changes nothing"
    assert GoodsReceipts().for_order("PO-4500-1006") == []

    assert deliver_late_receipts(SEED, "PO-4500-1001") == []
    assert deliver_late_receipts(SEED, "PO-4500-1006") == ["GR-7050"]
    assert [r["quantity"] for r in GoodsReceipts().for_order("PO-4500-1006")] == ["24"]
    order = PurchaseOrders().get("PO-4500-1011")
    assert order is not None and order["lines"][0]["quantity_invoiced"] == "60"


def test_a_seed_edited_after_loading_is_a_conflict_not_a_silent_mix(tmp_path: Path) -> None:
    load_seed(SEED)
    edited = tmp_path / "seed.toml"
    edited.write_text(
        SEED.read_text().replace('iban = "NL91ABNA0417164300"', 'iban = "BE68539007547034"')
    )
    with pytest.raises(IdempotencyConflict, match="seed/vendor/V-1001"):
        load_seed(edited)


def test_a_seed_row_that_does_not_fit_its_model_is_named(tmp_path: Path) -> None:
    broken = tmp_path / "seed.toml"
    broken.write_text('[[receipts]]\nreceipt_number = "GR-1"\npo_number = "PO-1"\n')
    with pytest.raises(SeedError, match="a GoodsReceipt row is invalid"):
        load_seed(broken)
    with pytest.raises(SeedError, match="cannot read the seed file"):
        load_seed(tmp_path / "missing.toml")


def test_systems_use_the_data_dir(isolated_data: Path) -> None:
    VendorMaster().put(idempotency_key="edit-1", vendor=ACME, edited_by="vera")
    assert (isolated_data / "payables.sqlite").exists()
