"""Every sample invoice of samples/accounts_payable ends where expected.toml
says: the seed, the policy, the rules and the table cannot drift apart."""

from __future__ import annotations

import re
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

from activities.matching import find_duplicates, match_invoice
from activities.payables_models import (
    Finding,
    GoodsReceipt,
    InvoiceLine,
    MatchReport,
    PayableInvoice,
    PriorInvoice,
    PurchaseOrder,
    Vendor,
)
from activities.payables_policy import approval_route, load_policy
from baton.llm.offline_documents import extract_document_fields
from systems.ledger import InvoiceLedger
from systems.payables_seed import deliver_late_receipts, load_seed
from systems.purchasing import GoodsReceipts, PurchaseOrders, VendorMaster
from tests.conftest import ROOT

AP = ROOT / "samples" / "accounts_payable"
POLICY = load_policy(tomllib.loads((ROOT / "baton.toml").read_text())["policies"]["payables"])


def codes(findings: list[Finding]) -> list[str]:
    return [f.code for f in findings]


EXPECTED = tomllib.loads((AP / "expected.toml").read_text())["invoice"]
MONEY = r"(-?)[€£] (-?[\d,]+\.\d{2})"
ITEM = re.compile(
    rf"^(?P<desc>\S.*?)\s{{2,}}(?P<qty>-?[\d.]+)\s+[€£] (?P<price>[\d,.]+)\s+{MONEY}$"
)


def read_sample(path: Path) -> dict[str, Any]:
    """The AP fields of a sample, read by layout. A stand-in for the AP
    extraction, which the offline extractor cannot do yet: it reads no PO
    number, VAT id or bank account, and no credit note."""
    text = path.read_text(encoding="utf-8")

    def field(pattern: str) -> str | None:
        found = re.search(pattern, text, re.MULTILINE)
        return found.group(1) if found else None

    def amount(sign: str, digits: str) -> Decimal:
        return Decimal(sign + digits.replace(",", ""))

    lines = []
    for row in text.splitlines():
        if item := ITEM.match(row):
            lines.append(
                InvoiceLine(
                    description=item["desc"],
                    quantity=Decimal(item["qty"]),
                    unit_price=Decimal(item["price"].replace(",", "")),
                    amount=amount(item[4], item[5]),
                )
            )
    total = re.search(rf"Total (?:Due|Credit)\s+{MONEY}", text)
    assert total is not None
    return {
        "name": text.splitlines()[0].strip(),
        "vat_id": field(r"^VAT (\S+)"),
        "number": field(r"(?:Invoice|Credit Note) No: (\S+)"),
        "issue_date": field(r"(?<!Due )Date: (\S+)"),
        "po_number": field(r"PO Number: (\S+)"),
        "iban": field(r"IBAN ([A-Z0-9 ]+)\."),
        "currency": "GBP" if "£" in text else "EUR",
        "total": amount(total[1], total[2]),
        "lines": lines,
    }


@pytest.fixture
def seeded(isolated_data: Path) -> Path:
    load_seed(AP / "seed.toml")
    return AP / "seed.toml"


@pytest.mark.parametrize("row", EXPECTED, ids=[row["file"] for row in EXPECTED])
def test_each_sample_invoice_comes_to_its_expected_outcome(
    seeded: Path, row: dict[str, Any]
) -> None:
    fields = read_sample(AP / "invoices" / row["file"])
    found = VendorMaster().find(vat_id=fields["vat_id"], name=fields["name"])
    if found is None:
        assert (row["vendor_id"], row["match"], row["outcome"]) == (
            "",
            "not_run",
            "exception_review",
        )
        return
    vendor = Vendor.model_validate(found)
    assert vendor.vendor_id == row["vendor_id"]
    paying = PayableInvoice(
        vendor_id=vendor.vendor_id,
        **{k: v for k, v in fields.items() if k not in ("name", "vat_id")},
    )
    assert paying.po_number == row["po_number"]

    ledger = [PriorInvoice.model_validate(r) for r in InvoiceLedger().for_vendor(vendor.vendor_id)]
    duplicates = find_duplicates(paying, ledger, POLICY.duplicate_window_days)
    assert codes(duplicates.findings) == row["duplicate"]

    order_row = PurchaseOrders().get(row["po_number"])
    order = None if order_row is None else PurchaseOrder.model_validate(order_row)

    def match() -> MatchReport:
        receipts = [
            GoodsReceipt.model_validate(r) for r in GoodsReceipts().for_order(row["po_number"])
        ]
        return match_invoice(paying, vendor, order, receipts, POLICY.tolerances)

    report = match()
    assert (report.outcome, codes(report.findings)) == (row["match"], row["findings"])
    delivered: list[str] = []
    if report.outcome == "awaiting_receipt":
        delivered = deliver_late_receipts(seeded, row["po_number"])
        after = match().outcome
        # A receipt that never arrives leaves the run waiting until
        # receipt_wait_days end it in exception review.
        assert (after if delivered else "exception") == row["then"]
        report = match()

    route = approval_route(paying.total, order.cost_centre if order else "", POLICY.approval)
    assert route.roles == row["approval"]
    held = duplicates.duplicate or report.outcome != "matched"
    outcome = "exception_review" if held else "credit_recorded" if paying.is_credit_note else "paid"
    if report.outcome == "awaiting_receipt" and not delivered:
        outcome = "awaiting_receipt"
    assert outcome == row["outcome"]


def test_the_offline_extractor_reads_every_sample_invoice_but_the_credit_notes() -> None:
    """What the AP extraction can take from the offline extractor today;
    what it lacks is in read_sample's docstring."""
    for row in EXPECTED:
        path = AP / "invoices" / row["file"]
        fields = read_sample(path)
        extracted = extract_document_fields(path.read_text(encoding="utf-8")).fields
        if fields["total"] < 0:
            continue  # credit notes: not yet (see read_sample)
        assert (extracted["doc_type"], extracted["number"], extracted["issue_date"]) == (
            "invoice",
            fields["number"],
            fields["issue_date"],
        ), row["file"]
        assert Decimal(str(extracted["total"])) == fields["total"], row["file"]
        assert [
            (i["description"], Decimal(str(i["quantity"])), Decimal(str(i["amount"])))
            for i in extracted["line_items"]
        ] == [(i.description, i.quantity, i.amount) for i in fields["lines"]], row["file"]
