"""Passkeys in the reviewer inbox: registering one (WebAuthn's create
ceremony) and letting one sign a decision or a stop (its get ceremony).

The inbox prepares an act and its signing context, the browser's passkey
signs the act's statement, and the run verifies that signature against the
passkeys of its directory snapshot (baton.signing). The inbox holds no key
that could act for anyone, and it grants nothing: a registered passkey
counts once an administrator adds it to the directory.
"""

from __future__ import annotations

import base64
import binascii
import ipaddress
import json
from dataclasses import dataclass
from typing import Any, TypeVar

from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey
from cryptography.hazmat.primitives.asymmetric.rsa import RSAPublicKey
from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from pydantic import ValidationError
from starlette.datastructures import URL, FormData
from webauthn import generate_registration_options, options_to_json, verify_registration_response
from webauthn.helpers import (
    base64url_to_bytes,
    bytes_to_base64url,
    decode_credential_public_key,
    decoded_public_key_to_cryptography,
)
from webauthn.helpers.cose import COSEAlgorithmIdentifier
from webauthn.helpers.exceptions import WebAuthnException
from webauthn.helpers.structs import (
    AuthenticatorSelectionCriteria,
    PublicKeyCredentialDescriptor,
    ResidentKeyRequirement,
    UserVerificationRequirement,
)

from baton.gates import Decision, StopRequest
from baton.signing import (
    Passkey,
    Signature,
    passkey_challenge,
    statement,
    unsigned,
)

# What baton.signing can verify: ECDSA P-256, Ed25519 and RSA PKCS#1 v1.5,
# each over SHA-256. The authenticator picks the first it supports.
ALGORITHMS = [
    COSEAlgorithmIdentifier.EDDSA,
    COSEAlgorithmIdentifier.ECDSA_SHA_256,
    COSEAlgorithmIdentifier.RSASSA_PKCS1_v1_5_SHA_256,
]
# How long the browser waits for the person at their authenticator, and how
# long a prepared act may wait for its signature.
CEREMONY_TIMEOUT_MS = 120_000
PREPARED_MAX_AGE_S = 600
RP_NAME = "Baton reviewer inbox"
# The fields the browser posts back after the get ceremony, base64url.
ASSERTION_FIELDS = ("credential_id", "authenticator_data", "client_data_json", "signature")

Act = TypeVar("Act", Decision, StopRequest)


class PasskeyError(ValueError):
    """A passkey step that cannot go on; the message says why and what to do."""


def origin_of(url: URL) -> str:
    """The web origin a browser on ``url`` reports in its WebAuthn answers."""
    return f"{url.scheme}://{url.netloc}"


def host_problem(url: URL) -> str | None:
    """Why passkeys cannot work on the inbox at ``url``; None when they can.
    A passkey belongs to a host name (its relying party id), never to an IP
    address, and browsers offer WebAuthn only on secure pages: HTTPS, or
    http://localhost."""
    host = url.hostname or ""
    try:
        address = ipaddress.ip_address(host)
    except ValueError:
        address = None
    if address is not None:
        instead = (
            f"at {origin_of(url.replace(hostname='localhost'))}"
            if address.is_loopback
            else "under its host name"
        )
        return (
            f"Passkeys do not work on an IP address ({host}): a passkey belongs to a host "
            f"name. Open the inbox {instead} instead."
        )
    if url.scheme != "https" and host != "localhost" and not host.endswith(".localhost"):
        return (
            f"Passkeys need a secure page: browsers offer them over HTTPS, or on "
            f"http://localhost, not on {origin_of(url)}. Serve the inbox over HTTPS."
        )
    return None


def usable_passkeys(passkeys: list[Passkey], url: URL) -> list[Passkey]:
    """The passkeys a browser on ``url`` can sign with: those of its host."""
    return [p for p in passkeys if p.rp_id == url.hostname]


def missing_passkey(passkeys: list[Passkey], url: URL) -> str | None:
    """Why the user cannot sign on the inbox at ``url``; None when they can."""
    problem = host_problem(url)
    if problem is not None:
        return problem
    if usable_passkeys(passkeys, url):
        return None
    if not passkeys:
        return (
            "You have no passkey in the directory yet: decisions and stops here are signed "
            "with your own passkey. Register one, then have an administrator add it."
        )
    hosts = ", ".join(sorted({p.rp_id for p in passkeys}))
    return (
        f"Your passkeys in the directory are for {hosts}, not for {url.hostname}: open the "
        "inbox there, or register a passkey here and have an administrator add it."
    )


# -- registration -------------------------------------------------------------


@dataclass(frozen=True)
class Registration:
    """A create ceremony under way: what its answer must match."""

    challenge: str
    rp_id: str
    origin: str

    def to_session(self) -> dict[str, str]:
        return {"challenge": self.challenge, "rp_id": self.rp_id, "origin": self.origin}

    @classmethod
    def from_session(cls, value: Any) -> Registration | None:
        if not isinstance(value, dict):
            return None
        try:
            return cls(value["challenge"], value["rp_id"], value["origin"])
        except KeyError:
            return None


def registration_options(
    user: str, display_name: str, registered: list[Passkey], url: URL
) -> tuple[str, Registration]:
    """The options for navigator.credentials.create() (JSON), and the
    ceremony to keep in the session until its answer comes back."""
    rp_id = url.hostname or ""
    options = generate_registration_options(
        rp_id=rp_id,
        rp_name=RP_NAME,
        user_name=user,
        user_display_name=display_name or user,
        timeout=CEREMONY_TIMEOUT_MS,
        authenticator_selection=AuthenticatorSelectionCriteria(
            resident_key=ResidentKeyRequirement.PREFERRED,
            user_verification=UserVerificationRequirement.REQUIRED,
        ),
        # An authenticator that holds one of the user's passkeys already says
        # so instead of making a second one.
        exclude_credentials=[
            PublicKeyCredentialDescriptor(id=base64url_to_bytes(p.id))
            for p in usable_passkeys(registered, url)
        ],
        supported_pub_key_algs=ALGORITHMS,
    )
    ceremony = Registration(bytes_to_base64url(options.challenge), rp_id, origin_of(url))
    return options_to_json(options), ceremony


def registered_passkey(credential: str, ceremony: Registration) -> Passkey:
    """The passkey an answer to ``ceremony`` registers, once verified: made
    for this inbox, in answer to this ceremony, with the user verified."""
    try:
        verified = verify_registration_response(
            credential=credential,
            expected_challenge=base64url_to_bytes(ceremony.challenge),
            expected_rp_id=ceremony.rp_id,
            expected_origin=ceremony.origin,
            require_user_verification=True,
            supported_pub_key_algs=ALGORITHMS,
        )
    except WebAuthnException as err:
        raise PasskeyError(
            f"the browser's answer does not register a passkey ({err}): press the button "
            "and try again"
        ) from None
    return Passkey(
        id=bytes_to_base64url(verified.credential_id),
        public_key=base64.b64encode(spki_from_cose(verified.credential_public_key)).decode(),
        rp_id=ceremony.rp_id,
        origin=ceremony.origin,
    )


def spki_from_cose(cose_key: bytes) -> bytes:
    """A credential's COSE public key as DER SubjectPublicKeyInfo, the form
    the directory keeps: EC2 P-256, OKP Ed25519 or RSA."""
    unsupported = (
        "this passkey's key type cannot be verified by Baton; use a passkey with an "
        "ECDSA P-256, Ed25519 or RSA key"
    )
    try:
        key = decoded_public_key_to_cryptography(decode_credential_public_key(cose_key))
    except (WebAuthnException, KeyError, ValueError) as err:
        raise PasskeyError(f"{unsupported} ({err})") from None
    if isinstance(key, ec.EllipticCurvePublicKey) and not isinstance(key.curve, ec.SECP256R1):
        raise PasskeyError(f"{unsupported} (its curve is {key.curve.name})")
    if not isinstance(key, ec.EllipticCurvePublicKey | Ed25519PublicKey | RSAPublicKey):
        raise PasskeyError(unsupported)
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


# -- signing an act -------------------------------------------------------------


def signing_context(workflow_id: str, run_id: str, round_: int = 0, shown: str = "") -> Signature:
    """A passkey signature's context, without the signature yet: what the run
    checks the act was made for (its run, gate round and view), a nonce
    against replay and the time of signing."""
    return unsigned(
        "passkey",
        via="inbox",
        workflow_id=workflow_id,
        run_id=run_id,
        round=round_,
        shown_digest=shown,
    )


def challenge_for(act: Decision | StopRequest) -> str:
    """The WebAuthn challenge that makes a passkey sign ``act`` (base64url)."""
    assert act.signature is not None
    message = statement(act.action, act.signed_fields(), act.signature)
    return bytes_to_base64url(passkey_challenge(message))


class PreparedActs:
    """Acts prepared for a passkey, handed to the browser and back as opaque
    tokens signed with the session secret: the inbox keeps no state between
    the two steps, and a token only proves that this inbox prepared the act
    for this user. Whether the user's passkey signed it is the run's to check."""

    def __init__(self, secret: str) -> None:
        self._serializer = URLSafeTimedSerializer(secret, salt="baton.inbox.prepared-act")

    def token(self, user: str, act: Decision | StopRequest) -> str:
        return self._serializer.dumps(
            {"user": user, "action": act.action, "act": act.model_dump(mode="json")}
        )

    def signed(
        self, form: FormData, kind: type[Act], *, user: str, workflow_id: str, gate: str = ""
    ) -> Act | None:
        """The act of the form's token, signed with the form's passkey answer;
        None when the form carries no answer."""
        answer = {name: str(form.get(name) or "") for name in ASSERTION_FIELDS}
        if not any(answer.values()):
            return None
        if not all(answer.values()):
            missing = ", ".join(name for name, value in answer.items() if not value)
            raise PasskeyError(
                f"the passkey's answer is incomplete (no {missing}): reload the page and try again"
            )
        act = self._load(str(form.get("token") or ""), kind, user)
        assert act.signature is not None
        gate_of_act = act.gate if isinstance(act, Decision) else ""
        if (act.signature.workflow_id, gate_of_act) != (workflow_id, gate):
            raise PasskeyError(
                "the prepared act is for another run or gate than this page's: reload the page "
                "and try again"
            )
        try:
            value = base64.b64encode(base64url_to_bytes(answer["signature"])).decode()
        except (binascii.Error, ValueError):
            raise PasskeyError(
                "the passkey's signature is not base64url: reload the page and try again"
            ) from None
        signature = act.signature.model_copy(
            update={
                "key": answer["credential_id"],
                "value": value,
                "authenticator_data": answer["authenticator_data"],
                "client_data_json": answer["client_data_json"],
            }
        )
        return act.model_copy(update={"signature": signature})

    def _load(self, token: str, kind: type[Act], user: str) -> Act:
        again = "press the button again to sign it anew"
        try:
            data = self._serializer.loads(token, max_age=PREPARED_MAX_AGE_S)
        except SignatureExpired:
            raise PasskeyError(
                f"the prepared act is older than {PREPARED_MAX_AGE_S // 60} minutes: {again}"
            ) from None
        except BadSignature:
            raise PasskeyError(f"the prepared act's token is not valid: {again}") from None
        if not isinstance(data, dict) or data.get("action") != kind.action:
            raise PasskeyError(f"the token was prepared for another kind of act: {again}")
        if data.get("user") != user:
            raise PasskeyError(f"the prepared act is not yours, {user}: {again}")
        try:
            return kind.model_validate(data["act"])
        except (ValidationError, KeyError):
            raise PasskeyError(f"the prepared act cannot be read: {again}") from None


def request_options(act: Decision | StopRequest, usable: list[Passkey], token: str) -> str:
    """What the browser's script needs for navigator.credentials.get(), JSON."""
    return json.dumps(
        {
            "challenge": challenge_for(act),
            "rp_id": usable[0].rp_id,
            "credentials": [p.id for p in usable],
            "timeout": CEREMONY_TIMEOUT_MS,
            "token": token,
        }
    )
