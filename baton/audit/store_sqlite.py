"""The audit store in one SQLite file: WAL mode, a writer connection kept per thread, and
read-only connections for readers, so reading never creates or changes the file.
"""

from __future__ import annotations

import random
import sqlite3
import threading
import time
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import Any

from baton.audit.events import format_timestamp
from baton.audit.store_layout import texts
from baton.audit.store_reads import AuditStoreMissing, _Tx
from baton.audit.store_schema import _SQLITE_SCHEMA
from baton.audit.store_schema_v3 import MOVED, sqlite_legacy_schema, sqlite_move_aside
from baton.audit.store_writes import AuditStore, Clock, to_move_aside


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


class SqliteAuditStore(AuditStore):
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
            try:
                tx = _SqliteTx(conn)
                moving = to_move_aside(self, tx)
                for statement in sqlite_move_aside(moving) if moving else ():
                    conn.execute(statement)
                for statement in _SQLITE_SCHEMA:
                    conn.execute(statement)
                if f"audit_records{MOVED}" in self._table_names(tx):
                    values = f"audit_values{MOVED}" in self._table_names(tx)
                    for statement in sqlite_legacy_schema(MOVED, values=values):
                        conn.execute(statement)
            except BaseException:
                conn.execute("ROLLBACK")
                raise
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
        return texts(tx, "SELECT name FROM sqlite_master WHERE type='table'")

    def _not_a_store(self, missing: str) -> str:
        return f"{self.path} is not a Baton audit store (no table {missing}): check BATON_AUDIT_URL"

    def _trigger_names(self, tx: _Tx) -> set[str]:
        return texts(tx, "SELECT name FROM sqlite_master WHERE type='trigger'")

    def _columns(self, tx: _Tx, table: str) -> set[str]:
        return texts(tx, "SELECT name FROM pragma_table_info(?)", (table,))

    def _lock_event_ids(self, tx: _Tx, event_ids: Collection[str]) -> None:
        """Nothing to do: the write transaction holds SQLite's one writer lock."""

    def _lock_values(self, tx: _Tx, *, purging: bool) -> None:
        """Nothing to do: the write transaction holds SQLite's one writer lock."""

    def _to_db_time(self, value: datetime) -> object:
        # One fixed-width UTC text form, so SQL comparisons on text order like time.
        return format_timestamp(value)

    def _from_db_time(self, value: Any) -> datetime:
        return datetime.fromisoformat(str(value))
