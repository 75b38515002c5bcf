"""Document intake against a real model: llama.cpp serving Gemma 3 270M
(tests/local_model.py), routed as `openai_compatible`, on Temporal's
time-skipping test server. One document per test, one at a time: the
server has one slot and the machine two cores.

The model is a small base model; what it extracts is neither asserted nor
expected to be right. What is asserted is what Baton does with real replies:
the output cap it sends, a reply cut at that cap said as such, a repair
that carries the errors and the reply as written, token-logprob confidence,
tokens per attempt, a cascade and a gate that show every attempt, GenAI
spans with finish reasons, and a stop or timeout that ends a call mid-reply
and leaves the server free for the next one."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan, TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowHandle
from temporalio.exceptions import ApplicationError
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.documents import ExtractedDocument
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import run_status, stop_run
from baton.config import RunConfig, load_routing, load_run_config
from baton.gates import StopRequest
from baton.llm import AskRequest
from baton.llm.openai_chat import OpenAIChat
from baton.llm.prompt import prompt
from baton.routing import ProviderSpec
from baton.runner import ASK_ACTIVITY, RunResult
from baton.state import RunStatus
from tests.conftest import SAMPLES
from tests.helpers import WORKER_CONFIG, eventually, settled, start_intake
from tests.local_model import MODEL, LocalModel, local_model_fixture  # noqa: F401

PROVIDER = "llamacpp"
# Replies of a few seconds each: a slow machine must not fail the test.
CALL_TIMEOUT_S = 180.0
CUT = "the reply was cut at the token limit"
# Past the first value, short of any complete answer.
CUT_AT = 32
# How soon the server's slot must be free once its client has gone: with a
# reply still written for nobody it stayed busy 5 to 29 s after a stop.
IDLE_WITHIN_S = 2.0


@pytest.fixture
def spans(monkeypatch: pytest.MonkeyPatch) -> InMemorySpanExporter:
    """The test's spans, from a tracer provider of its own: the process-wide
    one is set once for good, and tests/test_telemetry.py must be the module
    that sets it, with its exporter."""
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    monkeypatch.setattr(trace, "get_tracer", provider.get_tracer)
    return exporter


ROUTING = """\
[providers.{provider}]
kind = "openai_compatible"
base_url = "{base_url}"
residency = "on-prem"
timeout_s = 120
# One slot: a second request would queue at the server with its timeout running.
max_concurrency = 1

[providers.offline]
kind = "offline"
residency = "on-prem"

[tiers.local]
candidates = [{{ provider = "{provider}", model = "{model}" }}]

[tiers.rules]
candidates = [{{ provider = "offline", model = "rules" }}]

[data_classes.internal]
residencies = ["on-prem"]

[tasks.extract_fields]
cascade = {cascade}
min_confidence = {min_confidence}
repair_attempts = {repairs}
max_tokens = {max_tokens}
data_class = "internal"
"""


def run_config(
    folder: Path,
    model: LocalModel,
    *,
    cascade: list[str],
    min_confidence: float,
    repairs: int,
    max_tokens: int,
) -> RunConfig:
    """The routing a user would write for a local llama.cpp server, read
    through Baton's own loader."""
    path = folder / "routing.toml"
    path.write_text(
        ROUTING.format(
            provider=PROVIDER,
            base_url=model.openai_base_url,
            model=MODEL,
            cascade="[" + ", ".join(f'"{tier}"' for tier in cascade) + "]",
            min_confidence=min_confidence,
            repairs=repairs,
            max_tokens=max_tokens,
        ),
        encoding="utf-8",
    )
    routing = load_routing(path)
    # Read, not dropped: an unknown key would pass unnoticed.
    assert routing.tasks["extract_fields"].max_tokens == max_tokens
    assert routing.providers[PROVIDER].max_concurrency == 1
    return load_run_config().model_copy(update={"routing": routing})


async def start(
    client: Client, queue: str, config: RunConfig, document: str
) -> WorkflowHandle[Any, RunResult]:
    WORKER_CONFIG.config = config
    return await start_intake(client, queue, SAMPLES / document)


def extract_of(status: RunStatus) -> Any:
    return next(n for n in status.nodes if n.node == "extract")


def as_dicts(attempts: list[Any]) -> list[dict[str, Any]]:
    return [a if isinstance(a, dict) else a.model_dump(mode="json") for a in attempts]


ENDS = {
    EventType.EVENT_TYPE_ACTIVITY_TASK_COMPLETED: "activity_task_completed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_FAILED: "activity_task_failed_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_TIMED_OUT: "activity_task_timed_out_event_attributes",
    EventType.EVENT_TYPE_ACTIVITY_TASK_CANCELED: "activity_task_canceled_event_attributes",
}


async def asked(client: Client, workflow_id: str) -> list[tuple[AskRequest, str]]:
    """What each model call asked and how it ended, as history holds it (the
    `ask` activity's input and closing event): what the worker was really
    given, not what the status says of it."""
    requests: dict[int, AskRequest] = {}
    ends: dict[int, str] = {}
    async for event in client.get_workflow_handle(workflow_id).fetch_history_events():
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED:
            scheduled = event.activity_task_scheduled_event_attributes
            if scheduled.activity_type.name == ASK_ACTIVITY:
                (requests[event.event_id],) = await client.data_converter.decode(
                    scheduled.input.payloads, [AskRequest]
                )
        elif event.event_type in ENDS:
            closed = getattr(event, ENDS[event.event_type])
            ends[closed.scheduled_event_id] = EventType.Name(event.event_type)
    return [(request, ends.get(event_id, "open")) for event_id, request in requests.items()]


def inferences(workflow_id: str) -> list[dict[str, Any]]:
    records = open_store(AuditSettings.from_env().url).records(workflow_id)
    return [r.data for r in records if r.event_type == "ai.inference"]


def chat_spans(exporter: InMemorySpanExporter) -> list[ReadableSpan]:
    return [
        s
        for s in exporter.get_finished_spans()
        if s.name == f"chat {MODEL}"
        and s.attributes is not None
        and s.attributes.get("gen_ai.provider.name") == PROVIDER
    ]


async def idle_within(model: LocalModel, seconds: float) -> None:
    """The server's slot is free within `seconds`."""

    async def busy() -> bool:
        return await asyncio.to_thread(model.busy)

    await eventually(busy, lambda b: not b, timeout=seconds)


def assert_model_attempt(attempt: dict[str, Any], max_tokens: int) -> None:
    """What Baton must record of any reply of the real model, whatever it says."""
    assert attempt["provider"] == PROVIDER and attempt["tier"] == "local"
    assert attempt["confidence_method"] == "token_logprobs"
    assert 0.0 < attempt["confidence"] <= 1.0
    assert attempt["input_tokens"] > 0, "the prompt's tokens as the server counted them"
    assert 0 < attempt["output_tokens"] <= max_tokens, "the cap Baton sent was applied"
    assert attempt["response_id"].startswith("chatcmpl-")
    assert attempt["raw_reply"].startswith("{"), "the reply as written, under the JSON grammar"
    assert attempt["finish_reason"] in ("stop", "length")
    if attempt["finish_reason"] == "length":
        assert attempt["output_tokens"] == max_tokens
        assert attempt["outcome"] == "invalid"
        assert attempt["errors"] == [f"{CUT} ({max_tokens} tokens)"]
    else:
        assert not any(CUT in e for e in attempt["errors"])
        if attempt["outcome"] == "invalid":
            assert attempt["errors"], "an invalid answer says why"
        else:
            ExtractedDocument.model_validate(attempt["output"])


def assert_shown(shown: list[dict[str, Any]], attempts: list[dict[str, Any]]) -> None:
    """The gate shows every attempt as the status records it, but its times."""
    assert len(shown) == len(attempts)
    for seen, attempt in zip(shown, attempts, strict=True):
        assert seen == {k: v for k, v in attempt.items() if k in seen}
        assert set(attempt) - set(seen) <= {"started_at", "finished_at"}


def assert_spans_match(spans: list[ReadableSpan], attempts: list[dict[str, Any]]) -> None:
    """One GenAI span per model call, saying what the attempt says."""
    by_id = {s.attributes["gen_ai.response.id"]: s.attributes for s in spans if s.attributes}
    assert len(spans) == len(attempts) == len(by_id)
    for attempt in attempts:
        span = by_id[attempt["response_id"]]
        assert span["gen_ai.operation.name"] == "chat"
        assert span["gen_ai.request.model"] == MODEL
        assert span["baton.task"] == "extract_fields"
        assert span["gen_ai.response.finish_reasons"] == (attempt["finish_reason"],)
        assert span["gen_ai.usage.input_tokens"] == attempt["input_tokens"]
        assert span["gen_ai.usage.output_tokens"] == attempt["output_tokens"]
        assert span["baton.confidence_method"] == "token_logprobs"


async def test_a_reply_cut_at_the_cap_is_repaired_with_its_errors_and_reply_then_cascades(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
    local_model: LocalModel,
    spans: InMemorySpanExporter,
) -> None:
    """32 tokens hold no complete answer (the schema sent requires all eleven
    fields), so both tries are cut whatever the model writes: the repair is
    certain. The rules tier then reads a document it can read only in part
    (no total), below the minimum, so the cascade ends at a person."""
    client = time_skipping_env.client
    config = run_config(
        tmp_path,
        local_model,
        cascade=["local", "rules", "human"],
        min_confidence=0.95,
        repairs=1,
        max_tokens=CUT_AT,
    )
    handle = await start(client, task_queue, config, "invoice-missing-total.txt")
    status = await settled(client, handle.id, timeout=CALL_TIMEOUT_S)

    assert status.state == "waiting" and status.current == ["extract"]
    attempts = as_dicts(extract_of(status).meta["attempts"])
    assert [(a["tier"], a["repair"], a["outcome"]) for a in attempts] == [
        ("local", 0, "invalid"),
        ("local", 1, "invalid"),
        ("rules", 0, "low_confidence"),
    ]
    for attempt in attempts[:2]:
        assert_model_attempt(attempt, max_tokens=CUT_AT)
        assert attempt["finish_reason"] == "length"
    assert attempts[2]["confidence_method"] == "rules_coverage"

    (first, _), (repair, _), (rules, _) = await asked(client, handle.id)
    assert first.max_tokens == repair.max_tokens == CUT_AT
    assert (first.repair_errors, first.previous_reply) == ([], "")
    assert repair.repair_errors == attempts[0]["errors"]
    assert repair.previous_reply == attempts[0]["raw_reply"]
    _, repair_prompt = prompt(repair)
    assert attempts[0]["raw_reply"] in repair_prompt, "the model sees what it wrote"
    assert all(f"- {e}" in repair_prompt for e in attempts[0]["errors"])
    assert rules.provider_name == "offline"

    gate = status.gates[0]
    assert gate.gate == "extract" and gate.shown["why"] == "the cascade reached its human tier"
    assert_shown(gate.shown["attempts"], attempts)
    trail = inferences(handle.id)
    assert [(i["index"], i["tier"], i["finish_reason"]) for i in trail][:2] == [
        (1, "local", "length"),
        (2, "local", "length"),
    ]
    assert [i["index"] for i in trail] == [1, 2, 3], "every attempt in the trail"
    assert [i["raw_reply"] for i in trail[:2]] == [a["raw_reply"] for a in attempts[:2]]
    assert_spans_match(chat_spans(spans), attempts[:2])


async def test_a_full_reply_is_recorded_and_shown_at_the_gate_whatever_it_says(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
    local_model: LocalModel,
    spans: InMemorySpanExporter,
) -> None:
    """The model writes as much as the server's cap allows. A minimum
    confidence of 1.0 sends even a valid answer on to the person, so the
    gate opens whatever it wrote."""
    client = time_skipping_env.client
    cap = local_model.output_cap
    config = run_config(
        tmp_path,
        local_model,
        cascade=["local", "human"],
        min_confidence=1.0,
        repairs=0,
        max_tokens=cap,
    )
    handle = await start(client, task_queue, config, "receipt-marlowe-books.txt")
    status = await settled(client, handle.id, timeout=CALL_TIMEOUT_S)

    assert status.state == "waiting" and status.current == ["extract"]
    (attempt,) = as_dicts(extract_of(status).meta["attempts"])
    assert_model_attempt(attempt, max_tokens=cap)
    assert attempt["outcome"] in ("invalid", "low_confidence")
    ((request, ended),) = await asked(client, handle.id)
    assert request.max_tokens == cap
    assert ended == "EVENT_TYPE_ACTIVITY_TASK_COMPLETED"
    assert_shown(status.gates[0].shown["attempts"], [attempt])
    if attempt["outcome"] == "low_confidence":
        assert status.gates[0].shown["proposed"] is not None
    assert_spans_match(chat_spans(spans), [attempt])


async def test_a_stop_during_the_model_call_ends_the_run_and_frees_the_server(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    tmp_path: Path,
    local_model: LocalModel,
    spans: InMemorySpanExporter,
) -> None:
    """The cancelled call closes its connection, and llama.cpp stops writing
    the reply: its one slot is free for the next request at once, not after
    the rest of a reply nobody reads (it was busy 5 to 29 s more when the
    reply was not streamed)."""
    client = time_skipping_env.client
    config = run_config(
        tmp_path,
        local_model,
        cascade=["local", "human"],
        min_confidence=0.5,
        repairs=0,
        max_tokens=local_model.output_cap,
    )
    handle = await start(client, task_queue, config, "receipt-cafe-lumen.txt")

    async def answering() -> bool:
        return await asyncio.to_thread(local_model.busy)

    await eventually(answering, bool, timeout=CALL_TIMEOUT_S)
    await stop_run(client, handle.id, StopRequest(user="ada", reason="sent by mistake"))
    result = await handle.result()
    await idle_within(local_model, IDLE_WITHIN_S)

    assert result.outcome == "stopped"
    # Cancelled, not answered: the run did not wait for the reply (seconds
    # more to write).
    ((request, ended),) = await asked(client, handle.id)
    assert ended == "EVENT_TYPE_ACTIVITY_TASK_CANCELED"
    assert request.provider_name == PROVIDER
    status = await run_status(client, handle.id)
    assert status.stopped is not None and status.stopped.user == "ada"
    assert status.gates == [], "no gate opened for a stopped run"
    extract = extract_of(status)
    assert extract.status == "cancelled"
    assert not [a for a in as_dicts(extract.meta["attempts"]) if a["outcome"] == "accepted"]
    (span,) = chat_spans(spans)
    assert span.status.status_code == StatusCode.ERROR, "a cancelled call is no success"
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"


async def test_a_timed_out_call_frees_the_server(local_model: LocalModel) -> None:
    """A request that runs out of time is no longer answered: the server
    stops writing its reply, so a retry or the next run finds the slot free
    rather than queueing behind it with its own timeout running. The prompt
    is read once beforehand, so that the timeout finds the server writing
    (it notices a client gone only once it writes): a whole reply is 200
    tokens, seconds on any machine, and the timeout a second of it."""
    document = (SAMPLES / "invoice-acme-2026-0142.txt").read_text()

    def asking(*, timeout_s: float, max_tokens: int) -> tuple[OpenAIChat, AskRequest]:
        spec = ProviderSpec(
            kind="openai_compatible", base_url=local_model.openai_base_url, timeout_s=timeout_s
        )
        provider = OpenAIChat.from_spec(
            PROVIDER, base_url=spec.base_url, key_env=None, timeout_s=timeout_s
        )
        request = AskRequest(
            task="extract_fields",
            inputs={"text": document},
            output_schema=ExtractedDocument.model_json_schema(),
            provider_name=PROVIDER,
            provider=spec,
            model=MODEL,
            max_tokens=max_tokens,
        )
        return provider, request

    provider, request = asking(timeout_s=CALL_TIMEOUT_S, max_tokens=1)
    assert (await provider.ask(request)).output_tokens == 1
    provider, request = asking(timeout_s=1.0, max_tokens=local_model.output_cap)
    with pytest.raises(ApplicationError) as failure:
        await provider.ask(request)
    assert failure.value.type == "ProviderTimeout"
    await idle_within(local_model, IDLE_WITHIN_S)
