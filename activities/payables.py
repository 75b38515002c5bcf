"""Accounts payable activities: look up the vendor and purchase order, make
the extraction a payable invoice, check for duplicates, match against the
order and its goods receipts, record the invoice, pay it exactly once and
reconcile the payment.

Lookups return ``None`` for what is not there (an unknown vendor or PO is a
business exception for a person to review, not an error); writes are keyed
by baton.idempotency, so a retried or resumed step finds its earlier write.
The rules themselves are pure (activities.matching, activities.payables_policy).
The systems are imported inside the activities that use them, as in
activities.documents: the workflow imports this module, never systems/.
"""

from __future__ import annotations

from pydantic import BaseModel, Field
from temporalio import activity
from temporalio.exceptions import ApplicationError

from activities.matching import find_duplicates, invoice_number_key, match_invoice, reconcile
from activities.payables_models import (
    DuplicateReport,
    ExtractedInvoice,
    Finding,
    GoodsReceipt,
    InvoiceLine,
    MatchReport,
    PayableInvoice,
    PayableKind,
    Payment,
    PreparedInvoice,
    PriorInvoice,
    PurchaseOrder,
    ReconciliationReport,
    RecordedInvoice,
    Vendor,
)
from activities.payables_policy import Tolerances
from baton.idempotency import idempotency_key, run_key_prefix


class VendorQuery(BaseModel):
    vat_id: str | None = None
    name: str | None = Field(default=None, description="Used when the VAT id finds nobody")


class VendorLookup(BaseModel):
    vendor: Vendor | None = None


class PoQuery(BaseModel):
    po_number: str | None = None


class PoLookup(BaseModel):
    purchase_order: PurchaseOrder | None = None


class PrepareRequest(BaseModel):
    extracted: ExtractedInvoice
    kind: PayableKind = Field(description="What the classifier took the document for")
    vendor: Vendor | None = None
    readable: bool = True
    problem: str | None = None
    suspected_instructions: list[str] = Field(default_factory=list)


class DuplicateQuery(BaseModel):
    invoice: PayableInvoice
    window_days: int = Field(ge=0)


class MatchRequest(BaseModel):
    invoice: PayableInvoice
    vendor: Vendor
    purchase_order: PurchaseOrder | None = None
    tolerances: Tolerances


class RecordRequest(BaseModel):
    invoice: PayableInvoice
    match: MatchReport = Field(description="Its lines say which PO line each quantity goes to")


class InvoiceRecorded(BaseModel):
    invoice_id: int
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already recorded it")


class PaymentRequest(BaseModel):
    invoice_id: int
    released_by: str = Field(description="The person who released the payment")


class PaymentReceipt(BaseModel):
    payment: Payment
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already paid")


class ReconcileRequest(BaseModel):
    invoice_id: int


@activity.defn
def look_up_vendor(query: VendorQuery) -> VendorLookup:
    from systems.purchasing import VendorMaster

    found = VendorMaster().find(vat_id=query.vat_id, name=query.name)
    return VendorLookup(vendor=None if found is None else Vendor.model_validate(found))


@activity.defn
def look_up_purchase_order(query: PoQuery) -> PoLookup:
    from systems.purchasing import PurchaseOrders

    found = PurchaseOrders().get(query.po_number) if query.po_number else None
    return PoLookup(purchase_order=None if found is None else PurchaseOrder.model_validate(found))


@activity.defn
def prepare_invoice(request: PrepareRequest) -> PreparedInvoice:
    """The extraction as a payable invoice of a known vendor, or the reasons
    it cannot be one; findings a person must see either way. Pure: a local
    activity."""
    extracted = request.extracted
    findings = _document_findings(request)
    if request.vendor is None:
        named = extracted.vendor_vat_id or extracted.vendor_name or "no vendor"
        findings.append(
            Finding(
                code="unknown_vendor",
                message=f"the vendor master has no vendor for {named}: vendors are onboarded "
                "(and their bank account verified) outside this process",
            )
        )
    missing = [
        name
        for name in ("number", "issue_date", "currency", "total")
        if getattr(extracted, name) is None
    ]
    if missing:
        findings.append(
            Finding(
                code="missing_fields",
                message=f"the document does not state its {', '.join(missing)}",
            )
        )
    if request.vendor is None or missing:
        return PreparedInvoice(findings=findings)
    assert extracted.number and extracted.issue_date and extracted.currency
    assert extracted.total is not None
    invoice = PayableInvoice(
        vendor_id=request.vendor.vendor_id,
        number=extracted.number,
        issue_date=extracted.issue_date,
        currency=extracted.currency,
        total=extracted.total,
        po_number=extracted.po_number,
        lines=[InvoiceLine.model_validate(line.model_dump()) for line in extracted.lines],
        iban=extracted.iban,
    )
    return PreparedInvoice(invoice=invoice, findings=findings)


def _document_findings(request: PrepareRequest) -> list[Finding]:
    findings: list[Finding] = []
    if not request.readable:
        findings.append(
            Finding(code="unreadable", message=request.problem or "the document is unreadable")
        )
    if request.suspected_instructions:
        quoted = "; ".join(f"'{p}'" for p in request.suspected_instructions[:3])
        findings.append(
            Finding(
                code="suspected_instructions",
                message=f"the document addresses instructions to an AI: {quoted}",
            )
        )
    extracted_kind = request.extracted.kind
    if request.kind == "other":
        findings.append(
            Finding(
                code="not_payable",
                message="classified as neither an invoice nor a credit note",
            )
        )
    elif extracted_kind is not None and extracted_kind != request.kind:
        findings.append(
            Finding(
                code="kind_disagrees",
                message=f"classified as {request.kind.replace('_', ' ')} but read as "
                f"{extracted_kind.replace('_', ' ')}",
            )
        )
    return findings


@activity.defn
def check_duplicates(query: DuplicateQuery) -> DuplicateReport:
    """The vendor's invoices in the ledger, this run's own record left out
    (a resumed run must not find itself), through activities.matching."""
    from systems.ledger import InvoiceLedger

    own = run_key_prefix()
    earlier = [
        PriorInvoice.model_validate(row)
        for row in InvoiceLedger().for_vendor(query.invoice.vendor_id)
        if not row["idempotency_key"].startswith(own)
    ]
    return find_duplicates(query.invoice, earlier, query.window_days)


@activity.defn
def match_lines(request: MatchRequest) -> MatchReport:
    """Match against the order and the goods received on it so far, read
    now: after a receipt the run waited for arrives, the match runs again
    and reads it."""
    from systems.purchasing import GoodsReceipts

    order = request.purchase_order
    rows = GoodsReceipts().for_order(order.po_number) if order is not None else []
    return match_invoice(
        request.invoice,
        request.vendor,
        order,
        [GoodsReceipt.model_validate(row) for row in rows],
        request.tolerances,
    )


@activity.defn
def record_invoice(request: RecordRequest) -> InvoiceRecorded:
    """Record the invoice once per run and node visit, and what it bills of
    each PO line, so the next invoice is matched net of it."""
    from systems.ledger import InvoiceLedger

    key = idempotency_key()
    written = InvoiceLedger().record(
        idempotency_key=key,
        invoice=request.invoice.model_dump(mode="json"),
        number_key=invoice_number_key(request.invoice.number),
        allocations=[
            {
                "line_no": line.po_line,
                "quantity": str(line.quantity),
                "invoiced_before": None
                if line.invoiced_before is None
                else str(line.invoiced_before),
            }
            for line in request.match.lines
            if line.po_line is not None
        ],
    )
    return InvoiceRecorded(invoice_id=written.row_id, idempotency_key=key, created=written.created)


@activity.defn
def pay_invoice(request: PaymentRequest) -> PaymentReceipt:
    """Pay once per run and node visit: a retry after a crash finds the
    payment and returns it. The account is the vendor master's (Payments.pay
    takes none from the caller)."""
    from systems.ledger import Payments

    key = idempotency_key()
    payments = Payments()
    written = payments.pay(
        idempotency_key=key, invoice_id=request.invoice_id, released_by=request.released_by
    )
    [row] = [
        p for p in payments.for_invoice(request.invoice_id) if p["payment_id"] == written.row_id
    ]
    return PaymentReceipt(
        payment=Payment.model_validate(row), idempotency_key=key, created=written.created
    )


@activity.defn
def reconcile_invoice(request: ReconcileRequest) -> ReconciliationReport:
    from systems.ledger import InvoiceLedger, Payments
    from systems.purchasing import VendorMaster

    invoice = InvoiceLedger().get(request.invoice_id)
    if invoice is None:
        raise ApplicationError(
            f"the ledger has no invoice #{request.invoice_id} to reconcile",
            type="UnknownInvoice",
            non_retryable=True,
        )
    vendor = VendorMaster().get(invoice["vendor_id"])
    if vendor is None:
        raise ApplicationError(
            f"vendor {invoice['vendor_id']} of invoice #{request.invoice_id} is not in the "
            "vendor master",
            type="UnknownVendor",
            non_retryable=True,
        )
    return reconcile(
        RecordedInvoice.model_validate(invoice),
        [Payment.model_validate(p) for p in Payments().for_invoice(request.invoice_id)],
        Vendor.model_validate(vendor),
    )
