"""The `offline` provider: deterministic rules instead of a model.

It needs no network and no key, so it is the default when nothing else is
configured. It answers only the tasks it has rules for and says so in every
answer (provider "offline", model "rules-<task>"): nothing pretends to be an LLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import Any, TypeVar

from baton.llm import AskAnswer, AskRequest, UnknownTaskError
from baton.llm.offline_answer import Rules, as_answer, rules_task
from baton.llm.offline_classify import classify_payable
from baton.llm.offline_documents import extract_document_fields
from baton.llm.offline_invoices import extract_invoice
from baton.llm.offline_renewal import draft_email, health_rationale, recommend_action
from baton.llm.offline_rfp import AGENT_TURNS as RFP_AGENT_TURNS
from baton.llm.offline_rfp import ASK_RULES as RFP_RULES
from baton.llm.turns import TurnAnswer, TurnRequest

T = TypeVar("T")

_RULES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-rules")


def _extract_fields(inputs: dict[str, Any]) -> AskAnswer:
    extraction = extract_document_fields(str(inputs.get("text") or ""))
    return as_answer("extract_fields", extraction.fields, extraction)


def _extract_invoice(inputs: dict[str, Any]) -> AskAnswer:
    extraction = extract_invoice(str(inputs.get("text") or ""))
    return as_answer("extract_invoice", extraction.invoice.model_dump(mode="json"), extraction)


def _classify_payable(inputs: dict[str, Any]) -> AskAnswer:
    decided = classify_payable(str(inputs.get("text") or ""))
    return as_answer("classify_payable", decided.classification.model_dump(mode="json"), decided)


TASKS: dict[str, Rules] = {
    "classify_payable": _classify_payable,
    "extract_fields": _extract_fields,
    "extract_invoice": _extract_invoice,
    "renewal_rationale": rules_task("renewal_rationale", health_rationale),
    "recommend_renewal_action": rules_task("recommend_renewal_action", recommend_action),
    "draft_renewal_email": rules_task("draft_renewal_email", draft_email),
    **RFP_RULES,
}


# Agent tasks (baton.nodes.agent) the offline provider plays by a scripted
# policy: one turn's request in, its tool calls or final answer out. A
# process's offline module registers its policies when imported, and
# whatever serves the process (its activities module) imports that module.
AgentPolicy = Callable[[TurnRequest], TurnAnswer]
AGENT_POLICIES: dict[str, AgentPolicy] = {}


def register_agent_policy(task: str, policy: AgentPolicy) -> AgentPolicy:
    """Play the agent task ``task`` offline by ``policy``, which must be
    deterministic and answer as provider "offline"; returns the policy."""
    AGENT_POLICIES[task] = policy
    return policy


# The RFP response's drafter and critic (imported above with its Ask rules).
for _task, _policy in RFP_AGENT_TURNS.items():
    register_agent_policy(_task, _policy)


class OfflineProvider:
    name = "offline"

    async def turn(self, request: TurnRequest) -> TurnAnswer:
        policy = _known(
            AGENT_POLICIES,
            request.task,
            "an agent policy",
            "register one with baton.llm.offline.register_agent_policy or route the task to a "
            "model",
        )
        return await asyncio.get_running_loop().run_in_executor(_RULES, policy, request)

    async def ask(self, request: AskRequest) -> AskAnswer:
        rules = _known(TASKS, request.task, "rules", "route this task to a model provider")
        # Off the event loop, which carries every heartbeat and activity of the
        # worker: rules are CPU work of up to a second on a large document.
        # One at a time, as they ran on the loop before: a pool of rule threads
        # would take turns at the GIL with the worker's workflow activations.
        return await asyncio.get_running_loop().run_in_executor(_RULES, rules, request.inputs)


def _known(table: Mapping[str, T], task: str, what: str, fix: str) -> T:
    """What ``table`` plays ``task`` by, or an error naming the tasks it knows."""
    found = table.get(task)
    if found is None:
        known = ", ".join(sorted(table)) or "none"
        raise UnknownTaskError(
            f"the offline provider has no {what} for task '{task}' (it knows: {known}); {fix}"
        )
    return found
