"""Signed acts: how a run knows that a person or service really did what an
update, a signal or a start claims.

Holding Temporal frontend access lets anyone send any payload to a run, so a
name in a payload proves nothing. Every act (start a run, decide a gate, stop
a run) carries a :class:`Signature` over a *statement*: canonical JSON of what
the act does and of the context it was made in (the run, the gate round, the
digest of what the person was shown, a nonce and the time of signing). The
run rebuilds the statement from the act itself and verifies the signature
against the public keys of the run's directory snapshot, so:

- a changed comment, outcome or edited output breaks the signature;
- an act made for another run, gate round or view of the gate is refused by
  the bound context;
- the same act delivered twice is refused by its nonce.

Two methods: ``ed25519`` (a key file the CLI signs with) and ``passkey``
(WebAuthn in the reviewer inbox: the browser's authenticator signs
``authenticatorData || SHA-256(clientDataJSON)``, whose challenge is the
digest of the statement, so the passkey signs the act itself).

Pure and deterministic: the runner calls :func:`verify` from workflow code.
"""

from __future__ import annotations

import base64
import hashlib
import json
import secrets
from collections.abc import Mapping
from datetime import UTC, datetime
from typing import Any, Literal, Protocol

from cryptography.exceptions import InvalidSignature, UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from pydantic import BaseModel, ConfigDict, Field

ED25519_PREFIX = "ed25519:"
Method = Literal["ed25519", "passkey"]
# A retention override (baton.audit.retention) is an act too, bound to no run.
# An event is a system's or person's news that a run awaits (baton.nodes.awaiting).
Action = Literal["start", "decide", "stop", "event", "retention_override"]
# authenticatorData flags (WebAuthn Level 2, 6.1): user present, user verified.
_USER_PRESENT = 0x01
_USER_VERIFIED = 0x04


class Passkey(BaseModel):
    """A WebAuthn credential registered for a user, as the directory holds it."""

    model_config = ConfigDict(extra="forbid")

    id: str = Field(description="The credential id, base64url")
    public_key: str = Field(description="The credential's public key, base64 DER (SPKI)")
    rp_id: str = Field(description="The relying party the credential is scoped to: the inbox host")
    origin: str = Field(description="The inbox origin the credential was registered on")


class Signature(BaseModel):
    """The proof an act carries, with the context the signer bound it to."""

    model_config = ConfigDict(extra="forbid")

    workflow_id: str
    run_id: str = Field(default="", description="The run's first execution run id; '' for a start")
    round: int = Field(default=0, description="The gate's round (its opening); 0 if no gate")
    shown_digest: str = Field(default="", description="Digest of what the signer was shown")
    nonce: str
    signed_at: str = Field(description="When it was signed, ISO 8601, as the signer's clock saw")
    via: str = Field(default="", description="The tool the act was made in: cli, inbox, ...")
    method: Method
    key: str = Field(description="ed25519: the public key; passkey: the credential id")
    value: str = Field(description="The signature, base64")
    authenticator_data: str = Field(default="", description="passkey: base64url")
    client_data_json: str = Field(default="", description="passkey: base64url")


class Keyholder(Protocol):
    """What :func:`verify` needs of a directory entry."""

    keys: list[str]
    passkeys: list[Passkey]


def unsigned(
    method: Method,
    *,
    via: str,
    workflow_id: str,
    run_id: str = "",
    round: int = 0,
    shown_digest: str = "",
) -> Signature:
    """The context of a signature about to be made, with a fresh nonce and
    the time of signing; ``key`` and ``value`` come with the signature. For
    signers only: a run never makes one."""
    return Signature(
        workflow_id=workflow_id,
        run_id=run_id,
        round=round,
        shown_digest=shown_digest,
        nonce=secrets.token_hex(16),
        signed_at=datetime.now(UTC).isoformat(),
        via=via,
        method=method,
        key="",
        value="",
    )


def canonical(value: Any) -> bytes:
    """The one byte form of a JSON value that signer and verifier share.
    NaN and infinities are written as Python writes them: Temporal's JSON
    decoding accepts them, and a payload that made this raise inside a
    handler would fail the run's workflow task over and over."""
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode(
        "utf-8"
    )


def digest(value: Any) -> str:
    return hashlib.sha256(canonical(value)).hexdigest()


def subject_digest(shown: Mapping[str, Any], edited_output: Mapping[str, Any] | None) -> str:
    """The digest of what a gate shows its deciders: its inputs and subject,
    and an edited output an earlier approver made (the next one approves that)."""
    return digest({"shown": shown, "edited_output": edited_output})


def statement(action: Action, fields: Mapping[str, Any], signature: Signature) -> bytes:
    """The bytes a signature covers: the act and the context it was made in."""
    bound = signature.model_dump(
        include={"workflow_id", "run_id", "round", "shown_digest", "nonce", "signed_at", "via"}
    )
    return canonical({"act": action, "fields": dict(fields), **bound})


def passkey_challenge(message: bytes) -> bytes:
    """The WebAuthn challenge that makes a passkey sign ``message``."""
    return hashlib.sha256(message).digest()


def public_key_text(key: Ed25519PublicKey) -> str:
    raw = key.public_bytes(serialization.Encoding.Raw, serialization.PublicFormat.Raw)
    return ED25519_PREFIX + base64.b64encode(raw).decode()


def sign_ed25519(private_key: Ed25519PrivateKey, message: bytes) -> tuple[str, str]:
    """(key, value) for a :class:`Signature` signed with ``private_key``."""
    return public_key_text(private_key.public_key()), base64.b64encode(
        private_key.sign(message)
    ).decode()


def verify(message: bytes, signature: Signature, user_name: str, holder: Keyholder) -> str | None:
    """Why ``signature`` does not prove that ``user_name`` (whose directory
    entry is ``holder``) signed ``message``; None when it does."""
    if signature.method == "ed25519":
        return _verify_ed25519(message, signature, user_name, holder)
    return _verify_passkey(message, signature, user_name, holder)


def _verify_ed25519(
    message: bytes, signature: Signature, user_name: str, holder: Keyholder
) -> str | None:
    if signature.key not in holder.keys:
        return (
            f"the key that signed is not one of user '{user_name}''s keys in the directory "
            f"(`baton users add-key {user_name} <public key>` adds one)"
        )
    try:
        key = Ed25519PublicKey.from_public_bytes(
            base64.b64decode(signature.key.removeprefix(ED25519_PREFIX), validate=True)
        )
        key.verify(base64.b64decode(signature.value, validate=True), message)
    except (InvalidSignature, ValueError):
        return f"the signature is not valid for this act by user '{user_name}'"
    return None


def _verify_passkey(
    message: bytes, signature: Signature, user_name: str, holder: Keyholder
) -> str | None:
    passkey = next((p for p in holder.passkeys if p.id == signature.key), None)
    if passkey is None:
        return (
            f"the passkey that signed is not one of user '{user_name}''s passkeys in the directory"
        )
    invalid = f"the passkey signature is not valid for this act by user '{user_name}'"
    try:
        authenticator_data = _b64url(signature.authenticator_data)
        client_data_json = _b64url(signature.client_data_json)
        client_data = json.loads(client_data_json)
        signed = base64.b64decode(signature.value, validate=True)
    except (ValueError, UnicodeDecodeError):
        return invalid
    if not isinstance(client_data, dict) or client_data.get("type") != "webauthn.get":
        return invalid
    expected = base64.urlsafe_b64encode(passkey_challenge(message)).rstrip(b"=").decode()
    if client_data.get("challenge") != expected:
        return f"the passkey signed another act than this one by user '{user_name}'"
    if client_data.get("origin") != passkey.origin:
        return (
            f"the passkey was used on {client_data.get('origin')!r}, not on the inbox it was "
            f"registered for ({passkey.origin})"
        )
    if len(authenticator_data) < 37:
        return invalid
    if authenticator_data[:32] != hashlib.sha256(passkey.rp_id.encode()).digest():
        return invalid
    flags = authenticator_data[32]
    if not flags & _USER_PRESENT or not flags & _USER_VERIFIED:
        return "the passkey did not verify the user (no user presence and verification)"
    signed_data = authenticator_data + hashlib.sha256(client_data_json).digest()
    try:
        public_key = serialization.load_der_public_key(base64.b64decode(passkey.public_key))
        if isinstance(public_key, ec.EllipticCurvePublicKey):
            public_key.verify(signed, signed_data, ec.ECDSA(hashes.SHA256()))
        elif isinstance(public_key, Ed25519PublicKey):
            public_key.verify(signed, signed_data)
        elif isinstance(public_key, RSAPublicKey):
            public_key.verify(signed, signed_data, padding.PKCS1v15(), hashes.SHA256())
        else:
            return invalid
    except (InvalidSignature, ValueError, UnsupportedAlgorithm):
        return invalid
    return None


def _b64url(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))
