"""One agent loop: the model's turns on one set of inputs, each turn one
``agent_turn`` activity, until the model answers well or the loop reaches
a bound. A plain Agent runs one loop per visit; a mapped one
(:mod:`baton.nodes.agent_each`) one per item.

Read after :mod:`baton.nodes.agent`; a turn's tool calls are
:mod:`baton.nodes.agent_calls`.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.llm.turns import FINAL_ANSWER, ToolCall, TurnAnswer, TurnMessage, TurnRequest
from baton.nodes.agent_calls import Place, ToolCalls, clockless, node_gate
from baton.nodes.base import Run, root_message, unless_failed
from baton.nodes.gate import await_decision
from baton.routing import HUMAN, Option, RoutingError, TaskRoute, plan_route
from baton.state import NodeRecord
from baton.tools import spec_of

if TYPE_CHECKING:
    from baton.nodes.agent import Agent

AGENT_TURN_ACTIVITY = "agent_turn"

TurnOutcome = Literal["tool_calls", "answered", "invalid", "provider_error"]


class AgentTurn(BaseModel):
    """One model turn as the workflow saw it."""

    index: int
    tier: str
    provider: str
    model: str
    outcome: TurnOutcome
    tool_calls: list[ToolCall] = Field(default_factory=list)
    input_tokens: int = 0
    output_tokens: int = 0
    cost_usd: float = 0.0
    errors: list[str] = Field(default_factory=list)
    response_id: str = ""
    finish_reason: str = ""
    started_at: datetime
    finished_at: datetime


@dataclass(frozen=True)
class Ended:
    """How a loop ended: with the output, or short of one and why."""

    output: Any = None
    why: str | None = None


class AgentLoop:
    """One loop: its transcript, turns and calls. ``meta`` is where its
    turns, calls and cost are kept (the node's record, or its item's entry);
    ``asked`` a change request to open the transcript with: what to fix,
    and the answer it is about."""

    def __init__(
        self,
        node: Agent,
        run: Run,
        record: NodeRecord,
        *,
        inputs: dict[str, Any],
        asked: tuple[list[str], Any],
        meta: dict[str, Any],
        item: int | None = None,
    ) -> None:
        self.node = node
        self.run = run
        self.record = record
        self.inputs = inputs
        self.asked = asked
        self.meta = meta
        self.item = item
        self.place = Place.of(node, record, item)
        self.messages: list[TurnMessage] = []
        self.turns: list[AgentTurn] = []
        self.calls = ToolCalls(self)
        self.route: TaskRoute | None = None

    @property
    def cost(self) -> float:
        return sum(t.cost_usd for t in self.turns)

    async def work(self) -> Ended:
        """Turns until the model answers well, or a bound stops the loop."""
        node = self.node
        assert self.run.state.config is not None
        run_budget = self.run.state.config.routing.budget_usd_per_run
        try:
            plan = plan_route(self.run.state.config.routing, node.task)
        except RoutingError as err:
            raise ApplicationError(
                f"node '{node.id}': {err}", type="RoutingError", non_retryable=True
            ) from None
        self.route = plan.route
        tier = next((t for t in plan.tiers if t.name != HUMAN and t.options), None)
        options = [] if tier is None else list(tier.options)
        self.meta.update(
            task=node.task,
            tier=None if tier is None else tier.name,
            turns=[],
            tool_calls=[],
            cost_usd=0.0,
        )
        self.run.trail.record(
            "routing.decided",
            node=node.id,
            about=f"{self.place.about}/planned",
            task=node.task,
            decision="agent",
            candidates=[f"{o.candidate.provider}/{o.candidate.model}" for o in options],
            excluded=plan.excluded,
            max_turns=node.max_turns,
            budget_usd=node.budget_usd,
            tools=list(self.calls.tools),
        )
        asked, previous = self.asked
        if asked:
            told = "; ".join(asked)
            if previous is not None:
                told += f"\nYour previous answer: {json.dumps(previous, sort_keys=True)}"
            self.messages.append(TurnMessage(role="user", content=told))
        why = "the task's route has no model tier"
        while options:
            if len(self.turns) >= node.max_turns:
                why = f"the agent reached its bound of {node.max_turns} model turns"
                break
            if node.budget_usd is not None and self.cost >= node.budget_usd:
                why = f"the agent spent its budget of ${node.budget_usd:.2f} (${self.cost:.4f})"
                break
            spent = self.run.cost()
            if run_budget is not None and options[0].candidate.paid and spent >= run_budget:
                why = f"the run's budget of ${run_budget:.2f} is spent (${spent:.4f})"
                break
            answer = await self._turn(options[0], plan.route.max_tokens)
            if answer is None:
                options.pop(0)
                failed = "; ".join(self.turns[-1].errors)
                why = f"every model candidate of the task failed, the last with: {failed}"
                continue
            done, value = await self._take(answer)
            if done:
                return Ended(output=value)
        return Ended(why=why)

    async def _turn(self, option: Option, max_tokens: int) -> TurnAnswer | None:
        """One model turn with ``option``; None when its provider failed."""
        node, record = self.node, self.record
        index = len(self.turns) + 1
        request = TurnRequest(
            task=node.task,
            instructions=node.instructions,
            inputs=self.inputs,
            documents=list(node.documents),
            messages=self.messages,
            tools=[spec_of(fn) for fn in node.tools],
            output_schema=node.output_schema(),
            provider_name=option.candidate.provider,
            provider=option.provider,
            model=option.candidate.model,
            max_tokens=max_tokens,
            temperature=option.candidate.temperature,
        )
        options = self.place.options(self.run, node, record)
        options["start_to_close_timeout"] = timedelta(seconds=option.provider.attempt_timeout_s)
        options["activity_id"] += f".turn{index}"
        item = "" if self.item is None else f" item {self.item},"
        options["summary"] = f"{node.id}:{item} turn {index}, {option.candidate.model}"
        started = workflow.now()
        turn = AgentTurn(
            index=index,
            tier=option.tier,
            provider=option.candidate.provider,
            model=option.candidate.model,
            outcome="provider_error",
            started_at=started,
            finished_at=started,
        )
        answer, failed = await unless_failed(
            workflow.execute_activity(
                AGENT_TURN_ACTIVITY, request, result_type=TurnAnswer, **options
            )
        )
        if failed is not None:
            # A failure is this candidate's (a refused key or request, an
            # unknown model, no offline policy): the next one may answer.
            turn.errors = [root_message(failed)]
        if answer is not None:
            turn.model = answer.model or turn.model
            turn.outcome = "tool_calls" if answer.tool_calls else "answered"
            turn.tool_calls = answer.tool_calls
            turn.input_tokens, turn.output_tokens = answer.input_tokens, answer.output_tokens
            turn.cost_usd = option.candidate.cost_usd(answer.input_tokens, answer.output_tokens)
            turn.response_id, turn.finish_reason = answer.response_id, answer.finish_reason
            if not answer.tool_calls:
                turn.errors = self._problems(answer)
                turn.outcome = "invalid" if turn.errors else "answered"
        turn.finished_at = workflow.now()
        self.turns.append(turn)
        self.meta.update(turns=clockless(self.turns), cost_usd=self.cost)
        if self.item is not None:
            # The node's cost is what the run's budget counts.
            record.meta["cost_usd"] = sum(i.get("cost_usd", 0.0) for i in record.meta["items"])
        node.record_inference(
            self.run, f"{self.place.about}/turn{index}", turn, budget_usd=node.budget_usd
        )
        self.run.publish()
        return answer

    async def _take(self, answer: TurnAnswer) -> tuple[bool, Any]:
        """Carry the model's turn out: (True, output) when it answered well,
        else (False, None) with the transcript grown by what it must see."""
        turn = self.turns[-1]
        self.messages.append(
            TurnMessage(role="assistant", content=answer.text, tool_calls=answer.tool_calls)
        )
        if answer.tool_calls:
            self.messages += await self.calls.run_turn(answer.tool_calls, turn)
            return False, None
        if not turn.errors:
            assert answer.output is not None
            self.meta.update(
                provider=turn.provider,
                model=turn.model,
                turns_taken=len(self.turns),
                input_tokens=sum(t.input_tokens for t in self.turns),
                output_tokens=sum(t.output_tokens for t in self.turns),
            )
            return True, self.node.output.model_validate(answer.output).model_dump(mode="json")
        self.messages.append(
            TurnMessage(
                role="user",
                content="Your answer was refused: "
                + "; ".join(turn.errors)
                + f". Call '{FINAL_ANSWER}' again with an answer that fits its schema.",
            )
        )
        return False, None

    def _problems(self, answer: TurnAnswer) -> list[str]:
        if answer.format_errors:
            return list(answer.format_errors)
        if answer.output is None:
            return [f"no tool call and no answer: call '{FINAL_ANSWER}' to answer"]
        return self.node.judge(answer.output)[1]

    async def ask_a_person(self, why: str) -> Any:
        """A person gives the output the loop could not, or rejects: at the
        node's gate, shown the transcript and every call."""
        node, record, route = self.node, self.record, self.route
        assert route is not None
        record.meta["escalated"] = why
        self.run.trail.record(
            "routing.decided",
            node=node.id,
            about=f"{self.place.about}/escalated",
            decision="escalated to a person",
            why=why,
        )
        # Under the SLA of the route's human tier, as an Ask's escalation is.
        hours = route.human_sla_hours
        gate = node_gate(
            self.run,
            node,
            record,
            route.human_role,
            {
                "task": node.task,
                "why": why,
                "inputs": self.inputs,
                "transcript": [m.model_dump(mode="json") for m in self.messages],
                "tool_calls": clockless(self.calls.made),
                # Nothing valid to approve as it is: the person gives the output.
                "proposed": None,
            },
            None if hours is None else timedelta(hours=hours),
            route.human_escalate_to,
        )
        decision = await await_decision(self.run, gate, record)
        if decision.outcome == "reject":
            return None
        record.meta.update(confidence=1.0, confidence_method="human_review")
        return gate.edited_output
