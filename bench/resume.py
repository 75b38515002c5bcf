"""Resume after a crash: `python -m bench.resume --runs 100`.

Starts N clean document-intake runs on the embedded server, SIGKILLs the
worker in the middle of them, starts a new one, and reports the time from the
restart until every run has finished, how many calls ran again, and the ERP
entries per run (must be 1). A call runs again only when the kill came after
its work but before its result was in history: for an activity, before its
completion reached the server; for a local activity (load, validate, enter),
before the workflow task holding it completed. A result in history is never
run again, and the ERP write's idempotency key makes its re-run a no-op. The worker
is the production worker plus the counting interceptor of
tests/crashable_worker.py, which logs every activity start and completion.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import WorkflowHandle

from baton.client import build_input, connect, start_run
from baton.config import Settings
from baton.demo import local_identities
from baton.server import EmbeddedServer, free_port
from bench.harness import (
    NEEDS_REVIEW,
    ROOT,
    SAMPLES,
    distinct_documents,
    machine,
    share_documents_and_key,
    worker_vars,
)
from bench.reports import default_out, save_report
from systems.erp import DocumentRegister
from workflows.document_intake import DocumentIntake

CLEAN = [p for p in SAMPLES if p.name not in NEEDS_REVIEW]


def entered(calls: Path) -> int:
    if not calls.exists():
        return 0
    return sum(
        1
        for line in calls.read_text().splitlines()
        if line.startswith("done") and line.split()[2] == "enter_document"
    )


async def finish_time(handle: WorkflowHandle[Any, Any]) -> float:
    await handle.result()
    return time.monotonic()


def start_worker(env: dict[str, str]) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "tests.crashable_worker"], cwd=ROOT, env=env)


async def main(runs: int, kill_at: float, out: Path) -> dict[str, object]:
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        share_documents_and_key(data)
        calls = data / "calls.log"
        requester = local_identities(data, ("mailroom",), via="bench")["mailroom"]
        env = (
            os.environ
            | worker_vars(data, "resume")
            | {"BATON_ERP_DB": str(data / "erp.sqlite"), "BATON_TEST_CALL_LOG": str(calls)}
        )
        async with EmbeddedServer(db_file=data / "t.db", port=free_port(), ui_port=None) as server:
            env["TEMPORAL_ADDRESS"] = server.address
            client = await connect(Settings(address=server.address, task_queue="resume"))
            worker = start_worker(env)
            handles = []
            for path in distinct_documents(CLEAN, runs, data / "samples"):
                request = build_input(DocumentIntake, [str(path)], requested_by="mailroom")
                handles.append(
                    await start_run(
                        client, DocumentIntake, request, task_queue="resume", signer=requester
                    )
                )
            while entered(calls) < runs * kill_at:
                await asyncio.sleep(0.05)
            worker.send_signal(signal.SIGKILL)
            worker.wait()
            finished_before = entered(calls)
            restarted = time.monotonic()
            worker = start_worker(env)
            try:
                finished = await asyncio.gather(*(finish_time(h) for h in handles))
                recovery = max(finished) - restarted
            finally:
                worker.send_signal(signal.SIGKILL)
                worker.wait()
        done = Counter(
            (line.split()[1], line.split()[2])
            for line in calls.read_text().splitlines()
            if line.startswith("done")
        )
        repeated = {
            kind: 0 for kind in ("ask", "load_document", "validate_document", "enter_document")
        }
        for (_, kind), count in done.items():
            if kind in repeated and count > 1:
                repeated[kind] += count - 1
        entries = Counter(
            e["idempotency_key"].split("/")[0]
            for e in DocumentRegister(data / "erp.sqlite").entries()
        )
    percentiles = statistics.quantiles(finished, n=100)
    report: dict[str, object] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {"runs": runs, "killed_when_entered_share": kill_at},
        "runs_finished_before_kill": finished_before,
        "seconds_from_restart_to_all_finished": round(recovery, 2),
        # The spread between runs the kill did not touch and those whose lost
        # task had to time out first.
        "seconds_from_restart_to_finished_quantiles": {
            f"p{q}": round(percentiles[q - 1] - restarted, 2) for q in (25, 50, 75, 90)
        },
        "calls_run_again_before_recorded": repeated,
        "erp_entries_per_run": sorted(set(entries.values())),
    }
    save_report(report, out)
    print(json.dumps(report, indent=2))
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--runs", type=int, default=100)
    parser.add_argument(
        "--kill-at", type=float, default=0.3, help="kill once this share of runs has entered"
    )
    parser.add_argument("--out", type=Path, default=default_out("resume"))
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.kill_at, args.out))
