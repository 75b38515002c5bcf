"""A run cannot make the worker read a file outside its intake folders: the
paths an attacker with Temporal access tried (absolute, `..`, symlinks out,
/proc, the worker's own data dir and directory) fail the run with the reason,
on Temporal's time-skipping server."""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable
from pathlib import Path

import pytest
from temporalio.client import WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.config import directory_path
from tests.conftest import SAMPLES
from tests.helpers import settled, start_intake

CLEAN = "invoice-acme-2026-0142.txt"


@pytest.fixture
def intake(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, isolated_data: Path) -> Path:
    """The only intake folder, holding one clean invoice; the worker's data
    dir, with a secret in it, lies beside it."""
    folder = tmp_path / "intake"
    folder.mkdir()
    shutil.copy(SAMPLES / CLEAN, folder / CLEAN)
    isolated_data.mkdir(parents=True, exist_ok=True)
    (isolated_data / "inbox-secret").write_text("not for documents")
    monkeypatch.setenv("BATON_INTAKE_ROOTS", str(folder))
    return folder


async def failure(env: WorkflowEnvironment, queue: str, path: Path | str) -> str:
    """Why the run for ``path`` failed; an assertion error if it went on
    (read the file and waits at review) instead."""
    handle = await start_intake(env.client, queue, Path(path))
    status = await settled(env.client, handle.id)
    assert status.state == "failed", f"the run went on: {status.state}"
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    return str(failed.value.cause)


def link(folder: Path, name: str, target: Path) -> Path:
    path = folder / name
    path.symlink_to(target)
    return path


ATTACKS: dict[str, Callable[[Path, Path], Path | str]] = {
    "an absolute path": lambda intake, data: "/etc/passwd",
    "a path that climbs out": lambda intake, data: f"{intake}/../data/inbox-secret",
    "a symlink out": lambda intake, data: link(intake, "passwd.txt", Path("/etc/passwd")),
    "a symlink to the data dir": lambda intake, data: link(intake, "s.txt", data / "inbox-secret"),
    "/proc": lambda intake, data: "/proc/self/environ",
    "the directory of users": lambda intake, data: directory_path(),
}


@pytest.mark.parametrize("attack", ATTACKS, ids=list(ATTACKS))
async def test_a_path_outside_the_intake_folder_fails_the_run_unread(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    intake: Path,
    isolated_data: Path,
    attack: str,
) -> None:
    path = ATTACKS[attack](intake, isolated_data)

    message = await failure(time_skipping_env, task_queue, path)

    assert f"is not in an intake folder ({intake})" in message
    assert "add its folder to BATON_INTAKE_ROOTS on the worker" in message


async def test_a_document_in_the_folder_is_read_and_a_fifo_there_refused(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str, intake: Path
) -> None:
    fifo = intake / "pipe.txt"
    os.mkfifo(fifo)

    message = await failure(time_skipping_env, task_queue, fifo)
    clean = await start_intake(time_skipping_env.client, task_queue, intake / CLEAN)

    assert "it is not a regular file" in message
    assert (await clean.result()).outcome == "completed"
