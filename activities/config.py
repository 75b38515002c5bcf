"""Snapshot of the run configuration, taken once when a run starts."""

from __future__ import annotations

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
