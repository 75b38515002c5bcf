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
from typing import TYPE_CHECKING, Any

from pydantic import ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from baton.audit.events import Actor
from baton.nodes.base import (
    GraphError,
    Run,
    activity_options,
    error_type,
    problems,
    root_message,
    schema_problems,
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
        options.pop("heartbeat_timeout", None)
        options.update(
            activity_id=f"{options['activity_id']}.tool{index}", summary=f"{node.id}: {name}"
        )
        try:
            answered = await workflow.execute_activity(
                name, args, result_type=result_model, **options
            )
        except ActivityError as err:
            if is_cancelled_exception(err):
                raise
            errors = [root_message(err)]
            if error_type(err) != CANNOT_ANSWER:
                outcome = "provider_error"
        else:
            if answered is None:
                errors = ["the tool has no answer for these inputs"]
            else:
                result = answered.model_dump(mode="json")
                errors = schema_problems(node.output, result)
                if not errors:
                    value = node.output.model_validate(result)
                    errors = [p for check in node.checks for p in check(value)]
                if not errors:
                    outcome = "accepted"
                    value = value.model_dump(mode="json")
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
