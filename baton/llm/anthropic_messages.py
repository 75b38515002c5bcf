"""Anthropic messages through the `anthropic` SDK. Structured output comes
from a forced tool call whose input schema is the task's answer schema."""

from __future__ import annotations

import json
from typing import Any

import anthropic

from baton.llm import AskAnswer, AskRequest, Served
from baton.llm.prompt import answer_schema, bounded_reply, prompt, read_reply
from baton.llm.sdk_provider import SdkProvider

ANSWER_TOOL = "record_answer"


class AnthropicMessages(SdkProvider[anthropic.AsyncAnthropic]):
    @staticmethod
    def new_client(
        *, base_url: str | None, api_key: str | None, timeout_s: float
    ) -> anthropic.AsyncAnthropic:
        return anthropic.AsyncAnthropic(
            base_url=base_url, api_key=api_key, max_retries=0, timeout=timeout_s
        )

    async def ask(self, request: AskRequest) -> AskAnswer:
        system, user = prompt(request)
        try:
            message = await self._client.messages.create(
                model=request.model,
                max_tokens=request.max_tokens,
                system=system,
                messages=[{"role": "user", "content": user}],
                tools=[
                    {
                        "name": ANSWER_TOOL,
                        "description": f"Record the answer to the task '{request.task}'.",
                        "input_schema": answer_schema(request.output_schema),
                    }
                ],
                tool_choice={"type": "tool", "name": ANSWER_TOOL},
            )
        except anthropic.AnthropicError as err:
            raise self.failure(err, request.model) from None
        reply: str | dict[str, Any] = ""
        for block in message.content:
            if block.type == "tool_use" and block.name == ANSWER_TOOL:
                reply = dict(block.input) if isinstance(block.input, dict) else str(block.input)
                break
            if block.type == "text":
                reply = block.text
        output, reported, format_errors = read_reply(
            reply, finish_reason=message.stop_reason or "", max_tokens=request.max_tokens
        )
        raw = reply if isinstance(reply, str) else json.dumps(reply, ensure_ascii=False)
        return AskAnswer(
            output=output,
            format_errors=format_errors,
            confidence=reported if reported is not None else 0.0,
            confidence_method="self_reported" if reported is not None else "unreported",
            raw_reply=bounded_reply(raw),
            **served(self.name, message, request.model),
        )


def served(provider: str, message: anthropic.types.Message, asked_model: str) -> Served:
    return Served(
        provider=provider,
        model=message.model or asked_model,
        response_id=message.id,
        finish_reason=message.stop_reason or "",
        input_tokens=message.usage.input_tokens,
        output_tokens=message.usage.output_tokens,
    )
