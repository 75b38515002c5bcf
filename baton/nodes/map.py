"""Map: one step's activity over each item of a list (invoice lines,
systems to provision), a bounded number at a time.

Each item is its own activity, with id ``<node>#<visit>.<index>``, so each
has its own retries, its own idempotency key and its own line in history;
results come back in the order of the list, whatever order they finish in.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any, ClassVar, Literal

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from baton.nodes.base import (
    Done,
    GraphError,
    Node,
    Run,
    activity_options,
    model_fields,
    root_message,
)
from baton.nodes.step import Step
from baton.state import NodeRecord

if TYPE_CHECKING:
    from baton.graph import Graph


class ItemFailure(BaseModel):
    index: int = Field(description="The item's place in the list, from 0")
    error: str


class Mapped(BaseModel):
    """A Map node's output: one result per item, in the list's order (None
    for an item that failed), and the failures."""

    results: list[Any]
    failures: list[ItemFailure] = Field(default_factory=list)


def check_each(node: Node, each: str) -> None:
    """A mapped node's ``each`` names one of its inputs."""
    if each not in node.inputs:
        raise GraphError(
            f"node '{node.id}': each='{each}' must name one of its inputs, the list "
            f'to map over: inputs={{"{each}": "<node>.<field>"}}'
        )


def split_each(run: Run, node: Node, each: str) -> tuple[dict[str, Any], list[Any]]:
    """A mapped node's inputs, resolved: those its items share, and the
    list to map over, which the data may make something else."""
    shared = run.resolve(node.inputs)
    items = shared.pop(each)
    if not isinstance(items, list):
        raise ApplicationError(
            f"node '{node.id}': its input '{each}' ({node.inputs[each]}) is "
            f"{type(items).__name__}, not a list to map over",
            type="InvalidNodeInput",
            non_retryable=True,
        )
    return shared, items


class Map(Step):
    """Run ``activity`` once per item of the input named by ``each`` (a
    list), the other inputs shared by every item; at most ``concurrency``
    at a time. An item that fails for good fails the node
    (``on_item_failure="fail"``: the others still running are cancelled) or
    is recorded in ``failures`` while the rest go on (``"continue"``)."""

    each: str
    concurrency: int = Field(default=4, ge=1)
    on_item_failure: Literal["fail", "continue"] = "fail"

    kind: ClassVar[str] = "map"
    __init__ = Step.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(Mapped)

    def answer_model(self) -> None:
        return None

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        check_each(self, self.each)
        if self.local or self.compensate is not None:
            raise GraphError(
                f"node '{self.id}': a Map runs remote activities without compensation; "
                "drop local= and compensate="
            )
        super().validate_in(graph, ancestors)

    async def run(self, run: Run, record: NodeRecord) -> Done:
        resolved, items = split_each(run, self, self.each)
        args = [self._argument(resolved, item, index) for index, item in enumerate(items)]
        options = activity_options(run, self, record)
        results: list[Any] = [None] * len(items)
        failures: list[ItemFailure] = []
        running: dict[int, asyncio.Task[Any]] = {}
        waiting = list(range(len(items)))
        try:
            while waiting or running:
                while waiting and len(running) < self.concurrency:
                    index = waiting.pop(0)
                    running[index] = asyncio.create_task(
                        workflow.execute_activity(
                            self.activity,
                            args[index],
                            **{**options, "activity_id": f"{options['activity_id']}.{index}"},
                        )
                    )
                await workflow.wait(list(running.values()), return_when=asyncio.FIRST_COMPLETED)
                for index in sorted(i for i, task in running.items() if task.done()):
                    task = running.pop(index)
                    try:
                        results[index] = task.result().model_dump(mode="json")
                    except ActivityError as err:
                        if self.on_item_failure == "fail":
                            raise ApplicationError(
                                f"node '{self.id}' failed at item {index}: {root_message(err)}",
                                type="NodeFailed",
                                non_retryable=True,
                            ) from err
                        failures.append(ItemFailure(index=index, error=root_message(err)))
        finally:
            for task in running.values():
                task.cancel()
            if running:
                await workflow.wait(list(running.values()))
        failures.sort(key=lambda failure: failure.index)
        record.detail = f"{len(items) - len(failures)} of {len(items)} items done" + (
            f", {len(failures)} failed" if failures else ""
        )
        return Done(Mapped(results=results, failures=failures).model_dump(mode="json"))

    def _argument(self, shared: dict[str, Any], item: Any, index: int) -> BaseModel:
        try:
            return self.input_model.model_validate({**shared, self.each: item})
        except ValidationError as err:
            raise ApplicationError(
                f"node '{self.id}': item {index} does not fit {self.input_model.__name__}: {err}",
                type="InvalidNodeInput",
                non_retryable=True,
            ) from None

    def mermaid_shape(self) -> str:
        return f'[["{self.id}<br/><small>each {self.each}: {self.activity_name}</small>"]]'
