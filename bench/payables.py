"""Accounts payable end to end: `python -m bench.payables --runs 100`.

Runs the sample invoices that go straight to approval and payment (outcome
"paid" in samples/accounts_payable/expected.toml, no awaited receipt) through
the accounts_payable process on the embedded server, with the offline model
and the audited worker started as a user would (`python -m bench.worker
baton`). The approvers the approve gate's roles name decide it (as
baton.demo_payables does), then the treasurer releases the payment; every run
must end paid, or the benchmark stops with the run that did not.

A second run of the same invoice is, rightly, a duplicate (the vendor and
number are in the ledger) and bills PO lines already billed, and one
renumbered is still a possible duplicate (same vendor, total and date). So
the runs go in rounds of one run per invoice, all at once, with the
reference systems seeded afresh between rounds: runs/s here is at that many
runs in flight, each round waiting for its slowest run, and is not
comparable with bench.harness's N at once. Reports runs/s over the rounds'
wall time (the resets left out), start-to-completed latency, worker and
server CPU per run and what 100 of the runs' histories hold; written to
bench/results/ as JSON with the machine and parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import tempfile
import time
import tomllib
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from baton.client import build_input, connect, start_run
from baton.config import Settings
from baton.demo import local_identities
from baton.demo_payables import (
    APPROVERS,
    CONTROLLER,
    PEOPLE,
    REQUESTER,
    SAMPLES,
    TREASURER,
    reset_systems,
)
from baton.gates import Decision, GateState
from baton.runner import RunResult
from baton.server import EmbeddedServer, free_port
from baton.state import SigningView
from bench.harness import (
    POLL,
    SIGNERS,
    approve_in_turn,
    cpu_seconds,
    machine,
    patiently,
    percentile,
    sample_histories,
    share_documents_and_key,
    start_worker,
    worker_vars,
)
from bench.reports import default_out, save_report
from workflows.accounts_payable import AccountsPayable


def clean_invoices() -> list[Path]:
    """The samples expected to be paid without waiting for a goods receipt."""
    rows = tomllib.loads((SAMPLES / "expected.toml").read_text(encoding="utf-8"))["invoice"]
    return [
        SAMPLES / "invoices" / row["file"]
        for row in rows
        if row["outcome"] == "paid" and "then" not in row
    ]


class NotPaid(RuntimeError):
    """A run did not end paid: what the benchmark measures no longer holds."""


async def gate_view(handle: WorkflowHandle[Any, RunResult], gate: str) -> GateState:
    """``gate`` as its signers see it (the roles it routes to, what it shows)."""
    view: SigningView = await patiently(
        lambda: handle.query("signing_view", gate, result_type=SigningView)
    )
    assert view.gate is not None, f"{gate} is not open in run {handle.id}"
    return view.gate


async def until_open(
    handle: WorkflowHandle[Any, RunResult], gate: str, result: asyncio.Future[RunResult]
) -> GateState:
    """Poll the run's small query until ``gate`` waits, then read it. Another
    gate (an exception review) or the run ending first means it will not be
    paid as expected: NotPaid, with the other gate's reasons (the server is
    gone once the benchmark has stopped)."""
    while True:
        gates = await patiently(lambda: handle.query("open_gates", result_type=list[str]))
        if gate in gates:
            return await gate_view(handle, gate)
        if gates:
            other = await gate_view(handle, gates[0])
            why = "; ".join(other.shown.get("why", []))
            raise NotPaid(f"run {handle.id} waits at {other.gate}, not {gate}: {why}")
        if result.done():
            ended = result.exception() or "completed"
            raise NotPaid(f"run {handle.id} ended before {gate}: {ended}")
        await asyncio.sleep(POLL)


async def one_run(client: Client, path: Path, queue: str) -> tuple[float, float]:
    """Start, approve, release and finish one run; its start and end times."""
    started = time.monotonic()
    request = build_input(AccountsPayable, [str(path)], requested_by=REQUESTER)
    handle = await start_run(
        client, AccountsPayable, request, task_queue=queue, signer=SIGNERS[REQUESTER]
    )
    result = asyncio.ensure_future(handle.result())
    try:
        approve = await until_open(handle, "approve", result)
        approvers = [APPROVERS.get(role, CONTROLLER) for role in approve.roles]
        await approve_in_turn(
            client,
            handle.id,
            [Decision(gate="approve", user=user, outcome="approve") for user in approvers],
        )
        await until_open(handle, "release", result)
        release = Decision(gate="release", user=TREASURER, outcome="approve")
        await approve_in_turn(client, handle.id, [release])
        outputs = (await result).outputs
    finally:
        result.cancel()
    if not (outputs.get("pay") or {}).get("payment"):
        raise NotPaid(f"run {handle.id} ({path.name}) completed without a payment")
    return started, time.monotonic()


async def main(runs: int, out: Path) -> dict[str, object]:
    invoices = clean_invoices()
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        share_documents_and_key(data)
        # The driver reseeds the systems the worker writes.
        os.environ["BATON_PAYABLES_DB"] = str(data / "payables.sqlite")
        SIGNERS.update(local_identities(data, PEOPLE, via="bench"))
        queue = "payables"
        env = os.environ | worker_vars(data, queue)
        server = EmbeddedServer(db_file=data / "temporal.db", port=free_port(), ui_port=None)
        async with server:
            env["TEMPORAL_ADDRESS"] = server.address
            worker = start_worker("baton", env, data / "worker.log")
            try:
                client = await connect(Settings(address=server.address, task_queue=queue))
                cpu_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)
                timings: list[tuple[float, float]] = []
                elapsed = 0.0
                for first in range(0, runs, len(invoices)):
                    reset_systems()
                    began = time.monotonic()
                    async with asyncio.TaskGroup() as group:
                        tasks = [
                            group.create_task(one_run(client, path, queue))
                            for path in invoices[: runs - first]
                        ]
                    elapsed += time.monotonic() - began
                    timings += [task.result() for task in tasks]
                worker_cpu = cpu_seconds(worker.pid) - cpu_before[0]
                server_cpu = cpu_seconds(server.pid) - cpu_before[1]
                sample = await sample_histories(client, queue)
            finally:
                worker.terminate()
                worker.wait()
    latencies = [(end - start) * 1000 for start, end in timings]
    report: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "runs": runs,
            "invoices": [path.name for path in invoices],
            "runs_in_flight": min(runs, len(invoices)),
            "approval_poll_ms": POLL * 1000,
        },
        "seconds": round(elapsed, 2),
        "runs_per_second": round(runs / elapsed, 2),
        "latency_p50_ms": round(percentile(latencies, 0.50), 1),
        "latency_p95_ms": round(percentile(latencies, 0.95), 1),
        "worker_cpu_ms_per_run": round(worker_cpu * 1000 / runs, 1),
        "server_cpu_ms_per_run": round(server_cpu * 1000 / runs, 1),
        # Over 100 runs' histories, as bench.harness counts them.
        "history_events_per_run": sample.events,
        "history_kib_per_run": sample.kib,
        "sticky_timeouts_per_run": sample.sticky_timeouts,
        "task_timeouts_per_run": sample.task_timeouts,
        "activity_retries_per_run": sample.retries,
        "activity_retries_per_run_by_type": sample.retries_by_activity,
    }
    save_report(report, out)
    print(table(report))
    print(f"written to {out}")
    return report


def table(r: dict[str, Any]) -> str:
    header = (
        f"{'runs':>6}{'in flight':>11}{'runs/s':>8}{'p50 ms':>9}{'p95 ms':>9}"
        f"{'worker cpu ms/run':>19}{'server':>8}{'events':>8}{'KiB':>7}"
        f"{'sticky':>8}{'wft t/o':>9}{'retries':>9}"
    )
    row = (
        f"{r['parameters']['runs']:>6}{r['parameters']['runs_in_flight']:>11}"
        f"{r['runs_per_second']:>8}{r['latency_p50_ms']:>9}{r['latency_p95_ms']:>9}"
        f"{r['worker_cpu_ms_per_run']:>19}{r['server_cpu_ms_per_run']:>8}"
        f"{r['history_events_per_run']:>8}{r['history_kib_per_run']:>7}"
        f"{r['sticky_timeouts_per_run']:>8}{r['task_timeouts_per_run']:>9}"
        f"{r['activity_retries_per_run']:>9}"
    )
    return f"{header}\n{row}"


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument("--out", type=Path, default=default_out("payables"))
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.out))
