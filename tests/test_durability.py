"""Durability on the real Temporal dev server (SQLite): a killed worker and a
restarted server lose nothing and repeat nothing that finished."""

from __future__ import annotations

import uuid
from collections import Counter
from pathlib import Path

import pytest
from temporalio.client import Client

from baton.client import build_input, decide, run_status, start_run
from baton.gates import Decision
from baton.runner import RunResult
from baton.server import EmbeddedServer, free_port
from systems.erp import DocumentRegister
from tests.conftest import DATA_CONVERTER, SAMPLES, WorkerProcess
from tests.fake_llm import Reply, ScriptedLLMServer
from tests.helpers import eventually, settled
from tests.routing_config import DOC, KEY_ENV, OFF_SCHEMA, VALID, answer, config
from worker import build_worker
from workflows.document_intake import DocumentIntake


async def test_killed_worker_resumes_without_repeating_finished_steps(
    dev_client: Client, worker_env: dict[str, str], task_queue: str, tmp_path: Path
) -> None:
    first = WorkerProcess(worker_env | {"BATON_TEST_HOLD_AFTER": "enter_document"})
    request = build_input(
        DocumentIntake, [str(SAMPLES / "invoice-acme-2026-0142.txt")], requested_by="clerk-1"
    )
    handle = await start_run(
        dev_client,
        DocumentIntake,
        request,
        task_queue=task_queue,
        workflow_id=f"crash-{uuid.uuid4().hex[:8]}",
    )
    hold = Path(worker_env["BATON_TEST_HOLD_FILE"])

    async def held() -> bool:
        return hold.exists()

    await eventually(held, bool, timeout=60)
    assert len(DocumentRegister().entries(handle.id)) == 1, "the write happened before the kill"
    first.kill()

    second = WorkerProcess(worker_env)
    try:
        result = await handle.result()
    finally:
        second.kill()

    assert result.outcome == "completed"
    calls = Path(worker_env["BATON_TEST_CALL_LOG"]).read_text().split("\n")
    # audit_flush ships the run's own audit events; its re-runs are idempotent by design.
    starts = Counter(
        line.split()[2] for line in calls if line.startswith("start") and "audit_flush" not in line
    )
    assert starts == Counter(
        {
            "snapshot_run_config": 1,
            "load_document": 1,
            "ask": 1,
            "find_earlier_entries": 1,
            "validate_document": 1,
            "enter_document": 2,
        }
    ), "only the interrupted step ran again"
    entries = DocumentRegister().entries(handle.id)
    assert len(entries) == 1
    assert result.outputs["enter"]["entry_id"] == entries[0]["entry_id"]
    assert result.outputs["enter"]["created"] is False, "the retry found the earlier write"


async def test_waiting_run_survives_a_server_restart(tmp_path: Path, task_queue: str) -> None:
    db = tmp_path / "temporal.db"
    request = build_input(
        DocumentIntake, [str(SAMPLES / "invoice-missing-total.txt")], requested_by="clerk-1"
    )
    async with EmbeddedServer(db_file=db, port=free_port(), ui_port=None) as server:
        client = await Client.connect(server.address, data_converter=DATA_CONVERTER)
        async with build_worker(client, task_queue=task_queue):
            handle = await start_run(client, DocumentIntake, request, task_queue=task_queue)
            assert (await settled(client, handle.id)).state == "waiting"

    # Another port: the state is in the SQLite file, and the first port, free
    # again, may meanwhile be any process's (another test worker's connection).
    async with EmbeddedServer(db_file=db, port=free_port(), ui_port=None) as server:
        client = await Client.connect(server.address, data_converter=DATA_CONVERTER)
        async with build_worker(client, task_queue=task_queue):
            status = await run_status(client, handle.id)
            assert status.state == "waiting"
            assert status.current == ["review"]
            await decide(client, handle.id, Decision(gate="review", user="rita", outcome="approve"))
            result = await client.get_workflow_handle(handle.id, result_type=RunResult).result()
    assert result.outcome == "completed"
    assert len(DocumentRegister().entries(handle.id)) == 1


async def test_crash_between_two_model_attempts_does_not_repeat_the_first(
    dev_client: Client, worker_env: dict[str, str], task_queue: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv(KEY_ENV, "sk-test")
    with ScriptedLLMServer() as llm:
        llm.script("gpt-cheap", Reply(answer(OFF_SCHEMA)))
        llm.script("claude-strong", Reply(answer(VALID, 0.95)))
        run_config = config(llm, cascade=["cheap", "strong"], repairs=0)
        config_file = Path(worker_env["BATON_TEST_HOLD_FILE"]).with_name("run-config.json")
        config_file.write_text(run_config.model_dump_json())
        env = worker_env | {
            KEY_ENV: "sk-test",
            "BATON_TEST_HOLD_BEFORE": "ask:2",
            "BATON_TEST_RUN_CONFIG": str(config_file),
        }
        first = WorkerProcess(env)
        request = build_input(DocumentIntake, [str(DOC)], requested_by="clerk-1")
        handle = await start_run(dev_client, DocumentIntake, request, task_queue=task_queue)
        hold = Path(worker_env["BATON_TEST_HOLD_FILE"])

        async def held() -> bool:
            return hold.exists()

        await eventually(held, bool, timeout=60)
        assert [r.model for r in llm.requests] == ["gpt-cheap"], "killed before the 2nd call"
        first.kill()
        second = WorkerProcess(env)
        try:
            result = await handle.result()
            status = await run_status(dev_client, handle.id)
        finally:
            second.kill()

    assert result.outputs["extract"]["number"] == "INV-1"
    assert [r.model for r in llm.requests] == ["gpt-cheap", "claude-strong"]
    extract = next(n for n in status.nodes if n.node == "extract")
    assert [a["outcome"] for a in extract.meta["attempts"]] == ["invalid", "accepted"]
