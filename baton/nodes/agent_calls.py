"""An Agent's tool calls: the calls of one model turn run as activities,
those of a tool with side effects only after a person approved them at the
node's gate; and that gate, which the loop also opens at its bounds.

Read after :mod:`baton.nodes.agent_loop`, which asks for a turn's calls.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Sequence
from dataclasses import dataclass
from datetime import timedelta
from typing import TYPE_CHECKING, Any, Literal

from pydantic import ValidationError
from temporalio import workflow

from baton.audit.events import Actor
from baton.gates import APPROVES_A_CALL, GateState
from baton.llm.turns import FINAL_ANSWER, ToolCall, TurnMessage
from baton.nodes.base import Run, activity_options, problems
from baton.nodes.gate import Gate, await_decision
from baton.nodes.tool_tier import call_tool
from baton.state import NodeRecord
from baton.tools import ToolSpec, spec_of, tool_models

if TYPE_CHECKING:
    from baton.nodes.agent import Agent
    from baton.nodes.agent_loop import AgentLoop, AgentTurn

# Bounds what one tool result adds to every later turn's request.
MAX_RESULT_CHARS = 8000

CallOutcome = Literal["ok", "error", "invalid", "refused", "cannot_answer"]


@dataclass(frozen=True)
class Place:
    """Where one agent loop's activities and audit events are named: a
    visit of the node, or one item of a mapped visit, so no two loops share
    an activity id or an audit event's id."""

    activity_id: str
    about: str

    @classmethod
    def of(cls, node: Agent, record: NodeRecord, item: int | None) -> Place:
        if item is None:
            return cls(f"{node.id}#{record.visits}", f"v{record.visits}")
        return cls(f"{node.id}#{record.visits}.{item}", f"v{record.visits}/item{item}")

    def options(self, run: Run, node: Agent, record: NodeRecord) -> dict[str, Any]:
        return {**activity_options(run, node, record), "activity_id": self.activity_id}


class ToolCalls:
    """The calls one loop ran, and how to run the next turn's."""

    def __init__(self, loop: AgentLoop) -> None:
        self.loop = loop
        self.tools = {spec_of(fn).name: fn for fn in loop.node.tools}
        self.made: list[dict[str, Any]] = []

    async def run_turn(self, calls: list[ToolCall], turn: AgentTurn) -> list[TurnMessage]:
        """Run a turn's calls: those a person must approve one by one (the
        node has one gate), the others together, ``parallel_tools`` at a
        time. Their results come back, and go to the trail, in the order
        the model asked for them."""
        cap = self.loop.node.max_calls_per_turn
        beyond = f"not run: a turn may ask for at most {cap} calls; ask again for the rest"
        refused = [c.model_copy(update={"arguments_error": beyond}) for c in calls[cap:]]
        calls = calls[:cap] + refused
        numbered = list(enumerate(calls, start=len(self.made) + 1))
        slots = asyncio.Semaphore(self.loop.node.parallel_tools)

        async def free(number: int, call: ToolCall) -> tuple[dict[str, Any], TurnMessage]:
            async with slots:
                return await self._call(call, turn, number)

        ungated = [(n, c) for n, c in numbered if not self._gated(c)]
        done = dict(
            zip(
                [n for n, _ in ungated],
                await asyncio.gather(*(free(n, c) for n, c in ungated)),
                strict=True,
            )
        )
        for number, call in numbered:
            if number not in done:
                done[number] = await self._call(call, turn, number)
        messages = []
        for number, call in numbered:
            entry, message = done[number]
            self.made.append(entry)
            self.loop.run.trail.record(
                "tool.call",
                node=self.loop.node.id,
                about=f"{self.loop.place.about}/call{number}",
                actor=Actor(type="service", id=call.name),
                requested_by=f"{turn.provider}/{turn.model}",
                duration_s=(entry["finished_at"] - entry["started_at"]).total_seconds(),
                **entry,
            )
            messages.append(message)
        self.loop.meta["tool_calls"] = clockless(self.made)
        self.loop.run.publish()
        return messages

    def _gated(self, call: ToolCall) -> bool:
        fn = self.tools.get(call.name)
        return fn is not None and spec_of(fn).side_effects

    async def _call(
        self, call: ToolCall, turn: AgentTurn, number: int
    ) -> tuple[dict[str, Any], TurnMessage]:
        """Run one call the model asked for: its record, and its result (or
        why there is none) as the transcript's tool message."""
        started = workflow.now()
        entry: dict[str, Any] = {
            "index": number,
            "turn": turn.index,
            "call_id": call.id,
            "tool": call.name,
            "arguments": call.arguments,
            "result": None,
            "error": None,
            "approved_by": None,
            "started_at": started,
        }
        outcome, content = await self._outcome(call, number, entry)
        entry.update(outcome=outcome, finished_at=workflow.now())
        if outcome != "ok":
            entry["error"] = content
        message = TurnMessage(
            role="tool",
            tool_call_id=call.id,
            name=call.name,
            content=content,
            is_error=outcome != "ok",
        )
        return entry, message

    async def _outcome(
        self, call: ToolCall, number: int, entry: dict[str, Any]
    ) -> tuple[CallOutcome, str]:
        fn = self.tools.get(call.name)
        if call.name == FINAL_ANSWER:
            return "invalid", f"call '{FINAL_ANSWER}' alone, once you have the tools' results"
        if fn is None:
            known = ", ".join([*self.tools, FINAL_ANSWER])
            return "invalid", f"there is no tool '{call.name}'; the tools are: {known}"
        if call.arguments_error:
            return "invalid", call.arguments_error
        spec = spec_of(fn)
        args_model, result_model = tool_models(fn)
        try:
            args = args_model.model_validate(call.arguments)
        except ValidationError as err:
            return "invalid", "the arguments do not fit the tool: " + "; ".join(
                problems(err, "arguments")
            )
        if spec.side_effects:
            approver, refusal = await self._approval(spec, call)
            entry["approved_by"] = approver
            if refusal is not None:
                return "refused", refusal
        options = self.loop.place.options(self.loop.run, self.loop.node, self.loop.record)
        options.update(
            activity_id=f"{options['activity_id']}.call{number}",
            start_to_close_timeout=self.loop.node.tool_timeout,
            retry_policy=self.loop.node.tool_retry.to_temporal(),
            summary=f"{self.loop.node.id}: {spec.name}",
        )
        reply = await call_tool(spec.name, args, result_model, options)
        if reply.error is not None:
            return ("cannot_answer" if reply.cannot_answer else "error"), reply.error
        value = None if reply.result is None else reply.result.model_dump(mode="json")
        entry["result"] = value
        return "ok", _bounded(json.dumps(value, sort_keys=True))

    async def _approval(self, spec: ToolSpec, call: ToolCall) -> tuple[str | None, str | None]:
        """(who decided, why the call may not run or None) from a person at
        this node's gate."""
        node = self.loop.node
        gate = node_gate(
            self.loop.run,
            node,
            self.loop.record,
            node.tool_gate_role,
            {
                "task": node.task,
                "why": f"the agent asks to call '{spec.name}', which has side effects",
                APPROVES_A_CALL: spec.name,
                "description": spec.description,
                "arguments": call.arguments,
            },
            node.tool_gate_sla,
            node.tool_gate_escalate_to,
        )
        rejected = self.loop.run.state.rejected
        decision = await await_decision(self.loop.run, gate, self.loop.record)
        # A refused call is the model's to work around, not the run's end.
        self.loop.run.state.rejected = rejected
        if decision.outcome == "reject":
            return decision.user, (
                f"a person ({decision.role}) refused this call"
                + (f": {decision.comment}" if decision.comment else "")
            )
        return decision.user, None


def node_gate(
    run: Run,
    node: Agent,
    record: NodeRecord,
    role: str,
    shown: dict[str, Any],
    sla: timedelta | None,
    chain: Sequence[str],
) -> GateState:
    """A gate on the Agent's node, under an SLA as a Gate node's is."""
    # Several gates may open in one visit (one per gated call, then the
    # bound): each is a new round, so a signature binds exactly one.
    previous = run.state.gates.get(node.id)
    return GateState(
        gate=node.id,
        round=max(record.visits, previous.round + 1 if previous else 1),
        roles=[role],
        chain=list(chain),
        opened_at=workflow.now(),
        sla=sla,
        remind_fraction=None if sla is None else Gate.model_fields["remind_at"].default,
        shown=shown,
        earlier=[*previous.earlier, previous.decision] if previous and previous.decision else [],
    )


def clockless(entries: Sequence[Any]) -> list[dict[str, Any]]:
    """Turns or calls as the run's state keeps them, without their times: a
    gate may show a node's state, and what a gate shows must not depend on
    when a replay reads the clock (baton.nodes.gate.CLOCKLESS_GATE_VIEW).
    The times are in the audit trail."""
    dumped = [e if isinstance(e, dict) else e.model_dump(mode="json") for e in entries]
    return [{k: v for k, v in e.items() if k not in ("started_at", "finished_at")} for e in dumped]


def _bounded(text: str) -> str:
    if len(text) <= MAX_RESULT_CHARS:
        return text
    return text[:MAX_RESULT_CHARS] + f"... ({len(text) - MAX_RESULT_CHARS} more characters cut)"
