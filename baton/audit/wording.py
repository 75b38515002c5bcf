"""Recorded values in words, for both audit reports: times, money, durations, quotes,
signatures and the retention settings. Plain text: the HTML kit (`markup`) escapes it.
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any

from baton.audit.events import AuditRecord
from baton.audit.retention import DEFAULT_RETENTION_DAYS, RetentionOverride


def _time(value: datetime | None, *, precise: bool = False) -> str:
    if value is None:
        return "—"
    stamp = value.astimezone(UTC)
    # Milliseconds where rows of one run are compared: acts a second apart are common.
    if precise:
        return stamp.strftime("%Y-%m-%d %H:%M:%S.") + f"{stamp.microsecond // 1000:03d} UTC"
    return stamp.strftime("%Y-%m-%d %H:%M:%S UTC")


def _money(value: float) -> str:
    return f"${value:,.4f}"


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _short(value: Any, limit: int = 140) -> str:
    """A one-line rendering of recorded data, cut so a table row stays readable."""
    if isinstance(value, Mapping):
        text = "; ".join(f"{key}={_short(val, 60)}" for key, val in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(_short(item, 40) for item in value)
    else:
        text = "" if value is None else str(value)
    return _clip(text, limit)


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.1f} s"
    minutes, secs = divmod(round(seconds), 60)
    hours, minutes = divmod(minutes, 60)
    days, hours = divmod(hours, 24)
    if days:
        return f"{days} d {hours} h"
    return f"{hours} h {minutes} min" if hours else f"{minutes} min {secs} s"


def _span(seconds: float) -> str:
    """A bin edge in words: 10 s, 5 min, 4 h, 3 d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _quote(text: object) -> str:
    return f"“{_clip(str(text), 300)}”"


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


def _at(record: AuditRecord) -> str:
    return f"seq {record.seq}, {_time(record.occurred_at, precise=True)}"


def _signature_text(signature: Any) -> str:
    if not isinstance(signature, Mapping):
        return "not signed"
    key = str(signature.get("key") or "")
    method = signature.get("method") or "signature"
    via = f", via {signature['via']}" if signature.get("via") else ""
    return f"{method}{via}; key {_clip(key, 28)}" if key else f"{method}{via}"


def retention_override_text(override: RetentionOverride | None) -> str:
    """The override that lets the configured retention go below the floor, in words."""
    if override is None:
        return f"none: the floor of {DEFAULT_RETENTION_DAYS} days applies"
    return (
        f"the floor of {DEFAULT_RETENTION_DAYS} days is lowered to {override.days} days by "
        f"{override.by} ({override.role}), recorded "
        f"{_time(datetime.fromisoformat(override.recorded_at))}, signed by them and "
        f"countersigned with the checkpoint key; why: {_quote(override.reason)}"
    )
