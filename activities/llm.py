"""The `ask` activity: one attempt at an LLM task with one provider."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.llm import AskAnswer, AskRequest, Provider, UnknownTaskError
from baton.llm.offline import OfflineProvider
from baton.runner import ASK_ACTIVITY

PROVIDERS: dict[str, Provider] = {"offline": OfflineProvider()}


@activity.defn(name=ASK_ACTIVITY)
async def ask(request: AskRequest) -> AskAnswer:
    provider = PROVIDERS.get(request.provider)
    if provider is None:
        raise ApplicationError(
            f"unknown LLM provider '{request.provider}' (configured: "
            f"{', '.join(sorted(PROVIDERS))}); fix [llm] provider in baton.toml",
            type="UnknownProvider",
            non_retryable=True,
        )
    try:
        return await provider.ask(request)
    except UnknownTaskError as err:
        raise ApplicationError(str(err), type="UnknownTask", non_retryable=True) from None
