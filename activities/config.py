"""Snapshot of the run configuration, taken once when a run starts."""

from __future__ import annotations

from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.config import ConfigError, RunConfig, load_run_config
from baton.runner import SNAPSHOT_CONFIG_ACTIVITY


@activity.defn(name=SNAPSHOT_CONFIG_ACTIVITY)
async def snapshot_run_config() -> RunConfig:
    try:
        return load_run_config()
    except ConfigError as err:
        raise ApplicationError(str(err), type="ConfigError", non_retryable=True) from None
