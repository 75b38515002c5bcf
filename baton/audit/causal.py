"""The causal order of one run's records: what happened before what, as the reports tell it.

The store's seq is the order records arrived, not the order things happened: the worker's
activity interceptor writes each attempt when it ends, while the run's own events leave in
batches (at a gate, at the end). The run's own events carry workflow time, which never goes
back and is the same for events of one workflow task, so they sort by time and then by seq,
which keeps the order the run recorded them in. Activity attempts carry the worker's clock,
which need not agree with workflow time (a time-skipping test server is years ahead): each
is placed by what it belongs to, after the event that scheduled it and before the event
that used its result, and by its clock only among the events in between.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from baton.audit.events import AuditRecord
from baton.audit.wording import _number

# Run-level activities (no node), by the run event that records their result.
_RUN_LEVEL_CONSUMERS = {"snapshot_run_config": "config.snapshot"}
_NODE_ENDS = frozenset({"node.finished", "node.failed", "node.skipped"})
# On a tie in workflow time, the start comes first and the end last, whatever seq says.
_TIE_RANK = {"run.started": 0, "run.ended": 2}


def _is_activity(record: AuditRecord) -> bool:
    return record.event_type.startswith("activity.")


def causal_order(run: Sequence[AuditRecord]) -> list[AuditRecord]:
    """The records of one run in happened-before order: `run.started` first and
    `run.ended` last, a node's start before its activity attempts, an attempt before the
    event that used its result, a gate's decision before the node after the gate starts."""
    flow = sorted(
        (r for r in run if not _is_activity(r)),
        key=lambda r: (r.occurred_at, _TIE_RANK.get(r.event_type, 1), r.seq),
    )
    slots: dict[int, list[AuditRecord]] = defaultdict(list)
    attempts = sorted(
        (r for r in run if _is_activity(r)),
        key=lambda r: (r.occurred_at, _number(r.data.get("attempt")), r.seq),
    )
    for attempt in attempts:
        slots[_slot(attempt, flow)].append(attempt)
    ordered: list[AuditRecord] = []
    for index, record in enumerate(flow):
        ordered += slots.pop(index, [])
        ordered.append(record)
    return ordered + slots.pop(len(flow), [])


def _slot(attempt: AuditRecord, flow: Sequence[AuditRecord]) -> int:
    """The index in ``flow`` before which ``attempt`` goes."""
    lo, hi = _window(attempt, flow)
    position = lo + 1
    while position < hi and flow[position].occurred_at <= attempt.occurred_at:
        position += 1
    return min(position, hi)


def _find(
    flow: Sequence[AuditRecord],
    accept: Callable[[AuditRecord], bool],
    *,
    after: int = -1,
    before: int | None = None,
    last: bool = False,
) -> int | None:
    indices = range(after + 1, len(flow) if before is None else before)
    for index in reversed(indices) if last else indices:
        if accept(flow[index]):
            return index
    return None


@dataclass(frozen=True)
class _ActivityRef:
    """What the runner's activity id says: ``<node>#<visit>``, then ``.<n>`` for a model
    attempt, ``.undo`` for a compensation, ``.notice<n>`` for a gate's n-th notice."""

    node: str
    visit: int | None
    suffix: str

    @classmethod
    def of(cls, attempt: AuditRecord) -> _ActivityRef:
        node, _, rest = str(attempt.data.get("activity_id") or "").partition("#")
        visit, _, suffix = rest.partition(".")
        return cls(
            node if rest else attempt.node or "", int(visit) if visit.isdigit() else None, suffix
        )

    def numbered(self, prefix: str) -> int | None:
        number = self.suffix.removeprefix(prefix)
        return int(number) if self.suffix.startswith(prefix) and number.isdigit() else None


def _window(attempt: AuditRecord, flow: Sequence[AuditRecord]) -> tuple[int, int]:
    """(lo, hi): the attempt happened after flow[lo] and before flow[hi]."""
    ended = _find(flow, lambda r: r.event_type == "run.ended", last=True)
    end = len(flow) if ended is None else ended
    begin = _find(flow, lambda r: r.event_type == "run.started")
    begin = -1 if begin is None else begin
    ref = _ActivityRef.of(attempt)
    started = _find(
        flow, lambda r: _is_node_event(r, "node.started", ref.node, ref.visit), after=begin
    )
    if started is None:
        consumer = _RUN_LEVEL_CONSUMERS.get(str(attempt.data.get("activity_type")))
        found = _find(flow, lambda r: r.event_type == consumer, after=begin) if consumer else None
        return begin, end if found is None else found
    if ref.suffix == "undo":
        return _compensation_window(flow, ref, started, end)
    node_end = _find(flow, lambda r: _ends_node(r, ref.node, ref.visit), after=started)
    hi = end if node_end is None else node_end
    notice = ref.numbered("notice")
    if notice is not None:
        return _notice_window(flow, ref.node, notice, started, hi)
    index = ref.numbered("")
    if index is not None:
        used = _find(flow, lambda r: _is_inference(r, ref.node, index), after=started, before=hi)
        hi = hi if used is None else used
    # The node's own code records what it decided before it scheduled the attempt.
    lo = _find(flow, lambda r: r.node == ref.node, after=started, before=hi, last=True)
    return (started if lo is None else lo), hi


def _is_inference(record: AuditRecord, node: str, index: int) -> bool:
    return (
        record.event_type == "ai.inference"
        and record.node == node
        and record.data.get("index") == index
    )


def _is_node_event(record: AuditRecord, kind: str, node: str, visit: int | None) -> bool:
    return (
        record.event_type == kind
        and record.node == node
        and (visit is None or record.data.get("visit") in (None, visit))
    )


def _ends_node(record: AuditRecord, node: str, visit: int | None) -> bool:
    return record.event_type in _NODE_ENDS and _is_node_event(
        record, record.event_type, node, visit
    )


def _compensation_window(
    flow: Sequence[AuditRecord], ref: _ActivityRef, started: int, end: int
) -> tuple[int, int]:
    began = _find(flow, lambda r: _is_node_event(r, "compensation.started", ref.node, ref.visit))
    lo = started if began is None else began
    done = _find(
        flow,
        lambda r: (
            r.event_type in ("compensation.finished", "compensation.failed")
            and _is_node_event(r, r.event_type, ref.node, ref.visit)
        ),
        after=lo,
        before=end,
    )
    return lo, end if done is None else done


def _notice_window(
    flow: Sequence[AuditRecord], node: str, number: int, started: int, hi: int
) -> tuple[int, int]:
    """The n-th notice of a gate is sent upon its n-th reminder or escalation, before the
    gate records anything else (a failed notice, the next escalation, a decision)."""
    causes = [
        i
        for i in range(started + 1, hi)
        if flow[i].node == node and flow[i].event_type in ("gate.reminded", "gate.escalated")
    ]
    lo = causes[number - 1] if 0 < number <= len(causes) else started
    after = _find(flow, lambda r: r.node == node, after=lo, before=hi)
    return lo, hi if after is None else after
