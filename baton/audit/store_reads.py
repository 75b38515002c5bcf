"""Reading the audit store, the same in SQLite and PostgreSQL: a chain's records with their
values in full, the chains and heads that checkpoints are checked against, holds, tombstones,
retention overrides, and verify(). A reader never creates a store or changes one.
"""

from __future__ import annotations

import json
import re
from abc import ABC, abstractmethod
from collections.abc import Collection, Mapping, Sequence
from contextlib import AbstractContextManager
from datetime import datetime
from typing import Any, Protocol

from baton.audit.anchor import StoredChain, Tombstone
from baton.audit.events import AuditRecord, referenced_in, references, thawer
from baton.audit.store_schema import _LATE_GUARDS, _OVERRIDES, _TABLES, _VALUES
from baton.audit.verify import (
    COLUMNS,
    ChainHead,
    Problem,
    StoredRow,
    VerifyReport,
    summarise,
    verify_chain,
)

_BATCH = 500  # stays well under SQLite's bound-parameter limit


class AuditStoreMissing(LookupError):
    """No audit store where the URL points: a reader never creates one."""


class _Tx(Protocol):
    """What the shared logic needs from a transaction; SQL uses `?` placeholders."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int: ...

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None: ...


_ROW_COLUMNS = ", ".join(("seq", *COLUMNS, "record_json"))
_DIGEST = re.compile(r"[0-9a-f]{64}")


def _referred_by(record_json: str) -> set[str]:
    """The values a stored record refers to itself (not through other values)."""
    try:
        doc = json.loads(record_json) if '"$' in record_json else None
    except ValueError:
        return set()
    if not isinstance(doc, dict) or doc.get("schema_version", 1) < 3:
        return set()
    return {d for _, d in references(doc.get("data"))}


class _StoreReader(ABC):
    """The reads both databases share; connections, catalog queries and time conversion
    are each database's own."""

    def __init__(self) -> None:
        self._values_made = False

    @abstractmethod
    def _transaction(self, *, write: bool) -> AbstractContextManager[_Tx]: ...

    @abstractmethod
    def _to_db_time(self, value: datetime) -> object: ...

    @abstractmethod
    def _from_db_time(self, value: Any) -> datetime: ...

    @abstractmethod
    def _table_names(self, tx: _Tx) -> set[str]: ...

    def _require_schema(self, tx: _Tx) -> None:
        """Raise AuditStoreMissing when the tables are not there."""
        names = self._table_names(tx)
        missing = [t for t in _TABLES if t not in names]
        if missing:
            raise AuditStoreMissing(self._not_a_store(", ".join(missing)))

    @abstractmethod
    def _not_a_store(self, missing: str) -> str:
        """The error when the tables ``missing`` are not there, saying where it looked."""

    @abstractmethod
    def _missing_guards(self, tx: _Tx) -> list[str]: ...

    def records(self, workflow_id: str) -> list[AuditRecord]:
        """A chain's records in order, each with its values in full."""
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows(
                f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE workflow_id = ? ORDER BY seq",
                (workflow_id,),
            )
            return self._read(tx, found)

    def _read(self, tx: _Tx, rows: Sequence[tuple[Any, ...]]) -> list[AuditRecord]:
        """Records from their rows (``_ROW_COLUMNS``), values in full."""
        stored = []
        for row in rows:
            doc: dict[str, Any] = {"seq": row[0], **dict(zip(COLUMNS, row[1:-1], strict=True))}
            text = str(row[-1])
            # The JSON has the last word: a record stored before version 3 holds it all.
            doc.update(json.loads(text))
            # Canonical JSON prints "$" as it is: without one, nothing refers or is escaped.
            thawed = doc.get("schema_version", 1) >= 3 and '"$' in text
            stored.append((doc, text if thawed else None))
        values = self._values(tx, {d for _, text in stored if text for d in referenced_in(text)})
        thaw = thawer(values)
        return [
            AuditRecord.model_validate(doc if text is None else {**doc, **thaw(text)})
            for doc, text in stored
        ]

    def _values(self, tx: _Tx, digests: Collection[str]) -> dict[str, str]:
        """The stored text of the values ``digests`` name and of those they hold in turn,
        by SHA-256; a value the store does not have is left out."""
        found: dict[str, str] = {}
        wanted = {d for d in digests if _DIGEST.fullmatch(d)}
        if not wanted or not self._values_table(tx):
            return found
        asked: set[str] = set()
        while wanted:
            asked |= wanted
            batch = sorted(wanted)
            wanted = set()
            for start in range(0, len(batch), _BATCH):
                chunk = batch[start : start + _BATCH]
                for key, text in tx.rows(
                    "SELECT sha256, value_json FROM audit_values"
                    f" WHERE sha256 IN ({', '.join('?' * len(chunk))})",
                    [bytes.fromhex(d) for d in chunk],
                ):
                    found[bytes(key).hex()] = str(text)
                    wanted |= referenced_in(str(text))
            wanted -= asked
        return found

    def _values_table(self, tx: _Tx) -> bool:
        # Made by the first write of this version; checked once seen, as tables stay.
        if not self._values_made:
            self._values_made = _VALUES in self._table_names(tx)
        return self._values_made

    def workflow_ids(
        self, *, process: str | None = None, since: datetime | None = None
    ) -> list[str]:
        """Chains with a record of `process` (any, if None) and activity at or after `since`,
        oldest first."""
        where, having = "", ""
        params: list[object] = []
        if process is not None:
            where = " WHERE process = ?"
            params.append(process)
        if since is not None:
            having = " HAVING MAX(occurred_at) >= ?"
            params.append(self._to_db_time(since))
        sql = (
            f"SELECT workflow_id FROM audit_records{where} GROUP BY workflow_id{having}"
            " ORDER BY MIN(occurred_at), workflow_id"
        )
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            return [str(row[0]) for row in tx.rows(sql, params)]

    def chains(self, workflow_id: str | None = None) -> dict[str, StoredChain]:
        """Each chain's records as the checkpoints are checked against them."""
        where, params = (
            ("", ()) if workflow_id is None else (" WHERE workflow_id = ?", (workflow_id,))
        )
        chains: dict[str, StoredChain] = {}
        with self._transaction(write=False) as tx:
            self._require_schema(tx)
            found = tx.rows(
                "SELECT workflow_id, seq, record_hash, event_type, recorded_at"
                f" FROM audit_records{where}",
                params,
            )
        for workflow_id_, seq, hash_, event_type, recorded_at in found:
            chain = chains.setdefault(str(workflow_id_), StoredChain({}, {}, {}))
            chain.hashes[int(seq)] = str(hash_)
            chain.types[int(seq)] = str(event_type)
            chain.recorded_at[int(seq)] = self._from_db_time(recorded_at)
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
                wanted = sorted(workflow_ids)
                found = []
                for start in range(0, len(wanted), _BATCH):
                    chunk = wanted[start : start + _BATCH]
                    marks = ", ".join("?" * len(chunk))
                    found += tx.rows(f"{select} WHERE workflow_id IN ({marks})", chunk)
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
            self._require_schema(tx)
            if _OVERRIDES not in self._table_names(tx):
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
            self._require_schema(tx)
            # A store no writer of this version has opened yet has no override or value
            # tables (the first write makes them), so no guards of them to miss either.
            tables = self._table_names(tx)
            unmade = {g for t, guards in _LATE_GUARDS.items() if t not in tables for g in guards}
            problems += [
                Problem(
                    workflow_id="",
                    seq=0,
                    event_id="",
                    kind="guard_missing",
                    detail=f"the trigger {name} is gone: the database no longer stops edits "
                    "or deletions, so anything verified here may have been changed meanwhile",
                )
                for name in self._missing_guards(tx)
                if name not in unmade
            ]
            if workflow_id is not None and not self._known(tx, workflow_id):
                raise LookupError(
                    f"no audit records for run '{workflow_id}' in this store: check the id "
                    "(`baton audit verify` without an id checks every run)"
                )
            for chain in self._chains_to_verify(tx, workflow_id):
                rows = self._stored_rows(tx, chain)
                head = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?", (chain,)
                )
                problems += verify_chain(
                    chain, rows, ChainHead(int(head[0][0]), str(head[0][1])) if head else None
                )
                chains += 1
                records += len(rows)
        return summarise(chains, records, problems)

    def _known(self, tx: _Tx, workflow_id: str) -> bool:
        return any(
            tx.rows(f"SELECT 1 FROM {table} WHERE workflow_id = ?", (workflow_id,))
            for table in ("audit_chains", "audit_records", "audit_tombstones")
        )

    def _chains_to_verify(self, tx: _Tx, workflow_id: str | None) -> list[str]:
        if workflow_id is not None:
            return [workflow_id]
        found = tx.rows(
            "SELECT workflow_id FROM audit_chains UNION"
            " SELECT workflow_id FROM audit_records ORDER BY 1"
        )
        return [str(row[0]) for row in found]

    def _stored_rows(self, tx: _Tx, workflow_id: str) -> list[StoredRow]:
        found = tx.rows(
            f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )
        values = self._values(tx, {d for row in found for d in _referred_by(str(row[-1]))})
        return [self._stored_row(row, values) for row in found]

    def _stored_row(self, row: tuple[Any, ...], values: Mapping[str, str]) -> StoredRow:
        columns = dict(zip(COLUMNS, row[1:-1], strict=True))
        for name in ("occurred_at", "recorded_at", "retain_until"):
            columns[name] = self._from_db_time(columns[name])
        return StoredRow(seq=int(row[0]), columns=columns, record_json=str(row[-1]), values=values)
