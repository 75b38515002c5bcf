"""The per-run checks: statements about a run (start and end recorded, the start signed,
the requester not an approver, four-eyes kept, every business effect overseen, approvals by
people, acts signed), each with the records that bear it out or not. The per-run report shows
their evidence; the period report counts them over every run.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Literal

from baton.audit.causal import _find, causal_order
from baton.audit.events import AuditRecord
from baton.audit.markup import _join, _pill, _Safe, _table, _tag
from baton.audit.oversight import _DECIDED
from baton.audit.reading import (
    _DECISIONS,
    _STOP_ACTS,
    _actor_type,
    _approval_count,
    _approvals,
    _by_person,
    _gate_of,
    _is_approval,
    _node_named,
    _person,
    _requester,
    _who,
)
from baton.audit.wording import _at, _quote, _short, _signature_text

CheckStatus = Literal["pass", "fail", "n/a"]


@dataclass(frozen=True)
class Check:
    """One statement about a run, whether the trail bears it out, and the records that
    show it (named by seq, so an auditor can find them in the timeline and in verify)."""

    label: str
    status: CheckStatus
    evidence: list[str]


def run_checks(run: Sequence[AuditRecord]) -> list[Check]:
    ordered = causal_order(run)
    return [
        _start_recorded(ordered),
        _start_signed(ordered),
        _end_recorded(ordered),
        _requester_not_approver(ordered),
        _four_eyes_distinct(ordered),
        _effects_overseen(ordered),
        _approvals_by_people(ordered),
        _acts_signed(ordered),
    ]


def _start_recorded(run: Sequence[AuditRecord]) -> Check:
    started = next((r for r in run if r.event_type == "run.started"), None)
    label = "Run start recorded"
    if started is None:
        return Check(label, "fail", ["no run.started record"])
    return Check(label, "pass", [f"run.started ({_at(started)})"])


def _start_signed(run: Sequence[AuditRecord]) -> Check:
    label = "Run start signed by its requester"
    admitted = next((r for r in run if r.event_type == "run.admitted"), None)
    if admitted is not None:
        signature = _signature_text(admitted.data.get("signature"))
        return Check(
            label, "pass", [f"{_who(admitted)}'s signature verified ({_at(admitted)}): {signature}"]
        )
    refused = [
        f"{_who(r)}: {r.data.get('reason', 'refused')} ({_at(r)})"
        for r in run
        if r.event_type == "run.refused"
    ]
    return Check(label, "fail", refused or ["no run.admitted record"])


def _end_recorded(run: Sequence[AuditRecord]) -> Check:
    ended = next((r for r in reversed(run) if r.event_type == "run.ended"), None)
    label = "Run end recorded"
    if ended is None:
        return Check(
            label, "fail", ["no run.ended record: the run is still going, or its end was lost"]
        )
    outcome = ended.data.get("outcome") or ended.data.get("status") or "ended"
    return Check(label, "pass", [f"ended {_short(outcome, 60)} ({_at(ended)})"])


def _requester_not_approver(run: Sequence[AuditRecord]) -> Check:
    label = "The requester is not an approver"
    requester = _requester(run)
    approvals = _approvals(run)
    if requester is None:
        return Check(
            label, "fail", ["the trail names no requester (no run.started or run.admitted)"]
        )
    how = "signature verified" if requester.proven else "as claimed at start, not proven"
    evidence = [f"requester: {requester.user} ({how}; seq {requester.record.seq})"]
    own = [a for a in approvals if _who(a) == requester.user]
    evidence += [
        f"{requester.user} requested the run and approved gate “{_gate_of(a)}” ({_at(a)})"
        for a in own
    ]
    evidence.append(
        "approvers: " + ", ".join(_person(a, where=f"seq {a.seq}") for a in approvals)
        if approvals
        else "no approval was recorded"
    )
    evidence += [
        f"{requester.user}'s own attempt was refused ({_at(r)}): {r.data.get('reason', '')}"
        for r in run
        if r.event_type == "decision.refused" and _who(r) == requester.user
    ]
    return Check(label, "fail" if own else "pass", evidence)


def _four_eyes_distinct(run: Sequence[AuditRecord]) -> Check:
    label = "Under four-eyes, two distinct people approved"
    rounds: dict[tuple[str, object], list[AuditRecord]] = defaultdict(list)
    for approval in _approvals(run):
        rounds[(_gate_of(approval) or "?", approval.data.get("round"))].append(approval)
    four_eyes = {
        key: acts for key, acts in rounds.items() if max(_approval_count(a)[1] for a in acts) >= 2
    }
    if not four_eyes:
        return Check(label, "n/a", ["no gate of this run needed two approvals"])
    evidence: list[str] = []
    failed = False
    for (gate, round_), acts in four_eyes.items():
        problems = _four_eyes_problems(acts)
        failed = failed or bool(problems)
        steps = " then ".join(_person(a, where=_at(a)) for a in acts)
        evidence.append(f"gate “{gate}”{f' round {round_}' if round_ else ''}: {steps}")
        evidence += problems
        if acts[-1].event_type == "gate.approval":
            evidence.append(_unfinished_round(run, acts[-1]))
    return Check(label, "fail" if failed else "pass", evidence)


def _unfinished_round(run: Sequence[AuditRecord], approval: AuditRecord) -> str:
    """How a round that never reached its approvals ended: another decision, or nothing."""
    closed = next(
        (
            r
            for r in run
            if r.event_type == "gate.decided"
            and _gate_of(r) == _gate_of(approval)
            and r.data.get("round") == approval.data.get("round")
        ),
        None,
    )
    if closed is not None:
        return f"the round ended when {_person(closed)} {_did(closed)} ({_at(closed)})"
    so_far, needed = _approval_count(approval)
    return f"awaiting approval {so_far + 1} of {needed} when the trail ends"


def _four_eyes_problems(acts: Sequence[AuditRecord]) -> list[str]:
    """What is wrong with one four-eyes round: a person counted twice, an approver the
    decision names without a recorded approval, or too few approvals for the decision."""
    last = acts[-1]
    named = [str(u) for u in last.data.get("approved_by") or [_who(last)]]
    needed = _approval_count(last)[1]
    problems = [
        f"{user} is counted {named.count(user)} times"
        for user in sorted(set(named))
        if named.count(user) > 1
    ]
    recorded = {_who(a) for a in acts}
    problems += [
        f"{user} is named as an approver, but the trail has no approval by {user}"
        for user in named
        if user not in recorded
    ]
    if last.event_type == "gate.decided" and len(set(named)) < needed:
        problems.append(
            f"the gate was approved with {len(set(named))} distinct approver(s) of {needed}"
        )
    return problems


def _kind_of(run: Sequence[AuditRecord], node: str | None) -> str | None:
    started = next((r for r in run if r.event_type == "node.started" and r.node == node), None)
    return str(started.data.get("kind")) if started and started.data.get("kind") else None


def _writes(run: Sequence[AuditRecord]) -> list[int]:
    """Indices of steps that wrote to a system of record: by the design, every such write
    carries an idempotency key, and the step's output returns it."""
    return [
        i
        for i, r in enumerate(run)
        if r.event_type == "node.finished"
        and isinstance(r.data.get("output"), Mapping)
        and "idempotency_key" in r.data["output"]
    ]


def _effects_overseen(run: Sequence[AuditRecord]) -> Check:
    label = (
        "Every AI output with a business effect has a human decision or a recorded reason for none"
    )
    writes = _writes(run)
    if not writes:
        return Check(label, "n/a", ["no step wrote to a system of record"])
    evidence: list[str] = []
    failed = False
    for index in writes:
        write = run[index]
        start = _started_before(run, write.node, index)
        ai_nodes = list(
            dict.fromkeys(r.node for r in run[:start] if r.event_type == "ai.inference")
        )
        if not ai_nodes:
            evidence.append(f"{write.node} (seq {write.seq}) wrote no AI output")
        for node in ai_nodes:
            ok, text = _oversight_of(run, str(node), write, start)
            failed = failed or not ok
            evidence.append(text)
    return Check(label, "fail" if failed else "pass", evidence)


def _started_before(run: Sequence[AuditRecord], node: str | None, index: int) -> int:
    """Where the visit of ``node`` that ends at ``index`` started."""
    for i in range(index - 1, -1, -1):
        if run[i].event_type == "node.started" and run[i].node == node:
            return i
    return index


def _oversight_of(
    run: Sequence[AuditRecord], node: str, write: AuditRecord, start: int
) -> tuple[bool, str]:
    """Whether the last AI output of ``node`` before the write was approved by a person or
    its review was skipped for a recorded reason; in words either way."""
    made = _find(
        run, lambda r: r.event_type == "ai.inference" and r.node == node, before=start, last=True
    )
    assert made is not None
    output = f"{node}'s output (seq {run[made].seq})"
    wrote = f"{write.node} wrote it (seq {write.seq})"
    for record in run[made + 1 : start]:
        if _is_approval(record) and record.event_type == "gate.decided" and _covers(record, node):
            approvers = ", ".join(str(u) for u in record.data.get("approved_by") or [_who(record)])
            gate = f"gate “{_gate_of(record)}” by {approvers} (seq {record.seq})"
            return True, f"{output} was approved at {gate} before {wrote}"
        reason = record.data.get("detail") or record.data.get("reason")
        if (
            record.event_type == "node.skipped"
            and reason
            and _kind_of(run, record.node) in ("gate", None)
        ):
            return (
                True,
                f"gate “{record.node}” was skipped before {wrote}: {reason} (seq {record.seq})",
            )
    return False, f"{wrote} from {output} with no human decision and no recorded reason for none"


def _covers(decision: AuditRecord, node: str) -> bool:
    """A decision covers an AI node's output when the gate reviewed that node (its subject),
    decided on the node itself (an Ask's human tier), or reviewed without a named subject."""
    if decision.node == node:
        return True
    shown = decision.data.get("shown")
    subject = shown.get("subject") if isinstance(shown, Mapping) else None
    return _node_named(subject) in (None, node)


def _approvals_by_people(run: Sequence[AuditRecord]) -> Check:
    label = "Every approval was made by a person, never the AI or a service"
    decisions = [r for r in run if r.event_type in _DECISIONS]
    if not decisions:
        return Check(label, "n/a", ["no gate decision was recorded"])
    by_others = [r for r in decisions if not _by_person(r)]
    # A service may reject (an SLA chain that runs out, as declared); it may never approve.
    evidence = [f"{_who(r)} ({_actor_type(r)}) {_did(r)} ({_at(r)})" for r in by_others]
    people = sorted({_person(r) for r in decisions if _by_person(r)})
    evidence.append(f"decided by: {', '.join(people) or 'no person'}")
    approved = any(_is_approval(r) for r in by_others)
    return Check(label, "fail" if approved else "pass", evidence)


def _did(decision: AuditRecord) -> str:
    outcome = _DECIDED.get(str(decision.data.get("outcome")), "decided")
    comment = f": {_quote(decision.data['comment'])}" if decision.data.get("comment") else ""
    return f"{outcome} gate “{_gate_of(decision)}”{comment}"


def _acts_signed(run: Sequence[AuditRecord]) -> Check:
    label = "Every decision and stop by a person is signed by them"
    acts = [
        r
        for r in run
        if r.event_type in _DECISIONS | _STOP_ACTS
        and r.actor is not None
        and r.actor.type == "human"
    ]
    if not acts:
        return Check(label, "n/a", ["no decision or stop by a person was recorded"])
    unsigned = [r for r in acts if not r.data.get("signature")]
    evidence = [f"{r.event_type} by {_who(r)} carries no signature ({_at(r)})" for r in unsigned]
    evidence.append(f"{len(acts) - len(unsigned)} of {len(acts)} act(s) signed")
    return Check(label, "fail" if unsigned else "pass", evidence)


def _checks_table(checks: Sequence[Check]) -> _Safe:
    tone = {"pass": "good", "fail": "bad", "n/a": "none"}
    rows = [
        [
            check.label,
            _pill("FAIL" if check.status == "fail" else check.status, tone[check.status]),
            _tag("ul", _join(_tag("li", line) for line in check.evidence), class_="evidence"),
        ]
        for check in checks
    ]
    return _table(["Check", "Result", "Evidence"], rows, class_="checks")
