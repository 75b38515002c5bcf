"""A mapped Agent's visit: one agent loop per item of its ``each`` input,
at most ``concurrency`` at a time, the results in the list's order.

An item's loop that stops short (its turn or budget bound, the run's
budget, every candidate failing) is the item's failure, not a gate: items
run at once and the node has one gate slot. The node after it (a critic, a
review gate) shows the failures.

Read after :mod:`baton.nodes.agent`.

Workflow code: pure and deterministic.
"""

from __future__ import annotations

import asyncio
from functools import cache
from typing import TYPE_CHECKING, Any

from pydantic import BaseModel, create_model
from temporalio import workflow

from baton.nodes.agent_loop import AgentLoop, Ended
from baton.nodes.base import Done, Run
from baton.nodes.map import ItemFailure, Mapped, split_each
from baton.state import NodeRecord

if TYPE_CHECKING:
    from baton.nodes.agent import Agent


async def run_each(node: Agent, run: Run, record: NodeRecord) -> Done:
    each = node.each
    assert each is not None
    shared, items = split_each(run, node, each)
    # A change request (a reviewer's, a loop's findings) is every item's to
    # answer, each with its own earlier answer.
    asked, previous = run.state.feedback.pop(node.id, ([], None))
    record.meta.update(task=node.task, cost_usd=0.0, items=[{} for _ in items])
    slots = asyncio.Semaphore(node.concurrency)

    async def one(index: int) -> Ended:
        async with slots:
            return await AgentLoop(
                node,
                run,
                record,
                inputs={**shared, each: items[index]},
                asked=(asked, _earlier(previous, index)) if asked else ([], None),
                meta=record.meta["items"][index],
                item=index,
            ).work()

    tasks = [asyncio.create_task(one(i)) for i in range(len(items))]
    try:
        ended = await asyncio.gather(*tasks)
    except BaseException:
        # An item's loop that raises (the route's config, a stop) ends the
        # node: the others are cancelled, and waited for, as a Map's are.
        for task in tasks:
            task.cancel()
        await workflow.wait(tasks)
        raise
    failures = [ItemFailure(index=i, error=e.why) for i, e in enumerate(ended) if e.why]
    for failure in failures:
        record.meta["items"][failure.index]["failed"] = failure.error
        run.trail.record(
            "routing.decided",
            node=node.id,
            about=f"v{record.visits}/item{failure.index}/failed",
            decision="the item failed: the next node shows it",
            why=failure.error,
        )
    record.detail = f"{len(items) - len(failures)} of {len(items)} items answered" + (
        f", {len(failures)} failed" if failures else ""
    )
    mapped = Mapped(results=[e.output for e in ended], failures=failures)
    return Done(mapped.model_dump(mode="json"))


def _earlier(previous: Any, index: int) -> Any:
    """An item's own answer in the mapped output a change request is about
    (None where that output had no such item)."""
    results = previous.get("results") if isinstance(previous, dict) else None
    return results[index] if isinstance(results, list) and index < len(results) else None


@cache
def mapped_model(output: type[BaseModel]) -> type[Mapped]:
    """A mapped Agent's output as a model: :class:`Mapped` whose results
    are the Agent's ``output`` (or None for an item that failed), so a
    reviewer's edit of it is checked as the answers were."""
    results: Any = list[output | None]  # type: ignore[valid-type]
    return create_model(f"{output.__name__}Items", __base__=Mapped, results=(results, ...))
