"""What keeps the inbox's sign-in hard to abuse: a throttle on failed
sign-ins, server-side sessions that signing out and a password change end,
and the accounts read from the directory file as it is now.

All of it lives in the memory of the one inbox process: a restart signs
everyone out and forgets the failed attempts. Several inbox processes
behind one address would each count and remember on their own.
"""

from __future__ import annotations

import hashlib
import math
import secrets
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

from baton.accounts import Account, Accounts
from baton.config import directory_path

# Seconds on a steady clock; tests pass one they move by hand.
Clock = Callable[[], float]


class DirectoryAccounts:
    """The accounts of the directory file as it is now, read again only when
    the file changes: `baton users set-password` replaces the file, and the
    new password must work (and the old one stop working) without a restart."""

    def __init__(self, path: Callable[[], Path] = directory_path) -> None:
        self._path = path
        self._seen: tuple[Path, int, int, int] | None = None
        self._accounts = Accounts({})

    def __call__(self) -> Accounts:
        path = self._path()
        stat = path.stat()
        # The inode too: the file is replaced, not rewritten, and two writes
        # within one tick of a coarse clock keep the same mtime.
        seen = (path, stat.st_ino, stat.st_mtime_ns, stat.st_size)
        if seen != self._seen:
            self._accounts = Accounts.load(path)
            self._seen = seen
        return self._accounts


def password_fingerprint(account: Account) -> str:
    """What a session remembers of the password it was signed in with: a
    digest of its hash, so that the session table holds no password hash."""
    return hashlib.sha256((account.password_hash or "").encode()).hexdigest()


@dataclass(frozen=True)
class Session:
    user: str
    fingerprint: str
    expires_at: float


class Sessions:
    """The live sessions by id: the cookie carries only the id, so a session
    ends here, for every copy of the cookie, when its user signs out or
    changes password."""

    def __init__(self, max_age: float, clock: Clock) -> None:
        self._max_age = max_age
        self._clock = clock
        self._live: dict[str, Session] = {}

    def start(self, account: Account) -> str:
        now = self._clock()
        # Expired sessions go when a new one starts, so the table stays as
        # small as the number of people signed in.
        self._live = {sid: s for sid, s in self._live.items() if s.expires_at > now}
        sid = secrets.token_urlsafe(32)
        self._live[sid] = Session(account.user, password_fingerprint(account), now + self._max_age)
        return sid

    def account(self, sid: str, accounts: Accounts) -> Account | None:
        """The account of a live session; None, and the session ended, if it
        expired or its user's password changed (or the user left) since."""
        session = self._live.get(sid)
        if session is None:
            return None
        account = accounts.get(session.user)
        if (
            account is None
            or session.expires_at <= self._clock()
            or password_fingerprint(account) != session.fingerprint
        ):
            self.end(sid)
            return None
        return account

    def end(self, sid: str) -> None:
        self._live.pop(sid, None)


@dataclass
class _Failures:
    times: list[float] = field(default_factory=list)
    # The last lockout's length, 0 before the first: the next is twice as long.
    lockout: float = 0.0
    locked_until: float = 0.0

    def last_seen(self) -> float:
        """When the last failure was, or its lockout ended if later."""
        return max(self.times[-1] if self.times else -math.inf, self.locked_until)


@dataclass(frozen=True)
class Limit:
    """``failures`` failed sign-ins within ``window`` seconds lock out."""

    failures: int
    window: float = 15 * 60


class SignInThrottle:
    """Failed sign-ins counted per user name and per client address. Once
    one of them reaches its limit within the window, sign-ins for it are
    refused, without checking the password, for 30 s; every further failure
    locks it out for twice as long as the last time, up to 15 min, until a
    whole window passes without one. User names are counted as typed, known
    or not, so a lockout tells nothing of which users exist."""

    FIRST_LOCKOUT = 30.0
    LONGEST_LOCKOUT = 15 * 60.0
    # Entries for names nobody tried lately are dropped past this many, so
    # that guessing many names cannot fill the memory.
    TIDY_ABOVE = 1000

    def __init__(
        self,
        clock: Clock,
        per_user: Limit = Limit(5),
        per_address: Limit = Limit(20),
    ) -> None:
        self._clock = clock
        self._limits = {"user": per_user, "address": per_address}
        self._failures: dict[tuple[str, str], _Failures] = {}

    def wait(self, user: str, address: str) -> float:
        """Seconds until the user name and address may try again; 0 if now."""
        now = self._clock()
        until = max(
            (f.locked_until for f in map(self._failures.get, self._keys(user, address)) if f),
            default=now,
        )
        return max(0.0, until - now)

    def failed(self, user: str, address: str) -> None:
        now = self._clock()
        if len(self._failures) > self.TIDY_ABOVE:
            self._tidy(now)
        for key in self._keys(user, address):
            limit = self._limits[key[0]]
            failures = self._failures.setdefault(key, _Failures())
            if now - failures.last_seen() > limit.window:
                failures.lockout = 0.0  # quiet for a whole window: a fresh start
            failures.times = [t for t in failures.times if t > now - limit.window]
            failures.times.append(now)
            if failures.lockout or len(failures.times) >= limit.failures:
                failures.lockout = min(
                    failures.lockout * 2 or self.FIRST_LOCKOUT, self.LONGEST_LOCKOUT
                )
                failures.locked_until = now + failures.lockout

    def succeeded(self, user: str) -> None:
        """Forget the user's failures. The address keeps its count: one's
        own account must not reset the count of guesses at others'."""
        self._failures.pop(("user", user), None)

    def _keys(self, user: str, address: str) -> tuple[tuple[str, str], tuple[str, str]]:
        return ("user", user), ("address", address)

    def _tidy(self, now: float) -> None:
        window = max(limit.window for limit in self._limits.values())
        self._failures = {
            key: f for key, f in self._failures.items() if now - f.last_seen() <= window
        }


def lockout_message(seconds: float) -> str:
    """What a locked-out sign-in is told: when to try again, and what to do
    if the password is forgotten."""
    wait = math.ceil(seconds)
    when = f"{wait} s" if wait < 120 else f"{math.ceil(wait / 60)} min"
    return (
        f"Too many failed sign-ins for this user name or from this address: try again in "
        f"{when}. If you have forgotten your password, ask an administrator to set a new "
        "one with `baton users set-password`."
    )
