"""Snapshot of the run configuration, taken once when a run starts."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.config import ConfigError, RunConfig, RunConfigCache
from baton.runner import SNAPSHOT_CONFIG_ACTIVITY

_files = RunConfigCache()


@activity.defn(name=SNAPSHOT_CONFIG_ACTIVITY)
async def snapshot_run_config(tasks: list[str] | None = None) -> RunConfig:
    """The configuration files as they are now, with the routes of ``tasks``,
    the run's own, alone (all of them for a run started before it said which)."""
    try:
        return for_tasks(_files.load(), tasks)
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
    async def snapshot_fixed_config(tasks: list[str] | None = None) -> RunConfig:
        return for_tasks(current(), tasks)

    return snapshot_fixed_config


def for_tasks(config: RunConfig, tasks: list[str] | None) -> RunConfig:
    if tasks is None:
        return config
    return config.model_copy(update={"routing": config.routing.for_tasks(tasks)})
