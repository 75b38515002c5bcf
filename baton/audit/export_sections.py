"""The sections of the per-run HTML report: declared scope, chain integrity, the summary
cards, retention, models, the process graph with the path taken, and one section per run
(facts, checks, reconciliation, path, oversight acts, models, failures, timeline).
"""

from __future__ import annotations

from collections.abc import Sequence

from baton.audit.causal import _is_activity
from baton.audit.checks import Check, _checks_table, run_checks
from baton.audit.events import AuditRecord
from baton.audit.markup import (
    _cards,
    _dl,
    _join,
    _muted,
    _noted_table,
    _pill,
    _Safe,
    _section,
    _table,
    _tag,
)
from baton.audit.oversight import _oversight_section
from baton.audit.reading import (
    _approvals,
    _declared,
    _declared_nodes,
    _is_retry_or_failure,
    _model_uses,
    _oversight_acts,
    _path_of,
    _person,
    _Requester,
    _requester,
    _total_cost,
)
from baton.audit.reconcile import ReconcileStatus, reconcile_status
from baton.audit.retention import RetentionOverride
from baton.audit.summaries import _summary
from baton.audit.verify import Problem, VerifyReport
from baton.audit.wording import _money, _short, _time, retention_override_text

# -- the whole report ---------------------------------------------------------------------------


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


# -- one run ------------------------------------------------------------------------------------


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
    return _noted_table(
        ["Reconciled at", "Pass", "Temporal's history", "Result", "Differences and notes"],
        rows,
        "Each pass compares the trail with Temporal's own history of the run: every "
        "completed activity attempt, every decide and stop act delivered, how the run "
        "closed. A pass records its result when it differs from the one before, so a row "
        "stands until the next row. A difference means the trail lacks, or adds, something "
        "Temporal saw happen.",
        class_="reconcile",
    )


def _checks_verdict(checks: Sequence[Check]) -> _Safe:
    failed = sum(1 for check in checks if check.status == "fail")
    return _pill(f"{failed} failed", "bad") if failed else _pill("none failed", "good")


def _requester_text(requester: _Requester | None) -> str:
    if requester is None:
        return "not recorded"
    proof = "signature verified" if requester.proven else "claimed, not proven"
    return f"{requester.user} ({proof})"


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
