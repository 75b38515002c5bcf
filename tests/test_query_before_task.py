"""A run replays after a query reached a worker that did not hold it while
events waited for their workflow task.

The server sends such a query straight to a worker with the history so far;
the SDK applies the events after the last workflow task to answer it, at that
task's time, and the next task's commands come from that state. A replay
applies the same events at the next task's time instead. So anything that
must replay the same (here: what a gate shows, which its deciders sign) must
not carry readings of workflow.now() (runner.CLOCKLESS_GATE_VIEW). Before,
a decision signed over the view such a worker showed was refused on replay:
"Nondeterminism error: Update machine does not handle this event".
"""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
    Worker,
)

from activities.config import snapshot_run_config
from baton.client import decide_in_turn, run_status
from baton.gates import Decision
from baton.runner import RunResult
from tests.conftest import DATA_CONVERTER, SAMPLES, WorkerProcess
from tests.helpers import WORKER_CONFIG, eventually, start_intake
from worker import ACTIVITIES, build_replayer, build_worker

CLOCK_FIELDS = {"started_at", "finished_at"}
FOUR_EYES = [
    Decision(gate="review", user="rita", outcome="approve"),
    Decision(gate="review", user="vera", outcome="approve"),
]


class _HoldAsk(ActivityInboundInterceptor):
    def __init__(self, next: ActivityInboundInterceptor, hold: HoldAsk) -> None:
        super().__init__(next)
        self.hold = hold

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        if activity.info().activity_type == "ask":
            self.hold.started.set()
            while not self.hold.release.is_set():
                activity.heartbeat()
                await asyncio.sleep(0.2)
        return await super().execute_activity(input)


class HoldAsk(Interceptor):
    """Model calls wait (heartbeating) until ``release`` is set."""

    def __init__(self) -> None:
        self.started = threading.Event()
        self.release = threading.Event()

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _HoldAsk(next, self)


async def model_answered(handle: WorkflowHandle[Any, RunResult]) -> bool:
    """Whether the run's `ask` activity has completed."""
    asks: set[int] = set()
    async for event in handle.fetch_history_events():
        scheduled = event.activity_task_scheduled_event_attributes
        if scheduled.activity_type.name == "ask":
            asks.add(event.event_id)
        if event.activity_task_completed_event_attributes.scheduled_event_id in asks:
            return True
    return False


def workflow_worker(client: Client, task_queue: str) -> Worker:
    """The production worker's workflow side (and its local activities) only."""
    return build_worker(
        client, task_queue=task_queue, run_config=WORKER_CONFIG, remote_activities=False
    )


def activity_worker(client: Client, task_queue: str, hold: HoldAsk) -> Worker:
    """The remote activities, on a worker of their own."""
    return Worker(
        client,
        task_queue=task_queue,
        # the configuration snapshot is a local activity: the workflow worker's
        activities=[a for a in ACTIVITIES if a is not snapshot_run_config],
        activity_executor=ThreadPoolExecutor(max_workers=4),
        interceptors=[hold],
    )


async def test_run_replays_after_a_query_answered_ahead_of_its_task(
    dev_client: Client, task_queue: str, worker_env: dict[str, str]
) -> None:
    hold = HoldAsk()
    async with activity_worker(dev_client, task_queue, hold):
        # A worker takes the run as far as the model call, then dies.
        crashed = WorkerProcess(worker_env | {"BATON_TEST_WORKFLOWS_ONLY": "1"})
        try:
            handle = await start_intake(
                dev_client, task_queue, SAMPLES / "invoice-brightline-bl-88317.txt"
            )
            await asyncio.to_thread(hold.started.wait, 60)
        finally:
            crashed.kill()
        try:
            # No workflow task is pending: the query goes straight to the task
            # queue (after the dead worker's own) and waits there for a
            # worker, while the model call completes.
            query = asyncio.create_task(run_status(dev_client, handle.id))
            await asyncio.sleep(2)
        finally:
            hold.release.set()
        await eventually(lambda: model_answered(handle), bool)
        async with workflow_worker(dev_client, task_queue):
            seen = await query
            extract = next(n for n in seen.nodes if n.node == "extract")
            assert extract.status == "finished", (
                "the query was answered without the model's answer: the SDK no longer "
                "applies events ahead of their workflow task, and this test no longer "
                "exercises that case"
            )
            waiting = await eventually(
                lambda: run_status(dev_client, handle.id), lambda s: s.state == "waiting"
            )
            # What the deciders sign holds no clock readings (whether this
            # worker kept the state it built for the query or built it anew).
            (review,) = waiting.gates
            attempts = review.shown["subject"]["attempts"]
            assert attempts and not any(CLOCK_FIELDS & a.keys() for a in attempts)
            accepted = await decide_in_turn(dev_client, handle.id, FOUR_EYES)
            assert [d.user for d in accepted] == ["rita", "vera"]
            result = await handle.result()
    assert result.outcome == "completed"

    replay = await build_replayer(data_converter=DATA_CONVERTER).replay_workflow(
        await handle.fetch_history(), raise_on_replay_failure=False
    )
    assert replay.replay_failure is None
