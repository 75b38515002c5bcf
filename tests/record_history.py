"""Record the histories that tests/test_replay.py replays.

    BATON_DATA_DIR=$(mktemp -d) python -m tests.record_history          # every gate path
    BATON_DATA_DIR=$(mktemp -d) python -m tests.record_history gate_stop
    BATON_DATA_DIR=$(mktemp -d) python -m tests.record_history --all    # and the two oldest

It runs document intake with the current code, one run per path through its
gates, and writes each run's event history to tests/histories/<name>.json:
approve, reject, changes (sent back, approved in the second round),
four-eyes (rita, then vera), SLA escalation (nobody decides for a day: a
reminder, an escalation to the supervisor, then sam decides), stop (sam
stops the run at the gate) and cascade to a person (every model of the
extract step's cascade is unsure; rita approves at its human tier). And
one HR onboarding run, started by the recruiter rachel: an engineer whose
bank details helen (HR) and frank (finance) approve, whose admin access
sofia (security) approves, and whose manager max confirms day one. And
one cycle of a customer renewal, started by the CRM's scheduler: cora
approves the recommendation, the mail webhook reports the reply, the run
continues as new at its wait for the next review, 90 days pass, the second
cycle asks cora again and colin stops the run there (two histories:
renewal_one_cycle.json and renewal_one_cycle.carried2.json). And one RFP
response with the offline agents: rita asks for changes to the drafts, then
approves the second round, and the bid is submitted. Every
start, decision, event and stop is signed, with keys made for the recording.

The runs go to a throwaway dev server, except the SLA escalation and the
renewal, which need the time-skipping test server to let days pass; the model cascade
talks to the scripted model server of tests/fake_llm.py. Histories are
written with the plain pydantic data converter (not encrypted), so the
replayer reads them without keys.

document_intake_clean and document_intake_reviewed were recorded by older
code and are re-recorded only with --all (or by naming them): replaying
them is what shows today's code still runs yesterday's runs. Re-record only
on purpose: a replay failure after a workflow change means running
workflows would break, and the change needs `workflow.patched`.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import sys
import tempfile
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import timedelta
from pathlib import Path
from typing import Any

from temporalio.api.enums.v1 import IndexedValueType
from temporalio.api.operatorservice.v1 import AddSearchAttributesRequest
from temporalio.client import Client, WorkflowHandle
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.testing import WorkflowEnvironment

from baton import search
from baton.client import (
    build_input,
    decide,
    decide_in_turn,
    run_status,
    send_event,
    start_run,
    stop_run,
)
from baton.config import CONFIG_ENV, ROUTING_ENV
from baton.demo import local_identities
from baton.demo_rfp import reset_systems as reset_rfp_desk
from baton.document_store import STORE_ENV
from baton.gates import Decision, Outcome, StopRequest
from baton.keys import Signer
from baton.outside import ExternalEvent
from baton.runner import GraphWorkflow
from baton.server import EmbeddedServer, free_port
from systems.crm import load_seed
from tests.conftest import BIN, ROOT, SAMPLES
from tests.fake_llm import Reply, ScriptedLLMServer
from tests.helpers import WORKER_CONFIG, continued_as_new, eventually, executions, settled
from tests.routing_config import DOC, KEY_ENV, UNSURE, VALID, answer, config
from worker import build_worker
from workflows.customer_renewal import REPLY_EVENT, CustomerRenewal
from workflows.document_intake import DocumentIntake
from workflows.hr_onboarding import HrOnboarding
from workflows.rfp_response import RfpResponse

HISTORIES = Path(__file__).parent / "histories"
QUEUE = "record"
USERS = ("mailroom", "rita", "vera", "sam", "rachel", "helen", "frank", "sofia", "max")
RENEWAL_USERS = ("crm", "cora", "colin", "mailhook")

CLEAN = SAMPLES / "invoice-acme-2026-0142.txt"
MISSING_TOTAL = SAMPLES / "invoice-missing-total.txt"
FOUR_EYES = SAMPLES / "invoice-brightline-bl-88317.txt"
ENGINEER_HIRE = ROOT / "samples" / "hr_onboarding" / "engineer-berlin.json"
RFP = ROOT / "samples" / "rfp_response" / "northwind-telematics.txt"
CRM_SEED = ROOT / "samples" / "customer_renewal" / "seed.toml"
# A renewal's input is the account id, which the seed puts in the CRM.
RENEWED = "ACC-1001"


@dataclass
class Recording:
    """What a recording run acts on and what it may ask of its environment."""

    client: Client
    handle: WorkflowHandle[Any, Any]
    signers: Mapping[str, Signer]
    env: WorkflowEnvironment | None = None


Act = Callable[[Recording], Awaitable[None]]


def decision(user: str, outcome: Outcome = "approve", gate: str = "review") -> Decision:
    return Decision(gate=gate, user=user, outcome=outcome, comment=f"recorded: {outcome}")


async def at_gate(r: Recording, gate: str = "review", round_: int = 1) -> None:
    """Wait until the run waits at ``gate`` in its ``round_``-th opening."""
    await eventually(
        lambda: run_status(r.client, r.handle.id),
        lambda s: (
            s.state == "waiting"
            and any(g.gate == gate and g.round == round_ and g.decision is None for g in s.gates)
        ),
    )


async def nothing(r: Recording) -> None:
    return None


async def approved_by_rita(r: Recording) -> None:
    await at_gate(r)
    await decide(r.client, r.handle.id, decision("rita"), r.signers["rita"])


async def rejected_by_rita(r: Recording) -> None:
    await at_gate(r)
    await decide(r.client, r.handle.id, decision("rita", "reject"), r.signers["rita"])


async def changes_then_approval(r: Recording) -> None:
    """rita sends it back to extraction; the gate opens again and she approves."""
    await at_gate(r)
    await decide(r.client, r.handle.id, decision("rita", "request_changes"), r.signers["rita"])
    await at_gate(r, round_=2)
    await decide(r.client, r.handle.id, decision("rita"), r.signers["rita"])


async def four_eyes(r: Recording) -> None:
    """A large total: rita approves, then vera as controller."""
    await at_gate(r)
    accepted = await decide_in_turn(
        r.client, r.handle.id, [decision("rita"), decision("vera")], r.signers
    )
    assert len(accepted) == 2 and not accepted[-1].awaiting, accepted


async def escalated_then_supervisor(r: Recording) -> None:
    """Nobody decides for 25 hours: the reminder at 12, the escalation at 24;
    then sam, a supervisor, approves."""
    assert r.env is not None, "the SLA path needs the time-skipping server"
    await at_gate(r)
    await r.env.sleep(timedelta(hours=25))
    gate = (await run_status(r.client, r.handle.id)).gates[0]
    assert gate.reminders, "no reminder was sent"
    assert [e.to_role for e in gate.escalations] == ["supervisor"], gate.escalations
    await decide(r.client, r.handle.id, decision("sam"), r.signers["sam"])


async def stopped_by_sam(r: Recording) -> None:
    await at_gate(r)
    await stop_run(
        r.client,
        r.handle.id,
        StopRequest(user="sam", reason="recorded: a duplicate of a paper invoice"),
        r.signers["sam"],
    )


async def cascade_to_rita(r: Recording) -> None:
    """No model of the cascade is sure: the extract step asks a person."""
    await at_gate(r, gate="extract")
    gate = next(g for g in (await run_status(r.client, r.handle.id)).gates if g.gate == "extract")
    assert gate.shown["why"] == "the cascade reached its human tier", gate.shown
    await decide(r.client, r.handle.id, decision("rita", gate="extract"), r.signers["rita"])


async def onboarded(r: Recording) -> None:
    """HR and finance approve the bank details, security the admin access;
    the hire's manager confirms day one."""
    await at_gate(r, "bank_details")
    await at_gate(r, "admin_approval")
    bank = [decision(user, gate="bank_details") for user in ("helen", "frank")]
    accepted = await decide_in_turn(r.client, r.handle.id, bank, r.signers)
    assert [a.role for a in accepted] == ["hr", "finance"], accepted
    await decide(
        r.client, r.handle.id, decision("sofia", gate="admin_approval"), r.signers["sofia"]
    )
    await at_gate(r, "confirm")
    await decide(r.client, r.handle.id, decision("max", gate="confirm"), r.signers["max"])


async def renewal_cycle(r: Recording) -> None:
    """cora approves, the customer replies; after 90 days the second cycle
    opens the gate again, and colin, the CS lead, stops the run there."""
    assert r.env is not None, "the next review needs the time-skipping server"
    await at_gate(r, gate="approve")
    await decide(r.client, r.handle.id, decision("cora", gate="approve"), r.signers["cora"])
    await eventually(lambda: run_status(r.client, r.handle.id), lambda s: "reply" in s.current)
    news = ExternalEvent(event=REPLY_EVENT, user="mailhook", key=RENEWED, data={"via": "record"})
    await send_event(r.client, r.handle.id, news, r.signers["mailhook"])
    await continued_as_new(r.client, r.handle.id)
    await eventually(
        lambda: run_status(r.client, r.handle.id), lambda s: "next_review" in s.current
    )
    await r.env.sleep(timedelta(days=90))
    await at_gate(r, gate="approve", round_=2)
    stop = StopRequest(user="colin", reason="recorded: one cycle")
    await stop_run(r.client, r.handle.id, stop, r.signers["colin"])


async def rfp_changes_then_approval(r: Recording) -> None:
    """rita asks for changes to the first bid's drafts, then approves the second."""
    await at_gate(r)
    changes = Decision(
        gate="review", user="rita", outcome="request_changes", comment="recorded: more detail"
    )
    await decide(r.client, r.handle.id, changes, r.signers["rita"])
    await at_gate(r, round_=2)
    await decide(r.client, r.handle.id, decision("rita"), r.signers["rita"])


@dataclass(frozen=True)
class Scenario:
    name: str
    sample: Path
    act: Act
    outcome: str
    server: str = "dev"  # "dev", "skipping" (time passes) or "llm" (a model cascade)
    process: type[GraphWorkflow] = DocumentIntake
    requested_by: str = "mailroom"


SCENARIOS = (
    Scenario("document_intake_clean", CLEAN, nothing, "completed"),
    Scenario("document_intake_reviewed", MISSING_TOTAL, approved_by_rita, "completed"),
    Scenario("gate_approve", MISSING_TOTAL, approved_by_rita, "completed"),
    Scenario("gate_reject", MISSING_TOTAL, rejected_by_rita, "rejected"),
    Scenario("gate_changes", MISSING_TOTAL, changes_then_approval, "completed"),
    Scenario("gate_four_eyes", FOUR_EYES, four_eyes, "completed"),
    Scenario(
        "gate_sla_escalation", MISSING_TOTAL, escalated_then_supervisor, "completed", "skipping"
    ),
    Scenario("gate_stop", MISSING_TOTAL, stopped_by_sam, "stopped"),
    Scenario("gate_cascade_to_person", DOC, cascade_to_rita, "completed", "llm"),
    Scenario(
        "hr_onboarding_completed",
        ENGINEER_HIRE,
        onboarded,
        "completed",
        process=HrOnboarding,
        requested_by="rachel",
    ),
    Scenario(
        "rfp_response_changes",
        RFP,
        rfp_changes_then_approval,
        "completed",
        process=RfpResponse,
    ),
    Scenario(
        "renewal_one_cycle",
        Path(RENEWED),
        renewal_cycle,
        "stopped",
        "skipping",
        process=CustomerRenewal,
        requested_by="crm",
    ),
)
# Recorded by older code: kept, and replaced only when asked for.
OLDEST = ("document_intake_clean", "document_intake_reviewed")
GATE_PATHS = tuple(p.name for p in SCENARIOS if p.name not in OLDEST)


async def record(scenario: Scenario, r: Recording, out: Path) -> None:
    await settled(r.client, r.handle.id)
    await scenario.act(r)
    result = await r.handle.result()
    assert result.outcome == scenario.outcome, f"{scenario.name}: {result.outcome}"
    # A run that continued as new has a history per execution: the first is
    # <name>.json, the later ones <name>.carried<n>.json.
    for number, history in enumerate(await executions(r.client, r.handle.id), start=1):
        name = scenario.name if number == 1 else f"{scenario.name}.carried{number}"
        (out / f"{name}.json").write_text(history.to_json())
        print(f"recorded {name} ({len(history.events)} events, {result.outcome})")


async def start(
    client: Client, scenario: Scenario, signers: Mapping[str, Signer]
) -> WorkflowHandle[Any, Any]:
    process, by = scenario.process, scenario.requested_by
    request = build_input(process, [str(scenario.sample)], requested_by=by)
    return await start_run(
        client, process, request, task_queue=QUEUE, workflow_id=scenario.name, signer=signers[by]
    )


async def on_dev_server(
    scenarios: Sequence[Scenario], tmp: Path, signers: Mapping[str, Signer], out: Path
) -> None:
    server = EmbeddedServer(db_file=tmp / "t.db", port=free_port(), ui_port=None)
    async with server:
        client = await Client.connect(server.address, data_converter=pydantic_data_converter)
        with ScriptedLLMServer() as llm:
            async with build_worker(client, task_queue=QUEUE, run_config=WORKER_CONFIG):
                for scenario in scenarios:
                    WORKER_CONFIG.config = None
                    if scenario.server == "llm":
                        # gpt-cheap is unsure of its tokens, claude-strong of its answer.
                        llm.script("gpt-cheap", Reply(answer(VALID), logprobs=UNSURE))
                        llm.script("claude-strong", Reply(answer(VALID, 0.4)))
                        WORKER_CONFIG.config = config(llm, cascade=["cheap", "strong", "human"])
                    handle = await start(client, scenario, signers)
                    await record(scenario, Recording(client, handle, signers), out)
                    assert llm.pending() == 0, "a scripted model reply was never asked for"


async def on_time_skipping_server(
    scenarios: Sequence[Scenario], signers: Mapping[str, Signer], out: Path
) -> None:
    env = await WorkflowEnvironment.start_time_skipping(
        test_server_existing_path=str(BIN / "temporal-test-server"),
        data_converter=pydantic_data_converter,
    )
    async with env:
        await env.client.operator_service.add_search_attributes(
            AddSearchAttributesRequest(
                namespace=env.client.namespace,
                search_attributes={
                    k.name: IndexedValueType.Value(
                        f"INDEXED_VALUE_TYPE_{k.indexed_value_type.name}"
                    )
                    for k in search.ALL
                },
            )
        )
        WORKER_CONFIG.config = None
        async with build_worker(env.client, task_queue=QUEUE, run_config=WORKER_CONFIG):
            for scenario in scenarios:
                handle = await start(env.client, scenario, signers)
                await record(scenario, Recording(env.client, handle, signers, env=env), out)


def isolate(tmp: Path) -> None:
    """Runs read the repository's configuration and write only under ``tmp``
    (or BATON_DATA_DIR): never the demo's .baton/ nor what the shell names."""
    os.environ.setdefault("BATON_DATA_DIR", str(tmp / "data"))
    os.environ[STORE_ENV] = str(tmp / "documents")
    os.environ["BATON_ERP_DB"] = str(tmp / "erp.sqlite")
    os.environ[CONFIG_ENV] = str(ROOT / "baton.toml")
    os.environ[KEY_ENV] = "sk-record"
    for name in (ROUTING_ENV, "BATON_AUDIT_URL"):
        os.environ.pop(name, None)


async def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(
        prog="python -m tests.record_history",
        description=__doc__,
        formatter_class=argparse.RawDescriptionHelpFormatter,
    )
    parser.add_argument(
        "names",
        nargs="*",
        metavar="NAME",
        help=f"record only these (of: {', '.join(p.name for p in SCENARIOS)})",
    )
    parser.add_argument("--all", action="store_true", help=f"re-record {' and '.join(OLDEST)} too")
    parser.add_argument("--out", type=Path, default=HISTORIES, help="where to write (%(default)s)")
    args = parser.parse_args(argv)
    unknown = set(args.names) - {p.name for p in SCENARIOS}
    if unknown:
        parser.error(f"no such recording: {', '.join(sorted(unknown))}")
    wanted = set(args.names) or {*GATE_PATHS, *(OLDEST if args.all else ())}
    scenarios = [s for s in SCENARIOS if s.name in wanted]
    args.out.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory() as tmp:
        isolate(Path(tmp))
        signers = local_identities(Path(tmp), (*USERS, *RENEWAL_USERS), via="record")
        load_seed(CRM_SEED)
        reset_rfp_desk()
        dev = [s for s in scenarios if s.server != "skipping"]
        if dev:
            await on_dev_server(dev, Path(tmp), signers, args.out)
        skipping = [s for s in scenarios if s.server == "skipping"]
        if skipping:
            await on_time_skipping_server(skipping, signers, args.out)


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1:]))
