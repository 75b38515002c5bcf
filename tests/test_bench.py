"""A smoke run of the benchmark harness: it measures both sides and writes
its report. (Figures live in bench/results/, never in tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_harness_measures_baton_and_bare_and_writes_results(tmp_path: Path) -> None:
    out = tmp_path / "result.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    run = subprocess.run(
        [
            sys.executable,
            "-m",
            "bench.harness",
            "--runs",
            "3",
            "--variants",
            "baton",
            "bare",
            "--out",
            str(out),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert [r["variant"] for r in report["results"]] == ["baton", "bare"]
    for result in report["results"]:
        assert result["runs"] == 3 and result["runs_per_second"] > 0
        assert result["cpu_ms_per_run"] > 0 and result["history_events_per_run"] > 0
    assert set(report["ratios"]) == {"baton/bare@3"}
    assert report["machine"]["temporalio"]


def test_parked_runs_benchmark_parks_approves_and_reports(tmp_path: Path) -> None:
    out = tmp_path / "parked.json"
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    run = subprocess.run(
        [sys.executable, "-m", "bench.parked", "--runs", "5", "--out", str(out)],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    report = json.loads(out.read_text())
    assert report["parameters"]["runs"] == 5
    assert report["worker_rss_mib_parked"] > 0
    assert report["completions_per_second"] > 0
    assert report["seconds_until_all_completed"] >= report["seconds_to_send_approvals"]
