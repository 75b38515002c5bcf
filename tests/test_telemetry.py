"""One run's spans: Temporal's workflow and activity spans and the GenAI span
of the model call, in one trace."""

from __future__ import annotations

import asyncio
import socket
import uuid

import httpx2 as httpx
import openai
import pytest
from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from opentelemetry.trace import StatusCode
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.exceptions import ApplicationError
from temporalio.testing import ActivityEnvironment, WorkflowEnvironment
from temporalio.worker import Worker

from activities.llm import ask
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import build_input, start_run
from baton.llm import AskRequest
from baton.llm.faults import MESSAGE_LIMIT, as_application_error
from baton.routing import ProviderSpec
from baton.telemetry import configure_tracing
from tests.conftest import SAMPLES
from tests.fake_llm import Delay, Reply, ScriptedLLMServer
from tests.helpers import eventually
from tests.routing_config import KEY_ENV
from workflows.document_intake import DocumentIntake

EXPORTER = InMemorySpanExporter()


def by_name(spans: list[ReadableSpan], name: str) -> ReadableSpan:
    matches = [s for s in spans if s.name == name]
    assert len(matches) == 1, (name, [s.name for s in spans])
    return matches[0]


async def test_a_run_is_one_trace_with_gen_ai_attributes_on_the_model_call(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    provider = configure_tracing(exporter=EXPORTER)
    assert trace.get_tracer_provider() is provider, "no other provider was installed first"
    request = build_input(
        DocumentIntake, [str(SAMPLES / "invoice-acme-2026-0142.txt")], requested_by="clerk-1"
    )
    env_client = time_skipping_env.client
    client = Client(
        env_client.service_client,
        namespace=env_client.namespace,
        data_converter=env_client.data_converter,
        interceptors=[TracingInterceptor()],
    )
    handle = await start_run(
        client,
        DocumentIntake,
        request,
        task_queue=task_queue,
        workflow_id=f"traced-{uuid.uuid4().hex[:6]}",
    )
    await handle.result()
    provider.force_flush()
    spans = [s for s in EXPORTER.get_finished_spans() if s.attributes is not None]

    start = by_name(spans, "StartWorkflow:document_intake")
    run = by_name(spans, "RunWorkflow:document_intake")
    assert run.context.trace_id == start.context.trace_id
    run_spans = [s for s in spans if s.context.trace_id == run.context.trace_id]
    names = {s.name for s in run_spans}
    for activity in ("load_document", "ask", "enter_document"):
        assert f"StartActivity:{activity}" in names and f"RunActivity:{activity}" in names
    chat = by_name(run_spans, "chat rules")
    assert chat.parent is not None
    parent = next(s for s in run_spans if s.context.span_id == chat.parent.span_id)
    assert parent.name == "RunActivity:ask"
    assert chat.attributes is not None
    assert chat.attributes["gen_ai.operation.name"] == "chat"
    assert chat.attributes["gen_ai.provider.name"] == "offline"
    assert chat.attributes["gen_ai.request.model"] == "rules"
    assert chat.attributes["gen_ai.response.model"] == "rules-extract_fields-v1"
    assert chat.attributes["gen_ai.usage.input_tokens"] == 0
    assert chat.attributes["gen_ai.usage.output_tokens"] == 0


async def test_a_worker_on_a_traced_client_makes_each_span_once(
    time_skipping_env: WorkflowEnvironment, task_queue: str
) -> None:
    """A worker takes on its client's interceptors; with its own tracing
    interceptor too, every span came twice."""
    from tests.helpers import WORKER_CONFIG
    from worker import build_worker

    provider = configure_tracing(exporter=EXPORTER)
    EXPORTER.clear()
    env_client = time_skipping_env.client
    client = Client(
        env_client.service_client,
        namespace=env_client.namespace,
        data_converter=env_client.data_converter,
        interceptors=[TracingInterceptor(always_create_workflow_spans=True)],
    )
    request = build_input(
        DocumentIntake, [str(SAMPLES / "invoice-acme-2026-0142.txt")], requested_by="clerk-1"
    )
    async with build_worker(client, task_queue=task_queue, run_config=WORKER_CONFIG):
        handle = await start_run(client, DocumentIntake, request, task_queue=task_queue)
        await handle.result()
    provider.force_flush()
    spans = [s for s in EXPORTER.get_finished_spans() if s.attributes is not None]

    run = by_name(spans, "RunWorkflow:document_intake")
    run_spans = [s for s in spans if s.context.trace_id == run.context.trace_id]
    for activity in ("load_document", "ask", "enter_document"):
        by_name(run_spans, f"RunActivity:{activity}")
    # Each record says where it was written and leads to its trace.
    records = open_store(AuditSettings.from_env().url).records(handle.id)
    (load,) = [r for r in records if r.event_type == "activity.attempt" and r.node == "load"]
    context = load.data["context"]
    assert context["trace_id"] == format(run.context.trace_id, "032x")
    assert context["span_id"] == format(
        by_name(run_spans, "RunActivity:load_document").context.span_id, "016x"
    )
    assert context["worker"].endswith(f"@{socket.gethostname()}")
    assert all(r.data["context"]["worker"] for r in records)


def _ask_request(llm: ScriptedLLMServer, *, timeout_s: float = 5.0) -> AskRequest:
    return AskRequest(
        task="extract_fields",
        inputs={"text": "Invoice INV-1"},
        output_schema={"type": "object", "properties": {"number": {"type": "string"}}},
        provider_name="openai",
        provider=ProviderSpec(
            kind="openai", base_url=llm.openai_base_url, api_key_env=KEY_ENV, timeout_s=timeout_s
        ),
        model="gpt-telemetry",
    )


def _chat_spans(model: str) -> list[ReadableSpan]:
    trace.get_tracer_provider().force_flush()  # type: ignore[attr-defined]
    return [s for s in EXPORTER.get_finished_spans() if s.name == f"chat {model}"]


async def test_a_cancelled_model_call_is_an_error_span(llm: ScriptedLLMServer) -> None:
    configure_tracing(exporter=EXPORTER)
    EXPORTER.clear()
    llm.script("gpt-telemetry", Delay(30, Reply({"answer": {"number": "1"}, "confidence": 1})))
    env = ActivityEnvironment()
    call = asyncio.create_task(env.run(ask, _ask_request(llm)))

    async def requests_seen() -> int:
        return llm.count("gpt-telemetry")

    await eventually(requests_seen, lambda n: n == 1)
    env.cancel()
    with pytest.raises(BaseException):  # noqa: B017 - cancelled, as the SDK reports it
        await call
    (span,) = _chat_spans("gpt-telemetry")
    assert span.status.status_code == StatusCode.ERROR
    assert span.attributes is not None and span.attributes["error.type"] == "cancelled"


async def test_an_answer_records_its_finish_reasons(llm: ScriptedLLMServer) -> None:
    configure_tracing(exporter=EXPORTER)
    EXPORTER.clear()
    llm.script("gpt-telemetry", Reply({"answer": {"number": "1"}, "confidence": 1}))
    await ActivityEnvironment().run(ask, _ask_request(llm))
    (span,) = _chat_spans("gpt-telemetry")
    assert span.attributes is not None
    assert span.attributes["gen_ai.response.finish_reasons"] == ("stop",)
    assert span.attributes["gen_ai.request.max_tokens"] == 1024


async def test_a_timed_out_call_fails_with_a_short_message_and_no_chained_trace(
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-telemetry", Delay(5, Reply({"answer": {"number": "1"}, "confidence": 1})))
    with pytest.raises(ApplicationError) as failure:
        await ActivityEnvironment().run(ask, _ask_request(llm, timeout_s=0.3))
    assert failure.value.type == "ProviderTimeout"
    assert failure.value.__cause__ is None and failure.value.__suppress_context__
    assert len(failure.value.message) <= MESSAGE_LIMIT


def test_a_provider_message_of_any_size_is_bounded() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    huge = openai.BadRequestError(
        "x" * 20_000, response=httpx.Response(400, request=request), body=None
    )
    error = as_application_error(huge, provider="openai", model="m", key_env="K")
    assert len(error.message) <= MESSAGE_LIMIT
    assert "rejected the request (400)" in error.message
