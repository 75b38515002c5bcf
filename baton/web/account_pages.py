"""The pages about the person rather than a run: signing in (throttled, with a fresh
session each time), signing out, and registering a passkey for an administrator to add.
"""

from __future__ import annotations

import asyncio
import math
import secrets
import shlex

from starlette.datastructures import FormData
from starlette.requests import Request
from starlette.responses import RedirectResponse, Response
from starlette.routing import Route

from baton.accounts import Account
from baton.signing import Passkey
from baton.web import passkeys
from baton.web.pages import (
    SESSION_ID,
    PageError,
    PageGroup,
    Pages,
    checked_form,
    json_errors,
    signed_in,
)
from baton.web.signin import lockout_message

# The session key of a passkey registration under way.
REGISTRATION = "passkey_registration"


class AccountPages(PageGroup):
    """Signing in and out, and passkeys."""

    async def login_form(self, request: Request) -> Response:
        if self.pages.account(request) is not None:
            return RedirectResponse("/", status_code=303)
        return self.pages.render(
            request, "login.html", next=request.query_params.get("next", "/"), error=None
        )

    async def login(self, request: Request) -> Response:
        form = await checked_form(request)
        user = str(form.get("user", "")).strip()
        password = str(form.get("password", ""))
        address = request.client.host if request.client else "unknown"
        wait = self.pages.throttle.wait(user, address)
        if wait > 0:
            response = self._login_refused(request, form, 429, lockout_message(wait))
            response.headers["retry-after"] = str(math.ceil(wait))
            return response
        # argon2 takes tens of milliseconds of CPU: off the event loop.
        account = await asyncio.to_thread(self.pages.accounts().verify, user, password)
        if account is None:
            self.pages.throttle.failed(user, address)
            return self._login_refused(request, form, 401, "unknown user or wrong password")
        self.pages.throttle.succeeded(user)
        self._end_session(request)
        # A fresh session (and token) on sign-in: one planted before it is worthless.
        request.session.clear()
        request.session.update(
            {SESSION_ID: self.pages.sessions.start(account), "csrf": secrets.token_urlsafe(32)}
        )
        return RedirectResponse(_local(str(form.get("next", "/"))), status_code=303)

    def _login_refused(
        self, request: Request, form: FormData, status_code: int, error: str
    ) -> Response:
        return self.pages.render(
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
            self.pages.sessions.end(sid)

    # -- passkeys ---------------------------------------------------------------

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
            account.user, account.name, self.pages.passkeys_of(account.user), request.url
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
        return self.pages.render(
            request,
            "passkeys.html",
            status_code=status_code,
            registered=self.pages.passkeys_of(account.user),
            host_problem=passkeys.host_problem(request.url),
            new=new_json,
            command=f"baton users add-key {account.user} {shlex.quote(new_json)}"
            if new_json
            else None,
            error=error,
        )


def _local(target: str) -> str:
    """``target`` if it is a path on this site, else the inbox: the sign-in
    form's `next` must not send anyone to another site."""
    if target.startswith("/") and not target.startswith(("//", "/\\")):
        return target
    return "/"


def account_routes(pages: Pages) -> list[Route]:
    account = AccountPages(pages)
    return [
        Route("/login", account.login_form, methods=["GET"]),
        Route("/login", account.login, methods=["POST"]),
        Route("/logout", account.logout, methods=["POST"]),
        Route("/passkeys", account.passkeys_page, methods=["GET"]),
        Route("/passkeys/options", account.passkey_options, methods=["POST"]),
        Route("/passkeys", account.register_passkey, methods=["POST"]),
    ]
