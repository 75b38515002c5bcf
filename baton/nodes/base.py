"""What every node kind is: the fields all nodes share, and the small
protocol each kind implements.

A kind validates itself against its graph, names the fields of its output
(so references to it are checked when the graph is built), runs inside the
workflow on the run's :class:`~baton.state.RunState`, names the activities a
worker must register for it, and draws itself in the graph's Mermaid
diagram. The runner knows nothing about any kind beyond this protocol.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Protocol, TypeGuard, TypeVar

from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from baton.state import Compensable, NodeRecord, RunState, RunView

if TYPE_CHECKING:
    from baton.audit.trail import Trail
    from baton.graph import Graph

INPUT = "input"
# "policy.<name>.<setting>" reads the run's [policies.<name>] table, as the
# graph's loader for it checked it.
POLICY = "policy"
NOT_NODES = frozenset({INPUT, POLICY})

T = TypeVar("T")


class GraphError(ValueError):
    """A graph declaration that cannot run; the message names the node and the fix."""


class Retry(BaseModel):
    """How Temporal retries a node's activity. Errors raised as non-retryable
    application errors (or whose type is listed here) stop at once."""

    model_config = ConfigDict(frozen=True)

    max_attempts: int = Field(default=5, ge=1)
    initial_interval: timedelta = timedelta(seconds=1)
    backoff: float = Field(default=2.0, ge=1.0)
    max_interval: timedelta = timedelta(seconds=30)
    non_retryable: tuple[str, ...] = ()

    def to_temporal(self) -> RetryPolicy:
        return RetryPolicy(
            maximum_attempts=self.max_attempts,
            initial_interval=self.initial_interval,
            backoff_coefficient=self.backoff,
            maximum_interval=self.max_interval,
            non_retryable_error_types=list(self.non_retryable),
        )


Predicate = Callable[[RunView], bool]
Reasons = Callable[[RunView], Sequence[str]]


def all_of(*conditions: Predicate) -> Predicate:
    """A ``when=`` that holds where every one of ``conditions`` holds, asked
    in order (a later one may rely on an earlier). A node under it may read,
    without Optional, a node skipped only by one of them."""

    def holds(run: RunView) -> bool:
        return all(condition(run) for condition in conditions)

    holds.__name__ = "_and_".join(c.__name__ for c in conditions)
    holds.conjuncts = conditions  # type: ignore[attr-defined]
    return holds


def conjuncts(condition: Predicate | None) -> tuple[Predicate, ...]:
    """The conditions a ``when=`` holds only where all of them hold."""
    if condition is None:
        return ()
    return (condition, *getattr(condition, "conjuncts", ()))


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"load.text"`` -> ("load", "text"); ``"extract"`` -> ("extract", None)."""
    source, _, field = ref.partition(".")
    return source, (field.split(".")[0] if field else None)


class Run(Protocol):
    """What a node kind sees of the run it runs in: the workflow's graph,
    its state and trail, and what the runner computes from them."""

    @property
    def graph(self) -> Graph: ...

    state: RunState
    trail: Trail

    def resolve(self, inputs: Mapping[str, str]) -> dict[str, Any]: ...

    def view(self) -> RunView: ...

    def publish(self) -> None: ...

    def cost(self) -> float: ...

    def parked(
        self, node_id: str, *, fresh_history: bool = False
    ) -> AbstractContextManager[None]: ...


def resumed(record: NodeRecord) -> bool:
    """Whether this visit was carried into the run's next execution while it
    waited (see ``Run.parked``, baton.carry): a kind that parks goes on
    waiting from what its record kept, and announces nothing again."""
    return record.status == "waiting"


@dataclass(frozen=True)
class Done:
    """A node's finished visit: its output and, for an edge back, the node
    from which the run goes through this one again."""

    output: Any = None
    back_to: str | None = None


# An activity function, or the name of one of Baton's own activities (the
# model call, the gate notices) that the worker registers for every process.
ActivityRef = Callable[..., Any] | str


class Node(BaseModel):
    """Fields every node shares, and the protocol every kind implements."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    id: str
    after: tuple[str, ...] | None = None
    when: Predicate | None = None
    inputs: Mapping[str, str] = Field(default_factory=dict)
    retry: Retry = Retry()
    timeout: timedelta = timedelta(seconds=30)
    heartbeat: timedelta | None = Field(
        default=None,
        description="Activities that heartbeat: a lost worker is noticed after this, not after "
        "the whole timeout",
    )
    description: str = ""
    since: str | None = Field(
        default=None,
        description="The patch this node was added under (workflow.patched): runs started "
        "before it skip the node, so their histories still replay",
    )

    kind: ClassVar[str] = "node"
    # Whether a false `when=` skips the node; an edge back reads it as its loop condition.
    when_skips: ClassVar[bool] = True
    # Whether a person may be asked to decide at this node (a `decide` names it).
    opens_gate: ClassVar[bool] = False

    def __init__(self, id: str, /, **data: Any) -> None:
        try:
            super().__init__(id=id, **data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'node'}: {e['msg']}" for e in err.errors()
            )
            if "output" in data and not is_model(data["output"]):
                problems = "an Ask needs an output schema (pydantic model)"
            raise GraphError(f"{self.kind} '{id}': {problems}") from None

    @property
    def condition_name(self) -> str | None:
        return None if self.when is None else self.when.__name__

    def output_fields(self) -> set[str] | None:
        """Field names a reference may read from this node's output, or None
        when the output has no fixed shape."""
        return None

    def answer_model(self) -> type[BaseModel] | None:
        """The model of this node's output where a reviewer may replace it."""
        return None

    def edited_model(self, graph: Graph) -> type[BaseModel] | None:
        """The model a reviewer's edited output must fit when deciding here."""
        return self.answer_model()

    def awaited_events(self) -> Mapping[str, tuple[str, ...]]:
        """The outside events this node takes, each with the roles whose
        users may send it."""
        return {}

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        """Raise a GraphError naming this node if it cannot run in ``graph``
        (``ancestors``: the nodes that run before it)."""

    def activities(self) -> Sequence[ActivityRef]:
        """What a worker must register to run this node."""
        return ()

    async def run(self, run: Run, record: NodeRecord) -> Done:
        """One visit, inside the workflow. An ApplicationError fails the node
        with its message; an ActivityError fails it naming the cause."""
        raise NotImplementedError

    async def undo(self, run: Run, entry: Compensable) -> BaseModel:
        """Compensate a visit; asked only of visits the node listed in
        ``RunState.compensable``, which may never have returned (``entry.
        finished`` False: see baton.compensation)."""
        raise NotImplementedError

    def mermaid_shape(self) -> str:
        return f'(("{self.id}"))'

    def mermaid_edges(self) -> list[str]:
        """Edges of this node's own besides those from its predecessors."""
        return []

    def routed_tasks(self) -> Sequence[str]:
        """The routing tasks (routing.toml ``[tasks.<task>]``) this node plans by."""
        return ()

    def own_edges(self) -> dict[str, Any]:
        """Those edges as the graph's digest counts them."""
        return {}


def is_model(value: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(value, type) and issubclass(value, BaseModel)


def activity_options(run: Run, node: Node, record: NodeRecord) -> dict[str, Any]:
    """The activity options of a node's visit: its id ``<node>#<visit>``
    doubles as the idempotency key of system writes."""
    options: dict[str, Any] = {
        "activity_id": f"{node.id}#{record.visits}",
        "start_to_close_timeout": node.timeout,
        "retry_policy": node.retry.to_temporal(),
        "summary": f"{run.graph.name}.{node.id}",
    }
    if node.heartbeat is not None:
        options["heartbeat_timeout"] = node.heartbeat
    return options


def problems(err: ValidationError, whole: str = "value") -> list[str]:
    """Each validation error as "<field path>: <message>"; ``whole`` names
    an error about the value itself."""
    return [f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in err.errors()]


def schema_problems(model: type[BaseModel], output: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(output)
    except ValidationError as err:
        return problems(err, "answer")
    return []


def _first_application_error(err: BaseException) -> ApplicationError | None:
    """The error the activity raised: the first application error in the
    chain (deeper causes are the SDK errors it was made from)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__
    return None


async def unless_failed(call: Awaitable[T]) -> tuple[T | None, ActivityError | None]:
    """(result, None), or (None, the error) when the activity failed: for a
    caller with somewhere else to turn (the next candidate, the model told
    of a tool's failure). A cancellation is no failure: it passes through."""
    try:
        return await call, None
    except ActivityError as err:
        if is_cancelled_exception(err):
            raise
        return None, err


def root_message(err: BaseException) -> str:
    raised = _first_application_error(err)
    return raised.message if raised is not None else str(err)


def error_type(err: BaseException) -> str | None:
    raised = _first_application_error(err)
    return raised.type if raised is not None else None


def model_fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)
