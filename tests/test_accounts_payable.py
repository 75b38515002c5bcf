"""Accounts payable end to end, on the time-skipping server with the seeded
reference systems: every sample stops where expected.toml says, approvals
follow the matrix, the three people are three, a receipt is awaited, and a
payment goes out once, to the vendor master's account."""

from __future__ import annotations

import asyncio
import tomllib
import uuid
from pathlib import Path
from typing import Any

import pytest
from temporalio import activity
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import ActivityInboundInterceptor, ExecuteActivityInput, Interceptor

from baton.client import (
    DecisionRefused,
    build_input,
    decide,
    run_status,
    send_event,
    start_run,
)
from baton.config import load_run_config
from baton.gates import Decision
from baton.outside import ExternalEvent
from baton.runner import RunResult, RunStatus
from systems.ledger import Payments
from systems.payables_seed import deliver_late_receipts, load_seed
from systems.purchasing import VendorMaster
from tests.conftest import ROOT, WorkerProcess
from tests.helpers import STARTED, WORKER_CONFIG, eventually, settled
from worker import build_worker
from workflows.accounts_payable import RECEIPT_EVENT, AccountsPayable

AP = ROOT / "samples" / "accounts_payable"
SEED = AP / "seed.toml"
EXPECTED = {
    row["file"]: row for row in tomllib.loads((AP / "expected.toml").read_text())["invoice"]
}


@pytest.fixture(autouse=True)
def seeded(isolated_data: Path) -> None:
    load_seed(SEED)


async def start(client: Client, queue: str, sample: str) -> WorkflowHandle[Any, RunResult]:
    """A run for ``sample``, an invoice of the samples or a file's path."""
    request = build_input(AccountsPayable, [str(AP / "invoices" / sample)], requested_by="mailroom")
    handle = await start_run(
        client,
        AccountsPayable,
        request,
        task_queue=queue,
        workflow_id=f"ap-{sample[:5]}-{uuid.uuid4().hex[:6]}",
    )
    STARTED.append(handle)
    return handle


def approve(gate: str, user: str, comment: str = "checked") -> Decision:
    return Decision(gate=gate, user=user, outcome="approve", comment=comment)


async def refusal(client: Client, workflow_id: str, decision: Decision) -> str:
    with pytest.raises(DecisionRefused) as refused:
        await decide(client, workflow_id, decision)
    return refused.value.reason


async def waiting_at(client: Client, workflow_id: str, gate: str) -> RunStatus:
    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: gate in s.current and s.state == "waiting",
    )


def open_gate(status: RunStatus) -> Any:
    [gate] = [g for g in status.gates if g.decision is None]
    return gate


async def test_every_sample_stops_where_expected_toml_says(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Left alone, each run waits for its goods receipt (those the seed has
    not received yet; the tests below deliver one or let the wait run out),
    at its exception review (with each finding the table lists among its
    reasons), or at the approvers the matrix names."""
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        handles = {name: await start(client, task_queue, name) for name in sorted(EXPECTED)}
        statuses = {
            name: await eventually(
                lambda h=handle: run_status(client, h.id),
                lambda s: s.state == "waiting" or "receipt" in s.current,
            )
            for name, handle in handles.items()
        }
    for name, status in statuses.items():
        row = EXPECTED[name]
        if row["match"] == "awaiting_receipt":
            assert status.current == ["receipt"], name
            continue
        gate = open_gate(status)
        if row["outcome"] == "exception_review":
            assert gate.gate == "exception_review", name
            why = " ".join(gate.shown["why"])
            for code in [*row["duplicate"], *row["findings"]]:
                assert f"({code})" in why, (name, code, why)
        else:
            assert (gate.gate, gate.roles) == ("approve", row["approval"]), name


async def test_a_clean_invoice_is_approved_recorded_released_and_paid_once(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        handle = await start(client, task_queue, "ap-01-acme-clean-3way.txt")
        status = await waiting_at(client, handle.id, "approve")
        gate = open_gate(status)
        assert gate.roles == ["budget_owner"]
        assert "approval matrix rule 4" in gate.shown["approvers"]["rule"]
        # The AI and the run's own requester never approve.
        assert "may not decide" in await refusal(client, handle.id, approve("approve", "alex"))
        await decide(client, handle.id, approve("approve", "bob"))
        await waiting_at(client, handle.id, "release")
        await decide(client, handle.id, approve("release", "tess", "released"))
        result = await handle.result()
    assert result.outcome == "completed"
    invoice_id = result.outputs["record"]["invoice_id"]
    [payment] = Payments().for_invoice(invoice_id)
    vendor = VendorMaster().get("V-1001")
    assert vendor is not None
    assert (payment["iban"], payment["released_by"]) == (vendor["iban"], "tess")
    assert result.outputs["reconcile"]["reconciled"] is True


async def test_above_the_limit_two_roles_approve_and_a_credit_note_is_never_paid(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        large = await start(client, task_queue, "ap-18-acme-large-four-eyes.txt")
        credit = await start(client, task_queue, "ap-12-kestrel-credit-note.txt")
        await waiting_at(client, large.id, "approve")
        first = await decide(client, large.id, approve("approve", "bob"))
        assert first.awaiting == 1
        await decide(client, large.id, approve("approve", "vera"))
        await waiting_at(client, large.id, "release")
        await decide(client, large.id, approve("release", "tess"))
        await waiting_at(client, credit.id, "approve")
        await decide(client, credit.id, approve("approve", "anna"))
        large_result, credit_result = await large.result(), await credit.result()
    assert large_result.outputs["approve"]["approved_by"] == ["bob", "vera"]
    assert "release" in credit_result.skipped and "pay" in credit_result.skipped
    credit_id = credit_result.outputs["record"]["invoice_id"]
    assert Payments().for_invoice(credit_id) == []
    assert credit_result.outputs["reconcile"]["reconciled"] is True


async def test_who_approved_an_invoice_may_not_release_its_payment(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Tess approves small invoices and releases payments: never both for one."""
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        handle = await start(client, task_queue, "ap-02-brightline-clean-small.txt")
        await waiting_at(client, handle.id, "approve")
        assert "is a service" in await refusal(client, handle.id, approve("approve", "robot"))
        await decide(client, handle.id, approve("approve", "tess"))
        await waiting_at(client, handle.id, "release")
        refused = await refusal(client, handle.id, approve("release", "tess"))
        assert "decided an earlier gate of this run" in refused
        await decide(client, handle.id, approve("release", "paul"))
        result = await handle.result()
    assert result.outputs["release"]["user"] == "paul"


class _ReceiptArrivesDuringMatch(ActivityInboundInterceptor):
    """While the first match of the run is still running (it has read no
    receipt), the warehouse books the receipt and tells the run: the news
    arrives before the run reaches its Await."""

    client: Client

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        result = await super().execute_activity(input)
        info = activity.info()
        if info.activity_type == "match_lines" and info.activity_id == "match#1":
            deliver_late_receipts(SEED, "PO-4500-1006")
            news = ExternalEvent(event=RECEIPT_EVENT, user="warehouse", key="PO-4500-1006")
            await send_event(self.client, info.workflow_id, news)
        return result


class ReceiptDuringMatch(Interceptor):
    def __init__(self, client: Client) -> None:
        self.client = client

    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        inbound = _ReceiptArrivesDuringMatch(next)
        inbound.client = self.client
        return inbound


async def test_a_receipt_that_arrives_before_the_run_reaches_its_await_is_taken(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(
        client, task_queue=task_queue, interceptors=[ReceiptDuringMatch(client)]
    ):
        handle = await start(client, task_queue, "ap-06-nordlicht-receipt-arrives-later.txt")
        status = await waiting_at(client, handle.id, "approve")
    records = {r.node: r for r in status.nodes}
    # The first match found no receipt; the Await took the news it already
    # held; the match ran again and read the receipt, so the Await's second
    # visit had nothing to wait for.
    [news] = status.events
    assert (news.key, news.taken_by) == ("PO-4500-1006", "receipt#1")
    assert records["match"].visits == 2 and records["match"].output["outcome"] == "matched"
    assert (records["receipt"].visits, records["receipt"].status) == (2, "skipped")
    assert open_gate(status).roles == ["ap_approver"]


async def test_a_receipt_that_never_comes_goes_to_exception_review_after_the_wait(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        handle = await start(client, task_queue, "ap-07-nordlicht-receipt-never-arrives.txt")
        await eventually(lambda: run_status(client, handle.id), lambda s: "receipt" in s.current)
        # Awaiting the result lets the test server skip time while the run
        # waits: past the 5 days, to the review gate, where the clerk rejects
        # it. (A result call cancelled instead left the server's clock locked
        # for the tests after.)
        ending = asyncio.ensure_future(handle.result())
        status = await waiting_at(client, handle.id, "exception_review")
        rejection = Decision(
            gate="exception_review", user="alex", outcome="reject", comment="no goods"
        )
        await decide(client, handle.id, rejection)
        assert (await ending).outcome == "rejected"
        receipt = next(r for r in status.nodes if r.node == "receipt")
    why = open_gate(status).shown["why"]
    assert "no goods receipt arrived within 5 days of waiting" in why
    assert receipt.output["timed_out"] is True
    assert receipt.output["waited_seconds"] == pytest.approx(5 * 86400, abs=1)


async def test_a_receipt_delivered_while_the_run_waits_releases_it(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        handle = await start(client, task_queue, "ap-06-nordlicht-receipt-arrives-later.txt")
        await eventually(lambda: run_status(client, handle.id), lambda s: "receipt" in s.current)
        # News about another order is kept but does not release this run.
        other = ExternalEvent(event=RECEIPT_EVENT, user="warehouse", key="PO-4500-1007")
        await send_event(client, handle.id, other)
        assert "receipt" in (await run_status(client, handle.id)).current
        deliver_late_receipts(SEED, "PO-4500-1006")
        news = ExternalEvent(event=RECEIPT_EVENT, user="warehouse", key="PO-4500-1006")
        await send_event(client, handle.id, news)
        status = await waiting_at(client, handle.id, "approve")
    assert {r.node: r.visits for r in status.nodes}["match"] == 2


async def test_a_blank_tolerance_fails_the_run_at_once_naming_the_setting(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    config = load_run_config()
    broken = config.model_copy(deep=True)
    broken.policies["payables"]["tolerances"]["price_pct"] = " "
    WORKER_CONFIG.config = broken
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue, run_config=WORKER_CONFIG):
        handle = await start(client, task_queue, "ap-01-acme-clean-3way.txt")
        status = await settled(client, handle.id)
    assert status.state == "failed"
    assert status.error is not None
    assert "[policies.payables].tolerances.price_pct is blank" in status.error


async def test_a_worker_killed_between_payment_and_its_completion_pays_once(
    dev_client: Client, worker_env: dict[str, str], task_queue: str
) -> None:
    first = WorkerProcess(worker_env | {"BATON_TEST_HOLD_AFTER": "pay_invoice"})
    try:
        handle = await start(dev_client, task_queue, "ap-02-brightline-clean-small.txt")
        await waiting_at(dev_client, handle.id, "approve")
        await decide(dev_client, handle.id, approve("approve", "anna"))
        await waiting_at(dev_client, handle.id, "release")
        await decide(dev_client, handle.id, approve("release", "tess"))
        hold = Path(worker_env["BATON_TEST_HOLD_FILE"])

        async def held() -> bool:
            return hold.exists()

        await eventually(held, bool, timeout=60)
    finally:
        first.kill()
    second = WorkerProcess(worker_env)
    try:
        result = await handle.result()
    finally:
        second.kill()
    assert result.outcome == "completed"
    payments = Payments().for_invoice(result.outputs["record"]["invoice_id"])
    assert len(payments) == 1, "the retried payment found the first instead of paying again"
    assert result.outputs["pay"]["created"] is False
    assert result.outputs["reconcile"]["findings"] == []


async def test_two_invoices_matched_at_once_cannot_both_bill_what_was_open(
    time_skipping_env: WorkflowEnvironment, task_queue: str, tmp_path: Path
) -> None:
    """Each bills the 40 still open on a PO line; both match against the same
    60 invoiced before. The first recorded takes the 40; the second finds
    the line billed since its match, records nothing and fails, saying so."""
    text = (AP / "invoices" / "ap-15-kestrel-partial-invoicing.txt").read_text()
    twin = tmp_path / "ap-15-twin.txt"
    twin.write_text(text.replace("KLS-2026-0347", "KLS-2026-0348"))
    client = time_skipping_env.client
    async with build_worker(client, task_queue=task_queue):
        first = await start(client, task_queue, "ap-15-kestrel-partial-invoicing.txt")
        second = await start(client, task_queue, str(twin))
        # Both matched (each waits for approval) before either is recorded.
        for handle in (first, second):
            await waiting_at(client, handle.id, "approve")
        await decide(client, first.id, approve("approve", "anna"))
        await waiting_at(client, first.id, "release")
        await decide(client, second.id, approve("approve", "anna"))
        status = await settled(client, second.id)
    assert status.state == "failed"
    assert status.error is not None and "another invoice billed it since" in status.error
    assert "nothing was recorded" in status.error.lower()
