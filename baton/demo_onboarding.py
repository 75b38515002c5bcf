"""The demo's HR onboarding part: one ``hr_onboarding`` run for each
accepted offer of ``samples/hr_onboarding``.

The onboarding systems start empty on every demo. The recruiter starts
every run, and the demo's people act as ``expected.toml`` says: HR and
finance approve the bank details, security the engineer's admin access,
the hiring manager confirms day one, and the recruiter withdraws one
offer half-way. No wait needs shortening: the gates' SLAs run out only
when nobody acts, and here everybody acts at once. Each run is checked
against ``expected.toml``, and so is what the onboarding systems hold of
the hire afterwards: a withdrawn or refused offer must leave nothing.
"""

from __future__ import annotations

import asyncio
import json
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import Any

from temporalio.client import Client

from baton.client import (
    DecisionRefused,
    decide_in_turn,
    run_status,
    stop_run,
)
from baton.demo_outcomes import Row, Samples
from baton.gates import Decision, StopRequest
from baton.keys import Signer
from baton.runner import RunStatus
from systems.onboarding import OnboardingSystems

SAMPLES = Path(__file__).resolve().parent.parent / "samples" / "hr_onboarding"
RECRUITER = "rachel"
PEOPLE = (RECRUITER, "helen", "frank", "sofia", "max", "nora")
ENDED = ("completed", "rejected", "stopped", "failed")


def reset_systems() -> None:
    """The onboarding systems empty, faults included: a second demo must
    find no hire of the first one when it checks what a withdrawn offer
    left behind."""
    OnboardingSystems().empty()


async def _hire(
    client: Client, workflow_id: str, row: Row, signers: Mapping[str, Signer]
) -> tuple[str, str]:
    try:
        status, acts = await _through(client, workflow_id, row, signers)
    except DecisionRefused as refused:
        return "refused", refused.reason
    # The offer's own words: an offer the process refuses is no Hire.
    employee = json.loads((SAMPLES / row["file"]).read_text(encoding="utf-8"))["employee_id"]
    held = {s: found for s, found in OnboardingSystems().records_of(employee).items() if found}
    reached: str = status.state
    if status.state == "waiting":
        open_gates = ", ".join(g.gate for g in status.gates if g.decision is None)
        reached = f"waiting at {open_gates}"
    if set(held) != set(row["systems"]):
        reached += f", but {employee} is held in {', '.join(held) or 'no system'}"
    if "error" in row and row["error"] not in (status.error or ""):
        reached += f", but not for '{row['error']}'"
    if status.state == "failed":
        acts.append(str(status.error))
    if status.compensated:
        acts.append(f"undid {', '.join(sorted(status.compensated))}")
    if held:
        references = (f"{system} {r['reference']}" for system, rs in held.items() for r in rs)
        acts.append(f"{employee} is in {', '.join(references)}")
    else:
        acts.append(f"nothing of {employee} is left in the onboarding systems")
    return reached, "; ".join(acts)


HIRES = Samples(
    "hr_onboarding",
    SAMPLES / "expected.toml",
    "hire",
    folder=SAMPLES,
    requested_by=RECRUITER,
    reach=_hire,
    every="*.json",
)
run_onboarding = HIRES.run


async def _through(
    client: Client, workflow_id: str, row: Mapping[str, Any], signers: Mapping[str, Signer]
) -> tuple[RunStatus, list[str]]:
    """The run once it has ended or waits for someone ``row`` does not name,
    and what the people did on the way."""
    acts: list[str] = []
    while True:
        status = await _until(client, workflow_id, _settled)
        if status.state in ENDED:
            return status, acts
        for gate in (g for g in status.gates if g.decision is None):
            if gate.gate not in row and "withdrawn_by" in row:
                request = StopRequest(user=row["withdrawn_by"], reason=row["reason"])
                stopped = await stop_run(client, workflow_id, request, signers[request.user])
                acts.append(
                    f"{stopped.user} ({stopped.role}) withdrew the offer while it waited at "
                    f"{gate.gate}: {stopped.reason}"
                )
                # Compensation runs after the stop is accepted.
                return await _until(client, workflow_id, lambda s: s.state in ENDED), acts
            if gate.gate not in row:
                return status, acts
            deciders = row[gate.gate]
            users = [deciders] if isinstance(deciders, str) else deciders
            accepted = await decide_in_turn(
                client,
                workflow_id,
                [
                    Decision(gate=gate.gate, user=user, outcome="approve", comment="checked")
                    for user in users
                ],
                signers,
            )
            who = " and ".join(f"{d.user} ({d.role})" for d in accepted)
            acts.append(f"{gate.gate} approved by {who}")


def _settled(status: RunStatus) -> bool:
    """Ended, or waiting for a decision; a gate just decided may leave the
    run "waiting" for a moment with no gate open."""
    waits = status.state == "waiting" and any(g.decision is None for g in status.gates)
    return waits or status.state in ENDED


async def _until(
    client: Client, workflow_id: str, accept: Callable[[RunStatus], bool]
) -> RunStatus:
    while True:
        status = await run_status(client, workflow_id)
        if accept(status):
            return status
        await asyncio.sleep(0.1)
