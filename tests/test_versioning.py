"""A node inserted into a running process with `since=` leaves the runs
recorded before it replayable; inserted without it, they fail replay."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Replayer

from activities.documents import ExtractedDocument
from baton.graph import Back, Graph, GraphError, Node, Step
from baton.plugin import BatonPlugin
from baton.runner import GraphWorkflow, RunResult
from baton.state import RunView
from tests.helpers import recorded_histories
from workflows.document_intake import GRAPH, IntakeRequest

# The process these tests change; the replayer runs no other.
HISTORIES = recorded_histories("document_intake")


class Stamp(BaseModel):
    document: ExtractedDocument


class Stamped(BaseModel):
    stamp: str


@activity.defn
def stamp_received(request: Stamp) -> Stamped:
    return Stamped(stamp=f"received {request.document.number}")


def with_a_stamp(since: str | None) -> Graph:
    """Document intake with a step inserted after `validate`, as a later
    release of the process would add it."""
    return with_a_node(
        Step("stamp", activity=stamp_received, inputs={"document": "extract"}, since=since)
    )


def with_a_node(added: Node) -> Graph:
    nodes = list(GRAPH.nodes)
    at = next(i for i, node in enumerate(nodes) if node.id == "validate") + 1
    nodes.insert(at, added)
    return Graph(
        name=GRAPH.name,
        input=IntakeRequest,
        nodes=tuple(nodes),
        purpose=GRAPH.purpose,
        risk_class=GRAPH.risk_class,
        stop_roles=GRAPH.stop_roles,
    )


@workflow.defn(name="document_intake")
class IntakeStampedSince(GraphWorkflow):
    graph = with_a_stamp(since="stamp-received")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="document_intake")
class IntakeStampedUnversioned(GraphWorkflow):
    graph = with_a_stamp(since=None)

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


async def replay_failures(workflow_class: type[GraphWorkflow]) -> list[str]:
    plugin = BatonPlugin([workflow_class], data_converter=pydantic_data_converter)
    replayer = Replayer(workflows=[], plugins=[plugin])
    failed = []
    for path in HISTORIES:
        history = WorkflowHistory.from_json(path.stem, path.read_text())
        result = await replayer.replay_workflow(history, raise_on_replay_failure=False)
        if result.replay_failure is not None:
            failed.append(path.stem)
    return failed


async def test_a_node_inserted_with_since_replays_every_recorded_history() -> None:
    assert await replay_failures(IntakeStampedSince) == []


async def test_the_same_node_inserted_without_since_breaks_the_recorded_runs() -> None:
    failed = await replay_failures(IntakeStampedUnversioned)
    # Every run that got past `validate` scheduled `enter` or opened its gate
    # where this graph schedules `stamp`.
    assert "document_intake_clean" in failed and "gate_approve" in failed


class Received(BaseModel):
    stamp: Stamped


@activity.defn
def file_stamp(request: Received) -> Stamped:
    return request.stamp


def test_a_step_reading_a_versioned_node_must_accept_none() -> None:
    """A run started before the node skips it: what reads it gets None."""
    with pytest.raises(GraphError, match="which may be skipped \\(since=stamp-received\\)"):
        Graph(
            name="stamps",
            input=IntakeRequest,
            nodes=(
                Step(
                    "stamp",
                    activity=stamp_received,
                    inputs={"document": "input.document"},
                    since="stamp-received",
                ),
                Step("file", activity=file_stamp, inputs={"stamp": "stamp"}),
            ),
        )


def test_a_graph_digest_names_its_shape_and_versions() -> None:
    digests = {GRAPH.digest(), with_a_stamp(None).digest(), with_a_stamp("stamp-received").digest()}
    assert len(digests) == 3
    assert with_a_stamp("stamp-received").digest() == with_a_stamp("stamp-received").digest()


def never(view: RunView) -> bool:
    return False


def no_findings(view: RunView) -> list[str]:
    return []


def test_a_graph_digest_tells_where_a_loop_goes_back_and_what_it_tells() -> None:
    def loop(to: str, feedback: Callable[[RunView], list[str]] | None = None) -> Graph:
        return with_a_node(Back("again", to=to, when=never, max_visits=2, feedback=feedback))

    digests = {
        loop("extract").digest(),
        loop("load").digest(),
        loop("extract", no_findings).digest(),
    }
    assert len(digests) == 3
    assert loop("extract").digest() == loop("extract").digest()
