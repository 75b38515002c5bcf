"""Exports of the audit trail: lossless JSONL, and an HTML report a reviewer can read.

The HTML report is rendered in headless Chromium, so "readable" is checked on pixels, not
only on markup.
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

from baton.audit.events import Actor, AuditEvent, AuditRecord, record_hash
from baton.audit.export import export_html, export_jsonl, read_jsonl
from baton.audit.store import SqliteAuditStore
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
    assert "vendor=ACME GmbH" in page  # what the approver saw
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

    conn = sqlite3.connect(store.path, isolation_level=None)
    conn.execute("DROP TRIGGER audit_records_no_update")
    conn.execute("DELETE FROM audit_records WHERE workflow_id = 'invoice-1043' AND seq = 15")
    conn.close()
    page = _report(store, tmp_path / "report.html")
    assert "Chain verification: FAILED (1 problem(s))" in page
    assert "deleted; next stored: invoice-1043:15" in page and ">missing<" in page


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
