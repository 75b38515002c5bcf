"""Workflow-side audit events and how they leave the sandbox.

Workflow code may not do I/O, so events are buffered in the run and shipped by
a local activity (`audit_flush`). An event's id says what it records: the run,
`w/`, the event type, the node, and what the caller names it by (a visit, a
gate's round, a signed act's nonce, an attempt), numbered `#2`, `#3`... only
when that meaning recurs. The store ignores ids it already has with the same
content: a flush retried after a crash, or re-run after a lost workflow task,
adds nothing twice; a flush that never ran is re-run from history. An event
left out by a changed worker takes no other event's id with it, where a
counter would have shifted every id after it onto other events.
"""

from __future__ import annotations

import re
from datetime import timedelta
from typing import Any

from pydantic import BaseModel
from temporalio import workflow
from temporalio.common import RetryPolicy

from baton.audit.events import WORKFLOW_SIDE, Actor, AuditEvent, jsonable

FLUSH_ACTIVITY = "audit_flush"
SHIP_BATCH = 100

# Node names and nonces can come from a hostile sender (a refused act names any
# gate it likes): an id keeps a short, plain form of them.
_ID_PART_LIMIT = 64
_NOT_ID_SAFE = re.compile(r"[^A-Za-z0-9_.:-]")


def _id_part(text: str) -> str:
    return _NOT_ID_SAFE.sub("_", text[:_ID_PART_LIMIT])


class AuditBatch(BaseModel):
    events: list[AuditEvent]


class Trail:
    """The run's audit events not yet shipped, and the task that ships them."""

    def __init__(self, occurrences: dict[str, int] | None = None) -> None:
        # How often each meaning has been recorded: the run's state holds it
        # (RunState.trail_numbering), so a run carried on numbers on.
        self._occurrences = {} if occurrences is None else occurrences
        self._pending: list[AuditEvent] = []
        self._closed = False
        self._ship_now = False

    def record(
        self,
        event_type: str,
        *,
        node: str | None = None,
        about: str = "",
        actor: Actor | None = None,
        **data: Any,
    ) -> None:
        """Record an event. ``about`` names which one of its type on ``node``
        this is (``v2`` for a node's second visit, ``r1/<nonce>`` for an act
        in a gate's first round); it goes into the event's id."""
        info = workflow.info()
        parts = (event_type, node or "", *about.split("/"))
        meaning = "/".join(_id_part(part) for part in parts if part)
        occurrence = self._occurrences.get(meaning, 0) + 1
        self._occurrences[meaning] = occurrence
        suffix = f"#{occurrence}" if occurrence > 1 else ""
        self._pending.append(
            AuditEvent(
                event_id=f"{info.workflow_id}/{info.run_id}/{WORKFLOW_SIDE}/{meaning}{suffix}",
                workflow_id=info.workflow_id,
                run_id=info.run_id,
                process=info.workflow_type,
                event_type=event_type,
                occurred_at=workflow.now(),
                node=node,
                actor=actor,
                data=jsonable(data),
            )
        )

    def carry_on(self, occurrences: dict[str, int]) -> None:
        """Number on from a run's earlier execution (baton.carry): count what
        this one recorded already on top of what that one had counted."""
        for meaning, count in self._occurrences.items():
            occurrences[meaning] = occurrences.get(meaning, 0) + count
        self._occurrences = occurrences

    def ship_soon(self) -> None:
        """Ship what is pending now: the run is about to wait (for a person)."""
        self._ship_now = True

    def close(self) -> None:
        """No more events: the shipping task ends once everything is shipped."""
        self._closed = True

    async def ship_until_closed(self) -> None:
        """Ship pending events in batches, in order, until the run closes the
        trail and nothing is left. One task ships, so batches never overlap.

        Events wait in the run until it is about to wait for a person, ends,
        or has a batch's worth: until then they are safe in history (a crash
        replays them), and each shipment is a local activity in every run's
        path, so fewer of them is throughput."""
        while True:
            await workflow.wait_condition(
                lambda: (
                    self._closed
                    or len(self._pending) >= SHIP_BATCH
                    or (self._ship_now and bool(self._pending))
                )
            )
            if not self._pending:
                return
            self._ship_now = False
            await self._ship_pending()

    async def _ship_pending(self) -> None:
        # The batch lives in this frame only. Held by the loop above, the last
        # batch stayed in memory for as long as the run waited at a gate: tens
        # of KiB for each run in a worker's cache.
        batch, self._pending = self._pending, []
        await workflow.execute_local_activity(
            FLUSH_ACTIVITY,
            AuditBatch(events=batch),
            start_to_close_timeout=timedelta(seconds=30),
            retry_policy=RetryPolicy(maximum_interval=timedelta(seconds=10)),
            summary=f"audit: {len(batch)} events",
        )
