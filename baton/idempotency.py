"""Idempotency keys that cannot collide across runs.

A key for a write to a system of record is

    <workflow id>/<first execution run id>/<node>#<visit>[/<business key>]

The workflow id alone is not enough: an id may be reused once its run has
closed, and a second run under it wrote under the first run's keys (the
register kept the first document and the second run reported it entered).
The *first* execution run id is the same for every run of one chain
(retries, continue-as-new, resets), so a resumed or retried step still finds
its earlier write, and differs for a new run under a reused id.

The run id is known in the workflow (``workflow.info()``), not in
``activity.info()``, so the workflow half of :class:`IdempotencyInterceptor`
puts it in a header of every activity it schedules, and the activity half
reads it for :func:`idempotency_key`. Register the interceptor on every
worker that runs Baton workflows or activities.
"""

from __future__ import annotations

from collections.abc import Mapping
from contextvars import ContextVar
from typing import Any

from temporalio import activity, workflow
from temporalio.api.common.v1 import Payload
from temporalio.converter import PayloadConverter
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    StartActivityInput,
    StartLocalActivityInput,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
    WorkflowOutboundInterceptor,
)

HEADER = "baton-run"

# The first execution run id of the workflow that scheduled the activity
# running in this context; None when its header is missing.
_first_run: ContextVar[str | None] = ContextVar("baton_first_run", default=None)


class IdempotencyInterceptor(Interceptor):
    """Carries the run's first execution run id from the workflow to its
    activities (local ones included) in the ``baton-run`` header."""

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _ActivityInbound(next)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _WorkflowInbound


class _WorkflowInbound(WorkflowInboundInterceptor):
    def init(self, outbound: WorkflowOutboundInterceptor) -> None:
        super().init(_WorkflowOutbound(outbound))


class _WorkflowOutbound(WorkflowOutboundInterceptor):
    def start_activity(self, input: StartActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = _with_run(input.headers)
        return super().start_activity(input)

    def start_local_activity(self, input: StartLocalActivityInput) -> workflow.ActivityHandle[Any]:
        input.headers = _with_run(input.headers)
        return super().start_local_activity(input)


def _with_run(headers: Mapping[str, Payload]) -> dict[str, Payload]:
    info = workflow.info()
    # The default converter, not the worker's: the header must read the same
    # whatever converter or codec a deployment configures.
    run = PayloadConverter.default.to_payloads([info.first_execution_run_id or info.run_id])[0]
    return {**headers, HEADER: run}


class _ActivityInbound(ActivityInboundInterceptor):
    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        header = input.headers.get(HEADER)
        run = None if header is None else PayloadConverter.default.from_payloads([header])[0]
        # A contextvar reaches the activity's thread too: the SDK runs a sync
        # activity in a copy of this context.
        token = _first_run.set(run if isinstance(run, str) and run else None)
        try:
            return await super().execute_activity(input)
        finally:
            _first_run.reset(token)


def idempotency_key(business_key: str = "") -> str:
    """The key for a write by the running activity: workflow id, the run's
    first execution run id, the activity id (``<node>#<visit>``, set by the
    runner) and ``business_key`` when the process declares one (to tell
    apart several writes of one step, such as one per invoice line).

    Without the header (an activity scheduled before the interceptor was
    deployed, or by a worker without it) it is the earlier
    ``<workflow id>/<activity id>`` form, so a run in flight across the
    upgrade still finds the writes it made before it."""
    info = activity.info()
    run = _first_run.get()
    if run is None:
        activity.logger.warning(
            "activity %s has no '%s' header: its idempotency key falls back to the "
            "workflow id, which a later run under the same id would share; register "
            "baton.idempotency.IdempotencyInterceptor on the worker",
            info.activity_id,
            HEADER,
        )
        base = f"{info.workflow_id}/{info.activity_id}"
    else:
        base = f"{info.workflow_id}/{run}/{info.activity_id}"
    return f"{base}/{business_key}" if business_key else base


def run_key_prefix() -> str:
    """What every key written by the running activity's run starts with:
    lets a lookup tell this run's own earlier writes from other runs'."""
    info = activity.info()
    run = _first_run.get()
    return f"{info.workflow_id}/{run}/" if run else f"{info.workflow_id}/"
