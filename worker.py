"""`python worker.py`: one worker serving every Baton process.

Reads TEMPORAL_ADDRESS, TEMPORAL_NAMESPACE and BATON_TASK_QUEUE from the
environment (see baton.config.Settings)."""

from __future__ import annotations

import asyncio
import os
import sys
from collections.abc import Callable, Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import DataConverter
from temporalio.worker import Interceptor, Replayer, Worker

from activities.llm import preload_sdks
from baton.audit.sink import AuditSettings, AuditSink
from baton.client import connect
from baton.config import ConfigError, RunConfig, Settings, load_run_config
from baton.plugin import SANDBOX, BatonPlugin, graph_activities
from baton.runner import GraphWorkflow
from baton.telemetry import configure_tracing
from workflows import PROCESSES

__all__ = [
    "ACTIVITIES",
    "HEARTBEAT_THROTTLE",
    "SANDBOX",
    "WORKFLOWS",
    "build_replayer",
    "build_worker",
    "main",
]

WORKFLOWS = [p.workflow for p in PROCESSES.values()]
ACTIVITIES = graph_activities(WORKFLOWS)
HEARTBEAT_THROTTLE = timedelta(seconds=1)


def build_worker(
    client: Client,
    *,
    task_queue: str,
    interceptors: Sequence[Interceptor] = (),
    activity_threads: int = 16,
    audit: AuditSink | None = None,
    audited: bool = True,
    traced: bool = True,
    extra_workflows: Sequence[type[GraphWorkflow]] = (),
    extra_activities: Sequence[Callable[..., Any]] = (),
    max_cached_workflows: int = 1000,
    run_config: RunConfig | Callable[[], RunConfig] | None = None,
    remote_activities: bool = True,
) -> Worker:
    """A worker for every process (and ``extra_workflows``, a process of your
    own or a test's). Audit is on unless ``audited=False``; its store comes
    from the environment (BATON_AUDIT_URL) unless ``audit`` is given. Runs
    snapshot the configuration files (BATON_CONFIG) when they start, or
    ``run_config`` when given (a callable is asked at each run's start).
    With ``remote_activities=False`` it runs workflows and their local
    activities only, and leaves the other activities to other workers."""
    sink = (audit or AuditSink(AuditSettings.from_env())) if audited else None
    plugin = BatonPlugin(
        [*WORKFLOWS, *extra_workflows], audit=sink, run_config=run_config, traced=traced
    )
    return Worker(
        client,
        task_queue=task_queue,
        activities=extra_activities,
        activity_executor=ThreadPoolExecutor(max_workers=activity_threads),
        interceptors=interceptors,
        plugins=[plugin],
        # A dead worker's cached runs move to another worker after 1 s, not
        # 10. Under overload a busy worker's task moves too and costs a replay,
        # but bench.harness measured no loss of throughput at N=1,000 and a
        # shorter wait from approval to entry.
        sticky_queue_schedule_to_start_timeout=timedelta(seconds=1),
        # The SDK's core sends an activity's heartbeats at most every 0.8x its
        # heartbeat timeout, which leaves only a fifth of the timeout for a
        # late heartbeat to arrive. Sending at least every second keeps the
        # server's view of a live `ask` fresh and lets its heartbeat timeout
        # be short (a lost worker noticed in seconds) with most of it slack.
        max_heartbeat_throttle_interval=HEARTBEAT_THROTTLE,
        max_cached_workflows=max_cached_workflows,
        no_remote_activities=not remote_activities,
    )


def build_replayer(data_converter: DataConverter = pydantic_data_converter) -> Replayer:
    """Replays histories exactly as a worker runs them: same workflows,
    sandbox and workflow interceptors. A history a worker wrote is
    encrypted: pass ``baton.codec.encrypted_data_converter`` with its keys."""
    return Replayer(workflows=[], plugins=[BatonPlugin(WORKFLOWS, data_converter=data_converter)])


async def main() -> None:
    # The audit store, ERP and outbox files are for this user alone (see baton.cli.main).
    os.umask(0o077)
    settings = Settings.from_env()
    # Fail at start-up, not mid-run, on a broken config or a missing API key.
    preload_sdks(load_run_config().routing)
    configure_tracing(console=sys.stderr)
    client = await connect(settings, wait=60)
    worker = build_worker(
        client, task_queue=settings.task_queue, max_cached_workflows=settings.worker_cache
    )
    print(f"worker polling task queue '{settings.task_queue}' on {settings.address}", flush=True)
    await worker.run()


if __name__ == "__main__":
    try:
        asyncio.run(main())
    except (ConfigError, ConnectionError) as err:
        sys.exit(f"worker: {err}")
    except KeyboardInterrupt:
        pass
