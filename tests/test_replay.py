"""Recorded histories still replay: a code change that would break runs
already in flight fails here (then it needs `workflow.patched`)."""

from __future__ import annotations

from pathlib import Path

import pytest
from temporalio.client import WorkflowHistory

from worker import build_replayer

HISTORIES = sorted((Path(__file__).parent / "histories").glob("*.json"))


@pytest.mark.parametrize("path", HISTORIES, ids=[p.stem for p in HISTORIES])
async def test_recorded_history_replays(path: Path) -> None:
    replayer = build_replayer()
    history = WorkflowHistory.from_json(path.stem, path.read_text())
    result = await replayer.replay_workflow(history)
    assert result.replay_failure is None


def test_histories_are_recorded() -> None:
    assert {p.stem for p in HISTORIES} >= {"document_intake_clean", "document_intake_reviewed"}
