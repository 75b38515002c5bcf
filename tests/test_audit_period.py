"""The period report (`baton audit report`) over a period of real document-intake runs on
Temporal's time-skipping server: the numbers an auditor relies on (volume, agreement with
the AI, fast decisions, escalations, models, checks, chains), the charts as inline SVG, and
the page as headless Chromium draws it."""

from __future__ import annotations

import asyncio
import html
import re
import shutil
import subprocess
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from PIL import Image
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.events import Actor, AuditRecord
from baton.audit.period import write_period_report
from baton.audit.period_html import render_period_html
from baton.audit.period_stats import PeriodScope, PeriodStats, period_stats
from baton.audit.period_summary import summarise_run
from baton.audit.sink import AuditSettings
from baton.audit.store import AuditStore, open_store
from baton.audit.verify import Problem, summarise
from baton.cli import main
from baton.client import decide, decide_in_turn, run_status, stop_run
from baton.gates import Decision, Outcome, StopRequest
from bench.export_memory import synthetic_run
from docs.screenshot import CHROMIUM_ARGS
from tests.conftest import SAMPLES
from tests.helpers import eventually, settled, start_intake

CLEAN = SAMPLES / "invoice-acme-2026-0142.txt"
CLEAN_TOO = SAMPLES / "invoice-harbour-finch-hfc-2026-017.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"
FOUR_EYES = SAMPLES / "invoice-brightline-bl-88317.txt"
LETTER = SAMPLES / "letter-unknown-type.txt"
MODEL = "offline/rules-extract_fields-v1"
RUN_END = "Run end recorded"


def decision(user: str, outcome: Outcome = "approve", **extra: Any) -> Decision:
    return Decision(gate="review", user=user, outcome=outcome, comment="checked", **extra)


class Period:
    """Drives the runs of one period; each run waits at review ``after`` before deciding.

    Nothing here awaits a run's result: doing so lets the time-skipping server jump its
    clock (by years, seen here), and the period would be scattered over decades. Time moves
    only where a test sleeps; a run is over when its end is in the trail."""

    def __init__(self, env: WorkflowEnvironment, queue: str) -> None:
        self.env, self.client, self.queue = env, env.client, queue
        self.ids: dict[str, str] = {}

    async def start(self, name: str, path: Path) -> str:
        handle = await start_intake(self.client, self.queue, path)
        self.ids[name] = handle.id
        await settled(self.client, handle.id)
        return handle.id

    async def review(
        self, name: str, path: Path, *decisions: Decision, after: timedelta = timedelta(0)
    ) -> str:
        workflow_id = await self.start(name, path)
        if after:
            await self.env.sleep(after)
        await decide_in_turn(self.client, workflow_id, decisions)
        await ended(workflow_id)
        return workflow_id

    async def override(self, name: str) -> None:
        """rita corrects the AI's total and approves, at once."""
        workflow_id = await self.start(name, MISSING_TOTAL)
        status = await run_status(self.client, workflow_id)
        extracted = next(n.output for n in status.nodes if n.node == "extract")
        edited = {**extracted, "total": "118.00"}
        await decide(self.client, workflow_id, decision("rita", output=edited))
        await ended(workflow_id)

    async def changes_then_approval(self, name: str) -> None:
        """rita sends it back at once; the gate opens again and vera approves later."""
        workflow_id = await self.start(name, MISSING_TOTAL)
        await decide(self.client, workflow_id, decision("rita", "request_changes"))
        await eventually(lambda: _trail(workflow_id), lambda rs: _count(rs, "gate.opened") == 2)
        await self.env.sleep(timedelta(minutes=2))
        await decide(self.client, workflow_id, decision("vera"))
        await ended(workflow_id)

    async def terminated(self, name: str) -> None:
        workflow_id = await self.start(name, MISSING_TOTAL)
        await eventually(lambda: _trail(workflow_id), lambda rs: _count(rs, "gate.opened") == 1)
        await self.client.get_workflow_handle(workflow_id).terminate(reason="operator")

    async def escalated(self, name: str) -> None:
        """Nobody decides within the 24 h SLA: the gate escalates; sam decides a day later."""
        workflow_id = await self.start(name, MISSING_TOTAL)
        await self.env.sleep(timedelta(hours=25))
        await decide(self.client, workflow_id, decision("sam"))
        await ended(workflow_id)


async def ended(workflow_id: str) -> None:
    await eventually(lambda: _trail(workflow_id), lambda rs: _count(rs, "run.ended") == 1)


async def _trail(workflow_id: str) -> list[AuditRecord]:
    return _store().records(workflow_id)


def _count(records: list[AuditRecord], event_type: str) -> int:
    return sum(1 for r in records if r.event_type == event_type)


def _store() -> AuditStore:
    return open_store(AuditSettings.from_env().url)


@pytest.fixture
async def period(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> dict[str, str]:
    """Eleven runs: two clean, six reviewed (one overridden, one sent back first, one
    escalated), one rejected, one stopped, one terminated at the gate. rita decides six
    times, three of them at once; vera twice and sam once, after minutes or hours."""
    p = Period(time_skipping_env, task_queue)
    client = time_skipping_env.client
    # Two different invoices: the same one twice would be a suspected duplicate.
    for name, document in (("clean-1", CLEAN), ("clean-2", CLEAN_TOO)):
        await ended(await p.start(name, document))
    await p.review("slow", MISSING_TOTAL, decision("rita"), after=timedelta(minutes=3))
    await p.review("fast", MISSING_TOTAL, decision("rita"))
    await p.override("override")
    await p.review(
        "four-eyes", FOUR_EYES, decision("rita"), decision("vera"), after=timedelta(minutes=2)
    )
    await p.review("rejected", LETTER, decision("rita", "reject"), after=timedelta(seconds=90))
    await p.changes_then_approval("changes")
    stopped = await p.start("stopped", MISSING_TOTAL)
    await stop_run(client, stopped, StopRequest(user="ada", reason="a duplicate of a paper one"))
    await ended(stopped)
    await p.terminated("terminated")
    await p.escalated("escalated")
    return p.ids


def _bounds(ids: dict[str, str]) -> tuple[datetime, datetime]:
    """A period around the runs: the test server's clock runs ahead of the wall clock."""
    starts = [r.occurred_at for wid in ids.values() for r in _store().records(wid)]
    return min(starts) - timedelta(hours=1), max(starts) + timedelta(days=1)


def text(fragment: str) -> str:
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def section(page: str, id_: str) -> str:
    found = re.search(rf'<section id="{id_}">(.*?)</section>', page, re.S)
    assert found is not None, f"no section {id_}"
    return found.group(1)


async def test_the_period_report_counts_what_an_auditor_relies_on(
    period: dict[str, str], tmp_path: Path
) -> None:
    since, until = _bounds(period)
    out = tmp_path / "period.html"
    stats = write_period_report(_store(), out, process="document_intake", since=since, until=until)

    assert stats.runs == 11
    assert {d: stats.runs_by(d) for d in ("auto-entered", "reviewed", "rejected")} == {
        "auto-entered": 2,
        "reviewed": 6,
        "rejected": 1,
    }
    assert (stats.runs_by("stopped"), stats.runs_by("failed"), stats.runs_by("no end")) == (1, 0, 1)
    # Agreement: of eight final decisions by people, five approved what the AI proposed.
    assert stats.verdicts == {
        "approved unchanged": 5,
        "overridden": 1,
        "rejected": 1,
        "changes requested": 1,
    }
    assert stats.agreement_rate == 5 / 8
    # Time to decision: rita decided three of six times within seconds; flagged.
    speeds = {r.reviewer: (r.decisions, r.fast, r.flagged) for r in stats.reviewers}
    assert speeds == {"rita": (6, 3, True), "vera": (2, 0, False), "sam": (1, 0, False)}
    assert stats.decisions == 9 and stats.fast_decisions == 3
    assert sum(b.count for b in stats.histogram if b.fast) == 3
    assert [b.label for b in stats.histogram if b.count and not b.fast] == [
        "1 min\u20135 min",
        "1 d\u20133 d",
    ]
    # Escalation and SLA: ten gates opened; the one nobody decided within 24 h breached.
    assert (stats.gates_opened, stats.escalation_rate, stats.breach_rate) == (10, 0.1, 0.1)
    # Models: one extraction per run, two where the reviewer sent it back.
    assert {m.model for m in stats.models} == {MODEL} and stats.cost_usd == 0.0
    assert sum(m.calls for m in stats.models) == 12
    assert min(m.confidence_min or 1 for m in stats.models) == pytest.approx(0.0761)
    # Checks: only the terminated run has no end; every chain verifies.
    failing = {c.label: c.failed for c in stats.checks if c.failed}
    assert failing == {RUN_END: [period["terminated"]]}
    assert stats.verified and stats.chains_verified == 11

    page = out.read_text(encoding="utf-8")
    assert page.count("<svg") == 5  # volume, agreement, decisions, SLA, confidence (no cost)
    assert "<script" not in page and re.findall(r'(?:src|href)="(?!#)', page) == []
    ids = re.findall(r' id="([^"]+)"', page)
    assert len(ids) == len(set(ids)), "an element id is used twice"
    speed = text(section(page, "speed"))
    assert "rita 6 3 50.0% automation-bias signal" in speed
    assert "vera 2 0 0.0% no signal" in speed
    assert "Agreement with the AI" in page and "62.5%" in text(section(page, "agreement"))
    checks = text(section(page, "checks"))
    assert f"{RUN_END} 1 failed 10 0 {period['terminated']}" in checks
    assert "Chain verification: OK" in page


async def test_the_cli_writes_the_period_report(period: dict[str, str], tmp_path: Path) -> None:
    since, until = _bounds(period)
    out = tmp_path / "report.html"
    args = ["audit", "report", "--process", "document_intake", "--out", str(out)]
    dates = ["--since", f"{since:%Y-%m-%d}", "--until", f"{until:%Y-%m-%d}"]

    assert await asyncio.to_thread(main, [*args, *dates]) == 0
    assert out.read_text(encoding="utf-8").count("<svg") == 5
    # A stricter threshold: none of rita's decisions took under 0.001 s.
    assert await asyncio.to_thread(main, [*args, *dates, "--fast-seconds", "0.001"]) == 0
    assert "automation-bias signal</span>" not in out.read_text(encoding="utf-8")


def test_the_cli_reports_a_period_and_refuses_an_unknown_process(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    store = open_store(AuditSettings.from_env().url)
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    for n in range(40):
        store.append(synthetic_run(n, start + timedelta(hours=12 * n)), retention_days=183)
    out = tmp_path / "march.html"
    march = ["--since", "2026-03-01", "--until", "2026-03-31", "--out", str(out)]

    assert main(["audit", "report", "--process", "document_intake", *march]) == 0
    said = capsys.readouterr().out
    assert (
        f"wrote {out}: 40 run(s) of document_intake started from 2026-03-01 to 2026-03-31" in said
    )
    assert "automation-bias signal (fast decisions) for: rita, vera" in said
    assert "chain ok: 40 run(s) verified" in said
    assert out.read_text(encoding="utf-8").count("<svg") == 5

    assert main(["audit", "report", "--process", "payroll", *march]) == 2
    assert "no audited run of 'payroll' started between" in capsys.readouterr().err


EVIL = "<script>alert(1)</script> $x$"


def _run(workflow_id: str, at: datetime) -> list[AuditRecord]:
    """A run whose model and requester are markup (with a `$` that mathtext would read),
    rejected by its SLA chain after its due time: no person decided it."""
    steps: list[tuple[str, str | None, Actor | None, dict[str, Any]]] = [
        ("run.started", None, Actor(type="human", id=EVIL), {}),
        ("ai.inference", "extract", None, {"provider": EVIL, "model": "m", "confidence": 0.5}),
        ("gate.opened", "review", None, {"due_at": (at + timedelta(minutes=2)).isoformat()}),
        ("gate.decided", "review", Actor(type="service", id="sla"), {"outcome": "reject"}),
        ("run.ended", None, None, {"outcome": "rejected"}),
    ]
    return [
        AuditRecord(
            event_id=f"{workflow_id}/{i}",
            workflow_id=workflow_id,
            process="p",
            event_type=kind,
            node=node,
            actor=actor,
            occurred_at=at + timedelta(minutes=i),
            data=data,
            seq=i + 1,
            prev_hash="",
            record_hash="",
            recorded_at=at,
            retain_until=at,
        )
        for i, (kind, node, actor, data) in enumerate(steps)
    ]


def _stats(records: list[AuditRecord], problems: list[Problem]) -> PeriodStats:
    at = records[0].occurred_at
    run = summarise_run(records, summarise(1, len(records), problems), as_of=at)
    scope = PeriodScope(
        process="p <b>", since=at - timedelta(days=1), until=at + timedelta(days=1), generated_at=at
    )
    return period_stats([run], scope)


def test_recorded_text_is_escaped_in_tables_and_charts() -> None:
    stats = _stats(_run("wf-1", datetime(2026, 3, 2, 9, tzinfo=UTC)), [])
    assert stats.closed_by_service == 1 and stats.reviewed_decisions == 0
    assert (stats.escalation_rate, stats.breach_rate) == (0.0, 1.0)

    page = render_period_html(stats)
    assert "<script" not in page and "<b>" not in page
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $x$/m" in page  # the models table
    legend = re.findall(r"<svg.*?</svg>", page, re.S)[-1]  # the confidence chart
    assert "&lt;script&gt;alert(1)&lt;/script&gt; $x$/m" in legend
    # Self-contained: nothing is fetched, every reference is inside the page.
    assert re.findall(r'(?:src|href)="(?!#)', page) == []
    assert "1 gate(s) were closed by a service, not a person" in text(page)


def test_a_chain_that_does_not_verify_is_named_with_its_problem() -> None:
    problems = [
        Problem(workflow_id="wf-1", seq=3, event_id="e3", kind="edited", detail="hash differs"),
        Problem(workflow_id="", seq=0, event_id="", kind="guard_missing", detail="no trigger"),
    ]
    stats = _stats(_run("wf-1", datetime(2026, 3, 2, 9, tzinfo=UTC)), problems)
    assert not stats.verified and stats.chains_verified == 0

    page = text(render_period_html(stats))
    assert "Chain verification: FAILED for 1 of 1 run(s) and 1 finding(s) about the store" in page
    assert "wf-1 3 edited hash differs" in page
    assert "(the store) — guard_missing no trigger" in page


def test_the_page_renders_with_its_charts_in_headless_chromium(tmp_path: Path) -> None:
    chromium = shutil.which("chromium")
    if chromium is None:
        pytest.fail("chromium is not installed: run `apt-get install chromium` (Debian)")
    store = open_store(AuditSettings.from_env().url)
    start = datetime(2026, 3, 2, 8, tzinfo=UTC)
    for n in range(60):
        store.append(synthetic_run(n, start + timedelta(hours=8 * n)), retention_days=183)
    page = tmp_path / "period.html"
    write_period_report(
        store, page, process="document_intake", since=start, until=start + timedelta(days=28)
    )
    shot = tmp_path / "period.png"
    done = subprocess.run(
        [
            chromium,
            "--headless",
            *CHROMIUM_ARGS,
            f"--user-data-dir={tmp_path / 'chromium-profile'}",
            "--window-size=1280,2400",
            f"--screenshot={shot}",
            page.as_uri(),
        ],
        capture_output=True,
        text=True,
        timeout=180,
        check=False,
    )
    assert shot.exists(), f"no screenshot (exit {done.returncode}): {done.stderr[-2000:]}"
    image = Image.open(shot).convert("RGB")
    assert image.size == (1280, 2400)
    rows = {image.crop((0, y, 1280, y + 1)).tobytes() for y in range(image.height)}
    assert len(rows) > 300, "the screenshot looks blank"
    # The volume chart's bars are drawn: its colours are in no style of the page.
    colours = Counter(image.get_flattened_data())
    assert colours[(43, 138, 62)] > 1000  # auto-entered, green
    assert colours[(28, 126, 214)] > 500  # reviewed, blue
