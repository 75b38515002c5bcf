"""Model routing through the real openai and anthropic SDKs, against a scripted
HTTP server, inside document intake on Temporal's time-skipping server."""

from __future__ import annotations

import re
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from temporalio.api.enums.v1 import EventType
from temporalio.client import Client, WorkflowFailureError, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Worker

from baton import search
from baton.audit.events import AuditRecord
from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.client import decide, run_status
from baton.config import ConfigError, RunConfig, load_routing
from baton.gates import Decision
from baton.graph import Ask
from baton.llm.faults import as_application_error
from baton.routing import plan_route, routing_table
from baton.runner import RunResult
from systems.erp import DocumentRegister
from tests.fake_llm import Delay, Fault, Reply, ScriptedLLMServer
from tests.helpers import WORKER_CONFIG, search_attributes, settled, start_intake
from tests.routing_config import (
    DOC,
    KEY_ENV,
    OFF_SCHEMA,
    SURE,
    UNSURE,
    VALID,
    answer,
    config,
)
from workflows.document_intake import GRAPH


async def start(
    client: Client, queue: str, run_config: RunConfig
) -> WorkflowHandle[Any, RunResult]:
    WORKER_CONFIG.config = run_config
    return await start_intake(client, queue, DOC)


def trail(workflow_id: str) -> list[AuditRecord]:
    return open_store(AuditSettings.from_env().url).records(workflow_id)


async def attempts_of(client: Client, workflow_id: str) -> list[dict[str, Any]]:
    status = await run_status(client, workflow_id)
    extract = next(n for n in status.nodes if n.node == "extract")
    return [a if isinstance(a, dict) else a.model_dump() for a in extract.meta["attempts"]]


async def test_clean_answer_is_accepted_with_logprob_confidence_and_cost(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script(
        "gpt-cheap", Reply(answer(VALID), input_tokens=1000, output_tokens=200, logprobs=SURE)
    )
    handle = await start(client, task_queue, config(llm, cascade=["cheap", "strong", "human"]))
    result = await handle.result()

    assert result.outcome == "completed"
    assert result.outputs["extract"]["number"] == "INV-1"
    status = await run_status(client, handle.id)
    extract = next(n for n in status.nodes if n.node == "extract")
    assert (extract.meta["provider"], extract.meta["model"]) == ("openai", "gpt-cheap")
    assert extract.meta["confidence_method"] == "token_logprobs"
    assert extract.meta["confidence"] == pytest.approx(0.9868, abs=1e-3)
    expected_cost = (1000 * 0.15 + 200 * 0.60) / 1e6
    assert extract.meta["cost_usd"] == pytest.approx(expected_cost)
    assert status.cost_usd == pytest.approx(expected_cost)
    attributes = await search_attributes(client, handle.id)
    assert attributes[search.COST_USD.name] == pytest.approx(expected_cost)
    assert attributes[search.MIN_CONFIDENCE.name] == pytest.approx(0.9868, abs=1e-3)
    body = llm.requests_for("gpt-cheap")[0].body
    assert body["response_format"]["type"] == "json_schema"
    assert "ACME Industrial Suppl" in body["messages"][1]["content"], "the document text is sent"
    assert llm.count("claude-strong") == 0
    (inference,) = [r for r in trail(handle.id) if r.event_type == "ai.inference"]
    assert inference.data["response_id"].startswith("chatcmpl-")
    assert inference.data["finish_reason"] == "stop"
    assert inference.data["prompt"]["name"] == "extract_fields"
    assert re.fullmatch(r"2\.[0-9a-f]{12}", inference.data["prompt"]["version"])


async def test_off_schema_answer_is_repaired_by_the_same_model(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script(
        "gpt-cheap", Reply(answer(OFF_SCHEMA), logprobs=SURE), Reply(answer(VALID), logprobs=SURE)
    )
    handle = await start(
        time_skipping_env.client, task_queue, config(llm, cascade=["cheap", "strong"])
    )
    assert (await handle.result()).outputs["extract"]["total"] == "120"

    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert [(a["model"], a["repair"], a["outcome"]) for a in attempts] == [
        ("gpt-cheap", 0, "invalid"),
        ("gpt-cheap", 1, "accepted"),
    ]
    assert any("doc_type" in e for e in attempts[0]["errors"])
    repair_prompt = llm.requests_for("gpt-cheap")[1].body["messages"][1]["content"]
    assert "Your previous answer was refused" in repair_prompt
    assert "doc_type" in repair_prompt


async def test_malformed_json_counts_as_invalid_and_is_repaired(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply("{not json", logprobs=SURE), Reply(answer(VALID), logprobs=SURE))
    handle = await start(time_skipping_env.client, task_queue, config(llm, cascade=["cheap"]))
    assert (await handle.result()).outcome == "completed"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert attempts[0]["errors"][0].startswith("the reply is not valid JSON")


async def test_cheap_model_stays_invalid_and_the_strong_model_succeeds(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply(answer(OFF_SCHEMA)), Reply(answer(OFF_SCHEMA)))
    llm.script("claude-strong", Reply(answer(VALID, 0.93), input_tokens=2000, output_tokens=300))
    handle = await start(
        time_skipping_env.client, task_queue, config(llm, cascade=["cheap", "strong", "human"])
    )
    result = await handle.result()

    assert result.outputs["extract"]["party"] == "Acme"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert [(a["tier"], a["outcome"]) for a in attempts] == [
        ("cheap", "invalid"),
        ("cheap", "invalid"),
        ("strong", "accepted"),
    ]
    assert attempts[2]["confidence_method"] == "self_reported"
    tool_call = llm.requests_for("claude-strong")[0].body
    assert tool_call["tool_choice"] == {"type": "tool", "name": "record_answer"}
    inferences = [r.data for r in trail(handle.id) if r.event_type == "ai.inference"]
    assert [(i["tier"], i["finish_reason"]) for i in inferences] == [
        ("cheap", "stop"),
        ("cheap", "stop"),
        ("strong", "tool_use"),
    ]
    assert inferences[2]["response_id"].startswith("msg_")
    # One wording asked every tier: the version names the question, not the model.
    assert len({i["prompt"]["version"] for i in inferences}) == 1
    status = await run_status(time_skipping_env.client, handle.id)
    assert status.cost_usd == pytest.approx(sum(a["cost_usd"] for a in attempts))


async def test_low_confidence_everywhere_ends_at_a_human_who_sees_every_attempt(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", Reply(answer(VALID), logprobs=UNSURE))
    llm.script("claude-strong", Reply(answer(VALID, 0.4)))
    handle = await start(client, task_queue, config(llm, cascade=["cheap", "strong", "human"]))
    status = await settled(client, handle.id)

    assert status.state == "waiting" and status.current == ["extract"]
    gate = status.gates[0]
    assert gate.gate == "extract" and gate.roles == ["reviewer"]
    assert gate.shown["why"] == "the cascade reached its human tier"
    assert [a["outcome"] for a in gate.shown["attempts"]] == ["low_confidence", "low_confidence"]
    assert gate.shown["proposed"]["number"] == "INV-1"
    attributes = await search_attributes(client, handle.id)
    assert attributes[search.PENDING_ROLES.name] == ["reviewer"]

    await decide(client, handle.id, Decision(gate="extract", user="rita", outcome="approve"))
    result = await handle.result()
    assert result.outcome == "completed"
    status = await run_status(client, handle.id)
    extract = next(n for n in status.nodes if n.node == "extract")
    assert extract.meta["confidence_method"] == "human_review"
    assert extract.meta["decided_by"] == "rita"


async def test_a_person_can_correct_an_answer_no_model_got_right(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script("gpt-cheap", Reply(answer(OFF_SCHEMA)), Reply(answer(OFF_SCHEMA)))
    handle = await start(client, task_queue, config(llm, cascade=["cheap", "human"]))
    await settled(client, handle.id)

    with pytest.raises(Exception, match="no valid AI answer to approve"):
        await decide(client, handle.id, Decision(gate="extract", user="rita", outcome="approve"))
    with pytest.raises(Exception, match="an edited output needs a reason"):
        await decide(
            client,
            handle.id,
            Decision(gate="extract", user="rita", outcome="approve", output=VALID),
        )
    with pytest.raises(Exception, match="the edited output is invalid: doc_type"):
        await decide(
            client,
            handle.id,
            Decision(
                gate="extract", user="rita", outcome="approve", output=OFF_SCHEMA, comment="fixed"
            ),
        )
    accepted = await decide(
        client,
        handle.id,
        Decision(
            gate="extract", user="rita", outcome="approve", output=VALID, comment="typed from paper"
        ),
    )
    assert accepted.edited
    result = await handle.result()
    assert result.outputs["extract"]["number"] == "INV-1"
    assert DocumentRegister().entries(handle.id)[0]["number"] == "INV-1"


@pytest.mark.parametrize(
    "faults",
    [
        [Fault(429, "slow down", headers={"retry-after": "3"})],
        [Fault(500, "boom"), Fault(503, "busy")],
        [Delay(5.0, Reply(answer(VALID), logprobs=SURE))],
    ],
    ids=["429-retry-after", "5xx", "timeout"],
)
async def test_provider_faults_are_retried_by_temporal_and_then_succeed(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
    faults: list[Any],
) -> None:
    llm.script("gpt-cheap", *faults, Reply(answer(VALID), logprobs=SURE))
    handle = await start(
        time_skipping_env.client,
        task_queue,
        config(llm, cascade=["cheap", "strong"], timeout_s=1.0),
    )
    result = await handle.result()

    assert result.outputs["extract"]["number"] == "INV-1"
    assert llm.count("gpt-cheap") == len(faults) + 1, "one HTTP call per Temporal retry"
    attempts = await attempts_of(time_skipping_env.client, handle.id)
    assert [a["outcome"] for a in attempts] == ["accepted"], "retries are not new attempts"
    assert llm.count("claude-strong") == 0


async def test_a_model_slower_than_the_heartbeat_timeout_is_not_retried_while_its_worker_lives(
    dev_client: Client, dev_worker: Worker, task_queue: str, llm: ScriptedLLMServer
) -> None:
    # Real time (the dev server): the heartbeats must reach the server while
    # the model takes longer than the whole heartbeat timeout.
    heartbeat = next(n for n in GRAPH.nodes if isinstance(n, Ask)).heartbeat
    assert heartbeat is not None
    slower = heartbeat.total_seconds() + 2
    llm.script("gpt-cheap", Delay(slower, Reply(answer(VALID), logprobs=SURE)))
    handle = await start(dev_client, task_queue, config(llm, cascade=["cheap", "strong"]))
    result = await handle.result()

    assert result.outputs["extract"]["number"] == "INV-1"
    assert llm.count("gpt-cheap") == 1, "the slow call was not timed out and sent again"
    later_attempts = [
        event.activity_task_started_event_attributes.attempt
        async for event in handle.fetch_history_events()
        if event.event_type == EventType.EVENT_TYPE_ACTIVITY_TASK_STARTED
        and event.activity_task_started_event_attributes.attempt > 1
    ]
    assert later_attempts == [], "no activity needed a second attempt"


async def test_a_refused_key_is_not_retried_and_the_failure_says_what_to_fix(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    # The candidate is skipped (tests/test_provider_fixes.py); with none
    # left, the run's failure names the key to check.
    llm.script("gpt-cheap", Fault(401, "Incorrect API key provided"))
    handle = await start(time_skipping_env.client, task_queue, config(llm, cascade=["cheap"]))
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert f"refused the API key (401): check {KEY_ENV}" in str(failure.value.cause)
    assert llm.count("gpt-cheap") == 1, "not retried"


async def test_pii_that_may_not_leave_on_prem_never_reaches_a_cloud_model(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    handle = await start(
        time_skipping_env.client,
        task_queue,
        config(llm, cascade=["cheap", "strong"], data_class="pii"),
    )
    with pytest.raises(WorkflowFailureError) as failure:
        await handle.result()
    assert "data class 'pii', which may go only to on-prem" in str(failure.value.cause)
    assert llm.requests == []

    llm.script("llama-local", Reply(answer(VALID), logprobs=SURE))
    handle = await start(
        time_skipping_env.client,
        task_queue,
        config(llm, cascade=["cheap", "local"], data_class="pii"),
    )
    assert (await handle.result()).outcome == "completed"
    assert [r.model for r in llm.requests] == ["llama-local"]
    assert llm.requests[0].headers["authorization"] == "Bearer not-needed"


async def test_a_spent_budget_stops_paid_escalation_and_asks_a_person(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    client = time_skipping_env.client
    llm.script(
        "gpt-cheap",
        Reply(answer(OFF_SCHEMA), input_tokens=50_000),
        Reply(answer(OFF_SCHEMA), input_tokens=50_000),
    )
    handle = await start(client, task_queue, config(llm, cascade=["cheap", "strong"], budget=0.01))
    status = await settled(client, handle.id)

    assert status.state == "waiting" and status.current == ["extract"]
    assert status.gates[0].shown["why"].startswith("the run's budget of $0.01 is spent")
    assert status.cost_usd == pytest.approx(2 * 50_000 * 0.15 / 1e6 + 2 * 50 * 0.60 / 1e6)
    assert llm.count("claude-strong") == 0


def test_routing_file_with_a_missing_key_is_a_start_up_error(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("BATON_TEST_MISSING_KEY", raising=False)
    path = tmp_path / "routing.toml"
    path.write_text(
        '[providers.openai]\nkind = "openai"\napi_key_env = "BATON_TEST_MISSING_KEY"\n'
        'residency = "us"\n[tiers.cheap]\ncandidates = [{provider = "openai", model = "m"}]\n'
        '[data_classes.internal]\nresidencies = ["us"]\n'
        '[tasks.extract_fields]\ncascade = ["cheap"]\n'
    )
    with pytest.raises(
        ConfigError, match="needs an API key in the environment variable BATON_TEST_MISSING_KEY"
    ):
        load_routing(path)
    monkeypatch.setenv("BATON_TEST_MISSING_KEY", "sk-x")
    assert load_routing(path).tasks["extract_fields"].cascade == ["cheap"]


def test_unknown_tier_in_a_cascade_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(
        '[data_classes.internal]\nresidencies = ["us"]\n[tasks.x]\ncascade = ["cheapest"]\n'
    )
    with pytest.raises(ConfigError, match="task 'x' cascades to unknown tier 'cheapest'"):
        load_routing(path)


def test_a_runs_routing_keeps_its_tasks_and_what_they_name(tmp_path: Path) -> None:
    path = tmp_path / "routing.toml"
    path.write_text(
        '[providers.a]\nkind = "offline"\n[providers.b]\nkind = "offline"\n'
        '[tiers.one]\ncandidates = [{provider = "a", model = "m"}]\n'
        '[tiers.two]\ncandidates = [{provider = "b", model = "m"}]\n'
        '[data_classes.internal]\nresidencies = ["on-prem"]\n'
        '[data_classes.pii]\nresidencies = ["on-prem"]\n'
        '[tasks.mine]\ncascade = ["one", "human"]\n'
        '[tasks.theirs]\ncascade = ["two"]\ndata_class = "pii"\n'
        '[tasks.default]\ncascade = ["two"]\n'
    )
    routing = load_routing(path)

    mine = routing.for_tasks(["mine"])
    assert (set(mine.tasks), set(mine.tiers), set(mine.providers)) == ({"mine"}, {"one"}, {"a"})
    assert set(mine.data_classes) == {"internal"}
    assert plan_route(mine, "mine") == plan_route(routing, "mine")
    # A task without a route of its own plans by the default, so it stays.
    unrouted = routing.for_tasks(["mine", "unrouted"])
    assert set(unrouted.tasks) == {"mine", "default"}
    assert plan_route(unrouted, "unrouted") == plan_route(routing, "unrouted")


def test_routes_table_shows_tiers_prices_and_exclusions(llm: ScriptedLLMServer) -> None:
    routing = config(llm, cascade=["cheap", "local", "human"], data_class="pii").routing
    table = routing_table(routing)
    assert "task extract_fields: data class pii (may go to on-prem)" in table
    assert (
        "openai/gpt-cheap (openai, us) in $0.15/out $0.6 per Mtok: EXCLUDED by data class" in table
    )
    assert "vllm/llama-local (openai_compatible, on-prem)" in table
    assert "3. human: role reviewer" in table
    plan = plan_route(routing, "extract_fields")
    assert [t.name for t in plan.tiers] == ["local", "human"]


def test_429_asks_temporal_to_wait_the_retry_after_and_401_is_final() -> None:
    request = httpx.Request("POST", "http://127.0.0.1/v1/chat/completions")
    limited = openai.RateLimitError(
        "slow down",
        response=httpx.Response(429, headers={"retry-after": "7"}, request=request),
        body=None,
    )
    error = as_application_error(limited, provider="openai", model="m", key_env="K")
    assert error.next_retry_delay == timedelta(seconds=7)
    assert not error.non_retryable
    refused = openai.AuthenticationError(
        "bad key", response=httpx.Response(401, request=request), body=None
    )
    error = as_application_error(refused, provider="openai", model="m", key_env="K")
    assert error.non_retryable and error.type == "ProviderAuthError"
