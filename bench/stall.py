"""One hostile document against everyone else's runs: `python -m bench.stall`.

Issue 14 found a 200 KB single-line document holding the worker's event loop
for 44 s: every other run on that worker waited. This measures what a
document at the size limit, 1 MiB on one line, costs the runs beside it. On
the embedded server with the audited worker started as a user would
(`python -m bench.worker baton`) and the offline model:

1. ``--runs`` clean document-intake runs one after another, alone: each one's
   time from start to completed;
2. the same number of clean runs again, one after another, while
   ``--hostile`` runs of the 1 MiB one-line document are started at once
   beside the first of them;
3. how long the hostile runs took to reach their review gate (the offline
   rules refuse a line that long, so a person reads it).

The figure that matters is the clean runs' latency while the hostile ones
are in flight against their latency alone: issue 14 asks that it grow by no
more than 1 s. Written to bench/results/ as JSON with the machine and
parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from temporalio.client import Client, WorkflowHandle

from baton.client import build_input, connect, start_run
from baton.config import Settings
from baton.demo import local_identities
from baton.document_store import DEFAULT_MAX_DOCUMENT_BYTES as MAX_DOCUMENT_BYTES
from baton.server import EmbeddedServer, free_port
from bench.harness import (
    NEEDS_REVIEW,
    REQUESTER,
    SAMPLES,
    SIGNERS,
    distinct_documents,
    machine,
    patiently,
    percentile,
    share_documents_and_key,
    start_worker,
    worker_vars,
)
from bench.reports import default_out, save_report
from workflows.document_intake import DocumentIntake

QUEUE = "stall"
ONE_LINE = "Invoice 4411 from Quillon Ltd total due 1,234.50 EUR please pay promptly "


def one_line_document(folder: Path, index: int) -> Path:
    """A document at the size limit with no line break in it."""
    path = folder / f"one-line-{index}.txt"
    repeats = MAX_DOCUMENT_BYTES // len(ONE_LINE)
    path.write_text((ONE_LINE * repeats)[: MAX_DOCUMENT_BYTES - 16] + f" #{index}", "utf-8")
    return path


async def start(client: Client, path: Path) -> WorkflowHandle[Any, Any]:
    request = build_input(DocumentIntake, [str(path)], requested_by=REQUESTER)
    return await start_run(
        client, DocumentIntake, request, task_queue=QUEUE, signer=SIGNERS[REQUESTER]
    )


async def clean_latency(client: Client, path: Path) -> float:
    """Seconds from start to completed of one run that needs nobody."""
    began = time.monotonic()
    handle = await start(client, path)
    await handle.result()
    return time.monotonic() - began


async def until_at_review(handle: WorkflowHandle[Any, Any], began: float) -> float:
    """Seconds from ``began`` until the run waits at its review gate."""
    while "review" not in await patiently(
        lambda: handle.query("open_gates", result_type=list[str])
    ):
        await asyncio.sleep(0.05)
    return time.monotonic() - began


async def main(runs: int, hostile: int, out: Path) -> dict[str, Any]:
    clean_samples = [p for p in SAMPLES if p.name not in NEEDS_REVIEW]
    with tempfile.TemporaryDirectory() as tmp:
        data = Path(tmp)
        share_documents_and_key(data)
        SIGNERS.update(local_identities(data, (REQUESTER,), via="bench"))
        documents = distinct_documents(clean_samples, 2 * runs + 1, data / "clean")
        hostile_documents = [one_line_document(data, i) for i in range(hostile)]
        env = os.environ | worker_vars(data, QUEUE)
        server = EmbeddedServer(db_file=data / "temporal.db", port=free_port(), ui_port=None)
        async with server:
            env["TEMPORAL_ADDRESS"] = server.address
            worker = start_worker("baton", env, data / "worker.log")
            try:
                client = await connect(Settings(address=server.address, task_queue=QUEUE))
                # A first run warms the worker (imports, sandbox), as any
                # worker that has served one run is warm.
                await clean_latency(client, documents[0])
                alone = [await clean_latency(client, path) for path in documents[1 : runs + 1]]
                began = time.monotonic()
                handles = [await start(client, path) for path in hostile_documents]
                reviews = asyncio.gather(*(until_at_review(h, began) for h in handles))
                beside = [await clean_latency(client, path) for path in documents[runs + 1 :]]
                to_review = await reviews
            finally:
                worker.terminate()
                worker.wait()
    report: dict[str, Any] = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "clean_runs": runs,
            "hostile_runs": hostile,
            "hostile_document_bytes": MAX_DOCUMENT_BYTES,
            "hostile_document_lines": 1,
        },
        "clean_alone_p50_s": round(percentile(alone, 0.5), 3),
        "clean_alone_max_s": round(max(alone), 3),
        "clean_beside_hostile_p50_s": round(percentile(beside, 0.5), 3),
        "clean_beside_hostile_max_s": round(max(beside), 3),
        "delay_p50_s": round(percentile(beside, 0.5) - percentile(alone, 0.5), 3),
        "delay_worst_s": round(max(beside) - percentile(alone, 0.5), 3),
        "hostile_to_review_max_s": round(max(to_review), 3),
    }
    save_report(report, out)
    print(json.dumps({k: v for k, v in report.items() if k != "machine"}, indent=2))
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--runs", type=int, default=10, help="clean runs alone, and again beside")
    parser.add_argument("--hostile", type=int, default=2, help="1 MiB one-line runs at once")
    parser.add_argument("--out", type=Path, default=default_out("stall"))
    args = parser.parse_args()
    asyncio.run(main(args.runs, args.hostile, args.out))
