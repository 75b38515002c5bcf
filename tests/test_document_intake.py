"""Document intake end to end on Temporal's time-skipping test server."""

from __future__ import annotations

import json
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton import search
from baton.audit.events import AuditRecord
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.cli import format_status
from baton.client import (
    DecisionRefused,
    StartError,
    build_input,
    decide,
    run_status,
    sign_decision,
    start_run,
)
from baton.compensation import COMPENSATE_IN_FLIGHT
from baton.config import RunConfig, load_run_config
from baton.document_store import document_store
from baton.gates import Decision
from baton.nodes.gate import CLOCKLESS_GATE_VIEW, GATE_STATES_WHY
from baton.runner import RUN_WIDE_CHANGES_1, RunResult
from systems.erp import DocumentRegister
from tests.conftest import SAMPLES
from tests.helpers import WORKER_CONFIG, search_attributes, settled, start_intake
from worker import build_worker
from workflows.document_intake import DocumentIntake, IntakeRequest

CLEAN = SAMPLES / "invoice-acme-2026-0142.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"
FOUR_EYES = SAMPLES / "invoice-brightline-bl-88317.txt"
WITH_PO = SAMPLES / "invoice-nordlicht-re-2026-311.txt"


def trail(workflow_id: str) -> list[AuditRecord]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


async def start(
    client: Client, queue: str, path: Path, by: str = "clerk-1"
) -> WorkflowHandle[Any, RunResult]:
    return await start_intake(client, queue, path, by=by)


def approve(gate: str = "review", user: str = "rita", comment: str = "checked") -> Decision:
    return Decision(gate=gate, user=user, outcome="approve", comment=comment)


async def test_clean_document_is_entered_and_the_skipped_review_is_visible(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    handle = await start(time_skipping_env.client, task_queue, CLEAN)
    result = await handle.result()

    assert result.outcome == "completed"
    assert result.path == ["load", "extract", "duplicates", "validate", "enter"]
    assert result.outputs["duplicates"] == {"entries": []}
    assert result.skipped == {"review": "condition needs_review was false"}
    assert result.outputs["extract"]["doc_type"] == "invoice"
    entries = DocumentRegister().entries(handle.id)
    assert len(entries) == 1
    assert entries[0]["entry_id"] == result.outputs["enter"]["entry_id"]
    status = await run_status(time_skipping_env.client, handle.id)
    extract = next(n for n in status.nodes if n.node == "extract")
    assert extract.meta["provider"] == "offline"
    assert extract.meta["confidence_method"] == "rules_coverage"


async def test_doubtful_document_waits_for_review_then_approval_enters_it(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    status = await settled(client, handle.id)

    assert status.state == "waiting"
    assert status.current == ["review"]
    gate = status.gates[0]
    assert gate.roles == ["reviewer"]
    assert gate.due_at == gate.opened_at + timedelta(hours=24)
    assert any("total" in f["message"] for f in gate.shown["findings"])
    assert gate.shown["subject"]["output"]["doc_type"] == "invoice"
    attributes = await search_attributes(client, handle.id)
    assert attributes.get(search.PENDING_ROLES.name) == ["reviewer"]
    assert attributes.get(search.STATUS.name) == "waiting"
    assert attributes.get(search.NODE.name) == "review"
    assert DocumentRegister().entries(handle.id) == []

    accepted = await decide(client, handle.id, approve(comment="total confirmed by phone"))
    assert (accepted.user, accepted.role, accepted.outcome) == ("rita", "reviewer", "approve")
    result = await handle.result()
    assert result.outcome == "completed"
    assert result.outputs["review"]["comment"] == "total confirmed by phone"
    assert len(DocumentRegister().entries(handle.id)) == 1
    attributes = await search_attributes(client, handle.id)
    assert attributes.get(search.STATUS.name) == "completed"
    assert not attributes.get(search.PENDING_ROLES.name)


async def test_a_reviewer_is_told_every_reason_the_run_is_at_review(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """The gate said "Validation findings: None." and a confidence of 0.66, not
    the 0.8 threshold nor the fields the extractor could not find."""
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    status = await settled(client, handle.id)

    why = status.gates[0].shown["why"]
    confidence = status.gates[0].shown["subject"]["confidence"]
    assert why == [
        "check failed: total is missing (missing_field)",
        f"extraction confidence {confidence:.2f} is below the threshold 0.80 "
        "(measured by rules_coverage)",
        "the extractor could not find: total",
    ]
    assert f"  why: {why[1]}" in format_status(status).splitlines()
    (opened,) = [r for r in trail(handle.id) if r.event_type == "gate.opened"]
    assert opened.data["shown"]["why"] == why
    # What the reviewer was shown is what a decision signs: the reasons included.
    await decide(client, handle.id, approve())
    (decided,) = [r for r in trail(handle.id) if r.event_type == "gate.decided"]
    assert decided.data["shown"]["why"] == why


async def test_four_eyes_is_a_reason_of_its_own(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, FOUR_EYES)
    status = await settled(client, handle.id)

    output = status.gates[0].shown["subject"]["output"]
    assert (output["total"], output["currency"]) == ("13336.4", "USD")
    assert status.gates[0].roles == ["reviewer", "controller"]
    assert status.gates[0].shown["why"] == [
        "the total 13,336.40 USD is at or above 10,000: two people approve it"
    ]


async def test_a_run_says_which_graph_it_ran(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    handle = await start(time_skipping_env.client, task_queue, CLEAN)
    await handle.result()

    status = await run_status(time_skipping_env.client, handle.id)
    assert status.graph_digest == DocumentIntake.graph.digest()
    assert f"graph {status.graph_digest}" in format_status(status)
    (started,) = [r for r in trail(handle.id) if r.event_type == "run.started"]
    assert started.data["graph_digest"] == status.graph_digest


async def test_a_new_run_takes_the_run_wide_changes_under_one_patch(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    # Each patch a run takes is a history event and an upsert of a search
    # attribute. The recorded histories, which took the older three one by
    # one, replay as they were (tests/test_replay.py).
    handle = await start(time_skipping_env.client, task_queue, CLEAN)
    await handle.result()

    patches = [
        json.loads(marker.details["patch-data"].payloads[0].data)["id"]
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and (marker := event.marker_recorded_event_attributes).marker_name == "core_patch"
    ]
    assert RUN_WIDE_CHANGES_1 in patches
    assert not {CLOCKLESS_GATE_VIEW, GATE_STATES_WHY, COMPENSATE_IN_FLIGHT} & set(patches)


async def test_a_run_snapshots_the_routes_of_its_own_tasks_only(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    # The routing file routes every process's tasks; a run keeps in its
    # history the routes it can take, with the tiers and providers they name.
    client = time_skipping_env.client
    handle = await start(client, task_queue, CLEAN)
    await handle.result()

    markers = [
        event.marker_recorded_event_attributes
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_MARKER_RECORDED
        and event.marker_recorded_event_attributes.marker_name == "core_local_activity"
    ]
    (taken,) = await client.data_converter.decode(markers[0].details["result"].payloads)
    snapshot = RunConfig.model_validate(taken)
    assert DocumentIntake.graph.routed_tasks() == ["extract_fields"]
    assert set(snapshot.routing.tasks) == {"extract_fields"}
    files = WORKER_CONFIG()
    everything = files.routing
    assert len(everything.tasks) > 1
    route = everything.tasks["extract_fields"]
    assert set(snapshot.routing.tiers) == set(route.cascade) - {"human"}
    assert snapshot.routing.providers == {
        name: everything.providers[name]
        for name in {c.provider for t in snapshot.routing.tiers.values() for c in t.candidates}
    }
    # The files it was taken from are named as before.
    assert snapshot.digest == files.digest


async def test_rejection_ends_the_run_without_entering_anything(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    await decide(client, handle.id, Decision(gate="review", user="rita", outcome="reject"))

    result = await handle.result()
    assert result.outcome == "rejected"
    assert result.skipped == {"enter": "the run was rejected at a gate"}
    assert DocumentRegister().entries(handle.id) == []


@pytest.mark.parametrize(
    ("decision", "reason"),
    [
        (
            approve(gate="approval"),
            "this process has no gate 'approval' (its gates: extract, review)",
        ),
        (approve(user="carl"), "user 'carl' (clerk) may not decide gate 'review'; it needs one of"),
        (approve(user="mallory"), "unknown user 'mallory'"),
        (approve(user="sam"), "user 'sam' requested this run and may not decide its gates"),
    ],
)
async def test_refused_decisions_say_why_and_change_nothing(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    decision: Decision,
    reason: str,
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL, by="sam")
    await settled(client, handle.id)

    with pytest.raises(DecisionRefused) as refused:
        await decide(client, handle.id, decision)
    assert reason in refused.value.reason
    status = await run_status(client, handle.id)
    assert status.state == "waiting"
    assert status.gates[0].decision is None
    # Every refusal is judged in the update handler, so it is in the status
    # (and the trail), a gate the process does not have included.
    assert [(r.channel, r.user, r.reason) for r in status.refusals] == [
        ("update", decision.user, refused.value.reason)
    ]


async def test_a_finished_run_refuses_further_decisions(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    await decide(client, handle.id, approve())
    result = await handle.result()

    with pytest.raises(DecisionRefused, match=r"has already ended \(completed\)"):
        await decide(client, handle.id, approve(user="sam"))
    assert result.outputs["review"]["user"] == "rita"
    with pytest.raises(DecisionRefused, match="there is no run 'no-such-run': check the id"):
        await decide(client, "no-such-run", approve(user="sam"))


async def test_refused_signal_is_recorded_and_a_valid_signal_decides(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)

    await handle.signal("decide", await sign_decision(client, handle.id, approve(user="carl")))
    status = await run_status(client, handle.id)
    assert status.state == "waiting"
    assert [(r.channel, r.user) for r in status.refusals] == [("signal", "carl")]
    assert "may not decide gate 'review'" in status.refusals[0].reason

    await handle.signal("decide", await sign_decision(client, handle.id, approve()))
    result = await handle.result()
    assert result.outcome == "completed"
    assert result.outputs["review"]["user"] == "rita"


async def test_sla_escalates_to_supervisor_and_never_approves_by_itself(
    own_clock: WorkflowEnvironment, task_queue: str
) -> None:
    async with build_worker(own_clock.client, task_queue=task_queue, run_config=WORKER_CONFIG):
        await sla_escalates_and_never_approves(own_clock, task_queue)


async def sla_escalates_and_never_approves(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)

    await time_skipping_env.sleep(timedelta(hours=23))
    status = await run_status(client, handle.id)
    assert status.gates[0].escalations == []

    await time_skipping_env.sleep(timedelta(hours=1, minutes=1))
    status = await run_status(client, handle.id)
    gate = status.gates[0]
    assert [e.to_role for e in gate.escalations] == ["supervisor"]
    assert gate.roles == ["reviewer", "supervisor"]
    attributes = await search_attributes(client, handle.id)
    assert attributes.get(search.PENDING_ROLES.name) == ["reviewer", "supervisor"]

    await time_skipping_env.sleep(timedelta(days=30))
    status = await run_status(client, handle.id)
    assert status.state == "waiting"
    assert status.gates[0].decision is None
    assert status.gates[0].holding
    assert DocumentRegister().entries(handle.id) == []

    await decide(client, handle.id, approve(user="sam"))
    result = await handle.result()
    assert result.outputs["review"]["role"] == "reviewer"


async def test_a_document_gone_from_the_store_fails_visibly_and_the_worker_carries_on(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    request = build_input(DocumentIntake, [str(CLEAN)], requested_by="clerk-1")
    assert isinstance(request, IntakeRequest)
    document_store().path_of(request.document.sha256).unlink()
    handle = await start_run(client, DocumentIntake, request, task_queue=task_queue)
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "node 'load' failed: the document store at" in str(failure.value.cause)
    status = await run_status(client, handle.id)
    assert status.state == "failed"
    assert next(n for n in status.nodes if n.node == "load").status == "failed"

    after = await start(client, task_queue, CLEAN)
    assert (await after.result()).outcome == "completed"


def test_an_oversized_file_is_refused_before_any_run_starts(tmp_path: Path) -> None:
    big = tmp_path / "huge.txt"
    big.write_bytes(b"INVOICE 1.00\n" * (20 * 1024 * 1024 // 13))
    with pytest.raises(StartError) as refused:
        build_input(DocumentIntake, [str(big)], requested_by="clerk-1")
    assert "is 20.0 MiB; documents may be at most 1.0 MiB" in str(refused.value)
    assert "BATON_MAX_DOCUMENT_BYTES" in str(refused.value)
    assert not document_store().root.exists(), "nothing was stored"


async def test_a_reference_over_the_workers_limit_fails_unread(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    request = build_input(DocumentIntake, [str(CLEAN)], requested_by="clerk-1")
    monkeypatch.setenv("BATON_MAX_DOCUMENT_BYTES", "100")
    handle = await start_run(
        time_skipping_env.client, DocumentIntake, request, task_queue=task_queue
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "documents may be at most 100 bytes" in str(failure.value.cause)


@pytest.mark.parametrize(
    ("content", "problem"),
    [(b"", "the file is empty"), (bytes(range(256)) * 64, "the file is binary, not text")],
    ids=["empty", "binary"],
)
async def test_unusable_content_stops_at_review_with_the_reason(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
    content: bytes,
    problem: str,
) -> None:
    doc = tmp_path / "scan.txt"
    doc.write_bytes(content)
    client = time_skipping_env.client
    handle = await start(client, task_queue, doc)
    status = await settled(client, handle.id)
    assert status.state == "waiting"
    findings = status.gates[0].shown["findings"]
    assert {"code": "unreadable", "message": problem} in findings
    assert status.gates[0].shown["subject"]["confidence"] == 0.0


async def test_every_event_of_a_run_is_in_its_audit_chain_including_cancellation(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    with pytest.raises(DecisionRefused):
        await decide(client, handle.id, approve(user="carl"))
    await handle.cancel()
    with pytest.raises(WorkflowFailureError):
        await handle.result()

    store = open_store(AuditSettings.from_env().url)
    records = store.records(handle.id)
    assert store.verify(handle.id).ok
    kinds = [(r.event_type, r.node) for r in records]
    assert kinds.count(("run.started", None)) == 1
    assert ("config.snapshot", None) in kinds
    assert ("routing.decided", "extract") in kinds
    assert ("ai.inference", "extract") in kinds
    assert ("gate.opened", "review") in kinds
    refused = next(r for r in records if r.event_type == "decision.refused")
    assert refused.actor is not None and refused.actor.id == "carl"
    assert "may not decide gate 'review'" in refused.data["reason"]
    ended = [r for r in records if r.event_type == "run.ended"]
    assert [r.data["outcome"] for r in ended] == ["cancelled"]
    attempts = {r.data["activity_type"] for r in records if r.event_type == "activity.attempt"}
    assert {"snapshot_run_config", "load_document", "ask", "validate_document"} <= attempts


async def test_the_same_invoice_twice_stops_the_second_run_at_review_naming_the_first(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    """Submitted again under another workflow id, the invoice was entered a
    second time without a word. Now the reviewer is told, and decides: a
    suspected duplicate is never rejected by itself."""
    client = time_skipping_env.client
    first = await start(client, task_queue, CLEAN)
    entered = (await first.result()).outputs["enter"]["entry_id"]

    second = await start(client, task_queue, CLEAN)
    status = await settled(client, second.id)

    assert status.state == "waiting" and status.current == ["review"]
    assert status.gates[0].shown["why"] == [
        "check failed: invoice ACME-2026-0142 of ACME Industrial Supply B.V. is already in "
        f"the ERP as entry #{entered} (ACME-2026-0142, dated 2026-03-14, 4,434.05 EUR, entered "
        f"{DocumentRegister().entries(first.id)[0]['entered_at']}) (duplicate_number)"
    ]
    assert DocumentRegister().entries(second.id) == []

    await decide(client, second.id, approve(comment="a second delivery, billed again"))
    result = await second.result()
    assert result.outcome == "completed"
    assert len(DocumentRegister().entries(second.id)) == 1


async def test_a_renumbered_copy_within_the_window_is_a_suspected_duplicate(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    first = await start(client, task_queue, CLEAN)
    entered = (await first.result()).outputs["enter"]["entry_id"]
    renumbered = tmp_path / "invoice-acme-renumbered.txt"
    text = CLEAN.read_text(encoding="utf-8")
    renumbered.write_text(
        text.replace("ACME-2026-0142", "ACME-2026-0150").replace("2026-03-14", "2026-03-20"),
        encoding="utf-8",
    )

    second = await start(client, task_queue, renumbered)
    status = await settled(client, second.id)

    [why] = status.gates[0].shown["why"]
    assert why.startswith(f"check failed: entry #{entered} (ACME-2026-0142) of ACME Industrial")
    assert "dated 2026-03-14, within 14 days of 2026-03-20" in why
    assert why.endswith("(duplicate_amount_and_date)")


async def test_the_configured_window_is_the_one_the_run_started_with(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    await (await start(client, task_queue, CLEAN)).result()
    config = load_run_config()
    WORKER_CONFIG.config = config.model_copy(
        update={"thresholds": {**config.thresholds, "duplicate_window_days": 3}}
    )
    renumbered = tmp_path / "invoice-acme-renumbered.txt"
    text = CLEAN.read_text(encoding="utf-8")
    renumbered.write_text(
        text.replace("ACME-2026-0142", "ACME-2026-0150").replace("2026-03-14", "2026-03-20"),
        encoding="utf-8",
    )

    result = await (await start(client, task_queue, renumbered)).result()
    assert result.outcome == "completed", "six days apart: outside a window of three"


async def test_the_erp_entry_keeps_the_po_number_the_document_states(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    handle = await start(time_skipping_env.client, task_queue, WITH_PO)
    result = await handle.result()

    assert result.outcome == "completed"
    assert result.outputs["extract"]["po_number"] == "BW-2026-044"
    [entry] = DocumentRegister().entries(handle.id)
    assert entry["po_number"] == "BW-2026-044"
