"""Audit events as producers hand them in, and records as the store keeps them.

A record's hash covers every field but `record_hash` itself, over a canonical JSON form that
this module owns (not pydantic's serialiser), so a record written today still verifies after
a library upgrade changes how datetimes or floats are printed. Records of schema version 1
left `recorded_at` out of the hash, so it could be backdated unseen; they still verify under
their own rule.

From schema version 3 a record's large values are stored once and referenced by hash (see
`fold`): the AI's output is in its attempt, in the node's output and in what the reviewer
was shown, and the same configuration is in every run. The hash covers the references, so a
record's hash does not change with where its values are kept, and each value is checked by
its own hash. Schema version 4 hashes as version 3 does; only the store's layout of a record
changed (`baton.audit.store_layout`).
"""

from __future__ import annotations

import hashlib
import json
import math
import re
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime
from json.encoder import encode_basestring
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import to_jsonable_python

from baton.audit.detectors import DETECTORS

SCHEMA_VERSION = 4

EVENT_TYPES: frozenset[str] = frozenset(
    {
        "run.started",
        "run.admitted",
        "run.refused",
        "node.started",
        "node.finished",
        "node.skipped",
        "node.failed",
        "activity.started",
        "activity.attempt",
        "ai.inference",
        "tool.call",
        "routing.decided",
        "gate.opened",
        "gate.reminded",
        "gate.escalated",
        "gate.decided",
        "decision.refused",
        "stop.refused",
        "event.awaited",
        "event.received",
        "event.refused",
        "event.taken",
        "override",
        "stop",
        "run.ended",
        "run.carried",
        "run.continued",
        "run.resumed",
        "sub.started",
        "sub.finished",
        "config.snapshot",
        "audit.reconcile_difference",
        "audit.reconciled",
    }
)
"""The event types Baton emits. `event_type` stays a free string so that an older store
accepts events from a newer producer; reports treat unknown types as plain timeline rows."""

OVERSIGHT_EVENT_TYPES: frozenset[str] = frozenset(
    {"gate.decided", "decision.refused", "stop.refused", "run.refused", "override", "stop"}
)

HASHED_EXCLUDE: frozenset[str] = frozenset({"record_hash"})
# What schema version 1 left out of the hash.
HASHED_EXCLUDE_V1: frozenset[str] = frozenset({"record_hash", "recorded_at"})


def hashed_exclude(schema_version: int) -> frozenset[str]:
    return HASHED_EXCLUDE_V1 if schema_version == 1 else HASHED_EXCLUDE


class Actor(BaseModel):
    # "unproven": the name an act claimed, when the act was refused before
    # its signature proved who sent it.
    type: Literal["human", "ai_model", "service", "unproven"]
    id: str
    role: str | None = None


def _as_utc(value: datetime) -> datetime:
    # A naive datetime would hash differently depending on the producer's local zone.
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValueError("timestamps must be timezone-aware (UTC)")
    return value.astimezone(UTC)


class AuditEvent(BaseModel):
    """What producers hand in. `event_id` must be deterministic so a retry is a no-op."""

    event_id: str = Field(min_length=1)
    workflow_id: str = Field(min_length=1)
    run_id: str = ""
    process: str = ""
    event_type: str = Field(min_length=1)
    occurred_at: datetime
    node: str | None = None
    actor: Actor | None = None
    data: dict[str, Any] = Field(default_factory=dict)

    @field_validator("occurred_at")
    @classmethod
    def _occurred_at_utc(cls, value: datetime) -> datetime:
        return _as_utc(value)


class AuditRecord(AuditEvent):
    """What the store keeps: the event plus its place in the workflow's hash chain."""

    schema_version: int = SCHEMA_VERSION
    seq: int = Field(ge=1)
    prev_hash: str
    record_hash: str
    recorded_at: datetime
    retain_until: datetime

    @field_validator("recorded_at", "retain_until")
    @classmethod
    def _stamps_utc(cls, value: datetime) -> datetime:
        return _as_utc(value)

    def computed_hash(self) -> str:
        return record_hash(self)


def format_timestamp(value: datetime) -> str:
    """The one text form of a timestamp: hashed, stored in SQLite, compared as text."""
    return _as_utc(value).isoformat(timespec="microseconds")


def _json_default(value: object) -> Any:
    if isinstance(value, datetime):
        return format_timestamp(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


# allow_nan=False: NaN is not JSON, and PostgreSQL or another verifier would reject it.
# One encoder for every call: json.dumps with options builds a new one each time, which
# was a third of folding a record's data.
_CANONICAL = json.JSONEncoder(
    sort_keys=True,
    separators=(",", ":"),
    ensure_ascii=False,
    allow_nan=False,
    default=_json_default,
)


def canonical_json(value: object) -> str:
    return _CANONICAL.encode(value)


def jsonable(value: Any) -> Any:
    """Plain JSON values only, so the data hashed is exactly the data read back later."""
    return json.loads(canonical_json(to_jsonable_python(value)))


# What may differ between two honest writes of one event: when and where it was written.
# A local activity re-run after its worker was lost, or a flush retried on another
# worker, sends the same event with these changed, and the first write stands. Activity
# events stored before schema version 3 also carry started_at (their occurred_at again).
VOLATILE_DATA: frozenset[str] = frozenset({"context", "started_at", "duration_ms"})


# A run's own events have ids `<workflow id>/<run id>/w/<meaning>` (see baton.audit.trail).
WORKFLOW_SIDE = "w"


def is_workflow_side(event: AuditEvent) -> bool:
    return event.event_id.startswith(f"{event.workflow_id}/{event.run_id}/{WORKFLOW_SIDE}/")


def event_content(event: AuditEvent) -> str:
    """What an event says, as text, without its volatile parts: equal for an event
    and the record it was stored as, so that a re-sent event can be told from another
    event under the same id.

    A run's own events are compared by what they are (type, node, actor; their
    ids name the visit, round or act), not by their data: a workflow task retried
    after a lost worker reads the clock anew, and its events carry the readings
    (see CLOCKLESS_GATE_VIEW in baton.runner)."""
    workflow_side = is_workflow_side(event)
    fields = {
        name: getattr(event, name)
        for name in AuditEvent.model_fields
        if name not in ("occurred_at", "data")
    }
    if not workflow_side:
        fields["data"] = {k: v for k, v in event.data.items() if k not in VOLATILE_DATA}
    return canonical_json(to_jsonable_python(fields))


def record_hash(record: AuditRecord) -> str:
    """The hash of a record as read, its values in full. From version 3 that is the hash of
    the record as stored, large values by reference (`fold`); before, of the record as is."""
    if record.schema_version < 3:
        return stored_hash(record)
    envelope = record.model_dump(mode="python", exclude={*HASHED_EXCLUDE, "data"})
    return _sha256(_with_data(envelope, fold(record.data).text))


def stored_hash(record: AuditRecord) -> str:
    """The hash of a record whose data is as the store keeps it (references not resolved):
    what the store's verification recomputes."""
    fields = record.model_dump(mode="python", exclude=set(hashed_exclude(record.schema_version)))
    return _sha256(canonical_json(fields))


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


def _with_data(fields: Mapping[str, Any], data_text: str) -> str:
    """canonical_json of `fields` plus "data", whose canonical text is given: put in its
    sorted place, between the members before "data" and those after."""
    parts = [
        canonical_json({k: v for k, v in fields.items() if k < "data"})[1:-1],
        f'"data":{data_text}',
        canonical_json({k: v for k, v in fields.items() if k > "data"})[1:-1],
    ]
    return "{" + ",".join(part for part in parts if part) + "}"


# -- values stored once ------------------------------------------------------------------------

VALUE_MIN_CHARS = 128
"""A value in a record's data (at any depth) whose canonical JSON has at least this many
characters is stored once and referenced. Part of version 3's hash rule (the hash covers the
references), so another threshold would be another schema version. Measured on the sample
runs (store bytes per run): 96, 256 and 512 all cost more than 128 (160 about the same),
which takes in the redaction stamp every record carries (130-170 characters) and the
document reference a run repeats; a reference is 77 characters and a row."""

_CONSTANTS: dict[object, str] = {None: "null", True: "true", False: "false"}
_MARKER_KEYS = ("$value", "$literal")


@dataclass(frozen=True)
class Folded:
    """An event's data as a version-3 record stores it."""

    text: str  # canonical JSON of the data, each large value a {"$value": "<sha256>"}
    values: dict[str, str]  # the canonical JSON of each value referenced, by its SHA-256
    members: dict[str, str]  # each of the data's own keys, sorted, with its value as in text


def fold(data: Mapping[str, Any]) -> Folded:
    """`data` (plain JSON values) with every value of VALUE_MIN_CHARS or more replaced by a
    reference to its canonical JSON, innermost first: a value inside a larger one is kept
    once however many records and values hold it (the AI's output in its attempt, in the
    node's output, in what the reviewer was shown). The data's own keys stay in the record.

    A dict whose only key is "$value" or "$literal" is stored as {"$literal": [key, value]},
    so that no data, hostile or not, can pose as a reference."""
    values: dict[str, str] = {}
    members = {key: _fold(data[key], values) for key in sorted(data)}
    return Folded(object_text(members), values, members)


def object_text(members: Mapping[str, str]) -> str:
    """The canonical JSON of an object from its members' canonical JSON, keys in order."""
    return "{" + ",".join(f"{encode_basestring(k)}:{v}" for k, v in members.items()) + "}"


def _fold(value: Any, values: dict[str, str]) -> str:
    if isinstance(value, str):
        text = encode_basestring(value)
    elif not isinstance(value, dict | list | tuple):
        # What json prints for these, without an encoder call each: most of a large
        # value's members are small numbers, booleans and nulls.
        if value is None or value is True or value is False:
            return _CONSTANTS[value]
        if type(value) is int or (type(value) is float and math.isfinite(value)):
            return repr(value)
        return canonical_json(value)
    else:
        # Built from its members' folded texts, innermost first: a container without a
        # large value or a marker key folds to its canonical JSON all the same, and
        # encoding each container whole as well took as many passes as it was deep.
        if isinstance(value, dict):
            members = [(key, _fold(value[key], values)) for key in sorted(value)]
            if len(members) == 1 and members[0][0] in _MARKER_KEYS:
                ((key, inner),) = members
                text = f'{{"$literal":[{encode_basestring(key)},{inner}]}}'
            else:
                text = object_text(dict(members))
        else:
            text = "[" + ",".join(_fold(item, values) for item in value) + "]"
    if len(text) < VALUE_MIN_CHARS:
        return text
    digest = _sha256(text)
    values[digest] = text
    return f'{{"$value":"{digest}"}}'


def references(value: Any) -> list[tuple[str, str]]:
    """Each reference in stored data, as (where, SHA-256): "where" names the key path."""
    found: list[tuple[str, str]] = []
    _collect(value, "", found)
    return found


def _collect(value: Any, path: str, found: list[tuple[str, str]]) -> None:
    # Only containers are visited: most members are scalars, and a call each was most of
    # the time of reading a record back.
    if isinstance(value, dict):
        if len(value) == 1:
            ((key, inner),) = value.items()
            if key == "$value" and isinstance(inner, str):
                found.append((path, inner))
                return
            if key == "$literal" and _is_literal(inner):
                value = {inner[0]: inner[1]}
        for key, inner in value.items():
            if isinstance(inner, dict | list):
                _collect(inner, f"{path}.{key}" if path else key, found)
    elif isinstance(value, list):
        for index, inner in enumerate(value):
            if isinstance(inner, dict | list):
                _collect(inner, f"{path}[{index}]", found)


# A reference as `fold` prints it.
_REFERENCE = re.compile(r'\{"\$value":"([0-9a-f]{64})"\}')


def referenced_in(text: str) -> set[str]:
    """The SHA-256 of each value that stored JSON, as the store writes it, refers to."""
    return set(_REFERENCE.findall(text))


def thawer(values: Mapping[str, str]) -> Callable[[str], Any]:
    """What reads stored JSON back in full: references replaced by their `values`, escapes
    undone. A reference to a value not in `values` stays as it is (verification names it),
    and so does one to a value that holds itself (possible only in a tampered store).

    The parser hands over each object once it is complete, innermost first, so a value is
    resolved where it is found and nothing else is visited in Python; one decoder serves
    every record read together."""
    active: set[str] = set()

    def resolve(obj: dict[str, Any]) -> Any:
        if len(obj) != 1:
            return obj
        ((key, inner),) = obj.items()
        if key == "$value" and isinstance(inner, str):
            stored = values.get(inner)
            if stored is None or inner in active:
                return obj
            active.add(inner)
            try:
                return decoder.decode(stored)
            finally:
                active.discard(inner)
        if key == "$literal" and _is_literal(inner):
            return {inner[0]: inner[1]}
        return obj

    decoder = json.JSONDecoder(object_hook=resolve)
    return decoder.decode


def _is_literal(inner: Any) -> bool:
    return isinstance(inner, list) and len(inner) == 2 and isinstance(inner[0], str)


# -- sealing -----------------------------------------------------------------------------------


@dataclass(frozen=True)
class Sealed:
    """A record ready for the store."""

    record: AuditRecord  # its data in full, as readers see it
    data: str  # canonical JSON of its data as hashed: large values by reference (`fold`)
    values: dict[str, str]  # the values it references, by SHA-256, those they hold first
    members: dict[str, str]  # each member of `data`, sorted, with its value's JSON


def seal(
    event: AuditEvent,
    *,
    seq: int,
    prev_hash: str,
    recorded_at: datetime,
    retain_until: datetime,
) -> AuditRecord:
    """Turn an event into the next record of its chain: `sealed(...).record`."""
    return sealed(
        event, seq=seq, prev_hash=prev_hash, recorded_at=recorded_at, retain_until=retain_until
    ).record


def sealed(
    event: AuditEvent,
    *,
    seq: int,
    prev_hash: str,
    recorded_at: datetime,
    retain_until: datetime,
) -> Sealed:
    """Turn an event into the next record of its chain, as the store keeps it.

    The event's data is encoded once and folded once: the folded text goes into the hash
    and to the store as it is (encoding it three times was most of an append's time). The
    hash equals `record_hash` of the record, which verification recomputes."""
    data = json.loads(canonical_json(to_jsonable_python(event.data)))
    folded = fold(data)
    record = AuditRecord(
        **event.model_dump(exclude={"data"}),
        data=data,
        seq=seq,
        prev_hash=prev_hash,
        record_hash="",
        recorded_at=recorded_at,
        retain_until=retain_until,
    )
    envelope = record.model_dump(mode="python", exclude={*HASHED_EXCLUDE, "data"})
    digest = _sha256(_with_data(envelope, folded.text))
    return Sealed(
        record=record.model_copy(update={"record_hash": digest}),
        data=folded.text,
        values=folded.values,
        members=folded.members,
    )


class RedactionPolicy(BaseModel):
    """Which policy replaced values by salted hashes; names the salt without revealing it."""

    fields: list[str]
    algorithm: str = "sha256(salt + canonical JSON of value)"
    salt_id: str
    detectors: list[str] = Field(
        default_factory=lambda: list(DETECTORS),
        description="Identifiers replaced in free text, as [kind sha256:...] (audit.detectors)",
    )


def salt_id(salt: str) -> str:
    return hashlib.sha256(salt.encode("utf-8")).hexdigest()[:12]


def redact(
    data: dict[str, Any], fields: Collection[str], salt: str
) -> tuple[dict[str, Any], RedactionPolicy]:
    """Replace the value of every key named in `fields`, at any depth, by a salted hash.

    Equal values still hash equal under one salt, so a reviewer can see that two records
    refer to the same IBAN without seeing it; an empty salt is refused because an unsalted
    hash of a short value (a name, an account number) is reversible by guessing.
    """
    if not salt:
        raise ValueError("redaction needs a non-empty salt")
    names = frozenset(fields)
    policy = RedactionPolicy(fields=sorted(names), salt_id=salt_id(salt))
    return redact_values(data, names, salt), policy


def redact_values(data: dict[str, Any], names: frozenset[str], salt: str) -> dict[str, Any]:
    """`redact` without the policy: the data itself when no key can match."""
    return _redact_dict(data, names, salt) if _may_name_any(data, names) else data


def _may_name_any(data: dict[str, Any], names: frozenset[str]) -> bool:
    """Whether a key in `data`, at any depth, may be one of `names`. One encoding
    in C and a text search, instead of walking every value in Python: a key is
    printed as "name": while quotes inside string values are escaped, so a
    miss is certain and a hit is settled by the walk."""
    if not names:
        return False
    text = json.dumps(data, ensure_ascii=False, separators=(",", ":"), default=str)
    return any(f"{json.dumps(name, ensure_ascii=False)}:" in text for name in names)


def _hash_value(value: Any, salt: str) -> str:
    digest = hashlib.sha256((salt + canonical_json(to_jsonable_python(value))).encode("utf-8"))
    return "sha256:" + digest.hexdigest()


def _redact_dict(data: dict[str, Any], names: frozenset[str], salt: str) -> dict[str, Any]:
    return {
        key: _hash_value(value, salt) if key in names else _redact_any(value, names, salt)
        for key, value in data.items()
    }


def _redact_any(value: Any, names: frozenset[str], salt: str) -> Any:
    if isinstance(value, dict):
        return _redact_dict(value, names, salt)
    if isinstance(value, list | tuple):
        return [_redact_any(item, names, salt) for item in value]
    return value
