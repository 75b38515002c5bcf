"""Who may sign in to the reviewer inbox: the users of the directory file
with their argon2 password hashes, and `baton users set-password`.

Runs copy only names and roles from the same file (see baton.config); the
hashes stay in the file and in this module.
"""

from __future__ import annotations

import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from functools import cache
from pathlib import Path

from argon2 import PasswordHasher, extract_parameters
from argon2.exceptions import InvalidHashError, VerificationError

from baton.config import ConfigError, directory_path, directory_users, read_directory

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
            accounts[user] = Account(user, entry.name, tuple(entry.roles), entry.password_hash)
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
    ``path``. Only that user's password_hash line changes (or is added), so
    comments and layout survive; the result is parsed and compared with the
    file before it replaces the file."""
    before = read_directory(path)
    if user not in before:
        raise LookupError(
            f"no user '{user}' in {path}; add a [users.{user}] table with name and roles first"
        )
    new_hash = hash_password(password)
    text = _with_hash(path.read_text(encoding="utf-8"), user, new_hash)
    expected = {**before, user: before[user].model_copy(update={"password_hash": new_hash})}
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


def _with_hash(text: str, user: str, new_hash: str) -> str:
    """``text`` with the password_hash line of ``[users.<user>]`` set to
    ``new_hash``, or added after the table's last line if it has none."""
    lines = text.splitlines(keepends=True)
    name = re.escape(user)
    header = re.compile(rf'\s*\[\s*users\s*\.\s*(?:{name}|"{name}")\s*\]\s*(?:#.*)?\n?')
    start = next((i for i, line in enumerate(lines) if header.fullmatch(line)), None)
    if start is None:
        raise ConfigError(
            f"the directory file has no line [users.{user}]; write the user as such a table "
            "(not an inline table) so that its password can be set"
        )
    end = next(
        (i for i in range(start + 1, len(lines)) if lines[i].lstrip().startswith("[")),
        len(lines),
    )
    entry = f'password_hash = "{new_hash}"\n'
    for i in range(start + 1, end):
        if re.match(r"\s*password_hash\s*=", lines[i]):
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
