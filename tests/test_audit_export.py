"""Exports of the audit trail: lossless JSONL, and an HTML report a reviewer can read.

The HTML report is rendered in headless Chromium, so "readable" is checked on pixels, not
only on markup. Trails built here exercise what real runs rarely produce: a requester who
approved, one person approving twice, a lost first approval, an AI output written without
review, hostile text everywhere. tests/test_audit_report_runs.py reports on real runs.
"""

from __future__ import annotations

import re
import shutil
import struct
import subprocess
import zlib
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest

from baton.audit.causal import causal_order
from baton.audit.checks import Check, run_checks
from baton.audit.events import Actor, AuditEvent, AuditRecord, record_hash
from baton.audit.export import export_html, export_jsonl, read_jsonl
from baton.audit.reading import field_diff
from baton.audit.store import SqliteAuditStore
from baton.audit.verify import summarise
from docs.screenshot import CHROMIUM_ARGS

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
MERMAID = """flowchart TD
    input([Invoice])
    extract[/"extract<br/><small>LLM: extract_invoice</small>"/]
    match["match<br/><small>three_way_match</small>"]
    approve{"approve<br/><small>human: ap_manager</small>"}
    pay["pay<br/><small>release_payment</small>"]
    input --> extract
    extract --> match
    match --> approve
    approve --> pay"""

ALICE = Actor(type="human", id="alice@example.test", role="ap_manager")
BOB = Actor(type="human", id="bob@example.test", role="ap_clerk")
CAROL = Actor(type="human", id="carol@example.test", role="controller")
MODEL = Actor(type="ai_model", id="claude-sonnet-4-5")
WORKER = Actor(type="service", id="baton-worker")


def _run_events(workflow_id: str, start: datetime, *, fail: bool) -> list[AuditEvent]:
    steps: list[tuple[str, str | None, Actor | None, dict[str, Any]]] = [
        ("run.started", None, WORKER, {"input": {"invoice": "INV-1042"}}),
        (
            "config.snapshot",
            None,
            WORKER,
            {
                "risk_class": "not high-risk (AI Act Annex III)",
                "intended_purpose": "accounts payable automation",
            },
        ),
        ("node.started", "extract", WORKER, {}),
        ("activity.attempt", "extract", WORKER, {"attempt": 1, "error": "timeout after 30s"}),
        ("activity.attempt", "extract", WORKER, {"attempt": 2}),
        (
            "ai.inference",
            "extract",
            MODEL,
            {
                "provider": "anthropic",
                "model": "claude-sonnet-4-5",
                "input_tokens": 1830,
                "output_tokens": 412,
                "cost_usd": 0.01167,
                "confidence": 0.91,
                "confidence_method": "logprob",
            },
        ),
        ("node.finished", "extract", WORKER, {"fields": 14}),
        ("node.started", "match", WORKER, {}),
        (
            "ai.inference",
            "match",
            MODEL,
            {
                "provider": "openai",
                "model": "gpt-5-mini",
                "input_tokens": 950,
                "output_tokens": 120,
                "cost_usd": 0.0021,
                "confidence": 0.78,
                "confidence_method": "self-reported",
            },
        ),
        ("routing.decided", "match", WORKER, {"route": "approve", "reason": "price +3.2%"}),
        ("node.finished", "match", WORKER, {"result": "price variance within tolerance"}),
        ("node.started", "approve", WORKER, {}),
        ("gate.opened", "approve", WORKER, {"roles": ["ap_manager"]}),
        (
            "decision.refused",
            "approve",
            BOB,
            {"reason": "role ap_clerk may not decide gate approve", "outcome": "approve"},
        ),
        (
            "gate.decided",
            "approve",
            ALICE,
            {
                "outcome": "approve",
                "comment": "Checked PO <script>alert('x')</script> & receipt",
                "shown": {"amount": "1,240.00 EUR", "vendor": "ACME GmbH", "ai": "approve 0.91"},
            },
        ),
        ("node.finished", "approve", WORKER, {}),
        ("node.started", "pay", WORKER, {}),
    ]
    if fail:
        steps += [
            (
                "override",
                "pay",
                CAROL,
                {
                    "decision": "hold payment",
                    "reason": "vendor bank details changed last week",
                    "shown": "payment proposal",
                },
            ),
            ("node.failed", "pay", WORKER, {"error": "payment held by controller"}),
            ("stop", None, CAROL, {"reason": "fraud check requested"}),
            ("run.ended", None, WORKER, {"status": "stopped"}),
        ]
    else:
        steps += [
            ("node.finished", "pay", WORKER, {"payment": "PAY-88"}),
            ("run.ended", None, WORKER, {"status": "completed"}),
        ]
    return [
        AuditEvent(
            event_id=f"{workflow_id}:{i}",
            workflow_id=workflow_id,
            run_id="r1",
            process="invoice",
            event_type=kind,
            node=node,
            actor=actor,
            occurred_at=start + timedelta(minutes=3 * i),
            data=data,
        )
        for i, (kind, node, actor, data) in enumerate(steps)
    ]


@pytest.fixture
def store(tmp_path: Path) -> SqliteAuditStore:
    store = SqliteAuditStore(tmp_path / "audit.db", clock=lambda: T0 + timedelta(days=1))
    store.append(_run_events("invoice-1042", T0, fail=False), retention_days=183)
    store.append(
        _run_events("invoice-1043", T0 + timedelta(hours=2), fail=True), retention_days=183
    )
    return store


def _all_records(store: SqliteAuditStore) -> list[AuditRecord]:
    return [r for wf in store.workflow_ids() for r in store.records(wf)]


def _report(store: SqliteAuditStore, out: Path) -> str:
    export_html(
        _all_records(store),
        store.verify(),
        out,
        title="Invoice approvals: March 2026",
        mermaid=MERMAID,
        path_taken=["extract", "match", "approve", "pay"],
        min_retention_days=183,
    )
    return out.read_text(encoding="utf-8")


def test_jsonl_round_trips_to_the_same_records(store: SqliteAuditStore, tmp_path: Path) -> None:
    records = _all_records(store)
    out = tmp_path / "trail.jsonl"
    assert export_jsonl(records, out) == len(records)
    assert len(out.read_text().splitlines()) == len(records)
    again = read_jsonl(out)
    assert again == records
    assert all(record_hash(r) == r.record_hash for r in again)


def test_html_shows_verification_decisions_models_and_cost(
    store: SqliteAuditStore, tmp_path: Path
) -> None:
    page = _report(store, tmp_path / "report.html")
    assert "Chain verification: OK" in page
    assert "2 chain(s), 40 record(s)" in page
    for actor in (ALICE, BOB, CAROL):
        assert actor.id in page and f">{actor.role}<" in page
    assert "approve" in page and "hold payment" in page
    assert "<td>vendor</td><td>ACME GmbH</td>" in page  # what the approver saw
    for model in ("claude-sonnet-4-5", "gpt-5-mini", "anthropic", "openai"):
        assert model in page
    assert "$0.0275" in page  # 2 runs x (0.01167 + 0.0021)
    assert "timeout after 30s" in page  # the retry
    assert "payment held by controller" in page  # the failure
    assert "does not claim compliance" in page
    assert "not high-risk (AI Act Annex III)" in page
    assert page.count('class="run"') == 2
    assert "<details><summary>Mermaid source" in page


def test_html_escapes_content_and_references_nothing_external(
    store: SqliteAuditStore, tmp_path: Path
) -> None:
    page = _report(store, tmp_path / "report.html")
    assert "<script" not in page.lower()
    assert "&lt;script&gt;alert(&#x27;x&#x27;)&lt;/script&gt;" in page
    assert "&lt;br/&gt;" in page  # the Mermaid labels are shown, not interpreted
    assert not re.search(r"""(src|href)\s*=\s*["']?\s*(https?:)?//""", page, re.I)
    assert "http://" not in page and "https://" not in page
    assert "@import" not in page and "url(" not in page


def test_html_names_each_problem_when_verification_fails(
    store: SqliteAuditStore, tmp_path: Path
) -> None:
    import sqlite3

    from baton.audit.store_schema import _SQLITE_SCHEMA

    # As a careful insider would: the guard dropped, the record deleted, the guard put back.
    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_records_no_delete")
    conn.execute(
        "DELETE FROM audit_records WHERE seq = 15 AND workflow_id ="
        " (SELECT MIN(id) FROM audit_runs WHERE workflow_id = 'invoice-1043')"
    )
    for statement in _SQLITE_SCHEMA:
        conn.execute(statement)
    conn.close()
    page = _report(store, tmp_path / "report.html")
    assert "Chain verification: FAILED (1 problem(s))" in page
    assert "deleted; next stored: invoice-1043:15" in page and ">missing<" in page


# -- oversight and checks on trails built here -----------------------------------------------

Step = tuple[str, str | None, Actor | None, dict[str, Any]]
CLERK = Actor(type="human", id="clerk-1", role="requester")
RITA = Actor(type="human", id="rita", role="reviewer")
VERA = Actor(type="human", id="vera", role="controller")
SIGNED = {"method": "ed25519", "key": "ed25519:AAAA", "via": "cli", "value": "c2ln"}
SUBJECT = {
    "node": "extract",
    "provider": "offline",
    "model": "rules-extract_fields-v1",
    "confidence": 0.93,
    "confidence_method": "rules_coverage",
    "output": {"party": "Brightline Software LLC", "number": "BL-88317", "total": "13336.4"},
}
SHOWN = {
    "document": {"name": "bl-88317.txt", "size": 1060, "sha256": "8ef005c9" * 8},
    "findings": [{"code": "large_amount", "message": "total above the four-eyes limit"}],
    "subject": SUBJECT,
}


def _approval(actor: Actor, approved_by: list[str], *, needed: int = 2) -> Step:
    awaiting = needed - len(approved_by)
    data = {
        "outcome": "approve",
        "comment": "checked",
        "approved_by": approved_by,
        "awaiting": awaiting,
        "round": 1,
        "channel": "update",
        "shown": SHOWN,
        "shown_digest": "d1" * 32,
        "signature": SIGNED,
        "waited_seconds": 95.0,
        "escalations": 0,
    }
    return ("gate.approval" if awaiting else "gate.decided", "review", actor, data)


def _ai_steps() -> list[Step]:
    return [
        ("run.started", None, Actor(type="unproven", id="clerk-1", role="requester"), {}),
        ("run.admitted", None, CLERK, {"signature": SIGNED}),
        ("node.started", "extract", None, {"kind": "ask", "visit": 1}),
        ("routing.decided", "extract", None, {"decision": "planned", "cascade": ["rules"]}),
        (
            "ai.inference",
            "extract",
            Actor(type="ai_model", id="offline/rules-extract_fields-v1"),
            {"index": 1, "outcome": "accepted", "confidence": 0.93, "output": SUBJECT["output"]},
        ),
        ("node.finished", "extract", None, {"visit": 1, "output": SUBJECT["output"]}),
    ]


def _entry_steps() -> list[Step]:
    return [
        ("node.started", "enter", None, {"kind": "step", "visit": 1}),
        (
            "node.finished",
            "enter",
            None,
            {"visit": 1, "output": {"entry_id": 7, "idempotency_key": "wf/enter#1"}},
        ),
        ("run.ended", None, None, {"outcome": "completed"}),
    ]


def _reviewed(*approvals: Step) -> list[Step]:
    """A four-eyes review between extraction and the ERP entry, with ``approvals``."""
    gate: list[Step] = [
        ("node.started", "review", None, {"kind": "gate", "visit": 1}),
        (
            "gate.opened",
            "review",
            None,
            {"roles": ["reviewer", "controller"], "approvals_needed": 2},
        ),
        *approvals,
        ("node.finished", "review", None, {"visit": 1}),
    ]
    return [*_ai_steps(), *gate, *_entry_steps()]


def _trail(tmp_path: Path, steps: list[Step], workflow_id: str = "intake-1") -> list[AuditRecord]:
    store = SqliteAuditStore(tmp_path / f"{workflow_id}.db", clock=lambda: T0 + timedelta(days=1))
    store.append(
        [
            AuditEvent(
                event_id=f"{workflow_id}/{i}",
                workflow_id=workflow_id,
                run_id="r1",
                process="document_intake",
                event_type=kind,
                node=node,
                actor=actor,
                occurred_at=T0 + timedelta(seconds=i),
                data=data,
            )
            for i, (kind, node, actor, data) in enumerate(steps)
        ],
        retention_days=183,
    )
    return store.records(workflow_id)


def _check(records: list[AuditRecord], label_start: str) -> Check:
    return next(c for c in run_checks(records) if c.label.startswith(label_start))


def _page(records: list[AuditRecord], out: Path) -> str:
    export_html(records, summarise(1, len(records), []), out, title="Report")
    return out.read_text(encoding="utf-8")


def test_checks_pass_on_a_clean_four_eyes_trail(tmp_path: Path) -> None:
    records = _trail(
        tmp_path, _reviewed(_approval(RITA, ["rita"]), _approval(VERA, ["rita", "vera"]))
    )
    assert {c.label: c.status for c in run_checks(records)} == {
        "Run start recorded": "pass",
        "Run start signed by its requester": "pass",
        "Run end recorded": "pass",
        "The requester is not an approver": "pass",
        "Under four-eyes, two distinct people approved": "pass",
        "Every AI output with a business effect has a human decision or a recorded reason for "
        "none": "pass",
        "Every approval was made by a person, never the AI or a service": "pass",
        "Every decision and stop by a person is signed by them": "pass",
    }


def test_a_requester_who_approved_fails_the_check_with_the_records_that_show_it(
    tmp_path: Path,
) -> None:
    as_reviewer = Actor(type="human", id="clerk-1", role="reviewer")
    records = _trail(
        tmp_path,
        _reviewed(_approval(as_reviewer, ["clerk-1"]), _approval(VERA, ["clerk-1", "vera"])),
    )
    check = _check(records, "The requester is not an approver")
    approval = next(r for r in records if r.event_type == "gate.approval")
    assert check.status == "fail"
    assert check.evidence[:2] == [
        "requester: clerk-1 (signature verified; seq 2)",
        f"clerk-1 requested the run and approved gate “review” (seq {approval.seq}, "
        "2026-03-02 09:00:08.000 UTC)",
    ]
    # Two distinct people did approve: only the requester check fails.
    assert _check(records, "Under four-eyes").status == "pass"
    page = _page(records, tmp_path / "report.html")
    assert 'Checks</dt><dd><span class="pill bad">1 failed</span>' in page
    assert '<span class="pill bad">FAIL</span>' in page
    assert "clerk-1 requested the run and approved gate “review”" in page


def test_one_person_approving_twice_or_a_lost_first_approval_fails_four_eyes(
    tmp_path: Path,
) -> None:
    twice = _trail(
        tmp_path, _reviewed(_approval(RITA, ["rita"]), _approval(RITA, ["rita", "rita"]))
    )
    check = _check(twice, "Under four-eyes")
    assert check.status == "fail"
    assert "rita is counted 2 times" in check.evidence
    assert "the gate was approved with 1 distinct approver(s) of 2" in check.evidence

    lost = _trail(tmp_path, _reviewed(_approval(VERA, ["rita", "vera"])), "intake-2")
    check = _check(lost, "Under four-eyes")
    assert check.status == "fail"
    assert "rita is named as an approver, but the trail has no approval by rita" in check.evidence


def test_a_round_short_of_its_second_approval_says_how_it_ended(tmp_path: Path) -> None:
    first = _approval(RITA, ["rita"])
    cut_short = _trail(tmp_path, [*_ai_steps(), *_reviewed(first)[6:8], first])
    check = _check(cut_short, "Under four-eyes")
    assert check.status == "pass"
    assert check.evidence[-1] == "awaiting approval 2 of 2 when the trail ends"
    assert _check(cut_short, "Run end recorded").status == "fail"

    changes: Step = ("gate.decided", "review", VERA, {"outcome": "request_changes", "round": 1})
    changes[3].update(comment="recheck the total", signature=SIGNED)
    sent_back = _trail(tmp_path, _reviewed(first, changes), "intake-2")
    check = _check(sent_back, "Under four-eyes")
    assert check.status == "pass"
    assert check.evidence[-1].startswith(
        "the round ended when vera (controller) asked for changes at gate “review”: "
        "“recheck the total” (seq 10,"
    )


def test_an_ai_output_entered_without_review_fails_unless_the_skip_is_recorded(
    tmp_path: Path,
) -> None:
    unreviewed = _trail(tmp_path, [*_ai_steps(), *_entry_steps()])
    check = _check(unreviewed, "Every AI output")
    assert check.status == "fail"
    assert check.evidence == [
        "enter wrote it (seq 8) from extract's output (seq 5) with no human decision and no "
        "recorded reason for none"
    ]

    skipped: list[Step] = [
        ("node.started", "review", None, {"kind": "gate", "visit": 1}),
        ("node.skipped", "review", None, {"detail": "condition needs_review was false"}),
    ]
    recorded = _trail(tmp_path, [*_ai_steps(), *skipped, *_entry_steps()], "intake-2")
    check = _check(recorded, "Every AI output")
    assert check.status == "pass"
    assert check.evidence == [
        "gate “review” was skipped before enter wrote it (seq 10): condition needs_review was "
        "false (seq 8)"
    ]


def test_the_timeline_follows_happened_before_not_the_order_records_arrived(
    tmp_path: Path,
) -> None:
    """Activity attempts arrive first, with a worker clock years behind workflow time (as on
    the time-skipping server); the run's own events arrive later, in one batch."""
    worker_clock = T0 - timedelta(days=3650)

    def attempt(activity_id: str, node: str, number: int, seconds: int) -> AuditEvent:
        return AuditEvent(
            event_id=f"a/{activity_id}/{number}",
            workflow_id="intake-1",
            event_type="activity.attempt",
            node=node,
            occurred_at=worker_clock + timedelta(seconds=seconds),
            data={"activity_id": activity_id, "attempt": number, "activity_type": node},
        )

    steps = _reviewed(_approval(RITA, ["rita"]), _approval(VERA, ["rita", "vera"]))
    flow = [
        AuditEvent(
            event_id=f"w/{i}",
            workflow_id="intake-1",
            event_type=kind,
            node=node,
            actor=actor,
            # One workflow task: the decision, the gate's end and the next start share a time.
            occurred_at=T0 + timedelta(seconds=min(i, 10)),
            data=data,
        )
        for i, (kind, node, actor, data) in enumerate(steps)
    ]
    store = SqliteAuditStore(tmp_path / "audit.db", clock=lambda: T0 + timedelta(days=1))
    arrived = [
        attempt("1", "1", 1, 0),
        attempt("extract#1.1", "extract", 1, 1),
        attempt("enter#1", "enter", 1, 5),
        attempt("enter#1", "enter", 2, 6),
        *flow,
    ]
    store.append(arrived, retention_days=183)
    ordered = [(r.event_type, r.node) for r in causal_order(store.records("intake-1"))]
    assert ordered == [
        ("run.started", None),
        ("activity.attempt", "1"),
        ("run.admitted", None),
        ("node.started", "extract"),
        ("routing.decided", "extract"),
        ("activity.attempt", "extract"),
        ("ai.inference", "extract"),
        ("node.finished", "extract"),
        ("node.started", "review"),
        ("gate.opened", "review"),
        ("gate.approval", "review"),
        ("gate.decided", "review"),
        ("node.finished", "review"),
        ("node.started", "enter"),
        ("activity.attempt", "enter"),
        ("activity.attempt", "enter"),
        ("node.finished", "enter"),
        ("run.ended", None),
    ]


def test_notices_and_compensations_follow_what_caused_them(tmp_path: Path) -> None:
    steps: list[Step] = [
        ("run.started", None, None, {}),
        ("node.started", "review", None, {"kind": "gate", "visit": 1}),
        ("gate.opened", "review", None, {}),
        ("gate.reminded", "review", None, {}),
        ("gate.escalated", "review", None, {"to_role": "supervisor"}),
        _approval(RITA, ["rita"], needed=1),
        ("node.finished", "review", None, {"visit": 1}),
        ("node.started", "enter", None, {"kind": "step", "visit": 1}),
        ("node.finished", "enter", None, {"visit": 1}),
        ("run.stop_requested", None, VERA, {"reason": "fraud"}),
        ("compensation.started", "enter", None, {"visit": 1}),
        ("compensation.finished", "enter", None, {"visit": 1}),
        ("run.stopped", None, VERA, {"reason": "fraud", "compensated": ["enter"]}),
        ("run.ended", None, None, {"outcome": "stopped"}),
    ]
    flow = _trail(tmp_path, steps)
    store = SqliteAuditStore(tmp_path / "audit.db", clock=lambda: T0 + timedelta(days=1))
    late = T0 + timedelta(days=1)  # a worker clock ahead of workflow time this time
    store.append(
        [
            AuditEvent(
                event_id=f"a/{activity_id}",
                workflow_id="intake-1",
                event_type="activity.attempt",
                node=activity_id.split("#")[0],
                occurred_at=late,
                data={"activity_id": activity_id, "attempt": 1},
            )
            for activity_id in ("enter#1.undo", "review#1.notice2", "review#1.notice1")
        ]
        + [AuditEvent(**r.model_dump(include=set(AuditEvent.model_fields))) for r in flow],
        retention_days=183,
    )
    ordered = [
        str(r.data.get("activity_id") or r.event_type)
        for r in causal_order(store.records("intake-1"))
    ]
    assert ordered[2:6] == ["gate.opened", "gate.reminded", "review#1.notice1", "gate.escalated"]
    assert ordered[6] == "review#1.notice2"
    assert ordered[-6:-2] == [
        "run.stop_requested",
        "compensation.started",
        "enter#1.undo",
        "compensation.finished",
    ]
    stopped = _page(store.records("intake-1"), tmp_path / "report.html")
    assert "steps undone: enter" in stopped


def test_field_diff_pairs_each_changed_field_with_the_ai_and_the_reviewer_value() -> None:
    ai = {
        **SUBJECT,
        "output": {"party": "Acme", "total": "100.0", "lines": [{"qty": 2}, {"qty": 1}]},
    }
    edited = {"party": "Acme", "total": 100, "lines": [{"qty": 3}], "note": "credit"}
    assert field_diff(ai, edited) == [
        ("lines[1].qty", 2, 3),
        ("lines[2].qty", 1, None),
        ("note", None, "credit"),
    ]
    # An Ask's human tier records the proposal itself, not a subject around it.
    assert field_diff({"total": None}, {"total": "12.50"}) == [("total", None, "12.50")]


HOSTILE = "<img src=x onerror=alert(1)>"


def test_hostile_recorded_text_is_shown_as_text_in_every_section(tmp_path: Path) -> None:
    mallory = Actor(type="unproven", id=f"mallory{HOSTILE}", role=f"r{HOSTILE}")
    shown = {
        **SHOWN,
        "document": {**SHOWN["document"], "name": f"inv{HOSTILE}.txt"},
        "subject": {**SUBJECT, "output": {"party": f"Evil{HOSTILE}", "total": "1"}},
        f"k{HOSTILE}": [f"v{HOSTILE}"],
    }
    decision = _approval(RITA, ["rita"], needed=1)
    decision[3].update(shown=shown, comment=f"ok{HOSTILE}")
    override: Step = (
        "override",
        "review",
        RITA,
        {"reason": HOSTILE, "ai_output": shown["subject"], "edited_output": {"party": HOSTILE}},
    )
    refused: Step = (
        "decision.refused",
        "review",
        mallory,
        {
            "reason": HOSTILE,
            "channel": "signal",
            "decision": {"outcome": "approve", "comment": HOSTILE},
        },
    )
    stop: Step = ("run.stop_requested", None, VERA, {"reason": HOSTILE, "channel": "update"})
    steps = _reviewed(refused, override, decision)
    steps.insert(-1, stop)
    steps.insert(-1, ("node.failed", f"n{HOSTILE}", None, {"detail": HOSTILE}))
    records = _trail(tmp_path, steps)
    page = _page(records, tmp_path / "report.html")
    assert "<img" not in page.lower()
    assert page.count("&lt;img src=x onerror=alert(1)&gt;") >= 10


# -- rendering -------------------------------------------------------------------------------


def _png_rows(png: bytes) -> tuple[int, int, list[bytes]]:
    """Width, height and the filtered scanlines: enough to tell a page from a blank one."""
    assert png[:8] == b"\x89PNG\r\n\x1a\n", "not a PNG"
    pos, idat, header = 8, b"", b""
    while pos < len(png):
        (length,) = struct.unpack(">I", png[pos : pos + 4])
        kind, body = png[pos + 4 : pos + 8], png[pos + 8 : pos + 8 + length]
        if kind == b"IHDR":
            header = body
        elif kind == b"IDAT":
            idat += body
        pos += 12 + length
    width, height, depth, color = struct.unpack(">IIBB", header[:10])
    channels = {0: 1, 2: 3, 4: 2, 6: 4}[color]
    stride = 1 + width * channels * depth // 8
    raw = zlib.decompress(idat)
    return width, height, [raw[i : i + stride] for i in range(0, len(raw), stride)]


def test_html_renders_in_headless_chromium(store: SqliteAuditStore, tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run `apt-get install chromium` (Debian)")
    html_file = tmp_path / "report.html"
    _report(store, html_file)
    shot = tmp_path / "report.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            *CHROMIUM_ARGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1280,2000",
            f"--screenshot={shot}",
            html_file.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    width, height, rows = _png_rows(shot.read_bytes())
    assert (width, height) == (1280, 2000)
    # A blank page filters to one repeated scanline; a rendered report to hundreds.
    assert len(set(rows)) > 300, "the screenshot looks blank"
    assert shot.stat().st_size > 50_000
