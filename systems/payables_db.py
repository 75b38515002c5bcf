"""The accounts payable systems' one SQLite file: vendor master, purchasing
(orders and goods receipts), the invoice ledger and payments.

One file because they are modules of one ERP: recording an invoice raises
the quantity invoiced on its PO lines, and a payment reads the vendor
master's account, each in the same transaction as its write. One schema for
all of them, because a thread keeps one connection per file and creates the
schema of whichever system opened it first.

Every write is keyed (systems.keyed): a table with ``idempotency_key`` holds
the SHA-256 of its payload beside it. Quantities and amounts are stored as
decimal text, never floats.
"""

from __future__ import annotations

from pathlib import Path

from systems.database import SqliteSystem, data_file

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS vendor_edits (
    edit_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    vendor_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    edited_by TEXT NOT NULL,
    edited_at TEXT NOT NULL DEFAULT {NOW}
);
CREATE TABLE IF NOT EXISTS vendors (
    vendor_id TEXT PRIMARY KEY,
    name TEXT NOT NULL,
    vat_id TEXT NOT NULL,
    iban TEXT NOT NULL,
    payment_terms_days INTEGER NOT NULL,
    edit_id INTEGER NOT NULL REFERENCES vendor_edits (edit_id)
);
CREATE TABLE IF NOT EXISTS purchase_orders (
    po_number TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    vendor_id TEXT NOT NULL,
    cost_centre TEXT NOT NULL,
    currency TEXT NOT NULL,
    created_at TEXT NOT NULL DEFAULT {NOW}
);
CREATE TABLE IF NOT EXISTS po_lines (
    po_number TEXT NOT NULL REFERENCES purchase_orders (po_number),
    line_no INTEGER NOT NULL,
    item TEXT NOT NULL,
    description TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('goods', 'services')),
    quantity TEXT NOT NULL,
    unit_price TEXT NOT NULL,
    quantity_invoiced TEXT NOT NULL,
    PRIMARY KEY (po_number, line_no)
);
CREATE TABLE IF NOT EXISTS goods_receipts (
    receipt_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    receipt_number TEXT NOT NULL,
    po_number TEXT NOT NULL,
    line_no INTEGER NOT NULL,
    quantity TEXT NOT NULL,
    received_at TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT {NOW},
    FOREIGN KEY (po_number, line_no) REFERENCES po_lines (po_number, line_no)
);
CREATE INDEX IF NOT EXISTS goods_receipts_by_po ON goods_receipts (po_number);
CREATE TABLE IF NOT EXISTS invoices (
    invoice_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    vendor_id TEXT NOT NULL,
    number TEXT NOT NULL,
    -- The number as duplicates compare it (activities.matching.invoice_number_key):
    -- the ledger refuses a vendor's number twice even if a check was skipped.
    number_key TEXT NOT NULL,
    issue_date TEXT NOT NULL,
    currency TEXT NOT NULL,
    total TEXT NOT NULL,
    po_number TEXT,
    payload TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT {NOW},
    UNIQUE (vendor_id, number_key)
);
CREATE TABLE IF NOT EXISTS payments (
    payment_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    -- An invoice is paid once, whatever key a second payment would carry.
    invoice_id INTEGER NOT NULL UNIQUE REFERENCES invoices (invoice_id),
    vendor_id TEXT NOT NULL,
    iban TEXT NOT NULL,
    amount TEXT NOT NULL,
    currency TEXT NOT NULL,
    released_by TEXT NOT NULL,
    paid_at TEXT NOT NULL DEFAULT {NOW}
);
"""


def default_path() -> Path:
    return data_file("BATON_PAYABLES_DB", "payables.sqlite")


class PayablesSystem(SqliteSystem):
    """Base of the AP systems: the file they share."""

    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA)
