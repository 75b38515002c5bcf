"""The systems a new hire is provisioned in, on SQLite: the directory (with
the email account), the HRIS, payroll, laptop orders, building badges and
admin access. One table each, in ``onboarding.sqlite`` of the data dir
(BATON_ONBOARDING_DB names another file).

Every write carries the activity's idempotency key and the hash of what it
wrote (systems.keyed): a retried step finds its earlier record, the same key
with other content is an IdempotencyConflict. Undoing a step removes the
records its key wrote; finding none is "nothing to undo", not an error.

Systems misbehave. The ``faults`` table says how one does, for whoever sets
it (the tests do, through :class:`Faults`): ``fail`` answers "unavailable"
the next N times, or every time; ``slow`` takes the write but confirms it
only after some seconds, as a vendor confirms a laptop order.
"""

from __future__ import annotations

import json
import sqlite3
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any, get_args

from temporalio.exceptions import ApplicationError

from activities.onboarding_models import System
from systems.database import SqliteSystem, data_file
from systems.keyed import write_once

SYSTEMS: tuple[System, ...] = get_args(System)
LABELS: dict[System, str] = {
    "directory": "directory",
    "hris": "HRIS",
    "payroll": "payroll system",
    "laptop": "laptop ordering system",
    "badge": "building badge system",
    "admin_access": "access management system",
}
PREFIXES: dict[System, str] = {
    "directory": "ACC",
    "hris": "HR",
    "payroll": "PAY",
    "laptop": "LT",
    "badge": "BDG",
    "admin_access": "ADM",
}

_TABLE = """
CREATE TABLE IF NOT EXISTS {system} (
    record_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    employee_id TEXT NOT NULL,
    payload TEXT NOT NULL,
    created_at REAL NOT NULL,
    confirmed_at REAL NOT NULL
);
"""
_FAULTS = """
CREATE TABLE IF NOT EXISTS faults (
    system TEXT PRIMARY KEY,
    kind TEXT NOT NULL CHECK (kind IN ('fail', 'slow')),
    -- fail: how many more calls fail (NULL: every one); slow: unused
    remaining INTEGER,
    -- slow: how long a write takes to be confirmed
    seconds REAL NOT NULL DEFAULT 0
);
"""
# The keys whose writes were undone: a write that arrives after its undo (an
# attempt still running when its run was stopped) is refused, not kept.
_UNDONE = """
CREATE TABLE IF NOT EXISTS undone (
    system TEXT NOT NULL,
    idempotency_key TEXT NOT NULL,
    PRIMARY KEY (system, idempotency_key)
);
"""
SCHEMA = "".join(_TABLE.format(system=system) for system in SYSTEMS) + _FAULTS + _UNDONE


class WriteUndone(ApplicationError):
    """Not retryable: the write's key was undone before the write arrived."""

    def __init__(self, system: System, idempotency_key: str) -> None:
        super().__init__(
            f"the {LABELS[system]} refuses the write under {idempotency_key}: it was undone "
            "before it arrived (its run was stopped)",
            type="WriteUndone",
            non_retryable=True,
        )


class SystemUnavailable(ApplicationError):
    """Retryable: an outage that may pass before the step's attempts run out."""

    def __init__(self, system: System) -> None:
        super().__init__(f"the {LABELS[system]} is unavailable", type="SystemUnavailable")


@dataclass(frozen=True)
class Record:
    record_id: int
    reference: str
    created: bool


def default_path() -> Path:
    return data_file("BATON_ONBOARDING_DB", "onboarding.sqlite")


def _known(system: str) -> System:
    if system not in SYSTEMS:
        raise ValueError(f"unknown system '{system}'; the systems are: {', '.join(SYSTEMS)}")
    return system


def reference(system: System, record_id: int) -> str:
    return f"{PREFIXES[system]}-{record_id:05d}"


def _take_fault(db: sqlite3.Connection, system: System) -> float | None:
    """None when this call fails (counting it), else how many seconds the
    system takes to confirm a write."""
    fault = db.execute(
        "SELECT kind, remaining, seconds FROM faults WHERE system = ?", (system,)
    ).fetchone()
    if fault is None:
        return 0.0
    kind, remaining, seconds = fault
    if kind == "slow":
        return float(seconds)
    if remaining == 0:
        return 0.0
    if remaining is not None:
        db.execute("UPDATE faults SET remaining = remaining - 1 WHERE system = ?", (system,))
    return None


class OnboardingSystems(SqliteSystem):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA)

    def provision(
        self, system: System, *, idempotency_key: str, employee_id: str, record: dict[str, Any]
    ) -> Record:
        """Write ``record`` to ``system`` once under ``idempotency_key``;
        SystemUnavailable while a ``fail`` fault lasts."""
        table = _known(system)
        with self.transaction() as db:
            # Undone under the key, or under the key a business key extends.
            undone = db.execute(
                "SELECT 1 FROM undone WHERE system = ? AND (idempotency_key = ?"
                " OR substr(?, 1, length(idempotency_key) + 1) = idempotency_key || '/')",
                (table, idempotency_key, idempotency_key),
            ).fetchone()
            if undone is not None:
                raise WriteUndone(table, idempotency_key)
            delay = _take_fault(db, table)
            written = None
            if delay is not None:
                now = time.time()
                written = write_once(
                    db,
                    system=LABELS[table],
                    table=table,
                    key=idempotency_key,
                    payload=record,
                    values={
                        "employee_id": employee_id,
                        "payload": json.dumps(record, sort_keys=True),
                        "created_at": now,
                        "confirmed_at": now + delay,
                    },
                )
        # Raised once the transaction has committed the fault's count.
        if written is None:
            raise SystemUnavailable(table)
        return Record(
            record_id=written.row_id,
            reference=reference(table, written.row_id),
            created=written.created,
        )

    def confirmed(self, system: System, idempotency_key: str) -> bool:
        """Whether the system has confirmed the write under ``idempotency_key``."""
        table = _known(system)
        with self.transaction() as db:
            row = db.execute(
                f"SELECT confirmed_at FROM {table} WHERE idempotency_key = ?", (idempotency_key,)
            ).fetchone()
        return row is not None and row[0] <= time.time()

    def remove(self, system: System, idempotency_key: str) -> list[str]:
        """Remove the records written under ``idempotency_key`` (or under it
        and a business key): the references removed, none when there were none."""
        table = _known(system)
        with self.transaction() as db:
            rows = db.execute(
                f"SELECT record_id FROM {table} WHERE idempotency_key = ?"
                " OR substr(idempotency_key, 1, ?) = ?",
                (idempotency_key, len(idempotency_key) + 1, f"{idempotency_key}/"),
            ).fetchall()
            db.executemany(f"DELETE FROM {table} WHERE record_id = ?", rows)
            db.execute(
                "INSERT OR IGNORE INTO undone (system, idempotency_key) VALUES (?, ?)",
                (table, idempotency_key),
            )
        return [reference(table, record_id) for (record_id,) in rows]

    def records_of(self, employee_id: str) -> dict[System, list[dict[str, Any]]]:
        """What every system holds of ``employee_id``."""
        found: dict[System, list[dict[str, Any]]] = {}
        with self.transaction() as db:
            cursor = db.cursor()
            cursor.row_factory = sqlite3.Row
            for system in SYSTEMS:
                rows = cursor.execute(
                    f"SELECT * FROM {system} WHERE employee_id = ? ORDER BY record_id",
                    (employee_id,),
                ).fetchall()
                found[system] = [
                    {**dict(row), "reference": reference(system, row["record_id"])} for row in rows
                ]
        return found


class Faults:
    """How the onboarding systems misbehave, until cleared."""

    def __init__(self, systems: OnboardingSystems | None = None) -> None:
        self._systems = systems or OnboardingSystems()

    def fail(self, system: str, times: int | None = None) -> None:
        """``system`` is unavailable the next ``times`` calls; None: every call."""
        if times is not None and times < 1:
            raise ValueError(f"times={times}: give a count of 1 or more, or None for every call")
        self._set(system, "fail", times, 0.0)

    def slow(self, system: str, seconds: float) -> None:
        """``system`` confirms each write ``seconds`` after taking it."""
        if seconds <= 0:
            raise ValueError(f"seconds={seconds}: a slow system takes more than 0 seconds")
        self._set(system, "slow", None, seconds)

    def clear(self, system: str) -> None:
        with self._systems.transaction() as db:
            db.execute("DELETE FROM faults WHERE system = ?", (_known(system),))

    def _set(self, system: str, kind: str, remaining: int | None, seconds: float) -> None:
        with self._systems.transaction() as db:
            db.execute(
                "INSERT OR REPLACE INTO faults (system, kind, remaining, seconds)"
                " VALUES (?, ?, ?, ?)",
                (_known(system), kind, remaining, seconds),
            )
