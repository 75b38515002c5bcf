"""Customer renewal on the time-skipping server, with the sample CRM: a reply
in time, a reply after the follow-up, no answer, the CSM's edit sent as
edited, replies that must not count, and a recommendation no model gets
right going up the cascade to a person."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest
from temporalio.client import Client, WorkflowHandle
from temporalio.testing import WorkflowEnvironment
from temporalio.worker import Replayer, Worker

from baton.audit.sink import AuditSettings
from baton.audit.store import open_store
from baton.cli import format_status
from baton.client import DecisionRefused, decide, run_status, send_event, start_run, stop_run
from baton.config import RunConfig, load_run_config
from baton.gates import Decision, StopRequest
from baton.graph import Graph, GraphError
from baton.outside import ExternalEvent
from baton.plugin import BatonPlugin
from baton.routing import TaskRoute
from baton.runner import RunResult, RunStatus
from systems.crm import Crm, load_seed
from tests.conftest import ROOT
from tests.fake_llm import Reply, ScriptedLLMServer
from tests.helpers import (
    STARTED,
    WORKER_CONFIG,
    continued_as_new,
    executions,
    gate_open,
    reaches,
    record,
)
from tests.routing_config import answer, config
from worker import build_worker
from workflows.customer_renewal import (
    GRAPH,
    REPLY_EVENT,
    CustomerRenewal,
    RenewalRequest,
    account_id,
)

SEED = ROOT / "samples" / "customer_renewal" / "seed.toml"
HEALTHY, AT_RISK, CHURNING = "ACC-1001", "ACC-1002", "ACC-1003"
CSM = {HEALTHY: "cora", AT_RISK: "cora", CHURNING: "colin"}
# The defaults of [policies.renewal] in baton.toml, which these tests keep.
REPLY_WAIT = timedelta(days=14)
FOLLOW_UP_WAIT = timedelta(days=7)
REVIEW_EVERY = timedelta(days=90)


@pytest.fixture(autouse=True)
def seeded(isolated_data: Path) -> None:
    load_seed(SEED)


async def start(client: Client, queue: str, account: str) -> WorkflowHandle[Any, RunResult]:
    request = RenewalRequest(account_id=account, requested_by="crm")
    handle = await start_run(client, CustomerRenewal, request, task_queue=queue)
    STARTED.append(handle)
    return handle


def at(node: str) -> Callable[[RunStatus], bool]:
    return lambda status: node in status.current


def approve(user: str = "cora", **edit: Any) -> Decision:
    return Decision(gate="approve", user=user, outcome="approve", comment="go ahead", **edit)


def reply(account: str, user: str = "mailhook") -> ExternalEvent:
    return ExternalEvent(
        event=REPLY_EVENT, user=user, key=account, data={"message_id": f"<re-{account}@mail>"}
    )


async def approved_and_sent(
    client: Client, queue: str, account: str, decision: Decision | None = None
) -> WorkflowHandle[Any, RunResult]:
    """A run for ``account`` whose CSM approved (``decision``, else as is),
    waiting for the customer's reply."""
    handle = await start(client, queue, account)
    await reaches(client, handle.id, gate_open("approve"))
    await decide(client, handle.id, decision or approve(CSM[account]))
    await reaches(client, handle.id, at("reply"))
    return handle


async def test_a_reply_from_a_sender_without_the_webhook_role_or_about_another_account_is_refused(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await approved_and_sent(client, task_queue, HEALTHY)
    attempts = [
        reply(HEALTHY, user="cora"),  # a person: the CSM cannot claim a reply
        reply(HEALTHY, user="warehouse"),  # another system's service user
        reply(AT_RISK),  # the webhook, but about another account
    ]
    reasons = []
    for event in attempts:
        with pytest.raises(DecisionRefused) as refused:
            await send_event(client, handle.id, event)
        reasons.append(refused.value.reason)
    assert "user 'cora' (csm) may not send 'customer.replied'" in reasons[0]
    assert "it needs one of: mail_webhook" in reasons[1]
    assert f"only about '{HEALTHY}', and this one is about '{AT_RISK}'" in reasons[2]
    status = await run_status(client, handle.id)
    assert status.events == [], "nothing refused is kept"
    assert [(r.act, r.user) for r in status.refusals] == [
        ("event", "cora"),
        ("event", "warehouse"),
        ("event", "mailhook"),
    ]
    # None of it counted: the run still waits, and after 14 days follows up.
    assert status.current == ["reply"]
    await time_skipping_env.sleep(REPLY_WAIT)
    status = await reaches(client, handle.id, at("follow_up_reply"))
    assert record(status, "reply").output["timed_out"] is True


async def test_a_reply_in_time_is_recorded_and_the_account_is_reviewed_again_next_cycle(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await approved_and_sent(client, task_queue, HEALTHY)
    assert handle.id == f"customer_renewal-{HEALTHY}", "one run per account, named by it"
    await time_skipping_env.sleep(timedelta(days=3))
    received = await send_event(client, handle.id, reply(HEALTHY))
    assert (received.user, received.role) == ("mailhook", "mail_webhook")
    # The cycle ends waiting for the next review, in a fresh history.
    await continued_as_new(client, handle.id)
    status = await reaches(client, handle.id, at("next_review"))
    assert status.execution == 2
    [outcome] = Crm().outcomes(HEALTHY)
    assert (outcome["cycle"], outcome["outcome"], outcome["approved_by"]) == (1, "replied", "cora")
    assert outcome["action"] == "offer_expansion"
    [email] = Crm().emails(HEALTHY)
    assert (email["kind"], email["to_address"]) == ("outreach", "priya.natarajan@lumen.example.com")
    assert record(status, "follow_up").status == "skipped"
    assert record(status, "reply").output["waited_seconds"] == pytest.approx(3 * 86400, abs=5)
    # The next review comes after the configured interval: the second cycle
    # scores the account again and asks its CSM again.
    await time_skipping_env.sleep(REVIEW_EVERY)
    status = await reaches(client, handle.id, gate_open("approve", round_=2))
    health = record(status, "health")
    assert (health.visits, health.output["cycle"]) == (2, 2)
    stopped = await stop_run(
        client, handle.id, StopRequest(user="colin", reason="account moves to a partner")
    )
    assert stopped.role == "cs_lead"
    assert (await handle.result()).outcome == "stopped"
    assert len(Crm().outcomes(HEALTHY)) == 1, "the stopped second cycle recorded nothing"


async def test_no_reply_in_14_days_sends_one_follow_up_and_a_reply_then_counts(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await approved_and_sent(client, task_queue, AT_RISK)
    await time_skipping_env.sleep(REPLY_WAIT)
    await reaches(client, handle.id, at("follow_up_reply"))
    outreach, follow_up = Crm().emails(AT_RISK)
    assert (outreach["kind"], follow_up["kind"]) == ("outreach", "follow_up")
    assert follow_up["subject"] == f"Re: {outreach['subject']}"
    await send_event(client, handle.id, reply(AT_RISK))
    status = await reaches(client, handle.id, at("next_review"))
    [outcome] = Crm().outcomes(AT_RISK)
    assert outcome["outcome"] == "replied_after_follow_up"
    assert len(Crm().emails(AT_RISK)) == 2, "one follow-up, once"
    assert [e.taken_by for e in status.events] == ["follow_up_reply#1"]


async def test_no_answer_after_the_follow_up_is_recorded_with_exactly_two_emails(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await approved_and_sent(client, task_queue, CHURNING)
    await time_skipping_env.sleep(REPLY_WAIT)
    await reaches(client, handle.id, at("follow_up_reply"))
    await time_skipping_env.sleep(FOLLOW_UP_WAIT)
    status = await reaches(client, handle.id, at("next_review"))
    [outcome] = Crm().outcomes(CHURNING)
    assert (outcome["outcome"], outcome["action"]) == ("no_answer", "rescue_plan")
    assert [e["kind"] for e in Crm().emails(CHURNING)] == ["outreach", "follow_up"]
    waited = record(status, "follow_up_reply").output["waited_seconds"]
    assert waited == pytest.approx(FOLLOW_UP_WAIT.total_seconds(), abs=5)


async def test_the_csms_edit_of_the_recommendation_is_what_is_drafted_and_sent(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, AT_RISK)
    status = await reaches(client, handle.id, gate_open("approve"))
    [gate] = status.gates
    assert (gate.roles, gate.assignees) == (["csm"], ["cora"])
    proposed = gate.shown["subject"]["output"]
    assert (proposed["band"], proposed["action"]) == ("at_risk", "success_review")
    assert "health score 44/100 (at_risk)" in gate.shown["why"][0]
    edited = {**proposed, "action": "executive_outreach", "reasons": ["their sponsor left"]}
    # The CSM who is not the account's waits for the escalation.
    with pytest.raises(DecisionRefused, match="is assigned to cora"):
        await decide(client, handle.id, approve("colin", output=edited))
    decided = await decide(client, handle.id, approve(output=edited))
    assert decided.edited
    status = await reaches(client, handle.id, at("reply"))
    recommend = record(status, "recommend")
    assert recommend.output["action"] == "executive_outreach"
    assert recommend.meta["original_output"]["action"] == "success_review"
    [email] = Crm().emails(AT_RISK)
    assert email["subject"] == "Corvid Logistics and us: a conversation"
    assert email["body"] == record(status, "draft").output["body"]
    assert "Our leadership would like to hear" in email["body"]


def cascading(llm: ScriptedLLMServer) -> RunConfig:
    """The repository's routing, with the recommendation sent to the
    scripted models: cheap, then strong, then the account's CSM."""
    base = load_run_config()
    scripted = config(llm, cascade=["cheap", "strong", "human"]).routing
    routing = base.routing.model_copy(
        update={
            "providers": {**base.routing.providers, **scripted.providers},
            "tiers": {**base.routing.tiers, **scripted.tiers},
            "tasks": {
                **base.routing.tasks,
                "recommend_renewal_action": TaskRoute(
                    cascade=["cheap", "strong", "human"],
                    min_confidence=0.8,
                    repair_attempts=1,
                    human_role="csm",
                ),
            },
        }
    )
    return base.model_copy(update={"routing": routing})


EXPANSION = {"band": "churning", "action": "offer_expansion", "reasons": ["they use it a lot"]}
RESCUE = {"band": "churning", "action": "rescue_plan", "reasons": ["usage down 42%, 7 tickets"]}


async def test_a_recommendation_that_fails_its_check_goes_to_the_strong_model(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply(answer(EXPANSION)), Reply(answer(EXPANSION)))
    llm.script("claude-strong", Reply(answer(RESCUE, 0.93)))
    WORKER_CONFIG.config = cascading(llm)
    client = time_skipping_env.client
    handle = await start(client, task_queue, CHURNING)
    status = await reaches(client, handle.id, gate_open("approve"))
    attempts = record(status, "recommend").meta["attempts"]
    assert [(a["model"], a["outcome"]) for a in attempts] == [
        ("gpt-cheap", "invalid"),
        ("gpt-cheap", "invalid"),
        ("claude-strong", "accepted"),
    ]
    assert "does not fit a churning account" in attempts[0]["errors"][0]
    # The repair told the cheap model why.
    assert "does not fit a churning account" in str(llm.requests_for("gpt-cheap")[1].body)
    assert status.gates[0].shown["subject"]["output"] == RESCUE
    assert llm.pending() == 0


async def test_a_recommendation_no_model_gets_right_is_written_by_the_csm(
    time_skipping_env: WorkflowEnvironment,
    skipping_worker: Worker,
    task_queue: str,
    llm: ScriptedLLMServer,
) -> None:
    llm.script("gpt-cheap", Reply(answer(EXPANSION)), Reply(answer(EXPANSION)))
    llm.script("claude-strong", Reply(answer(EXPANSION, 0.9)), Reply(answer(EXPANSION, 0.9)))
    WORKER_CONFIG.config = cascading(llm)
    client = time_skipping_env.client
    handle = await start(client, task_queue, CHURNING)
    status = await reaches(client, handle.id, gate_open("recommend"))
    gate = next(g for g in status.gates if g.gate == "recommend")
    assert gate.roles == ["csm"] and gate.shown["why"] == "the cascade reached its human tier"
    written = Decision(
        gate="recommend", user="colin", outcome="approve", comment="no model read it", output=RESCUE
    )
    await decide(client, handle.id, written)
    # Then the account's CSM approves it like any recommendation.
    status = await reaches(client, handle.id, gate_open("approve"))
    assert record(status, "recommend").output == RESCUE
    assert record(status, "recommend").meta["decided_by"] == "colin"
    assert llm.pending() == 0


async def test_one_run_per_account_and_an_unknown_account_fails_naming_it(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, HEALTHY)
    await reaches(client, handle.id, gate_open("approve"))
    with pytest.raises(Exception, match="already started"):
        await start(client, task_queue, HEALTHY)
    unknown = await start(client, task_queue, "ACC-9999")
    status = await reaches(client, unknown.id, lambda s: s.state == "failed")
    assert status.error is not None
    assert "the CRM has no account 'ACC-9999'" in status.error


async def test_a_missing_wait_in_the_policy_fails_the_run_at_once_naming_it(
    time_skipping_env: WorkflowEnvironment, skipping_worker: Worker, task_queue: str
) -> None:
    broken = load_run_config().model_copy(deep=True)
    del broken.policies["renewal"]["reply_wait_days"]
    WORKER_CONFIG.config = broken
    client = time_skipping_env.client
    handle = await start(client, task_queue, HEALTHY)
    status = await reaches(client, handle.id, lambda s: s.state == "failed")
    assert status.error is not None
    assert "[policies.renewal].reply_wait_days = None must be a number of days" in status.error
    assert Crm().emails(HEALTHY) == []


def test_event_keys_must_name_an_event_the_graph_awaits() -> None:
    with pytest.raises(GraphError, match=r"event_keys names 'customer\.replyed', which no Await"):
        Graph(
            name="renewal_typo",
            input=RenewalRequest,
            nodes=GRAPH.nodes,
            event_keys={"customer.replyed": account_id},
        )


async def test_a_run_that_continued_as_new_three_times_still_answers_keeps_its_chain_and_replays(
    own_clock: WorkflowEnvironment, task_queue: str
) -> None:
    # A server of its own: after the module's earlier runs (one terminated at
    # its 90-day wait, just after it continued as new), the shared test
    # server's clock stopped skipping and this test's first 90 days timed out.
    async with build_worker(own_clock.client, task_queue=task_queue, run_config=WORKER_CONFIG):
        await three_cycles(own_clock, task_queue)


async def three_cycles(time_skipping_env: WorkflowEnvironment, task_queue: str) -> None:
    client = time_skipping_env.client
    handle = await start(client, task_queue, HEALTHY)
    for cycle in (1, 2, 3):
        await reaches(client, handle.id, gate_open("approve", round_=cycle))
        await decide(client, handle.id, approve(CSM[HEALTHY]))
        await reaches(client, handle.id, at("reply"))
        await send_event(client, handle.id, reply(HEALTHY))
        await continued_as_new(client, handle.id, times=cycle)
        await time_skipping_env.sleep(REVIEW_EVERY)
    status = await reaches(client, handle.id, gate_open("approve", round_=4))
    assert status.execution == 4 and status.requested_by == "crm"
    assert "history: execution 4 of this run" in format_status(status).splitlines()
    assert record(status, "health").visits == 4
    assert [o["cycle"] for o in Crm().outcomes(HEALTHY)] == [1, 2, 3]
    assert len(Crm().emails(HEALTHY)) == 3, "one outreach a cycle, none sent twice"
    # Each cycle's signed decision counted once, in the history it arrived in.
    assert len(status.events) == 3 and all(e.taken_by for e in status.events)

    store = open_store(AuditSettings.from_env().url)
    report = store.verify(handle.id)
    assert report.ok, report.problems
    types = [r.event_type for r in store.records(handle.id)]
    assert types.count("run.started") == 1
    assert types.count("run.carried") == types.count("run.resumed") == 3

    histories = await executions(client, handle.id)
    assert len(histories) == 4
    replayer = Replayer(
        workflows=[], plugins=[BatonPlugin([CustomerRenewal], data_converter=client.data_converter)]
    )
    for history in histories:
        await replayer.replay_workflow(history)
    await stop_run(client, handle.id, StopRequest(user="colin", reason="test over"))
