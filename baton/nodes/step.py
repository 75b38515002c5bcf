"""Step: one activity, one pydantic model in and one out, and optionally
the activity that undoes it."""

from __future__ import annotations

import functools
import inspect
import types
import typing
from collections.abc import Callable, Sequence
from typing import Any, ClassVar

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.compensation import Undo, undo_request
from baton.nodes.base import (
    NOT_NODES,
    ActivityRef,
    Done,
    GraphError,
    Node,
    Run,
    activity_options,
    conjuncts,
    is_model,
    model_fields,
    parse_ref,
)
from baton.state import Compensable, NodeRecord

if typing.TYPE_CHECKING:
    from baton.graph import Graph


class Step(Node):
    """A deterministic activity: one pydantic model in, one out.

    ``local=True`` runs it as a Temporal local activity: right for short,
    deterministic work (parsing, validation) where a server round trip per
    node costs more than the work.
    """

    activity: Callable[..., Any]
    local: bool = False
    compensate: Callable[..., Any] | None = Field(
        default=None,
        description="An activity that undoes this step when the run is stopped, cancelled "
        "or fails (Graph on_failure='compensate'): it takes baton.compensation.Undo (the "
        "visit's key, input and output if any; it can undo a visit that never returned) "
        "or the step's output model (see baton.compensation)",
    )

    kind: ClassVar[str] = "step"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    @property
    def activity_name(self) -> str:
        defn = getattr(self.activity, "__temporal_activity_definition", None)
        return str(getattr(defn, "name", self.activity.__name__))

    @property
    def input_model(self) -> type[BaseModel]:
        return _activity_models(self.id, self.activity)[0]

    @property
    def output_model(self) -> type[BaseModel]:
        return _activity_models(self.id, self.activity)[1]

    @property
    def compensation_input(self) -> type[BaseModel] | None:
        return None if self.compensate is None else _activity_models(self.id, self.compensate)[0]

    def output_fields(self) -> set[str]:
        return model_fields(self.output_model)

    def answer_model(self) -> type[BaseModel] | None:
        return self.output_model

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        _validate_inputs(graph, self)
        compensation_input = self.compensation_input
        if compensation_input not in (None, Undo, self.output_model):
            assert compensation_input is not None
            raise GraphError(
                f"node '{self.id}': compensate= takes {compensation_input.__name__}, but the "
                f"step's output is {self.output_model.__name__}; a compensation undoes the "
                "step from what the step returned, or takes baton.compensation.Undo"
            )

    def activities(self) -> Sequence[ActivityRef]:
        return [self.activity] if self.compensate is None else [self.activity, self.compensate]

    async def run(self, run: Run, record: NodeRecord) -> Done:
        try:
            arg = self.input_model.model_validate(run.resolve(self.inputs))
        except ValidationError as err:
            raise ApplicationError(
                f"node '{self.id}': its inputs do not fit {self.input_model.__name__}: {err}",
                type="InvalidNodeInput",
                non_retryable=True,
            ) from None
        options = activity_options(run, self, record)
        entry: Compensable | None = None
        if self.compensate is not None and run.state.undo_in_flight:
            # Listed before it is scheduled, so a stop while it runs undoes it
            # too; and stopped only once it has (see baton.compensation).
            entry = Compensable(
                node=self.id, visit=record.visits, input=arg.model_dump(mode="json"), finished=False
            )
            run.state.compensable.append(entry)
            options["cancellation_type"] = (
                workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            )
        if self.local:
            options.pop("summary")
            options.pop("heartbeat_timeout", None)
            try:
                result = await workflow.execute_local_activity(self.activity, arg, **options)
            except ApplicationError as err:
                # A local activity's error arrives as raised, not wrapped in an
                # ActivityError as a remote one's: name the node the same way.
                raise ApplicationError(
                    f"node '{self.id}' failed: {err.message}", type="NodeFailed", non_retryable=True
                ) from err
        else:
            result = await workflow.execute_activity(self.activity, arg, **options)
        output = result.model_dump(mode="json")
        if entry is not None:
            entry.output, entry.finished = output, True
        elif self.compensate is not None:
            run.state.compensable.append(
                Compensable(node=self.id, visit=record.visits, output=output)
            )
        return Done(output)

    async def undo(self, run: Run, entry: Compensable) -> BaseModel:
        if self.compensation_input is Undo:
            arg: BaseModel = undo_request(entry)
        elif entry.finished:
            arg = self.output_model.model_validate(entry.output)
        else:
            raise ApplicationError(
                f"visit {entry.visit} never returned, and {self.compensate.__name__} "  # type: ignore[union-attr]
                f"undoes from the step's output: what it may have written is not undone; "
                "declare the compensation taking baton.compensation.Undo",
                type="NothingToUndoFrom",
                non_retryable=True,
            )
        result: BaseModel = await workflow.execute_activity(
            self.compensate,  # type: ignore[arg-type]
            arg,
            activity_id=f"{self.id}#{entry.visit}.undo",
            start_to_close_timeout=self.timeout,
            retry_policy=self.retry.to_temporal(),
            summary=f"{run.graph.name}.{self.id}: compensate",
        )
        return result

    def mermaid_shape(self) -> str:
        return f'["{self.id}<br/><small>{self.activity_name}</small>"]'


# Cached: a runner asks for a step's models on every visit, and resolving the
# string annotations again took about 0.1 ms a step inside the sandbox.
@functools.cache
def _activity_models(
    node_id: str, fn: Callable[..., Any]
) -> tuple[type[BaseModel], type[BaseModel]]:
    hints = typing.get_type_hints(fn)
    params = list(inspect.signature(fn).parameters)
    arg = hints.get(params[0]) if len(params) == 1 else None
    ret = hints.get("return")
    if not (is_model(arg) and is_model(ret)):
        raise GraphError(
            f"node '{node_id}': activity {fn.__name__} must take one pydantic "
            "model and return one (one model in, one out)"
        )
    return arg, ret


def _validate_inputs(graph: Graph, node: Step) -> None:
    model = node.input_model
    for name, info in model.model_fields.items():
        if name not in node.inputs and info.is_required():
            raise GraphError(
                f"node '{node.id}': input '{name}' of {model.__name__} is not bound; "
                f'add inputs={{"{name}": "<node>.<field>"}}'
            )
        ref = node.inputs.get(name)
        if ref is None:
            continue
        source, _ = parse_ref(ref)
        skipped_by = None if source in NOT_NODES else _skipped_by(graph.node(source), node)
        if skipped_by is not None and not _accepts_none(info.annotation):
            raise GraphError(
                f"node '{node.id}': input '{name}' reads '{source}', which may be skipped "
                f"({skipped_by}); declare {model.__name__}."
                f"{name} as Optional"
            )
    unknown = sorted(set(node.inputs) - set(model.model_fields))
    if unknown:
        raise GraphError(
            f"node '{node.id}': {model.__name__} has no field '{unknown[0]}' "
            f"(it has: {', '.join(model.model_fields)})"
        )


def _accepts_none(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return annotation is None or annotation is Any


def _skipped_by(node: Node, reader: Node) -> str | None:
    """What may skip ``node`` in a run where ``reader`` runs: its condition
    (unless the reader runs only where that same condition holds, see
    ``all_of``), or its being added after the run started."""
    if node.when is not None and node.when not in conjuncts(reader.when):
        return f"when={node.condition_name}"
    if node.since is not None:
        return f"since={node.since}"
    return None
