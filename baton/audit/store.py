"""Append-only audit store: one hash chain per workflow_id, in SQLite or PostgreSQL.

Appends are idempotent by event_id, so an interceptor may re-send a batch after a retry or
a replay without duplicating anything. Seq and prev_hash are assigned inside one write
transaction that holds the chain head, which is what makes concurrent appenders (threads or
processes) produce one gap-free chain. A connection is opened per operation: the store is
then safe to share between threads and cheap to hand to forked processes.

A record (schema version 4) is kept once, in ids where a text recurs: its workflow id,
run id and process once per run in `audit_runs`, its event type, node, actor and stamp once
per store in `audit_names`, its times as integers and its hashes as bytes in the columns of
`audit_records`, its data as JSON, and each large value once for the whole store in
`audit_values` (keyed by its SHA-256, referred to by row id), with a row in `audit_refs` for
every chain that refers to it, so that a purge can tell which values no remaining chain
needs (`store_layout` has the details). Readers get the values in full; the hashes are
version 3's, over the record as read.

This module is what callers use: `AuditStore` (the base both stores share: one declaration
of what a store does), `open_store`, and the stores and errors they name. The parts live
beside it: `store_schema` (tables and guards), `store_layout` (a row's form), `store_compact`
(its reads and writes), `store_schema_v3` and `store_legacy` (stores of version 3 and
before), `store_writes`, `store_reads` (verify too), `store_sqlite` and `store_postgres`.
"""

from __future__ import annotations

from baton.audit.store_postgres import PostgresAuditStore
from baton.audit.store_reads import AuditStoreMissing
from baton.audit.store_sqlite import SqliteAuditStore
from baton.audit.store_writes import AuditConflict, AuditStore, Clock, RetentionError
from baton.audit.verify import Problem, VerifyReport

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
