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

from baton.audit.period_html import render_period_html
from baton.audit.period_stats import (
    DEFAULT_FAST_SECONDS,
    DEFAULT_FAST_SHARE,
    PeriodStats,
    period_stats,
)
from baton.audit.period_summary import RunSummary, started_at, summarise_run
from baton.audit.reconcile import findings_chain
from baton.audit.retention import RetentionOverride
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport
from baton.audit.wording import _time


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
