"""Reading the audit store, the same in SQLite and PostgreSQL: a chain's records with their
values in full, the chains and heads that checkpoints are checked against, holds, tombstones,
retention overrides, and verify(). A reader never creates a store or changes one.

Records of schema version 4 are read from the layout `store_compact` reads; those of version
3 and before from the tables that version kept them in (`store_legacy`), moved aside once a
writer of version 4 opened the store, or under their own names before. A chain may run on
from the older tables into the newer: its records are read from both, in seq order.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Collection
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any

from baton.audit.anchor import StoredChain, Tombstone
from baton.audit.events import AuditRecord
from baton.audit.store_compact import Compact
from baton.audit.store_layout import _Tx, chunks, marks, texts
from baton.audit.store_legacy import Legacy
from baton.audit.store_schema import _OVERRIDES, _PG_TRUNCATE_GUARDS, _RUNS, _TABLES, GUARDS
from baton.audit.store_schema_v3 import (
    OVERRIDE_GUARDS,
    SHARED_GUARDS,
    legacy_guards,
    legacy_tables,
)
from baton.audit.verify import (
    ChainHead,
    Problem,
    StoredRow,
    VerifyReport,
    store_problem,
    summarise,
    verify_chain,
)

__all__ = ["AuditStoreMissing", "_StoreReader", "_Tx"]


class AuditStoreMissing(LookupError):
    """No audit store where the URL points: a reader never creates one."""


class _StoreReader(ABC):
    """The reads both databases share; connections, catalog queries and time conversion
    are each database's own."""

    _POSTGRES = False

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[_Tx]: ...

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    @abstractmethod
    def _table_names(self, tx: _Tx) -> set[str]: ...

    @abstractmethod
    def _trigger_names(self, tx: _Tx) -> set[str]: ...

    @abstractmethod
    def _not_a_store(self, missing: str) -> str:
        """The error when the tables ``missing`` are not there, saying where it looked."""

    def _require_schema(self, tx: _Tx) -> set[str]:
        """The store's tables; AuditStoreMissing when they are not there."""
        names = self._table_names(tx)
        missing = [t for t in _TABLES if t not in names]
        if missing:
            raise AuditStoreMissing(self._not_a_store(", ".join(missing)))
        return names

    def _layouts(self, tx: _Tx, tables: set[str]) -> tuple[Legacy | None, Compact | None]:
        """The store's records of version 3 and before, and of version 4, where it has any."""
        legacy = legacy_tables(tables)
        return (
            None if legacy is None else Legacy(tx, legacy, self._from_db_time),
            Compact(tx) if _RUNS in tables else None,
        )

    def _expected_guards(self, tables: set[str]) -> list[str]:
        """The guards a store with ``tables`` has: those of version 4's tables, or of a store
        of version 3 not opened by a writer of version 4 yet, and of the tables moved aside."""
        legacy = legacy_tables(tables)
        if _RUNS in tables:
            expected = [*GUARDS, *(_PG_TRUNCATE_GUARDS if self._POSTGRES else ())]
        else:
            # A store of version 3 or before: overrides came late, values later still.
            expected = [*SHARED_GUARDS, *(OVERRIDE_GUARDS if _OVERRIDES in tables else ())]
        if legacy is not None:
            expected += legacy_guards(legacy, postgres=self._POSTGRES)
        return expected

    def records(self, workflow_id: str) -> list[AuditRecord]:
        """A chain's records in order, each with its values in full."""
        with self._transaction(write=False) as tx:
            legacy, compact = self._layouts(tx, self._require_schema(tx))
            found: list[AuditRecord] = []
            if legacy is not None:
                found += legacy.read(legacy.rows(workflow_id))
            if compact is not None:
                found += compact.records(compact.rows(workflow_id))
        return sorted(found, key=lambda record: record.seq)

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Chains with a record of `process` (any, if None) and activity at or after `since`,
        oldest first."""
        spans: dict[str, tuple[datetime, datetime]] = {}
        with self._transaction(write=False) as tx:
            for layout in self._layouts(tx, self._require_schema(tx)):
                for workflow_id, first, last in layout.activity(process) if layout else ():
                    seen = spans.get(workflow_id, (first, last))
                    spans[workflow_id] = (min(first, seen[0]), max(last, seen[1]))
        found = [(first, w) for w, (first, last) in spans.items() if since is None or last >= since]
        return [workflow_id for _, workflow_id in sorted(found)]

    def chains(self, workflow_id: str | None = None) -> dict[str, StoredChain]:
        """Each chain's records as the checkpoints are checked against them."""
        chains: dict[str, StoredChain] = {}
        with self._transaction(write=False) as tx:
            found: list[tuple[str, int, str, str, datetime]] = []
            for layout in self._layouts(tx, self._require_schema(tx)):
                found += layout.chain_rows(workflow_id) if layout else []
        for workflow_id_, seq, hash_, event_type, recorded_at in found:
            chain = chains.setdefault(workflow_id_, StoredChain({}, {}, {}))
            chain.hashes[seq] = hash_
            chain.types[seq] = event_type
            chain.recorded_at[seq] = recorded_at
        return chains

    def heads(self, workflow_ids: Collection[str] | None = None) -> dict[str, ChainHead]:
        """The chains' heads as the store says now (what a checkpoint signs): every
        chain's, or those of ``workflow_ids``."""
        select = "SELECT workflow_id, head_seq, head_hash FROM audit_chains"
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            if workflow_ids is None:
                found = tx.rows(select)
            else:
                found = []
                for chunk in chunks(sorted(workflow_ids)):
                    found += tx.rows(f"{select} WHERE workflow_id IN ({marks(chunk)})", chunk)
        return {str(r[0]): ChainHead(int(r[1]), str(r[2])) for r in found}

    def holds(self) -> dict[str, tuple[str, str, str]]:
        """Runs under legal hold: (held at, by whom, why)."""
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows("SELECT workflow_id, held_at, held_by, reason FROM audit_holds")
        return {str(r[0]): (str(r[1]), str(r[2]), str(r[3])) for r in found}

    def tombstones(self) -> dict[str, Tombstone]:
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows("SELECT workflow_id, tombstone_json FROM audit_tombstones")
        return {str(r[0]): Tombstone.model_validate_json(str(r[1])) for r in found}

    def retention_overrides(self) -> dict[str, str]:
        """Every retention override as stored, by id: the JSON as it is, for whoever
        checks it to say what is wrong with a row that is no longer an override."""
        with self._transaction(write=False) as tx:
            if _OVERRIDES not in self._require_schema(tx):
                return {}
            found = tx.rows("SELECT override_id, override_json FROM audit_overrides")
        return {str(r[0]): str(r[1]) for r in found}

    def verify(self, workflow_id: str | None = None) -> VerifyReport:
        """Recompute every hash and check seq continuity and links, for one chain or all,
        and that the append-only guards are in place. Reads only: a store that is not there
        is an error, never created, and a dropped guard is reported, never put back."""
        problems: list[Problem] = []
        chains = records = 0
        with self._transaction(write=False) as tx:
            tables = self._require_schema(tx)
            triggers = self._trigger_names(tx)
            problems += [
                store_problem(
                    "guard_missing",
                    f"the trigger {name} is gone: the database no longer stops edits "
                    "or deletions, so anything verified here may have been changed meanwhile",
                )
                for name in self._expected_guards(tables)
                if name not in triggers
            ]
            legacy, compact = self._layouts(tx, tables)
            if workflow_id is not None and not self._known(tx, workflow_id, legacy, compact):
                raise LookupError(
                    f"no audit records for run '{workflow_id}' in this store: check the id "
                    "(`baton audit verify` without an id checks every run)"
                )
            if workflow_id is None and compact is not None:
                problems += _orphans(compact.orphans())
            for chain in self._chains_to_verify(tx, workflow_id, legacy, compact):
                rows: list[StoredRow] = []
                if legacy is not None:
                    rows += legacy.stored_rows(chain)
                if compact is not None:
                    rows += compact.stored_rows(compact.rows(chain))
                head = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?", (chain,)
                )
                problems += verify_chain(
                    chain,
                    sorted(rows, key=lambda row: row.seq),
                    ChainHead(int(head[0][0]), str(head[0][1])) if head else None,
                )
                chains += 1
                records += len(rows)
        return summarise(chains, records, problems)

    def _known(
        self, tx: _Tx, workflow_id: str, legacy: Legacy | None, compact: Compact | None
    ) -> bool:
        return (
            any(
                tx.rows(f"SELECT 1 FROM {table} WHERE workflow_id = ?", (workflow_id,))
                for table in ("audit_chains", "audit_tombstones")
            )
            or (legacy is not None and legacy.known(workflow_id))
            or (compact is not None and compact.chain_key(workflow_id) is not None)
        )

    def _chains_to_verify(
        self, tx: _Tx, workflow_id: str | None, legacy: Legacy | None, compact: Compact | None
    ) -> list[str]:
        if workflow_id is not None:
            return [workflow_id]
        found = texts(tx, "SELECT workflow_id FROM audit_chains")
        for layout in (legacy, compact):
            found |= layout.workflow_ids() if layout else set()
        return sorted(found)


def _orphans(orphans: dict[int, int]) -> list[Problem]:
    return [
        store_problem(
            "missing",
            f"{count} record(s) of chain {key} are stored without their run: its row "
            "in audit_runs, which names the workflow, is gone",
        )
        for key, count in sorted(orphans.items())
    ]
