"""Sub on the time-skipping server: a process runs another as a child with
its own history, gates and audit chain, linked both ways; a child start
that no parent run's Sub node sealed is refused."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowExecutionStatus, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import decide, run_status, start_run, stop_run
from baton.gates import Decision, StopRequest
from baton.graph import Gate, Graph, GraphError, Step, Sub
from baton.runner import GraphWorkflow, RunInput, RunResult, RunStatus
from tests.helpers import STARTED, eventually
from worker import build_worker


class Account(RunInput):
    account: str


class Noted(BaseModel):
    account: str


@activity.defn
async def note_account(account: Noted) -> Noted:
    return account


CHILD = Graph(
    name="account_check",
    input=Account,
    nodes=(
        Step("note", activity=note_account, inputs={"account": "input.account"}),
        Gate("approve", role="reviewer", subject="note"),
    ),
)


@workflow.defn(name="account_check", sandboxed=False)
class AccountCheck(GraphWorkflow):
    graph = CHILD

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


PARENT = Graph(
    name="account_batch",
    input=Account,
    stop_roles=("supervisor",),
    nodes=(
        Step("prepare", activity=note_account, inputs={"account": "input.account"}),
        Sub("check", process=AccountCheck, inputs={"account": "prepare.account"}),
    ),
)


@workflow.defn(name="account_batch", sandboxed=False)
class AccountBatch(GraphWorkflow):
    graph = PARENT

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="starts_a_child_of_its_own", sandboxed=False)
class OwnParent:
    """An operator's own workflow that starts a Baton process as its child."""

    @workflow.run
    async def run(self, start: dict[str, Any], baton_queue: str) -> Any:
        return await workflow.execute_child_workflow(
            "account_check", start, id=start["workflow_id"], task_queue=baton_queue
        )


def worker(client: Client, queue: str) -> Any:
    return build_worker(
        client,
        task_queue=queue,
        extra_workflows=[AccountBatch, AccountCheck],
        extra_activities=[note_account],
    )


async def start_parent(client: Client, queue: str, account: str) -> Any:
    handle = await start_run(
        client,
        AccountBatch,
        Account(account=account, requested_by="carl"),
        task_queue=queue,
        workflow_id=f"batch-{account}-{queue}",
    )
    STARTED.append(handle)
    return handle


def child_id(parent_id: str) -> str:
    return f"{parent_id}--check-1"


def ended_with_the_test(client: Client, parent_id: str) -> None:
    """The child is terminated with its parent when the test ends: left to
    be cancelled by the parent's close, it would wait for a worker that is
    gone, and hold the test server's clock."""
    STARTED.append(client.get_workflow_handle(child_id(parent_id)))


async def child_at_gate(client: Client, parent_id: str) -> Any:
    async def child_status() -> RunStatus | None:
        try:
            return await run_status(client, child_id(parent_id))
        except LookupError:  # the parent has not started it yet
            return None

    ended_with_the_test(client, parent_id)
    return await eventually(
        child_status,
        lambda s: s is not None and any(g.gate == "approve" and not g.decision for g in s.gates),
    )


async def test_a_child_run_has_its_own_gate_and_trail_linked_to_its_parent(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(client, task_queue):
        parent = await start_parent(client, task_queue, "acme")
        child = await child_at_gate(client, parent.id)
        # The child runs for the parent's requester, who may not decide it.
        assert child.requested_by == "carl" and child.process == "account_check"
        await decide(
            client, child_id(parent.id), Decision(gate="approve", user="rita", outcome="approve")
        )
        result = await parent.result()
    assert result.outcome == "completed"
    check = result.outputs["check"]
    assert check["workflow_id"] == child_id(parent.id) and check["outcome"] == "completed"
    assert check["outputs"]["note"] == {"account": "acme"}
    assert check["outputs"]["approve"]["user"] == "rita"

    store = open_store(AuditSettings.from_env().url)
    assert store.verify(parent.id).ok and store.verify(child_id(parent.id)).ok
    parent_trail = {r.event_type: r for r in store.records(parent.id)}
    assert parent_trail["sub.started"].data["child_workflow_id"] == child_id(parent.id)
    assert parent_trail["sub.finished"].data["outcome"] == "completed"
    child_trail = {r.event_type: r for r in store.records(child_id(parent.id))}
    assert child_trail["run.started"].data["parent_workflow_id"] == parent.id
    admitted = child_trail["run.admitted"]
    assert admitted.actor is not None and admitted.actor.id == f"run:{parent.id}"
    assert admitted.data["requested_by"] == "carl"


async def test_stopping_the_parent_cancels_the_child_it_waits_for(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(client, task_queue):
        parent = await start_parent(client, task_queue, "halt")
        await child_at_gate(client, parent.id)
        await stop_run(client, parent.id, StopRequest(user="sam", reason="the batch was withdrawn"))
        result = await parent.result()
        child = client.get_workflow_handle(child_id(parent.id))
        described = await eventually(
            child.describe, lambda d: d.status != WorkflowExecutionStatus.RUNNING
        )
    assert result.outcome == "stopped"
    assert described.status == WorkflowExecutionStatus.CANCELED


async def test_a_child_start_no_parent_run_sealed_is_refused(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    own_queue = f"{task_queue}-own"
    async with (
        worker(client, task_queue),
        Worker(client, task_queue=own_queue, workflows=[OwnParent]),
    ):
        # A genuine sealed start, read from a parent's history.
        parent = await start_parent(client, task_queue, "genuine")
        await child_at_gate(client, parent.id)
        history = [e async for e in parent.fetch_history_events()]
        initiated = next(
            e.start_child_workflow_execution_initiated_event_attributes
            for e in history
            if e.event_type == EventType.EVENT_TYPE_START_CHILD_WORKFLOW_EXECUTION_INITIATED
        )
        [sealed] = await client.data_converter.decode(initiated.input.payloads, [dict])
        # It ends, so that its child's id is free to be started again.
        await decide(
            client, child_id(parent.id), Decision(gate="approve", user="rita", outcome="approve")
        )
        await parent.result()

        async def refusal(start: dict[str, Any], as_child: bool) -> str:
            if as_child:
                handle = await client.start_workflow(
                    OwnParent.run,
                    args=[start, task_queue],
                    id=f"own-{start['workflow_id']}",
                    task_queue=own_queue,
                )
            else:
                handle = await client.start_workflow(
                    "account_check", start, id=start["workflow_id"], task_queue=task_queue
                )
            STARTED.append(handle)
            with pytest.raises(WorkflowFailureError) as failed:
                await handle.result()
            cause = failed.value.cause
            while getattr(cause, "cause", None) is not None:
                cause = cause.cause
            return str(cause)

        # Started straight from a client, claiming to be a child.
        direct = dict(sealed, workflow_id=f"direct-{task_queue}")
        assert "no parent run started it" in await refusal(direct, as_child=False)
        # As a child of the operator's own workflow, its input changed under the seal.
        forged = dict(sealed, input={**sealed["input"], "account": "mallory"})
        forged["workflow_id"] = f"forged-{task_queue}"
        assert "no Baton worker sealed it" in await refusal(forged, as_child=True)
        # The genuine start, unchanged, under the operator's parent.
        moved = await refusal(sealed, as_child=True)
        assert f"sealed for run {sealed['workflow_id']} as a child of {parent.id}" in moved
    store = open_store(AuditSettings.from_env().url)
    refused = [r for r in store.records(f"direct-{task_queue}") if r.event_type == "run.refused"]
    assert len(refused) == 1 and "cannot be admitted" in refused[0].data["reason"]


def test_a_sub_names_a_process_and_gives_its_required_inputs() -> None:
    with pytest.raises(GraphError, match="must be a Baton process's workflow class"):
        Graph(name="bad", input=Account, nodes=(Sub("s", process=object),))
    with pytest.raises(GraphError, match=r"has no field\(s\) \['acount'\]"):
        Graph(
            name="bad",
            input=Account,
            nodes=(Sub("s", process=AccountCheck, inputs={"acount": "input.account"}),),
        )
    with pytest.raises(GraphError, match=r"required field\(s\) \['account'\]"):
        Graph(name="bad", input=Account, nodes=(Sub("s", process=AccountCheck),))
