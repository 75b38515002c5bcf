"""Document intake: read a document, extract its fields with a model, look
for it among the ERP's earlier entries, check it, have a person review what
is doubtful (a suspected duplicate included), and enter it in the ERP."""

from __future__ import annotations

from datetime import timedelta
from typing import Any

from temporalio import workflow

with workflow.unsafe.imports_passed_through():
    from activities.documents import (
        EarlierEntries,
        ExtractedDocument,
        Finding,
        ValidationReport,
        duplicate_findings,
        enter_document,
        find_earlier_entries,
        validate_document,
        void_document,
    )
    from baton.document_store import DocumentRef
    from baton.graph import Ask, FourEyes, Gate, Graph, Retry, Step, hours
    from baton.runner import GraphWorkflow, RunInput, RunResult, RunView
    from workflows.common import WRITE_RETRY, WRITE_TIMEOUT, load_step


class IntakeRequest(RunInput):
    # By reference: the starter puts the file in the document store.
    document: DocumentRef


def large_amount(run: RunView) -> bool:
    """A total at or above the four-eyes threshold, in the document's currency."""
    document = run.get("extract", ExtractedDocument)
    limit = run.config.threshold("four_eyes_min_total", 10_000)
    return document is not None and document.total is not None and document.total >= limit


def suspected_duplicates(run: RunView) -> list[Finding]:
    """Earlier ERP entries this document may repeat: its number, or its total
    within the configured window of days. None in runs started before the
    check (`since=`), so what their reviewers were shown stays as it was."""
    earlier = run.get("duplicates", EarlierEntries)
    document = run.get("extract", ExtractedDocument)
    if earlier is None or document is None:
        return []
    window = max(0, int(run.config.threshold("duplicate_window_days", 14)))
    return duplicate_findings(document, earlier, window)


def review_reasons(run: RunView) -> list[str]:
    """Why a person reviews this document: every failed check (a suspected
    duplicate among them), an extraction not confident enough (with its
    threshold and method, and the fields the extractor could not find), a
    large amount. None: it is entered as read."""
    reasons: list[str] = []
    report = run.get("validate", ValidationReport)
    if report is None:
        reasons.append("the checks did not run")
    else:
        reasons += [f"check failed: {f.message} ({f.code})" for f in report.findings]
    reasons += [f"check failed: {f.message} ({f.code})" for f in suspected_duplicates(run)]
    threshold = run.config.threshold("review_min_confidence", 0.8)
    confidence = run.confidence("extract")
    if confidence < threshold:
        reasons.append(
            f"extraction confidence {confidence:.2f} is below the threshold {threshold:.2f} "
            f"(measured by {run.confidence_method('extract')})"
        )
        missing = [
            n.removeprefix("missing: ") for n in run.notes("extract") if n.startswith("missing: ")
        ]
        if missing:
            reasons.append(f"the extractor could not find: {'; '.join(missing)}")
    if large_amount(run):
        document = run.get("extract", ExtractedDocument)
        assert document is not None and document.total is not None
        limit = run.config.threshold("four_eyes_min_total", 10_000)
        amount = " ".join(filter(None, (f"{document.total:,.2f}", document.currency)))
        reasons.append(f"the total {amount} is at or above {limit:,g}: two people approve it")
    return reasons


def needs_review(run: RunView) -> bool:
    return bool(review_reasons(run))


GRAPH = Graph(
    name="document_intake",
    input=IntakeRequest,
    description=__doc__ or "",
    purpose="Read incoming invoices, receipts and purchase orders and enter them in the ERP",
    risk_class="not high-risk: document intake is not listed in AI Act Annex III; "
    "the trail follows Art. 12 and 14 voluntarily",
    stop_roles=("admin", "supervisor"),
    nodes=(
        load_step(),
        Ask(
            "extract",
            task="extract_fields",
            output=ExtractedDocument,
            instructions="Extract the document's fields. Report only what the document states.",
            inputs={"text": "load.document", "file_name": "load.name"},
            # The model reads the document itself; the run keeps its reference.
            documents=("text",),
        ),
        Step(
            "duplicates",
            activity=find_earlier_entries,
            inputs={"document": "extract"},
            # Runs started before the check skip it and replay as recorded.
            since="intake-duplicate-check",
            # A read of the register takes milliseconds, as its writes do.
            timeout=timedelta(seconds=2),
            retry=Retry(initial_interval=timedelta(milliseconds=500)),
        ),
        Step(
            "validate",
            activity=validate_document,
            local=True,
            inputs={
                "document": "extract",
                "readable": "load.readable",
                "problem": "load.problem",
                "suspected_instructions": "load.suspected_instructions",
            },
        ),
        Gate(
            "review",
            role="reviewer",
            when=needs_review,
            why=review_reasons,
            subject="extract",
            inputs={"document": "load.document", "findings": "validate.findings"},
            sla=hours(24),
            remind_at=0.5,
            escalate_to=("supervisor",),
            on_exhausted="hold",
            four_eyes=FourEyes(when=large_amount, other_role="controller"),
            # "Read it again": the model re-extracts with the reviewer's note.
            changes_to="extract",
            max_changes=2,
        ),
        Step(
            "enter",
            activity=enter_document,
            inputs={"document": "extract", "review": "review"},
            timeout=WRITE_TIMEOUT,
            retry=WRITE_RETRY,
            compensate=void_document,
        ),
    ),
)


@workflow.defn(name="document_intake")
class DocumentIntake(GraphWorkflow):
    graph = GRAPH

    @workflow.run
    async def run(self, request: Any) -> RunResult:
        # Taken raw (an IntakeRequest as sent): GraphWorkflow.execute validates it.
        return await self.execute(request)
