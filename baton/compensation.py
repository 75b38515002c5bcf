"""Undoing what a run wrote: when it is stopped, cancelled, or fails for
good in a graph declared ``on_failure="compensate"``.

How a run makes sure its undo always finishes:

- A :class:`~baton.graph.Step` with ``compensate=`` lists its visit in
  ``RunState.compensable`` *before* its activity is scheduled (``finished``
  False), and marks it finished, with its output, once the activity returns.
  A visit stopped, cancelled or failed while its activity ran may have
  written all the same, so it is undone with the rest.
- Its activity is scheduled with ``WAIT_CANCELLATION_COMPLETED``: on a stop
  the run waits until the activity has really stopped (it heartbeats, learns
  of the cancellation and returns) before undoing it. An activity that
  completes despite the request gives its output and is undone from it.
- Visits are undone in reverse topological order, in parallel where the
  graph allows: a visit is undone only after every compensable visit of a
  node that depends on it (a descendant, or a later visit of the same node)
  has been. A visit whose dependent's undo failed is not undone (recorded).
- Every undo is in the trail (``compensation.started`` / ``finished`` /
  ``failed``) and the nodes undone are in the status (``compensated``).

"Nothing to undo". A compensation activity takes one model and returns one,
like every activity. It takes either

- :class:`Undo` (recommended): the visit, the idempotency key its writes
  carry, what it was sent and, if it returned, its output. It finds the
  write by its key (``Undo.writes``), so it undoes a visit that never
  returned; finding none is not an error, it answers that there was nothing
  to undo; or
- the step's output model (the older form): it undoes from what the step
  returned, so only a visit that returned can be undone. An activity that
  does not heartbeat never learns of a cancellation and always returns; one
  that does and stops early leaves a visit that cannot be undone this way,
  which is recorded as a failed compensation, never passed over in silence.

Runs started before this (:data:`COMPENSATE_IN_FLIGHT`, taken in the first
activation) keep the older behaviour: visits listed once finished, undone
one after the other, newest first.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import asyncio
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ActivityError, ApplicationError

from baton.audit.events import Actor
from baton.gates import StopRecord
from baton.state import Compensable

if TYPE_CHECKING:
    from baton.nodes.base import Run

COMPENSATE_IN_FLIGHT = "compensate-in-flight"


class Undo(BaseModel):
    """What a compensation declared as taking it receives: which visit to
    undo, and what there is to find its writes by."""

    node: str
    visit: int
    idempotency_key: str = Field(
        description="The key the visit's writes carry (baton.idempotency): a write has this "
        "key, or starts with it and '/' when the step adds business keys"
    )
    input: Any = Field(default=None, description="What the visit's activity was sent")
    output: Any = Field(
        default=None,
        description="What it returned; None when it never returned (stopped, cancelled or "
        "failed while it ran): then find the write, if any, by the key",
    )
    finished: bool = False

    def writes(self, key: str) -> bool:
        """Whether ``key`` is the key of a write of this visit."""
        return key == self.idempotency_key or key.startswith(f"{self.idempotency_key}/")


def visit_key(node: str, visit: int) -> str:
    """The idempotency key of a visit's writes, as baton.idempotency makes it
    in the visit's activity (whose id is ``<node>#<visit>``)."""
    info = workflow.info()
    return f"{info.workflow_id}/{info.first_execution_run_id or info.run_id}/{node}#{visit}"


def undo_request(entry: Compensable) -> Undo:
    return Undo(
        node=entry.node,
        visit=entry.visit,
        idempotency_key=visit_key(entry.node, entry.visit),
        input=entry.input,
        output=entry.output if entry.finished else None,
        finished=entry.finished,
    )


async def compensate(run: Run, stop: StopRecord | None) -> None:
    """Undo every visit in ``RunState.compensable``. A compensation that
    fails for good fails the run (CompensationFailed) once every undo that
    could run has run: what was undone and what was not is then in its
    status and trail."""
    state = run.state
    undone = _Undoing(run)
    if state.undo_in_flight:
        await undone.in_reverse_topological_order()
    else:
        await undone.newest_first()
    state.compensated += undone.undone
    if undone.failed is not None:
        state.compensation_failed = undone.failed
    if stop is not None:
        stop.compensated, stop.compensation_failed = list(state.compensated), undone.failed
        if undone.failed is None:
            run.trail.record(
                "run.stopped",
                actor=Actor(type="human", id=stop.user, role=stop.role),
                reason=stop.reason,
                compensated=undone.undone,
            )
    if undone.failed is not None:
        raise ApplicationError(undone.failed, type="CompensationFailed", non_retryable=True)


class _Undoing:
    def __init__(self, run: Run) -> None:
        self.run = run
        self.undone: list[str] = []
        self.failed: str | None = None

    async def newest_first(self) -> None:
        """Runs started before COMPENSATE_IN_FLIGHT: one at a time, the
        first failure ends it."""
        compensable = self.run.state.compensable
        while compensable and self.failed is None:
            await self._undo(compensable.pop())

    async def in_reverse_topological_order(self) -> None:
        entries = list(self.run.state.compensable)
        outcome: dict[int, bool] = {}
        graph = self.run.graph

        def after(i: int) -> list[int]:
            node, visit = entries[i].node, entries[i].visit
            below = graph.descendants(node)
            return [
                j
                for j, e in enumerate(entries)
                if e.node in below or (e.node == node and e.visit > visit)
            ]

        async def undo(i: int) -> None:
            first = after(i)
            await workflow.wait_condition(lambda: all(j in outcome for j in first))
            blocked = [entries[j].node for j in first if not outcome[j]]
            if blocked:
                self._record_failed(
                    entries[i], f"not undone: undoing '{blocked[0]}', which depends on it, failed"
                )
                outcome[i] = False
                return
            outcome[i] = await self._undo(entries[i])

        # Created newest first: a chain is undone in the order runs started
        # before this undid it in.
        tasks = [asyncio.create_task(undo(i)) for i in reversed(range(len(entries)))]
        # The undo finishes even if the run is cancelled meanwhile: the
        # cancellation is taken once everything that can be undone is.
        cancelled = False
        while not all(t.done() for t in tasks):
            try:
                await workflow.wait([t for t in tasks if not t.done()])
            except asyncio.CancelledError:
                cancelled = True
        done = [e for i, e in enumerate(entries) if outcome.get(i)]
        self.run.state.compensable = [e for e in self.run.state.compensable if e not in done]
        if cancelled:
            raise asyncio.CancelledError

    async def _undo(self, entry: Compensable) -> bool:
        from baton.nodes.base import root_message

        node, visit, trail = self.run.graph.node(entry.node), entry.visit, self.run.trail
        trail.record("compensation.started", node=node.id, about=f"v{visit}", visit=visit)
        try:
            result = await node.undo(self.run, entry)
        except (ActivityError, ApplicationError) as err:
            self._record_failed(entry, root_message(err))
            return False
        self.undone.append(node.id)
        output = result.model_dump(mode="json")
        self.run.state.records[node.id].meta["compensation"] = output
        trail.record(
            "compensation.finished", node=node.id, about=f"v{visit}", visit=visit, output=output
        )
        return True

    def _record_failed(self, entry: Compensable, why: str) -> None:
        message = f"compensating node '{entry.node}' failed: {why}"
        self.run.trail.record(
            "compensation.failed",
            node=entry.node,
            about=f"v{entry.visit}",
            visit=entry.visit,
            error=message,
        )
        self.failed = self.failed or message
