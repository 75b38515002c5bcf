"""The audit store in PostgreSQL, through psycopg 3 (an optional dependency): a connection
per operation, one snapshot per read, and DDL only when something is missing.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from baton.audit.store_reads import AuditStoreMissing, _Tx
from baton.audit.store_schema import _PG_SCHEMA, _PG_TRUNCATE_GUARDS, GUARDS
from baton.audit.store_writes import Clock, _SqlAuditStore

if TYPE_CHECKING:
    import psycopg

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

    def _not_a_store(self, missing: str) -> str:
        return (
            f"the PostgreSQL audit store holds no table {missing} (in the schema its "
            "search_path names): check BATON_AUDIT_URL"
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
