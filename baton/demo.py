"""The demo: document intake over the sample documents, accounts payable
over the sample invoices, one renewal cycle of each sample customer
account, the onboarding of each sample hire and a response to each sample
RFP, on the embedded server.

It starts the embedded Temporal server (unless one already answers at
TEMPORAL_ADDRESS) and a worker, starts one run per sample, and plays the
people: document-intake runs that stop at the review gate are decided by a
named user through the same `decide` update the CLI uses, and a supervisor
stops the run whose document talks to the AI; accounts payable runs go as
:mod:`baton.demo_payables` says, renewal runs as :mod:`baton.demo_renewal`
says, onboarding runs as :mod:`baton.demo_onboarding` says, RFP runs as
:mod:`baton.demo_rfp` says (with each bid's coverage matrix). Then it prints
each run's outcome, Web UI link and audit report, writes the period
reports, and stops what it started unless asked to keep it. It fails (exit
code 1) when an invoice, an account or a hire does not end where the
``expected.toml`` of its samples says.
"""

from __future__ import annotations

import asyncio
import os
import re
import shutil
from collections.abc import Mapping, Sequence
from dataclasses import replace
from datetime import UTC, datetime, timedelta
from pathlib import Path

from temporalio.client import Client, WorkflowFailureError

from baton import demo_onboarding as onboarding
from baton import demo_payables as payables
from baton import demo_renewal as renewal
from baton import demo_rfp as rfp
from baton.accounts import add_key
from baton.audit.period import write_period_report
from baton.audit.reports import describe, write_report
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import build_input, connect, decide_in_turn, run_status, start_run, stop_run
from baton.codec import ensure_payload_key
from baton.config import DIRECTORY_ENV, Settings, directory_path
from baton.demo_outcomes import print_outcomes, report_astray
from baton.gates import Decision, GateState, Outcome, StopRequest, reasons_of
from baton.keys import Signer
from baton.runner import RunResult, RunStatus
from baton.server import EmbeddedServer, port_is_open, stop_requested, ui_codec_endpoint
from systems.erp import default_path as erp_path

REQUESTER = "mailroom"
REVIEWER = "rita"
CONTROLLER = "vera"
SUPERVISOR = "sam"
# The demo reviewer sends back what no one could enter (no text, not a known
# document type, too little read to trust); anything else a person can fix.
REJECT_WHEN = {"unreadable", "unknown_type", "duplicate_number"}
REJECT_BELOW_CONFIDENCE = 0.5
# A document that tries to instruct the AI is a matter for a supervisor: the
# run is stopped, and whatever it had done is undone.
STOP_WHEN = {"suspected_instructions"}


async def run_demo(settings: Settings, *, samples: Path, keep_running: bool) -> int:
    from worker import build_worker
    from workflows.document_intake import DocumentIntake

    # Only a demo that keeps running owns Ctrl-C; otherwise Ctrl-C aborts it.
    stop = stop_requested() if keep_running else None
    files = sorted(p for p in samples.iterdir() if p.is_file())
    if not files:
        raise ValueError(f"no sample documents in {samples}")
    server: EmbeddedServer | None = None
    host, _, port = settings.address.rpartition(":")
    if port_is_open(host or "127.0.0.1", int(port)):
        print(f"using the Temporal server already running at {settings.address}")
    else:
        server = EmbeddedServer(
            db_file=settings.data_dir / "temporal.db",
            port=int(port),
            ui_port=int(port) + 1000,
            # Payloads are encrypted: the UI reads them through the inbox.
            codec_endpoint=ui_codec_endpoint(),
        )
        await server.start()
        settings = replace(settings, ui_url=server.ui_url or settings.ui_url)
        print(f"started the embedded Temporal server: {settings.address}, UI {server.ui_url}")
    signers = local_identities(
        settings.data_dir,
        tuple(
            dict.fromkeys(
                (
                    REQUESTER,
                    REVIEWER,
                    CONTROLLER,
                    SUPERVISOR,
                    *payables.PEOPLE,
                    *renewal.PEOPLE,
                    *onboarding.PEOPLE,
                    *rfp.PEOPLE,
                )
            )
        ),
        via="demo",
    )
    # The demo's systems of record start from their seed (the ERP empty) each
    # time: a second demo would otherwise find every sample a duplicate.
    erp_path().unlink(missing_ok=True)
    payables.reset_systems()
    onboarding.reset_systems()
    rfp.reset_systems()
    # Made once, in the data dir: every payload of the demo's runs is encrypted with it.
    ensure_payload_key(settings.data_dir)
    try:
        client = await connect(settings)
        started = datetime.now(UTC)
        async with build_worker(
            client, task_queue=settings.task_queue, run_config=renewal.demo_run_config
        ):
            handles = []
            for path in files:
                request = build_input(DocumentIntake, [str(path)], requested_by=REQUESTER)
                handles.append(
                    await start_run(
                        client,
                        DocumentIntake,
                        request,
                        task_queue=settings.task_queue,
                        signer=signers[REQUESTER],
                    )
                )
            print(f"started {len(handles)} document-intake runs, each signed by {REQUESTER}\n")
            invoices = asyncio.ensure_future(
                payables.run_payables(client, task_queue=settings.task_queue, signers=signers)
            )
            renewals = asyncio.ensure_future(
                renewal.run_renewals(client, task_queue=settings.task_queue, signers=signers)
            )
            hires = asyncio.ensure_future(
                onboarding.run_onboarding(client, task_queue=settings.task_queue, signers=signers)
            )
            bids = asyncio.ensure_future(
                rfp.run_rfps(client, task_queue=settings.task_queue, signers=signers)
            )
            outcomes = await asyncio.gather(
                *(_review_and_finish(client, h.id, signers) for h in handles)
            )
            paid = await invoices
            reviewed = await renewals
            onboarded = await hires
            answered = await bids
            audit = AuditSettings.from_env(settings)
            store = open_store(audit.url)
            graph = DocumentIntake.graph.mermaid()
            for path, handle, outcome in zip(files, handles, outcomes, strict=True):
                report_path = settings.data_dir / "reports" / f"{handle.id}.html"
                report = write_report(
                    store,
                    [handle.id],
                    report_path,
                    fmt="html",
                    mermaid_for=lambda process: graph,
                    min_retention_days=audit.min_retention_days,
                )
                print(
                    f"{path.name}\n    {outcome}\n    {settings.run_url(handle.id)}\n"
                    f"    audit report {report_path}: {describe(report)}"
                )
            for process in (
                "document_intake",
                "accounts_payable",
                "customer_renewal",
                "hr_onboarding",
                "rfp_response",
            ):
                period_path = settings.data_dir / "reports" / f"period-{process}.html"
                period = write_period_report(
                    store, period_path, process=process, since=started - timedelta(minutes=1)
                )
                print(
                    f"\nperiod report {period_path}: {period.runs} runs; "
                    f"`baton audit report --process {process} --since DATE` writes it again"
                )
            for title, checked in (
                ("accounts payable (samples/accounts_payable/expected.toml)", paid),
                ("customer renewal (samples/customer_renewal/expected.toml)", reviewed),
                ("HR onboarding (samples/hr_onboarding/expected.toml)", onboarded),
                ("RFP response (samples/rfp_response/expected.toml)", answered.outcomes),
            ):
                print_outcomes(title, checked, settings.run_url)
            rfp.print_matrices(answered)
            # What `baton audit verify` checks: the chains and the signed checkpoints.
            anchors = audit.anchors(write=False)
            everything = anchors.verify(store) if anchors else store.verify()
            print(f"\nbaton audit verify: {describe(everything)}")
            if stop is not None:
                print(f"\nserver and worker keep running (Web UI {settings.ui_url}); Ctrl-C stops")
                print(
                    f"to act as a demo user from another shell: "
                    f"BATON_KEYS_DIR={settings.data_dir / 'keys'} baton approve ... --as rita"
                )
                print(
                    "payloads are encrypted: to read them in the Web UI, run `baton inbox "
                    "serve`, sign in as ada (admin) and follow what it prints"
                )
                await stop.wait()
    finally:
        if server is not None:
            server.stop()
    astray = [
        report_astray(what, checked)
        for what, checked in (
            ("invoice", paid),
            ("account", reviewed),
            ("hire", onboarded),
            ("RFP", answered.outcomes),
        )
    ]
    return 1 if any(astray) else 0


def local_identities(data_dir: Path, users: Sequence[str], *, via: str) -> dict[str, Signer]:
    """Signers for ``users`` with keys made on first use in ``<data dir>/keys``
    (never in the repository), and a copy of the directory in the data dir
    that lists their public keys; BATON_DIRECTORY names the copy, for this
    process's worker and the workers it starts. For the demo and benchmarks."""
    folder = data_dir / "keys"
    signers = {user: Signer.load_or_create(user, folder, via=via) for user in users}
    directory = data_dir / "directory.toml"
    data_dir.mkdir(parents=True, exist_ok=True)
    source = directory_path()
    if source.resolve() != directory.resolve():
        shutil.copyfile(source, directory)
        # It holds the password hashes too.
        directory.chmod(0o600)
    for signer in signers.values():
        add_key(directory, signer.user, signer.public_key)
    os.environ[DIRECTORY_ENV] = str(directory)
    return signers


async def _review_and_finish(
    client: Client, workflow_id: str, signers: Mapping[str, Signer]
) -> str:
    status = await _until_settled(client, workflow_id)
    review_note = "review skipped: checks passed, confident extraction"
    if status.state == "waiting":
        review = next(g for g in status.gates if g.decision is None)
        review_note = await _act_on(client, workflow_id, review, signers)
    try:
        result = await client.get_workflow_handle(workflow_id, result_type=RunResult).result()
    except WorkflowFailureError as err:
        return f"FAILED: {err.cause}"
    if result.outcome in ("rejected", "stopped"):
        return f"{result.outcome}; {review_note}"
    entry = result.outputs.get("enter") or {}
    return f"entered as ERP #{entry.get('entry_id')}; {review_note}"


async def _act_on(
    client: Client, workflow_id: str, review: GateState, signers: Mapping[str, Signer]
) -> str:
    """Decide or stop the run at ``review`` as the demo's people would; says what they did."""
    codes = {f["code"] for f in review.shown.get("findings") or []} | {
        code for reason in reasons_of(review.shown) for code in re.findall(r"\((\w+)\)$", reason)
    }
    if codes & STOP_WHEN:
        reason = "the document tells the AI to pay a new account: held for a fraud check"
        request = StopRequest(user=SUPERVISOR, reason=reason)
        stopped = await stop_run(client, workflow_id, request, signers[SUPERVISOR])
        return f"{stopped.user} ({stopped.role}) stopped it: {reason}"
    confidence = float(review.shown.get("subject", {}).get("confidence", 0.0))
    unusable = bool(codes & REJECT_WHEN) or confidence < REJECT_BELOW_CONFIDENCE
    outcome: Outcome = "reject" if unusable else "approve"
    comment = ", ".join([*sorted(codes), f"confidence {confidence:.2f}"])
    large = "large amount: a second approval (four-eyes)"
    accepted = await decide_in_turn(
        client,
        workflow_id,
        [
            Decision(gate=review.gate, user=REVIEWER, outcome=outcome, comment=comment),
            Decision(gate=review.gate, user=CONTROLLER, outcome="approve", comment=large),
        ],
        signers,
    )
    note = f"{REVIEWER} (reviewer) chose {outcome}: {comment}"
    if len(accepted) > 1:
        note += f"; {CONTROLLER} (controller) approved too: {large}"
    return note


async def _until_settled(client: Client, workflow_id: str) -> RunStatus:
    """Poll until the run waits for a person or has ended."""
    while True:
        status = await run_status(client, workflow_id)
        if status.state not in ("starting", "running"):
            return status
        await asyncio.sleep(0.1)
