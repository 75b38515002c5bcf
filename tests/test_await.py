"""Await on the time-skipping server: news that arrives before the run
reaches its Await is kept and taken there; the wait runs out as declared;
an event from someone not entitled to send it changes nothing."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError, WorkflowUpdateFailedError
from temporalio.testing import WorkflowEnvironment

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, decide, run_status, send_event, start_run
from baton.gates import Decision
from baton.graph import Await, Gate, Graph, Step
from baton.keys import Signer
from baton.outside import ExternalEvent, ReceivedEvent
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
from tests.helpers import STARTED, eventually, settled
from worker import build_worker

WAIT = timedelta(days=2)


class Parcel(RunInput):
    tracking: str


class Noted(BaseModel):
    tracking: str


@activity.defn
async def note_parcel(parcel: Noted) -> Noted:
    return parcel


def tracking_number(run: RunView) -> str:
    return str(run.output("note")["tracking"])


def parcel_graph(name: str, on_timeout: Any = "continue") -> Graph:
    return Graph(
        name=name,
        input=Parcel,
        nodes=(
            Step("note", activity=note_parcel, inputs={"tracking": "input.tracking"}),
            # Holds the run before its Await, so news can arrive early.
            Gate("hold", role="reviewer"),
            Await(
                "arrival",
                event="delivered",
                senders=("receiving",),
                wait=WAIT,
                key=tracking_number,
                on_timeout=on_timeout,
            ),
            Step("after", activity=note_parcel, inputs={"tracking": "note.tracking"}),
        ),
    )


@workflow.defn(name="parcel", sandboxed=False)
class ParcelRun(GraphWorkflow):
    graph = parcel_graph("parcel")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="parcel_or_fail", sandboxed=False)
class ParcelOrFail(GraphWorkflow):
    graph = parcel_graph("parcel_or_fail", on_timeout="fail")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


async def start(client: Client, queue: str, cls: type[GraphWorkflow], tracking: str) -> Any:
    handle = await start_run(
        client,
        cls,
        Parcel(tracking=tracking, requested_by="carl"),
        task_queue=queue,
        workflow_id=f"{cls.graph.name}-{tracking}-{queue}",
    )
    STARTED.append(handle)
    await settled(client, handle.id)
    return handle


def delivered(key: str, user: str = "warehouse") -> ExternalEvent:
    return ExternalEvent(event="delivered", user=user, key=key, data={"dock": "3"})


async def refusal(client: Client, workflow_id: str, event: ExternalEvent) -> str:
    with pytest.raises(DecisionRefused) as refused:
        await send_event(client, workflow_id, event)
    return refused.value.reason


async def release_hold(client: Client, workflow_id: str) -> None:
    await decide(
        client, workflow_id, Decision(gate="hold", user="rita", outcome="approve", comment="go")
    )


async def test_news_that_arrives_before_the_await_is_taken_there(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client, task_queue=task_queue, extra_workflows=[ParcelRun], extra_activities=[note_parcel]
    ):
        handle = await start(client, task_queue, ParcelRun, "TRK-1")
        # The run sits at its gate, well before the Await: the news is kept.
        received = await send_event(client, handle.id, delivered("TRK-1"))
        assert (received.user, received.role, received.taken_by) == (
            "warehouse",
            "receiving",
            None,
        )
        await release_hold(client, handle.id)
        result = await handle.result()
    arrival = result.outputs["arrival"]
    assert arrival["received"] is True and arrival["timed_out"] is False
    assert arrival["event"]["data"] == {"dock": "3"}
    assert arrival["event"]["taken_by"] == "arrival#1"
    assert arrival["waited_seconds"] == 0
    assert result.path[-1] == "after"
    store = open_store(AuditSettings.from_env().url)
    events = [r.event_type for r in store.records(handle.id)]
    assert events.index("event.received") < events.index("gate.decided")
    assert "event.taken" in events


async def test_news_about_something_else_is_not_taken(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client, task_queue=task_queue, extra_workflows=[ParcelRun], extra_activities=[note_parcel]
    ):
        handle = await start(client, task_queue, ParcelRun, "TRK-2")
        await release_hold(client, handle.id)
        await eventually(
            lambda: run_status(client, handle.id),
            lambda status: "arrival" in status.current,
        )
        # Accepted (the sender may send it) but about another parcel: the run waits on.
        await send_event(client, handle.id, delivered("TRK-OTHER"))
        status = await run_status(client, handle.id)
        assert "arrival" in status.current
        await send_event(client, handle.id, delivered("TRK-2"))
        result = await handle.result()
        status = await run_status(client, handle.id)
    assert result.outputs["arrival"]["event"]["key"] == "TRK-2"
    assert [e.taken_by for e in status.events] == [None, "arrival#1"]


async def test_the_wait_runs_out_and_the_run_goes_on_or_fails_as_declared(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client,
        task_queue=task_queue,
        extra_workflows=[ParcelRun, ParcelOrFail],
        extra_activities=[note_parcel],
    ):
        goes_on = await start(client, task_queue, ParcelRun, "TRK-3")
        fails = await start(client, task_queue, ParcelOrFail, "TRK-4")
        await release_hold(client, goes_on.id)
        await release_hold(client, fails.id)
        result = await goes_on.result()
        with pytest.raises(WorkflowFailureError) as failure:
            await fails.result()
    arrival = result.outputs["arrival"]
    assert arrival["received"] is False and arrival["timed_out"] is True
    assert arrival["waited_seconds"] == pytest.approx(WAIT.total_seconds(), abs=1)
    assert "after" in result.path
    assert "no delivered event about TRK-4 within 2 days" in str(failure.value.cause)


async def test_news_from_anyone_not_entitled_is_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    keyring: dict[str, Ed25519PrivateKey],
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client, task_queue=task_queue, extra_workflows=[ParcelRun], extra_activities=[note_parcel]
    ):
        handle = await start(client, task_queue, ParcelRun, "TRK-5")
        # A person without the receiving role.
        assert "needs one of: receiving" in await refusal(
            client, handle.id, delivered("TRK-5", "carl")
        )
        # Someone claiming to be the warehouse, with their own key.
        mallory = Signer("warehouse", keyring["mallory"])
        with pytest.raises(DecisionRefused) as forged:
            await send_event(client, handle.id, delivered("TRK-5"), mallory)
        assert "key" in forged.value.reason
        # Unsigned, sent past the client (which would sign it).
        with pytest.raises(WorkflowUpdateFailedError) as unsigned:
            await client.get_workflow_handle(handle.id).execute_update(
                "event", delivered("TRK-5"), result_type=ReceivedEvent
            )
        assert "is not signed" in str(unsigned.value.cause)
        # An event the process does not await.
        other = ExternalEvent(event="invoice_paid", user="warehouse", key="TRK-5")
        assert "awaits no event 'invoice_paid' (it awaits: delivered)" in await refusal(
            client, handle.id, other
        )
        status = await run_status(client, handle.id)
        assert status.events == []
        assert [r.user for r in status.refusals if r.act == "event"] == [
            "carl",
            "warehouse",
            "warehouse",
            "warehouse",
        ]
        await release_hold(client, handle.id)
        await send_event(client, handle.id, delivered("TRK-5"))
        await handle.result()
        # The run has ended: late news is refused, not kept.
        assert "has already ended" in await refusal(client, handle.id, delivered("TRK-5"))


async def test_oversized_replayed_and_malformed_news_is_refused_and_recorded(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client, task_queue=task_queue, extra_workflows=[ParcelRun], extra_activities=[note_parcel]
    ):
        handle = await start(client, task_queue, ParcelRun, "TRK-6")
        huge = ExternalEvent(
            event="delivered", user="warehouse", key="TRK-6", data={"note": "x" * 5000}
        )
        assert "at most 4096 are taken" in await refusal(client, handle.id, huge)
        with pytest.raises(WorkflowUpdateFailedError) as malformed:
            await client.get_workflow_handle(handle.id).execute_update(
                "event", {"event": 5, "user": ["warehouse"]}, result_type=ReceivedEvent
            )
        assert "not a valid event request" in str(malformed.value.cause)
        # One signed event, delivered twice: the second is a replay.
        news = delivered("TRK-6")
        run_id = handle.first_execution_run_id
        assert run_id is not None
        signature = Signer.load("warehouse").sign(
            "event", news.signed_fields(), workflow_id=handle.id, run_id=run_id
        )
        signed = news.model_copy(update={"signature": signature})
        await send_event(client, handle.id, signed)
        assert "delivered before" in await refusal(client, handle.id, signed)
        status = await run_status(client, handle.id)
    assert len(status.events) == 1
    reasons = [r.reason for r in status.refusals if r.act == "event"]
    assert len(reasons) == 3 and "not a valid event request" in reasons[1]
