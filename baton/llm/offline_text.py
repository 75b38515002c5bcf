"""How the offline rules read a text: its layout, the numbers, dates and
money in it, and how readable it is.

The ground every rules task stands on (baton.llm.offline_fields reads the
labelled fields with it; offline_documents and offline_invoices assemble
their answers from both). Pure: no I/O, no clock, no randomness.

* Layout. Every line is split into *cells* at runs of two or more spaces,
  tabs or ``|``; labels are recognised only at the start of a cell
  (:func:`label_pattern`), which keeps "Due Date" from being read as "Date"
  and prose from counting as a label.
* Numbers. :func:`amount_text` reads a number as a document writes it
  ("1,234.50", "1.234,50", "(5)"); :func:`money_matches` finds the stretches
  that look like money: cents, or a currency marker (EUR, USD, GBP; ``$`` is
  USD).
* Dates. :func:`normalise_date` gives ISO ``YYYY-MM-DD`` for the first date
  in a text, day first unless only month first is possible; an impossible
  date is kept as written, for a validator to flag.
* Readability. :func:`text_readability` is the share of alphanumeric tokens
  that look like words, numbers, dates, codes, e-mail or web addresses: OCR
  garbage drags it down, clean text sits near 1.
"""

from __future__ import annotations

import re
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import date

# Longer lines are refused, not read: no invoice, receipt or order is laid
# out so, and the rules' time grows with the length of a line.
MAX_LINE_CHARS = 2_000
# The readability at and above which a text counts as fully readable.
READABLE_THRESHOLD = 0.9


# --------------------------------------------------------------------------- layout


@dataclass(frozen=True)
class Cell:
    line: int
    col: int
    text: str


_CELL_SEPARATOR = re.compile(r"\s{2,}|\s*\|\s*")


def _split_cells(line: str, line_no: int) -> list[Cell]:
    cells: list[Cell] = []
    start = 0
    for separator in [*_CELL_SEPARATOR.finditer(line), None]:
        end = separator.start() if separator else len(line)
        segment = line[start:end]
        text = segment.strip()
        if text:
            cells.append(Cell(line_no, start + len(segment) - len(segment.lstrip()), text))
        if separator:
            start = separator.end()
    return cells


# A text's lines, each split into its cells (what the label rules read).
Layout = list[list[Cell]]


def split_layout(text: str) -> Layout:
    # Tabs are expanded so that column positions line up the way they print.
    lines = text.expandtabs(8).splitlines()
    return [_split_cells(line, index) for index, line in enumerate(lines)]


def label_pattern(pattern: str) -> re.Pattern[str]:
    # Labels must end at a word boundary so "Due" never matches "Duet".
    return re.compile(rf"(?:{pattern})(?![^\W_])", re.IGNORECASE)


# ------------------------------------------------------------------------- numbers

CURRENCY_SYMBOLS: dict[str, str] = {"€": "EUR", "$": "USD", "£": "GBP", "US$": "USD"}
CURRENCY_CODES: tuple[str, ...] = ("EUR", "USD", "GBP")

MONEY = re.compile(
    r"(?<![\w.,/-])"
    r"(?:(?P<pre>US\$|[€$£]|EUR|USD|GBP)\s?)?"
    r"(?P<num>-?(?:\d{1,3}(?:[.,]\d{3})+|\d+)(?:[.,]\d{2})?)"
    r"(?:\s?(?P<post>EUR|USD|GBP|€))?"
    r"(?![\w%]|[.,/-]\d)"
)
CENTS = re.compile(r"[.,]\d{2}$")
PLAIN_NUMBER = re.compile(r"-?\d+(?:[.,]\d+)*")


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
    for marker in (*CURRENCY_SYMBOLS, *CURRENCY_CODES):
        cleaned = cleaned.replace(marker, "")
    cleaned = cleaned.replace(" ", "").replace("\u00a0", "")
    negative = cleaned.startswith("(") and cleaned.endswith(")")
    cleaned = cleaned.strip("()")
    if not PLAIN_NUMBER.fullmatch(cleaned):
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
    for match in MONEY.finditer(text):
        has_marker = bool(match.group("pre") or match.group("post"))
        if has_marker or CENTS.search(match.group("num")):
            yield match


def money_values(text: str) -> list[float]:
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


def find_date(text: str) -> re.Match[str] | None:
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
    match = find_date(text)
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


def is_recognisable(token: str) -> bool:
    core = token.strip(_STRIP)
    if not any(pattern.fullmatch(core) for pattern in _RECOGNISABLE):
        return False
    # Long letter runs without a vowel are what OCR noise looks like.
    if core.isalpha() and len(core) > 4:
        return any(char in _VOWELS for char in core.lower())
    return True


def alnum_tokens(text: str) -> list[str]:
    # Rules, dashes and table borders carry no text, so they neither help nor hurt.
    return [token for token in text.split() if any(char.isalnum() for char in token)]


def text_readability(text: str) -> float:
    """Share of alphanumeric tokens that look like language, numbers or codes."""
    tokens = alnum_tokens(text)
    if not tokens:
        return 0.0
    return sum(1 for token in tokens if is_recognisable(token)) / len(tokens)
