"""Document intake written the plain Temporal way, for comparison: one
activity per step and a signal for the approval. No Baton runner, routing,
audit interceptors or search attributes; the same activities do the work.

Written as a careful Temporal engineer would, so that the comparison is with
a good plain workflow, not a slow one: its worker passes this module through
the sandbox (as Baton's worker does its process modules; bench/worker.py),
and the extraction schema is built once per worker, not in every run. Before
both, a quarter of the bare worker's time went to re-importing this module
and rebuilding the schema for each run."""

from __future__ import annotations

from datetime import timedelta

from temporalio import workflow
from temporalio.common import RetryPolicy

with workflow.unsafe.imports_passed_through():
    from pydantic import BaseModel

    from activities.documents import (
        EarlierEntries,
        EarlierEntriesQuery,
        EnterRequest,
        EntryReceipt,
        ExtractedDocument,
        LoadedDocument,
        LoadRequest,
        ValidateRequest,
        ValidationReport,
        duplicate_findings,
    )
    from baton.document_store import DocumentRef
    from baton.gates import GateDecision
    from baton.llm import AskAnswer, AskRequest

RETRY = RetryPolicy(maximum_attempts=5)
STEP = timedelta(seconds=30)
# The same review rules as document intake's baton.toml, written in place.
REVIEW_MIN_CONFIDENCE = 0.8
FOUR_EYES_MIN_TOTAL = 10_000
DUPLICATE_WINDOW_DAYS = 14
EXTRACTION_SCHEMA = ExtractedDocument.model_json_schema()


class BareRequest(BaseModel):
    document: DocumentRef


class BareApproval(BaseModel):
    user: str
    approve: bool


@workflow.defn(name="bare_intake")
class BareIntake:
    def __init__(self) -> None:
        self._waiting = False
        self._approvals: list[BareApproval] = []
        self._needed = 1

    @workflow.run
    async def run(self, request: BareRequest) -> str:
        loaded: LoadedDocument = await workflow.execute_activity(
            "load_document",
            LoadRequest(document=request.document),
            result_type=LoadedDocument,
            start_to_close_timeout=STEP,
            retry_policy=RETRY,
        )
        answer: AskAnswer = await workflow.execute_activity(
            "ask",
            AskRequest(
                task="extract_fields",
                inputs={"text": loaded.document.model_dump(mode="json")},
                documents=["text"],
                output_schema=EXTRACTION_SCHEMA,
            ),
            result_type=AskAnswer,
            start_to_close_timeout=STEP,
            retry_policy=RETRY,
        )
        document = ExtractedDocument.model_validate(answer.output)
        earlier: EarlierEntries = await workflow.execute_activity(
            "find_earlier_entries",
            EarlierEntriesQuery(document=document),
            result_type=EarlierEntries,
            start_to_close_timeout=STEP,
            retry_policy=RETRY,
        )
        duplicates = duplicate_findings(document, earlier, DUPLICATE_WINDOW_DAYS)
        report: ValidationReport = await workflow.execute_activity(
            "validate_document",
            ValidateRequest(
                document=document,
                readable=loaded.readable,
                problem=loaded.problem,
                suspected_instructions=loaded.suspected_instructions,
            ),
            result_type=ValidationReport,
            start_to_close_timeout=STEP,
            retry_policy=RETRY,
        )
        review = None
        large = document.total is not None and document.total >= FOUR_EYES_MIN_TOTAL
        doubtful = not report.ok or duplicates or answer.confidence < REVIEW_MIN_CONFIDENCE
        if doubtful or large:
            self._needed = 2 if large else 1
            self._waiting = True
            # Distinct approvers, as four-eyes means (and a signal the driver
            # re-sent after a timeout counts once).
            await workflow.wait_condition(
                lambda: (
                    len({a.user for a in self._approvals}) >= self._needed
                    or any(not a.approve for a in self._approvals)
                )
            )
            self._waiting = False
            if not all(a.approve for a in self._approvals):
                return "rejected"
            review = GateDecision(
                outcome="approve",
                user=self._approvals[-1].user,
                role="reviewer",
                decided_at=workflow.now(),
                approved_by=[a.user for a in self._approvals],
            )
        await workflow.execute_activity(
            "enter_document",
            EnterRequest(document=document, review=review),
            result_type=EntryReceipt,
            start_to_close_timeout=STEP,
            retry_policy=RETRY,
        )
        return "completed"

    @workflow.signal
    def approve(self, approval: BareApproval) -> None:
        self._approvals.append(approval)

    @workflow.query
    def waiting(self) -> bool:
        return self._waiting
