"""Idempotency keys that cannot collide: the attack first (a reused workflow
id with another document), then a forged write, a retried step, local
activities, runs in flight across the upgrade and an ERP file from before."""

from __future__ import annotations

import json
import sqlite3
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from pathlib import Path

import pytest
from pydantic import BaseModel
from temporalio import activity, workflow
from temporalio.client import Client, WorkflowFailureError
from temporalio.common import RetryPolicy
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Interceptor, Worker

from activities.audit import AuditFlush
from activities.config import fixed_run_config, snapshot_run_config
from activities.documents import EntryReceipt
from baton.audit.interceptors import AuditInterceptor
from baton.client import build_input, start_run
from baton.idempotency import IdempotencyInterceptor, idempotency_key
from baton.plugin import SANDBOX, graph_activities
from systems.erp import DocumentRegister
from systems.keyed import IdempotencyConflict, payload_sha256
from tests.conftest import SAMPLES
from tests.helpers import STARTED, WORKER_CONFIG
from worker import build_worker
from workflows.document_intake import DocumentIntake

FIRST = SAMPLES / "invoice-acme-2026-0142.txt"
SECOND = SAMPLES / "invoice-harbour-finch-hfc-2026-017.txt"


async def intake(client: Client, queue: str, path: Path, workflow_id: str) -> str:
    """Run document intake on ``path`` under ``workflow_id`` to its end;
    its first execution run id."""
    request = build_input(DocumentIntake, [str(path)], requested_by="clerk-1")
    handle = await start_run(
        client, DocumentIntake, request, task_queue=queue, workflow_id=workflow_id
    )
    STARTED.append(handle)
    result = await handle.result()
    assert result.outcome == "completed", result
    assert handle.first_execution_run_id is not None
    return handle.first_execution_run_id


# -- the attack ----------------------------------------------------------------


async def test_a_reused_workflow_id_with_another_document_gets_its_own_entry(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """The README reuses workflow ids; the second run's document was never
    entered while the run reported it entered."""
    client = time_skipping_env.client
    workflow_id = f"reused-{uuid.uuid4().hex[:8]}"
    async with build_worker(client, task_queue=task_queue, run_config=WORKER_CONFIG):
        first_run = await intake(client, task_queue, FIRST, workflow_id)
        second_run = await intake(client, task_queue, SECOND, workflow_id)

    entries = DocumentRegister().entries(f"{workflow_id}/")
    assert [e["number"] for e in entries] == ["ACME-2026-0142", "HFC-2026-017"]
    assert [e["idempotency_key"] for e in entries] == [
        f"{workflow_id}/{first_run}/enter#1",
        f"{workflow_id}/{second_run}/enter#1",
    ]


async def test_without_the_run_header_a_reused_id_fails_loudly_instead_of_silently(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """Activities scheduled without the run header (by a worker from before
    it, or in a run started then) fall back to the old key; the register then
    refuses the second document instead of dropping it."""
    client = time_skipping_env.client
    workflow_id = f"legacy-{uuid.uuid4().hex[:8]}"
    async with worker_before_run_keys(client, task_queue):
        await intake(client, task_queue, FIRST, workflow_id)
        with pytest.raises(WorkflowFailureError) as failure:
            await intake(client, task_queue, SECOND, workflow_id)

    assert "IdempotencyConflict" in _causes(failure.value)
    assert [e["number"] for e in DocumentRegister().entries(f"{workflow_id}/")] == [
        "ACME-2026-0142"
    ]


def worker_before_run_keys(client: Client, queue: str) -> Worker:
    """Document intake's worker as it was before idempotency keys named the
    run: the same workflows, activities, audit and sandbox, no run header."""
    snapshot = fixed_run_config(WORKER_CONFIG)
    activities = [
        snapshot if a is snapshot_run_config else a for a in graph_activities([DocumentIntake])
    ]
    return Worker(
        client,
        task_queue=queue,
        workflows=[DocumentIntake],
        activities=[*activities, AuditFlush(None).flush],
        activity_executor=ThreadPoolExecutor(max_workers=4),
        interceptors=[AuditInterceptor(None)],
        workflow_runner=SANDBOX,
    )


def _causes(error: BaseException | None) -> str:
    """Every message and error type down the cause chain, as one text."""
    parts: list[str] = []
    while error is not None:
        parts.append(str(error))
        if isinstance(error, ApplicationError) and error.type:
            parts.append(error.type)
        error = error.__cause__
    return " | ".join(parts)


# -- the register ----------------------------------------------------------------

DOC = {"doc_type": "invoice", "number": "INV-1", "total": "100.00"}


def test_a_forged_write_under_a_used_key_fails_and_names_key_hashes_and_fix() -> None:
    register = DocumentRegister()
    first = register.enter(idempotency_key="wf/run/enter#1", document=DOC)
    forged = {**DOC, "number": "INV-2"}

    with pytest.raises(IdempotencyConflict) as conflict:
        register.enter(idempotency_key="wf/run/enter#1", document=forged)

    message = conflict.value.message
    assert "'wf/run/enter#1'" in message
    assert payload_sha256(DOC) in message and payload_sha256(forged) in message
    assert "needs its own key" in message
    assert conflict.value.type == "IdempotencyConflict" and conflict.value.non_retryable
    assert [e["entry_id"] for e in register.entries("wf/")] == [first.entry_id]


def test_the_same_document_again_returns_the_earlier_entry_whatever_its_key_order() -> None:
    register = DocumentRegister()
    first = register.enter(idempotency_key="k", document=DOC)
    again = register.enter(idempotency_key="k", document=dict(reversed(list(DOC.items()))))
    assert (again.entry_id, again.created) == (first.entry_id, False)
    assert first.created


OLD_SCHEMA = """
CREATE TABLE documents (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    doc_type TEXT NOT NULL, number TEXT, party TEXT, currency TEXT, total TEXT,
    payload TEXT NOT NULL,
    entered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


def test_a_register_file_from_before_hashes_gets_them_and_keeps_its_entries(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old-erp.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(OLD_SCHEMA)
        db.execute(
            "INSERT INTO documents (idempotency_key, doc_type, number, payload)"
            " VALUES (?, ?, ?, ?)",
            ("wf/enter#1", "invoice", "INV-1", json.dumps(DOC, sort_keys=True)),
        )
    db.close()

    register = DocumentRegister(path)
    [entry] = register.entries()
    assert entry["payload_sha256"] == payload_sha256(DOC)
    assert register.enter(idempotency_key="wf/enter#1", document=DOC).created is False
    with pytest.raises(IdempotencyConflict):
        register.enter(idempotency_key="wf/enter#1", document={**DOC, "number": "INV-9"})
    # A second connection (another worker thread) finds it migrated.
    assert DocumentRegister(path).enter(idempotency_key="new", document=DOC).created


# -- the interceptor on a bare workflow ----------------------------------------------


class Write(BaseModel):
    number: str
    local: bool = False


@activity.defn
def write_entry(request: Write) -> EntryReceipt:
    """Writes, then loses its first attempt as a worker dying before it
    reports would: the retry must find the write."""
    key = idempotency_key()
    entry = DocumentRegister().enter(
        idempotency_key=key, document={**DOC, "number": request.number}
    )
    if activity.info().attempt == 1:
        raise RuntimeError("lost after the write")
    return EntryReceipt(entry_id=entry.entry_id, idempotency_key=key, created=entry.created)


@workflow.defn(name="keyed_write", sandboxed=False)
class KeyedWrite:
    @workflow.run
    async def run(self, request: Write) -> EntryReceipt:
        retry = RetryPolicy(initial_interval=timedelta(milliseconds=10), maximum_attempts=3)
        timeout = timedelta(seconds=10)
        if request.local:
            return await workflow.execute_local_activity(
                write_entry,
                request,
                activity_id="write#1",
                start_to_close_timeout=timeout,
                retry_policy=retry,
            )
        return await workflow.execute_activity(
            write_entry,
            request,
            activity_id="write#1",
            start_to_close_timeout=timeout,
            retry_policy=retry,
        )


def bare_worker(client: Client, queue: str, interceptors: list[Interceptor]) -> Worker:
    return Worker(
        client,
        task_queue=queue,
        workflows=[KeyedWrite],
        activities=[write_entry],
        activity_executor=ThreadPoolExecutor(max_workers=2),
        interceptors=interceptors,
    )


@pytest.mark.parametrize("local", [False, True], ids=["activity", "local activity"])
async def test_a_retried_activity_finds_its_earlier_write_under_the_run_key(
    time_skipping_env: WorkflowEnvironment, task_queue: str, local: bool
) -> None:
    client = time_skipping_env.client
    workflow_id = f"keyed-{uuid.uuid4().hex[:8]}"
    async with bare_worker(client, task_queue, [IdempotencyInterceptor()]):
        handle = await client.start_workflow(
            KeyedWrite.run,
            Write(number="INV-7", local=local),
            id=workflow_id,
            task_queue=task_queue,
        )
        receipt = await handle.result()

    assert receipt.idempotency_key == f"{workflow_id}/{handle.first_execution_run_id}/write#1"
    assert receipt.created is False, "the retry found the first attempt's write"
    assert [e["entry_id"] for e in DocumentRegister().entries(f"{workflow_id}/")] == [
        receipt.entry_id
    ]


async def test_an_activity_scheduled_before_the_upgrade_keeps_its_old_key(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """No header (scheduled by a worker without the interceptor): the key is
    the old ``<workflow id>/<activity id>``, so a run in flight across the
    upgrade finds the write it made before."""
    client = time_skipping_env.client
    workflow_id = f"inflight-{uuid.uuid4().hex[:8]}"
    before = DocumentRegister().enter(
        idempotency_key=f"{workflow_id}/write#1", document={**DOC, "number": "INV-8"}
    )
    async with bare_worker(client, task_queue, []):
        receipt = await client.execute_workflow(
            KeyedWrite.run, Write(number="INV-8"), id=workflow_id, task_queue=task_queue
        )

    assert receipt.idempotency_key == f"{workflow_id}/write#1"
    assert (receipt.entry_id, receipt.created) == (before.entry_id, False)
