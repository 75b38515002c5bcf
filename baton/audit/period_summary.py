"""One run reduced for the period report: a `RunSummary` of a few hundred bytes (how the
run ended, its gate visits and timed decisions, model calls, checks, chain and reconcile
results), so that a period never holds more than one run's records.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from datetime import datetime
from typing import Literal

from pydantic import BaseModel

from baton.audit.causal import causal_order
from baton.audit.checks import CheckStatus, run_checks
from baton.audit.events import AuditRecord
from baton.audit.reading import _DECISIONS, _by_person, _declared, _model_of, _who
from baton.audit.reconcile import ReconcileStatus, reconcile_status
from baton.audit.verify import Problem, VerifyReport
from baton.audit.wording import _number, _parse_time

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
