"""Stores of schema version 3 and before, and how a writer of version 4 moves their tables
aside: `audit_records`, `audit_values` and `audit_refs` become `audit_records_v3`,
`audit_values_v3` and `audit_refs_v3`, rows untouched, guards renamed with them. Their
records are read, verified and purged there as before (`store_legacy`); new records go to
version 4's tables, and a chain may run on from one into the other.

A reader never moves anything: in a store no writer of version 4 has opened, it finds the
tables of version 3 under their own names (`legacy_tables`).
"""

from __future__ import annotations

from dataclasses import dataclass

# The suffix a moved table takes.
MOVED = "_v3"


@dataclass(frozen=True)
class LegacyTables:
    """Where a store keeps the records of version 3 and before (and their values)."""

    records: str
    values: str | None
    refs: str | None


def legacy_tables(tables: set[str]) -> LegacyTables | None:
    """The legacy tables of a store whose tables are ``tables``; None when it has none."""
    if "audit_runs" in tables:
        suffix = MOVED
    elif "audit_records" in tables:
        suffix = ""  # not moved yet: a store of version 3 or before
    else:
        return None
    records, values, refs = (f"audit_{t}{suffix}" for t in ("records", "values", "refs"))
    if records not in tables:
        return None
    return LegacyTables(
        records,
        values if values in tables else None,
        refs if refs in tables and values in tables else None,
    )


def legacy_guards(tables: LegacyTables, *, postgres: bool) -> list[str]:
    """The guards of a store's legacy tables, as verify() expects to find them."""
    names = [f"{tables.records}_no_update", f"{tables.records}_no_delete"]
    if tables.values is not None and tables.refs is not None:
        names += [f"{t}_{g}" for t in (tables.values, tables.refs) for g in _ROW_GUARDS]
    if postgres:
        names += [f"{t}_no_truncate" for t in (tables.records, tables.values, tables.refs) if t]
    return names


_ROW_GUARDS = ("no_update", "no_delete")

# Version 3's guards of the tables both versions share, as a store of version 3 has them.
SHARED_GUARDS: tuple[str, ...] = (
    "audit_chains_forward",
    "audit_chains_no_delete",
    "audit_tombstones_no_update",
    "audit_tombstones_no_delete",
)
OVERRIDE_GUARDS: tuple[str, ...] = ("audit_overrides_no_update", "audit_overrides_no_delete")


def sqlite_legacy_schema(suffix: str, *, values: bool = True) -> list[str]:
    """Version 3's tables of records, values and references in SQLite, named with
    ``suffix``, with their guards: as a store of version 3 has them (suffix "") or as they
    are once moved aside (`MOVED`). The tables are created only where missing."""
    records, vals, refs = (f"audit_{t}{suffix}" for t in ("records", "values", "refs"))
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {records} (
        workflow_id TEXT NOT NULL, seq INTEGER NOT NULL, event_id TEXT NOT NULL UNIQUE,
        run_id TEXT NOT NULL, process TEXT NOT NULL, event_type TEXT NOT NULL, node TEXT,
        occurred_at TEXT NOT NULL, recorded_at TEXT NOT NULL, retain_until TEXT NOT NULL,
        prev_hash TEXT NOT NULL, record_hash TEXT NOT NULL, record_json TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq))""",
        f"CREATE INDEX IF NOT EXISTS {records}_process ON {records} (process, occurred_at)",
        f"""CREATE TRIGGER IF NOT EXISTS {records}_no_update BEFORE UPDATE ON {records}
        BEGIN SELECT RAISE(ABORT, '{records} is append-only'); END""",
        f"""CREATE TRIGGER IF NOT EXISTS {records}_no_delete BEFORE DELETE ON {records}
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, '{records} is append-only: only a purge deletes'); END""",
    ]
    if values:
        statements += [
            f"""CREATE TABLE IF NOT EXISTS {vals} (
            sha256 BLOB NOT NULL UNIQUE, value_json TEXT NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {refs} (
            sha256 BLOB NOT NULL, workflow_id TEXT NOT NULL, PRIMARY KEY (sha256, workflow_id))
            WITHOUT ROWID""",
            f"""CREATE TRIGGER IF NOT EXISTS {vals}_no_update BEFORE UPDATE ON {vals}
            BEGIN SELECT RAISE(ABORT, '{vals} is append-only'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {vals}_no_delete BEFORE DELETE ON {vals}
            WHEN EXISTS (SELECT 1 FROM {refs} WHERE sha256 = OLD.sha256)
            BEGIN SELECT RAISE(ABORT, 'a value goes only when no record refers to it'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {refs}_no_update BEFORE UPDATE ON {refs}
            BEGIN SELECT RAISE(ABORT, '{refs} is append-only'); END""",
            f"""CREATE TRIGGER IF NOT EXISTS {refs}_no_delete BEFORE DELETE ON {refs}
            WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
            BEGIN SELECT RAISE(ABORT, '{refs} is append-only: only a purge deletes'); END""",
        ]
    return statements


def pg_legacy_schema(suffix: str, *, values: bool = True) -> list[str]:
    """`sqlite_legacy_schema` in PostgreSQL. The functions the guards call are version 4's
    (the same bodies), but for the one that asks the references by SHA-256."""
    records, vals, refs = (f"audit_{t}{suffix}" for t in ("records", "values", "refs"))
    statements = [
        f"""CREATE TABLE IF NOT EXISTS {records} (
        workflow_id text NOT NULL, seq bigint NOT NULL, event_id text NOT NULL UNIQUE,
        run_id text NOT NULL, process text NOT NULL, event_type text NOT NULL, node text,
        occurred_at timestamptz NOT NULL, recorded_at timestamptz NOT NULL,
        retain_until timestamptz NOT NULL, prev_hash text NOT NULL, record_hash text NOT NULL,
        record_json text NOT NULL, PRIMARY KEY (workflow_id, seq))""",
        f"CREATE INDEX IF NOT EXISTS {records}_process ON {records} (process, occurred_at)",
        *_pg_guards(records, "audit_refuse_unless_purged"),
    ]
    if values:
        statements += [
            f"""CREATE TABLE IF NOT EXISTS {vals} (
            sha256 bytea PRIMARY KEY, value_json text NOT NULL)""",
            f"""CREATE TABLE IF NOT EXISTS {refs} (
            sha256 bytea NOT NULL, workflow_id text NOT NULL, PRIMARY KEY (sha256, workflow_id))""",
            f"""CREATE OR REPLACE FUNCTION audit_refuse_referenced{suffix}() RETURNS trigger
            LANGUAGE plpgsql AS $$ BEGIN
                IF EXISTS (SELECT 1 FROM {refs} WHERE sha256 = OLD.sha256)
                THEN RAISE EXCEPTION 'a value goes only when no record refers to it'; END IF;
                RETURN OLD; END $$""",
            *_pg_guards(vals, f"audit_refuse_referenced{suffix}"),
            *_pg_guards(refs, "audit_refuse_unless_purged"),
        ]
    return statements


def _pg_guards(table: str, delete_check: str) -> list[str]:
    """A legacy table's guards in PostgreSQL: no update and no TRUNCATE (which skips row
    triggers), and a row deleted only when the function ``delete_check`` lets it go."""
    return [
        f"""CREATE OR REPLACE TRIGGER {table}_no_update BEFORE UPDATE ON {table}
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
        f"""CREATE OR REPLACE TRIGGER {table}_no_delete BEFORE DELETE ON {table}
        FOR EACH ROW EXECUTE FUNCTION {delete_check}()""",
        f"""CREATE OR REPLACE TRIGGER {table}_no_truncate BEFORE TRUNCATE ON {table}
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    ]


def _old_triggers(tables: LegacyTables, *, postgres: bool) -> list[tuple[str, str]]:
    """(trigger, table it is on once moved) of each guard a store of version 3 has on the
    tables being moved."""
    found: list[tuple[str, str]] = []
    for table in (tables.records, tables.values, tables.refs):
        if table is None:
            continue
        guards = [*_ROW_GUARDS, "no_truncate"] if postgres else list(_ROW_GUARDS)
        found += [(f"{table}_{guard}", table + MOVED) for guard in guards]
    return found


def sqlite_move_aside(tables: LegacyTables) -> list[str]:
    """The statements that move a version-3 store's tables aside in SQLite (one write
    transaction): renamed, their guards and index made again under the new names."""
    moving = [t for t in (tables.records, tables.values, tables.refs) if t is not None]
    statements = [f"ALTER TABLE {table} RENAME TO {table}{MOVED}" for table in moving]
    # Trigger names are the schema's, not the table's: the old ones would stand in the
    # way of version 4's guards of the same names.
    statements += [
        f"DROP TRIGGER IF EXISTS {name}" for name, _ in _old_triggers(tables, postgres=False)
    ]
    statements.append(f"DROP INDEX IF EXISTS {tables.records}_process")
    return statements + sqlite_legacy_schema(MOVED, values=tables.values is not None)


def pg_move_aside(tables: LegacyTables) -> tuple[list[str], list[str]]:
    """`sqlite_move_aside` in PostgreSQL: the renames, then the rest; the tables' indexes
    are renamed by the caller in between (their names are the schema's too)."""
    moving = [t for t in (tables.records, tables.values, tables.refs) if t is not None]
    renames = [f"ALTER TABLE {table} RENAME TO {table}{MOVED}" for table in moving]
    statements = [
        f"DROP TRIGGER IF EXISTS {name} ON {table}"
        for name, table in _old_triggers(tables, postgres=True)
    ]
    statements += pg_legacy_schema(MOVED, values=tables.values is not None)
    statements.append("DROP FUNCTION IF EXISTS audit_refuse_referenced()")
    return renames, statements
