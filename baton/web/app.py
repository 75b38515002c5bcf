"""The reviewer inbox: a small server-rendered web app over the calls the
CLI makes (baton.client).

People sign in with the password of their account in the directory file.
A decision goes to the run through the same validated `decide` update as
`baton approve`: the workflow, with the directory snapshotted into the run,
stays the authority on who may decide what, and its refusals are shown in
its own words.

Decisions and stops are signed in the browser by the user's own passkey
(baton.web.passkeys): a script posts the form to a `prepare` endpoint,
which answers with the act's WebAuthn challenge and a token carrying the
prepared act; the passkey signs, and the script posts the form again with
the token and the passkey's answer. The inbox holds no key, so a
compromised inbox cannot approve anything on anyone's behalf.

This module assembles the app and serves it; the endpoints live in
`account_pages` and `review_pages`, over what `pages` gives them all.
"""

from __future__ import annotations

import os
import time
from collections.abc import Callable
from pathlib import Path

import uvicorn
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.routing import Mount
from starlette.staticfiles import StaticFiles
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from baton.accounts import Accounts
from baton.client import connect
from baton.config import Settings
from baton.document_store import DocumentStore
from baton.keys import kept_secret
from baton.web.account_pages import account_routes
from baton.web.codec import CodecConfig, codec_routes, instructions
from baton.web.pages import SESSION_MAX_AGE, PageError, Pages
from baton.web.review_pages import review_routes
from baton.web.signin import Clock, DirectoryAccounts

SECRET_ENV = "BATON_INBOX_SECRET"


def inbox_secret(settings: Settings) -> str:
    """The key that signs session cookies: BATON_INBOX_SECRET, or one made
    once and kept in the data dir, so that a restart keeps people signed in."""
    explicit = os.environ.get(SECRET_ENV)
    if explicit:
        return explicit
    return kept_secret(settings.data_dir / "inbox-secret")


class SecurityHeaders:
    """Headers that keep the pages to themselves: only this site's own
    script files (no inline script) and requests, no framing, nothing cached
    or sent on as a referrer."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'none'; style-src 'self'; script-src 'self'; connect-src 'self'; "
            b"form-action 'self'; frame-ancestors 'none'; base-uri 'none'",
        ),
        (b"x-content-type-options", b"nosniff"),
        (b"referrer-policy", b"no-referrer"),
        (b"cache-control", b"no-store"),
    )

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        async def send_with_headers(message: Message) -> None:
            if message["type"] == "http.response.start":
                message["headers"] = [*message.get("headers", []), *self.HEADERS]
            await send(message)

        await self.app(scope, receive, send_with_headers)


def create_app(
    *,
    client: Client,
    secret: str,
    accounts: Accounts | None = None,
    https_only: bool = False,
    clock: Clock = time.monotonic,
    documents: DocumentStore | None = None,
    codec: CodecConfig | None = None,
) -> Starlette:
    """The inbox app. People sign in with ``accounts`` if given (fixed), else
    with those of the directory file as it is at each request. With
    ``https_only`` (served over HTTPS, directly or behind a proxy) browsers
    send the session cookie over HTTPS only. ``clock`` times lockouts and
    sessions. Gate pages read documents from ``documents``, else the
    document store of this process (baton.document_store). With ``codec``
    it is also the codec server, under /codec (baton.web.codec)."""
    source: Callable[[], Accounts] = DirectoryAccounts() if accounts is None else lambda: accounts
    pages = Pages(client, source, secret, clock, documents)
    return Starlette(
        routes=[
            *account_routes(pages),
            *review_routes(pages),
            Mount("/static", StaticFiles(packages=[("baton.web", "static")]), name="static"),
            *(codec_routes(codec, pages.account) if codec is not None else []),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="baton_inbox",
                max_age=SESSION_MAX_AGE,
                same_site="strict",
                https_only=https_only,
            ),
        ],
        exception_handlers={PageError: pages.page_error},
    )


async def serve(
    settings: Settings,
    *,
    host: str,
    port: int,
    tls_cert: Path | None = None,
    tls_key: Path | None = None,
    proxy: str | None = None,
    codec: CodecConfig | None = None,
) -> None:
    """`baton inbox serve`: the inbox on host:port until Ctrl-C; over HTTPS
    with ``tls_cert`` and ``tls_key``, or behind an HTTPS proxy at the
    addresses ``proxy`` (whose X-Forwarded-Proto and -For it trusts). It is
    the codec server too, with ``codec`` or the payload keys and access
    settings of the environment."""
    if (tls_cert is None) != (tls_key is None):
        raise ValueError(
            "--tls-cert and --tls-key go together: pass both, the certificate and its "
            "private key (PEM files)"
        )
    for given in (tls_cert, tls_key):
        if given is not None and not given.is_file():
            raise ValueError(f"no such file: {given}; check the --tls-cert and --tls-key paths")
    https = tls_cert is not None or proxy is not None
    # Missing payload keys stop the start, as a broken directory file does.
    codec = codec or CodecConfig.from_env(settings)
    client = await connect(settings)
    # A broken directory file stops the start, not the first sign-in.
    Accounts.load()
    app = create_app(client=client, secret=inbox_secret(settings), https_only=https, codec=codec)
    # Passkeys need a host name on a secure page: on this machine, localhost.
    local = host in ("127.0.0.1", "::1", "localhost")
    scheme = "https" if tls_cert else "http"
    where = f"{scheme}://{'localhost' if local else host}:{port}"
    if proxy is not None:
        advice = f"; behind the HTTPS proxy at {proxy}, which must set X-Forwarded-Proto"
    elif local or tls_cert:
        advice = ""
    else:
        advice = "; passkeys need it behind HTTPS, under a host name"
    print(f"reviewer inbox on {where} (Ctrl-C stops it){advice}")
    print(instructions(codec, where), flush=True)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        log_level="warning",
        ssl_certfile=tls_cert,
        ssl_keyfile=tls_key,
        # Off without a proxy: the client address the sign-in throttle counts
        # is then the connection's, never a header a client makes up.
        proxy_headers=proxy is not None,
        forwarded_allow_ips=proxy,
    )
    await uvicorn.Server(config).serve()
