"""`baton status` as text: where a run is and what it has done, every
model attempt of its Ask steps and every turn and tool call of its Agents
included. It reads whatever state a run is
in (a step decided by a person has no model, a step still running has no
attempts yet, an older run lacks newer facts), so it never fails on one."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from baton.gates import reasons_of
from baton.state import NodeRecord, RunStatus


def _short(value: Any, limit: int = 160) -> str:
    text = json.dumps(value, default=str)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return float(value)


def _listed(value: Any) -> list[Any]:
    """A list the run's state should hold, or nothing if it holds something else."""
    return value if isinstance(value, list) else []


def _usd(value: Any) -> str:
    cost = _number(value)
    return "" if cost is None else f"${cost:.6g}"


def _confidence(meta: Mapping[str, Any]) -> str:
    confidence = _number(meta.get("confidence"))
    if confidence is None:
        return ""
    return f"confidence {confidence:.2f} ({meta.get('confidence_method') or '?'})"


def _attempt_lines(attempt: Any) -> list[str]:
    if isinstance(attempt, BaseModel):
        attempt = attempt.model_dump(mode="json")
    if not isinstance(attempt, Mapping):
        return [f"             attempt: {_short(attempt)}"]
    facts = [
        _confidence(attempt),
        f"tokens {attempt.get('input_tokens') or 0} in / {attempt.get('output_tokens') or 0} out",
        _usd(attempt.get("cost_usd")),
    ]
    if attempt.get("repair"):
        facts.insert(0, f"repair {attempt['repair']}")
    if attempt.get("finish_reason"):
        facts.append(f"finished: {attempt['finish_reason']}")
    head = (
        f"             #{attempt.get('index', '?')} {attempt.get('tier', '?')} "
        f"{attempt.get('provider', '?')}/{attempt.get('model', '?')}: "
        f"{attempt.get('outcome', '?')}, {', '.join(f for f in facts if f)}"
    )
    return [
        head,
        *[f"                {_short(error, 300)}" for error in _listed(attempt.get("errors"))],
    ]


def _turn_lines(meta: Mapping[str, Any], indent: str) -> list[str]:
    """An Agent's turns, each with the tool calls it asked for and how they ended."""
    turns = meta.get("turns")
    calls = meta.get("tool_calls")
    by_turn: dict[Any, list[Mapping[str, Any]]] = {}
    for call in _listed(calls):
        if isinstance(call, Mapping):
            by_turn.setdefault(call.get("turn"), []).append(call)
    lines = []
    for turn in _listed(turns):
        if not isinstance(turn, Mapping):
            lines.append(f"{indent}turn: {_short(turn)}")
            continue
        facts = [
            f"tokens {turn.get('input_tokens') or 0} in / {turn.get('output_tokens') or 0} out",
            _usd(turn.get("cost_usd")),
        ]
        if turn.get("finish_reason"):
            facts.append(f"finished: {turn['finish_reason']}")
        lines.append(
            f"{indent}turn {turn.get('index', '?')} {turn.get('provider', '?')}/"
            f"{turn.get('model', '?')}: {turn.get('outcome', '?')}, "
            + ", ".join(f for f in facts if f)
        )
        errors = turn.get("errors")
        lines += [f"{indent}   {_short(e, 300)}" for e in _listed(errors)]
        for call in by_turn.get(turn.get("index"), []):
            line = f"{indent}   call {call.get('tool', '?')}: {call.get('outcome', '?')}"
            if call.get("approved_by"):
                line += f", approved by {call['approved_by']}"
            if call.get("error"):
                line += f" ({_short(call['error'], 200)})"
            lines.append(line)
    return lines


def _node_lines(record: NodeRecord) -> list[str]:
    meta = record.meta
    line = f"  {record.node:<10} {record.status:<9}"
    confidence = _confidence(meta)
    if confidence:
        # A person who decided an escalated Ask sets a confidence, not a model.
        by = meta.get("decided_by") or f"{meta.get('provider', '?')}/{meta.get('model', '?')}"
        line += f" {by} {confidence}"
    attempts = meta.get("attempts")
    if isinstance(attempts, list) and attempts:
        line += f", {len(attempts)} attempt(s)"
        if _usd(meta.get("cost_usd")):
            line += f", cost {_usd(meta.get('cost_usd'))}"
    if record.detail:
        line += f" [{record.detail}]"
    if record.status == "finished" and record.output is not None:
        line += f"\n             {_short(record.output)}"
    lines = [line]
    if isinstance(attempts, list):
        for attempt in attempts:
            lines += _attempt_lines(attempt)
    lines += _turn_lines(meta, "             ")
    items = meta.get("items")
    for index, item in enumerate(_listed(items)):
        if isinstance(item, Mapping):
            lines.append(f"             item {index}:")
            lines += _turn_lines(item, "                ")
    return lines


def format_status(status: RunStatus) -> str:
    lines = [
        f"{status.workflow_id}  ({status.process})  state: {status.state}",
        f"requested by {status.requested_by}; config {status.config_digest[:12] or '-'}; "
        f"graph {status.graph_digest or '-'}",
        f"current: {', '.join(status.current) or '-'}",
        "nodes:",
    ]
    if status.execution > 1:
        # Continued as new (baton.carry): the state shown is the whole run's.
        lines.insert(2, f"history: execution {status.execution} of this run")
    for record in status.nodes:
        lines += _node_lines(record)
    if status.cost_usd:
        lines.append(f"model cost of the run: {_usd(status.cost_usd)}")
    for gate in status.gates:
        lines += [
            f"  earlier round of {gate.gate}: {d.outcome} by {d.user} ({d.role}) {d.comment}"
            for d in gate.earlier
        ]
        if gate.decision is None:
            due = gate.due_at.isoformat(timespec="minutes") if gate.due_at else "none"
            lines.append(
                f"open gate {gate.gate}: waiting for {', '.join(gate.waiting_for())}; due {due}"
                + ("; holding (SLA chain exhausted)" if gate.holding else "")
            )
            lines += [f"  why: {reason}" for reason in reasons_of(gate.shown)]
            lines += [
                f"  reminded {', '.join(r.roles)} at {r.at.isoformat()}" for r in gate.reminders
            ]
            lines += [f"  escalated to {e.to_role} at {e.at.isoformat()}" for e in gate.escalations]
            lines += [
                f"  approved by {a.user} ({a.role}); {gate.approvals_needed - len(gate.approvals)}"
                " more approval(s) needed"
                for a in gate.approvals[-1:]
            ]
            lines.append(f"  shows: {_short(gate.shown, 300)}")
        else:
            d = gate.decision
            lines.append(f"gate {gate.gate}: {d.outcome} by {d.user} ({d.role}) {d.comment}")
    for refusal in status.refusals:
        lines.append(
            f"refused {refusal.act} {refusal.channel} from {refusal.user or '?'}: {refusal.reason}"
        )
    if status.stopped:
        stopped = status.stopped
        undone = ", ".join(stopped.compensated) or "nothing"
        lines.append(
            f"stopped by {stopped.user} ({stopped.role}): {stopped.reason}; undone: {undone}"
        )
    if status.error:
        lines.append(f"error: {status.error}")
    return "\n".join(lines)
