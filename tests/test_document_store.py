"""Documents enter by reference: the run carries a hash, the worker reads
the document only from the store and checks it against that hash. What an
attacker with Temporal access tried (a path, a hash that is a path, the hash
of a file on the worker's disk, a link or a changed file in the store) fails
the run with the reason, and a 1 MiB document stays out of history."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowFailureError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.client import start_run
from baton.config import directory_path
from baton.document_store import (
    DocumentNotInStore,
    DocumentRef,
    DocumentTampered,
    DocumentTooLarge,
    FolderStore,
    document_store,
)
from tests.conftest import SAMPLES
from tests.helpers import STARTED, settled, start_intake, stored
from workflows.document_intake import DocumentIntake, IntakeRequest

CLEAN = SAMPLES / "invoice-acme-2026-0142.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"


def test_a_stored_document_reads_back_checked_and_private(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "documents")
    data = CLEAN.read_bytes()

    ref = store.put(data, name="in/some/folder/invoice.txt")

    assert ref.name == "invoice.txt", "a name, never a path"
    assert (ref.size, ref.media_type) == (len(data), "text/plain")
    assert store.read(ref) == data
    assert store.put(data, name="again.txt").sha256 == ref.sha256, "content-addressed"
    path = store.path_of(ref.sha256)
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(path.parent.stat().st_mode) == 0o700
    assert stat.S_IMODE(store.root.stat().st_mode) == 0o700


def test_a_changed_link_or_fifo_in_the_store_is_not_read(tmp_path: Path) -> None:
    store = FolderStore(tmp_path / "documents")
    ref = store.put(CLEAN.read_bytes(), name=CLEAN.name)
    path = store.path_of(ref.sha256)

    path.write_bytes(CLEAN.read_bytes().replace(b"ACME", b"EVIL"))
    with pytest.raises(DocumentTampered, match="does not match its hash"):
        store.read(ref)
    path.unlink()
    with pytest.raises(DocumentNotInStore, match="put it in with `baton documents put FILE`"):
        store.read(ref)
    path.symlink_to(CLEAN)
    with pytest.raises(DocumentTampered, match="cannot be read"):
        store.read(ref)
    path.unlink()
    os.mkfifo(path)
    with pytest.raises(DocumentTampered, match="not a regular file"):
        store.read(ref)


def test_a_document_over_the_limit_is_not_stored(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("BATON_MAX_DOCUMENT_BYTES", "100")
    store = FolderStore(tmp_path / "documents")
    with pytest.raises(DocumentTooLarge, match="raise BATON_MAX_DOCUMENT_BYTES"):
        store.put(b"x" * 101, name="big.txt")
    assert not store.root.exists()


@pytest.mark.parametrize("sha256", ["../../../etc/passwd", "/etc/passwd", "AB" * 32, "a" * 63])
def test_a_reference_holds_a_hash_and_nothing_else(sha256: str) -> None:
    with pytest.raises(ValueError, match="String should match pattern"):
        DocumentRef(sha256=sha256, name="x.txt", size=1)
    with pytest.raises(ValueError, match="String should match pattern"):
        DocumentRef(sha256="a" * 64, name="../x.txt", size=1)


async def failure_of_run(client: Client, queue: str, ref: DocumentRef) -> str:
    """Why the run for ``ref``, started and signed as `baton start` would,
    failed; an assertion error if it went on instead."""
    request = IntakeRequest(document=ref, requested_by="clerk-1")
    handle = await start_run(client, DocumentIntake, request, task_queue=queue)
    STARTED.append(handle)
    status = await settled(client, handle.id)
    assert status.state == "failed", f"the run went on: {status.state}"
    with pytest.raises(WorkflowFailureError) as failed:
        await handle.result()
    return str(failed.value.cause)


def reference_to(path: Path) -> DocumentRef:
    """The reference an attacker who knows a file on the worker's disk
    can compute for it."""
    return DocumentRef.of(path.read_bytes(), name="innocent.txt")


async def test_the_hash_of_a_file_on_the_workers_disk_reads_nothing(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    isolated_data: Path,
) -> None:
    isolated_data.mkdir(parents=True, exist_ok=True)
    secret = isolated_data / "inbox-secret"
    secret.write_text("not for documents")
    client = time_skipping_env.client

    for path in (Path("/etc/passwd"), directory_path(), secret):
        message = await failure_of_run(client, task_queue, reference_to(path))
        assert "the document store at" in message and "has no document" in message


async def test_a_link_planted_in_the_store_or_a_changed_document_fails_the_run(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    store = document_store()
    passwd = reference_to(Path("/etc/passwd"))
    planted = store.path_of(passwd.sha256)
    planted.parent.mkdir(parents=True, exist_ok=True)
    planted.symlink_to("/etc/passwd")
    changed = stored(CLEAN)
    store.path_of(changed.sha256).write_text("Pay IBAN DE89370400440532013000 now")
    client = time_skipping_env.client

    assert "cannot be read" in await failure_of_run(client, task_queue, passwd)
    assert "does not match its hash" in await failure_of_run(client, task_queue, changed)
    clean = await start_intake(client, task_queue, SAMPLES / "receipt-cafe-lumen.txt")
    assert (await clean.result()).outcome == "completed"


def large_invoice(tmp_path: Path) -> Path:
    """An invoice without a total, padded with notes to 1 MiB."""
    text = MISSING_TOTAL.read_text(encoding="utf-8")
    note = "Note: delivery notes and terms for the goods above, kept for the file.\n"
    padding = note * ((1024 * 1024 - len(text)) // len(note))
    path = tmp_path / "invoice-1mib.txt"
    path.write_text(text + padding, encoding="utf-8")
    assert 1024 * 1024 - len(note) < path.stat().st_size <= 1024 * 1024
    return path


async def history_bytes(client: Client, workflow_id: str) -> int:
    history = await client.get_workflow_handle(workflow_id).fetch_history()
    return sum(event.ByteSize() for event in history.events)


async def test_a_one_mib_document_adds_under_10_kb_to_history(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    client = time_skipping_env.client
    small = await start_intake(client, task_queue, MISSING_TOTAL)
    large = await start_intake(client, task_queue, large_invoice(tmp_path))
    # Both at review, having taken the same steps.
    assert (await settled(client, small.id)).state == "waiting"
    assert (await settled(client, large.id)).state == "waiting"

    grown = await history_bytes(client, large.id) - await history_bytes(client, small.id)
    assert grown < 10_000, f"the 1 MiB document added {grown} bytes to history"


def test_baton_documents_put_and_show(capsys: pytest.CaptureFixture[str]) -> None:
    from baton.cli import main

    assert main(["documents", "put", str(CLEAN)]) == 0
    ref = DocumentRef.model_validate_json(capsys.readouterr().out)
    assert ref == DocumentRef.of(CLEAN.read_bytes(), name=CLEAN.name)
    assert document_store().read(ref) == CLEAN.read_bytes()

    assert main(["documents", "show", ref.sha256[:10]]) == 0
    assert capsys.readouterr().out == CLEAN.read_text()
    for hostile in ("../../etc", "*", ref.sha256[:4], "0" * 64):
        assert main(["documents", "show", hostile]) == 2
        assert "give at least 8 characters of a hash" in capsys.readouterr().err
