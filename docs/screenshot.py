"""Take docs/inbox.png, the README's picture of the reviewer inbox: a real
gate page of a document that needs review.

    .venv/bin/python docs/screenshot.py [--out docs/inbox.png]

It starts what it needs on free ports in a temporary directory and stops it
afterwards: the embedded Temporal server, a worker, the inbox app. It starts
a document intake run that stops at review, signs in as rita and saves the
gate page from Debian's headless Chromium (`make chromium` installs it).
The browser tests use the same helpers.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

import uvicorn
from playwright.async_api import Browser, Playwright, ViewportSize, async_playwright
from starlette.applications import Starlette

from baton.accounts import Accounts
from baton.client import build_input, connect, start_run
from baton.config import Settings
from baton.server import EmbeddedServer, free_port
from baton.web.app import create_app, gate_path
from worker import build_worker
from workflows.document_intake import DocumentIntake

ROOT = Path(__file__).resolve().parent.parent
CHROMIUM = "/usr/bin/chromium"
# Headless, offline and quiet: no sandbox (CI runs as root), no GPU, and none
# of the background calls home that would wait for a network there is none of.
CHROMIUM_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
VIEWPORT: ViewportSize = {"width": 1200, "height": 900}
SAMPLE = ROOT / "samples" / "documents" / "invoice-missing-total.txt"


async def launch_chromium(playwright: Playwright) -> Browser:
    if not Path(CHROMIUM).exists():
        raise SystemExit(f"no {CHROMIUM}: install Debian's chromium with `make chromium`")
    return await playwright.chromium.launch(executable_path=CHROMIUM, args=CHROMIUM_ARGS)


@asynccontextmanager
async def serving(app: Starlette, port: int) -> AsyncIterator[str]:
    """``app`` served on 127.0.0.1:``port`` in this event loop; yields its URL."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        await task


async def capture_gate(
    browser: Browser, gate_url: str, out: Path, *, user: str = "rita", password: str = "rita-demo"
) -> None:
    """Sign in as ``user`` on the way to ``gate_url`` and save the whole page."""
    context = await browser.new_context(viewport=VIEWPORT)
    try:
        page = await context.new_page()
        await page.goto(gate_url)
        await page.get_by_label("User").fill(user)
        await page.get_by_label("Password").fill(password)
        await page.get_by_role("button", name="Sign in").click()
        await page.wait_for_url(gate_url)
        out.parent.mkdir(parents=True, exist_ok=True)
        await page.screenshot(path=out, full_page=True)
    finally:
        await context.close()


async def main(out: Path) -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # The worker's audit trail and ERP go to the temporary directory.
        os.environ.update(BATON_DATA_DIR=tmp, BATON_ERP_DB=str(Path(tmp) / "erp.sqlite"))
        os.environ.setdefault("BATON_CONFIG", str(ROOT / "baton.toml"))
        server = EmbeddedServer(db_file=Path(tmp) / "temporal.db", port=free_port(), ui_port=None)
        await server.start()
        try:
            client = await connect(Settings(address=server.address))
            async with build_worker(client, task_queue="screenshot"):
                request = build_input(DocumentIntake, [str(SAMPLE)], requested_by="carl")
                handle = await start_run(client, DocumentIntake, request, task_queue="screenshot")
                while await handle.query(DocumentIntake.open_gates) != ["review"]:
                    await asyncio.sleep(0.1)
                app = create_app(
                    client=client, accounts=Accounts.load(), secret=secrets.token_urlsafe(32)
                )
                async with serving(app, free_port()) as url, async_playwright() as playwright:
                    browser = await launch_chromium(playwright)
                    await capture_gate(browser, url + gate_path(handle.id, "review"), out)
                    await browser.close()
                await handle.terminate(reason="screenshot taken")
        finally:
            server.stop()
    print(f"wrote {out}")


if __name__ == "__main__":
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs" / "inbox.png")
    asyncio.run(main(parser.parse_args().out))
