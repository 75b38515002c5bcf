"""What the SQLite systems of record share: where their file lives and how a
connection is opened and kept."""

from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any


def data_file(env_var: str, name: str) -> Path:
    """``env_var`` if set, else ``name`` in the data dir (BATON_DATA_DIR)."""
    explicit = os.environ.get(env_var)
    if explicit:
        return Path(explicit)
    return Path(os.environ.get("BATON_DATA_DIR", ".baton")) / name


class _Kept(threading.local):
    """This thread's open connections, by file. Opening a connection (and
    creating the schema on it) was a third of an ERP write under load."""

    def __init__(self) -> None:
        self.connections: dict[Path, tuple[int, sqlite3.Connection]] = {}


_kept = _Kept()


class SqliteSystem:
    """A system on one SQLite file in WAL mode, its schema created on first use.

    ``migrate`` brings a file made by an earlier version up to ``schema``
    (``CREATE TABLE IF NOT EXISTS`` leaves an existing table as it was); it
    runs after the schema on every new connection, so it must be a no-op on
    a current file and safe against another connection migrating at once."""

    def __init__(
        self,
        path: Path,
        schema: str,
        migrate: Callable[[sqlite3.Connection], None] | None = None,
    ) -> None:
        self.path = path.resolve()
        self._schema = schema
        self._migrate = migrate

    def empty(self) -> None:
        """Delete every row of every table, in place: a running worker keeps
        connections to the file, and a new file under the same name would be
        opened with their write-ahead log, which goes by the name."""
        with self.transaction() as db:
            tables = db.execute(
                "SELECT name FROM sqlite_master WHERE type = 'table' AND name NOT LIKE 'sqlite_%'"
            ).fetchall()
            for (table,) in tables:
                db.execute(f"DELETE FROM {table}")

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """This thread's connection to the file, in a transaction that
        commits on leaving (or rolls back on an error)."""
        db = self._connection()
        with db:
            yield db

    def _connection(self) -> sqlite3.Connection:
        kept = _kept.connections.get(self.path)
        try:
            inode = self.path.stat().st_ino
        except FileNotFoundError:
            inode = None
        # A file deleted or replaced since (tests do that) gets a new connection:
        # the kept one would go on writing to the unlinked file.
        if kept is not None and kept[0] == inode:
            return kept[1]
        if kept is not None:
            kept[1].close()
        self.path.parent.mkdir(parents=True, exist_ok=True)
        db = sqlite3.connect(self.path, timeout=30)
        db.execute("PRAGMA journal_mode=WAL")
        with db:
            db.executescript(self._schema)
        if self._migrate is not None:
            self._migrate(db)
        _kept.connections[self.path] = (self.path.stat().st_ino, db)
        return db

    def _rows(self, sql: str, params: tuple[Any, ...] = ()) -> list[dict[str, Any]]:
        with self.transaction() as db:
            cursor = db.cursor()
            cursor.row_factory = sqlite3.Row
            return [dict(row) for row in cursor.execute(sql, params).fetchall()]


def add_column(
    db: sqlite3.Connection,
    table: str,
    column: str,
    declaration: str,
    backfill: Callable[[sqlite3.Connection], None],
) -> None:
    """Add ``column`` to ``table`` of an older file and fill it for the rows
    already there, in one write transaction. Checked again once the write
    lock is held: two workers opening the same old file at once must not
    both add it."""

    def missing() -> bool:
        return column not in {row[1] for row in db.execute(f"PRAGMA table_info({table})")}

    if not missing():
        return
    with db:
        db.execute("BEGIN IMMEDIATE")
        if missing():
            db.execute(f"ALTER TABLE {table} ADD COLUMN {column} {declaration}")
            backfill(db)
