"""Where a benchmark writes its report. Kept apart from bench.harness and on
the standard library alone: export_memory imports it in the processes whose
peak memory it measures, and those must not load the harness."""

from __future__ import annotations

import json
from collections.abc import Mapping
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

RESULTS = Path(__file__).resolve().parent / "results"


def default_out(benchmark: str = "") -> Path:
    """A file of its own for each start of ``benchmark``, named by the time it started."""
    stamp = datetime.now(UTC).strftime("%Y%m%dT%H%M%SZ")
    return RESULTS / (f"{stamp}-{benchmark}.json" if benchmark else f"{stamp}.json")


def save_report(report: Mapping[str, Any], out: Path) -> None:
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(report, indent=2) + "\n")
