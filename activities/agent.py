"""The `agent_turn` activity: one model turn of an Agent with one provider
and model. The workflow keeps the transcript and runs the tools; this only
asks the model what it does next (baton.nodes.agent), with the text of the
documents the Agent reads by reference in their place. A turn takes a slot
of its provider's max_concurrency, as an Ask's attempt does, and is a
GenAI span in the run's trace."""

from __future__ import annotations

import asyncio

from temporalio import activity

from activities.llm import model_call, provider_for, provider_slot, with_document_texts
from baton.llm.offline import OfflineProvider
from baton.llm.turns import TurnAnswer, TurnRequest
from baton.nodes.agent import AGENT_TURN_ACTIVITY
from baton.telemetry import model_call_span, record_answer


@activity.defn(name=AGENT_TURN_ACTIVITY)
async def agent_turn(request: TurnRequest) -> TurnAnswer:
    with model_call_span(request) as span:
        async with model_call(span, request.provider):
            provider = await provider_for(request.provider_name, request.provider)
            asked = await asyncio.to_thread(with_document_texts, request)
            async with provider_slot(request.provider_name, request.provider):
                answer = await _turn(provider, asked)
        record_answer(span, answer)
        return answer


async def _turn(provider: object, request: TurnRequest) -> TurnAnswer:
    if isinstance(provider, OfflineProvider):
        return await provider.turn(request)
    # The SDK adapters are imported on first use, as the providers are
    # (activities.llm._new_provider): a worker loads only the SDKs it needs.
    if request.provider.kind == "anthropic":
        from baton.llm.anthropic_messages import AnthropicMessages
        from baton.llm.turns_anthropic import anthropic_turn

        assert isinstance(provider, AnthropicMessages)
        return await anthropic_turn(provider, request)
    from baton.llm.openai_chat import OpenAIChat
    from baton.llm.turns_openai import openai_turn

    assert isinstance(provider, OpenAIChat)
    return await openai_turn(provider, request)
