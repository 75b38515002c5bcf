"""A smoke run of the benchmark harness: it measures both sides and writes
its report. (Figures live in bench/results/, never in tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path
from typing import Any

from tests.conftest import ROOT


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
    report = bench(
        "bench.harness", tmp_path / "result.json", "--runs", "3", "--variants", "baton", "bare"
    )
    assert [r["variant"] for r in report["results"]] == ["baton", "bare"]
    for result in report["results"]:
        assert result["runs"] == 3 and result["runs_per_second"] > 0
        assert result["cpu_ms_per_run"] > 0 and result["history_events_per_run"] > 0
    assert set(report["ratios"]) == {"baton/bare@3"}
    assert report["machine"]["temporalio"]


def test_parked_runs_benchmark_parks_approves_and_reports(tmp_path: Path) -> None:
    report = bench("bench.parked", tmp_path / "parked.json", "--runs", "5")
    assert report["parameters"]["runs"] == 5
    assert report["worker_rss_mib_parked"] > 0
    assert report["completions_per_second"] > 0
    assert report["seconds_until_all_completed"] >= report["seconds_to_send_approvals"]
