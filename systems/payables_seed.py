"""Load a seed file (samples/accounts_payable/seed.toml) into the AP
systems: vendors, purchase orders, goods receipts and invoices already in
the ledger.

Every row is written under a key "seed/<kind>/<id>", so loading a file again
is harmless, and an entry edited since its first load is an
IdempotencyConflict naming it: the systems never silently hold something
other than the file says. Rows are checked against the AP models first, so a
typo fails the load with the row, not a run later.
"""

from __future__ import annotations

import tomllib
from pathlib import Path
from typing import Any, TypeVar

from pydantic import ValidationError

from activities.matching import invoice_number_key
from activities.payables_models import GoodsReceipt, PayableInvoice, PurchaseOrder, Vendor
from systems.ledger import InvoiceLedger
from systems.purchasing import GoodsReceipts, PurchaseOrders, VendorMaster

SEEDED_BY = "seed"
M = TypeVar("M", Vendor, PurchaseOrder, GoodsReceipt, PayableInvoice)


class SeedError(ValueError):
    """The seed file cannot be loaded; the message names the row."""


def load_seed(path: Path) -> dict[str, int]:
    """Write every row of ``path`` except receipts marked ``arrives_later``;
    how many rows of each kind the file holds."""
    data = _read(path)
    vendors = VendorMaster()
    for row in data.get("vendors", []):
        vendor = _valid(Vendor, row, path)
        vendors.put(
            idempotency_key=f"seed/vendor/{vendor.vendor_id}",
            vendor=vendor.model_dump(mode="json"),
            edited_by=SEEDED_BY,
        )
    orders = PurchaseOrders()
    for row in data.get("purchase_orders", []):
        order = _valid(PurchaseOrder, row, path)
        orders.create(
            idempotency_key=f"seed/po/{order.po_number}", order=order.model_dump(mode="json")
        )
    receipts = [row for row in data.get("receipts", []) if not row.get("arrives_later", False)]
    _record_receipts(receipts, path)
    ledger = InvoiceLedger()
    for row in data.get("invoices", []):
        # Seeded invoices are history: their quantities are already in the
        # PO lines' quantity_invoiced, so they allocate nothing again.
        invoice = _valid(PayableInvoice, row, path)
        ledger.record(
            idempotency_key=f"seed/invoice/{invoice.vendor_id}/{invoice.number}",
            invoice=invoice.model_dump(mode="json"),
            number_key=invoice_number_key(invoice.number),
            allocations=[],
        )
    return {
        kind: len(data.get(kind, []))
        for kind in ("vendors", "purchase_orders", "receipts", "invoices")
    }


def deliver_late_receipts(path: Path, po_number: str | None = None) -> list[str]:
    """Record the receipts ``path`` marks ``arrives_later`` (those of
    ``po_number`` only, when given), as the warehouse would while a run
    waits for them; their receipt numbers."""
    late = [
        row
        for row in _read(path).get("receipts", [])
        if row.get("arrives_later", False) and po_number in (None, row.get("po_number"))
    ]
    _record_receipts(late, path)
    return [row["receipt_number"] for row in late]


def _record_receipts(rows: list[dict[str, Any]], path: Path) -> None:
    receipts = GoodsReceipts()
    for row in rows:
        receipt = _valid(GoodsReceipt, {k: v for k, v in row.items() if k != "arrives_later"}, path)
        receipts.record(
            idempotency_key=f"seed/receipt/{receipt.receipt_number}",
            receipt=receipt.model_dump(mode="json"),
        )


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SeedError(f"cannot read the seed file {path}: {err}") from None


def _valid(model: type[M], row: dict[str, Any], path: Path) -> M:
    try:
        return model.model_validate(row)
    except ValidationError as err:
        raise SeedError(f"{path}: a {model.__name__} row is invalid: {row}\n{err}") from None
