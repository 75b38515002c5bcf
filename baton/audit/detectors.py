"""Bank and card identifiers found in free text, so that the audit trail
keeps them only as salted hashes wherever they appear: in a document's text,
a model's prompt or answer, a reviewer's comment. Field-name redaction
(`[audit] redact`) cannot see an IBAN inside the text of an invoice.

Each finding is replaced by ``[<kind> sha256:<16 hex>]``: the same value
under the same salt reads the same in every record, so a reviewer can still
see that two records name one account without seeing it.
"""

from __future__ import annotations

import hashlib
import re
from collections import Counter
from collections.abc import Callable
from functools import lru_cache
from typing import Any

# Two letters, two check digits, then 11 to 30 letters or digits, written
# in groups or not: from Norway's 15 characters to the longest, 34.
_IBAN = re.compile(r"\b[A-Z]{2}\d{2}(?: ?[A-Z0-9]){11,30}\b")
# An IBAN-shaped value after its label counts even when its check digits do
# not: a mistyped IBAN still names a bank account.
_LABELLED_IBAN = re.compile(r"(?i)\bIBAN\b[\s:.#]*([A-Z]{2}\d{2}(?: ?[A-Z0-9]){8,30})\b")
# 13 to 19 digits, in groups separated by one space or dash.
_CARD = re.compile(r"\b\d(?:[ -]?\d){12,18}\b")
_SORT_CODE = re.compile(r"(?i)\bsort[ -]?code\b[\s:.#]*(\d{2}[- ]?\d{2}[- ]?\d{2})\b")
_ACCOUNT = re.compile(
    r"(?i)\b(?:account|acct|konto|compte)(?:[ -]?(?:no|number|nr|num|#))?\.?[\s:#]*"
    r"(\d[\d -]{4,22}\d)\b"
)

_ACCOUNT_LABELS = ("account", "acct", "konto", "compte")
# Every finding holds a digit (as every pattern above matches it: \d).
_DIGIT = re.compile(r"\d")
# The shortest text a finding fits in: "acct123456" (an account number has
# 6 digits at least); a card number needs 13, an IBAN 15.
_SHORTEST = 10
_CACHED_FROM = 256

DETECTORS = ("iban", "card", "sort_code", "bank_account")


def iban_checksum_ok(candidate: str) -> bool:
    """ISO 13616's mod-97 check: the country and check digits moved to the
    end, letters as 10 to 35, the number leaves 1."""
    text = candidate.replace(" ", "").upper()
    moved = text[4:] + text[:4]
    return int("".join(str(int(c, 36)) for c in moved)) % 97 == 1


def luhn_ok(digits: str) -> bool:
    total = 0
    for i, char in enumerate(reversed(digits)):
        value = int(char)
        if i % 2:
            value = value * 2 - 9 if value > 4 else value * 2
        total += value
    return total % 10 == 0


class Scrubber:
    """Replaces the identifiers of :data:`DETECTORS` in strings by salted
    hashes and counts what it found."""

    def __init__(self, salt: str) -> None:
        if not salt:
            raise ValueError("redaction needs a non-empty salt")
        self._salt = salt
        # A run's document text reaches the trail in several records (the
        # load's output, each model attempt's input, the gate's view): each
        # distinct text is scanned once.
        self._scrubbed = lru_cache(maxsize=512)(self._scrub_text)

    def scrub(self, data: Any, found: Counter[str]) -> Any:
        """``data`` (JSON-like) with every string scrubbed; ``found`` counts by kind."""
        if isinstance(data, str):
            return self.scrub_text(data, found)
        if isinstance(data, dict):
            return {key: self.scrub(value, found) for key, value in data.items()}
        if isinstance(data, list | tuple):
            return [self.scrub(item, found) for item in data]
        return data

    def scrub_text(self, text: str, found: Counter[str]) -> str:
        # Cheap exits first: ids, times and numbers are most of a record's
        # strings, and none shorter than the shortest finding can hold one.
        if len(text) < _SHORTEST or not _DIGIT.search(text):
            return text
        # Only long texts are cached: a cache of every timestamp and id would
        # push out the document texts it is there for.
        if len(text) < _CACHED_FROM:
            scrubbed, counts = self._scrub_text(text)
        else:
            scrubbed, counts = self._scrubbed(text)
        found.update(dict(counts))
        return scrubbed

    def _scrub_text(self, text: str) -> tuple[str, tuple[tuple[str, int], ...]]:
        found: Counter[str] = Counter()
        # The labelled patterns run only where their label is.
        lower = text.lower()
        if "iban" in lower:
            text = _LABELLED_IBAN.sub(self._group("iban", found), text)
        text = _IBAN.sub(self._whole("iban", found, iban_checksum_ok), text)
        if "sort" in lower:
            text = _SORT_CODE.sub(self._group("sort_code", found), text)
        if any(label in lower for label in _ACCOUNT_LABELS):
            text = _ACCOUNT.sub(self._group("bank_account", found), text)
        text = _CARD.sub(
            self._whole("card", found, lambda s: luhn_ok(re.sub(r"[ -]", "", s))), text
        )
        return text, tuple(found.items())

    def _token(self, kind: str, value: str) -> str:
        plain = re.sub(r"[\s-]", "", value).upper()
        digest = hashlib.sha256((self._salt + plain).encode("utf-8")).hexdigest()[:16]
        return f"[{kind} sha256:{digest}]"

    def _whole(
        self, kind: str, found: Counter[str], valid: Callable[[str], bool]
    ) -> Callable[[re.Match[str]], str]:
        def replace(match: re.Match[str]) -> str:
            if not valid(match.group(0)):
                return match.group(0)
            found[kind] += 1
            return self._token(kind, match.group(0))

        return replace

    def _group(self, kind: str, found: Counter[str]) -> Callable[[re.Match[str]], str]:
        """Replace the value a label introduced, keeping the label readable."""

        def replace(match: re.Match[str]) -> str:
            found[kind] += 1
            start, end = match.span(1)
            whole = match.group(0)
            offset = match.start(0)
            return (
                whole[: start - offset] + self._token(kind, match.group(1)) + whole[end - offset :]
            )

        return replace
