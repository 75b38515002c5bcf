"""Accounts payable checks: duplicates, the per-line match against the
purchase order and goods receipts, and reconciliation of a payment.

Pure and deterministic (no I/O, no clock): the AP activities call these on
what they looked up, and workflow or test code may call them directly.

Matching, per invoice line:
- the PO line is the one the invoice names (``po_line``) or whose item code
  appears as a word of the line's description;
- price: the unit price may exceed the PO's by ``price_pct`` percent and the
  line's total excess may be at most ``amount_abs``; a lower price is fine;
- quantity, net of what was invoiced on the PO line before (earlier
  invoices, and earlier lines of this invoice): at most what is still open on
  the PO plus ``quantity_pct`` percent;
- goods only (three-way): at most what was received and not yet invoiced,
  plus ``quantity_pct``; no receipt at all is ``awaiting_receipt`` (one may
  still arrive), a receipt that covers less is ``quantity_not_received``;
- services (two-way): no receipt is expected;
- credit lines (negative amount) may credit at most what was invoiced.
"""

from __future__ import annotations

import re
from collections import defaultdict
from collections.abc import Iterable, Sequence
from decimal import Decimal

from activities.payables_models import (
    DuplicateReport,
    Finding,
    GoodsReceipt,
    InvoiceLine,
    LineMatch,
    LineStatus,
    MatchOutcome,
    MatchReport,
    PayableInvoice,
    Payment,
    PoLine,
    PriorInvoice,
    PurchaseOrder,
    ReconciliationReport,
    RecordedInvoice,
    Vendor,
)
from activities.payables_policy import Tolerances

HUNDRED = Decimal(100)
# Codes that mean "not yet", not "wrong": the run waits for the receipt.
WAITING = frozenset({"receipt_missing"})


# -- duplicates ------------------------------------------------------------------


def invoice_number_key(number: str) -> str:
    """The number as duplicates compare it: letters and digits only, upper
    case, leading zeros of each group dropped, so "INV-0042", "inv 42" and
    "INV/42" are one number."""
    groups = re.findall(r"[A-Za-z0-9]+", number.upper())
    return "".join(g.lstrip("0") or "0" if g.isdigit() else g for g in groups)


def find_duplicates(
    invoice: PayableInvoice, earlier: Iterable[PriorInvoice], window_days: int
) -> DuplicateReport:
    """Earlier invoices of the same vendor with the same number, or with the
    same total dated within ``window_days`` of this one."""
    findings: list[Finding] = []
    ids: list[int] = []
    number = invoice_number_key(invoice.number)
    for prior in earlier:
        if prior.vendor_id != invoice.vendor_id:
            continue
        if invoice_number_key(prior.number) == number:
            findings.append(
                Finding(
                    code="duplicate_number",
                    message=f"invoice {invoice.number} of {invoice.vendor_id} is already in the "
                    f"ledger as #{prior.invoice_id} ({prior.number}, {prior.issue_date}, "
                    f"{prior.total})",
                )
            )
        elif (
            prior.total == invoice.total
            and abs((prior.issue_date - invoice.issue_date).days) <= window_days
        ):
            findings.append(
                Finding(
                    code="duplicate_amount_and_date",
                    message=f"#{prior.invoice_id} ({prior.number}) of {invoice.vendor_id} has "
                    f"the same total {prior.total} and is dated {prior.issue_date}, within "
                    f"{window_days} days of {invoice.issue_date}: the same invoice renumbered?",
                )
            )
        else:
            continue
        ids.append(prior.invoice_id)
    return DuplicateReport(duplicate=bool(ids), earlier=ids, findings=findings)


# -- matching --------------------------------------------------------------------


def normalise_iban(iban: str) -> str:
    return re.sub(r"\s+", "", iban).upper()


def masked_iban(iban: str) -> str:
    """Country, check digits and the last four: enough to tell accounts
    apart in a finding without writing the account into every record."""
    plain = normalise_iban(iban)
    return f"{plain[:4]} ... {plain[-4:]}" if len(plain) > 8 else "****"


def match_invoice(
    invoice: PayableInvoice,
    vendor: Vendor,
    purchase_order: PurchaseOrder | None,
    receipts: Sequence[GoodsReceipt],
    tolerances: Tolerances,
) -> MatchReport:
    """Match ``invoice`` line by line (see the module's description) and
    check it against ``vendor`` and ``purchase_order``."""
    findings = _invoice_findings(invoice, vendor, purchase_order)
    if purchase_order is None:
        lines = [_unmatched(index, line, []) for index, line in enumerate(invoice.lines, start=1)]
        return _report(lines, findings)
    received: dict[int, Decimal] = defaultdict(Decimal)
    for receipt in receipts:
        if receipt.po_number == purchase_order.po_number:
            received[receipt.line_no] += receipt.quantity
    invoiced = {line.line_no: line.quantity_invoiced for line in purchase_order.lines}
    lines = []
    for index, line in enumerate(invoice.lines, start=1):
        po_line = _po_line_for(line, purchase_order)
        if po_line is None:
            lines.append(
                _unmatched(
                    index,
                    line,
                    [
                        Finding(
                            code="not_on_purchase_order",
                            message=f"'{line.description}' names no line of "
                            f"{purchase_order.po_number}",
                            line=index,
                        )
                    ],
                )
            )
            continue
        match = _match_line(index, line, po_line, invoiced[po_line.line_no], received, tolerances)
        invoiced[po_line.line_no] += match.quantity
        lines.append(match)
    return _report(lines, findings)


def _invoice_findings(
    invoice: PayableInvoice, vendor: Vendor, purchase_order: PurchaseOrder | None
) -> list[Finding]:
    findings: list[Finding] = []
    if invoice.iban and normalise_iban(invoice.iban) != normalise_iban(vendor.iban):
        findings.append(
            Finding(
                code="bank_account_differs",
                message=f"the invoice asks for payment to {masked_iban(invoice.iban)}; the "
                f"vendor master holds {masked_iban(vendor.iban)}. Payment goes to the vendor "
                "master's account only: confirm any change with the vendor through a contact "
                "on file, never one printed on the invoice",
            )
        )
    if purchase_order is None:
        findings.append(
            Finding(
                code="no_purchase_order",
                message=f"no purchase order {invoice.po_number}"
                if invoice.po_number
                else "the invoice names no purchase order",
            )
        )
        return findings
    if purchase_order.vendor_id != invoice.vendor_id:
        findings.append(
            Finding(
                code="vendor_mismatch",
                message=f"{purchase_order.po_number} was ordered from "
                f"{purchase_order.vendor_id}, the invoice is from {invoice.vendor_id}",
            )
        )
    if purchase_order.currency != invoice.currency:
        findings.append(
            Finding(
                code="currency_mismatch",
                message=f"{purchase_order.po_number} is in {purchase_order.currency}, "
                f"the invoice in {invoice.currency}",
            )
        )
    return findings


def _po_line_for(line: InvoiceLine, purchase_order: PurchaseOrder) -> PoLine | None:
    if line.po_line is not None:
        return next((p for p in purchase_order.lines if p.line_no == line.po_line), None)
    words = {w.strip(".,;:()[]").upper() for w in line.description.split()}
    return next((p for p in purchase_order.lines if p.item.upper() in words), None)


def _signed_quantity(line: InvoiceLine) -> Decimal:
    """Negative on a credit line, however the document signs its quantity."""
    return -abs(line.quantity) if line.amount < 0 else abs(line.quantity)


def _allowed(base: Decimal, pct: Decimal) -> Decimal:
    return base * (1 + pct / HUNDRED)


def _match_line(
    index: int,
    line: InvoiceLine,
    po_line: PoLine,
    invoiced_before: Decimal,
    received: dict[int, Decimal],
    tolerances: Tolerances,
) -> LineMatch:
    quantity = _signed_quantity(line)
    findings = _price_findings(index, line, po_line, quantity, tolerances)
    got = received.get(po_line.line_no, Decimal(0))
    if quantity < 0:
        if -quantity > invoiced_before:
            findings.append(
                Finding(
                    code="credit_exceeds_invoiced",
                    message=f"credits {-quantity} of PO line {po_line.line_no}, of which only "
                    f"{invoiced_before} were invoiced",
                    line=index,
                )
            )
    else:
        open_on_po = po_line.quantity - invoiced_before
        if quantity > _allowed(open_on_po, tolerances.quantity_pct):
            findings.append(
                Finding(
                    code="quantity_over_po",
                    message=f"bills {quantity} of PO line {po_line.line_no}: ordered "
                    f"{po_line.quantity}, invoiced before {invoiced_before}, open {open_on_po}",
                    line=index,
                )
            )
        if po_line.kind == "goods":
            findings += _receipt_findings(
                index, po_line, quantity, invoiced_before, got, tolerances
            )
    return LineMatch(
        line=index,
        po_line=po_line.line_no,
        kind=po_line.kind,
        status=_status(findings),
        quantity=quantity,
        unit_price=abs(line.unit_price),
        ordered=po_line.quantity,
        po_unit_price=po_line.unit_price,
        invoiced_before=invoiced_before,
        received=got if po_line.kind == "goods" else None,
        findings=findings,
    )


def _price_findings(
    index: int, line: InvoiceLine, po_line: PoLine, quantity: Decimal, tolerances: Tolerances
) -> list[Finding]:
    excess = abs(line.unit_price) - po_line.unit_price
    if excess <= 0:
        return []
    line_excess = excess * abs(quantity)
    over_pct = excess / po_line.unit_price * HUNDRED if po_line.unit_price else None
    if (
        over_pct is not None
        and over_pct <= tolerances.price_pct
        and line_excess <= tolerances.amount_abs
    ):
        return []
    share = f"{over_pct:.2f}%" if over_pct is not None else "a free item"
    return [
        Finding(
            code="price_over_tolerance",
            message=f"unit price {abs(line.unit_price)} is {share} above the PO's "
            f"{po_line.unit_price} ({line_excess} on the line); tolerance "
            f"{tolerances.price_pct}% and {tolerances.amount_abs} per line",
            line=index,
        )
    ]


def _receipt_findings(
    index: int,
    po_line: PoLine,
    quantity: Decimal,
    invoiced_before: Decimal,
    received: Decimal,
    tolerances: Tolerances,
) -> list[Finding]:
    if received <= 0:
        return [
            Finding(
                code="receipt_missing",
                message=f"no goods received yet on PO line {po_line.line_no}",
                line=index,
            )
        ]
    uninvoiced = received - invoiced_before
    if quantity > _allowed(uninvoiced, tolerances.quantity_pct):
        return [
            Finding(
                code="quantity_not_received",
                message=f"bills {quantity} of PO line {po_line.line_no}: received {received}, "
                f"invoiced before {invoiced_before}, so {uninvoiced} received and not yet billed",
                line=index,
            )
        ]
    return []


def _unmatched(index: int, line: InvoiceLine, findings: list[Finding]) -> LineMatch:
    return LineMatch(
        line=index,
        status="exception",
        quantity=_signed_quantity(line),
        unit_price=abs(line.unit_price),
        findings=findings,
    )


def _status(findings: Sequence[Finding]) -> LineStatus:
    if not findings:
        return "matched"
    return "awaiting_receipt" if all(f.code in WAITING for f in findings) else "exception"


def _report(lines: list[LineMatch], invoice_findings: list[Finding]) -> MatchReport:
    """A breach anywhere makes the invoice an exception at once (waiting for
    a receipt would only delay the review it needs anyway); else it waits if
    a line waits."""
    findings = invoice_findings + [f for line in lines for f in line.findings]
    outcome: MatchOutcome
    if invoice_findings or any(line.status == "exception" for line in lines):
        outcome = "exception"
    elif any(line.status == "awaiting_receipt" for line in lines):
        outcome = "awaiting_receipt"
    elif not lines:
        outcome = "exception"
        findings.append(Finding(code="no_lines", message="the invoice has no lines to match"))
    else:
        outcome = "matched"
    return MatchReport(outcome=outcome, lines=lines, findings=findings)


# -- reconciliation --------------------------------------------------------------


def reconcile(
    invoice: RecordedInvoice, payments: Sequence[Payment], vendor: Vendor
) -> ReconciliationReport:
    """The payments ledger against the invoice: an invoice paid exactly once,
    its total, in its currency, to the vendor master's account; a credit
    note never paid out."""
    paid = sum((p.amount for p in payments), Decimal(0))
    findings: list[Finding] = []
    if invoice.total < 0:
        if payments:
            findings.append(
                Finding(
                    code="credit_note_paid",
                    message=f"credit note #{invoice.invoice_id} was paid out "
                    f"{len(payments)} time(s)",
                )
            )
    elif not payments:
        findings.append(Finding(code="unpaid", message=f"invoice #{invoice.invoice_id} is unpaid"))
    else:
        if len(payments) > 1:
            findings.append(
                Finding(
                    code="paid_more_than_once",
                    message=f"invoice #{invoice.invoice_id} has {len(payments)} payments: "
                    f"{', '.join(f'#{p.payment_id}' for p in payments)}",
                )
            )
        if paid != invoice.total:
            findings.append(
                Finding(
                    code="amount_differs",
                    message=f"paid {paid}, the invoice is for {invoice.total}",
                )
            )
        for payment in payments:
            if payment.currency != invoice.currency:
                findings.append(
                    Finding(
                        code="currency_differs",
                        message=f"payment #{payment.payment_id} is in {payment.currency}, "
                        f"the invoice in {invoice.currency}",
                    )
                )
            if normalise_iban(payment.iban) != normalise_iban(vendor.iban):
                findings.append(
                    Finding(
                        code="paid_to_other_account",
                        message=f"payment #{payment.payment_id} went to "
                        f"{masked_iban(payment.iban)}; the vendor master holds "
                        f"{masked_iban(vendor.iban)}",
                    )
                )
    return ReconciliationReport(
        invoice_id=invoice.invoice_id, reconciled=not findings, paid=paid, findings=findings
    )
