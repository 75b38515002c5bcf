"""The demo's customer renewal part: one cycle of the ``customer_renewal``
process for each account of ``samples/customer_renewal``.

The CRM starts from the sample seed on every demo, and a run a previous
demo left waiting for its next review is stopped first (one run per
account). The waits are shortened by configuration, the worker's run
config, to seconds; the process is not touched. The demo's people act as
``expected.toml`` says: the account's CSM approves or edits the
recommendation, and the mail webhook reports the replies the customers
send. Each run ends its cycle waiting for the next review, and is checked
against ``expected.toml``.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from temporalio.client import Client

from baton.client import decide, run_status, send_event, start_run, stop_run
from baton.config import RunConfig, load_run_config
from baton.demo_outcomes import Outcome
from baton.gates import Decision, StopRequest
from baton.keys import Signer
from baton.outside import ExternalEvent
from baton.runner import RunResult, RunStatus

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "customer_renewal"
SCHEDULER = "crm"
WEBHOOK = "mailhook"
LEAD = "colin"
PEOPLE = (SCHEDULER, WEBHOOK, LEAD, "cora")
# Seconds instead of days, so that a customer's silence costs the demo
# seconds; the next review stays as configured, where each run then waits.
SHORT_WAIT_DAYS = 3 / 86_400
SHORTENED = ("reply_wait_days", "follow_up_wait_days")


def demo_run_config() -> RunConfig:
    """The configuration files as every run snapshots them, with the
    renewal's waits for replies shortened to seconds."""
    config = load_run_config()
    renewal = {**config.policies.get("renewal", {}), **dict.fromkeys(SHORTENED, SHORT_WAIT_DAYS)}
    return config.model_copy(update={"policies": {**config.policies, "renewal": renewal}})


async def run_renewals(
    client: Client, *, task_queue: str, signers: Mapping[str, Signer]
) -> list[Outcome]:
    from systems.crm import Crm, load_seed
    from workflows.customer_renewal import CustomerRenewal, RenewalRequest, renewal_workflow_id

    rows = tomllib.loads((SAMPLES / "expected.toml").read_text(encoding="utf-8"))["account"]
    requests = [
        RenewalRequest(account_id=row["account_id"], requested_by=SCHEDULER) for row in rows
    ]
    await asyncio.gather(
        *(_stop_earlier(client, renewal_workflow_id(r), signers[LEAD]) for r in requests)
    )
    crm = Crm()
    crm.reset()
    load_seed(SAMPLES / "seed.toml", crm)
    handles = [
        await start_run(
            client, CustomerRenewal, request, task_queue=task_queue, signer=signers[SCHEDULER]
        )
        for request in requests
    ]
    return list(
        await asyncio.gather(
            *(_cycle(client, h.id, row, signers) for h, row in zip(handles, rows, strict=True))
        )
    )


async def _stop_earlier(client: Client, workflow_id: str, lead: Signer) -> None:
    try:
        status = await run_status(client, workflow_id)
    except LookupError:
        return
    if status.state in ("running", "waiting"):
        reason = "a new demo starts the account's renewal afresh"
        await stop_run(client, workflow_id, StopRequest(user=LEAD, reason=reason), lead)
        await client.get_workflow_handle(workflow_id, result_type=RunResult).result()


class _Ended(Exception):
    """The run ended (failed, stopped) where the demo expected it to wait."""


async def _cycle(
    client: Client, workflow_id: str, row: Mapping[str, Any], signers: Mapping[str, Signer]
) -> Outcome:
    try:
        reached, note = await _through(client, workflow_id, row, signers)
    except _Ended as ended:
        reached, note = str(ended), "the run ended before its cycle did"
    return Outcome(row["account_id"], workflow_id, row["outcome"], reached, note)


async def _through(
    client: Client, workflow_id: str, row: Mapping[str, Any], signers: Mapping[str, Signer]
) -> tuple[str, str]:
    """Where the cycle ended (the CRM's outcome), and what happened on the way."""
    from systems.crm import Crm

    status = await _until(client, workflow_id, lambda s: s.state == "waiting")
    gate = next(g for g in status.gates if g.decision is None)
    proposed = gate.shown["subject"]["output"]
    csm = gate.assignees[0]
    note = f"{gate.shown['why'][0]}; proposed {proposed['action']}"
    if row["csm"] == "edit":
        edited = {**proposed, "action": row["action"], "reasons": [row["reason"]]}
        decision = Decision(
            gate="approve", user=csm, outcome="approve", comment=row["reason"], output=edited
        )
        note += f"; {csm} (csm) changed it to {row['action']}: {row['reason']}"
    else:
        decision = Decision(gate="approve", user=csm, outcome="approve", comment="agreed")
        note += f"; {csm} (csm) approved it"
    await decide(client, workflow_id, decision, signers[csm])
    await _until(client, workflow_id, lambda s: "reply" in s.current)
    news = ExternalEvent(
        event="customer.replied", user=WEBHOOK, key=row["account_id"], data={"via": "demo"}
    )
    if row["customer"] == "replies":
        await send_event(client, workflow_id, news, signers[WEBHOOK])
    elif row["customer"] == "replies_after_follow_up":
        await _until(client, workflow_id, lambda s: "follow_up_reply" in s.current)
        await send_event(client, workflow_id, news, signers[WEBHOOK])
    status = await _until(client, workflow_id, lambda s: "next_review" in s.current)
    emails = Crm().emails(row["account_id"])
    [*_, outcome] = Crm().outcomes(row["account_id"])
    sent = " and ".join(f"{e['kind'].replace('_', '-')} '{e['subject']}'" for e in emails)
    until = next(r for r in status.nodes if r.node == "next_review").meta["until"]
    reached = outcome["outcome"]
    if proposed["action"] != row["proposed"]:
        reached += f", but the rules proposed {proposed['action']}, not {row['proposed']}"
    return reached, f"{note}; sent {sent}; next review {until[:10]}"


async def _until(
    client: Client, workflow_id: str, accept: Callable[[RunStatus], bool]
) -> RunStatus:
    while True:
        status = await run_status(client, workflow_id)
        if status.state not in ("starting", "running", "waiting"):
            raise _Ended(status.error or status.state)
        if accept(status):
            return status
        await asyncio.sleep(0.1)
