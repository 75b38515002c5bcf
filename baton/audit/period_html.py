"""The period report's page: `PeriodStats` as one self-contained HTML document (inline
CSS and SVG, no scripts, every recorded value escaped), tables for the exact figures and
charts (`period_charts`) beside them.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta

from baton.audit.markup import (
    _cards,
    _dl,
    _join,
    _muted,
    _noted_table,
    _page,
    _pill,
    _Safe,
    _section,
    _table,
    _tag,
)
from baton.audit.period_charts import (
    agreement_chart,
    confidence_chart,
    cost_chart,
    decision_chart,
    sla_chart,
    volume_chart,
)
from baton.audit.period_stats import PeriodStats
from baton.audit.period_summary import DISPOSITIONS, VERDICTS
from baton.audit.wording import _duration, _money, _span, _time, retention_override_text

_PERIOD_CSS = """
.cards { grid-template-columns:repeat(5, 1fr); }
figure.chart { margin:8px 0 14px; }
figure.chart svg { display:block; width:100%; max-width:860px; height:auto; }
figure.chart figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
details.ids summary { margin-top:0; }
span.ids { display:block; font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap:anywhere; }
"""


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _share(part: int, whole: int) -> str:
    return _percent(part / whole if whole else None)


def _figure(svg: _Safe, caption: str) -> _Safe:
    return _tag("figure", _join([svg, _tag("figcaption", caption)]), class_="chart")


def _figures(
    title: str,
    facts: Sequence[tuple[str, str]],
    figure: _Safe,
    table: _Safe,
    *notes: _Safe,
    id_: str,
) -> _Safe:
    """A section of figures as the page lays them out: the key facts, the chart, the exact
    numbers drawn in it, then what to read them by."""
    return _section(title, _join([_dl(facts), figure, table, *notes]), id_=id_)


def _ids(workflow_ids: Sequence[str]) -> _Safe:
    if not workflow_ids:
        return _tag("span", "none", class_="muted")
    listed = _tag("span", ", ".join(workflow_ids), class_="ids")
    if len(workflow_ids) <= 5:
        return listed
    return _tag(
        "details", _join([_tag("summary", f"{len(workflow_ids)} runs"), listed]), class_="ids"
    )


def _scope(stats: PeriodStats) -> _Safe:
    facts = [
        ("Process", stats.process),
        ("Period", f"{_time(stats.since)} to {_time(stats.until)} (end excluded)"),
        ("Intended purpose", "; ".join(stats.purposes) or "not recorded in the trail"),
        ("Risk class", "; ".join(stats.risk_classes) or "not declared in the trail"),
        ("Runs / records", f"{stats.runs:,} / {stats.records:,}"),
        ("Counted", "runs that started in the period, by the ISO week (UTC) of their start"),
    ]
    note = _tag(
        "p",
        "The risk class is as declared by the operator; this report has not assessed it. It "
        "shows what the audit trail recorded over the period and whether each run's hash "
        "chain verifies. It does not claim compliance with the EU AI Act or any other "
        "regulation.",
        class_="note",
    )
    return _section("Declared scope", _join([_dl(facts), note]), id_="scope")


def _integrity(stats: PeriodStats) -> _Safe:
    failed = len(stats.chain_findings)
    checked = f" — {stats.runs:,} run(s), {stats.records:,} record(s)"
    if stats.verified:
        banner = _tag(
            "div",
            _join(
                [
                    _tag("strong", "Chain verification: OK"),
                    _tag(
                        "span",
                        f"{checked}: every record's hash recomputes, every link holds, no "
                        "seq is missing, and the store's append-only guards are in place. "
                        "`baton audit verify` also checks the store against its signed "
                        "checkpoints.",
                    ),
                ]
            ),
            class_="banner ok",
        )
        return _section("Chain integrity", banner, id_="integrity")
    headline = f"Chain verification: FAILED for {failed} of {stats.runs:,} run(s)"
    if stats.store_problems:
        headline += f" and {len(stats.store_problems)} finding(s) about the store"
    banner = _tag(
        "div",
        _join([_tag("strong", headline), _tag("span", f"{checked} checked.")]),
        class_="banner fail",
    )
    rows = [
        [finding.workflow_id, p.seq, _tag("span", p.kind, class_="pill bad"), p.detail]
        for finding in stats.chain_findings
        for p in finding.problems
    ] + [
        ["(the store)", "—", _tag("span", p.kind, class_="pill bad"), p.detail]
        for p in stats.store_problems
    ]
    table = _table(["Workflow", "Seq", "Problem", "Detail"], rows, class_="problems")
    return _section("Chain integrity", _join([banner, table]), id_="integrity")


def _reconciliation(stats: PeriodStats) -> _Safe:
    title = "Reconciliation with Temporal's history"
    differing = len(stats.reconcile_differs)
    reconciled = stats.reconcile_agrees + differing
    facts = [
        ("Reconciled", f"{reconciled:,} of {stats.runs:,} run(s)"),
        ("Agree with Temporal", f"{stats.reconcile_agrees:,}"),
        ("Differ", f"{differing:,}"),
        ("Not reconciled yet", f"{stats.not_reconciled:,}"),
    ]
    note = _muted(
        "Each pass of `baton audit reconcile` (by hand or on its schedule) compares a run's "
        "trail with Temporal's own history of it; a run counts by what the last pass that "
        "compared it found. A difference means the trail lacks, or adds, something "
        "Temporal saw happen: the per-run report shows every pass."
    )
    if not differing:
        return _section(title, _join([_dl(facts), note]), id_="reconcile")
    rows = [
        [
            finding.workflow_id,
            _time(finding.at),
            finding.pass_id,
            _tag("ul", _join(_tag("li", d) for d in finding.differences)),
        ]
        for finding in stats.reconcile_differs
    ]
    banner = _tag(
        "div",
        _join(
            [
                _tag("strong", f"Reconcile: {differing} run(s) differ from Temporal's history"),
                _tag("span", " — each was an alert where the pass ran (worker or command)."),
            ]
        ),
        class_="banner fail",
    )
    table = _table(["Workflow", "Reconciled at", "Pass", "Differences"], rows, class_="problems")
    return _section(title, _join([banner, _dl(facts), table, note]), id_="reconcile")


def _retention(stats: PeriodStats) -> _Safe:
    if stats.min_retention_days is None:
        return _Safe("")
    facts = [
        ("Configured minimum", f"{stats.min_retention_days} days"),
        ("Retention override", retention_override_text(stats.retention_override)),
    ]
    return _section("Retention", _dl(facts), id_="retention")


def _headline(stats: PeriodStats) -> _Safe:
    flagged = sum(1 for r in stats.reviewers if r.flagged)
    return _cards(
        [
            ("Runs", f"{stats.runs:,}"),
            ("Auto-entered", _share(stats.runs_by("auto-entered"), stats.runs)),
            ("Reviewed by a person", _share(stats.runs_by("reviewed"), stats.runs)),
            ("Rejected / stopped / failed", _rejected_stopped_failed(stats)),
            ("Agreement with the AI", _percent(stats.agreement_rate)),
            (
                f"Decisions under {_span(stats.fast_seconds)}",
                _share(stats.fast_decisions, stats.decisions),
            ),
            ("Reviewers flagged", f"{flagged} of {len(stats.reviewers)}"),
            ("Escalation rate", _percent(stats.escalation_rate)),
            ("SLA breach rate", _percent(stats.breach_rate)),
            ("AI cost", _money(stats.cost_usd)),
        ]
    )


def _rejected_stopped_failed(stats: PeriodStats) -> str:
    return " / ".join(str(stats.runs_by(d)) for d in ("rejected", "stopped", "failed"))


def _volume(stats: PeriodStats) -> _Safe:
    rows = [
        [f"{w.week:%G-W%V}", f"{w.week:%Y-%m-%d}", *(w.runs[d] for d in DISPOSITIONS), w.total]
        for w in stats.volume
    ]
    foot = ["Total", "", *(stats.runs_by(d) for d in DISPOSITIONS), stats.runs]
    caption = (
        "Runs started per week, by how they ended: auto-entered (completed, no person decided), "
        "reviewed (completed after a person's decision), rejected at a gate, stopped by a "
        "person, failed (or cancelled), and no end recorded (still running, terminated, or "
        "its end was lost)."
    )
    numeric = tuple(range(2, 3 + len(DISPOSITIONS)))
    return _section(
        "Volume",
        _join(
            [
                _figure(volume_chart(stats), caption),
                _table(
                    ["Week", "Monday", *DISPOSITIONS, "Total"], rows, foot=foot, numeric=numeric
                ),
            ]
        ),
        id_="volume",
    )


def _agreement(stats: PeriodStats) -> _Safe:
    total = stats.reviewed_decisions
    parts: list[object] = (
        [_agreement_body(stats)] if total else [_muted("No person decided a gate in this period.")]
    )
    if stats.closed_by_service:
        parts.append(
            _muted(
                f"{'Besides these, ' if total else ''}{stats.closed_by_service} gate(s) were "
                "closed by a service, not a person: an SLA chain that runs out rejects, as "
                "declared."
            )
        )
    return _section("Human review: agreement with the AI", _join(parts), id_="agreement")


def _agreement_body(stats: PeriodStats) -> _Safe:
    total = stats.reviewed_decisions
    rows = [[v, stats.verdicts[v], _share(stats.verdicts[v], total)] for v in VERDICTS]
    caption = (
        "The final decision of each gate a person decided: approved as the AI proposed, "
        "approved with the person's own correction (an override), rejected, or sent back "
        "with a change request. Agreement rate: approved unchanged, of all of them."
    )
    return _join(
        [
            _figure(agreement_chart(stats), caption),
            _table(
                ["Decision", "Count", "Share"], rows, foot=["Total", total, "100%"], numeric=(1, 2)
            ),
        ]
    )


def _speed(stats: PeriodStats) -> _Safe:
    title = "Time to decision and automation bias (AI Act Art. 14(4)(b))"
    if not stats.decisions:
        return _section(title, _muted("No person decided a gate in this period."), id_="speed")
    fast = _span(stats.fast_seconds)
    facts = [
        (
            "Decisions by people",
            f"{stats.decisions:,} (every approval counts, both under four-eyes)",
        ),
        ("Median", _duration(stats.median_seconds or 0.0)),
        ("90th percentile", _duration(stats.p90_seconds or 0.0)),
        (
            f"Under {fast}",
            f"{stats.fast_decisions} ({_share(stats.fast_decisions, stats.decisions)})",
        ),
    ]
    rows = [
        [
            r.reviewer,
            r.decisions,
            r.fast,
            _percent(r.share),
            _pill("automation-bias signal", "warn") if r.flagged else _pill("no signal", "none"),
        ]
        for r in stats.reviewers
    ]
    note = _muted(
        f"A reviewer is flagged when more than {stats.fast_share_flag:.0%} of their decisions "
        f"came within {fast} of the gate opening: too soon, as a rule, to have read what they "
        "approved. A signal to look into, not a finding. Times count from the gate opening, "
        "so a second approver's time includes the first's: their signal is conservative."
    )
    caption = "Time from a gate opening to each person's decision; red bars are fast decisions."
    figure = _figure(decision_chart(stats), caption)
    table = _table(
        ["Reviewer", "Decisions", f"Under {fast}", "Share", "Signal"], rows, numeric=(1, 2, 3)
    )
    return _figures(title, facts, figure, table, note, id_="speed")


def _sla(stats: PeriodStats) -> _Safe:
    title = "Escalations and SLA breaches"
    opened = stats.gates_opened
    if not opened:
        return _section(title, _muted("No gate opened in this period."), id_="sla")
    escalated = sum(w.escalated for w in stats.gates)
    breached = sum(w.breached for w in stats.gates)
    facts = [
        ("Gates opened", f"{opened:,}"),
        ("Escalated", f"{escalated} ({_percent(stats.escalation_rate)})"),
        ("SLA breached", f"{breached} ({_percent(stats.breach_rate)})"),
    ]
    rows = [
        [f"{w.week:%G-W%V}", w.opened, w.escalated, w.breached, _share(w.breached, w.opened)]
        for w in stats.gates
        if w.opened
    ]
    caption = (
        "Of the gates opened each week, the share escalated and the share that breached its "
        "SLA: decided after the due time it opened with, escalated, or still undecided past it."
    )
    figure = _figure(sla_chart(stats), caption)
    table = _table(
        ["Week", "Opened", "Escalated", "SLA breached", "Breach rate"], rows, numeric=(1, 2, 3, 4)
    )
    return _figures(title, facts, figure, table, id_="sla")


def _models(stats: PeriodStats) -> _Safe:
    title = "Models: cost and confidence by week"
    if not stats.models:
        return _section(title, _muted("No AI inference was recorded."), id_="models")
    rows = [
        [
            f"{use.week:%G-W%V}",
            use.model,
            use.calls,
            f"{use.input_tokens:,}",
            f"{use.output_tokens:,}",
            _money(use.cost_usd),
            _confidence(use.confidence_mean),
            _confidence(use.confidence_min),
        ]
        for use in stats.models
    ]
    foot = [
        "Total",
        "",
        sum(u.calls for u in stats.models),
        f"{sum(u.input_tokens for u in stats.models):,}",
        f"{sum(u.output_tokens for u in stats.models):,}",
        _money(stats.cost_usd),
        "",
        "",
    ]
    headers = ["Week", "Model", "Calls", "Input tokens", "Output tokens", "Cost (USD)"]
    return _section(
        title,
        _join(
            [
                _figure(cost_chart(stats), "AI cost per week, by provider/model.")
                if stats.cost_usd
                else _muted("No model call of the period cost anything (self-hosted or offline)."),
                _figure(
                    confidence_chart(stats),
                    "Mean confidence per week, by provider/model (each model's own measure; "
                    "see the per-run report for the method).",
                ),
                _table(
                    [*headers, "Mean confidence", "Lowest"],
                    rows,
                    foot=foot,
                    numeric=(2, 3, 4, 5, 6, 7),
                ),
            ]
        ),
        id_="models",
    )


def _confidence(value: float | None) -> str:
    return "—" if value is None else f"{value:.2f}"


def _checks(stats: PeriodStats) -> _Safe:
    rows = [
        [
            check.label,
            _pill(f"{len(check.failed)} failed", "bad")
            if check.failed
            else _pill("0 failed", "good"),
            check.passed,
            check.not_applicable,
            _ids(check.failed),
        ]
        for check in stats.checks
    ]
    table = _noted_table(
        ["Check", "Result", "Passed", "Not applicable", "Runs that failed"],
        rows,
        "The checks of the per-run report (`baton audit export <id>`), over every run: its "
        "report shows each check's evidence.",
        class_="checks",
        numeric=(2, 3),
    )
    return _section("Per-run checks", table, id_="checks")


def render_period_html(stats: PeriodStats) -> str:
    """The period report as one self-contained HTML document: inline CSS and SVG, no
    scripts, every recorded value escaped."""
    title = f"Period report: {stats.process}"
    span = f"{stats.since:%Y-%m-%d} to {stats.until - timedelta(microseconds=1):%Y-%m-%d}"
    header = _tag(
        "header",
        _join(
            [
                _tag("h1", f"{title}, {span}"),
                _tag("p", f"Audit period report · generated {_time(stats.generated_at)}"),
            ]
        ),
        class_="doc",
    )
    body = _join(
        [
            header,
            _scope(stats),
            _integrity(stats),
            _reconciliation(stats),
            _headline(stats),
            _volume(stats),
            _agreement(stats),
            _speed(stats),
            _sla(stats),
            _models(stats),
            _checks(stats),
            _retention(stats),
            _tag(
                "footer",
                "Generated by Baton from its append-only audit store, one run at a time. "
                "Charts drawn with matplotlib; the tables hold the exact figures.",
            ),
        ]
    )
    return _page(title, body, _PERIOD_CSS)
