"""Executes a :class:`~baton.graph.Graph` inside a Temporal workflow.

A process's workflow class subclasses :class:`GraphWorkflow`, sets ``graph``
and defines its ``@workflow.run`` method as ``return await self.execute(request)``.
The base class brings what every run needs:

- deterministic execution of the graph: ready nodes start together, each
  kind running its visit (:mod:`baton.nodes`), each activity with its node's
  timeout, retry policy and an activity id ``<node>#<visit>`` that doubles
  as the idempotency key of system writes;
- a run configuration snapshot taken once at start (a local activity, so it
  is in history and replays identically);
- one :class:`~baton.state.RunState` holding all the run has done and decided;
- the ``status`` query, the ``decide`` update (validated: a refused decision
  answers the caller with the reason) and the ``decide`` signal (fire and
  forget: a refused signal is recorded and changes nothing), judged in
  :mod:`baton.acts`;
- the ``stop`` update and signal: an authorised user stops the run, which
  cancels what runs, compensates the steps that declared a compensation
  (:mod:`baton.compensation`) and ends as stopped; a cancel from Temporal
  compensates the same way, and so does a failure where the graph declares
  ``on_failure="compensate"``;
- the ``event`` update and signal: news from outside (a goods receipt was
  booked) that an ``Await`` node takes, kept from the moment it is accepted,
  so news that arrives before the run reaches its Await is not lost;
- search attributes (process, current node, status, pending gate roles, gate
  due time) upserted as the run moves, so the Web UI and ``baton inbox`` can
  find runs waiting for a role;
- continue-as-new: when the history or the updates grow past the
  configuration's ``[continue_as_new]`` bounds, Temporal suggests it, or a
  node asks for it, and every running node is parked (waiting for a person,
  an event or a timer), the run carries its whole state, sealed, into a
  fresh history (:mod:`baton.carry`), where the parked nodes go on waiting.

Everything here is workflow code: no I/O, no wall clock, no randomness.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import Iterator, Mapping
from datetime import timedelta
from typing import Any, ClassVar, Literal

from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError, is_cancelled_exception

from baton import acts, search
from baton.audit.trail import Trail
from baton.carry import CarriedRun, Carrier, resume
from baton.compensation import COMPENSATE_IN_FLIGHT, compensate
from baton.config import RunConfig
from baton.gates import Decision, GateDecision, StopRecord, StopRequest
from baton.graph import INPUT, POLICY, Graph, Node
from baton.nodes.ask import ASK_ACTIVITY
from baton.nodes.base import root_message
from baton.nodes.gate import CLOCKLESS_GATE_VIEW, GATE_STATES_WHY, NOTIFY_ACTIVITY
from baton.nodes.sub import ChildStart, admit_child
from baton.outside import ExternalEvent, ReceivedEvent
from baton.state import (
    NodeRecord,
    NodeStatus,
    RunInput,
    RunPhase,
    RunResult,
    RunState,
    RunStatus,
    RunView,
    SigningView,
    run_policy,
)

__all__ = [
    "ASK_ACTIVITY",
    "NOTIFY_ACTIVITY",
    "SNAPSHOT_CONFIG_ACTIVITY",
    "GraphWorkflow",
    "NodeRecord",
    "RunInput",
    "RunResult",
    "RunState",
    "RunStatus",
    "RunView",
    "SigningView",
]

SNAPSHOT_CONFIG_ACTIVITY = "snapshot_run_config"
# Runs started since this patch take every change the run-wide patches
# before it brought (CLOCKLESS_GATE_VIEW, GATE_STATES_WHY,
# COMPENSATE_IN_FLIGHT) under one marker: each patch a run takes costs it a
# history event and an upsert of Temporal's change-version search attribute.
# Runs started before it find theirs as they took them. A later run-wide
# change is a patch of its own, taken in the same place.
RUN_WIDE_CHANGES_1 = "run-wide-changes-1"


class GraphWorkflow:
    """Base class of every process workflow; see the module docstring."""

    graph: ClassVar[Graph]

    def __init__(self) -> None:
        self.state = RunState(
            records={n.id: NodeRecord(node=n.id, kind=n.kind) for n in self.graph.nodes}
        )
        self.trail = Trail(self.state.trail_numbering)
        # The search attributes as Temporal holds them: read again at every
        # start, so not part of the run's state.
        self._published: dict[str, Any] = {}
        # Why running nodes are being cancelled: the detail of those recorded
        # as cancelled.
        self._cancelling = "the run was cancelled"
        self.carrier = Carrier()

    async def execute(self, raw_input: Any) -> RunResult:
        """Run the graph for ``raw_input``, the process input as sent. It is
        taken raw and validated here, so that an input that does not fit, or
        a start its requester did not sign, fails the run at once with the
        reason, instead of failing its workflow task for ever."""
        state = self.state
        taken = workflow.patched(RUN_WIDE_CHANGES_1)
        state.clockless_view = taken or workflow.patched(CLOCKLESS_GATE_VIEW)
        state.states_why = taken or workflow.patched(GATE_STATES_WHY)
        state.undo_in_flight = taken or workflow.patched(COMPENSATE_IN_FLIGHT)
        # Whatever the starter set is published already (baton.client.start_run
        # sets the process and "running"), so the first state needs no upsert.
        self._published = {
            pair.key.name: pair.value for pair in workflow.info().typed_search_attributes
        }
        try:
            if workflow.info().continued_run_id and CarriedRun.claims(raw_input):
                state = self.state = await resume(self, raw_input)
                self.trail.carry_on(state.trail_numbering)
                # What an execution inherits is read back from history in a form
                # that is not always the one it was written in (the test server's
                # date-times): publish everything anew, the same live and on replay.
                self._published = {}
            else:
                await self._begin(raw_input)
            state.outcome = "running"
            self.publish()
            try:
                await self._run_graph()
            except ApplicationError as err:
                if state.undo_in_flight and self.graph.on_failure == "compensate":
                    await self._compensate_failure(err)
                raise
            if state.stop is not None:
                await compensate(self, state.stop)
        except ApplicationError as err:
            state.outcome = "failed"
            state.error = err.message
            self.publish()
            raise
        except asyncio.CancelledError:
            # Cancelled from Temporal (the Web UI, `temporal workflow cancel`):
            # undo what can be undone, then end as cancelled.
            await compensate(self, None)
            raise
        outcome: Literal["completed", "rejected", "stopped"] = (
            "stopped" if state.stop else "rejected" if state.rejected else "completed"
        )
        state.outcome = outcome
        self.publish()
        records = state.records.values()
        return RunResult(
            workflow_id=workflow.info().workflow_id,
            process=self.graph.name,
            outcome=outcome,
            outputs={r.node: r.output for r in records if r.status == "finished"},
            path=list(state.finish_order),
            skipped={r.node: r.detail for r in records if r.status == "skipped"},
        )

    async def _begin(self, raw_input: Any) -> None:
        """Snapshot the configuration and admit the input of a new run."""
        config = await workflow.execute_local_activity(
            SNAPSHOT_CONFIG_ACTIVITY,
            self.graph.routed_tasks(),
            result_type=RunConfig,
            start_to_close_timeout=timedelta(seconds=10),
        )
        self.state.config = config
        self.trail.record(
            "config.snapshot",
            digest=config.digest,
            source=config.source,
            routing=config.routing.source,
            thresholds=config.thresholds,
            intended_purpose=self.graph.purpose,
            risk_class=self.graph.risk_class,
        )
        acts.check_policies(self, raw_input)
        self.state.input = (
            await admit_child(self, raw_input)
            if ChildStart.claims(raw_input)
            else acts.admit(self, raw_input)
        )

    @contextlib.contextmanager
    def parked(self, node_id: str, *, fresh_history: bool = False) -> Iterator[None]:
        """While the block waits, ``node_id`` may be carried into the run's
        next execution (baton.carry); with ``fresh_history`` it asks for that now."""
        with self.carrier.parked(node_id, fresh_history=fresh_history):
            yield

    # -- the graph ---------------------------------------------------------

    async def _run_graph(self) -> None:
        done = self.state.done
        running: dict[str, asyncio.Task[set[str]]] = {}
        stop_requested = asyncio.ensure_future(
            workflow.wait_condition(lambda: self.state.stop is not None)
        )
        carry_due = self._carry_watch(running)
        try:
            while True:
                for node in self.graph.nodes:
                    if node.id in done or node.id in running:
                        continue
                    if all(p in done for p in self.graph.predecessors(node.id)):
                        running[node.id] = asyncio.create_task(self._run_node(node))
                if not running:
                    return
                self.publish()
                watched: list[asyncio.Future[Any]] = [*running.values(), stop_requested, carry_due]
                await workflow.wait(watched, return_when=asyncio.FIRST_COMPLETED)
                if self.state.stop is not None:
                    stopped = f"the run was stopped by {self.state.stop.user}"
                    await self._cancel(running, stopped)
                    self._skip_rest(stopped)
                    return
                for node_id, task in list(running.items()):
                    if not task.done():
                        continue
                    del running[node_id]
                    if task.exception() is not None:
                        failed = f"node '{node_id}' failed"
                        await self._cancel(running, failed)
                        if self.state.undo_in_flight:
                            self._skip_rest(failed)
                        raise task.exception()  # type: ignore[misc]
                    done.add(node_id)
                    done.difference_update(task.result())
                if self.state.rejected:
                    await self._cancel(running, "the run was rejected at a gate")
                    self._skip_rest("the run was rejected at a gate")
                    return
                if carry_due.done():
                    reason = self.carrier.reason(running, self.state)
                    if reason is not None:
                        self.carrier.carrying = True
                        await self._cancel(running, "carried into the run's next execution")
                        await self.carrier.carry(self, reason)
                    carry_due = self._carry_watch(running)
        except asyncio.CancelledError:
            await self._cancel(running, "the run was cancelled")
            self._skip_rest("the run was cancelled")
            raise
        finally:
            stop_requested.cancel()
            carry_due.cancel()

    def _carry_watch(self, running: Mapping[str, object]) -> asyncio.Future[None]:
        return asyncio.ensure_future(
            workflow.wait_condition(lambda: self.carrier.reason(running, self.state) is not None)
        )

    async def _cancel(self, running: dict[str, asyncio.Task[set[str]]], why: str) -> None:
        """Cancel the running nodes and wait until each has stopped: a
        compensable step's activity has then really ended (see
        baton.compensation)."""
        self._cancelling = why
        for task in running.values():
            task.cancel()
        if running:
            await workflow.wait(list(running.values()))
        running.clear()

    def _skip_rest(self, reason: str) -> None:
        for record in self.state.records.values():
            if record.node not in self.state.done and record.status in (
                "pending",
                "running",
                "waiting",
            ):
                record.status = "skipped"
                record.detail = reason
                self.trail.record("node.skipped", node=record.node, reason=reason)

    async def _run_node(self, node: Node) -> set[str]:
        """Run one visit of a node; returns the nodes an edge back sends the run back to.
        A node carried here parked (its record "waiting") goes on with the same visit."""
        record = self.state.records[node.id]
        if record.status != "waiting" and not self._visit_begins(node, record):
            return set()
        try:
            visit = await node.run(self, record)
        except asyncio.CancelledError:
            if self.carrier.carrying:
                raise
            if self.state.undo_in_flight and record.status == "running":
                self._finish(record, "cancelled", None, self._cancelling)
            raise
        except ActivityError as err:
            if self.state.undo_in_flight and is_cancelled_exception(err):
                # Its activity was cancelled: the node was, it did not fail.
                self._finish(record, "cancelled", None, self._cancelling)
                raise asyncio.CancelledError from err
            message = f"node '{node.id}' failed: {root_message(err)}"
            self._finish(record, "failed", None, message)
            raise ApplicationError(message, type="NodeFailed", non_retryable=True) from err
        except ApplicationError as err:
            self._finish(record, "failed", None, err.message)
            raise
        self._finish(record, "finished", visit.output, record.detail)
        return set() if visit.back_to is None else self._rewind(visit.back_to, node.id)

    def _visit_begins(self, node: Node, record: NodeRecord) -> bool:
        """Start a visit of ``node``; False when its ``since=`` or ``when=`` skips it."""
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
        # Asked when the node is reached, where a worker of the old graph went
        # straight on: a run recorded before the node existed skips it on replay.
        if node.since is not None and not workflow.patched(node.since):
            self._finish(record, "skipped", None, f"added after this run started ({node.since})")
            return False
        if node.when is not None and node.when_skips:
            if not node.when(self.view()):
                self._finish(record, "skipped", None, f"condition {node.condition_name} was false")
                return False
            record.meta["condition"] = f"{node.condition_name} was true"
        return True

    def _finish(self, record: NodeRecord, status: NodeStatus, output: Any, detail: str) -> None:
        record.status = status
        record.output = output
        record.detail = detail
        record.finished_at = workflow.now()
        if status == "finished":
            self.state.finish_order.append(record.node)
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

    def _rewind(self, to: str, through: str) -> set[str]:
        """Mark every node from ``to`` up to ``through`` to run again. Their
        decided gates stay in the status (and refuse late decisions) until
        they open again."""
        again = {to, through} | (self.graph.descendants(to) & self.graph.ancestors(through))
        for node_id in again:
            self.state.records[node_id].status = "pending"
        return again

    async def _compensate_failure(self, failure: ApplicationError) -> None:
        """A node failed for good in a graph declared to compensate then: undo
        what was done, and fail with the node's reason (and the undo's, if
        that failed too)."""
        try:
            await compensate(self, None)
        except ApplicationError as err:
            raise ApplicationError(
                f"{failure.message}; {err.message}", type=failure.type, non_retryable=True
            ) from failure

    # -- what node kinds read of the run (baton.nodes.base.Run) ----------------

    def resolve(self, inputs: Mapping[str, str]) -> dict[str, Any]:
        """A node's ``inputs`` read from the run's input, its policies and
        earlier outputs, down the dotted path each names."""
        state = self.state
        assert state.input is not None and state.config is not None
        resolved: dict[str, Any] = {}
        for name, ref in inputs.items():
            source, *path = ref.split(".")
            if source == INPUT:
                value: Any = state.input.model_dump(mode="json")
            elif source == POLICY:
                policy, *path = path
                loaded = run_policy(state.config, self.graph.policies, policy)
                value = loaded.model_dump(mode="json")
            else:
                value = state.records[source].output
            for field in path:
                value = None if value is None else value.get(field)
            resolved[name] = value
        return resolved

    def view(self) -> RunView:
        assert self.state.input is not None and self.state.config is not None
        return RunView(self.state.input, self.state.records, self.state.config, self.graph.policies)

    def publish(self) -> None:
        """Upsert the search attributes when the run's state changes: its
        status, the roles it waits for, the gate's due time. The node, cost
        and lowest confidence ride along with those changes rather than
        causing upserts of their own: every upsert is a history event, and
        a run passes its quick steps in milliseconds."""
        waiting = [g for g in self.state.gates.values() if g.decision is None]
        due = [g.due_at for g in waiting if g.due_at is not None]
        state: list[tuple[Any, Any]] = [
            (search.STATUS, self._phase()),
            (search.PENDING_ROLES, sorted({r for g in waiting for r in g.waiting_for()}) or None),
            (search.GATE_DUE, min(due) if due else None),
        ]
        if all(self._published.get(key.name) == value for key, value in state):
            return
        wanted = [
            (search.PROCESS, self.graph.name),
            *state,
            (search.NODE, ",".join(self._current()) or "-"),
            (search.COST_USD, round(self.cost(), 6) or None),
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

    def cost(self) -> float:
        return sum(float(r.meta.get("cost_usd", 0.0)) for r in self.state.records.values())

    # -- where the run is ----------------------------------------------------

    def _phase(self) -> RunPhase:
        state = self.state
        if state.outcome == "running" and any(g.decision is None for g in state.gates.values()):
            return "waiting"
        return state.outcome

    def _min_confidence(self) -> float | None:
        scores = [
            float(r.meta["confidence"])
            for r in self.state.records.values()
            if r.status == "finished" and r.meta.get("confidence") is not None
        ]
        return min(scores) if scores else None

    def _current(self) -> list[str]:
        return [r.node for r in self.state.records.values() if r.status in ("running", "waiting")]

    @workflow.query
    def status(self) -> RunStatus:
        state, info = self.state, workflow.info()
        return RunStatus(
            workflow_id=info.workflow_id,
            run_id=info.first_execution_run_id or info.run_id,
            process=self.graph.name,
            state=self._phase(),
            requested_by=state.input.requested_by if state.input else "unknown",
            config_digest=state.config.digest if state.config else "",
            graph_digest=self.graph.digest(),
            current=self._current(),
            nodes=list(state.records.values()),
            gates=list(state.gates.values()),
            refusals=state.refusals,
            events=state.events,
            stopped=state.stop,
            compensated=state.compensated,
            compensation_failed=state.compensation_failed,
            execution=state.execution,
            cost_usd=self.cost(),
            min_confidence=self._min_confidence(),
            error=state.error,
        )

    @workflow.query
    def signing_view(self, gate: str) -> SigningView:
        info = workflow.info()
        open_gate = self.state.gates.get(gate)
        return SigningView(
            run_id=info.first_execution_run_id or info.run_id,
            gate=open_gate if open_gate is not None and open_gate.decision is None else None,
        )

    @workflow.query
    def open_gates(self) -> list[str]:
        """The gates waiting for a decision now: a cheap poll for automation."""
        return [g.gate for g in self.state.gates.values() if g.decision is None]

    # -- acts ------------------------------------------------------------------

    # Both channels take the payload raw and judge it in the handler, signature
    # first: a payload the SDK could not decode would be dropped with a log
    # line, and an update turned away by a validator leaves no trace in
    # history, while every refused act belongs in the status and the trail.

    @workflow.update(name="decide")
    def decide(self, payload: Any) -> GateDecision:
        """Decision delivery that answers: the accepted decision, or the
        refusal's reason (a failed update)."""
        self.carrier.updates += 1
        return acts.deliver(self, acts.parse(self, Decision, payload, "update", "decide"), "update")

    @workflow.signal(name="decide")
    def decide_signal(self, payload: Any) -> None:
        with contextlib.suppress(ApplicationError):
            acts.deliver(self, acts.parse(self, Decision, payload, "signal", "decide"), "signal")

    @workflow.update(name="stop")
    def stop(self, payload: Any) -> StopRecord:
        """The stop button: the caller learns whether the stop was accepted."""
        self.carrier.updates += 1
        request = acts.parse(self, StopRequest, payload, "update", "stop")
        return acts.request_stop(self, request, "update")

    @workflow.signal(name="stop")
    def stop_signal(self, payload: Any) -> None:
        with contextlib.suppress(ApplicationError):
            request = acts.parse(self, StopRequest, payload, "signal", "stop")
            acts.request_stop(self, request, "signal")

    # An event may arrive with the start, before the run has snapshotted the
    # directory that proves its sender: it is judged once the run is admitted
    # (or refused, if the run never is), never dropped for being early.

    @workflow.update(name="event")
    async def event(self, payload: Any) -> ReceivedEvent:
        """News for an Await node; the caller learns whether it was accepted."""
        self.carrier.updates += 1
        news = acts.parse(self, ExternalEvent, payload, "update", "event")
        await workflow.wait_condition(self._admitted_or_ended)
        return acts.accept_event(self, news, "update")

    @workflow.signal(name="event")
    async def event_signal(self, payload: Any) -> None:
        with contextlib.suppress(ApplicationError):
            news = acts.parse(self, ExternalEvent, payload, "signal", "event")
            await workflow.wait_condition(self._admitted_or_ended)
            acts.accept_event(self, news, "signal")

    def _admitted_or_ended(self) -> bool:
        return self.state.input is not None or self.state.outcome != "starting"
