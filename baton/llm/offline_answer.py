"""What an offline rules task answers, and how the offline provider says it:
one shape for every task, so a reviewer reads any of them the same way
(what was refused, matched and missing, then any doubts)."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from pydantic import BaseModel, Field

from baton.llm import AskAnswer
from baton.llm.offline_classify import PayableClassification
from baton.llm.offline_documents import DocumentExtraction
from baton.llm.offline_invoices import InvoiceExtraction

RULES_VERSION = "1"
Rules = Callable[[dict[str, Any]], AskAnswer]


class RulesAnswer(BaseModel):
    """What a process's rules answered. A process's rules module subclasses
    it only to name its ``method`` (the confidence method it reports)."""

    output: dict[str, Any] = Field(default_factory=dict)
    confidence: float = Field(ge=0.0, le=1.0)
    matched: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    method: str
    refused: str | None = None


def as_answer(
    task: str,
    output: dict[str, Any],
    extraction: DocumentExtraction | InvoiceExtraction | PayableClassification | RulesAnswer,
) -> AskAnswer:
    notes = [f"refused: {extraction.refused}"] if extraction.refused else []
    notes.append(f"matched: {', '.join(extraction.matched) or 'nothing'}")
    if extraction.missing:
        notes.append(f"missing: {', '.join(extraction.missing)}")
    if isinstance(extraction, InvoiceExtraction):
        notes += extraction.warnings
    return AskAnswer(
        output=output,
        confidence=extraction.confidence,
        confidence_method=extraction.method,
        provider="offline",
        model=f"rules-{task}-v{RULES_VERSION}",
        finish_reason="stop",
        notes=notes,
    )


def rules_task(task: str, rules: Callable[[dict[str, Any]], RulesAnswer]) -> Rules:
    """A process's rules for ``task`` as the offline provider answers them."""

    def answer(inputs: dict[str, Any]) -> AskAnswer:
        answered = rules(inputs)
        return as_answer(task, answered.output, answered)

    return answer
