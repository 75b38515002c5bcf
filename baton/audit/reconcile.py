"""The trail against Temporal's own history: what a run did by Temporal's account
and what its trail says it did must agree.

Temporal's history is the other record of every run, written by another system,
so a trail that lost an act (a dropped flush, a worker deploy that skipped a call, an
insider deleting a record before the run's checkpoint) shows up as a difference:

- every activity attempt history says completed has its `activity.attempt` record;
- every `decide` and `stop` act delivered (an accepted update, a signal) has the
  record the run makes of it: a decision, an approval, a refusal, a stop request;
- a closed run has its `run.ended`, with the outcome history closed it with (a run
  terminated from outside has none, and that is said too).

Histories live only as long as the namespace keeps them, so reconcile runs well
inside that retention period: `baton audit reconcile --since`, or on a Temporal
Schedule (`--schedule`).

Each pass is recorded in the trail itself: a run's result goes to the run's own findings
chain (`baton-audit-reconcile/<workflow id>`) whenever it is not what that chain last said,
so the reports show when a run was reconciled and what was found, and a run that differs
is an alert (an error on the `baton.audit` logger and an event on the current span) on
every pass until it is looked into.
"""

from __future__ import annotations

import logging
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any, Literal

from opentelemetry import trace
from pydantic import BaseModel, Field
from temporalio.api.enums.v1 import EventType
from temporalio.api.history.v1 import HistoryEvent
from temporalio.client import Client
from temporalio.service import RPCError, RPCStatusCode

from baton.audit.events import Actor, AuditEvent, AuditRecord
from baton.audit.store import AuditStore

if TYPE_CHECKING:
    from baton.audit.anchoring import Anchors

logger = logging.getLogger(__name__)

# What Temporal's history was when a run was compared: still running, closed, or no longer
# kept (then nothing was compared).
History = Literal["open", "closed", "gone"]

# The records a run makes of each kind of act, by act and channel.
ACT_RECORDS = {
    "decide": {"gate.approval", "gate.decided", "decision.refused"},
    "stop": {"run.stop_requested", "stop.refused"},
    "event": {"event.received", "event.refused"},
}
# History's close events and the run.ended outcomes that agree with them.
CLOSE_OUTCOMES = {
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_COMPLETED: {"completed", "rejected", "stopped"},
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_FAILED: {"failed"},
    EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CANCELED: {"cancelled"},
}


@dataclass
class RunReconciliation:
    workflow_id: str
    differences: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)
    history: History = "open"

    @property
    def ok(self) -> bool:
        return not self.differences

    def finding(self) -> dict[str, Any]:
        """The data of the record a pass makes of this result."""
        return {
            "run": self.workflow_id,
            "history": self.history,
            "differences": self.differences,
            "notes": self.notes,
        }


@dataclass(frozen=True)
class HistoryFacts:
    """What a run's history says happened, in the terms the trail records."""

    completed_attempts: frozenset[tuple[str, int]]
    acts: Counter[tuple[str, str]]
    close: EventType.ValueType | None


def history_facts(events: Sequence[HistoryEvent]) -> HistoryFacts:
    scheduled: dict[int, str] = {}
    attempts: dict[int, int] = {}
    completed: set[tuple[str, int]] = set()
    acts: Counter[tuple[str, str]] = Counter()
    close: EventType.ValueType | None = None
    for event in events:
        kind = event.event_type
        if kind == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled[event.event_id] = event.activity_task_scheduled_event_attributes.activity_id
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
            started = event.activity_task_started_event_attributes
            attempts[started.scheduled_event_id] = started.attempt
        elif kind == EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED:
            scheduled_id = event.activity_task_completed_event_attributes.scheduled_event_id
            completed.add((scheduled[scheduled_id], attempts[scheduled_id]))
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_UPDATE_ACCEPTED:
            accepted = event.workflow_execution_update_accepted_event_attributes
            name = accepted.accepted_request.input.name
            if name in ACT_RECORDS:
                acts[(name, "update")] += 1
        elif kind == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_SIGNALED:
            name = event.workflow_execution_signaled_event_attributes.signal_name
            if name in ACT_RECORDS:
                acts[(name, "signal")] += 1
        elif kind in (
            *CLOSE_OUTCOMES,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TIMED_OUT,
            EventType.EVENT_TYPE_WORKFLOW_EXECUTION_CONTINUED_AS_NEW,
        ):
            close = kind
    return HistoryFacts(frozenset(completed), acts, close)


def compare(
    workflow_id: str, facts: HistoryFacts, records: Sequence[AuditRecord]
) -> RunReconciliation:
    found = RunReconciliation(workflow_id, history="open" if facts.close is None else "closed")
    if not records:
        found.differences.append("the trail holds no record of this run at all")
        return found
    recorded_attempts = {
        (str(r.data.get("activity_id")), int(r.data.get("attempt") or 0))
        for r in records
        if r.event_type == "activity.attempt" and not r.data.get("local")
    }
    for activity_id, attempt in sorted(facts.completed_attempts - recorded_attempts):
        found.differences.append(
            f"activity {activity_id} completed (attempt {attempt}) by history, "
            "but the trail has no record of that attempt"
        )
    begun = {
        (str(r.data.get("activity_id")), int(r.data.get("attempt") or 0))
        for r in records
        if r.event_type == "activity.started" and not r.data.get("local")
    }
    for activity_id, attempt in sorted(begun - recorded_attempts):
        found.notes.append(
            f"activity {activity_id} attempt {attempt} started and never ended: its worker "
            "was lost, and Temporal ran it again"
        )
    recorded_acts: Counter[tuple[str, str]] = Counter(
        (act, str(r.data.get("channel")))
        for r in records
        for act, types in ACT_RECORDS.items()
        if r.event_type in types
    )
    for act, channel in sorted(set(facts.acts) | set(recorded_acts)):
        delivered, kept = facts.acts[(act, channel)], recorded_acts[(act, channel)]
        if delivered != kept:
            found.differences.append(
                f"history delivered {delivered} {act} act(s) by {channel}; the trail records {kept}"
            )
    ended = [r for r in records if r.event_type == "run.ended"]
    if facts.close is None:
        if ended:
            found.differences.append("the trail says the run ended; history says it is running")
    elif facts.close == EventType.EVENT_TYPE_WORKFLOW_EXECUTION_TERMINATED:
        found.notes.append("terminated from outside Baton: its trail ends without run.ended")
    elif facts.close in CLOSE_OUTCOMES:
        outcome = str(ended[-1].data.get("outcome")) if ended else None
        expected = CLOSE_OUTCOMES[facts.close]
        if outcome is None:
            found.differences.append(
                f"history closed the run ({EventType.Name(facts.close)}); the trail has no "
                "run.ended"
            )
        elif outcome not in expected:
            found.differences.append(
                f"history closed the run ({EventType.Name(facts.close)}); the trail says it "
                f"ended {outcome}"
            )
    return found


async def reconcile(
    client: Client,
    store: AuditStore,
    *,
    since: datetime | None = None,
    workflow_id: str | None = None,
    processes: Sequence[str] = (),
) -> list[RunReconciliation]:
    """Each run's trail against its history: the runs the store holds (since
    ``since``) and the runs Temporal holds of Baton's processes in that time."""
    if workflow_id is not None:
        ids = [workflow_id]
    else:
        ids = [w for w in store.workflow_ids(since=since) if not is_findings_chain(w)]
        if processes:
            types = " OR ".join(f"WorkflowType = '{p}'" for p in processes)
            query = f"({types})"
            if since is not None:
                query += f" AND StartTime >= '{since.isoformat()}'"
            ids += [w.id async for w in client.list_workflows(query)]
    results = []
    for run in sorted(set(ids)):
        try:
            events = await whole_history(client, run)
        except RPCError as err:
            if err.status != RPCStatusCode.NOT_FOUND:
                raise
            result = RunReconciliation(run, history="gone")
            result.notes.append(
                "Temporal no longer holds its history (past the namespace's retention, or "
                "another namespace): not compared"
            )
            results.append(result)
            continue
        results.append(compare(run, history_facts(events), store.records(run)))
    return results


async def whole_history(client: Client, workflow_id: str) -> list[HistoryEvent]:
    """The run's history across every execution it continued as new into
    (baton.carry), oldest first: its acts are spread over them."""
    histories: list[list[HistoryEvent]] = []
    run_id: str | None = None
    while True:
        handle = client.get_workflow_handle(workflow_id, run_id=run_id)
        events = [event async for event in handle.fetch_history_events()]
        histories.append(events)
        started = events[0].workflow_execution_started_event_attributes if events else None
        run_id = started.continued_execution_run_id if started is not None else ""
        if not run_id:
            return [event for history in reversed(histories) for event in history]


# -- on a Temporal Schedule -----------------------------------------------------------------

RECONCILE_WORKFLOW = "audit_reconcile"
RECONCILE_ACTIVITY = "reconcile_trail"
SCHEDULE_ID = "baton-audit-reconcile"
# Where the passes record their results: one chain per run reconciled, named after it, so
# a report finds a run's findings at once, and a purge takes them with the run's age.
FINDINGS_CHAIN = "baton-audit-reconcile"


class ReconcileRequest(BaseModel):
    window_days: int = Field(default=7, ge=1, description="Runs started this many days back")


class ReconcileSummary(BaseModel):
    runs: int
    differing: list[str] = Field(default_factory=list)


def findings_chain(workflow_id: str) -> str:
    """The chain that holds the reconcile findings about run ``workflow_id``."""
    return f"{FINDINGS_CHAIN}/{workflow_id}"


def is_findings_chain(workflow_id: str) -> bool:
    # The bare name: where passes before per-run chains recorded their differences.
    return workflow_id == FINDINGS_CHAIN or workflow_id.startswith(f"{FINDINGS_CHAIN}/")


def record_findings(
    store: AuditStore,
    results: Sequence[RunReconciliation],
    *,
    pass_id: str,
    at: datetime,
    retention_days: int,
    anchors: Anchors | None,
) -> list[AuditEvent]:
    """Alert on every run that differs, and record each run's result in its findings
    chain unless that chain's last record says the same already (a run agreeing on every
    pass adds nothing after its first); then checkpoint what was recorded, as the sink
    does with what it writes. Returns the records made."""
    span = trace.get_current_span()
    events: list[AuditEvent] = []
    for result in results:
        if result.differences:
            logger.error(
                "audit trail differs from Temporal's history for %s (reconcile pass %s): %s",
                result.workflow_id,
                pass_id,
                "; ".join(result.differences),
            )
            span.add_event(
                "baton.audit.reconcile_difference",
                {
                    "baton.workflow_id": result.workflow_id,
                    "baton.reconcile.pass_id": pass_id,
                    "baton.reconcile.differences": result.differences,
                },
            )
        chain = findings_chain(result.workflow_id)
        earlier = store.records(chain)
        if earlier and earlier[-1].data == result.finding():
            continue
        events.append(
            AuditEvent(
                # Numbered in the chain too: a retried pass that finds otherwise records
                # its second answer beside the first, not as a conflicting copy of it.
                event_id=f"{chain}/{pass_id}/{len(earlier) + 1}",
                workflow_id=chain,
                run_id=pass_id,
                process=RECONCILE_WORKFLOW,
                event_type=(
                    "audit.reconcile_difference" if result.differences else "audit.reconciled"
                ),
                occurred_at=at,
                node=None,
                actor=Actor(type="service", id=RECONCILE_ACTIVITY),
                data=result.finding(),
            )
        )
    if events:
        store.append(events, retention_days=retention_days)
        if anchors is not None:
            # Stamped now, not at the pass's start: checkpoints follow each other in time.
            moved = {e.workflow_id for e in events}
            anchors.checkpoint(store, now=datetime.now(UTC), moved=moved)
    return events


ReconcileStatus = Literal["agrees", "differs", "not reconciled"]


def reconcile_status(findings: Sequence[AuditRecord]) -> ReconcileStatus:
    """Where a run stands by its findings chain (oldest first): what the last pass that
    compared it found; none did (or only found its history gone): not reconciled."""
    compared = [f for f in findings if f.data.get("history") != "gone"]
    if not compared:
        return "not reconciled"
    return "differs" if compared[-1].data.get("differences") else "agrees"
