"""Users' signing keys on the machine they act from: `baton keys new`, and
the signer that `baton start`, `approve`, `reject`, `changes` and `stop` use.

A private key is a PEM file ``<user>.key`` (mode 0600) in ``BATON_KEYS_DIR``,
else ``$XDG_CONFIG_HOME/baton/keys`` (``~/.config/baton/keys``). Only its
public half goes into the directory; a run never sees the private key.
"""

from __future__ import annotations

import os
import secrets
from collections.abc import Mapping
from pathlib import Path
from typing import Any, Required, TypedDict, Unpack

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baton.config import USER_NAME
from baton.signing import (
    Action,
    Signature,
    public_key_text,
    sign_ed25519,
    statement,
    unsigned,
)

KEYS_ENV = "BATON_KEYS_DIR"


def kept_secret(path: Path) -> str:
    """A random secret made once at ``path`` (mode 0600) and read back
    afterwards, so that a restart keeps what was made with it working."""
    path.parent.mkdir(parents=True, exist_ok=True)
    try:
        fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    except FileExistsError:
        return path.read_text(encoding="utf-8").strip()
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        secret = secrets.token_urlsafe(32)
        out.write(secret)
    return secret


class SigningContext(TypedDict, total=False):
    """What an act is signed for besides itself, as `unsigned` takes it: the run, its
    execution, the gate's round and the digest of what the gate showed."""

    workflow_id: Required[str]
    run_id: str
    round: int
    shown_digest: str


class MissingKey(LookupError):
    """A user has no usable key on this machine; the message says how to make one."""


def keys_dir() -> Path:
    explicit = os.environ.get(KEYS_ENV)
    if explicit:
        return Path(explicit)
    config_home = os.environ.get("XDG_CONFIG_HOME") or str(Path.home() / ".config")
    return Path(config_home) / "baton" / "keys"


def key_path(user: str, folder: Path | None = None) -> Path:
    if not USER_NAME.fullmatch(user):
        raise ValueError(f"user name '{user}' may hold only letters, digits, '-' and '_'")
    return (folder or keys_dir()) / f"{user}.key"


def new_key(user: str, *, replace: bool = False, folder: Path | None = None) -> tuple[Path, str]:
    """Make ``user``'s private key file (in ``folder``, default keys_dir());
    returns its path and the public key for the directory. An existing key
    is kept unless ``replace``: its public half may be in the directory."""
    path = key_path(user, folder)
    if path.exists() and not replace:
        existing = public_key_text(_load(path).public_key())
        raise FileExistsError(
            f"{path} exists already; its public key is `{existing}`"
            " (pass --replace to make a new one; then add the new public key to the directory)"
        )
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    key = Ed25519PrivateKey.generate()
    pem = key.private_bytes(
        serialization.Encoding.PEM,
        serialization.PrivateFormat.PKCS8,
        serialization.NoEncryption(),
    )
    # Created 0600 from the start: never readable by others, not even briefly.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
    with os.fdopen(fd, "wb") as out:
        out.write(pem)
    os.chmod(path, 0o600)
    return path, public_key_text(key.public_key())


def _load(path: Path) -> Ed25519PrivateKey:
    key = serialization.load_pem_private_key(path.read_bytes(), password=None)
    if not isinstance(key, Ed25519PrivateKey):
        raise ValueError(f"{path} does not hold an Ed25519 private key")
    return key


class Signer:
    """Signs acts as one user with their Ed25519 key."""

    def __init__(self, user: str, key: Ed25519PrivateKey, *, via: str = "cli") -> None:
        self.user = user
        self._key = key
        self.via = via

    @classmethod
    def load(cls, user: str, *, via: str = "cli", folder: Path | None = None) -> Signer:
        path = key_path(user, folder)
        try:
            if path.stat().st_mode & 0o077:
                raise PermissionError(
                    f"{path} can be read by other users; `chmod 600 {path}` and try again"
                )
            return cls(user, _load(path), via=via)
        except FileNotFoundError:
            raise MissingKey(
                f"no signing key for user '{user}' at {path}: make one with "
                f"`baton keys new --as {user}` and add its public key to the directory "
                f"(`baton users add-key {user} <public key>`), or set {KEYS_ENV}"
            ) from None

    @classmethod
    def load_or_create(cls, user: str, folder: Path, *, via: str = "cli") -> Signer:
        """``user``'s signer from ``folder``, making the key on first use."""
        if not key_path(user, folder).exists():
            new_key(user, folder=folder)
        return cls.load(user, via=via, folder=folder)

    @property
    def public_key(self) -> str:
        return public_key_text(self._key.public_key())

    def sign(
        self, action: Action, fields: Mapping[str, Any], **where: Unpack[SigningContext]
    ) -> Signature:
        context = unsigned("ed25519", via=self.via, **where)
        key, value = sign_ed25519(self._key, statement(action, fields, context))
        return context.model_copy(update={"key": key, "value": value})
