"""The period's figures: run summaries folded one at a time into `PeriodStats`, plain
numbers by ISO week (volume, verdicts, decision times, SLA, models, checks, chains), which
the page renders and tests read without HTML.
"""

from __future__ import annotations

import bisect
import statistics
from collections import Counter
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta

from pydantic import BaseModel

from baton.audit.period_summary import (
    DISPOSITIONS,
    VERDICTS,
    Disposition,
    Inference,
    ReconcileDifference,
    RunSummary,
    Verdict,
)
from baton.audit.reading import ModelUsage
from baton.audit.reconcile import ReconcileStatus
from baton.audit.retention import RetentionOverride
from baton.audit.verify import Problem
from baton.audit.wording import _span

DEFAULT_FAST_SECONDS = 10.0
"""A decision made sooner than this after its gate opened counts as fast."""
DEFAULT_FAST_SHARE = 0.20
"""A reviewer with a larger share of fast decisions than this is flagged."""


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


class ModelWeek(ModelUsage):
    week: date
    model: str
    confidence_sum: float = 0.0
    confidence_count: int = 0
    confidence_min: float | None = None

    def add(self, inference: Inference) -> None:
        self.count(inference.input_tokens, inference.output_tokens, inference.cost_usd)
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


class PeriodScope(BaseModel):
    """What a period report covers and what it judges by: the process, the period (``since``
    <= start < ``until``), when it was made, the fast-decision thresholds, and the retention
    settings, stated as they are."""

    process: str
    since: datetime
    until: datetime
    generated_at: datetime
    fast_seconds: float = DEFAULT_FAST_SECONDS
    fast_share_flag: float = DEFAULT_FAST_SHARE
    min_retention_days: int | None = None
    retention_override: RetentionOverride | None = None


class PeriodStats(PeriodScope):
    """Every figure of the period report. Runs belong to the period in which they started
    and to the ISO week (UTC) of their start; gates to the week they opened, model calls to
    the week they were made."""

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


def period_stats(runs: Iterable[RunSummary], scope: PeriodScope) -> PeriodStats:
    """Fold run summaries, one at a time, into the figures of the period ``scope`` says."""
    tally = _Tally(fast_seconds=scope.fast_seconds)
    for run in runs:
        tally.add(run)
    seen = [*tally.volume, *tally.gates, *(w for w, _ in tally.models)]
    weeks = _weeks(scope.since, scope.until, seen)
    ordered = sorted(tally.seconds)
    return PeriodStats(
        **dict(scope),
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
        histogram=_histogram(ordered, scope.fast_seconds),
        reviewers=_reviewers(tally.reviewers, scope.fast_share_flag),
        gates=[tally.gates.get(w, GateWeek(week=w)) for w in weeks],
        models=sorted(tally.models.values(), key=lambda use: (use.week, use.model)),
        checks=list(tally.checks.values()),
        chains_verified=tally.verified,
        chain_findings=tally.findings,
        store_problems=list(tally.store_problems.values()),
        reconcile_agrees=tally.reconciled["agrees"],
        reconcile_differs=tally.differences,
        not_reconciled=tally.reconciled["not reconciled"],
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
