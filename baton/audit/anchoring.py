"""The audit store and its checkpoint log together: how the sink anchors what it
wrote, how `baton audit verify` checks a store against the anchors, how a purge
leaves its signed tombstones, and how a retention override is kept in both (see
baton.audit.anchor and baton.audit.retention for what is signed, and
baton.audit.timestamping for the TSA's tokens on the checkpoints)."""

from __future__ import annotations

import base64
from collections.abc import Callable, Collection, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Literal

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from baton.audit.anchor import (
    Checkpoint,
    CheckpointLog,
    CheckpointSigner,
    Tombstone,
    check_against_log,
)
from baton.audit.anchor_proof import AnchorProof, proof_for
from baton.audit.events import AuditRecord, format_timestamp
from baton.audit.export import read_export
from baton.audit.retention import RetentionOverride, authorise, latest, parse
from baton.audit.store import AuditStore
from baton.audit.timestamping import TimestampAuthority, check_tokens, stamp, unstamped
from baton.audit.verify import (
    ChainHead,
    Problem,
    StoredRow,
    VerifyReport,
    exported_row,
    store_problem,
    summarise,
    verify_chain,
)
from baton.config import DirectoryEntry

PUBLIC_KEY_ENV = "BATON_AUDIT_CHECKPOINT_PUBLIC_KEY"


class AnchoredReport(VerifyReport):
    """A verification against the anchors, and the checkpoints whose time-stamp token is
    still to come (the TSA could not be reached yet): not a problem until it is late."""

    not_timestamped: list[int] = []


@dataclass
class _Overrides:
    """The retention overrides of the store and of the log that hold, by id, and what is
    wrong with the rest and with the one against the other."""

    held: dict[str, RetentionOverride] = field(default_factory=dict)
    logged: dict[str, RetentionOverride] = field(default_factory=dict)
    problems: list[Problem] = field(default_factory=list)

    def report(self, kind: Literal["edited", "checkpoint"], detail: str) -> None:
        self.problems.append(store_problem(kind, detail))


@dataclass(frozen=True)
class Anchors:
    """The checkpoint log and the key its notes are checked with; ``signer`` too where
    checkpoints are written (the sink, a purge), not where they are only checked; and the
    Time-Stamp Authority that stamps them, if one does."""

    log: CheckpointLog
    public: Ed25519PublicKey
    signer: CheckpointSigner | None = None
    timestamps: TimestampAuthority | None = None

    @classmethod
    def writer(
        cls, key_file: Path, log_folder: Path, timestamps: TimestampAuthority | None = None
    ) -> Anchors:
        signer = CheckpointSigner.load_or_create(key_file)
        return cls(CheckpointLog(log_folder), signer.public, signer, timestamps)

    @classmethod
    def reader(
        cls,
        key_file: Path,
        log_folder: Path,
        public_text: str | None,
        timestamps: TimestampAuthority | None = None,
    ) -> Anchors:
        """Checked with ``public_text`` (base64 of the raw Ed25519 key, for an auditor
        who holds only the public key), else with the key file's public half."""
        if public_text:
            public = Ed25519PublicKey.from_public_bytes(base64.b64decode(public_text))
            return cls(CheckpointLog(log_folder), public, timestamps=timestamps)
        if not key_file.exists():
            raise LookupError(
                f"no checkpoint key at {key_file}: nothing anchors this trail yet (workers make "
                f"the key when they first write), or set {PUBLIC_KEY_ENV} to its public key"
            )
        public = CheckpointSigner.load_or_create(key_file).public
        return cls(CheckpointLog(log_folder), public, timestamps=timestamps)

    def checkpoint(
        self,
        store: AuditStore,
        *,
        now: datetime,
        moved: Collection[str] | None = None,
        stamp: bool = True,
    ) -> Checkpoint | None:
        """A checkpoint of the heads that moved since the last one; ``moved`` names the
        chains a writer knows it appended to, else every chain is looked at. With a TSA
        and ``stamp``, then the tokens of every checkpoint still lacking one are fetched
        (`stamp_missing`); the sink does that on a thread of its own instead."""
        assert self.signer is not None, "a reader's anchors cannot sign"
        url = self.timestamps.url if self.timestamps is not None else ""
        made = self.log.append(self.signer, store.heads(moved), now=now, tsa=url)
        if stamp:
            self.stamp_missing()
        return made

    def stamp_missing(self, checkpoints: Collection[Checkpoint] | None = None) -> list[Checkpoint]:
        """Fetch the tokens of ``checkpoints`` (else of every checkpoint in the log) that
        were taken with a TSA configured and have none yet; returns those still waiting."""
        if self.timestamps is None or not self.timestamps.url:
            return []
        if checkpoints is None:
            checkpoints = unstamped(self.log, self.log.read(self.public)[0])
        return stamp(self.log, self.timestamps, checkpoints)

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

    def record_retention_override(
        self,
        store: AuditStore,
        override: RetentionOverride,
        directory: Mapping[str, DirectoryEntry],
        *,
        now: datetime,
    ) -> RetentionOverride:
        """Check ``override`` (signed by its user: see retention.authorise), stamp and
        countersign it, and keep it in the log and then the store. Raises OverrideRefused
        naming what does not hold; nothing is kept then."""
        signer = self.signer
        assert signer is not None, "a reader's anchors cannot sign"
        authorise(override, directory)
        stamped = override.model_copy(update={"recorded_at": format_timestamp(now), "note": ""})
        kept = stamped.model_copy(update={"note": signer.sign_note(stamped.statement())})
        # The log first, as for tombstones: a crash between leaves an override only the log
        # holds, which lowers nothing (see retention_override_in_effect) and verify names.
        self.log.write_retention_override(kept.override_id, kept.model_dump_json())
        store.record_retention_override(kept)
        return kept

    def retention_override_in_effect(self, store: AuditStore) -> RetentionOverride | None:
        """The latest retention override, if the store and the log hold it alike. Raises
        ValueError when they do not: an override deleted from the store (a later one that
        raised the floor again, say) must not let an earlier one back into effect."""
        found = self._overrides(store)
        last = latest([*found.held.values(), *found.logged.values()])
        if last is None:
            return None
        if found.held.get(last.override_id) != found.logged.get(last.override_id):
            raise ValueError(
                f"the latest retention override ({last.describe()}) is not the same in the "
                f"audit store and in the checkpoint log {self.log.folder}: `baton audit "
                "verify` names what differs; until then the retention floor is not lowered"
            )
        return last

    def _overrides(self, store: AuditStore) -> _Overrides:
        found = _Overrides()
        stored = store.retention_overrides()
        for override_id, text in sorted(stored.items()):
            override = parse(text)
            why = override if isinstance(override, str) else override.problem(self.public)
            if why is not None:
                found.report("edited", f"retention override {override_id} in the store: {why}")
            elif isinstance(override, RetentionOverride):
                found.held[override_id] = override
        for name, text in self.log.retention_overrides().items():
            override = parse(text)
            why = override if isinstance(override, str) else override.problem(self.public)
            if why is not None:
                found.report("checkpoint", f"the checkpoint log's retention override {name}: {why}")
            elif isinstance(override, RetentionOverride):
                found.logged[override.override_id] = override
        for override_id, override in found.logged.items():
            if override_id not in stored:
                found.report(
                    "checkpoint",
                    f"retention override {override_id} ({override.describe()}) is in the "
                    "checkpoint log but not in the store: deleted, or its recording was cut short",
                )
            elif override_id in found.held and found.held[override_id] != override:
                found.report(
                    "edited",
                    f"retention override {override_id} in the store differs from the "
                    "checkpoint log's copy",
                )
        for override_id, override in found.held.items():
            if override_id not in found.logged:
                found.report(
                    "checkpoint",
                    f"retention override {override_id} ({override.describe()}) is in the "
                    "store but not in the checkpoint log: recorded behind the log's back",
                )
        return found

    def proofs(self, workflow_ids: list[str]) -> list[AnchorProof]:
        log = self.log.view(self.public)
        found = [proof_for(log, workflow_id, self.log.folder) for workflow_id in workflow_ids]
        return [proof for proof in found if proof is not None]

    def verify(self, store: AuditStore, workflow_id: str | None = None) -> AnchoredReport:
        """The store's own chain check, then the store against the signed checkpoints and
        the checkpoints against their time-stamp tokens."""
        return self.verify_each(store, [workflow_id] if workflow_id is not None else None)

    def verify_each(
        self, store: AuditStore, workflow_ids: list[str] | None, *, now: datetime | None = None
    ) -> AnchoredReport:
        """``verify`` over the runs ``workflow_ids`` (every run: None), with the log and
        its tombstones read once for all of them; ``now`` decides which missing tokens are
        late."""
        log = self.log.view(self.public)
        tokens = check_tokens(
            self.log, log.checkpoints, self.timestamps, now=now or datetime.now(UTC)
        )
        problems = [
            store_problem("checkpoint", detail) for detail in [*log.problems, *tokens.problems]
        ]
        problems += self._overrides(store).problems
        try:
            stones = self.log.tombstones(self.public)
        except ValueError as err:
            stones = {}
            problems.append(store_problem("checkpoint", str(err)))
        chains = records = 0
        runs: list[str | None] = list(workflow_ids) if workflow_ids is not None else [None]
        for workflow_id in runs:
            report = store.verify(workflow_id)
            chains += report.chains
            records += report.records
            problems += report.problems
            problems += check_against_log(store.chains(workflow_id), log, stones, only=workflow_id)
        report = summarise(chains, records, problems)
        return AnchoredReport(**report.model_dump(), not_timestamped=tokens.pending)


def verify_export(
    path: Path, public: Ed25519PublicKey, timestamps: TimestampAuthority | None = None
) -> VerifyReport:
    """A JSONL export checked on its own, offline: each run's chain as exported (hashes,
    seq, links) and its anchor (the checkpoint's signature, the inclusion proof, the
    exported record at the signed seq carrying the signed hash, and the checkpoint's
    time-stamp token, checked with ``timestamps``' certificates)."""
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
        rows.setdefault(record.workflow_id, []).append(exported_row(record, line))
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
        unstamped = anchor.timestamp_problem(public, timestamps)
        if unstamped:
            report(workflow_id, anchor.seq, unstamped)
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
