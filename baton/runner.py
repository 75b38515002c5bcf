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
- gates with roles, four-eyes, change requests along a declared edge, SLA
  reminders and escalation, and a safe end to an exhausted chain;
- the ``stop`` update and signal: an authorised user stops the run, which
  compensates the steps that declared a compensation and ends as stopped;
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
from typing import Any, ClassVar, Literal, NoReturn, TypeVar

import pydantic_core
from pydantic import BaseModel, ConfigDict, Field, ValidationError
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from baton import search
from baton.audit.events import Actor
from baton.audit.trail import Trail
from baton.config import RunConfig
from baton.gates import (
    SLA_ACTOR,
    Channel,
    Decision,
    GateDecision,
    GateState,
    Notice,
    Refusal,
    Reminder,
    StopRecord,
    StopRequest,
    refusal_reason,
    role_for,
    stop_refusal,
    stop_role,
)
from baton.graph import INPUT, AnyNode, Ask, Back, Gate, Graph, Retry, Step, parse_ref
from baton.llm import AskAnswer, AskRequest
from baton.llm.prompt import prompt_version
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
from baton.signing import Action, Signature, canonical, digest, statement, verify

M = TypeVar("M", bound=BaseModel)

SNAPSHOT_CONFIG_ACTIVITY = "snapshot_run_config"
ASK_ACTIVITY = "ask"
NOTIFY_ACTIVITY = "notify_reviewers"
NOTICE_RETRY = Retry(max_attempts=3)
# Provider errors that every other model would repeat (a refused key, an
# unknown model, a malformed request): they fail the step instead of cascading.
FATAL_PROVIDER_ERRORS = ("ProviderAuthError", "UnknownModel", "ProviderRequestError")
# What a gate shows is what its deciders sign, and every replay computes it
# again, so it must come out the same: no readings of workflow.now(). The SDK
# does not always replay those as they were first read: a worker that answers
# a query on a run it does not hold applies the events that came after the
# last workflow task at that task's time, while a replay applies them at the
# next task's. The times of model attempts stay in the status and the trail
# (ai.inference). Runs started before this change keep the old view. The patch
# is taken in a run's first activation: taken later, at a gate, it was missed
# on replay when a local activity's result and the gate fell in one task there
# but in two when the run went live.
CLOCKLESS_GATE_VIEW = "gate-view-without-clock"
_CLOCK_FIELDS = frozenset({"started_at", "finished_at"})
# A gate shows why the run came to it (the node's `why=`) and model attempts
# show their provider's notes. Both are part of what a decider signs, so runs
# started before this change keep the view they were decided on; taken in the
# first activation for the reason given above.
GATE_STATES_WHY = "gate-states-why"
_ATTEMPT_FACTS_SINCE_WHY = frozenset({"notes", "response_id", "finish_reason"})

NodeStatus = Literal["pending", "running", "waiting", "finished", "skipped", "failed"]
RunState = Literal["starting", "running", "waiting", "completed", "rejected", "stopped", "failed"]


class RunInput(BaseModel):
    """Fields every process input carries besides its own.

    What steers a run (thresholds, routing, directory) is never part of it:
    the run snapshots the worker's own files. An input with fields its
    process does not declare is refused, so a starter cannot smuggle any in."""

    model_config = ConfigDict(extra="forbid")

    requested_by: str = Field(
        default="", description="The directory user or service who starts the run"
    )
    signature: Signature | None = Field(
        default=None, description="The requester's signature of the input; unsigned starts fail"
    )

    def signed_fields(self, process: str) -> dict[str, Any]:
        """What the requester's signature covers: the process and the whole input."""
        return {
            "process": process,
            "requested_by": self.requested_by,
            "input_digest": digest(self.model_dump(mode="json", exclude={"signature"})),
        }


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
    run_id: str = Field(default="", description="The first execution's run id: acts bind to it")
    process: str
    state: RunState
    requested_by: str
    config_digest: str
    current: list[str]
    nodes: list[NodeRecord]
    gates: list[GateState]
    refusals: list[Refusal]
    stopped: StopRecord | None = None
    cost_usd: float = 0.0
    min_confidence: float | None = None
    error: str | None = None


class SigningView(BaseModel):
    """What a signer binds an act to: the run, and the gate as it shows it now
    (None when that gate is not open). A small answer, unlike the status: a
    decision is signed over the gate, not over the whole run."""

    run_id: str
    gate: GateState | None = None


class RunResult(BaseModel):
    workflow_id: str
    process: str
    outcome: Literal["completed", "rejected", "stopped"]
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

    def confidence_method(self, node_id: str) -> str:
        return str(self.meta(node_id).get("confidence_method") or "an unnamed method")

    def notes(self, node_id: str) -> list[str]:
        """What the model that answered an Ask node said about its answer
        (the offline rules name the fields they could not find)."""
        answered = [
            a
            for a in self.meta(node_id).get("attempts", [])
            if a.outcome in ("accepted", "accepted_below_minimum", "low_confidence")
        ]
        return list(answered[-1].notes) if answered else []

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
        self._stop: StopRecord | None = None
        # Finished visits of steps that declared a compensation, in order.
        self._compensable: list[tuple[Step, int, Any]] = []
        self._changes_requested: dict[str, int] = {}
        self._feedback: dict[str, tuple[list[str], Any]] = {}
        # Nonces of the signed acts this run has taken: each act counts once.
        self._nonces: set[str] = set()
        self.trail = Trail()
        self._clockless_view = False
        self._states_why = False

    async def execute(self, raw_input: Any) -> RunResult:
        """Run the graph for ``raw_input``, the process input as sent. It is
        taken raw and validated here, so that an input that does not fit, or
        a start its requester did not sign, fails the run at once with the
        reason, instead of failing its workflow task for ever."""
        self._clockless_view = workflow.patched(CLOCKLESS_GATE_VIEW)
        self._states_why = workflow.patched(GATE_STATES_WHY)
        # Whatever the starter set is published already (baton.client.start_run
        # sets the process and "running"), so the first state needs no upsert.
        self._published = {
            pair.key.name: pair.value for pair in workflow.info().typed_search_attributes
        }
        try:
            self._config = await workflow.execute_local_activity(
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
                intended_purpose=self.graph.purpose,
                risk_class=self.graph.risk_class,
            )
            self._input = self._admit(raw_input)
            self._outcome = "running"
            self._publish()
            await self._run_graph()
            if self._stop is not None:
                await self._compensate(self._stop)
        except ApplicationError as err:
            self._outcome = "failed"
            self._error = err.message
            self._publish()
            raise
        except asyncio.CancelledError:
            # Cancelled from Temporal (the Web UI, `temporal workflow cancel`):
            # undo what can be undone, then end as cancelled.
            await self._compensate(None)
            raise
        outcome: Literal["completed", "rejected", "stopped"] = (
            "stopped" if self._stop else "rejected" if self._rejected else "completed"
        )
        self._outcome = outcome
        self._publish()
        return RunResult(
            workflow_id=workflow.info().workflow_id,
            process=self.graph.name,
            outcome=outcome,
            outputs={r.node: r.output for r in self._records.values() if r.status == "finished"},
            path=list(self._finish_order),
            skipped={r.node: r.detail for r in self._records.values() if r.status == "skipped"},
        )

    # -- signed acts -----------------------------------------------------------

    def _admit(self, raw_input: Any) -> RunInput:
        """The run's input, if it fits the process and its requester signed
        it; else the run fails here with the reason, recorded."""
        try:
            request = self.graph.input.model_validate(raw_input)
        except ValidationError as err:
            self._refuse_start(
                f"the input does not fit {self.graph.input.__name__}: {'; '.join(_problems(err))}",
                raw_input.get("requested_by") if isinstance(raw_input, dict) else None,
            )
        assert isinstance(request, RunInput)
        signature = request.signature
        reason = self._act_refusal(
            "start", request.signed_fields(self.graph.name), signature, request.requested_by
        )
        if reason is not None:
            self._refuse_start(reason, request.requested_by)
        assert signature is not None and self._config is not None
        requester = self._config.directory.users[request.requested_by]
        self.trail.record(
            "run.admitted",
            actor=Actor(
                type="human" if requester.kind == "person" else "service",
                id=request.requested_by,
                role="requester",
            ),
            signature=signature.model_dump(),
        )
        return request

    def _refuse_start(self, reason: str, claimed_by: Any) -> NoReturn:
        self.trail.record(
            "run.refused",
            actor=Actor(type="unproven", id=str(claimed_by or "unknown"), role="requester"),
            reason=reason,
        )
        raise ApplicationError(f"run refused: {reason}", type="StartRefused", non_retryable=True)

    def _act_refusal(
        self,
        action: Action,
        fields: Mapping[str, Any],
        signature: Signature | None,
        user_name: str,
        gate: GateState | None = None,
    ) -> str | None:
        """Why an act is not proven to be ``user_name``'s own, made for this
        run (and this round of ``gate``, over what it shows) and not used
        before; None when it is. A proven act's nonce is spent here."""
        assert self._config is not None
        if signature is None:
            return (
                f"the {action} is not signed: every act on a run carries its user's signature "
                f"(`baton {_VERB[action]} ... --as USER` signs with USER's key; the inbox signs "
                "with the reviewer's passkey)"
            )
        user = self._config.directory.users.get(user_name)
        if user is None:
            return f"unknown user '{user_name}': users, roles and keys come from the directory"
        problem = verify(statement(action, fields, signature), signature, user_name, user)
        if problem is not None:
            return problem
        info = workflow.info()
        run_id = "" if action == "start" else info.first_execution_run_id or info.run_id
        if (signature.workflow_id, signature.run_id) != (info.workflow_id, run_id):
            signed_for = " ".join(filter(None, (signature.workflow_id, signature.run_id)))
            return (
                f"the {action} was signed for another run ({signed_for}); a signed act "
                "cannot be replayed onto this one"
            )
        if gate is not None and signature.round != gate.round:
            return (
                f"the decision was signed for round {signature.round} of gate '{gate.gate}', "
                f"which is in round {gate.round} now: look at it again and decide anew"
            )
        if gate is not None and signature.shown_digest != gate.shown_digest:
            return (
                f"the decision was signed over another view of gate '{gate.gate}' than the one "
                "it shows now (it changed, or the signer was shown something else): look at it "
                "again and decide anew"
            )
        if signature.nonce in self._nonces:
            return (
                f"this signed {action} was delivered before (nonce {signature.nonce}): "
                "a replayed act changes nothing"
            )
        self._nonces.add(signature.nonce)
        return None

    # -- the graph ---------------------------------------------------------

    async def _run_graph(self) -> None:
        done: set[str] = set()
        running: dict[str, asyncio.Task[set[str]]] = {}
        stop_requested = asyncio.ensure_future(
            workflow.wait_condition(lambda: self._stop is not None)
        )
        try:
            while True:
                for node in self.graph.nodes:
                    if node.id in done or node.id in running:
                        continue
                    if all(p in done for p in self.graph.predecessors(node.id)):
                        running[node.id] = asyncio.create_task(self._run_node(node))
                if not running:
                    return
                self._publish()
                await workflow.wait(
                    [*running.values(), stop_requested], return_when=asyncio.FIRST_COMPLETED
                )
                if self._stop is not None:
                    await self._cancel(running)
                    self._skip_rest(done, f"the run was stopped by {self._stop.user}")
                    return
                for node_id, task in list(running.items()):
                    if not task.done():
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
        except asyncio.CancelledError:
            await self._cancel(running)
            self._skip_rest(done, "the run was cancelled")
            raise
        finally:
            stop_requested.cancel()

    async def _cancel(self, running: dict[str, asyncio.Task[set[str]]]) -> None:
        for task in running.values():
            task.cancel()
        if running:
            await workflow.wait(list(running.values()))
        running.clear()

    async def _compensate(self, stop: StopRecord | None) -> None:
        """Undo, newest first, every finished visit of a step that declared a
        compensation. A compensation that fails for good fails the run: what
        was undone and what was not is then in its status and trail."""
        undone: list[str] = []
        while self._compensable:
            node, visit, output = self._compensable.pop()
            self.trail.record("compensation.started", node=node.id, about=f"v{visit}", visit=visit)
            try:
                result = await workflow.execute_activity(
                    node.compensate,  # type: ignore[arg-type]
                    node.output_model.model_validate(output),
                    activity_id=f"{node.id}#{visit}.undo",
                    start_to_close_timeout=node.timeout,
                    retry_policy=node.retry.to_temporal(),
                    summary=f"{self.graph.name}.{node.id}: compensate",
                )
            except ActivityError as err:
                message = f"compensating node '{node.id}' failed: {_root_message(err)}"
                self.trail.record(
                    "compensation.failed",
                    node=node.id,
                    about=f"v{visit}",
                    visit=visit,
                    error=message,
                )
                if stop is not None:
                    stop.compensated, stop.compensation_failed = undone, message
                raise ApplicationError(
                    message, type="CompensationFailed", non_retryable=True
                ) from err
            undone.append(node.id)
            self._records[node.id].meta["compensation"] = result.model_dump(mode="json")
            self.trail.record(
                "compensation.finished",
                node=node.id,
                about=f"v{visit}",
                visit=visit,
                output=result.model_dump(mode="json"),
            )
        if stop is not None:
            stop.compensated = undone
            self.trail.record(
                "run.stopped",
                actor=Actor(type="human", id=stop.user, role=stop.role),
                reason=stop.reason,
                compensated=undone,
            )

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
        self.trail.record(
            "node.started",
            node=node.id,
            about=f"v{record.visits}",
            kind=node.kind,
            visit=record.visits,
        )
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
        if isinstance(node, Step) and node.compensate is not None:
            self._compensable.append((node, record.visits, output))
        if isinstance(node, Gate) and output["outcome"] == "request_changes":
            assert node.changes_to is not None
            return self._rewind(node.changes_to, node.id)
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
            about=f"v{record.visits}",
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
        return self._rewind(node.to, node.id)

    def _rewind(self, to: str, through: str) -> set[str]:
        """Mark every node from ``to`` up to ``through`` to run again. Their
        decided gates stay in the status (and refuse late decisions) until
        they open again."""
        again = {to, through} | (self.graph.descendants(to) & self.graph.ancestors(through))
        for node_id in again:
            self._records[node_id].status = "pending"
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
            try:
                result = await workflow.execute_local_activity(node.activity, arg, **options)
            except ApplicationError as err:
                # A local activity's error arrives as raised, not wrapped in an
                # ActivityError as a remote one's: name the node the same way.
                raise ApplicationError(
                    f"node '{node.id}' failed: {err.message}", type="NodeFailed", non_retryable=True
                ) from err
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
        feedback = self._feedback.pop(node.id, ([], None))
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
            accepted, candidate = await self._try_tier(node, record, plan, tier, attempts, feedback)
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
                about=f"v{record.visits}/accepted",
                decision="accepted below the minimum confidence: the cascade has no human tier",
                attempt=attempt.index,
            )
            return value
        self.trail.record(
            "routing.decided",
            node=node.id,
            about=f"v{record.visits}/escalated",
            decision="escalated to a person",
            why=escalation,
        )
        return await self._ask_a_person(node, record, plan, escalation, best)

    async def _try_tier(
        self,
        node: Ask,
        record: NodeRecord,
        plan: Plan,
        tier: PlannedTier,
        attempts: list[Attempt],
        feedback: tuple[list[str], Any],
    ) -> tuple[Any, tuple[Attempt, Any] | None]:
        """(accepted output or None, the valid-but-unsure answer if any).
        Candidates of a tier are alternatives: the next is tried only when a
        provider fails for good."""
        for option in tier.options:
            # A reviewer's change request is the first repair: what to fix, and
            # the answer it is about.
            errors, previous = feedback
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
                    about=f"v{record.visits}/attempt{attempt.index}",
                    actor=Actor(type="ai_model", id=f"{attempt.provider}/{attempt.model}"),
                    operation="chat",
                    task=node.task,
                    prompt={
                        "name": node.task,
                        "version": _prompt_version(node.instructions, node.output),
                    },
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
            documents=list(node.documents),
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
            "notes": answer.notes,
            "response_id": answer.response_id,
            "finish_reason": answer.finish_reason,
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
            "attempts": self._shown_attempts(attempts),
            "proposed": None if best is None else best[1],
        }
        record.meta["escalated"] = reason
        gate = GateState(
            gate=node.id,
            round=record.visits,
            roles=[plan.route.human_role],
            opened_at=workflow.now(),
            shown=shown,
        )
        decision = await self._await_decision(gate, record)
        if decision.outcome == "reject":
            return None
        record.meta.update(
            confidence=1.0, confidence_method="human_review", decided_by=decision.user
        )
        if decision.edited:
            return gate.edited_output
        assert best is not None
        return best[1]

    def _shown_attempts(self, attempts: list[Attempt]) -> list[dict[str, Any]]:
        """Model attempts as a gate shows them: without their times (see
        CLOCKLESS_GATE_VIEW), and in runs started before GATE_STATES_WHY
        without what that change added."""
        hidden: set[str] = set()
        if self._clockless_view:
            hidden |= _CLOCK_FIELDS
        if not self._states_why:
            hidden |= _ATTEMPT_FACTS_SINCE_WHY
        return [a.model_dump(mode="json", exclude=hidden) for a in attempts]

    async def _run_gate(self, node: Gate, record: NodeRecord) -> Any:
        shown = self._resolve(node.inputs)
        if node.subject is not None:
            subject = self._records[node.subject]
            meta = dict(subject.meta)
            if "attempts" in meta:
                meta["attempts"] = self._shown_attempts(meta["attempts"])
            shown["subject"] = {"node": node.subject, "output": subject.output, **meta}
        if node.why is not None and self._states_why:
            shown["why"] = list(node.why(self._view()))
        four_eyes = node.four_eyes
        if four_eyes is not None and four_eyes.when is not None:
            four_eyes = four_eyes if four_eyes.when(self._view()) else None
        other_role = four_eyes.other_role if four_eyes else None
        # A reopened gate replaces its decided self; its reviewer still sees why it came back.
        previous = self._gates.get(node.id)
        earlier = [*previous.earlier, previous.decision] if previous and previous.decision else []
        gate = GateState(
            gate=node.id,
            round=record.visits,
            roles=[node.role] if other_role is None else [node.role, other_role],
            chain=list(node.escalate_to),
            opened_at=workflow.now(),
            sla=node.sla,
            remind_fraction=node.remind_at,
            on_exhausted=node.on_exhausted,
            hold_for=node.hold_for,
            approvals_needed=1 if four_eyes is None else 2,
            distinct_roles=other_role is not None,
            changes_left=None
            if node.changes_to is None
            else node.max_changes - self._changes_requested.get(node.id, 0),
            shown=shown,
            earlier=earlier,
        )
        decision = await self._await_decision(gate, record)
        if decision.outcome == "request_changes":
            self._changes_requested[node.id] = self._changes_requested.get(node.id, 0) + 1
            assert node.changes_to is not None
            # The answer under review goes back with the note, when it is the one to redo.
            redone = node.changes_to
            reviewed = self._records[redone].output if node.subject in (None, redone) else None
            self._feedback[redone] = (
                [f"the reviewer ({decision.user}) asked for changes: {decision.comment}"],
                reviewed,
            )
            record.detail = f"changes requested by {decision.user}; back to '{node.changes_to}'"
        elif decision.edited and node.subject is not None:
            subject = self._records[node.subject]
            subject.meta.update(original_output=subject.output, overridden_by=decision.user)
            subject.output = gate.edited_output
        return decision.model_dump(mode="json")

    async def _await_decision(self, gate: GateState, record: NodeRecord) -> GateDecision:
        """Open ``gate`` and wait for an accepted decision, reminding,
        escalating and finally holding or rejecting as its SLA says."""
        gate.start_clock(gate.opened_at)
        # As a decider's client receives it (the status query's JSON), so that
        # both sides digest the same values.
        gate.shown = pydantic_core.from_json(pydantic_core.to_json(gate.shown))
        gate.refresh_digest()
        self._gates[gate.gate] = gate
        record.status = "waiting"
        self.trail.ship_soon()
        self.trail.record(
            "gate.opened",
            node=gate.gate,
            about=f"r{gate.round}",
            roles=gate.roles,
            chain=gate.chain,
            sla_seconds=gate.sla.total_seconds() if gate.sla else None,
            due_at=gate.due_at,
            remind_at=gate.remind_at,
            on_exhausted=gate.on_exhausted,
            approvals_needed=gate.approvals_needed,
            changes_left=gate.changes_left,
            shown=gate.shown,
        )
        self._publish()
        while gate.decision is None:
            deadline = gate.next_deadline()
            try:
                await workflow.wait_condition(
                    lambda: gate.decision is not None,
                    timeout=None
                    if deadline is None
                    else max(deadline - workflow.now(), timedelta(milliseconds=1)),
                    timeout_summary=f"SLA of gate {gate.gate}",
                )
            except TimeoutError:
                await self._on_gate_deadline(gate, record)
        record.status = "running"
        record.meta.update(decided_by=gate.decision.user, role=gate.decision.role)
        if gate.decision.outcome == "reject":
            self._rejected = True
        return gate.decision

    async def _on_gate_deadline(self, gate: GateState, record: NodeRecord) -> None:
        now = workflow.now()
        if gate.remind_at is not None and now >= gate.remind_at:
            gate.remind_at = None
            gate.reminders.append(Reminder(at=now, roles=list(gate.roles)))
            self.trail.record(
                "gate.reminded",
                node=gate.gate,
                about=f"r{gate.round}",
                roles=gate.roles,
                due_at=gate.due_at,
            )
            await self._notify(gate, "reminder", record)
            return
        if gate.chain:
            role = gate.escalate(now)
            record.detail = f"escalated to {role}"
            self.trail.record(
                "gate.escalated",
                node=gate.gate,
                about=f"r{gate.round}/{role}",
                to_role=role,
                roles=gate.roles,
                due_at=gate.due_at,
            )
            self._publish()
            await self._notify(gate, "escalation", record)
        elif gate.on_exhausted == "reject":
            gate.due_at = None
            reason = "no decision before the SLA of every role in the chain; rejected as declared"
            gate.decision = GateDecision(
                outcome="reject", user=SLA_ACTOR, role="sla", comment=reason, decided_at=now
            )
            record.detail = reason
            self.trail.record(
                "gate.decided",
                node=gate.gate,
                about=f"r{gate.round}/sla",
                actor=Actor(type="service", id=SLA_ACTOR),
                outcome="reject",
                comment=reason,
                shown=gate.shown,
                waited_seconds=(now - gate.opened_at).total_seconds(),
                escalations=len(gate.escalations),
            )
        else:
            gate.hold()
            record.detail = f"SLA chain exhausted; holding for {gate.hold_for} or the roles before"
            self.trail.record(
                "gate.escalated",
                node=gate.gate,
                about=f"r{gate.round}/hold",
                holding=True,
                roles=gate.roles,
            )
            self._publish()
            await self._notify(gate, "hold", record)

    async def _notify(
        self,
        gate: GateState,
        kind: Literal["reminder", "escalation", "hold"],
        record: NodeRecord,
    ) -> None:
        """Tell the gate's roles. A notice that cannot be delivered is
        recorded; it never fails the run, which still waits for its decision."""
        notice = Notice(
            workflow_id=workflow.info().workflow_id,
            process=self.graph.name,
            gate=gate.gate,
            kind=kind,
            roles=list(gate.roles),
            due_at=gate.due_at,
        )
        sent = len(gate.reminders) + len(gate.escalations) + int(gate.holding)
        try:
            await workflow.execute_activity(
                NOTIFY_ACTIVITY,
                notice,
                activity_id=f"{gate.gate}#{record.visits}.notice{sent}",
                start_to_close_timeout=timedelta(seconds=10),
                # Bounded: the gate waits for its decision while a notice is sent.
                retry_policy=NOTICE_RETRY.to_temporal(),
                summary=f"{gate.gate}: {kind} to {', '.join(gate.roles)}",
            )
        except ActivityError as err:
            self.trail.record(
                "gate.notice_failed",
                node=gate.gate,
                about=f"r{gate.round}/{kind}",
                kind=kind,
                error=_root_message(err),
            )

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
        """Upsert the search attributes when the run's state changes: its
        status, the roles it waits for, the gate's due time. The node, cost
        and lowest confidence ride along with those changes rather than
        causing upserts of their own: every upsert is a history event, and
        a run passes its quick steps in milliseconds."""
        waiting = [g for g in self._gates.values() if g.decision is None]
        due = [g.due_at for g in waiting if g.due_at is not None]
        state: list[tuple[Any, Any]] = [
            (search.STATUS, self._state()),
            (search.PENDING_ROLES, sorted({r for g in waiting for r in g.waiting_for()}) or None),
            (search.GATE_DUE, min(due) if due else None),
        ]
        if all(self._published.get(key.name) == value for key, value in state):
            return
        wanted = [
            (search.PROCESS, self.graph.name),
            *state,
            (search.NODE, ",".join(self._current()) or "-"),
            (search.COST_USD, round(self._cost(), 6) or None),
            (search.MIN_CONFIDENCE, self._min_confidence()),
        ]
        workflow.upsert_search_attributes(
            [
                key.value_unset() if value is None else key.value_set(value)
                for key, value in wanted
                if self._published.get(key.name) != value
            ]
        )
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
            run_id=workflow.info().first_execution_run_id or workflow.info().run_id,
            process=self.graph.name,
            state=self._state(),
            requested_by=self._input.requested_by if self._input else "unknown",
            config_digest=self._config.digest if self._config else "",
            current=self._current(),
            nodes=list(self._records.values()),
            gates=list(self._gates.values()),
            refusals=self._refusals,
            stopped=self._stop,
            cost_usd=self._cost(),
            min_confidence=self._min_confidence(),
            error=self._error,
        )

    @workflow.query
    def signing_view(self, gate: str) -> SigningView:
        info = workflow.info()
        open_gate = self._gates.get(gate)
        return SigningView(
            run_id=info.first_execution_run_id or info.run_id,
            gate=open_gate if open_gate is not None and open_gate.decision is None else None,
        )

    @workflow.query
    def open_gates(self) -> list[str]:
        """The gates waiting for a decision now: a cheap poll for automation."""
        return [g.gate for g in self._gates.values() if g.decision is None]

    # -- decisions -----------------------------------------------------------

    def _refusal(self, decision: Decision) -> str | None:
        if self._input is None or self._config is None:
            return "the run is still starting; try again in a moment"
        if self._stop is not None:
            return f"the run was stopped by {self._stop.user}: {self._stop.reason}"
        gate = self._gates.get(decision.gate)
        open_gate = gate if gate is not None and gate.decision is None else None
        proof = self._act_refusal(
            "decide", decision.signed_fields(), decision.signature, decision.user, open_gate
        )
        if proof is not None:
            return proof
        editable = self.graph.editable_model(decision.gate)
        return refusal_reason(
            decision=decision,
            gates=self._gates,
            declared_gates=self._declared_gates(),
            directory=self._config.directory,
            requested_by=self._input.requested_by,
            output_check=None if editable is None else partial(_schema_problems, editable),
            output_required=gate is not None
            and gate.edited_output is None
            and "proposed" in gate.shown
            and gate.shown["proposed"] is None,
        )

    def _apply(self, decision: Decision) -> GateDecision:
        """Apply an accepted decision. Under four-eyes an approval short of
        the count is recorded and the gate stays open; an edit restarts the
        count, since earlier approvers did not see it."""
        assert self._config is not None
        gate = self._gates[decision.gate]
        user = self._config.directory.users[decision.user]
        role = role_for(user, gate) or next(r for r in gate.roles if r in user.roles)
        edited = decision.outcome == "approve" and decision.output is not None
        if edited:
            model = self.graph.editable_model(decision.gate)
            assert model is not None
            gate.edited_output = model.model_validate(decision.output).model_dump(mode="json")
            gate.approvals.clear()
            # The next approver approves the edit, so that is what they must sign over.
            gate.refresh_digest()
        accepted = GateDecision(
            outcome=decision.outcome,
            user=decision.user,
            role=role,
            comment=decision.comment,
            decided_at=workflow.now(),
            edited=gate.edited_output is not None and decision.outcome == "approve",
        )
        if decision.outcome == "approve":
            gate.approvals.append(accepted)
            accepted.approved_by = [a.user for a in gate.approvals]
            accepted.awaiting = gate.approvals_needed - len(gate.approvals)
            if accepted.awaiting > 0:
                return accepted
        gate.decision = accepted
        return accepted

    def _deliver(self, decision: Decision, channel: Channel) -> GateDecision:
        """Judge and apply a decision attempt; either way it is recorded, and
        a refusal changes nothing else."""
        reason = self._refusal(decision)
        if reason is not None:
            self._refuse(decision, channel, reason, self._role_of(decision.user))
        assert decision.signature is not None
        accepted = self._apply(decision)
        gate = self._gates[decision.gate]
        actor = Actor(type="human", id=accepted.user, role=accepted.role)
        if accepted.edited and decision.output is not None:
            self.trail.record(
                "override",
                node=decision.gate,
                about=f"r{gate.round}/{decision.signature.nonce}",
                actor=actor,
                reason=accepted.comment,
                ai_output=gate.shown.get("proposed", gate.shown.get("subject")),
                edited_output=gate.edited_output,
            )
        self.trail.record(
            "gate.approval" if accepted.awaiting else "gate.decided",
            node=decision.gate,
            about=f"r{gate.round}/{decision.signature.nonce}",
            actor=actor,
            channel=channel,
            outcome=accepted.outcome,
            comment=accepted.comment,
            edited=accepted.edited,
            approved_by=accepted.approved_by,
            awaiting=accepted.awaiting,
            shown=gate.shown,
            shown_digest=gate.shown_digest,
            round=gate.round,
            signature=decision.signature.model_dump(),
            waited_seconds=(accepted.decided_at - gate.opened_at).total_seconds(),
            escalations=len(gate.escalations),
        )
        # A person's decision leaves the run now, not when the gate closes: a
        # run ended in between must not take the first approval with it.
        self.trail.ship_soon()
        self._publish()
        return accepted

    def _refuse(
        self, request: Decision | StopRequest, channel: Channel, reason: str, role: str | None
    ) -> NoReturn:
        act: Literal["decide", "stop"] = "decide" if isinstance(request, Decision) else "stop"
        sent = request.model_dump(mode="json")
        # A refused act is kept whole only if small: the status, which every
        # reviewer's page loads, must not grow by what anyone cares to send.
        whole = len(canonical(sent)) <= _KEPT_ACT_LIMIT
        self._record_refusal(
            Refusal(
                at=workflow.now(),
                channel=channel,
                act=act,
                user=request.user,
                decision=request if whole else None,
                received="" if whole else _cut(sent),
                reason=reason,
            ),
            node=request.gate if isinstance(request, Decision) else None,
            role=role,
        )
        raise ApplicationError(reason, type="DecisionRefused", non_retryable=True)

    def _record_refusal(self, refusal: Refusal, *, node: str | None, role: str | None) -> None:
        # The claimed name is the sender's to choose, its length too.
        refusal.user = _cut(refusal.user, _CLAIMED_NAME_LIMIT) if refusal.user else ""
        self._refusals.append(refusal)
        self.trail.record(
            "decision.refused" if refusal.act == "decide" else "stop.refused",
            node=node,
            actor=Actor(type="unproven", id=refusal.user or "unknown", role=role),
            channel=refusal.channel,
            decision=refusal.decision,
            received=refusal.received,
            reason=refusal.reason,
        )
        self.trail.ship_soon()

    def _parse(
        self, model: type[M], payload: Any, channel: Channel, act: Literal["decide", "stop"]
    ) -> M:
        """``payload`` as ``model``, or a recorded refusal: a malformed act is
        an act too, and the trail keeps it (cut short)."""
        try:
            return model.model_validate(payload)
        except ValidationError as err:
            user = payload.get("user") if isinstance(payload, dict) else None
            reason = f"not a valid {act} request: {'; '.join(_problems(err))}"
            self._record_refusal(
                Refusal(
                    at=workflow.now(),
                    channel=channel,
                    act=act,
                    user=str(user or ""),
                    received=_cut(payload),
                    reason=reason,
                ),
                node=None,
                role=None,
            )
            raise ApplicationError(reason, type="DecisionRefused", non_retryable=True) from None

    def _role_of(self, user_name: str) -> str | None:
        user = self._config.directory.users.get(user_name) if self._config else None
        return ",".join(user.roles) if user else None

    # Both channels take the payload raw and judge it in the handler, signature
    # first: a payload the SDK could not decode would be dropped with a log
    # line, and an update turned away by a validator leaves no trace in
    # history, while every refused act belongs in the status and the trail.

    @workflow.update(name="decide")
    def decide(self, payload: Any) -> GateDecision:
        """Decision delivery that answers: the accepted decision, or the
        refusal's reason (a failed update)."""
        return self._deliver(self._parse(Decision, payload, "update", "decide"), "update")

    @workflow.signal(name="decide")
    def decide_signal(self, payload: Any) -> None:
        with contextlib.suppress(ApplicationError):
            self._deliver(self._parse(Decision, payload, "signal", "decide"), "signal")

    def _request_stop(self, request: StopRequest, channel: Channel) -> StopRecord:
        """Judge a stop request; an accepted one ends the run at its next step
        (see ``_run_graph``), a refused one is recorded and changes nothing."""
        if self._config is None or self._input is None:
            reason: str | None = "the run is still starting; try again in a moment"
        else:
            reason = self._act_refusal(
                "stop", request.signed_fields(), request.signature, request.user
            ) or stop_refusal(
                request,
                directory=self._config.directory,
                stop_roles=self.graph.stop_roles,
                stopped=self._stop,
                finished=self._outcome not in ("running", "waiting"),
            )
        if reason is not None:
            self._refuse(request, channel, reason, self._role_of(request.user))
        assert self._config is not None
        role = stop_role(self._config.directory.users[request.user], self.graph.stop_roles)
        assert role is not None
        self._stop = StopRecord(
            user=request.user, role=role, reason=request.reason, at=workflow.now()
        )
        self.trail.ship_soon()
        assert request.signature is not None
        self.trail.record(
            "run.stop_requested",
            about=request.signature.nonce,
            actor=Actor(type="human", id=request.user, role=role),
            channel=channel,
            reason=request.reason,
            signature=request.signature.model_dump(),
        )
        return self._stop

    @workflow.update(name="stop")
    def stop(self, payload: Any) -> StopRecord:
        """The stop button: the caller learns whether the stop was accepted."""
        return self._request_stop(self._parse(StopRequest, payload, "update", "stop"), "update")

    @workflow.signal(name="stop")
    def stop_signal(self, payload: Any) -> None:
        with contextlib.suppress(ApplicationError):
            self._request_stop(self._parse(StopRequest, payload, "signal", "stop"), "signal")

    def _declared_gates(self) -> set[str]:
        return {n.id for n in self.graph.nodes if isinstance(n, Gate | Ask)}


_VERB: dict[Action, str] = {"start": "start", "decide": "approve", "stop": "stop"}
# A malformed act is kept in the status and trail only this far.
_RECEIVED_LIMIT = 500
_CLAIMED_NAME_LIMIT = 64
# Refused acts larger than this are kept cut short (see _refuse).
_KEPT_ACT_LIMIT = 4096


def _problems(err: ValidationError, whole: str = "value") -> list[str]:
    """Each validation error as "<field path>: <message>"; ``whole`` names
    an error about the value itself."""
    return [f"{'.'.join(map(str, e['loc'])) or whole}: {e['msg']}" for e in err.errors()]


def _cut(payload: Any, limit: int = _RECEIVED_LIMIT) -> str:
    if isinstance(payload, str):
        text = payload
    else:
        try:
            text = canonical(payload).decode()
        except (TypeError, ValueError):
            text = repr(payload)
    return text if len(text) <= limit else text[: limit - 1] + "…"


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
def _prompt_version(instructions: str, output: type[BaseModel]) -> str:
    return prompt_version(instructions, _json_schema(output))


@cache
def _json_schema(model: type[BaseModel]) -> dict[str, Any]:
    # Built once per model, not per attempt: it is the same on every run.
    return model.model_json_schema()


def _schema_problems(model: type[BaseModel], output: dict[str, Any]) -> list[str]:
    try:
        model.model_validate(output)
    except ValidationError as err:
        return _problems(err, "answer")
    return []


def _more_confident(a: Attempt, b: Attempt) -> bool:
    return (a.confidence or 0.0) > (b.confidence or 0.0)
