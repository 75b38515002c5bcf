"""Wait: a durable timer, for a while or until a date the run names (the
next review date of an account, the end of a notice period).

The timer lives in Temporal's history: a worker or server restart neither
loses it nor starts it again.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime, timedelta
from typing import TYPE_CHECKING, ClassVar

from pydantic import BaseModel, Field
from temporalio import workflow
from temporalio.exceptions import ApplicationError

from baton.nodes.base import Done, GraphError, Node, Run, model_fields, resumed
from baton.state import NodeRecord, RunView

if TYPE_CHECKING:
    from baton.graph import Graph


class Waited(BaseModel):
    """A Wait node's output: until when it waited, and for how long."""

    until: datetime
    waited_seconds: float = Field(ge=0)


class Wait(Node):
    """Wait ``wait`` (a duration, or a function of the run that computes one,
    from its configuration say) or ``until`` (a function of the run giving
    the date: a date already past waits not at all). Exactly one of the two."""

    wait: timedelta | Callable[[RunView], timedelta] | None = None
    until: Callable[[RunView], datetime] | None = None
    fresh_history: bool = Field(
        default=False,
        description="Continue the run as new while it waits here (a cycle of a long-lived "
        "run), however small its history",
    )

    kind: ClassVar[str] = "wait"
    __init__ = Node.__init__  # keeps the positional id for type checkers

    def output_fields(self) -> set[str]:
        return model_fields(Waited)

    def validate_in(self, graph: Graph, ancestors: set[str]) -> None:
        if (self.wait is None) == (self.until is None):
            raise GraphError(f"node '{self.id}': give wait= (a duration) or until= (a date)")
        if isinstance(self.wait, timedelta) and self.wait < timedelta(0):
            raise GraphError(f"node '{self.id}': wait= may not be negative")
        if self.inputs:
            raise GraphError(
                f"node '{self.id}': a Wait takes no inputs; its wait= or until= function "
                "reads the run"
            )

    async def run(self, run: Run, record: NodeRecord) -> Done:
        carried_over = resumed(record)
        if carried_over:
            until = datetime.fromisoformat(record.meta["until"])
        else:
            until = self._until(run.view(), workflow.now())
            if until.tzinfo is None:
                raise ApplicationError(
                    f"node '{self.id}': until= gave {until.isoformat()} without a time zone; "
                    "return an aware datetime (UTC)",
                    type="InvalidWait",
                    non_retryable=True,
                )
            record.status = "waiting"
            record.meta["until"] = until.isoformat()
            record.detail = f"waiting until {until.isoformat(timespec='minutes')}"
            run.publish()
        left = max(until - workflow.now(), timedelta(0))
        if left > timedelta(0):
            fresh = self.fresh_history and not carried_over
            with run.parked(self.id, fresh_history=fresh):
                await workflow.sleep(left, summary=f"{self.id}: until {until.isoformat()}")
        record.detail = ""
        reached = record.started_at or workflow.now()
        waited = (workflow.now() - reached).total_seconds()
        return Done(Waited(until=until, waited_seconds=waited).model_dump(mode="json"))

    def _until(self, view: RunView, now: datetime) -> datetime:
        if self.until is not None:
            return self.until(view)
        wait = self.wait(view) if callable(self.wait) else self.wait
        assert wait is not None
        if wait < timedelta(0):
            raise ApplicationError(
                f"node '{self.id}': the wait computed for this run is {wait}; it may not be "
                "negative (check the setting it is computed from)",
                type="InvalidWait",
                non_retryable=True,
            )
        return now + wait

    def mermaid_shape(self) -> str:
        what = "a while" if self.until is None else f"{self.until.__name__}()"
        return f'[/"{self.id}<br/><small>waits {what}</small>"\\]'
