"""One run's spans: Temporal's workflow and activity spans and the GenAI span
of the model call, in one trace."""

from __future__ import annotations

import socket
import uuid

from opentelemetry import trace
from opentelemetry.sdk.trace import ReadableSpan
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter
from temporalio.client import Client
from temporalio.contrib.opentelemetry import TracingInterceptor
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import build_input, start_run
from baton.telemetry import configure_tracing
from tests.conftest import SAMPLES
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
