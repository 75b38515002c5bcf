"""Every oversight act of a run in words: approvals one by one, refusals, overrides as a
diff, stops. Each is a card saying who acted, when, what they saw and what it changed, so an
auditor follows the acts without the code or the raw records.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from baton.audit.events import AuditRecord
from baton.audit.markup import _dl, _join, _muted, _pill, _Safe, _tag
from baton.audit.reading import (
    _DECISIONS,
    _REFUSALS,
    _approval_count,
    _gate_of,
    _node_named,
    _oversight_acts,
    _person,
    _role,
    _sent,
    _who,
)
from baton.audit.shown import _diff_table, _shown_table
from baton.audit.wording import _at, _clip, _duration, _number, _quote, _signature_text, _time

_ATTEMPTED = {
    "approve": "approve",
    "reject": "reject",
    "request_changes": "ask for changes at",
}
_DECIDED = {"approve": "approved", "reject": "rejected", "request_changes": "asked for changes at"}


def _act_label(record: AuditRecord) -> tuple[str, str]:
    """A short name for the act and its tone (good, bad, warn)."""
    kind, outcome = record.event_type, record.data.get("outcome")
    if kind in _DECISIONS and outcome == "approve":
        so_far, needed = _approval_count(record)
        if needed < 2:
            return "approved", "good"
        final = ": gate approved" if kind == "gate.decided" else ""
        return f"approval {so_far} of {needed}{final}", "good"
    if kind in _DECISIONS:
        return _DECIDED.get(str(outcome), str(outcome or "decided")).removesuffix(" at"), "warn"
    if kind in _REFUSALS:
        return {"run.refused": "start refused", "stop.refused": "stop refused"}.get(
            kind, "decision refused"
        ), "bad"
    if kind == "override":
        return "overrode the AI output", "warn"
    return "stopped the run", "bad"


def _decision_sentence(record: AuditRecord) -> str:
    data = record.data
    gate, outcome = _gate_of(record) or "?", str(data.get("outcome") or "decided")
    round_ = f" (round {data['round']})" if data.get("round") else ""
    sentence = f"{_person(record)} {_DECIDED.get(outcome, outcome)} gate “{gate}”{round_}"
    if outcome != "approve":
        return sentence + "."
    so_far, needed = _approval_count(record)
    if needed < 2:
        return sentence + "."
    approved_by = [str(u) for u in data.get("approved_by") or []]
    earlier = f", after {', '.join(approved_by[:-1])}" if len(approved_by) > 1 else ""
    if record.event_type == "gate.approval":
        more = needed - so_far
        return f"{sentence}: approval {so_far} of {needed}; {more} more needed from another person."
    return f"{sentence}: approval {so_far} of {needed}{earlier}; the gate is approved."


def _decision_body(record: AuditRecord, run: Sequence[AuditRecord], views: dict[str, int]) -> _Safe:
    data = record.data
    facts: list[tuple[str, object]] = [
        ("Comment", _quote(data["comment"]) if data.get("comment") else "none")
    ]
    if data.get("channel"):
        facts.append(("Channel", data["channel"]))
    if isinstance(data.get("waited_seconds"), int | float):
        escalated = int(_number(data.get("escalations")))
        facts.append(
            (
                "Decided after",
                f"{_duration(data['waited_seconds'])} at the gate, {escalated} escalation(s)",
            )
        )
    if record.actor is None or record.actor.type == "human":
        facts.append(("Signed", _signature_text(data.get("signature"))))
    if data.get("edited"):
        override = _override_before(record, run)
        facts.append(
            (
                "Output",
                f"the reviewer's edit (override at seq {override.seq})"
                if override
                else "an edited output",
            )
        )
    return _join(
        [
            _tag("p", _decision_sentence(record), class_="act-text"),
            _dl(facts),
            _seen(data, views, record.seq),
        ]
    )


def _override_before(record: AuditRecord, run: Sequence[AuditRecord]) -> AuditRecord | None:
    earlier = [
        r
        for r in run
        if r.event_type == "override" and r.node == record.node and r.seq <= record.seq
    ]
    return earlier[-1] if earlier else None


def _seen(data: Mapping[str, Any], views: dict[str, int], seq: int) -> _Safe:
    """What the decider saw; a view shown before (same digest) is named, not repeated."""
    digest = str(data.get("shown_digest") or "")
    title = _tag("h4", "What they saw")
    if digest and digest in views:
        same = f"The same view as the act at seq {views[digest]} (view digest {digest[:12]}…)."
        return _join([title, _muted(same)])
    if digest:
        views[digest] = seq
    stamp = _muted(f"View digest {digest[:12]}…, which the signature binds.") if digest else ""
    return _join([title, _shown_table(data.get("shown")), stamp])


def _refusal_sentence(record: AuditRecord) -> str:
    data, who = record.data, _who(record)
    role = _role(record)
    claimed = f"{who} ({role}; identity not proven)" if role else f"{who} (identity not proven)"
    channel = f" through the {data['channel']} channel" if data.get("channel") else ""
    sent = _sent(record)
    if record.event_type == "run.refused":
        attempt = "tried to start the run as its requester"
    elif record.event_type == "stop.refused":
        given = f" (reason given: {_quote(sent['reason'])})" if sent.get("reason") else ""
        attempt = f"tried to stop the run{given}"
    else:
        outcome = sent.get("outcome") or data.get("outcome")
        verb = _ATTEMPTED.get(str(outcome), f"decide ({outcome})" if outcome else "decide")
        if sent.get("output") is not None and outcome == "approve":
            verb = "approve with an edited output"
        attempt = f"tried to {verb} gate “{_gate_of(record) or '?'}”"
    return f"{claimed} {attempt}{channel}. The run refused it and changed nothing."


def _refusal_body(record: AuditRecord) -> _Safe:
    data = record.data
    sent = _sent(record)
    facts: list[tuple[str, object]] = [("Reason", data.get("reason") or "not recorded")]
    if sent.get("comment"):
        facts.append(("Their comment", _quote(sent["comment"])))
    if data.get("received"):
        facts.append(("As received (cut short)", _tag("code", _clip(str(data["received"]), 400))))
    elif "decision" in data and data["decision"] is None:
        facts.append(("As received", "not a valid request"))
    return _join([_tag("p", _refusal_sentence(record), class_="act-text"), _dl(facts)])


def _stop_body(record: AuditRecord, run: Sequence[AuditRecord]) -> _Safe:
    data = record.data
    channel = f" through the {data['channel']} channel" if data.get("channel") else ""
    sentence = f"{_person(record)} stopped the run{channel}."
    facts: list[tuple[str, object]] = [
        ("Reason", _quote(data["reason"]) if data.get("reason") else "not recorded")
    ]
    if record.event_type != "run.stopped":
        facts.append(("Signed", _signature_text(data.get("signature"))))
    effect = next((r for r in run if r.event_type == "run.stopped"), None)
    if effect is not None:
        undone = ", ".join(map(str, effect.data.get("compensated") or [])) or "none"
        facts.append(("Effect", f"the run stopped ({_at(effect)}); steps undone: {undone}"))
    skipped = [
        r.node
        for r in run
        if r.event_type == "node.skipped" and "stopped" in str(r.data.get("reason", ""))
    ]
    if skipped:
        facts.append(("Not run", ", ".join(str(n) for n in skipped)))
    return _join([_tag("p", sentence, class_="act-text"), _dl(facts)])


def _override_body(record: AuditRecord) -> _Safe:
    data = record.data
    source = _node_named(data.get("ai_output"))
    what = f"the AI output of “{source}”" if source else "the AI output"
    where = f" at gate “{record.node}”" if record.node else ""
    decision = f" ({data['decision']})" if data.get("decision") else ""
    sentence = f"{_person(record)} replaced {what}{where}{decision}."
    reason = [("Reason", _quote(data["reason"]) if data.get("reason") else "not recorded")]
    return _join(
        [
            _tag("p", sentence, class_="act-text"),
            _dl(reason),
            _tag("h4", "What changed"),
            _diff_table(data),
        ]
    )


def _act_card(record: AuditRecord, run: Sequence[AuditRecord], views: dict[str, int]) -> _Safe:
    label, tone = _act_label(record)
    role = _role(record)
    head = _join(
        [
            _tag("span", _time(record.occurred_at, precise=True), class_="when"),
            _tag("span", f"seq {record.seq}", class_="seq"),
            _tag("b", _who(record)),
            _tag("span", role, class_="role") if role else "",
            _tag("span", f"gate {_gate_of(record)}", class_="gate") if _gate_of(record) else "",
            _pill(label, tone),
        ]
    )
    if record.event_type in _DECISIONS:
        body = _decision_body(record, run, views)
    elif record.event_type in _REFUSALS:
        body = _refusal_body(record)
    elif record.event_type == "override":
        body = _override_body(record)
    else:
        body = _stop_body(record, run)
    return _tag("article", _join([_tag("header", head), body]), class_=f"act {tone}")


def _oversight_section(run: Sequence[AuditRecord]) -> _Safe:
    acts = _oversight_acts(run)
    if not acts:
        return _muted("No human decision, refusal, override or stop was recorded.")
    views: dict[str, int] = {}
    return _join(_act_card(record, run, views) for record in acts)
