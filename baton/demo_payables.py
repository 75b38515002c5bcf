"""The demo's accounts payable part: the sample invoices of
``samples/accounts_payable`` through the ``accounts_payable`` process.

The reference systems (vendor master, purchase orders, goods receipts,
ledger) start from the sample seed on every demo. The demo's people act as
the AP team would: approvers take what the approval matrix routes to them,
a treasurer releases payments, the warehouse books the receipt one invoice
waits for and tells its run. Exceptions are left for a clerk: those runs
wait in the inbox. Each run is checked against ``expected.toml``.
"""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from pathlib import Path

from temporalio.client import Client

from activities.matching import masked_iban
from baton.client import decide_in_turn, run_status, send_event
from baton.demo_outcomes import Row, Samples
from baton.gates import Decision
from baton.keys import Signer
from baton.outside import ExternalEvent
from baton.runner import RunResult, RunStatus
from systems.payables_db import PayablesSystem
from systems.payables_seed import deliver_late_receipts, load_seed

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "accounts_payable"
REQUESTER = "mailroom"
WAREHOUSE = "warehouse"
TREASURER = "tess"
# Who approves in each role the approval matrix names.
APPROVERS = {"ap_approver": "anna", "budget_owner": "bob", "it_budget_owner": "ivan"}
CONTROLLER = "vera"
PEOPLE = (REQUESTER, WAREHOUSE, TREASURER, CONTROLLER, *APPROVERS.values())


def reset_systems(seed: Path = SAMPLES / "seed.toml") -> None:
    """The AP reference systems as the seed describes them, afresh: a second
    demo must not find the first one's invoices as duplicates."""
    PayablesSystem().empty()
    load_seed(seed)


async def _through(
    client: Client, workflow_id: str, row: Row, signers: Mapping[str, Signer]
) -> tuple[str, str]:
    status = await _until_still(client, workflow_id)
    if "receipt" in status.current:
        order = str(row["po_number"])
        if not deliver_late_receipts(SAMPLES / "seed.toml", order):
            return "awaiting_receipt", _awaiting(status)
        news = ExternalEvent(event="goods_receipt", user=WAREHOUSE, key=order)
        await send_event(client, workflow_id, news, signers[WAREHOUSE])
        status = await _until_still(client, workflow_id, past="receipt")
    gate = next((g for g in status.gates if g.decision is None), None)
    if gate is not None and gate.gate == "exception_review":
        return "exception_review", "held for a clerk: " + "; ".join(gate.shown["why"])
    if gate is None or gate.gate != "approve":
        return status.state, f"stopped at {', '.join(status.current) or 'nothing'}"
    approvers = [APPROVERS.get(role, CONTROLLER) for role in gate.roles]
    await decide_in_turn(
        client,
        workflow_id,
        [Decision(gate="approve", user=u, outcome="approve", comment="matches") for u in approvers],
        signers,
    )
    note = f"approved by {' and '.join(approvers)} ({', '.join(gate.roles)})"
    status = await _until_still(client, workflow_id, past="approve")
    if "release" in status.current:
        release = Decision(gate="release", user=TREASURER, outcome="approve", comment="released")
        await decide_in_turn(client, workflow_id, [release], signers)
        note += f"; released by {TREASURER}"
    handle = client.get_workflow_handle(workflow_id, result_type=RunResult)
    result = await handle.result()
    payment = (result.outputs.get("pay") or {}).get("payment")
    if payment is not None:
        account = masked_iban(payment["iban"])
        paid = f"paid {payment['amount']} {payment['currency']} to {account}"
        return "paid", f"{note}; {paid}"
    return "credit_recorded", f"{note}; recorded, set off against the next payment"


INVOICES = Samples(
    "accounts_payable",
    SAMPLES / "expected.toml",
    "invoice",
    folder=SAMPLES / "invoices",
    requested_by=REQUESTER,
    reach=_through,
)
run_payables = INVOICES.run


def _awaiting(status: RunStatus) -> str:
    record = next(r for r in status.nodes if r.node == "receipt")
    return f"waits for its goods receipt until {record.meta.get('until')}, then exception review"


async def _until_still(client: Client, workflow_id: str, past: str = "") -> RunStatus:
    """Poll until the run waits for a person or an event, or has ended;
    ``past``: not at that node any more."""
    while True:
        status = await run_status(client, workflow_id)
        moved_on = past not in status.current
        busy = status.state in ("starting", "running") and "receipt" not in status.current
        if moved_on and not busy:
            return status
        await asyncio.sleep(0.1)
