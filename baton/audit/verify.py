"""Chain verification over rows as stored, independent of the database that holds them.

A record of schema version 4 is kept once: every field but its data in columns (see
`baton.audit.store_layout`), the data as JSON, its large values in a table of their own
keyed by their SHA-256 (see `baton.audit.events.fold`). Its hash is recomputed over all of
it, references included, and each value it references over its own text. Version 3 kept
seq, actor and schema version in the JSON beside the data; older records the whole record.
Those are checked as they were: the JSON against its hash and the columns against it.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any, Literal

from pydantic import BaseModel

from baton.audit.events import AuditRecord, format_timestamp, references, stored_hash

ProblemKind = Literal[
    "edited",
    "missing",
    "reordered",
    "broken_link",
    # The database's append-only triggers are gone: whoever dropped them could edit freely.
    "guard_missing",
    # The store disagrees with a signed checkpoint, or the checkpoint log itself is damaged.
    "checkpoint",
    # A value a record refers to is gone from the store, or no longer has the hash it is
    # referred to by.
    "value_missing",
    "value_edited",
]

COLUMNS: tuple[str, ...] = (
    "event_id",
    "workflow_id",
    "run_id",
    "process",
    "event_type",
    "node",
    "occurred_at",
    "recorded_at",
    "retain_until",
    "prev_hash",
    "record_hash",
)
"""Columns stored beside the JSON that must agree with it (seq is checked on its own)."""


class Problem(BaseModel):
    """One finding, naming the record by seq and event_id.

    For `missing`, `seq` is the first absent seq and `event_id` is the first record stored
    after the gap (the deleted record's own id went with it); it is "" when the gap is at
    the end of the chain, found through the chain head.
    """

    workflow_id: str
    seq: int
    event_id: str
    kind: ProblemKind
    detail: str


def store_problem(kind: ProblemKind, detail: str) -> Problem:
    """A finding about the store, its guards or its anchors as a whole: no one record's."""
    return Problem(workflow_id="", seq=0, event_id="", kind=kind, detail=detail)


class VerifyReport(BaseModel):
    ok: bool
    chains: int
    records: int
    problems: list[Problem]


@dataclass(frozen=True)
class StoredRow:
    """A record as kept: in a store, columns plus JSON whose references `values` resolves
    (the store's values by SHA-256, those it has); in an export, the whole record as JSON
    with its values in full (`values` None).

    A record of version 4 (`data_only`) has every field but its data in ``columns`` and the
    data alone as JSON, where a reference to a value row the store no longer has is left
    as its row id (`{"$value": 7}`); `error` says why its row could not be read at all."""

    seq: int
    columns: Mapping[str, Any]
    record_json: str
    values: Mapping[str, str] | None = None
    data_only: bool = False
    error: str | None = None


def exported_row(record: AuditRecord, line: str) -> StoredRow:
    """A record of an export as it is checked: its columns read from it, its line the JSON."""
    return StoredRow(record.seq, {column: getattr(record, column) for column in COLUMNS}, line)


@dataclass(frozen=True)
class ChainHead:
    seq: int
    hash: str


@dataclass(frozen=True)
class _Link:
    """A row placed in the logical chain: its own claimed seq when its hash holds."""

    row: StoredRow
    event_id: str
    prev_hash: str
    record_hash: str


def verify_chain(
    workflow_id: str, rows: Sequence[StoredRow], head: ChainHead | None
) -> list[Problem]:
    checker = _ChainChecker(workflow_id)
    links = checker.place_rows(rows)
    checker.check_gaps(links, head)
    checker.check_links(links)
    checker.check_head(links, head)
    return sorted(checker.problems, key=lambda p: (p.seq, p.kind))


def summarise(chains: int, records: int, problems: Sequence[Problem]) -> VerifyReport:
    return VerifyReport(ok=not problems, chains=chains, records=records, problems=list(problems))


class _ChainChecker:
    def __init__(self, workflow_id: str) -> None:
        self.workflow_id = workflow_id
        self.problems: list[Problem] = []

    def report(self, seq: int, event_id: str, kind: ProblemKind, detail: str) -> None:
        self.problems.append(
            Problem(
                workflow_id=self.workflow_id, seq=seq, event_id=event_id, kind=kind, detail=detail
            )
        )

    def place_rows(self, rows: Sequence[StoredRow]) -> dict[int, _Link]:
        placed = _DataRows(rows)
        links: dict[int, _Link] = {}
        for index, row in enumerate(rows):
            seq, link = (
                self._check_data_row(row, placed, index) if row.data_only else self._check_row(row)
            )
            if seq in links:
                self.report(
                    row.seq,
                    link.event_id,
                    "reordered",
                    f"stored at seq {row.seq} but claims seq {seq}, which another "
                    f"record ({links[seq].event_id}) already holds",
                )
                continue
            links[seq] = link
        return links

    def _check_row(self, row: StoredRow) -> tuple[int, _Link]:
        column_event_id = str(row.columns["event_id"])
        try:
            if row.values is None:
                record = AuditRecord.model_validate_json(row.record_json)
                intact = record.computed_hash() == record.record_hash
            else:
                # The JSON has the last word on what it holds: a record stored before version
                # 3 holds the columns' fields too, and they are checked against it below.
                stored = json.loads(row.record_json)
                if not isinstance(stored, dict):
                    raise ValueError(f"a JSON {type(stored).__name__}, not an object")
                record = AuditRecord.model_validate({**row.columns, "seq": row.seq, **stored})
                intact = stored_hash(record) == record.record_hash
        except ValueError as exc:  # pydantic's ValidationError, or NaN that cannot be hashed
            self.report(
                row.seq,
                column_event_id,
                "edited",
                f"stored JSON is not a valid record: {str(exc).splitlines()[0]}",
            )
            return row.seq, _fallback_link(row)
        if not intact:
            self.report(
                row.seq, record.event_id, "edited", "content no longer matches its record_hash"
            )
            return row.seq, _fallback_link(row)
        unknown = _unknown_fields(row.record_json)
        if unknown:
            # Fields no record has are not hashed by the model: they could say anything.
            self.report(
                row.seq,
                record.event_id,
                "edited",
                f"the stored JSON carries fields no record has: {', '.join(unknown)}",
            )
        for column in _mismatched_columns(row, record):
            self.report(
                row.seq,
                record.event_id,
                "edited",
                f"column {column} = {_show(row.columns[column])} but the hashed "
                f"record says {_show(getattr(record, column))}",
            )
        if record.seq != row.seq:
            self.report(
                row.seq,
                record.event_id,
                "reordered",
                f"stored at seq {row.seq} but the hashed record says seq {record.seq}",
            )
        if row.values is not None and record.schema_version >= 3:
            self._check_values(row.seq, record, row.values)
        return record.seq, _Link(row, record.event_id, record.prev_hash, record.record_hash)

    def _check_data_row(self, row: StoredRow, placed: _DataRows, index: int) -> tuple[int, _Link]:
        """A record of version 4: its hash at the seq it is stored at, or where its link puts
        it (`_DataRows`), unless a value it refers to is gone: then its hash cannot be
        recomputed, and what is gone is named."""
        assert row.values is not None
        record = placed.records.get(index)
        if row.error is not None or record is None:
            detail = placed.invalid.get(index, "") if row.error is None else row.error
            self.report(row.seq, str(row.columns["event_id"]), "edited", detail)
            return row.seq, _fallback_link(row)
        gone = _gone(record.data, "data")
        for where, row_id in gone:
            self.report(
                row.seq,
                record.event_id,
                "value_missing",
                f"the value at {where} (value row {row_id}) is gone from the store; the "
                "record's hash cannot be recomputed without it",
            )
        seq = placed.seqs.get(index)
        if seq is None and not gone:
            self.report(
                row.seq, record.event_id, "edited", "content no longer matches its record_hash"
            )
            return row.seq, _fallback_link(row)
        if seq is not None and seq != row.seq:
            self.report(
                row.seq,
                record.event_id,
                "reordered",
                f"stored at seq {row.seq} but its hash holds at seq {seq}, where its "
                "prev_hash links it",
            )
        self._check_values(row.seq, record, row.values)
        seq = row.seq if seq is None else seq
        return seq, _Link(row, record.event_id, record.prev_hash, record.record_hash)

    def _check_values(self, seq: int, record: AuditRecord, values: Mapping[str, str]) -> None:
        """Every value the record refers to, at any depth, is there with the hash it is
        referred to by; one finding per value, where the record first refers to it."""
        pending = [(f"data.{where}", digest) for where, digest in references(record.data)]
        seen: set[str] = set()
        while pending:
            where, digest = pending.pop(0)
            if digest in seen:
                continue
            seen.add(digest)
            text = values.get(digest)
            if text is None:
                self.report(
                    seq,
                    record.event_id,
                    "value_missing",
                    f"the value at {where} (sha256 {digest[:12]}…) is gone from the store",
                )
                continue
            held = [(_path(where, path), n) for path, n in _gone(_loads(text), "")]
            for inner, row_id in held:
                self.report(
                    seq,
                    record.event_id,
                    "value_missing",
                    f"the value at {inner} (value row {row_id}) is gone from the store",
                )
            if held:
                continue  # its text, and so its hash, cannot be made again without them
            if hashlib.sha256(text.encode("utf-8")).hexdigest() != digest:
                self.report(
                    seq,
                    record.event_id,
                    "value_edited",
                    f"the value at {where} no longer matches the hash it is referred to by "
                    f"(sha256 {digest[:12]}…)",
                )
                continue
            try:
                inner = json.loads(text)
            except ValueError:
                continue  # its hash holds, so this is the text that was referred to
            pending += [(_path(where, path), d) for path, d in references(inner)]

    def check_gaps(self, links: Mapping[int, _Link], head: ChainHead | None) -> None:
        last = max([*links, head.seq if head else 0], default=0)
        absent = [seq for seq in range(1, last + 1) if seq not in links]
        for first, count in _runs(absent):
            after = links.get(first + count)
            where = (
                f"before seq {first + count} ({after.event_id})"
                if after
                else "at the end of the chain (the chain head records more)"
            )
            what = f"seq {first}" if count == 1 else f"seq {first}-{first + count - 1}"
            self.report(
                first,
                after.event_id if after else "",
                "missing",
                f"{what} missing {where}: deleted or never written",
            )

    def check_links(self, links: Mapping[int, _Link]) -> None:
        for seq in sorted(links):
            link = links[seq]
            if seq == 1:
                if link.prev_hash != "":
                    self.report(
                        seq,
                        link.event_id,
                        "broken_link",
                        "first record of the chain has a non-empty prev_hash",
                    )
                continue
            before = links.get(seq - 1)
            if before is not None and link.prev_hash != before.record_hash:
                self.report(
                    seq,
                    link.event_id,
                    "broken_link",
                    f"prev_hash {link.prev_hash[:12]}… does not match the record_hash "
                    f"{before.record_hash[:12]}… of seq {seq - 1} ({before.event_id})",
                )

    def check_head(self, links: Mapping[int, _Link], head: ChainHead | None) -> None:
        if not links:
            return  # an empty chain with a head is reported by check_gaps
        last = max(links)
        if head is None:
            self.report(
                last,
                links[last].event_id,
                "broken_link",
                "records exist but the chain head row is gone",
            )
            return
        if head.seq < last:
            self.report(
                head.seq + 1,
                links[head.seq + 1].event_id if head.seq + 1 in links else "",
                "broken_link",
                f"records beyond the chain head (head says seq {head.seq})",
            )
        elif head.seq == last and head.hash != links[last].record_hash:
            self.report(
                last,
                links[last].event_id,
                "broken_link",
                "the chain head's hash differs from the last record's record_hash: "
                "the last record was replaced",
            )


# A reference to a value row the store no longer has, as a reader of version 4 leaves it.
_ROW_REFERENCE = re.compile(r'\{"\$value":(\d+)\}')


def _loads(text: str) -> Any:
    try:
        return json.loads(text) if _ROW_REFERENCE.search(text) else None
    except ValueError:
        return None


def _gone(value: Any, path: str) -> list[tuple[str, int]]:
    """Each reference to a value row that is gone, as (where, row id). Stored data never
    holds one otherwise: a dict whose only key is "$value" is stored as {"$literal": ...}."""
    found: list[tuple[str, int]] = []
    if isinstance(value, dict):
        if len(value) == 1 and type(value.get("$value")) is int:
            return [(path, value["$value"])]
        for key, inner in value.items():
            found += _gone(inner, f"{path}.{key}" if path else key)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            found += _gone(inner, f"{path}[{index}]")
    return found


class _DataRows:
    """The records of version 4 among stored rows, and the seq at which each one's hash
    holds: the seq it is stored at, or else the one its prev_hash links it to. Version 4
    keeps seq in a column only, so a record moved to another place in its chain still says
    where it was through its hash and its link."""

    def __init__(self, rows: Sequence[StoredRow]) -> None:
        self.records: dict[int, AuditRecord] = {}
        self.invalid: dict[int, str] = {}
        self.seqs: dict[int, int] = {}
        self._holding: dict[str, int] = {}  # record_hash -> seq it holds at
        self._waiting: dict[str, list[int]] = {}  # prev_hash -> rows linked to it
        moved: list[int] = []
        for index, row in enumerate(rows):
            if not row.data_only or row.error is not None:
                continue
            try:
                data = json.loads(row.record_json)
                fields = {**row.columns, "seq": row.seq, "data": data}
                self.records[index] = AuditRecord.model_validate(fields)
            except ValueError as exc:  # pydantic's ValidationError, or JSON that is not
                self.invalid[index] = (
                    f"stored JSON is not a valid record: {str(exc).splitlines()[0]}"
                )
                continue
            if self._holds(index, row.seq):
                self._place(index, row.seq)
            elif not _gone(self.records[index].data, ""):
                moved.append(index)
        for index in moved:
            prev = self.records[index].prev_hash
            if prev == "":
                self._try(index, 1)
            elif prev in self._holding:
                self._try(index, self._holding[prev] + 1)
            else:
                self._waiting.setdefault(prev, []).append(index)

    def _holds(self, index: int, seq: int) -> bool:
        record = self.records[index]
        if seq != record.seq:
            record = record.model_copy(update={"seq": seq})
        return stored_hash(record) == record.record_hash

    def _try(self, index: int, seq: int) -> None:
        if index not in self.seqs and self._holds(index, seq):
            self._place(index, seq)

    def _place(self, index: int, seq: int) -> None:
        self.seqs[index] = seq
        digest = self.records[index].record_hash
        self._holding.setdefault(digest, seq)
        for later in self._waiting.pop(digest, []):
            self._try(later, seq + 1)


def _path(where: str, inner: str) -> str:
    return where + inner if not inner or inner.startswith("[") else f"{where}.{inner}"


def _unknown_fields(record_json: str) -> list[str]:
    stored = json.loads(record_json)
    return sorted(set(stored) - set(AuditRecord.model_fields)) if isinstance(stored, dict) else []


def _fallback_link(row: StoredRow) -> _Link:
    """Where the JSON cannot be trusted, the columns still say where the chain runs."""
    return _Link(
        row,
        str(row.columns["event_id"]),
        str(row.columns["prev_hash"]),
        str(row.columns["record_hash"]),
    )


def _mismatched_columns(row: StoredRow, record: AuditRecord) -> list[str]:
    return [
        column
        for column in COLUMNS
        if column in row.columns and _norm(row.columns[column]) != _norm(getattr(record, column))
    ]


def _norm(value: object) -> object:
    return format_timestamp(value) if isinstance(value, datetime) else value


def _show(value: object) -> str:
    text = str(_norm(value))
    return repr(text if len(text) <= 40 else text[:40] + "…")


def _runs(numbers: Sequence[int]) -> list[tuple[int, int]]:
    """Consecutive runs as (first, count), so a gap of 100 records is one problem."""
    runs: list[tuple[int, int]] = []
    for number in numbers:
        if runs and runs[-1][0] + runs[-1][1] == number:
            runs[-1] = (runs[-1][0], runs[-1][1] + 1)
        else:
            runs.append((number, 1))
    return runs
