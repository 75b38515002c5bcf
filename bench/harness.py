"""Baton against bare Temporal on the same embedded server, side by side.

    python -m bench.harness --runs 200 1000

For each N and each variant (Baton with the SQLite audit store, Baton with
PostgreSQL, Baton without audit, the bare workflow in bench/bare.py) the
harness starts a worker process as a user would (`python -m bench.worker`),
starts N document-intake runs at once over the samples, approves the runs
that stop for review as soon as they wait, and measures runs/s, latency
from start to finish and from approval to the ERP entry, CPU of the worker
and server processes per run, and history events per run. Variants alternate
within one invocation against one server. Results are printed and written to
bench/results/ as JSON with the machine, versions and parameters.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import signal
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from functools import partial
from importlib.metadata import version
from pathlib import Path
from typing import IO, Any, TypeVar

from temporalio.api.enums.v1 import EventType, TimeoutType
from temporalio.client import Client, WorkflowHandle, WorkflowUpdateRPCTimeoutOrCancelledError
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.service import RPCError, RPCStatusCode

from baton.audit.anchor import KEY_FILE_NAME as KEY_FILE
from baton.audit.anchor import LOG_DIR_NAME as LOG_DIR
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import RunNotReady, build_input, connect, decide, sign_decision, start_run
from baton.codec import KEY_FILE_ENV, KEY_FILE_NAME, create_payload_key
from baton.config import Settings
from baton.demo import local_identities
from baton.document_store import STORE_ENV, document_store, put_file
from baton.gates import Decision
from baton.keys import Signer
from baton.llm.offline_documents import extract_document_fields
from baton.server import EmbeddedServer, free_port, temporal_binary
from bench.bare import BareApproval, BareRequest
from bench.reports import default_out, save_report
from workflows.document_intake import DocumentIntake

ROOT = Path(__file__).resolve().parent.parent
SAMPLES = sorted((ROOT / "samples" / "documents").glob("*.txt"))
# The samples that stop at review (see the demo); the driver approves them.
NEEDS_REVIEW = {
    "invoice-missing-total.txt",
    "invoice-totals-mismatch.txt",
    "invoice-bad-date.txt",
    "receipt-unreadable.txt",
    "letter-unknown-type.txt",
    "po-missing-number.txt",
    # Its text addresses the AI (suspected_instructions): a person reviews it.
    "invoice-quillon-new-account.txt",
    # A total above the four-eyes threshold: two approvers on both sides.
    "invoice-brightline-bl-88317.txt",
}
# The reviewer, then the controller where four-eyes asks for a second approval.
APPROVALS = [
    Decision(gate="review", user="rita", outcome="approve"),
    Decision(gate="review", user="vera", outcome="approve"),
]
REQUESTER = "mailroom"
# Keys of the requester and the approvers, made in main()'s data dir.
SIGNERS: dict[str, Signer] = {}
POSTGRES_URL = "postgresql://postgres@127.0.0.1:5432/test"
VARIANTS = {
    "baton": ("baton", {}),
    "baton-postgres": ("baton", {"BATON_AUDIT_URL": POSTGRES_URL}),
    "baton-noaudit": ("noaudit", {}),
    "bare": ("bare", {}),
}
T = TypeVar("T")
TICKS = os.sysconf("SC_CLK_TCK")
POLL = 0.25
PY_SPY = Path(sys.executable).parent / "py-spy"


def distinct_documents(samples: list[Path], runs: int, folder: Path) -> list[Path]:
    """``runs`` documents cycling through ``samples``, each repeat with its
    sender renamed ("<party> (copy n)", the name kept): intake sees distinct
    documents, as in production, where the duplicate check would send the
    same invoice twice to review. The offline extractor reads every copy as
    its sample but for the party (tests/test_bench.py checks it)."""
    paths: list[Path] = []
    for index in range(runs):
        sample = samples[index % len(samples)]
        copy = index // len(samples)
        if copy == 0:
            paths.append(sample)
            continue
        text = sample.read_text(encoding="utf-8", errors="replace")
        party = extract_document_fields(text).fields.get("party")
        target = folder / str(copy) / sample.name
        target.parent.mkdir(parents=True, exist_ok=True)
        renamed = text.replace(party, f"{party} (copy {copy})", 1) if party else text
        target.write_text(renamed, encoding="utf-8")
        paths.append(target)
    return paths


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / TICKS


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(q * (len(ordered) - 1)))]


@dataclass
class Result:
    variant: str
    runs: int
    seconds: float
    runs_per_second: float
    latency_p50_ms: float
    latency_p95_ms: float
    latency_p99_ms: float
    approval_to_entry_p50_ms: float
    approval_to_entry_p95_ms: float
    worker_cpu_ms_per_run: float
    server_cpu_ms_per_run: float
    cpu_ms_per_run: float
    history_events_per_run: float
    # What the server stores per run: every event as the server keeps it
    # (encoded), payloads included.
    history_kib_per_run: float
    # The SQLite audit store (Baton variants): file growth and record JSON per run, and
    # what `baton audit verify` (chains and checkpoints) takes per run; 0 elsewhere.
    audit_kib_per_run: float
    audit_json_kib_per_run: float
    audit_verify_ms_per_run: float
    # Each workflow task timeout costs two events and a replay of the run.
    sticky_timeouts_per_run: float
    task_timeouts_per_run: float
    activity_retries_per_run: float
    activity_retries_per_run_by_type: dict[str, float]


async def one_run(
    client: Client, variant: str, path: Path, queue: str, timings: list[tuple[float, float, float]]
) -> None:
    started = time.monotonic()
    approved = 0.0
    handle: WorkflowHandle[Any, Any]
    if variant == "bare":
        handle = await client.start_workflow(
            "bare_intake",
            BareRequest(document=put_file(document_store(), path)),
            id=f"bare-{uuid.uuid4().hex}",
            task_queue=queue,
        )
    else:
        request = build_input(DocumentIntake, [str(path)], requested_by=REQUESTER)
        handle = await start_run(
            client, DocumentIntake, request, task_queue=queue, signer=SIGNERS[REQUESTER]
        )
    if path.name in NEEDS_REVIEW:
        approved = await approve_when_waiting(client, handle, variant)
    await handle.result()
    timings.append((started, approved, time.monotonic()))


# Queries, signals and updates the driver has in flight at once: a thousand
# runs polled together would otherwise open a thousand streams at once.
IN_FLIGHT = 64
_in_flight: asyncio.Semaphore | None = None


async def patiently(call: Callable[[], Awaitable[T]]) -> T:
    """``call()``, at most IN_FLIGHT at a time, again while the server is too
    busy to answer in time or drops the stream, or the run cannot take an
    update yet. Each call is safe to repeat: a decision goes again with the
    same signature and update id (see approve_in_turn), so it applies once,
    and the bare workflow counts a re-sent approval signal once."""
    global _in_flight
    _in_flight = _in_flight or asyncio.Semaphore(IN_FLIGHT)
    while True:
        try:
            async with _in_flight:
                return await call()
        except (WorkflowUpdateRPCTimeoutOrCancelledError, RunNotReady):
            # RunNotReady: under the parked benchmark's approval burst, replays
            # of uncached runs outlived their workflow task timeout, and
            # Temporal refuses updates until the retried task succeeds.
            pass
        except RPCError as err:
            busy = err.status in (RPCStatusCode.DEADLINE_EXCEEDED, RPCStatusCode.UNAVAILABLE)
            # A server at its limit also resets HTTP/2 streams (seen at N = 1,000),
            # which ended the whole benchmark before this retried them.
            overloaded = "Timeout" in err.message or "h2 protocol error" in err.message
            # A query while the run's workflow task is being retried (one timed
            # out on an overloaded worker): the same as RunNotReady for an update.
            not_ready = "Workflow Task in failed state" in err.message
            if not busy and not overloaded and not not_ready:
                raise
        await asyncio.sleep(POLL)


async def approve_in_turn(client: Client, workflow_id: str, decisions: list[Decision]) -> None:
    """Deliver ``decisions`` in order until the gate needs no more approvals.
    Each is signed once and keeps one update id across ``patiently``'s
    retries: a fresh signature would be a second act, refused once the first
    landed."""
    for decision in decisions:
        signed = await patiently(
            partial(sign_decision, client, workflow_id, decision, SIGNERS[decision.user])
        )
        update_id = f"decide:{uuid.uuid4()}"
        accepted = await patiently(
            partial(decide, client, workflow_id, signed, update_id=update_id)
        )
        if not accepted.awaiting:
            return


async def approve_when_waiting(
    client: Client, handle: WorkflowHandle[Any, Any], variant: str
) -> float:
    """Poll the run's own small query (the same cost on both sides) and
    approve as soon as it waits; the approval time is when it was sent."""

    async def waiting() -> bool:
        if variant == "bare":
            return await patiently(lambda: handle.query("waiting", result_type=bool))
        gates = await patiently(lambda: handle.query("open_gates", result_type=list[str]))
        return "review" in gates

    while not await waiting():
        await asyncio.sleep(POLL)
    if variant != "bare":
        await approve_in_turn(client, handle.id, APPROVALS)
        return time.monotonic()
    for decision in APPROVALS:
        approval = BareApproval(user=decision.user, approve=True)
        await patiently(partial(handle.signal, "approve", approval))
        if not await waiting():
            break
    return time.monotonic()


def start_worker(kind: str, env: dict[str, str], log: Path) -> subprocess.Popen[str]:
    """`python -m bench.worker KIND`, started as a user would; returns once it
    polls. What it prints after that is copied to ``log`` as it comes: the
    SDK's core logs to stdout, and a pipe nobody reads fills up, blocks the
    core's threads on the write and stops the worker polling for good (which
    stalled whole benchmarks until this drained it)."""
    worker = subprocess.Popen(
        [sys.executable, "-m", "bench.worker", kind],
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert worker.stdout is not None
    first = worker.stdout.readline().strip()
    if first != "ready":
        worker.kill()
        raise RuntimeError(f"the {kind} worker did not start (it printed {first!r})")

    def drain(out: IO[str] = worker.stdout) -> None:
        with log.open("a") as sink:
            for line in out:
                sink.write(line)
                sink.flush()

    threading.Thread(target=drain, daemon=True).start()
    return worker


def audit_footprint(data_dir: Path) -> tuple[int, int, int]:
    """The SQLite audit store's bytes, its JSON bytes (records and the values they
    refer to) and its runs; zeros where a variant keeps none there. The WAL is folded
    into the file first (the worker has stopped): its frames repeat pages, and are not
    what the store keeps."""
    database = data_dir / "audit.db"
    if not database.exists():
        return 0, 0, 0
    with sqlite3.connect(database) as conn:
        conn.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        json_bytes, chains = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(record_json)), 0), COUNT(DISTINCT workflow_id)"
            " FROM audit_records"
        ).fetchone()
        (value_bytes,) = conn.execute(
            "SELECT COALESCE(SUM(LENGTH(value_json)), 0) FROM audit_values"
        ).fetchone()
    return database.stat().st_size, int(json_bytes) + int(value_bytes), int(chains)


def audit_verify_ms(data_dir: Path) -> float:
    """Milliseconds `baton audit verify` takes over the whole store."""
    database = data_dir / "audit.db"
    if not database.exists():
        return 0.0
    settings = AuditSettings(
        url=f"sqlite:///{database}",
        salt="-",
        checkpoint_key=data_dir / KEY_FILE,
        checkpoint_log=data_dir / LOG_DIR,
    )
    anchors = settings.anchors(write=False)
    assert anchors is not None
    began = time.perf_counter()
    report = anchors.verify(open_store(settings.url))
    elapsed = (time.perf_counter() - began) * 1000
    if not report.ok:
        raise RuntimeError(f"the benchmark's audit trail does not verify: {report.problems[:3]}")
    return elapsed


def share_payload_key(folder: Path) -> None:
    """A payload key in ``folder`` that this process and every worker it
    starts encrypt and decrypt with, whatever their data dir."""
    path = folder / KEY_FILE_NAME
    create_payload_key(path)
    os.environ[KEY_FILE_ENV] = str(path)


def share_documents_and_key(folder: Path) -> None:
    """This driver puts documents where every worker it starts reads them,
    and encrypts with the key they decrypt with."""
    os.environ[STORE_ENV] = str(folder / "documents")
    share_payload_key(folder)


def worker_vars(data_dir: Path, queue: str) -> dict[str, str]:
    """What a benchmark's worker is told on top of this process's environment."""
    return {
        "BATON_DATA_DIR": str(data_dir),
        "BATON_CONFIG": str(ROOT / "baton.toml"),
        "BATON_TASK_QUEUE": queue,
    }


async def measure(
    variant: str, runs: int, server: EmbeddedServer, folder: Path, profile: Path | None = None
) -> Result:
    """One measurement of ``variant``, its worker's data (ERP, audit store,
    document copies) in ``folder``, which no other measurement uses: a
    document a fresh ERP has not seen is no duplicate. (Sharing one per
    variant, a second round or N found the first's documents entered, sent
    them all to review, which the driver does not approve, and stalled.)"""
    worker_kind, extra_env = VARIANTS[variant]
    folder.mkdir(parents=True)
    queue = f"bench-{variant}-{uuid.uuid4().hex[:6]}"
    env = os.environ | extra_env | {"TEMPORAL_ADDRESS": server.address} | worker_vars(folder, queue)
    env.pop("BATON_ERP_DB", None)
    audit_before = audit_footprint(folder)
    worker = start_worker(worker_kind, env, folder / "worker.log")
    profiler = None
    try:
        if profile is not None:
            profile.mkdir(parents=True, exist_ok=True)
            profiler = subprocess.Popen(
                [
                    str(PY_SPY),
                    "record",
                    "--pid",
                    str(worker.pid),
                    "--format",
                    "raw",
                    "--rate",
                    "100",
                    "--nonblocking",
                    "--gil",
                    "-o",
                    str(profile / f"{variant}-{folder.name}.txt"),
                ],
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
            )
        # Bare Temporal as it comes: no payload codec (Baton encrypts every payload).
        converter = pydantic_data_converter if variant == "bare" else None
        client = await connect(
            Settings(address=server.address, task_queue=queue), data_converter=converter
        )
        paths = distinct_documents(SAMPLES, runs, folder / "samples")
        server_pid = server.pid
        cpu_before = cpu_seconds(worker.pid), cpu_seconds(server_pid)
        timings: list[tuple[float, float, float]] = []
        began = time.monotonic()
        await asyncio.gather(*(one_run(client, variant, p, queue, timings) for p in paths))
        elapsed = time.monotonic() - began
        worker_cpu = cpu_seconds(worker.pid) - cpu_before[0]
        server_cpu = cpu_seconds(server_pid) - cpu_before[1]
        sample = await sample_histories(client, queue)
    finally:
        if profiler is not None:
            profiler.send_signal(signal.SIGINT)  # py-spy writes its samples on SIGINT
            profiler.wait(timeout=60)
        worker.terminate()
        worker.wait()
    audit_after = audit_footprint(folder)
    verify_ms = audit_verify_ms(folder)
    latencies = [(end - start) * 1000 for start, _, end in timings]
    after_approval = [(end - approved) * 1000 for _, approved, end in timings if approved]
    return Result(
        variant=variant,
        runs=runs,
        seconds=round(elapsed, 3),
        runs_per_second=round(runs / elapsed, 2),
        latency_p50_ms=round(percentile(latencies, 0.50), 1),
        latency_p95_ms=round(percentile(latencies, 0.95), 1),
        latency_p99_ms=round(percentile(latencies, 0.99), 1),
        approval_to_entry_p50_ms=round(percentile(after_approval, 0.50), 1),
        approval_to_entry_p95_ms=round(percentile(after_approval, 0.95), 1),
        worker_cpu_ms_per_run=round(worker_cpu * 1000 / runs, 1),
        server_cpu_ms_per_run=round(server_cpu * 1000 / runs, 1),
        cpu_ms_per_run=round((worker_cpu + server_cpu) * 1000 / runs, 1),
        history_events_per_run=sample.events,
        history_kib_per_run=sample.kib,
        audit_kib_per_run=round((audit_after[0] - audit_before[0]) / 1024 / runs, 1),
        audit_json_kib_per_run=round((audit_after[1] - audit_before[1]) / 1024 / runs, 1),
        audit_verify_ms_per_run=round(verify_ms / max(audit_after[2], 1), 2),
        sticky_timeouts_per_run=sample.sticky_timeouts,
        task_timeouts_per_run=sample.task_timeouts,
        activity_retries_per_run=sample.retries,
        activity_retries_per_run_by_type=sample.retries_by_activity,
    )


@dataclass
class HistorySample:
    """Over a sample of a queue's runs, per run: history length, then what
    timeouts too tight for the load cost (the other four)."""

    events: float
    kib: float
    sticky_timeouts: float
    task_timeouts: float
    retries: float
    # Which activities needed another attempt: a model call retried after a
    # missed heartbeat is a different problem from a write that outlived its
    # timeout in a busy worker.
    retries_by_activity: dict[str, float]


async def sample_histories(client: Client, queue: str) -> HistorySample:
    """A HistorySample over 100 of the queue's runs, clean and reviewed: the
    timeouts are workflow tasks that waited too long on the sticky queue and
    those that took too long once started; retries are activity attempts
    beyond the first."""
    counts = []
    sizes = []
    sticky_timeouts = task_timeouts = 0
    retries: Counter[str] = Counter()
    query = f"TaskQueue = '{queue}'"
    async for execution in client.list_workflows(query, limit=100):
        handle = client.get_workflow_handle(execution.id)
        events = [event async for event in handle.fetch_history_events()]
        counts.append(len(events))
        sizes.append(sum(event.ByteSize() for event in events))
        activity_types: dict[int, str] = {}
        for event in events:
            if event.event_type == EventType.EVENT_TYPE_WORKFLOW_TASK_TIMED_OUT:
                kind = event.workflow_task_timed_out_event_attributes.timeout_type
                if kind == TimeoutType.TIMEOUT_TYPE_SCHEDULE_TO_START:
                    sticky_timeouts += 1
                else:
                    task_timeouts += 1
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
                scheduled = event.activity_task_scheduled_event_attributes
                activity_types[event.event_id] = scheduled.activity_type.name
            elif event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED:
                started = event.activity_task_started_event_attributes
                if started.attempt > 1:
                    retries[activity_types[started.scheduled_event_id]] += started.attempt - 1
    runs = len(counts)
    if not runs:
        return HistorySample(0.0, 0.0, 0.0, 0.0, 0.0, {})
    return HistorySample(
        events=round(statistics.mean(counts), 1),
        kib=round(statistics.mean(sizes) / 1024, 1),
        sticky_timeouts=round(sticky_timeouts / runs, 2),
        task_timeouts=round(task_timeouts / runs, 2),
        retries=round(sum(retries.values()) / runs, 2),
        retries_by_activity={name: round(n / runs, 2) for name, n in sorted(retries.items())},
    )


def machine() -> dict[str, Any]:
    cpu = next(
        (
            line.split(":", 1)[1].strip()
            for line in Path("/proc/cpuinfo").read_text().splitlines()
            if line.startswith("model name")
        ),
        platform.processor(),
    )
    temporal = subprocess.run(
        [temporal_binary(), "--version"], capture_output=True, text=True, check=False
    ).stdout.strip()
    return {
        "cpus": os.cpu_count(),
        "cpu": cpu,
        "python": platform.python_version(),
        "temporalio": version("temporalio"),
        "temporal_cli": temporal,
        "platform": platform.platform(),
    }


async def main(
    runs: list[int], variants: list[str], rounds: int, out: Path, profile: Path | None
) -> list[Result]:
    results: list[Result] = []
    with tempfile.TemporaryDirectory() as tmp:
        data_dir = Path(tmp)
        share_documents_and_key(data_dir)
        SIGNERS.update(
            local_identities(data_dir, (REQUESTER, *(a.user for a in APPROVALS)), via="bench")
        )
        server = EmbeddedServer(db_file=data_dir / "temporal.db", port=free_port(), ui_port=None)
        async with server:
            for n in runs:
                for round_no in range(rounds):
                    # Alternate the order each round so neither side always runs on a
                    # warmer (or more loaded) server.
                    order = variants if round_no % 2 == 0 else list(reversed(variants))
                    for variant in order:
                        folder = data_dir / variant / f"n{n}-round{round_no + 1}"
                        result = await measure(variant, n, server, folder, profile)
                        results.append(result)
                        print(table_row(result), flush=True)
    report = {
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {
            "runs": runs,
            "variants": variants,
            "rounds": rounds,
            "server": "temporal server start-dev, SQLite, journal_mode=wal",
            "approval_poll_ms": POLL * 1000,
        },
        "results": [asdict(r) for r in results],
        "ratios": ratios(results),
    }
    save_report(report, out)
    print(f"\n{json.dumps(report['ratios'], indent=2)}\nwritten to {out}")
    return results


def ratios(results: list[Result]) -> dict[str, float]:
    """Baton's throughput as a multiple of bare Temporal's, per N."""
    out: dict[str, float] = {}
    for n in sorted({r.runs for r in results}):

        def mean_rate(variant: str, n: int = n) -> float | None:
            rates = [r.runs_per_second for r in results if r.runs == n and r.variant == variant]
            return statistics.mean(rates) if rates else None

        bare = mean_rate("bare")
        for variant in sorted({r.variant for r in results} - {"bare"}):
            rate = mean_rate(variant)
            if bare and rate:
                out[f"{variant}/bare@{n}"] = round(rate / bare, 2)
    return out


HEADER = (
    f"{'variant':<15}{'runs':>6}{'runs/s':>8}{'p50 ms':>9}{'p95 ms':>9}{'p99 ms':>9}"
    f"{'appr->entry p50':>17}{'cpu ms/run':>12}{'(worker':>9}{'server)':>9}"
    f"{'events':>8}{'KiB':>7}{'audit KiB':>10}{'sticky':>8}{'wft t/o':>9}{'retries':>9}"
)


def table_row(r: Result) -> str:
    return (
        f"{r.variant:<15}{r.runs:>6}{r.runs_per_second:>8}{r.latency_p50_ms:>9}"
        f"{r.latency_p95_ms:>9}{r.latency_p99_ms:>9}{r.approval_to_entry_p50_ms:>17}"
        f"{r.cpu_ms_per_run:>12}{r.worker_cpu_ms_per_run:>9}{r.server_cpu_ms_per_run:>9}"
        f"{r.history_events_per_run:>8}{r.history_kib_per_run:>7}{r.audit_kib_per_run:>10}"
        f"{r.sticky_timeouts_per_run:>8}"
        f"{r.task_timeouts_per_run:>9}{r.activity_retries_per_run:>9}"
    )


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--runs", type=int, nargs="+", default=[200, 1000])
    parser.add_argument("--variants", nargs="+", choices=list(VARIANTS), default=list(VARIANTS))
    parser.add_argument("--rounds", type=int, default=1)
    parser.add_argument("--out", type=Path, default=default_out())
    parser.add_argument(
        "--profile", type=Path, help="record each worker with py-spy into this folder"
    )
    args = parser.parse_args()
    if args.profile and not PY_SPY.exists():
        parser.error("--profile records with py-spy, which is not installed: pip install py-spy")
    print(HEADER)
    asyncio.run(main(args.runs, args.variants, args.rounds, args.out, args.profile))
