"""Documents: reading them, the fields extracted from them, checking those
fields, and entering them in the system of record."""

from __future__ import annotations

import hashlib
import os
import stat
from datetime import date
from decimal import Decimal
from pathlib import Path
from typing import Literal

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from baton.gates import GateDecision
from baton.injection import suspected_instructions
from systems.erp import DocumentRegister

DEFAULT_MAX_DOCUMENT_BYTES = 1024 * 1024
INTAKE_ROOTS_ENV = "BATON_INTAKE_ROOTS"
DocType = Literal["invoice", "receipt", "purchase_order", "unknown"]


class LoadRequest(BaseModel):
    path: str


class LoadedDocument(BaseModel):
    path: str
    name: str
    size_bytes: int
    sha256: str
    text: str
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


def max_document_bytes() -> int:
    return int(os.environ.get("BATON_MAX_DOCUMENT_BYTES", DEFAULT_MAX_DOCUMENT_BYTES))


def intake_roots() -> list[Path]:
    """The folders the worker reads documents from, symlinks resolved:
    BATON_INTAKE_ROOTS (separated by os.pathsep), else ./samples/documents
    and <data dir>/intake."""
    explicit = os.environ.get(INTAKE_ROOTS_ENV)
    if explicit:
        roots = [Path(p) for p in explicit.split(os.pathsep) if p]
    else:
        data_dir = Path(os.environ.get("BATON_DATA_DIR", ".baton"))
        roots = [Path.cwd() / "samples" / "documents", data_dir / "intake"]
    return [Path(os.path.realpath(root)) for root in roots]


@activity.defn
def load_document(request: LoadRequest) -> LoadedDocument:
    """Read a text document from an intake folder. A path outside them (by
    `..`, an absolute path or a symlink) is refused before anything about
    it is looked at. A file that cannot be read at all fails the run with
    the reason; one that reads but holds no usable text is returned
    unreadable, so the run stops at review instead of failing."""
    path = Path(request.path)
    real = Path(os.path.realpath(path))
    roots = intake_roots()
    if not any(real.is_relative_to(root) for root in roots):
        raise ApplicationError(
            f"{path} is not in an intake folder ({', '.join(map(str, roots))}): the worker "
            f"reads documents only from there. Put the document in one, or add its folder "
            f"to {INTAKE_ROOTS_ENV} on the worker",
            type="DocumentOutsideIntake",
            non_retryable=True,
        )
    raw = _read_regular_file(path, real)
    text, problem = _decode(raw)
    return LoadedDocument(
        path=str(path),
        name=path.name,
        size_bytes=len(raw),
        sha256=hashlib.sha256(raw).hexdigest(),
        text=text,
        readable=problem is None,
        suspected_instructions=suspected_instructions(text),
        problem=problem,
    )


def _read_regular_file(path: Path, real: Path) -> bytes:
    """The bytes of the regular file at ``real`` (``path`` resolved), read
    through one descriptor: no symlink is followed (a link swapped in after
    the check fails), and a FIFO or device neither blocks nor is read."""
    try:
        fd = os.open(real, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
    except FileNotFoundError:
        raise ApplicationError(
            f"no document at {path}: check the path (the worker reads it from its own disk)",
            type="DocumentNotFound",
            non_retryable=True,
        ) from None
    except OSError as err:
        raise ApplicationError(
            f"cannot read {path}: {err.strerror}; give the worker a readable file",
            type="DocumentUnreadable",
            non_retryable=True,
        ) from None
    with os.fdopen(fd, "rb") as file:
        info = os.fstat(file.fileno())
        if not stat.S_ISREG(info.st_mode):
            raise ApplicationError(
                f"cannot read {path}: it is not a regular file; give the worker a readable file",
                type="DocumentUnreadable",
                non_retryable=True,
            )
        limit = max_document_bytes()
        # Read one byte past the limit: a file that grew since fstat is caught too.
        raw = file.read(limit + 1) if info.st_size <= limit else b""
        size = max(info.st_size, len(raw))
        if size > limit:
            raise ApplicationError(
                f"{path} is {size / 2**20:.1f} MiB; documents may be at most "
                f"{limit / 2**20:.1f} MiB. Split the document or raise "
                "BATON_MAX_DOCUMENT_BYTES on the worker",
                type="DocumentTooLarge",
                non_retryable=True,
            )
        return raw


def _decode(raw: bytes) -> tuple[str, str | None]:
    if not raw.strip():
        return "", "the file is empty"
    if b"\x00" in raw:
        return "", "the file is binary, not text"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return "", f"the file is not UTF-8 text ({err.reason} at byte {err.start})"


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
    """Write the document to the register, once per run and node visit."""
    info = activity.info()
    key = f"{info.workflow_id}/{info.activity_id}"
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
