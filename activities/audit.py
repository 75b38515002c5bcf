"""`audit_flush`: where a run's workflow-side audit events leave the sandbox;
`reconcile_trail`: the scheduled comparison of trails with Temporal's history."""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

from temporalio import activity

from baton.audit.reconcile import (
    RECONCILE_ACTIVITY,
    ReconcileRequest,
    ReconcileSummary,
    finding_events,
    reconcile,
)
from baton.audit.sink import AuditSettings, AuditSink
from baton.audit.store import open_store
from baton.audit.trail import FLUSH_ACTIVITY, AuditBatch

logger = logging.getLogger(__name__)


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
    alert (a warning in the worker's log, where alerting watches) and a finding
    recorded in the trail's own findings chain."""
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
    differing = [r for r in results if r.differences]
    for result in differing:
        logger.warning(
            "audit trail differs from Temporal's history for %s: %s",
            result.workflow_id,
            "; ".join(result.differences),
        )
    info = activity.info()
    findings = finding_events(differing, pass_id=info.workflow_run_id or "", at=now)
    if findings:
        store.append(findings, retention_days=settings.retention_days)
    return ReconcileSummary(runs=len(results), differing=[r.workflow_id for r in differing])
