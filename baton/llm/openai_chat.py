"""OpenAI chat completions with JSON-schema structured output, through the
`openai` SDK. Also serves any OpenAI-compatible server (vLLM, Ollama,
llama.cpp) by base URL: the self-hosted path."""

from __future__ import annotations

import math
import os
from typing import Any

import openai

from baton.llm import AskAnswer, AskRequest
from baton.llm.faults import as_application_error
from baton.llm.prompt import answer_schema, prompt, read_reply

# Self-hosted servers often need no key, but the SDK insists on one.
NO_KEY = "not-needed"


class OpenAIChat:
    def __init__(self, name: str, client: openai.AsyncOpenAI, *, key_env: str | None) -> None:
        self.name = name
        self._client = client
        self._key_env = key_env

    @classmethod
    def from_spec(
        cls, name: str, *, base_url: str | None, key_env: str | None, timeout_s: float
    ) -> OpenAIChat:
        key = os.environ.get(key_env, "") if key_env else NO_KEY
        client = openai.AsyncOpenAI(
            base_url=base_url, api_key=key or NO_KEY, max_retries=0, timeout=timeout_s
        )
        return cls(name, client, key_env=key_env)

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
            raise as_application_error(
                err, provider=self.name, model=request.model, key_env=self._key_env
            ) from err
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
