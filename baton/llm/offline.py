"""The `offline` provider: deterministic rules instead of a model.

It needs no network and no key, so it is the default when nothing else is
configured. It answers only the tasks it has rules for and says so in every
answer (provider "offline", model "rules-<task>"): nothing pretends to be an LLM.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from baton.llm import AskAnswer, AskRequest, UnknownTaskError
from baton.llm.offline_documents import extract_document_fields

RULES_VERSION = "1"
_RULES = ThreadPoolExecutor(max_workers=1, thread_name_prefix="offline-rules")


def _extract_fields(inputs: dict[str, Any]) -> AskAnswer:
    extraction = extract_document_fields(str(inputs.get("text") or ""))
    notes = [f"refused: {extraction.refused}"] if extraction.refused else []
    notes.append(f"matched: {', '.join(extraction.matched) or 'nothing'}")
    if extraction.missing:
        notes.append(f"missing: {', '.join(extraction.missing)}")
    return AskAnswer(
        output=extraction.fields,
        confidence=extraction.confidence,
        confidence_method=extraction.method,
        provider="offline",
        model=f"rules-extract_fields-v{RULES_VERSION}",
        finish_reason="stop",
        notes=notes,
    )


TASKS: dict[str, Callable[[dict[str, Any]], AskAnswer]] = {
    "extract_fields": _extract_fields,
}


class OfflineProvider:
    name = "offline"

    async def ask(self, request: AskRequest) -> AskAnswer:
        rules = TASKS.get(request.task)
        if rules is None:
            raise UnknownTaskError(
                f"the offline provider has no rules for task '{request.task}' "
                f"(it knows: {', '.join(sorted(TASKS))}); route this task to a model provider"
            )
        # Off the event loop, which carries every heartbeat and activity of the
        # worker: rules are CPU work of up to a second on a large document.
        # One at a time, as they ran on the loop before: a pool of rule threads
        # would take turns at the GIL with the worker's workflow activations.
        return await asyncio.get_running_loop().run_in_executor(_RULES, rules, request.inputs)
