"""Audit reports as the CLI and the demo produce them: pick runs from the
store, verify their chains, write JSONL or the HTML report."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from pathlib import Path
from typing import Literal

from baton.audit.events import AuditRecord
from baton.audit.export import export_html, export_jsonl
from baton.audit.store import AuditStore
from baton.audit.verify import VerifyReport, summarise

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
    return store.workflow_ids(process=process, since=since)


def write_report(
    store: AuditStore,
    workflow_ids: list[str],
    out: Path,
    *,
    fmt: Format,
    mermaid_for: Callable[[str], str | None] = lambda process: None,
    min_retention_days: int | None = None,
) -> VerifyReport:
    """Write the runs' records to ``out``; returns their verification."""
    if not workflow_ids:
        raise LookupError("no audited runs match; check the workflow id, --process or --since")
    records: list[AuditRecord] = [r for wid in workflow_ids for r in store.records(wid)]
    if not records:
        raise LookupError(f"no audit records for {', '.join(workflow_ids)}")
    reports = [store.verify(wid) for wid in workflow_ids]
    report = summarise(
        sum(r.chains for r in reports),
        sum(r.records for r in reports),
        [p for r in reports for p in r.problems],
    )
    out.parent.mkdir(parents=True, exist_ok=True)
    if fmt == "jsonl":
        export_jsonl(records, out)
        return report
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
    )
    return report


def describe(report: VerifyReport) -> str:
    if report.ok:
        return f"chain ok: {report.chains} run(s), {report.records} records verified"
    lines = [f"CHAIN BROKEN: {len(report.problems)} problem(s) in {report.chains} run(s)"]
    lines += [
        f"  {p.workflow_id} seq {p.seq} ({p.event_id}): {p.kind}: {p.detail}"
        for p in report.problems
    ]
    return "\n".join(lines)
