"""How the audit reports read the trail: who acted and in what role, which records are
oversight acts, what a model made and cost, what an override changed, each run's path.

Readings, not markup: the per-run report, its checks and the period report share them, so
"a decision" or "a person" means one thing in all of them.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass
from decimal import Decimal, InvalidOperation
from typing import Any

from pydantic import BaseModel

from baton.audit.causal import causal_order
from baton.audit.events import AuditRecord
from baton.audit.wording import _money, _number

# -- who is who ---------------------------------------------------------------------------------

_DECISIONS = frozenset({"gate.approval", "gate.decided"})
_REFUSALS = frozenset({"decision.refused", "stop.refused", "run.refused"})
_STOP_ACTS = frozenset({"stop", "run.stop_requested"})
# `run.stopped` is the stop's effect; it stands as an act only when its request is missing.
OVERSIGHT_ACTS: frozenset[str] = _DECISIONS | _REFUSALS | _STOP_ACTS | {"override", "run.stopped"}
"""The event types the report tells as oversight acts. Kept here, not in `events`, since it
is a reading of the trail: the report decides what an auditor sees as an act."""


def _oversight_acts(run: Sequence[AuditRecord]) -> list[AuditRecord]:
    requested = any(r.event_type in _STOP_ACTS for r in run)
    return [
        r
        for r in run
        if r.event_type in OVERSIGHT_ACTS and not (r.event_type == "run.stopped" and requested)
    ]


def _who(record: AuditRecord) -> str:
    if record.actor is not None:
        return record.actor.id
    return str(record.data.get("user") or "someone")


def _role(record: AuditRecord) -> str | None:
    role = record.actor.role if record.actor and record.actor.role else record.data.get("role")
    return str(role) if role else None


def _person(record: AuditRecord, *, where: str = "") -> str:
    """The actor with their role, and ``where`` (a seq, a time) in the same brackets."""
    detail = "; ".join(part for part in (_role(record) or "", where) if part)
    return f"{_who(record)} ({detail})" if detail else _who(record)


def _by_person(record: AuditRecord) -> bool:
    return record.actor is not None and record.actor.type == "human"


def _actor_type(record: AuditRecord) -> str:
    return record.actor.type if record.actor else "no actor recorded"


@dataclass(frozen=True)
class _Requester:
    user: str
    proven: bool
    record: AuditRecord


def _requester(run: Sequence[AuditRecord]) -> _Requester | None:
    """Who asked for the run: proven by `run.admitted` (the signature verified), else as
    `run.started` claims it."""
    for kind, proven in (("run.admitted", True), ("run.started", False)):
        record = next((r for r in run if r.event_type == kind), None)
        if record is None:
            continue
        claimed = record.actor.id if record.actor else None
        data_input = record.data.get("input")
        if not claimed and isinstance(data_input, Mapping):
            claimed = data_input.get("requested_by")
        if claimed:
            return _Requester(str(claimed), proven, record)
    return None


def _is_approval(record: AuditRecord) -> bool:
    return record.event_type in _DECISIONS and record.data.get("outcome") == "approve"


def _approvals(run: Sequence[AuditRecord]) -> list[AuditRecord]:
    return [r for r in run if _is_approval(r)]


def _sent(record: AuditRecord) -> Mapping[str, Any]:
    """The act as its sender sent it, kept by a refusal; empty when it was not valid."""
    sent = record.data.get("decision")
    return sent if isinstance(sent, Mapping) else {}


def _gate_of(record: AuditRecord) -> str | None:
    gate = record.node or _sent(record).get("gate")
    return str(gate) if gate else None


def _approval_count(record: AuditRecord) -> tuple[int, int]:
    """(approvals so far, approvals the gate needs)."""
    approved_by = record.data.get("approved_by")
    so_far = len(approved_by) if isinstance(approved_by, list) else 1
    return so_far, so_far + int(_number(record.data.get("awaiting")))


# -- what a model made --------------------------------------------------------------------------


def _is_ai_output(value: Any) -> bool:
    """A gate's subject: the AI node's output with how it was made."""
    return (
        isinstance(value, Mapping) and "output" in value and ("node" in value or "model" in value)
    )


def _node_named(value: Any) -> str | None:
    """The node a gate's subject (an AI output) came from, if it names one."""
    return str(value["node"]) if isinstance(value, Mapping) and value.get("node") else None


def _model_of(subject: Mapping[str, Any]) -> str:
    provider, model = subject.get("provider"), subject.get("model")
    return "/".join(str(p) for p in (provider, model) if p) or "model not recorded"


def _confidence(subject: Mapping[str, Any]) -> str:
    score = subject.get("confidence")
    if not isinstance(score, int | float):
        return "not recorded"
    method = subject.get("confidence_method")
    return f"{score:.2f}" + (f" ({method})" if method else "")


class ModelUsage(BaseModel):
    """Calls to a model and what they used, summed: the per-run report's models and the
    period report's weeks count them alike."""

    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0

    def count(self, input_tokens: int, output_tokens: int, cost_usd: float) -> None:
        """One more call, and what it used."""
        self.calls += 1
        self.input_tokens += input_tokens
        self.output_tokens += output_tokens
        self.cost_usd += cost_usd


class _ModelUse(ModelUsage):
    provider: str
    model: str
    confidences: list[float] = []
    methods: set[str] = set()

    def add(self, data: Mapping[str, Any]) -> None:
        self.count(
            int(_number(data.get("input_tokens"))),
            int(_number(data.get("output_tokens"))),
            _number(data.get("cost_usd")),
        )
        if isinstance(data.get("confidence"), int | float):
            self.confidences.append(float(data["confidence"]))
        if data.get("confidence_method"):
            self.methods.add(str(data["confidence_method"]))

    def row(self) -> list[object]:
        mean = f"{sum(self.confidences) / len(self.confidences):.2f}" if self.confidences else "—"
        method = ", ".join(sorted(self.methods)) or "—"
        return [
            self.provider,
            self.model,
            self.calls,
            f"{self.input_tokens:,}",
            f"{self.output_tokens:,}",
            _money(self.cost_usd),
            mean,
            method,
        ]


def _model_uses(records: Iterable[AuditRecord]) -> list[_ModelUse]:
    uses: dict[tuple[str, str], _ModelUse] = {}
    for record in records:
        if record.event_type != "ai.inference":
            continue
        key = (str(record.data.get("provider", "?")), str(record.data.get("model", "?")))
        uses.setdefault(key, _ModelUse(provider=key[0], model=key[1])).add(record.data)
    return sorted(uses.values(), key=lambda use: (use.provider, use.model))


def _total_cost(records: Iterable[AuditRecord]) -> float:
    return sum(_number(r.data.get("cost_usd")) for r in records if r.event_type == "ai.inference")


# -- what an override changed -------------------------------------------------------------------

_ABSENT = object()


def _ai_fields(ai_output: Any) -> Any:
    """The AI's output inside what the override recorded: a gate's subject carries it under
    `output`; an Ask's human tier records the proposal itself."""
    return ai_output.get("output") if _is_ai_output(ai_output) else ai_output


def _flatten(value: Any, path: str = "") -> dict[str, Any]:
    if isinstance(value, Mapping) and value:
        return {
            key: leaf
            for name, item in value.items()
            for key, leaf in _flatten(item, f"{path}.{name}" if path else str(name)).items()
        }
    if isinstance(value, list) and value:
        return {
            key: leaf
            for i, item in enumerate(value, 1)
            for key, leaf in _flatten(item, f"{path}[{i}]").items()
        }
    return {path or "output": value}


def _same(a: Any, b: Any) -> bool:
    """Equal, or the same number written differently (decimals travel as strings)."""
    if a == b:
        return True
    numbers = [_as_decimal(v) for v in (a, b)]
    return None not in numbers and numbers[0] == numbers[1]


def _as_decimal(value: Any) -> Decimal | None:
    if isinstance(value, bool) or not isinstance(value, int | float | str):
        return None
    try:
        return Decimal(str(value))
    except InvalidOperation:
        return None


def field_diff(ai_output: Any, edited_output: Any) -> list[tuple[str, Any, Any]]:
    """(field, AI value, reviewer's value) for every field the reviewer changed, in the
    AI output's field order; a field only one side has is paired with `None`."""
    ai, edited = _flatten(_ai_fields(ai_output)), _flatten(edited_output)
    paths = [*ai, *(p for p in edited if p not in ai)]
    changed = []
    for path in paths:
        before, after = ai.get(path, _ABSENT), edited.get(path, _ABSENT)
        if not _same(before, after):
            changed.append((path, _or_none(before), _or_none(after)))
    return changed


def _or_none(value: Any) -> Any:
    return None if value is _ABSENT else value


# -- runs and their paths -----------------------------------------------------------------------


def _is_retry_or_failure(record: AuditRecord) -> bool:
    if record.event_type == "node.failed":
        return True
    attempt = _number(record.data.get("attempt"))
    return record.event_type == "activity.attempt" and (
        bool(record.data.get("error")) or attempt > 1
    )


def _runs(records: Sequence[AuditRecord]) -> list[list[AuditRecord]]:
    by_workflow: dict[str, list[AuditRecord]] = defaultdict(list)
    for record in records:
        by_workflow[record.workflow_id].append(record)
    runs = [causal_order(chain) for chain in by_workflow.values()]
    return sorted(runs, key=lambda chain: (chain[0].occurred_at, chain[0].workflow_id))


def _path_of(run: Sequence[AuditRecord]) -> list[tuple[str, str]]:
    """(node, outcome) in the order nodes started, from the run's own node events."""
    order: list[str] = []
    outcome: dict[str, str] = {}
    for record in run:
        if record.node is None or not record.event_type.startswith("node."):
            continue
        if record.node not in order:
            order.append(record.node)
        outcome[record.node] = record.event_type.removeprefix("node.")
    return [(node, outcome[node]) for node in order]


_MERMAID_NODE = re.compile(r"^\s*([A-Za-z_][\w-]*)\s*(?:\[|\(|\{|>)")


def _declared_nodes(mermaid: str | None) -> list[str]:
    """Node ids in the order the Mermaid flowchart declares them (one per line)."""
    nodes: list[str] = []
    for line in (mermaid or "").splitlines():
        match = _MERMAID_NODE.match(line)
        if match and match.group(1) not in nodes:
            nodes.append(match.group(1))
    return nodes


def _declared(run_or_all: Iterable[AuditRecord], key: str) -> list[str]:
    """Values operators declared in config.snapshot events (risk class, purpose)."""
    values = []
    for record in run_or_all:
        value = record.data.get(key) if record.event_type == "config.snapshot" else None
        if value and str(value) not in values:
            values.append(str(value))
    return values
