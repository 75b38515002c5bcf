"""The fake LLM server against the real openai and anthropic SDKs, over real HTTP."""

from __future__ import annotations

import json
import subprocess
import sys
import time
from collections.abc import Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.fake_llm import Delay, Fault, Reply, ScriptedLLMServer

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
