"""What the inbox shows, computed from a run's status, and the override
form's values parsed back: pure functions, tested without a browser."""

from __future__ import annotations

import json
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

from baton.gates import GateState, reasons_of

OUTCOME_LABELS = {
    "approve": "Approved",
    "reject": "Rejected",
    "request_changes": "Changes requested",
}
# Where a gate's `shown` may hold the text the AI read, best first.
DOCUMENT_KEYS = ("document", "text")


def span(delta: timedelta) -> str:
    """A duration as a person reads it on a clock: '3 h 12 min', '2 d 4 h'."""
    minutes = int(abs(delta).total_seconds() // 60)
    days, minutes = divmod(minutes, 24 * 60)
    hours, minutes = divmod(minutes, 60)
    if days:
        return f"{days} d {hours} h" if hours else f"{days} d"
    if hours:
        return f"{hours} h {minutes} min" if minutes else f"{hours} h"
    return f"{minutes} min" if minutes else "under a minute"


def sla_clock(due_at: datetime | None, now: datetime, *, holding: bool = False) -> str:
    if holding:
        return "holding: every escalation has passed"
    if due_at is None:
        return "no SLA"
    left = due_at - now
    return f"due in {span(left)}" if left >= timedelta(0) else f"overdue by {span(left)}"


def moment(at: datetime | None) -> str:
    return "-" if at is None else at.astimezone(UTC).strftime("%Y-%m-%d %H:%M UTC")


def decision_label(outcome: str) -> str:
    return OUTCOME_LABELS.get(outcome, outcome)


@dataclass(frozen=True)
class InboxRow:
    """One gate waiting for the signed-in user, as the inbox lists it."""

    workflow_id: str
    process: str
    gate: str
    roles: list[str]
    due_at: datetime | None
    waiting_since: datetime
    holding: bool = False
    note: str = ""

    @classmethod
    def for_gate(
        cls, workflow_id: str, process: str, gate: GateState, *, note: str = ""
    ) -> InboxRow:
        return cls(
            workflow_id=workflow_id,
            process=process,
            gate=gate.gate,
            roles=gate.roles,
            due_at=gate.due_at,
            waiting_since=gate.opened_at,
            holding=gate.holding,
            note=note,
        )

    def clock(self, now: datetime) -> str:
        return sla_clock(self.due_at, now, holding=self.holding)

    def waiting(self, now: datetime) -> str:
        return span(now - self.waiting_since)

    def sort_key(self) -> tuple[bool, datetime, datetime]:
        # Oldest due first; gates without a deadline after every gate with one.
        return (self.due_at is None, self.due_at or self.waiting_since, self.waiting_since)


@dataclass(frozen=True)
class Review:
    """What a reviewer must judge at a gate, whatever kind of node opened it:
    a Gate shows its ``subject`` (the AI step's output and meta), an Ask that
    escalated to a person shows its ``proposed`` answer and ``attempts``."""

    document: str | None
    output: dict[str, Any] | None
    systems: list[str]
    confidence: float | None
    confidence_method: str | None
    attempts: list[dict[str, Any]]
    findings: list[str]
    task: str | None
    # Each reason the run is at this gate (an escalated Ask gives one).
    why: list[str]
    details: dict[str, Any] = field(default_factory=dict)
    # The document the gate shows by reference (baton.document_store); the
    # inbox reads its text from the store for the signed-in reviewer.
    document_ref: dict[str, Any] | None = None


def review_of(shown: Mapping[str, Any]) -> Review:
    subject = _mapping(shown.get("subject"))
    inputs = _mapping(shown.get("inputs"))
    output = subject.get("output") if subject else shown.get("proposed")
    attempts = [_mapping(a) for a in subject.get("attempts") or shown.get("attempts") or []]
    # Who produced the output and how sure it was: a gate's subject carries
    # its node's meta; an escalated Ask proposes its most confident answer.
    source = subject or max(
        (a for a in attempts if output is not None and a.get("output") is not None),
        key=lambda a: a.get("confidence") or 0.0,
        default={},
    )
    if source.get("provider"):
        systems = [f"{source['provider']}/{source.get('model', '?')}"]
    else:
        systems = sorted({f"{a.get('provider')}/{a.get('model')}" for a in attempts})
    texts = [
        value
        for holder in (shown, inputs)
        for key in DOCUMENT_KEYS
        if isinstance(value := holder.get(key), str)
    ]
    refs = [
        value
        for holder in (shown, inputs)
        for key in DOCUMENT_KEYS
        if _is_document_ref(value := holder.get(key))
    ]
    shown_elsewhere = {"subject", "proposed", "attempts", "findings", "task", "why", "inputs"}
    details = {
        key: value
        for holder in (inputs, shown)
        for key, value in holder.items()
        if key not in shown_elsewhere
        and not (key in DOCUMENT_KEYS and (isinstance(value, str) or _is_document_ref(value)))
    }
    return Review(
        document=texts[0] if texts else None,
        document_ref=refs[0] if refs else None,
        output=output if isinstance(output, dict) else None,
        systems=systems,
        confidence=source.get("confidence"),
        confidence_method=source.get("confidence_method"),
        attempts=attempts,
        findings=[_finding(f) for f in shown.get("findings") or []],
        task=shown.get("task") or subject.get("task"),
        why=reasons_of(shown),
        details=details,
    )


def _is_document_ref(value: Any) -> bool:
    return isinstance(value, dict) and isinstance(value.get("sha256"), str)


def _mapping(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def _finding(finding: Any) -> str:
    if isinstance(finding, dict) and "message" in finding:
        code = finding.get("code")
        return f"{finding['message']} ({code})" if code else str(finding["message"])
    return str(finding)


def open_for(gates: list[GateState], roles: set[str]) -> list[GateState]:
    """The gates of a run that the holder of ``roles`` can move on now: under
    four-eyes across roles, not the role that has already approved."""
    return [g for g in gates if g.decision is None and roles.intersection(g.waiting_for())]


# -- the override form ------------------------------------------------------


@dataclass(frozen=True)
class OverrideField:
    name: str
    value: str
    multiline: bool


class OverrideError(ValueError):
    """An edited value cannot be read back; the message says which and how."""


def override_fields(
    names: list[str], ai_output: Mapping[str, Any], typed: Mapping[str, str] | None = None
) -> list[OverrideField]:
    """The form's inputs, prefilled with what the reviewer typed last time or
    else the AI's values: scalars as text, lists and objects as JSON."""
    fields = []
    for name in names:
        value = ai_output.get(name)
        complex_value = isinstance(value, dict | list)
        if typed is not None and name in typed:
            text = typed[name]
        elif complex_value:
            text = json.dumps(value, indent=2, ensure_ascii=False)
        else:
            text = _scalar_text(value)
        fields.append(OverrideField(name, text, complex_value))
    return fields


def _scalar_text(value: Any) -> str:
    if value is None:
        return ""
    if isinstance(value, bool):
        return "true" if value else "false"
    return str(value)


def parse_override(
    names: list[str], ai_output: Mapping[str, Any], typed: Mapping[str, str]
) -> dict[str, Any]:
    """The edited output: each field read back as the type of the AI's value
    (JSON for lists and objects). An empty scalar means none. The run checks
    the result against the step's schema; this only catches what cannot be
    read at all, with a message naming the field."""
    edited: dict[str, Any] = {}
    for name in names:
        if name not in typed:
            raise OverrideError(f"the form has no field '{name}': reload the page and try again")
        edited[name] = _read_back(name, ai_output.get(name), typed[name].strip())
    return edited


def _read_back(name: str, original: Any, text: str) -> Any:
    if isinstance(original, dict | list):
        try:
            value = json.loads(text)
        except json.JSONDecodeError as err:
            raise OverrideError(
                f"field '{name}' must be JSON like the AI's value: {err.msg} at line "
                f"{err.lineno}, column {err.colno}"
            ) from None
        if not isinstance(value, type(original)):
            kind = "a list [...]" if isinstance(original, list) else "an object {...}"
            raise OverrideError(f"field '{name}' must be {kind}, as the AI's value is")
        return value
    if not text:
        return None
    if isinstance(original, bool):
        if text.lower() not in ("true", "false"):
            raise OverrideError(f"field '{name}' must be true or false, not '{text}'")
        return text.lower() == "true"
    if isinstance(original, int):
        try:
            return int(text)
        except ValueError:
            raise OverrideError(
                f"field '{name}' must be a whole number like 42, not '{text}'"
            ) from None
    if isinstance(original, float):
        try:
            return float(text)
        except ValueError:
            raise OverrideError(
                f"field '{name}' must be a number like 12.5, not '{text}'"
            ) from None
    if original is None and text.startswith(("[", "{")):
        # The AI gave nothing here; a reviewer typing a list or object means one.
        return _read_back(name, [] if text.startswith("[") else {}, text)
    # Text, or a field the AI left empty: the run's schema converts it
    # ("12.50" to a decimal, say) and says so if it cannot.
    return text
