"""The period report: every run of one process over a period, in one file for an auditor.

The per-run report (`export`) tells runs one by one; this one answers what is asked of a
period (AI Act Art. 12 logging, Art. 14 human oversight, Art. 26(5) the deployer's
monitoring): how many runs went through on their own and how many a person reviewed, how
often reviewers agreed with the AI, how fast they decided (an automation-bias signal, Art.
14(4)(b)), how often a gate's SLA ran out, what the models cost and how sure they were,
which per-run checks failed, whether every run's hash chain verifies, and whether each
run's trail was reconciled with Temporal's history and agreed.

Runs are read from the store one at a time (here) and reduced to a small `RunSummary`
(`period_summary`), so a period of 10,000 runs never holds more than one run's records.
Summaries fold into `PeriodStats` (`period_stats`: plain numbers, testable without HTML),
which is then rendered (`period_html`): tables for the exact figures, charts drawn by
matplotlib as inline SVG (`period_charts`), one self-contained file.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Required, TypedDict, Unpack

from baton.audit.period_html import render_period_html
from baton.audit.period_stats import PeriodScope, PeriodStats, period_stats
from baton.audit.period_summary import RunSummary, started_at, summarise_run
from baton.audit.reconcile import findings_chain
from baton.audit.retention import RetentionOverride
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport
from baton.audit.wording import _time


class PeriodRequest(TypedDict, total=False):
    """What a period report is asked for: the process and the period's start; ``until``
    (exclusive) and ``generated_at`` default to now, the rest to `PeriodScope`'s."""

    process: Required[str]
    since: Required[datetime]
    until: datetime | None
    generated_at: datetime | None
    fast_seconds: float
    fast_share_flag: float
    min_retention_days: int | None
    retention_override: RetentionOverride | None


def period_runs(
    store: AuditStore, scope: PeriodScope, verify: Callable[[str], VerifyReport] | None = None
) -> Iterator[RunSummary]:
    """The summaries of the runs of the scope's process that started in its period, read
    from the store with their reconcile findings and verified one run at a time
    (``verify``: the store's own chain check unless another is given)."""
    check = verify or store.verify
    for workflow_id in store.workflow_ids(process=scope.process, since=scope.since):
        records = store.records(workflow_id)
        if records and scope.since <= started_at(records) < scope.until:
            findings = store.records(findings_chain(workflow_id))
            yield summarise_run(
                records, check(workflow_id), as_of=scope.generated_at, findings=findings
            )


def write_period_report(
    store: AuditStore,
    out: Path,
    *,
    verify: Callable[[str], VerifyReport] | None = None,
    **request: Unpack[PeriodRequest],
) -> PeriodStats:
    """Write the period report asked for to ``out``. Raises LookupError when no run of the
    process started in the period."""
    now = request.get("generated_at") or datetime.now(UTC)
    end = request.get("until") or now
    since = request["since"]
    if end <= since:
        raise ValueError(f"the period is empty: {_time(since)} is not before {_time(end)}")
    scope = PeriodScope.model_validate({**request, "until": end, "generated_at": now})
    stats = period_stats(period_runs(store, scope, verify), scope)
    if not stats.runs:
        raise LookupError(
            f"no audited run of '{scope.process}' started between {_time(since)} and "
            f"{_time(end)}: check --process and the dates"
        )
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(render_period_html(stats), encoding="utf-8")
    return stats
