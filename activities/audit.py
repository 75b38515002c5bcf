"""`audit_flush`: where a run's workflow-side audit events leave the sandbox."""

from __future__ import annotations

from temporalio import activity

from baton.audit.sink import AuditSink
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
