"""RFP response activities: the drafter's tools over the RFP desk (search
the answer library, read product facts, look up pricing), and the two
writes a run ends with: the bid sent with its coverage matrix, or the
decline with its reasons.

Writes are keyed by baton.idempotency with the RFP's reference as the
business key, so a retried step finds its earlier write. The desk is
imported inside the activities: the workflow imports this module, never
systems/. The tools are async activities (baton.tools), so their SQLite
reads run in a thread, off the worker's event loop.
"""

from __future__ import annotations

import asyncio

from pydantic import BaseModel, Field
from temporalio import activity

from activities.rfp_models import (
    CoverageRow,
    Critique,
    FactsQuery,
    LibraryHits,
    LibraryQuery,
    PricingQuery,
    ProductFacts,
    Qualification,
    Quote,
    Requirements,
    SectionDrafts,
    coverage_matrix,
)
from baton.document_store import DocumentRef
from baton.gates import GateDecision
from baton.idempotency import idempotency_key
from baton.tools import tool


@tool(description="Search the bid team's answer library for approved answers to a requirement")
async def search_answer_library(query: LibraryQuery) -> LibraryHits:
    from systems.rfp import RfpDesk

    entries = await asyncio.to_thread(RfpDesk().search, query.query, query.limit)
    return LibraryHits.model_validate({"entries": entries})


@tool(description="Read product facts (deployment, regions, certifications, SLA, support) by key")
async def read_product_facts(query: FactsQuery) -> ProductFacts:
    from systems.rfp import RfpDesk

    held = await asyncio.to_thread(RfpDesk().facts, query.keys)
    return ProductFacts(facts=held, unknown=[k for k in query.keys if k not in held])


@tool(description="Price named users for a term in years from the price list, with discounts")
async def lookup_pricing(query: PricingQuery) -> Quote:
    from systems.rfp import RfpDesk

    quoted = await asyncio.to_thread(RfpDesk().quote, query.users, query.term_years)
    return Quote.model_validate(quoted)


class DeclineRequest(BaseModel):
    rfp: Qualification
    confirmation: GateDecision


class Declined(BaseModel):
    decline_id: int
    reference: str
    reasons: list[str]
    confirmed_by: str
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already recorded it")


class SubmitRequest(BaseModel):
    rfp: Qualification
    document: DocumentRef
    requirements: Requirements
    drafts: SectionDrafts = Field(description="As approved: the reviewer's edit, if any")
    critique: Critique
    review: GateDecision


class Submitted(BaseModel):
    submission_id: int
    reference: str
    coverage: list[CoverageRow]
    covered: int
    missing: int
    approved_by: str
    idempotency_key: str
    created: bool = Field(description="False when an earlier attempt had already submitted it")


def _key(rfp: Qualification) -> str:
    return idempotency_key(f"rfp/{rfp.reference}")


@activity.defn
def record_decline(request: DeclineRequest) -> Declined:
    """Record that the RFP is not bid for, with the reasons as confirmed."""
    from systems.rfp import RfpDesk

    rfp, key = request.rfp, _key(request.rfp)
    written = RfpDesk().decline(
        idempotency_key=key,
        decline={
            "rfp_reference": rfp.reference,
            "issuer": rfp.issuer,
            "title": rfp.title,
            "reasons": rfp.reasons,
            "confirmed_by": request.confirmation.user,
        },
    )
    return Declined(
        decline_id=written.row_id,
        reference=rfp.reference,
        reasons=rfp.reasons,
        confirmed_by=request.confirmation.user,
        idempotency_key=key,
        created=written.created,
    )


@activity.defn
def submit_response(request: SubmitRequest) -> Submitted:
    """Send the bid as approved, once, with its coverage matrix: every
    requirement, where it is answered, on what, and what is missing."""
    from systems.rfp import RfpDesk

    rfp, key = request.rfp, _key(request.rfp)
    matrix = coverage_matrix(request.requirements, request.drafts, request.critique)
    written = RfpDesk().submit(
        idempotency_key=key,
        submission={
            "rfp_reference": rfp.reference,
            "issuer": rfp.issuer,
            "title": rfp.title,
            "document_sha256": request.document.sha256,
            "approved_by": request.review.user,
            "answers": request.drafts.model_dump(mode="json"),
            "coverage": [row.model_dump(mode="json") for row in matrix],
        },
    )
    return Submitted(
        submission_id=written.row_id,
        reference=rfp.reference,
        coverage=matrix,
        covered=sum(1 for row in matrix if row.status == "covered"),
        missing=sum(1 for row in matrix if row.status != "covered"),
        approved_by=request.review.user,
        idempotency_key=key,
        created=written.created,
    )
