"""Writes that happen once per idempotency key, and say so loudly when a key
comes back with other content.

A system of record stores, with every key, the SHA-256 of the canonical JSON
of what was written under it. The same key with the same content returns the
earlier write: a retried or resumed step finds what it wrote. The same key
with other content means two different writes claim to be one; keeping the
first and answering "done" (`ON CONFLICT DO NOTHING`) silently lost the
second, so it is a non-retryable IdempotencyConflict instead.
"""

from __future__ import annotations

import hashlib
import json
import sqlite3
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from temporalio.exceptions import ApplicationError


def canonical_json(payload: Any) -> str:
    """One text per content: sorted keys, no whitespace, so the hash does
    not depend on the order a caller built its dict in."""
    return json.dumps(
        payload, sort_keys=True, separators=(",", ":"), ensure_ascii=False, default=str
    )


def payload_sha256(payload: Any) -> str:
    return hashlib.sha256(canonical_json(payload).encode("utf-8")).hexdigest()


class IdempotencyConflict(ApplicationError):
    """A key reused with other content. An ApplicationError so that an
    activity raising it fails at once, with this message, instead of being
    retried into the same conflict until its timeout."""

    def __init__(self, *, system: str, key: str, stored: str, offered: str) -> None:
        super().__init__(
            f"{system}: idempotency key '{key}' was already used for other content "
            f"(stored sha256 {stored}, this write sha256 {offered}); nothing was written. "
            "A retried step must send exactly what it sent the first time; a different "
            "write needs its own key (another run, node visit or business key)",
            type="IdempotencyConflict",
            non_retryable=True,
        )
        self.key = key
        self.stored = stored
        self.offered = offered


@dataclass(frozen=True)
class Written:
    row_id: int
    created: bool = True


def write_once(
    db: sqlite3.Connection,
    *,
    system: str,
    table: str,
    key: str,
    payload: Any,
    values: Mapping[str, Any],
) -> Written:
    """Insert ``values`` into ``table`` under ``key`` with the hash of
    ``payload``, or return the row an earlier write with the same payload
    left there. ``table`` must have ``idempotency_key`` (unique) and
    ``payload_sha256`` columns; its name is the caller's constant, never input."""
    digest = payload_sha256(payload)
    columns = ["idempotency_key", "payload_sha256", *values]
    cursor = db.execute(
        f"INSERT INTO {table} ({', '.join(columns)}) VALUES ({', '.join('?' * len(columns))})"
        " ON CONFLICT (idempotency_key) DO NOTHING",
        (key, digest, *values.values()),
    )
    if cursor.rowcount == 1 and cursor.lastrowid is not None:
        return Written(row_id=cursor.lastrowid)
    row_id, stored = db.execute(
        f"SELECT rowid, payload_sha256 FROM {table} WHERE idempotency_key = ?", (key,)
    ).fetchone()
    if stored != digest:
        raise IdempotencyConflict(system=system, key=key, stored=stored, offered=digest)
    return Written(row_id=row_id, created=False)
