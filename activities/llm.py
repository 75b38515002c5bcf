"""The `ask` activity: one attempt at an LLM task with one provider and model.

The workflow plans the cascade and calls this once per attempt, so every
attempt (and every Temporal retry of it) is its own entry in history."""

from __future__ import annotations

import asyncio

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.llm import AskAnswer, AskRequest, Provider, UnknownTaskError
from baton.llm.offline import OfflineProvider
from baton.routing import ProviderSpec
from baton.runner import ASK_ACTIVITY
from baton.telemetry import model_call_span, record_answer, record_error

# One client per provider configuration, so connections are pooled across attempts.
_clients: dict[str, Provider] = {}


def provider_for(name: str, spec: ProviderSpec) -> Provider:
    cache_key = f"{name}:{spec.model_dump_json()}"
    provider = _clients.get(cache_key)
    if provider is None:
        # The SDKs are imported when a provider first needs them: together
        # they took 3 of the 4 s a worker needed to start, which is time a
        # restarted worker's runs wait (bench/resume.py).
        if spec.kind == "offline":
            provider = OfflineProvider()
        elif spec.kind == "anthropic":
            from baton.llm.anthropic_messages import AnthropicMessages

            provider = AnthropicMessages.from_spec(
                name, base_url=spec.base_url, key_env=spec.api_key_env, timeout_s=spec.timeout_s
            )
        else:
            from baton.llm.openai_chat import OpenAIChat

            provider = OpenAIChat.from_spec(
                name, base_url=spec.base_url, key_env=spec.api_key_env, timeout_s=spec.timeout_s
            )
        _clients[cache_key] = provider
    return provider


# Twice per send of the worker's heartbeat throttle (worker.HEARTBEAT_THROTTLE):
# a beat recorded late still finds the next send.
HEARTBEAT_EVERY = 0.5


async def _heartbeat() -> None:
    while True:
        activity.heartbeat()
        await asyncio.sleep(HEARTBEAT_EVERY)


@activity.defn(name=ASK_ACTIVITY)
async def ask(request: AskRequest) -> AskAnswer:
    """Heartbeats while the model works: Temporal then tells a slow model
    (alive, heartbeating) from a lost worker (silent) within seconds."""
    provider = provider_for(request.provider_name, request.provider)
    beat = asyncio.create_task(_heartbeat())
    with model_call_span(request) as span:
        try:
            answer = await provider.ask(request)
        except UnknownTaskError as err:
            failure = ApplicationError(str(err), type="UnknownTask", non_retryable=True)
            record_error(span, failure)
            raise failure from None
        except Exception as err:
            record_error(span, err)
            raise
        finally:
            beat.cancel()
        record_answer(span, answer)
        return answer
