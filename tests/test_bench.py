"""A smoke run of the benchmark harness: it measures both sides and writes
its report. (Figures live in bench/results/, never in tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import uuid
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio import activity, workflow
from temporalio.client import Client
from temporalio.common import RetryPolicy
from temporalio.worker import Worker

from baton.llm.offline_documents import extract_document_fields
from bench.harness import SAMPLES, distinct_documents, sample_histories
from tests.conftest import ROOT
from tests.helpers import eventually


def bench(module: str, out: Path, *args: str) -> dict[str, Any]:
    """Run a benchmark as `make bench` does, outside the tests' environment,
    and return the report it wrote."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    run = subprocess.run(
        [sys.executable, "-m", module, *args, "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report: dict[str, Any] = json.loads(out.read_text())
    return report


def test_harness_measures_baton_and_bare_and_writes_results(tmp_path: Path) -> None:
    # Two rounds: the second sends the same documents again, which only a
    # fresh ERP per measurement takes as new (a shared one flagged them all
    # as duplicates for a review nobody gave, and the harness never ended).
    report = bench(
        "bench.harness",
        tmp_path / "result.json",
        *("--runs", "3", "--rounds", "2", "--variants", "baton", "bare"),
    )
    # Each round alternates which side goes first.
    assert [r["variant"] for r in report["results"]] == ["baton", "bare", "bare", "baton"]
    for result in report["results"]:
        assert result["runs"] == 3 and result["runs_per_second"] > 0
        assert result["cpu_ms_per_run"] > 0 and result["history_events_per_run"] > 0
        assert result["history_kib_per_run"] > 0
    assert set(report["ratios"]) == {"baton/bare@3"}
    assert report["machine"]["temporalio"]


def test_parked_runs_benchmark_parks_approves_and_reports(tmp_path: Path) -> None:
    report = bench("bench.parked", tmp_path / "parked.json", "--runs", "5")
    assert report["parameters"]["runs"] == 5
    assert report["worker_rss_mib_parked"] > 0
    assert report["completions_per_second"] > 0
    assert report["seconds_until_all_completed"] >= report["seconds_to_send_approvals"]


def test_payables_benchmark_pays_every_run_across_rounds(tmp_path: Path) -> None:
    # The eight clean invoices, then the first again on reseeded systems: the
    # benchmark fails unless every run is paid.
    report = bench("bench.payables", tmp_path / "payables.json", "--runs", "9")
    assert report["parameters"]["runs"] == 9 and report["runs_per_second"] > 0
    assert report["latency_p95_ms"] >= report["latency_p50_ms"] > 0
    assert report["worker_cpu_ms_per_run"] > 0 and report["history_events_per_run"] > 0


def test_stall_benchmark_runs_clean_runs_beside_a_one_line_document(tmp_path: Path) -> None:
    report = bench("bench.stall", tmp_path / "stall.json", "--runs", "2", "--hostile", "1")
    assert report["parameters"]["hostile_document_bytes"] == 1024 * 1024
    # Every clean run completed, alone and beside it, and the hostile one reached a person.
    assert report["clean_alone_p50_s"] > 0 and report["clean_beside_hostile_p50_s"] > 0
    assert report["hostile_to_review_max_s"] > 0


def test_repeated_samples_are_distinct_documents_read_alike(tmp_path: Path) -> None:
    """The harness's repeats of a sample differ in the sender's name only:
    the same work for the extractor, and no duplicate of another run."""
    paths = distinct_documents(SAMPLES, 2 * len(SAMPLES), tmp_path)
    for sample, copy in zip(paths[: len(SAMPLES)], paths[len(SAMPLES) :], strict=True):
        assert (sample, copy.name) == (SAMPLES[paths.index(sample)], sample.name)
        read = extract_document_fields(sample.read_text(errors="replace"))
        again = extract_document_fields(copy.read_text(errors="replace"))
        party = read.fields.get("party")
        if party:
            assert again.fields["party"] == f"{party} (copy 1)"
        assert {**again.fields, "party": party} == read.fields
        assert again.confidence == read.confidence


@activity.defn(name="flaky_step")
async def flaky_step() -> str:
    if activity.info().attempt == 1:
        raise RuntimeError("the first attempt fails")
    return "done"


@workflow.defn(name="one_flaky_step", sandboxed=False)
class OneFlakyStep:
    @workflow.run
    async def run(self) -> str:
        return await workflow.execute_activity(
            flaky_step,
            start_to_close_timeout=timedelta(seconds=5),
            retry_policy=RetryPolicy(initial_interval=timedelta(milliseconds=100)),
        )


async def test_history_sample_counts_retries_by_activity(
    dev_client: Client, task_queue: str
) -> None:
    async with Worker(
        dev_client, task_queue=task_queue, workflows=[OneFlakyStep], activities=[flaky_step]
    ):
        for _ in range(2):
            await dev_client.execute_workflow(
                OneFlakyStep.run, id=f"flaky-{uuid.uuid4().hex[:6]}", task_queue=task_queue
            )
    # Visibility catches up with the runs just closed.
    await eventually(
        lambda: dev_client.count_workflows(f"TaskQueue = '{task_queue}'"),
        lambda counted: counted.count >= 2,
        timeout=10,
    )

    sample = await sample_histories(dev_client, task_queue)

    assert sample.retries == 1.0
    assert sample.retries_by_activity == {"flaky_step": 1.0}
    assert sample.task_timeouts == 0.0 and sample.events > 0
