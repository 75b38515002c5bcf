"""The audit store's tables and their guards, in SQLite and in PostgreSQL, and the names
verify() expects to find. The DDL is idempotent: a writer runs it on first use, so a store
made by an older version gains the tables and guards it lacks and loses nothing (a store of
schema version 3 or before is first moved aside: `store_schema_v3`).

The records are laid out as `baton.audit.store_layout` describes: ids where a text recurs
(runs, names, values), integers for times, bytes for hashes.
"""

from __future__ import annotations

from collections.abc import Mapping

# -- Both databases ------------------------------------------------------------------------------

# Version 4's tables, each once: its columns with their types by kind, as each database
# spells them (`_SQLITE_TYPES`, `_PG_TYPES`); `{id}` is a row id the database assigns.
_TABLE_COLUMNS = {
    # Each workflow id, run id and process a record names, once; the first row of a workflow
    # is its chain's key. A name is any text records share: event types, nodes, actors,
    # stamps (keyed by SHA-256, so that PostgreSQL's index takes any length).
    "audit_runs": "id {id}, workflow_id {text} NOT NULL, run_id {text} NOT NULL,"
    " process {text} NOT NULL, UNIQUE (workflow_id, run_id, process)",
    "audit_names": "id {id}, sha256 {bytes} NOT NULL UNIQUE, name {text} NOT NULL",
    "audit_records": "workflow_id {int} NOT NULL, seq {int} NOT NULL, run {int} NOT NULL,"
    " event {text} NOT NULL, event_type {int} NOT NULL, node {int} NOT NULL,"
    " actor {int} NOT NULL, stamp {int} NOT NULL, occurred_at {int} NOT NULL,"
    " recorded_at {int} NOT NULL, retain_until {int} NOT NULL, prev_hash {bytes} NOT NULL,"
    " record_hash {bytes} NOT NULL, record_json {text} NOT NULL,"
    " PRIMARY KEY (workflow_id, seq), UNIQUE (event, run, event_type, node)",
    "audit_chains": "workflow_id {text} PRIMARY KEY, head_seq {int} NOT NULL,"
    " head_hash {text} NOT NULL",
    "audit_tombstones": "workflow_id {text} PRIMARY KEY, tombstone_json {text} NOT NULL",
    "audit_holds": "workflow_id {text} PRIMARY KEY, held_at {text} NOT NULL,"
    " held_by {text} NOT NULL, reason {text} NOT NULL",
    # Signed retention overrides (baton.audit.retention), newest by recorded_at.
    "audit_overrides": "override_id {text} PRIMARY KEY, recorded_at {text} NOT NULL,"
    " override_json {text} NOT NULL",
    # Values stored once (see baton.audit.store's docstring), and which chains refer to each.
    "audit_values": "id {id}, sha256 {bytes} NOT NULL UNIQUE, value_json {text} NOT NULL",
    "audit_refs": "value {int} NOT NULL, workflow_id {int} NOT NULL,"
    " PRIMARY KEY (value, workflow_id)",
}
# SQLite's tables of small rows looked up by their key only: kept in their key's order, no
# rowid index. audit_values stays a rowid table: values of a few KiB stay on their page
# there, where a WITHOUT ROWID table would spill them onto overflow pages of their own.
_WITHOUT_ROWID = frozenset(
    {"audit_chains", "audit_tombstones", "audit_holds", "audit_overrides", "audit_refs"}
)
_SQLITE_TYPES = {"id": "INTEGER PRIMARY KEY", "int": "INTEGER", "text": "TEXT", "bytes": "BLOB"}
_PG_TYPES = {
    "id": "bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY",
    "int": "bigint",
    "text": "text",
    "bytes": "bytea",
}


def _create_tables(types: Mapping[str, str], *, sqlite: bool) -> list[str]:
    """The statements that make the tables that are missing, in one database's types."""
    return [
        f"CREATE TABLE IF NOT EXISTS {table} ({columns.format_map(types)})"
        + (" WITHOUT ROWID" if sqlite and table in _WITHOUT_ROWID else "")
        for table, columns in _TABLE_COLUMNS.items()
    ]


# -- SQLite --------------------------------------------------------------------------------------

_SQLITE_SCHEMA = (
    *_create_tables(_SQLITE_TYPES, sqlite=True),
    # Guards: records, runs, names, tombstones and overrides are never changed, a chain head
    # only moves forward, and records, runs or heads go only with a tombstone (a purge).
    # Whoever drops a guard is caught by verify(), which reports the missing trigger and
    # never recreates it.
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_update BEFORE UPDATE ON audit_records
        BEGIN SELECT RAISE(ABORT, 'audit_records is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_records_no_delete BEFORE DELETE ON audit_records
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones t JOIN audit_runs r
            ON r.workflow_id = t.workflow_id WHERE r.id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'audit_records is append-only: only a purge deletes'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_runs_no_update BEFORE UPDATE ON audit_runs
        BEGIN SELECT RAISE(ABORT, 'audit_runs is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_runs_no_delete BEFORE DELETE ON audit_runs
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'audit_runs is append-only: only a purge deletes'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_names_no_update BEFORE UPDATE ON audit_names
        BEGIN SELECT RAISE(ABORT, 'audit_names is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_names_no_delete BEFORE DELETE ON audit_names
        BEGIN SELECT RAISE(ABORT, 'audit_names is append-only'); END""",
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
    # A value is never changed and goes only when no chain refers to it; a reference goes
    # only with its chain's purge.
    """CREATE TRIGGER IF NOT EXISTS audit_values_no_update BEFORE UPDATE ON audit_values
        BEGIN SELECT RAISE(ABORT, 'audit_values is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_values_no_delete BEFORE DELETE ON audit_values
        WHEN EXISTS (SELECT 1 FROM audit_refs WHERE value = OLD.id)
        BEGIN SELECT RAISE(ABORT, 'a value goes only when no record refers to it'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_refs_no_update BEFORE UPDATE ON audit_refs
        BEGIN SELECT RAISE(ABORT, 'audit_refs is append-only'); END""",
    """CREATE TRIGGER IF NOT EXISTS audit_refs_no_delete BEFORE DELETE ON audit_refs
        WHEN NOT EXISTS (SELECT 1 FROM audit_tombstones t JOIN audit_runs r
            ON r.workflow_id = t.workflow_id WHERE r.id = OLD.workflow_id)
        BEGIN SELECT RAISE(ABORT, 'audit_refs is append-only: only a purge deletes'); END""",
)
# What verify() expects to find; a name missing is reported as a dropped guard.
GUARDS: tuple[str, ...] = (
    "audit_records_no_update",
    "audit_records_no_delete",
    "audit_runs_no_update",
    "audit_runs_no_delete",
    "audit_names_no_update",
    "audit_names_no_delete",
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
# Made with version 4's tables: a store that lacks it is of version 3 or before, its records
# in the tables of that version, not moved aside yet (store_schema_v3).
_RUNS = "audit_runs"
# Made after stores were in use: a reader finds none in a store no writer of version 3 or
# later has opened yet, and takes that as no override (not as "not an audit store").
_OVERRIDES = "audit_overrides"

# -- PostgreSQL ----------------------------------------------------------------------------------

_PG_SCHEMA = (
    *_create_tables(_PG_TYPES, sqlite=False),
    """CREATE OR REPLACE FUNCTION audit_refuse() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN RAISE EXCEPTION '% is append-only', TG_TABLE_NAME; END $$""",
    """CREATE OR REPLACE FUNCTION audit_refuse_unless_purged() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM audit_tombstones WHERE workflow_id = OLD.workflow_id)
            THEN RAISE EXCEPTION '% is append-only: only a purge deletes', TG_TABLE_NAME; END IF;
            RETURN OLD; END $$""",
    # For rows that name their chain by its key in audit_runs.
    """CREATE OR REPLACE FUNCTION audit_refuse_unless_chain_purged() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF NOT EXISTS (SELECT 1 FROM audit_tombstones t JOIN audit_runs r
                ON r.workflow_id = t.workflow_id WHERE r.id = OLD.workflow_id)
            THEN RAISE EXCEPTION '% is append-only: only a purge deletes', TG_TABLE_NAME; END IF;
            RETURN OLD; END $$""",
    """CREATE OR REPLACE FUNCTION audit_head_forward() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF NEW.head_seq <= OLD.head_seq OR NEW.workflow_id <> OLD.workflow_id
            THEN RAISE EXCEPTION 'a chain head only moves forward'; END IF;
            RETURN NEW; END $$""",
    """CREATE OR REPLACE FUNCTION audit_refuse_value_referenced() RETURNS trigger
        LANGUAGE plpgsql AS $$ BEGIN
            IF EXISTS (SELECT 1 FROM audit_refs WHERE value = OLD.id)
            THEN RAISE EXCEPTION 'a value goes only when no record refers to it'; END IF;
            RETURN OLD; END $$""",
    """CREATE OR REPLACE TRIGGER audit_records_no_update BEFORE UPDATE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_records_no_delete BEFORE DELETE ON audit_records
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_chain_purged()""",
    """CREATE OR REPLACE TRIGGER audit_runs_no_update BEFORE UPDATE ON audit_runs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_runs_no_delete BEFORE DELETE ON audit_runs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_purged()""",
    """CREATE OR REPLACE TRIGGER audit_names_no_update BEFORE UPDATE ON audit_names
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_names_no_delete BEFORE DELETE ON audit_names
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
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
    """CREATE OR REPLACE TRIGGER audit_values_no_update BEFORE UPDATE ON audit_values
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_values_no_delete BEFORE DELETE ON audit_values
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_value_referenced()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_update BEFORE UPDATE ON audit_refs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_delete BEFORE DELETE ON audit_refs
        FOR EACH ROW EXECUTE FUNCTION audit_refuse_unless_chain_purged()""",
    # TRUNCATE skips row triggers: refuse it as a statement.
    """CREATE OR REPLACE TRIGGER audit_records_no_truncate BEFORE TRUNCATE ON audit_records
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_runs_no_truncate BEFORE TRUNCATE ON audit_runs
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_names_no_truncate BEFORE TRUNCATE ON audit_names
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_values_no_truncate BEFORE TRUNCATE ON audit_values
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
    """CREATE OR REPLACE TRIGGER audit_refs_no_truncate BEFORE TRUNCATE ON audit_refs
        FOR EACH STATEMENT EXECUTE FUNCTION audit_refuse()""",
)
# Statement guards, PostgreSQL's only.
_PG_TRUNCATE_GUARDS = (
    "audit_records_no_truncate",
    "audit_runs_no_truncate",
    "audit_names_no_truncate",
    "audit_values_no_truncate",
    "audit_refs_no_truncate",
)
