"""The fake LLM server against the real openai and anthropic SDKs, over real HTTP."""

from __future__ import annotations

import asyncio
import json
import math
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest
from openai.types.chat import ChatCompletionChunk
from temporalio.exceptions import ApplicationError

from baton.llm import AskRequest
from baton.llm.openai_chat import OpenAIChat
from baton.llm.turns import ToolCall, TurnAnswer, TurnRequest, parse_arguments
from baton.llm.turns_openai import openai_turn
from baton.routing import ProviderSpec
from baton.tools import ToolSpec
from tests.fake_llm import BrokenStream, Delay, Fault, Reply, ScriptedLLMServer, ToolCalls
from tests.helpers import eventually

SCHEMA: dict[str, Any] = {
    "type": "object",
    "properties": {"vendor": {"type": "string"}, "total": {"type": "number"}},
    "required": ["vendor", "total"],
}
OUTPUT = {"vendor": "ACME", "total": 12.5}


@pytest.fixture
def server() -> Iterator[ScriptedLLMServer]:
    with ScriptedLLMServer() as s:
        yield s


def oai(server: ScriptedLLMServer, **kwargs: Any) -> openai.OpenAI:
    return openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=0, **kwargs)


def claude(server: ScriptedLLMServer, **kwargs: Any) -> anthropic.Anthropic:
    return anthropic.Anthropic(
        base_url=server.anthropic_base_url, api_key="test", max_retries=0, **kwargs
    )


def ask_openai(client: openai.OpenAI, model: str = "gpt-test") -> Any:
    return client.chat.completions.create(
        model=model,
        messages=[{"role": "user", "content": "extract the invoice"}],
        response_format={"type": "json_schema", "json_schema": {"name": "x", "schema": SCHEMA}},
        logprobs=True,
    )


def ask_anthropic(client: anthropic.Anthropic, model: str = "claude-test") -> Any:
    return client.messages.create(
        model=model,
        max_tokens=1024,
        messages=[{"role": "user", "content": "extract the invoice"}],
        tools=[{"name": "record_answer", "description": "Record it.", "input_schema": SCHEMA}],
        tool_choice={"type": "tool", "name": "record_answer"},
    )


def test_openai_reply_round_trips(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Reply(OUTPUT, input_tokens=11, output_tokens=7, logprobs=[-0.1, -2]))

    completion = ask_openai(oai(server))

    assert isinstance(completion, openai.types.chat.ChatCompletion)
    choice = completion.choices[0]
    assert json.loads(choice.message.content or "") == OUTPUT
    assert choice.finish_reason == "stop"
    assert completion.model == "gpt-test"
    assert completion.usage is not None
    assert (completion.usage.prompt_tokens, completion.usage.completion_tokens) == (11, 7)
    assert completion.usage.total_tokens == 18
    assert choice.logprobs is not None and choice.logprobs.content is not None
    assert [t.logprob for t in choice.logprobs.content] == [-0.1, -2]

    (recorded,) = server.requests
    assert recorded.api == "openai"
    assert recorded.model == "gpt-test"
    assert recorded.body["messages"] == [{"role": "user", "content": "extract the invoice"}]
    assert recorded.body["response_format"]["json_schema"]["schema"] == SCHEMA
    assert recorded.body["logprobs"] is True
    assert recorded.headers["authorization"] == "Bearer test"


def test_anthropic_reply_is_a_forced_tool_call(server: ScriptedLLMServer) -> None:
    server.script("claude-test", Reply(OUTPUT, input_tokens=21, output_tokens=9))

    message = ask_anthropic(claude(server))

    assert isinstance(message, anthropic.types.Message)
    (block,) = message.content
    assert block.type == "tool_use"
    assert block.name == "record_answer"
    assert block.input == OUTPUT
    assert message.stop_reason == "tool_use"
    assert (message.usage.input_tokens, message.usage.output_tokens) == (21, 9)
    assert message.model == "claude-test"

    (recorded,) = server.requests
    assert recorded.api == "anthropic"
    assert recorded.body["tool_choice"] == {"type": "tool", "name": "record_answer"}
    # anthropic 2.x authenticates with a bearer token, not the old x-api-key header.
    assert recorded.headers["authorization"] == "Bearer test"
    assert "anthropic-version" in recorded.headers


def test_anthropic_without_tools_answers_text(server: ScriptedLLMServer) -> None:
    server.script("claude-test", Reply(OUTPUT))

    message = claude(server).messages.create(
        model="claude-test", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )

    (block,) = message.content
    assert block.type == "text"
    assert json.loads(block.text) == OUTPUT
    assert message.stop_reason == "end_turn"


def test_rate_limit_carries_retry_after(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Fault(429, "slow down", headers={"retry-after": "2"}))
    server.script("claude-test", Fault(429, "slow down", headers={"retry-after": "2"}))

    with pytest.raises(openai.RateLimitError) as oai_err:
        ask_openai(oai(server))
    with pytest.raises(anthropic.RateLimitError) as claude_err:
        ask_anthropic(claude(server))

    assert oai_err.value.response.headers["retry-after"] == "2"
    assert oai_err.value.status_code == 429
    assert "slow down" in oai_err.value.message
    assert claude_err.value.response.headers["retry-after"] == "2"
    assert claude_err.value.api_message == "slow down"


@pytest.mark.parametrize(
    ("status", "oai_error", "claude_error"),
    [
        (401, openai.AuthenticationError, anthropic.AuthenticationError),
        (500, openai.InternalServerError, anthropic.InternalServerError),
        (400, openai.BadRequestError, anthropic.BadRequestError),
        (404, openai.NotFoundError, anthropic.NotFoundError),
    ],
)
def test_status_maps_to_sdk_exception(
    server: ScriptedLLMServer,
    status: int,
    oai_error: type[Exception],
    claude_error: type[Exception],
) -> None:
    server.script("gpt-test", Fault(status))
    server.script("claude-test", Fault(status))

    with pytest.raises(oai_error):
        ask_openai(oai(server))
    with pytest.raises(claude_error):
        ask_anthropic(claude(server))


def test_delay_past_client_timeout_times_out(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Delay(2, Reply(OUTPUT)))
    server.script("claude-test", Delay(2, Reply(OUTPUT)))

    started = time.monotonic()
    with pytest.raises(openai.APITimeoutError):
        ask_openai(oai(server, timeout=0.5))
    with pytest.raises(anthropic.APITimeoutError):
        ask_anthropic(claude(server, timeout=0.5))
    assert time.monotonic() - started < 1.9


def test_delay_within_timeout_answers(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Delay(0.1, Reply(OUTPUT)))

    completion = ask_openai(oai(server, timeout=5))

    assert json.loads(completion.choices[0].message.content) == OUTPUT


def test_malformed_json_comes_back_verbatim(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Reply('{"vendor": "ACME", "total": '))

    completion = ask_openai(oai(server))

    assert completion.choices[0].message.content == '{"vendor": "ACME", "total": '


def test_steps_are_fifo_per_model(server: ScriptedLLMServer) -> None:
    server.script("a", Reply({"n": 1}), Fault(500))
    server.script("b", Reply({"n": 2}))
    server.script("a", Reply({"n": 3}))
    client = oai(server)

    assert json.loads(ask_openai(client, "a").choices[0].message.content) == {"n": 1}
    assert json.loads(ask_openai(client, "b").choices[0].message.content) == {"n": 2}
    with pytest.raises(openai.InternalServerError):
        ask_openai(client, "a")
    assert json.loads(ask_openai(client, "a").choices[0].message.content) == {"n": 3}

    assert [r.model for r in server.requests] == ["a", "b", "a", "a"]
    assert server.count("a") == 3
    assert [r.model for r in server.requests_for("b")] == ["b"]
    assert server.pending() == 0


def test_wildcard_script_serves_models_without_a_queue(server: ScriptedLLMServer) -> None:
    server.script("*", Reply({"from": "wildcard"}))
    server.script("own", Reply({"from": "own"}))
    client = oai(server)

    assert json.loads(ask_openai(client, "own").choices[0].message.content) == {"from": "own"}
    assert json.loads(ask_openai(client, "other").choices[0].message.content) == {
        "from": "wildcard"
    }


def test_unscripted_model_fails_loudly(server: ScriptedLLMServer) -> None:
    with pytest.raises(openai.InternalServerError, match="no scripted response left for model m"):
        ask_openai(oai(server), "m")
    with pytest.raises(anthropic.InternalServerError) as err:
        ask_anthropic(claude(server), "m")
    assert err.value.api_message == "no scripted response left for model m"


def test_unscripted_model_is_not_retried_by_the_sdk(server: ScriptedLLMServer) -> None:
    with pytest.raises(openai.InternalServerError):
        ask_openai(openai.OpenAI(base_url=server.openai_base_url, api_key="test"), "m")

    assert server.count("m") == 1


def test_sdk_retries_a_scripted_rate_limit(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Fault(429, headers={"retry-after-ms": "10"}), Reply(OUTPUT))

    client = openai.OpenAI(base_url=server.openai_base_url, api_key="test", max_retries=1)
    completion = ask_openai(client)

    assert json.loads(completion.choices[0].message.content) == OUTPUT
    assert [r.headers["x-stainless-retry-count"] for r in server.requests] == ["0", "1"]


def test_anthropic_tool_call_needs_a_dict_output(server: ScriptedLLMServer) -> None:
    server.script("claude-test", Reply("not an object"))

    with pytest.raises(anthropic.InternalServerError, match="must be a dict"):
        ask_anthropic(claude(server))


def test_client_in_another_process(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Reply(OUTPUT))
    child = (
        "import sys, openai\n"
        "c = openai.OpenAI(base_url=sys.argv[1], api_key='test', max_retries=0)\n"
        "m = [{'role': 'user', 'content': 'x'}]\n"
        "r = c.chat.completions.create(model='gpt-test', messages=m)\n"
        "print(r.choices[0].message.content)\n"
    )

    done = subprocess.run(
        [sys.executable, "-c", child, server.openai_base_url],
        capture_output=True,
        text=True,
        timeout=60,
        check=True,
    )

    assert json.loads(done.stdout) == OUTPUT
    assert server.count("gpt-test") == 1


def stream_openai(client: openai.OpenAI, **kwargs: Any) -> list[ChatCompletionChunk]:
    return list(
        client.chat.completions.create(
            model="gpt-test",
            messages=[{"role": "user", "content": "extract the invoice"}],
            logprobs=True,
            stream=True,
            **kwargs,
        )
    )


# A reply spelled token by token: {"vendor": "ACME", "total": 12.5}
TOKENS = [
    ('{"vendor": "', -0.5),
    ("ACME", -0.1),
    ('", "total": ', -0.01),
    ("12.5", -0.2),
    ("}", 0.0),
]


def test_openai_streams_a_reply_a_token_a_chunk(server: ScriptedLLMServer) -> None:
    server.script(
        "gpt-test",
        Reply(OUTPUT, input_tokens=11, output_tokens=7, tokens=TOKENS, finish_reason="length"),
    )

    chunks = stream_openai(oai(server), stream_options={"include_usage": True})

    *replying, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 7)
    assert all(c.usage is None for c in replying)
    assert len({c.id for c in chunks}) == 1 and last.id.startswith("chatcmpl-")
    assert {c.model for c in chunks} == {"gpt-test"}
    choices = [c.choices[0] for c in replying]
    assert choices[0].delta.role == "assistant"
    assert "".join(c.delta.content or "" for c in choices) == json.dumps(OUTPUT)
    logprobs = [t for c in choices if c.logprobs and c.logprobs.content for t in c.logprobs.content]
    assert [(t.token, t.logprob) for t in logprobs] == TOKENS
    assert [c.finish_reason for c in choices] == [None] * (len(choices) - 1) + ["length"]
    assert server.requests[0].body["stream"] is True


def test_openai_streams_without_usage_or_logprobs_unless_there_are_some(
    server: ScriptedLLMServer,
) -> None:
    server.script("gpt-test", Reply(OUTPUT))

    chunks = stream_openai(oai(server))

    assert all(c.usage is None and c.choices for c in chunks)
    assert all(c.choices[0].logprobs is None for c in chunks)
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == json.dumps(OUTPUT)
    assert len(chunks) > 3, "the text in pieces"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_streamed_request_meets_faults_and_delays(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Fault(429, headers={"retry-after": "2"}), Delay(2, Reply(OUTPUT)))

    with pytest.raises(openai.RateLimitError) as err:
        stream_openai(oai(server))
    assert err.value.response.headers["retry-after"] == "2"
    with pytest.raises(openai.APITimeoutError):
        stream_openai(oai(server, timeout=0.5))


def chat(server: ScriptedLLMServer, *, timeout_s: float = 5.0) -> tuple[OpenAIChat, AskRequest]:
    """Baton's OpenAI provider and a request to it, as the `ask` activity makes them."""
    spec = ProviderSpec(kind="openai", base_url=server.openai_base_url, timeout_s=timeout_s)
    provider = OpenAIChat.from_spec("openai", base_url=spec.base_url, key_env=None, timeout_s=5)
    request = AskRequest(
        task="extract",
        output_schema=SCHEMA,
        provider_name="openai",
        provider=spec,
        model="gpt-test",
    )
    return provider, request


async def test_openai_chat_reads_a_streamed_reply_as_a_whole(server: ScriptedLLMServer) -> None:
    text = json.dumps({"answer": OUTPUT, "confidence": 0.3})
    # The last token spells the self-reported confidence, 0.3.
    tokens = [(text[:-4], -0.2), (text[-4:], -0.01)]
    server.script("gpt-test", Reply(text, input_tokens=11, output_tokens=7, tokens=tokens))
    provider, request = chat(server)

    answer = await provider.ask(request)

    assert answer.output == OUTPUT and answer.raw_reply == text
    assert (answer.finish_reason, answer.model) == ("stop", "gpt-test")
    assert answer.response_id.startswith("chatcmpl-")
    assert (answer.input_tokens, answer.output_tokens) == (11, 7)
    assert answer.confidence_method == "token_logprobs"
    assert answer.confidence == pytest.approx(math.exp(-0.2))
    (sent,) = server.requests
    assert sent.body["stream"] is True and sent.body["stream_options"] == {"include_usage": True}


async def test_a_stream_that_fails_midway_is_a_retryable_provider_error(
    server: ScriptedLLMServer,
) -> None:
    text = json.dumps({"answer": OUTPUT, "confidence": 0.9})
    server.script("gpt-test", BrokenStream(Reply(text), message="overloaded " + "x" * 5000))
    provider, request = chat(server)

    with pytest.raises(ApplicationError) as raised:
        await provider.ask(request)

    # The server failed after it began to answer: a retry may fare better.
    failure = raised.value
    assert (failure.type, failure.non_retryable) == ("ProviderError", False)
    assert failure.message.startswith("openai/gpt-test failed while answering: overloaded")
    assert len(failure.message) <= 1000 and failure.__cause__ is None


async def cut(server: ScriptedLLMServer) -> int:
    return server.streams_cut


async def sent(server: ScriptedLLMServer) -> int:
    return server.count("gpt-test")


async def test_openai_chat_bounds_the_whole_reply_and_hangs_up(server: ScriptedLLMServer) -> None:
    """Every chunk comes quickly and the reply does not: the request's timeout_s bounds
    the whole reply from its send, and the stream is closed, so that a server writing
    the reply learns that nobody reads it."""
    server.script("gpt-test", Reply(OUTPUT, logprobs=[-0.1] * 20, pace=0.1))
    provider, request = chat(server, timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(ApplicationError) as failure:
        await provider.ask(request)

    assert time.monotonic() - started < 1.5, "not 20 chunks at 0.1 s"
    assert failure.value.type == "ProviderTimeout"
    assert failure.value.message == "openai/gpt-test did not answer in time"
    await eventually(lambda: cut(server), lambda n: n == 1, timeout=2)


async def test_a_cancelled_ask_hangs_up(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", Reply(OUTPUT, logprobs=[-0.1] * 20, pace=0.1))
    provider, request = chat(server)
    asking = asyncio.create_task(provider.ask(request))
    await eventually(lambda: sent(server), lambda n: n == 1)

    asking.cancel()

    with pytest.raises(asyncio.CancelledError):
        await asking
    await eventually(lambda: cut(server), lambda n: n == 1, timeout=2)


# Long enough to be sent in many fragments.
LOOK_UP = {"sku": "A1", "note": "look it up in the spring catalog, not the old one"}


def test_openai_streams_tool_calls_in_fragments(server: ScriptedLLMServer) -> None:
    """As OpenAI sends them: a call's first fragment names it, with empty
    arguments; the arguments follow in pieces under the same index."""
    turn = ToolCalls(
        [("look_up", LOOK_UP), ("final_answer", '{"sku": ')],
        text="Looking.",
        input_tokens=11,
        output_tokens=7,
    )
    server.script("gpt-test", turn, turn)

    chunks = stream_openai(oai(server), stream_options={"include_usage": True})

    *replying, last = chunks
    assert last.choices == [] and last.usage is not None
    assert (last.usage.prompt_tokens, last.usage.completion_tokens) == (11, 7)
    assert len({c.id for c in chunks}) == 1
    deltas = [c.choices[0].delta for c in replying]
    assert "".join(d.content or "" for d in deltas) == "Looking."
    fragments = [f for d in deltas for f in d.tool_calls or []]
    for index, (name, arguments) in enumerate(turn.calls):
        first, *rest = (f for f in fragments if f.index == index)
        assert first.id is not None and first.id.startswith("call_")
        assert first.type == "function" and first.function is not None
        assert (first.function.name, first.function.arguments) == (name, "")
        assert rest and all(f.id is None and f.function for f in rest)
        pieces = [f.function.arguments for f in rest if f.function]
        assert "".join(p or "" for p in pieces) == (
            arguments if isinstance(arguments, str) else json.dumps(arguments)
        )
    assert len({f.id for f in fragments if f.id}) == 2
    assert [c.choices[0].finish_reason for c in replying][-2:] == [None, "tool_calls"]

    whole = oai(server).chat.completions.create(model="gpt-test", messages=[])
    assert whole.choices[0].finish_reason == "tool_calls", "unstreamed, as before"
    assert len(whole.choices[0].message.tool_calls or []) == 2


def turn_request(
    server: ScriptedLLMServer, *, timeout_s: float = 5.0
) -> tuple[OpenAIChat, TurnRequest]:
    """Baton's OpenAI provider and an Agent's turn to it, as `agent_turn` makes them."""
    provider, ask = chat(server, timeout_s=timeout_s)
    look_up = ToolSpec(name="look_up", description="Look a SKU up.", parameters=SCHEMA)
    request = TurnRequest(
        task="quote",
        output_schema=SCHEMA,
        tools=[look_up],
        provider_name="openai",
        provider=ask.provider,
        model="gpt-test",
    )
    return provider, request


async def test_openai_turn_reads_streamed_tool_calls_as_a_whole(
    server: ScriptedLLMServer,
) -> None:
    calls: list[tuple[str, dict[str, Any] | str]] = [("look_up", LOOK_UP), ("look_up", "{not json")]
    server.script(
        "gpt-test",
        ToolCalls(calls, text="Looking it up.", input_tokens=11, output_tokens=7),
        ToolCalls([("final_answer", OUTPUT)]),
    )
    provider, request = turn_request(server)

    called = await openai_turn(provider, request)
    answered = await openai_turn(provider, request)

    ids = [c.id for c in called.tool_calls]
    assert len(set(ids)) == 2 and all(i.startswith("call_") for i in ids)
    assert called.response_id.startswith("chatcmpl-")
    assert called == TurnAnswer(
        tool_calls=[
            ToolCall(id=ids[0], name="look_up", arguments=LOOK_UP),
            ToolCall(id=ids[1], name="look_up", arguments_error=parse_arguments("{not json")[1]),
        ],
        text="Looking it up.",
        provider="openai",
        model="gpt-test",
        response_id=called.response_id,
        finish_reason="tool_calls",
        input_tokens=11,
        output_tokens=7,
    )
    assert (answered.tool_calls, answered.output, answered.format_errors) == ([], OUTPUT, [])
    assert (answered.finish_reason, answered.input_tokens, answered.output_tokens) == (
        "tool_calls",
        100,
        50,
    )
    for recorded in server.requests:
        assert recorded.body["stream"] is True
        assert recorded.body["stream_options"] == {"include_usage": True}
        # OpenAI's reasoning models refuse the older name of the output cap.
        assert recorded.body["max_completion_tokens"] == request.max_tokens
        assert "max_tokens" not in recorded.body


def slow_turn() -> ToolCalls:
    """Every fragment comes quickly, and the turn does not (20 of them at 0.1 s)."""
    return ToolCalls([("look_up", {"sku": "A1", "note": "x" * 300})], pace=0.1)


async def test_an_openai_turn_bounds_the_whole_reply_and_hangs_up(
    server: ScriptedLLMServer,
) -> None:
    server.script("gpt-test", slow_turn())
    provider, request = turn_request(server, timeout_s=0.5)

    started = time.monotonic()
    with pytest.raises(ApplicationError) as failure:
        await openai_turn(provider, request)

    assert time.monotonic() - started < 1.5
    assert failure.value.type == "ProviderTimeout"
    assert failure.value.message == "openai/gpt-test did not answer in time"
    await eventually(lambda: cut(server), lambda n: n == 1, timeout=2)


async def test_a_cancelled_openai_turn_hangs_up(server: ScriptedLLMServer) -> None:
    server.script("gpt-test", slow_turn())
    provider, request = turn_request(server)
    turning = asyncio.create_task(openai_turn(provider, request))
    await eventually(lambda: sent(server), lambda n: n == 1)

    turning.cancel()

    with pytest.raises(asyncio.CancelledError):
        await turning
    await eventually(lambda: cut(server), lambda n: n == 1, timeout=2)
