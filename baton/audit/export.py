"""Exports of the audit trail: lossless JSONL, and one self-contained HTML report.

The HTML report is written for a compliance reviewer who has only the file: inline CSS, no
scripts, no external resources, every recorded value escaped. It states the scope it was
given and never claims compliance: it shows what the trail recorded and whether the chain
verifies.
"""

from __future__ import annotations

import html
import re
from collections import defaultdict
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from baton.audit.events import OVERSIGHT_EVENT_TYPES, AuditRecord
from baton.audit.verify import Problem, VerifyReport

# -- JSONL -----------------------------------------------------------------------------------


def export_jsonl(records: Iterable[AuditRecord], out: Path) -> int:
    """One record per line, every field as stored, so `read_jsonl` gives the same records
    and their hashes still recompute outside Baton."""
    count = 0
    with out.open("w", encoding="utf-8") as fh:
        for record in records:
            fh.write(record.model_dump_json() + "\n")
            count += 1
    return count


def read_jsonl(path: Path) -> list[AuditRecord]:
    with path.open(encoding="utf-8") as fh:
        return [AuditRecord.model_validate_json(line) for line in fh if line.strip()]


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


def _time(value: datetime | None) -> str:
    return value.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S UTC") if value else "—"


def _money(value: float) -> str:
    return f"${value:,.4f}"


def _short(value: Any, limit: int = 140) -> str:
    """A one-line rendering of recorded data, cut so a table row stays readable."""
    if isinstance(value, Mapping):
        text = "; ".join(f"{key}={_short(val, 60)}" for key, val in value.items())
    elif isinstance(value, list | tuple):
        text = ", ".join(_short(item, 40) for item in value)
    else:
        text = "" if value is None else str(value)
    return text if len(text) <= limit else text[: limit - 1] + "…"


def _number(value: Any) -> float:
    return float(value) if isinstance(value, int | float) and not isinstance(value, bool) else 0.0


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
    runs = [sorted(chain, key=lambda r: r.seq) for chain in by_workflow.values()]
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
) -> _Safe:
    oversight = sum(1 for r in records if r.event_type in OVERSIGHT_EVENT_TYPES)
    inferences = sum(1 for r in records if r.event_type == "ai.inference")
    issues = sum(1 for r in records if _is_retry_or_failure(r))
    cards = [
        ("Runs", str(len(runs))),
        ("AI inferences", str(inferences)),
        ("Human oversight acts", str(oversight)),
        ("Retries / failures", str(issues)),
        ("Total AI cost", _money(_total_cost(records))),
    ]
    grid = _tag(
        "div",
        _join(
            _tag(
                "div",
                _join([_tag("div", value, class_="value"), _tag("div", label, class_="label")]),
                class_="card",
            )
            for label, value in cards
        ),
        class_="cards",
    )
    return _join([grid, _retention_block(records, min_retention_days)])


def _retention_block(records: Sequence[AuditRecord], min_retention_days: int | None) -> _Safe:
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
    dl = _dl(facts)
    return _section("Retention", dl, id_="retention")


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
    nodes += [n for n in [*path, *recorded] if n not in nodes]
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


def _run_section(run: Sequence[AuditRecord], problems: Sequence[Problem], index: int) -> _Safe:
    parts: list[object] = [
        _tag("h2", f"Run {index}: {run[0].workflow_id}"),
        _dl(_run_facts(run, problems), class_="facts"),
        _checks(run),
        _problem_table(problems) if problems else "",
        _tag("h3", "Path taken"),
        _run_path(run),
        _tag("h3", "Human oversight"),
        _oversight_table(run),
        _tag("h3", "Models used"),
        _models_table(run),
        _tag("h3", "Retries and failures"),
        _failures_table(run),
        _tag("h3", "Timeline"),
        _timeline_table(run),
    ]
    return _tag("section", _join(parts), class_="run", id_=f"run-{index}")


def _run_facts(run: Sequence[AuditRecord], problems: Sequence[Problem]) -> list[tuple[str, object]]:
    started = next((r for r in run if r.event_type == "run.started"), None)
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    outcome = (ended.data.get("status") or ended.data.get("outcome") or "ended") if ended else None
    chain = (
        _tag("span", f"{len(problems)} problem(s)", class_="pill bad")
        if problems
        else _tag("span", "verified", class_="pill good")
    )
    return [
        ("Workflow id", run[0].workflow_id),
        ("Run id", ", ".join(sorted({r.run_id for r in run if r.run_id})) or "—"),
        ("Process", run[0].process or "—"),
        ("Started", _time(started.occurred_at if started else None)),
        ("Ended", _time(ended.occurred_at if ended else None)),
        ("Outcome", _short(outcome) if outcome else "no run.ended record"),
        ("Records", f"{len(run)} (seq {run[0].seq} to {run[-1].seq})"),
        ("Chain", chain),
        ("AI cost", _money(_total_cost(run))),
    ]


def _dl(facts: Iterable[tuple[str, object]], *, class_: str = "") -> _Safe:
    return _tag("dl", _join(_join([_tag("dt", k), _tag("dd", v)]) for k, v in facts), class_=class_)


def _checks(run: Sequence[AuditRecord]) -> _Safe:
    types = {r.event_type for r in run}
    by_non_human = [
        r
        for r in run
        if r.event_type == "gate.decided" and (r.actor is None or r.actor.type != "human")
    ]
    unsigned = [
        r
        for r in run
        if r.event_type in ("gate.decided", "gate.approval")
        and r.actor is not None
        and r.actor.type == "human"
        and not r.data.get("signature")
    ]
    checks = [
        ("Run start recorded", "run.started" in types),
        ("Run start signed by its requester", "run.admitted" in types),
        ("Run end recorded", "run.ended" in types),
        ("Every gate decision made by a human", not by_non_human),
        ("Every human decision signed by its maker", not unsigned),
    ]
    return _tag(
        "ul",
        _join(
            _tag("li", label, class_="check pass" if passed else "check fail")
            for label, passed in checks
        ),
        class_="checks",
    )


def _run_path(run: Sequence[AuditRecord]) -> _Safe:
    path = _path_of(run)
    if not path:
        return _tag("p", "No node events recorded.", class_="muted")
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


def _oversight_table(run: Sequence[AuditRecord]) -> _Safe:
    acts = [r for r in run if r.event_type in OVERSIGHT_EVENT_TYPES]
    if not acts:
        return _tag(
            "p", "No human decision, refusal, override or stop was recorded.", class_="muted"
        )
    return _table(
        ["When", "Act", "Who", "Role", "What they saw", "Decision", "Comment / reason"],
        (_oversight_row(r) for r in acts),
        class_="oversight timed",
    )


_IMPLIED_DECISION = {"stop": "stopped the run", "override": "overrode the output"}


def _oversight_row(record: AuditRecord) -> list[object]:
    data = record.data
    who = record.actor.id if record.actor else str(data.get("user", "—"))
    role = (record.actor.role if record.actor and record.actor.role else None) or data.get("role")
    stated = data.get("outcome") or data.get("decision") or data.get("action")
    if record.event_type == "decision.refused":
        # The outcome on a refusal is what was attempted, never what took effect.
        decision = f"refused (attempted: {stated})" if stated else "refused"
    else:
        decision = str(stated or _IMPLIED_DECISION.get(record.event_type, "—"))
    act = record.event_type + (f" ({record.node})" if record.node else "")
    return [
        _time(record.occurred_at),
        act,
        who,
        role or "—",
        _short(data.get("shown", "—"), 200),
        _tag("strong", _short(decision, 60)),
        _short(data.get("comment") or data.get("reason") or "—", 200),
    ]


def _failures_table(run: Sequence[AuditRecord]) -> _Safe:
    rows = [r for r in run if _is_retry_or_failure(r)]
    if not rows:
        return _tag("p", "No retries or failures were recorded.", class_="muted")
    return _table(
        ["When", "Event", "Node", "Attempt", "Error"],
        (
            [
                _time(r.occurred_at),
                r.event_type,
                r.node or "—",
                r.data.get("attempt", "—"),
                _short(r.data.get("error") or r.data.get("reason") or "none: succeeded", 200),
            ]
            for r in rows
        ),
        class_="timed",
    )


def _timeline_table(run: Sequence[AuditRecord]) -> _Safe:
    return _table(
        ["Seq", "Time", "Event", "Node", "Actor", "Summary"],
        (
            [
                r.seq,
                _time(r.occurred_at),
                _tag("code", r.event_type),
                r.node or "—",
                _actor(r),
                _short(r.data),
            ]
            for r in run
        ),
        class_="timeline",
        numeric=(0,),
    )


def _actor(record: AuditRecord) -> str:
    if record.actor is None:
        return "—"
    role = f" ({record.actor.role})" if record.actor.role else ""
    return f"{record.actor.id}{role} · {record.actor.type}"


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
table.oversight td:nth-child(3) { white-space:nowrap; }
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
ul.checks { list-style:none; padding:0; margin:12px 0 0; display:flex; gap:18px;
  flex-wrap:wrap; }
.check.pass::before { content:"\\2713  "; color:var(--good); font-weight:700; }
.check.fail::before { content:"\\2717  "; color:var(--bad); font-weight:700; }
.check.fail { color:var(--bad); }
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
    generated_at: datetime | None = None,
) -> None:
    """Write one self-contained HTML report over the given runs (one section per run).

    `report` should be the verification of the same chains: a run with no problem in it is
    shown as verified. `path_taken` highlights a path on the process graph; with a single run
    and no path given, that run's own recorded path is used. `min_retention_days` is shown as
    the configured minimum; `generated_at` pins the stamp for reproducible files.
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
            _summary_section(records, runs, min_retention_days),
            _section("Models used (all runs)", _models_table(records), id_="models"),
            _graph_section(mermaid, path_taken, runs),
            *(
                _run_section(run, problems_by_run.get(run[0].workflow_id, []), i)
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
