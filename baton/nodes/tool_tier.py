"""The tool tier of an Ask's cascade: deterministic tools (a system-of-record
lookup, a rule) tried before any model.

Which tools may serve an Ask is the graph's to declare (``Ask(tools=...)``,
so a worker registers them); which of those a task uses, and in what order,
is the routing's (``[tasks.<task>] tools = [...]``, snapshotted per run).
Each listed tool is called once with the Ask's resolved inputs, as its
arguments model: the first result that validates against the Ask's output
(and passes its checks) is the answer, with confidence 1.0 measured as
"deterministic", and no model is asked. A tool that answers None or raises
:class:`baton.tools.CannotAnswer` passes to the next, then to the models.
Each call is an attempt of the cascade (provider "tool", model the tool's
name) and a ``tool.call`` audit event. A route that lists no tools adds
nothing to the run's history.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, ValidationError
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.audit.events import Actor
from baton.nodes.base import (
    GraphError,
    Run,
    activity_options,
    error_type,
    problems,
    root_message,
    unless_failed,
)
from baton.routing import Attempt, AttemptOutcome
from baton.state import NodeRecord
from baton.tools import CANNOT_ANSWER, spec_of, tool_models

if TYPE_CHECKING:
    from baton.nodes.ask import Ask

TOOL_TIER = "tools"


def check_tools(node_id: str, tools: Sequence[Callable[..., Any]]) -> None:
    """A GraphError naming the node unless each of ``tools`` is a tool."""
    for fn in tools:
        try:
            spec_of(fn)
            tool_models(fn)
        except TypeError as err:
            raise GraphError(f"node '{node_id}': {err}") from None


@dataclass(frozen=True)
class ToolReply:
    """What one call of a tool came back with: its result (None: it has no
    answer), or why it failed, ``cannot_answer`` when it said so."""

    result: BaseModel | None = None
    error: str | None = None
    cannot_answer: bool = False


async def call_tool(
    name: str, args: BaseModel, result_model: type[BaseModel], options: dict[str, Any]
) -> ToolReply:
    """One call of the @tool activity ``name``, for the tool tier or an
    Agent's model. A failure is the caller's to tell of, so it is returned."""
    # Tools do not heartbeat: their own timeout bounds them.
    options = {k: v for k, v in options.items() if k != "heartbeat_timeout"}
    result, failed = await unless_failed(
        workflow.execute_activity(name, args, result_type=result_model, **options)
    )
    if failed is None:
        return ToolReply(result=result)
    return ToolReply(error=root_message(failed), cannot_answer=error_type(failed) == CANNOT_ANSWER)


async def tool_tier(
    run: Run, node: Ask, record: NodeRecord, listed: Sequence[str], attempts: list[Attempt]
) -> Any | None:
    """The Ask's output from the first listed tool that answers it, or None."""
    declared = {spec_of(fn).name: fn for fn in node.tools}
    for name in listed:
        fn = declared.get(name)
        if fn is None:
            raise ApplicationError(
                f"node '{node.id}': the route of task '{node.task}' lists tool '{name}', which "
                f"the Ask does not declare (its tools: {', '.join(declared) or 'none'}); add it "
                "to Ask(tools=...) or remove it from the routing file",
                type="RoutingError",
                non_retryable=True,
            )
        attempt, value = await _call(run, node, record, fn, len(attempts) + 1)
        attempts.append(attempt)
        run.publish()
        if attempt.outcome == "accepted":
            record.meta.update(
                provider=attempt.provider,
                model=attempt.model,
                confidence=attempt.confidence,
                confidence_method=attempt.confidence_method,
            )
            return value
    return None


async def _call(
    run: Run, node: Ask, record: NodeRecord, fn: Callable[..., Any], index: int
) -> tuple[Attempt, Any]:
    name = spec_of(fn).name
    args_model, result_model = tool_models(fn)
    started = workflow.now()
    attempt = Attempt(
        index=index,
        tier=TOOL_TIER,
        provider="tool",
        model=name,
        repair=0,
        outcome="invalid",
        started_at=started,
        finished_at=started,
    )
    value: Any = None
    result: dict[str, Any] | None = None
    arguments = run.resolve(node.inputs)
    outcome: AttemptOutcome = "invalid"
    errors: list[str] = []
    try:
        args = args_model.model_validate(arguments)
    except ValidationError as err:
        errors = ["the Ask's inputs do not fit the tool: " + "; ".join(problems(err, "inputs"))]
    else:
        options = activity_options(run, node, record)
        options.update(
            activity_id=f"{options['activity_id']}.tool{index}", summary=f"{node.id}: {name}"
        )
        reply = await call_tool(name, args, result_model, options)
        if reply.error is not None:
            errors = [reply.error]
            if not reply.cannot_answer:
                outcome = "provider_error"
        elif reply.result is None:
            errors = ["the tool has no answer for these inputs"]
        else:
            result = reply.result.model_dump(mode="json")
            value, errors = node.judge(result)
            if not errors:
                outcome = "accepted"
    attempt = attempt.model_copy(
        update={
            "outcome": outcome,
            "errors": errors,
            "output": result,
            "confidence": 1.0 if outcome == "accepted" else None,
            "confidence_method": "deterministic" if outcome == "accepted" else None,
            "finished_at": workflow.now(),
        }
    )
    run.trail.record(
        "tool.call",
        node=node.id,
        about=f"v{record.visits}/attempt{index}",
        actor=Actor(type="service", id=name),
        task=node.task,
        tool=name,
        arguments=arguments,
        result=result,
        error="; ".join(errors) if outcome != "accepted" else None,
        outcome=outcome,
        started_at=started,
        finished_at=attempt.finished_at,
        duration_s=(attempt.finished_at - started).total_seconds(),
    )
    return attempt, value if outcome == "accepted" else None
