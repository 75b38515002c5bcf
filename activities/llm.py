"""The `ask` activity: one attempt at an LLM task with one provider and model.

The workflow plans the cascade and calls this once per attempt, so every
attempt (and every Temporal retry of it) is its own entry in history."""

from __future__ import annotations

import asyncio
import contextlib
import importlib
from collections.abc import AsyncIterator
from typing import TypeVar

from opentelemetry.trace import Span
from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.document_store import DocumentError, DocumentRef, decode_text, document_store
from baton.llm import AskAnswer, AskRequest, ModelRequest, Provider, UnknownTaskError
from baton.llm.offline import OfflineProvider
from baton.routing import ProviderSpec, RoutingConfig
from baton.runner import ASK_ACTIVITY
from baton.telemetry import model_call_span, record_answer, record_cancelled, record_error

# One client per provider configuration, so connections are pooled across attempts.
_clients: dict[str, Provider] = {}
# The slots of each provider with a max_concurrency, shared by every attempt
# this worker runs: 16 runs against a one-slot server each timed out while
# queued at the server.
_slots: dict[str, asyncio.Semaphore] = {}


async def provider_for(name: str, spec: ProviderSpec) -> Provider:
    cache_key = f"{name}:{spec.model_dump_json()}"
    provider = _clients.get(cache_key)
    if provider is None:
        # Made off the event loop: the first one imports its SDK, 2 to 5 s
        # that would stop this activity's heartbeats (its timeout is 3 s) and
        # every other activity of the worker.
        provider = _clients[cache_key] = await asyncio.to_thread(_new_provider, name, spec)
    return provider


SDK_MODULES = {
    "openai": "baton.llm.openai_chat",
    "openai_compatible": "baton.llm.openai_chat",
    "anthropic": "baton.llm.anthropic_messages",
}


def preload_sdks(routing: RoutingConfig) -> None:
    """Import the SDKs of the providers the routing uses, at worker start:
    seconds the worker spends before it polls, not in a run's first call."""
    for name in sorted(routing.providers_in_use()):
        module = SDK_MODULES.get(routing.providers[name].kind)
        if module is not None:
            importlib.import_module(module)


def _new_provider(name: str, spec: ProviderSpec) -> Provider:
    # A worker imports only the SDKs its routing uses (preload_sdks): both
    # together took 3 of the 4 s a worker needed to start, which is time a
    # restarted worker's runs wait (bench/resume.py). A provider a test or an
    # embedder configures in code imports its SDK here, on first use.
    if spec.kind == "offline":
        return OfflineProvider()
    if spec.kind == "anthropic":
        from baton.llm.anthropic_messages import AnthropicMessages

        return AnthropicMessages.from_spec(
            name, base_url=spec.base_url, key_env=spec.api_key_env, timeout_s=spec.timeout_s
        )
    from baton.llm.openai_chat import OpenAIChat

    return OpenAIChat.from_spec(
        name, base_url=spec.base_url, key_env=spec.api_key_env, timeout_s=spec.timeout_s
    )


# Twice per send of the worker's heartbeat throttle (worker.HEARTBEAT_THROTTLE):
# a beat recorded late still finds the next send.
HEARTBEAT_EVERY = 0.5


async def _heartbeat(timeouts: list[int]) -> None:
    # The details carry how often this attempt's request timed out to its
    # next try (activity.info().heartbeat_details). None are sent until one
    # did: details are a payload each beat, encoded and encrypted, for every
    # model call in flight (sent from the first beat, they cost the intake
    # benchmark 5 to 10% of its throughput).
    while True:
        activity.heartbeat(*timeouts[:1] if timeouts[0] else ())
        await asyncio.sleep(HEARTBEAT_EVERY)


def _timeouts_so_far() -> int:
    details = activity.info().heartbeat_details
    return details[0] if details and isinstance(details[0], int) else 0


@contextlib.asynccontextmanager
async def provider_slot(name: str, spec: ProviderSpec) -> AsyncIterator[None]:
    """A slot of the provider's max_concurrency, waited for before the
    request is sent, so the request's timeout starts only then."""
    if spec.max_concurrency is None:
        yield
        return
    key = f"{name}:{spec.max_concurrency}"
    slots = _slots.setdefault(key, asyncio.Semaphore(spec.max_concurrency))
    try:
        async with asyncio.timeout(spec.queue_timeout_s):
            await slots.acquire()
    except TimeoutError:
        raise ApplicationError(
            f"{name} had no free slot of {spec.max_concurrency} in {spec.queue_timeout_s:g}s",
            type="ProviderBusy",
        ) from None
    try:
        yield
    finally:
        slots.release()


def _bounded_timeouts(failure: ApplicationError, timeouts: int, retries: int) -> ApplicationError:
    """A timed-out request is sent again at most ``retries`` times; then the
    candidate has failed and the cascade moves on (non-retryable)."""
    if timeouts <= retries:
        return failure
    return ApplicationError(
        f"{failure.message} ({timeouts} times; the routing allows {retries} retries)",
        type=failure.type,
        non_retryable=True,
    )


Request = TypeVar("Request", bound=ModelRequest)


def with_document_texts(request: Request) -> Request:
    """The request as the model must see it: each document reference
    replaced by the document's text, read from the store here, so that the
    text reaches the model and never the run's history."""
    if not request.documents:
        return request
    store = document_store()
    inputs = dict(request.inputs)
    for name in request.documents:
        text, _ = decode_text(store.read(DocumentRef.model_validate(inputs[name])))
        inputs[name] = text
    return request.model_copy(update={"inputs": inputs})


@contextlib.asynccontextmanager
async def model_call(span: Span, spec: ProviderSpec) -> AsyncIterator[None]:
    """What every call of a model activity (an Ask's attempt, an Agent's
    turn) needs around it: heartbeats while the model works, so Temporal
    tells a slow model (alive, heartbeating) from a lost worker (silent)
    within seconds; failures as Temporal should see them, bounded in size
    and with timed-out requests retried at most the provider's
    ``timeout_retries`` times; and the span marked with how the call ended."""
    timeouts = [_timeouts_so_far()]
    beat = asyncio.create_task(_heartbeat(timeouts))
    try:
        yield
    except ApplicationError as err:
        failure = err
        if err.type == "ProviderTimeout":
            timeouts[0] += 1
            activity.heartbeat(timeouts[0])
            failure = _bounded_timeouts(err, timeouts[0], spec.timeout_retries)
        record_error(span, failure)
        raise failure from None
    except asyncio.CancelledError:
        record_cancelled(span)
        raise
    except (UnknownTaskError, DocumentError) as err:
        kind = "UnknownTask" if isinstance(err, UnknownTaskError) else type(err).__name__
        failure = ApplicationError(str(err), type=kind, non_retryable=True)
        record_error(span, failure)
        raise failure from None
    except Exception as err:
        record_error(span, err)
        raise
    finally:
        beat.cancel()


@activity.defn(name=ASK_ACTIVITY)
async def ask(request: AskRequest) -> AskAnswer:
    with model_call_span(request) as span:
        async with model_call(span, request.provider):
            provider = await provider_for(request.provider_name, request.provider)
            asked = await asyncio.to_thread(with_document_texts, request)
            async with provider_slot(request.provider_name, request.provider):
                answer = await provider.ask(asked)
        record_answer(span, answer)
        return answer
