"""The demo's RFP response part: one ``rfp_response`` run for each sample
RFP of ``samples/rfp_response``, answered by the offline model.

The RFP desk starts from the sample answer library, product facts and price
list on every demo (a second demo would otherwise find every RFP answered
already). The mail room starts every run, and the demo's people act as
``expected.toml`` says: a supervisor confirms a no-go, the reviewer asks
for changes when the row has a note and approves the bid. Each run is
checked against ``expected.toml``, and every bid sent is printed with its
coverage matrix as the RFP desk holds it.
"""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path

from temporalio.client import Client

from activities.rfp_models import CoverageRow, format_matrix
from baton.client import decide, run_status
from baton.demo_outcomes import Outcome, Row, start_samples
from baton.gates import Decision
from baton.keys import Signer
from baton.runner import NodeRecord, RunStatus

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "rfp_response"
REQUESTER = "mailroom"
REVIEWER = "rita"
PEOPLE = (REQUESTER, REVIEWER, "sam")
ENDED = ("completed", "rejected", "stopped", "failed")


@dataclass
class RfpDemo:
    """Where each sample ended, and the coverage matrix of each bid sent."""

    outcomes: list[Outcome] = field(default_factory=list)
    matrices: dict[str, list[CoverageRow]] = field(default_factory=dict)


def reset_systems() -> None:
    from systems.rfp import RfpDesk, load_seed

    desk = RfpDesk()
    desk.empty()
    load_seed(SAMPLES, desk)


async def run_rfps(client: Client, *, task_queue: str, signers: Mapping[str, Signer]) -> RfpDemo:
    from workflows.rfp_response import RfpResponse

    rows = tomllib.loads((SAMPLES / "expected.toml").read_text(encoding="utf-8"))["rfp"]
    unlisted = sorted({p.name for p in SAMPLES.glob("*.txt")} - {row["file"] for row in rows})
    if unlisted:
        raise ValueError(f"{SAMPLES / 'expected.toml'} has no row for {', '.join(unlisted)}")
    demo = RfpDemo()

    async def follow(
        client: Client, workflow_id: str, row: Row, signers: Mapping[str, Signer]
    ) -> Outcome:
        reached, note = await _through(client, workflow_id, row, signers, demo)
        return Outcome(row["file"], workflow_id, row["outcome"], reached, note)

    demo.outcomes = await start_samples(
        client,
        RfpResponse,
        rows,
        folder=SAMPLES,
        requested_by=REQUESTER,
        task_queue=task_queue,
        signers=signers,
        follow=follow,
    )
    return demo


async def _through(
    client: Client,
    workflow_id: str,
    row: Row,
    signers: Mapping[str, Signer],
    demo: RfpDemo,
) -> tuple[str, str]:
    """Where the run ended (what the RFP desk holds of it), and what happened on the way."""
    from systems.rfp import RfpDesk

    acts: list[str] = []
    changes = row.get("changes")
    while True:
        status = await _settled(client, workflow_id)
        if status.state in ENDED:
            break
        gate = next(g for g in status.gates if g.decision is None)
        if gate.gate == "confirm_no_bid" and "supervisor" in row:
            user = row["supervisor"]
            decision = Decision(gate=gate.gate, user=user, outcome="approve", comment="agreed")
            acts.append(f"{user} confirmed the no-go: {'; '.join(gate.shown['why'][1:-1])}")
        elif gate.gate == "review":
            # The reasons, without the reviewer's choices; an RFP's words to an AI briefly.
            reasons = [w.split(";")[0] for w in gate.shown["why"][:-1]]
            acts.append(f"review {gate.round}: {', '.join(reasons)}")
            drafts = _record(status, "draft").visits
            if changes:
                decision = Decision(
                    gate=gate.gate, user=REVIEWER, outcome="request_changes", comment=changes
                )
                acts.append(f"{REVIEWER} (reviewer) asked for changes after draft {drafts}")
                changes = None
            else:
                decision = Decision(gate=gate.gate, user=REVIEWER, outcome="approve", comment="ok")
                acts.append(f"{REVIEWER} (reviewer) approved draft {drafts}")
                if drafts != row.get("drafts", drafts):
                    acts.append(f"EXPECTED {row['drafts']} drafts")
        else:
            return f"waiting at {gate.gate}", "; ".join(acts)
        await decide(client, workflow_id, decision, signers[decision.user])
    if status.state != "completed":
        return status.state, "; ".join([*acts, str(status.error or "")])
    qualify = _record(status, "qualify").output
    decision_note = f"{qualify['reference']}: {qualify['decision']}"
    desk = RfpDesk()
    sent = next(iter(desk.submissions(qualify["reference"])), None)
    if sent is not None:
        rows = [CoverageRow.model_validate(r) for r in sent["coverage"]]
        demo.matrices[row["file"]] = rows
        reached = f"submitted, {sent['covered']} of {len(rows)} covered"
    else:
        reached = "declined" if desk.declines(qualify["reference"]) else "nothing recorded"
    if qualify["decision"] != row["decision"]:
        reached += f", but the rules decided {qualify['decision']}"
    return reached, "; ".join([decision_note, *acts])


def print_matrices(demo: RfpDemo) -> None:
    for sample, rows in demo.matrices.items():
        print(f"\ncoverage matrix of the bid for {sample} (as the RFP desk holds it):")
        for line in format_matrix(rows):
            print(f"    {line}")


def _record(status: RunStatus, node: str) -> NodeRecord:
    return next(r for r in status.nodes if r.node == node)


async def _settled(client: Client, workflow_id: str) -> RunStatus:
    """The run once it has ended or waits for a decision (a gate just
    decided may leave it "waiting" for a moment with no gate open)."""
    while True:
        status = await run_status(client, workflow_id)
        open_gate = status.state == "waiting" and any(g.decision is None for g in status.gates)
        if open_gate or status.state in ENDED:
            return status
        await asyncio.sleep(0.1)
