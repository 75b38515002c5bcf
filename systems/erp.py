"""A small ERP document register on SQLite: the system of record that
document intake writes to.

Every write carries an idempotency key and the hash of its document;
writing the same key with the same document again returns the first entry
instead of adding a second one, so a retried or resumed activity never posts
twice, and the same key with another document is an IdempotencyConflict
(systems.keyed), never a silent "done".

Each entry keeps, besides the document, the fields a duplicate check looks
it up by (:meth:`DocumentRegister.for_party`): its party (and that party as
compared, :func:`party_key`), number, issue date, currency and total, and
the purchase order it refers to.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from systems.database import SqliteSystem, add_column, data_file
from systems.keyed import payload_sha256, write_once

SCHEMA = """
CREATE TABLE IF NOT EXISTS documents (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    -- NULL only between adding the column to an older file and filling it (_migrate).
    payload_sha256 TEXT,
    doc_type TEXT NOT NULL,
    number TEXT,
    party TEXT,
    currency TEXT,
    total TEXT,
    payload TEXT NOT NULL,
    entered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now')),
    -- Added later, after entered_at as in an older file (_migrate fills them there).
    po_number TEXT,
    issue_date TEXT,
    party_key TEXT
);
CREATE TABLE IF NOT EXISTS voids (
    entry_id INTEGER PRIMARY KEY REFERENCES documents (entry_id),
    reason TEXT NOT NULL,
    voided_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


@dataclass(frozen=True)
class Entry:
    entry_id: int
    idempotency_key: str
    created: bool


def party_key(party: str | None) -> str | None:
    """A party's name as entries are compared by: case and spacing aside
    ("ACME  Industrial" is "acme industrial")."""
    if party is None:
        return None
    return " ".join(party.split()).casefold() or None


def _columns(document: dict[str, Any]) -> dict[str, Any]:
    """The columns an entry keeps of its document, besides the document."""
    total = document.get("total")
    return {
        "doc_type": document.get("doc_type"),
        "number": document.get("number"),
        "party": document.get("party"),
        "currency": document.get("currency"),
        "total": None if total is None else str(total),
        "po_number": document.get("po_number"),
        "issue_date": document.get("issue_date"),
        "party_key": party_key(document.get("party")),
    }


# Columns an older file lacks, each filled from every entry's stored document.
_ADDED_FROM_DOCUMENT = ("po_number", "issue_date", "party_key")


def _migrate(db: sqlite3.Connection) -> None:
    """Files written before entries carried a hash get the column, filled
    from each entry's stored document: a key an in-flight run wrote then is
    compared like any other when its step is retried. Files written before
    the PO number, issue date and party key get those the same way, so a
    duplicate check finds the entries made before it existed."""

    def backfill(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT entry_id, payload FROM documents").fetchall()
        db.executemany(
            "UPDATE documents SET payload_sha256 = ? WHERE entry_id = ?",
            [(payload_sha256(json.loads(payload)), entry_id) for entry_id, payload in rows],
        )

    add_column(db, "documents", "payload_sha256", "TEXT", backfill)
    for column in _ADDED_FROM_DOCUMENT:
        add_column(db, "documents", column, "TEXT", _backfill_from_document(column))
    with db:
        db.execute(
            "CREATE INDEX IF NOT EXISTS documents_by_party ON documents (party_key, doc_type)"
        )


def _backfill_from_document(column: str) -> Callable[[sqlite3.Connection], None]:
    def backfill(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT entry_id, payload FROM documents").fetchall()
        db.executemany(
            f"UPDATE documents SET {column} = ? WHERE entry_id = ?",
            [(_columns(json.loads(payload))[column], entry_id) for entry_id, payload in rows],
        )

    return backfill


def default_path() -> Path:
    return data_file("BATON_ERP_DB", "erp.sqlite")


class DocumentRegister(SqliteSystem):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA, _migrate)

    def enter(self, *, idempotency_key: str, document: dict[str, Any]) -> Entry:
        """Enter ``document`` once under ``idempotency_key``; raises
        IdempotencyConflict when the key already holds another document."""
        with self.transaction() as db:
            written = write_once(
                db,
                system="ERP document register",
                table="documents",
                key=idempotency_key,
                payload=document,
                values={
                    **_columns(document),
                    "payload": json.dumps(document, sort_keys=True, default=str),
                },
            )
        return Entry(
            entry_id=written.row_id, idempotency_key=idempotency_key, created=written.created
        )

    def void(self, entry_id: int, reason: str) -> str:
        """Void an entry (entries are never deleted); voiding it again keeps
        the first void. Returns when it was voided."""
        with self.transaction() as db:
            if db.execute("SELECT 1 FROM documents WHERE entry_id = ?", (entry_id,)).fetchone():
                db.execute(
                    "INSERT INTO voids (entry_id, reason) VALUES (?, ?)"
                    " ON CONFLICT (entry_id) DO NOTHING",
                    (entry_id, reason),
                )
            row = db.execute(
                "SELECT voided_at FROM voids WHERE entry_id = ?", (entry_id,)
            ).fetchone()
        if row is None:
            raise LookupError(f"the register has no entry {entry_id} to void")
        return str(row[0])

    def entries(self, key_prefix: str = "") -> list[dict[str, Any]]:
        """Entries whose key starts with ``key_prefix``, with ``voided_at``
        set on those a stopped run undid."""
        return self._rows(
            "SELECT documents.*, voids.voided_at, voids.reason AS void_reason"
            " FROM documents LEFT JOIN voids USING (entry_id)"
            " WHERE substr(idempotency_key, 1, ?) = ? ORDER BY entry_id",
            (len(key_prefix), key_prefix),
        )

    def for_party(self, party: str, doc_type: str) -> list[dict[str, Any]]:
        """The entries of ``party`` (as :func:`party_key` compares it) and
        ``doc_type`` that are in force (not voided), oldest first: what a
        new document of theirs is checked against for duplicates."""
        key = party_key(party)
        if key is None:
            return []
        return self._rows(
            "SELECT entry_id, idempotency_key, doc_type, number, po_number, party,"
            " issue_date, currency, total, entered_at"
            " FROM documents LEFT JOIN voids USING (entry_id)"
            " WHERE party_key = ? AND doc_type = ? AND voids.entry_id IS NULL"
            " ORDER BY entry_id",
            (key, doc_type),
        )
