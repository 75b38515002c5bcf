"""The audit trail is exactly once: a worker SIGKILLed at several points
(after an audit flush was written but before Temporal heard of it, after a
model call, after the ERP write) across many runs neither loses nor
duplicates an event. The trail is compared with Temporal's own history."""

from __future__ import annotations

import asyncio
import uuid
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle

from baton.audit.events import is_workflow_side
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import build_input, decide_in_turn, run_status, start_run
from baton.gates import Decision
from baton.runner import RunResult
from tests.conftest import SAMPLES, WorkerProcess
from tests.helpers import eventually
from workflows.document_intake import DocumentIntake

DOCUMENTS = [
    "invoice-acme-2026-0142.txt",
    "invoice-missing-total.txt",
    "receipt-cafe-lumen.txt",
    "po-missing-number.txt",
    "po-northwind-7781.txt",
    "invoice-totals-mismatch.txt",
    "receipt-marlowe-books.txt",
    "invoice-brightline-bl-88317.txt",
]
# Each worker incarnation stops at one of these points and is SIGKILLed there.
KILL_POINTS = ["audit_flush", "ask", "enter_document"]
# vera only where a large amount needs a second approval (four-eyes)
APPROVALS = [
    Decision(gate="review", user="rita", outcome="approve"),
    Decision(gate="review", user="vera", outcome="approve"),
]


async def approve_when_waiting(client: Client, handle: WorkflowHandle[Any, RunResult]) -> None:
    while True:
        try:
            status = await run_status(client, handle.id)
        except Exception:  # no worker at this moment: it is being killed on purpose
            await asyncio.sleep(0.2)
            continue
        if status.state == "waiting":
            await decide_in_turn(client, handle.id, APPROVALS)
            return
        if status.state in ("completed", "rejected", "failed"):
            return
        await asyncio.sleep(0.1)


async def completed_activities(handle: WorkflowHandle[Any, RunResult]) -> Counter[tuple[str, int]]:
    """(activity id, attempt) of every activity completion in the history."""
    scheduled: dict[int, str] = {}
    started: dict[int, int] = {}
    completed: Counter[tuple[str, int]] = Counter()
    async for event in handle.fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            attrs = event.activity_task_started_event_attributes
            started[attrs.scheduled_event_id] = attrs.attempt
        elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            completed[(scheduled[scheduled_id], started[scheduled_id])] += 1
    return completed


async def test_trail_matches_history_after_kills_at_several_points(
    dev_client: Client, worker_env: dict[str, str], task_queue: str, tmp_path: Path
) -> None:
    handles: list[WorkflowHandle[Any, RunResult]] = []
    reviewers: list[asyncio.Task[None]] = []
    # A fresh wave of runs per kill point, so every point is surely reached
    # while other runs are at other points of their way.
    waves = [DOCUMENTS[i :: len(KILL_POINTS)] for i in range(len(KILL_POINTS))]
    for point, wave in zip(KILL_POINTS, waves, strict=True):
        for name in wave:
            request = build_input(DocumentIntake, [str(SAMPLES / name)], requested_by="clerk-1")
            handle = await start_run(
                dev_client,
                DocumentIntake,
                request,
                task_queue=task_queue,
                workflow_id=f"exactly-once-{uuid.uuid4().hex[:6]}-{Path(name).stem}",
            )
            handles.append(handle)
            reviewers.append(asyncio.create_task(approve_when_waiting(dev_client, handle)))
        hold = tmp_path / f"held-{point}"
        worker = WorkerProcess(
            worker_env | {"BATON_TEST_HOLD_AFTER": point, "BATON_TEST_HOLD_FILE": str(hold)}
        )

        async def held(hold: Path = hold) -> bool:
            return hold.exists()

        try:
            await eventually(held, bool, timeout=90)
        finally:
            worker.kill()
    last = WorkerProcess(worker_env)
    try:
        results = [await h.result() for h in handles]
        await asyncio.gather(*reviewers)
        statuses = [await run_status(dev_client, h.id) for h in handles]
    finally:
        last.kill()
    assert {r.outcome for r in results} == {"completed"}

    store = open_store(AuditSettings.from_env().url)
    for handle, status in zip(handles, statuses, strict=True):
        records = store.records(handle.id)
        assert store.verify(handle.id).ok

        # Workflow-side events, named by what they record: none twice, under its own
        # name or a second occurrence's (`#2`) after a replay; none lost (below).
        workflow_side = [r.event_id for r in records if is_workflow_side(r)]
        assert len(set(workflow_side)) == len(workflow_side), handle.id
        assert not [i for i in workflow_side if "#" in i], handle.id
        kinds = Counter((r.event_type, r.node) for r in records)
        assert kinds[("run.started", None)] == 1 and kinds[("run.ended", None)] == 1
        assert kinds[("config.snapshot", None)] == 1
        for node in status.nodes:
            expected = 1 if node.status == "finished" else 0
            assert kinds[("node.finished", node.node)] == expected, (handle.id, node.node)
            assert kinds[("node.skipped", node.node)] == (node.status == "skipped")
        decided = [g for g in status.gates if g.decision is not None]
        assert kinds[("gate.decided", "review")] == len(decided)

        # Activity attempts: each completion in history is recorded exactly once;
        # other recorded attempts of the same activity are earlier ones that were lost.
        recorded = Counter(
            (r.data["activity_id"], r.data["attempt"])
            for r in records
            if r.event_type == "activity.attempt" and not r.data["local"]
        )
        for (activity_id, attempt), count in (await completed_activities(handle)).items():
            assert count == 1
            assert recorded[(activity_id, attempt)] == 1, (handle.id, activity_id, attempt)
            earlier = [a for (aid, a) in recorded if aid == activity_id and a != attempt]
            assert all(a < attempt for a in earlier)
