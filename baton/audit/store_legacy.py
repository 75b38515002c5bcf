"""Reading, verifying and purging the records of schema version 3 and before, in the tables
that version kept them in (`store_schema_v3`): the envelope in columns, the rest as JSON
(before version 3 the whole record), large values by SHA-256 in a table of their own.
Nothing is written there any more but a purge's deletions.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Collection, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Any

from baton.audit.events import AuditRecord, referenced_in, references, thawer
from baton.audit.store_layout import _Tx, chunks, marks, texts
from baton.audit.store_schema_v3 import LegacyTables
from baton.audit.verify import COLUMNS, StoredRow

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


@dataclass(frozen=True)
class Legacy:
    """The legacy tables of one store, read in one transaction."""

    tx: _Tx
    tables: LegacyTables
    from_db_time: Callable[[Any], datetime]

    def rows(self, workflow_id: str) -> list[tuple[Any, ...]]:
        return self.tx.rows(
            f"SELECT {_ROW_COLUMNS} FROM {self.tables.records} WHERE workflow_id = ? ORDER BY seq",
            (workflow_id,),
        )

    def by_event_ids(self, event_ids: Sequence[str]) -> list[AuditRecord]:
        found: list[tuple[Any, ...]] = []
        for chunk in chunks(sorted(set(event_ids))):
            found += self.tx.rows(
                f"SELECT {_ROW_COLUMNS} FROM {self.tables.records}"
                f" WHERE event_id IN ({marks(chunk)})",
                chunk,
            )
        return self.read(found)

    def read(self, rows: Sequence[tuple[Any, ...]]) -> list[AuditRecord]:
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
        values = self.values({d for _, text in stored if text for d in referenced_in(text)})
        thaw = thawer(values)
        return [
            AuditRecord.model_validate(doc if text is None else {**doc, **thaw(text)})
            for doc, text in stored
        ]

    def values(self, digests: Collection[str]) -> dict[str, str]:
        """The stored text of the values ``digests`` name and of those they hold in turn,
        by SHA-256; a value the store does not have is left out."""
        found: dict[str, str] = {}
        wanted = {d for d in digests if _DIGEST.fullmatch(d)}
        if not wanted or self.tables.values is None:
            return found
        asked: set[str] = set()
        while wanted:
            asked |= wanted
            batch = sorted(wanted)
            wanted = set()
            for chunk in chunks(batch):
                for key, text in self.tx.rows(
                    f"SELECT sha256, value_json FROM {self.tables.values}"
                    f" WHERE sha256 IN ({marks(chunk)})",
                    [bytes.fromhex(d) for d in chunk],
                ):
                    found[bytes(key).hex()] = str(text)
                    wanted |= referenced_in(str(text))
            wanted -= asked
        return found

    def stored_rows(self, workflow_id: str) -> list[StoredRow]:
        found = self.rows(workflow_id)
        values = self.values({d for row in found for d in _referred_by(str(row[-1]))})
        return [self._stored_row(row, values) for row in found]

    def _stored_row(self, row: tuple[Any, ...], values: Mapping[str, str]) -> StoredRow:
        columns = dict(zip(COLUMNS, row[1:-1], strict=True))
        for name in ("occurred_at", "recorded_at", "retain_until"):
            columns[name] = self.from_db_time(columns[name])
        return StoredRow(seq=int(row[0]), columns=columns, record_json=str(row[-1]), values=values)

    def chain_rows(self, workflow_id: str | None) -> list[tuple[str, int, str, str, datetime]]:
        """(workflow id, seq, record hash, event type, recorded at) of each record."""
        where, params = (
            ("", ()) if workflow_id is None else (" WHERE workflow_id = ?", (workflow_id,))
        )
        found = self.tx.rows(
            "SELECT workflow_id, seq, record_hash, event_type, recorded_at"
            f" FROM {self.tables.records}{where}",
            params,
        )
        return [(str(w), int(s), str(h), str(t), self.from_db_time(at)) for w, s, h, t, at in found]

    def activity(self, process: str | None) -> list[tuple[str, datetime, datetime]]:
        """(workflow id, first and last occurred_at) of each chain with records of
        ``process`` (any: None), over those records."""
        where, params = ("", ()) if process is None else (" WHERE process = ?", (process,))
        found = self.tx.rows(
            f"SELECT workflow_id, MIN(occurred_at), MAX(occurred_at) FROM {self.tables.records}"
            f"{where} GROUP BY workflow_id",
            params,
        )
        return [(str(w), self.from_db_time(a), self.from_db_time(b)) for w, a, b in found]

    def ages(self) -> list[tuple[str, datetime, datetime, datetime]]:
        """(workflow id, last occurred_at, recorded_at and retain_until) of each chain."""
        found = self.tx.rows(
            "SELECT workflow_id, MAX(occurred_at), MAX(recorded_at), MAX(retain_until)"
            f" FROM {self.tables.records} GROUP BY workflow_id"
        )
        at = self.from_db_time
        return [
            (str(w), at(occurred), at(recorded), at(retain))
            for w, occurred, recorded, retain in found
        ]

    def workflow_ids(self) -> set[str]:
        return texts(self.tx, f"SELECT DISTINCT workflow_id FROM {self.tables.records}")

    def known(self, workflow_id: str) -> bool:
        return bool(
            self.tx.rows(
                f"SELECT 1 FROM {self.tables.records} WHERE workflow_id = ?", (workflow_id,)
            )
        )

    def purge(self, workflow_id: str) -> tuple[int, set[str]]:
        """Delete a chain's records and its references to values (its tombstone written);
        returns how many records went and the values it referred to, which may now be
        unreferenced."""
        released: set[str] = set()
        if self.tables.refs is not None:
            found = self.tx.rows(
                f"SELECT record_json FROM {self.tables.records} WHERE workflow_id = ?",
                (workflow_id,),
            )
            digests = {d for row in found for d in _referred_by(str(row[0]))}
            # Those held inside them too: the chain has a reference to each.
            released = {d for d in digests | set(self.values(digests)) if _DIGEST.fullmatch(d)}
            self.tx.many(
                f"DELETE FROM {self.tables.refs} WHERE sha256 = ? AND workflow_id = ?",
                [(bytes.fromhex(d), workflow_id) for d in sorted(released)],
            )
        removed = self.tx.run(
            f"DELETE FROM {self.tables.records} WHERE workflow_id = ?", (workflow_id,)
        )
        return removed, released

    def drop_unreferenced(self, digests: Collection[str]) -> None:
        """Delete those of the values that no chain refers to any more. Nothing adds a
        reference here any more, so nothing needs locking out."""
        if not digests or self.tables.values is None or self.tables.refs is None:
            return
        self.tx.many(
            f"DELETE FROM {self.tables.values} WHERE sha256 = ? AND NOT EXISTS"
            f" (SELECT 1 FROM {self.tables.refs} WHERE {self.tables.refs}.sha256 = ?)",
            [(bytes.fromhex(d),) * 2 for d in sorted(digests)],
        )
