"""The audit store's tables and their guards, in SQLite and in PostgreSQL, and the names
verify() expects to find. The DDL is idempotent: a writer runs it on first use, so a store
made by an older version gains the tables and guards it lacks and loses nothing (a store of
schema version 3 or before is first moved aside: `store_schema_v3`).

The records are laid out as `baton.audit.store_layout` describes: ids where a text recurs
(runs, names, values), integers for times, bytes for hashes.
"""

from __future__ import annotations

# -- SQLite --------------------------------------------------------------------------------------

_SQLITE_SCHEMA = (
    # Each workflow id, run id and process a record names, once; the first row of a workflow
    # is its chain's key. A name is any text records share: event types, nodes, actors,
    # stamps (keyed by SHA-256, so that PostgreSQL's index takes any length).
    """CREATE TABLE IF NOT EXISTS audit_runs (
        id INTEGER PRIMARY KEY, workflow_id TEXT NOT NULL, run_id TEXT NOT NULL,
        process TEXT NOT NULL, UNIQUE (workflow_id, run_id, process))""",
    """CREATE TABLE IF NOT EXISTS audit_names (
        id INTEGER PRIMARY KEY, sha256 BLOB NOT NULL UNIQUE, name TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_records (
        workflow_id INTEGER NOT NULL, seq INTEGER NOT NULL, run INTEGER NOT NULL,
        event TEXT NOT NULL, event_type INTEGER NOT NULL, node INTEGER NOT NULL,
        actor INTEGER NOT NULL, stamp INTEGER NOT NULL, occurred_at INTEGER NOT NULL,
        recorded_at INTEGER NOT NULL, retain_until INTEGER NOT NULL, prev_hash BLOB NOT NULL,
        record_hash BLOB NOT NULL, record_json TEXT NOT NULL,
        PRIMARY KEY (workflow_id, seq), UNIQUE (event, run, event_type, node))""",
    # Small rows looked up by their key only: kept in their key's order, no rowid index.
    """CREATE TABLE IF NOT EXISTS audit_chains (
        workflow_id TEXT PRIMARY KEY, head_seq INTEGER NOT NULL, head_hash TEXT NOT NULL)
        WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS audit_tombstones (
        workflow_id TEXT PRIMARY KEY, tombstone_json TEXT NOT NULL) WITHOUT ROWID""",
    """CREATE TABLE IF NOT EXISTS audit_holds (
        workflow_id TEXT PRIMARY KEY, held_at TEXT NOT NULL, held_by TEXT NOT NULL,
        reason TEXT NOT NULL) WITHOUT ROWID""",
    # Signed retention overrides (baton.audit.retention), newest by recorded_at.
    """CREATE TABLE IF NOT EXISTS audit_overrides (
        override_id TEXT PRIMARY KEY, recorded_at TEXT NOT NULL, override_json TEXT NOT NULL)
        WITHOUT ROWID""",
    # Values stored once (see baton.audit.store's docstring), and which chains refer to each.
    # A rowid table: values of a few KiB stay on their page there, where a WITHOUT ROWID
    # table would spill them onto overflow pages of their own.
    """CREATE TABLE IF NOT EXISTS audit_values (
        id INTEGER PRIMARY KEY, sha256 BLOB NOT NULL UNIQUE, value_json TEXT NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_refs (
        value INTEGER NOT NULL, workflow_id INTEGER NOT NULL, PRIMARY KEY (value, workflow_id))
        WITHOUT ROWID""",
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
    """CREATE TABLE IF NOT EXISTS audit_runs (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, workflow_id text NOT NULL,
        run_id text NOT NULL, process text NOT NULL, UNIQUE (workflow_id, run_id, process))""",
    """CREATE TABLE IF NOT EXISTS audit_names (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sha256 bytea NOT NULL UNIQUE,
        name text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_records (
        workflow_id bigint NOT NULL, seq bigint NOT NULL, run bigint NOT NULL,
        event text NOT NULL, event_type bigint NOT NULL, node bigint NOT NULL,
        actor bigint NOT NULL, stamp bigint NOT NULL, occurred_at bigint NOT NULL,
        recorded_at bigint NOT NULL, retain_until bigint NOT NULL, prev_hash bytea NOT NULL,
        record_hash bytea NOT NULL, record_json text NOT NULL,
        PRIMARY KEY (workflow_id, seq), UNIQUE (event, run, event_type, node))""",
    """CREATE TABLE IF NOT EXISTS audit_chains (
        workflow_id text PRIMARY KEY, head_seq bigint NOT NULL, head_hash text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_tombstones (
        workflow_id text PRIMARY KEY, tombstone_json text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_holds (
        workflow_id text PRIMARY KEY, held_at text NOT NULL, held_by text NOT NULL,
        reason text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_overrides (
        override_id text PRIMARY KEY, recorded_at text NOT NULL, override_json text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_values (
        id bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY, sha256 bytea NOT NULL UNIQUE,
        value_json text NOT NULL)""",
    """CREATE TABLE IF NOT EXISTS audit_refs (
        value bigint NOT NULL, workflow_id bigint NOT NULL, PRIMARY KEY (value, workflow_id))""",
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
