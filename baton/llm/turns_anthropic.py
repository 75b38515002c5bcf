"""Agent turns through the `anthropic` SDK's messages: Baton's tools as
`tools`, the model's `tool_use` blocks back, tool results as `tool_result`
blocks of the next user message."""

from __future__ import annotations

from typing import Any

import anthropic

from baton.llm.anthropic_messages import AnthropicMessages, served
from baton.llm.turns import ToolCall, TurnAnswer, TurnRequest, turn_answer


async def anthropic_turn(provider: AnthropicMessages, request: TurnRequest) -> TurnAnswer:
    try:
        message = await provider.client.messages.create(
            model=request.model,
            max_tokens=request.max_tokens,
            system=request.system_prompt(),
            messages=_messages(request),  # type: ignore[arg-type]
            tools=[
                {"name": s.name, "description": s.description, "input_schema": s.parameters}
                for s in request.specs()
            ],
        )
    except anthropic.AnthropicError as err:
        raise provider.failure(err, request.model) from None
    calls = [
        ToolCall(id=b.id, name=b.name, arguments=b.input if isinstance(b.input, dict) else {})
        for b in message.content
        if b.type == "tool_use"
    ]
    text = "".join(b.text for b in message.content if b.type == "text")
    return turn_answer(calls, text, served(provider.name, message, request.model))


def _messages(request: TurnRequest) -> list[dict[str, Any]]:
    """The transcript in Anthropic's shape: a tool's results, and what Baton
    tells the model after them, go back in one user message."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "text", "text": request.task_message()}]}
    ]
    for message in request.messages:
        if message.role == "assistant":
            blocks: list[dict[str, Any]] = (
                [{"type": "text", "text": message.content}] if message.content else []
            )
            blocks += [
                {"type": "tool_use", "id": c.id, "name": c.name, "input": c.arguments}
                for c in message.tool_calls
            ]
            messages.append(
                {"role": "assistant", "content": blocks or [{"type": "text", "text": "(nothing)"}]}
            )
            continue
        if message.role == "tool":
            block: dict[str, Any] = {
                "type": "tool_result",
                "tool_use_id": message.tool_call_id,
                "content": message.content,
                "is_error": message.is_error,
            }
        else:
            block = {"type": "text", "text": message.content}
        if messages[-1]["role"] == "user":
            messages[-1]["content"].append(block)
        else:
            messages.append({"role": "user", "content": [block]})
    return messages
