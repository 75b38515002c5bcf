"""A smoke run of the export memory benchmark: it fills a store, measures each export in a
fresh process and writes its report. (Figures live in bench/results/, never in tests.)"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

from tests.conftest import ROOT


def test_export_memory_benchmark_measures_each_export_and_writes_results(
    tmp_path: Path,
) -> None:
    out = tmp_path / "export-memory.json"
    # As `make bench` runs it: outside the tests' environment.
    env = {k: v for k, v in os.environ.items() if not k.startswith("BATON_")}
    done = subprocess.run(
        [
            *(sys.executable, "-m", "bench.export_memory"),
            *("--runs", "30", "--out", str(out), "--variants"),
            *("jsonl", "jsonl-unanchored", "period", "jsonl-unstreamed"),
        ],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )
    assert done.returncode == 0, done.stderr

    report = json.loads(out.read_text())
    assert report["parameters"]["runs"] == 30
    assert 18 <= report["parameters"]["records_per_run"] <= 25
    results = report["results"]
    assert set(results) == {"baseline", "jsonl", "jsonl-unanchored", "period", "jsonl-unstreamed"}
    for name, result in results.items():
        assert result["peak_rss_mib"] > 0, name
    assert results["jsonl"]["output_mib"] > 0 and results["period"]["output_mib"] > 0
    assert set(report["above_baseline_mib"]) == set(results) - {"baseline"}
    assert report["machine"]["python"]
