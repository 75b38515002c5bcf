"""Reading and writing the records of schema version 4 in one transaction: rows laid out as
`baton.audit.store_layout` describes, turned into records (values in full), into rows for
verification (values by SHA-256), and written from sealed events.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection, Iterable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from baton.audit.events import AuditEvent, AuditRecord, canonical_json, referenced_in, thawer
from baton.audit.store_layout import (
    WHOLE,
    _Tx,
    chunks,
    decode_event_id,
    from_micros,
    hash_hex,
    ids_in,
    marks,
    prefixes,
    stored_forms,
    texts,
    to_digests,
    to_ids,
)
from baton.audit.verify import StoredRow

ROW = (
    "workflow_id, seq, run, event, event_type, node, actor, stamp, occurred_at, recorded_at,"
    " retain_until, prev_hash, record_hash, record_json"
)
_CHAINS = "SELECT u.workflow_id FROM audit_records r JOIN audit_runs u ON u.id = r.workflow_id"


@dataclass(frozen=True)
class Decoded:
    """A row read back: every field but the data (``columns``), the data as JSON with its
    references by SHA-256 (``data``), or why the row is no record (``error``)."""

    seq: int
    columns: dict[str, Any]
    data: str
    error: str | None = None


class Compact:
    """The tables of version 4, in one transaction. Names, runs and values read are kept
    for the transaction only: a reader sees what the store holds now."""

    def __init__(self, tx: _Tx) -> None:
        self.tx = tx
        self._names: dict[int, str] = {}
        self._runs: dict[int, tuple[str, str, str]] = {}
        self._digests: dict[int, str] = {}  # value row id -> SHA-256
        self._texts: dict[str, str] = {}  # SHA-256 -> the value's text as hashed

    # -- chains ----------------------------------------------------------------------------------

    def chain_key(self, workflow_id: str) -> int | None:
        found = self.tx.rows("SELECT MIN(id) FROM audit_runs WHERE workflow_id = ?", (workflow_id,))
        return None if not found or found[0][0] is None else int(found[0][0])

    def rows(self, workflow_id: str) -> list[tuple[Any, ...]]:
        key = self.chain_key(workflow_id)
        if key is None:
            return []
        return self.tx.rows(
            f"SELECT {ROW} FROM audit_records WHERE workflow_id = ? ORDER BY seq", (key,)
        )

    def workflow_ids(self) -> set[str]:
        return texts(self.tx, f"{_CHAINS} GROUP BY u.workflow_id")

    def orphans(self) -> dict[int, int]:
        """Records whose chain has no row in audit_runs (so no workflow id): count by key."""
        found = self.tx.rows(
            "SELECT workflow_id, COUNT(*) FROM audit_records WHERE workflow_id NOT IN"
            " (SELECT id FROM audit_runs) GROUP BY workflow_id"
        )
        return {int(key): int(count) for key, count in found}

    def activity(self, process: str | None) -> list[tuple[str, datetime, datetime]]:
        """(workflow id, first and last occurred_at) of each chain with records of
        ``process`` (any: None), over those records."""
        where, params = (
            ("", ())
            if process is None
            else (" WHERE r.run IN (SELECT id FROM audit_runs WHERE process = ?)", (process,))
        )
        found = self.tx.rows(
            "SELECT u.workflow_id, MIN(r.occurred_at), MAX(r.occurred_at) FROM audit_records r"
            f" JOIN audit_runs u ON u.id = r.workflow_id{where} GROUP BY u.workflow_id",
            params,
        )
        return [(str(w), from_micros(a), from_micros(b)) for w, a, b in found]

    def ages(self) -> list[tuple[str, datetime, datetime, datetime]]:
        """(workflow id, last occurred_at, recorded_at and retain_until) of each chain."""
        found = self.tx.rows(
            "SELECT u.workflow_id, MAX(r.occurred_at), MAX(r.recorded_at), MAX(r.retain_until)"
            " FROM audit_records r JOIN audit_runs u ON u.id = r.workflow_id"
            " GROUP BY u.workflow_id"
        )
        return [(str(w), from_micros(a), from_micros(b), from_micros(c)) for w, a, b, c in found]

    def chain_rows(self, workflow_id: str | None) -> list[tuple[str, int, str, str, datetime]]:
        """(workflow id, seq, record hash, event type, recorded at) of each record."""
        params: tuple[object, ...] = ()
        where = ""
        if workflow_id is not None:
            key = self.chain_key(workflow_id)
            if key is None:
                return []
            where, params = " WHERE r.workflow_id = ?", (key,)
        found = self.tx.rows(
            "SELECT u.workflow_id, r.seq, r.record_hash, n.name, r.recorded_at"
            " FROM audit_records r JOIN audit_runs u ON u.id = r.workflow_id"
            f" LEFT JOIN audit_names n ON n.id = r.event_type{where}",
            params,
        )
        return [
            (str(w), int(seq), _hex_or_blank(h), str(t or "?"), from_micros(at))
            for w, seq, h, t, at in found
        ]

    # -- reading -------------------------------------------------------------------------------

    def records(self, rows: Sequence[tuple[Any, ...]]) -> list[AuditRecord]:
        """Records from their rows (``ROW``), values in full."""
        decoded = self.decode(rows)
        thaw = thawer(self._texts)
        records = []
        for row in decoded:
            if row.error is not None:
                raise ValueError(
                    f"record {row.seq} of {row.columns['workflow_id']} cannot be read: "
                    f"{row.error} (`baton audit verify` names what changed)"
                )
            records.append(AuditRecord.model_validate({**row.columns, "data": thaw(row.data)}))
        return records

    def stored_rows(self, rows: Sequence[tuple[Any, ...]]) -> list[StoredRow]:
        decoded = self.decode(rows)
        values = self._texts
        return [
            StoredRow(r.seq, r.columns, r.data, values, data_only=True, error=r.error)
            for r in decoded
        ]

    def decode(self, rows: Sequence[tuple[Any, ...]]) -> list[Decoded]:
        self._load_keys(rows)
        # A stamp refers to values by SHA-256: names outlive the value rows of a purge.
        stamps = {self._names.get(row[7], "") for row in rows if row[7]}
        self._load_values(
            {i for row in rows for i in ids_in(str(row[13]))},
            {digest for stamp in stamps for digest in referenced_in(stamp)},
        )
        return [self._decode(row) for row in rows]

    def _decode(self, row: tuple[Any, ...]) -> Decoded:
        chain, seq, run, event, type_id, node_id, actor_id, stamp_id, *rest = row
        occurred, recorded, retain, prev, digest, stored = rest
        columns: dict[str, Any] = {
            "event_id": str(event),
            "workflow_id": self._runs.get(chain, ("",))[0],
            "prev_hash": _hex_or_blank(prev),
            "record_hash": _hex_or_blank(digest),
            "seq": int(seq),
        }
        try:
            workflow_id = self._run(chain)[0]
            _, run_id, process = self._run(run)
            event_type = self._name(type_id)
            node = self._name(node_id) if node_id else None
            columns.update(
                event_id=decode_event_id(str(event), workflow_id, run_id, event_type, node),
                run_id=run_id,
                process=process,
                event_type=event_type,
                node=node,
                actor=json.loads(self._name(actor_id)) if actor_id else None,
                occurred_at=from_micros(occurred),
                recorded_at=from_micros(recorded),
                retain_until=from_micros(retain),
                prev_hash=hash_hex(prev),
                record_hash=hash_hex(digest),
                schema_version=4,
            )
            text = to_digests(str(stored), self._digests)
            if stamp_id:
                data = json.loads(text)
                stamp = json.loads(self._name(stamp_id))
                if not isinstance(data, dict) or not isinstance(stamp, dict):
                    raise ValueError("its data or its stamp is not a JSON object")
                text = canonical_json({**data, **stamp})
        except (ValueError, TypeError, OverflowError) as exc:
            return Decoded(int(seq), columns, "", str(exc).splitlines()[0])
        return Decoded(int(seq), columns, text)

    def _load_keys(self, rows: Sequence[tuple[Any, ...]]) -> None:
        """The names and runs ``rows`` refer to."""
        self._load_names({int(i) for row in rows for i in row[4:8] if _is_int(i) and i})
        self._load_runs({int(i) for row in rows for i in row[0:3:2] if _is_int(i)})

    def _event_id(self, row: tuple[Any, ...]) -> str | None:
        """The event id ``row`` stores (its keys loaded); None if a name or run it
        needs is gone, which reading the record names."""
        chain, _, run, event, type_id, node_id = row[:6]
        try:
            workflow_id = self._run(chain)[0]
            _, run_id, _ = self._run(run)
            node = self._name(node_id) if node_id else None
            return decode_event_id(str(event), workflow_id, run_id, self._name(type_id), node)
        except ValueError:
            return None

    def _run(self, key: object) -> tuple[str, str, str]:
        found = self._runs.get(key) if isinstance(key, int) else None
        if found is None:
            raise ValueError(f"its run (row {key!r} of audit_runs) is gone from the store")
        return found

    def _name(self, key: object) -> str:
        found = self._names.get(key) if isinstance(key, int) else None
        if found is None:
            raise ValueError(f"a name it holds (row {key!r} of audit_names) is gone")
        return found

    def _load_names(self, ids: Collection[int]) -> None:
        wanted = sorted(set(ids) - set(self._names))
        for chunk in chunks(wanted):
            found = self.tx.rows(
                f"SELECT id, name FROM audit_names WHERE id IN ({marks(chunk)})", chunk
            )
            self._names.update((int(i), str(name)) for i, name in found)

    def _load_runs(self, ids: Collection[int]) -> None:
        wanted = sorted(set(ids) - set(self._runs))
        for chunk in chunks(wanted):
            found = self.tx.rows(
                "SELECT id, workflow_id, run_id, process FROM audit_runs"
                f" WHERE id IN ({marks(chunk)})",
                chunk,
            )
            self._runs.update((int(i), (str(w), str(r), str(p))) for i, w, r, p in found)

    def _load_values(self, ids: Collection[int], digests: Collection[str] = ()) -> None:
        """The values ``ids`` and ``digests`` name and those they hold in turn, as hashed
        (`_texts`); those gone are left out."""
        wanted = set(ids) - set(self._digests)
        for chunk in chunks(sorted(set(digests) - set(self._texts))):
            wanted |= {
                int(row[0])
                for row in self.tx.rows(
                    f"SELECT id FROM audit_values WHERE sha256 IN ({marks(chunk)})",
                    [bytes.fromhex(d) for d in chunk],
                )
            }
        stored: dict[str, str] = {}
        asked: set[int] = set()
        while wanted:
            asked |= wanted
            found: list[tuple[Any, ...]] = []
            for chunk in chunks(sorted(wanted)):
                found += self.tx.rows(
                    f"SELECT id, sha256, value_json FROM audit_values WHERE id IN ({marks(chunk)})",
                    chunk,
                )
            wanted = set()
            for i, digest, text in found:
                self._digests[int(i)] = _hex_or_blank(digest)
                stored[self._digests[int(i)]] = str(text)
                wanted |= ids_in(str(text))
            wanted -= asked | set(self._digests)
        # Once every value they hold is read (or known to be gone).
        self._texts.update((d, to_digests(text, self._digests)) for d, text in stored.items())

    # -- looking up events ---------------------------------------------------------------------

    def by_events(self, events: Iterable[AuditEvent]) -> list[AuditRecord]:
        """The records stored under the events' ids, wherever they are stored."""
        ids = {event.event_id for event in events}
        where: dict[str, set[tuple[str, str]]] = {}
        for event in events:
            own = (event.workflow_id, event.run_id)
            mine = event.event_id.startswith(f"{own[0]}/{own[1]}/")
            where[event.event_id] = {own} if mine else set(prefixes(event.event_id))
        runs = self._runs_named({pair for pairs in where.values() for pair in pairs})
        found = self._rows_where("event IN ({})", sorted(WHOLE + i for i in ids), ())
        relative = sorted(
            {
                (run, form)
                for event_id, pairs in where.items()
                for pair in pairs
                for run in runs.get(pair, ())
                for form in stored_forms(event_id, *pair)
                if not form.startswith(WHOLE)
            }
        )
        run_ids = sorted({run for run, _ in relative})
        for chunk in chunks(run_ids):
            forms = sorted({form for run, form in relative if run in chunk})
            found += self._rows_where(
                f"run IN ({marks(chunk)}) AND event IN ({{}})", forms, tuple(chunk)
            )
        # A run's own events are looked up in every form their ids may be stored in,
        # which matches most of the run's records; only those stored under one of the
        # ids are read whole (reading all of them was most of an append's time), and
        # those whose id cannot be told (None), so that reading them names what is gone.
        self._load_keys(found)
        wanted: set[str | None] = {*ids, None}
        asked = [row for row in found if self._event_id(row) in wanted]
        return [record for record in self.records(asked) if record.event_id in ids]

    def _rows_where(
        self, condition: str, items: Sequence[str], params: tuple[object, ...]
    ) -> list[tuple[Any, ...]]:
        found: list[tuple[Any, ...]] = []
        for chunk in chunks(items):
            found += self.tx.rows(
                f"SELECT {ROW} FROM audit_records WHERE {condition.format(marks(chunk))}",
                (*params, *chunk),
            )
        return found

    def _runs_named(self, pairs: Collection[tuple[str, str]]) -> dict[tuple[str, str], list[int]]:
        """The audit_runs rows of each (workflow id, run id)."""
        found: dict[tuple[str, str], list[int]] = {}
        for chunk in chunks(sorted({w for w, _ in pairs})):
            for i, workflow_id, run_id in self.tx.rows(
                f"SELECT id, workflow_id, run_id FROM audit_runs WHERE workflow_id IN"
                f" ({marks(chunk)})",
                chunk,
            ):
                if (str(workflow_id), str(run_id)) in pairs:
                    found.setdefault((str(workflow_id), str(run_id)), []).append(int(i))
        return found

    # -- writing -------------------------------------------------------------------------------

    def run_ids(self, keys: Collection[tuple[str, str, str]]) -> dict[tuple[str, str, str], int]:
        """The audit_runs row of each (workflow id, run id, process), made where missing."""
        found: dict[tuple[str, str, str], int] = {}
        for key in sorted(set(keys)):
            found[key] = self._row_id(
                "SELECT id FROM audit_runs WHERE workflow_id = ? AND run_id = ? AND process = ?",
                key,
                "INSERT INTO audit_runs (workflow_id, run_id, process) VALUES (?, ?, ?)"
                " ON CONFLICT DO NOTHING RETURNING id",
                key,
            )
        return found

    def name_ids(self, names: Collection[str], known: Mapping[str, int]) -> dict[str, int]:
        """The audit_names row of each name, made where missing; ``known``: rows already
        read (names are never changed or deleted)."""
        found = {name: known[name] for name in names if name in known}
        wanted = {_sha256(name): name for name in set(names) - set(found)}
        for chunk in chunks(sorted(wanted)):
            for i, digest in self.tx.rows(
                f"SELECT id, sha256 FROM audit_names WHERE sha256 IN ({marks(chunk)})", chunk
            ):
                found[wanted[bytes(digest)]] = int(i)
        for digest, name in sorted(wanted.items()):
            if name not in found:
                found[name] = self._row_id(
                    "SELECT id FROM audit_names WHERE sha256 = ?",
                    (digest,),
                    "INSERT INTO audit_names (sha256, name) VALUES (?, ?)"
                    " ON CONFLICT (sha256) DO NOTHING RETURNING id",
                    (digest, name),
                )
        return found

    def value_ids(self, values: Mapping[str, str]) -> dict[str, int]:
        """The audit_values row of each value (canonical text by SHA-256, those it holds
        before it), made where missing, its references written by row id."""
        found: dict[str, int] = {}
        for chunk in chunks(sorted(values)):
            for i, digest in self.tx.rows(
                f"SELECT id, sha256 FROM audit_values WHERE sha256 IN ({marks(chunk)})",
                [bytes.fromhex(d) for d in chunk],
            ):
                found[bytes(digest).hex()] = int(i)
        for digest, text in values.items():
            if digest not in found:
                found[digest] = self._row_id(
                    "SELECT id FROM audit_values WHERE sha256 = ?",
                    (bytes.fromhex(digest),),
                    "INSERT INTO audit_values (sha256, value_json) VALUES (?, ?)"
                    " ON CONFLICT (sha256) DO NOTHING RETURNING id",
                    (bytes.fromhex(digest), to_ids(text, found)),
                )
        return found

    def _row_id(
        self, select: str, key: Sequence[object], insert: str, params: Sequence[object]
    ) -> int:
        """The id of the row ``select`` finds by ``key``, else of the row ``insert`` makes
        of ``params``; made concurrently, the one made first."""
        found = self.tx.rows(select, key)
        if not found:
            found = self.tx.rows(insert, params) or self.tx.rows(select, key)
        return int(found[0][0])

    def insert(self, rows: Sequence[Sequence[object]]) -> None:
        self.tx.many(f"INSERT INTO audit_records ({ROW}) VALUES ({marks(ROW.split(','))})", rows)

    def add_refs(self, refs: Collection[tuple[int, int]]) -> None:
        self.tx.many(
            "INSERT INTO audit_refs (value, workflow_id) VALUES (?, ?)"
            " ON CONFLICT (value, workflow_id) DO NOTHING",
            sorted(refs),
        )

    # -- purging -------------------------------------------------------------------------------

    def purge(self, workflow_id: str) -> tuple[int, set[int]]:
        """Delete a chain's records, runs and references to values (its tombstone written);
        returns how many records went and the values it referred to, which may now be
        unreferenced."""
        key = self.chain_key(workflow_id)
        if key is None:
            return 0, set()
        found = self.tx.rows("SELECT value FROM audit_refs WHERE workflow_id = ?", (key,))
        self.tx.run("DELETE FROM audit_refs WHERE workflow_id = ?", (key,))
        removed = self.tx.run("DELETE FROM audit_records WHERE workflow_id = ?", (key,))
        self.tx.run("DELETE FROM audit_runs WHERE workflow_id = ?", (workflow_id,))
        return removed, {int(row[0]) for row in found}

    def drop_unreferenced(self, ids: Collection[int]) -> None:
        self.tx.many(
            "DELETE FROM audit_values WHERE id = ?"
            " AND NOT EXISTS (SELECT 1 FROM audit_refs WHERE audit_refs.value = ?)",
            [(i, i) for i in sorted(ids)],
        )


def _is_int(value: object) -> bool:
    return type(value) is int


def _hex_or_blank(value: object) -> str:
    return bytes(value).hex() if isinstance(value, bytes | bytearray | memoryview) else ""


def _sha256(text: str) -> bytes:
    return hashlib.sha256(text.encode("utf-8")).digest()
