"""Rules-based field extraction for invoices, receipts and purchase orders.

This is the "offline model": what Baton runs instead of an LLM when no API key
is configured. It is a small, deterministic rules engine (regular expressions
over the text's layout), it is pure (no I/O, no clock, no randomness, so a
Temporal activity that calls it is reproducible), and it never guesses: a field
it cannot find is ``None`` and is listed in ``missing``.

Approach
--------
1. Layout. Every line is split into *cells* at runs of two or more spaces, tabs
   or ``|``. Labels ("Invoice No:", "Due Date", "Total") are recognised only at
   the start of a cell. That one rule keeps "Due Date" from being read as
   "Date", keeps "Sub-total" from being read as "Total", and keeps prose
   ("we will settle your invoice") from counting as a heading or a label.
2. Type. A heading cell (INVOICE, TAX INVOICE, RECEIPT, SALES RECEIPT,
   PURCHASE ORDER, optionally followed by its number) scores 3; a number label
   (Invoice No, Receipt #, Trans #, PO Number, P.O. No.) scores 2. The highest
   score wins; nothing found, or a tie, gives ``"unknown"``.
3. Fields. Each field has a small table of labels. A label's value is the rest
   of its cell, else the next cell on the line, else the cell below it that is
   nearest in column (a "Vendor:" block). Amount labels take the last amount
   on their stretch of line, so "VAT @ 20% on 1,150.00   230.00" yields 230.00.
   The party is the vendor / merchant / supplier: a labelled "From:",
   "Vendor:", "Supplier:"... value, or else, for invoices and receipts, the
   letterhead (first name-like line). For a purchase order the letterhead is
   the *buyer*, so only a labelled supplier counts.
4. Line items. Only lines above the first subtotal / total line are candidates.
   A line is an item when it ends with unit price and amount (both shaped like
   money) and a quantity can be read: a third number before them, a separate
   leading number column, or "2 x Cappuccino" / "Cappuccino x2".
5. Confidence (``method = "rules_coverage"``)::

       confidence = coverage * type_factor * readability_factor

   ``coverage`` is the weighted share of the fields *expected for the detected
   type* that were found. Weights: total 3, number 2, party 2, line_items 2,
   issue_date 1.5, currency 1, due_date 1, subtotal 1, tax 1. Invoices expect
   all nine; receipts and purchase orders expect number, issue_date, party,
   currency, line_items and total (subtotal, tax and a PO's delivery date are
   reported when present but not required). ``type_factor`` is 0.25 for
   ``"unknown"`` (coverage then uses the receipt / PO set), so an unknown
   document never reaches 0.3. ``readability_factor`` is
   ``min(1, readability / 0.9)``, where readability is the share of
   alphanumeric tokens that look like words, numbers, dates, codes, e-mail or
   web addresses: OCR garbage drags it down, clean text sits near 1. Empty
   text is 0.0. ``matched`` lists every field found (plus ``doc_type`` when
   the type is known), ``missing`` the expected ones not found.

The extractor reports what the document *states*. It does not compute a
missing total, does not check that lines add up, and keeps an impossible date
(2026-02-30) as written: judging those is the validator's job downstream. An
unparseable date that is present still counts as found for that reason.

Limits
------
* Only EUR, USD and GBP are recognised; ``$`` is taken to be USD.
* Numeric dates are read day first (14/03/2026) unless that is impossible and
  month first is not (03/14/2026). Two-digit years are taken as 20xx.
* A single ``.`` is always a decimal point ("1.234" is 1.234); "1.234,50" and
  "1,234.50" are both understood.
* Item lines with more than three trailing numbers (discount or tax columns
  with amounts) are not recognised, nor are lines that show only a price.
* A party name is cut at its first comma ("Smith, Jones & Co" loses "Jones").
* When a document states the tax more than once (two VAT rates), the last one
  is reported; the validator will then flag the arithmetic for review.
* A line whose first cell starts with a totals word (Total, Tax, VAT...) is
  read as a totals line, never as an item, even if it is "Tax advisory".
* Type detection trusts headings and labels: a letter that contains a line
  starting "Invoice No: 123" is taken for an invoice.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from datetime import date
from typing import Any, Generic, Literal, TypeVar

from pydantic import BaseModel, Field

DocType = Literal["invoice", "receipt", "purchase_order", "unknown"]

FIELD_ORDER: tuple[str, ...] = (
    "number",
    "issue_date",
    "due_date",
    "party",
    "currency",
    "line_items",
    "subtotal",
    "tax",
    "total",
)

_WEIGHTS: dict[str, float] = {
    "number": 2.0,
    "issue_date": 1.5,
    "due_date": 1.0,
    "party": 2.0,
    "currency": 1.0,
    "line_items": 2.0,
    "subtotal": 1.0,
    "tax": 1.0,
    "total": 3.0,
}

_CORE_FIELDS: tuple[str, ...] = (
    "number",
    "issue_date",
    "party",
    "currency",
    "line_items",
    "total",
)

EXPECTED_FIELDS: dict[DocType, tuple[str, ...]] = {
    "invoice": FIELD_ORDER,
    "receipt": _CORE_FIELDS,
    "purchase_order": _CORE_FIELDS,
    "unknown": _CORE_FIELDS,
}

UNKNOWN_TYPE_FACTOR = 0.25
READABLE_THRESHOLD = 0.9


# Longer lines are refused, not read (see extract_document_fields).
MAX_LINE_CHARS = 2_000


class DocumentExtraction(BaseModel):
    """What the rules found in one document, and how sure they are.

    ``readability`` (0..1) is the share of recognisable tokens that scaled the
    confidence down; it is reported so a reviewer can tell "fields missing"
    apart from "text unreadable".
    """

    fields: dict[str, Any]
    confidence: float = Field(ge=0.0, le=1.0)
    matched: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    readability: float = Field(default=1.0, ge=0.0, le=1.0)
    method: str = "rules_coverage"
    refused: str | None = Field(
        default=None, description="Why the rules did not read the text at all, if they did not"
    )


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class _Cell:
    line: int
    col: int
    text: str


_CELL_SEPARATOR = re.compile(r"\s{2,}|\s*\|\s*")


def _split_cells(line: str, line_no: int) -> list[_Cell]:
    cells: list[_Cell] = []
    start = 0
    for separator in [*_CELL_SEPARATOR.finditer(line), None]:
        end = separator.start() if separator else len(line)
        segment = line[start:end]
        text = segment.strip()
        if text:
            cells.append(_Cell(line_no, start + len(segment) - len(segment.lstrip()), text))
        if separator:
            start = separator.end()
    return cells


# A text's lines, each split into its cells (what the label rules read).
Layout = list[list[_Cell]]


def split_layout(text: str) -> Layout:
    # Tabs are expanded so that column positions line up the way they print.
    lines = text.expandtabs(8).splitlines()
    return [_split_cells(line, index) for index, line in enumerate(lines)]


def label_pattern(pattern: str) -> re.Pattern[str]:
    # Labels must end at a word boundary so "Due" never matches "Duet".
    return re.compile(rf"(?:{pattern})(?![^\W_])", re.IGNORECASE)


# ------------------------------------------------------------------------- numbers

_CURRENCY_SYMBOLS: dict[str, str] = {"€": "EUR", "$": "USD", "£": "GBP", "US$": "USD"}
_CURRENCY_CODES: tuple[str, ...] = ("EUR", "USD", "GBP")

_MONEY = re.compile(
    r"(?<![\w.,/-])"
    r"(?:(?P<pre>US\$|[€$£]|EUR|USD|GBP)\s?)?"
    r"(?P<num>-?(?:\d{1,3}(?:[.,]\d{3})+|\d+)(?:[.,]\d{2})?)"
    r"(?:\s?(?P<post>EUR|USD|GBP|€))?"
    r"(?![\w%]|[.,/-]\d)"
)
_CENTS = re.compile(r"[.,]\d{2}$")
_PLAIN_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


def parse_amount(text: str) -> float | None:
    """Read one number as written on a document, or ``None`` if it is not one.

    Currency symbols and codes are ignored; parentheses mean a negative amount.
    With both separators present the last one is the decimal point
    ("1,234.50" and "1.234,50" are both 1234.5); a lone comma followed by three
    digits groups thousands ("2,500"), otherwise it is a decimal comma ("0,85").
    """
    number = amount_text(text)
    return None if number is None else float(number)


def amount_text(text: str) -> str | None:
    """The number ``parse_amount`` reads, as plain decimal text ("-1234.50"),
    for callers that need it exact (``Decimal``) rather than a float."""
    cleaned = text.strip()
    for marker in (*_CURRENCY_SYMBOLS, *_CURRENCY_CODES):
        cleaned = cleaned.replace(marker, "")
    cleaned = cleaned.replace(" ", "").replace("\u00a0", "")
    negative = cleaned.startswith("(") and cleaned.endswith(")")
    cleaned = cleaned.strip("()")
    if not _PLAIN_NUMBER.fullmatch(cleaned):
        return None
    number = _normalise_separators(cleaned)
    if negative:
        # "(-5)" negates twice, as float arithmetic did.
        return number[1:] if number.startswith("-") else f"-{number}"
    return number


def _normalise_separators(number: str) -> str:
    if "," in number and "." in number:
        decimal = "," if number.rfind(",") > number.rfind(".") else "."
        thousands = "." if decimal == "," else ","
        return number.replace(thousands, "").replace(decimal, ".")
    if "," in number:
        tail = number.rsplit(",", 1)[1]
        if number.count(",") == 1 and len(tail) != 3:
            return number.replace(",", ".")
        return number.replace(",", "")
    if number.count(".") > 1:
        return number.replace(".", "")
    return number


def money_matches(text: str) -> Iterator[re.Match[str]]:
    """Stretches of ``text`` that look like money: cents, or a currency
    marker. The number is the match's group ``num``."""
    for match in _MONEY.finditer(text):
        has_marker = bool(match.group("pre") or match.group("post"))
        if has_marker or _CENTS.search(match.group("num")):
            yield match


def _money_values(text: str) -> list[float]:
    """Amounts in ``text`` that look like money: cents, or a currency marker."""
    values: list[float] = []
    for match in money_matches(text):
        amount = parse_amount(match.group("num"))
        if amount is not None:
            values.append(amount)
    return values


# --------------------------------------------------------------------------- dates

_MONTH_NAMES = (
    "jan(?:uary)?|feb(?:ruary)?|mar(?:ch)?|apr(?:il)?|may|june?|july?|aug(?:ust)?"
    "|sep(?:t(?:ember)?)?|oct(?:ober)?|nov(?:ember)?|dec(?:ember)?"
)
_MONTHS = ("jan", "feb", "mar", "apr", "may", "jun", "jul", "aug", "sep", "oct", "nov", "dec")
_MONTH = rf"(?P<mon>{_MONTH_NAMES})(?![^\W\d_])\.?"
_DATE_PATTERNS: tuple[re.Pattern[str], ...] = (
    re.compile(r"(?<![\d.,/-])(?P<y>\d{4})-(?P<m>\d{1,2})-(?P<d>\d{1,2})(?!\d)"),
    re.compile(r"(?<![\d.,/-])(?P<a>\d{1,2})[./-](?P<b>\d{1,2})[./-](?P<y>\d{4}|\d{2})(?!\d)"),
    re.compile(
        rf"(?<![\w])(?P<d>\d{{1,2}})(?:st|nd|rd|th)?\.?[\s-]+{_MONTH},?[\s-]+(?P<y>\d{{4}})(?!\d)",
        re.IGNORECASE,
    ),
    re.compile(
        rf"(?<![\w]){_MONTH}\s+(?P<d>\d{{1,2}})(?:st|nd|rd|th)?,?\s+(?P<y>\d{{4}})(?!\d)",
        re.IGNORECASE,
    ),
)


def _find_date(text: str) -> re.Match[str] | None:
    """The earliest date-shaped stretch of ``text``, valid or not."""
    found = [match for pattern in _DATE_PATTERNS if (match := pattern.search(text))]
    return min(found, key=lambda match: match.start()) if found else None


def _month_number(name: str) -> int:
    # Every accepted spelling starts with the month's three-letter abbreviation.
    return _MONTHS.index(name[:3].lower()) + 1


def _ymd(match: re.Match[str]) -> tuple[int, int, int]:
    groups = match.groupdict()
    year = int(groups["y"])
    if year < 100:
        year += 2000
    if groups.get("mon"):
        return year, _month_number(groups["mon"]), int(groups["d"])
    if groups.get("a"):
        first, second = int(groups["a"]), int(groups["b"])
        # Day first is the European and ISO-adjacent reading; fall back to
        # month first only when day first is impossible and month first is not.
        if second > 12 >= first:
            return year, first, second
        return year, second, first
    return year, int(groups["m"]), int(groups["d"])


def normalise_date(text: str) -> str | None:
    """ISO ``YYYY-MM-DD`` for a valid date in ``text``, else the text as written.

    The first date-shaped stretch is used; an impossible one (30/02/2026) is
    returned verbatim so that a validator downstream can flag it. Text with no
    date shape at all is returned stripped (``None`` if empty).
    """
    match = _find_date(text)
    if match is None:
        return text.strip() or None
    try:
        return date(*_ymd(match)).isoformat()
    except ValueError:
        return match.group(0)


# ------------------------------------------------------------------- readability

# Curly quotes and the ellipsis are spelled as escapes to keep the source ASCII-clear.
_STRIP = "()[]{}\"'\u201c\u201d\u2018\u2019,;:!?*.\u2026"
_VOWELS = set("aeiouyàáâãäåæèéêëìíîïòóôõöøùúûüýœ")
_RECOGNISABLE: tuple[re.Pattern[str], ...] = (
    re.compile(r"[^\W\d_]+(?:['\u2019\-.&/][^\W\d_]+)*"),
    re.compile(r"[-+#]?(?:US\$|[€$£])?\d[\d.,:/\-x\u00d7]*(?:%|[a-z]{1,3})?[€$£]?"),
    re.compile(r"\d+[A-Z]{1,3}"),
    re.compile(r"#?[A-Z]{1,3}\d{1,2}"),
    re.compile(r"#?[A-Za-z]{1,6}\d{2,}(?:[A-Za-z]{1,2}\d+)?"),
    re.compile(r"#?(?:[A-Za-z]+|\d+)(?:[-/](?:[A-Za-z]+|\d+))+"),
    re.compile(r"[\w.+-]+@[\w-]+(?:\.[\w-]+)+"),
    re.compile(r"(?:https?://|www\.)[\w-]+(?:\.[\w-]+)+\S*"),
)


def _is_recognisable(token: str) -> bool:
    core = token.strip(_STRIP)
    if not any(pattern.fullmatch(core) for pattern in _RECOGNISABLE):
        return False
    # Long letter runs without a vowel are what OCR noise looks like.
    if core.isalpha() and len(core) > 4:
        return any(char in _VOWELS for char in core.lower())
    return True


def _alnum_tokens(text: str) -> list[str]:
    # Rules, dashes and table borders carry no text, so they neither help nor hurt.
    return [token for token in text.split() if any(char.isalnum() for char in token)]


def text_readability(text: str) -> float:
    """Share of alphanumeric tokens that look like language, numbers or codes."""
    tokens = _alnum_tokens(text)
    if not tokens:
        return 0.0
    return sum(1 for token in tokens if _is_recognisable(token)) / len(tokens)


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


def heading_type(cell: _Cell) -> tuple[DocType, str | None] | None:
    match = _HEADING.fullmatch(cell.text)
    if match is None:
        return None
    kind = re.sub(r"\s+", " ", match.group("kind").lower())
    return _KIND_TO_TYPE[kind], match.group("id")


def _detect_type(layout: list[list[_Cell]]) -> DocType:
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


def _value_after(
    layout: list[list[_Cell]], cell: _Cell, end: int, after: _Cell | None
) -> str | None:
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


def labelled_values(layout: list[list[_Cell]], pattern: re.Pattern[str]) -> list[str]:
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


def extract_number(layout: list[list[_Cell]], doc_type: DocType) -> str | None:
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


def labelled_date(layout: list[list[_Cell]], pattern: re.Pattern[str]) -> str | None:
    for value in labelled_values(layout, pattern):
        # A value without a single digit ("Due: on receipt") is not a date at
        # all, not even a malformed one worth surfacing.
        if any(char.isdigit() for char in value):
            normalised = normalise_date(value)
            if normalised:
                return normalised[:_RAW_DATE_MAX]
    return None


def first_unlabelled_date(layout: list[list[_Cell]]) -> str | None:
    # Receipts often print the date with no label; a due or delivery date must
    # not be mistaken for it, so lines carrying those labels are skipped.
    for row in layout:
        if any(DUE_DATE_LABEL.match(cell.text) for cell in row):
            continue
        for cell in row:
            match = _find_date(cell.text)
            if match:
                return normalise_date(match.group(0))
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


def _party_from_label(layout: list[list[_Cell]], pattern: re.Pattern[str]) -> str | None:
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
        and _find_date(text) is None
        and all(_is_recognisable(token) for token in _alnum_tokens(text))
    )


def _letterhead(layout: list[list[_Cell]]) -> str | None:
    rows = [row for row in layout if row][:_LETTERHEAD_LINES]
    for row in rows:
        # A line that carries an amount is a table row, never a letterhead.
        if _money_values(" ".join(cell.text for cell in row)):
            continue
        name = row[0].text.split(",", 1)[0].strip()
        if heading_type(row[0]) is None and _looks_like_name(name):
            return name
    return None


def extract_party(layout: list[list[_Cell]], doc_type: DocType) -> str | None:
    if doc_type == "purchase_order":
        # A PO's letterhead is the buyer's; only a labelled supplier is the party.
        return _party_from_label(layout, _SUPPLIER_LABEL)
    return _party_from_label(layout, _SELLER_LABEL) or _letterhead(layout)


# ----------------------------------------------------------------------- currency

_CURRENCY_LABEL = label_pattern(r"currency")
_CODE_WORD = re.compile(r"(?<![A-Za-z])(EUR|USD|GBP)(?![A-Za-z])")
_BRACKETED_SYMBOL = re.compile(r"\(\s*(US\$|[€$£])\s*\)")


def extract_currency(text: str, layout: list[list[_Cell]]) -> str | None:
    for value in labelled_values(layout, _CURRENCY_LABEL):
        code = _CODE_WORD.search(value.upper())
        if code:
            return code.group(1)
    counts = dict.fromkeys(_CURRENCY_CODES, 0)
    for match in _CODE_WORD.finditer(text):
        counts[match.group(1)] += 1
    # A symbol counts only next to an amount or as a column unit "(£)", so a
    # stray "€" inside OCR noise is not evidence.
    for match in _MONEY.finditer(text):
        for marker in (match.group("pre"), match.group("post")):
            if marker in _CURRENCY_SYMBOLS:
                counts[_CURRENCY_SYMBOLS[marker]] += 1
    for match in _BRACKETED_SYMBOL.finditer(text):
        counts[_CURRENCY_SYMBOLS[match.group(1)]] += 1
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
    row: list[_Cell], line: str, values: Callable[[str], list[Value]]
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


def _all_amounts(layout: list[list[_Cell]], lines: list[str]) -> list[LabelledAmount[float]]:
    amounts: list[LabelledAmount[float]] = []
    for row, line in zip(layout, lines, strict=True):
        if row and _parse_item(row) is None:
            amounts.extend(labelled_amounts(row, line, _money_values))
    return amounts


def pick_amount(amounts: list[LabelledAmount[Value]], field: str) -> Value | None:
    # Highest-priority label wins; among equals the last one, because the
    # figure that closes a totals block is the one that counts.
    candidates = [amount for amount in amounts if amount.field == field]
    if not candidates:
        return None
    return max(candidates, key=lambda amount: (amount.priority, amount.line)).value


# --------------------------------------------------------------------- line items


@dataclass(frozen=True)
class _Number:
    value: float
    money: bool


_CONNECTORS = frozenset({"x", "\u00d7", "@", "at", "/", "-", "\u2013"})
_UNITS = frozenset({"h", "hr", "hrs", "hour", "hours", "pc", "pcs", "ea", "each", "unit", "units"})
_CURRENCY_MARKERS = frozenset({*_CURRENCY_CODES, *_CURRENCY_SYMBOLS})
_PERCENT = re.compile(r"\d+(?:[.,]\d+)?%")
_LEADING_QTY = re.compile(r"(?P<qty>\d+(?:[.,]\d+)?)\s*[x\u00d7]\s+(?P<desc>.+)")
_TRAILING_QTY = re.compile(r"(?P<desc>.+?)\s+[x\u00d7]\s?(?P<qty>\d+(?:[.,]\d+)?)")


def _numeric_words(words: list[str]) -> list[_Number] | None:
    """Numbers in ``words`` if every word is numeric-ish (amount, %, unit...), else None."""
    numbers: list[_Number] = []
    marked = False
    for word in words:
        core = word
        for marker in ("US$", "€", "$", "£"):
            core = core.replace(marker, "")
        marked = marked or core != word
        if word.upper() in _CURRENCY_MARKERS:
            marked = True
        elif core and _PLAIN_NUMBER.fullmatch(core.strip("()")):
            value = parse_amount(core)
            if value is None:
                return None
            numbers.append(_Number(value, bool(_CENTS.search(core)) or core != word))
        elif not (_PERCENT.fullmatch(word) or word.lower() in _CONNECTORS | _UNITS):
            return None
    if marked:
        numbers = [_Number(number.value, True) for number in numbers]
    return numbers or None


def _peel_trailing_numbers(text: str) -> tuple[str, list[_Number]]:
    """Split a single-spaced "Milk 2 1.20 2.40" into its words and trailing numbers.

    The trailing numbers are the longest run of numeric-ish words at the end,
    found from the end in one pass: trying every start from the front copied
    the rest of the line each time, quadratic in a long single-line text."""
    words = text.split()
    start = len(words)
    while start > 0 and _is_numeric_word(words[start - 1]):
        start -= 1
    numbers = _numeric_words(words[start:]) if start < len(words) else None
    return (" ".join(words[:start]), numbers) if numbers else (text, [])


def _is_numeric_word(word: str) -> bool:
    """Whether ``word`` may stand among a row's numbers (see _numeric_words)."""
    return (
        word.upper() in _CURRENCY_MARKERS
        or bool(_PERCENT.fullmatch(word))
        or word.lower() in _CONNECTORS
        or word.lower() in _UNITS
        or _numeric_words([word]) is not None
    )


def _split_item_row(row: list[_Cell]) -> tuple[list[str], list[_Number]]:
    """Description cells and trailing numbers of a table row."""
    index = len(row)
    numbers: list[_Number] = []
    while index > 0:
        cell_numbers = _numeric_words(row[index - 1].text.split())
        if cell_numbers is None:
            break
        numbers = cell_numbers + numbers
        index -= 1
    head = [cell.text for cell in row[:index]]
    if len(numbers) < 2 and head:
        # Single-spaced lines ("2 x Cappuccino 3.80 7.60") keep their numbers
        # inside the description cell.
        description, peeled = _peel_trailing_numbers(head[-1])
        head = [*head[:-1], description] if description else head[:-1]
        numbers = peeled + numbers
    return head, numbers


def _quantity_from_text(head: list[str]) -> tuple[float, list[str]] | None:
    """Quantity written next to the description: a number column, "2 x", "x2"."""
    if head and (leading := _numeric_words(head[0].split())) and len(leading) == 1:
        return leading[0].value, head[1:]
    if not head:
        return None
    for pattern, position in ((_LEADING_QTY, 0), (_TRAILING_QTY, -1)):
        match = pattern.fullmatch(head[position])
        if match:
            quantity = parse_amount(match.group("qty"))
            if quantity is not None:
                rest = list(head)
                rest[position] = match.group("desc")
                return quantity, rest
    return None


def _parse_item(row: list[_Cell]) -> dict[str, Any] | None:
    head, numbers = _split_item_row(row)
    if len(numbers) == 3:
        quantity: float = numbers[0].value
        # Leading number columns (position, item number) are not description.
        while head and _numeric_words(head[0].split()):
            head = head[1:]
    elif len(numbers) == 2 and (found := _quantity_from_text(head)):
        quantity, head = found
    else:
        return None
    unit_price, amount = numbers[-2], numbers[-1]
    description = " ".join(head).strip(" .-\u2013:")
    letters = sum(1 for char in description if char.isalpha())
    if not (unit_price.money and amount.money) or letters < 2:
        return None
    if any(pattern.match(description) for _, _, pattern in AMOUNT_LABELS):
        return None
    return {
        "description": description,
        "quantity": quantity,
        "unit_price": unit_price.value,
        "amount": amount.value,
    }


def _extract_line_items(
    layout: list[list[_Cell]], amounts: list[LabelledAmount[float]]
) -> list[dict[str, Any]]:
    # Items live above the totals block; below it are payments, change, notes.
    totals_lines = [a.line for a in amounts if a.field in ("subtotal", "total")]
    end = min(totals_lines) if totals_lines else len(layout)
    items: list[dict[str, Any]] = []
    for row in layout[:end]:
        item = _parse_item(row) if row else None
        if item:
            items.append(item)
    return items


# -------------------------------------------------------------------- confidence


def _found(fields: dict[str, Any]) -> list[str]:
    return [name for name in FIELD_ORDER if fields.get(name) not in (None, [], "")]


def _score(
    doc_type: DocType, found: list[str], readability: float
) -> tuple[float, list[str], list[str]]:
    expected = EXPECTED_FIELDS[doc_type]
    total_weight = sum(_WEIGHTS[name] for name in expected)
    found_weight = sum(_WEIGHTS[name] for name in expected if name in found)
    coverage = found_weight / total_weight
    type_factor = UNKNOWN_TYPE_FACTOR if doc_type == "unknown" else 1.0
    readability_factor = min(1.0, readability / READABLE_THRESHOLD)
    confidence = round(coverage * type_factor * readability_factor, 4)
    matched = (["doc_type"] if doc_type != "unknown" else []) + found
    missing = (["doc_type"] if doc_type == "unknown" else []) + [
        name for name in expected if name not in found
    ]
    return confidence, matched, missing


def _empty_fields() -> dict[str, Any]:
    fields: dict[str, Any] = dict.fromkeys(FIELD_ORDER)
    fields["line_items"] = []
    return {"doc_type": "unknown", **fields}


# ------------------------------------------------------------------------ public


def extract_document_fields(text: str) -> DocumentExtraction:
    """Extract invoice / receipt / purchase-order fields from plain text.

    See the module docstring for the rules, the confidence formula and the
    limits. The result is a pure function of ``text``.
    """
    if not text.strip():
        _, _, missing = _score("unknown", [], 0.0)
        return DocumentExtraction(
            fields=_empty_fields(), confidence=0.0, missing=missing, readability=0.0
        )
    longest = max(len(line) for line in text.splitlines())
    if longest > MAX_LINE_CHARS:
        # No invoice, receipt or order is laid out so; and the rules' time
        # grows with the length of a line (a 1 MiB line took seconds).
        _, _, missing = _score("unknown", [], 0.0)
        return DocumentExtraction(
            fields=_empty_fields(),
            confidence=0.0,
            missing=missing,
            readability=0.0,
            refused=f"a line of {longest:,} characters: the rules read documents laid out in "
            f"lines of at most {MAX_LINE_CHARS:,}; a person has to read this one",
        )
    layout = split_layout(text)
    lines = text.expandtabs(8).splitlines()
    doc_type = _detect_type(layout)
    amounts = _all_amounts(layout, lines)
    fields: dict[str, Any] = {
        "doc_type": doc_type,
        "number": extract_number(layout, doc_type),
        "issue_date": labelled_date(layout, ISSUE_DATE_LABEL) or first_unlabelled_date(layout),
        "due_date": labelled_date(layout, DUE_DATE_LABEL),
        "party": extract_party(layout, doc_type),
        "currency": extract_currency(text, layout),
        "line_items": _extract_line_items(layout, amounts),
        "subtotal": pick_amount(amounts, "subtotal"),
        "tax": pick_amount(amounts, "tax"),
        "total": pick_amount(amounts, "total"),
    }
    readability = round(text_readability(text), 4)
    confidence, matched, missing = _score(doc_type, _found(fields), readability)
    return DocumentExtraction(
        fields=fields,
        confidence=confidence,
        matched=matched,
        missing=missing,
        readability=readability,
    )
