"""The reviewer inbox: a small server-rendered web app over the calls the
CLI makes (baton.client).

People sign in with the password of their account in the directory file.
A decision goes to the run through the same validated `decide` update as
`baton approve`: the workflow, with the directory snapshotted into the run,
stays the authority on who may decide what, and its refusals are shown in
its own words.
"""

from __future__ import annotations

import asyncio
import functools
import hmac
import json
import os
import secrets
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import Any
from urllib.parse import quote

import uvicorn
from jinja2 import Environment, PackageLoader, StrictUndefined
from pydantic import ValidationError
from starlette.applications import Starlette
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.middleware.sessions import SessionMiddleware
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from baton.accounts import Account, Accounts
from baton.client import DecisionRefused, NoWorkerError, connect, inbox, run_status, stop_run
from baton.client import decide as deliver
from baton.config import Settings
from baton.gates import Decision, GateState, StopRequest
from baton.runner import RunStatus
from baton.web import present
from workflows import PROCESSES

SECRET_ENV = "BATON_INBOX_SECRET"
# A working day: a forgotten browser does not stay signed in for weeks.
SESSION_MAX_AGE = 12 * 3600
FIELD_PREFIX = "field."


def inbox_secret(settings: Settings) -> str:
    """The key that signs session cookies: BATON_INBOX_SECRET, or one made
    once and kept in the data dir, so that a restart keeps people signed in."""
    explicit = os.environ.get(SECRET_ENV)
    if explicit:
        return explicit
    path = settings.data_dir / "inbox-secret"
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        secret = secrets.token_urlsafe(32)
        out.write(secret)
    return secret


class PageError(Exception):
    """A request that ends on an error page with this status and message."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


Endpoint = Callable[["Inbox", Request], Awaitable[Response]]


def signed_in(
    endpoint: Callable[[Inbox, Request, Account], Awaitable[Response]],
) -> Endpoint:
    """Let only signed-in users through; others go to the sign-in page and
    come back afterwards."""

    @functools.wraps(endpoint)
    async def wrapper(self: Inbox, request: Request) -> Response:
        account = self.account(request)
        if account is None and request.method != "GET":
            raise HTTPException(403, "Forbidden: sign in first.")
        if account is None:
            back = request.url.path + (f"?{request.url.query}" if request.url.query else "")
            return RedirectResponse(f"/login?next={quote(back, safe='')}", status_code=303)
        return await endpoint(self, request, account)

    return wrapper


async def checked_form(request: Request) -> FormData:
    """The posted form, if it carries this session's CSRF token. Every POST
    reads its form through here: a page of another site cannot know the
    token, so it cannot make a signed-in browser decide anything."""
    form = await request.form()
    sent = form.get("csrf")
    expected = request.session.get("csrf")
    if not (
        isinstance(sent, str)
        and isinstance(expected, str)
        and hmac.compare_digest(sent.encode(), expected.encode())
    ):
        raise HTTPException(
            403,
            "Forbidden: the form's security token is missing or out of date. "
            "Go back, reload the page and submit it again.",
        )
    return form


def gate_path(workflow_id: str, gate: str) -> str:
    return f"/runs/{quote(workflow_id, safe='')}/gates/{quote(gate, safe='')}"


class Inbox:
    """The pages and actions; one instance per app, holding what they share."""

    def __init__(self, client: Client, accounts: Accounts) -> None:
        self.client = client
        self.accounts = accounts
        self.templates = Jinja2Templates(
            env=Environment(
                loader=PackageLoader("baton.web"),
                autoescape=True,
                undefined=StrictUndefined,
            ),
            context_processors=[self._page_context],
        )
        self.templates.env.filters.update(
            moment=present.moment,
            decision_label=present.decision_label,
            pretty=lambda value: json.dumps(value, indent=2, ensure_ascii=False, default=str),
        )
        self.templates.env.globals.update(gate_path=gate_path)

    def account(self, request: Request) -> Account | None:
        user = request.session.get("user")
        return self.accounts.get(user) if isinstance(user, str) else None

    def _page_context(self, request: Request) -> dict[str, Any]:
        csrf = request.session.get("csrf")
        if not isinstance(csrf, str):
            csrf = request.session["csrf"] = secrets.token_urlsafe(32)
        return {"account": self.account(request), "csrf": csrf}

    def render(
        self, request: Request, name: str, status_code: int = 200, **context: Any
    ) -> Response:
        return self.templates.TemplateResponse(request, name, context, status_code=status_code)

    # -- signing in and out --------------------------------------------------

    async def login_form(self, request: Request) -> Response:
        if self.account(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self.render(
            request, "login.html", next=request.query_params.get("next", "/"), error=None
        )

    async def login(self, request: Request) -> Response:
        form = await checked_form(request)
        user = str(form.get("user", "")).strip()
        password = str(form.get("password", ""))
        # argon2 takes tens of milliseconds of CPU: off the event loop.
        account = await asyncio.to_thread(self.accounts.verify, user, password)
        if account is None:
            return self.render(
                request,
                "login.html",
                status_code=401,
                next=str(form.get("next", "/")),
                error="unknown user or wrong password",
            )
        # A fresh session (and token) on sign-in: one planted before it is worthless.
        request.session.clear()
        request.session.update(user=account.user, csrf=secrets.token_urlsafe(32))
        return RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)

    async def logout(self, request: Request) -> Response:
        await checked_form(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    # -- the inbox ----------------------------------------------------------

    @signed_in
    async def inbox(self, request: Request, account: Account) -> Response:
        rows, problems = await self._waiting_for(account)
        return self.render(
            request,
            "inbox.html",
            rows=rows,
            problems=problems,
            now=datetime.now(UTC),
        )

    async def _waiting_for(self, account: Account) -> tuple[list[present.InboxRow], list[str]]:
        """Every gate waiting for one of the account's roles: runs found in
        Temporal visibility per role, then each run's own status for its gates
        (visibility lags a little behind the runs; the status does not)."""
        listed = await asyncio.gather(*(inbox(self.client, role) for role in account.roles))
        items = {item.workflow_id: item for found in listed for item in found}
        statuses = await asyncio.gather(
            *(run_status(self.client, workflow_id) for workflow_id in items),
            return_exceptions=True,
        )
        rows: list[present.InboxRow] = []
        problems: list[str] = []
        roles = set(account.roles)
        for item, status in zip(items.values(), statuses, strict=True):
            if isinstance(status, LookupError):
                continue  # ended since it was listed
            if isinstance(status, NoWorkerError):
                problems.append(f"{item.workflow_id}: {status}")
                rows.append(
                    present.InboxRow(
                        workflow_id=item.workflow_id,
                        process=item.process,
                        gate=item.node,
                        roles=item.roles,
                        due_at=item.due_at,
                        waiting_since=item.started_at,
                        note="details unavailable: no worker answered",
                    )
                )
                continue
            if isinstance(status, BaseException):
                raise status
            rows += [
                present.InboxRow(
                    workflow_id=status.workflow_id,
                    process=status.process,
                    gate=gate.gate,
                    roles=gate.roles,
                    due_at=gate.due_at,
                    waiting_since=gate.opened_at,
                    holding=gate.holding,
                )
                for gate in present.open_for(status.gates, roles)
            ]
        return sorted(rows, key=present.InboxRow.sort_key), problems

    # -- one gate -----------------------------------------------------------

    @signed_in
    async def gate(self, request: Request, account: Account) -> Response:
        status, gate = await self._gate_for(request, account)
        return self._gate_page(request, status, gate)

    @signed_in
    async def decide(self, request: Request, account: Account) -> Response:
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        review = present.review_of(gate.shown)
        comment = str(form.get("comment", ""))
        output = typed = None
        if form.get("override"):
            names = self._editable_fields(status, gate)
            typed = {
                key.removeprefix(FIELD_PREFIX): str(value)
                for key, value in form.multi_items()
                if key.startswith(FIELD_PREFIX)
            }
            try:
                output = present.parse_override(names, review.output or {}, typed)
            except present.OverrideError as err:
                return self._gate_page(
                    request,
                    status,
                    gate,
                    override_error=str(err),
                    typed=typed,
                    comment=comment,
                    status_code=422,
                )
        try:
            decision = Decision.model_validate(
                {
                    "gate": gate.gate,
                    "user": account.user,
                    "outcome": form.get("outcome"),
                    "comment": comment,
                    "output": output,
                }
            )
        except ValidationError:
            raise HTTPException(400, "Bad request: the form names no known outcome.") from None
        try:
            await deliver(self.client, status.workflow_id, decision)
        except DecisionRefused as refused:
            # Shown on the gate as it is now: someone else may just have decided it.
            status, gate = await self._gate_for(request, account)
            return self._gate_page(
                request,
                status,
                gate,
                refused=refused.reason,
                comment=comment,
                typed=typed,
                status_code=409,
            )
        return RedirectResponse(gate_path(status.workflow_id, gate.gate), status_code=303)

    @signed_in
    async def stop(self, request: Request, account: Account) -> Response:
        """The stop button: the run judges who may stop it, as with decisions."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        reason = str(form.get("reason", ""))
        try:
            await stop_run(
                self.client, status.workflow_id, StopRequest(user=account.user, reason=reason)
            )
        except DecisionRefused as refused:
            status, gate = await self._gate_for(request, account)
            return self._gate_page(
                request, status, gate, refused=refused.reason, stop_reason=reason, status_code=409
            )
        return RedirectResponse(gate_path(status.workflow_id, gate.gate), status_code=303)

    async def _gate_for(self, request: Request, account: Account) -> tuple[RunStatus, GateState]:
        """The run and gate a URL names, if the account holds one of the gate's roles."""
        workflow_id = request.path_params["workflow_id"]
        gate_id = request.path_params["gate"]
        try:
            status = await run_status(self.client, workflow_id)
        except LookupError as err:
            raise PageError(404, "No such run", str(err)) from None
        except NoWorkerError as err:
            raise PageError(503, "The run cannot answer now", str(err)) from None
        gate = next((g for g in status.gates if g.gate == gate_id), None)
        if gate is None:
            opened = ", ".join(g.gate for g in status.gates) or "none yet"
            raise PageError(
                404,
                "No such gate",
                f"run {workflow_id} has not opened a gate '{gate_id}' (gates opened: {opened})",
            )
        if not set(account.roles).intersection(gate.roles):
            raise PageError(
                403,
                "Not your gate",
                f"This gate is waiting for role(s) {', '.join(gate.roles)}; "
                f"you hold {', '.join(account.roles) or 'no roles'}.",
            )
        return status, gate

    def _editable_fields(self, status: RunStatus, gate: GateState) -> list[str]:
        """The fields an override may set: those of the output model the
        process lets this gate replace (none for a process this app does not
        know, or a gate that judges no AI output)."""
        process = PROCESSES.get(status.process)
        model = process.graph.editable_model(gate.gate) if process else None
        return list(model.model_fields) if model else []

    def _gate_page(
        self,
        request: Request,
        status: RunStatus,
        gate: GateState,
        *,
        refused: str | None = None,
        override_error: str | None = None,
        typed: dict[str, str] | None = None,
        comment: str = "",
        stop_reason: str = "",
        status_code: int = 200,
    ) -> Response:
        review = present.review_of(gate.shown)
        names = self._editable_fields(status, gate)
        process = PROCESSES.get(status.process)
        account = self.account(request)
        may_stop = (
            process is not None
            and account is not None
            and bool(set(account.roles) & set(process.graph.stop_roles))
            and status.state in ("running", "waiting")
        )
        return self.render(
            request,
            "gate.html",
            status_code=status_code,
            status=status,
            gate=gate,
            review=review,
            clock=present.sla_clock(gate.due_at, datetime.now(UTC), holding=gate.holding),
            override=present.override_fields(names, review.output or {}, typed),
            overriding=typed is not None,
            field_prefix=FIELD_PREFIX,
            refused=refused,
            override_error=override_error,
            comment=comment,
            may_stop=may_stop,
            stop_reason=stop_reason,
        )

    async def page_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return self.render(
            request,
            "error.html",
            status_code=exc.status_code,
            title=exc.title,
            message=exc.message,
        )


def _local(target: str) -> str:
    """``target`` if it is a path on this site, else the inbox: the sign-in
    form's `next` must not send anyone to another site."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


class SecurityHeaders:
    """Headers that keep the pages to themselves: no scripts, no framing,
    nothing cached or sent on as a referrer."""

    HEADERS = (
        (
            b"content-security-policy",
            b"default-src 'none'; style-src 'self'; form-action 'self'; "
            b"frame-ancestors 'none'; base-uri 'none'",
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
    accounts: Accounts,
    secret: str,
) -> Starlette:
    pages = Inbox(client, accounts)
    return Starlette(
        routes=[
            Route("/login", pages.login_form, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/", pages.inbox, methods=["GET"]),
            Route("/runs/{workflow_id}/gates/{gate}", pages.gate, methods=["GET"]),
            Route("/runs/{workflow_id}/gates/{gate}/decide", pages.decide, methods=["POST"]),
            Route("/runs/{workflow_id}/gates/{gate}/stop", pages.stop, methods=["POST"]),
            Mount("/static", StaticFiles(packages=[("baton.web", "static")]), name="static"),
        ],
        middleware=[
            Middleware(SecurityHeaders),
            Middleware(
                SessionMiddleware,
                secret_key=secret,
                session_cookie="baton_inbox",
                max_age=SESSION_MAX_AGE,
                same_site="strict",
            ),
        ],
        exception_handlers={PageError: pages.page_error},
    )


async def serve(settings: Settings, *, host: str, port: int) -> None:
    """`baton inbox serve`: the inbox on host:port until Ctrl-C."""
    accounts = Accounts.load()
    client = await connect(settings)
    app = create_app(client=client, accounts=accounts, secret=inbox_secret(settings))
    print(f"reviewer inbox on http://{host}:{port} (Ctrl-C stops it)", flush=True)
    await uvicorn.Server(uvicorn.Config(app, host=host, port=port, log_level="warning")).serve()
