"""The RFP desk: the bid team's answer library, the product facts, the
price list, and the bids it has sent (each with its coverage matrix) or
declined.

Every write is keyed and hashed (systems.keyed): a retried or resumed step
finds its earlier write, a key reused with other content is a loud error.
An RFP is answered or declined at most once, whatever key a second write
would carry. One SQLite file (BATON_RFP_DB, else rfp.sqlite in the data dir).
"""

from __future__ import annotations

import json
import sqlite3
import tomllib
from decimal import Decimal
from pathlib import Path
from typing import Any

from temporalio.exceptions import ApplicationError

from activities.rfp_models import words
from systems.database import SqliteSystem, data_file
from systems.keyed import Written, write_once

NOW = "(strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))"
# A library entry is offered when a query shares this many of its keywords:
# one shared word ("rest") is as often a different topic as the same one.
MIN_SHARED_KEYWORDS = 2

SCHEMA = f"""
CREATE TABLE IF NOT EXISTS answers (
    answer_id TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    topic TEXT NOT NULL,
    keywords TEXT NOT NULL,
    facts TEXT NOT NULL,
    answer TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS facts (
    fact_key TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    fact_values TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS prices (
    sku TEXT PRIMARY KEY,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    name TEXT NOT NULL,
    unit TEXT NOT NULL,
    currency TEXT NOT NULL,
    price TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS discounts (
    discount_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    kind TEXT NOT NULL CHECK (kind IN ('volume', 'term')),
    threshold INTEGER NOT NULL,
    percent INTEGER NOT NULL,
    UNIQUE (kind, threshold)
);
CREATE TABLE IF NOT EXISTS submissions (
    submission_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    rfp_reference TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    title TEXT NOT NULL,
    approved_by TEXT NOT NULL,
    answers TEXT NOT NULL,
    coverage TEXT NOT NULL,
    covered INTEGER NOT NULL,
    missing INTEGER NOT NULL,
    submitted_at TEXT NOT NULL DEFAULT {NOW}
);
CREATE TABLE IF NOT EXISTS declines (
    decline_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT NOT NULL,
    rfp_reference TEXT NOT NULL UNIQUE,
    issuer TEXT NOT NULL,
    title TEXT NOT NULL,
    reasons TEXT NOT NULL,
    confirmed_by TEXT NOT NULL,
    declined_at TEXT NOT NULL DEFAULT {NOW}
);
"""


def default_path() -> Path:
    return data_file("BATON_RFP_DB", "rfp.sqlite")


class RfpDesk(SqliteSystem):
    def __init__(self, path: Path | None = None) -> None:
        super().__init__(path or default_path(), SCHEMA)

    # -- what the drafter reads ----------------------------------------------

    def search(self, query: str, limit: int) -> list[dict[str, Any]]:
        """Library entries sharing at least MIN_SHARED_KEYWORDS keywords with
        ``query``, most shared first (then by id, so the order is stable)."""
        asked = words(query)
        hits = []
        for row in self._rows("SELECT * FROM answers ORDER BY answer_id"):
            shared = sorted(asked & set(json.loads(row["keywords"])))
            if len(shared) >= MIN_SHARED_KEYWORDS:
                hits.append((len(shared), row, shared))
        hits.sort(key=lambda hit: (-hit[0], hit[1]["answer_id"]))
        return [
            {
                "id": row["answer_id"],
                "topic": row["topic"],
                "answer": row["answer"],
                "facts": json.loads(row["facts"]),
                "matched": shared,
            }
            for _, row, shared in hits[:limit]
        ]

    def facts(self, keys: list[str]) -> dict[str, list[str]]:
        """The facts named by ``keys`` that are held (every fact when none)."""
        rows = self._rows("SELECT fact_key, fact_values FROM facts ORDER BY fact_key")
        held = {row["fact_key"]: json.loads(row["fact_values"]) for row in rows}
        return held if not keys else {k: held[k] for k in keys if k in held}

    def quote(self, users: int, term_years: int) -> dict[str, Any]:
        """The price of ``users`` named users for ``term_years``: the user
        price less the volume discount of the highest tier reached, the
        platform fee, and the term discount on both. Amounts to the cent."""
        prices = {row["sku"]: row for row in self._rows("SELECT * FROM prices")}
        if not {"ANL-USER", "ANL-PLATFORM"} <= set(prices):
            raise ApplicationError(
                "the price list lacks ANL-USER or ANL-PLATFORM: load samples/rfp_response/"
                "price_list.toml (systems.rfp.load_seed)",
                type="PriceListIncomplete",
                non_retryable=True,
            )
        volume = self._discount("volume", users)
        term = self._discount("term", term_years)
        cent = Decimal("0.01")
        user, platform = prices["ANL-USER"], prices["ANL-PLATFORM"]
        user_price = (Decimal(user["price"]) * (100 - volume) / 100).quantize(cent)
        lines = [
            {
                "sku": user["sku"],
                "description": user["name"],
                "quantity": users,
                "unit_price": str(user_price),
                "amount": str(user_price * users),
            },
            {
                "sku": platform["sku"],
                "description": platform["name"],
                "quantity": 1,
                "unit_price": platform["price"],
                "amount": platform["price"],
            },
        ]
        per_year = sum((Decimal(line["amount"]) for line in lines), Decimal(0))
        per_year = (per_year * (100 - term) / 100).quantize(cent)
        discounts = [
            *([f"volume discount {volume}% on users"] if volume else []),
            *([f"{term}% for a {term_years}-year term"] if term else []),
        ]
        return {
            "currency": user["currency"],
            "lines": lines,
            "discounts": discounts,
            "per_year": str(per_year),
            "term_years": term_years,
            "total": str(per_year * term_years),
        }

    def _discount(self, kind: str, reached: int) -> int:
        with self.transaction() as db:
            row = db.execute(
                "SELECT percent FROM discounts WHERE kind = ? AND threshold <= ? "
                "ORDER BY threshold DESC LIMIT 1",
                (kind, reached),
            ).fetchone()
        return int(row[0]) if row else 0

    # -- what a run writes ----------------------------------------------------

    def submit(self, *, idempotency_key: str, submission: dict[str, Any]) -> Written:
        """Record the bid sent for an RFP (rfp_reference, issuer, title,
        approved_by, answers, coverage), once per key and once per RFP."""
        coverage = submission["coverage"]
        values = {
            **{k: submission[k] for k in ("rfp_reference", "issuer", "title", "approved_by")},
            "answers": json.dumps(submission["answers"], sort_keys=True),
            "coverage": json.dumps(coverage, sort_keys=True),
            "covered": sum(1 for row in coverage if row["status"] == "covered"),
            "missing": sum(1 for row in coverage if row["status"] != "covered"),
        }
        return self._once("submissions", "submitted", idempotency_key, submission, values)

    def decline(self, *, idempotency_key: str, decline: dict[str, Any]) -> Written:
        """Record that an RFP is not bid for, with the reasons and who confirmed it."""
        values = {
            **{k: decline[k] for k in ("rfp_reference", "issuer", "title", "confirmed_by")},
            "reasons": json.dumps(decline["reasons"]),
        }
        return self._once("declines", "declined", idempotency_key, decline, values)

    def _once(
        self, table: str, done: str, key: str, payload: dict[str, Any], values: dict[str, Any]
    ) -> Written:
        with self.transaction() as db:
            try:
                return write_once(
                    db, system="RFP desk", table=table, key=key, payload=payload, values=values
                )
            except sqlite3.IntegrityError:
                raise ApplicationError(
                    f"RFP {values['rfp_reference']} was already {done}, under another key; "
                    "nothing was written. An RFP is answered or declined once",
                    type="AlreadyAnswered",
                    non_retryable=True,
                ) from None

    def submissions(self, rfp_reference: str | None = None) -> list[dict[str, Any]]:
        """The bids sent (for one RFP), each with its answers and coverage matrix read back."""
        rows = self._rows(
            "SELECT * FROM submissions WHERE ? IS NULL OR rfp_reference = ? ORDER BY submission_id",
            (rfp_reference, rfp_reference),
        )
        for row in rows:
            row["answers"] = json.loads(row["answers"])
            row["coverage"] = json.loads(row["coverage"])
        return rows

    def declines(self, rfp_reference: str | None = None) -> list[dict[str, Any]]:
        rows = self._rows(
            "SELECT * FROM declines WHERE ? IS NULL OR rfp_reference = ? ORDER BY decline_id",
            (rfp_reference, rfp_reference),
        )
        for row in rows:
            row["reasons"] = json.loads(row["reasons"])
        return rows

    # -- the seed ---------------------------------------------------------------

    def _put(self, table: str, key: str, payload: dict[str, Any], values: dict[str, Any]) -> None:
        with self.transaction() as db:
            write_once(db, system="RFP desk", table=table, key=key, payload=payload, values=values)


class SeedError(ValueError):
    """A seed file cannot be loaded; the message names the file and the entry."""


def _read(path: Path) -> dict[str, Any]:
    try:
        return tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as err:
        raise SeedError(f"cannot read the RFP desk seed file {path}: {err}") from None


def load_seed(folder: Path, desk: RfpDesk | None = None) -> None:
    """Load ``folder``'s answer_library.toml, product_facts.toml and
    price_list.toml (samples/rfp_response) under keys "seed/<kind>/<id>":
    loading them again changes nothing, and an entry edited since is an
    IdempotencyConflict naming it (start from a fresh data dir)."""
    desk = desk or RfpDesk()
    library = folder / "answer_library.toml"
    for entry in _read(library).get("answers", []):
        missing = sorted({"id", "topic", "keywords", "facts", "answer"} - set(entry))
        if missing:
            raise SeedError(f"{library}: answer {entry.get('id')} lacks {', '.join(missing)}")
        values = {
            "answer_id": entry["id"],
            "topic": entry["topic"],
            "keywords": json.dumps(sorted(w.lower() for w in entry["keywords"])),
            "facts": json.dumps(entry["facts"]),
            "answer": entry["answer"],
        }
        desk._put("answers", f"seed/answer/{entry['id']}", entry, values)
    for key, held in _read(folder / "product_facts.toml").get("facts", {}).items():
        if not isinstance(held, list) or not all(isinstance(v, str) for v in held):
            raise SeedError(f"{folder / 'product_facts.toml'}: fact {key} must be a list of text")
        desk._put(
            "facts",
            f"seed/fact/{key}",
            {key: held},
            {"fact_key": key, "fact_values": json.dumps(held)},
        )
    prices = _read(folder / "price_list.toml")
    for item in prices.get("items", []):
        values = {k: item[k] for k in ("sku", "name", "unit", "price")}
        values["currency"] = prices["currency"]
        desk._put("prices", f"seed/price/{item['sku']}", values, values)
    for kind, threshold in (("volume", "min_users"), ("term", "min_years")):
        for tier in prices.get(f"{kind}_discounts", []):
            values = {"kind": kind, "threshold": tier[threshold], "percent": tier["percent"]}
            desk._put("discounts", f"seed/discount/{kind}/{tier[threshold]}", values, values)
