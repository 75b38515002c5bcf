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

Each node kind (:mod:`baton.nodes`) checks itself, names its output's fields
and draws itself; this module holds what is graph-wide: ordering, cycles,
references between nodes, and the diagram.

This module is pure and deterministic: it runs inside Temporal workflows.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import timedelta
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, PrivateAttr

from baton.nodes.agent import Agent
from baton.nodes.ask import Ask
from baton.nodes.awaiting import Await, Awaited
from baton.nodes.back import Back
from baton.nodes.base import (
    INPUT,
    NOT_NODES,
    POLICY,
    GraphError,
    Node,
    Retry,
    all_of,
    model_fields,
    parse_ref,
)
from baton.nodes.gate import Approvers, FourEyes, Gate
from baton.nodes.map import Map, Mapped
from baton.nodes.step import Step
from baton.nodes.sub import Sub, SubResult
from baton.nodes.wait import Wait, Waited
from baton.state import RunView

__all__ = [
    "INPUT",
    "POLICY",
    "Agent",
    "Approvers",
    "Ask",
    "Await",
    "Awaited",
    "Back",
    "FourEyes",
    "Gate",
    "Graph",
    "GraphError",
    "Map",
    "Mapped",
    "Node",
    "Retry",
    "Step",
    "Sub",
    "SubResult",
    "Wait",
    "Waited",
    "all_of",
    "hours",
    "parse_ref",
    "render_mermaid",
]

PolicyLoader = Callable[[Mapping[str, Any]], BaseModel]
EventKey = Callable[[RunView], str]

_ID_PATTERN = re.compile(r"^[a-z][a-z0-9_]*$")


class Graph(BaseModel):
    """A validated process definition."""

    model_config = ConfigDict(frozen=True, arbitrary_types_allowed=True)

    name: str
    input: type[BaseModel]
    nodes: tuple[Node, ...]
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
    on_failure: Literal["fail", "compensate"] = Field(
        default="fail",
        description="When a node fails for good: 'fail' ends the run failed; 'compensate' "
        "first undoes what the run's compensable steps did (baton.compensation), then fails "
        "it with the node's reason",
    )
    policies: Mapping[str, PolicyLoader] = Field(
        default_factory=dict,
        description="The [policies.<name>] tables the process steers by, each with the "
        "function that checks it (raising ValueError naming the setting and the fix): "
        "checked when a run starts, read by predicates through RunView.policy",
    )
    event_keys: Mapping[str, EventKey] = Field(
        default_factory=dict,
        description="Events that are only ever about this run's own thing, each with the "
        "function of the run (of its input: it is asked whenever an event arrives) that "
        "names it: an event with another key is refused and recorded, not kept. Events not "
        "named here keep news about anything, for an Await whose key comes later",
    )
    workflow_id: Callable[[Any], str] | None = Field(
        default=None,
        description="The workflow id of a run, from its input: one run at a time per "
        "business thing (an account), since Temporal refuses a second running one",
    )
    _digest: str | None = PrivateAttr(default=None)

    def __init__(self, **data: Any) -> None:
        # Validated here rather than in a pydantic validator, which would
        # wrap GraphError in a ValidationError and bury the message.
        super().__init__(**data)
        _validate_graph(self)

    def node(self, node_id: str) -> Node:
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

    def workflow_id_for(self, request: BaseModel) -> str | None:
        return None if self.workflow_id is None else self.workflow_id(request)

    def editable_model(self, gate_id: str) -> type[BaseModel] | None:
        """The model a reviewer's edited output must fit at ``gate_id``: an
        Ask's own output, or the output of the node a gate judges."""
        if gate_id not in {n.id for n in self.nodes}:
            return None
        return self.node(gate_id).edited_model(self)

    def mermaid(self) -> str:
        return render_mermaid(self)

    def routed_tasks(self) -> list[str]:
        """The routing tasks its nodes plan by: the routes a run snapshots."""
        return sorted({task for node in self.nodes for task in node.routed_tasks()})

    def digest(self) -> str:
        """What the process is, as 16 hex digits: its nodes, their kinds,
        edges (a Back's too, with what it tells), inputs, conditions,
        versions and activities. Recorded at every run's start and in its
        status, so a run says which graph it ran."""
        # Built once at import and never changed, while the status query that
        # shows the digest is asked on every poll: digested once.
        if self._digest is None:
            self._digest = _shape_digest(self)
        return self._digest


def _shape_digest(graph: Graph) -> str:
    shape = [
        {
            "id": node.id,
            "kind": node.kind,
            "after": sorted(graph.predecessors(node.id)),
            "inputs": dict(node.inputs),
            "when": node.condition_name,
            "since": node.since,
            "activities": [a if isinstance(a, str) else a.__name__ for a in node.activities()],
            **node.own_edges(),
        }
        for node in graph.nodes
    ]
    text = json.dumps({"name": graph.name, "nodes": shape}, sort_keys=True)
    return hashlib.sha256(text.encode()).hexdigest()[:16]


def _validate_graph(graph: Graph) -> None:
    ids = [n.id for n in graph.nodes]
    if not graph.nodes:
        raise GraphError(f"graph '{graph.name}' has no nodes")
    for node in graph.nodes:
        if not _ID_PATTERN.match(node.id) or node.id in NOT_NODES:
            raise GraphError(
                f"node '{node.id}': ids are lower_snake_case and may not be '{INPUT}' or '{POLICY}'"
            )
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise GraphError(f"node '{duplicates[0]}' is declared more than once")
    for node in graph.nodes:
        for pred in node.after or ():
            if pred not in ids:
                raise GraphError(f"node '{node.id}': after= names unknown node '{pred}'")
    _check_acyclic(graph)
    awaited = {event for node in graph.nodes for event in node.awaited_events()}
    for event in graph.event_keys:
        if event not in awaited:
            raise GraphError(
                f"graph '{graph.name}': event_keys names '{event}', which no Await node "
                f"waits for (they wait for: {', '.join(sorted(awaited)) or 'nothing'})"
            )
    for node in graph.nodes:
        ancestors = graph.ancestors(node.id)
        _validate_inputs(graph, node, ancestors)
        node.validate_in(graph, ancestors)


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


def _validate_inputs(graph: Graph, node: Node, ancestors: set[str]) -> None:
    for name, ref in node.inputs.items():
        source, field = parse_ref(ref)
        if source == INPUT:
            available: set[str] | None = model_fields(graph.input)
        elif source == POLICY:
            available = set(graph.policies)
            if field is None or field not in available:
                raise GraphError(
                    f"node '{node.id}': input '{name}' reads '{ref}'; a policy reference is "
                    f"'{POLICY}.<name>[.<setting>]' with a name the graph's policies= declares "
                    f"(it declares: {', '.join(sorted(available)) or 'none'})"
                )
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


def render_mermaid(graph: Graph, *, taken: Sequence[str] | None = None) -> str:
    """The graph as a Mermaid flowchart. ``taken`` highlights a run's path."""
    lines = ["flowchart TD", f"    {INPUT}([{graph.input.__name__}])"]
    for node in graph.nodes:
        lines.append(f"    {node.id}{node.mermaid_shape()}")
    for node in graph.nodes:
        preds = graph.predecessors(node.id) or (INPUT,)
        for pred in preds:
            conditional = node.when is not None and node.when_skips
            label = f"|{node.condition_name}|" if conditional else ""
            arrow = "-.->" if conditional else "-->"
            lines.append(f"    {pred} {arrow}{label} {node.id}")
        lines.extend(f"    {edge}" for edge in node.mermaid_edges())
    if taken:
        lines.append("    classDef taken stroke-width:3px,stroke:#2b8a3e")
        lines.append(f"    class {','.join(taken)} taken")
    return "\n".join(lines)


def hours(n: float) -> timedelta:
    return timedelta(hours=n)
