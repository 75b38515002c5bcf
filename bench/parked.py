"""Parked runs: `python -m bench.parked --runs 10000`.

Starts N document-intake runs whose document needs review, waits until
Temporal visibility shows every one waiting at the review gate, reads the
worker's resident memory while they wait, then approves them all (through
the validated `decide` update, a bounded number at a time) and measures the
rate at which they complete. Worker and server are the embedded defaults,
started as a user would start them.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path

from temporalio.client import Client

from baton.client import build_input, connect, start_run
from baton.config import Settings
from baton.demo import local_identities
from baton.server import EmbeddedServer, free_port
from bench.harness import (
    APPROVALS,
    IN_FLIGHT,
    SAMPLES,
    SIGNERS,
    approve_in_turn,
    cpu_seconds,
    machine,
    sample_histories,
    share_documents_and_key,
    start_worker,
    worker_vars,
)
from bench.reports import default_out, save_report
from workflows.document_intake import DocumentIntake

DOCUMENT = next(p for p in SAMPLES if p.name == "invoice-missing-total.txt")


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    raise RuntimeError(f"no VmRSS for process {pid}")


async def count(client: Client, query: str) -> int:
    return (await client.count_workflows(query)).count


class Stalled(RuntimeError):
    """No run moved for STALL_SECONDS: the worker stopped taking tasks."""


STALL_SECONDS = 120.0


class RunsFailed(RuntimeError):
    """A run failed: what the benchmark measures no longer holds."""


async def no_failed_runs(client: Client) -> None:
    failed = [execution async for execution in client.list_workflows("ExecutionStatus = 'Failed'")]
    if failed:
        handle = client.get_workflow_handle(failed[0].id)
        last = [event async for event in handle.fetch_history_events()][-1]
        reason = last.workflow_execution_failed_event_attributes.failure.message
        raise RunsFailed(
            f"{len(failed)} run(s) failed, e.g. {failed[0].id}: {reason} "
            f"(`temporal workflow show -w {failed[0].id}` shows its history)"
        )


async def until_count(client: Client, query: str, expected: int, poll: float = 1.0) -> None:
    """Wait until ``expected`` runs match ``query``. A failed run ends the
    benchmark with its reason; a count that stops moving ends it with what it
    reached, instead of waiting forever."""
    seen, moved_at = -1, time.monotonic()
    while (now := await count(client, query)) < expected:
        await no_failed_runs(client)
        if now != seen:
            seen, moved_at = now, time.monotonic()
        elif time.monotonic() - moved_at > STALL_SECONDS:
            raise Stalled(
                f"{now} of {expected} runs match {query!r} and none moved for "
                f"{STALL_SECONDS:.0f} s: check the worker's task queue pollers "
                "(temporal task-queue describe)"
            )
        await asyncio.sleep(poll)


async def for_each(ids: list[str], action: Callable[[str], Awaitable[object]]) -> None:
    """``action`` for every id, at most IN_FLIGHT at a time. The first failure
    cancels the rest and ends the benchmark with its error; with gather, the
    other calls went on retrying against a stopped server and hid it."""
    gate = asyncio.Semaphore(IN_FLIGHT)

    async def one(workflow_id: str) -> None:
        async with gate:
            await action(workflow_id)

    async with asyncio.TaskGroup() as group:
        for workflow_id in ids:
            group.create_task(one(workflow_id))


async def main(runs: int, out: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        share_documents_and_key(data)
        queue = "parked"
        SIGNERS.update(local_identities(data, ("mailroom", APPROVALS[0].user), via="bench"))
        env = os.environ | worker_vars(data, queue)
        env.pop("BATON_ERP_DB", None)
        server = EmbeddedServer(db_file=data / "temporal.db", port=free_port(), ui_port=None)
        async with server:
            env["TEMPORAL_ADDRESS"] = server.address
            worker = start_worker("baton", env, data / "worker.log")
            try:
                client = await connect(Settings(address=server.address, task_queue=queue))
                rss_idle = rss_mib(worker.pid)
                request = build_input(DocumentIntake, [str(DOCUMENT)], requested_by="mailroom")
                ids = [f"parked-{i}" for i in range(runs)]

                began = time.monotonic()
                await for_each(
                    ids,
                    lambda i: start_run(
                        client,
                        DocumentIntake,
                        request,
                        task_queue=queue,
                        workflow_id=i,
                        signer=SIGNERS["mailroom"],
                    ),
                )
                started = time.monotonic() - began
                try:
                    await until_count(client, "BatonStatus = 'waiting'", runs)
                except Stalled as stall:
                    raise Stalled(f"{stall}; worker RSS {rss_mib(worker.pid):.0f} MiB") from None
                parked = time.monotonic() - began
                rss_parked = rss_mib(worker.pid)
                cpu_before = cpu_seconds(worker.pid), cpu_seconds(server.pid)

                began = time.monotonic()
                await for_each(ids, lambda i: approve_in_turn(client, i, APPROVALS[:1]))
                approved = time.monotonic() - began
                await until_count(client, "ExecutionStatus = 'Completed'", runs, poll=0.25)
                finished = time.monotonic() - began
                worker_cpu = cpu_seconds(worker.pid) - cpu_before[0]
                server_cpu = cpu_seconds(server.pid) - cpu_before[1]
                rss_after = rss_mib(worker.pid)
                sample = await sample_histories(client, queue)
            finally:
                worker.terminate()
                worker.wait()
    report: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {"runs": runs, "document": DOCUMENT.name, "in_flight": IN_FLIGHT},
        "seconds_to_start_all": round(started, 1),
        "seconds_until_all_parked": round(parked, 1),
        "worker_rss_mib_idle": round(rss_idle, 1),
        "worker_rss_mib_parked": round(rss_parked, 1),
        "worker_rss_mib_after": round(rss_after, 1),
        "seconds_to_send_approvals": round(approved, 1),
        "seconds_until_all_completed": round(finished, 1),
        "completions_per_second": round(runs / finished, 1),
        "cpu_ms_per_approval": {
            "worker": round(worker_cpu * 1000 / runs, 1),
            "server": round(server_cpu * 1000 / runs, 1),
        },
        # Over 100 runs' histories: whether the timeouts hold under the
        # start-up and approval bursts (a task or heartbeat timeout too tight
        # for the load shows up here before it fails a run).
        "per_run_in_100_histories": {
            "sticky_queue_timeouts": sample.sticky_timeouts,
            "workflow_task_timeouts_once_started": sample.task_timeouts,
            "activity_retries": sample.retries,
            "activity_retries_by_type": sample.retries_by_activity,
        },
    }
    save_report(report, out)
    print(json.dumps(report, indent=2))
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=default_out("parked"))
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.out))
