"""Executes a :class:`~baton.graph.Graph` inside a Temporal workflow.

A process's workflow class subclasses :class:`GraphWorkflow`, sets ``graph``
and defines its ``@workflow.run`` method as ``return await self.execute(request)``.
The base class brings what every run needs:

- deterministic execution of the graph: ready nodes start together, each
  activity with its node's timeout, retry policy and an activity id
  ``<node>#<visit>`` that doubles as the idempotency key of system writes;
- a run configuration snapshot taken once at start (a local activity, so it
  is in history and replays identically);
- the ``status`` query, the ``decide`` update (validated: a refused decision
  answers the caller with the reason) and the ``decide`` signal (fire and
  forget: a refused signal is recorded and changes nothing);
- search attributes (process, current node, status, pending gate roles, gate
  due time) upserted as the run moves, so the Web UI and ``baton inbox`` can
  find runs waiting for a role.

Everything here is workflow code: no I/O, no wall clock, no randomness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Mapping
from datetime import datetime, timedelta
from functools import cache, partial
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from baton import search
from baton.audit.events import Actor
from baton.audit.trail import Trail
from baton.config import RunConfig
from baton.gates import (
    Channel,
    Decision,
    GateDecision,
    GateState,
    Refusal,
    refusal_reason,
    role_for,
)
from baton.graph import INPUT, AnyNode, Ask, Back, Gate, Graph, Step, parse_ref
from baton.llm import AskAnswer, AskRequest
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

M = TypeVar("M", bound=BaseModel)

SNAPSHOT_CONFIG_ACTIVITY = "snapshot_run_config"
ASK_ACTIVITY = "ask"
# Provider errors that every other model would repeat (a refused key, an
# unknown model, a malformed request): they fail the step instead of cascading.
FATAL_PROVIDER_ERRORS = ("ProviderAuthError", "UnknownModel", "ProviderRequestError")

NodeStatus = Literal["pending", "running", "waiting", "finished", "skipped", "failed"]
RunState = Literal["starting", "running", "waiting", "completed", "rejected", "failed"]


class RunInput(BaseModel):
    """Fields every process input carries besides its own."""

    requested_by: str = "unknown"
    config: RunConfig | None = Field(
        default=None,
        description="Run configuration; when absent the worker's baton.toml is snapshotted.",
    )


class NodeRecord(BaseModel):
    node: str
    kind: str
    status: NodeStatus = "pending"
    visits: int = 0
    started_at: datetime | None = None
    finished_at: datetime | None = None
    output: Any = None
    detail: str = ""
    meta: dict[str, Any] = Field(default_factory=dict)


class RunStatus(BaseModel):
    """What `baton status` shows: where the run is and what it has done."""

    workflow_id: str
    process: str
    state: RunState
    requested_by: str
    config_digest: str
    current: list[str]
    nodes: list[NodeRecord]
    gates: list[GateState]
    refusals: list[Refusal]
    cost_usd: float = 0.0
    min_confidence: float | None = None
    error: str | None = None


class RunResult(BaseModel):
    workflow_id: str
    process: str
    outcome: Literal["completed", "rejected"]
    outputs: dict[str, Any]
    path: list[str] = Field(description="Nodes that ran, in the order they finished.")
    skipped: dict[str, str] = Field(description="Skipped nodes and why.")


class RunView:
    """The read-only view of a run that ``when=`` predicates receive."""

    def __init__(
        self,
        run_input: BaseModel,
        records: Mapping[str, NodeRecord],
        config: RunConfig,
    ) -> None:
        self.input = run_input
        self.config = config
        self._records = records

    def output(self, node_id: str) -> Any:
        return self._records[node_id].output

    def get(self, node_id: str, model: type[M]) -> M | None:
        value = self.output(node_id)
        return None if value is None else model.model_validate(value)

    def meta(self, node_id: str) -> dict[str, Any]:
        return self._records[node_id].meta

    def confidence(self, node_id: str) -> float:
        return float(self.meta(node_id).get("confidence", 0.0))

    def visits(self, node_id: str) -> int:
        return self._records[node_id].visits


class GraphWorkflow:
    """Base class of every process workflow; see the module docstring."""

    graph: ClassVar[Graph]

    def __init__(self) -> None:
        self._input: RunInput | None = None
        self._config: RunConfig | None = None
        self._records = {n.id: NodeRecord(node=n.id, kind=n.kind) for n in self.graph.nodes}
        self._gates: dict[str, GateState] = {}
        self._refusals: list[Refusal] = []
        self._finish_order: list[str] = []
        self._outcome: RunState = "starting"
        self._rejected = False
        self._error: str | None = None
        self._published: dict[str, Any] = {}
        self.trail = Trail()

    async def execute(self, request: RunInput) -> RunResult:
        self._input = request
        self._config = request.config or await workflow.execute_local_activity(
            SNAPSHOT_CONFIG_ACTIVITY,
            result_type=RunConfig,
            start_to_close_timeout=timedelta(seconds=10),
        )
        self.trail.record(
            "config.snapshot",
            digest=self._config.digest,
            source=self._config.source,
            routing=self._config.routing.source,
            thresholds=self._config.thresholds,
            given_in_input=request.config is not None,
            intended_purpose=self.graph.purpose,
            risk_class=self.graph.risk_class,
        )
        self._outcome = "running"
        self._publish()
        try:
            await self._run_graph()
        except ApplicationError as err:
            self._outcome = "failed"
            self._error = err.message
            self._publish()
            raise
        self._outcome = "rejected" if self._rejected else "completed"
        self._publish()
        return RunResult(
            workflow_id=workflow.info().workflow_id,
            process=self.graph.name,
            outcome="rejected" if self._rejected else "completed",
            outputs={r.node: r.output for r in self._records.values() if r.status == "finished"},
            path=list(self._finish_order),
            skipped={r.node: r.detail for r in self._records.values() if r.status == "skipped"},
        )

    # -- the graph ---------------------------------------------------------

    async def _run_graph(self) -> None:
        done: set[str] = set()
        running: dict[str, asyncio.Task[set[str]]] = {}
        while True:
            for node in self.graph.nodes:
                if node.id in done or node.id in running:
                    continue
                if all(p in done for p in self.graph.predecessors(node.id)):
                    running[node.id] = asyncio.create_task(self._run_node(node))
            if not running:
                return
            self._publish()
            finished, _ = await workflow.wait(
                list(running.values()), return_when=asyncio.FIRST_COMPLETED
            )
            for node_id, task in list(running.items()):
                if task not in finished:
                    continue
                del running[node_id]
                if task.exception() is not None:
                    await self._cancel(running)
                    raise task.exception()  # type: ignore[misc]
                done.add(node_id)
                done -= task.result()
            if self._rejected:
                await self._cancel(running)
                self._skip_rest(done, "the run was rejected at a gate")
                return

    async def _cancel(self, running: dict[str, asyncio.Task[set[str]]]) -> None:
        for task in running.values():
            task.cancel()
        if running:
            await workflow.wait(list(running.values()))

    def _skip_rest(self, done: set[str], reason: str) -> None:
        for record in self._records.values():
            if record.node not in done and record.status in ("pending", "running", "waiting"):
                record.status = "skipped"
                record.detail = reason
                self.trail.record("node.skipped", node=record.node, reason=reason)

    async def _run_node(self, node: AnyNode) -> set[str]:
        """Run one node; returns the nodes a Back edge sends the run back to."""
        record = self._records[node.id]
        record.visits += 1
        record.status = "running"
        record.started_at = workflow.now()
        record.finished_at = None
        record.detail = ""
        self.trail.record("node.started", node=node.id, kind=node.kind, visit=record.visits)
        if isinstance(node, Back):
            return self._take_back_edge(node, record)
        if node.when is not None:
            if not node.when(self._view()):
                self._finish(record, "skipped", None, f"condition {node.condition_name} was false")
                return set()
            record.meta["condition"] = f"{node.condition_name} was true"
        try:
            if isinstance(node, Step):
                output = await self._run_step(node, record)
            elif isinstance(node, Ask):
                output = await self._run_ask(node, record)
            else:
                assert isinstance(node, Gate)
                output = await self._run_gate(node, record)
        except ActivityError as err:
            message = f"node '{node.id}' failed: {_root_message(err)}"
            self._finish(record, "failed", None, message)
            raise ApplicationError(message, type="NodeFailed", non_retryable=True) from err
        except ApplicationError as err:
            self._finish(record, "failed", None, err.message)
            raise
        self._finish(record, "finished", output, record.detail)
        return set()

    def _finish(self, record: NodeRecord, status: NodeStatus, output: Any, detail: str) -> None:
        record.status = status
        record.output = output
        record.detail = detail
        record.finished_at = workflow.now()
        if status == "finished":
            self._finish_order.append(record.node)
        started = record.started_at or record.finished_at
        self.trail.record(
            f"node.{status}",
            node=record.node,
            visit=record.visits,
            output=output,
            detail=detail,
            duration_ms=(record.finished_at - started).total_seconds() * 1000,
            meta={k: v for k, v in record.meta.items() if k != "attempts"},
        )

    def _take_back_edge(self, node: Back, record: NodeRecord) -> set[str]:
        assert node.when is not None
        if not node.when(self._view()):
            self._finish(record, "finished", None, f"loop not taken: {node.condition_name} false")
            return set()
        target_visits = self._records[node.to].visits
        if target_visits >= node.max_visits:
            message = (
                f"node '{node.id}': loop back to '{node.to}' reached its bound of "
                f"{node.max_visits} visits"
            )
            self._finish(record, "failed", None, message)
            raise ApplicationError(message, type="LoopBoundReached", non_retryable=True)
        self._finish(record, "finished", None, f"loop taken back to '{node.to}'")
        again = {node.to} | (self.graph.descendants(node.to) & self.graph.ancestors(node.id))
        again.add(node.id)
        for node_id in again:
            self._records[node_id].status = "pending"
            self._gates.pop(node_id, None)
        return again

    def _activity_options(self, node: Step | Ask, record: NodeRecord) -> dict[str, Any]:
        options: dict[str, Any] = {
            "activity_id": f"{node.id}#{record.visits}",
            "start_to_close_timeout": node.timeout,
            "retry_policy": node.retry.to_temporal(),
            "summary": f"{self.graph.name}.{node.id}",
        }
        if node.heartbeat is not None:
            options["heartbeat_timeout"] = node.heartbeat
        return options

    async def _run_step(self, node: Step, record: NodeRecord) -> Any:
        try:
            arg = node.input_model.model_validate(self._resolve(node.inputs))
        except ValidationError as err:
            raise ApplicationError(
                f"node '{node.id}': its inputs do not fit {node.input_model.__name__}: {err}",
                type="InvalidNodeInput",
                non_retryable=True,
            ) from None
        options = self._activity_options(node, record)
        if node.local:
            options.pop("summary")
            options.pop("heartbeat_timeout", None)
            result = await workflow.execute_local_activity(node.activity, arg, **options)
        else:
            result = await workflow.execute_activity(node.activity, arg, **options)
        return result.model_dump(mode="json")

    async def _run_ask(self, node: Ask, record: NodeRecord) -> Any:
        """The cascade: each planned model in turn, one activity per attempt.
        An invalid answer is repaired by the same model with the errors fed
        back; still invalid, or below the task's minimum confidence, goes to
        the next tier; the human tier, or a spent budget, opens a gate on this
        node that shows the reviewer every attempt."""
        assert self._config is not None
        routing = self._config.routing
        try:
            plan = plan_route(routing, node.task)
        except RoutingError as err:
            raise ApplicationError(
                f"node '{node.id}': {err}", type="RoutingError", non_retryable=True
            ) from None
        attempts: list[Attempt] = []
        record.meta.update(
            task=node.task,
            cascade=[t.name for t in plan.tiers],
            excluded=plan.excluded,
            attempts=attempts,
            cost_usd=0.0,
        )
        self.trail.record(
            "routing.decided",
            node=node.id,
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
        best: tuple[Attempt, Any] | None = None
        escalation: str | None = None
        for tier in plan.tiers:
            if tier.name == HUMAN:
                escalation = "the cascade reached its human tier"
                break
            budget = routing.budget_usd_per_run
            if tier.paid and budget is not None and self._cost() >= budget:
                escalation = f"the run's budget of ${budget:.2f} is spent (${self._cost():.4f})"
                break
            accepted, candidate = await self._try_tier(node, record, plan, tier, attempts)
            if accepted is not None:
                return accepted
            if candidate is not None and (best is None or _more_confident(candidate[0], best[0])):
                best = candidate
        if escalation is None:
            if best is None:
                raise ApplicationError(
                    f"node '{node.id}': no model gave a valid answer ({len(attempts)} attempts: "
                    f"{'; '.join(f'{a.provider}/{a.model}: {a.outcome}' for a in attempts)})",
                    type="NoValidAnswer",
                    non_retryable=True,
                )
            attempt, value = best
            attempt.outcome = "accepted_below_minimum"
            self._note_answer(record, attempt)
            self.trail.record(
                "routing.decided",
                node=node.id,
                decision="accepted below the minimum confidence: the cascade has no human tier",
                attempt=attempt.index,
            )
            return value
        self.trail.record(
            "routing.decided", node=node.id, decision="escalated to a person", why=escalation
        )
        return await self._ask_a_person(node, record, plan, escalation, best)

    async def _try_tier(
        self,
        node: Ask,
        record: NodeRecord,
        plan: Plan,
        tier: PlannedTier,
        attempts: list[Attempt],
    ) -> tuple[Any, tuple[Attempt, Any] | None]:
        """(accepted output or None, the valid-but-unsure answer if any).
        Candidates of a tier are alternatives: the next is tried only when a
        provider fails for good."""
        for option in tier.options:
            errors: list[str] = []
            previous: Any = None
            for repair in range(plan.route.repair_attempts + 1):
                attempt, value = await self._attempt(
                    node,
                    record,
                    option,
                    repair,
                    errors,
                    previous,
                    len(attempts) + 1,
                    minimum=plan.route.min_confidence,
                )
                attempts.append(attempt)
                self.trail.record(
                    "ai.inference",
                    node=node.id,
                    actor=Actor(type="ai_model", id=f"{attempt.provider}/{attempt.model}"),
                    operation="chat",
                    task=node.task,
                    **attempt.model_dump(),
                    min_confidence=plan.route.min_confidence,
                )
                record.meta["cost_usd"] = sum(a.cost_usd for a in attempts)
                self._publish()
                if attempt.outcome == "provider_error":
                    break
                if attempt.outcome == "accepted":
                    self._note_answer(record, attempt)
                    return value, None
                if attempt.outcome == "low_confidence":
                    return None, (attempt, value)
                errors, previous = attempt.errors, attempt.output
            else:
                return None, None
        return None, None

    async def _attempt(
        self,
        node: Ask,
        record: NodeRecord,
        option: Option,
        repair: int,
        errors: list[str],
        previous: Any,
        index: int,
        *,
        minimum: float,
    ) -> tuple[Attempt, Any]:
        started = workflow.now()
        request = AskRequest(
            task=node.task,
            instructions=node.instructions,
            inputs=self._resolve(node.inputs),
            output_schema=_json_schema(node.output),
            provider_name=option.candidate.provider,
            provider=option.provider,
            model=option.candidate.model,
            repair_errors=errors,
            previous_output=previous,
        )
        options = self._activity_options(node, record)
        options["activity_id"] += f".{index}"
        options["summary"] = f"{node.id}: {option.candidate.provider}/{option.candidate.model}"
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
            if _error_type(err) in FATAL_PROVIDER_ERRORS:
                raise
            failed = {"errors": [_root_message(err)], "finished_at": workflow.now()}
            return attempt.model_copy(update=failed), None
        value, problems = self._judge(node, answer)
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
            "finished_at": workflow.now(),
        }
        return attempt.model_copy(update=answered), value

    def _judge(self, node: Ask, answer: AskAnswer) -> tuple[Any, list[str]]:
        """The answer as the node's output, or why it is refused: the reply's
        format, the output schema, then the node's own checks."""
        if answer.format_errors:
            return None, list(answer.format_errors)
        problems = _schema_problems(node.output, answer.output)
        if problems:
            return None, problems
        value = node.output.model_validate(answer.output)
        problems = [p for check in node.checks for p in check(value)]
        return (None, problems) if problems else (value.model_dump(mode="json"), [])

    def _note_answer(self, record: NodeRecord, attempt: Attempt) -> None:
        record.meta.update(
            provider=attempt.provider,
            model=attempt.model,
            confidence=attempt.confidence,
            confidence_method=attempt.confidence_method,
            input_tokens=attempt.input_tokens,
            output_tokens=attempt.output_tokens,
        )

    async def _ask_a_person(
        self,
        node: Ask,
        record: NodeRecord,
        plan: Plan,
        reason: str,
        best: tuple[Attempt, Any] | None,
    ) -> Any:
        attempts: list[Attempt] = record.meta["attempts"]
        shown = {
            "task": node.task,
            "why": reason,
            "inputs": self._resolve(node.inputs),
            "attempts": [a.model_dump(mode="json") for a in attempts],
            "proposed": None if best is None else best[1],
        }
        record.meta["escalated"] = reason
        decision = await self._await_decision(
            node.id,
            role=plan.route.human_role,
            sla=None,
            escalate_to=(),
            shown=shown,
            record=record,
        )
        if decision.outcome == "reject":
            return None
        record.meta.update(
            confidence=1.0, confidence_method="human_review", decided_by=decision.user
        )
        if decision.edited:
            return self._gates[node.id].edited_output
        assert best is not None
        return best[1]

    async def _run_gate(self, node: Gate, record: NodeRecord) -> Any:
        shown = self._resolve(node.inputs)
        if node.subject is not None:
            subject = self._records[node.subject]
            shown["subject"] = {"node": node.subject, "output": subject.output, **subject.meta}
        decision = await self._await_decision(
            node.id,
            role=node.role,
            sla=node.sla,
            escalate_to=node.escalate_to,
            shown=shown,
            record=record,
        )
        if decision.edited and node.subject is not None:
            subject = self._records[node.subject]
            subject.meta.update(original_output=subject.output, overridden_by=decision.user)
            subject.output = self._gates[node.id].edited_output
        return decision.model_dump(mode="json")

    async def _await_decision(
        self,
        gate_id: str,
        *,
        role: str,
        sla: timedelta | None,
        escalate_to: tuple[str, ...],
        shown: dict[str, Any],
        record: NodeRecord,
    ) -> GateDecision:
        """Open a gate and wait for an accepted decision. At each SLA the gate
        escalates along the chain; once the chain is exhausted it holds: it
        never decides by itself."""
        now = workflow.now()
        gate = GateState(
            gate=gate_id,
            roles=[role],
            chain=list(escalate_to),
            opened_at=now,
            due_at=now + sla if sla else None,
            shown=shown,
        )
        self._gates[gate_id] = gate
        record.status = "waiting"
        self.trail.ship_soon()
        self.trail.record(
            "gate.opened",
            node=gate_id,
            roles=gate.roles,
            chain=gate.chain,
            sla_seconds=sla.total_seconds() if sla else None,
            due_at=gate.due_at,
            shown=shown,
        )
        self._publish()
        while gate.decision is None:
            timeout = gate.due_at - workflow.now() if gate.due_at else None
            try:
                await workflow.wait_condition(
                    lambda: gate.decision is not None,
                    timeout=timeout,
                    timeout_summary=f"SLA of gate {gate_id}",
                )
            except TimeoutError:
                if gate.chain:
                    escalated_to = gate.escalate(workflow.now())
                    gate.due_at = workflow.now() + sla if sla else None
                    record.detail = f"escalated to {escalated_to}"
                    self.trail.record(
                        "gate.escalated",
                        node=gate_id,
                        to_role=escalated_to,
                        roles=gate.roles,
                        due_at=gate.due_at,
                    )
                else:
                    gate.due_at = None
                    gate.holding = True
                    record.detail = "SLA chain exhausted; holding until someone decides"
                    self.trail.record(
                        "gate.escalated", node=gate_id, holding=True, roles=gate.roles
                    )
                self._publish()
        record.status = "running"
        record.meta.update(decided_by=gate.decision.user, role=gate.decision.role)
        if gate.decision.outcome == "reject":
            self._rejected = True
        return gate.decision

    def _resolve(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        assert self._input is not None
        resolved: dict[str, Any] = {}
        for name, ref in inputs.items():
            source, field = parse_ref(ref)
            if source == INPUT:
                value: Any = self._input.model_dump(mode="json")
            else:
                value = self._records[source].output
            if field is not None:
                value = None if value is None else value.get(field)
            resolved[name] = value
        return resolved

    def _view(self) -> RunView:
        assert self._input is not None and self._config is not None
        return RunView(self._input, self._records, self._config)

    # -- where the run is ----------------------------------------------------

    def _state(self) -> RunState:
        if self._outcome == "running" and any(g.decision is None for g in self._gates.values()):
            return "waiting"
        return self._outcome

    def _publish(self) -> None:
        """Upsert the search attributes that changed since the last upsert
        (None unsets one), so history only grows when the picture changes."""
        waiting = [g for g in self._gates.values() if g.decision is None]
        due = [g.due_at for g in waiting if g.due_at is not None]
        wanted: list[tuple[Any, Any]] = [
            (search.PROCESS, self.graph.name),
            (search.STATUS, self._state()),
            (search.NODE, ",".join(self._current()) or "-"),
            (search.PENDING_ROLES, sorted({r for g in waiting for r in g.roles}) or None),
            (search.GATE_DUE, min(due) if due else None),
            (search.COST_USD, round(self._cost(), 6) or None),
            (search.MIN_CONFIDENCE, self._min_confidence()),
        ]
        changes: list[SearchAttributeUpdate[Any]] = [
            key.value_unset() if value is None else key.value_set(value)
            for key, value in wanted
            if self._published.get(key.name) != value
        ]
        if changes:
            workflow.upsert_search_attributes(changes)
            self._published = {key.name: value for key, value in wanted}

    def _cost(self) -> float:
        return sum(float(r.meta.get("cost_usd", 0.0)) for r in self._records.values())

    def _min_confidence(self) -> float | None:
        scores = [
            float(r.meta["confidence"])
            for r in self._records.values()
            if r.status == "finished" and r.meta.get("confidence") is not None
        ]
        return min(scores) if scores else None

    def _current(self) -> list[str]:
        return [r.node for r in self._records.values() if r.status in ("running", "waiting")]

    @workflow.query
    def status(self) -> RunStatus:
        return RunStatus(
            workflow_id=workflow.info().workflow_id,
            process=self.graph.name,
            state=self._state(),
            requested_by=self._input.requested_by if self._input else "unknown",
            config_digest=self._config.digest if self._config else "",
            current=self._current(),
            nodes=list(self._records.values()),
            gates=list(self._gates.values()),
            refusals=self._refusals,
            cost_usd=self._cost(),
            min_confidence=self._min_confidence(),
            error=self._error,
        )

    @workflow.query
    def open_gates(self) -> list[str]:
        """The gates waiting for a decision now: a cheap poll for automation."""
        return [g.gate for g in self._gates.values() if g.decision is None]

    # -- decisions -----------------------------------------------------------

    def _refusal(self, decision: Decision) -> str | None:
        if self._input is None or self._config is None:
            return "the run is still starting; try again in a moment"
        editable = self.graph.editable_model(decision.gate)
        gate = self._gates.get(decision.gate)
        return refusal_reason(
            decision=decision,
            gates=self._gates,
            declared_gates=self._declared_gates(),
            directory=self._config.directory,
            requested_by=self._input.requested_by,
            output_check=None if editable is None else partial(_schema_problems, editable),
            output_required=gate is not None
            and "proposed" in gate.shown
            and gate.shown["proposed"] is None,
        )

    def _apply(self, decision: Decision) -> GateDecision:
        assert self._config is not None
        gate = self._gates[decision.gate]
        user = self._config.directory.users[decision.user]
        role = role_for(user, gate)
        assert role is not None
        edited = decision.outcome == "approve" and decision.output is not None
        if edited:
            model = self.graph.editable_model(decision.gate)
            assert model is not None
            gate.edited_output = model.model_validate(decision.output).model_dump(mode="json")
        gate.decision = GateDecision(
            outcome=decision.outcome,
            user=decision.user,
            role=role,
            comment=decision.comment,
            decided_at=workflow.now(),
            edited=edited,
        )
        return gate.decision

    def _deliver(self, decision: Decision, channel: Channel) -> GateDecision:
        """Judge and apply a decision attempt; either way it is recorded, and
        a refusal changes nothing else."""
        reason = self._refusal(decision)
        if reason is not None:
            refusal = Refusal(at=workflow.now(), channel=channel, decision=decision, reason=reason)
            self._refusals.append(refusal)
            self.trail.record(
                "decision.refused",
                node=decision.gate,
                actor=Actor(type="human", id=decision.user, role=self._role_of(decision)),
                channel=channel,
                decision=decision,
                reason=reason,
            )
            raise ApplicationError(reason, type="DecisionRefused", non_retryable=True)
        accepted = self._apply(decision)
        gate = self._gates[decision.gate]
        actor = Actor(type="human", id=accepted.user, role=accepted.role)
        self.trail.record(
            "gate.decided",
            node=decision.gate,
            actor=actor,
            channel=channel,
            outcome=accepted.outcome,
            comment=accepted.comment,
            edited=accepted.edited,
            shown=gate.shown,
            waited_seconds=(accepted.decided_at - gate.opened_at).total_seconds(),
            escalations=len(gate.escalations),
        )
        if accepted.edited:
            self.trail.record(
                "override",
                node=decision.gate,
                actor=actor,
                reason=accepted.comment,
                ai_output=gate.shown.get("proposed", gate.shown.get("subject")),
                edited_output=gate.edited_output,
            )
        return accepted

    def _role_of(self, decision: Decision) -> str | None:
        user = self._config.directory.users.get(decision.user) if self._config else None
        return ",".join(user.roles) if user else None

    @workflow.update(name="decide")
    def decide(self, decision: Decision) -> GateDecision:
        """Validated decision delivery: the caller gets the accepted decision
        or the refusal's reason. Refusals are judged in the handler, not the
        validator, so that they are in history and in the audit trail."""
        return self._deliver(decision, "update")

    @decide.validator
    def _validate_decide(self, decision: Decision) -> None:
        # Only what cannot be a decision attempt at all is turned away unrecorded.
        if decision.gate not in self._declared_gates():
            raise ApplicationError(
                f"this process has no gate '{decision.gate}' (its gates: "
                f"{', '.join(sorted(self._declared_gates()))})",
                type="DecisionRefused",
                non_retryable=True,
            )

    @workflow.signal(name="decide")
    def decide_signal(self, decision: Decision) -> None:
        with contextlib.suppress(ApplicationError):
            self._deliver(decision, "signal")

    def _declared_gates(self) -> set[str]:
        return {n.id for n in self.graph.nodes if isinstance(n, Gate | Ask)}


def _first_application_error(err: BaseException) -> ApplicationError | None:
    """The error the activity raised: the first application error in the
    chain (deeper causes are the SDK errors it was made from)."""
    cause: BaseException | None = err
    while cause is not None:
        if isinstance(cause, ApplicationError):
            return cause
        cause = cause.__cause__
    return None


def _root_message(err: BaseException) -> str:
    raised = _first_application_error(err)
    return raised.message if raised is not None else str(err)


def _error_type(err: BaseException) -> str | None:
    raised = _first_application_error(err)
    return raised.type if raised is not None else None


@cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Built once per model, not per attempt: it is the same on every run.
    return model.model_json_schema()


def _schema_problems(model: type[BaseModel], output: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(output)
    except ValidationError as err:
        return [f"{'.'.join(map(str, e['loc'])) or 'answer'}: {e['msg']}" for e in err.errors()]
    return []


def _more_confident(a: Attempt, b: Attempt) -> bool:
    return (a.confidence or 0.0) > (b.confidence or 0.0)
