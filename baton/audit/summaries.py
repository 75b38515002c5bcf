"""One line of plain text per record, for the per-run report's timeline: the event
types it knows in words, any other as its data cut short.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping

from baton.audit.causal import _is_activity
from baton.audit.events import AuditRecord
from baton.audit.oversight import _decision_sentence, _refusal_sentence
from baton.audit.reading import (
    _DECISIONS,
    _REFUSALS,
    OVERSIGHT_ACTS,
    _confidence,
    _model_of,
    _person,
    _who,
    field_diff,
)
from baton.audit.wording import _clip, _money, _number, _parse_time, _short, _time
from baton.gates import reasons_of

# Bulky or machine-only data: shown elsewhere (what a decider saw) or of no use in one line.
_NOISE = frozenset({"redaction", "signature", "shown", "shown_digest", "input", "output", "meta"})


def _summary(record: AuditRecord) -> str:
    describe = _SUMMARIES.get(record.event_type)
    if describe is not None:
        return _clip(describe(record), 300)
    if _is_activity(record):
        return _activity_summary(record)
    return _short({k: v for k, v in record.data.items() if k not in _NOISE})


def _activity_summary(record: AuditRecord) -> str:
    data = record.data
    error = data.get("error")
    result = f"failed: {_clip(str(error), 160)}" if error else "succeeded"
    took = f" in {_number(data.get('duration_ms')):,.1f} ms" if "duration_ms" in data else ""
    name = data.get("activity_type") or record.node or "activity"
    return f"{name} attempt {data.get('attempt', '?')}: {result}{took}"


def _started_summary(record: AuditRecord) -> str:
    data_input = record.data.get("input")
    document = data_input.get("document") if isinstance(data_input, Mapping) else None
    what = f"; document {document.get('name')}" if isinstance(document, Mapping) else ""
    return f"start requested as {_who(record)} (claimed until its signature is checked){what}"


def _inference_summary(record: AuditRecord) -> str:
    data = record.data
    model = _who(record) if record.actor else _model_of(data)
    tokens = f"{int(_number(data.get('input_tokens')))}/{int(_number(data.get('output_tokens')))}"
    return (
        f"{model}: {data.get('outcome', 'answered')}, confidence {_confidence(data)}; "
        f"tokens in/out {tokens}; {_money(_number(data.get('cost_usd')))}"
    )


def _gate_opened_summary(record: AuditRecord) -> str:
    data = record.data
    roles = ", ".join(str(r) for r in data.get("roles") or []) or "?"
    needed = int(_number(data.get("approvals_needed")) or 1)
    due = _parse_time(data.get("due_at"))
    shown = data.get("shown")
    reasons = reasons_of(shown) if isinstance(shown, Mapping) else []
    return (
        f"waits for {roles}; {needed} approval(s) needed"
        + (f"; due {_time(due)}" if due else "")
        + (f"; why: {'; '.join(reasons)}" if reasons else "")
    )


def _act_summary(record: AuditRecord) -> str:
    if record.event_type in _DECISIONS:
        return _decision_sentence(record)
    if record.event_type in _REFUSALS:
        return f"{_refusal_sentence(record)} Reason: {record.data.get('reason', 'not recorded')}"
    if record.event_type == "override":
        changed = field_diff(record.data.get("ai_output"), record.data.get("edited_output"))
        return f"{_person(record)} replaced the AI output: {len(changed)} field(s) changed"
    return f"{_person(record)} stopped the run: {record.data.get('reason', 'no reason recorded')}"


def _reason_summary(record: AuditRecord) -> str:
    data = record.data
    return str(data.get("detail") or data.get("reason") or data.get("error") or record.event_type)


def _ended_summary(record: AuditRecord) -> str:
    data = record.data
    error = f": {data['error']}" if data.get("error") else ""
    return f"ended {data.get('outcome') or data.get('status') or ''}{error}"


def _finished_summary(record: AuditRecord) -> str:
    took = f" in {_number(record.data.get('duration_ms')):,.1f} ms"
    return (str(record.data.get("detail") or "") or "finished") + took


def _routing_summary(record: AuditRecord) -> str:
    data = record.data
    cascade = data.get("cascade")
    tiers = f"; cascade {' → '.join(map(str, cascade))}" if isinstance(cascade, list) else ""
    why = f": {data['why']}" if data.get("why") else ""
    return f"{data.get('decision', 'decided')}{why}{tiers}"


_SUMMARIES: dict[str, Callable[[AuditRecord], str]] = {
    **{kind: _act_summary for kind in OVERSIGHT_ACTS},
    "run.started": _started_summary,
    "run.admitted": lambda r: f"{_who(r)}'s signature on the start verified",
    "run.ended": _ended_summary,
    "config.snapshot": lambda r: (
        f"configuration {str(r.data.get('digest', ''))[:12]}… snapshotted; "
        f"risk class: {r.data.get('risk_class') or 'not declared'}"
    ),
    "node.started": lambda r: f"visit {r.data.get('visit', '?')} ({r.data.get('kind', 'node')})",
    "node.finished": _finished_summary,
    "node.skipped": _reason_summary,
    "node.failed": _reason_summary,
    "routing.decided": _routing_summary,
    "ai.inference": _inference_summary,
    "gate.opened": _gate_opened_summary,
    "gate.escalated": lambda r: (
        "SLA chain exhausted: holding"
        if r.data.get("holding")
        else f"escalated to {r.data.get('to_role')}"
    ),
}
