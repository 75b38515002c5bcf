"""Model providers behind one small protocol: a request in, an answer out.

Providers never decide what happens with an answer; validation, repair and
escalation are the workflow's business (see `baton.runner`).
"""

from __future__ import annotations

from typing import Any, Protocol

from pydantic import BaseModel, Field


class AskRequest(BaseModel):
    """One attempt at an LLM task, as the workflow plans it."""

    task: str
    instructions: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    output_schema: dict[str, Any]
    provider: str = "offline"
    model: str = ""


class AskAnswer(BaseModel):
    """What a provider returned, with the facts an auditor needs about it."""

    output: dict[str, Any]
    confidence: float = Field(ge=0.0, le=1.0)
    confidence_method: str
    provider: str
    model: str
    input_tokens: int = 0
    output_tokens: int = 0
    notes: list[str] = Field(default_factory=list)


class Provider(Protocol):
    name: str

    async def ask(self, request: AskRequest) -> AskAnswer: ...


class UnknownTaskError(LookupError):
    """The provider has no way to answer this task."""
