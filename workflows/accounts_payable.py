"""Accounts payable: an invoice or credit note from intake to payment.

Read the document (by reference) -> classify it -> extract header, lines
and PO number -> look up the vendor and the purchase order -> make it a
payable invoice -> check for duplicates -> match every line against the
order and its goods receipts -> wait for a missing receipt -> a clerk
reviews any exception -> approvers from the approval matrix decide ->
record it -> a treasurer releases the payment -> pay the vendor master's
account, once -> reconcile.

Segregation of duties: whoever started the run decides none of its gates,
the approvers are not the clerk who released the exception, the treasurer
is neither, and no service (the AI included) decides any gate. The bank
account paid is the vendor master's, never one printed on the invoice; a
different one on the invoice is a finding for the clerk.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.payables import (
        PoLookup,
        check_duplicates,
        look_up_purchase_order,
        look_up_vendor,
        match_lines,
        pay_invoice,
        prepare_invoice,
        reconcile_invoice,
        record_invoice,
    )
    from activities.payables_models import (
        Classification,
        DuplicateReport,
        ExtractedInvoice,
        MatchReport,
        PreparedInvoice,
    )
    from activities.payables_policy import PayablesPolicy, approval_route, load_policy
    from baton.document_store import DocumentRef
    from baton.graph import (
        Approvers,
        Ask,
        Await,
        Awaited,
        Back,
        Gate,
        Graph,
        Step,
        all_of,
        hours,
    )
    from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
    from workflows.common import WRITE_RETRY, WRITE_TIMEOUT, load_step

POLICY = "payables"
RECEIPT_EVENT = "goods_receipt"


class InvoiceRequest(RunInput):
    # By reference: the starter puts the file in the document store.
    document: DocumentRef


def payables_policy(table: Any) -> PayablesPolicy:
    return load_policy(table, source=f"[policies.{POLICY}]")


def _policy(run: RunView) -> PayablesPolicy:
    return run.policy(POLICY, PayablesPolicy)


def _prepared(run: RunView) -> PreparedInvoice:
    prepared = run.get("prepare", PreparedInvoice)
    assert prepared is not None
    return prepared


def has_invoice(run: RunView) -> bool:
    """The extraction names a known vendor and states what a payment needs."""
    return _prepared(run).invoice is not None


def not_a_credit_note(run: RunView) -> bool:
    """A credit note is recorded and set off against payments, never paid out."""
    invoice = _prepared(run).invoice
    assert invoice is not None
    return not invoice.is_credit_note


to_pay = all_of(has_invoice, not_a_credit_note)


def _match(run: RunView) -> MatchReport | None:
    return run.get("match", MatchReport)


def receipt_missing(run: RunView) -> bool:
    match = _match(run)
    return match is not None and match.outcome == "awaiting_receipt"


def receipt_arrived(run: RunView) -> bool:
    awaited = run.get("receipt", Awaited)
    return awaited is not None and awaited.received


def receipt_wait(run: RunView) -> timedelta:
    return timedelta(days=_policy(run).receipt_wait_days)


def order_number(run: RunView) -> str:
    """What a goods receipt event must be about: the invoice's PO."""
    invoice = _prepared(run).invoice
    return invoice.po_number or "" if invoice is not None else ""


def exception_reasons(run: RunView) -> list[str]:
    """Every reason a clerk must look before anyone approves: findings about
    the document, the vendor, duplicates, the match, and a receipt that
    never came. None: the invoice goes straight to its approvers."""
    reasons = [f"{f.message} ({f.code})" for f in _prepared(run).findings]
    duplicates = run.get("duplicates", DuplicateReport)
    if duplicates is not None:
        reasons += [f"{f.message} ({f.code})" for f in duplicates.findings]
    match = _match(run)
    if match is not None and match.outcome != "matched":
        reasons += [f"{f.message} ({f.code})" for f in match.findings]
    if match is not None and match.outcome == "awaiting_receipt":
        days = _policy(run).receipt_wait_days
        reasons.append(f"no goods receipt arrived within {days} days of waiting")
    return reasons


def has_exception(run: RunView) -> bool:
    return bool(exception_reasons(run))


def approvers(run: RunView) -> Approvers:
    """The approval matrix's roles for the invoice's amount on its order's
    cost centre (an invoice without an order: the rules for any centre)."""
    invoice = _prepared(run).invoice
    assert invoice is not None
    order = run.get("purchase_order", PoLookup)
    cost_centre = order.purchase_order.cost_centre if order and order.purchase_order else ""
    route = approval_route(invoice.total, cost_centre, _policy(run).approval)
    centre = cost_centre or "no cost centre"
    amount = f"{invoice.total:,.2f} {invoice.currency}"
    return Approvers(
        roles=route.roles,
        rule=f"approval matrix rule {route.rule}: {amount} on {centre}",
    )


def approval_reasons(run: RunView) -> list[str]:
    chosen = approvers(run)
    reasons = [chosen.rule]
    if len(chosen.roles) > 1:
        limit = _policy(run).approval.four_eyes_above
        reasons.append(f"above {limit:,} two people approve: {' and '.join(chosen.roles)}")
    return reasons


GRAPH = Graph(
    name="accounts_payable",
    input=InvoiceRequest,
    description=__doc__ or "",
    purpose="Check incoming supplier invoices and credit notes against purchase orders and "
    "goods receipts, route them for approval and pay approved invoices exactly once",
    risk_class="not high-risk: invoice processing is not listed in AI Act Annex III; the "
    "trail follows Art. 12 and 14 voluntarily, and SOX-style controls apply",
    stop_roles=("admin", "controller"),
    policies={POLICY: payables_policy},
    nodes=(
        load_step(),
        Ask(
            "classify",
            task="classify_payable",
            output=Classification,
            instructions="Is this an invoice, a credit note, or another document? Say why.",
            inputs={"text": "load.document", "file_name": "load.name"},
            documents=("text",),
        ),
        Ask(
            "extract",
            task="extract_invoice",
            output=ExtractedInvoice,
            instructions="Extract the header, every line and the PO number. Report only what "
            "the document states; amounts of a credit note are negative.",
            inputs={"text": "load.document", "file_name": "load.name"},
            documents=("text",),
            after=("load",),
        ),
        Step(
            "vendor",
            activity=look_up_vendor,
            inputs={"vat_id": "extract.vendor_vat_id", "name": "extract.vendor_name"},
        ),
        Step(
            "purchase_order",
            activity=look_up_purchase_order,
            inputs={"po_number": "extract.po_number"},
            after=("extract",),
        ),
        Step(
            "prepare",
            activity=prepare_invoice,
            local=True,
            after=("vendor", "purchase_order", "classify"),
            inputs={
                "extracted": "extract",
                "kind": "classify.kind",
                "vendor": "vendor.vendor",
                "readable": "load.readable",
                "problem": "load.problem",
                "suspected_instructions": "load.suspected_instructions",
            },
        ),
        Step(
            "duplicates",
            activity=check_duplicates,
            when=has_invoice,
            inputs={
                "invoice": "prepare.invoice",
                "window_days": f"policy.{POLICY}.duplicate_window_days",
            },
        ),
        Step(
            "match",
            activity=match_lines,
            when=has_invoice,
            after=("prepare",),
            inputs={
                "invoice": "prepare.invoice",
                "vendor": "vendor.vendor",
                "purchase_order": "purchase_order.purchase_order",
                "tolerances": f"policy.{POLICY}.tolerances",
            },
        ),
        Await(
            "receipt",
            event=RECEIPT_EVENT,
            senders=("receiving",),
            wait=receipt_wait,
            key=order_number,
            when=receipt_missing,
        ),
        # The receipt arrived: match again, reading it.
        Back("rematch", to="match", when=receipt_arrived, max_visits=4),
        Gate(
            "exception_review",
            role="ap_clerk",
            when=has_exception,
            why=exception_reasons,
            after=("rematch", "duplicates"),
            inputs={
                "document": "load.document",
                "extracted": "extract",
                "prepared": "prepare",
                "duplicates": "duplicates",
                "match": "match",
            },
            sla=hours(48),
            escalate_to=("controller",),
        ),
        Gate(
            "approve",
            route=approvers,
            when=has_invoice,
            why=approval_reasons,
            not_by=("exception_review",),
            inputs={"invoice": "prepare.invoice", "match": "match", "vendor": "vendor.vendor"},
            sla=hours(72),
            escalate_to=("controller",),
        ),
        Step(
            "record",
            activity=record_invoice,
            when=has_invoice,
            inputs={"invoice": "prepare.invoice", "match": "match"},
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
        ),
        Gate(
            "release",
            role="payment_releaser",
            when=to_pay,
            not_by=("exception_review", "approve"),
            inputs={"invoice": "prepare.invoice", "recorded": "record", "vendor": "vendor.vendor"},
            sla=hours(48),
            escalate_to=("controller",),
        ),
        Step(
            "pay",
            activity=pay_invoice,
            when=to_pay,
            inputs={"invoice_id": "record.invoice_id", "released_by": "release.user"},
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
        ),
        Step(
            "reconcile",
            activity=reconcile_invoice,
            when=has_invoice,
            after=("pay",),
            inputs={"invoice_id": "record.invoice_id"},
        ),
    ),
)


@workflow.defn(name="accounts_payable")
class AccountsPayable(GraphWorkflow):
    graph = GRAPH

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        # Taken raw (an InvoiceRequest as sent): GraphWorkflow.execute validates it.
        return await self.execute(request)
