"""What every page of the reviewer inbox shares: the signed-in account, the templates,
the CSRF check, the error page, and the decorators that guard endpoints. The endpoints are
grouped by concern, each group over one shared `Pages`: `account_pages` (signing in and
out, passkeys) and `review_pages` (the inbox and its gates).
"""

from __future__ import annotations

import functools
import hmac
import json
import secrets
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar
from urllib.parse import quote

from jinja2 import Environment, PackageLoader, StrictUndefined
from starlette.datastructures import FormData
from starlette.exceptions import HTTPException
from starlette.requests import Request
from starlette.responses import JSONResponse, RedirectResponse, Response
from starlette.templating import Jinja2Templates
from temporalio.client import Client

from baton.accounts import Account, Accounts
from baton.document_store import DocumentStore
from baton.signing import Passkey
from baton.web import passkeys, present
from baton.web.signin import Clock, Sessions, SignInThrottle

# The session key of the id of the signed-in session (see signin.Sessions).
SESSION_ID = "session"
# A working day: a forgotten browser does not stay signed in for weeks.
SESSION_MAX_AGE = 12 * 3600
GATE = "/runs/{workflow_id}/gates/{gate}"


class PageError(Exception):
    """A request that ends on an error page with this status and message."""

    def __init__(self, status_code: int, title: str, message: str) -> None:
        super().__init__(message)
        self.status_code = status_code
        self.title = title
        self.message = message


def gate_path(workflow_id: str, gate: str) -> str:
    return f"/runs/{quote(workflow_id, safe='')}/gates/{quote(gate, safe='')}"


class Pages:
    """What the pages share; one instance per app."""

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

    async def page_error(self, request: Request, exc: Exception) -> Response:
        assert isinstance(exc, PageError)
        return self.render(
            request,
            "error.html",
            status_code=exc.status_code,
            title=exc.title,
            message=exc.message,
        )


class PageGroup:
    """Endpoints of one concern, over the app's shared `Pages`."""

    def __init__(self, pages: Pages) -> None:
        self.pages = pages


Group = TypeVar("Group", bound=PageGroup)
AccountEndpoint = Callable[[Group, Request, Account], Awaitable[Response]]
Endpoint = Callable[[Group, Request], Awaitable[Response]]


def signed_in(endpoint: AccountEndpoint[Group]) -> Endpoint[Group]:
    """Let only signed-in users through; others go to the sign-in page and
    come back afterwards."""

    @functools.wraps(endpoint)
    async def wrapper(self: Group, request: Request) -> Response:
        account = self.pages.account(request)
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


def json_errors(endpoint: AccountEndpoint[Group]) -> AccountEndpoint[Group]:
    """Answer an endpoint's errors as JSON ``{"error": message}``: its caller
    is the page's script, which shows the message beside the form."""

    @functools.wraps(endpoint)
    async def wrapper(self: Group, request: Request, account: Account) -> Response:
        try:
            return await endpoint(self, request, account)
        except PageError as err:
            return JSONResponse({"error": err.message}, status_code=err.status_code)
        except HTTPException as err:
            return JSONResponse({"error": err.detail}, status_code=err.status_code)

    return wrapper
