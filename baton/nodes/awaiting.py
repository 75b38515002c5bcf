"""Await: wait for a named event from outside the run (a goods receipt was
booked, a customer replied), for a while.

Events are signed acts that the run judges and keeps as they arrive
(:mod:`baton.outside`, ``baton.acts.accept_event``), so an event sent
before the run reaches its Await is taken when it gets there. Until then,
or until the wait is over, the node waits on a durable timer: a worker
restart or a server restart loses neither the news nor the deadline.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar, Literal

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.audit.events import Actor
from baton.nodes.base import Done, GraphError, Node, Run, model_fields, resumed
from baton.outside import ReceivedEvent
from baton.state import NodeRecord, RunView

if TYPE_CHECKING:
    from baton.graph import Graph


class Awaited(BaseModel):
    """An Await node's output: the event it took, or that the wait ran out."""

    received: bool
    timed_out: bool = False
    event: ReceivedEvent | None = None
    waited_seconds: float = Field(description="From reaching the node to the event or the timeout")


class Await(Node):
    """Wait for ``event`` from a user holding one of ``senders`` (roles; a
    system sends as a service user), at most ``wait``: a duration, or a
    function of the run that computes one (from the configuration the run
    snapshotted, say). ``key``, a function of the run, narrows the wait to
    events about one thing (the run's PO number): others stay unclaimed.

    When the wait runs out, ``on_timeout="continue"`` finishes the node
    with ``timed_out`` set, for a later Gate's ``when=`` to escalate to a
    person; ``"fail"`` fails the run with the reason."""

    event: str = Field(min_length=1)
    senders: tuple[str, ...] = Field(min_length=1)
    wait: timedelta | Callable[[RunView], timedelta]
    key: Callable[[RunView], str] | None = None
    on_timeout: Literal["continue", "fail"] = "continue"

    kind: ClassVar[str] = "await"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(Awaited)

    def awaited_events(self) -> Mapping[str, tuple[str, ...]]:
        return {self.event: self.senders}

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        if isinstance(self.wait, timedelta) and self.wait <= timedelta(0):
            raise GraphError(f"node '{self.id}': wait= must be longer than zero")
        if self.inputs:
            raise GraphError(
                f"node '{self.id}': an Await takes no inputs; its key= function reads the run"
            )

    async def run(self, run: Run, record: NodeRecord) -> Done:
        if resumed(record):
            key = record.meta["key"]
            reached = record.started_at or workflow.now()
            wait = datetime.fromisoformat(record.meta["until"]) - reached
        else:
            key, wait, reached = self._begin(run, record)
        taken_as = f"{self.id}#{record.visits}"

        def claimable() -> ReceivedEvent | None:
            return next(
                (
                    e
                    for e in run.state.events
                    if e.event == self.event and e.taken_by is None and key in (None, e.key)
                ),
                None,
            )

        try:
            with run.parked(self.id):
                await workflow.wait_condition(
                    lambda: claimable() is not None,
                    timeout=max(reached + wait - workflow.now(), timedelta(milliseconds=1)),
                    timeout_summary=f"{self.id}: waiting for {self.event}",
                )
        except TimeoutError:
            waited = (workflow.now() - reached).total_seconds()
            about = f" about {key}" if key else ""
            message = f"no {self.event} event{about} within {_days(wait)}"
            if self.on_timeout == "fail":
                raise ApplicationError(
                    f"node '{self.id}': {message}", type="AwaitTimedOut", non_retryable=True
                ) from None
            record.detail = message
            timed_out = Awaited(received=False, timed_out=True, waited_seconds=waited)
            return Done(timed_out.model_dump(mode="json"))
        event = claimable()
        assert event is not None
        event.taken_by = taken_as
        record.detail = f"{self.event} from {event.user}"
        run.trail.record(
            "event.taken",
            node=self.id,
            about=event.nonce,
            actor=Actor(type=event.sender, id=event.user, role=event.role),
            event=self.event,
            key=event.key,
        )
        waited = (workflow.now() - reached).total_seconds()
        received = Awaited(received=True, event=event, waited_seconds=waited)
        return Done(received.model_dump(mode="json"))

    def _begin(self, run: Run, record: NodeRecord) -> tuple[str | None, timedelta, datetime]:
        """Start waiting: the key, how long and since when."""
        view = run.view()
        key = None if self.key is None else self.key(view)
        wait = self.wait(view) if callable(self.wait) else self.wait
        if wait <= timedelta(0):
            raise ApplicationError(
                f"node '{self.id}': the wait computed for this run is {wait}; it must be "
                "longer than zero (check the setting it is computed from)",
                type="InvalidWait",
                non_retryable=True,
            )
        reached = workflow.now()
        record.status = "waiting"
        record.meta.update(awaiting=self.event, key=key, until=(reached + wait).isoformat())
        run.trail.record(
            "event.awaited",
            node=self.id,
            about=f"v{record.visits}",
            event=self.event,
            key=key,
            senders=list(self.senders),
            wait_seconds=wait.total_seconds(),
        )
        run.publish()
        return key, wait, reached

    def mermaid_shape(self) -> str:
        return f'[/"{self.id}<br/><small>awaits {self.event}</small>"/]'


def _days(wait: timedelta) -> str:
    if wait % timedelta(days=1) == timedelta(0):
        days = wait // timedelta(days=1)
        return f"{days} day{'s' if days != 1 else ''}"
    return str(wait)
