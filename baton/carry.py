"""A run carried into a fresh history (continue-as-new), and the seal that
lets the next execution trust what it is handed.

A long run (an account renewed every quarter, a gate flooded with refused
decisions) would outgrow its history: Temporal warns past 10,240 events and
refuses updates past 2,000. So the runner continues it as new, handing the
next execution its whole :class:`~baton.state.RunState`: open gates with
their SLA clocks, events received and not yet taken, timers' deadlines, the
nonces of acts taken and the audit numbering.

That state is what decides a run's gates, so the next execution must not
take it from just anyone. Anyone who can reach Temporal can start a run, or
run a workflow of their own that continues as new into a Baton process with
a state of their choosing (``continue_as_new`` may name another workflow
type and task queue). So the state goes over sealed: an HMAC, made and
checked by activities with a secret only Baton's workers hold
(``BATON_WORKER_SEAL_KEY``, else ``<data dir>/worker-seal.key``), over the
state, the workflow id and the first execution's run id. Temporal sets the
last two itself, so a sealed state cannot be moved to another run either.

The runner carries a run over only while every running node is *parked*:
waiting for a person (a Gate), an event (an Await) or a timer (a Wait),
with no activity in flight. Those kinds resume a record left "waiting"
(``baton.nodes.base.resumed``) from what it kept: the gate's round and
deadlines, the Await's key and deadline, the Wait's date.

Workflow code: pure and deterministic (the activities are in activities/carry.py).
"""

from __future__ import annotations

import contextlib
from collections.abc import Collection, Iterator
from datetime import timedelta
from typing import TYPE_CHECKING, Any, ClassVar, Literal, NoReturn, TypeVar

from pydantic import BaseModel, ConfigDict, ValidationError
from temporalio import workflow

from baton import acts
from baton.nodes.base import problems
from baton.signing import digest
from baton.state import NodeRecord, RunState

if TYPE_CHECKING:
    from baton.runner import GraphWorkflow

SEAL_ACTIVITY = "seal_carried_run"
CHECK_SEAL_ACTIVITY = "check_carried_run"


class Sealed(BaseModel):
    """A run's input that a worker sealed rather than a person signed: what
    ``marker`` names it as, and the seal over everything else."""

    model_config = ConfigDict(extra="forbid")

    marker: ClassVar[str]
    seal: str = ""

    def sealed_digest(self) -> str:
        """What the seal covers: everything here but the seal."""
        return digest(self.model_dump(mode="json", exclude={"seal"}))

    @classmethod
    def claims(cls, raw_input: Any) -> bool:
        """Whether an input presents itself as one (to be proved by its seal)."""
        return isinstance(raw_input, dict) and raw_input.get(cls.marker) is True

    async def holds(self) -> bool:
        """Whether a worker of this deployment made the seal (a local activity)."""
        checked = await workflow.execute_local_activity(
            CHECK_SEAL_ACTIVITY,
            SealCheck(digest=self.sealed_digest(), seal=self.seal),
            result_type=bool,
            start_to_close_timeout=timedelta(seconds=10),
        )
        return bool(checked)

    async def sealed(self: S) -> S:
        """This input with the seal a worker makes over it (a local activity)."""
        seal = await workflow.execute_local_activity(
            SEAL_ACTIVITY,
            self.sealed_digest(),
            result_type=str,
            start_to_close_timeout=timedelta(seconds=10),
        )
        return self.model_copy(update={"seal": seal})


S = TypeVar("S", bound=Sealed)


class CarriedRun(Sealed):
    """The input of a run's next execution: its state, sealed."""

    marker: ClassVar[str] = "carried"
    carried: Literal[True] = True
    workflow_id: str
    first_run_id: str
    state: dict[str, Any]


class SealCheck(BaseModel):
    digest: str
    seal: str


class Carrier:
    """One execution's side of carrying a run over: the nodes parked now,
    whether one asked for a fresh history, the updates this history took
    (Temporal counts them per history, refused ones too), and whether the
    parked nodes are being cancelled to be carried rather than stopped."""

    def __init__(self) -> None:
        self.parked_nodes: set[str] = set()
        self.fresh_history_asked = False
        self.updates = 0
        self.carrying = False

    @contextlib.contextmanager
    def parked(self, node_id: str, *, fresh_history: bool = False) -> Iterator[None]:
        self.parked_nodes.add(node_id)
        self.fresh_history_asked |= fresh_history
        try:
            yield
        finally:
            self.parked_nodes.discard(node_id)

    def reason(self, running: Collection[str], state: RunState) -> str | None:
        """Why the run should continue as new now; None while it should not,
        or cannot: a running node is not parked (an activity is in flight)."""
        if not running or not set(running) <= self.parked_nodes or state.config is None:
            return None
        info, bounds = workflow.info(), state.config.continue_as_new
        if self.fresh_history_asked:
            return f"{', '.join(sorted(running))} asks for a fresh history"
        if info.get_current_history_length() >= bounds.after_events:
            return f"the history reached {info.get_current_history_length()} events"
        if self.updates >= bounds.after_updates:
            return f"this history took {self.updates} updates"
        if info.is_continue_as_new_suggested():
            return "Temporal suggests it"
        return None

    async def carry(self, run: GraphWorkflow, reason: str) -> NoReturn:
        """Continue as new with the run's whole state, sealed. The runner has
        cancelled the parked nodes, which go on waiting in the next execution."""
        # An act being judged now is taken here and carried with the rest.
        await workflow.wait_condition(workflow.all_handlers_finished)
        info, state = workflow.info(), run.state
        run.trail.record(
            "run.carried",
            execution=state.execution,
            reason=reason,
            history_events=info.get_current_history_length(),
            updates=self.updates,
        )
        state.execution += 1
        carried = CarriedRun(
            workflow_id=info.workflow_id,
            first_run_id=info.first_execution_run_id,
            state=state.model_dump(mode="json"),
        )
        workflow.continue_as_new(await carried.sealed())


async def resume(run: GraphWorkflow, raw_input: Any) -> RunState:
    """The state an earlier execution of this run carried here, once its
    seal proves that a Baton worker sealed it for this run; else the run
    fails here with the reason, recorded."""
    info = workflow.info()
    try:
        carried = CarriedRun.model_validate(raw_input)
    except ValidationError as err:
        _refuse(run, f"it does not fit: {'; '.join(problems(err))}")
    if not await carried.holds():
        _refuse(run, "no Baton worker sealed it")
    if (carried.workflow_id, carried.first_run_id) != (
        info.workflow_id,
        info.first_execution_run_id,
    ):
        _refuse(run, f"it was sealed for run {carried.workflow_id} ({carried.first_run_id})")
    try:
        state = RunState.restore(carried.state, run.graph.input)
    except ValidationError as err:
        _refuse(run, f"its state does not fit: {'; '.join(problems(err))}")
    unknown = sorted(set(state.records) - {node.id for node in run.graph.nodes})
    if unknown or state.config is None or state.input is None:
        _refuse(run, f"it holds nodes this process does not have: {unknown}")
    for node in run.graph.nodes:
        state.records.setdefault(node.id, NodeRecord(node=node.id, kind=node.kind))
    run.trail.record("run.resumed", execution=state.execution, continued_from=info.continued_run_id)
    return state


def _refuse(run: GraphWorkflow, reason: str) -> NoReturn:
    acts.refuse_start(
        run,
        f"the state this execution was handed cannot be taken over: {reason}. A run "
        "continues as new only from its own earlier execution, on a worker holding "
        "the deployment's BATON_WORKER_SEAL_KEY",
        None,
    )
