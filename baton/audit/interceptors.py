"""Interceptors that record every run without process authors writing audit code.

- Activities (worker side, outside the sandbox): each attempt of each
  activity, local ones included, with its input, output or error, attempt
  number and timing, written straight to the store under the id
  ``<workflow>/<run>/a/<activity id>/<attempt>``: a retried attempt is a new
  record, a re-sent one is the same record.
- Workflows (inside the sandbox): the run's start and end (completed,
  failed, cancelled), and each execution it continued as new into
  (`run.continued`: its chain goes on); the runner adds node, routing and
  gate events to the same trail; all of them leave through the
  `audit_flush` local activity.
"""

from __future__ import annotations

import asyncio
import time
from datetime import UTC, datetime
from typing import Any

from temporalio import activity, workflow
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    ExecuteWorkflowInput,
    Interceptor,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from baton.audit.events import Actor, AuditEvent, jsonable
from baton.audit.sink import AuditSink
from baton.audit.trail import FLUSH_ACTIVITY, Trail


class AuditInterceptor(Interceptor):
    """Part of every Baton worker and replayer: its workflow half issues the
    `audit_flush` local activities, so a worker without it would replay runs
    differently. Without a sink (audit off) the activity half records nothing
    and the flushes drop their events."""

    def __init__(self, sink: AuditSink | None) -> None:
        self.sink = sink

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return next if self.sink is None else _AuditedActivity(next, self.sink)

    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _AuditedWorkflow


class _AuditedActivity(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, sink: AuditSink) -> None:
        super().__init__(next)
        self._sink = sink

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        info = activity.info()
        if info.activity_type == FLUSH_ACTIVITY:
            return await super().execute_activity(input)
        started_at = datetime.now(UTC)
        started = time.monotonic()
        attempt_id = (
            f"{info.workflow_id}/{info.workflow_run_id}/a/{info.activity_id}/{info.attempt}"
        )

        def event(event_type: str, event_id: str, **data: Any) -> AuditEvent:
            return AuditEvent(
                event_id=event_id,
                workflow_id=info.workflow_id or "",
                run_id=info.workflow_run_id or "",
                process=info.workflow_type or "",
                event_type=event_type,
                occurred_at=started_at,
                node=info.activity_id.split("#")[0],
                actor=Actor(type="service", id=info.activity_type),
                data={
                    "activity_type": info.activity_type,
                    "activity_id": info.activity_id,
                    "attempt": info.attempt,
                    "local": info.is_local,
                    **data,
                },
            )

        # Not awaited: the start goes out with the writer's next batch. An attempt lost
        # with its worker then leaves its start in the trail without an end.
        self._sink.submit([event("activity.started", f"{attempt_id}/start")])
        error: BaseException | None = None
        result: Any = None
        try:
            result = await super().execute_activity(input)
            return result
        except BaseException as err:
            error = err
            raise
        finally:
            ended = event(
                "activity.attempt",
                attempt_id,
                duration_ms=round((time.monotonic() - started) * 1000, 3),
                input=jsonable(list(input.args)),
                output=None if error is not None else jsonable(result),
                error=None if error is None else f"{type(error).__name__}: {error}",
            )
            await self._sink.write_async([ended])


class _AuditedWorkflow(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        trail = getattr(workflow.instance(), "trail", None)
        if not isinstance(trail, Trail):
            return await super().execute_workflow(input)
        request = input.args[0] if input.args else None
        # As claimed: the runner records whether the requester's signature
        # proves it (run.admitted) or not (run.refused).
        claimed = request.get("requested_by") if isinstance(request, dict) else None
        info = workflow.info()
        if info.continued_run_id:
            # The state it claims to carry is the runner's to prove (run.resumed or
            # run.refused); it is not copied here again.
            trail.record(
                "run.continued",
                continued_from=info.continued_run_id,
                task_queue=info.task_queue,
                graph_digest=_graph_digest(workflow.instance()),
            )
        else:
            trail.record(
                "run.started",
                actor=Actor(type="unproven", id=str(claimed or "unknown"), role="requester"),
                input=request,
                task_queue=info.task_queue,
                graph_digest=_graph_digest(workflow.instance()),
                attempt=info.attempt,
                # A Sub node's child: the trail names the run that started it.
                **({"parent_workflow_id": info.parent.workflow_id} if info.parent else {}),
            )
        shipping = asyncio.create_task(trail.ship_until_closed())

        async def shipped() -> None:
            trail.close()
            await shipping

        # No `finally`: when a cached run is evicted its coroutine is closed,
        # and awaiting there would be an error; its history is complete anyway.
        try:
            result = await super().execute_workflow(input)
        except workflow.ContinueAsNewError:
            # Not an end: the runner recorded run.carried, the next execution goes on.
            await shipped()
            raise
        except asyncio.CancelledError:
            trail.record("run.ended", outcome="cancelled")
            await shipped()
            raise
        except Exception as err:
            trail.record("run.ended", outcome="failed", error=str(err))
            await shipped()
            raise
        trail.record("run.ended", outcome=getattr(result, "outcome", "completed"))
        await shipped()
        return result


def _graph_digest(instance: object) -> str | None:
    graph = getattr(instance, "graph", None)
    digest = getattr(graph, "digest", None)
    return digest() if callable(digest) else None
