"""Proofs that travel with an export: that a run's chain is in a signed checkpoint, checkable
offline with the checkpoint key's public half (and the TSA's certificate, for its token)."""

from __future__ import annotations

import base64
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel

from baton.audit.anchor import (
    ORIGIN,
    Checkpoint,
    LogView,
    leaf_bytes,
    note_time,
    note_tsa,
    open_note,
    root_from_proof,
)
from baton.audit.timestamping import TimestampAuthority, check_token_for, token_path
from baton.audit.verify import ChainHead


class AnchorProof(BaseModel):
    """That a run's chain, up to ``seq`` with hash ``hash``, is in a signed checkpoint:
    the checkpoint's note and the leaf's inclusion proof, checkable offline, and the note's
    RFC 3161 token (base64 DER) when it has one."""

    workflow_id: str
    seq: int
    hash: str
    checkpoint: str
    leaf_index: int
    tree_size: int
    proof: list[str]
    timestamp: str = ""

    def check(self, public: Ed25519PublicKey) -> None:
        """Raise ValueError naming what does not hold."""
        lines = open_note(self.checkpoint, public).splitlines()
        if len(lines) < 3 or lines[0] != ORIGIN or int(lines[1]) != self.tree_size:
            raise ValueError("its checkpoint is not a Baton audit checkpoint of this size")
        leaf = leaf_bytes(self.workflow_id, ChainHead(self.seq, self.hash))
        proof = [base64.b64decode(p) for p in self.proof]
        if root_from_proof(leaf, self.leaf_index, self.tree_size, proof) != base64.b64decode(
            lines[2]
        ):
            raise ValueError("its inclusion proof does not lead to the checkpoint's signed root")

    def timestamp_problem(self, public: Ed25519PublicKey, tsa: TimestampAuthority | None) -> str:
        """What is wrong with the checkpoint's time-stamp token, or its lack of one ("" when
        nothing); the checkpoint itself checked first (``check``)."""
        lines = open_note(self.checkpoint, public).splitlines()
        stamped_by = note_tsa(lines)
        if not self.timestamp:
            if stamped_by:
                return (
                    f"its checkpoint was to be timestamped by {stamped_by}, but the export "
                    "carries no token for it (not yet timestamped when exported: export again)"
                )
            return ""
        # Only the note and its time matter to the token: the rest is a stand-in.
        checkpoint = Checkpoint(0, self.checkpoint, note_time(lines), b"", "", {}, stamped_by)
        why = check_token_for(tsa, base64.b64decode(self.timestamp), checkpoint)
        return f"its checkpoint's time-stamp token {why}" if why else ""


def proof_for(log: LogView, workflow_id: str, folder: Path | None = None) -> AnchorProof | None:
    """The proof from the latest checkpoint that signed this chain's head, with the
    checkpoint's time-stamp token when the log in ``folder`` has one."""
    if workflow_id not in log.signed:
        return None
    checkpoint, head = log.signed[workflow_id][-1]
    token = token_path(folder, checkpoint.number) if folder is not None else None
    return AnchorProof(
        workflow_id=workflow_id,
        seq=head.seq,
        hash=head.hash,
        checkpoint=checkpoint.note,
        leaf_index=checkpoint.order[workflow_id],
        tree_size=len(checkpoint.heads),
        proof=[base64.b64encode(p).decode() for p in checkpoint.proof_for(workflow_id)],
        timestamp=base64.b64encode(token.read_bytes()).decode() if token and token.exists() else "",
    )
