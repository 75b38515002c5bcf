"""Writing the audit store, the same in SQLite and PostgreSQL: appends that chain events
and take each once, purges that leave a signed tombstone per chain, legal holds, and
retention overrides. The database's guards (`store_schema`) refuse anything else.
"""

from __future__ import annotations

import threading
from abc import abstractmethod
from collections import Counter
from collections.abc import Callable, Collection, Sequence
from datetime import UTC, datetime, timedelta

from baton.audit.anchor import Tombstone
from baton.audit.events import (
    AuditEvent,
    Sealed,
    canonical_json,
    event_content,
    format_timestamp,
    sealed,
)
from baton.audit.retention import RetentionOverride
from baton.audit.store_compact import Compact
from baton.audit.store_layout import (
    encode_event_id,
    hash_bytes,
    split_stamp,
    stamp_members,
    texts,
    to_ids,
    to_micros,
)
from baton.audit.store_legacy import Legacy
from baton.audit.store_reads import _StoreReader, _Tx
from baton.audit.store_schema_v3 import LegacyTables, legacy_tables
from baton.audit.verify import ChainHead

Clock = Callable[[], datetime]

# How many recurring stamp members a writer remembers (see `_stamps`).
_RECURRING_LIMIT = 4096


class RetentionError(Exception):
    """A purge would delete records still inside the configured minimum retention."""


class AuditConflict(Exception):
    """An event id already stored came again with other content: two writers disagree
    about what happened (a code change that reuses ids, a forger). Nothing is written."""


def _with_findings(held: set[str]) -> set[str]:
    """The chains that a hold on the runs ``held`` keeps: theirs and their findings chains."""
    # Imported here: baton.audit.reconcile reads the store, which is built on this module.
    from baton.audit.reconcile import findings_chain

    return held | {findings_chain(workflow_id) for workflow_id in held}


def to_move_aside(store: AuditStore, tx: _Tx) -> LegacyTables | None:
    """The tables of a store of version 3 or before, which a writer of version 4 moves
    aside (`store_schema_v3`); None when there are none (a new store, or moved already)."""
    tables = store._table_names(tx)
    legacy = legacy_tables(tables)
    if legacy is None or legacy.records != "audit_records":
        return None
    if "event_id" not in store._columns(tx, "audit_records"):
        raise RuntimeError(
            "audit_records holds neither version 4's columns nor version 3's, and audit_runs "
            "is missing: this store was changed by hand; nothing was written"
        )
    return legacy


class AuditStore(_StoreReader):
    """An audit store as callers use it, in either database: everything but connections,
    DDL and time conversion is shared by both."""

    _LOCK_SUFFIX = ""

    def __init__(self, *, clock: Clock | None) -> None:
        super().__init__()
        self._clock = clock or (lambda: datetime.now(UTC))
        self._schema_lock = threading.Lock()
        self._schema_ready = False
        self._legacy: LegacyTables | None = None
        # Names are never changed or deleted: those written are remembered, once committed.
        self._names: dict[str, int] = {}
        self._recurring: set[str] = set()

    @abstractmethod
    def _create_schema(self) -> None:
        """Make the tables and guards that are missing, the tables of a store of version 3
        moved aside first (`store_schema_v3`)."""

    @abstractmethod
    def _columns(self, tx: _Tx, table: str) -> set[str]: ...

    @abstractmethod
    def _lock_event_ids(self, tx: _Tx, event_ids: Collection[str]) -> None:
        """Keep another appender from storing one of ``event_ids`` under another chain
        between this one's look-up and its insert (its chain head is not held here)."""

    @abstractmethod
    def _lock_values(self, tx: _Tx, *, purging: bool) -> None:
        """Keep a value from being deleted while a reference to it is being added: an
        appender (``purging`` False) before it looks up values, a purge before it reads
        the references."""

    def append(self, events: Sequence[AuditEvent], *, retention_days: int) -> int:
        """Store the events not stored yet; returns how many were new."""
        if retention_days < 1:
            raise ValueError("retention_days must be at least 1")
        if not events:
            return 0
        self._ensure_schema()
        names: dict[str, int] = {}
        with self._transaction(write=True) as tx:
            heads = self._lock_heads(tx, sorted({event.workflow_id for event in events}))
            self._lock_event_ids(tx, {event.event_id for event in events})
            compact = Compact(tx)
            stored = self._stored_events(tx, compact, events)
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
            new: list[Sealed] = []
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
                heads[event.workflow_id] = ChainHead(record.record.seq, record.record.record_hash)
                new.append(record)
            if new:
                names = self._write(tx, compact, new)
            for workflow_id in sorted({s.record.workflow_id for s in new}):
                head = heads[workflow_id]
                tx.run(
                    "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE workflow_id = ?",
                    (head.seq, head.hash, workflow_id),
                )
        self._names.update(names)
        return len(new)

    def _write(self, tx: _Tx, compact: Compact, new: Sequence[Sealed]) -> dict[str, int]:
        """Insert the records (runs, names and values first); returns the names used."""
        records = [s.record for s in new]
        runs = compact.run_ids({(r.workflow_id, r.run_id, r.process) for r in records})
        chains = {
            workflow_id: compact.chain_key(workflow_id)
            for workflow_id in {r.workflow_id for r in records}
        }
        values: dict[str, str] = {}
        for s in new:
            values.update(s.values)
        if values:
            self._lock_values(tx, purging=False)
        value_ids = compact.value_ids(values)
        datas, stamps = self._stamps(new)
        actors = [
            canonical_json(r.actor.model_dump(mode="json")) if r.actor else None for r in records
        ]
        wanted = {r.event_type for r in records} | {r.node for r in records if r.node}
        wanted |= {text for text in (*actors, *stamps) if text is not None}
        names = compact.name_ids(wanted, self._names)
        rows: list[list[object]] = []
        refs: set[tuple[int, int]] = set()
        for s, data, actor, stamp in zip(new, datas, actors, stamps, strict=True):
            r = s.record
            chain = chains[r.workflow_id]
            assert chain is not None  # its run was made above
            rows.append(
                [
                    chain,
                    r.seq,
                    runs[(r.workflow_id, r.run_id, r.process)],
                    encode_event_id(r.event_id, r.workflow_id, r.run_id, r.event_type, r.node),
                    names[r.event_type],
                    names[r.node] if r.node else 0,
                    names[actor] if actor else 0,
                    names[stamp] if stamp else 0,
                    to_micros(r.occurred_at),
                    to_micros(r.recorded_at),
                    to_micros(r.retain_until),
                    hash_bytes(r.prev_hash),
                    hash_bytes(r.record_hash),
                    to_ids(data, value_ids),
                ]
            )
            refs |= {(value_ids[digest], chain) for digest in s.values}
        compact.insert(rows)
        # Values before references: a purge on PostgreSQL locks the values table, then
        # reads the references, so it waits for this transaction or this one for it.
        compact.add_refs(refs)
        return names

    def _stamps(self, new: Sequence[Sealed]) -> tuple[list[str], list[str | None]]:
        """Each record's data without its stamp, and its stamp (`store_layout.STAMP_KEYS`),
        as JSON. A stamp member is kept apart only when it recurs: twice in this batch, or
        seen in an earlier one; a traced record's context never does."""
        seen: Counter[str] = Counter()
        for s in new:
            seen.update(stamp_members(s.members))
        recurring = self._recurring | {member for member, n in seen.items() if n > 1}
        datas: list[str] = []
        stamps: list[str | None] = []
        for s in new:
            stamp, rest = split_stamp(s.members, recurring.__contains__)
            stamps.append(stamp)
            datas.append(rest)
        if len(self._recurring) > _RECURRING_LIMIT:
            self._recurring = set()
        self._recurring |= set(seen)
        return datas, stamps

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

    def _stored_events(
        self, tx: _Tx, compact: Compact, events: Sequence[AuditEvent]
    ) -> dict[str, str]:
        """The ids among the events' already stored, with their content as compared."""
        found = compact.by_events(events)
        if self._legacy is not None:
            legacy = Legacy(tx, self._legacy, self._from_db_time)
            found += legacy.by_event_ids([event.event_id for event in events])
        return {record.event_id: event_content(record) for record in found}

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
        chain under legal hold is kept whatever its age, and so is the findings chain of a
        run under hold (what reconcile found about it). Each chain deleted leaves the
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
        with self._transaction(write=True) as tx:
            legacy = None if self._legacy is None else Legacy(tx, self._legacy, self._from_db_time)
            compact = Compact(tx)
            candidates = sorted(self._old_chains(legacy, compact, before, now))
            self._lock_existing_heads(tx, candidates)
            # Re-read under the locks: an append may have extended a chain meanwhile.
            still_old = self._old_chains(legacy, compact, before, now)
            held = _with_findings(texts(tx, "SELECT workflow_id FROM audit_holds"))
            removed = 0
            released: set[str] = set()
            released_ids: set[int] = set()
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
                if legacy is not None:
                    count, digests = legacy.purge(workflow_id)
                    removed += count
                    released |= digests
                count, ids = compact.purge(workflow_id)
                removed += count
                released_ids |= ids
                tx.run("DELETE FROM audit_chains WHERE workflow_id = ?", (workflow_id,))
            if legacy is not None:
                legacy.drop_unreferenced(released)
            if released_ids:
                self._lock_values(tx, purging=True)
                compact.drop_unreferenced(released_ids)
        return removed

    def _old_chains(
        self, legacy: Legacy | None, compact: Compact, before: datetime, now: datetime
    ) -> set[str]:
        """Chains last written before ``before`` whose records' retention is over at
        ``now``, over both layouts."""
        last: dict[str, tuple[datetime, datetime, datetime]] = {}
        for layout in (legacy, compact):
            for workflow_id, *times in layout.ages() if layout else ():
                seen = last.get(workflow_id, tuple(times))
                last[workflow_id] = (
                    max(times[0], seen[0]),
                    max(times[1], seen[1]),
                    max(times[2], seen[2]),
                )
        return {
            w
            for w, (occurred, recorded, retain) in last.items()
            if occurred < before and recorded < before and retain <= now
        }

    def hold(self, workflow_id: str, *, by: str, reason: str, now: datetime) -> None:
        """Put a run's records, and its reconcile findings, under legal hold: no purge
        deletes them until released."""
        if not reason.strip():
            raise ValueError("a legal hold needs a reason (the matter it is kept for)")
        self._ensure_schema()
        kept = sorted(_with_findings({workflow_id}))
        with self._transaction(write=True) as tx:
            found = tx.rows(
                f"SELECT 1 FROM audit_chains WHERE workflow_id IN ({', '.join('?' * len(kept))})",
                kept,
            )
            if not found:
                raise LookupError(f"no audit records for run '{workflow_id}' to hold")
            tx.run(
                "INSERT INTO audit_holds (workflow_id, held_at, held_by, reason) VALUES"
                " (?, ?, ?, ?) ON CONFLICT (workflow_id) DO NOTHING",
                (workflow_id, format_timestamp(now), by, reason),
            )

    def release(self, workflow_id: str) -> bool:
        """End a run's legal hold, over its records and its reconcile findings alike."""
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

    def _ensure_schema(self) -> None:
        with self._schema_lock:
            if not self._schema_ready:
                self._create_schema()
                with self._transaction(write=False) as tx:
                    self._legacy = legacy_tables(self._table_names(tx))
                self._schema_ready = True
