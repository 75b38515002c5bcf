"""Audit events as producers hand them in, and records as the store keeps them.

A record's hash covers every field but `record_hash` itself, over a canonical JSON form that
this module owns (not pydantic's serialiser), so a record written today still verifies after
a library upgrade changes how datetimes or floats are printed. Records of schema version 1
left `recorded_at` out of the hash, so it could be backdated unseen; they still verify under
their own rule.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Collection
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, Field, field_validator
from pydantic_core import to_jsonable_python

from baton.audit.detectors import DETECTORS

SCHEMA_VERSION = 2

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
        "override",
        "stop",
        "run.ended",
        "config.snapshot",
        "audit.reconcile_difference",
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


def canonical_json(value: object) -> str:
    # allow_nan=False: NaN is not JSON, and PostgreSQL or another verifier would reject it.
    return json.dumps(
        value,
        sort_keys=True,
        separators=(",", ":"),
        ensure_ascii=False,
        allow_nan=False,
        default=_json_default,
    )


def jsonable(value: Any) -> Any:
    """Plain JSON values only, so the data hashed is exactly the data read back later."""
    return json.loads(canonical_json(to_jsonable_python(value)))


# What may differ between two honest writes of one event: when and where it was written.
# A local activity re-run after its worker was lost, or a flush retried on another
# worker, sends the same event with these changed, and the first write stands.
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
    fields = record.model_dump(mode="python", exclude=set(hashed_exclude(record.schema_version)))
    return hashlib.sha256(canonical_json(fields).encode("utf-8")).hexdigest()


def seal(
    event: AuditEvent,
    *,
    seq: int,
    prev_hash: str,
    recorded_at: datetime,
    retain_until: datetime,
) -> AuditRecord:
    """Turn an event into the next record of its chain.

    The event's data is encoded once: the canonical text both yields the
    plain JSON values stored and goes into the hash as it is (encoding it
    three times was most of an append's time). The hash equals
    `record_hash` of the result, which verification recomputes."""
    data_text = canonical_json(to_jsonable_python(event.data))
    record = AuditRecord(
        **event.model_dump(exclude={"data"}),
        data=json.loads(data_text),
        seq=seq,
        prev_hash=prev_hash,
        record_hash="",
        recorded_at=recorded_at,
        retain_until=retain_until,
    )
    envelope = record.model_dump(mode="python", exclude={*HASHED_EXCLUDE, "data"})
    # canonical_json of the whole record, with the data's text put in its
    # sorted place: the members before "data", "data", the members after.
    parts = [
        canonical_json({k: v for k, v in envelope.items() if k < "data"})[1:-1],
        f'"data":{data_text}',
        canonical_json({k: v for k, v in envelope.items() if k > "data"})[1:-1],
    ]
    hashed = "{" + ",".join(part for part in parts if part) + "}"
    digest = hashlib.sha256(hashed.encode("utf-8")).hexdigest()
    return record.model_copy(update={"record_hash": digest})


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
