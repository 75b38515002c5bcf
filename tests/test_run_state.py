"""A run's state is one model that survives a dump and a restore; node kinds
are modules the runner only knows by their protocol; the plugin registers
what the graphs call."""

from __future__ import annotations

import uuid
from typing import Any, ClassVar

from temporalio import workflow
from temporalio.client import WorkflowHistory
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import (
    ExecuteWorkflowInput,
    Interceptor,
    Replayer,
    WorkflowInboundInterceptor,
    WorkflowInterceptorClassInput,
)

from baton.client import start_run
from baton.gates import GateState
from baton.graph import Graph, Step
from baton.nodes.base import Done, Node, Run
from baton.plugin import BatonPlugin, graph_activities
from baton.routing import Attempt
from baton.runner import GraphWorkflow, NodeRecord, RunResult, RunState, RunView
from tests.helpers import recorded_histories
from tests.test_runner import Start, Word, echo
from worker import WORKFLOWS, build_worker
from workflows.document_intake import DocumentIntake, IntakeRequest

# What they check is document intake's (its extract step's attempts).
HISTORIES = recorded_histories("document_intake")
# Each replayed run's state as it ended, dumped, and what its predicates read of its model's notes.
ENDED: list[tuple[dict[str, Any], list[str]]] = []


class _KeepEndState(Interceptor):
    def workflow_interceptor_class(
        self, input: WorkflowInterceptorClassInput
    ) -> type[WorkflowInboundInterceptor]:
        return _KeepEndStateInbound


class _KeepEndStateInbound(WorkflowInboundInterceptor):
    async def execute_workflow(self, input: ExecuteWorkflowInput) -> Any:
        result = await super().execute_workflow(input)
        run = workflow.instance()
        ENDED.append((run.state.model_dump(mode="json"), run.view().notes("extract")))
        return result


async def test_a_run_state_comes_back_whole_from_its_dump() -> None:
    replayer = Replayer(
        workflows=[],
        interceptors=[_KeepEndState()],
        plugins=[BatonPlugin(WORKFLOWS, data_converter=pydantic_data_converter)],
    )
    ENDED.clear()
    for path in HISTORIES:
        await replayer.replay_workflow(WorkflowHistory.from_json(path.stem, path.read_text()))
    assert len(ENDED) == len(HISTORIES)
    for dumped, notes in ENDED:
        restored = RunState.restore(dumped, IntakeRequest)
        assert restored.model_dump(mode="json") == dumped
        assert isinstance(restored.input, IntakeRequest)
        assert restored.config is not None and restored.trail_numbering
        attempts = restored.records["extract"].meta["attempts"]
        assert attempts and all(isinstance(a, Attempt) for a in attempts)
        view = RunView(restored.input, restored.records, restored.config)
        assert view.notes("extract") == notes
        assert all(isinstance(g, GateState) for g in restored.gates.values())
    assert any(d["gates"] for d, _ in ENDED), "no recorded history passes a gate"


def test_the_plugin_registers_each_activity_the_graphs_call_once() -> None:
    names = [
        getattr(fn, "__temporal_activity_definition").name
        for fn in graph_activities([DocumentIntake, DocumentIntake])
    ]
    assert len(names) == len(set(names))
    steps = [n for n in DocumentIntake.graph.nodes if isinstance(n, Step)]
    called = {s.activity_name for s in steps} | {
        getattr(s.compensate, "__temporal_activity_definition").name for s in steps if s.compensate
    }
    assert called | {"ask", "notify_reviewers", "snapshot_run_config"} <= set(names)


class Shout(Node):
    """A kind of the test's own: the runner runs it by the protocol alone."""

    word: str

    kind: ClassVar[str] = "shout"
    __init__ = Node.__init__

    def output_fields(self) -> set[str]:
        return {"word"}

    async def run(self, run: Run, record: NodeRecord) -> Done:
        record.detail = "shouted"
        return Done({"word": self.word.upper()})


SHOUTING = Graph(
    name="shouting",
    input=Start,
    nodes=(
        Shout("shout", word="hello"),
        Step("echo", activity=echo, inputs={"word": "shout.word"}),
    ),
)


@workflow.defn(name="shouting", sandboxed=False)
class Shouting(GraphWorkflow):
    graph = SHOUTING

    @workflow.run
    async def run(self, request: Start) -> RunResult:
        return await self.execute(request)


async def test_a_new_node_kind_needs_no_change_to_the_runner(
    time_skipping_env: WorkflowEnvironment,
) -> None:
    assert 'shout(("shout"))' in SHOUTING.mermaid()
    queue = f"shout-{uuid.uuid4().hex[:6]}"
    async with build_worker(time_skipping_env.client, task_queue=queue, extra_workflows=[Shouting]):
        handle = await start_run(
            time_skipping_env.client,
            Shouting,
            Start(word="-", requested_by="carl"),
            task_queue=queue,
            workflow_id=f"shout-{uuid.uuid4().hex[:6]}",
        )
        result = await handle.result()
    assert result.path == ["shout", "echo"]
    assert result.outputs["echo"] == Word(word="HELLO").model_dump()
