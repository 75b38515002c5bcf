"""Issue 18, provider fixes: what meeting a real model showed, each through
the real openai and anthropic SDKs against the scripted server, and inside
document intake on Temporal's time-skipping server where the workflow is
concerned."""

from __future__ import annotations

import json
import math
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import jsonschema
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from activities.documents import ExtractedDocument
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.cli import format_status
from baton.client import run_status
from baton.config import RunConfig, load_routing
from baton.graph import Agent, Ask, GraphError
from baton.llm import AskRequest
from baton.llm.anthropic_messages import AnthropicMessages
from baton.llm.openai_chat import OpenAIChat
from baton.llm.prompt import RAW_REPLY_LIMIT, answer_schema, prompt
from baton.routing import ProviderSpec, routing_table
from baton.state import NodeRecord, RunStatus
from tests.fake_llm import Delay, Fault, Reply, ScriptedLLMServer
from tests.helpers import WORKER_CONFIG, settled, start_intake
from tests.routing_config import DOC, KEY_ENV, SURE, UNSURE, VALID, answer, config

SCHEMA = ExtractedDocument.model_json_schema()


def openai_request(llm: ScriptedLLMServer, **update: Any) -> AskRequest:
    return AskRequest(
        task="extract_fields",
        inputs={"text": "Invoice INV-1"},
        output_schema=SCHEMA,
        provider_name="openai",
        provider=ProviderSpec(kind="openai", base_url=llm.openai_base_url, api_key_env=KEY_ENV),
        **{"model": "gpt-cheap", **update},
    )


def openai_chat(llm: ScriptedLLMServer) -> OpenAIChat:
    return OpenAIChat.from_spec(
        "openai", base_url=llm.openai_base_url, key_env=KEY_ENV, timeout_s=5
    )


async def start(client: Client, queue: str, run_config: RunConfig) -> Any:
    WORKER_CONFIG.config = run_config
    return await start_intake(client, queue, DOC)


async def attempts_of(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    status = await run_status(client, workflow_id)
    extract = next(n for n in status.nodes if n.node == "extract")
    return [a if isinstance(a, dict) else a.model_dump() for a in extract.meta["attempts"]]


# 1. `baton status` text


def _status(*nodes: NodeRecord) -> RunStatus:
    return RunStatus(
        workflow_id="intake-1",
        process="document_intake",
        state="running",
        requested_by="clerk-1",
        config_digest="",
        current=[],
        nodes=list(nodes),
        gates=[],
        refusals=[],
    )


def test_status_text_survives_any_ask_state_and_lists_every_attempt() -> None:
    now = datetime(2026, 12, 4, tzinfo=UTC).isoformat()
    tried = {
        "index": 1,
        "tier": "cheap",
        "provider": "openai",
        "model": "gpt-cheap",
        "repair": 0,
        "outcome": "invalid",
        "confidence": 0.5,
        "confidence_method": "token_logprobs",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost_usd": 0.00036,
        "errors": ["the reply was cut at the token limit (300 tokens)"],
        "started_at": now,
        "finished_at": now,
    }
    text = format_status(
        _status(
            # Decided by a person: a confidence, no provider or model.
            NodeRecord(
                node="extract",
                kind="ask",
                status="finished",
                meta={
                    "confidence": 1.0,
                    "confidence_method": "human_review",
                    "decided_by": "rita",
                    "attempts": [tried, {**tried, "index": 2, "outcome": "provider_error"}],
                    "cost_usd": 0.00072,
                },
            ),
            # Odd states a run may be seen in: nothing recorded yet, a confidence
            # of None, attempts the query gave back half-filled.
            NodeRecord(node="other", kind="ask", meta={"confidence": None, "attempts": [{}]}),
            NodeRecord(node="third", kind="ask", meta={"attempts": None, "cost_usd": None}),
        )
    )
    assert "rita confidence 1.00 (human_review)" in text
    assert "tokens 1200 in / 300 out" in text
    assert "$0.00072" in text
    assert "#1 cheap openai/gpt-cheap: invalid" in text
    assert "cut at the token limit (300 tokens)" in text
    assert "#2 cheap openai/gpt-cheap: provider_error" in text


def test_status_text_lists_an_agents_turns_and_tool_calls_in_any_state() -> None:
    turn = {
        "index": 1,
        "tier": "cheap",
        "provider": "openai",
        "model": "gpt-cheap",
        "outcome": "tool_calls",
        "input_tokens": 900,
        "output_tokens": 40,
        "cost_usd": 0.0002,
    }
    call = {"index": 1, "turn": 1, "tool": "lookup_pricing", "outcome": "ok"}
    refused = {**call, "index": 2, "tool": "send_offer", "outcome": "refused"}
    text = format_status(
        _status(
            NodeRecord(
                node="draft",
                kind="agent",
                meta={
                    "turns": [turn, {**turn, "index": 2, "outcome": "answered"}],
                    "tool_calls": [call, {**refused, "error": "rita rejected the call"}],
                },
            ),
            # A mapped Agent keeps each item's turns; and half-filled states.
            NodeRecord(
                node="sections",
                kind="agent",
                meta={"items": [{"turns": [turn], "tool_calls": "?"}, None], "turns": "?"},
            ),
        )
    )
    assert "turn 1 openai/gpt-cheap: tool_calls, tokens 900 in / 40 out, $0.0002" in text
    assert "call lookup_pricing: ok" in text
    assert 'call send_offer: refused ("rita rejected the call")' in text
    assert "turn 2 openai/gpt-cheap: answered" in text
    assert "item 0:" in text


# 2 and 3. max_tokens, the finish reason, and the raw reply


async def test_max_tokens_is_sent_and_a_cut_reply_is_said_to_be_cut(
    llm: ScriptedLLMServer,
) -> None:
    cut = '{"answer": {"doc_type": "invoice", "number": "INV'
    llm.script("gpt-cheap", Reply(cut, finish_reason="length"))
    reply = await openai_chat(llm).ask(openai_request(llm, max_tokens=64))
    assert llm.requests[0].body["max_completion_tokens"] == 64, "as OpenAI names it now"
    assert reply.finish_reason == "length"
    assert reply.format_errors == ["the reply was cut at the token limit (64 tokens)"]
    assert reply.raw_reply == cut

    llm.script("claude-strong", Reply({"answer": {"doc_type": "inv"}}, finish_reason="max_tokens"))
    claude = AnthropicMessages.from_spec(
        "anthropic", base_url=llm.anthropic_base_url, key_env=KEY_ENV, timeout_s=5
    )
    request = openai_request(llm, model="claude-strong", max_tokens=32)
    reply = await claude.ask(request)
    assert llm.requests_for("claude-strong")[0].body["max_tokens"] == 32
    assert reply.format_errors == ["the reply was cut at the token limit (32 tokens)"]
    assert json.loads(reply.raw_reply) == {"answer": {"doc_type": "inv"}}


def test_a_long_raw_reply_is_kept_bounded_and_says_it_was_cut() -> None:
    from baton.llm.prompt import bounded_reply

    kept = bounded_reply("x" * (RAW_REPLY_LIMIT + 500))
    assert kept.startswith("x" * RAW_REPLY_LIMIT)
    assert kept.endswith(f"[cut here: the reply had {RAW_REPLY_LIMIT + 500} characters]")


async def test_a_repair_shows_the_model_its_raw_reply_and_the_trail_keeps_it(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    cut = '{"answer": {"doc_type": "invoice", "number": "INV-1", "party": "Ac'
    llm.script(
        "llama-local",
        Reply(cut, finish_reason="length", logprobs=SURE),
        Reply(answer(VALID), logprobs=SURE),
    )
    run_config = config(llm, cascade=["local"])
    run_config.routing.tasks["extract_fields"].max_tokens = 512
    handle = await start(time_skipping_env.client, task_queue, run_config)
    assert (await handle.result()).outcome == "completed"

    first, repair = llm.requests_for("llama-local")
    assert first.body["max_tokens"] == repair.body["max_tokens"] == 512
    repair_prompt = repair.body["messages"][1]["content"]
    assert "cut at the token limit (512 tokens)" in repair_prompt
    assert cut in repair_prompt, "the model sees what it wrote, not {}"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert attempts[0]["raw_reply"] == cut
    assert attempts[0]["finish_reason"] == "length"
    inferences = [
        r.data
        for r in open_store(AuditSettings.from_env().url).records(handle.id)
        if r.event_type == "ai.inference"
    ]
    assert inferences[0]["raw_reply"] == cut


def test_the_repair_prompt_falls_back_to_the_parsed_answer(llm: ScriptedLLMServer) -> None:
    _, user = prompt(
        openai_request(llm, repair_errors=["total: bad"], previous_output={"total": "a lot"})
    )
    assert '{"total": "a lot"}' in user


# 4. Concurrency per provider, timeouts from the routing, timed-out retries


async def test_one_slot_provider_takes_one_request_at_a_time_and_queueing_is_not_timed(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", *[Delay(0.7, Reply(answer(VALID), logprobs=SURE)) for _ in range(2)])
    run_config = config(llm, cascade=["cheap"], timeout_s=1.0)
    run_config.routing.providers["openai"].max_concurrency = 1
    first = await start(client, task_queue, run_config)
    second = await start(client, task_queue, run_config)
    # The second run of the same document goes on to a duplicate review.
    for handle in (first, second):
        await settled(client, handle.id)
        assert [a["outcome"] for a in await attempts_of(client, handle.id)] == ["accepted"]
    assert llm.max_in_flight == 1, "the provider had one request at a time"
    assert llm.count("gpt-cheap") == 2, "the one that queued was not timed out and sent again"


async def test_the_ask_step_timeout_comes_from_the_routing_not_a_hidden_cap(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply(answer(VALID), logprobs=SURE))
    run_config = config(llm, cascade=["cheap"], timeout_s=300.0)
    run_config.routing.providers["openai"].queue_timeout_s = 60.0
    handle = await start(time_skipping_env.client, task_queue, run_config)
    await handle.result()
    timeouts = [
        event.activity_task_scheduled_event_attributes.start_to_close_timeout.ToTimedelta()
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_SCHEDULED
        and event.activity_task_scheduled_event_attributes.activity_type.name == "ask"
    ]
    assert timeouts and all(t >= timedelta(seconds=360) for t in timeouts), timeouts


def test_a_model_node_takes_no_timeout_of_its_own() -> None:
    with pytest.raises(GraphError, match="ask 'x': a model call's timeout comes from its routing"):
        Ask("x", task="t", output=ExtractedDocument, timeout=timedelta(seconds=120))
    with pytest.raises(GraphError, match=r"agent 'y': .* tool calls take tool_timeout"):
        Agent("y", task="t", output=ExtractedDocument, timeout=timedelta(seconds=120))


async def test_a_timed_out_request_is_sent_again_only_timeout_retries_times(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", *[Delay(3.0, Reply(answer(VALID), logprobs=SURE)) for _ in range(4)])
    llm.script("claude-strong", Reply(answer(VALID, 0.93)))
    run_config = config(llm, cascade=["cheap", "strong"], timeout_s=0.5)
    run_config.routing.providers["openai"].timeout_retries = 1
    handle = await start(time_skipping_env.client, task_queue, run_config)
    assert (await handle.result()).outcome == "completed"

    assert llm.count("gpt-cheap") == 2, "the first try and one retry"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert [(a["tier"], a["outcome"]) for a in attempts] == [
        ("cheap", "provider_error"),
        ("strong", "accepted"),
    ]
    assert "did not answer in time" in attempts[0]["errors"][0]


# 5. A refused request skips the candidate


async def test_a_malformed_request_skips_the_candidate_with_an_alert(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Fault(400, "Unsupported parameter: 'temperature'"))
    llm.script("claude-strong", Reply(answer(VALID, 0.93)))
    handle = await start(
        time_skipping_env.client, task_queue, config(llm, cascade=["cheap", "strong"])
    )
    assert (await handle.result()).outcome == "completed"

    assert llm.count("gpt-cheap") == 1, "a refused request is not sent again"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert [(a["tier"], a["outcome"]) for a in attempts] == [
        ("cheap", "provider_error"),
        ("strong", "accepted"),
    ]
    assert "Unsupported parameter: 'temperature'" in attempts[0]["errors"][0]
    alerts = [
        r.data
        for r in open_store(AuditSettings.from_env().url).records(handle.id)
        if r.event_type == "routing.decided" and r.data.get("decision") == "skipped a candidate"
    ]
    assert len(alerts) == 1
    assert alerts[0]["candidate"] == "openai/gpt-cheap"
    assert "rejected the request (400)" in alerts[0]["why"]


async def test_a_refused_key_goes_on_to_the_human_tier(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", Fault(401, "Incorrect API key provided"))
    handle = await start(client, task_queue, config(llm, cascade=["cheap", "human"]))
    status = await settled(client, handle.id)

    assert status.state == "waiting" and status.current == ["extract"]
    (shown,) = status.gates[0].shown["attempts"]
    assert shown["outcome"] == "provider_error"
    assert f"check {KEY_ENV}" in shown["errors"][0]
    assert llm.count("gpt-cheap") == 1


# 6. Request parameters per model


async def test_a_candidate_without_temperature_or_logprobs_is_sent_neither(
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply(answer(VALID)), Reply(answer(VALID), logprobs=SURE))
    await openai_chat(llm).ask(openai_request(llm, temperature=None, logprobs=False))
    await openai_chat(llm).ask(openai_request(llm))
    reasoning, plain = (r.body for r in llm.requests)
    assert "temperature" not in reasoning and "logprobs" not in reasoning
    assert plain["temperature"] == 0 and plain["logprobs"] is True


# 7. Confidence from value tokens, ranked by one method


async def test_token_confidence_counts_only_the_tokens_of_values(llm: ScriptedLLMServer) -> None:
    # Punctuation and keys are all but certain under a grammar; the values
    # are what the model was unsure of.
    sure, unsure = -0.001, -2.0
    tokens = [
        ('{"', sure),
        ("answer", sure),
        ('": {"', sure),
        ("party", sure),
        ('": "', sure),
        ("Ac", unsure),
        ("me", unsure),
        ('", "', sure),
        ("total", sure),
        ('": ', sure),
        ("120", unsure),
        ("}, ", sure),
        ('"confidence', sure),
        ('": ', sure),
        ("0.99", sure),
        ("}", sure),
    ]
    text = "".join(t for t, _ in tokens)
    llm.script("gpt-cheap", Reply(text, tokens=tokens))
    reply = await openai_chat(llm).ask(openai_request(llm))
    assert reply.confidence_method == "token_logprobs"
    assert reply.confidence == pytest.approx(math.exp(unsure))


async def test_answers_measured_by_different_methods_are_not_ranked_by_their_numbers(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    # The cheap model's log-probabilities (0.2) and the strong model's own
    # report (0.1) measure different things: the later tier's answer stands.
    llm.script("gpt-cheap", Reply(answer(VALID), logprobs=UNSURE))
    llm.script("claude-strong", Reply(answer({**VALID, "party": "Acme Strong"}, 0.1)))
    handle = await start(
        time_skipping_env.client, task_queue, config(llm, cascade=["cheap", "strong"])
    )
    # Accepted below the minimum, the answer goes on to intake's review.
    status = await settled(time_skipping_env.client, handle.id)
    extract = next(n for n in status.nodes if n.node == "extract")
    assert extract.output["party"] == "Acme Strong"
    assert extract.meta["provider"] == "anthropic"


# 8. The schema the model is given is as strict as the validator


def test_the_model_facing_schema_is_as_strict_as_the_validator() -> None:
    schema = answer_schema(SCHEMA)

    def objects(node: Any) -> list[dict[str, Any]]:
        found: list[dict[str, Any]] = []
        if isinstance(node, dict):
            if node.get("type") == "object":
                found.append(node)
            for value in node.values():
                found += objects(value)
        elif isinstance(node, list):
            for value in node:
                found += objects(value)
        return found

    for obj in objects(schema):
        assert obj["additionalProperties"] is False, obj
        assert sorted(obj["required"]) == sorted(obj["properties"]), obj
    reply = {"answer": {**VALID, "total": "120.50"}, "confidence": 0.9}
    reply["answer"] = {
        k: reply["answer"].get(k) for k in schema["properties"]["answer"]["properties"]
    }
    jsonschema.validate(reply, schema)
    # A run of digits is bounded too: a small model under the grammar wrote
    # "1000000…" until its token limit.
    for total in ("€ 3,664.50", "3,664.50", "120 EUR", "1" * 16, "1." + "0" * 9):
        with pytest.raises(jsonschema.ValidationError):
            jsonschema.validate({**reply, "answer": {**reply["answer"], "total": total}}, schema)


# 10. The human tier of an Ask step has an SLA


async def test_the_human_tier_escalates_as_its_sla_says(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", Reply(answer(VALID), logprobs=UNSURE))
    run_config = config(llm, cascade=["cheap", "human"])
    route = run_config.routing.tasks["extract_fields"]
    route.human_sla_hours = 4
    route.human_escalate_to = ["supervisor"]
    handle = await start(client, task_queue, run_config)
    status = await settled(client, handle.id)
    gate = status.gates[0]
    assert gate.sla == timedelta(hours=4) and gate.chain == ["supervisor"]

    await time_skipping_env.sleep(timedelta(hours=5))
    status = await run_status(client, handle.id)
    assert [e.to_role for e in status.gates[0].escalations] == ["supervisor"]
    assert "escalated to supervisor" in format_status(status)


def test_the_routing_file_takes_the_new_settings(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(
        '[providers.llama]\nkind = "openai_compatible"\nbase_url = "http://127.0.0.1:9/v1"\n'
        "timeout_s = 180\nmax_concurrency = 1\nqueue_timeout_s = 600\ntimeout_retries = 0\n"
        '[tiers.local]\ncandidates = [{ provider = "llama", model = "gemma", '
        'temperature = "none", logprobs = false }]\n'
        '[data_classes.internal]\nresidencies = ["on-prem"]\n'
        '[tasks.extract_fields]\ncascade = ["local", "human"]\nmax_tokens = 256\n'
        'human_sla_hours = 24\nhuman_escalate_to = ["supervisor"]\n'
    )
    routing = load_routing(path)
    provider = routing.providers["llama"]
    assert (provider.max_concurrency, provider.timeout_retries) == (1, 0)
    assert provider.attempt_timeout_s >= 780, "a timeout above 120 s is honoured"
    (candidate,) = routing.tiers["local"].candidates
    assert candidate.temperature is None and candidate.logprobs is False
    table = routing_table(routing)
    assert "max tokens 256" in table
    assert "2. human: role reviewer, SLA 24h -> supervisor" in table
