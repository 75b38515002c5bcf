"""`python worker.py`: one worker serving every Baton process.

Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and BATON_TASK_QUEUE from the
environment (see baton.config.Settings)."""

from __future__ import annotations

import asyncio
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from temporalio.client import Client
from temporalio.worker import Interceptor, Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner, SandboxRestrictions

from activities.config import snapshot_run_config
from activities.documents import enter_document, load_document, validate_document
from activities.llm import ask
from baton.client import connect
from baton.config import ConfigError, Settings, load_run_config
from workflows import PROCESSES

ACTIVITIES: list[Callable[..., Any]] = [
    snapshot_run_config,
    ask,
    load_document,
    validate_document,
    enter_document,
]

# Baton's own modules are deterministic or only define models and activity
# references; importing them once instead of per workflow run keeps the
# sandbox cheap.
SANDBOX = SandboxedWorkflowRunner(
    restrictions=SandboxRestrictions.default.with_passthrough_modules(
        "baton", "activities", "systems"
    )
)


def build_worker(
    client: Client,
    *,
    task_queue: str,
    interceptors: Sequence[Interceptor] = (),
    activity_threads: int = 16,
) -> Worker:
    return Worker(
        client,
        task_queue=task_queue,
        workflows=[p.workflow for p in PROCESSES.values()],
        activities=ACTIVITIES,
        activity_executor=ThreadPoolExecutor(max_workers=activity_threads),
        workflow_runner=SANDBOX,
        interceptors=interceptors,
    )


async def main() -> None:
    settings = Settings.from_env()
    # Fail at start-up, not mid-run, on a broken config or a missing API key.
    load_run_config()
    client = await connect(settings, wait=60)
    worker = build_worker(client, task_queue=settings.task_queue)
    print(f"worker polling task queue '{settings.task_queue}' on {settings.address}", flush=True)
    await worker.run()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ConfigError, ConnectionError) as err:
        sys.exit(f"worker: {err}")
    except KeyboardInterrupt:
        pass
