"""Rules-based extraction of accounts-payable invoices and credit notes.

The offline "model" of the task ``extract_invoice``: what Baton runs instead
of an LLM when no key is configured. Like baton.llm.offline_documents, it is
assembled from the layout, numbers and dates of baton.llm.offline_text and
the labelled fields of baton.llm.offline_fields (PO number included), and it is
pure (no I/O, no clock, no randomness), deterministic, and never guesses: a
field it cannot find is ``None`` and is listed in ``missing``. It reads the
text, it does not obey it: a sentence asking for payment to a new account is
not a rule, and the account it names is reported as the invoice's ``iban``
for the matcher to hold against the vendor master.

Fields (activities.payables_models.ExtractedInvoice)
----------------------------------------------------
* ``kind``: ``credit_note`` when a heading ("CREDIT NOTE", "CREDIT MEMO") or a
  label ("Credit Note No:") says so, else ``invoice`` when an INVOICE heading
  or an invoice number label does; else ``None``. A credit note names the
  invoice it credits, so its evidence wins over an invoice's.
* ``vendor_name``: a labelled seller ("From:", "Vendor:") or the letterhead;
  ``vendor_vat_id``: the first VAT / tax id ("VAT NL812345678B01"), without
  separators. Both are read outside the buyer's block ("Bill To:" and the
  lines under it up to a blank line), where the buyer's own VAT id stands.
* ``number``: the credit note number label on a credit note, the invoice
  number (label, or the heading's number) otherwise.
* ``issue_date``, ``due_date``, ``currency``: as for documents. A date that
  is present but impossible is ``None`` with a warning (the model's field is
  a date); currencies are EUR, USD and GBP.
* ``po_number``: the value of "PO Number", "P.O. No.", "Purchase Order #",
  "PO:", "Your PO ref"... A bare "PO" needs a colon, so "PO Box 12" is none.
* ``iban``: the account after the word IBAN, in print groups or in one
  piece, without spaces. Groups are taken while the check digits (ISO 13616,
  mod 97) need them, so a "BIC" after the number is not part of it; an
  account whose check digits fail is reported as printed, with a warning.
* ``lines``: rows above the totals block that end in quantity, unit price and
  amount (the last two shaped like money: cents or a currency marker). A
  minus or parentheses next to a number or its currency sign ("-€ 96.00")
  makes it negative. The description is the rest of the row as printed;
  ``item_code`` is its first word when that is shaped like a code (capitals
  and digits joined by dashes: "HP-400", "CONS-D", "FR-EU").
* ``subtotal``, ``tax``, ``total``: the totals labels of offline_fields,
  the last amount on a label's stretch of line; the highest-priority label
  wins ("Total Due" over "Total"), among equals the last.
* On a credit note every amount (lines, subtotal, tax, total) is negative
  however the document signs it: the matcher tells a credit by its sign.

Confidence (``method = "rules_coverage"``)::

    confidence = coverage * kind_factor * readability_factor

``coverage`` is the weighted share of the expected fields that were found:
total 3; vendor name, VAT id, number, PO number and lines 2; issue date 1.5;
due date, currency, subtotal and tax 1 (a credit note is not expected to
have a due date). ``iban`` is reported when present but not expected: many
invoices print none. ``kind_factor`` is 0.25 when the kind is unknown (the
text may be no invoice at all); ``readability_factor`` is
``min(1, readability / 0.9)``, as for documents, with readability as
offline_text measures it. Notes name what was missing.

Limits
------
* Lines with more than three trailing numbers keep the extra ones in their
  description; lines that show no quantity are not read as lines.
* The buyer's block is told by its label and ends at a blank line; a layout
  with the buyer and the vendor side by side on the same lines loses the
  vendor's part of them.
* VAT ids are EU-shaped (two letters, then digits and letters) or all
  digits, six to fifteen characters with at least five digits.
* Lines of more than MAX_LINE_CHARS characters are refused, as for
  documents, and so are texts of more than MAX_CELLS cells: the rules' time
  grows with both. No invoice comes near either; a refusal goes to a person.
"""

from __future__ import annotations

import re
import string
from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from datetime import date
from decimal import Decimal
from itertools import islice

from pydantic import BaseModel, Field

from activities.matching import masked_iban, normalise_iban
from activities.payables_models import DocumentKind, ExtractedInvoice, ExtractedLine
from baton.llm.offline_fields import (
    AMOUNT_LABELS,
    DUE_DATE_LABEL,
    ISSUE_DATE_LABEL,
    NUMBER_LABELS,
    NUMBER_QUALIFIER,
    UNKNOWN_TYPE_FACTOR,
    LabelledAmount,
    extract_currency,
    extract_number,
    extract_party,
    extract_po_number,
    first_unlabelled_date,
    heading_type,
    labelled_amounts,
    labelled_date,
    labelled_values,
    leading_identifier,
    pick_amount,
)
from baton.llm.offline_text import (
    MAX_LINE_CHARS,
    READABLE_THRESHOLD,
    Layout,
    amount_text,
    label_pattern,
    money_matches,
    split_layout,
    text_readability,
)

# Every rule reads every cell, so the cells bound the work, as MAX_LINE_CHARS
# bounds it on one line: a 50-page invoice of a four-column table has some
# 10,000; a text of 200 KB made of nothing else, 67,000.
MAX_CELLS = 10_000

FIELD_ORDER: tuple[str, ...] = (
    "kind",
    "vendor_name",
    "vendor_vat_id",
    "number",
    "issue_date",
    "due_date",
    "currency",
    "po_number",
    "iban",
    "lines",
    "subtotal",
    "tax",
    "total",
)

_WEIGHTS: dict[str, float] = {
    "vendor_name": 2.0,
    "vendor_vat_id": 2.0,
    "number": 2.0,
    "issue_date": 1.5,
    "due_date": 1.0,
    "currency": 1.0,
    "po_number": 2.0,
    "lines": 2.0,
    "subtotal": 1.0,
    "tax": 1.0,
    "total": 3.0,
}

EXPECTED_FIELDS: dict[DocumentKind, tuple[str, ...]] = {
    "invoice": tuple(_WEIGHTS),
    "credit_note": tuple(name for name in _WEIGHTS if name != "due_date"),
}


class InvoiceExtraction(BaseModel):
    """What the rules found in one invoice or credit note, and how sure they are."""

    invoice: ExtractedInvoice
    confidence: float = Field(ge=0.0, le=1.0)
    matched: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    warnings: list[str] = Field(
        default_factory=list,
        description="What was read but is doubtful: an impossible date, an account whose "
        "check digits fail, more than one account",
    )
    readability: float = Field(default=1.0, ge=0.0, le=1.0)
    method: str = "rules_coverage"
    refused: str | None = Field(
        default=None, description="Why the rules did not read the text at all, if they did not"
    )


# ------------------------------------------------------------------ kind, number

_CREDIT_HEADING = re.compile(
    r"credit\s+(?:note|memo)"
    r"(?:\s*(?:number|no\.?|#)?\s*[:#]?\s*(?P<id>(?=[\w\-/.]*\d)[A-Za-z0-9][\w\-/.]*))?",
    re.IGNORECASE,
)
_CREDIT_NUMBER_LABEL = label_pattern(rf"credit\s+(?:note|memo){NUMBER_QUALIFIER}")


def _kind(layout: Layout) -> DocumentKind | None:
    invoice = False
    for cell in (cell for row in layout for cell in row):
        if _CREDIT_HEADING.fullmatch(cell.text) or _CREDIT_NUMBER_LABEL.match(cell.text):
            return "credit_note"
        heading = heading_type(cell)
        invoice = (
            invoice
            or (heading is not None and heading[0] == "invoice")
            or bool(NUMBER_LABELS["invoice"].match(cell.text))
        )
    return "invoice" if invoice else None


def _number(layout: Layout, kind: DocumentKind | None) -> str | None:
    if kind != "credit_note":
        return extract_number(layout, "invoice")
    # On a credit note "Invoice No" is the credited invoice's, never its own.
    for value in labelled_values(layout, _CREDIT_NUMBER_LABEL):
        if found := leading_identifier(value):
            return found
    for cell in (cell for row in layout for cell in row):
        heading = _CREDIT_HEADING.fullmatch(cell.text)
        if heading and heading.group("id"):
            return heading.group("id").rstrip(".-/")
    return None


# ---------------------------------------------------------------------- vendor

# A colon or a cell of its own is required, as for the seller's labels.
_BUYER_LABEL = label_pattern(
    r"(?:(?:bill(?:ed)?|invoice|sold|ship(?:ped)?|deliver(?:ed|y)?)\s+to|customer|buyer|client)"
    r"(?:\s*:|$)"
)


def _seller_side(layout: Layout) -> Layout:
    """The layout without the buyer's block and the credit note heading, at
    the same line numbers (label values are looked up by line)."""
    seller: Layout = []
    in_buyer_block = False
    for row in layout:
        start = next((i for i, cell in enumerate(row) if _BUYER_LABEL.match(cell.text)), None)
        if start is not None:
            in_buyer_block = True
            row = row[:start]
        elif in_buyer_block:
            in_buyer_block = bool(row)
            row = []
        # The letterhead rule would take "CREDIT NOTE" for a business name.
        seller.append([cell for cell in row if not _CREDIT_HEADING.fullmatch(cell.text)])
    return seller


_VAT_LABEL = label_pattern(
    r"(?:vat|tax|gst|btw|tva|iva|mwst|ust|moms)"
    r"(?:[\s.-]*(?:reg(?:istration)?|id(?:entification)?|no|nr|number|#))*\.?"
)
_VAT_ID_WORDS = 6


def _vat_id(value: str) -> str | None:
    """A VAT id at the start of ``value``, its print groups joined."""
    plain = ""
    for word in value.split()[:_VAT_ID_WORDS]:
        part = word.rstrip(".,;").replace(".", "").replace("-", "")
        # A word without a digit after the id is prose or a name, not a group.
        if not (part.isascii() and part.isalnum()) or (plain and not any(map(str.isdigit, part))):
            break
        plain += part.upper()
    digits = sum(char.isdigit() for char in plain)
    shaped = plain[:2].isalpha() or plain[:1].isdigit()
    return plain if 6 <= len(plain) <= 15 and digits >= 5 and shaped else None


def _vendor_vat_id(seller: Layout) -> str | None:
    # "VAT 21%" in the totals block is a label with no id after it: skipped.
    for value in labelled_values(seller, _VAT_LABEL):
        if found := _vat_id(value):
            return found
    return None


# ------------------------------------------------------------------------ IBAN

_IBAN_WORD = re.compile(r"(?<![A-Za-z])IBAN(?![A-Za-z])", re.IGNORECASE)
_IBAN_START = re.compile(r"[A-Z]{2}\d{2}[A-Z0-9]*")
_IBAN_MAX = 34
_IBAN_MIN = 15
# Enough text after the word IBAN for the longest account in groups of four.
_IBAN_WINDOW = 60


# ISO 13616: letters count as 10 (A) to 35 (Z) in the check-digit number.
_IBAN_LETTERS = {ord(char): str(value) for value, char in enumerate(string.ascii_uppercase, 10)}
# Mentions of "IBAN" read: an invoice has one or two, and a text made of
# them must not cost a check-digit test each.
_IBAN_MENTIONS = 8


def _iban_check_digits_hold(iban: str) -> bool:
    rearranged = iban[4:] + iban[:4]
    return int(rearranged.translate(_IBAN_LETTERS)) % 97 == 1


def _iban_after(text: str) -> tuple[str, bool] | None:
    """The account at the start of ``text``, and whether its check digits hold."""
    groups: list[str] = []
    for word in text.lstrip(" :#.-").split():
        part = word.rstrip(".,;)")
        printable = part.isascii() and part.isalnum() and part == part.upper()
        if not printable or sum(map(len, groups)) + len(part) > _IBAN_MAX:
            break
        if not groups and not _IBAN_START.fullmatch(part):
            return None
        if groups and len(part) > 4:
            break  # print groups are four wide: a longer word follows the account
        groups.append(part)
        if part != word:
            break  # punctuation ends the number
    for end in range(len(groups), 0, -1):
        candidate = "".join(groups[:end])
        if len(candidate) >= _IBAN_MIN and _iban_check_digits_hold(candidate):
            return candidate, True
    printed = "".join(groups)
    return (printed, False) if len(printed) >= _IBAN_MIN else None


def _iban_mentions(layout: Layout) -> Iterator[str]:
    """The text after each word IBAN, as far as an account can reach."""
    for row in layout:
        text = " ".join(cell.text for cell in row)
        for match in _IBAN_WORD.finditer(text):
            yield text[match.end() : match.end() + _IBAN_WINDOW]


def _iban(layout: Layout, warnings: list[str]) -> str | None:
    found: list[str] = []
    for mention in islice(_iban_mentions(layout), _IBAN_MENTIONS):
        read = _iban_after(mention)
        if read is None or normalise_iban(read[0]) in found:
            continue
        found.append(normalise_iban(read[0]))
        if not read[1]:
            warnings.append(f"iban: {masked_iban(read[0])} fails its check digits")
    if len(found) > 1:
        accounts = ", ".join(masked_iban(iban) for iban in found)
        warnings.append(
            f"iban: the document names {len(found)} accounts ({accounts}); the first is reported"
        )
    return found[0] if found else None


# ----------------------------------------------------------------------- money

_SIGN_BEFORE = re.compile(r"[-\u2212(]\s?(?:US\$|[€$£]|EUR|USD|GBP)?\s?$")
_SIGN_REACH = 8


def _signed_money(text: str) -> list[Decimal]:
    """The money amounts in ``text``, negative where a minus or an opening
    parenthesis stands before the number or its currency sign ("-€ 96.00")."""
    values: list[Decimal] = []
    for match in money_matches(text):
        number = amount_text(match.group("num"))
        if number is None:
            continue
        value = Decimal(number)
        if _SIGN_BEFORE.search(text[max(0, match.start() - _SIGN_REACH) : match.start()]):
            value = -abs(value)
        values.append(value)
    return values


# ----------------------------------------------------------------------- lines

_NUMBER_WORD = re.compile(r"\(?[-\u2212]?(?:US\$|[€$£])?[-\u2212]?\d[\d.,]*[€$£]?\)?")
_MARKER_WORD = re.compile(r"[-\u2212]?(?:US\$|[€$£]|EUR|USD|GBP)|[-\u2212]")
_PERCENT_WORD = re.compile(r"\d+(?:[.,]\d+)?%")
_CENTS = re.compile(r"[.,]\d{2}\)?$")
_CODE = re.compile(r"[A-Z0-9]+(?:[-/.][A-Z0-9]+)+|[A-Z]{1,6}\d+[A-Z0-9]*")
_UNITS = frozenset({"h", "hr", "hrs", "hours", "day", "days", "pc", "pcs", "ea", "units"})


@dataclass
class _Number:
    index: int  # the first word that is part of it: its sign and currency sign too
    value: Decimal
    money: bool


def _trailing_numbers(words: list[str]) -> list[_Number]:
    """The last three numbers of a row, last first, with the signs and
    currency signs written beside them; fewer if a word that is none of
    those comes first. Units and percentages between them are passed over."""
    numbers: list[_Number] = []
    index = len(words)
    while index > 0 and len(numbers) < 3:
        index -= 1
        word = words[index]
        if _NUMBER_WORD.fullmatch(word):
            # parse_amount's markers would leave "US" of "US$" behind.
            number = amount_text(word.replace("\u2212", "-").replace("US$", ""))
            if number is None:
                break
            marked = any(char in word for char in "€$£")
            numbers.append(_Number(index, Decimal(number), marked or bool(_CENTS.search(word))))
        elif _MARKER_WORD.fullmatch(word) and numbers and numbers[-1].index == index + 1:
            # A sign or currency sign belongs to the number to its right.
            right = numbers[-1]
            right.index, right.money = index, right.money or word.strip("-\u2212") != ""
            if "-" in word or "\u2212" in word:
                right.value = -abs(right.value)
        elif not (
            _MARKER_WORD.fullmatch(word) or _PERCENT_WORD.fullmatch(word) or word.lower() in _UNITS
        ):
            break
    return numbers


def _parse_line(words: list[str]) -> ExtractedLine | None:
    numbers = _trailing_numbers(words)
    if len(numbers) < 3 or not (numbers[0].money and numbers[1].money):
        return None
    amount, unit_price, quantity = numbers
    head = words[: quantity.index]
    # Leading number columns (position, line number) are not description.
    while len(head) > 1 and head[0].isdigit():
        head = head[1:]
    description = " ".join(head).strip(" .-\u2013:")
    if sum(char.isalpha() for char in description) < 2:
        return None
    if any(pattern.match(description) for _, _, pattern in AMOUNT_LABELS):
        return None  # a totals line, as in offline_documents
    first = description.split()[0].strip(".,;:()[]")
    return ExtractedLine(
        description=description,
        item_code=first if _CODE.fullmatch(first) else None,
        quantity=quantity.value,
        unit_price=unit_price.value,
        amount=amount.value,
    )


def _lines_and_totals(
    layout: Layout, texts: list[str]
) -> tuple[list[ExtractedLine], list[LabelledAmount[Decimal]]]:
    lines: list[ExtractedLine] = []
    totals: list[LabelledAmount[Decimal]] = []
    below_totals = False
    for row, text in zip(layout, texts, strict=True):
        words = [word for cell in row for word in cell.text.split()]
        line = _parse_line(words) if words else None
        if line is not None:
            # Lines live above the totals block; below it are notes and payments.
            if not below_totals:
                lines.append(line)
        elif row:
            found = labelled_amounts(row, text, _signed_money)
            totals += found
            below_totals = below_totals or any(a.field in ("subtotal", "total") for a in found)
    return lines, totals


# ------------------------------------------------------------------- assembly


def _iso_date(text: str | None, field: str, warnings: list[str]) -> date | None:
    if text is None:
        return None
    if re.fullmatch(r"\d{4}-\d{2}-\d{2}", text):
        try:
            return date.fromisoformat(text)
        except ValueError:
            pass
    warnings.append(f"{field}: {text!r} is not a date")
    return None


def _credited(value: Decimal | None) -> Decimal | None:
    return None if value is None else -abs(value)


def _scored(
    invoice: ExtractedInvoice,
    readability: float,
    warnings: Sequence[str] = (),
    refused: str | None = None,
) -> InvoiceExtraction:
    """``invoice`` with what the rules found of it and how sure they are."""
    values = invoice.model_dump()
    found = [name for name in FIELD_ORDER if values[name] not in (None, [], "")]
    expected = EXPECTED_FIELDS[invoice.kind or "invoice"]
    coverage = sum(_WEIGHTS[name] for name in expected if name in found) / sum(
        _WEIGHTS[name] for name in expected
    )
    kind_factor = UNKNOWN_TYPE_FACTOR if invoice.kind is None else 1.0
    readability_factor = min(1.0, readability / READABLE_THRESHOLD)
    return InvoiceExtraction(
        invoice=invoice,
        confidence=round(coverage * kind_factor * readability_factor, 4),
        matched=found,
        missing=[name for name in ("kind", *expected) if name not in found],
        warnings=list(warnings),
        readability=readability,
        refused=refused,
    )


def _refusal(reason: str | None) -> InvoiceExtraction:
    # Nothing read, so nothing found: every expected field is missing, the confidence nil.
    return _scored(ExtractedInvoice(), 0.0, refused=reason)


def extract_invoice(text: str) -> InvoiceExtraction:
    """Extract an AP invoice or credit note from plain text.

    See the module docstring for the rules, the confidence and the limits.
    The result is a pure function of ``text``.
    """
    if not text.strip():
        return _refusal(None)
    written = text.splitlines()
    longest = max(len(line) for line in written)
    if longest > MAX_LINE_CHARS:
        return _refusal(
            f"a line of {longest:,} characters: the rules read invoices laid out in lines of "
            f"at most {MAX_LINE_CHARS:,}; a person has to read this one"
        )
    # A line that is not blank has a cell at least: counted before the
    # layout is made, the costliest step on a text of many short lines.
    cells = sum(1 for line in written if line.strip())
    layout = split_layout(text) if cells <= MAX_CELLS else []
    cells = max(cells, sum(map(len, layout)))
    if cells > MAX_CELLS:
        return _refusal(
            f"{cells:,} cells of text or more: the rules read invoices of at most "
            f"{MAX_CELLS:,} (some 50 pages of a table); a person has to read this one"
        )
    seller = _seller_side(layout)
    kind = _kind(layout)
    warnings: list[str] = []
    lines, totals = _lines_and_totals(layout, text.expandtabs(8).splitlines())
    subtotal, tax, total = (pick_amount(totals, field) for field in ("subtotal", "tax", "total"))
    if kind == "credit_note":
        lines = [line.model_copy(update={"amount": -abs(line.amount)}) for line in lines]
        subtotal, tax, total = _credited(subtotal), _credited(tax), _credited(total)
    issue = labelled_date(layout, ISSUE_DATE_LABEL) or first_unlabelled_date(layout)
    invoice = ExtractedInvoice(
        kind=kind,
        vendor_name=extract_party(seller, "invoice"),
        vendor_vat_id=_vendor_vat_id(seller),
        number=_number(layout, kind),
        issue_date=_iso_date(issue, "issue_date", warnings),
        due_date=_iso_date(labelled_date(layout, DUE_DATE_LABEL), "due_date", warnings),
        currency=extract_currency(text, layout),
        po_number=extract_po_number(layout),
        iban=_iban(seller, warnings),
        lines=lines,
        subtotal=subtotal,
        tax=tax,
        total=total,
    )
    return _scored(invoice, round(text_readability(text), 4), warnings)
