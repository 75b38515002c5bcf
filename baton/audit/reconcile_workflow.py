"""The workflow a Temporal Schedule starts to reconcile the trail with history
(`baton audit reconcile --schedule`): one activity, retried, whose result says which
runs differ."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from baton.audit.reconcile import (
        RECONCILE_ACTIVITY,
        RECONCILE_WORKFLOW,
        ReconcileRequest,
        ReconcileSummary,
    )


@workflow.defn(name=RECONCILE_WORKFLOW)
class AuditReconcile:
    @workflow.run
    async def run(self, request: ReconcileRequest) -> ReconcileSummary:
        summary: ReconcileSummary = await workflow.execute_activity(
            RECONCILE_ACTIVITY,
            request,
            result_type=ReconcileSummary,
            # Reading every history of the window takes a while on a busy namespace.
            start_to_close_timeout=timedelta(minutes=30),
            retry_policy=RetryPolicy(maximum_attempts=5),
        )
        return summary
