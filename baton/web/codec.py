"""The codec server: Temporal's Web UI and the `temporal` CLI send it the
encrypted payloads they show, and it answers them decrypted (baton.codec),
for people allowed to read them.

Protocol (docs.temporal.io/codec-server): ``POST <endpoint>/decode`` and
``/encode``, a JSON body ``{"payloads": [...]}`` in and out, each payload
in protobuf's JSON form. The endpoint is ``/codec``, or ``/codec/<namespace>``
for a CLI whose ``--codec-endpoint`` is templated with ``{namespace}``; one
set of keys serves every namespace.

Who may read: a program or the CLI holding the codec token
(``Authorization: Bearer <token>``), or a person signed in to the inbox with
one of the payload reader roles, whose browser sends the inbox's cookie with
the Web UI's requests ("Include cross-origin credentials" in its Codec
Server settings). Every decode is a read of what may be personal data:
nothing of a payload is logged, and the answers are not cached.
"""

from __future__ import annotations

import hmac
import os
import re
import shlex
from collections.abc import Awaitable, Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlsplit

from google.protobuf import json_format
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route
from temporalio.api.common.v1 import Payload, Payloads

from baton.accounts import Account
from baton.codec import EncryptionCodec, PayloadDecryptionError, PayloadKeys
from baton.config import ConfigError, Settings
from baton.keys import kept_secret

TOKEN_ENV = "BATON_CODEC_TOKEN"
ORIGINS_ENV = "BATON_CODEC_ORIGINS"
ROLES_ENV = "BATON_CODEC_ROLES"
TOKEN_FILE_NAME = "codec-token"
DEFAULT_ROLES = ("admin", "supervisor")
MIN_TOKEN_LENGTH = 16
# Temporal refuses payloads over 2 MiB; a batch of them has room here.
MAX_BODY = 64 * 1024 * 1024
ORIGIN = re.compile(r"https?://[^/\s?#]+")
# The same machine under its two usual names: a Web UI opened at either.
LOOPBACK_TWINS = {"localhost": "127.0.0.1", "127.0.0.1": "localhost"}


@dataclass(frozen=True)
class CodecConfig:
    """What the codec server decrypts with and whom it answers."""

    keys: PayloadKeys
    token: str = field(repr=False)
    # Web UI origins whose pages may call it with the inbox's cookie.
    origins: tuple[str, ...]
    roles: frozenset[str]
    # How a shell gets the token, for instructions: never the token itself.
    token_in_shell: str

    @classmethod
    def from_env(
        cls,
        settings: Settings,
        *,
        keys: PayloadKeys | None = None,
        env: Mapping[str, str] = os.environ,
    ) -> CodecConfig:
        return cls(
            keys=keys or PayloadKeys.from_env(env, settings.data_dir),
            token=codec_token(settings.data_dir, env),
            origins=codec_origins(settings.ui_url, env),
            roles=codec_roles(env),
            token_in_shell=f"${TOKEN_ENV}"
            if env.get(TOKEN_ENV)
            else f"$(cat {shlex.quote(str(settings.data_dir / TOKEN_FILE_NAME))})",
        )


def codec_token(data_dir: Path, env: Mapping[str, str] = os.environ) -> str:
    """BATON_CODEC_TOKEN, or a token made once and kept in the data dir
    (mode 0600), so that a restart keeps the CLI's --codec-auth working."""
    explicit = env.get(TOKEN_ENV)
    if explicit:
        if len(explicit) < MIN_TOKEN_LENGTH:
            raise ConfigError(
                f"{TOKEN_ENV} is {len(explicit)} characters; it guards every payload, so use a "
                f"random one of at least {MIN_TOKEN_LENGTH} (`openssl rand -base64 32`), or "
                "unset it and the inbox makes one"
            )
        return explicit
    return kept_secret(data_dir / TOKEN_FILE_NAME)


def codec_origins(ui_url: str, env: Mapping[str, str] = os.environ) -> tuple[str, ...]:
    """BATON_CODEC_ORIGINS (comma-separated), else the Web UI's origin,
    with its other loopback spelling if it is on this machine."""
    explicit = env.get(ORIGINS_ENV, "").strip()
    if explicit:
        origins = [o.strip().rstrip("/").lower() for o in explicit.split(",") if o.strip()]
        for origin in origins:
            if not ORIGIN.fullmatch(origin):
                raise ConfigError(
                    f"{ORIGINS_ENV}: '{origin}' is not an origin like http://localhost:8233 "
                    "(scheme, host and port; no path)"
                )
        return tuple(origins)
    parts = urlsplit(ui_url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    port = f":{parts.port}" if parts.port else ""
    names = [host, *([LOOPBACK_TWINS[host]] if host in LOOPBACK_TWINS else [])]
    return tuple(f"{scheme}://{name}{port}" for name in names)


def codec_roles(env: Mapping[str, str] = os.environ) -> frozenset[str]:
    listed = [role.strip() for role in env.get(ROLES_ENV, "").split(",") if role.strip()]
    return frozenset(listed or DEFAULT_ROLES)


def instructions(config: CodecConfig, inbox_url: str) -> str:
    """How to point the Web UI and the CLI at the codec server of the inbox
    at ``inbox_url``."""
    endpoint = f"{inbox_url}/codec"
    roles = " or ".join(sorted(config.roles))
    return (
        f"codec server on {endpoint}: it decrypts payloads for the Web UI and the temporal CLI\n"
        f"  Web UI: `baton server` points its UI here (or: temporal server start-dev "
        f"--ui-codec-endpoint {endpoint}).\n"
        # The browser sends the inbox's cookie only to the host it was set for.
        f"          Sign in at {inbox_url} as {roles}, and in the UI's Codec Server settings\n"
        '          tick "Include cross-origin credentials".\n'
        f"  CLI:    temporal workflow show -w <workflow id> --codec-endpoint {endpoint} "
        f'--codec-auth "Bearer {config.token_in_shell}"'
    )


class CodecEndpoints:
    """The encode and decode endpoints; ``account`` is the inbox's
    signed-in account of a request, if any."""

    def __init__(self, config: CodecConfig, account: Callable[[Request], Account | None]) -> None:
        self.config = config
        self.account = account
        self.codec = EncryptionCodec(config.keys)

    async def encode(self, request: Request) -> Response:
        return await self._answer(request, self.codec.encode)

    async def decode(self, request: Request) -> Response:
        return await self._answer(request, self.codec.decode)

    async def _answer(
        self,
        request: Request,
        convert: Callable[[Sequence[Payload]], Awaitable[list[Payload]]],
    ) -> Response:
        cors = self._cors(request)
        if request.method == "OPTIONS":
            return self._preflight(cors)
        refused = self._refusal(request)
        if refused is not None:
            return _error(refused[0], refused[1], cors)
        # Only JSON: a page elsewhere cannot post JSON with the inbox's
        # cookie without a CORS preflight, which only the listed origins
        # pass, and the cookie is SameSite=strict besides. That is why these
        # endpoints need no CSRF token, unlike the inbox's forms.
        media_type = request.headers.get("content-type", "").partition(";")[0].strip().lower()
        if media_type != "application/json":
            return _error(415, 'send {"payloads": [...]} as application/json', cors)
        try:
            body = await request.json()
            if not isinstance(body, dict):
                raise ValueError("not an object")
            payloads = json_format.ParseDict(body, Payloads()).payloads
        except (ValueError, json_format.ParseError):
            return _error(
                400,
                'the body must be {"payloads": [...]}, each payload in protobuf JSON form '
                '({"metadata": {"encoding": "<base64>"}, "data": "<base64>"})',
                cors,
            )
        try:
            converted = await convert(payloads)
        except PayloadDecryptionError as err:
            return _error(422, str(err), cors)
        return JSONResponse(
            {"payloads": [json_format.MessageToDict(p) for p in converted]}, headers=cors
        )

    def _cors(self, request: Request) -> dict[str, str]:
        """CORS answers for a listed Web UI origin only; other pages get none,
        so their browsers neither send nor read anything here."""
        headers = {"Vary": "Origin"}
        origin = request.headers.get("origin")
        if origin in self.config.origins:
            headers["Access-Control-Allow-Origin"] = origin
            headers["Access-Control-Allow-Credentials"] = "true"
        return headers

    def _preflight(self, cors: dict[str, str]) -> Response:
        if "Access-Control-Allow-Origin" in cors:
            cors = {
                **cors,
                "Access-Control-Allow-Methods": "POST",
                "Access-Control-Allow-Headers": "content-type, x-namespace, authorization",
                "Access-Control-Max-Age": "600",
            }
        return Response(status_code=204, headers=cors)

    def _refusal(self, request: Request) -> tuple[int, str] | None:
        """None if the request may read payloads, else its status and why not."""
        scheme, _, token = request.headers.get("authorization", "").partition(" ")
        if scheme.lower() == "bearer" and hmac.compare_digest(
            token.strip().encode(), self.config.token.encode()
        ):
            return None
        account = self.account(request)
        if account is not None and self._from_a_listed_page(request):
            if self.config.roles.intersection(account.roles):
                return None
            return 403, (
                f"{account.user} holds {', '.join(account.roles) or 'no roles'}; reading "
                f"payloads needs the role {' or '.join(sorted(self.config.roles))} "
                f"({ROLES_ENV} lists the roles)"
            )
        return 401, (
            'reading payloads needs the codec token (`--codec-auth "Bearer <token>"` for the '
            f"temporal CLI; the token is {TOKEN_ENV} or the file {TOKEN_FILE_NAME} in the "
            "inbox's data dir), or a browser signed in to this inbox as "
            f'{" or ".join(sorted(self.config.roles))} with "Include cross-origin '
            "credentials\" ticked in the Web UI's Codec Server settings"
        )

    def _from_a_listed_page(self, request: Request) -> bool:
        """Whether a cookie-bearing request comes from the inbox itself, a
        listed Web UI, or no page at all (a program holding the cookie)."""
        origin = request.headers.get("origin")
        own = f"{request.url.scheme}://{request.url.netloc}"
        return origin is None or origin == own or origin in self.config.origins


def _error(status_code: int, message: str, cors: dict[str, str]) -> Response:
    return JSONResponse({"error": message}, status_code=status_code, headers=cors)


def codec_routes(config: CodecConfig, account: Callable[[Request], Account | None]) -> list[Route]:
    """The routes to mount in the inbox app; other methods answer 405."""
    endpoints = CodecEndpoints(config, account)
    methods = ("POST", "OPTIONS")
    return [
        Route(f"{base}/{action}", handler, methods=methods, max_body_size=MAX_BODY)
        for base in ("/codec", "/codec/{namespace}")
        for action, handler in (("encode", endpoints.encode), ("decode", endpoints.decode))
    ]
