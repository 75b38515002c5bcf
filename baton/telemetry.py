"""OpenTelemetry: workflow and activity spans from Temporal's tracing
interceptor, and a GenAI span (semantic-convention `gen_ai.*` attributes)
around every model call, all in the run's trace.

Spans go to the OTLP endpoint in OTEL_EXPORTER_OTLP_ENDPOINT when it is set,
else to the console exporter (on stderr, or a file the caller names)."""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from typing import IO, Any

from opentelemetry import trace
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import (
    BatchSpanProcessor,
    ConsoleSpanExporter,
    SpanExporter,
)
from opentelemetry.trace import Span, SpanKind, Status, StatusCode

from baton.llm import AskAnswer, AskRequest
from baton.llm.turns import TurnAnswer, TurnRequest

SERVICE = "baton-worker"


def configure_tracing(
    *, exporter: SpanExporter | None = None, console: IO[str] | None = None
) -> TracerProvider:
    """Install the process-wide tracer provider (once; later calls reuse it)."""
    current = trace.get_tracer_provider()
    if isinstance(current, TracerProvider):
        return current
    if exporter is None:
        if os.environ.get("OTEL_EXPORTER_OTLP_ENDPOINT"):
            from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

            exporter = OTLPSpanExporter()
        else:
            exporter = ConsoleSpanExporter(out=console) if console else ConsoleSpanExporter()
    provider = TracerProvider(resource=Resource.create({"service.name": SERVICE}))
    provider.add_span_processor(BatchSpanProcessor(exporter))
    trace.set_tracer_provider(provider)
    return provider


def _provider_name(request: AskRequest | TurnRequest) -> str:
    # The registry's well-known names for the hosted APIs; a self-hosted
    # server is named as the routing file names it.
    if request.provider.kind in ("openai", "anthropic"):
        return request.provider.kind
    return request.provider_name


@contextmanager
def model_call_span(request: AskRequest | TurnRequest) -> Iterator[Span]:
    """The span of one model call: an Ask's attempt (a JSON answer) or an
    Agent's turn (tool calls or a final answer)."""
    attributes: dict[str, Any] = {
        "gen_ai.operation.name": "chat",
        "gen_ai.provider.name": _provider_name(request),
        "gen_ai.request.model": request.model,
        "gen_ai.request.max_tokens": request.max_tokens,
        "baton.task": request.task,
    }
    if isinstance(request, AskRequest):
        attributes["gen_ai.output.type"] = "json"
    else:
        turns_so_far = sum(1 for m in request.messages if m.role == "assistant")
        attributes["baton.agent_turn"] = turns_so_far + 1
    if request.temperature is not None:
        attributes["gen_ai.request.temperature"] = request.temperature
    if request.provider.base_url:
        attributes["server.address"] = request.provider.base_url
    tracer = trace.get_tracer("baton.llm")
    with tracer.start_as_current_span(
        f"chat {request.model}", kind=SpanKind.CLIENT, attributes=attributes
    ) as span:
        yield span


def record_answer(span: Span, answer: AskAnswer | TurnAnswer) -> None:
    finish_reasons = [answer.finish_reason] if answer.finish_reason else []
    span.set_attributes(
        {
            "gen_ai.response.model": answer.model,
            "gen_ai.response.id": answer.response_id,
            "gen_ai.response.finish_reasons": finish_reasons,
            "gen_ai.usage.input_tokens": answer.input_tokens,
            "gen_ai.usage.output_tokens": answer.output_tokens,
        }
    )
    if isinstance(answer, AskAnswer):
        span.set_attributes(
            {
                "baton.confidence": answer.confidence,
                "baton.confidence_method": answer.confidence_method,
            }
        )
    else:
        span.set_attribute("baton.tool_calls", [c.name for c in answer.tool_calls])


def record_error(span: Span, err: BaseException) -> None:
    span.set_attribute("error.type", getattr(err, "type", None) or type(err).__name__)
    span.set_status(Status(StatusCode.ERROR, str(err)))


def record_cancelled(span: Span) -> None:
    """A call cut short by a stop or a cancelled run: it gave no answer, so
    it is not a success (the span's own handling leaves a CancelledError
    unset, which reads as one)."""
    span.set_attribute("error.type", "cancelled")
    span.set_status(Status(StatusCode.ERROR, "the call was cancelled before it answered"))
