"""Vendor master, purchase orders and goods receipts: what an invoice is
matched against. Every write is keyed and hashed (systems.keyed)."""

from __future__ import annotations

import json
import re
from typing import Any

from systems.keyed import Written, write_once
from systems.payables_db import PayablesSystem


def _plain(text: str) -> str:
    """Letters and digits, upper case: "NL 8541.22.907.B01" is NL854122907B01."""
    return re.sub(r"[^0-9A-Z]", "", text.upper())


class VendorMaster(PayablesSystem):
    """Vendors and every edit to them. A change of bank account is an edit
    like any other, by whoever holds that duty, and stays in the edits: it is
    never taken from an invoice."""

    def put(self, *, idempotency_key: str, vendor: dict[str, Any], edited_by: str) -> Written:
        """Create or change ``vendor`` (a Vendor as JSON), once per key."""
        with self.transaction() as db:
            written = write_once(
                db,
                system="vendor master",
                table="vendor_edits",
                key=idempotency_key,
                payload={"vendor": vendor, "edited_by": edited_by},
                values={
                    "vendor_id": vendor["vendor_id"],
                    "payload": json.dumps(vendor, sort_keys=True),
                    "edited_by": edited_by,
                },
            )
            if written.created:
                db.execute(
                    "INSERT INTO vendors (vendor_id, name, vat_id, iban, payment_terms_days,"
                    " edit_id) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (vendor_id) DO UPDATE SET"
                    " name = excluded.name, vat_id = excluded.vat_id, iban = excluded.iban,"
                    " payment_terms_days = excluded.payment_terms_days,"
                    " edit_id = excluded.edit_id",
                    (
                        vendor["vendor_id"],
                        vendor["name"],
                        vendor["vat_id"],
                        vendor["iban"],
                        vendor["payment_terms_days"],
                        written.row_id,
                    ),
                )
        return written

    def get(self, vendor_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM vendors WHERE vendor_id = ?", (vendor_id,))
        return rows[0] if rows else None

    def find(self, *, vat_id: str | None = None, name: str | None = None) -> dict[str, Any] | None:
        """The vendor with this VAT id (however it is punctuated), else the
        one with exactly this name (case aside); None when neither fits."""
        vendors = self._rows("SELECT * FROM vendors ORDER BY vendor_id")
        if vat_id:
            found = [v for v in vendors if _plain(v["vat_id"]) == _plain(vat_id)]
            if found:
                return found[0]
        if name:
            found = [v for v in vendors if v["name"].casefold() == name.strip().casefold()]
            if len(found) == 1:
                return found[0]
        return None

    def edits(self, vendor_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT edit_id, idempotency_key, edited_by, edited_at, payload FROM vendor_edits"
            " WHERE vendor_id = ? ORDER BY edit_id",
            (vendor_id,),
        )


class PurchaseOrders(PayablesSystem):
    def create(self, *, idempotency_key: str, order: dict[str, Any]) -> Written:
        """Create ``order`` (a PurchaseOrder as JSON) with its lines, once per key."""
        with self.transaction() as db:
            written = write_once(
                db,
                system="purchasing",
                table="purchase_orders",
                key=idempotency_key,
                payload=order,
                values={
                    "po_number": order["po_number"],
                    "vendor_id": order["vendor_id"],
                    "cost_centre": order["cost_centre"],
                    "currency": order["currency"],
                },
            )
            if written.created:
                db.executemany(
                    "INSERT INTO po_lines (po_number, line_no, item, description, kind,"
                    " quantity, unit_price, quantity_invoiced) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
                    [
                        (
                            order["po_number"],
                            line["line_no"],
                            line["item"],
                            line.get("description", ""),
                            line["kind"],
                            str(line["quantity"]),
                            str(line["unit_price"]),
                            str(line.get("quantity_invoiced", "0")),
                        )
                        for line in order["lines"]
                    ],
                )
        return written

    def get(self, po_number: str) -> dict[str, Any] | None:
        """The order with its lines, each with the quantity invoiced so far."""
        orders = self._rows("SELECT * FROM purchase_orders WHERE po_number = ?", (po_number,))
        if not orders:
            return None
        lines = self._rows(
            "SELECT line_no, item, description, kind, quantity, unit_price, quantity_invoiced"
            " FROM po_lines WHERE po_number = ? ORDER BY line_no",
            (po_number,),
        )
        return {**orders[0], "lines": lines}


class GoodsReceipts(PayablesSystem):
    def record(self, *, idempotency_key: str, receipt: dict[str, Any]) -> Written:
        """Record ``receipt`` (a GoodsReceipt as JSON), once per key. A
        receipt for a line no order has is refused: it would match nothing."""
        with self.transaction() as db:
            line = db.execute(
                "SELECT 1 FROM po_lines WHERE po_number = ? AND line_no = ?",
                (receipt["po_number"], receipt["line_no"]),
            ).fetchone()
            if line is None:
                raise LookupError(
                    f"goods receipt {receipt['receipt_number']}: purchase order "
                    f"{receipt['po_number']} has no line {receipt['line_no']}"
                )
            return write_once(
                db,
                system="goods receipts",
                table="goods_receipts",
                key=idempotency_key,
                payload=receipt,
                values={
                    "receipt_number": receipt["receipt_number"],
                    "po_number": receipt["po_number"],
                    "line_no": receipt["line_no"],
                    "quantity": str(receipt["quantity"]),
                    "received_at": str(receipt["received_at"]),
                },
            )

    def for_order(self, po_number: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT receipt_number, po_number, line_no, quantity, received_at FROM goods_receipts"
            " WHERE po_number = ? ORDER BY receipt_id",
            (po_number,),
        )
