"""Declarative process graphs: steps, LLM calls and approval gates.

A process is declared as a :class:`Graph` of nodes. Every node names its inputs
explicitly (``{"text": "load.text"}`` reads field ``text`` of node ``load``'s
output; ``"input.path"`` reads the run's input; ``"extract"`` reads a whole
output), its retry policy and its timeout. The graph is validated when it is
built, so a broken process fails at import time with an error naming the node,
never halfway through a run.

Ordering: nodes run in declaration order unless ``after=`` names their
predecessors; nodes whose predecessors are all done run in parallel
(fan-out), and a node listing several predecessors waits for all (fan-in).
Loops are explicit :class:`Back` nodes with a visit bound; any other cycle is
an error.

This module is pure and deterministic: it runs inside Temporal workflows.
"""

from __future__ import annotations

import functools
import inspect
import re
import types
import typing
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal, TypeGuard

from pydantic import BaseModel, ConfigDict, Field, ValidationError, model_validator
from temporalio.common import RetryPolicy

INPUT = "input"
_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


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


if typing.TYPE_CHECKING:
    from baton.runner import RunView

    Predicate = Callable[[RunView], bool]
    Reasons = Callable[[RunView], Sequence[str]]
else:
    # pydantic checks only that a predicate is callable; importing RunView
    # here would make the graph depend on the runner.
    Predicate = Callable[[Any], bool]
    Reasons = Callable[[Any], Sequence[str]]


class Node(BaseModel):
    """Fields every node shares."""

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

    kind: typing.ClassVar[str] = "node"

    def __init__(self, id: str, /, **data: Any) -> None:
        try:
            super().__init__(id=id, **data)
        except ValidationError as err:
            problems = "; ".join(
                f"{'.'.join(map(str, e['loc'])) or 'node'}: {e['msg']}" for e in err.errors()
            )
            if "output" in data and not _is_model(data["output"]):
                problems = "an Ask needs an output schema (pydantic model)"
            raise GraphError(f"{self.kind} '{id}': {problems}") from None

    @property
    def condition_name(self) -> str | None:
        return None if self.when is None else self.when.__name__

    def output_fields(self) -> set[str] | None:
        """Field names a reference may read from this node's output, or None
        when the output has no fixed shape."""
        return None


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
    if not (_is_model(arg) and _is_model(ret)):
        raise GraphError(
            f"node '{node_id}': activity {fn.__name__} must take one pydantic "
            "model and return one (one model in, one out)"
        )
    return arg, ret


def _is_model(value: Any) -> TypeGuard[type[BaseModel]]:
    return isinstance(value, type) and issubclass(value, BaseModel)


def _model_fields(model: type[BaseModel]) -> set[str]:
    return set(model.model_fields)


def _accepts_none(annotation: Any) -> bool:
    origin = typing.get_origin(annotation)
    if origin in (typing.Union, types.UnionType):
        return type(None) in typing.get_args(annotation)
    return annotation is None or annotation is Any


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
        description="An activity that undoes this step when the run is stopped: it takes "
        "the step's output model",
    )

    kind: typing.ClassVar[str] = "step"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    @property
    def activity_name(self) -> str:
        defn = getattr(self.activity, "__temporal_activity_definition", None)
        return str(getattr(defn, "name", self.activity.__name__))

    @property
    def input_model(self) -> type[BaseModel]:
        return self._signature_models()[0]

    @property
    def output_model(self) -> type[BaseModel]:
        return self._signature_models()[1]

    def _signature_models(self) -> tuple[type[BaseModel], type[BaseModel]]:
        return _activity_models(self.id, self.activity)

    @property
    def compensation_input(self) -> type[BaseModel] | None:
        return None if self.compensate is None else _activity_models(self.id, self.compensate)[0]

    def output_fields(self) -> set[str]:
        return _model_fields(self.output_model)


class Ask(Node):
    """An LLM step: ``task`` names what to ask; the answer must validate
    against ``output``. Which model answers is decided by routing, not here."""

    task: str
    output: type[BaseModel]
    instructions: str = ""
    documents: tuple[str, ...] = Field(
        default=(),
        description="Inputs that are document references (baton.document_store): the model "
        "is given the document's text, the run keeps only the reference",
    )
    checks: tuple[Callable[[Any], list[str]], ...] = Field(
        default=(),
        description="Task validators: pure functions of the output returning the problems found",
    )
    timeout: timedelta = timedelta(seconds=120)
    # Model calls are slow and the `ask` activity heartbeats while it waits,
    # so a crashed worker's attempt is retried in seconds, a slow model is not.
    # The worker sends heartbeats every second (worker.HEARTBEAT_THROTTLE), so
    # 2 of these 3 s are slack for a busy worker. Not shorter: with 2 s and
    # the SDK's default throttle (1.6 s, 0.4 s slack), an overloaded worker
    # (10,000 runs starting) missed four heartbeats in a row for 3 runs.
    heartbeat: timedelta | None = timedelta(seconds=3)
    retry: Retry = Retry(max_attempts=4)

    kind: typing.ClassVar[str] = "ask"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    @model_validator(mode="after")
    def _documents_are_inputs(self) -> Ask:
        unknown = [name for name in self.documents if name not in self.inputs]
        if unknown:
            raise ValueError(
                f"documents {unknown} are not among its inputs ({', '.join(self.inputs)}); "
                "name the inputs that carry a document reference"
            )
        return self

    def output_fields(self) -> set[str]:
        return _model_fields(self.output)


class FourEyes(BaseModel):
    """Two approvals from two different users before a gate approves.
    ``when`` limits the rule to some runs (a large amount, say); without it
    every approval of the gate needs a second. With ``other_role`` the two
    approvers decide in two different roles: the gate's own and this one."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    when: Predicate | None = None
    other_role: str | None = None


class Gate(Node):
    """A human decision. The run waits until a user holding one of the gate's
    roles decides. ``subject`` names the node whose output the reviewer judges
    (and may override); ``inputs`` add what else they need to see.

    SLA: at ``remind_at`` of ``sla`` the gate's roles are reminded; at the SLA
    it escalates to the next role in ``escalate_to`` and each level gets the
    SLA again. When the chain is exhausted the gate ends as declared by
    ``on_exhausted``: ``"hold"`` adds ``hold_for`` (an administrator) and
    waits, ``"reject"`` rejects. A gate never approves by itself.

    ``changes_to`` lets a reviewer request changes: the run goes back to that
    node and through the gate again, at most ``max_changes`` times.

    ``why`` states, in sentences a reviewer reads, each reason the run came to
    the gate (a failed check, a confidence below its threshold, a missing
    field); they are shown with the subject, so they are part of what the
    decider signs, and the trail, status and reports carry them."""

    role: str
    subject: str | None = None
    why: Reasons | None = None
    sla: timedelta | None = None
    remind_at: float | None = Field(default=0.5, gt=0, lt=1)
    escalate_to: tuple[str, ...] = ()
    on_exhausted: Literal["hold", "reject"] = "hold"
    hold_for: str = "admin"
    four_eyes: FourEyes | None = None
    changes_to: str | None = None
    max_changes: int = Field(default=2, ge=1)
    timeout: timedelta = timedelta(0)

    kind: typing.ClassVar[str] = "gate"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        from baton.gates import GateDecision

        return _model_fields(GateDecision)


class Back(Node):
    """An edge back to an earlier node, taken while ``when`` holds: every node
    from ``to`` up to this one runs again. ``max_visits`` bounds how often
    ``to`` may run; past it the run fails visibly rather than loop forever."""

    to: str
    max_visits: int = Field(ge=2)

    kind: typing.ClassVar[str] = "back"
    __init__ = Node.__init__  # keeps the positional id for type checkers


AnyNode = Step | Ask | Gate | Back


class Graph(BaseModel):
    """A validated process definition."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    input: type[BaseModel]
    nodes: tuple[AnyNode, ...]
    description: str = ""
    purpose: str = Field(default="", description="Intended purpose, as the audit report states it")
    risk_class: str = Field(
        default="not declared",
        description="The AI Act risk class the operator assumes for this process",
    )
    stop_roles: tuple[str, ...] = Field(
        default=("admin",),
        description="Roles whose users may stop a run (the AI Act's stop button)",
    )

    def __init__(self, **data: Any) -> None:
        # Validated here rather than in a pydantic validator, which would
        # wrap GraphError in a ValidationError and bury the message.
        super().__init__(**data)
        _validate_graph(self)

    def node(self, node_id: str) -> AnyNode:
        for node in self.nodes:
            if node.id == node_id:
                return node
        raise KeyError(node_id)

    def predecessors(self, node_id: str) -> tuple[str, ...]:
        ids = [n.id for n in self.nodes]
        node = self.node(node_id)
        if node.after is not None:
            return node.after
        index = ids.index(node_id)
        return () if index == 0 else (ids[index - 1],)

    def ancestors(self, node_id: str) -> set[str]:
        seen: set[str] = set()
        stack = list(self.predecessors(node_id))
        while stack:
            current = stack.pop()
            if current not in seen:
                seen.add(current)
                stack.extend(self.predecessors(current))
        return seen

    def descendants(self, node_id: str) -> set[str]:
        return {n.id for n in self.nodes if node_id in self.ancestors(n.id)}

    def editable_model(self, gate_id: str) -> type[BaseModel] | None:
        """The model a reviewer's edited output must fit at ``gate_id``: an
        Ask's own output, or the output of the node a gate judges."""
        if gate_id not in {n.id for n in self.nodes}:
            return None
        node: AnyNode = self.node(gate_id)
        if isinstance(node, Gate) and node.subject is not None:
            node = self.node(node.subject)
        model: type[BaseModel] | None = None
        if isinstance(node, Ask):
            model = node.output
        elif isinstance(node, Step):
            model = node.output_model
        return model

    def mermaid(self) -> str:
        return render_mermaid(self)


def parse_ref(ref: str) -> tuple[str, str | None]:
    """``"load.text"`` -> ("load", "text"); ``"extract"`` -> ("extract", None)."""
    source, _, field = ref.partition(".")
    return source, (field.split(".")[0] if field else None)


def _validate_graph(graph: Graph) -> None:
    ids = [n.id for n in graph.nodes]
    if not graph.nodes:
        raise GraphError(f"graph '{graph.name}' has no nodes")
    for node in graph.nodes:
        if not _ID_PATTERN.match(node.id) or node.id == INPUT:
            raise GraphError(f"node '{node.id}': ids are lower_snake_case and may not be '{INPUT}'")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GraphError(f"node '{duplicates[0]}' is declared more than once")
    for node in graph.nodes:
        for pred in node.after or ():
            if pred not in ids:
                raise GraphError(f"node '{node.id}': after= names unknown node '{pred}'")
    _check_acyclic(graph)
    for node in graph.nodes:
        _validate_node(graph, node)


def _check_acyclic(graph: Graph) -> None:
    state: dict[str, str] = {}

    def visit(node_id: str, path: list[str]) -> None:
        if state.get(node_id) == "done":
            return
        if state.get(node_id) == "active":
            cycle = " -> ".join([*path[path.index(node_id) :], node_id])
            raise GraphError(
                f"node '{node_id}': cycle without a bound ({cycle}); "
                "declare loops as Back(..., to=..., max_visits=N)"
            )
        state[node_id] = "active"
        for pred in graph.predecessors(node_id):
            visit(pred, [*path, node_id])
        state[node_id] = "done"

    for node in graph.nodes:
        visit(node.id, [])


def _validate_node(graph: Graph, node: AnyNode) -> None:
    ancestors = graph.ancestors(node.id)
    for name, ref in node.inputs.items():
        source, field = parse_ref(ref)
        if source == INPUT:
            available: set[str] | None = _model_fields(graph.input)
        elif source not in {n.id for n in graph.nodes}:
            raise GraphError(f"node '{node.id}': input '{name}' reads unknown node '{source}'")
        elif source not in ancestors:
            raise GraphError(
                f"node '{node.id}': input '{name}' reads '{source}', which does not run "
                f"before it; add '{source}' to after="
            )
        else:
            available = graph.node(source).output_fields()
        if field is not None and available is not None and field not in available:
            raise GraphError(
                f"node '{node.id}': input '{name}' reads '{ref}', but '{source}' has no field "
                f"'{field}' (it has: {', '.join(sorted(available))})"
            )
    if isinstance(node, Step):
        _validate_step_inputs(graph, node)
        compensation_input = node.compensation_input
        if compensation_input is not None and compensation_input is not node.output_model:
            raise GraphError(
                f"node '{node.id}': compensate= takes {compensation_input.__name__}, but the "
                f"step's output is {node.output_model.__name__}; a compensation undoes the "
                "step from what the step returned"
            )
    elif isinstance(node, Ask):
        if not _is_model(node.output):
            raise GraphError(f"node '{node.id}': an Ask needs an output schema (pydantic model)")
        if not node.task:
            raise GraphError(f"node '{node.id}': an Ask needs a task name")
    elif isinstance(node, Gate):
        if not node.role.strip():
            raise GraphError(f"node '{node.id}': a gate needs a role that may decide it")
        if node.subject is not None and node.subject not in ancestors:
            raise GraphError(
                f"node '{node.id}': subject '{node.subject}' must be a node that runs before it"
            )
        if node.four_eyes is not None and node.four_eyes.other_role == node.role:
            raise GraphError(
                f"node '{node.id}': four_eyes.other_role must differ from the gate's role "
                f"'{node.role}'; leave it out for two approvers of the same role"
            )
        if node.changes_to is not None and node.changes_to not in ancestors:
            raise GraphError(
                f"node '{node.id}': changes_to='{node.changes_to}' must be a node that runs "
                "before it"
            )
    elif isinstance(node, Back):
        if node.when is None:
            raise GraphError(f"node '{node.id}': a Back edge needs when= (the loop condition)")
        if node.to not in ancestors:
            raise GraphError(
                f"node '{node.id}': Back(to='{node.to}') must point at a node that runs before it"
            )


def _validate_step_inputs(graph: Graph, node: Step) -> None:
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
        skippable = source != INPUT and graph.node(source).when is not None
        if skippable and not _accepts_none(info.annotation):
            raise GraphError(
                f"node '{node.id}': input '{name}' reads '{source}', which may be skipped "
                f"(when={graph.node(source).condition_name}); declare {model.__name__}."
                f"{name} as Optional"
            )
    unknown = sorted(set(node.inputs) - set(model.model_fields))
    if unknown:
        raise GraphError(
            f"node '{node.id}': {model.__name__} has no field '{unknown[0]}' "
            f"(it has: {', '.join(model.model_fields)})"
        )


def render_mermaid(graph: Graph, *, taken: Sequence[str] | None = None) -> str:
    """The graph as a Mermaid flowchart. ``taken`` highlights a run's path."""
    lines = ["flowchart TD", f"    {INPUT}([{graph.input.__name__}])"]
    for node in graph.nodes:
        lines.append(f"    {node.id}{_mermaid_shape(node)}")
    for node in graph.nodes:
        preds = graph.predecessors(node.id) or (INPUT,)
        for pred in preds:
            conditional = node.when is not None and not isinstance(node, Back)
            label = f"|{node.condition_name}|" if conditional else ""
            arrow = "-.->" if conditional else "-->"
            lines.append(f"    {pred} {arrow}{label} {node.id}")
        if isinstance(node, Back):
            lines.append(
                f"    {node.id} -.->|{node.condition_name}, at most {node.max_visits}x| {node.to}"
            )
        if isinstance(node, Gate) and node.changes_to is not None:
            lines.append(
                f"    {node.id} -.->|changes requested, at most {node.max_changes}x| "
                f"{node.changes_to}"
            )
    if taken:
        lines.append("    classDef taken stroke-width:3px,stroke:#2b8a3e")
        lines.append(f"    class {','.join(taken)} taken")
    return "\n".join(lines)


def _mermaid_shape(node: AnyNode) -> str:
    if isinstance(node, Step):
        return f'["{node.id}<br/><small>{node.activity_name}</small>"]'
    if isinstance(node, Ask):
        return f'[/"{node.id}<br/><small>LLM: {node.task}</small>"/]'
    if isinstance(node, Gate):
        return f'{{"{node.id}<br/><small>human: {node.role}</small>"}}'
    return f'(("{node.id}"))'


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
