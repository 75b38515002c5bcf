"""The `ask` activity: one attempt at an LLM task with one provider and model.

The workflow plans the cascade and calls this once per attempt, so every
attempt (and every Temporal retry of it) is its own entry in history."""

from __future__ import annotations

import asyncio
import importlib

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.document_store import DocumentError, DocumentRef, decode_text, document_store
from baton.llm import AskAnswer, AskRequest, Provider, UnknownTaskError
from baton.llm.offline import OfflineProvider
from baton.routing import ProviderSpec, RoutingConfig
from baton.runner import ASK_ACTIVITY
from baton.telemetry import model_call_span, record_answer, record_error

# One client per provider configuration, so connections are pooled across attempts.
_clients: dict[str, Provider] = {}


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


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY)


def with_document_texts(request: AskRequest) -> AskRequest:
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


@activity.defn(name=ASK_ACTIVITY)
async def ask(request: AskRequest) -> AskAnswer:
    """Heartbeats while the model works: Temporal then tells a slow model
    (alive, heartbeating) from a lost worker (silent) within seconds."""
    beat = asyncio.create_task(_heartbeat())
    with model_call_span(request) as span:
        try:
            provider = await provider_for(request.provider_name, request.provider)
            answer = await provider.ask(await asyncio.to_thread(with_document_texts, request))
        except UnknownTaskError as err:
            failure = ApplicationError(str(err), type="UnknownTask", non_retryable=True)
            record_error(span, failure)
            raise failure from None
        except DocumentError as err:
            failure = ApplicationError(str(err), type=type(err).__name__, non_retryable=True)
            record_error(span, failure)
            raise failure from None
        except Exception as err:
            record_error(span, err)
            raise
        finally:
            beat.cancel()
        record_answer(span, answer)
        return answer
