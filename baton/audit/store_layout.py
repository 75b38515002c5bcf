"""How a record of schema version 4 is laid out in the store's columns, and read back.

The record is the same as version 3's, hashed the same way (`baton.audit.events`); only its
physical form is smaller. A row holds:

- ``workflow_id``: the chain, as the id of the workflow's first row in `audit_runs`, and
  ``run``: the id of the row there naming the record's workflow id, run id and process;
- ``event``: the event id without the `<workflow id>/<run id>/` it starts with, and `w/<event
  type>/<node>` after that written `*` (`encode_event_id`);
- ``event_type``, ``node``, ``actor`` and ``stamp``: ids in `audit_names`, which keeps each
  text once (the actor as canonical JSON; 0: none);
- ``occurred_at``, ``recorded_at``, ``retain_until``: integer microseconds since the epoch;
- ``prev_hash``, ``record_hash``: the 32 bytes of each SHA-256;
- ``record_json``: the data as hashed (its large values by reference), without the members
  the stamp holds, each reference `{"$value": "<sha256>"}` written `{"$value": <id>}`, the
  row id of the value in `audit_values` (`to_ids`), whose text refers to the values it holds
  in the same way.

The stamp is what the audit sink adds to every record (where it was written, the redaction
policy): the data's `context` and `redaction` members, kept once in `audit_names` when they
recur (`STAMP_KEYS`). Nothing in a row is outside the hash: a changed name, run, value or
column changes the record read back, and its hash no longer holds.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Mapping, Sequence
from datetime import UTC, datetime, timedelta
from typing import Any, Protocol

from baton.audit.events import object_text

_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_BATCH = 500  # stays well under SQLite's bound-parameter limit


class _Tx(Protocol):
    """What the shared logic needs from a transaction; SQL uses `?` placeholders."""

    def rows(self, sql: str, params: Sequence[object] = ()) -> list[tuple[Any, ...]]: ...

    def run(self, sql: str, params: Sequence[object] = ()) -> int: ...

    def many(self, sql: str, params: Sequence[Sequence[object]]) -> None: ...


def texts(tx: _Tx, sql: str, params: Sequence[object] = ()) -> set[str]:
    """The first column of every row ``sql`` selects, as text: names, ids."""
    return {str(row[0]) for row in tx.rows(sql, params)}


def chunks(items: Sequence[Any]) -> list[Sequence[Any]]:
    """``items`` in batches small enough for one statement's parameters."""
    return [items[start : start + _BATCH] for start in range(0, len(items), _BATCH)]


def marks(items: Sequence[object]) -> str:
    return ", ".join("?" * len(items))


# Written for the `w/<event type>/<node>` a run's own event ids start with.
ABBREVIATED = "*"
# Written before an event id stored whole: one that does not start with its run's prefix.
WHOLE = "/"

STAMP_KEYS: tuple[str, ...] = ("context", "redaction")
"""Members of a record's data kept once in `audit_names` when they recur: the audit sink's
stamps (baton.audit.sink), the same for every record a worker writes unless traced."""

# A reference as `to_ids` writes it. Canonical JSON never holds one: a dict whose only key
# is "$value" is stored as {"$literal": ...} (`baton.audit.events.fold`).
_ID_REFERENCE = re.compile(r'\{"\$value":(\d+)\}')
_DIGEST_REFERENCE = re.compile(r'\{"\$value":"([0-9a-f]{64})"\}')


def to_micros(value: datetime) -> int:
    delta = value.astimezone(UTC) - _EPOCH
    return (delta.days * 86_400 + delta.seconds) * 1_000_000 + delta.microseconds


def from_micros(value: int) -> datetime:
    return _EPOCH + timedelta(microseconds=int(value))


def hash_bytes(digest: str) -> bytes:
    """A record hash as stored: its 32 bytes ("" for the first record's prev_hash)."""
    return bytes.fromhex(digest)


def hash_hex(stored: object) -> str:
    if not isinstance(stored, bytes | bytearray | memoryview):
        raise ValueError(f"a hash column holds {type(stored).__name__}, not bytes")
    return bytes(stored).hex()


def _abbreviation(event_type: str, node: str | None) -> str:
    return f"w/{event_type}/{node}" if node else f"w/{event_type}"


def encode_event_id(
    event_id: str, workflow_id: str, run_id: str, event_type: str, node: str | None
) -> str:
    """The event id as a row stores it, beside its run, event type and node."""
    prefix = f"{workflow_id}/{run_id}/"
    if not event_id.startswith(prefix):
        return WHOLE + event_id
    rest = event_id[len(prefix) :]
    if not rest or rest[0] in (ABBREVIATED, WHOLE):
        return WHOLE + event_id
    short = _abbreviation(event_type, node)
    if rest == short or rest.startswith(short + "/"):
        return ABBREVIATED + rest[len(short) :]
    return rest


def decode_event_id(
    stored: str, workflow_id: str, run_id: str, event_type: str, node: str | None
) -> str:
    if stored.startswith(WHOLE):
        return stored[1:]
    if stored.startswith(ABBREVIATED):
        stored = _abbreviation(event_type, node) + stored[1:]
    return f"{workflow_id}/{run_id}/{stored}"


def stored_forms(event_id: str, workflow_id: str, run_id: str) -> set[str]:
    """Every form `event_id` may be stored in under a run of ``workflow_id``/``run_id``,
    whatever the event type and node: what a lookup by event id asks for."""
    forms = {WHOLE + event_id}
    prefix = f"{workflow_id}/{run_id}/"
    if event_id.startswith(prefix):
        rest = event_id[len(prefix) :]
        forms.add(rest)
        if rest.startswith("w/"):
            # `w/<type>` or `w/<type>/<node>` abbreviated, the rest kept: where it ends
            # depends on the type and node, so at any slash after them.
            forms.add(ABBREVIATED)
            forms.update(ABBREVIATED + rest[i:] for i in range(2, len(rest)) if rest[i] == "/")
    return forms


def prefixes(event_id: str) -> list[tuple[str, str]]:
    """Each (workflow id, run id) whose `<workflow id>/<run id>/` the event id starts with:
    the runs under which it may be stored relative to its run."""
    slashes = [i for i, char in enumerate(event_id) if char == "/"]
    return [
        (event_id[:first], event_id[first + 1 : second])
        for n, first in enumerate(slashes)
        for second in slashes[n + 1 :]
    ]


def to_ids(text: str, ids: Mapping[str, int]) -> str:
    """Stored JSON with each reference by SHA-256 written by the value's row id."""
    return _DIGEST_REFERENCE.sub(lambda m: f'{{"$value":{ids[m.group(1)]}}}', text)


def ids_in(text: str) -> set[int]:
    """The row ids of the values a stored text refers to."""
    return {int(found) for found in _ID_REFERENCE.findall(text)}


def to_digests(text: str, digests: Mapping[int, str]) -> str:
    """Stored JSON with each reference by row id written by SHA-256 again, as hashed. A row
    id the store no longer has stays as it is: verification names it."""

    def digest(m: re.Match[str]) -> str:
        found = digests.get(int(m.group(1)))
        return m.group(0) if found is None else f'{{"$value":"{found}"}}'

    return _ID_REFERENCE.sub(digest, text)


def stamp_members(members: Mapping[str, str]) -> list[str]:
    """The stamp members of a record's (folded) data, given as its members' JSON, each as
    the JSON of an object holding it alone: what `split_stamp` asks about."""
    return [object_text({key: members[key]}) for key in STAMP_KEYS if key in members]


def split_stamp(
    members: Mapping[str, str], stamped: Callable[[str], bool]
) -> tuple[str | None, str]:
    """The stamp of a record's (folded) data, given as its members' JSON, and the data
    without it, both as canonical JSON (None: no stamp, the data whole); ``stamped`` says
    whether a member (as `stamp_members` gives it) is kept once."""
    kept = {
        key: members[key]
        for key in STAMP_KEYS
        if key in members and stamped(object_text({key: members[key]}))
    }
    rest = {key: text for key, text in members.items() if key not in kept}
    return (object_text(kept) if kept else None), object_text(rest)
