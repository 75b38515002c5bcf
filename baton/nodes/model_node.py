"""What an Ask and an Agent share: a task that routing sends to models, an
output the answer must fit, the checks it must pass, documents the model
reads by reference, a timeout that comes from the routing, and the
``ai.inference`` event each model call records.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from datetime import timedelta
from functools import cache
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, Self

from pydantic import BaseModel, Field, model_validator

from baton.audit.events import Actor
from baton.llm.prompt import prompt_version
from baton.nodes.base import GraphError, Node, Retry, Run, is_model, schema_problems
from baton.nodes.tool_tier import check_tools

if TYPE_CHECKING:
    from baton.graph import Graph


class ModelCall(Protocol):
    """An Ask's attempt or an Agent's turn, as its event records it."""

    provider: str
    model: str

    def model_dump(self) -> dict[str, Any]: ...


class ModelNode(Node):
    """A node whose answer comes from a model (or a person, at the end of
    the task's cascade)."""

    task: str
    output: type[BaseModel]
    instructions: str = ""
    checks: tuple[Callable[[Any], list[str]], ...] = Field(
        default=(),
        description="Task validators: pure functions of the output returning the problems "
        "found, which go back to the model",
    )
    tools: tuple[Callable[..., Any], ...] = ()
    documents: tuple[str, ...] = Field(
        default=(),
        description="Inputs that are document references (baton.document_store): the model "
        "is given the document's text, the run keeps only the reference",
    )
    # Model calls are slow and their activities heartbeat while they wait,
    # so a crashed worker's call is retried in seconds, a slow model is not.
    # The worker sends heartbeats every second (worker.HEARTBEAT_THROTTLE), so
    # 2 of these 3 s are slack for a busy worker. Not shorter: with 2 s and
    # the SDK's default throttle (1.6 s, 0.4 s slack), an overloaded worker
    # (10,000 runs starting) missed four heartbeats in a row for 3 runs.
    heartbeat: timedelta | None = timedelta(seconds=3)
    retry: Retry = Retry(max_attempts=4)

    opens_gate: ClassVar[bool] = True
    __init__ = Node.__init__  # keeps the positional id for type checkers

    @model_validator(mode="after")
    def _timeout_is_routed(self) -> Self:
        # A model call's timeout covers its wait for a provider slot, then for
        # the model: both are the routing's, so a node's own would disagree.
        if "timeout" in self.model_fields_set:
            raise ValueError(
                f"{self.kind} '{self.id}': a model call's timeout comes from its routing: set "
                "timeout_s and queue_timeout_s of the provider in the routing file (an Agent's "
                "tool calls take tool_timeout)"
            )
        return self

    @model_validator(mode="after")
    def _documents_are_inputs(self) -> Self:
        unknown = [name for name in self.documents if name not in self.inputs]
        if unknown:
            raise ValueError(
                f"documents {unknown} are not among its inputs ({', '.join(self.inputs)}); "
                "name the inputs that carry a document reference"
            )
        return self

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        if not is_model(self.output):
            raise GraphError(
                f"node '{self.id}': an {type(self).__name__} needs an output schema (pydantic "
                "model)"
            )
        if not self.task:
            raise GraphError(f"node '{self.id}': an {type(self).__name__} needs a task name")
        check_tools(self.id, self.tools)

    def routed_tasks(self) -> Sequence[str]:
        return (self.task,)

    def output_schema(self) -> dict[str, Any]:
        return _json_schema(self.output)

    def judge(self, output: dict[str, Any]) -> tuple[Any, list[str]]:
        """``output`` as the node's output (JSON), or the problems that
        refuse it: the output schema's, then the node's checks'."""
        problems = schema_problems(self.output, output)
        if problems:
            return None, problems
        value = self.output.model_validate(output)
        problems = [p for check in self.checks for p in check(value)]
        return (None, problems) if problems else (value.model_dump(mode="json"), [])

    def record_inference(self, run: Run, about: str, call: ModelCall, **context: Any) -> None:
        """The ``ai.inference`` event of one model call."""
        run.trail.record(
            "ai.inference",
            node=self.id,
            about=about,
            actor=Actor(type="ai_model", id=f"{call.provider}/{call.model}"),
            operation="chat",
            task=self.task,
            prompt={"name": self.task, "version": _prompt_version(self.instructions, self.output)},
            **call.model_dump(),
            **context,
        )


@cache
def _prompt_version(instructions: str, output: type[BaseModel]) -> str:
    return prompt_version(instructions, _json_schema(output))


@cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Built once per model, not per call: it is the same on every run.
    return model.model_json_schema()
