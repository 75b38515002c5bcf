"""A gate's deciders taken from the run's data (route=), kept apart from
an earlier gate's (not_by=), and never a service: on the time-skipping
server."""

from __future__ import annotations

from datetime import timedelta
from decimal import Decimal
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, decide, run_status, start_run
from baton.gates import Decision
from baton.graph import Approvers, Gate, Graph, GraphError, Step, hours
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
from tests.helpers import STARTED, eventually, settled
from worker import build_worker


class Expense(RunInput):
    amount: Decimal


class Amount(BaseModel):
    amount: Decimal


@activity.defn
async def book_expense(expense: Amount) -> Amount:
    return expense


def by_amount(run: RunView) -> Approvers:
    """Above 1,000 a reviewer and a controller; up to it, rita alone."""
    amount = Decimal(run.output("book")["amount"])
    if amount > 1000:
        return Approvers(roles=["reviewer", "controller"], rule="above 1,000: two roles")
    return Approvers(roles=["reviewer"], assignees=["rita"], rule="up to 1,000: rita")


EXPENSES = Graph(
    name="expense",
    input=Expense,
    nodes=(
        Step("book", activity=book_expense, inputs={"amount": "input.amount"}),
        Gate("approve", route=by_amount, sla=hours(4), remind_at=None, escalate_to=("supervisor",)),
        Gate("release", role="reviewer", not_by=("approve",)),
    ),
)


@workflow.defn(name="expense", sandboxed=False)
class ExpenseRun(GraphWorkflow):
    graph = EXPENSES

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


def act(gate: str, user: str) -> Decision:
    return Decision(gate=gate, user=user, outcome="approve", comment="ok")


async def refusal(client: Client, workflow_id: str, decision: Decision) -> str:
    with pytest.raises(DecisionRefused) as refused:
        await decide(client, workflow_id, decision)
    return refused.value.reason


async def start(client: Client, queue: str, amount: str) -> Any:
    handle = await start_run(
        client,
        ExpenseRun,
        Expense(amount=Decimal(amount), requested_by="carl"),
        task_queue=queue,
        workflow_id=f"expense-{amount}-{queue}",
    )
    STARTED.append(handle)
    await settled(client, handle.id)
    return handle


def worker(env: WorkflowEnvironment, queue: str) -> Any:
    return build_worker(
        env.client, task_queue=queue, extra_workflows=[ExpenseRun], extra_activities=[book_expense]
    )


async def test_the_route_assigns_the_gate_and_a_later_gate_needs_someone_else(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue):
        handle = await start(client, task_queue, "400")
        status = await run_status(client, handle.id)
        [gate] = status.gates
        assert (gate.roles, gate.assignees, gate.approvals_needed) == (["reviewer"], ["rita"], 1)
        assert gate.shown["approvers"]["rule"] == "up to 1,000: rita"
        assert "assigned to rita" in await refusal(client, handle.id, act("approve", "sam"))
        assert "is a service" in await refusal(client, handle.id, act("approve", "robot"))
        await decide(client, handle.id, act("approve", "rita"))
        await eventually(lambda: run_status(client, handle.id), lambda s: "release" in s.current)
        refused = await refusal(client, handle.id, act("release", "rita"))
        assert "decided an earlier gate of this run" in refused
        await decide(client, handle.id, act("release", "sam"))
        result = await handle.result()
    assert result.outcome == "completed"
    [opened] = [
        r
        for r in open_store(AuditSettings.from_env().url).records(handle.id)
        if r.event_type == "gate.opened" and r.node == "approve"
    ]
    assert opened.data["assignees"] == ["rita"]


async def test_a_large_amount_routes_to_two_roles(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue):
        handle = await start(client, task_queue, "5000")
        [gate] = (await run_status(client, handle.id)).gates
        assert (gate.roles, gate.assignees, gate.approvals_needed) == (
            ["reviewer", "controller"],
            [],
            2,
        )
        first = await decide(client, handle.id, act("approve", "rita"))
        assert first.awaiting == 1
        second = await decide(client, handle.id, act("approve", "vera"))
    assert second.approved_by == ["rita", "vera"]


async def test_an_escalated_gate_is_open_to_the_role_it_escalated_to(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue):
        handle = await start(client, task_queue, "300")
        await time_skipping_env.sleep(timedelta(hours=5))
        await eventually(
            lambda: run_status(client, handle.id),
            lambda s: bool(s.gates and s.gates[0].escalations),
        )
        # The gate was rita's alone until its SLA ran out (sam was refused above).
        accepted = await decide(client, handle.id, act("approve", "sam"))
    assert (accepted.user, accepted.outcome) == ("sam", "approve")


def test_a_gate_takes_a_role_or_a_route_not_both() -> None:
    with pytest.raises(GraphError, match="give role= or route=, not both"):
        Graph(
            name="both",
            input=Expense,
            nodes=(Gate("approve", role="reviewer", route=by_amount),),
        )
    with pytest.raises(GraphError, match="not_by names 'later'"):
        Graph(
            name="apart",
            input=Expense,
            nodes=(Gate("first", role="reviewer", not_by=("later",)), Gate("later", role="x")),
        )
