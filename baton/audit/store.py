"""Append-only audit store: one hash chain per workflow_id, in SQLite or PostgreSQL.

Appends are idempotent by event_id, so an interceptor may re-send a batch after a retry or
a replay without duplicating anything. Seq and prev_hash are assigned inside one write
transaction that holds the chain head, which is what makes concurrent appenders (threads or
processes) produce one gap-free chain. A connection is opened per operation: the store is
then safe to share between threads and cheap to hand to forked processes.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from abc import ABC, abstractmethod
from collections.abc import Callable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Protocol

from baton.audit.events import AuditEvent, AuditRecord, format_timestamp, seal
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
    "AuditStore",
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


class AuditStore(Protocol):
    def append(self, events: Sequence[AuditEvent], *, retention_days: int) -> int: ...

    def records(self, workflow_id: str) -> list[AuditRecord]: ...

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]: ...

    def verify(self, workflow_id: str | None = None) -> VerifyReport: ...

    def purge(self, before: datetime, *, min_retention_days: int, now: datetime) -> int: ...


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
    """The two things the shared logic needs from a transaction; SQL uses `?` placeholders."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int: ...


_ROW_COLUMNS = ", ".join(("seq", *COLUMNS, "record_json"))
_INSERT = (
    f"INSERT INTO audit_records ({_ROW_COLUMNS}) VALUES ({', '.join('?' * (len(COLUMNS) + 2))})"
    " ON CONFLICT (event_id) DO NOTHING"
)
_CHAIN_AGE = (
    "SELECT workflow_id FROM audit_records GROUP BY workflow_id"
    " HAVING MAX(occurred_at) < ? AND MAX(recorded_at) < ? AND MAX(retain_until) <= ?"
)


class _SqlAuditStore(ABC):
    """Everything but connections, DDL and time conversion is shared by both databases."""

    _LOCK_SUFFIX = ""

    def __init__(self, *, clock: Clock | None) -> None:
        self._clock = clock or (lambda: datetime.now(UTC))
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
            seen = self._stored_event_ids(tx, [event.event_id for event in events])
            recorded_at = self._clock()
            retain_until = recorded_at + timedelta(days=retention_days)
            added = 0
            moved: dict[str, ChainHead] = {}
            for event in events:
                if event.event_id in seen:
                    continue
                seen.add(event.event_id)
                head = heads[event.workflow_id]
                record = seal(
                    event,
                    seq=head.seq + 1,
                    prev_hash=head.hash,
                    recorded_at=recorded_at,
                    retain_until=retain_until,
                )
                # Zero rows: the id was appended concurrently under another workflow_id.
                if tx.run(_INSERT, self._row_params(record)):
                    heads[event.workflow_id] = ChainHead(record.seq, record.record_hash)
                    moved[event.workflow_id] = heads[event.workflow_id]
                    added += 1
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

    def _stored_event_ids(self, tx: _Tx, event_ids: Sequence[str]) -> set[str]:
        unique = sorted(set(event_ids))
        stored: set[str] = set()
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ", ".join("?" * len(chunk))
            found = tx.rows(
                f"SELECT event_id FROM audit_records WHERE event_id IN ({marks})", chunk
            )
            stored.update(str(row[0]) for row in found)
        return stored

    def _row_params(self, record: AuditRecord) -> list[object]:
        values: list[object] = [record.seq]
        for column in COLUMNS:
            value = getattr(record, column)
            values.append(self._to_db_time(value) if isinstance(value, datetime) else value)
        values.append(record.model_dump_json())
        return values

    def purge(self, before: datetime, *, min_retention_days: int, now: datetime) -> int:
        """Delete whole chains last written before `before`; returns records removed.

        A chain is kept while any of its records is inside its own retain_until, even past
        `before`: the retention an event was appended with is a promise made to someone.
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
            removed = 0
            for workflow_id in (w for w in candidates if w in still_old):
                removed += tx.run("DELETE FROM audit_records WHERE workflow_id = ?", (workflow_id,))
                tx.run("DELETE FROM audit_chains WHERE workflow_id = ?", (workflow_id,))
        return removed

    def _lock_existing_heads(self, tx: _Tx, workflow_ids: Sequence[str]) -> None:
        for workflow_id in workflow_ids:
            tx.rows(
                "SELECT head_seq FROM audit_chains WHERE workflow_id = ?" + self._LOCK_SUFFIX,
                (workflow_id,),
            )

    # -- reading ---------------------------------------------------------------------------

    def records(self, workflow_id: str) -> list[AuditRecord]:
        self._ensure_schema()
        with self._transaction(write=False) as tx:
            found = tx.rows(
                "SELECT record_json FROM audit_records WHERE workflow_id = ? ORDER BY seq",
                (workflow_id,),
            )
        return [AuditRecord.model_validate_json(row[0]) for row in found]

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Chains with a record of `process` (any, if None) and activity at or after `since`,
        oldest first."""
        self._ensure_schema()
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
            return [str(row[0]) for row in tx.rows(sql, params)]

    def verify(self, workflow_id: str | None = None) -> VerifyReport:
        """Recompute every hash and check seq continuity and links, for one chain or all."""
        self._ensure_schema()
        problems: list[Problem] = []
        chains = records = 0
        with self._transaction(write=False) as tx:
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
        return [self._stored_row(row) for row in found]

    def _stored_row(self, row: tuple[Any, ...]) -> StoredRow:
        columns = dict(zip(COLUMNS, row[1:-1], strict=True))
        for name in ("occurred_at", "recorded_at", "retain_until"):
            columns[name] = self._from_db_time(columns[name])
        return StoredRow(seq=int(row[0]), columns=columns, record_json=str(row[-1]))

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
    # Guards against accidents, not attackers: whoever can drop it is caught by verify().
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END""",
)


class _SqliteTx:
    def __init__(self, conn: sqlite3.Connection) -> None:
        self._conn = conn

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        return list(self._conn.execute(sql, params).fetchall())

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        return self._conn.execute(sql, params).rowcount


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

    @contextmanager
    def _connection(self) -> Iterator[sqlite3.Connection]:
        conn: sqlite3.Connection | None = getattr(self._connections, "conn", None)
        if conn is None:
            # isolation_level=None: the module must not open transactions behind our back.
            conn = sqlite3.connect(self.path, timeout=self._busy_timeout, isolation_level=None)
            self._connections.conn = conn
        yield conn

    @contextmanager
    def _transaction(self, *, write: bool) -> Iterator[_Tx]:
        with self._connection() as conn:
            conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
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
    """CREATE OR REPLACE FUNCTION audit_records_append_only() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION 'audit_records is append-only'; END $$""",
    """CREATE OR REPLACE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_records_append_only()""",
)
_PG_SCHEMA_LOCK = 0x6261746F6E  # "baton": serialises concurrent first-use DDL across processes


class _PgTx:
    def __init__(self, cur: psycopg.Cursor[tuple[Any, ...]]) -> None:
        self._cur = cur

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]:
        self._cur.execute(sql.replace("?", "%s"), params)
        return self._cur.fetchall()

    def run(self, sql: str, params: Sequence[object] = ()) -> int:
        self._cur.execute(sql.replace("?", "%s"), params)
        return self._cur.rowcount


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
            for statement in _PG_SCHEMA:
                tx.run(statement)

    def _to_db_time(self, value: datetime) -> object:
        return value.astimezone(UTC)

    def _from_db_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamptz, got {type(value).__name__}")
        return value.astimezone(UTC)
