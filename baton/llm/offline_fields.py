"""The fields the offline rules read by their labels: the document type,
its number, dates, party, currency, totals and purchase order reference.

Shared by every rules task (offline_documents for ``extract_fields``,
offline_invoices for ``extract_invoice``), so a label is recognised the same
way whichever task reads it. Pure: no I/O, no clock, no randomness.

* Type. A heading cell (INVOICE, TAX INVOICE, RECEIPT, SALES RECEIPT,
  PURCHASE ORDER, optionally followed by its number) scores 3; a number label
  (Invoice No, Receipt #, Trans #, PO Number, P.O. No.) scores 2. The highest
  score wins; nothing found, or a tie, gives ``"unknown"``.
* Values. A label's value is the rest of its cell, else the next cell on the
  line, else the cell below it that is nearest in column (a "Vendor:" block).
* Party. The vendor / merchant / supplier: a labelled "From:", "Vendor:",
  "Supplier:"... value, or else, for invoices and receipts, the letterhead
  (first name-like line). For a purchase order the letterhead is the
  *buyer*, so only a labelled supplier counts. A name is cut at its first
  comma.
* Totals. Amount labels take the last amount on their stretch of line, so
  "VAT @ 20% on 1,150.00   230.00" yields 230.00; the highest-priority label
  wins ("Total Due" over "Total"), among equals the last.
* PO number. The value of "PO Number", "P.O. No.", "Purchase Order #",
  "PO:", "Your PO ref"...; a bare "PO" needs a colon, so "PO Box 12" is none.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Generic, Literal, TypeVar

from baton.llm.offline_text import (
    CURRENCY_CODES,
    CURRENCY_SYMBOLS,
    MONEY,
    Cell,
    Layout,
    alnum_tokens,
    find_date,
    is_recognisable,
    label_pattern,
    money_values,
    normalise_date,
)

DocType = Literal["invoice", "receipt", "purchase_order", "unknown"]

# What a confidence is scaled by when the type (or an invoice's kind) is
# unknown: the text may be no such document at all, so it never reaches 0.3.
UNKNOWN_TYPE_FACTOR = 0.25


# ---------------------------------------------------------------------- doc type

_HEADING = re.compile(
    r"(?:tax\s+|sales\s+|cash\s+|commercial\s+|pro[\s-]?forma\s+)?"
    r"(?P<kind>invoice|receipt|purchase\s+order)"
    r"(?:\s*(?:number|no\.?|#)?\s*[:#]?\s*(?P<id>(?=[\w\-/.]*\d)[A-Za-z0-9][\w\-/.]*))?",
    re.IGNORECASE,
)
NUMBER_QUALIFIER = r"\s*(?:number|num\b\.?|no\b\.?|#|id\b)"
NUMBER_LABELS: dict[DocType, re.Pattern[str]] = {
    "invoice": label_pattern(rf"(?:tax\s+)?invoice{NUMBER_QUALIFIER}|inv\.?{NUMBER_QUALIFIER}"),
    "receipt": label_pattern(
        rf"receipt{NUMBER_QUALIFIER}|(?:trans(?:action)?|txn|ticket){NUMBER_QUALIFIER}"
    ),
    "purchase_order": label_pattern(
        rf"(?:p\.?\s?o\.?|purchase\s+order){NUMBER_QUALIFIER}|order{NUMBER_QUALIFIER}"
    ),
}
# "Order No" also appears on receipts and invoices, so it is not evidence of type.
_TYPE_LABELS: dict[DocType, re.Pattern[str]] = {
    **NUMBER_LABELS,
    "purchase_order": label_pattern(rf"(?:p\.?\s?o\.?|purchase\s+order){NUMBER_QUALIFIER}"),
}
_KNOWN_TYPES: tuple[DocType, ...] = ("invoice", "receipt", "purchase_order")
_KIND_TO_TYPE: dict[str, DocType] = {
    "invoice": "invoice",
    "receipt": "receipt",
    "purchase order": "purchase_order",
}


def heading_type(cell: Cell) -> tuple[DocType, str | None] | None:
    match = _HEADING.fullmatch(cell.text)
    if match is None:
        return None
    kind = re.sub(r"\s+", " ", match.group("kind").lower())
    return _KIND_TO_TYPE[kind], match.group("id")


def detect_type(layout: Layout) -> DocType:
    scores: dict[DocType, int] = dict.fromkeys(_KNOWN_TYPES, 0)
    for cell in (cell for row in layout for cell in row):
        heading = heading_type(cell)
        if heading:
            scores[heading[0]] += 3
        for doc_type, pattern in _TYPE_LABELS.items():
            if pattern.match(cell.text):
                scores[doc_type] += 2
    best = max(scores.values())
    winners = [doc_type for doc_type, score in scores.items() if score == best]
    if best == 0 or len(winners) > 1:
        return "unknown"
    return winners[0]


# -------------------------------------------------------------------- text values

_ID_TOKEN = re.compile(r"[A-Za-z0-9][\w\-/.]*")


def _value_after(layout: Layout, cell: Cell, end: int, after: Cell | None) -> str | None:
    """The value a label at ``cell[:end]`` introduces: same cell, next cell
    (``after``), or below."""
    rest = cell.text[end:].lstrip(" :#.-\u2013\t")
    if rest:
        return rest
    if after and not after.text.endswith(":"):
        return after.text
    for below in layout[cell.line + 1 : cell.line + 3]:
        if below:
            return min(below, key=lambda other: abs(other.col - cell.col)).text
    return None


def labelled_values(layout: Layout, pattern: re.Pattern[str]) -> list[str]:
    values: list[str] = []
    for row in layout:
        for index, cell in enumerate(row):
            match = pattern.match(cell.text)
            if match:
                # The next cell is handed over, not looked up: a search of
                # the row per label made a row of many labels quadratic.
                after = row[index + 1] if index + 1 < len(row) else None
                value = _value_after(layout, cell, match.end(), after)
                if value:
                    values.append(value)
    return values


def leading_identifier(value: str) -> str | None:
    match = _ID_TOKEN.match(value)
    if match is None or not any(char.isdigit() for char in match.group(0)):
        return None
    return match.group(0).rstrip(".-/")


def extract_number(layout: Layout, doc_type: DocType) -> str | None:
    types = _KNOWN_TYPES if doc_type == "unknown" else (doc_type,)
    for candidate_type in types:
        for value in labelled_values(layout, NUMBER_LABELS[candidate_type]):
            identifier = leading_identifier(value)
            if identifier:
                return identifier
    # A heading can carry the number itself: "INVOICE # BL-88317".
    for cell in (cell for row in layout for cell in row):
        heading = heading_type(cell)
        if heading and heading[1] and heading[0] in types:
            return heading[1].rstrip(".-/")
    return None


ISSUE_DATE_LABEL = label_pattern(
    r"(?:invoice|issue|order|po|p\.o\.|receipt|document|transaction)?\s*date"
    r"(?:\s+of\s+issue)?|date\s+of\s+issue|issued(?:\s+on)?|dated"
)
DUE_DATE_LABEL = label_pattern(
    r"(?:payment\s+)?due(?:\s+date|\s+by|\s+on)?|pay(?:ment)?\s+by"
    r"|deliver(?:y)?\s+(?:date|by)|required\s+by"
)
_RAW_DATE_MAX = 40


def labelled_date(layout: Layout, pattern: re.Pattern[str]) -> str | None:
    for value in labelled_values(layout, pattern):
        # A value without a single digit ("Due: on receipt") is not a date at
        # all, not even a malformed one worth surfacing.
        if any(char.isdigit() for char in value):
            normalised = normalise_date(value)
            if normalised:
                return normalised[:_RAW_DATE_MAX]
    return None


def first_unlabelled_date(layout: Layout) -> str | None:
    # Receipts often print the date with no label; a due or delivery date must
    # not be mistaken for it, so lines carrying those labels are skipped.
    for row in layout:
        if any(DUE_DATE_LABEL.match(cell.text) for cell in row):
            continue
        for cell in row:
            match = find_date(cell.text)
            if match:
                return normalise_date(match.group(0))
    return None


# ---------------------------------------------------------------------- PO number

# A qualifier ("No.", "Number", "#") or a colon after the label: "PO Box 12"
# and "purchase order terms" are not labels.
PO_LABEL = label_pattern(
    r"(?:your\s+|customer\s+)?(?:p\.?\s?o\.?|purchase\s+order)"
    rf"(?:{NUMBER_QUALIFIER}|\s*ref(?:erence)?\.?|\s*(?=[:#]|$))"
)


def extract_po_number(layout: Layout) -> str | None:
    """The purchase order a document refers to (a purchase order's own
    number, which its label states the same way), or None."""
    for value in labelled_values(layout, PO_LABEL):
        if found := leading_identifier(value):
            return found
    return None


# -------------------------------------------------------------------------- party

# A colon or a cell of its own is required: prose such as "From April on..."
# must not name the party.
_SELLER_LABEL = label_pattern(
    r"(?:from|vendor|supplier|seller|merchant|issued\s+by|sold\s+by|billed\s+by|payee)"
    r"(?:\s*:|$)"
)
_SUPPLIER_LABEL = label_pattern(r"(?:vendor|supplier|seller)(?:\s*:|$)")
_LETTERHEAD_LINES = 8
_CONTACT = re.compile(r"@|www\.|https?://|\b(?:tel|phone|fax)\b", re.IGNORECASE)


def _party_from_label(layout: Layout, pattern: re.Pattern[str]) -> str | None:
    for value in labelled_values(layout, pattern):
        name = value.split(",", 1)[0].strip()
        if any(char.isalpha() for char in name):
            return name
    return None


def _looks_like_name(text: str) -> bool:
    alnum = [char for char in text if char.isalnum()]
    letters = sum(1 for char in alnum if char.isalpha())
    # Addresses start with a house number and contact lines carry @, www or
    # "Tel"; a business name does neither.
    return (
        text[:1].isalpha()
        and letters >= 2
        and letters / len(alnum) >= 0.7
        and ":" not in text
        and not _CONTACT.search(text)
        and find_date(text) is None
        and all(is_recognisable(token) for token in alnum_tokens(text))
    )


def _letterhead(layout: Layout) -> str | None:
    rows = [row for row in layout if row][:_LETTERHEAD_LINES]
    for row in rows:
        # A line that carries an amount is a table row, never a letterhead.
        if money_values(" ".join(cell.text for cell in row)):
            continue
        name = row[0].text.split(",", 1)[0].strip()
        if heading_type(row[0]) is None and _looks_like_name(name):
            return name
    return None


def extract_party(layout: Layout, doc_type: DocType) -> str | None:
    if doc_type == "purchase_order":
        # A PO's letterhead is the buyer's; only a labelled supplier is the party.
        return _party_from_label(layout, _SUPPLIER_LABEL)
    return _party_from_label(layout, _SELLER_LABEL) or _letterhead(layout)


# ----------------------------------------------------------------------- currency

_CURRENCY_LABEL = label_pattern(r"currency")
_CODE_WORD = re.compile(r"(?<![A-Za-z])(EUR|USD|GBP)(?![A-Za-z])")
_BRACKETED_SYMBOL = re.compile(r"\(\s*(US\$|[€$£])\s*\)")


def extract_currency(text: str, layout: Layout) -> str | None:
    for value in labelled_values(layout, _CURRENCY_LABEL):
        code = _CODE_WORD.search(value.upper())
        if code:
            return code.group(1)
    counts = dict.fromkeys(CURRENCY_CODES, 0)
    for match in _CODE_WORD.finditer(text):
        counts[match.group(1)] += 1
    # A symbol counts only next to an amount or as a column unit "(£)", so a
    # stray "€" inside OCR noise is not evidence.
    for match in MONEY.finditer(text):
        for marker in (match.group("pre"), match.group("post")):
            if marker in CURRENCY_SYMBOLS:
                counts[CURRENCY_SYMBOLS[marker]] += 1
    for match in _BRACKETED_SYMBOL.finditer(text):
        counts[CURRENCY_SYMBOLS[match.group(1)]] += 1
    best = max(counts.values())
    winners = [code for code, count in counts.items() if count == best]
    return winners[0] if best > 0 and len(winners) == 1 else None


# ------------------------------------------------------------------------ amounts

_NOT_A_PLAIN_TOTAL = (
    r"(?!\s*(?:excl|ex\b|ex\.|before|net|vat|tax|qty|quantity|items?|units?"
    r"|discount|savings|hours?|weight))"
)
AMOUNT_LABELS: tuple[tuple[str, int, re.Pattern[str]], ...] = (
    (
        "total",
        3,
        label_pattern(
            r"grand\s+total|total\s+(?:amount\s+)?due|amount\s+due|balance\s+due"
            r"|amount\s+payable|total\s+payable|total\s+to\s+pay|(?:invoice|order)\s+total"
            r"|total\s+incl(?:\.|uding|usive)?"
        ),
    ),
    (
        "subtotal",
        2,
        label_pattern(
            r"sub[\s-]?total|net\s+(?:total|amount)|total\s+net"
            r"|total\s+(?:excl\.?|excluding|ex\.?|before)(?:\s+(?:vat|tax))?"
            r"|amount\s+before\s+tax"
        ),
    ),
    (
        "tax",
        2,
        label_pattern(
            r"(?:total\s+|incl(?:\.|uded|uding)?\s+|plus\s+)?"
            r"(?:sales\s+tax|vat|tax|gst|hst|tva|mwst|btw|iva)"
            r"(?!\s*(?:no\b|no\.|number|reg|id\b|#|registration|invoice|exempt|rate\b))"
        ),
    ),
    ("total", 1, label_pattern(rf"total(?:\s+amount)?{_NOT_A_PLAIN_TOTAL}")),
)


Value = TypeVar("Value")


@dataclass(frozen=True)
class LabelledAmount(Generic[Value]):
    """The amount a totals label (AMOUNT_LABELS) introduces, and where."""

    field: str
    priority: int
    line: int
    value: Value


def labelled_amounts(
    row: list[Cell], line: str, values: Callable[[str], list[Value]]
) -> list[LabelledAmount[Value]]:
    """The amounts on the totals labels of ``row``: each the last of
    ``values`` on the label's stretch of ``line``, up to the next label."""
    hits: list[tuple[int, int, str, int]] = []
    for cell in row:
        for field, priority, pattern in AMOUNT_LABELS:
            match = pattern.match(cell.text)
            if match:
                hits.append((cell.col, cell.col + match.end(), field, priority))
                break
    amounts: list[LabelledAmount[Value]] = []
    for index, (_, label_end, field, priority) in enumerate(hits):
        stop = hits[index + 1][0] if index + 1 < len(hits) else len(line)
        found = values(line[label_end:stop])
        if found:
            amounts.append(LabelledAmount(field, priority, row[0].line, found[-1]))
    return amounts


def pick_amount(amounts: list[LabelledAmount[Value]], field: str) -> Value | None:
    # Highest-priority label wins; among equals the last one, because the
    # figure that closes a totals block is the one that counts.
    candidates = [amount for amount in amounts if amount.field == field]
    if not candidates:
        return None
    return max(candidates, key=lambda amount: (amount.priority, amount.line)).value
