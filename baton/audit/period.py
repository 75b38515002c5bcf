"""The period report: every run of one process over a period, in one file for an auditor.

The per-run report (`export`) tells runs one by one; this one answers what is asked of a
period (AI Act Art. 12 logging, Art. 14 human oversight, Art. 26(5) the deployer's
monitoring): how many runs went through on their own and how many a person reviewed, how
often reviewers agreed with the AI, how fast they decided (an automation-bias signal, Art.
14(4)(b)), how often a gate's SLA ran out, what the models cost and how sure they were,
which per-run checks failed, whether every run's hash chain verifies, and whether each
run's trail was reconciled with Temporal's history and agreed.

Runs are read from the store one at a time and reduced to a small `RunSummary`, so a period
of 10,000 runs never holds more than one run's records. Summaries fold into `PeriodStats`
(plain numbers, testable without HTML), which is then rendered: tables for the exact
figures, charts drawn by matplotlib as inline SVG, one self-contained file.
"""

from __future__ import annotations

import bisect
import io
import statistics
from collections import Counter
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Literal, TypeVar

import matplotlib
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator, PercentFormatter
from pydantic import BaseModel

from baton.audit.events import AuditRecord

# The per-run report's reading of the trail and its HTML kit: one meaning for "a decision"
# or "a person", and the same escaping and look in both reports.
from baton.audit.export import (
    _CSS,
    _DECISIONS,
    CheckStatus,
    _by_person,
    _cards,
    _declared,
    _dl,
    _duration,
    _join,
    _model_of,
    _money,
    _muted,
    _number,
    _parse_time,
    _pill,
    _Safe,
    _section,
    _table,
    _tag,
    _time,
    _who,
    causal_order,
    retention_override_text,
    run_checks,
)
from baton.audit.reconcile import ReconcileStatus, findings_chain, reconcile_status
from baton.audit.retention import RetentionOverride
from baton.audit.store import AuditStore
from baton.audit.verify import Problem, VerifyReport

# Headless: the CLI, a worker or CI has no display, and a report never opens a window.
matplotlib.use("Agg")

DEFAULT_FAST_SECONDS = 10.0
"""A decision made sooner than this after its gate opened counts as fast."""
DEFAULT_FAST_SHARE = 0.20
"""A reviewer with a larger share of fast decisions than this is flagged."""

Disposition = Literal["auto-entered", "reviewed", "rejected", "stopped", "failed", "no end"]
DISPOSITIONS: tuple[Disposition, ...] = (
    "auto-entered",
    "reviewed",
    "rejected",
    "stopped",
    "failed",
    "no end",
)
Verdict = Literal["approved unchanged", "overridden", "rejected", "changes requested"]
VERDICTS: tuple[Verdict, ...] = (
    "approved unchanged",
    "overridden",
    "rejected",
    "changes requested",
)

# -- one run ---------------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class TimedDecision:
    """A person's decision at a gate, and how long after the gate opened it came."""

    reviewer: str
    seconds: float


@dataclass(frozen=True, slots=True)
class GateVisit:
    """One opening of a gate and how it closed: ``verdict`` is a person's final decision
    (None when no person decided); ``by_service`` when a service closed it: the SLA chain
    running out rejects, as declared (a service that approved fails a per-run check)."""

    opened_at: datetime
    escalated: bool
    breached: bool
    verdict: Verdict | None
    by_service: bool


@dataclass(frozen=True, slots=True)
class Inference:
    at: datetime
    model: str
    cost_usd: float
    confidence: float | None
    input_tokens: int
    output_tokens: int


class ReconcileDifference(BaseModel):
    """What the last pass that compared a run with Temporal's history found missing."""

    workflow_id: str
    at: datetime
    pass_id: str
    differences: list[str]


@dataclass(frozen=True, slots=True)
class RunSummary:
    """What the period report needs of one run: a few hundred bytes instead of its records."""

    workflow_id: str
    started_at: datetime
    records: int
    disposition: Disposition
    gates: tuple[GateVisit, ...]
    decisions: tuple[TimedDecision, ...]
    inferences: tuple[Inference, ...]
    checks: tuple[tuple[str, CheckStatus], ...]
    problems: tuple[Problem, ...]
    # Findings about the store as a whole (a dropped guard, a damaged checkpoint log),
    # which every run's verification repeats.
    store_problems: tuple[Problem, ...]
    risk_classes: tuple[str, ...]
    purposes: tuple[str, ...]
    reconciled: ReconcileStatus = "not reconciled"
    # Set when ``reconciled`` is "differs".
    difference: ReconcileDifference | None = None


def started_at(run: Sequence[AuditRecord]) -> datetime:
    """When the run started: its `run.started`, else its earliest record. A lost start is
    a failed check in the report, not a reason to leave the run out of its period."""
    started = next((r for r in run if r.event_type == "run.started"), None)
    return started.occurred_at if started else min(r.occurred_at for r in run)


def summarise_run(
    records: Sequence[AuditRecord],
    verification: VerifyReport,
    *,
    as_of: datetime,
    findings: Sequence[AuditRecord] = (),
) -> RunSummary:
    """One run's records (any order), its chain verification and its reconcile findings
    (oldest first), reduced. ``as_of`` is when a gate still open counts as late or not."""
    run = causal_order(records)
    workflow_id = run[0].workflow_id
    visits = [_gate_visit(run, index, _closed_at(run, as_of)) for index in _gate_openings(run)]
    reconciled = reconcile_status(findings)
    return RunSummary(
        workflow_id=workflow_id,
        started_at=started_at(run),
        records=len(run),
        disposition=_disposition(run),
        gates=tuple(visit for visit, _ in visits),
        decisions=tuple(decision for _, decisions in visits for decision in decisions),
        inferences=tuple(_inference(r) for r in run if r.event_type == "ai.inference"),
        checks=tuple((check.label, check.status) for check in run_checks(run)),
        problems=tuple(p for p in verification.problems if p.workflow_id == workflow_id),
        store_problems=tuple(p for p in verification.problems if p.workflow_id != workflow_id),
        risk_classes=tuple(_declared(run, "risk_class")),
        purposes=tuple(_declared(run, "intended_purpose")),
        reconciled=reconciled,
        difference=_difference(workflow_id, findings) if reconciled == "differs" else None,
    )


def _difference(workflow_id: str, findings: Sequence[AuditRecord]) -> ReconcileDifference:
    last = next(f for f in reversed(findings) if f.data.get("history") != "gone")
    return ReconcileDifference(
        workflow_id=workflow_id,
        at=last.occurred_at,
        pass_id=last.run_id,
        differences=[str(d) for d in last.data.get("differences") or []],
    )


_ENDINGS: dict[str, Disposition] = {"rejected": "rejected", "stopped": "stopped"}


def _disposition(run: Sequence[AuditRecord]) -> Disposition:
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    if ended is None:
        return "no end"
    outcome = str(ended.data.get("outcome") or ended.data.get("status") or "")
    if outcome == "completed":
        reviewed = any(r.event_type in _DECISIONS and _by_person(r) for r in run)
        return "reviewed" if reviewed else "auto-entered"
    # Failed, cancelled, or an outcome this report does not know: not a normal ending.
    return _ENDINGS.get(outcome, "failed")


def _closed_at(run: Sequence[AuditRecord], as_of: datetime) -> datetime:
    """Until when a gate left undecided was waiting: the run's end, else ``as_of``."""
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    return ended.occurred_at if ended else as_of


def _gate_openings(run: Sequence[AuditRecord]) -> list[int]:
    return [i for i, r in enumerate(run) if r.event_type == "gate.opened"]


def _visit(run: Sequence[AuditRecord], opened: int) -> list[AuditRecord]:
    """The gate's own records after its opening at ``opened``, up to its next opening (a
    reviewer's change request sends the run back, and the gate opens again)."""
    node = run[opened].node
    visit: list[AuditRecord] = []
    for record in run[opened + 1 :]:
        if record.node != node:
            continue
        if record.event_type == "gate.opened":
            break
        visit.append(record)
    return visit


def _gate_visit(
    run: Sequence[AuditRecord], index: int, closed_by_end: datetime
) -> tuple[GateVisit, list[TimedDecision]]:
    opened = run[index]
    visit = _visit(run, index)
    final = next((r for r in visit if r.event_type == "gate.decided"), None)
    escalated = any(r.event_type == "gate.escalated" for r in visit)
    due = _parse_time(opened.data.get("due_at"))
    closed = final.occurred_at if final else closed_by_end
    overridden = any(r.event_type == "override" for r in visit)
    gate = GateVisit(
        opened_at=opened.occurred_at,
        escalated=escalated,
        breached=escalated or (due is not None and closed > due),
        verdict=_verdict(final, overridden) if final and _by_person(final) else None,
        by_service=final is not None and not _by_person(final),
    )
    decisions = [_timed(opened, r) for r in visit if r.event_type in _DECISIONS and _by_person(r)]
    return gate, decisions


def _verdict(decision: AuditRecord, overridden: bool) -> Verdict:
    outcome = decision.data.get("outcome")
    if outcome == "reject":
        return "rejected"
    if outcome == "request_changes":
        return "changes requested"
    # Under four-eyes the first approver's edit is what the second approves: still an override.
    return "overridden" if overridden or decision.data.get("edited") else "approved unchanged"


def _timed(opened: AuditRecord, decision: AuditRecord) -> TimedDecision:
    waited = decision.data.get("waited_seconds")
    if isinstance(waited, int | float) and not isinstance(waited, bool):
        seconds = float(waited)
    else:
        seconds = (decision.occurred_at - opened.occurred_at).total_seconds()
    return TimedDecision(_who(decision), max(seconds, 0.0))


def _inference(record: AuditRecord) -> Inference:
    data = record.data
    confidence = data.get("confidence")
    return Inference(
        at=record.occurred_at,
        model=_model_of(data),
        cost_usd=_number(data.get("cost_usd")),
        confidence=float(confidence)
        if isinstance(confidence, int | float) and not isinstance(confidence, bool)
        else None,
        input_tokens=int(_number(data.get("input_tokens"))),
        output_tokens=int(_number(data.get("output_tokens"))),
    )


# -- the period ------------------------------------------------------------------------------


def week_of(at: datetime) -> date:
    """The Monday (UTC) of the ISO week ``at`` falls in."""
    day = at.astimezone(UTC).date()
    return day - timedelta(days=day.weekday())


class WeekVolume(BaseModel):
    week: date
    runs: dict[Disposition, int]

    @property
    def total(self) -> int:
        return sum(self.runs.values())


class ReviewerSpeed(BaseModel):
    reviewer: str
    decisions: int
    fast: int
    flagged: bool

    @property
    def share(self) -> float:
        return self.fast / self.decisions if self.decisions else 0.0


class DecisionBin(BaseModel):
    """Decisions that came ``low`` <= seconds < ``high`` after the gate opened."""

    low: float
    high: float | None
    count: int
    fast: bool

    @property
    def label(self) -> str:
        if self.high is None:
            return f"≥ {_span(self.low)}"
        return (
            f"< {_span(self.high)}"
            if self.low == 0
            else f"{_span(self.low)}\u2013{_span(self.high)}"
        )


class GateWeek(BaseModel):
    week: date
    opened: int = 0
    escalated: int = 0
    breached: int = 0


class ModelWeek(BaseModel):
    week: date
    model: str
    calls: int = 0
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    confidence_sum: float = 0.0
    confidence_count: int = 0
    confidence_min: float | None = None

    def add(self, inference: Inference) -> None:
        self.calls += 1
        self.input_tokens += inference.input_tokens
        self.output_tokens += inference.output_tokens
        self.cost_usd += inference.cost_usd
        if inference.confidence is not None:
            self.confidence_sum += inference.confidence
            self.confidence_count += 1
            lowest = self.confidence_min
            self.confidence_min = min(inference.confidence, lowest if lowest is not None else 1.0)

    @property
    def confidence_mean(self) -> float | None:
        return self.confidence_sum / self.confidence_count if self.confidence_count else None


class CheckTally(BaseModel):
    label: str
    passed: int = 0
    not_applicable: int = 0
    failed: list[str] = []


class ChainFinding(BaseModel):
    workflow_id: str
    problems: list[Problem]


class PeriodStats(BaseModel):
    """Every figure of the period report. Runs belong to the period in which they started
    (``since`` <= start < ``until``) and to the ISO week (UTC) of their start; gates to the
    week they opened, model calls to the week they were made."""

    process: str
    since: datetime
    until: datetime
    generated_at: datetime
    fast_seconds: float
    fast_share_flag: float
    runs: int
    records: int
    risk_classes: list[str]
    purposes: list[str]
    volume: list[WeekVolume]
    verdicts: dict[Verdict, int]
    closed_by_service: int
    decisions: int
    median_seconds: float | None
    p90_seconds: float | None
    histogram: list[DecisionBin]
    reviewers: list[ReviewerSpeed]
    gates: list[GateWeek]
    models: list[ModelWeek]
    checks: list[CheckTally]
    chains_verified: int
    chain_findings: list[ChainFinding]
    store_problems: list[Problem]
    reconcile_agrees: int = 0
    reconcile_differs: list[ReconcileDifference] = []
    not_reconciled: int = 0
    min_retention_days: int | None = None
    retention_override: RetentionOverride | None = None

    def runs_by(self, disposition: Disposition) -> int:
        return sum(week.runs.get(disposition, 0) for week in self.volume)

    @property
    def reviewed_decisions(self) -> int:
        return sum(self.verdicts.values())

    @property
    def agreement_rate(self) -> float | None:
        """Approved unchanged, of every final decision a person made."""
        total = self.reviewed_decisions
        return self.verdicts.get("approved unchanged", 0) / total if total else None

    @property
    def fast_decisions(self) -> int:
        return sum(reviewer.fast for reviewer in self.reviewers)

    @property
    def gates_opened(self) -> int:
        return sum(week.opened for week in self.gates)

    @property
    def escalation_rate(self) -> float | None:
        opened = self.gates_opened
        return sum(week.escalated for week in self.gates) / opened if opened else None

    @property
    def breach_rate(self) -> float | None:
        opened = self.gates_opened
        return sum(week.breached for week in self.gates) / opened if opened else None

    @property
    def cost_usd(self) -> float:
        return sum(use.cost_usd for use in self.models)

    @property
    def verified(self) -> bool:
        return not self.chain_findings and not self.store_problems


# Edges of the time-to-decision histogram, in seconds; the fast threshold is added to them.
_BIN_EDGES = (1.0, 5.0, 30.0, 60.0, 300.0, 900.0, 3600.0, 4 * 3600.0, 86400.0, 3 * 86400.0)


@dataclass
class _Tally:
    """The period folded run by run: counters and the decision times, never records."""

    fast_seconds: float
    runs: int = 0
    records: int = 0
    volume: dict[date, Counter[Disposition]] = field(default_factory=dict)
    verdicts: Counter[Verdict] = field(default_factory=Counter)
    closed_by_service: int = 0
    seconds: list[float] = field(default_factory=list)
    reviewers: dict[str, list[int]] = field(default_factory=dict)
    gates: dict[date, GateWeek] = field(default_factory=dict)
    models: dict[tuple[date, str], ModelWeek] = field(default_factory=dict)
    checks: dict[str, CheckTally] = field(default_factory=dict)
    verified: int = 0
    findings: list[ChainFinding] = field(default_factory=list)
    store_problems: dict[tuple[str, str], Problem] = field(default_factory=dict)
    risk_classes: dict[str, None] = field(default_factory=dict)
    purposes: dict[str, None] = field(default_factory=dict)
    reconciled: Counter[ReconcileStatus] = field(default_factory=Counter)
    differences: list[ReconcileDifference] = field(default_factory=list)

    def add(self, run: RunSummary) -> None:
        self.runs += 1
        self.records += run.records
        self.volume.setdefault(week_of(run.started_at), Counter())[run.disposition] += 1
        self.risk_classes.update(dict.fromkeys(run.risk_classes))
        self.purposes.update(dict.fromkeys(run.purposes))
        self._add_gates(run)
        self._add_decisions(run)
        for inference in run.inferences:
            key = (week_of(inference.at), inference.model)
            self.models.setdefault(key, ModelWeek(week=key[0], model=key[1])).add(inference)
        self._add_checks(run)
        self._add_chain(run)
        self.reconciled[run.reconciled] += 1
        if run.difference is not None:
            self.differences.append(run.difference)

    def _add_gates(self, run: RunSummary) -> None:
        for gate in run.gates:
            week = week_of(gate.opened_at)
            tally = self.gates.setdefault(week, GateWeek(week=week))
            tally.opened += 1
            tally.escalated += gate.escalated
            tally.breached += gate.breached
            if gate.verdict is not None:
                self.verdicts[gate.verdict] += 1
            self.closed_by_service += gate.by_service

    def _add_decisions(self, run: RunSummary) -> None:
        for decision in run.decisions:
            self.seconds.append(decision.seconds)
            counts = self.reviewers.setdefault(decision.reviewer, [0, 0])
            counts[0] += 1
            counts[1] += decision.seconds < self.fast_seconds

    def _add_checks(self, run: RunSummary) -> None:
        for label, status in run.checks:
            tally = self.checks.setdefault(label, CheckTally(label=label))
            if status == "fail":
                tally.failed.append(run.workflow_id)
            elif status == "pass":
                tally.passed += 1
            else:
                tally.not_applicable += 1

    def _add_chain(self, run: RunSummary) -> None:
        if run.problems:
            self.findings.append(
                ChainFinding(workflow_id=run.workflow_id, problems=list(run.problems))
            )
        else:
            self.verified += 1
        for problem in run.store_problems:
            self.store_problems.setdefault((problem.kind, problem.detail), problem)


def period_stats(
    runs: Iterable[RunSummary],
    *,
    process: str,
    since: datetime,
    until: datetime,
    generated_at: datetime,
    fast_seconds: float = DEFAULT_FAST_SECONDS,
    fast_share_flag: float = DEFAULT_FAST_SHARE,
    min_retention_days: int | None = None,
    retention_override: RetentionOverride | None = None,
) -> PeriodStats:
    """Fold run summaries, one at a time, into the period's figures; the retention
    settings are stated as they are."""
    tally = _Tally(fast_seconds=fast_seconds)
    for run in runs:
        tally.add(run)
    weeks = _weeks(since, until, [*tally.volume, *tally.gates, *(w for w, _ in tally.models)])
    ordered = sorted(tally.seconds)
    return PeriodStats(
        process=process,
        since=since,
        until=until,
        generated_at=generated_at,
        fast_seconds=fast_seconds,
        fast_share_flag=fast_share_flag,
        runs=tally.runs,
        records=tally.records,
        risk_classes=list(tally.risk_classes),
        purposes=list(tally.purposes),
        volume=[
            WeekVolume(week=w, runs={d: tally.volume.get(w, Counter())[d] for d in DISPOSITIONS})
            for w in weeks
        ],
        verdicts={verdict: tally.verdicts[verdict] for verdict in VERDICTS},
        closed_by_service=tally.closed_by_service,
        decisions=len(ordered),
        median_seconds=statistics.median(ordered) if ordered else None,
        p90_seconds=ordered[min(len(ordered) - 1, round(0.9 * (len(ordered) - 1)))]
        if ordered
        else None,
        histogram=_histogram(ordered, fast_seconds),
        reviewers=_reviewers(tally.reviewers, fast_share_flag),
        gates=[tally.gates.get(w, GateWeek(week=w)) for w in weeks],
        models=sorted(tally.models.values(), key=lambda use: (use.week, use.model)),
        checks=list(tally.checks.values()),
        chains_verified=tally.verified,
        chain_findings=tally.findings,
        store_problems=list(tally.store_problems.values()),
        reconcile_agrees=tally.reconciled["agrees"],
        reconcile_differs=tally.differences,
        not_reconciled=tally.reconciled["not reconciled"],
        min_retention_days=min_retention_days,
        retention_override=retention_override,
    )


def _weeks(since: datetime, until: datetime, seen: Iterable[date]) -> list[date]:
    """Every week of the period, empty ones too (a gap is a finding), and any week a
    run's later events fell in."""
    first, last = week_of(since), week_of(max(since, until - timedelta(microseconds=1)))
    span = [first + timedelta(weeks=n) for n in range((last - first).days // 7 + 1)]
    return sorted({*span, *seen})


def _histogram(ordered: Sequence[float], fast_seconds: float) -> list[DecisionBin]:
    edges = [0.0, *sorted({*_BIN_EDGES, fast_seconds})]
    bins: list[DecisionBin] = []
    for i, low in enumerate(edges):
        high = edges[i + 1] if i + 1 < len(edges) else None
        count = bisect.bisect_left(ordered, high) if high is not None else len(ordered)
        count -= bisect.bisect_left(ordered, low)
        bins.append(
            DecisionBin(
                low=low, high=high, count=count, fast=high is not None and high <= fast_seconds
            )
        )
    return bins


def _reviewers(counts: Mapping[str, list[int]], flag_above: float) -> list[ReviewerSpeed]:
    speeds = [
        ReviewerSpeed(
            reviewer=reviewer,
            decisions=decisions,
            fast=fast,
            flagged=decisions > 0 and fast / decisions > flag_above,
        )
        for reviewer, (decisions, fast) in counts.items()
    ]
    return sorted(speeds, key=lambda s: (not s.flagged, -s.share, s.reviewer))


# -- reading the store -----------------------------------------------------------------------


def period_runs(
    store: AuditStore,
    *,
    process: str,
    since: datetime,
    until: datetime,
    as_of: datetime,
    verify: Callable[[str], VerifyReport] | None = None,
) -> Iterator[RunSummary]:
    """The summaries of the runs of ``process`` that started in [since, until), read from
    the store with their reconcile findings and verified one run at a time (``verify``:
    the store's own chain check unless another is given)."""
    check = verify or store.verify
    for workflow_id in store.workflow_ids(process=process, since=since):
        records = store.records(workflow_id)
        if records and since <= started_at(records) < until:
            findings = store.records(findings_chain(workflow_id))
            yield summarise_run(records, check(workflow_id), as_of=as_of, findings=findings)


def write_period_report(
    store: AuditStore,
    out: Path,
    *,
    process: str,
    since: datetime,
    until: datetime | None = None,
    fast_seconds: float = DEFAULT_FAST_SECONDS,
    fast_share_flag: float = DEFAULT_FAST_SHARE,
    generated_at: datetime | None = None,
    verify: Callable[[str], VerifyReport] | None = None,
    min_retention_days: int | None = None,
    retention_override: RetentionOverride | None = None,
) -> PeriodStats:
    """Write the period report of ``process`` to ``out``; ``until`` (exclusive) defaults
    to now. Raises LookupError when no run of the process started in the period."""
    now = generated_at or datetime.now(UTC)
    end = until or now
    if end <= since:
        raise ValueError(f"the period is empty: {_time(since)} is not before {_time(end)}")
    runs = period_runs(store, process=process, since=since, until=end, as_of=now, verify=verify)
    stats = period_stats(
        runs,
        process=process,
        since=since,
        until=end,
        generated_at=now,
        fast_seconds=fast_seconds,
        fast_share_flag=fast_share_flag,
        min_retention_days=min_retention_days,
        retention_override=retention_override,
    )
    if not stats.runs:
        raise LookupError(
            f"no audited run of '{process}' started between {_time(since)} and {_time(end)}: "
            "check --process and the dates"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_period_html(stats), encoding="utf-8")
    return stats


# -- charts ----------------------------------------------------------------------------------

_INK, _MUTED, _GRID = "#1f2933", "#616e7c", "#d9e2ec"
_DISPOSITION_COLOURS: dict[Disposition, str] = {
    "auto-entered": "#2b8a3e",
    "reviewed": "#1c7ed6",
    "rejected": "#f08c00",
    "stopped": "#c92a2a",
    "failed": "#862e9c",
    "no end": "#adb5bd",
}
_VERDICT_COLOURS: dict[Verdict, str] = {
    "approved unchanged": "#2b8a3e",
    "overridden": "#f08c00",
    "rejected": "#c92a2a",
    "changes requested": "#1c7ed6",
}
_Name = TypeVar("_Name", bound=str)
_SERIES = ("#1c7ed6", "#f08c00", "#2b8a3e", "#862e9c", "#c92a2a", "#0b7285", "#5c940d")


def _axes(width: float = 7.6, height: float = 2.9) -> tuple[Figure, Axes]:
    figure = Figure(figsize=(width, height), layout="constrained")
    axes = figure.subplots()
    axes.spines[["top", "right"]].set_visible(False)
    axes.spines[["left", "bottom"]].set_color(_GRID)
    axes.tick_params(colors=_MUTED, labelsize=8)
    axes.grid(axis="y", color=_GRID, linewidth=0.6)
    axes.set_axisbelow(True)
    return figure, axes


# No RDF block (it names schema URLs) and no date: the same trail gives the same file.
_NO_METADATA = {"Date": None, "Creator": None, "Format": None, "Type": None}


def _svg(figure: Figure, name: str) -> _Safe:
    """The figure as an `<svg>` element to put inline. Text stays text, escaped by
    matplotlib's SVG writer. Several charts share one page, so every element id and every
    reference to one gets the chart's name; the fixed salt keeps the file the same from one
    run to the next."""
    buffer = io.StringIO()
    with matplotlib.rc_context({"svg.fonttype": "none", "svg.hashsalt": "baton"}):
        figure.savefig(buffer, format="svg", metadata=_NO_METADATA)
    text = buffer.getvalue()
    svg = text[text.index("<svg") :]
    for before, after in (('id="', f'id="{name}-'), ("url(#", f"url(#{name}-")):
        svg = svg.replace(before, after)
    return _Safe(svg.replace('href="#', f'href="#{name}-'))


def _label(text: str, limit: int = 48) -> str:
    """Recorded text as a chart label: never read as mathtext (a `$` in a model name)."""
    clipped = text if len(text) <= limit else text[: limit - 1] + "…"
    return clipped.replace("$", r"\$")


def _week_axis(axes: Axes, weeks: Sequence[date]) -> None:
    every = max(1, len(weeks) // 16)
    axes.set_xticks(range(len(weeks)))
    axes.set_xticklabels(
        [f"{w:%d %b}" if i % every == 0 else "" for i, w in enumerate(weeks)], rotation=0
    )
    axes.set_xlabel("week starting (UTC)", color=_MUTED, fontsize=8)


def _legend(axes: Axes) -> None:
    if axes.get_legend_handles_labels()[0]:
        axes.legend(fontsize=8, frameon=False, loc="upper left", bbox_to_anchor=(1.0, 1.0))


def _stacked(
    axes: Axes,
    weeks: Sequence[date],
    series: Mapping[_Name, Sequence[float]],
    colours: Mapping[_Name, str],
) -> None:
    bottom = [0.0] * len(weeks)
    for name, values in series.items():
        if not any(values):
            continue
        axes.bar(
            range(len(weeks)), values, 0.7, bottom=bottom, label=_label(name), color=colours[name]
        )
        bottom = [b + v for b, v in zip(bottom, values, strict=True)]
    _week_axis(axes, weeks)
    _legend(axes)


def volume_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    weeks = [w.week for w in stats.volume]
    series = {d: [float(w.runs[d]) for w in stats.volume] for d in DISPOSITIONS}
    _stacked(axes, weeks, series, _DISPOSITION_COLOURS)
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("runs started", color=_MUTED, fontsize=8)
    return _svg(figure, "volume")


def agreement_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes(height=1.9)
    total = stats.reviewed_decisions or 1
    names = list(reversed(VERDICTS))
    counts = [stats.verdicts[v] for v in names]
    bars = axes.barh(names, counts, color=[_VERDICT_COLOURS[v] for v in names], height=0.6)
    axes.bar_label(bars, [f"{c} ({c / total:.0%})" for c in counts], fontsize=8, padding=3)
    axes.grid(axis="y", visible=False)
    axes.grid(axis="x", color=_GRID, linewidth=0.6)
    axes.xaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_xlabel("final decisions by a person", color=_MUTED, fontsize=8)
    return _svg(figure, "agreement")


def decision_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    colours = ["#c92a2a" if b.fast else "#1c7ed6" for b in stats.histogram]
    axes.bar(range(len(stats.histogram)), [b.count for b in stats.histogram], 0.8, color=colours)
    axes.set_xticks(range(len(stats.histogram)))
    axes.set_xticklabels([b.label for b in stats.histogram], rotation=30, ha="right")
    axes.yaxis.set_major_locator(MaxNLocator(integer=True))
    axes.set_ylabel("decisions", color=_MUTED, fontsize=8)
    axes.set_xlabel(
        f"time from the gate opening to the decision (red: under {_span(stats.fast_seconds)})",
        color=_MUTED,
        fontsize=8,
    )
    return _svg(figure, "decisions")


def sla_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    weeks = [w.week for w in stats.gates]
    nan = float("nan")  # a week without gates has no rate: a gap in the line, not a zero
    escalated = [w.escalated / w.opened if w.opened else nan for w in stats.gates]
    breached = [w.breached / w.opened if w.opened else nan for w in stats.gates]
    for name, colour, rates in (
        ("escalated", "#f08c00", escalated),
        ("SLA breached", "#c92a2a", breached),
    ):
        axes.plot(range(len(weeks)), rates, marker="o", color=colour, label=name, linewidth=1.5)
    axes.set_ylim(0, 1.05)
    axes.yaxis.set_major_formatter(PercentFormatter(1.0))
    axes.set_ylabel("of gates opened that week", color=_MUTED, fontsize=8)
    _week_axis(axes, weeks)
    _legend(axes)
    return _svg(figure, "sla")


def _by_model(stats: PeriodStats, value: Callable[[ModelWeek], float]) -> dict[str, list[float]]:
    weeks = [w.week for w in stats.volume]
    series: dict[str, list[float]] = {}
    for use in stats.models:
        values = series.setdefault(use.model, [float("nan")] * len(weeks))
        values[weeks.index(use.week)] = value(use)
    return series


def cost_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    series = {
        model: [0.0 if v != v else v for v in values]  # NaN: no call that week, no cost
        for model, values in _by_model(stats, lambda use: use.cost_usd).items()
    }
    colours = {model: _SERIES[i % len(_SERIES)] for i, model in enumerate(series)}
    _stacked(axes, [w.week for w in stats.volume], series, colours)
    axes.set_ylabel("cost (USD)", color=_MUTED, fontsize=8)
    return _svg(figure, "cost")


def confidence_chart(stats: PeriodStats) -> _Safe:
    figure, axes = _axes()
    series = _by_model(stats, lambda use: use.confidence_mean or float("nan"))
    for i, (model, values) in enumerate(series.items()):
        axes.plot(
            range(len(values)),
            values,
            marker="o",
            linewidth=1.5,
            color=_SERIES[i % len(_SERIES)],
            label=_label(model),
        )
    axes.set_ylim(0, 1.05)
    axes.set_ylabel("mean confidence", color=_MUTED, fontsize=8)
    _week_axis(axes, [w.week for w in stats.volume])
    _legend(axes)
    return _svg(figure, "confidence")


# -- the page --------------------------------------------------------------------------------

_PERIOD_CSS = """
.cards { grid-template-columns:repeat(5, 1fr); }
figure.chart { margin:8px 0 14px; }
figure.chart svg { display:block; width:100%; max-width:860px; height:auto; }
figure.chart figcaption { color:var(--muted); font-size:12px; margin-top:4px; }
details.ids summary { margin-top:0; }
span.ids { display:block; font:12px ui-monospace, SFMono-Regular, Menlo, Consolas, monospace;
  overflow-wrap:anywhere; }
"""


def _span(seconds: float) -> str:
    """A bin edge in words: 10 s, 5 min, 4 h, 3 d."""
    for unit, size in (("d", 86400.0), ("h", 3600.0), ("min", 60.0)):
        if seconds >= size:
            return f"{seconds / size:g} {unit}"
    return f"{seconds:g} s"


def _percent(value: float | None) -> str:
    return "—" if value is None else f"{value:.1%}"


def _share(part: int, whole: int) -> str:
    return _percent(part / whole if whole else None)


def _figure(svg: _Safe, caption: str) -> _Safe:
    return _tag("figure", _join([svg, _tag("figcaption", caption)]), class_="chart")


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
    return _section(
        title,
        _join(
            [
                _dl(facts),
                _figure(decision_chart(stats), caption),
                _table(
                    ["Reviewer", "Decisions", f"Under {fast}", "Share", "Signal"],
                    rows,
                    numeric=(1, 2, 3),
                ),
                note,
            ]
        ),
        id_="speed",
    )


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
    return _section(
        title,
        _join(
            [
                _dl(facts),
                _figure(sla_chart(stats), caption),
                _table(
                    ["Week", "Opened", "Escalated", "SLA breached", "Breach rate"],
                    rows,
                    numeric=(1, 2, 3, 4),
                ),
            ]
        ),
        id_="sla",
    )


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
    note = _muted(
        "The checks of the per-run report (`baton audit export <id>`), over every run: its "
        "report shows each check's evidence."
    )
    table = _table(
        ["Check", "Result", "Passed", "Not applicable", "Runs that failed"],
        rows,
        class_="checks",
        numeric=(2, 3),
    )
    return _section("Per-run checks", _join([table, note]), id_="checks")


def _document(title: str, body: _Safe) -> str:
    head = _join(
        [
            _Safe('<meta charset="utf-8">'),
            _Safe('<meta name="viewport" content="width=device-width">'),
            _tag("title", title),
            _tag("style", _Safe(_CSS + _PERIOD_CSS)),
        ]
    )
    page = _tag("html", _join([_tag("head", head), _tag("body", _tag("main", body))]), lang="en")
    return "<!DOCTYPE html>\n" + page


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
    return _document(title, body)
