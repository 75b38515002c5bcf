"""Writing the audit store, the same in SQLite and PostgreSQL: appends that chain events
and take each once, purges that leave a signed tombstone per chain, legal holds, and
retention overrides. The database's guards (`store_schema`) refuse anything else.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

from baton.audit.anchor import Tombstone
from baton.audit.events import AuditEvent, AuditRecord, event_content, format_timestamp, sealed
from baton.audit.retention import RetentionOverride
from baton.audit.store_reads import _BATCH, _DIGEST, _ROW_COLUMNS, _referred_by, _StoreReader, _Tx
from baton.audit.verify import COLUMNS, ChainHead

Clock = Callable[[], datetime]


class RetentionError(Exception):
    """A purge would delete records still inside the configured minimum retention."""


class AuditConflict(Exception):
    """An event id already stored came again with other content: two writers disagree
    about what happened (a code change that reuses ids, a forger). Nothing is written."""


_INSERT = (
    f"INSERT INTO audit_records ({_ROW_COLUMNS}) VALUES ({', '.join('?' * (len(COLUMNS) + 2))})"
    " ON CONFLICT (event_id) DO NOTHING"
)
_CHAIN_AGE = (
    "SELECT workflow_id FROM audit_records GROUP BY workflow_id"
    " HAVING MAX(occurred_at) < ? AND MAX(recorded_at) < ? AND MAX(retain_until) <= ?"
)
_INSERT_VALUE = (
    "INSERT INTO audit_values (sha256, value_json) VALUES (?, ?) ON CONFLICT (sha256) DO NOTHING"
)
_INSERT_REF = (
    "INSERT INTO audit_refs (sha256, workflow_id) VALUES (?, ?)"
    " ON CONFLICT (sha256, workflow_id) DO NOTHING"
)


class _SqlAuditStore(_StoreReader):
    """Everything but connections, DDL and time conversion is shared by both databases."""

    _LOCK_SUFFIX = ""

    def __init__(self, *, clock: Clock | None) -> None:
        super().__init__()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._schema_lock = threading.Lock()
        self._schema_ready = False

    @abstractmethod
    def _create_schema(self) -> None: ...

    @abstractmethod
    def _lock_values(self, tx: _Tx) -> None:
        """Keep appenders from referring to values until this transaction ends, so that a
        value is never deleted while a reference to it is being added."""

    def append(self, events: Sequence[AuditEvent], *, retention_days: int) -> int:
        """Store the events not stored yet; returns how many were new."""
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if not events:
            return 0
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            heads = self._lock_heads(tx, sorted({event.workflow_id for event in events}))
            stored = self._stored_events(tx, [event.event_id for event in events])
            for event in events:
                if event.event_id in stored and stored[event.event_id] != event_content(event):
                    raise AuditConflict(
                        f"event {event.event_id} is stored already with other content: "
                        "a writer reuses an id for another event; nothing of this batch was "
                        "written"
                    )
            seen = set(stored)
            recorded_at = self._clock()
            retain_until = recorded_at + timedelta(days=retention_days)
            added = 0
            moved: dict[str, ChainHead] = {}
            values: dict[str, str] = {}
            refs: set[tuple[str, str]] = set()
            for event in events:
                if event.event_id in seen:
                    continue
                seen.add(event.event_id)
                head = heads[event.workflow_id]
                record = sealed(
                    event,
                    seq=head.seq + 1,
                    prev_hash=head.hash,
                    recorded_at=recorded_at,
                    retain_until=retain_until,
                )
                # Zero rows: the id was appended concurrently under another workflow_id.
                if tx.run(_INSERT, self._row_params(record.record, record.stored)):
                    heads[event.workflow_id] = ChainHead(
                        record.record.seq, record.record.record_hash
                    )
                    moved[event.workflow_id] = heads[event.workflow_id]
                    added += 1
                    values.update(record.values)
                    refs.update((digest, event.workflow_id) for digest in record.values)
            # Values before references: a purge on PostgreSQL locks the values table, then
            # reads the references, so it waits for this transaction or this one for it.
            tx.many(_INSERT_VALUE, [(bytes.fromhex(d), text) for d, text in values.items()])
            tx.many(_INSERT_REF, [(bytes.fromhex(d), w) for d, w in sorted(refs)])
            for workflow_id, head in moved.items():
                tx.run(
                    "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE workflow_id = ?",
                    (head.seq, head.hash, workflow_id),
                )
        return added

    def _lock_heads(self, tx: _Tx, workflow_ids: Sequence[str]) -> dict[str, ChainHead]:
        # Sorted order everywhere, so two appenders locking several chains cannot deadlock.
        heads: dict[str, ChainHead] = {}
        for workflow_id in workflow_ids:
            while workflow_id not in heads:  # a concurrent purge may delete the fresh head
                tx.run(
                    "INSERT INTO audit_chains (workflow_id, head_seq, head_hash)"
                    " VALUES (?, 0, '') ON CONFLICT (workflow_id) DO NOTHING",
                    (workflow_id,),
                )
                found = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?"
                    + self._LOCK_SUFFIX,
                    (workflow_id,),
                )
                if found:
                    heads[workflow_id] = ChainHead(int(found[0][0]), str(found[0][1]))
        return heads

    def _stored_events(self, tx: _Tx, event_ids: Sequence[str]) -> dict[str, str]:
        """The ids among ``event_ids`` already stored, with their content as compared."""
        unique = sorted(set(event_ids))
        stored: dict[str, str] = {}
        for start in range(0, len(unique), _BATCH):
            chunk = unique[start : start + _BATCH]
            marks = ", ".join("?" * len(chunk))
            found = tx.rows(
                f"SELECT {_ROW_COLUMNS} FROM audit_records WHERE event_id IN ({marks})", chunk
            )
            stored.update((r.event_id, event_content(r)) for r in self._read(tx, found))
        return stored

    def _row_params(self, record: AuditRecord, stored: str) -> list[object]:
        values: list[object] = [record.seq]
        for column in COLUMNS:
            value = getattr(record, column)
            values.append(self._to_db_time(value) if isinstance(value, datetime) else value)
        values.append(stored)
        return values

    def purge(
        self,
        before: datetime,
        *,
        min_retention_days: int,
        now: datetime,
        tombstone: Callable[[str, ChainHead], Tombstone],
    ) -> int:
        """Delete whole chains last written before `before`; returns records removed.

        A chain is kept while any of its records is inside its own retain_until, even past
        `before`: the retention an event was appended with is a promise made to someone. A
        chain under legal hold is kept whatever its age. Each chain deleted leaves the
        signed tombstone that ``tombstone`` makes (what, up to which record, by whom, why):
        the database refuses the deletion without one.
        """
        if min_retention_days < 0:
            raise ValueError("min_retention_days must not be negative")
        earliest = now - timedelta(days=min_retention_days)
        if before > earliest:
            raise RetentionError(
                f"refusing to purge records before {format_timestamp(before)}: the earliest "
                f"allowed cutoff is {format_timestamp(earliest)} (now minus the configured "
                f"minimum retention of {min_retention_days} days)"
            )
        self._ensure_schema()
        params = (self._to_db_time(before), self._to_db_time(before), self._to_db_time(now))
        with self._transaction(write=True) as tx:
            candidates = sorted(str(row[0]) for row in tx.rows(_CHAIN_AGE, params))
            self._lock_existing_heads(tx, candidates)
            # Re-read under the locks: an append may have extended a chain meanwhile.
            still_old = {str(row[0]) for row in tx.rows(_CHAIN_AGE, params)}
            held = {str(row[0]) for row in tx.rows("SELECT workflow_id FROM audit_holds")}
            removed = 0
            released: set[str] = set()
            for workflow_id in (w for w in candidates if w in still_old and w not in held):
                (found,) = tx.rows(
                    "SELECT head_seq, head_hash FROM audit_chains WHERE workflow_id = ?",
                    (workflow_id,),
                )
                stone = tombstone(workflow_id, ChainHead(int(found[0]), str(found[1])))
                tx.run(
                    "INSERT INTO audit_tombstones (workflow_id, tombstone_json) VALUES (?, ?)",
                    (workflow_id, stone.model_dump_json()),
                )
                released |= self._release_values(tx, workflow_id)
                removed += tx.run("DELETE FROM audit_records WHERE workflow_id = ?", (workflow_id,))
                tx.run("DELETE FROM audit_chains WHERE workflow_id = ?", (workflow_id,))
            self._drop_unreferenced(tx, released)
        return removed

    def hold(self, workflow_id: str, *, by: str, reason: str, now: datetime) -> None:
        """Put a run's records under legal hold: no purge deletes them until released."""
        if not reason.strip():
            raise ValueError("a legal hold needs a reason (the matter it is kept for)")
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            if not tx.rows("SELECT 1 FROM audit_chains WHERE workflow_id = ?", (workflow_id,)):
                raise LookupError(f"no audit records for run '{workflow_id}' to hold")
            tx.run(
                "INSERT INTO audit_holds (workflow_id, held_at, held_by, reason) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
                (workflow_id, format_timestamp(now), by, reason),
            )

    def release(self, workflow_id: str) -> bool:
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            return bool(tx.run("DELETE FROM audit_holds WHERE workflow_id = ?", (workflow_id,)))

    def record_retention_override(self, override: RetentionOverride) -> None:
        """Keep a retention override (checked and countersigned by the caller: see
        baton.audit.anchoring). Append-only: the database refuses to change or delete one."""
        self._ensure_schema()
        with self._transaction(write=True) as tx:
            tx.run(
                "INSERT INTO audit_overrides (override_id, recorded_at, override_json)"
                " VALUES (?, ?, ?)",
                (override.override_id, override.recorded_at, override.model_dump_json()),
            )

    def _lock_existing_heads(self, tx: _Tx, workflow_ids: Sequence[str]) -> None:
        for workflow_id in workflow_ids:
            tx.rows(
                "SELECT head_seq FROM audit_chains WHERE workflow_id = ?" + self._LOCK_SUFFIX,
                (workflow_id,),
            )

    def _release_values(self, tx: _Tx, workflow_id: str) -> set[str]:
        """Drop a chain's references to values (its tombstone written, its records about to
        go); returns the values it referred to, which may now be unreferenced."""
        found = tx.rows(
            "SELECT record_json FROM audit_records WHERE workflow_id = ?", (workflow_id,)
        )
        digests = {d for row in found for d in _referred_by(str(row[0]))}
        # Those held inside them too: the chain has a reference to each.
        released = {d for d in digests | set(self._values(tx, digests)) if _DIGEST.fullmatch(d)}
        tx.many(
            "DELETE FROM audit_refs WHERE sha256 = ? AND workflow_id = ?",
            [(bytes.fromhex(d), workflow_id) for d in sorted(released)],
        )
        return released

    def _drop_unreferenced(self, tx: _Tx, digests: Collection[str]) -> None:
        """Delete those of the values that no chain refers to any more."""
        if not digests:
            return
        self._lock_values(tx)
        tx.many(
            "DELETE FROM audit_values WHERE sha256 = ?"
            " AND NOT EXISTS (SELECT 1 FROM audit_refs WHERE audit_refs.sha256 = ?)",
            [(bytes.fromhex(d),) * 2 for d in sorted(digests)],
        )

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                self._create_schema()
                self._schema_ready = True
