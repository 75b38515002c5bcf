"""The audit store in PostgreSQL, through psycopg 3 (an optional dependency): a connection
per operation, one snapshot per read, and DDL only when something is missing.
"""

from __future__ import annotations

import hashlib
from collections.abc import Collection, Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from baton.audit.store_layout import texts
from baton.audit.store_reads import AuditStoreMissing, _Tx
from baton.audit.store_schema import _PG_SCHEMA
from baton.audit.store_schema_v3 import MOVED, pg_legacy_schema, pg_move_aside
from baton.audit.store_writes import AuditStore, Clock, to_move_aside

if TYPE_CHECKING:
    import psycopg

_PG_SCHEMA_LOCK = 0x6261746F6E  # "baton": serialises concurrent first-use DDL across processes


def _event_lock(event_id: str) -> int:
    """The advisory lock key (a signed 64-bit integer) that appenders of ``event_id`` take."""
    named = "/".join(event_id.split("/", 2)[:2])
    digest = hashlib.sha256(b"baton.audit.event " + named.encode()).digest()
    return int.from_bytes(digest[:8], "big", signed=True)


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


class PostgresAuditStore(AuditStore):
    """PostgreSQL through psycopg 3. Tables go to the first schema on the search_path, so a
    DSN with `options=-csearch_path%3Daudit` keeps them in their own schema. Appenders
    serialise per chain on its head row, locked `FOR UPDATE`."""

    _LOCK_SUFFIX = " FOR UPDATE"
    _POSTGRES = True

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
                tables = self._require_schema(tx)
                triggers = self._trigger_names(tx)
                missing = [g for g in self._expected_guards(tables) if g not in triggers]
                if not missing and "audit_runs" in tables:
                    return
            except AuditStoreMissing:
                pass
            moving = to_move_aside(self, tx)
            if moving is not None:
                renames, rest = pg_move_aside(moving)
                for statement in renames:
                    tx.run(statement)
                for table in (moving.records, moving.values, moving.refs):
                    if table is not None:
                        self._rename_indexes(tx, table, table + MOVED)
                for statement in rest:
                    tx.run(statement)
            for statement in _PG_SCHEMA:
                tx.run(statement)
            tables = self._table_names(tx)
            if f"audit_records{MOVED}" in tables:
                values = f"audit_values{MOVED}" in tables
                for statement in pg_legacy_schema(MOVED, values=values):
                    tx.run(statement)

    def _rename_indexes(self, tx: _Tx, old: str, new: str) -> None:
        """An index's name is the schema's, not its table's: those of a table moved aside
        (its primary key's, say) would stand in the way of the new table's."""
        for (name,) in tx.rows(
            "SELECT indexname FROM pg_indexes WHERE schemaname = current_schema()"
            " AND tablename = ?",
            (new,),
        ):
            if str(name).startswith(old) and not str(name).startswith(new):
                tx.run(f'ALTER INDEX "{name}" RENAME TO "{new}{str(name)[len(old) :]}"')

    def _table_names(self, tx: _Tx) -> set[str]:
        return texts(
            tx,
            "SELECT table_name FROM information_schema.tables"
            " WHERE table_schema = current_schema()",
        )

    def _not_a_store(self, missing: str) -> str:
        return (
            f"the PostgreSQL audit store holds no table {missing} (in the schema its "
            "search_path names): check BATON_AUDIT_URL"
        )

    def _trigger_names(self, tx: _Tx) -> set[str]:
        return texts(
            tx,
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid"
            " WHERE c.relnamespace = current_schema()::regnamespace AND NOT t.tgisinternal",
        )

    def _columns(self, tx: _Tx, table: str) -> set[str]:
        return texts(
            tx,
            "SELECT column_name FROM information_schema.columns"
            " WHERE table_schema = current_schema() AND table_name = ?",
            (table,),
        )

    def _lock_event_ids(self, tx: _Tx, event_ids: Collection[str]) -> None:
        # An id may be stored relative to its run or whole (store_layout), so no index on
        # the stored column can keep it unique across chains. Instead each appender takes a
        # lock named by the ids it is about to look up, until it commits; the second one
        # then finds the first one's row. The lock is named by the id up to its second
        # slash (`<workflow id>/<run id>` for Baton's own ids): one lock per run a batch
        # writes to, where a lock per id would fill PostgreSQL's lock table with a batch of
        # 500. Sorted, so that two appenders cannot deadlock.
        for key in sorted({_event_lock(event_id) for event_id in event_ids}):
            tx.run("SELECT pg_advisory_xact_lock(?)", (key,))

    def _lock_values(self, tx: _Tx, *, purging: bool) -> None:
        # Appenders lock audit_values (ROW EXCLUSIVE) before they look a value up, and
        # add their references after; once a purge's lock is granted, every reference
        # being added is committed and visible, and no appender refers to a value the
        # purge deletes.
        mode = "SHARE ROW EXCLUSIVE" if purging else "ROW EXCLUSIVE"
        tx.run(f"LOCK TABLE audit_values IN {mode} MODE")

    def _to_db_time(self, value: datetime) -> object:
        return value.astimezone(UTC)

    def _from_db_time(self, value: Any) -> datetime:
        if not isinstance(value, datetime):
            raise TypeError(f"expected a timestamptz, got {type(value).__name__}")
        return value.astimezone(UTC)
