"""Graph declarations are checked before any run; errors name node and fix."""

from __future__ import annotations

import re

import pytest
from pydantic import BaseModel

from baton.graph import Ask, Back, FourEyes, Gate, Graph, GraphError, Step
from baton.runner import RunInput, RunView
from workflows.document_intake import GRAPH


class Req(RunInput):
    path: str


class Text(BaseModel):
    text: str


class Count(BaseModel):
    words: int


class Maybe(BaseModel):
    text: str | None = None


async def read(request: Req) -> Text:
    return Text(text=request.path)


async def count(request: Text) -> Count:
    return Count(words=len(request.text.split()))


async def count_maybe(request: Maybe) -> Count:
    return Count(words=0)


def always(run: RunView) -> bool:
    return True


def build(*nodes: object) -> Graph:
    return Graph(name="t", input=Req, nodes=nodes)  # type: ignore[arg-type]


def test_document_intake_graph_is_valid_and_ordered() -> None:
    ids = ["load", "extract", "duplicates", "validate", "review", "enter"]
    assert [n.id for n in GRAPH.nodes] == ids
    assert GRAPH.predecessors("extract") == ("load",)
    assert GRAPH.ancestors("enter") == set(ids) - {"enter"}


def test_unknown_reference_names_the_node() -> None:
    with pytest.raises(GraphError, match="node 'count': input 'text' reads unknown node 'nope'"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Step("count", activity=count, inputs={"text": "nope.text"}),
        )


def test_unknown_field_lists_the_fields_there_are() -> None:
    with pytest.raises(GraphError, match=re.escape("'read' has no field 'body' (it has: text)")):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Step("count", activity=count, inputs={"text": "read.body"}),
        )


def test_unbound_input_is_refused() -> None:
    with pytest.raises(GraphError, match="node 'count': input 'text' of Text is not bound"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Step("count", activity=count),
        )


def test_reading_a_node_that_does_not_run_before() -> None:
    with pytest.raises(GraphError, match="reads 'late', which does not run before it"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Step("count", activity=count, inputs={"text": "late.text"}, after=("read",)),
            Step("late", activity=read, inputs={"path": "input.path"}, after=("read",)),
        )


def test_cycle_without_bound_is_refused() -> None:
    with pytest.raises(GraphError, match=r"cycle without a bound \(.*\); declare loops as Back"):
        build(
            Step("a", activity=read, inputs={"path": "input.path"}, after=("b",)),
            Step("b", activity=read, inputs={"path": "input.path"}, after=("a",)),
        )


def test_gate_without_role_is_refused() -> None:
    with pytest.raises(GraphError, match="node 'review': a gate needs a role"):
        build(Step("read", activity=read, inputs={"path": "input.path"}), Gate("review", role=" "))


def test_ask_without_output_schema_is_refused() -> None:
    with pytest.raises(GraphError, match="ask 'ask': an Ask needs an output schema"):
        build(Ask("ask", task="x", output=dict, inputs={"p": "input.path"}))


def test_skippable_source_needs_an_optional_field() -> None:
    with pytest.raises(GraphError, match=r"reads 'read', which may be skipped .* as Optional"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}, when=always),
            Step("count", activity=count, inputs={"text": "read.text"}),
        )
    ok = build(
        Step("read", activity=read, inputs={"path": "input.path"}, when=always),
        Step("count", activity=count_maybe, inputs={"text": "read.text"}),
    )
    assert ok.node("count").inputs == {"text": "read.text"}


def test_activity_must_take_and_return_one_model() -> None:
    async def loose(a: str, b: str) -> str:
        return a

    with pytest.raises(GraphError, match="must take one pydantic model and return one"):
        build(Step("loose", activity=loose))


def test_back_edge_must_point_backwards_and_have_a_condition() -> None:
    with pytest.raises(GraphError, match="Back edge needs when="):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Back("again", to="read", max_visits=3),
        )
    with pytest.raises(GraphError, match="must point at a node that runs before it"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Back("again", to="later", max_visits=3, when=always),
            Step("later", activity=read, inputs={"path": "input.path"}),
        )


def test_duplicate_and_reserved_ids() -> None:
    with pytest.raises(GraphError, match="node 'read' is declared more than once"):
        build(
            Step("read", activity=read, inputs={"path": "input.path"}),
            Step("read", activity=read, inputs={"path": "input.path"}),
        )
    with pytest.raises(GraphError, match="may not be 'input'"):
        build(Step("input", activity=read, inputs={"path": "input.path"}))


def test_mermaid_shows_nodes_conditions_and_loops() -> None:
    diagram = GRAPH.mermaid()
    assert diagram.startswith("flowchart TD")
    assert "validate -.->|needs_review| review" in diagram
    assert "review --> enter" in diagram
    assert "LLM: extract_fields" in diagram
    assert "human: reviewer" in diagram
    looped = build(
        Step("read", activity=read, inputs={"path": "input.path"}),
        Back("again", to="read", max_visits=3, when=always),
    ).mermaid()
    assert "again -.->|always, at most 3x| read" in looped


def test_gate_policies_name_the_node_and_the_fix() -> None:
    read_step = Step("read", activity=read, inputs={"path": "input.path"})
    with pytest.raises(
        GraphError, match=re.escape("four_eyes.other_role must differ from the gate's role")
    ):
        build(read_step, Gate("ok", role="reviewer", four_eyes=FourEyes(other_role="reviewer")))
    with pytest.raises(GraphError, match="node 'ok': changes_to='later' must be a node that runs"):
        build(
            read_step,
            Gate("ok", role="reviewer", changes_to="later"),
            Back("later", to="read", when=always, max_visits=2),
        )
    with pytest.raises(GraphError, match="remind_at: Input should be less than 1"):
        Gate("ok", role="reviewer", remind_at=1.5)


def test_a_compensation_takes_what_its_step_returned() -> None:
    with pytest.raises(
        GraphError, match=re.escape("compensate= takes Req, but the step's output is Text")
    ):
        build(Step("read", activity=read, inputs={"path": "input.path"}, compensate=read))


def test_mermaid_shows_the_change_request_edge() -> None:
    assert "review -.->|changes requested, at most 2x| extract" in GRAPH.mermaid()
