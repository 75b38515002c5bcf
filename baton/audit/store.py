"""Append-only audit store: one hash chain per workflow_id, in SQLite or PostgreSQL.

Appends are idempotent by event_id, so an interceptor may re-send a batch after a retry or
a replay without duplicating anything. Seq and prev_hash are assigned inside one write
transaction that holds the chain head, which is what makes concurrent appenders (threads or
processes) produce one gap-free chain. A connection is opened per operation: the store is
then safe to share between threads and cheap to hand to forked processes.

A record (schema version 3) is kept once: its envelope in columns, the rest as JSON, and
each large value once for the whole store in `audit_values`, keyed by its SHA-256, with a
row in `audit_refs` for every chain that refers to it, so that a purge can tell which values
no remaining chain needs. Readers get the values in full.
"""

from __future__ import annotations

import json
import random
import re
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from baton.audit.anchor import StoredChain, Tombstone
from baton.audit.events import (
    AuditEvent,
    AuditRecord,
    event_content,
    format_timestamp,
    referenced_in,
    references,
    sealed,
    thawer,
)
from baton.audit.retention import RetentionOverride
from baton.audit.verify import (
    COLUMNS,
    ChainHead,
    Problem,
    StoredRow,
    VerifyReport,
    summarise,
    verify_chain,
)

if TYPE_CHECKING:
    import psycopg

__all__ = [
    "AuditConflict",
    "AuditStore",
    "AuditStoreMissing",
    "PostgresAuditStore",
    "Problem",
    "RetentionError",
    "SqliteAuditStore",
    "VerifyReport",
    "open_store",
]

Clock = Callable[[], datetime]

_BATCH = 500  # stays well under SQLite's bound-parameter limit


class RetentionError(Exception):
    """A purge would delete records still inside the configured minimum retention."""


class AuditConflict(Exception):
    """An event id already stored came again with other content: two writers disagree
    about what happened (a code change that reuses ids, a forger). Nothing is written."""


class AuditStoreMissing(LookupError):
    """No audit store where the URL points: a reader never creates one."""


class AuditStore(Protocol):
    def append(self, events: Sequence[AuditEvent], *, retention_days: int) -> int: ...

    def records(self, workflow_id: str) -> list[AuditRecord]: ...

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]: ...

    def verify(self, workflow_id: str | None = None) -> VerifyReport: ...

    def heads(self, workflow_ids: Collection[str] | None = None) -> dict[str, ChainHead]: ...

    def chains(self, workflow_id: str | None = None) -> dict[str, StoredChain]: ...

    def purge(
        self,
        before: datetime,
        *,
        min_retention_days: int,
        now: datetime,
        tombstone: Callable[[str, ChainHead], Tombstone],
    ) -> int: ...

    def hold(self, workflow_id: str, *, by: str, reason: str, now: datetime) -> None: ...

    def release(self, workflow_id: str) -> bool: ...

    def record_retention_override(self, override: RetentionOverride) -> None: ...

    def retention_overrides(self) -> dict[str, str]: ...


def open_store(url: str, *, clock: Clock | None = None) -> AuditStore:
    """`sqlite:///relative.db`, `sqlite:////absolute/path.db` (SQLAlchemy's convention), or a
    `postgresql://` / `postgres://` DSN, passed to psycopg as is."""
    scheme, sep, rest = url.partition("://")
    if sep and scheme == "sqlite":
        if not rest.startswith("/") or rest == "/":
            raise ValueError(f"expected sqlite:///path.db, got {url!r}")
        return SqliteAuditStore(rest[1:], clock=clock)
    if sep and scheme in ("postgresql", "postgres"):
        return PostgresAuditStore(url, clock=clock)
    raise ValueError(f"unsupported audit store URL {url!r}: use sqlite:/// or postgresql://")


class _Tx(Protocol):
    """What the shared logic needs from a transaction; SQL uses `?` placeholders."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int: ...

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None: ...


_ROW_COLUMNS = ", ".join(("seq", *COLUMNS, "record_json"))
_INSERT = (
    f"INSERT INTO audit_records ({_ROW_COLUMNS}) VALUES ({', '.join('?' * (len(COLUMNS) + 2))})"
    " ON CONFLICT (event_id) DO NOTHING"
)
_CHAIN_AGE = (
    "SELECT workflow_id FROM audit_records GROUP BY workflow_id"
    " HAVING MAX(occurred_at) < ? AND MAX(recorded_at) < ? AND MAX(retain_until) <= ?"
)
_INSERT_VALUE = (
    "INSERT INTO audit_values (sha256, value_json) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING"
)
_INSERT_REF = (
    "INSERT INTO audit_refs (sha256, workflow_id) VALUES (?, ?)"
    " ON CONFLICT (sha256, workflow_id) DO NOTHING"
)
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _referred_by(record_json: str) -> set[str]:
    """The values a stored record refers to itself (not through other values)."""
    try:
        doc = json.loads(record_json) if '"$' in record_json else None
    except ValueError:
        return set()
    if not isinstance(doc, dict) or doc.get("schema_version", 1) < 3:
        return set()
    return {d for _, d in references(doc.get("data"))}


class _SqlAuditStore(ABC):
    """Everything but connections, DDL and time conversion is shared by both databases."""

    _LOCK_SUFFIX = ""

    def __init__(self, *, clock: Clock | None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
        self._values_made = False
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[_Tx]: ...

    @abstractmethod
    def _create_schema(self) -> None: ...

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    # -- writing ---------------------------------------------------------------------------

    def append(self, events: Sequence[AuditEvent], *, retention_days: int) -> int:
        """Store the events not stored yet; returns how many were new."""
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if not events:
            return 0
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            heads = self._lock_heads(tx, sorted({event.workflow_id for event in events}))
            stored = self._stored_events(tx, [event.event_id for event in events])
            for event in events:
                if event.event_id in stored and stored[event.event_id] != event_content(event):
                    raise AuditConflict(
                        f"event {event.event_id} is stored already with other content: "
                        "a writer reuses an id for another event; nothing of this batch was "
                        "written"
                    )
            seen = set(stored)
            recorded_at = self._clock()
            retain_until = recorded_at + timedelta(days=retention_days)
            added = 0
            moved: dict[str, ChainHead] = {}
            values: dict[str, str] = {}
            refs: set[tuple[str, str]] = set()
            for event in events:
                if event.event_id in seen:
                    continue
                seen.add(event.event_id)
                head = heads[event.workflow_id]
                record = sealed(
                    event,
                    seq=head.seq + 1,
                    prev_hash=head.hash,
                    recorded_at=recorded_at,
                    retain_until=retain_until,
                )
                # Zero rows: the id was appended concurrently under another workflow_id.
                if tx.run(_INSERT, self._row_params(record.record, record.stored)):
                    heads[event.workflow_id] = ChainHead(
                        record.record.seq, record.record.record_hash
                    )
                    moved[event.workflow_id] = heads[event.workflow_id]
                    added += 1
                    values.update(record.values)
                    refs.update((digest, event.workflow_id) for digest in record.values)
            # Values before references: a purge on PostgreSQL locks the values table, then
            # reads the references, so it waits for this transaction or this one for it.
            tx.many(_INSERT_VALUE, [(bytes.fromhex(d), text) for d, text in values.items()])
            tx.many(_INSERT_REF, [(bytes.fromhex(d), w) for d, w in sorted(refs)])
            for workflow_id, head in moved.items():
                tx.run(
                    "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE workflow_id = ?",
                    (head.seq, head.hash, workflow_id),
                )
        return added

    def _lock_heads(self, tx: _Tx, workflow_ids: Sequence[str]) -> dict[str, ChainHead]:
        # Sorted order everywhere, so two appenders locking several chains cannot deadlock.
        heads: dict[str, ChainHead] = {}
        for workflow_id in workflow_ids:
            while workflow_id not in heads:  # a concurrent purge may delete the fresh head
                tx.run(
                    "INSERT INTO audit_chains (workflow_id, head_seq, head_hash)"
                    " VALUES (?, 0, '') ON CONFLICT (workflow_id) DO NOTHING",
                    (workflow_id,),
                )
                found = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?"
                    + self._LOCK_SUFFIX,
                    (workflow_id,),
                )
                if found:
                    heads[workflow_id] = ChainHead(int(found[0][0]), str(found[0][1]))
        return heads

    def _stored_events(self, tx: _Tx, event_ids: Sequence[str]) -> dict[str, str]:
        """The ids among ``event_ids`` already stored, with their content as compared."""
        unique = sorted(set(event_ids))
        stored: dict[str, str] = {}
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ", ".join("?" * len(chunk))
            found = tx.rows(
                f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE event_id IN ({marks})", chunk
            )
            stored.update((r.event_id, event_content(r)) for r in self._read(tx, found))
        return stored

    def _row_params(self, record: AuditRecord, stored: str) -> list[object]:
        values: list[object] = [record.seq]
        for column in COLUMNS:
            value = getattr(record, column)
            values.append(self._to_db_time(value) if isinstance(value, datetime) else value)
        values.append(stored)
        return values

    def purge(
        self,
        before: datetime,
        *,
        min_retention_days: int,
        now: datetime,
        tombstone: Callable[[str, ChainHead], Tombstone],
    ) -> int:
        """Delete whole chains last written before `before`; returns records removed.

        A chain is kept while any of its records is inside its own retain_until, even past
        `before`: the retention an event was appended with is a promise made to someone. A
        chain under legal hold is kept whatever its age. Each chain deleted leaves the
        signed tombstone that ``tombstone`` makes (what, up to which record, by whom, why):
        the database refuses the deletion without one.
        """
        if min_retention_days < 0:
            raise ValueError("min_retention_days must not be negative")
        earliest = now - timedelta(days=min_retention_days)
        if before > earliest:
            raise RetentionError(
                f"refusing to purge records before {format_timestamp(before)}: the earliest "
                f"allowed cutoff is {format_timestamp(earliest)} (now minus the configured "
                f"minimum retention of {min_retention_days} days)"
            )
        self._ensure_schema()
        params = (self._to_db_time(before), self._to_db_time(before), self._to_db_time(now))
        with self._transaction(write=True) as tx:
            candidates = sorted(str(row[0]) for row in tx.rows(_CHAIN_AGE, params))
            self._lock_existing_heads(tx, candidates)
            # Re-read under the locks: an append may have extended a chain meanwhile.
            still_old = {str(row[0]) for row in tx.rows(_CHAIN_AGE, params)}
            held = {str(row[0]) for row in tx.rows("SELECT workflow_id FROM audit_holds")}
            removed = 0
            released: set[str] = set()
            for workflow_id in (w for w in candidates if w in still_old and w not in held):
                (found,) = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?",
                    (workflow_id,),
                )
                stone = tombstone(workflow_id, ChainHead(int(found[0]), str(found[1])))
                tx.run(
                    "INSERT INTO audit_tombstones (workflow_id, tombstone_json) VALUES (?, ?)",
                    (workflow_id, stone.model_dump_json()),
                )
                released |= self._release_values(tx, workflow_id)
                removed += tx.run("DELETE FROM audit_records WHERE workflow_id = ?", (workflow_id,))
                tx.run("DELETE FROM audit_chains WHERE workflow_id = ?", (workflow_id,))
            self._drop_unreferenced(tx, released)
        return removed

    def hold(self, workflow_id: str, *, by: str, reason: str, now: datetime) -> None:
        """Put a run's records under legal hold: no purge deletes them until released."""
        if not reason.strip():
            raise ValueError("a legal hold needs a reason (the matter it is kept for)")
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            if not tx.rows("SELECT 1 FROM audit_chains WHERE workflow_id = ?", (workflow_id,)):
                raise LookupError(f"no audit records for run '{workflow_id}' to hold")
            tx.run(
                "INSERT INTO audit_holds (workflow_id, held_at, held_by, reason) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
                (workflow_id, format_timestamp(now), by, reason),
            )

    def release(self, workflow_id: str) -> bool:
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            return bool(tx.run("DELETE FROM audit_holds WHERE workflow_id = ?", (workflow_id,)))

    def holds(self) -> dict[str, tuple[str, str, str]]:
        """Runs under legal hold: (held at, by whom, why)."""
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows("SELECT workflow_id, held_at, held_by, reason FROM audit_holds")
        return {str(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in found}

    def tombstones(self) -> dict[str, Tombstone]:
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows("SELECT workflow_id, tombstone_json FROM audit_tombstones")
        return {str(r[0]): Tombstone.model_validate_json(str(r[1])) for r in found}

    def record_retention_override(self, override: RetentionOverride) -> None:
        """Keep a retention override (checked and countersigned by the caller: see
        baton.audit.anchoring). Append-only: the database refuses to change or delete one."""
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            tx.run(
                "INSERT INTO audit_overrides (override_id, recorded_at, override_json)"
                " VALUES (?, ?, ?)",
                (override.override_id, override.recorded_at, override.model_dump_json()),
            )

    def retention_overrides(self) -> dict[str, str]:
        """Every retention override as stored, by id: the JSON as it is, for whoever
        checks it to say what is wrong with a row that is no longer an override."""
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            if _OVERRIDES not in self._table_names(tx):
                return {}
            found = tx.rows("SELECT override_id, override_json FROM audit_overrides")
        return {str(r[0]): str(r[1]) for r in found}

    def _lock_existing_heads(self, tx: _Tx, workflow_ids: Sequence[str]) -> None:
        for workflow_id in workflow_ids:
            tx.rows(
                "SELECT head_seq FROM audit_chains WHERE workflow_id = ?" + self._LOCK_SUFFIX,
                (workflow_id,),
            )

    # -- reading ---------------------------------------------------------------------------

    def records(self, workflow_id: str) -> list[AuditRecord]:
        """A chain's records in order, each with its values in full."""
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows(
                f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE workflow_id = ? ORDER BY seq",
                (workflow_id,),
            )
            return self._read(tx, found)

    def _read(self, tx: _Tx, rows: Sequence[tuple[Any, ...]]) -> list[AuditRecord]:
        """Records from their rows (``_ROW_COLUMNS``), values in full."""
        stored = []
        for row in rows:
            doc: dict[str, Any] = {"seq": row[0], **dict(zip(COLUMNS, row[1:-1], strict=True))}
            text = str(row[-1])
            # The JSON has the last word: a record stored before version 3 holds it all.
            doc.update(json.loads(text))
            # Canonical JSON prints "$" as it is: without one, nothing refers or is escaped.
            thawed = doc.get("schema_version", 1) >= 3 and '"$' in text
            stored.append((doc, text if thawed else None))
        values = self._values(tx, {d for _, text in stored if text for d in referenced_in(text)})
        thaw = thawer(values)
        return [
            AuditRecord.model_validate(doc if text is None else {**doc, **thaw(text)})
            for doc, text in stored
        ]

    def _values(self, tx: _Tx, digests: Collection[str]) -> dict[str, str]:
        """The stored text of the values ``digests`` name and of those they hold in turn,
        by SHA-256; a value the store does not have is left out."""
        found: dict[str, str] = {}
        wanted = {d for d in digests if _DIGEST.fullmatch(d)}
        if not wanted or not self._values_table(tx):
            return found
        asked: set[str] = set()
        while wanted:
            asked |= wanted
            batch = sorted(wanted)
            wanted = set()
            for start in range(0, len(batch), _BATCH):
                chunk = batch[start : start + _BATCH]
                for key, text in tx.rows(
                    "SELECT sha256, value_json FROM audit_values"
                    f" WHERE sha256 IN ({', '.join('?' * len(chunk))})",
                    [bytes.fromhex(d) for d in chunk],
                ):
                    found[bytes(key).hex()] = str(text)
                    wanted |= referenced_in(str(text))
            wanted -= asked
        return found

    def _values_table(self, tx: _Tx) -> bool:
        # Made by the first write of this version; checked once seen, as tables stay.
        if not self._values_made:
            self._values_made = _VALUES in self._table_names(tx)
        return self._values_made

    def _release_values(self, tx: _Tx, workflow_id: str) -> set[str]:
        """Drop a chain's references to values (its tombstone written, its records about to
        go); returns the values it referred to, which may now be unreferenced."""
        found = tx.rows(
            "SELECT record_json FROM audit_records WHERE workflow_id = ?", (workflow_id,)
        )
        digests = {d for row in found for d in _referred_by(str(row[0]))}
        # Those held inside them too: the chain has a reference to each.
        released = {d for d in digests | set(self._values(tx, digests)) if _DIGEST.fullmatch(d)}
        tx.many(
            "DELETE FROM audit_refs WHERE sha256 = ? AND workflow_id = ?",
            [(bytes.fromhex(d), workflow_id) for d in sorted(released)],
        )
        return released

    def _drop_unreferenced(self, tx: _Tx, digests: Collection[str]) -> None:
        """Delete those of the values that no chain refers to any more."""
        if not digests:
            return
        self._lock_values(tx)
        tx.many(
            "DELETE FROM audit_values WHERE sha256 = ?"
            " AND NOT EXISTS (SELECT 1 FROM audit_refs WHERE audit_refs.sha256 = ?)",
            [(bytes.fromhex(d),) * 2 for d in sorted(digests)],
        )

    @abstractmethod
    def _lock_values(self, tx: _Tx) -> None:
        """Keep appenders from referring to values until this transaction ends, so that a
        value is never deleted while a reference to it is being added."""

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Chains with a record of `process` (any, if None) and activity at or after `since`,
        oldest first."""
        where, having = "", ""
        params: list[object] = []
        if process is not None:
            where = " WHERE process = ?"
            params.append(process)
        if since is not None:
            having = " HAVING MAX(occurred_at) >= ?"
            params.append(self._to_db_time(since))
        sql = (
            f"SELECT workflow_id FROM audit_records{where} GROUP BY workflow_id{having}"
            " ORDER BY MIN(occurred_at), workflow_id"
        )
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            return [str(row[0]) for row in tx.rows(sql, params)]

    def chains(self, workflow_id: str | None = None) -> dict[str, StoredChain]:
        """Each chain's records as the checkpoints are checked against them."""
        where, params = (
            ("", ()) if workflow_id is None else (" WHERE workflow_id = ?", (workflow_id,))
        )
        chains: dict[str, StoredChain] = {}
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows(
                "SELECT workflow_id, seq, record_hash, event_type, recorded_at"
                f" FROM audit_records{where}",
                params,
            )
        for workflow_id_, seq, hash_, event_type, recorded_at in found:
            chain = chains.setdefault(str(workflow_id_), StoredChain({}, {}, {}))
            chain.hashes[int(seq)] = str(hash_)
            chain.types[int(seq)] = str(event_type)
            chain.recorded_at[int(seq)] = self._from_db_time(recorded_at)
        return chains

    def heads(self, workflow_ids: Collection[str] | None = None) -> dict[str, ChainHead]:
        """The chains' heads as the store says now (what a checkpoint signs): every
        chain's, or those of ``workflow_ids``."""
        select = "SELECT workflow_id, head_seq, head_hash FROM audit_chains"
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            if workflow_ids is None:
                found = tx.rows(select)
            else:
                wanted = sorted(workflow_ids)
                found = []
                for start in range(0, len(wanted), _BATCH):
                    chunk = wanted[start : start + _BATCH]
                    marks = ", ".join("?" * len(chunk))
                    found += tx.rows(f"{select} WHERE workflow_id IN ({marks})", chunk)
        return {str(r[0]): ChainHead(int(r[1]), str(r[2])) for r in found}

    def verify(self, workflow_id: str | None = None) -> VerifyReport:
        """Recompute every hash and check seq continuity and links, for one chain or all,
        and that the append-only guards are in place. Reads only: a store that is not there
        is an error, never created, and a dropped guard is reported, never put back."""
        problems: list[Problem] = []
        chains = records = 0
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            # A store no writer of this version has opened yet has no override or value
            # tables (the first write makes them), so no guards of them to miss either.
            tables = self._table_names(tx)
            unmade = {g for t, guards in _LATE_GUARDS.items() if t not in tables for g in guards}
            problems += [
                Problem(
                    workflow_id="",
                    seq=0,
                    event_id="",
                    kind="guard_missing",
                    detail=f"the trigger {name} is gone: the database no longer stops edits "
                    "or deletions, so anything verified here may have been changed meanwhile",
                )
                for name in self._missing_guards(tx)
                if name not in unmade
            ]
            if workflow_id is not None and not self._known(tx, workflow_id):
                raise LookupError(
                    f"no audit records for run '{workflow_id}' in this store: check the id "
                    "(`baton audit verify` without an id checks every run)"
                )
            for chain in self._chains_to_verify(tx, workflow_id):
                rows = self._stored_rows(tx, chain)
                head = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?", (chain,)
                )
                problems += verify_chain(
                    chain, rows, ChainHead(int(head[0][0]), str(head[0][1])) if head else None
                )
                chains += 1
                records += len(rows)
        return summarise(chains, records, problems)

    def _known(self, tx: _Tx, workflow_id: str) -> bool:
        return any(
            tx.rows(f"SELECT 1 FROM {table} WHERE workflow_id = ?", (workflow_id,))
            for table in ("audit_chains", "audit_records", "audit_tombstones")
        )

    @abstractmethod
    def _missing_guards(self, tx: _Tx) -> list[str]: ...

    @abstractmethod
    def _table_names(self, tx: _Tx) -> set[str]: ...

    @abstractmethod
    def _require_schema(self, tx: _Tx) -> None:
        """Raise AuditStoreMissing when the tables are not there."""

    def _chains_to_verify(self, tx: _Tx, workflow_id: str | None) -> list[str]:
        if workflow_id is not None:
            return [workflow_id]
        found = tx.rows(
            "SELECT workflow_id FROM audit_chains UNION"
            " SELECT workflow_id FROM audit_records ORDER BY 1"
        )
        return [str(row[0]) for row in found]

    def _stored_rows(self, tx: _Tx, workflow_id: str) -> list[StoredRow]:
        found = tx.rows(
            f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        values = self._values(tx, {d for row in found for d in _referred_by(str(row[-1]))})
        return [self._stored_row(row, values) for row in found]

    def _stored_row(self, row: tuple[Any, ...], values: Mapping[str, str]) -> StoredRow:
        columns = dict(zip(COLUMNS, row[1:-1], strict=True))
        for name in ("occurred_at", "recorded_at", "retain_until"):
            columns[name] = self._from_db_time(columns[name])
        return StoredRow(seq=int(row[0]), columns=columns, record_json=str(row[-1]), values=values)

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                self._create_schema()
                self._schema_ready = True


# -- SQLite ----------------------------------------------------------------------------------

_SQLITE_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL, process TEXT NOT NULL, event_type TEXT NOT NULL, node TEXT,
        occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, retain_until TEXT NOT NULL,
        prev_hash TEXT NOT NULL, record_hash TEXT NOT NULL, record_json TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_chains (
        workflow_id TEXT PRIMARY KEY, head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_records_process ON audit_records (process, occurred_at)",
    """CREATE TABLE IF NOT EXISTS audit_tombstones (
        workflow_id TEXT PRIMARY KEY, tombstone_json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_holds (
        workflow_id TEXT PRIMARY KEY, held_at TEXT NOT NULL, held_by TEXT NOT NULL,
        reason TEXT NOT NULL)""",
    # Signed retention overrides (baton.audit.retention), newest by recorded_at.
    """CREATE TABLE IF NOT EXISTS audit_overrides (
        override_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL, override_json TEXT NOT NULL)""",
    # Guards: records, tombstones and overrides are never changed, a chain head only moves
    # forward, and records or heads go only with a tombstone (a purge). Whoever drops a
    # guard is caught by verify(), which reports the missing trigger and never recreates it.
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: only a purge deletes'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_chains_forward BEFORE UPDATE ON audit_chains
        WHEN NEW.head_seq <= OLD.head_seq OR NEW.workflow_id <> OLD.workflow_id
        BEGIN SELECT RAISE(ABORT, 'a chain head only moves forward'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_chains_no_delete BEFORE DELETE ON audit_chains
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'a chain head goes only with a purge'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_tombstones_no_update BEFORE UPDATE ON audit_tombstones
        BEGIN SELECT RAISE(ABORT, 'audit_tombstones is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_tombstones_no_delete BEFORE DELETE ON audit_tombstones
        BEGIN SELECT RAISE(ABORT, 'audit_tombstones is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_overrides_no_update BEFORE UPDATE ON audit_overrides
        BEGIN SELECT RAISE(ABORT, 'audit_overrides is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_overrides_no_delete BEFORE DELETE ON audit_overrides
        BEGIN SELECT RAISE(ABORT, 'audit_overrides is append-only'); END""",
    # Values stored once (see the module's docstring), and which chains refer to each. A
    # rowid table: values of a few KiB stay on their page there, where a WITHOUT ROWID
    # table would spill them onto overflow pages of their own.
    """CREATE TABLE IF NOT EXISTS audit_values (
        sha256 BLOB NOT NULL UNIQUE, value_json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_refs (
        sha256 BLOB NOT NULL, workflow_id TEXT NOT NULL, PRIMARY KEY (sha256, workflow_id))
        WITHOUT ROWID""",
    # A value is never changed and goes only when no chain refers to it; a reference goes
    # only with its chain's purge.
    """CREATE TRIGGER IF NOT EXISTS audit_values_no_update BEFORE UPDATE ON audit_values
        BEGIN SELECT RAISE(ABORT, 'audit_values is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_values_no_delete BEFORE DELETE ON audit_values
        WHEN EXISTS (SELECT 1 FROM audit_refs WHERE sha256 = OLD.sha256)
        BEGIN SELECT RAISE(ABORT, 'a value goes only when no record refers to it'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_refs_no_update BEFORE UPDATE ON audit_refs
        BEGIN SELECT RAISE(ABORT, 'audit_refs is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_refs_no_delete BEFORE DELETE ON audit_refs
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'audit_refs is append-only: only a purge deletes'); END""",
)
# What verify() expects to find; a name missing is reported as a dropped guard.
GUARDS: tuple[str, ...] = (
    "audit_records_no_update",
    "audit_records_no_delete",
    "audit_chains_forward",
    "audit_chains_no_delete",
    "audit_tombstones_no_update",
    "audit_tombstones_no_delete",
    "audit_overrides_no_update",
    "audit_overrides_no_delete",
    "audit_values_no_update",
    "audit_values_no_delete",
    "audit_refs_no_update",
    "audit_refs_no_delete",
)
_TABLES = ("audit_records", "audit_chains", "audit_tombstones", "audit_holds")
# Made after stores were in use: a reader finds none in a store no writer of this version
# has opened yet, and takes that as no override (not as "not an audit store").
_OVERRIDES = "audit_overrides"
_OVERRIDE_GUARDS = ("audit_overrides_no_update", "audit_overrides_no_delete")
# Likewise the values (and no record refers to one there).
_VALUES = "audit_values"
_LATE_GUARDS: dict[str, tuple[str, ...]] = {
    _OVERRIDES: _OVERRIDE_GUARDS,
    _VALUES: ("audit_values_no_update", "audit_values_no_delete", "audit_values_no_truncate"),
    "audit_refs": ("audit_refs_no_update", "audit_refs_no_delete", "audit_refs_no_truncate"),
}


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params).fetchall())

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, params).rowcount

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        if params:
            self._conn.executemany(sql, params)


class SqliteAuditStore(_SqlAuditStore):
    """One SQLite file in WAL mode. Writers serialise on `BEGIN IMMEDIATE`, which takes the
    write lock before the chain head is read, and wait up to `busy_timeout` seconds."""

    def __init__(
        self, path: str | Path, *, clock: Clock | None = None, busy_timeout: float = 60.0
    ) -> None:
        super().__init__(clock=clock)
        self.path = Path(path)
        self._busy_timeout = busy_timeout
        # One connection per thread, kept: opening one per append was a tenth
        # of the audit writer's time under load.
        self._connections = threading.local()
        self._readers = threading.local()

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._connections, "conn", None)
        if conn is None:
            # isolation_level=None: the module must not open transactions behind our back.
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            self._connections.conn = conn
        yield conn

    def _reader(self) -> sqlite3.Connection:
        """A read-only connection: reading never creates the file or changes it."""
        conn: sqlite3.Connection | None = getattr(self._readers, "conn", None)
        if conn is None:
            if not self.path.is_file():
                raise AuditStoreMissing(
                    f"no audit store at {self.path}: check BATON_AUDIT_URL (or the data dir); "
                    "a reader never creates one"
                )
            uri = f"{self.path.resolve().as_uri()}?mode=ro"
            conn = sqlite3.connect(uri, uri=True, timeout=self._busy_timeout, isolation_level=None)
            self._readers.conn = conn
        return conn

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Tx]:
        if not write:
            reader = self._reader()
            reader.execute("BEGIN")
            try:
                yield _SqliteTx(reader)
            finally:
                reader.execute("ROLLBACK")
            return
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield _SqliteTx(conn)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def _create_schema(self) -> None:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        with self._connection() as conn:
            self._enable_wal(conn)
            conn.execute("BEGIN IMMEDIATE")
            for statement in _SQLITE_SCHEMA:
                conn.execute(statement)
            conn.execute("COMMIT")

    def _enable_wal(self, conn: sqlite3.Connection) -> None:
        """WAL (persistent in the file) lets readers run beside the one writer.

        Switching a new file to WAL needs an exclusive lock, and SQLite reports "locked"
        at once instead of calling the busy handler when other processes are opening the
        same new file, so the switch is retried here until the busy timeout.
        """
        deadline = time.monotonic() + self._busy_timeout
        while True:
            try:
                (mode,) = conn.execute("PRAGMA journal_mode=WAL").fetchone()
            except sqlite3.OperationalError as exc:
                if "locked" not in str(exc) or time.monotonic() > deadline:
                    raise
                time.sleep(random.uniform(0.005, 0.05))
                continue
            if str(mode).lower() != "wal":
                raise sqlite3.OperationalError(f"{self.path}: cannot use WAL (mode is {mode})")
            return

    def _table_names(self, tx: _Tx) -> set[str]:
        return {str(r[0]) for r in tx.rows("SELECT name FROM sqlite_master WHERE type='table'")}

    def _require_schema(self, tx: _Tx) -> None:
        names = self._table_names(tx)
        missing = [t for t in _TABLES if t not in names]
        if missing:
            raise AuditStoreMissing(
                f"{self.path} is not a Baton audit store (no table {', '.join(missing)}): "
                "check BATON_AUDIT_URL"
            )

    def _missing_guards(self, tx: _Tx) -> list[str]:
        names = {str(r[0]) for r in tx.rows("SELECT name FROM sqlite_master WHERE type='trigger'")}
        return [g for g in GUARDS if g not in names]

    def _lock_values(self, tx: _Tx) -> None:
        """Nothing to do: the write transaction holds SQLite's one writer lock."""

    def _to_db_time(self, value: datetime) -> object:
        # One fixed-width UTC text form, so SQL comparisons on text order like time.
        return format_timestamp(value)

    def _from_db_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value))


# -- PostgreSQL ------------------------------------------------------------------------------

_PG_SCHEMA = (
    """CREATE TABLE IF NOT EXISTS audit_records (
        workflow_id text NOT NULL, seq bigint NOT NULL, event_id text NOT NULL UNIQUE,
        run_id text NOT NULL, process text NOT NULL, event_type text NOT NULL, node text,
        occurred_at timestamptz NOT NULL, recorded_at timestamptz NOT NULL,
        retain_until timestamptz NOT NULL, prev_hash text NOT NULL, record_hash text NOT NULL,
        record_json text NOT NULL, PRIMARY KEY (workflow_id, seq))""",
    """CREATE TABLE IF NOT EXISTS audit_chains (
        workflow_id text PRIMARY KEY, head_seq bigint NOT NULL, head_hash text NOT NULL)""",
    "CREATE INDEX IF NOT EXISTS audit_records_process ON audit_records (process, occurred_at)",
    """CREATE TABLE IF NOT EXISTS audit_tombstones (
        workflow_id text PRIMARY KEY, tombstone_json text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_holds (
        workflow_id text PRIMARY KEY, held_at text NOT NULL, held_by text NOT NULL,
        reason text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_overrides (
        override_id text PRIMARY KEY, recorded_at text NOT NULL, override_json text NOT NULL)""",
    """CREATE OR REPLACE FUNCTION audit_refuse() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    """CREATE OR REPLACE FUNCTION audit_refuse_unless_purged() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
            THEN RAISE EXCEPTION '% is append-only: only a purge deletes', TG_TABLE_NAME; END IF;
            RETURN OLD; END $$""",
    """CREATE OR REPLACE FUNCTION audit_head_forward() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.head_seq <= OLD.head_seq OR NEW.workflow_id <> OLD.workflow_id
            THEN RAISE EXCEPTION 'a chain head only moves forward'; END IF;
            RETURN NEW; END $$""",
    """CREATE OR REPLACE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_purged()""",
    """CREATE OR REPLACE TRIGGER audit_chains_forward BEFORE UPDATE ON audit_chains
        FOR EACH ROW EXECUTE FUNCTION audit_head_forward()""",
    """CREATE OR REPLACE TRIGGER audit_chains_no_delete BEFORE DELETE ON audit_chains
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_purged()""",
    """CREATE OR REPLACE TRIGGER audit_tombstones_no_update BEFORE UPDATE ON audit_tombstones
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_tombstones_no_delete BEFORE DELETE ON audit_tombstones
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_overrides_no_update BEFORE UPDATE ON audit_overrides
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_overrides_no_delete BEFORE DELETE ON audit_overrides
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE TABLE IF NOT EXISTS audit_values (
        sha256 bytea PRIMARY KEY, value_json text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_refs (
        sha256 bytea NOT NULL, workflow_id text NOT NULL, PRIMARY KEY (sha256, workflow_id))""",
    """CREATE OR REPLACE FUNCTION audit_refuse_referenced() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF EXISTS (SELECT 1 FROM audit_refs WHERE sha256 = OLD.sha256)
            THEN RAISE EXCEPTION 'a value goes only when no record refers to it'; END IF;
            RETURN OLD; END $$""",
    """CREATE OR REPLACE TRIGGER audit_values_no_update BEFORE UPDATE ON audit_values
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_values_no_delete BEFORE DELETE ON audit_values
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_referenced()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_update BEFORE UPDATE ON audit_refs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_delete BEFORE DELETE ON audit_refs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_purged()""",
    # TRUNCATE skips row triggers: refuse it as a statement.
    """CREATE OR REPLACE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_values_no_truncate BEFORE TRUNCATE ON audit_values
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_truncate BEFORE TRUNCATE ON audit_refs
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
)
# Statement guards, PostgreSQL's only.
_PG_TRUNCATE_GUARDS = (
    "audit_records_no_truncate",
    "audit_values_no_truncate",
    "audit_refs_no_truncate",
)
_PG_SCHEMA_LOCK = 0x6261746F6E  # "baton": serialises concurrent first-use DDL across processes


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cur = cur

    # Without parameters psycopg takes the text as is: the DDL's RAISE formats use '%'.
    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(sql.replace("?", "%s"), params or None)
        return self._cur.fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        self._cur.execute(sql.replace("?", "%s"), params or None)
        return self._cur.rowcount

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None:
        if params:
            self._cur.executemany(sql.replace("?", "%s"), params)


class PostgresAuditStore(_SqlAuditStore):
    """PostgreSQL through psycopg 3. Tables go to the first schema on the search_path, so a
    DSN with `options=-csearch_path%3Daudit` keeps them in their own schema. Appenders
    serialise per chain on its head row, locked `FOR UPDATE`."""

    _LOCK_SUFFIX = " FOR UPDATE"

    def __init__(self, dsn: str, *, clock: Clock | None = None) -> None:
        super().__init__(clock=clock)
        self.dsn = dsn

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Tx]:
        import psycopg  # optional dependency: only PostgreSQL users need it installed

        with psycopg.connect(self.dsn) as conn:
            if not write:
                # One snapshot for the whole read, or verify could see a head newer than
                # the records it read a moment before.
                conn.isolation_level = psycopg.IsolationLevel.REPEATABLE_READ
                conn.read_only = True
            with conn.cursor() as cur:
                yield _PgTx(cur)

    def _create_schema(self) -> None:
        with self._transaction(write=True) as tx:
            tx.run("SELECT pg_advisory_xact_lock(?)", (_PG_SCHEMA_LOCK,))
            # DDL only when something is missing (a new store, or one made before a guard
            # existed): replacing a trigger locks its table against appenders, and two
            # processes doing so while appending deadlock.
            try:
                self._require_schema(tx)
                if not self._missing_guards(tx):
                    return
            except AuditStoreMissing:
                pass
            for statement in _PG_SCHEMA:
                tx.run(statement)

    def _table_names(self, tx: _Tx) -> set[str]:
        return {
            str(r[0])
            for r in tx.rows(
                "SELECT table_name FROM information_schema.tables"
                " WHERE table_schema = current_schema()"
            )
        }

    def _require_schema(self, tx: _Tx) -> None:
        found = self._table_names(tx)
        missing = [t for t in _TABLES if t not in found]
        if missing:
            raise AuditStoreMissing(
                f"the PostgreSQL audit store holds no table {', '.join(missing)} (in the schema "
                "its search_path names): check BATON_AUDIT_URL"
            )

    def _missing_guards(self, tx: _Tx) -> list[str]:
        names = {
            str(r[0])
            for r in tx.rows(
                "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
                " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal"
            )
        }
        return [g for g in (*GUARDS, *_PG_TRUNCATE_GUARDS) if g not in names]

    def _lock_values(self, tx: _Tx) -> None:
        # Appenders insert into audit_values (ROW EXCLUSIVE) before their references, so
        # once this is granted, every reference being added is committed and visible.
        tx.run("LOCK TABLE audit_values IN SHARE ROW EXCLUSIVE MODE")

    def _to_db_time(self, value: datetime) -> object:
        return value.astimezone(UTC)

    def _from_db_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamptz, got {type(value).__name__}")
        return value.astimezone(UTC)
