"""`audit_flush`: where a run's workflow-side audit events leave the sandbox;
`reconcile_trail`: the scheduled comparison of trails with Temporal's history."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from temporalio import activity

from baton.audit.reconcile import (
    RECONCILE_ACTIVITY,
    ReconcileRequest,
    ReconcileSummary,
    reconcile,
    record_findings,
)
from baton.audit.sink import AuditSettings, AuditSink
from baton.audit.store import open_store
from baton.audit.trail import FLUSH_ACTIVITY, AuditBatch


class AuditFlush:
    """Bound to the worker's sink; without one (audit off) events are dropped,
    which only benchmarks of the audit's own cost should do."""

    def __init__(self, sink: AuditSink | None) -> None:
        self._sink = sink

    @activity.defn(name=FLUSH_ACTIVITY)
    async def flush(self, batch: AuditBatch) -> int:
        if self._sink is None:
            return 0
        return await self._sink.write_async(batch.events)


@activity.defn(name=RECONCILE_ACTIVITY)
async def reconcile_trail(request: ReconcileRequest) -> ReconcileSummary:
    """One pass over the runs started in the window. Each run that differs is an
    alert (an error in the worker's log, where alerting watches, and a span event),
    and each run's result is recorded in its findings chain (see record_findings)."""
    from workflows import PROCESSES

    settings = AuditSettings.from_env()
    store = open_store(settings.url)
    now = datetime.now(UTC)
    results = await reconcile(
        activity.client(),
        store,
        since=now - timedelta(days=request.window_days),
        processes=list(PROCESSES),
    )
    record_findings(
        store,
        results,
        pass_id=activity.info().workflow_run_id or "",
        at=now,
        retention_days=settings.retention_days,
        anchors=settings.anchors(write=True),
    )
    differing = [r for r in results if r.differences]
    return ReconcileSummary(runs=len(results), differing=[r.workflow_id for r in differing])
