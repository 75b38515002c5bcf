"""Agents and tools on the time-skipping server, the model turns through the
real openai SDK against the scripted wire-level server: a tool-calling loop
that ends in a valid answer, a gated tool with side effects, the turn and
budget bounds reaching a person, bad calls fed back to the model, the
`tool.call` audit trail, a loop's findings handed back by a Back edge, an
Agent mapped over a list (one loop per item, an item's bound its failure),
and tools answering an Ask before any model."""

from __future__ import annotations

import asyncio
import json
from datetime import timedelta
from typing import Any

import pytest
from pydantic import BaseModel
from temporalio import workflow
from temporalio.client import WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, decide, run_status, start_run
from baton.config import RunConfig
from baton.document_store import DocumentRef, document_store
from baton.gates import Decision
from baton.graph import Agent, Ask, Back, Gate, Graph, GraphError, Node, hours
from baton.llm.offline import AGENT_POLICIES
from baton.llm.turns import (
    ToolCall,
    TurnAnswer,
    TurnRequest,
    parse_arguments,
    read_final,
    read_text_answer,
)
from baton.nodes.agent import MAX_CALLS_PER_TURN
from baton.routing import Candidate, ProviderSpec, TaskRoute, Tier, routing_table
from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
from baton.tools import CannotAnswer, spec_of, tool
from tests.fake_llm import Fault, Reply, ScriptedLLMServer, ToolCalls
from tests.helpers import STARTED, eventually, settled, terminate_started
from tests.routing_config import answer, config
from worker import build_worker

# -- the tools ------------------------------------------------------------------


class Lookup(BaseModel):
    sku: str


class Price(BaseModel):
    sku: str
    usd: float


class Order(BaseModel):
    sku: str
    quantity: int


class Placed(BaseModel):
    order_id: str


CATALOG = {"A1": 10.0, "B2": 4.5}
ORDERS: list[str] = []


@tool(description="The list price of a SKU, from the catalog")
async def look_up_price(args: Lookup) -> Price:
    if args.sku not in CATALOG:
        raise CannotAnswer(f"no SKU {args.sku} in the catalog")
    return Price(sku=args.sku, usd=CATALOG[args.sku])


@tool(description="Place an order with the supplier", side_effects=True)
async def place_order(args: Order) -> Placed:
    ORDERS.append(f"{args.sku}x{args.quantity}")
    return Placed(order_id=f"PO-{len(ORDERS)}")


class Stock(BaseModel):
    sku: str
    units: int


class InFlight:
    """How many stock lookups run at once, and the most seen."""

    now = 0
    most = 0


@tool(description="Units in stock of a SKU")
async def stock_level(args: Lookup) -> Stock:
    InFlight.now += 1
    InFlight.most = max(InFlight.most, InFlight.now)
    try:
        # Long enough for the worker to start every lookup it is allowed to.
        await asyncio.sleep(0.2)
        return Stock(sku=args.sku, units=len(args.sku))
    finally:
        InFlight.now -= 1


@tool(description="The catalog price, when the catalog has the SKU", name="catalog_price")
async def catalog_lookup(args: Lookup) -> Price | None:
    return Price(sku=args.sku, usd=CATALOG[args.sku]) if args.sku in CATALOG else None


# -- the processes --------------------------------------------------------------


class QuoteRequest(RunInput):
    sku: str
    quantity: int


class Quote(BaseModel):
    sku: str
    total_usd: float
    order_id: str | None = None


def priced(quote: Quote) -> list[str]:
    return [] if quote.total_usd > 0 else ["total_usd: a quote must cost something"]


def quoting(name: str, *extra: Node, input: type[RunInput] = QuoteRequest, **agent: Any) -> Graph:
    return Graph(
        name=name,
        input=input,
        nodes=(
            Agent(
                "quote",
                task="quote",
                output=Quote,
                **{
                    "tools": (look_up_price, place_order, stock_level),
                    "instructions": "Price the order; place it if asked.",
                    "checks": (priced,),
                    "inputs": {"sku": "input.sku", "quantity": "input.quantity"},
                    **agent,
                },
            ),
            *extra,
        ),
    )


@workflow.defn(name="agent_quote", sandboxed=False)
class AgentQuote(GraphWorkflow):
    graph = quoting("agent_quote", max_turns=4)

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="agent_quote_short", sandboxed=False)
class AgentQuoteShort(GraphWorkflow):
    graph = quoting("agent_quote_short", max_turns=2)

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="agent_quote_budget", sandboxed=False)
class AgentQuoteBudget(GraphWorkflow):
    graph = quoting("agent_quote_budget", budget_usd=0.1)

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="agent_quote_escalating", sandboxed=False)
class AgentQuoteEscalating(GraphWorkflow):
    graph = quoting(
        "agent_quote_escalating", tool_gate_sla=hours(1), tool_gate_escalate_to=("supervisor",)
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="agent_quote_reviewed", sandboxed=False)
class AgentQuoteReviewed(GraphWorkflow):
    graph = quoting(
        "agent_quote_reviewed",
        Gate("review", role="reviewer", subject="quote", changes_to="quote", max_changes=1),
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="ask_price", sandboxed=False)
class AskPrice(GraphWorkflow):
    graph = Graph(
        name="ask_price",
        input=QuoteRequest,
        nodes=(
            Ask(
                "price",
                task="price",
                output=Price,
                tools=(catalog_lookup,),
                inputs={"sku": "input.sku"},
            ),
        ),
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


CEILING_USD = 28.0


def too_dear(run: RunView) -> bool:
    quote = run.get("quote", Quote)
    return quote is not None and quote.total_usd > CEILING_USD


def over_the_ceiling(run: RunView) -> list[str]:
    quote = run.get("quote", Quote)
    assert quote is not None
    return [f"the total {quote.total_usd} is above the ceiling of {CEILING_USD}"]


@workflow.defn(name="agent_quote_looped", sandboxed=False)
class AgentQuoteLooped(GraphWorkflow):
    graph = quoting(
        "agent_quote_looped",
        Back("again", to="quote", when=too_dear, feedback=over_the_ceiling, max_visits=2),
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


class BasketRequest(RunInput):
    skus: list[str]
    quantity: int


def basket(name: str, *extra: Node, **agent: Any) -> Graph:
    """One quote per SKU of the basket, by a loop of its own."""
    return Graph(
        name=name,
        input=BasketRequest,
        nodes=(
            Agent(
                "quote",
                task="quote",
                output=Quote,
                inputs={"sku": "input.skus", "quantity": "input.quantity"},
                **{
                    "tools": (look_up_price,),
                    "each": "sku",
                    "concurrency": 2,
                    "max_turns": 3,
                    **agent,
                },
            ),
            *extra,
        ),
    )


@workflow.defn(name="agent_basket", sandboxed=False)
class AgentBasket(GraphWorkflow):
    graph = basket("agent_basket")

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


@workflow.defn(name="agent_basket_reviewed", sandboxed=False)
class AgentBasketReviewed(GraphWorkflow):
    # One item at a time: the scripted server answers in the order asked.
    graph = basket(
        "agent_basket_reviewed",
        Gate("review", role="reviewer", subject="quote", changes_to="quote", max_changes=1),
        concurrency=1,
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


class LetterRequest(RunInput):
    # By reference: the starter puts the customer's letter in the document store.
    letter: DocumentRef


@workflow.defn(name="agent_letter", sandboxed=False)
class AgentLetter(GraphWorkflow):
    graph = quoting(
        "agent_letter",
        input=LetterRequest,
        inputs={"letter": "input.letter"},
        documents=("letter",),
    )

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        return await self.execute(request)


PROCESSES = [
    AgentQuote,
    AgentLetter,
    AgentQuoteShort,
    AgentQuoteBudget,
    AgentQuoteEscalating,
    AgentQuoteReviewed,
    AgentQuoteLooped,
    AgentBasket,
    AgentBasketReviewed,
    AskPrice,
]


def agent_config(
    server: ScriptedLLMServer, *, tools: list[str] | None = None, tier: str = "cheap"
) -> RunConfig:
    """The test routing with the tasks of these processes on ``tier`` (by
    default the cheap one: gpt-cheap, $0.15 / $0.60 per Mtok), then a person."""
    base = config(server, cascade=["cheap", "human"], budget=None)
    routing = base.routing
    tasks = {
        **routing.tasks,
        "quote": TaskRoute(cascade=[tier, "human"]),
        "price": TaskRoute(cascade=["cheap", "human"], tools=tools or []),
    }
    tiers = {
        **routing.tiers,
        "pair": Tier(
            candidates=[
                Candidate(provider="openai", model="gpt-refuses"),
                Candidate(provider="openai", model="gpt-b"),
            ]
        ),
        "rules": Tier(candidates=[Candidate(provider="offline", model="rules")]),
    }
    providers = {**routing.providers, "offline": ProviderSpec(kind="offline")}
    routing = routing.model_copy(update={"tasks": tasks, "tiers": tiers, "providers": providers})
    return base.model_copy(update={"routing": routing})


async def start(
    env: WorkflowEnvironment,
    queue: str,
    cls: type[GraphWorkflow],
    sku: str = "A1",
    quantity: int = 3,
    request: RunInput | None = None,
) -> WorkflowHandle[Any, RunResult]:
    handle = await start_run(
        env.client,
        cls,
        request or QuoteRequest(sku=sku, quantity=quantity, requested_by="carl"),
        task_queue=queue,
        workflow_id=f"{cls.graph.name}-{queue}",
    )
    STARTED.append(handle)
    return handle


def worker(env: WorkflowEnvironment, queue: str, server: ScriptedLLMServer, **route: Any) -> Worker:
    return build_worker(
        env.client,
        task_queue=queue,
        extra_workflows=PROCESSES,
        run_config=agent_config(server, **route),
    )


def events(workflow_id: str, kind: str) -> list[dict[str, Any]]:
    records = open_store(AuditSettings.from_env().url).records(workflow_id)
    return [r.data for r in records if r.event_type == kind]


def tool_messages(server: ScriptedLLMServer, request: int) -> list[dict[str, Any]]:
    body = server.requests_for("gpt-cheap")[request].body
    return [m for m in body["messages"] if m["role"] == "tool"]


@pytest.fixture(autouse=True)
def no_orders() -> None:
    ORDERS.clear()


# -- the loop ---------------------------------------------------------------------


async def test_turns_call_tools_until_the_model_gives_a_valid_answer(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls([("look_up_price", {"sku": "A1"})], input_tokens=1000, output_tokens=20),
        Reply({"sku": "A1", "total_usd": 30.0}, input_tokens=1200, output_tokens=30),
    )
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        result = await handle.result()
        status = await run_status(time_skipping_env.client, handle.id)

    assert result.outcome == "completed"
    assert result.outputs["quote"] == {"sku": "A1", "total_usd": 30.0, "order_id": None}
    first, second = (r.body for r in llm.requests_for("gpt-cheap"))
    offered = [t["function"]["name"] for t in first["tools"]]
    assert offered == ["look_up_price", "place_order", "stock_level", "final_answer"]
    assert json.loads(first["messages"][1]["content"].removeprefix("Inputs:\n")) == {
        "quantity": 3,
        "sku": "A1",
    }
    assert [m["role"] for m in second["messages"]] == ["system", "user", "assistant", "tool"]
    assert json.loads(tool_messages(llm, 1)[0]["content"]) == {"sku": "A1", "usd": 10.0}
    record = next(r for r in status.nodes if r.node == "quote")
    assert record.meta["turns_taken"] == 2
    assert record.meta["cost_usd"] == pytest.approx((2200 * 0.15 + 50 * 0.60) / 1e6)
    inferences = events(handle.id, "ai.inference")
    assert [e["outcome"] for e in inferences] == ["tool_calls", "answered"]
    assert [e["input_tokens"] for e in inferences] == [1000, 1200]
    (call,) = events(handle.id, "tool.call")
    assert call["tool"] == "look_up_price"
    assert call["arguments"] == {"sku": "A1"}
    assert call["result"] == {"sku": "A1", "usd": 10.0}
    assert call["outcome"] == "ok"
    assert call["approved_by"] is None
    assert "duration_s" in call and "started_at" in call


async def test_a_tool_with_side_effects_runs_only_once_a_person_approved_the_call(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls([("place_order", {"sku": "A1", "quantity": 3})]),
        Reply({"sku": "A1", "total_usd": 30.0, "order_id": "PO-1"}),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        waiting = await settled(client, handle.id)
        gate = next(g for g in waiting.gates if g.gate == "quote")
        assert gate.shown["tool"] == "place_order"
        assert gate.shown["arguments"] == {"sku": "A1", "quantity": 3}
        assert gate.roles == ["reviewer"]
        assert ORDERS == []
        # The person approves or refuses the call as the model asked for it:
        # an edit would change nothing the call does, so it is refused.
        edited = {"sku": "A1", "total_usd": 1.0, "order_id": "PO-9"}
        with pytest.raises(DecisionRefused, match="no AI output that an edit could replace"):
            await decide(
                client,
                handle.id,
                Decision(gate="quote", user="rita", outcome="approve", output=edited, comment="x"),
            )
        await decide(client, handle.id, Decision(gate="quote", user="rita", outcome="approve"))
        result = await handle.result()

    assert ORDERS == ["A1x3"]
    assert result.outputs["quote"]["order_id"] == "PO-1"
    assert json.loads(tool_messages(llm, 1)[0]["content"]) == {"order_id": "PO-1"}
    (call,) = events(handle.id, "tool.call")
    assert (call["tool"], call["approved_by"], call["outcome"]) == ("place_order", "rita", "ok")


async def test_an_approval_not_given_in_time_escalates_as_the_agent_declares(
    own_clock: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls([("place_order", {"sku": "A1", "quantity": 3})]),
        Reply({"sku": "A1", "total_usd": 30.0, "order_id": "PO-1"}),
    )
    client = own_clock.client
    async with worker(own_clock, task_queue, llm):
        handle = await start(own_clock, task_queue, AgentQuoteEscalating)
        await settled(client, handle.id)
        await own_clock.sleep(timedelta(hours=1, minutes=1))
        status = await run_status(client, handle.id)
        gate = next(g for g in status.gates if g.gate == "quote")
        assert [e.to_role for e in gate.escalations] == ["supervisor"]
        await decide(client, handle.id, Decision(gate="quote", user="sam", outcome="approve"))
        await handle.result()
    # While this test's own server still runs: conftest's clean-up comes after
    # it has stopped, and would wait for it in vain.
    await terminate_started()

    assert ORDERS == ["A1x3"]
    (call,) = events(handle.id, "tool.call")
    assert call["approved_by"] == "sam"


async def test_a_refused_call_does_not_run_and_the_model_is_told(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls([("place_order", {"sku": "A1", "quantity": 300})]),
        Reply({"sku": "A1", "total_usd": 3000.0}),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote, quantity=300)
        await settled(client, handle.id)
        refusal = Decision(gate="quote", user="rita", outcome="reject", comment="too many")
        await decide(client, handle.id, refusal)
        result = await handle.result()

    assert ORDERS == []
    assert result.outcome == "completed"
    assert result.outputs["quote"] == {"sku": "A1", "total_usd": 3000.0, "order_id": None}
    (told,) = tool_messages(llm, 1)
    assert "refused this call: too many" in told["content"]
    (call,) = events(handle.id, "tool.call")
    assert (call["outcome"], call["approved_by"], call["result"]) == ("refused", "rita", None)


async def test_bad_calls_are_fed_back_to_the_model_as_the_calls_results(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls(
            [
                ("look_up_cost", {"sku": "A1"}),
                ("look_up_price", {"skew": "A1"}),
                ("look_up_price", "{not json"),
                ("look_up_price", {"sku": "ZZ"}),
            ]
        ),
        Reply({"sku": "A1"}),
        Reply({"sku": "A1", "total_usd": 0}),
        Reply({"sku": "A1", "total_usd": 30.0}),
    )
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        result = await handle.result()

    assert result.outputs["quote"]["total_usd"] == 30.0
    unknown, unfit, unparsed, missing = (m["content"] for m in tool_messages(llm, 1))
    assert "there is no tool 'look_up_cost'" in unknown
    assert "the arguments do not fit the tool: sku: Field required" in unfit
    assert "the arguments are not valid JSON" in unparsed
    assert "no SKU ZZ in the catalog" in missing
    refused = llm.requests_for("gpt-cheap")[2].body["messages"][-1]
    assert refused["role"] == "user"
    assert "Your answer was refused: total_usd: Field required" in refused["content"]
    checked = llm.requests_for("gpt-cheap")[3].body["messages"][-1]["content"]
    assert "Your answer was refused: total_usd: a quote must cost something" in checked
    calls = events(handle.id, "tool.call")
    assert [c["outcome"] for c in calls] == ["invalid", "invalid", "invalid", "cannot_answer"]
    assert [e["outcome"] for e in events(handle.id, "ai.inference")] == [
        "tool_calls",
        "invalid",
        "invalid",
        "answered",
    ]


async def test_a_turn_that_asks_for_a_flood_of_calls_runs_only_the_first_few(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    # A model's reply is not to be trusted: 40 side-effect calls in one turn
    # would be 40 gates for a person and 40 orders.
    flood: list[tuple[str, dict[str, Any] | str]] = [
        ("place_order", {"sku": "A1", "quantity": n}) for n in range(1, 41)
    ]
    llm.script("gpt-cheap", ToolCalls(flood), Reply({"sku": "A1", "total_usd": 30.0}))
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        for _ in range(MAX_CALLS_PER_TURN):
            await eventually(
                lambda: run_status(client, handle.id),
                lambda s: any(g.gate == "quote" and g.decision is None for g in s.gates),
            )
            await decide(client, handle.id, Decision(gate="quote", user="rita", outcome="reject"))
        await handle.result()

    assert ORDERS == []
    results = tool_messages(llm, 1)
    assert len(results) == 40
    assert all("refused this call" in m["content"] for m in results[:MAX_CALLS_PER_TURN])
    assert all(
        f"at most {MAX_CALLS_PER_TURN} calls" in m["content"] for m in results[MAX_CALLS_PER_TURN:]
    )
    outcomes = [c["outcome"] for c in events(handle.id, "tool.call")]
    assert outcomes == ["refused"] * MAX_CALLS_PER_TURN + ["invalid"] * (40 - MAX_CALLS_PER_TURN)


async def test_a_turns_calls_run_together_and_come_back_in_the_order_asked(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    InFlight.most = 0
    skus = ["A1", "B22", "C333", "D4444", "E55555", "F666666"]
    llm.script(
        "gpt-cheap",
        ToolCalls(
            [("stock_level", {"sku": sku}) for sku in skus]
            + [("place_order", {"sku": "A1", "quantity": 1})]
        ),
        Reply({"sku": "A1", "total_usd": 10.0}),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        waiting = await settled(client, handle.id)
        # The gated call waits for its approval after the others have run.
        assert next(g for g in waiting.gates if g.gate == "quote").shown["tool"] == "place_order"
        assert ORDERS == []
        await decide(client, handle.id, Decision(gate="quote", user="rita", outcome="approve"))
        await handle.result()

    assert InFlight.most == 4
    results = [json.loads(m["content"]) for m in tool_messages(llm, 1)]
    assert [r.get("units") for r in results] == [2, 3, 4, 5, 6, 7, None]
    assert results[-1] == {"order_id": "PO-1"}
    calls = events(handle.id, "tool.call")
    assert [c["index"] for c in calls] == [1, 2, 3, 4, 5, 6, 7]
    assert [c["arguments"]["sku"] for c in calls[:6]] == skus


async def test_anthropic_turns_use_tool_use_and_tool_result_blocks(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "claude-strong",
        ToolCalls([("look_up_price", {"sku": "B2"})], text="Looking it up."),
        ToolCalls([("final_answer", {"sku": "B2", "total_usd": 13.5})]),
    )
    async with worker(time_skipping_env, task_queue, llm, tier="strong"):
        handle = await start(time_skipping_env, task_queue, AgentQuote, sku="B2")
        result = await handle.result()

    assert result.outputs["quote"] == {"sku": "B2", "total_usd": 13.5, "order_id": None}
    first, second = (r.body for r in llm.requests_for("claude-strong"))
    names = [t["name"] for t in first["tools"]]
    assert names == ["look_up_price", "place_order", "stock_level", "final_answer"]
    assert first["tools"][3]["input_schema"]["required"] == ["sku", "total_usd"]
    said, results = second["messages"][1:]
    assert [b["type"] for b in said["content"]] == ["text", "tool_use"]
    (block,) = results["content"]
    assert block["type"] == "tool_result"
    assert block["tool_use_id"] == said["content"][1]["id"]
    assert json.loads(block["content"]) == {"sku": "B2", "usd": 4.5}


async def test_a_failing_provider_hands_the_turns_to_the_next_candidate(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script("gpt-refuses", Fault(400, "temperature is not supported"))
    llm.script(
        "gpt-b",
        ToolCalls([("look_up_price", {"sku": "A1"})]),
        Reply({"sku": "A1", "total_usd": 30.0}),
    )
    async with worker(time_skipping_env, task_queue, llm, tier="pair"):
        handle = await start(time_skipping_env, task_queue, AgentQuote)
        result = await handle.result()

    assert result.outputs["quote"]["total_usd"] == 30.0
    assert (llm.count("gpt-refuses"), llm.count("gpt-b")) == (1, 2)
    turns = events(handle.id, "ai.inference")
    assert [(t["model"], t["outcome"]) for t in turns] == [
        ("gpt-refuses", "provider_error"),
        ("gpt-b", "tool_calls"),
        ("gpt-b", "answered"),
    ]


def offline_quote(request: TurnRequest) -> TurnAnswer:
    """Look the price up, then answer from it."""
    results = [m for m in request.messages if m.role == "tool"]
    if not results:
        call = ToolCall(id="c1", name="look_up_price", arguments={"sku": request.inputs["sku"]})
        return TurnAnswer(tool_calls=[call], provider="offline", model="rules-quote")
    price = json.loads(results[0].content)["usd"]
    total = price * request.inputs["quantity"]
    output = {"sku": request.inputs["sku"], "total_usd": total}
    return TurnAnswer(output=output, provider="offline", model="rules-quote")


async def test_the_offline_provider_plays_an_agent_by_its_registered_policy(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    llm: ScriptedLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # As register_agent_policy does, and undone when the test ends.
    monkeypatch.setitem(AGENT_POLICIES, "quote", offline_quote)
    async with worker(time_skipping_env, task_queue, llm, tier="rules"):
        handle = await start(time_skipping_env, task_queue, AgentQuote, sku="B2", quantity=2)
        result = await handle.result()

    assert llm.requests == []
    assert result.outputs["quote"] == {"sku": "B2", "total_usd": 9.0, "order_id": None}
    turns = events(handle.id, "ai.inference")
    assert [(t["provider"], t["model"]) for t in turns] == [("offline", "rules-quote")] * 2


async def test_an_agent_reads_a_document_by_reference_and_the_run_keeps_only_the_reference(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    text = "Please quote three units of SKU A1.\n" + "Terms and conditions apply. " * 8000
    letter = document_store().put(text.encode(), name="letter.txt")
    llm.script("gpt-cheap", Reply({"sku": "A1", "total_usd": 30.0}))
    async with worker(time_skipping_env, task_queue, llm):
        request = LetterRequest(letter=letter, requested_by="carl")
        handle = await start(time_skipping_env, task_queue, AgentLetter, request=request)
        result = await handle.result()
        history = await handle.fetch_history()

    assert result.outputs["quote"] == {"sku": "A1", "total_usd": 30.0, "order_id": None}
    (asked,) = llm.requests_for("gpt-cheap")
    inputs = json.loads(asked.body["messages"][1]["content"].removeprefix("Inputs:\n"))
    assert inputs == {"letter": text}
    # The model read the 216 KB letter; the run's history holds its reference.
    assert len(text) > 200_000
    assert sum(event.ByteSize() for event in history.events) < 60_000


@pytest.mark.parametrize(
    ("forged", "why"),
    [
        # The hash of a file on the worker's disk, which was never put in the store.
        (
            DocumentRef.of(b"root:x:0:0:root:/root:/bin/bash\n", name="letter.txt"),
            "has no document",
        ),
        # A size over the worker's limit: refused before anything is read.
        (
            DocumentRef(sha256="a" * 64, size=1 << 40, name="letter.txt"),
            "documents may be at most",
        ),
    ],
    ids=["not-in-store", "oversized"],
)
async def test_a_forged_document_reference_reaches_no_model(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    llm: ScriptedLLMServer,
    forged: DocumentRef,
    why: str,
) -> None:
    async with worker(time_skipping_env, task_queue, llm):
        request = LetterRequest(letter=forged, requested_by="carl")
        handle = await start(time_skipping_env, task_queue, AgentLetter, request=request)
        status = await settled(time_skipping_env.client, handle.id)

    assert llm.requests == []
    (turn,) = events(handle.id, "ai.inference")
    assert turn["outcome"] == "provider_error"
    assert why in turn["errors"][0]
    # No model can read it: a person sees why, at the node's gate.
    assert status.state == "waiting"
    assert [g.gate for g in status.gates] == ["quote"]
    quote = next(r for r in status.nodes if r.node == "quote")
    assert why in quote.meta["escalated"]


async def test_a_reviewers_change_request_opens_the_agents_next_transcript(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        Reply({"sku": "A1", "total_usd": 30.0}),
        Reply({"sku": "A1", "total_usd": 27.0}),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuoteReviewed)
        await settled(client, handle.id)
        change = Decision(
            gate="review", user="rita", outcome="request_changes", comment="apply the 10% discount"
        )
        await decide(client, handle.id, change)
        await settled(client, handle.id)
        await decide(client, handle.id, Decision(gate="review", user="rita", outcome="approve"))
        result = await handle.result()

    assert result.outputs["quote"]["total_usd"] == 27.0
    told = llm.requests_for("gpt-cheap")[1].body["messages"][2]
    assert told["role"] == "user"
    assert "the reviewer (rita) asked for changes: apply the 10% discount" in told["content"]
    assert '"total_usd": 30.0' in told["content"]


async def test_a_loops_findings_open_the_agents_next_transcript(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        Reply({"sku": "A1", "total_usd": 30.0}),
        Reply({"sku": "A1", "total_usd": 27.0}),
    )
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuoteLooped)
        result = await handle.result()

    assert result.outputs["quote"]["total_usd"] == 27.0
    told = llm.requests_for("gpt-cheap")[1].body["messages"][2]
    assert told["role"] == "user"
    assert told["content"].startswith("the total 30.0 is above the ceiling of 28.0\n")
    assert '"total_usd": 30.0' in told["content"]
    assert (
        "again -.->|too_dear, at most 2x, telling over_the_ceiling| quote"
        in AgentQuoteLooped.graph.mermaid()
    )


# -- mapped agents ---------------------------------------------------------------


def offline_basket(request: TurnRequest) -> TurnAnswer:
    """Look the SKU's price up, then answer from it; a SKU the catalog
    lacks is looked up again, turn after turn."""
    sku = request.inputs["sku"]
    looked = [m for m in request.messages if m.role == "tool"]
    if not looked or looked[-1].is_error:
        call = ToolCall(id=f"c{len(looked) + 1}", name="look_up_price", arguments={"sku": sku})
        return TurnAnswer(tool_calls=[call], provider="offline", model="rules-basket")
    total = json.loads(looked[-1].content)["usd"] * request.inputs["quantity"]
    output = {"sku": sku, "total_usd": total}
    return TurnAnswer(output=output, provider="offline", model="rules-basket")


async def start_basket(
    env: WorkflowEnvironment, queue: str, cls: type[GraphWorkflow], skus: list[str]
) -> WorkflowHandle[Any, RunResult]:
    handle = await start_run(
        env.client,
        cls,
        BasketRequest(skus=skus, quantity=2, requested_by="carl"),
        task_queue=queue,
        workflow_id=f"{cls.graph.name}-{queue}",
    )
    STARTED.append(handle)
    return handle


async def item_activities(handle: WorkflowHandle[Any, RunResult]) -> dict[int, list[int]]:
    """The history's event ids of each item's activities: when each was
    scheduled and when it completed, by item."""
    history = await handle.fetch_history()
    scheduled: dict[int, int] = {}
    events: dict[int, list[int]] = {}
    for event in history.events:
        if event.HasField("activity_task_scheduled_event_attributes"):
            activity_id = event.activity_task_scheduled_event_attributes.activity_id
            if activity_id.startswith("quote#"):
                item = int(activity_id.split(".")[1])
                scheduled[event.event_id] = item
                events.setdefault(item, []).append(event.event_id)
        elif event.HasField("activity_task_completed_event_attributes"):
            item_of = scheduled.get(
                event.activity_task_completed_event_attributes.scheduled_event_id
            )
            if item_of is not None:
                events[item_of].append(event.event_id)
    return events


async def test_a_mapped_agent_runs_a_loop_per_item_two_at_a_time_with_results_in_order(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    llm: ScriptedLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(AGENT_POLICIES, "quote", offline_basket)
    skus = ["B2", "A1", "B2", "A1"]
    async with worker(time_skipping_env, task_queue, llm, tier="rules"):
        handle = await start_basket(time_skipping_env, task_queue, AgentBasket, skus)
        result = await handle.result()
        status = await run_status(time_skipping_env.client, handle.id)
        history = await handle.fetch_history()
        spans = await item_activities(handle)

    assert result.outputs["quote"] == {
        "results": [{"sku": sku, "total_usd": CATALOG[sku] * 2, "order_id": None} for sku in skus],
        "failures": [],
    }
    scheduled = [
        e.activity_task_scheduled_event_attributes.activity_id
        for e in history.events
        if e.HasField("activity_task_scheduled_event_attributes")
    ]
    assert sorted(a for a in scheduled if a.startswith("quote#")) == sorted(
        f"quote#1.{i}.{step}" for i in range(4) for step in ("turn1", "call1", "turn2")
    )
    # Two items at once, never three: an item starts once an earlier one is done.
    bounds = [(min(ids), max(ids)) for ids in spans.values()]
    at_once = [
        sum(1 for first, last in bounds if first <= moment <= last)
        for moment in range(min(b[0] for b in bounds), max(b[1] for b in bounds))
    ]
    assert max(at_once) == 2
    record = next(r for r in status.nodes if r.node == "quote")
    assert record.detail == "4 of 4 items answered"
    assert [item["turns_taken"] for item in record.meta["items"]] == [2, 2, 2, 2]
    assert [c["arguments"]["sku"] for i in record.meta["items"] for c in i["tool_calls"]] == skus
    inferences = [
        r
        for r in open_store(AuditSettings.from_env().url).records(handle.id)
        if r.event_type == "ai.inference"
    ]
    ids = [r.event_id for r in inferences]
    assert len(ids) == 8 and len(set(ids)) == 8
    assert all("/item" in i and "#" not in i.rpartition("/")[2] for i in ids)


async def test_a_mapped_item_that_reaches_its_bound_fails_alone_and_opens_no_gate(
    time_skipping_env: WorkflowEnvironment,
    task_queue: str,
    llm: ScriptedLLMServer,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    monkeypatch.setitem(AGENT_POLICIES, "quote", offline_basket)
    async with worker(time_skipping_env, task_queue, llm, tier="rules"):
        handle = await start_basket(time_skipping_env, task_queue, AgentBasket, ["A1", "ZZ", "B2"])
        result = await handle.result()
        status = await run_status(time_skipping_env.client, handle.id)

    assert result.outcome == "completed"
    quotes = result.outputs["quote"]
    assert [q and q["total_usd"] for q in quotes["results"]] == [20.0, None, 9.0]
    assert quotes["failures"] == [
        {"index": 1, "error": "the agent reached its bound of 3 model turns"}
    ]
    assert status.gates == []
    record = next(r for r in status.nodes if r.node == "quote")
    assert record.detail == "2 of 3 items answered, 1 failed"
    stuck = record.meta["items"][1]
    assert stuck["failed"] == "the agent reached its bound of 3 model turns"
    assert [c["outcome"] for c in stuck["tool_calls"]] == ["cannot_answer"] * 3


async def test_a_change_request_for_a_mapped_agent_reaches_every_item_with_its_own_answer(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        Reply({"sku": "A1", "total_usd": 20.0}),
        Reply({"sku": "B2", "total_usd": 9.0}),
        Reply({"sku": "A1", "total_usd": 18.0}),
        Reply({"sku": "B2", "total_usd": 8.1}),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start_basket(
            time_skipping_env, task_queue, AgentBasketReviewed, ["A1", "B2"]
        )
        await settled(client, handle.id)
        change = Decision(
            gate="review", user="rita", outcome="request_changes", comment="apply the 10% discount"
        )
        await decide(client, handle.id, change)
        await settled(client, handle.id)
        await decide(client, handle.id, Decision(gate="review", user="rita", outcome="approve"))
        result = await handle.result()

    assert [q["total_usd"] for q in result.outputs["quote"]["results"]] == [18.0, 8.1]
    for request, earlier in zip(llm.requests_for("gpt-cheap")[2:], ("20.0", "9.0"), strict=True):
        told = request.body["messages"][2]["content"]
        assert "the reviewer (rita) asked for changes: apply the 10% discount" in told
        assert f'"total_usd": {earlier}' in told


# -- the bounds ------------------------------------------------------------------


async def test_the_turn_bound_hands_the_transcript_to_a_person_who_gives_the_output(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script(
        "gpt-cheap",
        ToolCalls([("look_up_price", {"sku": "A1"})]),
        ToolCalls([("look_up_price", {"sku": "B2"})]),
    )
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuoteShort)
        waiting = await settled(client, handle.id)
        gate = next(g for g in waiting.gates if g.gate == "quote")
        assert gate.shown["why"] == "the agent reached its bound of 2 model turns"
        transcript = gate.shown["transcript"]
        assert [m["role"] for m in transcript] == ["assistant", "tool", "assistant", "tool"]
        assert json.loads(transcript[3]["content"]) == {"sku": "B2", "usd": 4.5}
        assert gate.shown["proposed"] is None
        given = {"sku": "A1", "total_usd": 30.0, "order_id": None}
        await decide(
            client,
            handle.id,
            Decision(
                gate="quote", user="rita", outcome="approve", comment="priced by hand", output=given
            ),
        )
        result = await handle.result()

    assert llm.count("gpt-cheap") == 2
    assert result.outcome == "completed"
    assert result.outputs["quote"] == given


async def test_a_spent_budget_hands_the_run_to_a_person_who_may_reject_it(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    # A million input tokens at $0.15 per Mtok: past the $0.10 budget in one turn.
    llm.script("gpt-cheap", ToolCalls([("look_up_price", {"sku": "A1"})], input_tokens=1_000_000))
    client = time_skipping_env.client
    async with worker(time_skipping_env, task_queue, llm):
        handle = await start(time_skipping_env, task_queue, AgentQuoteBudget)
        waiting = await settled(client, handle.id)
        gate = next(g for g in waiting.gates if g.gate == "quote")
        assert gate.shown["why"] == "the agent spent its budget of $0.10 ($0.1500)"
        await decide(
            client, handle.id, Decision(gate="quote", user="rita", outcome="reject", comment="no")
        )
        result = await handle.result()

    assert llm.count("gpt-cheap") == 1
    assert result.outcome == "rejected"
    assert [c["outcome"] for c in events(handle.id, "tool.call")] == ["ok"]


# -- tool routing ----------------------------------------------------------------


async def test_a_routed_tool_answers_an_ask_without_any_model(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    async with worker(time_skipping_env, task_queue, llm, tools=["catalog_price"]):
        handle = await start(time_skipping_env, task_queue, AskPrice, sku="B2")
        result = await handle.result()
        status = await run_status(time_skipping_env.client, handle.id)

    assert llm.requests == []
    assert result.outputs["price"] == {"sku": "B2", "usd": 4.5}
    record = next(r for r in status.nodes if r.node == "price")
    assert (record.meta["provider"], record.meta["model"]) == ("tool", "catalog_price")
    assert (record.meta["confidence"], record.meta["confidence_method"]) == (1.0, "deterministic")
    (attempt,) = record.meta["attempts"]
    assert (attempt["tier"], attempt["outcome"]) == ("tools", "accepted")
    (call,) = events(handle.id, "tool.call")
    assert (call["tool"], call["arguments"], call["result"]) == (
        "catalog_price",
        {"sku": "B2"},
        {"sku": "B2", "usd": 4.5},
    )


async def test_a_tool_that_cannot_answer_passes_the_ask_to_the_models(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    llm.script("gpt-cheap", Reply(answer({"sku": "Q7", "usd": 12.0})))
    async with worker(time_skipping_env, task_queue, llm, tools=["catalog_price"]):
        handle = await start(time_skipping_env, task_queue, AskPrice, sku="Q7")
        result = await handle.result()
        status = await run_status(time_skipping_env.client, handle.id)

    assert llm.count("gpt-cheap") == 1
    assert result.outputs["price"] == {"sku": "Q7", "usd": 12.0}
    record = next(r for r in status.nodes if r.node == "price")
    assert [(a["provider"], a["outcome"]) for a in record.meta["attempts"]] == [
        ("tool", "invalid"),
        ("openai", "accepted"),
    ]
    (call,) = events(handle.id, "tool.call")
    assert call["error"] == "the tool has no answer for these inputs"


async def test_a_route_may_list_only_tools_the_ask_declares(
    time_skipping_env: WorkflowEnvironment, task_queue: str, llm: ScriptedLLMServer
) -> None:
    async with worker(time_skipping_env, task_queue, llm, tools=["erp_price"]):
        handle = await start(time_skipping_env, task_queue, AskPrice)
        with pytest.raises(WorkflowFailureError) as failure:
            await handle.result()

    assert "lists tool 'erp_price', which the Ask does not declare (its tools: " in str(
        failure.value.cause
    )
    assert llm.requests == []


# -- declarations ----------------------------------------------------------------


def test_a_tool_carries_its_spec_and_is_an_activity() -> None:
    spec = spec_of(place_order)
    assert (spec.name, spec.side_effects) == ("place_order", True)
    assert spec.parameters["required"] == ["sku", "quantity"]
    assert spec_of(catalog_lookup).name == "catalog_price"
    assert AgentQuote.graph.node("quote").activities() == [
        "agent_turn",
        look_up_price,
        place_order,
        stock_level,
    ]


def test_an_agent_takes_only_tools() -> None:
    async def not_a_tool(args: Lookup) -> Price:
        return Price(sku=args.sku, usd=0)

    with pytest.raises(GraphError, match="'not_a_tool' is not a tool"):
        Graph(
            name="bad_agent",
            input=QuoteRequest,
            nodes=(Agent("quote", task="quote", output=Quote, tools=(not_a_tool,)),),
        )


def test_a_mapped_agent_may_not_call_a_tool_with_side_effects() -> None:
    with pytest.raises(
        GraphError,
        match="node 'quote': a mapped Agent \\(each='sku'\\) cannot call tool 'place_order', "
        "which has side effects",
    ):
        basket("bad_basket", tools=(look_up_price, place_order))
    with pytest.raises(GraphError, match="each='skus' must name one of its inputs"):
        basket("bad_basket", each="skus")
    with pytest.raises(GraphError, match="concurrency= bounds the items of a mapped Agent"):
        quoting("bad_quote", concurrency=2)
    assert AgentBasket.graph.node("quote").output_fields() == {"results", "failures"}


def test_replies_are_read_as_calls_or_as_the_final_answer() -> None:
    final = ToolCall(id="f", name="final_answer", arguments={"sku": "A1"})
    lookup = ToolCall(id="l", name="look_up_price", arguments={"sku": "A1"})
    assert read_final([final]) == ([], {"sku": "A1"}, [])
    # Answering beside other calls is a call like the others, refused as such.
    assert read_final([lookup, final]) == ([lookup, final], None, [])
    assert read_text_answer('```json\n{"sku": "A1"}\n```') == ({"sku": "A1"}, [])
    assert read_text_answer("I think it is ten dollars")[1][0].startswith(
        "no tool call and no JSON answer: call 'final_answer' to answer"
    )
    assert parse_arguments("[1, 2]") == ({}, "the arguments must be a JSON object, not list")


def test_the_routing_table_lists_a_tasks_tools_before_its_tiers(llm: ScriptedLLMServer) -> None:
    table = routing_table(agent_config(llm, tools=["catalog_price"]).routing)
    block = table[table.index("task price:") :]
    assert block.splitlines()[1:3] == [
        "  0. tools, before any model: catalog_price",
        "  1. cheap",
    ]
