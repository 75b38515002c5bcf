"""Notices to reviewers (SLA reminders, escalations, holds) on SQLite: the
outbox that a mail or chat relay would read.

Each notice carries an idempotency key, so a retried activity sends once.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from systems.database import SqliteSystem, data_file

SCHEMA = """
CREATE TABLE IF NOT EXISTS notices (
    notice_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    workflow_id TEXT NOT NULL,
    process TEXT NOT NULL,
    gate TEXT NOT NULL,
    kind TEXT NOT NULL,
    roles TEXT NOT NULL,
    due_at TEXT,
    queued_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
)
"""


def default_path() -> Path:
    return data_file("BATON_OUTBOX_DB", "outbox.sqlite")


class Outbox(SqliteSystem):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA)

    def queue(self, *, idempotency_key: str, notice: dict[str, Any]) -> tuple[int, bool]:
        """(notice id, whether this call queued it)."""
        with self.transaction() as db:
            cursor = db.execute(
                "INSERT INTO notices (idempotency_key, workflow_id, process, gate, kind, roles,"
                " due_at) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (idempotency_key) DO NOTHING",
                (
                    idempotency_key,
                    notice["workflow_id"],
                    notice["process"],
                    notice["gate"],
                    notice["kind"],
                    json.dumps(notice["roles"]),
                    notice.get("due_at"),
                ),
            )
            created = cursor.rowcount == 1
            row = db.execute(
                "SELECT notice_id FROM notices WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        return row[0], created

    def notices(self, workflow_id: str) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM notices WHERE workflow_id = ? ORDER BY notice_id", (workflow_id,)
        )
        return [{**row, "roles": json.loads(row["roles"])} for row in rows]
