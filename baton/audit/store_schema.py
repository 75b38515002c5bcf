"""The audit store's tables and their guards, in SQLite and in PostgreSQL, and the names
verify() expects to find. The DDL is idempotent: a writer runs it on first use, so a store
made by an older version gains the tables and guards it lacks and loses nothing.
"""

from __future__ import annotations

# -- SQLite --------------------------------------------------------------------------------------

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
    # Values stored once (see baton.audit.store's docstring), and which chains refer to each. A
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

# -- PostgreSQL ----------------------------------------------------------------------------------

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
