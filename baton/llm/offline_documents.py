"""Rules-based field extraction for invoices, receipts and purchase orders.

This is the "offline model": what Baton runs instead of an LLM when no API key
is configured. It is a small, deterministic rules engine (regular expressions
over the text's layout), it is pure (no I/O, no clock, no randomness, so a
Temporal activity that calls it is reproducible), and it never guesses: a field
it cannot find is ``None`` and is listed in ``missing``.

The rules live in three modules: baton.llm.offline_text reads the text (layout,
numbers, dates, readability), baton.llm.offline_fields the labelled fields
every rules task shares (type, number, dates, party, currency, totals, PO
number), and this one assembles a document's answer (its line items and
confidence). baton.llm.offline_invoices assembles an AP invoice from the same
two.

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
   The PO number is the value of a "PO Number", "P.O. No.", "Purchase Order #",
   "PO:" or "Your PO ref" label (a purchase order's own number is stated so);
   it is reported when present and is not expected of any type.
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
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel, Field

from baton.llm.offline_fields import (
    AMOUNT_LABELS,
    DUE_DATE_LABEL,
    ISSUE_DATE_LABEL,
    UNKNOWN_TYPE_FACTOR,
    DocType,
    LabelledAmount,
    detect_type,
    extract_currency,
    extract_number,
    extract_party,
    extract_po_number,
    first_unlabelled_date,
    labelled_amounts,
    labelled_date,
    pick_amount,
)
from baton.llm.offline_text import (
    CENTS,
    CURRENCY_CODES,
    CURRENCY_SYMBOLS,
    MAX_LINE_CHARS,
    PLAIN_NUMBER,
    READABLE_THRESHOLD,
    Cell,
    Layout,
    money_values,
    parse_amount,
    split_layout,
    text_readability,
)

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
    "po_number",
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
    # Every field but the PO number, which is reported when present.
    "invoice": tuple(_WEIGHTS),
    "receipt": _CORE_FIELDS,
    "purchase_order": _CORE_FIELDS,
    "unknown": _CORE_FIELDS,
}


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


def _all_amounts(layout: Layout, lines: list[str]) -> list[LabelledAmount[float]]:
    amounts: list[LabelledAmount[float]] = []
    for row, line in zip(layout, lines, strict=True):
        if row and _parse_item(row) is None:
            amounts.extend(labelled_amounts(row, line, money_values))
    return amounts


# --------------------------------------------------------------------- line items


@dataclass(frozen=True)
class _Number:
    value: float
    money: bool


_CONNECTORS = frozenset({"x", "\u00d7", "@", "at", "/", "-", "\u2013"})
_UNITS = frozenset({"h", "hr", "hrs", "hour", "hours", "pc", "pcs", "ea", "each", "unit", "units"})
_CURRENCY_MARKERS = frozenset({*CURRENCY_CODES, *CURRENCY_SYMBOLS})
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
        elif core and PLAIN_NUMBER.fullmatch(core.strip("()")):
            value = parse_amount(core)
            if value is None:
                return None
            numbers.append(_Number(value, bool(CENTS.search(core)) or core != word))
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


def _split_item_row(row: list[Cell]) -> tuple[list[str], list[_Number]]:
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


def _parse_item(row: list[Cell]) -> dict[str, Any] | None:
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
    layout: Layout, amounts: list[LabelledAmount[float]]
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
    doc_type = detect_type(layout)
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
        "po_number": extract_po_number(layout),
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
