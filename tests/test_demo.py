"""The README's first command: the demo on the embedded server, end to end."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

from baton.server import free_port, port_is_open
from tests.conftest import ROOT, SAMPLES


def test_demo_runs_every_sample_reviews_the_doubtful_and_stops_its_server(tmp_path: Path) -> None:
    port = free_port()
    # Its own folder: the test's fixtures write keys beside it in tmp_path.
    data = tmp_path / "demo"
    env = dict(os.environ, TEMPORAL_ADDRESS=f"127.0.0.1:{port}", BATON_DATA_DIR=str(data))
    env.pop("BATON_ERP_DB", None)
    out = subprocess.run(
        [sys.executable, "-m", "baton.cli", "demo"],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=240,
    )
    assert out.returncode == 0, out.stderr
    lines = out.stdout.splitlines()
    samples = sorted(p.name for p in SAMPLES.iterdir())
    report = {line: lines[i + 1] for i, line in enumerate(lines) if line in samples}
    assert sorted(report) == samples
    assert report["invoice-acme-2026-0142.txt"].startswith("    entered as ERP #")
    assert "review skipped" in report["invoice-acme-2026-0142.txt"]
    assert "rita (reviewer) chose approve: missing_field" in report["invoice-missing-total.txt"]
    assert report["letter-unknown-type.txt"].startswith(
        "    rejected; rita (reviewer) chose reject"
    )
    assert f"http://localhost:{port + 1000}/namespaces/default/workflows/" in out.stdout
    assert (data / "temporal.db").exists() and (data / "erp.sqlite").exists()
    readable_by_others = [
        f"{path.relative_to(data)} {path.stat().st_mode & 0o777:o}"
        for path in [data, *data.rglob("*")]
        if path.stat().st_mode & 0o077
    ]
    assert readable_by_others == [], "the data files are the user's alone"
    assert not port_is_open("127.0.0.1", port), "the demo stops the server it started"
