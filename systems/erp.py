"""A small ERP document register on SQLite: the system of record that
document intake writes to.

Every write carries an idempotency key and the hash of its document;
writing the same key with the same document again returns the first entry
instead of adding a second one, so a retried or resumed activity never posts
twice, and the same key with another document is an IdempotencyConflict
(systems.keyed), never a silent "done".
"""

from __future__ import annotations

import json
import sqlite3
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
    entered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
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


def _migrate(db: sqlite3.Connection) -> None:
    """Files written before entries carried a hash get the column, filled
    from each entry's stored document: a key an in-flight run wrote then is
    compared like any other when its step is retried."""

    def backfill(db: sqlite3.Connection) -> None:
        rows = db.execute("SELECT entry_id, payload FROM documents").fetchall()
        db.executemany(
            "UPDATE documents SET payload_sha256 = ? WHERE entry_id = ?",
            [(payload_sha256(json.loads(payload)), entry_id) for entry_id, payload in rows],
        )

    add_column(db, "documents", "payload_sha256", "TEXT", backfill)


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
                    "doc_type": document.get("doc_type"),
                    "number": document.get("number"),
                    "party": document.get("party"),
                    "currency": document.get("currency"),
                    "total": None if document.get("total") is None else str(document["total"]),
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
        with self.transaction() as db:
            cursor = db.cursor()
            cursor.row_factory = sqlite3.Row
            rows = cursor.execute(
                "SELECT documents.*, voids.voided_at, voids.reason AS void_reason"
                " FROM documents LEFT JOIN voids USING (entry_id)"
                " WHERE substr(idempotency_key, 1, ?) = ? ORDER BY entry_id",
                (len(key_prefix), key_prefix),
            ).fetchall()
        return [dict(row) for row in rows]
