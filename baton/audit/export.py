"""Exports of the audit trail: lossless JSONL, and one self-contained HTML report.

The HTML report is written for a compliance reviewer who has only the file: inline CSS, no
scripts, no external resources, every recorded value escaped. It states the scope it was
given and never claims compliance: it shows what the trail recorded and whether the chain
verifies.

Each run is told in causal order (what happened before what), every oversight act is in
words (approvals one by one, refusals, overrides as a diff, stops), and per-run checks state
their evidence, so an auditor needs neither the code nor the raw records to follow a run.
"""

from __future__ import annotations

import html
import json
import re
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from decimal import Decimal, InvalidOperation
from pathlib import Path
from typing import Any, Literal

from baton.audit.anchor import AnchorProof
from baton.audit.events import AuditRecord
from baton.audit.reconcile import ReconcileStatus, reconcile_status
from baton.audit.retention import DEFAULT_RETENTION_DAYS, RetentionOverride
from baton.audit.verify import Problem, VerifyReport
from baton.gates import reasons_of

# -- JSONL -----------------------------------------------------------------------------------


def export_jsonl(
    records: Iterable[AuditRecord], out: Path, anchors: Iterable[AnchorProof] = ()
) -> int:
    """One record per line, every field as stored, so `read_jsonl` gives the same records
    and their hashes still recompute outside Baton; then one `{"anchor": ...}` line per
    run, the signed checkpoint and inclusion proof of its chain (`baton audit verify
    --file` checks both, offline)."""
    count = 0
    with out.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            count += 1
        for anchor in anchors:
            fh.write(json.dumps({"anchor": anchor.model_dump(mode="json")}) + "\n")
    return count


def read_export(path: Path) -> tuple[list[str], list[AnchorProof]]:
    """The record lines of a JSONL export, as written, and its anchors."""
    lines: list[str] = []
    anchors: list[AnchorProof] = []
    with path.open(encoding="utf-8") as fh:
        for line in fh:
            if not line.strip():
                continue
            if line.startswith('{"anchor":'):
                anchors.append(AnchorProof.model_validate(json.loads(line)["anchor"]))
            else:
                lines.append(line.rstrip("\n"))
    return lines, anchors


def read_jsonl(path: Path) -> list[AuditRecord]:
    lines, _ = read_export(path)
    return [AuditRecord.model_validate_json(line) for line in lines]


# -- HTML building blocks --------------------------------------------------------------------


class _Safe(str):
    """Text that is already HTML; everything else is escaped on the way out."""


def _esc(value: object) -> _Safe:
    return value if isinstance(value, _Safe) else _Safe(html.escape(str(value), quote=True))


def _tag(name: str, body: object = "", **attrs: str) -> _Safe:
    rendered = "".join(f' {key.rstrip("_")}="{_esc(val)}"' for key, val in attrs.items() if val)
    return _Safe(f"<{name}{rendered}>{_esc(body)}</{name}>")


def _join(parts: Iterable[object]) -> _Safe:
    return _Safe("".join(_esc(part) for part in parts))


def _table(
    headers: Sequence[str],
    rows: Iterable[Sequence[object]],
    *,
    class_: str = "",
    foot: Sequence[object] | None = None,
    numeric: Sequence[int] = (),
) -> _Safe:
    def cells(row: Sequence[object], cell: str) -> _Safe:
        return _join(
            _tag(cell, value, class_="num") if i in numeric else _tag(cell, value)
            for i, value in enumerate(row)
        )

    head = _tag("thead", _tag("tr", cells(headers, "th")))
    body = _tag("tbody", _join(_tag("tr", cells(row, "td")) for row in rows))
    tail = _tag("tfoot", _tag("tr", cells(foot, "td"))) if foot else _Safe("")
    return _tag("table", _join([head, body, tail]), class_=class_)


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


def _quote(text: object) -> str:
    return f"“{_clip(str(text), 300)}”"


def _pill(text: str, kind: str) -> _Safe:
    return _tag("span", text, class_=f"pill {kind}")


def _muted(text: str) -> _Safe:
    return _tag("p", text, class_="muted")


# -- causal order ----------------------------------------------------------------------------
#
# The store's seq is the order records arrived, not the order things happened: the worker's
# activity interceptor writes each attempt when it ends, while the run's own events leave in
# batches (at a gate, at the end). The run's own events carry workflow time, which never goes
# back and is the same for events of one workflow task, so they sort by time and then by seq,
# which keeps the order the run recorded them in. Activity attempts carry the worker's clock,
# which need not agree with workflow time (a time-skipping test server is years ahead): each
# is placed by what it belongs to, after the event that scheduled it and before the event
# that used its result, and by its clock only among the events in between.

# Run-level activities (no node), by the run event that records their result.
_RUN_LEVEL_CONSUMERS = {"snapshot_run_config": "config.snapshot"}
_NODE_ENDS = frozenset({"node.finished", "node.failed", "node.skipped"})
# On a tie in workflow time, the start comes first and the end last, whatever seq says.
_TIE_RANK = {"run.started": 0, "run.ended": 2}


def _is_activity(record: AuditRecord) -> bool:
    return record.event_type.startswith("activity.")


def causal_order(run: Sequence[AuditRecord]) -> list[AuditRecord]:
    """The records of one run in happened-before order: `run.started` first and
    `run.ended` last, a node's start before its activity attempts, an attempt before the
    event that used its result, a gate's decision before the node after the gate starts."""
    flow = sorted(
        (r for r in run if not _is_activity(r)),
        key=lambda r: (r.occurred_at, _TIE_RANK.get(r.event_type, 1), r.seq),
    )
    slots: dict[int, list[AuditRecord]] = defaultdict(list)
    attempts = sorted(
        (r for r in run if _is_activity(r)),
        key=lambda r: (r.occurred_at, _number(r.data.get("attempt")), r.seq),
    )
    for attempt in attempts:
        slots[_slot(attempt, flow)].append(attempt)
    ordered: list[AuditRecord] = []
    for index, record in enumerate(flow):
        ordered += slots.pop(index, [])
        ordered.append(record)
    return ordered + slots.pop(len(flow), [])


def _slot(attempt: AuditRecord, flow: Sequence[AuditRecord]) -> int:
    """The index in ``flow`` before which ``attempt`` goes."""
    lo, hi = _window(attempt, flow)
    position = lo + 1
    while position < hi and flow[position].occurred_at <= attempt.occurred_at:
        position += 1
    return min(position, hi)


def _find(
    flow: Sequence[AuditRecord],
    accept: Callable[[AuditRecord], bool],
    *,
    after: int = -1,
    before: int | None = None,
    last: bool = False,
) -> int | None:
    indices = range(after + 1, len(flow) if before is None else before)
    for index in reversed(indices) if last else indices:
        if accept(flow[index]):
            return index
    return None


@dataclass(frozen=True)
class _ActivityRef:
    """What the runner's activity id says: ``<node>#<visit>``, then ``.<n>`` for a model
    attempt, ``.undo`` for a compensation, ``.notice<n>`` for a gate's n-th notice."""

    node: str
    visit: int | None
    suffix: str

    @classmethod
    def of(cls, attempt: AuditRecord) -> _ActivityRef:
        node, _, rest = str(attempt.data.get("activity_id") or "").partition("#")
        visit, _, suffix = rest.partition(".")
        return cls(
            node if rest else attempt.node or "", int(visit) if visit.isdigit() else None, suffix
        )

    def numbered(self, prefix: str) -> int | None:
        number = self.suffix.removeprefix(prefix)
        return int(number) if self.suffix.startswith(prefix) and number.isdigit() else None


def _window(attempt: AuditRecord, flow: Sequence[AuditRecord]) -> tuple[int, int]:
    """(lo, hi): the attempt happened after flow[lo] and before flow[hi]."""
    ended = _find(flow, lambda r: r.event_type == "run.ended", last=True)
    end = len(flow) if ended is None else ended
    begin = _find(flow, lambda r: r.event_type == "run.started")
    begin = -1 if begin is None else begin
    ref = _ActivityRef.of(attempt)
    started = _find(
        flow, lambda r: _is_node_event(r, "node.started", ref.node, ref.visit), after=begin
    )
    if started is None:
        consumer = _RUN_LEVEL_CONSUMERS.get(str(attempt.data.get("activity_type")))
        found = _find(flow, lambda r: r.event_type == consumer, after=begin) if consumer else None
        return begin, end if found is None else found
    if ref.suffix == "undo":
        return _compensation_window(flow, ref, started, end)
    node_end = _find(flow, lambda r: _ends_node(r, ref.node, ref.visit), after=started)
    hi = end if node_end is None else node_end
    notice = ref.numbered("notice")
    if notice is not None:
        return _notice_window(flow, ref.node, notice, started, hi)
    index = ref.numbered("")
    if index is not None:
        used = _find(flow, lambda r: _is_inference(r, ref.node, index), after=started, before=hi)
        hi = hi if used is None else used
    # The node's own code records what it decided before it scheduled the attempt.
    lo = _find(flow, lambda r: r.node == ref.node, after=started, before=hi, last=True)
    return (started if lo is None else lo), hi


def _is_inference(record: AuditRecord, node: str, index: int) -> bool:
    return (
        record.event_type == "ai.inference"
        and record.node == node
        and record.data.get("index") == index
    )


def _is_node_event(record: AuditRecord, kind: str, node: str, visit: int | None) -> bool:
    return (
        record.event_type == kind
        and record.node == node
        and (visit is None or record.data.get("visit") in (None, visit))
    )


def _ends_node(record: AuditRecord, node: str, visit: int | None) -> bool:
    return record.event_type in _NODE_ENDS and _is_node_event(
        record, record.event_type, node, visit
    )


def _compensation_window(
    flow: Sequence[AuditRecord], ref: _ActivityRef, started: int, end: int
) -> tuple[int, int]:
    began = _find(flow, lambda r: _is_node_event(r, "compensation.started", ref.node, ref.visit))
    lo = started if began is None else began
    done = _find(
        flow,
        lambda r: (
            r.event_type in ("compensation.finished", "compensation.failed")
            and _is_node_event(r, r.event_type, ref.node, ref.visit)
        ),
        after=lo,
        before=end,
    )
    return lo, end if done is None else done


def _notice_window(
    flow: Sequence[AuditRecord], node: str, number: int, started: int, hi: int
) -> tuple[int, int]:
    """The n-th notice of a gate is sent upon its n-th reminder or escalation, before the
    gate records anything else (a failed notice, the next escalation, a decision)."""
    causes = [
        i
        for i in range(started + 1, hi)
        if flow[i].node == node and flow[i].event_type in ("gate.reminded", "gate.escalated")
    ]
    lo = causes[number - 1] if 0 < number <= len(causes) else started
    after = _find(flow, lambda r: r.node == node, after=lo, before=hi)
    return lo, hi if after is None else after


# -- who is who ------------------------------------------------------------------------------

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


# -- recorded values as HTML -----------------------------------------------------------------


def _scalar(value: Any) -> str:
    if isinstance(value, bool):
        return "yes" if value else "no"
    return _clip(str(value), 600)


def _value_cell(value: Any, depth: int = 0) -> _Safe:
    """A recorded value for a table cell: nested tables two levels deep, text below."""
    if value is None:
        return _tag("span", "—", class_="muted")
    if isinstance(value, Mapping):
        if not value:
            return _tag("span", "none", class_="muted")
        if depth >= 2:
            return _esc(_short(value, 300))
        rows = [[key, _value_cell(val, depth + 1)] for key, val in value.items()]
        return _tag("table", _tag("tbody", _rows(rows)), class_="nested")
    if isinstance(value, list | tuple):
        return _list_cell(list(value), depth)
    return _esc(_scalar(value))


def _rows(rows: Iterable[Sequence[object]]) -> _Safe:
    return _join(_tag("tr", _join(_tag("td", cell) for cell in row)) for row in rows)


def _list_cell(items: list[Any], depth: int) -> _Safe:
    if not items:
        return _tag("span", "none", class_="muted")
    if all(isinstance(item, Mapping) for item in items) and depth < 2:
        columns: list[str] = []
        for item in items:
            columns += [str(key) for key in item if str(key) not in columns]
        return _table(
            ["#", *columns],
            (
                [i, *(_value_cell(item.get(c), depth + 1) for c in columns)]
                for i, item in enumerate(items, 1)
            ),
            class_="nested",
        )
    if all(not isinstance(item, Mapping | list | tuple) for item in items):
        return _esc(_clip(", ".join(_scalar(item) for item in items), 600))
    return _tag("ol", _join(_tag("li", _value_cell(item, depth + 1)) for item in items))


def _is_document(value: Any) -> bool:
    return isinstance(value, Mapping) and {"sha256", "name"} <= set(value)


def _document_cell(ref: Mapping[str, Any]) -> _Safe:
    parts: list[object] = [_tag("b", ref.get("name", "?"))]
    if isinstance(ref.get("size"), int):
        parts.append(f" · {ref['size']:,} bytes")
    if ref.get("media_type"):
        parts.append(f" · {ref['media_type']}")
    parts.append(_join([" · sha256 ", _tag("code", f"{str(ref.get('sha256'))[:16]}…")]))
    return _join(parts)


def _findings_cell(value: Any) -> _Safe:
    if not value:
        return _esc("none")
    if not isinstance(value, list):
        return _value_cell(value)
    return _tag("ul", _join(_tag("li", _finding(item)) for item in value), class_="findings")


def _finding(item: Any) -> _Safe:
    if isinstance(item, Mapping) and "message" in item:
        code = item.get("code")
        return _join([*([_tag("code", code), ": "] if code else []), item["message"]])
    return _value_cell(item, 1)


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


def _output_rows(output: Any) -> list[list[object]]:
    if not isinstance(output, Mapping):
        return [[_tag("span", "output", class_="field"), _value_cell(output)]]
    return [[_tag("span", key, class_="field"), _value_cell(val)] for key, val in output.items()]


def _shown_rows(key: str, value: Any) -> list[list[object]]:
    if _is_document(value):
        label = "Document" if key == "document" else f"Document ({key})"
        return [[label, _document_cell(value)]]
    if key == "findings":
        return [["Findings", _findings_cell(value)]]
    if _is_ai_output(value):
        return [
            [f"AI output of {value.get('node', key)}", _model_of(value)],
            ["Confidence", _confidence(value)],
            *_output_rows(value.get("output")),
        ]
    if key == "proposed":
        if value is None:
            return [["AI proposal", "none: no model gave a valid answer"]]
        return [["AI proposal", "the best answer the models gave"], *_output_rows(value)]
    if key == "attempts" and isinstance(value, list):
        return [["Model attempts", _attempts_cell(value)]]
    if key == "why":
        reasons = reasons_of({"why": value})
        return [["Why a person decides", _tag("ul", _join(_tag("li", r) for r in reasons))]]
    return [[key, _value_cell(value)]]


def _attempts_cell(attempts: list[Any]) -> _Safe:
    rows = [
        [
            a.get("index", i),
            _model_of(a),
            a.get("outcome", "—"),
            _confidence(a),
            _short(a.get("errors") or "—", 200),
        ]
        for i, a in enumerate(attempts, 1)
        if isinstance(a, Mapping)
    ]
    return _table(["#", "Model", "Outcome", "Confidence", "Errors"], rows, class_="nested")


def _shown_table(shown: Any) -> _Safe:
    """What a decider was shown, as the run recorded it when they decided."""
    if shown is None or shown == "":
        return _muted("The record does not say what was shown.")
    if not isinstance(shown, Mapping):
        return _tag("p", _clip(str(shown), 600))
    rows = [row for key, value in shown.items() for row in _shown_rows(str(key), value)]
    return _table(["Shown", "Value"], rows, class_="shown")


# -- overrides as a diff ---------------------------------------------------------------------

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


def _diff_cell(value: Any) -> _Safe:
    return _tag("span", "(empty)", class_="muted") if value is None else _value_cell(value)


def _diff_table(data: Mapping[str, Any]) -> _Safe:
    if not isinstance(data.get("edited_output"), Mapping):
        return _muted("The record holds no edited output, so no field-by-field diff.")
    changes = field_diff(data.get("ai_output"), data["edited_output"])
    if not changes:
        return _muted("The edited output equals the AI output in every field.")
    total = len(_flatten(_ai_fields(data.get("ai_output"))))
    rows = [[_tag("code", path), _diff_cell(a), _diff_cell(b)] for path, a, b in changes]
    note = _muted(
        f"{len(changes)} field(s) changed; the other {max(total - len(changes), 0)} kept."
    )
    return _join([_table(["Field", "AI value", "Reviewer's value"], rows, class_="diff"), note])


# -- oversight acts in words -----------------------------------------------------------------

_ATTEMPTED = {
    "approve": "approve",
    "reject": "reject",
    "request_changes": "ask for changes at",
}
_DECIDED = {"approve": "approved", "reject": "rejected", "request_changes": "asked for changes at"}


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


def _signature_text(signature: Any) -> str:
    if not isinstance(signature, Mapping):
        return "not signed"
    key = str(signature.get("key") or "")
    method = signature.get("method") or "signature"
    via = f", via {signature['via']}" if signature.get("via") else ""
    return f"{method}{via}; key {_clip(key, 28)}" if key else f"{method}{via}"


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


# -- per-run checks --------------------------------------------------------------------------

CheckStatus = Literal["pass", "fail", "n/a"]


@dataclass(frozen=True)
class Check:
    """One statement about a run, whether the trail bears it out, and the records that
    show it (named by seq, so an auditor can find them in the timeline and in verify)."""

    label: str
    status: CheckStatus
    evidence: list[str]


def run_checks(run: Sequence[AuditRecord]) -> list[Check]:
    ordered = causal_order(run)
    return [
        _start_recorded(ordered),
        _start_signed(ordered),
        _end_recorded(ordered),
        _requester_not_approver(ordered),
        _four_eyes_distinct(ordered),
        _effects_overseen(ordered),
        _approvals_by_people(ordered),
        _acts_signed(ordered),
    ]


def _at(record: AuditRecord) -> str:
    return f"seq {record.seq}, {_time(record.occurred_at, precise=True)}"


def _start_recorded(run: Sequence[AuditRecord]) -> Check:
    started = next((r for r in run if r.event_type == "run.started"), None)
    label = "Run start recorded"
    if started is None:
        return Check(label, "fail", ["no run.started record"])
    return Check(label, "pass", [f"run.started ({_at(started)})"])


def _start_signed(run: Sequence[AuditRecord]) -> Check:
    label = "Run start signed by its requester"
    admitted = next((r for r in run if r.event_type == "run.admitted"), None)
    if admitted is not None:
        signature = _signature_text(admitted.data.get("signature"))
        return Check(
            label, "pass", [f"{_who(admitted)}'s signature verified ({_at(admitted)}): {signature}"]
        )
    refused = [
        f"{_who(r)}: {r.data.get('reason', 'refused')} ({_at(r)})"
        for r in run
        if r.event_type == "run.refused"
    ]
    return Check(label, "fail", refused or ["no run.admitted record"])


def _end_recorded(run: Sequence[AuditRecord]) -> Check:
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    label = "Run end recorded"
    if ended is None:
        return Check(
            label, "fail", ["no run.ended record: the run is still going, or its end was lost"]
        )
    outcome = ended.data.get("outcome") or ended.data.get("status") or "ended"
    return Check(label, "pass", [f"ended {_short(outcome, 60)} ({_at(ended)})"])


def _requester_not_approver(run: Sequence[AuditRecord]) -> Check:
    label = "The requester is not an approver"
    requester = _requester(run)
    approvals = _approvals(run)
    if requester is None:
        return Check(
            label, "fail", ["the trail names no requester (no run.started or run.admitted)"]
        )
    how = "signature verified" if requester.proven else "as claimed at start, not proven"
    evidence = [f"requester: {requester.user} ({how}; seq {requester.record.seq})"]
    own = [a for a in approvals if _who(a) == requester.user]
    evidence += [
        f"{requester.user} requested the run and approved gate “{_gate_of(a)}” ({_at(a)})"
        for a in own
    ]
    evidence.append(
        "approvers: " + ", ".join(_person(a, where=f"seq {a.seq}") for a in approvals)
        if approvals
        else "no approval was recorded"
    )
    evidence += [
        f"{requester.user}'s own attempt was refused ({_at(r)}): {r.data.get('reason', '')}"
        for r in run
        if r.event_type == "decision.refused" and _who(r) == requester.user
    ]
    return Check(label, "fail" if own else "pass", evidence)


def _four_eyes_distinct(run: Sequence[AuditRecord]) -> Check:
    label = "Under four-eyes, two distinct people approved"
    rounds: dict[tuple[str, object], list[AuditRecord]] = defaultdict(list)
    for approval in _approvals(run):
        rounds[(_gate_of(approval) or "?", approval.data.get("round"))].append(approval)
    four_eyes = {
        key: acts for key, acts in rounds.items() if max(_approval_count(a)[1] for a in acts) >= 2
    }
    if not four_eyes:
        return Check(label, "n/a", ["no gate of this run needed two approvals"])
    evidence: list[str] = []
    failed = False
    for (gate, round_), acts in four_eyes.items():
        problems = _four_eyes_problems(acts)
        failed = failed or bool(problems)
        steps = " then ".join(_person(a, where=_at(a)) for a in acts)
        evidence.append(f"gate “{gate}”{f' round {round_}' if round_ else ''}: {steps}")
        evidence += problems
        if acts[-1].event_type == "gate.approval":
            evidence.append(_unfinished_round(run, acts[-1]))
    return Check(label, "fail" if failed else "pass", evidence)


def _unfinished_round(run: Sequence[AuditRecord], approval: AuditRecord) -> str:
    """How a round that never reached its approvals ended: another decision, or nothing."""
    closed = next(
        (
            r
            for r in run
            if r.event_type == "gate.decided"
            and _gate_of(r) == _gate_of(approval)
            and r.data.get("round") == approval.data.get("round")
        ),
        None,
    )
    if closed is not None:
        return f"the round ended when {_person(closed)} {_did(closed)} ({_at(closed)})"
    so_far, needed = _approval_count(approval)
    return f"awaiting approval {so_far + 1} of {needed} when the trail ends"


def _four_eyes_problems(acts: Sequence[AuditRecord]) -> list[str]:
    """What is wrong with one four-eyes round: a person counted twice, an approver the
    decision names without a recorded approval, or too few approvals for the decision."""
    last = acts[-1]
    named = [str(u) for u in last.data.get("approved_by") or [_who(last)]]
    needed = _approval_count(last)[1]
    problems = [
        f"{user} is counted {named.count(user)} times"
        for user in sorted(set(named))
        if named.count(user) > 1
    ]
    recorded = {_who(a) for a in acts}
    problems += [
        f"{user} is named as an approver, but the trail has no approval by {user}"
        for user in named
        if user not in recorded
    ]
    if last.event_type == "gate.decided" and len(set(named)) < needed:
        problems.append(
            f"the gate was approved with {len(set(named))} distinct approver(s) of {needed}"
        )
    return problems


def _kind_of(run: Sequence[AuditRecord], node: str | None) -> str | None:
    started = next((r for r in run if r.event_type == "node.started" and r.node == node), None)
    return str(started.data.get("kind")) if started and started.data.get("kind") else None


def _writes(run: Sequence[AuditRecord]) -> list[int]:
    """Indices of steps that wrote to a system of record: by the design, every such write
    carries an idempotency key, and the step's output returns it."""
    return [
        i
        for i, r in enumerate(run)
        if r.event_type == "node.finished"
        and isinstance(r.data.get("output"), Mapping)
        and "idempotency_key" in r.data["output"]
    ]


def _effects_overseen(run: Sequence[AuditRecord]) -> Check:
    label = (
        "Every AI output with a business effect has a human decision or a recorded reason for none"
    )
    writes = _writes(run)
    if not writes:
        return Check(label, "n/a", ["no step wrote to a system of record"])
    evidence: list[str] = []
    failed = False
    for index in writes:
        write = run[index]
        start = _started_before(run, write.node, index)
        ai_nodes = list(
            dict.fromkeys(r.node for r in run[:start] if r.event_type == "ai.inference")
        )
        if not ai_nodes:
            evidence.append(f"{write.node} (seq {write.seq}) wrote no AI output")
        for node in ai_nodes:
            ok, text = _oversight_of(run, str(node), write, start)
            failed = failed or not ok
            evidence.append(text)
    return Check(label, "fail" if failed else "pass", evidence)


def _started_before(run: Sequence[AuditRecord], node: str | None, index: int) -> int:
    """Where the visit of ``node`` that ends at ``index`` started."""
    for i in range(index - 1, -1, -1):
        if run[i].event_type == "node.started" and run[i].node == node:
            return i
    return index


def _oversight_of(
    run: Sequence[AuditRecord], node: str, write: AuditRecord, start: int
) -> tuple[bool, str]:
    """Whether the last AI output of ``node`` before the write was approved by a person or
    its review was skipped for a recorded reason; in words either way."""
    made = _find(
        run, lambda r: r.event_type == "ai.inference" and r.node == node, before=start, last=True
    )
    assert made is not None
    output = f"{node}'s output (seq {run[made].seq})"
    wrote = f"{write.node} wrote it (seq {write.seq})"
    for record in run[made + 1 : start]:
        if _is_approval(record) and record.event_type == "gate.decided" and _covers(record, node):
            approvers = ", ".join(str(u) for u in record.data.get("approved_by") or [_who(record)])
            gate = f"gate “{_gate_of(record)}” by {approvers} (seq {record.seq})"
            return True, f"{output} was approved at {gate} before {wrote}"
        reason = record.data.get("detail") or record.data.get("reason")
        if (
            record.event_type == "node.skipped"
            and reason
            and _kind_of(run, record.node) in ("gate", None)
        ):
            return (
                True,
                f"gate “{record.node}” was skipped before {wrote}: {reason} (seq {record.seq})",
            )
    return False, f"{wrote} from {output} with no human decision and no recorded reason for none"


def _covers(decision: AuditRecord, node: str) -> bool:
    """A decision covers an AI node's output when the gate reviewed that node (its subject),
    decided on the node itself (an Ask's human tier), or reviewed without a named subject."""
    if decision.node == node:
        return True
    shown = decision.data.get("shown")
    subject = shown.get("subject") if isinstance(shown, Mapping) else None
    return _node_named(subject) in (None, node)


def _approvals_by_people(run: Sequence[AuditRecord]) -> Check:
    label = "Every approval was made by a person, never the AI or a service"
    decisions = [r for r in run if r.event_type in _DECISIONS]
    if not decisions:
        return Check(label, "n/a", ["no gate decision was recorded"])
    by_others = [r for r in decisions if not _by_person(r)]
    # A service may reject (an SLA chain that runs out, as declared); it may never approve.
    evidence = [f"{_who(r)} ({_actor_type(r)}) {_did(r)} ({_at(r)})" for r in by_others]
    people = sorted({_person(r) for r in decisions if _by_person(r)})
    evidence.append(f"decided by: {', '.join(people) or 'no person'}")
    approved = any(_is_approval(r) for r in by_others)
    return Check(label, "fail" if approved else "pass", evidence)


def _by_person(record: AuditRecord) -> bool:
    return record.actor is not None and record.actor.type == "human"


def _actor_type(record: AuditRecord) -> str:
    return record.actor.type if record.actor else "no actor recorded"


def _did(decision: AuditRecord) -> str:
    outcome = _DECIDED.get(str(decision.data.get("outcome")), "decided")
    comment = f": {_quote(decision.data['comment'])}" if decision.data.get("comment") else ""
    return f"{outcome} gate “{_gate_of(decision)}”{comment}"


def _acts_signed(run: Sequence[AuditRecord]) -> Check:
    label = "Every decision and stop by a person is signed by them"
    acts = [
        r
        for r in run
        if r.event_type in _DECISIONS | _STOP_ACTS
        and r.actor is not None
        and r.actor.type == "human"
    ]
    if not acts:
        return Check(label, "n/a", ["no decision or stop by a person was recorded"])
    unsigned = [r for r in acts if not r.data.get("signature")]
    evidence = [f"{r.event_type} by {_who(r)} carries no signature ({_at(r)})" for r in unsigned]
    evidence.append(f"{len(acts) - len(unsigned)} of {len(acts)} act(s) signed")
    return Check(label, "fail" if unsigned else "pass", evidence)


def _checks_table(checks: Sequence[Check]) -> _Safe:
    tone = {"pass": "good", "fail": "bad", "n/a": "none"}
    rows = [
        [
            check.label,
            _pill("FAIL" if check.status == "fail" else check.status, tone[check.status]),
            _tag("ul", _join(_tag("li", line) for line in check.evidence), class_="evidence"),
        ]
        for check in checks
    ]
    return _table(["Check", "Result", "Evidence"], rows, class_="checks")


# -- what the report computes ----------------------------------------------------------------


@dataclass
class _ModelUse:
    provider: str
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    confidences: list[float] = field(default_factory=list)
    methods: set[str] = field(default_factory=set)

    def add(self, data: Mapping[str, Any]) -> None:
        self.calls += 1
        self.input_tokens += int(_number(data.get("input_tokens")))
        self.output_tokens += int(_number(data.get("output_tokens")))
        self.cost_usd += _number(data.get("cost_usd"))
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
        uses.setdefault(key, _ModelUse(*key)).add(record.data)
    return sorted(uses.values(), key=lambda use: (use.provider, use.model))


def _total_cost(records: Iterable[AuditRecord]) -> float:
    return sum(_number(r.data.get("cost_usd")) for r in records if r.event_type == "ai.inference")


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


# -- report sections -------------------------------------------------------------------------


def _scope_section(records: Sequence[AuditRecord], runs: Sequence[Sequence[AuditRecord]]) -> _Safe:
    processes = sorted({r.process for r in records if r.process}) or ["(not recorded)"]
    risk = _declared(records, "risk_class")
    purpose = _declared(records, "intended_purpose") + _declared(records, "purpose")
    first = min((r.occurred_at for r in records), default=None)
    last = max((r.occurred_at for r in records), default=None)
    facts = [
        ("Process", ", ".join(processes)),
        ("Intended purpose", "; ".join(purpose) or "not recorded in the trail"),
        ("Risk class", ", ".join(risk) or "not declared in the trail"),
        ("Period", f"{_time(first)} to {_time(last)}"),
        ("Runs / records", f"{len(runs)} / {len(records)}"),
    ]
    dl = _dl(facts)
    note = _tag(
        "p",
        "The risk class is as declared by the operator; it has not been assessed by this "
        "report. This report shows what the audit trail recorded and whether its hash chains "
        "verify. It does not claim compliance with the EU AI Act or any other regulation.",
        class_="note",
    )
    return _section("Declared scope", _join([dl, note]), id_="scope")


def _verification_section(report: VerifyReport) -> _Safe:
    checked = f" — {report.chains} chain(s), {report.records} record(s)"
    if report.ok:
        headline = "Chain verification: OK"
        explain = f"{checked}: every record_hash recomputes, every prev_hash links, no seq gaps."
    else:
        headline = f"Chain verification: FAILED ({len(report.problems)} problem(s))"
        explain = f"{checked} checked. The records below differ from what was written."
    banner = _tag(
        "div",
        _join([_tag("strong", headline), _tag("span", explain)]),
        class_="banner ok" if report.ok else "banner fail",
    )
    table = _Safe("") if report.ok else _problem_table(report.problems)
    return _section("Chain integrity", _join([banner, table]), id_="integrity")


def _problem_table(problems: Sequence[Problem]) -> _Safe:
    return _table(
        ["Workflow", "Seq", "Event id", "Problem", "Detail"],
        (
            [
                p.workflow_id,
                p.seq,
                _problem_event(p),
                _tag("span", p.kind, class_="pill bad"),
                p.detail,
            ]
            for p in problems
        ),
        class_="problems",
    )


def _problem_event(problem: Problem) -> str:
    # A deleted record's own id is gone; say plainly that the id shown is its successor's.
    if problem.kind == "missing":
        return f"deleted; next stored: {problem.event_id}" if problem.event_id else "deleted"
    return problem.event_id


def _summary_section(
    records: Sequence[AuditRecord],
    runs: Sequence[Sequence[AuditRecord]],
    min_retention_days: int | None,
    retention_override: RetentionOverride | None,
) -> _Safe:
    oversight = sum(len(_oversight_acts(run)) for run in runs)
    inferences = sum(1 for r in records if r.event_type == "ai.inference")
    issues = sum(1 for r in records if _is_retry_or_failure(r))
    cards = [
        ("Runs", str(len(runs))),
        ("AI inferences", str(inferences)),
        ("Human oversight acts", str(oversight)),
        ("Retries / failures", str(issues)),
        ("Total AI cost", _money(_total_cost(records))),
    ]
    return _join([_cards(cards), _retention_block(records, min_retention_days, retention_override)])


def _cards(items: Sequence[tuple[str, str]]) -> _Safe:
    """Figures as a row of cards: the value large, its label under it."""
    return _tag(
        "div",
        _join(
            _tag(
                "div",
                _join([_tag("div", value, class_="value"), _tag("div", label, class_="label")]),
                class_="card",
            )
            for label, value in items
        ),
        class_="cards",
    )


def _retention_block(
    records: Sequence[AuditRecord],
    min_retention_days: int | None,
    retention_override: RetentionOverride | None,
) -> _Safe:
    if not records:
        return _Safe("")
    oldest = min(records, key=lambda r: r.occurred_at)
    facts = [
        ("Oldest record", f"{_time(oldest.occurred_at)} (recorded {_time(oldest.recorded_at)})"),
        (
            "Retained until",
            f"{_time(min(r.retain_until for r in records))} to "
            f"{_time(max(r.retain_until for r in records))}",
        ),
        (
            "Configured minimum",
            f"{min_retention_days} days"
            if min_retention_days is not None
            else "not stated for this export",
        ),
    ]
    if min_retention_days is not None:
        facts.append(("Retention override", retention_override_text(retention_override)))
    dl = _dl(facts)
    return _section("Retention", dl, id_="retention")


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


def _models_table(records: Sequence[AuditRecord]) -> _Safe:
    uses = _model_uses(records)
    if not uses:
        return _tag("p", "No AI inference was recorded.", class_="muted")
    foot = [
        "Total",
        "",
        sum(u.calls for u in uses),
        f"{sum(u.input_tokens for u in uses):,}",
        f"{sum(u.output_tokens for u in uses):,}",
        _money(sum(u.cost_usd for u in uses)),
        "",
        "",
    ]
    return _table(
        [
            "Provider",
            "Model",
            "Calls",
            "Input tokens",
            "Output tokens",
            "Cost (USD)",
            "Mean confidence",
            "Confidence method",
        ],
        (use.row() for use in uses),
        foot=foot,
        numeric=(2, 3, 4, 5, 6),
    )


def _graph_section(
    mermaid: str | None, path: Sequence[str], runs: Sequence[Sequence[AuditRecord]]
) -> _Safe:
    recorded = [node for run in runs for node, _ in _path_of(run)]
    nodes = _declared_nodes(mermaid)
    nodes = list(dict.fromkeys([*nodes, *path, *recorded]))
    if not nodes:
        return _Safe("")
    step = {node: i + 1 for i, node in enumerate(path)}
    boxes = _join(
        _tag(
            "li",
            _tag(
                "span",
                _join([_tag("span", step[n], class_="step") if n in step else "", _tag("b", n)]),
                class_="box",
            ),
            class_="node taken" if n in step else "node",
        )
        for n in nodes
    )
    legend = _tag(
        "p",
        (
            f"Highlighted and numbered: the path taken ({' → '.join(path)})."
            if path
            else "No path was given for this report."
        ),
        class_="muted",
    )
    parts: list[object] = [_tag("ol", boxes, class_="graph"), legend]
    if mermaid:
        parts.append(
            _tag(
                "details",
                _join(
                    [_tag("summary", "Mermaid source of the process graph"), _tag("pre", mermaid)]
                ),
            )
        )
    return _section("Process graph and path taken", _join(parts), id_="graph")


def _section(title: str, body: object, *, id_: str = "") -> _Safe:
    attrs = {"id": id_} if id_ else {}
    return _tag("section", _join([_tag("h2", title), body]), **attrs)


# -- one run ---------------------------------------------------------------------------------


def _run_section(
    run: Sequence[AuditRecord],
    problems: Sequence[Problem],
    index: int,
    findings: Sequence[AuditRecord],
) -> _Safe:
    """One run, ``run`` in causal order; ``findings``: its reconcile findings, oldest first."""
    acts = _oversight_acts(run)
    checks = run_checks(run)
    parts: list[object] = [
        _tag("h2", f"Run {index}: {run[0].workflow_id}"),
        _dl(_run_facts(run, problems, checks, findings), class_="facts"),
        _tag("h3", "Checks"),
        _checks_table(checks),
        _problem_table(problems) if problems else "",
        _tag("h3", "Reconciliation with Temporal's history"),
        _reconcile_section(findings),
        _tag("h3", "Path taken"),
        _run_path(run),
        _tag("h3", f"Human oversight: {len(acts)} act(s), in the order they happened"),
        _oversight_section(run),
        _tag("h3", "Models used"),
        _models_table(run),
        _tag("h3", "Retries and failures"),
        _failures_table(run),
        _tag("h3", "Timeline, in causal order"),
        _muted(
            "Rows are in the order things happened: by time, with run.started first, each "
            "node's start before its activity attempts and each decision before the step it "
            "allowed. Seq is the order the store received each record (activity attempts are "
            "written when they end, the run's own events in batches); use it with "
            "`baton audit verify`."
        ),
        _timeline_table(run),
    ]
    return _tag("section", _join(parts), class_="run", id_=f"run-{index}")


def _run_facts(
    run: Sequence[AuditRecord],
    problems: Sequence[Problem],
    checks: Sequence[Check],
    findings: Sequence[AuditRecord],
) -> list[tuple[str, object]]:
    started = next((r for r in run if r.event_type == "run.started"), None)
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    outcome = (ended.data.get("status") or ended.data.get("outcome") or "ended") if ended else None
    chain = _pill(f"{len(problems)} problem(s)", "bad") if problems else _pill("verified", "good")
    requester = _requester(run)
    approvers = list(dict.fromkeys(_person(r) for r in _approvals(run)))
    seqs = [r.seq for r in run]
    return [
        ("Workflow id", run[0].workflow_id),
        ("Run id", ", ".join(sorted({r.run_id for r in run if r.run_id})) or "—"),
        ("Process", run[0].process or "—"),
        ("Started", _time(started.occurred_at if started else None)),
        ("Ended", _time(ended.occurred_at if ended else None)),
        ("Outcome", _short(outcome) if outcome else "no run.ended record"),
        ("Requested by", _requester_text(requester)),
        ("Approved by", ", ".join(approvers) or "nobody"),
        ("Records", f"{len(run)} (seq {min(seqs)} to {max(seqs)})"),
        ("Chain", chain),
        ("Checks", _checks_verdict(checks)),
        ("Reconciled with Temporal", _reconcile_pill(reconcile_status(findings))),
        ("AI cost", _money(_total_cost(run))),
    ]


_RECONCILE_PILLS: dict[ReconcileStatus, tuple[str, str]] = {
    "agrees": ("agrees", "good"),
    "differs": ("DIFFERS", "bad"),
    "not reconciled": ("not reconciled yet", "none"),
}
# What Temporal's history was when a pass looked (baton.audit.reconcile.History).
_HISTORY_STATES = {"open": "running", "closed": "closed", "gone": "no longer kept"}


def _reconcile_pill(status: ReconcileStatus) -> _Safe:
    return _pill(*_RECONCILE_PILLS[status])


def _reconcile_section(findings: Sequence[AuditRecord]) -> _Safe:
    if not findings:
        return _muted(
            "Not reconciled yet: no pass of `baton audit reconcile` (by hand or on its "
            "schedule) has compared this run's trail with Temporal's history."
        )
    rows = []
    for finding in findings:
        history = str(finding.data.get("history"))
        differences = [str(d) for d in finding.data.get("differences") or []]
        notes = [str(n) for n in finding.data.get("notes") or []]
        result = (
            _pill("not compared", "none")
            if history == "gone"
            else _reconcile_pill("differs" if differences else "agrees")
        )
        said = [*differences, *(f"note: {n}" for n in notes)]
        rows.append(
            [
                _time(finding.occurred_at),
                finding.run_id,
                _HISTORY_STATES.get(history, history),
                result,
                _tag("ul", _join(_tag("li", line) for line in said)) if said else "—",
            ]
        )
    note = _muted(
        "Each pass compares the trail with Temporal's own history of the run: every "
        "completed activity attempt, every decide and stop act delivered, how the run "
        "closed. A pass records its result when it differs from the one before, so a row "
        "stands until the next row. A difference means the trail lacks, or adds, something "
        "Temporal saw happen."
    )
    table = _table(
        ["Reconciled at", "Pass", "Temporal's history", "Result", "Differences and notes"],
        rows,
        class_="reconcile",
    )
    return _join([table, note])


def _checks_verdict(checks: Sequence[Check]) -> _Safe:
    failed = sum(1 for check in checks if check.status == "fail")
    return _pill(f"{failed} failed", "bad") if failed else _pill("none failed", "good")


def _requester_text(requester: _Requester | None) -> str:
    if requester is None:
        return "not recorded"
    proof = "signature verified" if requester.proven else "claimed, not proven"
    return f"{requester.user} ({proof})"


def _dl(facts: Iterable[tuple[str, object]], *, class_: str = "") -> _Safe:
    return _tag("dl", _join(_join([_tag("dt", k), _tag("dd", v)]) for k, v in facts), class_=class_)


def _run_path(run: Sequence[AuditRecord]) -> _Safe:
    path = _path_of(run)
    if not path:
        return _muted("No node events recorded.")
    return _tag(
        "ol",
        _join(
            _tag(
                "li",
                _tag("span", _join([_tag("b", node), _tag("small", outcome)]), class_="box"),
                class_=f"node {outcome}",
            )
            for node, outcome in path
        ),
        class_="graph",
    )


def _failures_table(run: Sequence[AuditRecord]) -> _Safe:
    rows = [r for r in run if _is_retry_or_failure(r)]
    if not rows:
        return _muted("No retries or failures were recorded.")
    return _table(
        ["When", "Event", "Node", "Attempt", "Error"],
        (
            [
                _time(r.occurred_at),
                r.event_type,
                _node_of(r),
                r.data.get("attempt", "—"),
                _short(r.data.get("error") or r.data.get("reason") or "none: succeeded", 200),
            ]
            for r in rows
        ),
        class_="timed",
    )


def _timeline_table(run: Sequence[AuditRecord]) -> _Safe:
    return _table(
        ["#", "Seq", "Time", "Event", "Node", "Actor", "What happened"],
        (
            [
                i,
                r.seq,
                _time(r.occurred_at, precise=True),
                _tag("code", r.event_type),
                _node_of(r),
                _actor(r),
                _summary(r),
            ]
            for i, r in enumerate(run, 1)
        ),
        class_="timeline",
        numeric=(0, 1),
    )


def _node_of(record: AuditRecord) -> str:
    # A run-level local activity's id is Temporal's sequence number ("1"), not a node.
    if _is_activity(record) and "#" not in str(record.data.get("activity_id", "#")):
        return "—"
    return record.node or "—"


def _actor(record: AuditRecord) -> str:
    if record.actor is None:
        return "—"
    role = f" ({record.actor.role})" if record.actor.role else ""
    return f"{record.actor.id}{role} · {record.actor.type}"


# -- one line per record ---------------------------------------------------------------------

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


def _parse_time(value: Any) -> datetime | None:
    try:
        return datetime.fromisoformat(str(value)) if value else None
    except ValueError:
        return None


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


# -- the document ----------------------------------------------------------------------------

_CSS = """
:root { --ink:#1f2933; --muted:#616e7c; --line:#d9e2ec; --bg:#f5f7fa; --accent:#243b53;
  --good:#2b8a3e; --good-bg:#ebfbee; --bad:#c92a2a; --bad-bg:#fff5f5; }
* { box-sizing: border-box; }
body { margin:0; background:var(--bg); color:var(--ink); line-height:1.45;
  font:14px/1.45 -apple-system, "Segoe UI", Roboto, "Helvetica Neue", Arial, sans-serif; }
main { max-width:1180px; margin:0 auto; padding:28px 32px 48px; }
header.doc { border-bottom:3px solid var(--accent); margin-bottom:20px; padding-bottom:12px; }
header.doc h1 { margin:0 0 4px; font-size:26px; color:var(--accent); }
header.doc p { margin:0; color:var(--muted); }
section { background:#fff; border:1px solid var(--line); border-radius:8px;
  padding:16px 20px; margin:0 0 18px; }
h2 { font-size:18px; margin:0 0 12px; color:var(--accent); }
h3 { font-size:14px; margin:18px 0 8px; text-transform:uppercase; letter-spacing:.04em;
  color:var(--muted); }
dl { display:grid; grid-template-columns:max-content 1fr; gap:4px 18px; margin:0; }
dt { color:var(--muted); } dd { margin:0; font-weight:500; }
dl.facts { grid-template-columns:repeat(3, max-content minmax(0, 1fr)); }
.note { margin:12px 0 0; padding:10px 12px; background:#fff9db; border-left:4px solid #f08c00;
  border-radius:4px; }
.banner { padding:14px 16px; border-radius:6px; font-size:16px; }
.banner.ok { background:var(--good-bg); border:2px solid var(--good); color:var(--good); }
.banner.fail { background:var(--bad-bg); border:2px solid var(--bad); color:var(--bad);
  margin-bottom:12px; }
.banner span { color:var(--ink); font-size:14px; }
.cards { display:grid; grid-template-columns:repeat(5, 1fr); gap:12px; margin:0 0 18px; }
.card { background:#fff; border:1px solid var(--line); border-radius:8px; padding:12px 14px; }
.card .value { font-size:22px; font-weight:600; color:var(--accent); }
.card .label { color:var(--muted); font-size:12px; text-transform:uppercase;
  letter-spacing:.04em; }
table { width:100%; border-collapse:collapse; margin:4px 0 8px; font-size:13px; }
th { text-align:left; background:#f0f4f8; color:var(--muted); font-weight:600;
  border-bottom:2px solid var(--line); padding:6px 8px; }
td { border-bottom:1px solid var(--line); padding:6px 8px; vertical-align:top;
  overflow-wrap:break-word; }
tfoot td { font-weight:600; border-top:2px solid var(--line); }
td.num, th.num { text-align:right; font-variant-numeric:tabular-nums; }
table.timeline td:nth-child(-n+4), table.timed td:first-child { white-space:nowrap; }
table.timeline td:last-child { color:var(--muted); }
code { font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
pre { background:#f0f4f8; padding:10px; border-radius:4px; overflow:auto; font-size:12px; }
.pill { display:inline-block; padding:1px 8px; border-radius:10px; font-size:12px;
  font-weight:600; }
.pill.good { background:var(--good-bg); color:var(--good); }
.pill.bad { background:var(--bad-bg); color:var(--bad); }
ol.graph { list-style:none; display:flex; flex-wrap:wrap; align-items:center; gap:8px 0;
  padding:0; margin:4px 0 8px; }
ol.graph li { display:flex; align-items:center; }
ol.graph li + li::before { content:"\\2192"; color:var(--muted); padding:0 8px; font-size:16px; }
.node .box { display:inline-flex; align-items:center; gap:6px; border:1px solid #9fb3c8;
  background:#fff; border-radius:6px; padding:6px 10px; }
.node .box small { color:var(--muted); font-size:11px; text-transform:uppercase; }
.node.taken .box { background:var(--good-bg); border:2px solid var(--good); color:var(--good); }
.node.taken .step { background:var(--good); color:#fff; border-radius:50%; width:20px;
  height:20px; display:inline-flex; align-items:center; justify-content:center;
  font-size:11px; margin-right:4px; }
.node.finished .box { background:var(--good-bg); border-color:var(--good); }
.node.failed .box { background:var(--bad-bg); border-color:var(--bad); }
.node.failed .box small { color:var(--bad); }
.node.skipped .box { background:#f0f4f8; color:var(--muted); border-style:dashed; }
.pill.warn { background:#fff4e6; color:#d9480f; }
.pill.none { background:#f0f4f8; color:var(--muted); }
table.checks td:nth-child(2) { white-space:nowrap; }
table.checks td:first-child { width:32%; font-weight:500; }
ul.evidence, ul.findings { margin:0; padding-left:16px; }
article.act { border:1px solid var(--line); border-left:4px solid var(--line);
  border-radius:6px; padding:8px 14px 10px; margin:10px 0; background:#fbfcfd; }
article.act.good { border-left-color:var(--good); }
article.act.bad { border-left-color:var(--bad); }
article.act.warn { border-left-color:#f08c00; }
article.act header { display:flex; flex-wrap:wrap; align-items:center; gap:4px 12px; }
article.act .when, article.act .seq { color:var(--muted); font-variant-numeric:tabular-nums; }
article.act .role, article.act .gate { font-size:12px; color:var(--muted);
  text-transform:uppercase; letter-spacing:.04em; }
.act-text { margin:8px 0; font-size:14px; }
h4 { font-size:12px; margin:12px 0 4px; color:var(--muted); text-transform:uppercase;
  letter-spacing:.04em; }
table.shown td:first-child { white-space:nowrap; color:var(--muted); width:1%; }
table.shown .field { display:inline-block; padding-left:14px; color:var(--ink);
  font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace; }
table.nested { margin:0; font-size:12px; width:auto; }
table.nested td, table.nested th { padding:2px 8px; }
table.diff td:nth-child(2) { background:var(--bad-bg); }
table.diff td:nth-child(3) { background:var(--good-bg); }
.muted { color:var(--muted); }
details summary { cursor:pointer; color:var(--accent); margin-top:8px; }
footer { color:var(--muted); font-size:12px; text-align:center; margin-top:24px; }
@media print { body { background:#fff; } section { break-inside:avoid-page; } }
"""


def export_html(
    records: Sequence[AuditRecord],
    report: VerifyReport,
    out: Path,
    *,
    title: str,
    mermaid: str | None = None,
    path_taken: Sequence[str] = (),
    min_retention_days: int | None = None,
    retention_override: RetentionOverride | None = None,
    reconciliations: Mapping[str, Sequence[AuditRecord]] | None = None,
    generated_at: datetime | None = None,
) -> None:
    """Write one self-contained HTML report over the given runs (one section per run).

    `report` should be the verification of the same chains: a run with no problem in it is
    shown as verified. `path_taken` highlights a path on the process graph; with a single run
    and no path given, that run's own recorded path is used. `min_retention_days` is shown as
    the configured minimum, with `retention_override` when one lets it go below the floor.
    `reconciliations` holds each run's reconcile findings (its findings chain, oldest
    first); a run with none is shown as not reconciled yet. `generated_at` pins the stamp
    for reproducible files.
    """
    runs = _runs(records)
    if not path_taken and len(runs) == 1:
        path_taken = [node for node, _ in _path_of(runs[0])]
    problems_by_run: dict[str, list[Problem]] = defaultdict(list)
    for problem in report.problems:
        problems_by_run[problem.workflow_id].append(problem)
    stamp = _time(generated_at or datetime.now(UTC))
    body = _join(
        [
            _tag(
                "header",
                _join([_tag("h1", title), _tag("p", f"Audit trail report · generated {stamp}")]),
                class_="doc",
            ),
            _scope_section(records, runs),
            _verification_section(report),
            _summary_section(records, runs, min_retention_days, retention_override),
            _section("Models used (all runs)", _models_table(records), id_="models"),
            _graph_section(mermaid, path_taken, runs),
            *(
                _run_section(
                    run,
                    problems_by_run.get(run[0].workflow_id, []),
                    i,
                    (reconciliations or {}).get(run[0].workflow_id, []),
                )
                for i, run in enumerate(runs, start=1)
            ),
            _tag(
                "footer",
                "Generated by Baton from its append-only audit store. Hashes: SHA-256 "
                "over canonical JSON, chained per workflow.",
            ),
        ]
    )
    document = _join(
        [
            _Safe("<!DOCTYPE html>\n"),
            _tag(
                "html",
                _join(
                    [
                        _tag(
                            "head",
                            _join(
                                [
                                    _Safe('<meta charset="utf-8">'),
                                    _Safe('<meta name="viewport" content="width=device-width">'),
                                    _tag("title", title),
                                    _tag("style", _Safe(_CSS)),
                                ]
                            ),
                        ),
                        _tag("body", _tag("main", body)),
                    ]
                ),
                lang="en",
            ),
        ]
    )
    out.write_text(document, encoding="utf-8")
