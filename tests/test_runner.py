"""The runner on toy graphs: fan-out runs branches together, fan-in waits for
all, skipped nodes say why, loops are bounded."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowFailureError
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.config import snapshot_run_config
from baton.client import start_run
from baton.graph import Back, Graph, Retry, Step
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView


class Start(RunInput):
    word: str


class Word(BaseModel):
    word: str


class Pair(BaseModel):
    left: str
    right: str


class Joined(BaseModel):
    text: str


class Maybe(BaseModel):
    word: str | None = None


both_started = asyncio.Barrier(2)


@activity.defn
async def echo(request: Word) -> Word:
    return Word(word=request.word)


@activity.defn
async def branch(request: Word) -> Word:
    # Each branch waits for the other to start: sequential execution would time out.
    await asyncio.wait_for(both_started.wait(), timeout=10)
    return Word(word=request.word.upper())


@activity.defn
async def join(request: Pair) -> Joined:
    return Joined(text=f"{request.left}+{request.right}")


@activity.defn
async def describe(request: Maybe) -> Joined:
    return Joined(text=request.word or "nothing")


@activity.defn
async def refuse(request: Word) -> Word:
    raise ApplicationError(f"cannot take '{request.word}'", non_retryable=True)


def never(run: RunView) -> bool:
    return False


def fewer_than_three_drafts(run: RunView) -> bool:
    return run.visits("draft") < 3


def always(run: RunView) -> bool:
    return True


FAN = Graph(
    name="fan",
    input=Start,
    nodes=(
        Step("first", activity=echo, inputs={"word": "input.word"}),
        Step("left", activity=branch, inputs={"word": "first.word"}, after=("first",)),
        Step("right", activity=branch, inputs={"word": "first.word"}, after=("first",)),
        Step(
            "joined",
            activity=join,
            inputs={"left": "left.word", "right": "right.word"},
            after=("left", "right"),
        ),
        Step("optional", activity=echo, inputs={"word": "input.word"}, when=never),
        Step("after_optional", activity=describe, inputs={"word": "optional.word"}),
    ),
)

LOOP = Graph(
    name="loop",
    input=Start,
    nodes=(
        Step("draft", activity=echo, inputs={"word": "input.word"}),
        Back("again", to="draft", when=fewer_than_three_drafts, max_visits=5),
        Step("done", activity=echo, inputs={"word": "draft.word"}),
    ),
)

ENDLESS = Graph(
    name="endless",
    input=Start,
    nodes=(
        Step("draft", activity=echo, inputs={"word": "input.word"}, retry=Retry(max_attempts=1)),
        Back("again", to="draft", when=always, max_visits=2),
    ),
)


REFUSED = {
    local: Graph(
        name=f"refused_{'local' if local else 'remote'}",
        input=Start,
        nodes=(Step("check", activity=refuse, inputs={"word": "input.word"}, local=local),),
    )
    for local in (True, False)
}


@workflow.defn(name="fan", sandboxed=False)
class FanWorkflow(GraphWorkflow):
    graph = FAN

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="loop", sandboxed=False)
class LoopWorkflow(GraphWorkflow):
    graph = LOOP

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="endless", sandboxed=False)
class EndlessWorkflow(GraphWorkflow):
    graph = ENDLESS

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="refused_local", sandboxed=False)
class RefusedLocally(GraphWorkflow):
    graph = REFUSED[True]

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="refused_remote", sandboxed=False)
class RefusedRemotely(GraphWorkflow):
    graph = REFUSED[False]

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


async def run_toy(env: WorkflowEnvironment, wf: type[GraphWorkflow], word: str) -> RunResult:
    queue = f"toy-{uuid.uuid4().hex[:6]}"
    async with Worker(
        env.client,
        task_queue=queue,
        workflows=[FanWorkflow, LoopWorkflow, EndlessWorkflow, RefusedLocally, RefusedRemotely],
        activities=[echo, branch, join, describe, refuse, snapshot_run_config],
    ):
        handle = await start_run(
            env.client,
            wf,
            Start(word=word, requested_by="carl"),
            task_queue=queue,
            workflow_id=f"toy-{uuid.uuid4().hex[:6]}",
        )
        return await handle.result()


async def test_fan_out_runs_branches_together_and_fan_in_waits_for_both(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    result = await run_toy(time_skipping_env, FanWorkflow, "hi")
    assert result.outputs["joined"] == {"text": "HI+HI"}
    assert result.path.index("joined") > max(result.path.index("left"), result.path.index("right"))
    assert result.skipped == {"optional": "condition never was false"}
    assert result.outputs["after_optional"] == {"text": "nothing"}


async def test_back_edge_repeats_until_condition_is_false(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    result = await run_toy(time_skipping_env, LoopWorkflow, "draft")
    assert result.path.count("draft") == 3
    assert result.path[-1] == "done"


async def test_loop_bound_fails_the_run_visibly(time_skipping_env: WorkflowEnvironment) -> None:
    with pytest.raises(WorkflowFailureError) as failure:
        await run_toy(time_skipping_env, EndlessWorkflow, "x")
    assert "loop back to 'draft' reached its bound of 2 visits" in str(failure.value.cause)


@pytest.mark.parametrize("wf", [RefusedLocally, RefusedRemotely], ids=["local", "remote"])
async def test_a_failing_step_fails_the_run_naming_its_node(
    time_skipping_env: WorkflowEnvironment, wf: type[GraphWorkflow]
) -> None:
    """A local activity's error reaches the workflow unwrapped, a remote one's
    inside an ActivityError: the run's failure reads the same either way."""
    with pytest.raises(WorkflowFailureError) as failure:
        await run_toy(time_skipping_env, wf, "x")
    cause = failure.value.cause
    assert isinstance(cause, ApplicationError)
    assert (cause.type, cause.message) == ("NodeFailed", "node 'check' failed: cannot take 'x'")
