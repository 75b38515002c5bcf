"""The retention floor, and the one way below it: an admin's signed override, kept in the
store and in the checkpoint log, honoured by the configuration and so by purge, and checked
by verify. The store tests run on SQLite and PostgreSQL; the command line on the default
SQLite store of the test's data dir."""

from __future__ import annotations

import json
import os
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from baton.audit.anchoring import Anchors
from baton.audit.events import AuditEvent
from baton.audit.reconcile import findings_chain
from baton.audit.retention import OverrideRefused, RetentionOverride, signed_override
from baton.audit.store import SqliteAuditStore
from baton.cli import main
from baton.config import DirectoryEntry, read_directory
from baton.keys import Signer
from tests.conftest import ROOT
from tests.test_audit_store import T0, Backend, backend, make_events

__all__ = ["backend"]  # the store fixture, on SQLite and PostgreSQL


def directory() -> dict[str, DirectoryEntry]:
    """The test directory: every user's public key in it, ada the one admin."""
    return read_directory(Path(os.environ["BATON_DIRECTORY"]))


@pytest.fixture
def anchors(tmp_path: Path) -> Anchors:
    return Anchors.writer(tmp_path / "audit-checkpoint.key", tmp_path / "checkpoints")


def ended_run(workflow_id: str, count: int, at: datetime) -> list[AuditEvent]:
    events = make_events(workflow_id, count, at=at)
    events[-1] = events[-1].model_copy(update={"event_type": "run.ended", "node": None})
    return events


def by(user: str, keyring: dict[str, Ed25519PrivateKey], *, key: str = "") -> Signer:
    return Signer(user, keyring[key or user])


def test_only_an_admins_own_signature_records_an_override(
    backend: Backend, anchors: Anchors, keyring: dict[str, Ed25519PrivateKey]
) -> None:
    backend.store.append(make_events("wf-1", 1), retention_days=183)
    made = signed_override(by("ada", keyring), days=90, reason="a contract keeps 90 days")
    unsigned = made.model_copy(
        update={"signature": made.signature.model_copy(update={"key": "", "value": ""})}
    )
    refused: list[tuple[RetentionOverride, str]] = [
        (unsigned, "not signed by 'ada': the key that signed is not one of user 'ada''s keys"),
        # mallory's key is in no directory entry: a name in the override proves nothing.
        (
            signed_override(by("ada", keyring, key="mallory"), days=30, reason="r"),
            "not signed by 'ada'",
        ),
        (
            signed_override(by("rita", keyring), days=30, reason="r"),
            r"user 'rita' \(reviewer\) may not lower the retention floor; it needs the role admin",
        ),
        # Signed for 90 days, then changed to ask for 30.
        (made.model_copy(update={"days": 30}), "the signature is not valid for this act"),
        (signed_override(by("ada", keyring), days=30, reason=" "), "needs a reason"),
        (signed_override(by("ada", keyring), days=0, reason="r"), "at least 1 day"),
    ]
    for override, why in refused:
        with pytest.raises(OverrideRefused, match=why):
            anchors.record_retention_override(backend.store, override, directory(), now=T0)

    assert backend.store.retention_overrides() == {}
    assert anchors.log.retention_overrides() == {}
    assert anchors.retention_override_in_effect(backend.store) is None


def test_with_an_override_a_purge_keeps_30_days_and_everything_verifies(
    backend: Backend, anchors: Anchors, keyring: dict[str, Ed25519PrivateKey]
) -> None:
    now = T0 + timedelta(days=100)
    backend.store.append(ended_run("old", 3, at=T0), retention_days=30)
    backend.clock.now = now
    backend.store.append(make_events("new", 2, at=now), retention_days=30)
    anchors.checkpoint(backend.store, now=now)
    override = signed_override(by("ada", keyring), days=30, reason="the DPA ruled 30 days")

    kept = anchors.record_retention_override(backend.store, override, directory(), now=now)

    assert anchors.retention_override_in_effect(backend.store) == kept
    assert (kept.by, kept.role, kept.days, kept.recorded_at) == (
        "ada",
        "admin",
        30,
        "2026-06-10T09:00:00.000000+00:00",
    )
    stones, make = anchors.tombstone_maker(by="ada", reason="30 days are over", now=now)
    removed = backend.store.purge(
        now - timedelta(days=40), min_retention_days=kept.days, now=now, tombstone=make
    )
    assert removed == 3 and [s.workflow_id for s in stones] == ["old"]
    assert len(backend.store.records("new")) == 2
    report = anchors.verify(backend.store)
    assert report.ok, report.problems
    assert set(anchors.log.tombstones(anchors.public)) == {"old"}
    assert kept.problem(anchors.public) is None


def test_verify_names_an_override_edited_forged_or_deleted_in_the_store(
    backend: Backend, anchors: Anchors, keyring: dict[str, Ed25519PrivateKey]
) -> None:
    backend.store.append(make_events("wf-1", 1), retention_days=183)
    override = signed_override(by("ada", keyring), days=90, reason="a contract keeps 90 days")
    kept = anchors.record_retention_override(backend.store, override, directory(), now=T0)
    assert anchors.verify(backend.store).ok
    with pytest.raises(Exception, match="audit_overrides is append-only"):
        backend.sql("UPDATE audit_overrides SET override_json = ''", ())

    edited = json.loads(kept.model_dump_json()) | {"days": 1}
    backend.tamper("UPDATE audit_overrides SET override_json = ?", (json.dumps(edited),))

    details = [p.detail for p in anchors.verify(backend.store).problems]
    assert details == [
        f"retention override {kept.override_id} in the store: the signature is not valid for "
        "this act by user 'ada'"
    ]
    with pytest.raises(ValueError, match="not the same in the audit store and in the checkpoint"):
        anchors.retention_override_in_effect(backend.store)

    # A row written straight into the table, later and lower, is no override at all.
    backend.tamper("DELETE FROM audit_overrides")
    forged = kept.model_copy(
        update={
            "days": 7,
            "recorded_at": "2026-03-03T09:00:00.000000+00:00",
            "signature": kept.signature.model_copy(update={"nonce": "forged"}),
        }
    )
    backend.sql(
        "INSERT INTO audit_overrides (override_id, recorded_at, override_json) VALUES (?, ?, ?)",
        ("forged", forged.recorded_at, forged.model_dump_json()),
    )

    details = [p.detail for p in anchors.verify(backend.store).problems]
    assert any(d.startswith("retention override forged in the store: ") for d in details)
    assert any(
        f"retention override {kept.override_id} (90 days, by ada (admin) at " in d
        and "is in the checkpoint log but not in the store: deleted" in d
        for d in details
    )
    # The deleted override is still the latest that holds: it is not silently dropped.
    with pytest.raises(ValueError, match="not the same in the audit store"):
        anchors.retention_override_in_effect(backend.store)


def test_a_retention_below_the_floor_needs_an_admins_signed_override(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    config = tmp_path / "baton.toml"
    lowered = "retention_days = 30\nmin_retention_days = 30"
    config.write_text((ROOT / "baton.toml").read_text().replace("retention_days = 183", lowered))
    monkeypatch.setenv("BATON_CONFIG", str(config))
    now = datetime.now(UTC)
    path = Path(os.environ["BATON_DATA_DIR"]) / "audit.db"
    SqliteAuditStore(path, clock=lambda: now - timedelta(days=60)).append(
        ended_run("old", 3, at=now - timedelta(days=60)), retention_days=30
    )
    SqliteAuditStore(path).append(make_events("new", 2, at=now), retention_days=30)
    purge = ["audit", "purge", "--before", f"{now - timedelta(days=40):%Y-%m-%d}"]
    purge += ["--reason", "30 days are over", "--as", "ada"]
    override = ["audit", "retention-override", "--days", "30", "--reason", "the DPA ruled 30 days"]

    assert main(purge) == 2
    err = capsys.readouterr().err
    assert "[audit] retention_days = 30 in" in err
    assert "`baton audit retention-override --days 30 --reason WHY --as ADMIN`" in err
    assert main([*override, "--as", "rita"]) == 2
    assert "it needs the role admin" in capsys.readouterr().err

    assert main([*override, "--as", "ada"]) == 0
    assert "recorded retention override" in capsys.readouterr().out
    assert main(purge) == 0
    assert "purged 3 records of 1 run(s)" in capsys.readouterr().out
    assert main(["audit", "verify"]) == 0
    out = tmp_path / "new.html"
    assert main(["audit", "export", "new", "--out", str(out)]) == 0
    page = out.read_text(encoding="utf-8")
    assert "the floor of 183 days is lowered to 30 days by ada (admin), recorded" in page
    assert "the DPA ruled 30 days" in page

    # An override back to the floor ends it: 30 days are refused again.
    assert main([*override[:3], "183", "--reason", "the ruling was overturned", "--as", "ada"]) == 0
    capsys.readouterr()
    assert main(purge) == 2
    assert "the retention override in effect (183 days, by ada (admin)" in capsys.readouterr().err


def test_a_legal_hold_keeps_the_runs_reconcile_findings_until_released(
    backend: Backend, anchors: Anchors
) -> None:
    """What reconcile found about a held run is part of what the matter needs: a purge that
    keeps the run must keep its findings chain too, and a release lets both go."""
    old = T0 - timedelta(days=400)
    backend.clock.now = old
    for run in ("held", "other"):
        backend.store.append(ended_run(run, 2, at=old), retention_days=183)
        backend.store.append(make_events(findings_chain(run), 1, at=old), retention_days=183)
    backend.store.hold("held", by="ada", reason="dispute 2026-17", now=old)
    backend.clock.now = T0
    _, make = anchors.tombstone_maker(by="ada", reason="retention over", now=T0)

    backend.store.purge(T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=make)

    assert len(backend.store.records("held")) == 2
    assert len(backend.store.records(findings_chain("held"))) == 1
    assert backend.store.records("other") == []
    assert backend.store.records(findings_chain("other")) == []

    assert backend.store.release("held")
    backend.store.purge(T0 - timedelta(days=200), min_retention_days=183, now=T0, tombstone=make)
    assert backend.store.records("held") == []
    assert backend.store.records(findings_chain("held")) == []
