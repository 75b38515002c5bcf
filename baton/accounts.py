"""Who may sign in to the reviewer inbox: the users of the directory file
with their argon2 password hashes, and `baton users set-password`.

Runs copy only names and roles from the same file (see baton.config); the
hashes stay in the file and in this module.
"""

from __future__ import annotations

import json
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path
from typing import Any

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError
from pydantic import BaseModel

from baton.config import (
    ConfigError,
    DirectoryEntry,
    directory_path,
    directory_users,
    read_directory,
)
from baton.signing import Passkey

MIN_PASSWORD_LENGTH = 8

# argon2-cffi's defaults: argon2id with RFC 9106's low-memory parameters.
_HASHER = PasswordHasher()


@dataclass(frozen=True)
class Account:
    """A user who may sign in; the hash stays out of repr, and so out of logs."""

    user: str
    name: str
    roles: tuple[str, ...]
    password_hash: str | None = field(default=None, repr=False)
    passkeys: tuple[Passkey, ...] = ()


class Accounts:
    """The accounts of one directory file, read once."""

    def __init__(self, accounts: Mapping[str, Account]) -> None:
        self._accounts = dict(accounts)

    @classmethod
    def load(cls, path: Path | None = None) -> Accounts:
        """Read the directory file at ``path`` (default: the one baton.toml names)."""
        path = path or directory_path()
        accounts: dict[str, Account] = {}
        for user, entry in read_directory(path).items():
            if entry.password_hash is not None:
                try:
                    extract_parameters(entry.password_hash)
                except InvalidHashError:
                    raise ConfigError(
                        f"{path}: the password_hash of user '{user}' is not an argon2 hash; "
                        f"set it with `baton users set-password {user}`"
                    ) from None
            accounts[user] = Account(
                user, entry.name, tuple(entry.roles), entry.password_hash, tuple(entry.passkeys)
            )
        return cls(accounts)

    def get(self, user: str) -> Account | None:
        return self._accounts.get(user)

    def verify(self, user: str, password: str) -> Account | None:
        """The account if ``password`` is the user's, else None. Unknown users
        and users without a password cost a hash verification too, so the
        time taken does not tell which user names exist."""
        account = self._accounts.get(user)
        stored = account.password_hash if account else None
        try:
            _HASHER.verify(stored or _decoy_hash(), password)
        except VerificationError:
            return None
        return account if stored else None


@cache
def _decoy_hash() -> str:
    # The hash of a password nobody knows, with the same cost as real ones.
    return _HASHER.hash(secrets.token_urlsafe(32))


def hash_password(password: str) -> str:
    if len(password) < MIN_PASSWORD_LENGTH:
        raise ValueError(f"a password needs at least {MIN_PASSWORD_LENGTH} characters")
    return _HASHER.hash(password)


def set_password(path: Path, user: str, password: str) -> None:
    """Store the hash of ``password`` as ``user``'s in the directory file at
    ``path``; see :func:`_set_entry`."""
    _set_entry(path, user, "password_hash", hash_password(password))


def add_key(path: Path, user: str, public_key: str) -> bool:
    """Add an Ed25519 public key (``ed25519:<base64>``) to ``user``'s keys in
    the directory file at ``path``; False if it is there already. Runs
    started afterwards accept acts signed with it."""
    keys = _entry(path, user).keys
    if public_key in keys:
        return False
    _set_entry(path, user, "keys", [*keys, public_key])
    return True


def add_passkey(path: Path, user: str, passkey: Passkey) -> bool:
    """Add a passkey registered in the inbox to ``user``'s passkeys; False if
    a passkey with its id is there already."""
    passkeys = _entry(path, user).passkeys
    if any(p.id == passkey.id for p in passkeys):
        return False
    _set_entry(path, user, "passkeys", [*passkeys, passkey])
    return True


def _entry(path: Path, user: str) -> DirectoryEntry:
    entry = read_directory(path).get(user)
    if entry is None:
        raise LookupError(
            f"no user '{user}' in {path}; add a [users.{user}] table with name and roles first"
        )
    return entry


def _set_entry(path: Path, user: str, key: str, value: Any) -> None:
    """Set one key of ``user``'s table in the directory file at ``path``.
    Only that key's line changes (or is added), so comments and layout
    survive; the result is parsed and compared with what was meant before
    it replaces the file."""
    before = read_directory(path)
    entry = _entry(path, user)
    text = _with_line(path.read_text(encoding="utf-8"), user, key, _toml_value(value))
    expected = {**before, user: entry.model_copy(update={key: value})}
    try:
        after = directory_users(tomllib.loads(text), path)
    except (tomllib.TOMLDecodeError, ConfigError):
        after = {}
    if after != expected:
        raise ConfigError(
            f"{path} is laid out in a way this command cannot edit safely; the file is "
            f"unchanged. Write user '{user}' as a [users.{user}] table with one key per line"
        )
    _replace(path, text)


def _toml_value(value: Any) -> str:
    """A TOML value on one line: strings, lists of them, lists of passkeys."""
    if isinstance(value, str):
        return json.dumps(value)
    if isinstance(value, BaseModel):
        pairs = ", ".join(f"{k} = {_toml_value(v)}" for k, v in value.model_dump().items())
        return "{ " + pairs + " }"
    return "[" + ", ".join(_toml_value(item) for item in value) + "]"


def _with_line(text: str, user: str, key: str, value: str) -> str:
    """``text`` with the ``key`` line of ``[users.<user>]`` set to ``value``,
    or added after the table's last line if it has none."""
    lines = text.splitlines(keepends=True)
    name = re.escape(user)
    header = re.compile(rf'\s*\[\s*users\s*\.\s*(?:{name}|"{name}")\s*\]\s*(?:#.*)?\n?')
    start = next((i for i, line in enumerate(lines) if header.fullmatch(line)), None)
    if start is None:
        raise ConfigError(
            f"the directory file has no line [users.{user}]; write the user as such a table "
            f"(not an inline table) so that its {key} can be set"
        )
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    entry = f"{key} = {value}\n"
    for i in range(start + 1, end):
        if re.match(rf"\s*{key}\s*=", lines[i]):
            lines[i] = entry
            return "".join(lines)
    last = start
    for i in range(start + 1, end):
        if lines[i].strip() and not lines[i].lstrip().startswith("#"):
            last = i
    if not lines[last].endswith("\n"):
        lines[last] += "\n"
    lines.insert(last + 1, entry)
    return "".join(lines)


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically, keeping the file's permissions:
    a crash half-way must not leave a truncated directory behind."""
    mode = path.stat().st_mode & 0o777
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
        os.chmod(tmp, mode)
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
