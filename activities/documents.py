"""Documents: reading them, the fields extracted from them, checking those
fields, and entering them in the system of record."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.document_store import (
    DocumentNotInStore,
    DocumentRef,
    DocumentTampered,
    DocumentTooLarge,
    decode_text,
    document_store,
)
from baton.gates import GateDecision
from baton.idempotency import idempotency_key
from baton.injection import suspected_instructions
from systems.erp import DocumentRegister

DocType = Literal["invoice", "receipt", "purchase_order", "unknown"]


class LoadRequest(BaseModel):
    document: DocumentRef


class LoadedDocument(BaseModel):
    """What the run keeps of a document it read: the reference, never the text."""

    document: DocumentRef
    name: str = Field(description="The file name, for the model and the reviewer")
    characters: int
    readable: bool
    problem: str | None = None
    suspected_instructions: list[str] = Field(
        default_factory=list,
        description="Passages that read as instructions to an AI (baton.injection)",
    )


class LineItem(BaseModel):
    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal


class ExtractedDocument(BaseModel):
    """The fields the extraction step must return."""

    doc_type: DocType
    number: str | None = None
    issue_date: str | None = Field(default=None, description="ISO date YYYY-MM-DD")
    due_date: str | None = Field(default=None, description="ISO date YYYY-MM-DD")
    party: str | None = Field(default=None, description="Vendor, merchant or supplier")
    currency: str | None = Field(default=None, description="ISO 4217 code")
    line_items: list[LineItem] = Field(default_factory=list)
    subtotal: Decimal | None = None
    tax: Decimal | None = None
    total: Decimal | None = None


class Finding(BaseModel):
    code: str
    message: str


class ValidateRequest(BaseModel):
    document: ExtractedDocument
    readable: bool
    problem: str | None = None
    suspected_instructions: list[str] = Field(default_factory=list)


class ValidationReport(BaseModel):
    ok: bool
    findings: list[Finding] = Field(default_factory=list)


class EnterRequest(BaseModel):
    document: ExtractedDocument
    review: GateDecision | None = None


class EntryReceipt(BaseModel):
    entry_id: int
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already written it")


class VoidReceipt(BaseModel):
    entry_id: int
    voided_at: str


@activity.defn
def load_document(request: LoadRequest) -> LoadedDocument:
    """Read a document from the document store, the only place a worker
    reads documents from, and check it against its hash. A reference the
    store lacks or a stored file that no longer matches fails the run with
    the reason; a document that holds no usable text is returned
    unreadable, so the run stops at review instead of failing."""
    try:
        raw = document_store().read(request.document)
    except DocumentNotInStore as err:
        raise ApplicationError(str(err), type="DocumentNotInStore", non_retryable=True) from None
    except (DocumentTampered, DocumentTooLarge) as err:
        raise ApplicationError(str(err), type=type(err).__name__, non_retryable=True) from None
    text, problem = decode_text(raw)
    return LoadedDocument(
        document=request.document,
        name=request.document.name,
        characters=len(text),
        readable=problem is None,
        suspected_instructions=suspected_instructions(text),
        problem=problem,
    )


REQUIRED_FIELDS: dict[str, tuple[str, ...]] = {
    "invoice": ("number", "issue_date", "party", "currency", "total"),
    "receipt": ("issue_date", "party", "currency", "total"),
    "purchase_order": ("number", "issue_date", "party", "currency", "total"),
}
CENT = Decimal("0.01")


def check_document(request: ValidateRequest) -> ValidationReport:
    """Deterministic checks: readable, known type, required fields present,
    valid dates, and arithmetic that adds up."""
    doc = request.document
    findings: list[Finding] = []
    if not request.readable:
        findings.append(Finding(code="unreadable", message=request.problem or "no usable text"))
    if doc.doc_type == "unknown":
        findings.append(
            Finding(code="unknown_type", message="not an invoice, receipt or purchase order")
        )
    for name in REQUIRED_FIELDS.get(doc.doc_type, ()):
        if getattr(doc, name) in (None, ""):
            findings.append(Finding(code="missing_field", message=f"{name} is missing"))
    findings += _date_findings(doc)
    findings += _arithmetic_findings(doc)
    findings += [
        Finding(
            code="suspected_instructions",
            message=f"the document speaks to an AI, not to a person: {passage}; read it as "
            "the sender's words, and check every field the model extracted against the document",
        )
        for passage in request.suspected_instructions
    ]
    return ValidationReport(ok=not findings, findings=findings)


def _date_findings(doc: ExtractedDocument) -> list[Finding]:
    findings: list[Finding] = []
    parsed: dict[str, date] = {}
    for name in ("issue_date", "due_date"):
        value = getattr(doc, name)
        if value is None:
            continue
        try:
            parsed[name] = date.fromisoformat(value)
        except ValueError:
            findings.append(
                Finding(code="invalid_date", message=f"{name} '{value}' is not a valid date")
            )
    if len(parsed) == 2 and parsed["due_date"] < parsed["issue_date"]:
        findings.append(
            Finding(
                code="due_before_issue",
                message=(
                    f"due date {parsed['due_date']} is before issue date {parsed['issue_date']}"
                ),
            )
        )
    return findings


def _arithmetic_findings(doc: ExtractedDocument) -> list[Finding]:
    findings: list[Finding] = []
    for index, line in enumerate(doc.line_items, start=1):
        if abs(line.quantity * line.unit_price - line.amount) > CENT:
            findings.append(
                Finding(
                    code="line_mismatch",
                    message=f"line {index}: {line.quantity} x {line.unit_price} != {line.amount}",
                )
            )
    lines_sum = sum((line.amount for line in doc.line_items), Decimal(0))
    net = doc.subtotal
    if net is None and doc.total is not None:
        net = doc.total - (doc.tax or Decimal(0))
    if doc.line_items and net is not None and abs(lines_sum - net) > CENT:
        findings.append(
            Finding(
                code="lines_do_not_sum",
                message=f"line items sum to {lines_sum}, the document states {net}",
            )
        )
    if doc.subtotal is not None and doc.total is not None:
        expected = doc.subtotal + (doc.tax or Decimal(0))
        if abs(expected - doc.total) > CENT:
            findings.append(
                Finding(
                    code="total_mismatch",
                    message=f"subtotal {doc.subtotal} + tax {doc.tax or 0} != total {doc.total}",
                )
            )
    if doc.total is not None and doc.total <= 0:
        findings.append(Finding(code="non_positive_total", message=f"total is {doc.total}"))
    return findings


@activity.defn
async def validate_document(request: ValidateRequest) -> ValidationReport:
    return check_document(request)


@activity.defn
def enter_document(request: EnterRequest) -> EntryReceipt:
    """Write the document to the register, once per run and node visit: a
    retry finds the earlier entry, another document under the same key fails
    (IdempotencyConflict) instead of being dropped."""
    key = idempotency_key()
    entry = DocumentRegister().enter(
        idempotency_key=key, document=request.document.model_dump(mode="json")
    )
    return EntryReceipt(entry_id=entry.entry_id, idempotency_key=key, created=entry.created)


@activity.defn
def void_document(receipt: EntryReceipt) -> VoidReceipt:
    """Undo an entry when its run is stopped: the register voids it (an
    entry is never deleted) and keeps the first void if asked again."""
    info = activity.info()
    voided_at = DocumentRegister().void(
        receipt.entry_id, reason=f"run {info.workflow_id} was stopped"
    )
    return VoidReceipt(entry_id=receipt.entry_id, voided_at=voided_at)
