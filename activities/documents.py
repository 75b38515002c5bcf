"""Documents: reading them, the fields extracted from them, checking those
fields (against the register's earlier entries too: duplicates), and
entering them in the system of record.

Workflow modules import this one for its models and activity declarations,
so the system of record is imported inside the activities that use it: a
workflow never loads systems/, and the strict sandbox (make test) refuses
one that does."""

from __future__ import annotations

from datetime import date
from decimal import Decimal
from typing import Any, Literal

from pydantic import BaseModel, Field, SerializerFunctionWrapHandler, model_serializer
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.matching import invoice_number_key
from baton.compensation import Undo
from baton.document_store import (
    DocumentNotInStore,
    DocumentRef,
    DocumentTampered,
    DocumentTooLarge,
    decode_text,
    document_store,
)
from baton.gates import GateDecision
from baton.idempotency import idempotency_key, run_key_prefix
from baton.injection import suspected_instructions

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
    """The fields the extraction step must return.

    ``po_number`` came later than the others, and is left out of the
    document's JSON when it is None: a document that states no purchase
    order is recorded, shown to a reviewer and hashed into its ERP entry
    exactly as before the field existed. Otherwise runs recorded before it
    would no longer replay (the gate showed, and the reviewer signed, the
    document without it) and a retried entry of such a run would no longer
    match its first write (IdempotencyConflict)."""

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
    po_number: str | None = Field(
        default=None,
        description="The purchase order the document states it refers to (on a purchase "
        "order, its own number); None when it states none",
    )

    @model_serializer(mode="wrap")
    def _without_absent_po_number(self, handler: SerializerFunctionWrapHandler) -> Any:
        data = handler(self)
        if isinstance(data, dict) and data.get("po_number") is None:
            data.pop("po_number", None)
        return data


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


class EarlierEntriesQuery(BaseModel):
    document: ExtractedDocument


class EarlierEntry(BaseModel):
    """An entry in the ERP register that a new document may duplicate."""

    entry_id: int
    number: str | None = None
    issue_date: str | None = None
    currency: str | None = None
    total: Decimal | None = None
    po_number: str | None = None
    entered_at: str
    same_number: bool = Field(
        description="Its number is the document's, as numbers are compared: letters and "
        "digits, without case or leading zeros (activities.matching.invoice_number_key)"
    )


class EarlierEntries(BaseModel):
    """The register's entries of the document's party and type that carry
    its number, or its total in its currency, whatever their date: which of
    them are suspected duplicates is for :func:`duplicate_findings` to say,
    with the window the run was configured with."""

    entries: list[EarlierEntry] = Field(default_factory=list)


class EnterRequest(BaseModel):
    document: ExtractedDocument
    review: GateDecision | None = None


class EntryReceipt(BaseModel):
    entry_id: int
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already written it")


class VoidReceipt(BaseModel):
    """The entry voided; both None when the visit had entered nothing."""

    entry_id: int | None
    voided_at: str | None


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
def find_earlier_entries(query: EarlierEntriesQuery) -> EarlierEntries:
    """The entries in force (not voided) of the document's party and type
    with its number, or with its total in its currency. This run's own
    entries are left out: a resumed or re-read run must not find itself. A
    document with no party, or of no known type, has nothing to compare."""
    from systems.erp import DocumentRegister

    document = query.document
    if not document.party or document.doc_type == "unknown":
        return EarlierEntries()
    own = run_key_prefix()
    number = invoice_number_key(document.number) if document.number else ""
    currency = (document.currency or "").upper()
    entries: list[EarlierEntry] = []
    for row in DocumentRegister().for_party(document.party, document.doc_type):
        if row["idempotency_key"].startswith(own):
            continue
        total = _decimal(row["total"])
        same_number = bool(number) and invoice_number_key(row["number"] or "") == number
        same_amount = (
            document.total is not None
            and total == document.total
            and bool(currency)
            and (row["currency"] or "").upper() == currency
        )
        if same_number or same_amount:
            entries.append(
                EarlierEntry(
                    entry_id=row["entry_id"],
                    number=row["number"],
                    issue_date=row["issue_date"],
                    currency=row["currency"],
                    total=total,
                    po_number=row["po_number"],
                    entered_at=row["entered_at"],
                    same_number=same_number,
                )
            )
    return EarlierEntries(entries=entries)


def _decimal(text: str | None) -> Decimal | None:
    try:
        return None if text is None else Decimal(text)
    except ArithmeticError:
        return None


def duplicate_findings(
    document: ExtractedDocument, earlier: EarlierEntries, window_days: int
) -> list[Finding]:
    """What a reviewer must know of ``earlier``: each entry with the
    document's number (``duplicate_number``) and, under another number, each
    with its total and currency dated within ``window_days`` of it
    (``duplicate_amount_and_date``: the same document renumbered?). Findings
    for a person, never a rejection. Pure, for workflow code: the window is
    the run's configuration."""
    kind = document.doc_type.replace("_", " ")
    issued = _iso_date(document.issue_date)
    findings: list[Finding] = []
    for entry in earlier.entries:
        amount = " ".join(filter(None, (_money(entry.total), entry.currency))) or "no total"
        if entry.same_number:
            findings.append(
                Finding(
                    code="duplicate_number",
                    message=f"{kind} {document.number} of {document.party} is already in the "
                    f"ERP as entry #{entry.entry_id} ({entry.number}, dated "
                    f"{entry.issue_date or 'undated'}, {amount}, entered {entry.entered_at})",
                )
            )
            continue
        dated = _iso_date(entry.issue_date)
        if issued is None or dated is None or abs((dated - issued).days) > window_days:
            continue
        findings.append(
            Finding(
                code="duplicate_amount_and_date",
                message=f"entry #{entry.entry_id} ({entry.number or 'no number'}) of "
                f"{document.party} has the same total {amount} and is dated {entry.issue_date}, "
                f"within {window_days} days of {document.issue_date}: the same {kind} "
                "entered again under another number?",
            )
        )
    return findings


def _iso_date(text: str | None) -> date | None:
    try:
        return None if text is None else date.fromisoformat(text)
    except ValueError:
        return None


def _money(value: Decimal | None) -> str | None:
    return None if value is None else f"{value:,.2f}"


@activity.defn
def enter_document(request: EnterRequest) -> EntryReceipt:
    """Write the document to the register, once per run and node visit: a
    retry finds the earlier entry, another document under the same key fails
    (IdempotencyConflict) instead of being dropped."""
    from systems.erp import DocumentRegister

    key = idempotency_key()
    entry = DocumentRegister().enter(
        idempotency_key=key, document=request.document.model_dump(mode="json")
    )
    return EntryReceipt(entry_id=entry.entry_id, idempotency_key=key, created=entry.created)


@activity.defn
def void_document(undo: Undo) -> VoidReceipt:
    """Undo an entry when its run is stopped, cancelled or fails: the register
    voids it (an entry is never deleted) and keeps the first void if asked
    again. The entry is found by the visit's key, so an entry whose step
    never returned (stopped while the register wrote) is voided too, and a
    visit that wrote nothing has nothing to undo."""
    from systems.erp import DocumentRegister

    register = DocumentRegister()
    entries = [
        e for e in register.entries(undo.idempotency_key) if undo.writes(e["idempotency_key"])
    ]
    if not entries:
        return VoidReceipt(entry_id=None, voided_at=None)
    reason = f"run {activity.info().workflow_id} was undone at '{undo.node}'"
    voided = [(int(e["entry_id"]), register.void(int(e["entry_id"]), reason)) for e in entries]
    return VoidReceipt(entry_id=voided[0][0], voided_at=voided[0][1])
