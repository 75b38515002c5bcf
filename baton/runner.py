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
from collections.abc import Mapping
from datetime import datetime, timedelta
from typing import Any, ClassVar, Literal, TypeVar

from pydantic import BaseModel, Field, ValidationError
from temporalio import workflow
from temporalio.common import SearchAttributeUpdate
from temporalio.exceptions import ActivityError, ApplicationError

from baton import search
from baton.config import RunConfig
from baton.gates import Decision, GateDecision, GateState, Refusal, refusal_reason, role_for
from baton.graph import INPUT, AnyNode, Ask, Back, Gate, Graph, Step, parse_ref
from baton.llm import AskAnswer, AskRequest

M = TypeVar("M", bound=BaseModel)

SNAPSHOT_CONFIG_ACTIVITY = "snapshot_run_config"
ASK_ACTIVITY = "ask"

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

    async def execute(self, request: RunInput) -> RunResult:
        self._input = request
        self._config = request.config or await workflow.execute_local_activity(
            SNAPSHOT_CONFIG_ACTIVITY,
            result_type=RunConfig,
            start_to_close_timeout=timedelta(seconds=10),
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

    async def _run_node(self, node: AnyNode) -> set[str]:
        """Run one node; returns the nodes a Back edge sends the run back to."""
        record = self._records[node.id]
        record.visits += 1
        record.status = "running"
        record.started_at = workflow.now()
        record.finished_at = None
        record.detail = ""
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
        if isinstance(node, Gate) and output["outcome"] == "reject":
            self._rejected = True
        return set()

    def _finish(self, record: NodeRecord, status: NodeStatus, output: Any, detail: str) -> None:
        record.status = status
        record.output = output
        record.detail = detail
        record.finished_at = workflow.now()
        if status == "finished":
            self._finish_order.append(record.node)

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
        return {
            "activity_id": f"{node.id}#{record.visits}",
            "start_to_close_timeout": node.timeout,
            "retry_policy": node.retry.to_temporal(),
            "summary": f"{self.graph.name}.{node.id}",
        }

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
            result = await workflow.execute_local_activity(node.activity, arg, **options)
        else:
            result = await workflow.execute_activity(node.activity, arg, **options)
        return result.model_dump(mode="json")

    async def _run_ask(self, node: Ask, record: NodeRecord) -> Any:
        assert self._config is not None
        request = AskRequest(
            task=node.task,
            instructions=node.instructions,
            inputs=self._resolve(node.inputs),
            output_schema=node.output.model_json_schema(),
            provider=self._config.llm_provider,
        )
        answer = await workflow.execute_activity(
            ASK_ACTIVITY, request, result_type=AskAnswer, **self._activity_options(node, record)
        )
        record.meta.update(
            provider=answer.provider,
            model=answer.model,
            confidence=answer.confidence,
            confidence_method=answer.confidence_method,
            input_tokens=answer.input_tokens,
            output_tokens=answer.output_tokens,
            notes=answer.notes,
        )
        try:
            value = node.output.model_validate(answer.output)
        except ValidationError as err:
            raise ApplicationError(
                f"node '{node.id}': {answer.provider}/{answer.model} answered outside the "
                f"{node.output.__name__} schema: {err}",
                type="OffSchemaAnswer",
                non_retryable=True,
            ) from None
        return value.model_dump(mode="json")

    async def _run_gate(self, node: Gate, record: NodeRecord) -> Any:
        now = workflow.now()
        shown = self._resolve(node.inputs)
        if node.subject is not None:
            subject = self._records[node.subject]
            shown["subject"] = {"node": node.subject, "output": subject.output, **subject.meta}
        gate = GateState(
            gate=node.id,
            roles=[node.role],
            chain=list(node.escalate_to),
            opened_at=now,
            due_at=now + node.sla if node.sla else None,
            shown=shown,
        )
        self._gates[node.id] = gate
        record.status = "waiting"
        self._publish()
        while gate.decision is None:
            timeout = gate.due_at - workflow.now() if gate.due_at else None
            try:
                await workflow.wait_condition(
                    lambda: gate.decision is not None,
                    timeout=timeout,
                    timeout_summary=f"SLA of gate {node.id}",
                )
            except TimeoutError:
                if gate.chain:
                    role = gate.escalate(workflow.now())
                    gate.due_at = workflow.now() + node.sla if node.sla else None
                    record.detail = f"escalated to {role}"
                else:
                    gate.due_at = None
                    gate.holding = True
                    record.detail = "SLA chain exhausted; holding until someone decides"
                self._publish()
        record.meta.update(decided_by=gate.decision.user, role=gate.decision.role)
        return gate.decision.model_dump(mode="json")

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
        """Upsert search attributes that changed since the last upsert."""
        waiting = [g for g in self._gates.values() if g.decision is None]
        due = [g.due_at for g in waiting if g.due_at is not None]
        wanted: dict[str, Any] = {
            search.PROCESS.name: self.graph.name,
            search.STATUS.name: self._state(),
            search.NODE.name: ",".join(self._current()) or "-",
            search.PENDING_ROLES.name: sorted({r for g in waiting for r in g.roles}),
            search.GATE_DUE.name: min(due) if due else None,
        }
        changes: list[SearchAttributeUpdate[Any]] = []
        for key in (search.PROCESS, search.STATUS, search.NODE, search.PENDING_ROLES):
            if self._published.get(key.name) != wanted[key.name]:
                changes.append(key.value_set(wanted[key.name]))
        if self._published.get(search.GATE_DUE.name) != wanted[search.GATE_DUE.name]:
            value = wanted[search.GATE_DUE.name]
            changes.append(
                search.GATE_DUE.value_unset() if value is None else search.GATE_DUE.value_set(value)
            )
        if changes:
            workflow.upsert_search_attributes(changes)
            self._published = wanted

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
            error=self._error,
        )

    # -- decisions -----------------------------------------------------------

    def _refusal(self, decision: Decision) -> str | None:
        if self._input is None or self._config is None:
            return "the run is still starting; try again in a moment"
        return refusal_reason(
            decision=decision,
            gates=self._gates,
            declared_gates={n.id for n in self.graph.nodes if isinstance(n, Gate)},
            directory=self._config.directory,
            requested_by=self._input.requested_by,
        )

    def _apply(self, decision: Decision) -> GateDecision:
        assert self._config is not None
        gate = self._gates[decision.gate]
        user = self._config.directory.users[decision.user]
        role = role_for(user, gate)
        assert role is not None
        gate.decision = GateDecision(
            outcome=decision.outcome,
            user=decision.user,
            role=role,
            comment=decision.comment,
            decided_at=workflow.now(),
        )
        gate.status = "decided"
        return gate.decision

    @workflow.update(name="decide")
    def decide(self, decision: Decision) -> GateDecision:
        return self._apply(decision)

    @decide.validator
    def _validate_decide(self, decision: Decision) -> None:
        reason = self._refusal(decision)
        if reason is not None:
            raise ApplicationError(reason, type="DecisionRefused", non_retryable=True)

    @workflow.signal(name="decide")
    def decide_signal(self, decision: Decision) -> None:
        reason = self._refusal(decision)
        if reason is not None:
            self._refusals.append(
                Refusal(at=workflow.now(), channel="signal", decision=decision, reason=reason)
            )
            return
        self._apply(decision)


def _root_message(err: BaseException) -> str:
    while err.__cause__ is not None:
        err = err.__cause__
    return getattr(err, "message", None) or str(err)
