"""The offline "model" of the task ``classify_payable``: is an incoming AP
document an invoice, a credit note, or something else (a statement, a
reminder, an order confirmation) for a person to route?

It reads the document's title: a short line near the top that starts with
what the document is ("INVOICE", "Credit Note"). A title it knows decides;
no title is "other" at a low confidence, so the run's exception review sees
it; two titles that disagree lower the confidence.
"""

from __future__ import annotations

import re

from pydantic import BaseModel, Field

from activities.payables_models import Classification, PayableKind

# Where a document's title stands: its letterhead and heading, before the lines.
_TITLE_LINES = 15
# A title is short; "Invoice No: ... Invoice Date: ..." is a field line.
_TITLE_LENGTH = 40
_TITLES: tuple[tuple[PayableKind, re.Pattern[str]], ...] = (
    ("credit_note", re.compile(r"(credit\s*note|credit\s*memo|gutschrift|avoir)\b", re.I)),
    ("invoice", re.compile(r"(tax\s+invoice|invoice|rechnung|facture|faktura)\b", re.I)),
    (
        "other",
        re.compile(
            r"(statement of account|payment reminder|order confirmation|quotation|"
            r"purchase order)\b",
            re.I,
        ),
    ),
)


class PayableClassification(BaseModel):
    """What the rules decided, in the shape every rules task answers in."""

    classification: Classification
    confidence: float = Field(ge=0.0, le=1.0)
    matched: list[str] = Field(default_factory=list)
    missing: list[str] = Field(default_factory=list)
    method: str = "rules_title"
    refused: str | None = None


def classify_payable(text: str) -> PayableClassification:
    head = [line.strip() for line in text.splitlines() if line.strip()][:_TITLE_LINES]
    found: list[tuple[PayableKind, str]] = []
    for line in head:
        if len(line) > _TITLE_LENGTH:
            continue
        for kind, pattern in _TITLES:
            if pattern.match(line) is not None:
                found.append((kind, line))
                break
    kinds = list(dict.fromkeys(kind for kind, _ in found))
    if not kinds:
        return PayableClassification(
            classification=Classification(
                kind="other", reasons=["no title naming an invoice or credit note"]
            ),
            confidence=0.3,
            missing=["title"],
        )
    kind, line = found[0]
    reasons = [f"titled '{line[:80]}'"]
    confidence = 0.95
    if len(kinds) > 1:
        reasons.append(f"also mentions: {', '.join(k.replace('_', ' ') for k in kinds[1:])}")
        confidence = 0.85
    return PayableClassification(
        classification=Classification(kind=kind, reasons=reasons),
        confidence=confidence,
        matched=["title"],
    )
