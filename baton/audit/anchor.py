"""Anchors for the audit trail outside its database: signed checkpoints.

The hash chains catch an edit that leaves a chain inconsistent, but not an
insider who re-hashes everything after the record they changed, cuts a chain
short and moves its head back, deletes a whole run, or appends a forgery with
a correct hash. So the heads are signed where that insider cannot sign:

- A **checkpoint** is a Merkle tree (RFC 6962 hashing) over the chain heads
  that moved since the previous checkpoint, one leaf per chain: its
  workflow id, head seq and head hash. Its root goes into a C2SP
  `tlog-checkpoint` note (origin, tree size, base64 root, then Baton's
  extension lines: the hash of the previous note, the time, and the Time-Stamp
  Authority that stamps it, if one does: baton.audit.timestamping), signed as
  a C2SP `signed-note` with an Ed25519 key kept outside the database.
- The **checkpoint log** is a folder outside the database (by default
  `<data dir>/audit-checkpoints`): each checkpoint is a note file and the
  leaves it signs, written once and never rewritten. Each note names the one
  before it, so a checkpoint taken out of the log breaks the chain of notes.
- **Tombstones** say, signed with the same key, that a purge deleted a run's
  records up to a head: the one way a checkpointed run may leave the store.

`check_against_log` compares a store with the log: a chain shorter than a
checkpoint says (truncated), a record at a checkpointed seq with another
hash (rewritten), a checkpointed run gone without a tombstone (deleted), a
record after a checkpointed `run.ended` (appended after the end), and a
record that claims to have been stored before a checkpoint that does not
hold it (backdated).
"""

from __future__ import annotations

import base64
import bisect
import functools
import hashlib
import json
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime, timedelta
from pathlib import Path

from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import (
    Ed25519PrivateKey,
    Ed25519PublicKey,
)
from pydantic import BaseModel

from baton.audit.events import canonical_json, format_timestamp
from baton.audit.verify import ChainHead, Problem

ORIGIN = "baton.audit"
KEY_NAME = "baton-audit"
KEY_ENV = "BATON_AUDIT_CHECKPOINT_KEY"
LOG_ENV = "BATON_AUDIT_CHECKPOINTS"
KEY_FILE_NAME = "audit-checkpoint.key"
LOG_DIR_NAME = "audit-checkpoints"
# A record appended while a checkpoint was being taken may miss it though its
# transaction began first; none takes this long.
BACKDATE_MARGIN = timedelta(seconds=60)
# C2SP signed-note: the signature type byte of Ed25519 keys.
_ED25519 = b"\x01"
_DASH = "\u2014"


# -- the Merkle tree (RFC 6962 / 9162) ----------------------------------------------------


def leaf_bytes(workflow_id: str, head: ChainHead) -> bytes:
    return canonical_json({"workflow_id": workflow_id, "seq": head.seq, "hash": head.hash}).encode()


def leaf_hash(leaf: bytes) -> bytes:
    return hashlib.sha256(b"\x00" + leaf).digest()


def _node_hash(left: bytes, right: bytes) -> bytes:
    return hashlib.sha256(b"\x01" + left + right).digest()


def tree_levels(leaves: Sequence[bytes]) -> list[list[bytes]]:
    """The tree bottom-up: leaf hashes, then each level's pairs hashed, a last node
    without a partner carried up as it is. That is RFC 6962's tree (split at the
    largest power of two), built once for every proof a checkpoint gives."""
    levels = [[leaf_hash(leaf) for leaf in leaves]]
    while len(levels[-1]) > 1:
        below = levels[-1]
        above = [_node_hash(below[i], below[i + 1]) for i in range(0, len(below) - 1, 2)]
        if len(below) % 2:
            above.append(below[-1])
        levels.append(above)
    return levels


def merkle_root(leaves: Sequence[bytes]) -> bytes:
    if not leaves:
        return hashlib.sha256(b"").digest()
    return tree_levels(leaves)[-1][0]


def proof_from_levels(levels: Sequence[Sequence[bytes]], index: int) -> list[bytes]:
    """The audit path of leaf ``index`` (RFC 6962 section 2.1.1)."""
    proof = []
    for level in levels[:-1]:
        sibling = index ^ 1
        if sibling < len(level):
            proof.append(level[sibling])
        index //= 2
    return proof


def inclusion_proof(leaves: Sequence[bytes], index: int) -> list[bytes]:
    return proof_from_levels(tree_levels(leaves), index)


def root_from_proof(leaf: bytes, index: int, size: int, proof: Sequence[bytes]) -> bytes:
    """The root that ``proof`` proves ``leaf`` at ``index`` of a tree of ``size`` leaves
    belongs to (RFC 9162 section 2.1.3.2)."""
    if index >= size:
        raise ValueError(f"leaf index {index} is outside a tree of {size}")
    fn, sn = index, size - 1
    digest = leaf_hash(leaf)
    for sibling in proof:
        if sn == 0:
            raise ValueError("the proof is longer than the tree is deep")
        if fn % 2 == 1 or fn == sn:
            digest = _node_hash(sibling, digest)
            while fn % 2 == 0 and fn != 0:
                fn, sn = fn >> 1, sn >> 1
        else:
            digest = _node_hash(digest, sibling)
        fn, sn = fn >> 1, sn >> 1
    if sn != 0:
        raise ValueError("the proof is shorter than the tree is deep")
    return digest


# -- signing ------------------------------------------------------------------------------


def key_id(public: Ed25519PublicKey, name: str = KEY_NAME) -> bytes:
    """C2SP signed-note key id: SHA-256(name || 0x0A || type || public key)[:4]."""
    raw = public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return hashlib.sha256(name.encode() + b"\n" + _ED25519 + raw).digest()[:4]


@dataclass(frozen=True)
class CheckpointSigner:
    """The key checkpoints and tombstones are signed with. It lives outside the audit
    database, so that whoever can write the database cannot sign."""

    key: Ed25519PrivateKey

    @property
    def public(self) -> Ed25519PublicKey:
        return self.key.public_key()

    def public_text(self) -> str:
        raw = self.public.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
        return base64.b64encode(raw).decode()

    def sign_note(self, text: str) -> str:
        signature = key_id(self.public) + self.key.sign(text.encode())
        return f"{text}\n{_DASH} {KEY_NAME} {base64.b64encode(signature).decode()}\n"

    @classmethod
    def load_or_create(cls, path: Path) -> CheckpointSigner:
        """The key at ``path``, made there (mode 0600) on first use."""
        if path.exists():
            if path.stat().st_mode & 0o077:
                raise PermissionError(
                    f"{path} can be read by other users, and it signs the audit checkpoints: "
                    f"`chmod 600 {path}`"
                )
            loaded = serialization.load_pem_private_key(path.read_bytes(), password=None)
            if not isinstance(loaded, Ed25519PrivateKey):
                raise ValueError(f"{path} does not hold an Ed25519 private key")
            return cls(loaded)
        path.parent.mkdir(parents=True, exist_ok=True)
        key = Ed25519PrivateKey.generate()
        pem = key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
        try:
            fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
        except FileExistsError:  # made by another process meanwhile
            return cls.load_or_create(path)
        with os.fdopen(fd, "wb") as out:
            out.write(pem)
        return cls(key)


def signer_path(data_dir: Path) -> Path:
    explicit = os.environ.get(KEY_ENV)
    return Path(explicit) if explicit else data_dir / KEY_FILE_NAME


def log_path(data_dir: Path) -> Path:
    explicit = os.environ.get(LOG_ENV)
    return Path(explicit) if explicit else data_dir / LOG_DIR_NAME


def open_note(note: str, public: Ed25519PublicKey) -> str:
    """The text of a signed note, once its signature by ``public`` checks out."""
    text, sep, signatures = note.partition("\n\n")
    if not sep:
        raise ValueError("not a signed note: no blank line before its signatures")
    text += "\n"
    wanted = key_id(public)
    for line in signatures.splitlines():
        parts = line.split(" ")
        if len(parts) != 3 or parts[0] != _DASH or parts[1] != KEY_NAME:
            continue
        try:
            signature = base64.b64decode(parts[2], validate=True)
        except ValueError:
            continue
        if signature[:4] != wanted:
            continue
        try:
            public.verify(signature[4:], text.encode())
        except InvalidSignature:
            raise ValueError("the note's signature does not verify: it was changed") from None
        return text
    raise ValueError(f"the note carries no signature by the {KEY_NAME} key it is checked with")


class Tombstone(BaseModel):
    """A purge's signed word that a run's records up to a head were deleted, and why."""

    workflow_id: str
    head_seq: int
    head_hash: str
    purged_at: str
    purged_by: str
    reason: str
    note: str = ""

    def statement(self) -> str:
        fields = self.model_dump(exclude={"note"})
        return f"{ORIGIN} tombstone\n{canonical_json(fields)}\n"

    @classmethod
    def signed(
        cls,
        signer: CheckpointSigner,
        workflow_id: str,
        head: ChainHead,
        *,
        by: str,
        reason: str,
        now: datetime,
    ) -> Tombstone:
        stone = cls(
            workflow_id=workflow_id,
            head_seq=head.seq,
            head_hash=head.hash,
            purged_at=format_timestamp(now),
            purged_by=by,
            reason=reason,
        )
        return stone.model_copy(update={"note": signer.sign_note(stone.statement())})

    def check(self, public: Ed25519PublicKey) -> None:
        if open_note(self.note, public) != self.statement():
            raise ValueError(f"the tombstone of {self.workflow_id} does not match its signature")


# -- checkpoints and their log ------------------------------------------------------------


@dataclass(frozen=True)
class Checkpoint:
    number: int
    note: str
    at: datetime
    root: bytes
    prev: str
    heads: dict[str, ChainHead]
    tsa: str = ""  # the TSA's URL when one was configured to stamp this note

    @functools.cached_property
    def order(self) -> dict[str, int]:
        """Each run's leaf index: leaves go in workflow id order."""
        return {workflow_id: i for i, workflow_id in enumerate(sorted(self.heads))}

    @functools.cached_property
    def levels(self) -> list[list[bytes]]:
        return tree_levels([leaf_bytes(w, self.heads[w]) for w in self.order])

    def proof_for(self, workflow_id: str) -> list[bytes]:
        return proof_from_levels(self.levels, self.order[workflow_id])


def note_text(size: int, root: bytes, prev: str, at: datetime, tsa: str = "") -> str:
    return (
        f"{ORIGIN}\n{size}\n{base64.b64encode(root).decode()}\n"
        f"prev {prev}\ntime {format_timestamp(at)}\n" + (f"tsa {tsa}\n" if tsa else "")
    )


def note_time(lines: list[str]) -> datetime:
    return datetime.fromisoformat(lines[4].removeprefix("time "))


def note_tsa(lines: list[str]) -> str:
    """The TSA a note names as the one that stamps it ("" for none)."""
    return lines[5].removeprefix("tsa ") if lines[5:] and lines[5].startswith("tsa ") else ""


def note_digest(note: str) -> str:
    return base64.b64encode(hashlib.sha256(note.encode()).digest()).decode()


class CheckpointLog:
    """Checkpoints as files in a folder: `NNNNNNNN.note` and `NNNNNNNN.heads.json`."""

    def __init__(self, folder: Path) -> None:
        self.folder = folder
        # A writer's view of the end of the log: number, note digest and the heads
        # signed so far. Read from the files once; kept up to date by append().
        self._tail: tuple[int, str, dict[str, ChainHead]] | None = None

    def _files(self) -> list[Path]:
        if not self.folder.is_dir():
            return []
        return sorted(self.folder.glob("*.note"))

    def view(self, public: Ed25519PublicKey) -> LogView:
        return LogView.of(*self.read(public))

    def read(self, public: Ed25519PublicKey) -> tuple[list[Checkpoint], list[str]]:
        """Every checkpoint whose signature, leaves and link to the one before check out,
        and what is wrong with the others."""
        checkpoints: list[Checkpoint] = []
        problems: list[str] = []
        prev = ""
        for index, path in enumerate(self._files(), start=1):
            number = int(path.stem)
            if number != index:
                problems.append(f"checkpoint {index} is missing from the log (next: {path.name})")
            try:
                checkpoint = self._read_one(path, public)
            except (ValueError, OSError) as err:
                problems.append(f"checkpoint {path.name}: {err}")
                continue
            if checkpoint.prev != prev:
                problems.append(
                    f"checkpoint {path.name} does not follow the one before it in the log: "
                    "a checkpoint was removed or replaced"
                )
            prev = note_digest(checkpoint.note)
            checkpoints.append(checkpoint)
        return checkpoints, problems

    def _read_one(self, path: Path, public: Ed25519PublicKey) -> Checkpoint:
        note = path.read_text(encoding="utf-8")
        lines = open_note(note, public).splitlines()
        if len(lines) < 5 or lines[0] != ORIGIN or not lines[3].startswith("prev "):
            raise ValueError("not a Baton audit checkpoint")
        raw = json.loads(path.with_suffix(".heads.json").read_text(encoding="utf-8"))
        heads = {w: ChainHead(int(h["seq"]), str(h["hash"])) for w, h in raw.items()}
        root = base64.b64decode(lines[2])
        leaves = [leaf_bytes(w, heads[w]) for w in sorted(heads)]
        if int(lines[1]) != len(leaves) or merkle_root(leaves) != root:
            raise ValueError("its heads file does not match the signed root: it was changed")
        return Checkpoint(
            number=int(path.stem),
            note=note,
            at=note_time(lines),
            root=root,
            prev=lines[3].removeprefix("prev "),
            heads=heads,
            tsa=note_tsa(lines),
        )

    def append(
        self,
        signer: CheckpointSigner,
        heads: Mapping[str, ChainHead],
        *,
        now: datetime,
        tsa: str = "",
    ) -> Checkpoint | None:
        """A new checkpoint over the heads that moved since the last one; None when none did;
        ``tsa``: the TSA that is to stamp it. Files are created exclusively: of two writers,
        the second takes the next number."""
        if self._tail is None:
            self._tail = self._read_tail(signer.public)
        last, prev, known = self._tail
        moved = {w: h for w, h in heads.items() if known.get(w) != h}
        if not moved:
            return None
        self.folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        number = last + 1
        leaves = [leaf_bytes(w, moved[w]) for w in sorted(moved)]
        root = merkle_root(leaves)
        note = signer.sign_note(note_text(len(leaves), root, prev, now, tsa))
        path = self.folder / f"{number:08d}.note"
        heads_json = {w: {"seq": h.seq, "hash": h.hash} for w, h in sorted(moved.items())}
        try:
            # The leaves first: a note is never seen without them.
            with open(path.with_suffix(".heads.json"), "x", encoding="utf-8") as out:
                json.dump(heads_json, out, sort_keys=True)
        except FileExistsError:
            # Another writer took this number: read the log's end again and sign after it.
            self._tail = None
            return self.append(signer, heads, now=now, tsa=tsa)
        with open(path, "x", encoding="utf-8") as out:
            out.write(note)
        self._tail = (number, note_digest(note), {**known, **moved})
        return Checkpoint(number, note, now, root, prev, dict(moved), tsa)

    def _read_tail(self, public: Ed25519PublicKey) -> tuple[int, str, dict[str, ChainHead]]:
        checkpoints, _ = self.read(public)
        known: dict[str, ChainHead] = {}
        for checkpoint in checkpoints:
            known.update(checkpoint.heads)
        if not checkpoints:
            return 0, "", known
        return checkpoints[-1].number, note_digest(checkpoints[-1].note), known

    def write_tombstone(self, stone: Tombstone) -> None:
        """Tombstones go to the log too: a store that lost its own tombstone table
        still cannot pass a deleted run off as purged."""
        folder = self.folder / "tombstones"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = hashlib.sha256(stone.workflow_id.encode()).hexdigest()[:32]
        (folder / f"{name}.json").write_text(stone.model_dump_json(), encoding="utf-8")

    def tombstones(self, public: Ed25519PublicKey) -> dict[str, Tombstone]:
        folder = self.folder / "tombstones"
        found: dict[str, Tombstone] = {}
        for path in sorted(folder.glob("*.json")) if folder.is_dir() else []:
            stone = Tombstone.model_validate_json(path.read_text(encoding="utf-8"))
            stone.check(public)
            found[stone.workflow_id] = stone
        return found

    def write_retention_override(self, override_id: str, text: str) -> None:
        """Retention overrides go to the log too (baton.audit.retention), written once:
        a store that lost one, or gained one behind the log's back, is found out."""
        folder = self.folder / "retention-overrides"
        folder.mkdir(mode=0o700, parents=True, exist_ok=True)
        name = hashlib.sha256(override_id.encode()).hexdigest()[:32]
        with open(folder / f"{name}.json", "x", encoding="utf-8") as out:
            out.write(text)

    def retention_overrides(self) -> dict[str, str]:
        """The log's retention overrides as written, by file name: checked by the caller."""
        folder = self.folder / "retention-overrides"
        return {
            path.name: path.read_text(encoding="utf-8")
            for path in (sorted(folder.glob("*.json")) if folder.is_dir() else [])
        }


@dataclass(frozen=True)
class LogView:
    """The checkpoint log as read once: its checkpoints, what is wrong with it, and for
    each run the checkpoints that signed its head, in order. A pass over many runs (an
    export, a report) reads the log once and looks each run up here."""

    checkpoints: list[Checkpoint]
    problems: list[str]
    signed: dict[str, list[tuple[Checkpoint, ChainHead]]]
    times: list[datetime]

    @classmethod
    def of(cls, checkpoints: list[Checkpoint], problems: list[str]) -> LogView:
        signed: dict[str, list[tuple[Checkpoint, ChainHead]]] = {}
        for checkpoint in checkpoints:
            for workflow_id, head in checkpoint.heads.items():
                signed.setdefault(workflow_id, []).append((checkpoint, head))
        return cls(checkpoints, problems, signed, [c.at for c in checkpoints])

    def first_after(self, moment: datetime) -> Checkpoint | None:
        """The first checkpoint taken after ``moment`` (they are taken in time order)."""
        index = bisect.bisect_right(self.times, moment)
        return self.checkpoints[index] if index < len(self.checkpoints) else None


# -- checking a store against the log -----------------------------------------------------


@dataclass(frozen=True)
class StoredChain:
    """What the check needs of one chain in the store: each record's seq, hash,
    type and the time it claims to have been recorded."""

    hashes: dict[int, str]
    types: dict[int, str]
    recorded_at: dict[int, datetime]


def check_against_log(
    chains: Mapping[str, StoredChain],
    log: LogView,
    tombstones: Mapping[str, Tombstone],
    *,
    only: str | None = None,
) -> list[Problem]:
    problems: list[Problem] = []

    def report(workflow_id: str, seq: int, detail: str) -> None:
        problems.append(
            Problem(workflow_id=workflow_id, seq=seq, event_id="", kind="checkpoint", detail=detail)
        )

    signed_at = log.signed
    runs = sorted(signed_at) if only is None else [only] if only in signed_at else []
    for workflow_id in runs:
        history = signed_at[workflow_id]
        checkpoint, head = history[-1]
        chain = chains.get(workflow_id)
        if chain is None:
            stone = tombstones.get(workflow_id)
            if stone is None or stone.head_seq < head.seq:
                report(
                    workflow_id,
                    head.seq,
                    f"the run is gone from the store, though checkpoint {checkpoint.number} "
                    f"signed its records up to seq {head.seq}, and no signed tombstone says "
                    "a purge took it: deleted",
                )
            continue
        for earlier, signed in history:
            stored = chain.hashes.get(signed.seq)
            if stored is None:
                report(
                    workflow_id,
                    signed.seq,
                    f"the chain ends at seq {max(chain.hashes, default=0)}, but checkpoint "
                    f"{earlier.number} signed it up to seq {signed.seq}: truncated",
                )
                break
            if stored != signed.hash:
                report(
                    workflow_id,
                    signed.seq,
                    f"seq {signed.seq} has another hash than checkpoint {earlier.number} "
                    "signed: the chain was rewritten (and re-hashed) after it",
                )
                break
        if chain.types.get(head.seq) == "run.ended":
            for seq in sorted(s for s in chain.hashes if s > head.seq):
                report(
                    workflow_id,
                    seq,
                    f"seq {seq} ({chain.types[seq]}) was appended after the run's end, "
                    f"which checkpoint {checkpoint.number} signed: appended after the end",
                )
    for workflow_id, chain in sorted(chains.items()):
        if only is not None and workflow_id != only:
            continue
        signed_seq = signed_at[workflow_id][-1][1].seq if workflow_id in signed_at else 0
        for seq in sorted(s for s in chain.hashes if s > signed_seq):
            claimed = chain.recorded_at[seq]
            later = log.first_after(claimed + BACKDATE_MARGIN)
            if later is not None:
                report(
                    workflow_id,
                    seq,
                    f"seq {seq} says it was recorded at {format_timestamp(claimed)}, but "
                    f"checkpoint {later.number} (at {format_timestamp(later.at)}) does "
                    "not hold it: backdated, or written behind the checkpoints' back",
                )
                break
    return problems
