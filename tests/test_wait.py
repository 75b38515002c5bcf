"""Wait on the time-skipping server: a durable timer for a while or until a
date the run names."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.testing import WorkflowEnvironment

from baton.client import start_run
from baton.graph import Graph, GraphError, Step, Wait
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
from tests.helpers import STARTED
from worker import build_worker


class Review(RunInput):
    account: str
    next_review: datetime


class Account(BaseModel):
    account: str


@activity.defn
async def look_at(account: Account) -> Account:
    return account


def next_review(run: RunView) -> datetime:
    request = run.input
    assert isinstance(request, Review)
    return request.next_review


def cooling_off(run: RunView) -> timedelta:
    return timedelta(days=run.config.threshold("cooling_off_days", 3))


REVIEW = Graph(
    name="account_review",
    input=Review,
    nodes=(
        Wait("cool_off", wait=cooling_off),
        Step("first_look", activity=look_at, inputs={"account": "input.account"}),
        Wait("until_review", until=next_review),
        Step("review", activity=look_at, inputs={"account": "input.account"}),
    ),
)


@workflow.defn(name="account_review", sandboxed=False)
class AccountReview(GraphWorkflow):
    graph = REVIEW

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


async def review(env: WorkflowEnvironment, queue: str, next_at: datetime) -> RunResult:
    async with build_worker(
        env.client, task_queue=queue, extra_workflows=[AccountReview], extra_activities=[look_at]
    ):
        handle = await start_run(
            env.client,
            AccountReview,
            Review(account="acme", next_review=next_at, requested_by="carl"),
            task_queue=queue,
            workflow_id=f"review-{queue}",
        )
        STARTED.append(handle)
        return await handle.result()


async def test_a_run_waits_for_a_while_then_until_the_date_it_names(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    started = await time_skipping_env.get_current_time()
    next_at = started + timedelta(days=30)
    result = await review(time_skipping_env, task_queue, next_at)
    assert result.outputs["cool_off"]["waited_seconds"] == pytest.approx(3 * 86400, abs=5)
    until = datetime.fromisoformat(result.outputs["until_review"]["until"])
    assert until == next_at
    assert result.outputs["until_review"]["waited_seconds"] == pytest.approx(27 * 86400, abs=5)
    assert result.path == ["cool_off", "first_look", "until_review", "review"]


async def test_a_date_already_past_waits_not_at_all(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    result = await review(time_skipping_env, task_queue, datetime(2020, 1, 1, tzinfo=UTC))
    assert result.outputs["until_review"]["waited_seconds"] == 0


def test_a_wait_needs_a_duration_or_a_date() -> None:
    with pytest.raises(GraphError, match=r"give wait= \(a duration\) or until= \(a date\)"):
        Graph(name="bad_wait", input=Review, nodes=(Wait("nothing"),))
