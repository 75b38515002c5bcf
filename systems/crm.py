"""The CRM: customer accounts with the signals a renewal review reads, the
e-mails sent to their contacts (the CRM's outbox, which a mail relay
drains), and the outcome of each renewal cycle.

Every write is keyed and hashed (systems.keyed): a retried or resumed step
finds its earlier write, a key reused with other content is a loud error.
An account has at most one outcome per cycle, whatever key a second one
would carry. One SQLite file (BATON_CRM_DB, else crm.sqlite in the data dir).
"""

from __future__ import annotations

import sqlite3
import tomllib
from pathlib import Path
from typing import Any

from pydantic import ValidationError
from temporalio.exceptions import ApplicationError

from activities.renewal_models import Account
from systems.database import SqliteSystem, data_file
from systems.keyed import Written, write_once

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS accounts (
    account_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    contact_name TEXT NOT NULL,
    contact_email TEXT NOT NULL,
    csm TEXT NOT NULL,
    usage_trend_pct INTEGER NOT NULL,
    open_tickets INTEGER NOT NULL,
    nps INTEGER NOT NULL,
    renewal_date TEXT NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('active', 'closed'))
);
CREATE TABLE IF NOT EXISTS emails (
    email_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    cycle INTEGER NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('outreach', 'follow_up')),
    to_address TEXT NOT NULL,
    subject TEXT NOT NULL,
    body TEXT NOT NULL,
    queued_at TEXT NOT NULL DEFAULT {NOW},
    -- One outreach and at most one follow-up per account and cycle.
    UNIQUE (account_id, cycle, kind)
);
CREATE TABLE IF NOT EXISTS outcomes (
    outcome_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    account_id TEXT NOT NULL REFERENCES accounts (account_id),
    cycle INTEGER NOT NULL,
    outcome TEXT NOT NULL CHECK (outcome IN ('replied', 'replied_after_follow_up', 'no_answer')),
    action TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    recorded_at TEXT NOT NULL DEFAULT {NOW},
    UNIQUE (account_id, cycle)
);
"""

ACCOUNT_FIELDS = (
    "account_id",
    "name",
    "contact_name",
    "contact_email",
    "csm",
    "usage_trend_pct",
    "open_tickets",
    "nps",
    "renewal_date",
    "status",
)


def default_path() -> Path:
    return data_file("BATON_CRM_DB", "crm.sqlite")


class Crm(SqliteSystem):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA)

    def put_account(self, *, idempotency_key: str, account: dict[str, Any]) -> Written:
        """Create ``account`` (all of ACCOUNT_FIELDS), once per key."""
        missing = [f for f in ACCOUNT_FIELDS if f not in account]
        if missing:
            raise ValueError(f"account {account.get('account_id')} lacks {', '.join(missing)}")
        with self.transaction() as db:
            return write_once(
                db,
                system="CRM",
                table="accounts",
                key=idempotency_key,
                payload=account,
                values={f: account[f] for f in ACCOUNT_FIELDS},
            )

    def account(self, account_id: str) -> dict[str, Any] | None:
        rows = self._rows("SELECT * FROM accounts WHERE account_id = ?", (account_id,))
        return rows[0] if rows else None

    def cycles_recorded(self, account_id: str) -> int:
        """How many renewal cycles of the account have an outcome."""
        with self.transaction() as db:
            (count,) = db.execute(
                "SELECT COUNT(*) FROM outcomes WHERE account_id = ?", (account_id,)
            ).fetchone()
        return int(count)

    def queue_email(self, *, idempotency_key: str, email: dict[str, Any]) -> Written:
        """Queue ``email`` (account_id, cycle, kind, to_address, subject,
        body) for the mail relay, once per key; a second e-mail of the same
        kind in one cycle under another key is refused."""
        with self.transaction() as db:
            try:
                return write_once(
                    db,
                    system="CRM outbox",
                    table="emails",
                    key=idempotency_key,
                    payload=email,
                    values=email,
                )
            except sqlite3.IntegrityError:
                raise ApplicationError(
                    f"the CRM already holds a {email['kind']} e-mail to account "
                    f"{email['account_id']} in cycle {email['cycle']}, under another key; "
                    "nothing was sent. A cycle sends one outreach and at most one follow-up",
                    type="AlreadySent",
                    non_retryable=True,
                ) from None

    def emails(self, account_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM emails WHERE account_id = ? ORDER BY email_id", (account_id,)
        )

    def record_outcome(self, *, idempotency_key: str, outcome: dict[str, Any]) -> Written:
        """Record a cycle's ``outcome`` (account_id, cycle, outcome, action,
        approved_by), once per key and once per account and cycle."""
        with self.transaction() as db:
            try:
                return write_once(
                    db,
                    system="CRM",
                    table="outcomes",
                    key=idempotency_key,
                    payload=outcome,
                    values=outcome,
                )
            except sqlite3.IntegrityError:
                raise ApplicationError(
                    f"cycle {outcome['cycle']} of account {outcome['account_id']} already has "
                    "an outcome, recorded under another key; nothing was recorded",
                    type="OutcomeRecorded",
                    non_retryable=True,
                ) from None

    def outcomes(self, account_id: str) -> list[dict[str, Any]]:
        return self._rows(
            "SELECT * FROM outcomes WHERE account_id = ? ORDER BY cycle", (account_id,)
        )

    def reset(self) -> None:
        """Empty every table in place (a running worker keeps connections to
        the file, so it is not deleted): the demo starts from its seed."""
        with self.transaction() as db:
            for table in ("outcomes", "emails", "accounts"):
                db.execute(f"DELETE FROM {table}")


class SeedError(ValueError):
    """The seed file cannot be loaded; the message names the account."""


def load_seed(path: Path, crm: Crm | None = None) -> list[str]:
    """Write the accounts of ``path`` (samples/customer_renewal/seed.toml)
    under keys "seed/account/<id>": loading it again changes nothing, and an
    account edited since is an IdempotencyConflict naming it. Each row is
    checked against the Account model first, so a typo fails the load with
    the row, not a run later. Their ids."""
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SeedError(f"cannot read the CRM seed file {path}: {err}") from None
    crm = crm or Crm()
    ids = []
    for row in data.get("accounts", []):
        unknown = sorted(set(row) - set(Account.model_fields))
        if unknown:
            raise SeedError(f"{path}: account {row.get('account_id')} has unknown {unknown}")
        try:
            account = Account.model_validate(row)
        except ValidationError as err:
            raise SeedError(f"{path}: an account row is invalid: {row}\n{err}") from None
        crm.put_account(
            idempotency_key=f"seed/account/{account.account_id}",
            account=account.model_dump(mode="json"),
        )
        ids.append(account.account_id)
    return ids
