"""The production worker plus two test hooks, run as a separate process so a
test can SIGKILL it:

- BATON_TEST_CALL_LOG: every activity execution appends a line
  ``<event> <workflow_id> <activity_type> <attempt>`` (events: start, done);
- BATON_TEST_HOLD_AFTER / BATON_TEST_HOLD_FILE: after that activity type has
  done its work, but before its completion reaches Temporal, the worker
  creates the hold file and stops there until killed. A restarted worker sees
  the file and does not hold again.
- BATON_TEST_HOLD_BEFORE=<activity type>:<n>: the same, but before the n-th
  execution of that type in this process starts its work.
- BATON_TEST_WORKFLOWS_ONLY=1: the worker runs workflows and their local
  activities only; the test runs the other activities elsewhere.
"""

from __future__ import annotations

import asyncio
import os
from collections import Counter
from pathlib import Path
from typing import Any

from temporalio import activity
from temporalio.worker import (
    ActivityInboundInterceptor,
    ExecuteActivityInput,
    Interceptor,
)

from baton.client import connect
from baton.config import RunConfig, Settings
from worker import build_worker

_started: Counter[str] = Counter()


def _hold(hold_file: Path) -> bool:
    if hold_file.exists():
        return False
    hold_file.write_text(activity.info().workflow_id)
    return True


class _CountingInbound(ActivityInboundInterceptor):
    def _log(self, event: str) -> None:
        info = activity.info()
        line = f"{event} {info.workflow_id} {info.activity_type} {info.attempt}\n"
        with Path(os.environ["BATON_TEST_CALL_LOG"]).open("a") as log:
            log.write(line)

    async def execute_activity(self, input: ExecuteActivityInput) -> Any:
        kind = activity.info().activity_type
        hold_file = Path(os.environ.get("BATON_TEST_HOLD_FILE", "/nonexistent/hold"))
        _started[kind] += 1
        if os.environ.get("BATON_TEST_HOLD_BEFORE") == f"{kind}:{_started[kind]}" and _hold(
            hold_file
        ):
            await asyncio.Event().wait()
        self._log("start")
        result = await super().execute_activity(input)
        self._log("done")
        if kind == os.environ.get("BATON_TEST_HOLD_AFTER") and _hold(hold_file):
            await asyncio.Event().wait()
        return result


class CountingInterceptor(Interceptor):
    def intercept_activity(self, next: ActivityInboundInterceptor) -> ActivityInboundInterceptor:
        return _CountingInbound(next)


async def main() -> None:
    settings = Settings.from_env()
    client = await connect(settings)
    # A test's own configuration for the worker (the routing to its scripted
    # model server), as a file the test wrote: worker-side, never run input.
    config_file = os.environ.get("BATON_TEST_RUN_CONFIG")
    worker = build_worker(
        client,
        task_queue=settings.task_queue,
        interceptors=[CountingInterceptor()],
        remote_activities=os.environ.get("BATON_TEST_WORKFLOWS_ONLY") != "1",
        run_config=RunConfig.model_validate_json(Path(config_file).read_text())
        if config_file
        else None,
    )
    await worker.run()


if __name__ == "__main__":
    asyncio.run(main())
