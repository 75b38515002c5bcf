"""Take docs/inbox.png, the README's picture of the reviewer inbox: a real
gate page of a document that needs review.

    .venv/bin/python docs/screenshot.py [--out docs/inbox.png]

It starts what it needs on free ports in a temporary directory and stops it
afterwards: the embedded Temporal server, a worker, the inbox app, and a
copy of the directory in which carl has a key to start runs with and rita a
passkey to decide with. It starts a document intake run that stops at
review, signs in as rita and saves the gate page from Debian's headless
Chromium (`make chromium` installs it). The browser tests use the same
helpers, and Chromium's virtual authenticator for passkeys.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import secrets
import tempfile
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

import uvicorn
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from playwright.async_api import (
    Browser,
    CDPSession,
    Page,
    Playwright,
    ViewportSize,
    async_playwright,
)
from starlette.applications import Starlette

from baton.accounts import add_passkey
from baton.client import build_input, connect, start_run
from baton.config import Settings, directory_path
from baton.demo import local_identities
from baton.server import EmbeddedServer, free_port
from baton.signing import Passkey
from baton.web.app import create_app
from baton.web.pages import gate_path
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
    """``app`` served on 127.0.0.1:``port`` in this event loop; yields its URL
    on localhost: passkeys belong to a host name, never to an IP address."""
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning", lifespan="off")
    )
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            task.result()  # raises why it could not start
        await asyncio.sleep(0.02)
    try:
        yield f"http://localhost:{port}"
    finally:
        server.should_exit = True
        await task


async def virtual_authenticator(page: Page) -> tuple[CDPSession, str]:
    """Give ``page`` a virtual platform authenticator (Chromium's WebAuthn
    domain) that verifies its user without asking; returns the session and
    the authenticator's id."""
    cdp = await page.context.new_cdp_session(page)
    await cdp.send("WebAuthn.enable", {"enableUI": False})
    added = await cdp.send(
        "WebAuthn.addVirtualAuthenticator",
        {
            "options": {
                "protocol": "ctap2",
                "ctap2Version": "ctap2_1",
                "transport": "internal",
                "hasResidentKey": True,
                "hasUserVerification": True,
                "isUserVerified": True,
                "automaticPresenceSimulation": True,
            }
        },
    )
    return cdp, added["authenticatorId"]


@dataclass(frozen=True)
class VirtualPasskey:
    """A passkey made here rather than registered through the inbox, for a
    virtual authenticator to sign with: the same credential a browser would
    hold, without a round of registration per user."""

    origin: str
    credential_id: bytes
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, origin: str) -> VirtualPasskey:
        return cls(origin, secrets.token_bytes(16), ec.generate_private_key(ec.SECP256R1()))

    @property
    def passkey(self) -> Passkey:
        """The passkey as an administrator adds it to the directory."""
        spki = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return Passkey(
            id=base64.urlsafe_b64encode(self.credential_id).rstrip(b"=").decode(),
            public_key=base64.b64encode(spki).decode(),
            rp_id=urlsplit(self.origin).hostname or "",
            origin=self.origin,
        )

    async def install(self, page: Page) -> None:
        """Let ``page``'s WebAuthn calls sign with this passkey."""
        cdp, authenticator = await virtual_authenticator(page)
        pkcs8 = self.private_key.private_bytes(
            serialization.Encoding.DER,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        await cdp.send(
            "WebAuthn.addCredential",
            {
                "authenticatorId": authenticator,
                "credential": {
                    "credentialId": base64.b64encode(self.credential_id).decode(),
                    "isResidentCredential": False,
                    "rpId": self.passkey.rp_id,
                    "privateKey": base64.b64encode(pkcs8).decode(),
                    "signCount": 0,
                },
            },
        )


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
            signers = local_identities(Path(tmp), ["carl"], via="screenshot")
            async with build_worker(client, task_queue="screenshot"):
                request = build_input(DocumentIntake, [str(SAMPLE)], requested_by="carl")
                handle = await start_run(
                    client,
                    DocumentIntake,
                    request,
                    task_queue="screenshot",
                    signer=signers["carl"],
                )
                while await handle.query(DocumentIntake.open_gates) != ["review"]:
                    await asyncio.sleep(0.1)
                app = create_app(client=client, secret=secrets.token_urlsafe(32))
                async with serving(app, free_port()) as url, async_playwright() as playwright:
                    # The picture shows the page of a reviewer who can sign, not
                    # the note for one without a passkey.
                    add_passkey(directory_path(), "rita", VirtualPasskey.generate(url).passkey)
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
