"""Map on the time-skipping server: one activity per item, at most the
declared number at a time, results in the list's order, and an item that
fails for good handled as declared."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment

from baton.client import start_run
from baton.graph import Graph, GraphError, Map, Step
from baton.runner import GraphWorkflow, RunInput, RunResult
from tests.helpers import STARTED
from worker import build_worker


class Systems(RunInput):
    hire: str
    systems: list[str]


class Provision(BaseModel):
    hire: str
    system: str


class Provisioned(BaseModel):
    account: str


class InFlight:
    """How many provisioning activities run at once, and the most seen."""

    now = 0
    most = 0


@activity.defn
async def provision(request: Provision) -> Provisioned:
    InFlight.now += 1
    InFlight.most = max(InFlight.most, InFlight.now)
    try:
        # Long enough for the worker to start every item it is allowed to.
        await asyncio.sleep(0.2 if request.system == "laptop" else 0.05)
        if request.system.startswith("broken"):
            raise ApplicationError(f"{request.system} is down", non_retryable=True)
        return Provisioned(account=f"{request.hire}@{request.system}")
    finally:
        InFlight.now -= 1


def onboarding(name: str, on_item_failure: Any) -> Graph:
    return Graph(
        name=name,
        input=Systems,
        nodes=(
            Map(
                "accounts",
                activity=provision,
                inputs={"system": "input.systems", "hire": "input.hire"},
                each="system",
                concurrency=2,
                on_item_failure=on_item_failure,
            ),
        ),
    )


@workflow.defn(name="provision_all", sandboxed=False)
class ProvisionAll(GraphWorkflow):
    graph = onboarding("provision_all", "continue")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="provision_or_fail", sandboxed=False)
class ProvisionOrFail(GraphWorkflow):
    graph = onboarding("provision_or_fail", "fail")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


async def run_map(
    env: WorkflowEnvironment, queue: str, cls: type[GraphWorkflow], systems: list[str]
) -> RunResult:
    async with build_worker(
        env.client, task_queue=queue, extra_workflows=[cls], extra_activities=[provision]
    ):
        handle = await start_run(
            env.client,
            cls,
            Systems(hire="ada", systems=systems, requested_by="carl"),
            task_queue=queue,
            workflow_id=f"{cls.graph.name}-{queue}",
        )
        STARTED.append(handle)
        return await handle.result()


async def test_items_run_a_bounded_number_at_a_time_and_come_back_in_order(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    InFlight.most = 0
    # The laptop, first, finishes last.
    systems = ["laptop", "email", "broken-badge", "hris", "payroll"]
    result = await run_map(time_skipping_env, task_queue, ProvisionAll, systems)
    output = result.outputs["accounts"]
    assert output["results"] == [
        {"account": "ada@laptop"},
        {"account": "ada@email"},
        None,
        {"account": "ada@hris"},
        {"account": "ada@payroll"},
    ]
    assert output["failures"] == [{"index": 2, "error": "broken-badge is down"}]
    assert InFlight.most == 2


async def test_an_item_that_fails_for_good_fails_the_node_when_so_declared(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await run_map(time_skipping_env, task_queue, ProvisionOrFail, ["email", "broken-hris"])
    assert "node 'accounts' failed at item 1: broken-hris is down" in str(failure.value.cause)


def test_a_map_must_name_the_list_it_maps_over() -> None:
    with pytest.raises(GraphError, match="each='systems' must name one of its inputs"):
        Graph(
            name="bad_map",
            input=Systems,
            nodes=(
                Step(
                    "first",
                    activity=provision,
                    inputs={"system": "input.hire", "hire": "input.hire"},
                ),
                Map("all", activity=provision, inputs={"system": "input.systems"}, each="systems"),
            ),
        )
