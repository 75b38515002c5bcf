"""Agent turns through the `openai` SDK's chat completions: Baton's tools
as `tools` of type function, the model's `tool_calls` back. Serves
OpenAI-compatible servers too (vLLM, llama.cpp, Ollama). Streamed as an
Ask is (OpenAIChat.complete), for the same reason."""

from __future__ import annotations

import json
from typing import Any

import openai

from baton.llm.openai_chat import OpenAIChat, sampling
from baton.llm.turns import ToolCall, TurnAnswer, TurnRequest, parse_arguments, turn_answer


async def openai_turn(provider: OpenAIChat, request: TurnRequest) -> TurnAnswer:
    try:
        reply = await provider.complete(
            request.provider.timeout_s,
            model=request.model,
            messages=_messages(request),
            tools=[
                {
                    "type": "function",
                    "function": {
                        "name": s.name,
                        "description": s.description,
                        "parameters": s.parameters,
                    },
                }
                for s in request.specs()
            ],
            **sampling(
                request.provider.kind,
                max_tokens=request.max_tokens,
                temperature=request.temperature,
            ),
        )
    except (openai.OpenAIError, TimeoutError) as err:
        raise provider.failure(err, request.model) from None
    calls = []
    for _, call in sorted(reply.calls.items()):
        arguments, error = parse_arguments("".join(call.arguments))
        calls.append(
            ToolCall(id=call.id, name=call.name, arguments=arguments, arguments_error=error)
        )
    return turn_answer(calls, "".join(reply.content), reply.served(provider.name, request.model))


def _messages(request: TurnRequest) -> list[dict[str, Any]]:
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": request.system_prompt()},
        {"role": "user", "content": request.task_message()},
    ]
    for message in request.messages:
        if message.role == "assistant":
            said: dict[str, Any] = {"role": "assistant", "content": message.content or None}
            if message.tool_calls:
                said["tool_calls"] = [
                    {
                        "id": c.id,
                        "type": "function",
                        "function": {"name": c.name, "arguments": json.dumps(c.arguments)},
                    }
                    for c in message.tool_calls
                ]
            messages.append(said)
        elif message.role == "tool":
            messages.append(
                {"role": "tool", "tool_call_id": message.tool_call_id, "content": message.content}
            )
        else:
            messages.append({"role": "user", "content": message.content})
    return messages
