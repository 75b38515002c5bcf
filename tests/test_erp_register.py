"""The ERP document register as document intake writes and reads it: an
entry keeps the PO number, older files are migrated, and the duplicate check
finds a party's earlier entries (never the run's own) and says which a
reviewer must see."""

from __future__ import annotations

import dataclasses
import json
import sqlite3
from pathlib import Path
from typing import Any

from temporalio.testing import ActivityEnvironment

from activities.documents import (
    EarlierEntries,
    EarlierEntriesQuery,
    ExtractedDocument,
    VoidReceipt,
    duplicate_findings,
    find_earlier_entries,
    void_document,
)
from baton.compensation import Undo
from systems.erp import DocumentRegister
from systems.keyed import payload_sha256


def in_run(workflow_id: str, activity_id: str) -> ActivityEnvironment:
    """An activity context of ``workflow_id``; without the run header, so
    keys take the ``<workflow id>/<activity id>`` form."""
    env = ActivityEnvironment()
    env.info = dataclasses.replace(env.info, workflow_id=workflow_id, activity_id=activity_id)
    return env


DOCUMENT: dict[str, Any] = {
    "doc_type": "invoice",
    "number": "ACME-2026-0142",
    "issue_date": "2026-03-14",
    "party": "ACME Industrial Supply B.V.",
    "currency": "EUR",
    "total": "4434.05",
    "po_number": "PO-4500-1001",
}


def document(**changes: Any) -> ExtractedDocument:
    return ExtractedDocument.model_validate({**DOCUMENT, **changes})


def enter(key: str, **changes: Any) -> int:
    return DocumentRegister().enter(idempotency_key=key, document={**DOCUMENT, **changes}).entry_id


def test_an_entry_keeps_its_po_number_and_is_found_by_party_however_spelt() -> None:
    first = enter("run-a/run/enter#1")
    enter("run-b/run/enter#1", doc_type="receipt")
    voided = enter("run-c/run/enter#1", number="ACME-2026-0143")
    DocumentRegister().void(voided, reason="run run-c was stopped")

    [entry] = DocumentRegister().entries("run-a/")
    assert (entry["po_number"], entry["issue_date"]) == ("PO-4500-1001", "2026-03-14")
    found = DocumentRegister().for_party(" acme  INDUSTRIAL supply b.v.", "invoice")
    # The receipt is another type; the voided entry is not in force.
    assert [row["entry_id"] for row in found] == [first]
    assert DocumentRegister().for_party("Globex", "invoice") == []


# A register file from after entries carried a hash, before the PO number.
HASHED_SCHEMA = """
CREATE TABLE documents (
    entry_id INTEGER PRIMARY KEY AUTOINCREMENT,
    idempotency_key TEXT NOT NULL UNIQUE,
    payload_sha256 TEXT,
    doc_type TEXT NOT NULL, number TEXT, party TEXT, currency TEXT, total TEXT,
    payload TEXT NOT NULL,
    entered_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%fZ', 'now'))
);
"""


def test_a_register_file_from_before_the_po_number_gets_it_from_each_document(
    tmp_path: Path,
) -> None:
    path = tmp_path / "old-erp.sqlite"
    with sqlite3.connect(path) as db:
        db.executescript(HASHED_SCHEMA)
        db.execute(
            "INSERT INTO documents (idempotency_key, payload_sha256, doc_type, number, party,"
            " currency, total, payload) VALUES (?, ?, ?, ?, ?, ?, ?, ?)",
            (
                "wf/run/enter#1",
                payload_sha256(DOCUMENT),
                "invoice",
                DOCUMENT["number"],
                DOCUMENT["party"],
                "EUR",
                "4434.05",
                json.dumps(DOCUMENT, sort_keys=True),
            ),
        )
    db.close()

    register = DocumentRegister(path)
    [entry] = register.entries()
    assert (entry["po_number"], entry["issue_date"]) == ("PO-4500-1001", "2026-03-14")
    assert [row["entry_id"] for row in register.for_party(DOCUMENT["party"], "invoice")] == [
        entry["entry_id"]
    ]
    # The entry's retried write still finds it: the hash did not change.
    assert not register.enter(idempotency_key="wf/run/enter#1", document=DOCUMENT).created
    # A second connection (another worker thread) finds it migrated.
    assert DocumentRegister(path).enter(idempotency_key="new", document=DOCUMENT).created


def test_a_document_without_a_po_number_is_written_as_before_the_field() -> None:
    """A run entered its document before the field existed, then its step was
    retried by a newer worker: the same document, the same hash."""
    # What enter_document wrote of this document before the field existed.
    before = {
        **{k: v for k, v in DOCUMENT.items() if k != "po_number"},
        "due_date": None,
        "line_items": [],
        "subtotal": None,
        "tax": None,
    }
    DocumentRegister().enter(idempotency_key="wf/run/enter#1", document=before)
    again = document(po_number=None).model_dump(mode="json")
    assert "po_number" not in again
    written = DocumentRegister().enter(idempotency_key="wf/run/enter#1", document=again)
    assert not written.created


def test_the_duplicate_check_leaves_out_the_runs_own_entry_and_names_the_others() -> None:
    own = enter("wf/enter#1")
    query = EarlierEntriesQuery(document=document())

    assert in_run("wf", "duplicates#1").run(find_earlier_entries, query).entries == []
    other = in_run("wf-2", "duplicates#1").run(find_earlier_entries, query)
    assert [(e.entry_id, e.same_number, e.po_number) for e in other.entries] == [
        (own, True, "PO-4500-1001")
    ]


def test_the_duplicate_check_compares_numbers_as_ap_does_and_amounts_in_their_currency() -> None:
    same_number = enter("a/enter#1", number="acme 2026 142", total="10.00")
    renumbered = enter("b/enter#1", number="ACME-2026-0999")
    enter("c/enter#1", number="ACME-2026-0998", currency="USD")
    enter("d/enter#1", number="ACME-2026-0997", total="4434.06")

    found = in_run("wf", "duplicates#1").run(
        find_earlier_entries, EarlierEntriesQuery(document=document())
    )
    assert [(e.entry_id, e.same_number) for e in found.entries] == [
        (same_number, True),
        (renumbered, False),
    ]


def test_nothing_to_compare_without_a_party_or_a_known_type() -> None:
    enter("a/enter#1")
    for unknown in (document(party=None), document(doc_type="unknown")):
        query = EarlierEntriesQuery(document=unknown)
        assert in_run("wf", "duplicates#1").run(find_earlier_entries, query).entries == []


def test_duplicate_findings_name_the_entry_and_keep_to_the_window() -> None:
    earlier = EarlierEntries.model_validate(
        {
            "entries": [
                {
                    "entry_id": 7,
                    "number": "ACME-2026-0142",
                    "issue_date": "2026-03-14",
                    "currency": "EUR",
                    "total": "4434.05",
                    "entered_at": "2026-03-15T09:00:00.000Z",
                    "same_number": True,
                },
                {
                    "entry_id": 8,
                    "number": "ACME-2026-0999",
                    "issue_date": "2026-03-01",
                    "currency": "EUR",
                    "total": "4434.05",
                    "entered_at": "2026-03-02T09:00:00.000Z",
                    "same_number": False,
                },
            ]
        }
    )

    number, amount = duplicate_findings(document(), earlier, window_days=14)
    assert number.code == "duplicate_number"
    assert number.message == (
        "invoice ACME-2026-0142 of ACME Industrial Supply B.V. is already in the ERP as entry "
        "#7 (ACME-2026-0142, dated 2026-03-14, 4,434.05 EUR, entered 2026-03-15T09:00:00.000Z)"
    )
    assert amount.code == "duplicate_amount_and_date"
    assert "entry #8 (ACME-2026-0999)" in amount.message
    assert "within 14 days of 2026-03-14" in amount.message
    # Thirteen days apart: outside a window of 12, and never for an undated document.
    assert [f.code for f in duplicate_findings(document(), earlier, 12)] == ["duplicate_number"]
    undated = document(issue_date="30/02/2026")
    assert [f.code for f in duplicate_findings(undated, earlier, 14)] == ["duplicate_number"]


def test_an_entry_whose_step_never_returned_is_voided_by_its_key(isolated_data: Path) -> None:
    register = DocumentRegister()
    key = "intake-1/run-1/enter#1"
    entry = register.enter(idempotency_key=key, document=DOCUMENT)
    other = register.enter(idempotency_key="intake-1/run-1/enter#10", document=DOCUMENT)
    # Stopped while the register wrote: the step's output never came back.
    undo = Undo(node="enter", visit=1, idempotency_key=key, output=None, finished=False)
    voided = in_run("intake-1", "undo-enter#1").run(void_document, undo)
    assert voided.entry_id == entry.entry_id and voided.voided_at is not None
    rows = {e["entry_id"]: e for e in register.entries("intake-1/")}
    assert rows[entry.entry_id]["void_reason"] == "run intake-1 was undone at 'enter'"
    assert rows[other.entry_id]["voided_at"] is None, "another visit's entry is not its to undo"
    # Asked again, the first void stands.
    assert in_run("intake-1", "undo-enter#1").run(void_document, undo) == voided


def test_a_visit_that_entered_nothing_has_nothing_to_undo(isolated_data: Path) -> None:
    undo = Undo(node="enter", visit=1, idempotency_key="intake-2/run-2/enter#1", finished=False)
    assert in_run("intake-2", "undo-enter#1").run(void_document, undo) == VoidReceipt(
        entry_id=None, voided_at=None
    )
    assert DocumentRegister().entries("intake-2/") == []
