"""Snapshot of the run configuration, taken once when a run starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.config import ConfigError, RunConfig, RunConfigCache
from baton.runner import SNAPSHOT_CONFIG_ACTIVITY

_files = RunConfigCache()


@activity.defn(name=SNAPSHOT_CONFIG_ACTIVITY)
async def snapshot_run_config() -> RunConfig:
    try:
        return _files.load()
    except ConfigError as err:
        raise ApplicationError(str(err), type="ConfigError", non_retryable=True) from None


def fixed_run_config(
    config: RunConfig | Callable[[], RunConfig],
) -> Callable[[], Awaitable[RunConfig]]:
    """A snapshot activity that gives every run ``config`` (or what calling
    it returns when the run starts) instead of the files: for a worker whose
    configuration is built in code, a test's or an embedding application's.
    It is still the worker's own, never the starter's."""
    current = config if callable(config) else lambda: config

    @activity.defn(name=SNAPSHOT_CONFIG_ACTIVITY)
    async def snapshot_fixed_config() -> RunConfig:
        return current()

    return snapshot_fixed_config
