"""What an RFP response works with: the go/no-go call and its reasons, the
requirements read from the RFP by section, each section's draft answers,
the critic's coverage findings, the coverage matrix that goes out with the
submission; and the arguments and results of the drafter's tools.

Pure models and rules, no I/O: the RFP activities and tools, the offline
rules and workflow code share them (a workflow imports these, never
``systems/``).
"""

from __future__ import annotations

import re
from decimal import Decimal
from typing import Literal

from pydantic import BaseModel, Field

from baton.nodes.map import Mapped

Decision = Literal["go", "no_go"]
CoverageStatus = Literal["covered", "missing"]
# A requirement id as RFPs number them: section, then item ("2.1", "4.1.3").
REQUIREMENT_ID = r"^\d+(\.\d+)+$"


class Qualification(BaseModel):
    """Which RFP this is, whether to bid, and every reason the call rests
    on: each hard criterion of the RFP against what the product offers."""

    issuer: str = Field(min_length=1, max_length=200)
    reference: str = Field(
        min_length=1, max_length=100, description="The RFP's own reference: one answer per RFP"
    )
    title: str = Field(min_length=1, max_length=300)
    decision: Decision
    reasons: list[str] = Field(min_length=1, max_length=12)


class Requirement(BaseModel):
    id: str = Field(pattern=REQUIREMENT_ID, description="As the RFP numbers it: '2.1'")
    text: str = Field(min_length=5, max_length=1000)
    mandatory: bool = Field(description="The RFP says shall or must")


class Section(BaseModel):
    number: str = Field(pattern=r"^\d+$")
    title: str = Field(min_length=1, max_length=200)
    requirements: list[Requirement] = Field(min_length=1)


class Requirements(BaseModel):
    """The RFP's requirements, section by section, as it numbers them."""

    sections: list[Section] = Field(min_length=1)

    def all(self) -> list[tuple[Section, Requirement]]:
        return [(section, r) for section in self.sections for r in section.requirements]


def requirements_problems(requirements: Requirements) -> list[str]:
    """Each requirement once, numbered under its own section: the coverage
    matrix and the critic go by these ids."""
    problems = []
    seen: set[str] = set()
    for section, requirement in requirements.all():
        if requirement.id in seen:
            problems.append(f"requirement {requirement.id} is listed twice: list it once")
        seen.add(requirement.id)
        if requirement.id.split(".")[0] != section.number:
            problems.append(
                f"requirement {requirement.id} is listed under section {section.number}: "
                "list it under the section its number starts with"
            )
    return problems


class DraftAnswer(BaseModel):
    requirement_id: str = Field(pattern=REQUIREMENT_ID)
    answer: str = Field(min_length=1, max_length=4000)
    sources: list[str] = Field(
        default_factory=list,
        description="What the answer rests on: answer library ids, product fact keys, "
        "price list SKUs. None: the drafter found nothing to answer with",
    )


class SectionDraft(BaseModel):
    """The drafter's answers to one section, one per requirement, and what
    it was asked to fix there."""

    section: str = Field(pattern=r"^\d+$")
    answers: list[DraftAnswer] = Field(min_length=1)
    addressed: list[str] = Field(
        default_factory=list,
        description="The critic's findings on this section and the reviewer's notes this "
        "draft answers to",
    )


class SectionDrafts(Mapped):
    """The drafter's answers, one loop per section (a mapped Agent's output):
    in the RFP's order, None for a section whose loop ended without an
    answer, and why in ``failures``."""

    results: list[SectionDraft | None]

    def answers(self) -> dict[str, DraftAnswer]:
        return {a.requirement_id: a for d in self.results if d is not None for a in d.answers}

    def failed(self, requirements: Requirements) -> dict[str, str]:
        """Why each section the drafter did not finish has no answers, by its number."""
        return {requirements.sections[f.index].number: f.error for f in self.failures}


class Finding(BaseModel):
    requirement_id: str = Field(pattern=REQUIREMENT_ID)
    status: CoverageStatus
    note: str = Field(default="", max_length=1000, description="Why, for a missing one")


class Critique(BaseModel):
    """The critic's finding for every requirement: answered, or what is missing."""

    findings: list[Finding] = Field(min_length=1)

    @property
    def missing(self) -> list[Finding]:
        return [f for f in self.findings if f.status == "missing"]


class CoverageRow(BaseModel):
    """One line of the coverage matrix: a requirement and where it is answered."""

    requirement_id: str
    section: str
    requirement: str
    mandatory: bool
    status: CoverageStatus
    answer: str = ""
    sources: list[str] = Field(default_factory=list)
    note: str = ""


def coverage_matrix(
    requirements: Requirements, drafts: SectionDrafts, critique: Critique
) -> list[CoverageRow]:
    """Every requirement of the RFP with its answer and the critic's
    finding, in the RFP's order. A requirement the critic did not judge, or
    one without an answer, is missing whatever else was said: the matrix is
    the bid's promise of what it answers."""
    answers = drafts.answers()
    failed = drafts.failed(requirements)
    findings = {f.requirement_id: f for f in critique.findings}
    rows = []
    for section, requirement in requirements.all():
        answer = answers.get(requirement.id)
        finding = findings.get(requirement.id)
        status: CoverageStatus = "covered"
        note = ""
        if answer is None and section.number in failed:
            status, note = "missing", f"the drafter did not finish: {failed[section.number]}"
        elif answer is None:
            status, note = "missing", "no answer was drafted"
        elif finding is None:
            status, note = "missing", "the critic did not check it"
        elif finding.status == "missing":
            status, note = "missing", finding.note
        rows.append(
            CoverageRow(
                requirement_id=requirement.id,
                section=f"{section.number}. {section.title}",
                requirement=requirement.text,
                mandatory=requirement.mandatory,
                status=status,
                answer=answer.answer if answer else "",
                sources=answer.sources if answer else [],
                note=note,
            )
        )
    return rows


def format_matrix(rows: list[CoverageRow]) -> list[str]:
    """The matrix as text lines, for the demo and the CLI."""
    width = max((len(r.requirement_id) for r in rows), default=2)
    lines = []
    for row in rows:
        mark = "covered" if row.status == "covered" else "MISSING"
        by = ", ".join(row.sources) or row.note or "-"
        lines.append(f"{row.requirement_id:<{width}}  {mark:<7}  {row.requirement[:60]:<60}  {by}")
    return lines


# -- the drafter's tools ------------------------------------------------------

_WORD = re.compile(r"[a-z0-9]+")


def words(text: str) -> set[str]:
    """The lower-case words of ``text``, as the answer library is searched."""
    return set(_WORD.findall(text.lower()))


class LibraryQuery(BaseModel):
    query: str = Field(min_length=1, max_length=2000, description="The requirement's words")
    limit: int = Field(default=3, ge=1, le=10)


class LibraryEntry(BaseModel):
    id: str
    topic: str
    answer: str
    facts: list[str] = Field(
        default_factory=list, description="Product facts the answer rests on (read them)"
    )
    matched: list[str] = Field(default_factory=list, description="The words it matched on")


class LibraryHits(BaseModel):
    entries: list[LibraryEntry] = Field(default_factory=list)


class FactsQuery(BaseModel):
    keys: list[str] = Field(default_factory=list, description="Fact keys; none: every fact")


class ProductFacts(BaseModel):
    facts: dict[str, list[str]] = Field(default_factory=dict)
    unknown: list[str] = Field(default_factory=list, description="Keys asked for and not held")


class PricingQuery(BaseModel):
    users: int = Field(ge=1, le=1_000_000, description="Named users")
    term_years: int = Field(default=1, ge=1, le=10)


class QuoteLine(BaseModel):
    sku: str
    description: str
    quantity: int
    unit_price: Decimal
    amount: Decimal


class Quote(BaseModel):
    currency: str
    lines: list[QuoteLine]
    discounts: list[str] = Field(default_factory=list)
    per_year: Decimal
    term_years: int
    total: Decimal

    def summary(self) -> str:
        return (
            f"{self.currency} {self.per_year:,.2f} per year, {self.currency} {self.total:,.2f} "
            f"for {self.term_years} year(s)"
            + (f" ({'; '.join(self.discounts)})" if self.discounts else "")
        )
