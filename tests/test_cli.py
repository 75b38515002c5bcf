"""The `baton` command and starter.py, as a person uses them, against the
real dev server and a worker."""

from __future__ import annotations

import asyncio
import json
import os
import re
import signal
import subprocess
import sys
from dataclasses import dataclass
from pathlib import Path

import pytest
from temporalio.client import Client, WorkflowUpdateFailedError
from temporalio.worker import Worker

from baton.client import DecisionRefused, decide, inbox, run_status, start_run
from baton.document_store import document_store, put_file
from baton.gates import Decision
from baton.runner import RunResult, RunStatus
from baton.server import EmbeddedServer, free_port, port_is_open
from tests.conftest import ROOT, SAMPLES
from tests.helpers import eventually, settled
from workflows.document_intake import DocumentIntake, IntakeRequest


@dataclass
class Output:
    returncode: int
    stdout: str
    stderr: str


async def run_command(*argv: str, env: dict[str, str] | None = None) -> Output:
    """Run a command without blocking the event loop: the worker under test
    lives in this process and must keep answering queries meanwhile."""
    process = await asyncio.create_subprocess_exec(
        *argv, cwd=ROOT, env=env, stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), timeout=60)
    assert process.returncode is not None
    return Output(process.returncode, stdout.decode(), stderr.decode())


async def baton(server: EmbeddedServer, queue: str, *args: str) -> Output:
    env = dict(os.environ, TEMPORAL_ADDRESS=server.address, BATON_TASK_QUEUE=queue)
    return await run_command(sys.executable, "-m", "baton.cli", *args, env=env)


def started_id(output: str) -> str:
    match = re.match(
        r"started (\S+)\nhttp://localhost:8233/namespaces/default/workflows/\1", output
    )
    assert match, output
    return match.group(1)


async def test_start_status_inbox_and_decide_from_the_command_line(
    dev_server: EmbeddedServer, dev_client: Client, dev_worker: Worker, task_queue: str
) -> None:
    doc = SAMPLES / "invoice-missing-total.txt"
    started = await baton(
        dev_server, task_queue, "start", "document_intake", str(doc), "--as", "clerk-1"
    )
    assert started.returncode == 0, started.stderr
    workflow_id = started_id(started.stdout)
    await settled(dev_client, workflow_id)

    status = await baton(dev_server, task_queue, "status", workflow_id)
    assert "state: waiting" in status.stdout
    assert "current: review" in status.stdout
    assert re.search(r"extract\s+finished\s+offline/rules-extract_fields", status.stdout)
    assert "open gate review: waiting for reviewer" in status.stdout

    await eventually(
        lambda: inbox(dev_client, "reviewer"),
        lambda items: workflow_id in {i.workflow_id for i in items},
    )
    listed = await baton(dev_server, task_queue, "inbox", "--role", "reviewer")
    assert re.search(
        rf"{workflow_id}\s+document_intake\s+gate review\s+roles reviewer", listed.stdout
    )
    clerks = await baton(dev_server, task_queue, "inbox", "--role", "clerk")
    assert workflow_id not in clerks.stdout

    refused = await baton(
        dev_server, task_queue, "approve", workflow_id, "--gate", "review", "--as", "carl"
    )
    assert refused.returncode == 1
    assert "refused: user 'carl' (clerk) may not decide gate 'review'" in refused.stderr
    wrong_gate = await baton(
        dev_server, task_queue, "approve", workflow_id, "--gate", "sign", "--as", "rita"
    )
    assert "this process has no gate 'sign'" in wrong_gate.stderr

    approved = await baton(
        dev_server,
        task_queue,
        "approve",
        workflow_id,
        "--gate",
        "review",
        "--as",
        "rita",
        "--comment",
        "total confirmed",
    )
    assert approved.returncode == 0, approved.stderr
    assert "approved gate review" in approved.stdout
    result = await dev_client.get_workflow_handle(workflow_id, result_type=RunResult).result()
    assert result.outputs["review"]["comment"] == "total confirmed"

    again = await baton(
        dev_server, task_queue, "reject", workflow_id, "--gate", "review", "--as", "sam"
    )
    assert again.returncode == 1 and "refused:" in again.stderr


async def test_request_changes_override_and_stop_from_the_command_line(
    dev_server: EmbeddedServer,
    dev_client: Client,
    dev_worker: Worker,
    task_queue: str,
    tmp_path: Path,
) -> None:
    doc = str(SAMPLES / "invoice-missing-total.txt")
    first = started_id(
        (
            await baton(dev_server, task_queue, "start", "document_intake", doc, "--as", "clerk-1")
        ).stdout
    )
    await settled(dev_client, first)
    review = ("--gate", "review", "--as", "rita")

    changes = await baton(
        dev_server, task_queue, "changes", first, *review, "--comment", "read the total again"
    )
    assert "requested changes at gate review" in changes.stdout, changes.stderr
    await eventually(
        lambda: dev_client.get_workflow_handle(first).query("open_gates", result_type=list[str]),
        lambda gates: gates == ["review"],
    )
    missing = await baton(dev_server, task_queue, "approve", first, *review, "--output", "no.json")
    assert missing.returncode == 2 and "no file at no.json" in missing.stderr
    status = await dev_client.get_workflow_handle(first).query("status", result_type=RunStatus)
    corrected = {**status.gates[0].shown["subject"]["output"], "total": "2029.90"}
    edited = tmp_path / "edited.json"
    edited.write_text(json.dumps(corrected))
    override = await baton(
        dev_server,
        task_queue,
        "approve",
        first,
        *review,
        "--output",
        str(edited),
        "--comment",
        "total is on page 2",
    )
    assert override.returncode == 0, override.stderr
    result = await dev_client.get_workflow_handle(first, result_type=RunResult).result()
    assert result.outputs["extract"]["total"] == "2029.90"

    second = started_id(
        (
            await baton(dev_server, task_queue, "start", "document_intake", doc, "--as", "clerk-1")
        ).stdout
    )
    await settled(dev_client, second)
    refused = await baton(dev_server, task_queue, "stop", second, "--as", "rita", "--reason", "x")
    assert refused.returncode == 1
    assert "may not stop this run; it needs one of: admin, supervisor" in refused.stderr
    stopped = await baton(
        dev_server, task_queue, "stop", second, "--as", "ada", "--reason", "duplicate upload"
    )
    assert f"stopping {second} as ada (admin): duplicate upload" in stopped.stdout
    assert (
        await dev_client.get_workflow_handle(second, result_type=RunResult).result()
    ).outcome == "stopped"
    shown = await baton(dev_server, task_queue, "status", second)
    assert "stopped by ada (admin): duplicate upload; undone: nothing" in shown.stdout


async def test_starter_script_starts_a_run(
    dev_server: EmbeddedServer, dev_client: Client, dev_worker: Worker, task_queue: str
) -> None:
    env = dict(os.environ, TEMPORAL_ADDRESS=dev_server.address, BATON_TASK_QUEUE=task_queue)
    out = await run_command(
        sys.executable,
        "starter.py",
        "document_intake",
        "samples/documents/receipt-cafe-lumen.txt",
        "--as",
        "mailroom",
        env=env,
    )
    assert out.returncode == 0, out.stderr
    workflow_id = started_id(out.stdout)
    result = await dev_client.get_workflow_handle(workflow_id, result_type=RunResult).result()
    assert result.outcome == "completed"


def test_graph_prints_mermaid() -> None:
    out = subprocess.run(
        [sys.executable, "-m", "baton.cli", "graph", "document_intake"],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert out.stdout.startswith("flowchart TD")
    assert "validate -.->|needs_review| review" in out.stdout


def test_bad_arguments_get_a_clear_error(tmp_path: Path) -> None:
    env = dict(os.environ, TEMPORAL_ADDRESS="127.0.0.1:1")

    def run(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "baton.cli", *args],
            cwd=ROOT,
            env=env,
            capture_output=True,
            text=True,
            timeout=60,
        )

    unreachable = run("status", "some-run")
    assert unreachable.returncode == 2
    assert "cannot reach Temporal at 127.0.0.1:1" in unreachable.stderr
    assert "`baton server`" in unreachable.stderr
    unknown = run("start", "no_such_process", "x")
    known = "known processes: accounts_payable, customer_renewal, document_intake, hr_onboarding"
    assert f"unknown process 'no_such_process'; {known}" in unknown.stderr
    arity = run("start", "document_intake")
    assert "document_intake takes 1 argument(s): <document>; got 0" in arity.stderr


async def test_baton_server_serves_and_stops_its_server_on_sigterm(tmp_path: Path) -> None:
    port = free_port()
    process = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "baton.cli",
            "server",
            "--port",
            str(port),
            "--ui-port",
            str(free_port()),
            "--db",
            str(tmp_path / "t.db"),
        ],
        cwd=ROOT,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert process.stdout is not None
    assert process.stdout.readline().startswith(f"Temporal server on 127.0.0.1:{port}")
    assert port_is_open("127.0.0.1", port)
    process.send_signal(signal.SIGTERM)
    assert process.wait(timeout=60) == 0
    assert not port_is_open("127.0.0.1", port), "the temporal child process is gone too"


async def test_readme_python_example(
    dev_client: Client, dev_worker: Worker, task_queue: str
) -> None:
    client = dev_client
    document = put_file(document_store(), SAMPLES / "invoice-missing-total.txt")
    request = IntakeRequest(document=document, requested_by="rita")
    handle = await start_run(
        client, DocumentIntake, request, task_queue=task_queue, workflow_id=f"readme-{task_queue}"
    )
    status = await eventually(lambda: run_status(client, handle.id), lambda s: s.state == "waiting")
    with pytest.raises(DecisionRefused) as own_run:
        await decide(client, handle.id, Decision(gate="review", user="rita", outcome="approve"))
    assert "segregation of duties" in own_run.value.reason
    # The plain Temporal client reaches the same update; unsigned, it decides nothing.
    with pytest.raises(WorkflowUpdateFailedError) as unsigned:
        await handle.execute_update(
            DocumentIntake.decide, Decision(gate="review", user="sam", outcome="approve")
        )
    assert "the decide is not signed" in str(unsigned.value.cause)
    await decide(
        client, handle.id, Decision(gate="review", user="sam", outcome="approve", comment="ok")
    )
    result = await handle.result()
    assert isinstance(status, RunStatus)
    assert isinstance(result, RunResult) and result.outcome == "completed"


async def test_routes_prints_the_table_and_a_missing_key_stops_the_worker(tmp_path: Path) -> None:
    routes = await run_command(sys.executable, "-m", "baton.cli", "routes")
    assert "task extract_fields: data class internal" in routes.stdout
    assert "offline/rules (offline, on-prem)" in routes.stdout
    broken = tmp_path / "routing.toml"
    broken.write_text(
        '[providers.openai]\nkind = "openai"\napi_key_env = "BATON_TEST_UNSET_KEY"\n'
        'residency = "us"\n[tiers.cheap]\ncandidates = [{provider = "openai", model = "m"}]\n'
        '[data_classes.internal]\nresidencies = ["us"]\n'
        '[tasks.extract_fields]\ncascade = ["cheap"]\n'
    )
    env = {k: v for k, v in os.environ.items() if k != "BATON_TEST_UNSET_KEY"}
    env["BATON_ROUTING"] = str(broken)
    worker = await run_command(sys.executable, "worker.py", env=env)
    assert worker.returncode == 1
    assert "needs an API key in the environment variable BATON_TEST_UNSET_KEY" in worker.stderr
