"""The retention floor, and the one way below it: a signed, recorded override.

Baton keeps audit records at least ``DEFAULT_RETENTION_DAYS`` (the AI Act's six months,
Art. 19 and 26(6)). A deployer with a reason to keep less (a shorter national rule, a
data-protection ruling) lowers that floor only through a **retention override**: an act of
a user with the ``admin`` role, signed with their Ed25519 key (`baton keys new`), saying how
many days and why. `baton audit retention-override` makes one:

- it is checked when made: the user is in the directory, holds the role, and the key that
  signed is one of theirs there;
- it is then countersigned with the checkpoint key (which the audit database never holds)
  and written to the checkpoint log beside the tombstones, then to the store's append-only
  table `audit_overrides`;
- `[audit] retention_days` or `min_retention_days` below the floor are accepted only while
  the latest override allows that many days (an override back to 183 days restores the
  floor);
- `baton audit verify` checks both signatures of every override, and the store against
  the log.

Pure: what is checked here needs no store; baton.audit.anchoring reads and writes them.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from datetime import datetime
from typing import Any

from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from pydantic import BaseModel, ValidationError

from baton.audit.anchor import ORIGIN, open_note
from baton.audit.events import canonical_json
from baton.config import DirectoryEntry
from baton.keys import Signer
from baton.signing import Passkey, Signature, statement, verify

DEFAULT_RETENTION_DAYS = 183  # the AI Act's six months (Art. 19, 26(6))
OVERRIDE_ROLE = "admin"
# What the user's signature is bound to, in place of a run: an override belongs to none.
OVERRIDE_CONTEXT = "baton-audit-retention"
OVERRIDE_COMMAND = "baton audit retention-override"


class OverrideRefused(ValueError):
    """An override that may not be recorded; the message says why."""


class RetentionOverride(BaseModel):
    """A user's signed word that the audit may keep records ``days`` days, and why;
    ``note`` is the checkpoint key's countersignature, made when it was recorded."""

    days: int
    reason: str
    by: str
    role: str
    recorded_at: str
    signature: Signature
    note: str = ""

    @property
    def override_id(self) -> str:
        # The signature's nonce: fresh for every act, so one override, one id.
        return self.signature.nonce

    @staticmethod
    def act(*, days: int, reason: str, role: str) -> dict[str, Any]:
        """The fields the user signs (with the signature's own context)."""
        return {"days": days, "reason": reason, "role": role}

    def signed_by_user(self) -> bytes:
        return statement(
            "retention_override",
            self.act(days=self.days, reason=self.reason, role=self.role),
            self.signature,
        )

    def statement(self) -> str:
        """What the checkpoint key countersigns: everything but the countersignature."""
        fields = self.model_dump(mode="json", exclude={"note"})
        return f"{ORIGIN} retention-override\n{canonical_json(fields)}\n"

    def describe(self) -> str:
        return f"{self.days} days, by {self.by} ({self.role}) at {self.recorded_at}"

    def problem(self, public: Ed25519PublicKey) -> str | None:
        """Why this override proves nothing (None: both signatures hold). The user's
        signature is checked with the key it names: whether that key was the user's, and
        the user an admin, was checked when it was recorded, and the countersignature
        says so. A directory edited since (a key rotated) leaves it valid."""
        if self.days < 1:
            return f"it allows {self.days} days"
        signature = self.signature
        if signature.method != "ed25519" or signature.workflow_id != OVERRIDE_CONTEXT:
            return "its signature was not made for a retention override"
        why = verify(self.signed_by_user(), signature, self.by, _KeyOf(signature.key))
        if why is not None:
            return why
        try:
            countersigned = open_note(self.note, public)
        except ValueError as err:
            return f"its countersignature does not hold: {err}"
        if countersigned != self.statement():
            return "it differs from what the checkpoint key countersigned: it was changed"
        return None


class _KeyOf:
    """A keyholder with one Ed25519 key: the one a recorded override names."""

    def __init__(self, key: str) -> None:
        self.keys = [key]
        self.passkeys: list[Passkey] = []


def parse(text: str) -> RetentionOverride | str:
    """A stored override, or why it cannot be read as one."""
    try:
        return RetentionOverride.model_validate_json(text)
    except ValidationError as err:
        return f"not a retention override: {str(err).splitlines()[0]}"


def authorise(override: RetentionOverride, directory: Mapping[str, DirectoryEntry]) -> None:
    """Raise OverrideRefused unless ``override`` may be recorded: a reason, at least a day,
    and signed by its user, who holds the admin role, with a key the directory gives them."""
    if override.days < 1:
        raise OverrideRefused("a retention override keeps records at least 1 day")
    if not override.reason.strip():
        raise OverrideRefused("a retention override needs a reason: it is kept with it")
    entry = directory.get(override.by)
    if entry is None:
        raise OverrideRefused(
            f"unknown user '{override.by}': users and their roles come from the directory"
        )
    if OVERRIDE_ROLE not in entry.roles or override.role != OVERRIDE_ROLE:
        held = ", ".join(entry.roles) or "no roles"
        raise OverrideRefused(
            f"user '{override.by}' ({held}) may not lower the retention floor; it needs the "
            f"role {OVERRIDE_ROLE}"
        )
    signature = override.signature
    if signature.method != "ed25519" or signature.workflow_id != OVERRIDE_CONTEXT:
        raise OverrideRefused("the override is not signed as a retention override")
    why = verify(override.signed_by_user(), signature, override.by, entry)
    if why is not None:
        raise OverrideRefused(f"the override is not signed by '{override.by}': {why}")


def latest(overrides: Iterable[RetentionOverride]) -> RetentionOverride | None:
    """The override in effect: the one recorded last."""
    return max(
        overrides,
        key=lambda o: (datetime.fromisoformat(o.recorded_at), o.override_id),
        default=None,
    )


def floor_refusal(name: str, days: int, where: str, in_effect: RetentionOverride | None) -> str:
    """Why ``[audit] name = days`` is refused, and how to lower the floor properly."""
    if in_effect is not None:
        return (
            f"[audit] {name} = {days} in {where}: the retention override in effect "
            f"({in_effect.describe()}) allows no less than {in_effect.days} days; an admin "
            f"may record another: `{OVERRIDE_COMMAND} --days {days} --reason WHY --as ADMIN`"
        )
    return (
        f"[audit] {name} = {days} in {where}: the AI Act asks logs to be kept at least six "
        f"months, so Baton keeps at least {DEFAULT_RETENTION_DAYS} days; raise it, or have a "
        f"user with the role {OVERRIDE_ROLE} record a signed override first: "
        f"`{OVERRIDE_COMMAND} --days {days} --reason WHY --as ADMIN`"
    )


def signed_override(signer: Signer, *, days: int, reason: str) -> RetentionOverride:
    """An override signed by ``signer``'s user, not yet recorded: no time, no
    countersignature (Anchors.record_retention_override adds both)."""
    act = RetentionOverride.act(days=days, reason=reason, role=OVERRIDE_ROLE)
    signature = signer.sign("retention_override", act, workflow_id=OVERRIDE_CONTEXT)
    return RetentionOverride(
        days=days,
        reason=reason,
        by=signer.user,
        role=OVERRIDE_ROLE,
        recorded_at="",
        signature=signature,
    )
