"""Provider errors as Temporal sees them.

The SDKs' own retries are off (max_retries=0): Temporal retries the attempt,
so every retry is in the run's history. Faults a retry can fix (429, 5xx,
timeouts, connection errors, an error event inside a streamed reply) are
retryable, and a 429 waits the `retry-after` the provider asked for. Faults
no retry can fix (a refused key, an unknown model, a malformed request) are
non-retryable and say what to change.

Messages are bounded and carry no chained cause: a timeout's chain of SDK
and httpx traces made 8.8 KB failures that history showed only as "Failure
exceeds size limit".
"""

from __future__ import annotations

from collections.abc import Mapping
from datetime import timedelta

import anthropic
import openai
from temporalio.exceptions import ApplicationError

MESSAGE_LIMIT = 1000
# TimeoutError: a provider's own bound on a whole streamed reply, which the
# SDKs' timeouts (each read) do not give.
APITimeout = (openai.APITimeoutError, anthropic.APITimeoutError, TimeoutError)
APIConnection = (openai.APIConnectionError, anthropic.APIConnectionError)
APIStatus = (openai.APIStatusError, anthropic.APIStatusError)
APIError = (openai.APIError, anthropic.APIError)


def retry_after(headers: Mapping[str, str]) -> timedelta | None:
    for name, scale in (("retry-after-ms", 0.001), ("retry-after", 1.0)):
        value = headers.get(name)
        if value is None:
            continue
        try:
            return timedelta(seconds=max(0.0, float(value) * scale))
        except ValueError:
            continue
    return None


def bounded(message: str) -> str:
    if len(message) <= MESSAGE_LIMIT:
        return message
    cut = f"… [{len(message)} characters in all]"
    return message[: MESSAGE_LIMIT - len(cut)] + cut


def as_application_error(
    err: Exception, *, provider: str, model: str, key_env: str | None
) -> ApplicationError:
    where = f"{provider}/{model}"
    if isinstance(err, APITimeout):
        return ApplicationError(f"{where} did not answer in time", type="ProviderTimeout")
    if isinstance(err, APIConnection):
        return ApplicationError(
            bounded(f"{where} is unreachable: {err}"), type="ProviderUnreachable"
        )
    if isinstance(err, APIError) and not isinstance(err, APIStatus):
        # An error event inside a streamed reply: the server failed after it
        # began to answer, and a retry may fare better.
        return ApplicationError(
            bounded(f"{where} failed while answering: {err.message}"), type="ProviderError"
        )
    if not isinstance(err, APIStatus):
        raise err
    status = err.status_code
    if status == 429:
        delay = retry_after(err.response.headers)
        return ApplicationError(
            f"{where} is rate limited (429); retrying"
            + (f" after {delay.total_seconds():g}s as asked" if delay else ""),
            type="ProviderRateLimited",
            next_retry_delay=delay,
        )
    if status >= 500 or status in (408, 409):
        return ApplicationError(
            bounded(f"{where} failed ({status}): {err.message}"), type="ProviderError"
        )
    if status in (401, 403):
        return ApplicationError(
            f"{where} refused the API key ({status}): check {key_env or 'the key'} "
            "for this provider",
            type="ProviderAuthError",
            non_retryable=True,
        )
    if status == 404:
        return ApplicationError(
            f"{provider} does not know model '{model}' (404): fix the model name in the "
            "routing file",
            type="UnknownModel",
            non_retryable=True,
        )
    return ApplicationError(
        bounded(f"{where} rejected the request ({status}): {err.message}"),
        type="ProviderRequestError",
        non_retryable=True,
    )
