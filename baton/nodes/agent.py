"""Agent: a model that calls tools until it can answer, the loop run by the
workflow.

Each model turn is one ``agent_turn`` activity (its model from routing: the
candidates of the task's first model tier, in order, the next taken when a
provider fails); each tool call the model asks for is one activity execution
of that tool. The transcript lives in the workflow, so a crash resumes the
loop where it was and a replay repeats no call. A tool with side effects
runs only after a person approved the call at a gate on this node; a refusal
is told to the model as the call's result. A call of an unknown tool, or
with arguments that do not fit the tool's model, is told to the model too.
Reaching ``max_turns`` or spending ``budget_usd`` opens a gate showing the
transcript, where a person gives the output or rejects. A change request (a
Gate's ``changes_to``, a Back's ``feedback``) opens the next visit's
transcript. With ``each``, one loop runs per item of a list, and an item
that reaches a bound fails alone: a mapped Agent opens no gate.

Every turn is an ``ai.inference`` audit event, every call a ``tool.call``.

The node is here; one loop's turns in :mod:`baton.nodes.agent_loop`, a
turn's tool calls in :mod:`baton.nodes.agent_calls`, the loops of a mapped
visit in :mod:`baton.nodes.agent_each`.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, Field

from baton.llm.turns import FINAL_ANSWER
from baton.nodes.agent_each import mapped_model, run_each
from baton.nodes.agent_loop import AGENT_TURN_ACTIVITY, AgentLoop
from baton.nodes.base import (
    ActivityRef,
    Done,
    GraphError,
    Retry,
    Run,
    model_fields,
)
from baton.nodes.map import Mapped, check_each
from baton.nodes.model_node import ModelNode
from baton.state import NodeRecord
from baton.tools import spec_of

if TYPE_CHECKING:
    from baton.graph import Graph

__all__ = ["AGENT_TURN_ACTIVITY", "Agent"]


# A reply is the model's, not to be trusted: forty calls of a tool with side
# effects in one turn would be forty gates for a person.
MAX_CALLS_PER_TURN = 8


class Agent(ModelNode):
    """A model with tools: ``task`` names its route (routing.toml
    ``[tasks.<task>]``), ``tools`` the :func:`baton.tools.tool` functions it
    may call, and its final answer must validate against ``output``.

    With ``each``, naming one of its inputs that is a list (as a Map's
    ``each``), one loop runs per item, at most ``concurrency`` at a time:
    its inputs are the shared ones and the item under the ``each`` name,
    ``max_turns`` and ``budget_usd`` bound each item, and the output is a
    :class:`~baton.nodes.map.Mapped`, the answers in the list's order.
    Items run at once and the node has one gate, so a mapped Agent opens
    none: it may not have a tool with side effects (validation refuses
    one), and an item whose loop reaches its turn or budget bound, the
    run's budget, or the failure of every candidate is recorded in
    ``failures`` with the reason while the others go on. The next node (a
    critic, a review gate) is where a person sees it. A change request for
    the node goes to every item, each with its own earlier answer."""

    max_turns: int = Field(default=8, ge=1, description="Model turns before a person takes over")
    budget_usd: float | None = Field(
        default=None, ge=0, description="What one visit's model turns may cost, then a person"
    )
    tool_gate_role: str = Field(
        default="reviewer",
        description="Who approves each call of a tool with side effects before it runs",
    )
    tool_gate_sla: timedelta | None = Field(
        default=None,
        description="How long that approval may take: reminders, then escalation along "
        "tool_gate_escalate_to, then holding, as a Gate's sla",
    )
    tool_gate_escalate_to: tuple[str, ...] = ()
    tool_timeout: timedelta = Field(default=timedelta(seconds=30), description="Of one tool call")
    parallel_tools: int = Field(
        default=4, ge=1, description="Calls of one turn that run at once, those without a gate"
    )
    tool_retry: Retry = Retry(max_attempts=3)
    max_calls_per_turn: int = Field(
        default=MAX_CALLS_PER_TURN,
        ge=1,
        description="Calls of one turn that run; the model is told the rest were not",
    )
    each: str | None = Field(
        default=None, description="The input, a list, over whose items one loop each runs"
    )
    concurrency: int = Field(default=4, ge=1, description="Items of a mapped Agent run at once")

    kind: ClassVar[str] = "agent"
    __init__ = ModelNode.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(Mapped if self.each is not None else self.output)

    def answer_model(self) -> type[BaseModel]:
        return self.output if self.each is None else mapped_model(self.output)

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        super().validate_in(graph, ancestors)
        names: set[str] = set()
        for spec in map(spec_of, self.tools):
            if spec.name == FINAL_ANSWER or spec.name in names:
                raise GraphError(
                    f"node '{self.id}': tool name '{spec.name}' is "
                    + ("reserved for the answer" if spec.name == FINAL_ANSWER else "given twice")
                )
            names.add(spec.name)
        if self.each is None:
            if "concurrency" in self.model_fields_set:
                raise GraphError(
                    f"node '{self.id}': concurrency= bounds the items of a mapped Agent; "
                    "give each= too, or drop it"
                )
            return
        check_each(self, self.each)
        gated = [spec.name for spec in map(spec_of, self.tools) if spec.side_effects]
        if gated:
            raise GraphError(
                f"node '{self.id}': a mapped Agent (each='{self.each}') cannot call tool "
                f"'{gated[0]}', which has side effects: its items run at once and the node has "
                "one gate to approve calls. Map without that tool and make the write a Step "
                "after a Gate, or drop each="
            )

    def activities(self) -> Sequence[ActivityRef]:
        return [AGENT_TURN_ACTIVITY, *self.tools]

    async def run(self, run: Run, record: NodeRecord) -> Done:
        if self.each is not None:
            return await run_each(self, run, record)
        loop = AgentLoop(
            self,
            run,
            record,
            inputs=run.resolve(self.inputs),
            asked=run.state.feedback.pop(self.id, ([], None)),
            meta=record.meta,
        )
        ended = await loop.work()
        if ended.why is None:
            return Done(ended.output)
        return Done(await loop.ask_a_person(ended.why))

    def mermaid_shape(self) -> str:
        specs = [spec_of(fn) for fn in self.tools]
        names = ", ".join(s.name + (" (gated)" if s.side_effects else "") for s in specs)
        names = names or "no tools"
        each = "" if self.each is None else f", each {self.each}"
        shape = f'"{self.id}<br/><small>agent: {self.task}{each}<br/>{names}</small>"'
        # Doubled, as a Map's: one loop per item.
        return f"[/{shape}/]" if self.each is None else f"[[{shape}]]"
