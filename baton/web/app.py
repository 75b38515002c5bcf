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
"""

from __future__ import annotations

import asyncio
import dataclasses
import functools
import hmac
import json
import math
import os
import secrets
import shlex
import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from pathlib import Path
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
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.routing import Mount, Route
from starlette.staticfiles import StaticFiles
from starlette.templating import Jinja2Templates
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from temporalio.client import Client

from baton.accounts import Account, Accounts
from baton.client import DecisionRefused, NoWorkerError, connect, deliver, inbox, run_status
from baton.config import Settings
from baton.document_store import (
    DocumentError,
    DocumentRef,
    DocumentStore,
    decode_text,
    document_store,
)
from baton.gates import Decision, GateState, StopRequest
from baton.keys import kept_secret
from baton.runner import RunStatus
from baton.signing import Passkey, subject_digest
from baton.web import passkeys, present
from baton.web.codec import CodecConfig, codec_routes, instructions
from baton.web.signin import (
    Clock,
    DirectoryAccounts,
    Sessions,
    SignInThrottle,
    lockout_message,
)
from workflows import PROCESSES

SECRET_ENV = "BATON_INBOX_SECRET"
# The session key of a passkey registration under way.
REGISTRATION = "passkey_registration"
# The session key of the id of the signed-in session (see signin.Sessions).
SESSION_ID = "session"
# A working day: a forgotten browser does not stay signed in for weeks.
SESSION_MAX_AGE = 12 * 3600
FIELD_PREFIX = "field."
GATE = "/runs/{workflow_id}/gates/{gate}"


def inbox_secret(settings: Settings) -> str:
    """The key that signs session cookies: BATON_INBOX_SECRET, or one made
    once and kept in the data dir, so that a restart keeps people signed in."""
    explicit = os.environ.get(SECRET_ENV)
    if explicit:
        return explicit
    return kept_secret(settings.data_dir / "inbox-secret")


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


def json_errors(
    endpoint: Callable[[Inbox, Request, Account], Awaitable[Response]],
) -> Callable[[Inbox, Request, Account], Awaitable[Response]]:
    """Answer an endpoint's errors as JSON ``{"error": message}``: its caller
    is the page's script, which shows the message beside the form."""

    @functools.wraps(endpoint)
    async def wrapper(self: Inbox, request: Request, account: Account) -> Response:
        try:
            return await endpoint(self, request, account)
        except PageError as err:
            return JSONResponse({"error": err.message}, status_code=err.status_code)
        except HTTPException as err:
            return JSONResponse({"error": err.detail}, status_code=err.status_code)

    return wrapper


def gate_path(workflow_id: str, gate: str) -> str:
    return f"/runs/{quote(workflow_id, safe='')}/gates/{quote(gate, safe='')}"


def typed_override(form: FormData) -> dict[str, str] | None:
    """The override form's values as typed; None when the form is no override."""
    if not form.get("override"):
        return None
    return {
        key.removeprefix(FIELD_PREFIX): str(value)
        for key, value in form.multi_items()
        if key.startswith(FIELD_PREFIX)
    }


class Inbox:
    """The pages and actions; one instance per app, holding what they share."""

    def __init__(
        self,
        client: Client,
        accounts: Callable[[], Accounts],
        secret: str,
        clock: Clock,
        documents: DocumentStore | None,
    ) -> None:
        self.client = client
        self.accounts = accounts
        self.documents = documents
        self.sessions = Sessions(SESSION_MAX_AGE, clock)
        self.throttle = SignInThrottle(clock)
        self.prepared = passkeys.PreparedActs(secret)
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
        """The signed-in account; None when the session was never signed in,
        or has ended here (signed out, expired, password changed) though the
        browser, or someone who copied its cookie, still sends it."""
        sid = request.session.get(SESSION_ID)
        account = self.sessions.account(sid, self.accounts()) if isinstance(sid, str) else None
        if account is None:
            request.session.pop(SESSION_ID, None)
        return account

    def passkeys_of(self, user: str) -> list[Passkey]:
        """The user's passkeys as the directory file lists them now: an
        administrator adds them while the inbox runs (the accounts are read
        again when the file changes)."""
        account = self.accounts().get(user)
        return list(account.passkeys) if account else []

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
        address = request.client.host if request.client else "unknown"
        wait = self.throttle.wait(user, address)
        if wait > 0:
            response = self._login_refused(request, form, 429, lockout_message(wait))
            response.headers["retry-after"] = str(math.ceil(wait))
            return response
        # argon2 takes tens of milliseconds of CPU: off the event loop.
        account = await asyncio.to_thread(self.accounts().verify, user, password)
        if account is None:
            self.throttle.failed(user, address)
            return self._login_refused(request, form, 401, "unknown user or wrong password")
        self.throttle.succeeded(user)
        self._end_session(request)
        # A fresh session (and token) on sign-in: one planted before it is worthless.
        request.session.clear()
        request.session.update(
            {SESSION_ID: self.sessions.start(account), "csrf": secrets.token_urlsafe(32)}
        )
        return RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)

    def _login_refused(
        self, request: Request, form: FormData, status_code: int, error: str
    ) -> Response:
        return self.render(
            request,
            "login.html",
            status_code=status_code,
            next=str(form.get("next", "/")),
            error=error,
        )

    async def logout(self, request: Request) -> Response:
        await checked_form(request)
        self._end_session(request)
        request.session.clear()
        return RedirectResponse("/login", status_code=303)

    def _end_session(self, request: Request) -> None:
        sid = request.session.get(SESSION_ID)
        if isinstance(sid, str):
            self.sessions.end(sid)

    # -- passkeys ------------------------------------------------------------

    @signed_in
    async def passkeys_page(self, request: Request, account: Account) -> Response:
        return self._passkeys_page(request, account)

    @signed_in
    @json_errors
    async def passkey_options(self, request: Request, account: Account) -> Response:
        """Start a registration: the options for the browser's create
        ceremony; its challenge waits in the session for the answer."""
        await checked_form(request)
        problem = passkeys.host_problem(request.url)
        if problem is not None:
            raise PageError(409, "No passkeys here", problem)
        options, ceremony = passkeys.registration_options(
            account.user, account.name, self.passkeys_of(account.user), request.url
        )
        request.session[REGISTRATION] = ceremony.to_session()
        return Response(options, media_type="application/json")

    @signed_in
    async def register_passkey(self, request: Request, account: Account) -> Response:
        """Finish a registration: verify the browser's answer and show the
        passkey for an administrator to add. The inbox does not add it: who
        may sign is decided by whoever administers the directory."""
        form = await checked_form(request)
        ceremony = passkeys.Registration.from_session(request.session.pop(REGISTRATION, None))
        if ceremony is None:
            return self._passkeys_page(
                request,
                account,
                error="no registration is under way in this session: press the button again",
                status_code=400,
            )
        try:
            passkey = passkeys.registered_passkey(str(form.get("credential", "")), ceremony)
        except passkeys.PasskeyError as err:
            return self._passkeys_page(request, account, error=str(err), status_code=400)
        return self._passkeys_page(request, account, new=passkey)

    def _passkeys_page(
        self,
        request: Request,
        account: Account,
        *,
        new: Passkey | None = None,
        error: str | None = None,
        status_code: int = 200,
    ) -> Response:
        new_json = new.model_dump_json() if new else None
        return self.render(
            request,
            "passkeys.html",
            status_code=status_code,
            registered=self.passkeys_of(account.user),
            host_problem=passkeys.host_problem(request.url),
            new=new_json,
            command=f"baton users add-key {account.user} {shlex.quote(new_json)}"
            if new_json
            else None,
            error=error,
        )

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
    @json_errors
    async def prepare_decision(self, request: Request, account: Account) -> Response:
        """Step one of a decision: the decision the form asks for, with the
        context its passkey signature binds, for the page's script to have
        signed (see passkeys.request_options)."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        usable = self._usable_passkeys(request, account)
        shown = subject_digest(gate.shown, gate.edited_output)
        if form.get("shown_digest") != shown:
            # The signature would bind a view of the gate this person has not seen.
            raise PageError(
                409,
                "The gate changed",
                f"gate '{gate.gate}' changed since this page showed it (a decision or an edited "
                "output came in): reload the page, look at it again and decide anew",
            )
        try:
            decision = self._decision(form, account, status, gate, typed_override(form))
        except present.OverrideError as err:
            raise PageError(
                422, "Cannot read your values", f"Cannot read your values: {err}"
            ) from None
        context = passkeys.signing_context(status.workflow_id, status.run_id, gate.round, shown)
        return self._to_sign(decision.model_copy(update={"signature": context}), usable, account)

    @signed_in
    async def decide(self, request: Request, account: Account) -> Response:
        """Step two: deliver the decision its passkey signed. A form without
        a passkey's answer goes to the run unsigned, to be refused in the
        run's words: the inbox signs for nobody."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        comment = str(form.get("comment", ""))
        typed = typed_override(form)
        decision = self._signed_act(form, Decision, account, status.workflow_id, gate.gate)
        if decision is None:
            try:
                decision = self._decision(form, account, status, gate, typed)
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
            await self._send(status.workflow_id, decision)
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
    @json_errors
    async def prepare_stop(self, request: Request, account: Account) -> Response:
        """Step one of the stop button, as for a decision."""
        form = await checked_form(request)
        status, _ = await self._gate_for(request, account)
        usable = self._usable_passkeys(request, account)
        stop = StopRequest(
            user=account.user,
            reason=str(form.get("reason", "")),
            signature=passkeys.signing_context(status.workflow_id, status.run_id),
        )
        return self._to_sign(stop, usable, account)

    @signed_in
    async def stop(self, request: Request, account: Account) -> Response:
        """The stop button: the run judges who may stop it, as with decisions."""
        form = await checked_form(request)
        status, gate = await self._gate_for(request, account)
        reason = str(form.get("reason", ""))
        stop = self._signed_act(form, StopRequest, account, status.workflow_id)
        try:
            await self._send(
                status.workflow_id, stop or StopRequest(user=account.user, reason=reason)
            )
        except DecisionRefused as refused:
            status, gate = await self._gate_for(request, account)
            return self._gate_page(
                request, status, gate, refused=refused.reason, stop_reason=reason, status_code=409
            )
        return RedirectResponse(gate_path(status.workflow_id, gate.gate), status_code=303)

    def _decision(
        self,
        form: FormData,
        account: Account,
        status: RunStatus,
        gate: GateState,
        typed: dict[str, str] | None,
    ) -> Decision:
        """The decision the form asks for; an override's values are read back
        as the AI's types (OverrideError says which cannot be)."""
        output = None
        if typed is not None:
            review = present.review_of(gate.shown)
            names = self._editable_fields(status, gate)
            output = present.parse_override(names, review.output or {}, typed)
        try:
            return Decision.model_validate(
                {
                    "gate": gate.gate,
                    "user": account.user,
                    "outcome": form.get("outcome"),
                    "comment": str(form.get("comment", "")),
                    "output": output,
                }
            )
        except ValidationError:
            raise HTTPException(400, "Bad request: the form names no known outcome.") from None

    def _usable_passkeys(self, request: Request, account: Account) -> list[Passkey]:
        """The user's passkeys a browser here can sign with; PageError says
        why there are none."""
        registered = self.passkeys_of(account.user)
        missing = passkeys.missing_passkey(registered, request.url)
        if missing is not None:
            raise PageError(409, "No passkey to sign with", missing)
        return passkeys.usable_passkeys(registered, request.url)

    def _to_sign(
        self, act: Decision | StopRequest, usable: list[Passkey], account: Account
    ) -> Response:
        token = self.prepared.token(account.user, act)
        return Response(passkeys.request_options(act, usable, token), media_type="application/json")

    def _signed_act(
        self,
        form: FormData,
        kind: type[passkeys.Act],
        account: Account,
        workflow_id: str,
        gate: str = "",
    ) -> passkeys.Act | None:
        """The act the form's passkey answer signed; None without an answer."""
        try:
            return self.prepared.signed(
                form, kind, user=account.user, workflow_id=workflow_id, gate=gate
            )
        except passkeys.PasskeyError as err:
            raise PageError(400, "The signed act cannot be delivered", str(err)) from None

    async def _send(self, workflow_id: str, act: Decision | StopRequest) -> None:
        """Hand ``act`` to the run as the browser made it, an unsigned one
        too: the inbox signs for nobody, and the run refuses it in its words."""
        await deliver(self.client, workflow_id, act)

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
        review = self._with_document_text(present.review_of(gate.shown))
        names = self._editable_fields(status, gate)
        process = PROCESSES.get(status.process)
        account = self.account(request)
        assert account is not None
        may_stop = (
            process is not None
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
            shown_digest=subject_digest(gate.shown, gate.edited_output),
            missing_passkey=passkeys.missing_passkey(self.passkeys_of(account.user), request.url),
        )

    def _with_document_text(self, review: present.Review) -> present.Review:
        """The review with the text of the document it refers to, read from
        the document store: the run holds only the reference. Called only
        for a reviewer holding one of the gate's roles (see _gate_for)."""
        if review.document is not None or review.document_ref is None:
            return review
        try:
            ref = DocumentRef.model_validate(review.document_ref)
            # The process's store is looked up at each read: it follows
            # BATON_DOCUMENT_STORE and BATON_DATA_DIR as they are now.
            store = self.documents or document_store()
            text, problem = decode_text(store.read(ref))
        except (ValidationError, DocumentError) as err:
            text, problem = "", f"the document cannot be shown: {err}"
        return dataclasses.replace(review, document=problem or text)

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
    pages = Inbox(client, source, secret, clock, documents)
    return Starlette(
        routes=[
            Route("/login", pages.login_form, methods=["GET"]),
            Route("/login", pages.login, methods=["POST"]),
            Route("/logout", pages.logout, methods=["POST"]),
            Route("/", pages.inbox, methods=["GET"]),
            Route("/passkeys", pages.passkeys_page, methods=["GET"]),
            Route("/passkeys/options", pages.passkey_options, methods=["POST"]),
            Route("/passkeys", pages.register_passkey, methods=["POST"]),
            Route(GATE, pages.gate, methods=["GET"]),
            Route(f"{GATE}/decide/prepare", pages.prepare_decision, methods=["POST"]),
            Route(f"{GATE}/decide", pages.decide, methods=["POST"]),
            Route(f"{GATE}/stop/prepare", pages.prepare_stop, methods=["POST"]),
            Route(f"{GATE}/stop", pages.stop, methods=["POST"]),
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
