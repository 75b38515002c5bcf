"""OpenAI chat completions with JSON-schema structured output, through the
`openai` SDK. Also serves any OpenAI-compatible server (vLLM, Ollama,
llama.cpp) by base URL: the self-hosted path."""

from __future__ import annotations

import math
from typing import Any

import openai

from baton.llm import AskAnswer, AskRequest
from baton.llm.prompt import answer_schema, prompt, read_reply
from baton.llm.sdk_provider import SdkProvider

# Self-hosted servers often need no key, but the SDK insists on one.
NO_KEY = "not-needed"


class OpenAIChat(SdkProvider[openai.AsyncOpenAI]):
    @staticmethod
    def new_client(
        *, base_url: str | None, api_key: str | None, timeout_s: float
    ) -> openai.AsyncOpenAI:
        return openai.AsyncOpenAI(
            base_url=base_url, api_key=api_key or NO_KEY, max_retries=0, timeout=timeout_s
        )

    async def ask(self, request: AskRequest) -> AskAnswer:
        system, user = prompt(request)
        try:
            response = await self._client.chat.completions.create(
                model=request.model,
                messages=[{"role": "system", "content": system}, {"role": "user", "content": user}],
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": request.task,
                        "schema": answer_schema(request.output_schema),
                    },
                },
                logprobs=True,
                temperature=0,
            )
        except openai.OpenAIError as err:
            raise self.failure(err, request) from err
        choice = response.choices[0]
        output, reported, format_errors = read_reply(choice.message.content or "")
        confidence, method = _confidence(choice, reported)
        usage = response.usage
        return AskAnswer(
            output=output,
            format_errors=format_errors,
            confidence=confidence,
            confidence_method=method,
            provider=self.name,
            model=response.model or request.model,
            response_id=response.id,
            finish_reason=choice.finish_reason or "",
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )


def _confidence(choice: Any, reported: float | None) -> tuple[float, str]:
    """Token log-probabilities when the server returns them (the geometric
    mean token probability of the reply), else the model's own report."""
    tokens = choice.logprobs.content if choice.logprobs else None
    if tokens:
        mean = sum(t.logprob for t in tokens) / len(tokens)
        return math.exp(mean), "token_logprobs"
    if reported is not None:
        return reported, "self_reported"
    return 0.0, "unreported"
