"""The invoice ledger and payments: where an invoice is recorded against
its purchase order, and paid exactly once, to the vendor master's account."""

from __future__ import annotations

import json
import sqlite3
from decimal import Decimal
from typing import Any

from temporalio.exceptions import ApplicationError

from systems.keyed import Written, write_once
from systems.payables_db import PayablesSystem


class InvoiceLedger(PayablesSystem):
    def record(
        self,
        *,
        idempotency_key: str,
        invoice: dict[str, Any],
        number_key: str,
        allocations: list[dict[str, Any]],
    ) -> Written:
        """Record ``invoice`` (a PayableInvoice as JSON) once per key, and add
        each allocation (``line_no``, ``quantity``; negative for a credit) to
        the quantity invoiced on its line of the invoice's purchase order, in
        the same transaction. A vendor's ``number_key`` already in the ledger
        under another key is a DuplicateInvoice. An allocation's
        ``invoiced_before`` is what the match saw on the line: if another
        invoice was billed on it since, nothing is recorded (StaleMatch), so
        two invoices matched at once cannot both take what was open."""
        with self.transaction() as db:
            try:
                written = write_once(
                    db,
                    system="invoice ledger",
                    table="invoices",
                    key=idempotency_key,
                    payload={"invoice": invoice, "allocations": allocations},
                    values={
                        "vendor_id": invoice["vendor_id"],
                        "number": invoice["number"],
                        "number_key": number_key,
                        "issue_date": str(invoice["issue_date"]),
                        "currency": invoice["currency"],
                        "total": str(invoice["total"]),
                        "po_number": invoice.get("po_number"),
                        "payload": json.dumps(invoice, sort_keys=True),
                    },
                )
            except sqlite3.IntegrityError:
                earlier = db.execute(
                    "SELECT invoice_id, number FROM invoices"
                    " WHERE vendor_id = ? AND number_key = ?",
                    (invoice["vendor_id"], number_key),
                ).fetchone()
                if earlier is None:
                    raise
                raise ApplicationError(
                    f"invoice {invoice['number']} of {invoice['vendor_id']} is already in the "
                    f"ledger as #{earlier[0]} ({earlier[1]}); nothing was recorded. A corrected "
                    "invoice needs a new number, or the earlier one must be reversed first",
                    type="DuplicateInvoice",
                    non_retryable=True,
                ) from None
            if written.created:
                for allocation in allocations:
                    _add_invoiced(db, invoice["po_number"], allocation)
        return written

    def for_vendor(self, vendor_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT invoice_id, idempotency_key, vendor_id, number, issue_date, currency, total,"
            " po_number FROM invoices WHERE vendor_id = ? ORDER BY invoice_id",
            (vendor_id,),
        )

    def get(self, invoice_id: int) -> dict[str, Any] | None:
        rows = self._rows(
            "SELECT invoice_id, vendor_id, number, issue_date, currency, total, po_number"
            " FROM invoices WHERE invoice_id = ?",
            (invoice_id,),
        )
        return rows[0] if rows else None


def _add_invoiced(db: sqlite3.Connection, po_number: str, allocation: dict[str, Any]) -> None:
    row = db.execute(
        "SELECT quantity_invoiced FROM po_lines WHERE po_number = ? AND line_no = ?",
        (po_number, allocation["line_no"]),
    ).fetchone()
    if row is None:
        raise LookupError(f"purchase order {po_number} has no line {allocation['line_no']}")
    now = Decimal(row[0])
    seen = allocation.get("invoiced_before")
    if seen is not None and now != Decimal(str(seen)):
        raise ApplicationError(
            f"line {allocation['line_no']} of {po_number} was matched with {seen} invoiced "
            f"before, but {now} is invoiced now: another invoice billed it since. Nothing was "
            "recorded; match this invoice again",
            type="StaleMatch",
            non_retryable=True,
        )
    # Decimal text, added in Python: SQLite would add the two as floats.
    total = now + Decimal(str(allocation["quantity"]))
    db.execute(
        "UPDATE po_lines SET quantity_invoiced = ? WHERE po_number = ? AND line_no = ?",
        (str(total), po_number, allocation["line_no"]),
    )


class Payments(PayablesSystem):
    def pay(self, *, idempotency_key: str, invoice_id: int, released_by: str) -> Written:
        """Pay the recorded invoice's total, in its currency, to the bank
        account the vendor master holds now: the caller names no account and
        no amount, so neither can come from the invoice's text. Once per key;
        an invoice already paid under another key is AlreadyPaid."""
        with self.transaction() as db:
            invoice = db.execute(
                "SELECT vendor_id, number, total, currency FROM invoices WHERE invoice_id = ?",
                (invoice_id,),
            ).fetchone()
            if invoice is None:
                raise ApplicationError(
                    f"the ledger has no invoice #{invoice_id} to pay",
                    type="UnknownInvoice",
                    non_retryable=True,
                )
            vendor_id, number, total, currency = invoice
            if Decimal(total) <= 0:
                raise ApplicationError(
                    f"invoice #{invoice_id} ({number}) totals {total}: a credit note is set "
                    "off against later invoices, never paid out",
                    type="NotPayable",
                    non_retryable=True,
                )
            vendor = db.execute(
                "SELECT iban FROM vendors WHERE vendor_id = ?", (vendor_id,)
            ).fetchone()
            if vendor is None:
                raise ApplicationError(
                    f"vendor {vendor_id} of invoice #{invoice_id} is not in the vendor master",
                    type="UnknownVendor",
                    non_retryable=True,
                )
            try:
                return write_once(
                    db,
                    system="payments",
                    table="payments",
                    key=idempotency_key,
                    payload={"invoice_id": invoice_id, "released_by": released_by},
                    values={
                        "invoice_id": invoice_id,
                        "vendor_id": vendor_id,
                        "iban": vendor[0],
                        "amount": total,
                        "currency": currency,
                        "released_by": released_by,
                    },
                )
            except sqlite3.IntegrityError:
                earlier = db.execute(
                    "SELECT payment_id, idempotency_key FROM payments WHERE invoice_id = ?",
                    (invoice_id,),
                ).fetchone()
                if earlier is None:
                    raise
                raise ApplicationError(
                    f"invoice #{invoice_id} ({number}) was already paid: payment "
                    f"#{earlier[0]} under key '{earlier[1]}'; nothing was paid again",
                    type="AlreadyPaid",
                    non_retryable=True,
                ) from None

    def for_invoice(self, invoice_id: int) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM payments WHERE invoice_id = ? ORDER BY payment_id", (invoice_id,)
        )
