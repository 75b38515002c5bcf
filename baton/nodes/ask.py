"""Ask: a question to a model, routed by the run's configuration.

The cascade is planned in the workflow (:func:`baton.routing.plan_route`),
one activity per attempt: an invalid answer is repaired by the same model
with the errors fed back; still invalid, or below the task's minimum
confidence, goes to the next tier; the human tier, or a spent budget, opens
a gate on this node that shows the reviewer every attempt."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Sequence
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from baton.gates import GateState
from baton.llm import AskAnswer, AskRequest
from baton.nodes.base import (
    ActivityRef,
    Done,
    Run,
    activity_options,
    error_type,
    model_fields,
    root_message,
)
from baton.nodes.gate import Gate, await_decision, shown_attempts
from baton.nodes.model_node import ModelNode
from baton.nodes.tool_tier import tool_tier
from baton.routing import (
    HUMAN,
    Attempt,
    AttemptOutcome,
    Option,
    Plan,
    PlannedTier,
    RoutingError,
    plan_route,
)
from baton.state import NodeRecord

if TYPE_CHECKING:
    pass

ASK_ACTIVITY = "ask"
# A provider's refusal of one candidate (its key, its model name, a request
# parameter that model does not take): no retry helps, but another candidate
# or a person may answer, so the cascade skips the candidate with an alert.
# Runs started before SKIP_REFUSING_CANDIDATES failed the step instead.
REFUSALS = ("ProviderAuthError", "UnknownModel", "ProviderRequestError")
SKIP_REFUSING_CANDIDATES = "ask-skips-refusing-candidates"
# Runs started before it ranked answers by confidence whatever measured it.
RANK_BY_ONE_METHOD = "ask-ranks-by-one-method"
# What an accepted attempt leaves in its node's record, for the status and
# the run's search attributes (the lowest confidence).
ANSWER_FACTS = {
    "provider",
    "model",
    "confidence",
    "confidence_method",
    "input_tokens",
    "output_tokens",
}


class Ask(ModelNode):
    """An LLM step: ``task`` names what to ask; the answer must validate
    against ``output``. Which model answers is decided by routing, not here."""

    tools: tuple[Callable[..., Any], ...] = Field(
        default=(),
        description="@tool functions that may answer before any model, if the task's route "
        "lists them (baton.nodes.tool_tier)",
    )

    kind: ClassVar[str] = "ask"
    __init__ = ModelNode.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(self.output)

    def answer_model(self) -> type[BaseModel]:
        return self.output

    def activities(self) -> Sequence[ActivityRef]:
        return [ASK_ACTIVITY, *self.tools]

    async def run(self, run: Run, record: NodeRecord) -> Done:
        return Done(await _Cascade(self, run, record).answer())

    def mermaid_shape(self) -> str:
        return f'[/"{self.id}<br/><small>LLM: {self.task}</small>"/]'


class _Cascade:
    """One visit of an Ask node: its plan and its attempts."""

    def __init__(self, node: Ask, run: Run, record: NodeRecord) -> None:
        self.node = node
        self.run = run
        self.record = record

    async def answer(self) -> Any:
        node, record = self.node, self.record
        assert self.run.state.config is not None
        routing = self.run.state.config.routing
        try:
            plan = plan_route(routing, node.task)
        except RoutingError as err:
            raise ApplicationError(
                f"node '{node.id}': {err}", type="RoutingError", non_retryable=True
            ) from None
        attempts: list[Attempt] = []
        feedback = self.run.state.feedback.pop(node.id, ([], None))
        record.meta.update(
            task=node.task,
            cascade=[t.name for t in plan.tiers],
            excluded=plan.excluded,
            attempts=attempts,
            cost_usd=0.0,
        )
        trail = self.run.trail
        trail.record(
            "routing.decided",
            node=node.id,
            about=f"v{record.visits}/planned",
            task=node.task,
            decision="planned",
            cascade=[t.name for t in plan.tiers],
            candidates={t.name: [o.candidate for o in t.options] for t in plan.tiers},
            excluded=plan.excluded,
            data_class=plan.route.data_class,
            min_confidence=plan.route.min_confidence,
            repair_attempts=plan.route.repair_attempts,
            budget_usd=routing.budget_usd_per_run,
        )
        if plan.route.tools:
            answered = await tool_tier(self.run, node, record, plan.route.tools, attempts)
            if answered is not None:
                return answered
        best: tuple[Attempt, Any] | None = None
        escalation: str | None = None
        for tier in plan.tiers:
            if tier.name == HUMAN:
                escalation = "the cascade reached its human tier"
                break
            budget = routing.budget_usd_per_run
            if tier.paid and budget is not None and self.run.cost() >= budget:
                escalation = f"the run's budget of ${budget:.2f} is spent (${self.run.cost():.4f})"
                break
            accepted, candidate = await self._try_tier(plan, tier, attempts, feedback)
            if accepted is not None:
                return accepted
            if candidate is not None and (best is None or _more_confident(candidate[0], best[0])):
                best = candidate
        if escalation is None:
            if best is None:
                raise ApplicationError(
                    f"node '{node.id}': no model gave a valid answer ({len(attempts)} attempts: "
                    f"{'; '.join(_outcome(a) for a in attempts)})",
                    type="NoValidAnswer",
                    non_retryable=True,
                )
            attempt, value = best
            attempt.outcome = "accepted_below_minimum"
            self._note_answer(attempt)
            trail.record(
                "routing.decided",
                node=node.id,
                about=f"v{record.visits}/accepted",
                decision="accepted below the minimum confidence: the cascade has no human tier",
                attempt=attempt.index,
            )
            return value
        trail.record(
            "routing.decided",
            node=node.id,
            about=f"v{record.visits}/escalated",
            decision="escalated to a person",
            why=escalation,
        )
        self._stop_if_cancelled()
        return await self._ask_a_person(plan, escalation, best)

    async def _try_tier(
        self,
        plan: Plan,
        tier: PlannedTier,
        attempts: list[Attempt],
        feedback: tuple[list[str], Any],
    ) -> tuple[Any, tuple[Attempt, Any] | None]:
        """(accepted output or None, the valid-but-unsure answer if any).
        Candidates of a tier are alternatives: the next is tried only when a
        provider fails for good."""
        node, record = self.node, self.record
        for option in tier.options:
            # A reviewer's change request is the first repair: what to fix, and
            # the answer it is about.
            errors, previous = feedback
            reply = ""
            for repair in range(plan.route.repair_attempts + 1):
                attempt, value = await self._attempt(
                    option,
                    repair,
                    errors,
                    previous,
                    len(attempts) + 1,
                    minimum=plan.route.min_confidence,
                    max_tokens=plan.route.max_tokens,
                    previous_reply=reply,
                )
                attempts.append(attempt)
                node.record_inference(
                    self.run,
                    f"v{record.visits}/attempt{attempt.index}",
                    attempt,
                    min_confidence=plan.route.min_confidence,
                )
                record.meta["cost_usd"] = sum(a.cost_usd for a in attempts)
                self.run.publish()
                if attempt.outcome == "provider_error":
                    break
                if attempt.outcome == "accepted":
                    self._note_answer(attempt)
                    return value, None
                if attempt.outcome == "low_confidence":
                    return None, (attempt, value)
                errors, previous, reply = attempt.errors, attempt.output, attempt.raw_reply
            else:
                return None, None
        return None, None

    async def _attempt(
        self,
        option: Option,
        repair: int,
        errors: list[str],
        previous: Any,
        index: int,
        *,
        minimum: float,
        max_tokens: int,
        previous_reply: str,
    ) -> tuple[Attempt, Any]:
        node = self.node
        self._stop_if_cancelled()
        started = workflow.now()
        request = AskRequest(
            task=node.task,
            instructions=node.instructions,
            inputs=self.run.resolve(node.inputs),
            documents=list(node.documents),
            output_schema=node.output_schema(),
            provider_name=option.candidate.provider,
            provider=option.provider,
            model=option.candidate.model,
            repair_errors=errors,
            previous_output=previous,
            previous_reply=previous_reply,
            max_tokens=max_tokens,
            temperature=option.candidate.temperature,
            logprobs=option.candidate.logprobs,
        )
        options = activity_options(self.run, node, self.record)
        options["activity_id"] += f".{index}"
        # As long as the routing lets a try wait for a slot and for the
        # model, not a cap hidden here.
        options["start_to_close_timeout"] = timedelta(seconds=option.provider.attempt_timeout_s)
        options["summary"] = f"{node.id}: {option.candidate.provider}/{option.candidate.model}"
        if self.run.state.undo_in_flight:
            # A stop waits until the model call has really ended (the activity
            # heartbeats): no call of a stopped run outlives it.
            options["cancellation_type"] = (
                workflow.ActivityCancellationType.WAIT_CANCELLATION_COMPLETED
            )
        attempt = Attempt(
            index=index,
            tier=option.tier,
            provider=option.candidate.provider,
            model=option.candidate.model,
            repair=repair,
            outcome="provider_error",
            started_at=started,
            finished_at=started,
        )
        try:
            answer = await workflow.execute_activity(
                ASK_ACTIVITY, request, result_type=AskAnswer, **options
            )
        except ActivityError as err:
            refused = error_type(err) in REFUSALS
            if refused and not workflow.patched(SKIP_REFUSING_CANDIDATES):
                raise
            # A stop or cancel, not a provider's failure: the cascade ends here,
            # with no further model call and no gate (runs started before
            # COMPENSATE_IN_FLIGHT took it as a failed attempt).
            if self.run.state.undo_in_flight and is_cancelled_exception(err):
                raise
            self._stop_if_cancelled()
            failed = {"errors": [root_message(err)], "finished_at": workflow.now()}
            if refused:
                self.run.trail.record(
                    "routing.decided",
                    node=node.id,
                    about=f"v{self.record.visits}/skipped{index}",
                    decision="skipped a candidate",
                    candidate=f"{option.candidate.provider}/{option.candidate.model}",
                    why=root_message(err),
                )
            return attempt.model_copy(update=failed), None
        self._stop_if_cancelled()
        value, problems = self._judge(answer)
        if problems:
            outcome: AttemptOutcome = "invalid"
        else:
            outcome = "accepted" if answer.confidence >= minimum else "low_confidence"
        answered = {
            "model": answer.model or option.candidate.model,
            "outcome": outcome,
            "confidence": answer.confidence,
            "confidence_method": answer.confidence_method,
            "input_tokens": answer.input_tokens,
            "output_tokens": answer.output_tokens,
            "cost_usd": option.candidate.cost_usd(answer.input_tokens, answer.output_tokens),
            "errors": problems,
            "output": answer.output,
            "notes": answer.notes,
            "response_id": answer.response_id,
            "finish_reason": answer.finish_reason,
            "raw_reply": answer.raw_reply,
            "finished_at": workflow.now(),
        }
        return attempt.model_copy(update=answered), value

    def _stop_if_cancelled(self) -> None:
        """End the visit if its node was cancelled. The SDK takes the task's
        cancellation as a request to cancel the activity it awaits, so a call
        that ended anyway (it answered as the stop came) returns as if nothing
        happened: the task's pending cancellation is what tells."""
        task = asyncio.current_task()
        if self.run.state.undo_in_flight and task is not None and task.cancelling():
            raise asyncio.CancelledError

    def _judge(self, answer: AskAnswer) -> tuple[Any, list[str]]:
        """The answer as the node's output, or why it is refused: the reply's
        format, the output schema, then the node's own checks."""
        if answer.format_errors:
            return None, list(answer.format_errors)
        return self.node.judge(answer.output)

    def _note_answer(self, attempt: Attempt) -> None:
        self.record.meta.update(attempt.model_dump(include=ANSWER_FACTS))

    async def _ask_a_person(self, plan: Plan, reason: str, best: tuple[Attempt, Any] | None) -> Any:
        node, record = self.node, self.record
        attempts: list[Attempt] = record.meta["attempts"]
        shown = {
            "task": node.task,
            "why": reason,
            "inputs": self.run.resolve(node.inputs),
            "attempts": shown_attempts(self.run, attempts),
            "proposed": None if best is None else best[1],
        }
        record.meta["escalated"] = reason
        # The SLA a Gate node has, from the routing: reminders, escalation
        # along the chain, then holding (baton.nodes.gate.await_decision).
        hours = plan.route.human_sla_hours
        gate = GateState(
            gate=node.id,
            round=record.visits,
            roles=[plan.route.human_role],
            chain=list(plan.route.human_escalate_to),
            opened_at=workflow.now(),
            sla=None if hours is None else timedelta(hours=hours),
            remind_fraction=None if hours is None else Gate.model_fields["remind_at"].default,
            shown=shown,
        )
        decision = await await_decision(self.run, gate, record)
        if decision.outcome == "reject":
            return None
        record.meta.update(
            confidence=1.0, confidence_method="human_review", decided_by=decision.user
        )
        if decision.edited:
            return gate.edited_output
        assert best is not None
        return best[1]


def _more_confident(a: Attempt, b: Attempt) -> bool:
    """Is ``a``, from a later tier, a better answer than ``b``? Confidences
    are compared only when one method measured both: log-probabilities and
    a model's own report are different scales, so then the later tier, the
    one the routing trusts more, wins."""
    if a.confidence_method != b.confidence_method and workflow.patched(RANK_BY_ONE_METHOD):
        return True
    return (a.confidence or 0.0) > (b.confidence or 0.0)


def _outcome(attempt: Attempt) -> str:
    said = f"{attempt.provider}/{attempt.model}: {attempt.outcome}"
    return f"{said} ({attempt.errors[0][:200]})" if attempt.errors else said
