"""Record the histories that tests/test_replay.py replays.

`python -m tests.record_history` runs document intake on a throwaway dev
server (one run that skips review, one approved at the gate) and writes their
event histories to tests/histories/. Re-record only on purpose: a replay
failure after a workflow change means running workflows would break, and the
change needs `workflow.patched`.
"""

from __future__ import annotations

import asyncio
import os
import tempfile
from pathlib import Path

from temporalio.client import Client
from temporalio.contrib.pydantic import pydantic_data_converter

from baton.client import build_input, decide, start_run
from baton.demo import local_identities
from baton.document_store import STORE_ENV
from baton.gates import Decision
from baton.server import EmbeddedServer, free_port
from tests.conftest import SAMPLES
from tests.helpers import settled
from worker import build_worker
from workflows.document_intake import DocumentIntake

HISTORIES = Path(__file__).parent / "histories"


async def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        signers = local_identities(Path(tmp), ("mailroom", "rita"), via="record")
        os.environ[STORE_ENV] = str(Path(tmp) / "documents")
        server = EmbeddedServer(db_file=Path(tmp) / "t.db", port=free_port(), ui_port=None)
        async with server:
            client = await Client.connect(server.address, data_converter=pydantic_data_converter)
            async with build_worker(client, task_queue="record"):
                for name, sample, reviewer in (
                    ("document_intake_clean", "invoice-acme-2026-0142.txt", None),
                    ("document_intake_reviewed", "invoice-missing-total.txt", "rita"),
                ):
                    request = build_input(
                        DocumentIntake, [str(SAMPLES / sample)], requested_by="mailroom"
                    )
                    handle = await start_run(
                        client,
                        DocumentIntake,
                        request,
                        task_queue="record",
                        workflow_id=name,
                        signer=signers["mailroom"],
                    )
                    if reviewer:
                        await settled(client, handle.id)
                        await decide(
                            client,
                            handle.id,
                            Decision(gate="review", user=reviewer, outcome="approve"),
                            signers[reviewer],
                        )
                    await handle.result()
                    history = await handle.fetch_history()
                    (HISTORIES / f"{name}.json").write_text(history.to_json())
                    print(f"recorded {name}")


if __name__ == "__main__":
    asyncio.run(main())
