"""Audit reports as the CLI and the demo produce them: pick runs from the
store, verify their chains, write JSONL or the HTML report."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from datetime import datetime
from pathlib import Path
from typing import Literal

from baton.audit.anchoring import Anchors
from baton.audit.events import AuditRecord
from baton.audit.export import export_html, export_jsonl
from baton.audit.reconcile import findings_chain, is_findings_chain
from baton.audit.retention import RetentionOverride
from baton.audit.store import AuditStore
from baton.audit.verify import Problem, VerifyReport, summarise

Format = Literal["jsonl", "html"]


def select_runs(
    store: AuditStore,
    workflow_id: str | None,
    *,
    process: str | None = None,
    since: datetime | None = None,
) -> list[str]:
    if workflow_id:
        return [workflow_id]
    # Reconcile findings are shown with the runs they are about, not as runs of their own.
    return [w for w in store.workflow_ids(process=process, since=since) if not is_findings_chain(w)]


def write_report(
    store: AuditStore,
    workflow_ids: list[str],
    out: Path,
    *,
    fmt: Format,
    mermaid_for: Callable[[str], str | None] = lambda process: None,
    min_retention_days: int | None = None,
    retention_override: RetentionOverride | None = None,
    anchors: Anchors | None = None,
) -> VerifyReport:
    """Write the runs' records to ``out``; returns their verification (against the
    signed checkpoints too, with ``anchors``, whose proofs a JSONL export carries). The
    HTML report shows each run's reconcile findings, and the retention override in
    effect, if the retention configured needs one."""
    if not workflow_ids:
        raise LookupError("no audited runs match; check the workflow id, --process or --since")
    report = _verify(store, workflow_ids, anchors)
    if not report.records:
        raise LookupError(f"no audit records for {', '.join(workflow_ids)}")
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        export_jsonl(
            _records_of(store, workflow_ids), out, anchors.proofs(workflow_ids) if anchors else ()
        )
        return report
    records: list[AuditRecord] = list(_records_of(store, workflow_ids))
    processes = sorted({r.process for r in records})
    title = (
        f"Audit report: {workflow_ids[0]}"
        if len(workflow_ids) == 1
        else f"Audit report: {len(workflow_ids)} runs of {', '.join(processes)}"
    )
    export_html(
        records,
        report,
        out,
        title=title,
        mermaid=mermaid_for(processes[0]) if len(processes) == 1 else None,
        min_retention_days=min_retention_days,
        retention_override=retention_override,
        reconciliations={w: store.records(findings_chain(w)) for w in workflow_ids},
    )
    return report


def _verify(store: AuditStore, workflow_ids: list[str], anchors: Anchors | None) -> VerifyReport:
    """The runs' verification, one run at a time: only the problems are kept."""
    if anchors is not None:
        return anchors.verify_each(store, workflow_ids)
    chains = records = 0
    problems: list[Problem] = []
    for workflow_id in workflow_ids:
        report = store.verify(workflow_id)
        chains += report.chains
        records += report.records
        problems += report.problems
    return summarise(chains, records, problems)


def _records_of(store: AuditStore, workflow_ids: list[str]) -> Iterator[AuditRecord]:
    """The runs' records in order, one run in memory at a time: an export of a period
    streams, whatever the number of runs."""
    for workflow_id in workflow_ids:
        yield from store.records(workflow_id)


def describe(report: VerifyReport) -> str:
    if report.ok:
        return f"chain ok: {report.chains} run(s), {report.records} records verified"
    lines = [f"CHAIN BROKEN: {len(report.problems)} problem(s) in {report.chains} run(s)"]
    lines += [
        f"  {p.workflow_id} seq {p.seq} ({p.event_id}): {p.kind}: {p.detail}"
        for p in report.problems
    ]
    return "\n".join(lines)
