"""Acts reach the trail when they happen, and `baton audit reconcile` finds a trail
that lacks what Temporal's history shows the run did."""

from __future__ import annotations

import asyncio
import logging
import sqlite3
from collections import Counter
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.events import AuditRecord
from baton.audit.period import write_period_report
from baton.audit.period_summary import started_at
from baton.audit.reconcile import (
    SCHEDULE_ID,
    ReconcileSummary,
    findings_chain,
    reconcile,
    record_findings,
)
from baton.audit.reports import write_report
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.audit.store_schema import _SQLITE_SCHEMA
from baton.cli import main
from baton.client import DecisionRefused, decide, decide_in_turn
from baton.gates import Decision
from baton.server import EmbeddedServer
from tests.conftest import SAMPLES
from tests.helpers import eventually, settled, start_intake
from tests.test_audit_period import section, text

FOUR_EYES = SAMPLES / "invoice-brightline-bl-88317.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"


def trail(workflow_id: str) -> list[AuditRecord]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


async def test_a_first_approval_stays_in_the_trail_when_the_run_is_terminated(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, FOUR_EYES)
    await settled(client, handle.id)
    first = await decide(client, handle.id, Decision(gate="review", user="rita", outcome="approve"))
    assert first.awaiting == 1, "four-eyes: a controller must approve too"

    await handle.terminate("an operator ends it before the second approval")

    async def approvals() -> list[AuditRecord]:
        return [r for r in trail(handle.id) if r.event_type == "gate.approval"]

    (approval,) = await eventually(approvals, bool, timeout=5)
    assert approval.actor is not None and approval.actor.id == "rita"
    assert approval.data["awaiting"] == 1
    (result,) = await reconcile(
        client, open_store(AuditSettings.from_env().url), workflow_id=handle.id
    )
    assert result.ok, result.differences
    assert result.notes == ["terminated from outside Baton: its trail ends without run.ended"]


def delete_records(workflow_id: str, *, event_type: str = "", event_id: str = "") -> None:
    """As an insider would: the delete guard dropped, the rows deleted, the guard back."""
    url = AuditSettings.from_env().url
    conn = sqlite3.connect(url.removeprefix("sqlite:///"), isolation_level=None)
    conn.execute("DROP TRIGGER audit_records_no_delete")
    store = open_store(url)
    seqs = [
        (r.seq,)
        for r in store.records(workflow_id)
        if r.event_type == event_type or r.event_id == event_id
    ]
    conn.executemany(
        "DELETE FROM audit_records WHERE seq = ? AND workflow_id ="
        " (SELECT MIN(id) FROM audit_runs WHERE workflow_id = ?)",
        [(seq, workflow_id) for (seq,) in seqs],
    )
    for statement in _SQLITE_SCHEMA:
        conn.execute(statement)
    conn.close()


async def reviewed_run(client: Client, task_queue: str) -> str:
    handle = await start_intake(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    await decide_in_turn(
        client, handle.id, [Decision(gate="review", user="rita", outcome="approve")]
    )
    assert (await handle.result()).outcome == "completed"
    return handle.id


async def test_reconcile_names_a_decision_and_an_attempt_missing_from_the_trail(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    workflow_id = await reviewed_run(client, task_queue)
    store = open_store(AuditSettings.from_env().url)
    (clean,) = await reconcile(client, store, workflow_id=workflow_id)
    assert clean.ok and clean.notes == [], clean.differences

    entered = [
        r for r in trail(workflow_id) if r.event_type == "activity.attempt" and r.node == "enter"
    ]
    delete_records(workflow_id, event_type="gate.decided")
    delete_records(workflow_id, event_id=entered[0].event_id)

    (result,) = await reconcile(client, store, workflow_id=workflow_id)

    assert not result.ok
    assert "history delivered 1 decide act(s) by update; the trail records 0" in result.differences
    assert any(
        d.startswith(f"activity {entered[0].data['activity_id']} completed (attempt 1)")
        for d in result.differences
    )


async def test_a_runs_own_events_are_named_by_what_they_record(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """A counter shifted every later id when one trail call went missing, so the
    store skipped real events as known. Ids named by meaning shift nothing."""
    workflow_id = await reviewed_run(time_skipping_env.client, task_queue)
    records = [r for r in trail(workflow_id) if f"{r.run_id}/w/" in r.event_id]
    ids = {r.event_type: r.event_id.split("/w/", 1)[1] for r in records}

    decided = next(r for r in records if r.event_type == "gate.decided")
    nonce = decided.data["signature"]["nonce"]
    assert ids["gate.decided"] == f"gate.decided/review/r1/{nonce}"
    assert ids["gate.opened"] == "gate.opened/review/r1"
    extracted = [r for r in records if r.event_type == "node.finished" and r.node == "extract"]
    assert [r.event_id.split("/w/", 1)[1] for r in extracted] == ["node.finished/extract/v1"]
    assert ids["run.started"] == "run.started"
    assert ids["ai.inference"].startswith("ai.inference/extract/v1/attempt")
    assert len({r.event_id for r in records}) == len(records)


async def test_baton_audit_reconcile_reports_and_exits_non_zero(
    dev_server: EmbeddedServer,
    dev_client: Client,
    dev_worker: Worker,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)
    workflow_id = await reviewed_run(dev_client, task_queue)
    # In a thread: the CLI runs its own event loop.
    assert await asyncio.to_thread(main, ["audit", "reconcile", workflow_id]) == 0
    assert "the trail agrees; 1 new finding(s) recorded" in capsys.readouterr().out

    delete_records(workflow_id, event_type="gate.decided")

    assert await asyncio.to_thread(main, ["audit", "reconcile", workflow_id]) == 1
    out = capsys.readouterr().out
    assert f"{workflow_id}: DIFFERS" in out
    assert "history delivered 1 decide act(s) by update; the trail records 0" in out
    # Each pass is in the trail, for the reports: it agreed, then it differed.
    found = trail(findings_chain(workflow_id))
    assert [f.event_type for f in found] == ["audit.reconciled", "audit.reconcile_difference"]
    assert all(f.run_id.startswith("cli-") and f.data["history"] == "closed" for f in found)


async def test_a_schedule_reconciles_and_records_what_differs(
    dev_server: EmbeddedServer,
    dev_client: Client,
    dev_worker: Worker,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    monkeypatch.setenv("TEMPORAL_ADDRESS", dev_server.address)
    monkeypatch.setenv("BATON_TASK_QUEUE", task_queue)
    agrees = await reviewed_run(dev_client, task_queue)
    differs = await reviewed_run(dev_client, task_queue)
    delete_records(differs, event_type="gate.decided")

    command = ["audit", "reconcile", "--schedule", "12h", "--window-days", "1"]
    assert await asyncio.to_thread(main, command) == 0
    assert f"created Temporal Schedule '{SCHEDULE_ID}': every 12:00:00" in capsys.readouterr().out
    schedule = dev_client.get_schedule_handle(SCHEDULE_ID)
    try:
        await schedule.trigger()

        async def started() -> list[str]:
            described = await schedule.describe()
            return [a.action.workflow_id for a in described.info.recent_actions]  # type: ignore[attr-defined]

        (pass_id,) = await eventually(started, bool)
        handle = dev_client.get_workflow_handle(pass_id, result_type=ReconcileSummary)
        summary = await handle.result()
        pass_run = (await handle.describe()).run_id
    finally:
        await schedule.delete()

    assert differs in summary.differing and agrees not in summary.differing
    (finding,) = trail(findings_chain(differs))
    assert finding.event_type == "audit.reconcile_difference"
    assert finding.data["run"] == differs and finding.run_id == pass_run
    assert (
        "history delivered 1 decide act(s) by update; the trail records 0"
        in (finding.data["differences"])
    )
    (agreed,) = trail(findings_chain(agrees))
    assert agreed.event_type == "audit.reconciled" and agreed.data["differences"] == []


def test_an_attempt_that_started_and_never_ended_is_named() -> None:
    from datetime import UTC, datetime

    from baton.audit.events import AuditEvent, seal
    from baton.audit.reconcile import HistoryFacts, compare

    at = datetime(2026, 12, 2, tzinfo=UTC)

    def record(seq: int, event_type: str, attempt: int) -> AuditRecord:
        event = AuditEvent(
            event_id=f"wf/a/ask/{attempt}/{event_type}",
            workflow_id="wf",
            event_type=event_type,
            occurred_at=at,
            data={"activity_id": "extract#1.1", "attempt": attempt, "local": False},
        )
        return seal(event, seq=seq, prev_hash="", recorded_at=at, retain_until=at)

    records = [
        record(1, "activity.started", 1),
        record(2, "activity.started", 2),
        record(3, "activity.attempt", 2),
    ]
    facts = HistoryFacts(frozenset({("extract#1.1", 2)}), Counter(), None)

    result = compare("wf", facts, records)

    assert result.ok
    assert result.notes == [
        "activity extract#1.1 attempt 1 started and never ended: its worker was lost, and "
        "Temporal ran it again"
    ]


async def test_a_difference_is_an_alert_and_a_finding_in_both_reports(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
    caplog: pytest.LogCaptureFixture,
) -> None:
    client = time_skipping_env.client
    differs = await reviewed_run(client, task_queue)
    agrees = await reviewed_run(client, task_queue)
    never = await reviewed_run(client, task_queue)
    audit = AuditSettings.from_env()
    store = open_store(audit.url)
    delete_records(differs, event_type="gate.decided")
    results = [
        *await reconcile(client, store, workflow_id=differs),
        *await reconcile(client, store, workflow_id=agrees),
    ]
    spans = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(spans))
    now = datetime.now(UTC)

    def a_pass(pass_id: str) -> list[str]:
        with provider.get_tracer("test").start_as_current_span(pass_id):
            recorded = record_findings(
                store,
                results,
                pass_id=pass_id,
                at=now,
                retention_days=audit.retention_days,
                anchors=audit.anchors(write=True),
            )
        return [r.workflow_id for r in recorded]

    with caplog.at_level(logging.ERROR, logger="baton.audit"):
        assert a_pass("pass-1") == [findings_chain(differs), findings_chain(agrees)]
        # The same result again is not recorded again, but it is an alert on every pass.
        assert a_pass("pass-2") == []

    lost = "history delivered 1 decide act(s) by update; the trail records 0"
    alerts = [r for r in caplog.records if r.name == "baton.audit.reconcile"]
    assert [r.levelno for r in alerts] == [logging.ERROR, logging.ERROR]
    assert differs in alerts[0].getMessage() and lost in alerts[0].getMessage()
    for span in spans.get_finished_spans():
        (event,) = span.events
        assert event.name == "baton.audit.reconcile_difference"
        assert event.attributes is not None and event.attributes["baton.workflow_id"] == differs

    runs = [differs, agrees, never]
    out = tmp_path / "runs.html"
    write_report(store, runs, out, fmt="html", anchors=audit.anchors(write=True))
    page = out.read_text(encoding="utf-8")
    told = {run: text(part) for run, part in zip(runs, page.split('class="run"')[1:], strict=True)}
    assert "Reconciled with Temporal DIFFERS" in told[differs]
    assert f"closed DIFFERS {lost}" in told[differs] and "pass-1" in told[differs]
    assert "Reconciled with Temporal agrees" in told[agrees] and "closed agrees —" in told[agrees]
    assert "Not reconciled yet: no pass of `baton audit reconcile`" in told[never]

    starts = [started_at(store.records(run)) for run in runs]
    stats = write_period_report(
        store,
        tmp_path / "period.html",
        process="document_intake",
        since=min(starts) - timedelta(hours=1),
        until=max(starts) + timedelta(hours=1),
    )
    assert (stats.reconcile_agrees, stats.not_reconciled) == (1, 1)
    (difference,) = stats.reconcile_differs
    assert (difference.workflow_id, difference.pass_id) == (differs, "pass-1")
    assert lost in difference.differences
    summary = text(section((tmp_path / "period.html").read_text(encoding="utf-8"), "reconcile"))
    assert "Reconcile: 1 run(s) differ from Temporal's history" in summary
    assert "Reconciled 2 of 3 run(s) Agree with Temporal 1 Differ 1 Not reconciled yet 1" in summary
    assert f"{differs} " in summary and lost in summary


async def test_a_refused_act_cannot_shape_its_event_id(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """A refused decision names any gate its sender likes; its id stays short and plain."""
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    hostile = "../" * 400 + "review/r1#2"
    with pytest.raises(DecisionRefused):
        await decide(client, handle.id, Decision(gate=hostile, user="rita", outcome="approve"))

    async def refusals() -> list[AuditRecord]:
        return [r for r in trail(handle.id) if r.event_type == "decision.refused"]

    (refused,) = await eventually(refusals, bool, timeout=5)
    meaning = refused.event_id.split("/w/", 1)[1]
    assert meaning.startswith("decision.refused/") and len(meaning) <= 100
    assert "#" not in meaning and "/" not in meaning.removeprefix("decision.refused/")
