"""The offline "model" of the RFP response: the go/no-go call and the
requirement extraction (Ask tasks), and scripted turns of the drafter and
the critic (Agent tasks).

The RFP is read as RFPs of samples/rfp_response are laid out: "Key: value"
lines of hard criteria in its header, sections numbered "1. Title" and
requirements "1.1 Text". An RFP that does not read that way is refused:
the answer is empty, fails its schema, and the cascade goes on to its next
tier or a person. Text in the RFP is data: nothing it says is an
instruction to these rules, which read only the fields above.

The drafter's script, one loop per section: search the answer library for
every requirement of the section, then read the product facts the answers
found rest on and price what asks for a price, then answer the section from
what the tools returned. The critic's: a requirement is covered when its
answer rests on at least one source (and on the price list, where a price
is asked). A redraft lists in ``addressed`` what it was asked to fix in its
section (the critic's findings on it, a reviewer's note); what the library
cannot answer it still cannot, and says so in the answer. Both scripts are
functions of the turn's inputs and transcript alone: the demo and the tests
get the same turns every time.

Pure: no I/O, no clock, no randomness.
"""

from __future__ import annotations

import json
import re
from collections.abc import Sequence
from typing import Any

from pydantic import BaseModel, ValidationError

from activities.rfp_models import (
    Critique,
    DraftAnswer,
    Finding,
    LibraryEntry,
    LibraryHits,
    ProductFacts,
    Qualification,
    Quote,
    Requirement,
    Requirements,
    Section,
    SectionDraft,
    SectionDrafts,
)
from baton.llm.offline_answer import RulesAnswer, rules_task
from baton.llm.turns import ToolCall, TurnAnswer, TurnMessage, TurnRequest

METHOD = "rules_rfp"
# The rules read labelled header fields and numbered lines, not prose.
CONFIDENCE = 0.9
MODEL = "rules-rfp-agent-v1"

_HEADER = re.compile(r"^([A-Z][A-Za-z ]{2,40}):\s*(.+)$")
_SECTION = re.compile(r"^(\d+)\.\s+(\S.*)$")
_REQUIREMENT = re.compile(r"^(\d+\.\d+(?:\.\d+)*)\s+(\S.*)$")
_MANDATORY = re.compile(r"\b(?:shall|must)\b", re.IGNORECASE)
_PRICING = re.compile(r"\b(?:pric(?:e|es|ing)|quote|licen[cs]e fee|cost)\b", re.IGNORECASE)
_USERS = re.compile(r"\b(\d[\d,]*)\s+(?:named\s+)?users?\b", re.IGNORECASE)
_YEARS = re.compile(r"\b(\d+|one|two|three|four|five)[- ]year\b", re.IGNORECASE)
_NUMBERS = {"one": 1, "two": 2, "three": 3, "four": 4, "five": 5}
# Where one ask ends and the next begins, as workflows/rfp_response.py and
# a gate's changes_to word them.
_ASKS = re.compile(r"; (?=the critic finds requirement |the reviewer \()")
_FLAGGED = re.compile(r"^the critic finds requirement (\S+) not covered: (.*)$")


class RfpRules(RulesAnswer):
    method: str = METHOD


def _header(text: str) -> dict[str, str]:
    """The "Key: value" lines before the first numbered section, keys lower-cased."""
    fields: dict[str, str] = {}
    for line in text.splitlines():
        if _SECTION.match(line.strip()):
            break
        match = _HEADER.match(line.strip())
        if match:
            fields.setdefault(match.group(1).strip().lower(), match.group(2).strip())
    return fields


def _listed(value: str) -> list[str]:
    return [item.strip() for item in value.split(",") if item.strip()]


def go_no_go(inputs: dict[str, Any]) -> RfpRules:
    """Each hard criterion the RFP states (deployment, hosting region,
    certifications) against the product facts: go when the product meets
    them all."""
    header = _header(str(inputs.get("text") or ""))
    try:
        facts = ProductFacts.model_validate(inputs.get("facts")).facts
    except ValidationError as err:
        return RfpRules(
            confidence=0.0, refused=f"the input 'facts' is not product facts ({err.error_count()})"
        )
    criteria = ("deployment", "hosting region", "certifications required")
    stated = [c for c in criteria if c in header]
    if not stated:
        return RfpRules(
            confidence=0.0,
            missing=list(criteria),
            refused="the RFP states none of its hard criteria as 'Key: value' header lines",
        )
    offered = {
        "deployment": facts.get("deployment_models", []),
        "hosting region": facts.get("hosting_regions", []),
        "certifications required": facts.get("certifications", []),
    }
    failed: list[str] = []
    passed: list[str] = []
    for criterion in stated:
        have = {v.lower() for v in offered[criterion]}
        for wanted in _listed(header[criterion]):
            if wanted.lower() in have:
                passed.append(f"{criterion} '{wanted}': the product offers it")
            else:
                failed.append(
                    f"{criterion} '{wanted}': the product does not offer it (it offers: "
                    f"{', '.join(offered[criterion]) or 'nothing on record'})"
                )
    named = [k for k in ("issuer", "reference", "title") if k not in header]
    if named:
        return RfpRules(
            confidence=0.0, missing=named, refused=f"the header lacks {', '.join(named)}"
        )
    decided = Qualification(
        issuer=header["issuer"],
        reference=header["reference"],
        title=header["title"],
        decision="no_go" if failed else "go",
        reasons=[*failed, *passed],
    )
    missing = [c for c in criteria if c not in stated]
    return RfpRules(
        output=decided.model_dump(mode="json"),
        # A criterion the RFP does not state may still rule the bid out.
        confidence=CONFIDENCE if not missing else 0.6,
        matched=stated,
        missing=missing,
    )


def extract_requirements(inputs: dict[str, Any]) -> RfpRules:
    """The numbered sections and requirements. A requirement runs on over
    the lines that follow it up to a blank line or the next number."""
    text = str(inputs.get("text") or "")
    sections: list[dict[str, Any]] = []
    current: dict[str, Any] | None = None
    for raw in text.splitlines():
        line = raw.strip()
        requirement = _REQUIREMENT.match(line)
        section = _SECTION.match(line)
        if (
            requirement
            and sections
            and requirement.group(1).split(".")[0] == sections[-1]["number"]
        ):
            current = {"id": requirement.group(1), "text": requirement.group(2)}
            sections[-1]["requirements"].append(current)
        elif section and not requirement:
            sections.append(
                {"number": section.group(1), "title": section.group(2), "requirements": []}
            )
            current = None
        elif line and current is not None:
            current["text"] += " " + line
        else:
            current = None
    for numbered in sections:
        for item in numbered["requirements"]:
            item["mandatory"] = bool(_MANDATORY.search(item["text"]))
    kept = [s for s in sections if s["requirements"]]
    if not kept:
        return RfpRules(
            confidence=0.0,
            missing=["numbered requirements"],
            refused="no numbered section holds a numbered requirement",
        )
    extracted = Requirements(sections=[Section.model_validate(s) for s in kept])
    return RfpRules(
        output=extracted.model_dump(mode="json"),
        confidence=CONFIDENCE,
        matched=[f"{len(kept)} sections", f"{len(extracted.all())} requirements"],
    )


# -- the agents' turns ---------------------------------------------------------


def _answer(*, calls: Sequence[ToolCall] = (), output: BaseModel | None = None) -> TurnAnswer:
    return TurnAnswer(
        tool_calls=list(calls),
        output=None if output is None else output.model_dump(mode="json"),
        provider="offline",
        model=MODEL,
        finish_reason="tool_calls" if calls else "stop",
    )


def _results(messages: list[TurnMessage]) -> dict[str, Any]:
    """Each successful tool result of the transcript by its call id, parsed."""
    return {
        m.tool_call_id: json.loads(m.content)
        for m in messages
        if m.role == "tool" and not m.is_error and m.content.startswith("{")
    }


def _asked(messages: list[TurnMessage]) -> list[str]:
    """What the drafter was asked to fix before its first turn: the critic's
    findings and the reviewer's note (the Agent's opening user message,
    one line of asks joined by "; ", then the previous answer)."""
    opening = next((m.content for m in messages if m.role == "user"), "")
    first = opening.split("\n", 1)[0]
    return [a for a in _ASKS.split(first) if a] if first else []


def _pricing(requirement: Requirement) -> tuple[int, int] | None:
    """(users, years) of a requirement that asks for a price of users."""
    if not _PRICING.search(requirement.text):
        return None
    users = _USERS.search(requirement.text)
    if users is None:
        return None
    years = _YEARS.search(requirement.text)
    term = 1 if years is None else _NUMBERS.get(years.group(1).lower()) or int(years.group(1))
    return int(users.group(1).replace(",", "")), term


def drafter_turn(request: TurnRequest) -> TurnAnswer:
    """Search, then facts and prices, then the section's answers (see the module)."""
    try:
        section = Section.model_validate(request.inputs.get("section"))
    except ValidationError as err:
        return _refused(f"the input 'section' is not a section of them ({err.error_count()})")
    results = _results(request.messages)
    turns = sum(1 for m in request.messages if m.role == "assistant")
    if turns == 0:
        return _answer(
            calls=[
                ToolCall(
                    id=f"search-{r.id}",
                    name="search_answer_library",
                    arguments={"query": r.text, "limit": 3},
                )
                for r in section.requirements
            ],
        )
    hits = {
        r.id: LibraryHits.model_validate(results.get(f"search-{r.id}", {})).entries
        for r in section.requirements
    }
    if turns == 1:
        keys = sorted({key for entries in hits.values() for e in entries for key in e.facts})
        calls = (
            [ToolCall(id="facts", name="read_product_facts", arguments={"keys": keys})]
            if keys
            else []
        )
        for r in section.requirements:
            priced = _pricing(r)
            if priced is not None:
                calls.append(
                    ToolCall(
                        id=f"price-{r.id}",
                        name="lookup_pricing",
                        arguments={"users": priced[0], "term_years": priced[1]},
                    )
                )
        if calls:
            return _answer(calls=calls)
    facts = ProductFacts.model_validate(results.get("facts", {})).facts
    ids = {r.id for r in section.requirements}
    flagged: dict[str, str] = {}
    addressed = []
    for ask in _asked(request.messages):
        finding = _FLAGGED.match(ask)
        if finding is None or finding.group(1) in ids:
            addressed.append(ask)
        if finding is not None and finding.group(1) in ids:
            flagged[finding.group(1)] = finding.group(2)
    drafted = SectionDraft(
        section=section.number,
        answers=[
            _draft(r, hits[r.id], facts, results.get(f"price-{r.id}"), flagged)
            for r in section.requirements
        ],
        addressed=addressed,
    )
    return _answer(output=drafted)


def _draft(
    requirement: Requirement,
    entries: list[LibraryEntry],
    facts: dict[str, list[str]],
    quote: dict[str, Any] | None,
    flagged: dict[str, str],
) -> DraftAnswer:
    parts = [e.answer for e in entries]
    sources = [e.id for e in entries]
    for key in dict.fromkeys(k for e in entries for k in e.facts):
        if key in facts:
            parts.append(f"{key.replace('_', ' ').capitalize()}: {'; '.join(facts[key])}.")
            sources.append(f"fact:{key}")
    if quote is not None:
        priced = Quote.model_validate(quote)
        parts.append(f"Price: {priced.summary()}.")
        sources += [f"price:{line.sku}" for line in priced.lines]
    if not parts:
        why = "the answer library holds no approved answer"
        if requirement.id in flagged:
            why += f"; searched again after the critic's finding ({flagged[requirement.id]})"
        return DraftAnswer(
            requirement_id=requirement.id,
            answer=f"Not answered: {why}. The bid team must write this answer.",
        )
    return DraftAnswer(requirement_id=requirement.id, answer=" ".join(parts), sources=sources)


def critic_turn(request: TurnRequest) -> TurnAnswer:
    """Every requirement judged: an answer resting on a source, and on the
    price list where a price is asked."""
    try:
        requirements = Requirements.model_validate(request.inputs.get("requirements"))
        drafts = SectionDrafts.model_validate(request.inputs.get("drafts"))
    except ValidationError as err:
        return _refused(f"the inputs are not requirements and drafts ({err.error_count()})")
    answers = drafts.answers()
    failed = drafts.failed(requirements)
    findings = []
    for section, r in requirements.all():
        answer = answers.get(r.id)
        if answer is None:
            why = "no answer drafted"
            if section.number in failed:
                why += f": the drafter did not finish section {section.number}"
            findings.append(Finding(requirement_id=r.id, status="missing", note=why))
        elif not answer.sources:
            findings.append(
                Finding(requirement_id=r.id, status="missing", note="the answer rests on no source")
            )
        elif _pricing(r) is not None and not any(s.startswith("price:") for s in answer.sources):
            findings.append(
                Finding(
                    requirement_id=r.id,
                    status="missing",
                    note="a price is asked and none is quoted",
                )
            )
        else:
            findings.append(Finding(requirement_id=r.id, status="covered"))
    return _answer(output=Critique(findings=findings))


def _refused(why: str) -> TurnAnswer:
    """An answer that fails its schema, saying why: the Agent tells the
    model, and a person takes over at the bound."""
    return TurnAnswer(
        output={},
        format_errors=[f"the offline rules cannot read this task's inputs: {why}"],
        text=why,
        provider="offline",
        model=MODEL,
        finish_reason="stop",
    )


# What baton.llm.offline registers: the Ask tasks' rules and the agents' turns.
ASK_RULES = {
    "rfp_go_no_go": rules_task("rfp_go_no_go", go_no_go),
    "rfp_extract_requirements": rules_task("rfp_extract_requirements", extract_requirements),
}
AGENT_TURNS = {"rfp_draft_answers": drafter_turn, "rfp_check_coverage": critic_turn}
