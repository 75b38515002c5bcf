"""A process with the bug the strict sandbox is there to catch: its `when=`
predicate reads the wall clock (tests/test_strict_sandbox.py).

Written as workflows/document_intake.py is, Baton's modules imported inside
`workflow.unsafe.imports_passed_through()`: the strict sandbox imports them
into every run's sandbox all the same."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel
from temporalio import activity, workflow

with workflow.unsafe.imports_passed_through():
    import baton.graph
    from baton.graph import Graph, Step
    from baton.runner import GraphWorkflow, RunInput, RunResult, RunView


class Ping(RunInput):
    word: str


class Word(BaseModel):
    word: str


@activity.defn(name="strict_sandbox_echo")
async def echo(request: Word) -> Word:
    return Word(word=request.word)


def still_current(run: RunView) -> bool:
    # The bug: a replay days later reads another time. workflow.now() is right.
    return datetime.now().year >= 2000


GRAPH = Graph(
    name="strict_sandbox_probe",
    input=Ping,
    nodes=(
        Step("first", activity=echo, inputs={"word": "input.word"}),
        Step("second", activity=echo, inputs={"word": "first.word"}, when=still_current),
    ),
)


@workflow.defn(name="strict_sandbox_probe")
class WallClockProcess(GraphWorkflow):
    graph = GRAPH

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


# Set on the worker's own baton.graph by the test: a run that sees it was
# handed the worker's module, one that does not imported its own.
HOST_MARK = "_strict_sandbox_host_mark"


@workflow.defn(name="strict_sandbox_where")
class WhereBatonLoads:
    """Says whether this run's baton.graph is the worker's module (passed
    through) or one imported in the run's sandbox."""

    @workflow.run
    async def run(self) -> str:
        return "passed through" if hasattr(baton.graph, HOST_MARK) else "imported in the sandbox"
