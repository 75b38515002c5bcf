"""Continue-as-new on the time-skipping server: a run carries its whole state
(open gates with their SLA clocks, news not yet taken, audit numbering) into
a fresh history, sealed, and nobody else can hand a run a state of their own.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, decide, deliver, run_status, send_event, start_run
from baton.config import ContinueAsNew, load_run_config
from baton.gates import Decision
from baton.graph import Await, Back, Gate, Graph, Step, Wait
from baton.outside import ExternalEvent
from baton.plugin import BatonPlugin
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
from tests.helpers import (
    STARTED,
    WORKER_CONFIG,
    continued_as_new,
    eventually,
    executions,
    settled,
)
from worker import build_worker

CYCLES = 3


class Account(RunInput):
    account: str


class Looked(BaseModel):
    account: str


@activity.defn
async def look_at(account: Looked) -> Looked:
    return account


def another_cycle(run: RunView) -> bool:
    return run.visits("look") < CYCLES


CYCLE = Graph(
    name="account_cycle",
    input=Account,
    nodes=(
        Step("look", activity=look_at, inputs={"account": "input.account"}),
        Gate("approve", role="reviewer", sla=timedelta(days=2), escalate_to=("supervisor",)),
        Await("reply", event="replied", senders=("receiving",), wait=timedelta(days=14)),
        Wait("next_review", wait=timedelta(days=30), fresh_history=True),
        Back("again", to="look", when=another_cycle, max_visits=CYCLES),
    ),
)


@workflow.defn(name="account_cycle", sandboxed=False)
class AccountCycle(GraphWorkflow):
    graph = CYCLE

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="carries_a_forged_state", sandboxed=False)
class ForgedCarry:
    """An operator's own workflow: it continues as new into a Baton process
    with whatever state it likes, on Baton's task queue."""

    @workflow.run
    async def run(self, carried: dict[str, Any], baton_queue: str) -> None:
        workflow.continue_as_new(carried, workflow="account_cycle", task_queue=baton_queue)


def worker(client: Client, queue: str) -> Any:
    return build_worker(
        client,
        task_queue=queue,
        extra_workflows=[AccountCycle],
        extra_activities=[look_at],
        run_config=WORKER_CONFIG,
    )


async def carried_in_by_another_workflow(
    client: Client, carried: dict[str, Any], workflow_id: str, baton_queue: str
) -> None:
    """Run ``ForgedCarry`` on a worker of its own, as an operator could, and
    wait for the Baton run it continued into; its failure is raised."""
    own_queue = f"{baton_queue}-own"
    async with Worker(client, task_queue=own_queue, workflows=[ForgedCarry]):
        handle = await client.start_workflow(
            ForgedCarry.run,
            args=[carried, baton_queue],
            id=workflow_id,
            task_queue=own_queue,
        )
        STARTED.append(handle)
        await handle.result()


async def start(client: Client, queue: str, account: str) -> WorkflowHandle[Any, RunResult]:
    handle = await start_run(
        client,
        AccountCycle,
        Account(account=account, requested_by="carl"),
        task_queue=queue,
        workflow_id=f"cycle-{account}-{queue}",
    )
    STARTED.append(handle)
    return handle


async def at_gate(client: Client, workflow_id: str) -> Any:
    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: any(g.gate == "approve" and g.decision is None for g in s.gates),
    )


async def at_wait(client: Client, workflow_id: str, execution: int) -> Any:
    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: s.execution == execution and "next_review" in s.current,
    )


def replied(account: str) -> ExternalEvent:
    return ExternalEvent(event="replied", user="warehouse", key=account, data={"at": "inbox"})


async def test_a_run_that_continued_as_new_three_times_answers_keeps_its_chain_and_replays(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(client, task_queue):
        handle = await start(client, task_queue, "acme")
        for cycle in range(1, CYCLES + 1):
            await at_gate(client, handle.id)
            approval = Decision(gate="approve", user="rita", outcome="approve")
            await decide(client, handle.id, approval)
            await send_event(client, handle.id, replied("acme"))
            # The Wait asks for a fresh history: it goes on waiting in the next one.
            await continued_as_new(client, handle.id, times=cycle)
            status = await at_wait(client, handle.id, cycle + 1)
            assert status.workflow_id == handle.id and status.requested_by == "carl"
            await time_skipping_env.sleep(timedelta(days=31))
        result = await handle.result()
        final = await run_status(client, handle.id)
    assert result.outcome == "completed"
    assert result.path[-5:] == ["look", "approve", "reply", "next_review", "again"]
    assert final.execution == CYCLES + 1 and final.state == "completed"
    # Each cycle's decision and news were its own: no nonce or event taken twice.
    assert [e.taken_by for e in final.events] == [f"reply#{n}" for n in range(1, CYCLES + 1)]

    histories = await executions(client, handle.id)
    assert len(histories) == CYCLES + 1
    for history in histories[:-1]:
        last = history.events[-1].event_type
        assert last == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW

    # One audit chain for the run, whole, across its four histories.
    store = open_store(AuditSettings.from_env().url)
    report = store.verify(handle.id)
    assert report.ok, report.problems
    types = [r.event_type for r in store.records(handle.id)]
    assert types.count("run.started") == 1 and types.count("run.ended") == 1
    assert types.count("run.carried") == types.count("run.resumed") == CYCLES
    assert types.count("run.continued") == CYCLES
    assert types.count("gate.decided") == CYCLES

    # Every execution replays on its own against the process as it is.
    replayer = Replayer(
        workflows=[],
        plugins=[BatonPlugin([AccountCycle], data_converter=client.data_converter)],
    )
    for history in histories:
        await replayer.replay_workflow(history)


async def test_a_gate_flooded_with_refused_acts_carries_over_with_its_sla_clock(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    WORKER_CONFIG.config = load_run_config().model_copy(
        update={"continue_as_new": ContinueAsNew(after_updates=4)}
    )
    async with worker(client, task_queue):
        handle = await start(client, task_queue, "flood")
        opened = await at_gate(client, handle.id)
        gate = next(g for g in opened.gates if g.gate == "approve")
        # Unsigned decisions: each refused, each an update Temporal counts. The
        # fourth takes this history to its bound; the next two go to the next one.
        unsigned = Decision(gate="approve", user="rita", outcome="approve")
        for sent in range(6):
            if sent == 4:
                await continued_as_new(client, handle.id)
            with pytest.raises(DecisionRefused, match="not signed"):
                await deliver(client, handle.id, unsigned)
        carried = await run_status(client, handle.id)
        assert carried.execution == 2
        same = next(g for g in carried.gates if g.gate == "approve")
        assert (same.round, same.opened_at, same.due_at) == (
            gate.round,
            gate.opened_at,
            gate.due_at,
        )
        assert len(carried.refusals) == 6, "refusals from both histories are kept"
        # The SLA clock kept running across: past the due time, the supervisor's.
        await time_skipping_env.sleep(timedelta(days=2, hours=1))
        escalated = await eventually(
            lambda: run_status(client, handle.id),
            lambda s: any(g.gate == "approve" and "supervisor" in g.roles for g in s.gates),
        )
        assert escalated.execution >= 2
        await decide(
            client, handle.id, Decision(gate="approve", user="sam", outcome="reject", comment="no")
        )
        result = await handle.result()
    assert result.outcome == "rejected"


async def test_a_forged_or_moved_carried_state_is_refused(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with worker(client, task_queue):
        genuine = await start(client, task_queue, "genuine")
        await at_gate(client, genuine.id)
        await decide(client, genuine.id, Decision(gate="approve", user="rita", outcome="approve"))
        await send_event(client, genuine.id, replied("genuine"))
        await continued_as_new(client, genuine.id)
        first = (await executions(client, genuine.id))[0]
        moved_on = first.events[-1].workflow_execution_continued_as_new_event_attributes
        [sealed] = await client.data_converter.decode(moved_on.input.payloads, [dict])

        # The same sealed state, continued into from another run.
        with pytest.raises(WorkflowFailureError) as refused:
            await carried_in_by_another_workflow(client, sealed, f"moved-{task_queue}", task_queue)
        assert "was sealed for run " + genuine.id in str(refused.value.cause)

        # The state rewritten for this run, its gate decided by someone else: the seal
        # no longer covers it.
        forged = dict(sealed, workflow_id=f"forged-{task_queue}")
        forged["state"]["gates"]["approve"]["decision"]["user"] = "mallory"
        with pytest.raises(WorkflowFailureError) as refused:
            await carried_in_by_another_workflow(client, forged, f"forged-{task_queue}", task_queue)
        assert (await settled(client, f"forged-{task_queue}")).state == "failed"
        forged_cause = str(refused.value.cause)

        # Malformed: a carried claim with fields of its own and none of a state.
        malformed = {"carried": True, "workflow_id": "x", "approved": True}
        with pytest.raises(WorkflowFailureError) as refused:
            await carried_in_by_another_workflow(
                client, malformed, f"malformed-{task_queue}", task_queue
            )
        assert "it does not fit" in str(refused.value.cause)
    assert "no Baton worker sealed it" in forged_cause
    store = open_store(AuditSettings.from_env().url)
    refusals = [r for r in store.records(f"forged-{task_queue}") if r.event_type == "run.refused"]
    assert len(refusals) == 1 and "cannot be taken over" in refusals[0].data["reason"]
