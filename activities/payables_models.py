"""What accounts payable works with: vendors, purchase orders, goods
receipts, invoices and the findings about them.

Pure models, no I/O: the AP activities, the matching rules and workflow code
share them (a workflow imports these, never ``systems/``). Amounts are
Decimals, never floats: a tolerance of 2% on 1,240.00 must not depend on
binary rounding.
"""

from __future__ import annotations

from datetime import date, datetime
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

Kind = Literal["goods", "services"]


class Vendor(BaseModel):
    """A vendor as the vendor master holds it: the only source of the bank
    account a payment goes to."""

    vendor_id: str
    name: str
    vat_id: str
    iban: str
    payment_terms_days: int = Field(ge=0)


class PoLine(BaseModel):
    line_no: int = Field(ge=1)
    item: str = Field(description="The item code; an invoice line names it to be matched")
    description: str = ""
    kind: Kind = Field(description="goods match three ways (receipts), services two")
    quantity: Decimal = Field(gt=0)
    unit_price: Decimal = Field(ge=0)
    quantity_invoiced: Decimal = Field(
        default=Decimal(0), description="Already invoiced on earlier invoices, net of credits"
    )


class PurchaseOrder(BaseModel):
    po_number: str
    vendor_id: str
    cost_centre: str
    currency: str
    lines: list[PoLine] = Field(min_length=1)


class GoodsReceipt(BaseModel):
    receipt_number: str
    po_number: str
    line_no: int = Field(ge=1)
    quantity: Decimal
    received_at: date


class InvoiceLine(BaseModel):
    """One line as the invoice states it. On a credit note the amount is
    negative; the quantity may be written either way."""

    description: str
    quantity: Decimal
    unit_price: Decimal
    amount: Decimal
    po_line: int | None = Field(
        default=None, description="The PO line the invoice names, when it names one"
    )


DocumentKind = Literal["invoice", "credit_note"]


class ExtractedLine(InvoiceLine):
    """A line as the extraction read it. The description stays as printed,
    item code included: the matcher finds the PO line by the code among its
    words."""

    item_code: str | None = Field(
        default=None, description="The item code the description starts with, if it has one"
    )


class ExtractedInvoice(BaseModel):
    """What the AP extraction reads off an invoice or credit note, before
    the vendor is looked up. ``None`` (or no lines) for what the document
    does not state: nothing is guessed. On a credit note the amounts are
    negative, however the document signs them, because the matcher and the
    ledger tell a credit by its sign; quantities stay as written."""

    kind: DocumentKind | None = None
    vendor_name: str | None = None
    vendor_vat_id: str | None = Field(
        default=None, description="The vendor's VAT id, without spaces, dots or dashes"
    )
    number: str | None = Field(default=None, description="The invoice or credit note number")
    issue_date: date | None = None
    due_date: date | None = None
    currency: str | None = Field(default=None, pattern=r"^[A-Z]{3}$", description="ISO 4217")
    po_number: str | None = None
    iban: str | None = Field(
        default=None,
        description="The account printed on the document, without spaces: compared with the "
        "vendor master, never paid to",
    )
    lines: list[ExtractedLine] = Field(default_factory=list)
    subtotal: Decimal | None = None
    tax: Decimal | None = None
    total: Decimal | None = Field(default=None, description="Gross; negative on a credit note")


PayableKind = Literal["invoice", "credit_note", "other"]


class Classification(BaseModel):
    """What an incoming AP document is, and why the classifier thinks so:
    anything but an invoice or a credit note is for a person to route."""

    kind: PayableKind
    reasons: list[str] = Field(default_factory=list, description="What the decision rests on")


class PayableInvoice(BaseModel):
    """An invoice or credit note from a known vendor, as extracted and
    looked up: what duplicate check, matching and recording take."""

    vendor_id: str
    number: str
    issue_date: date
    currency: str
    total: Decimal = Field(description="Gross; negative on a credit note")
    po_number: str | None = None
    lines: list[InvoiceLine] = Field(default_factory=list)
    iban: str | None = Field(
        default=None,
        description="The account printed on the invoice: compared with the vendor master, "
        "never paid to",
    )

    @property
    def is_credit_note(self) -> bool:
        return self.total < 0


class PriorInvoice(BaseModel):
    """An invoice already in the ledger, as the duplicate check sees it."""

    invoice_id: int
    vendor_id: str
    number: str
    issue_date: date
    total: Decimal


class Finding(BaseModel):
    code: str
    message: str
    line: int | None = Field(default=None, description="The invoice line (1-based), if any")


class PreparedInvoice(BaseModel):
    """The extraction made payable: the vendor master's id on it, nothing
    guessed. ``invoice`` is None when it cannot be (an unknown vendor, a
    missing number, date, currency or total): ``findings`` say why."""

    invoice: PayableInvoice | None = None
    findings: list[Finding] = Field(default_factory=list)


LineStatus = Literal["matched", "awaiting_receipt", "exception"]


class LineMatch(BaseModel):
    """One invoice line against its PO line and receipts, with the
    quantities the decision was made on, for the reviewer."""

    line: int
    po_line: int | None = None
    kind: Kind | None = None
    status: LineStatus
    quantity: Decimal = Field(description="This line's quantity, negative when credited")
    unit_price: Decimal
    ordered: Decimal | None = None
    po_unit_price: Decimal | None = None
    invoiced_before: Decimal | None = Field(
        default=None, description="On the PO line before this line, earlier lines included"
    )
    received: Decimal | None = Field(default=None, description="Goods only")
    findings: list[Finding] = Field(default_factory=list)


MatchOutcome = Literal["matched", "awaiting_receipt", "exception"]


class MatchReport(BaseModel):
    """``awaiting_receipt``: nothing is wrong but goods not received yet;
    ``exception``: a breach a person must release (it blocks payment)."""

    outcome: MatchOutcome
    lines: list[LineMatch] = Field(default_factory=list)
    findings: list[Finding] = Field(
        default_factory=list, description="Every finding: the invoice's and each line's"
    )


class DuplicateReport(BaseModel):
    duplicate: bool
    earlier: list[int] = Field(default_factory=list, description="Ledger ids of the earlier ones")
    findings: list[Finding] = Field(default_factory=list)


class ApprovalRoute(BaseModel):
    """Who must approve: one approver per role, distinct people; two or more
    roles is four-eyes."""

    roles: list[str]
    four_eyes: bool
    rule: int = Field(description="The matrix rule that applied (1-based), for the audit trail")


class RecordedInvoice(BaseModel):
    """An invoice as the ledger holds it."""

    invoice_id: int
    vendor_id: str
    number: str
    issue_date: date
    currency: str
    total: Decimal
    po_number: str | None = None


class Payment(BaseModel):
    payment_id: int
    invoice_id: int
    vendor_id: str
    iban: str = Field(description="The vendor master's account when it was paid")
    amount: Decimal
    currency: str
    released_by: str
    paid_at: datetime


class ReconciliationReport(BaseModel):
    invoice_id: int
    reconciled: bool
    paid: Decimal = Field(description="What the payments ledger holds for the invoice")
    findings: list[Finding] = Field(default_factory=list)
