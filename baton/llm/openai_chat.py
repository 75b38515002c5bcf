"""OpenAI chat completions with JSON-schema structured output, through the
`openai` SDK. Also serves any OpenAI-compatible server (vLLM, Ollama,
llama.cpp) by base URL: the self-hosted path."""

from __future__ import annotations

import asyncio
import math
from dataclasses import dataclass, field
from typing import Any

import openai
from openai.types import CompletionUsage
from openai.types.chat import ChatCompletionChunk, ChatCompletionTokenLogprob

from baton.llm import AskAnswer, AskRequest, Served
from baton.llm.prompt import CONFIDENCE_FIELD, answer_schema, bounded_reply, prompt, read_reply
from baton.llm.sdk_provider import SdkProvider

# Self-hosted servers often need no key, but the SDK insists on one.
NO_KEY = "not-needed"
_SPACE = b" \t\r\n"
_STRUCTURE = b"{}[],:"


def sampling(
    kind: str, *, max_tokens: int, temperature: float | None, logprobs: bool = False
) -> dict[str, Any]:
    """The request's optional parameters, only those the candidate accepts:
    a reasoning model refuses a temperature and log-probabilities with a
    400. OpenAI's reasoning models take the output cap only under its newer
    name; servers that speak its API (llama.cpp, vLLM, Ollama) know the older."""
    optional: dict[str, Any] = {
        "max_completion_tokens" if kind == "openai" else "max_tokens": max_tokens
    }
    if temperature is not None:
        optional["temperature"] = temperature
    if logprobs:
        optional["logprobs"] = True
    return optional


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
        optional = sampling(
            request.provider.kind,
            max_tokens=request.max_tokens,
            temperature=request.temperature,
            logprobs=request.logprobs,
        )
        try:
            reply = await self.complete(
                request.provider.timeout_s,
                model=request.model,
                messages=[
                    {"role": "system", "content": system},
                    {"role": "user", "content": user},
                ],
                response_format={
                    "type": "json_schema",
                    "json_schema": {
                        "name": request.task,
                        "schema": answer_schema(request.output_schema),
                        "strict": True,
                    },
                },
                **optional,
            )
        except (openai.OpenAIError, TimeoutError) as err:
            raise self.failure(err, request.model) from None
        content = "".join(reply.content)
        output, reported, format_errors = read_reply(
            content, finish_reason=reply.finish_reason, max_tokens=request.max_tokens
        )
        confidence, method = _confidence(reply.tokens, reported)
        return AskAnswer(
            output=output,
            format_errors=format_errors,
            confidence=confidence,
            confidence_method=method,
            raw_reply=bounded_reply(content),
            **reply.served(self.name, request.model),
        )

    async def complete(self, timeout_s: float, **params: Any) -> StreamedReply:
        """A chat completion, streamed and assembled, in at most `timeout_s`
        from its send. Streamed so that a stop, timeout or cancellation,
        which closes the stream, ends the generation too: llama.cpp wrote a
        non-streamed reply to its end for a client long gone, its one slot
        busy for the next request (5 to 29 s after a stop)."""
        reply = StreamedReply()
        # The SDK's timeout bounds each read of a stream, not the reply.
        async with asyncio.timeout(timeout_s):
            stream = await self._client.chat.completions.create(
                stream=True, stream_options={"include_usage": True}, **params
            )
            async with stream:
                async for chunk in stream:
                    reply.add(chunk)
        return reply


@dataclass
class StreamedCall:
    """A tool call of a streamed reply, its arguments in the pieces they came in."""

    id: str = ""
    name: str = ""
    arguments: list[str] = field(default_factory=list)


@dataclass
class StreamedReply:
    """A streamed reply, assembled from its chunks as the whole reply would
    have come."""

    id: str = ""
    model: str = ""
    content: list[str] = field(default_factory=list)
    tokens: list[ChatCompletionTokenLogprob] = field(default_factory=list)
    calls: dict[int, StreamedCall] = field(default_factory=dict)
    finish_reason: str = ""
    usage: CompletionUsage | None = None

    def served(self, provider: str, asked_model: str) -> Served:
        usage = self.usage
        return Served(
            provider=provider,
            model=self.model or asked_model,
            response_id=self.id,
            finish_reason=self.finish_reason,
            input_tokens=usage.prompt_tokens if usage else 0,
            output_tokens=usage.completion_tokens if usage else 0,
        )

    def add(self, chunk: ChatCompletionChunk) -> None:
        self.id = self.id or chunk.id
        self.model = self.model or chunk.model
        # With include_usage it comes last, in a chunk without choices.
        self.usage = chunk.usage or self.usage
        if not chunk.choices:
            return
        choice = chunk.choices[0]
        if choice.delta.content:
            self.content.append(choice.delta.content)
        if choice.logprobs and choice.logprobs.content:
            self.tokens.extend(choice.logprobs.content)
        for fragment in choice.delta.tool_calls or []:
            # A call's id and name come in its first fragment, its arguments
            # in pieces after it.
            call = self.calls.setdefault(fragment.index, StreamedCall())
            call.id = call.id or fragment.id or ""
            if fragment.function:
                call.name = call.name or fragment.function.name or ""
                call.arguments.append(fragment.function.arguments or "")
        self.finish_reason = choice.finish_reason or self.finish_reason


def _confidence(
    tokens: list[ChatCompletionTokenLogprob], reported: float | None
) -> tuple[float, str]:
    """The geometric mean probability of the tokens that spell the answer's
    values, when the server returns log-probabilities, else the model's own
    report. Keys, punctuation and whitespace are left out: under a grammar
    they are all but certain and drowned the values (valid answers scored
    0.11 to 0.23, degenerate repetition 0.71 to 0.97)."""
    if tokens:
        pieces = [bytes(t.bytes) if t.bytes is not None else t.token.encode() for t in tokens]
        spans = value_spans(b"".join(pieces))
        counted: list[float] = []
        start = 0
        for token, piece in zip(tokens, pieces, strict=True):
            end = start + len(piece)
            if any(s < end and start < e for s, e in spans):
                counted.append(token.logprob)
            start = end
        if counted:
            return math.exp(sum(counted) / len(counted)), "token_logprobs"
    if reported is not None:
        return reported, "self_reported"
    return 0.0, "unreported"


def value_spans(text: bytes) -> list[tuple[int, int]]:
    """Byte ranges of the answer's values in a JSON reply (the content of
    strings, numbers, true, false, null), without the object keys and
    without the self-reported confidence. Tolerant of a cut reply."""
    spans: list[tuple[int, int]] = []
    # One entry per open object or array: does an object expect a key next?
    open_: list[bool | None] = []
    top_key = b""
    i, n = 0, len(text)
    while i < n:
        c = text[i : i + 1]
        if c in (b"{", b"["):
            open_.append(True if c == b"{" else None)
            i += 1
        elif c in (b"}", b"]"):
            if open_:
                open_.pop()
            i += 1
        elif c == b",":
            if open_ and open_[-1] is not None:
                open_[-1] = True
            i += 1
        elif c == b":":
            if open_ and open_[-1] is not None:
                open_[-1] = False
            i += 1
        elif c in (b" ", b"\t", b"\r", b"\n"):
            i += 1
        elif c == b'"':
            end = i + 1
            while end < n and text[end : end + 1] != b'"':
                end += 2 if text[end : end + 1] == b"\\" else 1
            if open_ and open_[-1] is True:
                if len(open_) == 1:
                    top_key = text[i + 1 : end]
            elif top_key != CONFIDENCE_FIELD.encode():
                # An empty string is its quotes.
                spans.append((i + 1, end) if end > i + 1 else (i, min(end + 1, n)))
            i = end + 1
        else:
            end = i
            while end < n and text[end] not in _SPACE + _STRUCTURE:
                end += 1
            if top_key != CONFIDENCE_FIELD.encode():
                spans.append((i, end))
            i = end
    return spans
