"""The trail anchored outside its database: signed checkpoints over the chain heads.

Every attack here leaves the hash chains consistent, so the store's own check passes;
each is done on a real store (SQLite and PostgreSQL) the way an insider with write
access would, and `Anchors.verify` must fail naming the run and the record.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baton.audit.anchor import (
    inclusion_proof,
    key_id,
    leaf_bytes,
    merkle_root,
    open_note,
    root_from_proof,
)
from baton.audit.anchoring import Anchors
from baton.audit.events import AuditEvent, AuditRecord, seal
from baton.audit.store import AuditStoreMissing, SqliteAuditStore
from baton.audit.store_layout import to_micros
from baton.audit.verify import ChainHead
from baton.cli import main
from tests.test_audit_store import T0, Backend, backend, chain, insert_record, make_events

__all__ = ["backend"]  # the store fixture, on SQLite and PostgreSQL


# -- the Merkle tree and the note format ---------------------------------------------------


@pytest.mark.parametrize("size", [1, 2, 3, 4, 5, 7, 8, 9, 16, 17])
def test_every_leaf_proves_its_place_in_the_tree(size: int) -> None:
    leaves = [leaf_bytes(f"wf-{i}", ChainHead(i + 1, f"h{i}")) for i in range(size)]
    root = merkle_root(leaves)
    for index, leaf in enumerate(leaves):
        assert root_from_proof(leaf, index, size, inclusion_proof(leaves, index)) == root
    if size > 1:
        forged = leaf_bytes("wf-0", ChainHead(1, "other"))
        assert root_from_proof(forged, 0, size, inclusion_proof(leaves, 0)) != root


def test_a_checkpoint_is_a_c2sp_signed_note(tmp_path: Path) -> None:
    anchors = Anchors.writer(tmp_path / "key", tmp_path / "log")
    signer = anchors.signer
    assert signer is not None
    store = SqliteAuditStore(tmp_path / "audit.db")
    store.append(make_events("wf-1", 3), retention_days=183)

    made = anchors.checkpoint(store, now=T0)

    assert made is not None
    origin, size, _root, prev, time, blank, signature = made.note.split("\n")[:7]
    assert (origin, size, prev, time, blank) == (
        "baton.audit",
        "1",
        "prev ",
        "time 2026-03-02T09:00:00.000000+00:00",
        "",
    )
    assert signature.startswith("\u2014 baton-audit ")
    sig = base64.b64decode(signature.split(" ")[2])
    assert sig[:4] == key_id(signer.public) and len(sig) == 68
    assert open_note(made.note, signer.public).startswith("baton.audit\n1\n")
    other = Ed25519PrivateKey.generate().public_key()
    with pytest.raises(ValueError, match="no signature by the baton-audit key"):
        open_note(made.note, other)
    assert anchors.checkpoint(store, now=T0) is None, "nothing moved: no checkpoint"


# -- the tamper suite ----------------------------------------------------------------------


def ended_run(workflow_id: str, count: int) -> list[AuditEvent]:
    events = make_events(workflow_id, count)
    last = events[-1]
    events[-1] = last.model_copy(update={"event_type": "run.ended", "node": None})
    return events


@pytest.fixture
def anchored(backend: Backend, tmp_path: Path) -> tuple[Backend, Anchors]:
    """wf-done (ended) and wf-open (still going), checkpointed."""
    anchors = Anchors.writer(tmp_path / "audit-checkpoint.key", tmp_path / "checkpoints")
    backend.store.append(ended_run("wf-done", 5), retention_days=183)
    backend.store.append(make_events("wf-open", 4), retention_days=183)
    backend.clock.now = T0 + timedelta(minutes=1)
    assert anchors.checkpoint(backend.store, now=T0 + timedelta(minutes=1)) is not None
    assert anchors.verify(backend.store).ok
    return backend, anchors


def stored(backend: Backend, workflow_id: str) -> list[AuditRecord]:
    return backend.store.records(workflow_id)


def insert(backend: Backend, record: AuditRecord) -> None:
    insert_record(backend, record)


def set_head(backend: Backend, workflow_id: str, seq: int, hash_: str) -> None:
    backend.sql(
        "UPDATE audit_chains SET head_seq = ?, head_hash = ? WHERE workflow_id = ?",
        (seq, hash_, workflow_id),
    )


def reseal(record: AuditRecord, prev_hash: str, **changes: object) -> AuditRecord:
    event = AuditEvent.model_validate(record.model_dump(include=set(AuditEvent.model_fields)))
    return seal(
        event.model_copy(update=changes),
        seq=record.seq,
        prev_hash=prev_hash,
        recorded_at=record.recorded_at,
        retain_until=record.retain_until,
    )


def problems(anchors: Anchors, backend: Backend) -> list[tuple[str, int, str]]:
    assert backend.store.verify().ok, "the attack left the chains consistent"
    report = anchors.verify(backend.store)
    assert not report.ok
    return [(p.workflow_id, p.seq, p.detail) for p in report.problems]


def test_a_truncated_chain_with_its_head_moved_back_is_named(
    anchored: tuple[Backend, Anchors],
) -> None:
    backend, anchors = anchored
    kept = stored(backend, "wf-open")[:2]
    backend.drop_guards()
    backend.sql(f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-open')} AND seq > 2", ())
    set_head(backend, "wf-open", 0, "")  # the forward-only guard is gone too
    set_head(backend, "wf-open", 2, kept[-1].record_hash)
    backend.restore_guards()

    ((workflow_id, seq, detail),) = problems(anchors, backend)
    assert (workflow_id, seq) == ("wf-open", 4)
    assert "truncated" in detail and "checkpoint 1" in detail


def test_a_record_changed_and_everything_after_rehashed_is_named(
    anchored: tuple[Backend, Anchors],
) -> None:
    """The second approver vera becomes sam: re-hashed from there to the head."""
    backend, anchors = anchored
    records = stored(backend, "wf-done")
    backend.drop_guards()
    backend.sql(
        f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-done')} AND seq >= 2", ()
    )
    prev = records[0].record_hash
    for index, record in enumerate(records[1:]):
        changed = {"data": {**record.data, "approver": "sam"}} if index == 0 else {}
        forged = reseal(record, prev, **changed)
        insert(backend, forged)
        prev = forged.record_hash
    set_head(backend, "wf-done", 0, "")
    set_head(backend, "wf-done", 5, prev)
    backend.restore_guards()

    found = problems(anchors, backend)
    assert [(w, s) for w, s, _ in found] == [("wf-done", 5)]
    assert "rewritten" in found[0][2]


def test_a_run_deleted_with_its_head_is_named(anchored: tuple[Backend, Anchors]) -> None:
    backend, anchors = anchored
    backend.drop_guards()
    backend.sql(f"DELETE FROM audit_refs WHERE workflow_id = {chain('wf-open')}", ())
    backend.sql(f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-open')}", ())
    backend.sql("DELETE FROM audit_runs WHERE workflow_id = 'wf-open'", ())
    backend.sql("DELETE FROM audit_chains WHERE workflow_id = 'wf-open'", ())
    backend.restore_guards()

    ((workflow_id, seq, detail),) = problems(anchors, backend)
    assert (workflow_id, seq) == ("wf-open", 4)
    assert "gone from the store" in detail and "deleted" in detail


def test_a_forged_decision_appended_after_the_end_is_named(
    anchored: tuple[Backend, Anchors],
) -> None:
    backend, anchors = anchored
    last = stored(backend, "wf-done")[-1]
    event = AuditEvent(
        event_id="wf-done:forged",
        workflow_id="wf-done",
        run_id="run-1",
        process="invoice",
        event_type="gate.decided",
        occurred_at=last.occurred_at,
        node="review",
        data={"outcome": "approve", "approved_by": ["mallory"]},
    )
    forged = seal(
        event,
        seq=6,
        prev_hash=last.record_hash,
        recorded_at=last.recorded_at,
        retain_until=last.retain_until,
    )
    # Appending needs no guard dropped: inserts and a forward head move are allowed.
    insert(backend, forged)
    set_head(backend, "wf-done", 6, forged.record_hash)

    ((workflow_id, seq, detail),) = problems(anchors, backend)
    assert (workflow_id, seq) == ("wf-done", 6)
    assert "appended after the end" in detail


def test_a_backdated_append_is_named(anchored: tuple[Backend, Anchors]) -> None:
    """A record slipped in later under an earlier time than a checkpoint that lacks it."""
    backend, anchors = anchored
    # Claims a time well before the checkpoint at T0 + 1 min, which does not hold it.
    backend.clock.now = T0 - timedelta(minutes=5)
    backend.store.append(make_events("wf-open", 1, start=4), retention_days=183)

    ((workflow_id, seq, detail),) = problems(anchors, backend)
    assert (workflow_id, seq) == ("wf-open", 5)
    assert "backdated" in detail


def test_an_edited_recorded_at_breaks_the_record_hash(anchored: tuple[Backend, Anchors]) -> None:
    backend, _ = anchored
    backend.tamper(
        f"UPDATE audit_records SET recorded_at = ? WHERE workflow_id = {chain('wf-open')}"
        " AND seq = 2",
        (to_micros(datetime(2020, 1, 1, tzinfo=UTC)),),
    )
    report = backend.store.verify("wf-open")
    assert [(p.seq, p.kind) for p in report.problems] == [(2, "edited")]


def test_a_field_added_to_a_record_is_flagged(anchored: tuple[Backend, Anchors]) -> None:
    """Version 4 keeps the data alone as JSON: whatever is added is inside the hash. (A field
    added to the JSON of an older record: tests.test_audit_store.)"""
    backend, _ = anchored
    where = f"WHERE workflow_id = {chain('wf-open')} AND seq = 3"
    (row,) = backend.sql(f"SELECT record_json FROM audit_records {where}", ())
    doc = json.loads(row[0])
    doc["approved_by_board"] = True
    backend.tamper(f"UPDATE audit_records SET record_json = ? {where}", (json.dumps(doc),))
    (problem,) = backend.store.verify("wf-open").problems
    assert (problem.seq, problem.kind) == (3, "edited")
    assert problem.detail == "content no longer matches its record_hash"


def test_a_dropped_guard_is_reported_and_not_put_back(anchored: tuple[Backend, Anchors]) -> None:
    backend, anchors = anchored
    backend.drop_guards()

    report = anchors.verify(backend.store)
    again = anchors.verify(backend.store)

    assert {p.kind for p in report.problems} == {"guard_missing"}
    assert "audit_records_no_delete" in " ".join(p.detail for p in report.problems)
    assert again.problems == report.problems, "verify put nothing back"


def test_the_database_refuses_deletes_and_moving_a_head_back(
    anchored: tuple[Backend, Anchors],
) -> None:
    backend, _ = anchored
    for statement in (
        f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-open')}",
        "DELETE FROM audit_runs WHERE workflow_id = 'wf-open'",
        "DELETE FROM audit_chains WHERE workflow_id = 'wf-open'",
        "UPDATE audit_chains SET head_seq = 1 WHERE workflow_id = 'wf-open'",
    ):
        with pytest.raises(Exception, match=r"append-only|only moves forward|only with a purge"):
            backend.sql(statement, ())
    assert len(stored(backend, "wf-open")) == 4


def test_a_changed_or_missing_checkpoint_is_named(
    anchored: tuple[Backend, Anchors], tmp_path: Path
) -> None:
    backend, anchors = anchored
    backend.store.append(make_events("wf-open", 1, start=4), retention_days=183)
    assert anchors.checkpoint(backend.store, now=T0 + timedelta(minutes=2)) is not None
    heads = anchors.log.folder / "00000001.heads.json"
    doctored = json.loads(heads.read_text())
    doctored["wf-open"]["seq"] = 3
    heads.write_text(json.dumps(doctored))

    details = [p.detail for p in anchors.verify(backend.store).problems]

    assert any("does not match the signed root" in d for d in details)
    (anchors.log.folder / "00000001.note").unlink()
    details = [p.detail for p in anchors.verify(backend.store).problems]
    assert any("checkpoint 1 is missing from the log" in d for d in details)


def test_a_purge_leaves_a_signed_tombstone_and_verifies(
    anchored: tuple[Backend, Anchors],
) -> None:
    backend, anchors = anchored
    now = T0 + timedelta(days=400)
    stones, make = anchors.tombstone_maker(by="ada", reason="retention over", now=now)
    removed = backend.store.purge(
        T0 + timedelta(days=200), min_retention_days=183, now=now, tombstone=make
    )

    assert removed == 9 and {s.workflow_id for s in stones} == {"wf-done", "wf-open"}
    assert anchors.verify(backend.store).ok
    for path in (anchors.log.folder / "tombstones").glob("*.json"):
        path.write_text(path.read_text().replace("retention over", "nobody asked"))
    with pytest.raises(ValueError, match="signature does not verify"):
        anchors.log.tombstones(anchors.public)


def test_a_held_run_is_not_purged(anchored: tuple[Backend, Anchors]) -> None:
    backend, anchors = anchored
    backend.store.hold("wf-done", by="ada", reason="dispute 2026-17", now=T0)
    now = T0 + timedelta(days=400)
    _, make = anchors.tombstone_maker(by="ada", reason="retention over", now=now)

    backend.store.purge(T0 + timedelta(days=200), min_retention_days=183, now=now, tombstone=make)

    assert len(stored(backend, "wf-done")) == 5 and stored(backend, "wf-open") == []
    assert backend.store.release("wf-done")


# -- verify tells the truth and writes nothing ----------------------------------------------


def digest_of(folder: Path) -> dict[str, str]:
    return {
        p.name: hashlib.sha256(p.read_bytes()).hexdigest()
        for p in sorted(folder.iterdir())
        if p.is_file()
    }


def test_verify_leaves_the_store_byte_identical_and_refuses_what_is_not_there(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("BATON_DATA_DIR", str(data))
    monkeypatch.delenv("BATON_AUDIT_URL", raising=False)
    store = SqliteAuditStore(data / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)
    assert main(["audit", "checkpoint"]) == 0
    before = digest_of(data)

    assert main(["audit", "verify"]) == 0
    assert main(["audit", "verify", "wf-1"]) == 0
    assert "chain ok: 1 run(s), 3 records verified" in capsys.readouterr().out
    assert digest_of(data) == before

    assert main(["audit", "verify", "wf-typo"]) == 2
    assert "no audit records for run 'wf-typo'" in capsys.readouterr().err
    monkeypatch.setenv("BATON_AUDIT_URL", f"sqlite:///{tmp_path / 'mistyped.db'}")
    assert main(["audit", "verify"]) == 2
    assert "no audit store at" in capsys.readouterr().err
    assert not (tmp_path / "mistyped.db").exists()
    with pytest.raises(AuditStoreMissing):
        SqliteAuditStore(tmp_path / "mistyped.db").verify()


def test_an_export_carries_its_anchor_and_verifies_offline(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    data = tmp_path / "data"
    monkeypatch.setenv("BATON_DATA_DIR", str(data))
    monkeypatch.delenv("BATON_AUDIT_URL", raising=False)
    SqliteAuditStore(data / "audit.db").append(ended_run("wf-1", 4), retention_days=183)
    export = tmp_path / "wf-1.jsonl"

    assert main(["audit", "export", "wf-1", "--format", "jsonl", "--out", str(export)]) == 0
    lines = export.read_text().splitlines()
    assert len(lines) == 5 and lines[-1].startswith('{"anchor":')
    # Offline: only the public key, no store.
    public = Anchors.writer(data / "audit-checkpoint.key", data / "x").public
    monkeypatch.setenv("BATON_AUDIT_URL", f"sqlite:///{tmp_path / 'elsewhere.db'}")
    monkeypatch.setenv(
        "BATON_AUDIT_CHECKPOINT_PUBLIC_KEY", base64.b64encode(public.public_bytes_raw()).decode()
    )
    assert main(["audit", "verify", "--file", str(export)]) == 0
    assert "chain ok: 1 run(s), 4 records verified" in capsys.readouterr().out

    def verdict(edited: list[str]) -> str:
        export.write_text("\n".join(edited) + "\n")
        assert main(["audit", "verify", "--file", str(export)]) == 1
        return capsys.readouterr().out

    doc = json.loads(lines[1])
    doc["data"]["amount"] = 1
    assert "wf-1 seq 2 (wf-1:1): edited" in verdict([lines[0], json.dumps(doc), *lines[2:]])
    assert "truncated" in verdict([*lines[:3], lines[-1]])
    anchor = json.loads(lines[-1])
    anchor["anchor"]["hash"] = "0" * 64  # a forged head to go with a rewritten chain
    assert "its anchor does not hold" in verdict([*lines[:-1], json.dumps(anchor)])
    assert "no checkpoint in the export covers this run" in verdict(lines[:-1])
