"""Small helpers for tests that drive runs."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from temporalio.api.common.v1 import WorkflowExecution
from temporalio.api.workflowservice.v1 import DescribeWorkflowExecutionRequest
from temporalio.client import Client

from baton.client import run_status
from baton.runner import RunStatus

T = TypeVar("T")


async def eventually(
    probe: Callable[[], Awaitable[T]], accept: Callable[[T], bool], *, timeout: float = 30
) -> T:
    """Poll ``probe`` until ``accept`` holds; fail with the last value seen."""
    deadline = time.monotonic() + timeout
    while True:
        value = await probe()
        if accept(value):
            return value
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout}s; last value: {value!r}")
        await asyncio.sleep(0.05)


async def settled(client: Client, workflow_id: str, *, timeout: float = 30) -> RunStatus:
    """The run's status once it waits for a person or has ended."""
    return await eventually(
        lambda: run_status(client, workflow_id),
        lambda s: s.state not in ("starting", "running"),
        timeout=timeout,
    )


async def search_attributes(client: Client, workflow_id: str) -> dict[str, Any]:
    """A run's search attributes as the server stores them (JSON values).

    Read raw because the time-skipping test server encodes Datetime
    attributes in a form the SDK's typed decoder rejects."""
    raw = await client.workflow_service.describe_workflow_execution(
        DescribeWorkflowExecutionRequest(
            namespace=client.namespace, execution=WorkflowExecution(workflow_id=workflow_id)
        )
    )
    fields = raw.workflow_execution_info.search_attributes.indexed_fields
    return {
        name: json.loads(payload.data) if payload.data else None for name, payload in fields.items()
    }
