"""How the demo's process runs are checked: each sample's run against what
its samples' ``expected.toml`` says, printed the same way for every process."""

from __future__ import annotations

import asyncio
import tomllib
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from temporalio.client import Client

from baton.client import build_input, start_run
from baton.keys import Signer
from baton.runner import GraphWorkflow

Row = Mapping[str, Any]
# Where a sample's run ended, and what happened on the way.
Reach = Callable[[Client, str, Row, Mapping[str, Signer]], Awaitable[tuple[str, str]]]


@dataclass(frozen=True)
class Outcome:
    """Where one sample's run ended, against where it should have."""

    sample: str
    workflow_id: str
    expected: str
    reached: str
    note: str

    @property
    def as_expected(self) -> bool:
        return self.reached == self.expected


def print_outcomes(title: str, outcomes: Sequence[Outcome], run_url: Callable[[str], str]) -> None:
    print(f"\n{title}:")
    for outcome in outcomes:
        mark = "as expected" if outcome.as_expected else f"EXPECTED {outcome.expected}"
        print(
            f"{outcome.sample}\n    {outcome.reached} ({mark}): {outcome.note}\n"
            f"    {run_url(outcome.workflow_id)}"
        )


def report_astray(what: str, outcomes: Sequence[Outcome]) -> bool:
    """Say which samples did not end as expected; whether any did not."""
    astray = [outcome.sample for outcome in outcomes if not outcome.as_expected]
    if astray:
        print(f"\n{len(astray)} {what}(s) did not end as expected: {', '.join(astray)}")
    return bool(astray)


async def start_samples(
    client: Client,
    workflow_cls: type[GraphWorkflow],
    rows: Sequence[Row],
    *,
    folder: Path,
    requested_by: str,
    task_queue: str,
    signers: Mapping[str, Signer],
    follow: Callable[[Client, str, Row, Mapping[str, Signer]], Awaitable[Outcome]],
) -> list[Outcome]:
    """Start one run a sample row (its ``file`` in ``folder``), signed by the
    requester, then follow every run at once to where it ends."""
    handles = []
    for row in rows:
        request = build_input(workflow_cls, [str(folder / row["file"])], requested_by=requested_by)
        handles.append(
            await start_run(
                client, workflow_cls, request, task_queue=task_queue, signer=signers[requested_by]
            )
        )
    return list(
        await asyncio.gather(
            *(follow(client, h.id, row, signers) for h, row in zip(handles, rows, strict=True))
        )
    )


@dataclass(frozen=True)
class Samples:
    """One process's demo samples: the files in ``folder``, each started by
    ``requested_by``, and the rows of ``table`` in ``expected``, each naming
    a ``file`` and the ``outcome`` its run should reach. ``reach`` follows a
    run to where it ends. With ``every`` (a glob), each file in ``folder``
    that it matches must have a row."""

    process: str
    expected: Path
    table: str
    folder: Path
    requested_by: str
    reach: Reach
    every: str = ""

    def rows(self) -> list[Row]:
        rows: list[Row] = tomllib.loads(self.expected.read_text(encoding="utf-8"))[self.table]
        if self.every:
            files = {path.name for path in self.folder.glob(self.every)}
            unlisted = sorted(files - {row["file"] for row in rows})
            if unlisted:
                raise ValueError(f"{self.expected} has no row for {', '.join(unlisted)}")
        return rows

    async def run(
        self, client: Client, *, task_queue: str, signers: Mapping[str, Signer]
    ) -> list[Outcome]:
        """Run every sample; where each run ended against where its row says."""
        from workflows import process

        async def follow(
            client: Client, workflow_id: str, row: Row, signers: Mapping[str, Signer]
        ) -> Outcome:
            reached, note = await self.reach(client, workflow_id, row, signers)
            return Outcome(row["file"], workflow_id, row["outcome"], reached, note)

        return await start_samples(
            client,
            process(self.process).workflow,
            self.rows(),
            folder=self.folder,
            requested_by=self.requested_by,
            task_queue=task_queue,
            signers=signers,
            follow=follow,
        )
