"""Model providers behind one small protocol: a request in, an answer out.

Providers never decide what happens with an answer; validation, repair and
escalation are the workflow's business (see `baton.runner` and
`baton.routing`). A provider reports what it was asked, what it answered,
tokens, and a confidence with the method that measured it.
"""

from __future__ import annotations

from typing import Any, Protocol, TypedDict

from pydantic import BaseModel, Field

from baton.routing import ProviderSpec


class ModelRequest(BaseModel):
    """One call of a model for a task, as the workflow plans it: an Ask's
    attempt (AskRequest) or an Agent's turn (baton.llm.turns.TurnRequest)."""

    task: str
    instructions: str = ""
    inputs: dict[str, Any] = Field(default_factory=dict)
    documents: list[str] = Field(
        default_factory=list,
        description="Inputs that hold a document reference; the activity gives the model "
        "the document's text in their place",
    )
    output_schema: dict[str, Any]
    provider_name: str = "offline"
    provider: ProviderSpec = Field(default_factory=lambda: ProviderSpec(kind="offline"))
    model: str = "rules"
    max_tokens: int = Field(default=1024, ge=1, description="The output cap (TaskRoute.max_tokens)")
    temperature: float | None = Field(
        default=0.0, description="Sampling temperature (Candidate.temperature); None: not sent"
    )


class AskRequest(ModelRequest):
    """One attempt at an LLM task with one model."""

    repair_errors: list[str] = Field(
        default_factory=list, description="Why the previous answer was refused; empty at first"
    )
    previous_output: Any = None
    previous_reply: str = Field(
        default="",
        description="The refused answer as the model wrote it (bounded); the repair prompt "
        "shows it, as the parsed output of a cut or malformed reply is empty",
    )
    logprobs: bool = Field(default=True, description="Ask for token log-probabilities")


class Served(TypedDict):
    """Who answered a model call and its size in tokens, as every
    provider's reply says: an AskAnswer's and a TurnAnswer's alike."""

    provider: str
    model: str
    response_id: str
    finish_reason: str
    input_tokens: int
    output_tokens: int


class AskAnswer(BaseModel):
    """What a provider returned, with the facts an auditor needs about it."""

    output: dict[str, Any]
    format_errors: list[str] = Field(
        default_factory=list, description="The reply was not the JSON object asked for"
    )
    confidence: float = Field(ge=0.0, le=1.0)
    confidence_method: str
    provider: str
    model: str
    response_id: str = ""
    finish_reason: str = Field(
        default="", description="Why the model stopped, as the provider says: stop, length, ..."
    )
    input_tokens: int = 0
    output_tokens: int = 0
    notes: list[str] = Field(default_factory=list)
    raw_reply: str = Field(
        default="", description="The reply as it came, bounded (baton.llm.prompt.bounded_reply)"
    )


class Provider(Protocol):
    async def ask(self, request: AskRequest) -> AskAnswer: ...


class UnknownTaskError(LookupError):
    """The provider has no way to answer this task."""
