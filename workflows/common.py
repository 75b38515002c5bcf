"""Nodes and settings more than one process declares the same way."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.documents import load_document
    from baton.graph import Retry, Step

# A system-of-record write takes milliseconds; a short timeout lets a crashed
# attempt be retried soon, and the idempotency key makes the retry safe.
WRITE_TIMEOUT = timedelta(seconds=2)
WRITE_RETRY = Retry(max_attempts=10, initial_interval=timedelta(milliseconds=500))


def load_step() -> Step:
    """Read the run's document (``input.document``) from the document store."""
    load: Step = Step(
        "load",
        activity=load_document,
        inputs={"document": "input.document"},
        # Reading a document of at most 1 MiB takes milliseconds: an attempt
        # lost with its worker is retried 2.5 s later, not after the default
        # 30 s and a 1 s backoff (bench.harness counts retries under load:
        # 0.01 per run at N=1,000). Not a local activity: as one, a run's first
        # workflow task outlived its timeout under load (README, Notes).
        timeout=timedelta(seconds=2),
        retry=Retry(initial_interval=timedelta(milliseconds=500)),
    )
    return load
