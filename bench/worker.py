"""The benchmark's worker process: `python -m bench.worker baton|noaudit|bare`."""

from __future__ import annotations

import asyncio
import sys
from concurrent.futures import ThreadPoolExecutor

from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.worker import Worker
from temporalio.worker.workflow_sandbox import SandboxedWorkflowRunner

from baton.client import connect
from baton.config import Settings
from bench.bare import BareIntake
from worker import ACTIVITIES, SANDBOX, build_worker

# Baton's sandbox settings plus the bare workflow's own module, so neither
# side re-imports its workflow code for every run.
BARE_SANDBOX = SandboxedWorkflowRunner(
    restrictions=SANDBOX.restrictions.with_passthrough_modules("bench.bare")
)


async def main(variant: str) -> None:
    settings = Settings.from_env()
    # Bare Temporal as it comes: no payload codec (Baton encrypts every payload).
    converter = pydantic_data_converter if variant == "bare" else None
    # Untraced, as the worker below: a worker takes on its client's interceptors.
    client = await connect(settings, wait=60, data_converter=converter, traced=False)
    if variant == "bare":
        worker = Worker(
            client,
            task_queue=settings.task_queue,
            workflows=[BareIntake],
            activities=ACTIVITIES,
            activity_executor=ThreadPoolExecutor(max_workers=16),
            workflow_runner=BARE_SANDBOX,
        )
    else:
        worker = build_worker(
            client,
            task_queue=settings.task_queue,
            audited=variant == "baton",
            traced=False,
            max_cached_workflows=settings.worker_cache,
        )
    print("ready", flush=True)
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main(sys.argv[1]))
