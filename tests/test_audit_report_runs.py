"""The per-run HTML report over real runs of document intake on Temporal's time-skipping
server, written the way `baton audit export <id> --format html` writes it: what an auditor
reads for a four-eyes approval, a stop, a refusal, an override and a hostile document."""

from __future__ import annotations

import html
import re
from pathlib import Path

import pytest
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.causal import causal_order
from baton.audit.events import AuditRecord
from baton.audit.reports import write_report
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import DecisionRefused, decide, decide_in_turn, stop_run
from baton.gates import Decision, StopRequest
from tests.conftest import SAMPLES
from tests.helpers import eventually, settled, start_intake

LARGE = SAMPLES / "invoice-brightline-bl-88317.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"


def approve(user: str, comment: str = "checked", **extra: object) -> Decision:
    return Decision(gate="review", user=user, outcome="approve", comment=comment, **extra)


def records_of(workflow_id: str) -> list[AuditRecord]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


def report_of(workflow_id: str, out: Path) -> str:
    store = open_store(AuditSettings.from_env().url)
    assert write_report(store, [workflow_id], out, fmt="html").ok
    return out.read_text(encoding="utf-8")


def text(fragment: str) -> str:
    """What a reader sees of an HTML fragment: tags dropped, entities read, spaces folded."""
    return " ".join(html.unescape(re.sub(r"<[^>]+>", " ", fragment)).split())


def acts(page: str) -> list[str]:
    """The oversight acts of the report, as read, in the order shown."""
    return [text(a) for a in re.findall(r'<article class="act[^"]*">(.*?)</article>', page, re.S)]


def checks(page: str) -> dict[str, str]:
    """Each check's label -> its row as read (result and evidence)."""
    table = re.search(r'<table class="checks">(.*?)</table>', page, re.S)
    assert table is not None, "the report has no checks"
    rows = re.findall(r"<tr><td>(.*?)</td>(.*?)</tr>", table.group(1), re.S)
    return {text(label): text(rest) for label, rest in rows}


def timeline(page: str) -> list[tuple[int, str, str]]:
    """(seq, event type, node) of each timeline row, top to bottom."""
    table = re.search(r'<table class="timeline">(.*?)</table>', page, re.S)
    assert table is not None
    rows = re.findall(
        r'<tr><td class="num">\d+</td><td class="num">(\d+)</td><td>[^<]*</td>'
        r"<td><code>([^<]+)</code></td><td>([^<]*)</td>",
        table.group(1),
    )
    return [(int(seq), kind, node) for seq, kind, node in rows]


def stamp(record: AuditRecord) -> str:
    """How the report prints a record's time."""
    at = record.occurred_at
    return at.strftime("%Y-%m-%d %H:%M:%S.") + f"{at.microsecond // 1000:03d} UTC"


async def test_a_four_eyes_run_shows_both_approvers_refusals_in_words_and_causal_order(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE, by="clerk-1")
    await settled(client, handle.id)
    with pytest.raises(DecisionRefused):
        await decide(client, handle.id, approve("clerk-1", "my own invoice"))
    await decide(client, handle.id, approve("rita", "matches the contract"))
    with pytest.raises(DecisionRefused):
        await decide(client, handle.id, approve("rita", "again"))
    await decide(client, handle.id, approve("vera", "budget confirmed"))
    assert (await handle.result()).outcome == "completed"

    records = records_of(handle.id)
    page = report_of(handle.id, tmp_path / "report.html")
    first = next(r for r in records if r.event_type == "gate.approval")
    second = next(r for r in records if r.event_type == "gate.decided")

    shown = acts(page)
    assert len(shown) == 4
    own, rita, twice, vera = shown
    assert (
        "clerk-1 (clerk; identity not proven) tried to approve gate “review” through the "
        "update channel. The run refused it and changed nothing."
    ) in own
    assert "may not decide gate 'review'" in own and "“my own invoice”" in own
    assert f"{stamp(first)} seq {first.seq} rita reviewer gate review approval 1 of 2" in rita
    assert "rita (reviewer) approved gate “review” (round 1): approval 1 of 2; 1 more" in rita
    assert "Comment “matches the contract”" in rita
    assert "rita (reviewer; identity not proven) tried to approve gate “review”" in twice
    assert "has already approved gate 'review'" in twice
    assert "vera controller gate review approval 2 of 2: gate approved" in vera
    assert stamp(second) in vera and "approval 2 of 2, after rita; the gate is approved" in vera
    # What they saw: the document by reference and the AI's fields, once per view.
    assert "Document invoice-brightline-bl-88317.txt · 1,060 bytes" in rita
    assert "party Brightline Software LLC" in rita and "total 13336.4" in rita
    assert "Confidence 1.00 (rules_coverage)" in rita
    assert (
        "Why a person decides the total 13,336.40 USD is at or above 10,000: two people approve it"
    ) in rita
    assert "The same view as the act at seq" in vera

    found = checks(page)
    assert found["The requester is not an approver"].startswith("pass")
    assert "approvers: rita (reviewer; seq" in found["The requester is not an approver"]
    assert "clerk-1's own attempt was refused" in found["The requester is not an approver"]
    four_eyes = found["Under four-eyes, two distinct people approved"]
    assert four_eyes.startswith("pass") and "rita (reviewer; seq" in four_eyes
    assert "then vera (controller; seq" in four_eyes
    effect = next(v for k, v in found.items() if k.startswith("Every AI output"))
    assert effect.startswith("pass")
    assert "was approved at gate “review” by rita, vera" in effect
    assert all(not row.startswith("FAIL") for row in found.values()), found

    # Causal order: the start first, the approvals before the ERP entry they allowed.
    rows = timeline(page)
    kinds = [(kind, node) for _, kind, node in rows]
    assert kinds[0] == ("run.started", "—") and kinds[-1] == ("run.ended", "—")
    assert kinds.index(("gate.decided", "review")) < kinds.index(("node.started", "enter"))
    assert kinds.index(("node.started", "enter")) < kinds.index(("activity.attempt", "enter"))
    assert kinds.index(("activity.attempt", "enter")) < kinds.index(("node.finished", "enter"))
    # ...which is not the store's order: seq stays visible to cross-check with verify.
    seqs = [seq for seq, _, _ in rows]
    assert sorted(seqs) == [r.seq for r in records] and seqs != sorted(seqs)
    assert [r.seq for r in causal_order(records)] == seqs


async def test_a_four_eyes_run_terminated_after_the_first_approval_shows_that_approval(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, LARGE)
    await settled(client, handle.id)
    await decide(client, handle.id, approve("rita", "fine by me"))

    async def trail() -> list[AuditRecord]:
        return records_of(handle.id)

    await eventually(trail, lambda rs: any(r.event_type == "gate.approval" for r in rs))
    await handle.terminate(reason="operator pulled the plug")

    page = report_of(handle.id, tmp_path / "report.html")
    (rita,) = acts(page)
    assert "rita (reviewer) approved gate “review” (round 1): approval 1 of 2" in rita
    found = checks(page)
    four_eyes = found["Under four-eyes, two distinct people approved"]
    assert (
        four_eyes.startswith("pass") and "awaiting approval 2 of 2 when the trail ends" in four_eyes
    )
    assert found["Run end recorded"].startswith("FAIL")
    assert "Approved by</dt><dd>rita (reviewer)</dd>" in page


async def test_a_stopped_run_shows_who_stopped_it_and_why_and_a_refused_stop_in_words(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL)
    await settled(client, handle.id)
    with pytest.raises(DecisionRefused):
        await stop_run(client, handle.id, StopRequest(user="rita", reason="looks odd"))
    await stop_run(client, handle.id, StopRequest(user="ada", reason="vendor under fraud check"))
    assert (await handle.result()).outcome == "stopped"

    page = report_of(handle.id, tmp_path / "report.html")
    refused, stopped = acts(page)
    assert "stop refused" in refused
    assert (
        "rita (reviewer; identity not proven) tried to stop the run (reason given: "
        "“looks odd”) through the update channel."
    ) in refused
    assert "ada admin stopped the run" in stopped
    assert "ada (admin) stopped the run through the update channel." in stopped
    assert "Reason “vendor under fraud check”" in stopped
    assert "steps undone: none" in stopped and "Not run review, enter" in stopped
    assert "Outcome</dt><dd>stopped" in page


async def test_an_override_shows_each_changed_field_with_the_ai_and_reviewer_values(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    handle = await start_intake(client, task_queue, MISSING_TOTAL)
    status = await settled(client, handle.id)
    edited = dict(status.gates[0].shown["subject"]["output"])
    edited.update(total="2029.90", party="Pinecrest Print and Design Co.")
    await decide_in_turn(client, handle.id, [approve("rita", "total from the PDF", output=edited)])
    assert (await handle.result()).outcome == "completed"

    page = report_of(handle.id, tmp_path / "report.html")
    override, decision = acts(page)
    assert "rita (reviewer) replaced the AI output of “extract” at gate “review”." in override
    assert "Reason “total from the PDF”" in override
    diff = re.search(r'<table class="diff">(.*?)</table>', page, re.S)
    assert diff is not None
    rows = [
        [text(cell) for cell in re.findall(r"<td>(.*?)</td>", row, re.S)]
        for row in re.findall(r"<tr>(.*?)</tr>", diff.group(1), re.S)[1:]
    ]
    assert rows == [
        ["party", "Pinecrest Print & Design Co.", "Pinecrest Print and Design Co."],
        ["total", "(empty)", "2029.90"],
    ]
    assert "2 field(s) changed" in override
    assert "Output the reviewer's edit (override at seq" in decision


async def test_a_hostile_vendor_name_and_file_name_are_shown_as_text(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    hostile = "<script>alert(1)</script><img src=x onerror=alert(2)> Pinecrest"
    lines = MISSING_TOTAL.read_text(encoding="utf-8").splitlines()
    document = tmp_path / "in" / "inv<img src=x onerror=alert(3)>.txt"
    document.parent.mkdir()
    document.write_text("\n".join([lines[0], f"Vendor: {hostile}", *lines[1:]]), encoding="utf-8")
    client: Client = time_skipping_env.client
    handle = await start_intake(client, task_queue, document)
    status = await settled(client, handle.id)
    assert status.gates[0].shown["subject"]["output"]["party"] == hostile
    await decide(client, handle.id, approve("rita", "</td><b>bold</b>"))
    await handle.result()

    page = report_of(handle.id, tmp_path / "report.html")
    lowered = page.lower()
    assert "<script" not in lowered and "<img" not in lowered and "<b>bold" not in lowered
    assert html.escape(hostile, quote=True) in page
    assert "inv&lt;img src=x onerror=alert(3)&gt;.txt" in page
    assert "“&lt;/td&gt;&lt;b&gt;bold&lt;/b&gt;”" in page
    assert f"party {hostile}" in acts(page)[0]
