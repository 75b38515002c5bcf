"""Sub: run another process as a child workflow, with its own history,
audit chain and gates, linked to this run's in both trails.

A child run has no person to sign its start, and an unsigned start is
refused. A check of ``workflow.info().parent`` alone is not proof either:
anyone who can reach Temporal can run a workflow of their own that starts a
Baton process as its child. So the parent hands the child a start sealed by
the worker (the same secret as a carried run's, :mod:`baton.carry`) over
the child's input, its workflow id and the parent's, and the child admits
it only when the seal holds and Temporal names that parent.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import functools
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError, ChildWorkflowError

from baton import acts
from baton.audit.events import Actor
from baton.carry import Sealed
from baton.nodes.base import Done, GraphError, Node, Run, model_fields, problems, root_message
from baton.state import NodeRecord, RunInput

if TYPE_CHECKING:
    from baton.graph import Graph

ParentClose = Literal["terminate", "request_cancel", "abandon"]
_PARENT_CLOSE = {
    "terminate": workflow.ParentClosePolicy.TERMINATE,
    "request_cancel": workflow.ParentClosePolicy.REQUEST_CANCEL,
    "abandon": workflow.ParentClosePolicy.ABANDON,
}
# What a child's own input fields may not be set from the parent's data.
_ADMISSION_FIELDS = frozenset({"requested_by", "signature"})


class ChildStart(Sealed):
    """A child run's input: the process input, sealed for this child of this parent."""

    marker: ClassVar[str] = "child"
    child: Literal[True] = True
    workflow_id: str
    parent_workflow_id: str
    parent_run_id: str
    input: dict[str, Any]


class SubResult(BaseModel):
    """A Sub node's output: which run it was, how it ended, what it produced."""

    workflow_id: str
    process: str
    outcome: Literal["completed", "rejected", "stopped"]
    outputs: dict[str, Any]


class Sub(Node):
    """Run ``process`` (another process's workflow class) as a child, its
    input fields read from ``inputs``; its requester is this run's. When
    this run closes first, ``parent_close`` says what becomes of the child:
    ``"request_cancel"`` (it undoes what it declared undoable and ends
    cancelled), ``"terminate"`` or ``"abandon"`` (it runs on)."""

    process: Any
    parent_close: ParentClose = "request_cancel"

    kind: ClassVar[str] = "sub"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    @property
    def child_graph(self) -> Graph:
        graph = getattr(self.process, "graph", None)
        if graph is None or not hasattr(graph, "input"):
            raise GraphError(
                f"node '{self.id}': process= must be a Baton process's workflow class "
                "(a GraphWorkflow subclass with a graph)"
            )
        return graph  # type: ignore[no-any-return]

    def output_fields(self) -> set[str]:
        return model_fields(SubResult)

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        child = self.child_graph
        if child.name == graph.name:
            raise GraphError(f"node '{self.id}': a process may not run itself as a Sub")
        fields = set(child.input.model_fields) - _ADMISSION_FIELDS
        unknown = sorted(set(self.inputs) - fields)
        if unknown:
            raise GraphError(
                f"node '{self.id}': {child.input.__name__} has no field(s) {unknown}; "
                f"it takes {sorted(fields)}"
            )
        missing = sorted(
            name
            for name, field in child.input.model_fields.items()
            if field.is_required() and name not in self.inputs and name not in _ADMISSION_FIELDS
        )
        if missing:
            raise GraphError(
                f"node '{self.id}': inputs= must give {child.input.__name__}'s required "
                f"field(s) {missing}"
            )

    def activities(self) -> Sequence[str]:
        return ()

    async def run(self, run: Run, record: NodeRecord) -> Done:
        child = self.child_graph
        assert run.state.input is not None
        request = {**run.resolve(self.inputs), "requested_by": run.state.input.requested_by}
        try:
            child.input.model_validate(request)
        except ValidationError as err:
            raise ApplicationError(
                f"node '{self.id}': its inputs do not fit {child.input.__name__}: "
                f"{'; '.join(problems(err))}",
                type="InvalidNodeInput",
                non_retryable=True,
            ) from None
        info = workflow.info()
        start = ChildStart(
            workflow_id=f"{info.workflow_id}--{self.id}-{record.visits}",
            parent_workflow_id=info.workflow_id,
            parent_run_id=info.run_id,
            input=request,
        )
        sealed = await start.sealed()
        trail_child = functools.partial(
            run.trail.record,
            node=self.id,
            about=f"v{record.visits}",
            child_workflow_id=start.workflow_id,
        )
        trail_child("sub.started", process=child.name, parent_close=self.parent_close)
        record.meta["child_workflow_id"] = start.workflow_id
        try:
            result = await workflow.execute_child_workflow(
                child.name,
                sealed,
                id=start.workflow_id,
                parent_close_policy=_PARENT_CLOSE[self.parent_close],
                result_type=dict,
            )
        except ChildWorkflowError as err:
            message = f"the {child.name} run {start.workflow_id} failed: {root_message(err)}"
            trail_child("sub.finished", outcome="failed", error=message)
            raise ApplicationError(
                f"node '{self.id}': {message}", type="SubFailed", non_retryable=True
            ) from err
        outcome = SubResult(
            workflow_id=start.workflow_id,
            process=child.name,
            outcome=result["outcome"],
            outputs=result["outputs"],
        )
        trail_child("sub.finished", outcome=outcome.outcome)
        record.detail = f"{child.name} run {start.workflow_id} {outcome.outcome}"
        return Done(outcome.model_dump(mode="json"))

    def mermaid_shape(self) -> str:
        return f'[["{self.id}<br/><small>runs {self.child_graph.name}</small>"]]'


async def admit_child(run: Run, raw_input: Any) -> RunInput:
    """The input of a run started by a parent run's Sub node, once the
    worker's seal proves the parent Temporal names sealed it for this
    child; else the run fails here with the reason, recorded."""
    info = workflow.info()
    try:
        start = ChildStart.model_validate(raw_input)
    except ValidationError as err:
        _refuse(run, f"it does not fit: {'; '.join(problems(err))}")
    parent = info.parent
    if parent is None:
        _refuse(run, "no parent run started it")
    if not await start.holds():
        _refuse(run, "no Baton worker sealed it")
    if (start.workflow_id, start.parent_workflow_id, start.parent_run_id) != (
        info.workflow_id,
        parent.workflow_id,
        parent.run_id,
    ):
        _refuse(
            run,
            f"it was sealed for run {start.workflow_id} as a child of {start.parent_workflow_id}",
        )
    try:
        request = run.graph.input.model_validate(start.input)
    except ValidationError as err:
        _refuse(run, f"its input does not fit: {'; '.join(problems(err))}")
    assert isinstance(request, RunInput)
    run.trail.record(
        "run.admitted",
        actor=Actor(type="service", id=f"run:{parent.workflow_id}", role="parent"),
        parent_workflow_id=parent.workflow_id,
        parent_run_id=parent.run_id,
        requested_by=request.requested_by,
    )
    return request


def _refuse(run: Run, reason: str) -> NoReturn:
    acts.refuse_start(
        run,
        f"the start of this child run cannot be admitted: {reason}. A run of a process is "
        "started unsealed only by a signed start; as a child, only by a parent run's Sub node",
        None,
    )
