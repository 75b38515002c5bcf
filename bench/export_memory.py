"""Memory of the audit exports over a long period: `python -m bench.export_memory --runs 10000`.

Fills a SQLite audit store with N synthetic document-intake runs (about 20 records a run,
at the sizes real runs record: the document reference, the model's output, what a reviewer
was shown, signatures), spread over four weeks: most entered without review, some reviewed,
some under four-eyes, some rejected. Then, each in a fresh process, it measures the peak
resident memory (ru_maxrss) and the time of:

- baseline: the same imports and an open store, nothing exported;
- jsonl: `baton audit export --process P --since D --format jsonl`, as a user runs it:
  it signs a checkpoint, verifies each run against the checkpoint log and adds the proofs;
- jsonl-unanchored: the same export (`write_report`) checked against the store alone;
- period: `baton audit report --process P --since D --until D2`;
- jsonl-unstreamed (when asked for): the JSONL export as it was, every record in one list.

Results are printed and written to bench/results/ as JSON.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import resource
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

# What `baton audit report` loads too: the baseline is the CLI's, charts included.
import baton.audit.period  # noqa: F401
from baton.audit.events import Actor, AuditEvent, AuditRecord
from baton.audit.export import export_jsonl
from baton.audit.reports import select_runs, write_report
from baton.audit.store import SqliteAuditStore
from baton.cli import main as cli
from bench.reports import default_out, save_report

ROOT = Path(__file__).resolve().parent.parent

PROCESS = "document_intake"
T0 = datetime(2026, 3, 2, 8, 0, tzinfo=UTC)
PERIOD = timedelta(days=28)
REDACTION = {
    "algorithm": "sha256(salt + canonical JSON of value)",
    "detectors": ["iban", "card", "sort_code", "bank_account"],
    "fields": ["bank_account", "iban"],
    "salt_id": "a5ef22f588bb",
}
WORKER = Actor(type="service", id="baton-worker@bench")
MODEL = Actor(type="ai_model", id="offline/rules-extract_fields-v1")
# Of every 20 runs: 13 entered without review, 5 reviewed by rita, 1 under four-eyes (rita
# then vera), 1 rejected. In every fourth set of 20, the reviews come within seconds: a
# quarter of each reviewer's decisions are fast, an automation-bias signal.
KINDS = ["clean"] * 13 + ["reviewed"] * 5 + ["four_eyes", "rejected"]


def _document(n: int) -> dict[str, Any]:
    return {
        "sha256": f"{n:064x}",
        "name": f"invoice-{n:06d}.txt",
        "size": 1000 + n % 900,
        "media_type": "text/plain",
    }


def _extracted(n: int) -> dict[str, Any]:
    items = [
        {
            "description": f"Item {i} of order {n}",
            "quantity": 1 + i,
            "unit_price": f"{12.5 * i:.2f}",
        }
        for i in range(1, 4)
    ]
    return {
        "doc_type": "invoice",
        "number": f"INV-{n:06d}",
        "issue_date": "2026-03-02",
        "due_date": "2026-04-01",
        "party": f"Vendor {n % 97} GmbH",
        "currency": "EUR",
        "line_items": items,
        "subtotal": "150.00",
        "tax": "28.50",
        "total": "178.50",
    }


def _signature(user: str) -> dict[str, Any]:
    return {"method": "ed25519", "key": f"ed25519:{user}-" + "k" * 40, "value": "s" * 88}


class _Run:
    """Events of one synthetic run, in the order and shapes a real run records them."""

    def __init__(self, n: int, start: datetime) -> None:
        self.n = n
        self.workflow_id = f"intake-{n:06d}"
        self.at = start
        self.events: list[AuditEvent] = []

    def add(
        self,
        event_type: str,
        *,
        node: str | None = None,
        actor: Actor | None = WORKER,
        after: timedelta = timedelta(milliseconds=40),
        **data: Any,
    ) -> None:
        self.at += after
        self.events.append(
            AuditEvent(
                event_id=f"{self.workflow_id}/{event_type}/{len(self.events)}",
                workflow_id=self.workflow_id,
                run_id="r1",
                process=PROCESS,
                event_type=event_type,
                occurred_at=self.at,
                node=node,
                actor=actor,
                data={**data, "redaction": REDACTION},
            )
        )

    def step(self, node: str, activity: str, inputs: Any, output: Any) -> None:
        self.add("node.started", node=node, kind="step", visit=1)
        self.add(
            "activity.attempt",
            node=node,
            activity_id=f"{node}#1",
            activity_type=activity,
            attempt=1,
            duration_ms=3.2,
            error=None,
            local=False,
            input=inputs,
            output=output,
        )
        self.add("node.finished", node=node, visit=1, detail="", duration_ms=35.0, output=output)


def synthetic_run(n: int, start: datetime) -> list[AuditEvent]:
    """The events of run ``n`` (its kind follows KINDS), starting at ``start``."""
    kind = KINDS[n % len(KINDS)]
    run = _Run(n, start)
    document, extracted = _document(n), _extracted(n)
    confidence = 1.0 if kind == "clean" else 0.66
    run.add("run.started", actor=Actor(type="human", id="mailroom"), input={"document": document})
    run.add(
        "config.snapshot",
        digest="5385c3d0" * 8,
        intended_purpose="Read incoming invoices, receipts and purchase orders",
        risk_class="not high-risk: document intake is not listed in AI Act Annex III",
    )
    run.add("run.admitted", actor=Actor(type="human", id="mailroom"), signature=_signature("m"))
    run.step("load", "load_document", {"document": document}, {"document": document})
    run.add("node.started", node="extract", kind="ask", visit=1)
    run.add("routing.decided", node="extract", decision="planned", cascade=["rules"])
    run.add(
        "activity.attempt",
        node="extract",
        activity_id="extract#1.1",
        activity_type="ask",
        attempt=1,
        duration_ms=6.1,
        error=None,
        input={"task": "extract_fields", "documents": [document], "schema": "x" * 1800},
        output={"output": extracted, "confidence": confidence},
    )
    run.add(
        "ai.inference",
        node="extract",
        actor=MODEL,
        provider="offline",
        model="rules-extract_fields-v1",
        operation="chat",
        index=1,
        outcome="accepted",
        confidence=confidence,
        confidence_method="rules_coverage",
        input_tokens=900 + n % 300,
        output_tokens=180,
        cost_usd=0.0,
        output=extracted,
    )
    run.add("node.finished", node="extract", visit=1, detail="", duration_ms=23.0, output=extracted)
    run.step("validate", "validate_document", {"document": extracted}, {"ok": kind == "clean"})
    run.add("node.started", node="review", kind="gate", visit=1)
    if kind == "clean":
        run.add("node.skipped", node="review", detail="condition needs_review was false")
    else:
        _review(run, kind, document, extracted)
    if kind == "rejected":
        run.add("node.skipped", node="enter", reason="the run was rejected at a gate")
        run.add("run.ended", outcome="rejected")
    else:
        entry = {"idempotency_key": f"{run.workflow_id}:enter:1", "entry": f"ERP-{n}"}
        run.step("enter", "enter_document", {"document": extracted}, entry)
        run.add("run.ended", outcome="completed")
    return run.events


def _review(run: _Run, kind: str, document: Any, extracted: Any) -> None:
    shown = {
        "document": document,
        "findings": [{"code": "low_confidence", "message": "confidence 0.66 below 0.80"}],
        "subject": {
            "node": "extract",
            "provider": "offline",
            "model": "rules",
            "output": extracted,
        },
    }
    opened = run.at
    due = opened + timedelta(hours=24)
    run.add("gate.opened", node="review", roles=["reviewer"], due_at=due, shown=shown)
    quick = run.n // len(KINDS) % 4 == 0
    deciders = (
        [("rita", "reviewer"), ("vera", "controller")]
        if kind == "four_eyes"
        else [("rita", "reviewer")]
    )
    for i, (user, role) in enumerate(deciders, start=1):
        wait = timedelta(seconds=4) if quick else timedelta(minutes=7 * i)
        last = i == len(deciders)
        run.add(
            "gate.decided" if last else "gate.approval",
            node="review",
            actor=Actor(type="human", id=user, role=role),
            after=wait,
            outcome="reject" if kind == "rejected" else "approve",
            comment="checked against the PO",
            approved_by=[u for u, _ in deciders[:i]],
            awaiting=len(deciders) - i,
            shown=shown,
            signature=_signature(user),
            waited_seconds=(run.at + wait - opened).total_seconds(),
            escalations=0,
        )
    run.add("node.finished", node="review", visit=1, detail="", duration_ms=60.0)


def fill(db: Path, runs: int) -> None:
    store = SqliteAuditStore(db)
    for n in range(runs):
        store.append(synthetic_run(n, T0 + PERIOD * n / runs), retention_days=183)


# -- measured in a fresh process -------------------------------------------------------------


def _all_records(store: SqliteAuditStore) -> list[AuditRecord]:
    """The period's records in one list: how the JSONL export worked before it streamed."""
    runs = select_runs(store, None, process=PROCESS, since=T0)
    return [record for workflow_id in runs for record in store.records(workflow_id)]


def _measure(what: str, db: Path, out: Path) -> dict[str, Any]:
    """Run one variant here, as `baton` would (its CLI, its imports), and report the peak."""
    os.environ.update(BATON_AUDIT_URL=f"sqlite:///{db}", BATON_DATA_DIR=str(db.parent))
    since, until = f"{T0:%Y-%m-%d}", f"{T0 + PERIOD - timedelta(days=1):%Y-%m-%d}"
    period = ["--process", PROCESS, "--since", since]
    store = SqliteAuditStore(db)
    tasks: dict[str, Callable[[], object]] = {
        "baseline": store.heads,
        "jsonl": lambda: cli(["audit", "export", *period, "--format", "jsonl", "--out", str(out)]),
        "jsonl-unanchored": lambda: write_report(
            store, select_runs(store, None, process=PROCESS, since=T0), out, fmt="jsonl"
        ),
        "period": lambda: cli(["audit", "report", *period, "--until", until, "--out", str(out)]),
        "jsonl-unstreamed": lambda: export_jsonl(_all_records(store), out),
    }
    began = time.perf_counter()
    with contextlib.redirect_stdout(sys.stderr):
        tasks[what]()
    seconds = time.perf_counter() - began
    peak_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return {
        "peak_rss_mib": round(peak_kib / 1024, 1),
        "seconds": round(seconds, 1),
        "output_mib": round(out.stat().st_size / 2**20, 1) if out.exists() else 0.0,
    }


def measure(what: str, db: Path, out: Path) -> dict[str, Any]:
    """Run `what` in a fresh process, as the CLI would, so each peak is its own."""
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.export_memory", "--measure", what),
            *("--db", str(db), "--export-to", str(out)),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if done.returncode != 0:
        raise RuntimeError(f"{what} failed: {done.stderr[-2000:]}")
    result: dict[str, Any] = json.loads(done.stdout.splitlines()[-1])
    return result


VARIANTS = ("baseline", "jsonl", "jsonl-unanchored", "period", "jsonl-unstreamed")


def main(runs: int, out: Path, variants: list[str]) -> dict[str, Any]:
    # Not at the top: the measured processes need none of what it loads.
    from bench.harness import machine

    with tempfile.TemporaryDirectory(prefix="baton-export-memory-") as work:
        db = Path(work) / "audit.db"
        began = time.perf_counter()
        fill(db, runs)
        filled = time.perf_counter() - began
        sizes = [len(synthetic_run(n, T0)) for n in range(len(KINDS))]
        results = {v: measure(v, db, Path(work) / f"{v}.out") for v in variants}
        store_mib = db.stat().st_size / 2**20
    base = results["baseline"]["peak_rss_mib"]
    report = {
        "benchmark": "export_memory",
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "machine": machine(),
        "parameters": {"runs": runs, "records_per_run": round(sum(sizes) / len(sizes), 1)},
        "store_mib": round(store_mib, 1),
        "seconds_to_fill": round(filled, 1),
        "results": results,
        "above_baseline_mib": {
            v: round(r["peak_rss_mib"] - base, 1) for v, r in results.items() if v != "baseline"
        },
    }
    save_report(report, out)
    print(json.dumps(report, indent=2))
    print(f"written to {out}")
    return report


if __name__ == "__main__":
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter
    )
    parser.add_argument("--runs", type=int, default=10_000)
    parser.add_argument("--out", type=Path, default=default_out("export-memory"))
    parser.add_argument(
        "--variants",
        nargs="+",
        choices=VARIANTS,
        default=list(VARIANTS[:-1]),
        help="what to measure (default: all but jsonl-unstreamed, which holds every record)",
    )
    # What a measuring subprocess is told (see measure()).
    parser.add_argument("--measure", help=argparse.SUPPRESS)
    parser.add_argument("--db", type=Path, help=argparse.SUPPRESS)
    parser.add_argument("--export-to", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.measure:
        print(json.dumps(_measure(args.measure, args.db, args.export_to)))
    else:
        main(args.runs, args.out, ["baseline", *(v for v in args.variants if v != "baseline")])
