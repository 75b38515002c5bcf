"""The audit store and its checkpoint log together: how the sink anchors what it
wrote, how `baton audit verify` checks a store against the anchors, and how a purge
leaves its signed tombstones (see baton.audit.anchor for what is signed)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from baton.audit.anchor import (
    AnchorProof,
    Checkpoint,
    CheckpointLog,
    CheckpointSigner,
    Tombstone,
    check_against_log,
    proof_for,
)
from baton.audit.events import AuditRecord
from baton.audit.export import read_export
from baton.audit.store import AuditStore
from baton.audit.verify import (
    COLUMNS,
    ChainHead,
    Problem,
    StoredRow,
    VerifyReport,
    summarise,
    verify_chain,
)

PUBLIC_KEY_ENV = "BATON_AUDIT_CHECKPOINT_PUBLIC_KEY"


@dataclass(frozen=True)
class Anchors:
    """The checkpoint log and the key its notes are checked with; ``signer`` too where
    checkpoints are written (the sink, a purge), not where they are only checked."""

    log: CheckpointLog
    public: Ed25519PublicKey
    signer: CheckpointSigner | None = None

    @classmethod
    def writer(cls, key_file: Path, log_folder: Path) -> Anchors:
        signer = CheckpointSigner.load_or_create(key_file)
        return cls(CheckpointLog(log_folder), signer.public, signer)

    @classmethod
    def reader(cls, key_file: Path, log_folder: Path, public_text: str | None) -> Anchors:
        """Checked with ``public_text`` (base64 of the raw Ed25519 key, for an auditor
        who holds only the public key), else with the key file's public half."""
        if public_text:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_text))
            return cls(CheckpointLog(log_folder), public)
        if not key_file.exists():
            raise LookupError(
                f"no checkpoint key at {key_file}: nothing anchors this trail yet (workers make "
                f"the key when they first write), or set {PUBLIC_KEY_ENV} to its public key"
            )
        return cls(CheckpointLog(log_folder), CheckpointSigner.load_or_create(key_file).public)

    def checkpoint(
        self, store: AuditStore, *, now: datetime, moved: Collection[str] | None = None
    ) -> Checkpoint | None:
        """A checkpoint of the heads that moved since the last one; ``moved`` names the
        chains a writer knows it appended to, else every chain is looked at."""
        assert self.signer is not None, "a reader's anchors cannot sign"
        return self.log.append(self.signer, store.heads(moved), now=now)

    def tombstone_maker(
        self, *, by: str, reason: str, now: datetime
    ) -> tuple[list[Tombstone], Callable[[str, ChainHead], Tombstone]]:
        made: list[Tombstone] = []
        signer = self.signer
        assert signer is not None, "a reader's anchors cannot sign"

        def make(workflow_id: str, head: ChainHead) -> Tombstone:
            stone = Tombstone.signed(signer, workflow_id, head, by=by, reason=reason, now=now)
            # In the log before the rows go: a crash between leaves a tombstone for a run
            # still stored (harmless), never a run gone without one.
            self.log.write_tombstone(stone)
            made.append(stone)
            return stone

        return made, make

    def proofs(self, workflow_ids: list[str]) -> list[AnchorProof]:
        log = self.log.view(self.public)
        found = [proof_for(log, workflow_id) for workflow_id in workflow_ids]
        return [proof for proof in found if proof is not None]

    def verify(self, store: AuditStore, workflow_id: str | None = None) -> VerifyReport:
        """The store's own chain check, then the store against the signed checkpoints."""
        return self.verify_each(store, [workflow_id] if workflow_id is not None else None)

    def verify_each(self, store: AuditStore, workflow_ids: list[str] | None) -> VerifyReport:
        """``verify`` over the runs ``workflow_ids`` (every run: None), with the log and
        its tombstones read once for all of them."""
        log = self.log.view(self.public)
        problems: list[Problem] = [
            Problem(workflow_id="", seq=0, event_id="", kind="checkpoint", detail=detail)
            for detail in log.problems
        ]
        try:
            stones = self.log.tombstones(self.public)
        except ValueError as err:
            stones = {}
            problems.append(
                Problem(workflow_id="", seq=0, event_id="", kind="checkpoint", detail=str(err))
            )
        chains = records = 0
        runs: list[str | None] = list(workflow_ids) if workflow_ids is not None else [None]
        for workflow_id in runs:
            report = store.verify(workflow_id)
            chains += report.chains
            records += report.records
            problems += report.problems
            problems += check_against_log(store.chains(workflow_id), log, stones, only=workflow_id)
        return summarise(chains, records, problems)


def verify_export(path: Path, public: Ed25519PublicKey) -> VerifyReport:
    """A JSONL export checked on its own, offline: each run's chain as exported (hashes,
    seq, links) and its anchor (the checkpoint's signature, the inclusion proof, and the
    exported record at the signed seq carrying the signed hash)."""
    lines, proofs = read_export(path)
    anchors = {proof.workflow_id: proof for proof in proofs}
    rows: dict[str, list[StoredRow]] = {}
    problems: list[Problem] = []

    def report(workflow_id: str, seq: int, detail: str) -> None:
        problems.append(
            Problem(workflow_id=workflow_id, seq=seq, event_id="", kind="checkpoint", detail=detail)
        )

    for number, line in enumerate(lines, start=1):
        try:
            record = AuditRecord.model_validate_json(line)
        except ValueError as err:
            report("", 0, f"line {number} is not a record: {str(err).splitlines()[0]}")
            continue
        columns = {column: getattr(record, column) for column in COLUMNS}
        rows.setdefault(record.workflow_id, []).append(StoredRow(record.seq, columns, line))
    for workflow_id, chain in sorted(rows.items()):
        chain.sort(key=lambda row: row.seq)
        last = AuditRecord.model_validate_json(chain[-1].record_json)
        problems += verify_chain(workflow_id, chain, ChainHead(last.seq, last.record_hash))
        anchor = anchors.get(workflow_id)
        if anchor is None:
            report(workflow_id, last.seq, "no checkpoint in the export covers this run")
            continue
        try:
            anchor.check(public)
        except ValueError as err:
            report(workflow_id, anchor.seq, f"its anchor does not hold: {err}")
            continue
        signed = next((row for row in chain if row.seq == anchor.seq), None)
        if signed is None:
            report(
                workflow_id,
                anchor.seq,
                f"the export ends at seq {last.seq}, but the checkpoint signed seq "
                f"{anchor.seq}: truncated",
            )
        elif signed.columns["record_hash"] != anchor.hash:
            report(
                workflow_id,
                anchor.seq,
                f"seq {anchor.seq} has another hash than the checkpoint signed: rewritten",
            )
        elif last.seq > anchor.seq:
            report(
                workflow_id,
                anchor.seq + 1,
                f"seq {anchor.seq + 1}-{last.seq} come after what the checkpoint signed: "
                "not anchored (export after a checkpoint, or appended since)",
            )
    return summarise(len(rows), len(lines), problems)
