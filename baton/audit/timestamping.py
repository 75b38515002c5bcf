"""RFC 3161 time-stamps on the audit checkpoints: an anchor the checkpoint key cannot forge.

Whoever holds the checkpoint key and the checkpoint log can rewrite a chain, re-hash it and
re-sign every checkpoint after it. So each checkpoint note's SHA-256 also goes to a
Time-Stamp Authority (`[audit] timestamp_url`, RFC 3161 over HTTP), and the token it
returns (a CMS SignedData over a TSTInfo naming that hash and the time) is kept beside the
note, `NNNNNNNN.tst`, written once. A note re-signed afterwards no longer has the hash its
token names, and a token fetched for it later carries a later time than the note claims.

A note taken while a TSA is configured says so (its `tsa <url>` line, inside the
signature); a TSA that cannot be reached never holds the worker up: the note is written,
and the next checkpoint (or `baton audit checkpoint`) fetches the tokens still missing, as
long as they can still be timely (`max_delay`). Past that, a note that should carry a token
and has none is a problem, as is a token that does not hold.
"""

from __future__ import annotations

import hashlib
import logging
import secrets
import urllib.request
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from asn1crypto import cms, core, tsp  # type: ignore[import-untyped]
from cryptography import x509
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, padding, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID

from baton.audit.anchor import Checkpoint, CheckpointLog
from baton.audit.events import format_timestamp

logger = logging.getLogger(__name__)

URL_ENV = "BATON_AUDIT_TIMESTAMP_URL"
CERT_ENV = "BATON_AUDIT_TIMESTAMP_CERT"
TOKEN_SUFFIX = ".tst"
# A TSA's clock may run a little behind the worker's: a token this much older than its note
# is still taken as made for it.
CLOCK_SKEW = timedelta(minutes=2)
# The longest a token may come after its note: as long as a TSA outage may last and still
# leave its checkpoints stamped, and the window in which a key holder could re-sign a note
# and have it stamped unnoticed.
MAX_DELAY = timedelta(hours=1)
# Seconds a request may take: the stamping never holds up the audit writer beyond this.
TIMEOUT = 10.0
_HASHES: dict[str, type[hashes.HashAlgorithm]] = {
    "sha256": hashes.SHA256,
    "sha384": hashes.SHA384,
    "sha512": hashes.SHA512,
}


class TimestampUnavailable(Exception):
    """The TSA could not be reached or did not grant a token: try again later."""


class TokenRefused(ValueError):
    """A time-stamp token that does not hold; the message says what failed."""


def token_path(folder: Path, number: int) -> Path:
    return folder / f"{number:08d}{TOKEN_SUFFIX}"


def note_hash(note: str) -> bytes:
    return hashlib.sha256(note.encode()).digest()


@dataclass(frozen=True)
class TimestampAuthority:
    """A TSA: where to ask (``url``; "" where tokens are only checked) and whom to trust.

    A token must be signed by one of ``certificates`` (the TSA's own, pinned), or, when
    ``cas`` are given, by the certificate it carries if one of them issued it directly;
    either way a certificate for time-stamping only (extended key usage timeStamping,
    critical: RFC 3161 section 2.3), valid when the token was made."""

    url: str
    certificates: tuple[x509.Certificate, ...]
    cas: tuple[x509.Certificate, ...] = ()
    timeout: float = TIMEOUT
    max_delay: timedelta = MAX_DELAY

    @classmethod
    def load(cls, url: str, certificate: Path, ca: Path | None = None) -> TimestampAuthority:
        """Raises ValueError naming the setting, the file and the fix."""
        if url and not url.startswith(("http://", "https://")):
            raise ValueError(
                f"[audit] timestamp_url = {url!r} is not an http:// or https:// URL of an "
                "RFC 3161 Time-Stamp Authority"
            )
        pinned = _pem_certificates(certificate, "timestamp_certificate")
        for cert in pinned:
            why = _not_for_timestamping(cert)
            if why:
                raise ValueError(
                    f"[audit] timestamp_certificate {certificate}: {why}; name the TSA's own "
                    "signing certificate (the one its tokens are signed with)"
                )
        cas = _pem_certificates(ca, "timestamp_ca") if ca is not None else ()
        return cls(url, pinned, cas)

    # -- asking -------------------------------------------------------------------------------

    def fetch(self, note: str) -> bytes:
        """A token over ``note``'s SHA-256, checked before it is returned. Raises
        TimestampUnavailable when the TSA cannot be asked, TokenRefused when its answer
        does not hold."""
        nonce = secrets.randbits(63) | 1
        query = tsp.TimeStampReq(
            {
                "version": "v1",
                "message_imprint": {
                    "hash_algorithm": {"algorithm": "sha256"},
                    "hashed_message": note_hash(note),
                },
                "nonce": nonce,
                "cert_req": True,
            }
        ).dump()
        request = urllib.request.Request(
            self.url,
            data=query,
            headers={"Content-Type": "application/timestamp-query"},
            method="POST",
        )
        try:
            with urllib.request.urlopen(request, timeout=self.timeout) as answer:
                body = answer.read()
        except OSError as err:  # URLError and HTTPError (a 503 from a TSA that is down) too
            raise TimestampUnavailable(
                f"the TSA at {self.url} could not be reached: {err}"
            ) from err
        try:
            reply = tsp.TimeStampResp.load(body)
            status = reply["status"]["status"].native
        except ValueError as err:
            raise TokenRefused(f"the TSA at {self.url} answered no time-stamp reply") from err
        if status not in ("granted", "granted_with_mods"):
            text = reply["status"]["status_string"].native or []
            raise TimestampUnavailable(
                f"the TSA at {self.url} did not grant a token ({status}: {'; '.join(text)})"
            )
        token = reply["time_stamp_token"].dump()
        info = self.check(token, note)
        if info["nonce"].native != nonce:
            raise TokenRefused("the TSA's token does not carry the nonce it was asked with")
        return bytes(token)

    # -- checking -----------------------------------------------------------------------------

    def check(self, token: bytes, note: str) -> tsp.TSTInfo:
        """The token's TSTInfo, once the token holds for ``note``: the hash it names is the
        note's, its CMS signature verifies with a trusted TSA certificate, and it has a
        nonce and a policy. Raises TokenRefused naming what failed."""
        try:
            signed = cms.ContentInfo.load(token)
            if signed["content_type"].native != "signed_data":
                raise TokenRefused("it is no CMS SignedData")
            data = signed["content"]
            encap = data["encap_content_info"]
            if encap["content_type"].native != "tst_info":
                raise TokenRefused("it signs no TSTInfo")
            content = encap["content"].contents
            info = tsp.TSTInfo.load(content)
            imprint = info["message_imprint"]
            algorithm = imprint["hash_algorithm"]["algorithm"].native
            hashed = imprint["hashed_message"].native
            (signer,) = data["signer_infos"]
            info.native  # noqa: B018 (parses every field: a damaged one raises here)
        except TokenRefused:
            raise
        except (ValueError, TypeError, KeyError) as err:
            raise TokenRefused(f"it cannot be read as an RFC 3161 token ({err})") from None
        if algorithm != "sha256" or hashed != note_hash(note):
            raise TokenRefused(
                "its message imprint is not the note's SHA-256: the token was made for "
                "another note (this one was replaced after it was stamped)"
            )
        self._check_signature(signer, content, data["certificates"], info)
        if info["version"].native != "v1":
            raise TokenRefused(f"its TSTInfo is of version {info['version'].native}, not 1")
        if not info["nonce"].native:
            raise TokenRefused("it carries no nonce: it answers no request Baton made")
        if not info["policy"].dotted:
            raise TokenRefused("it names no TSA policy")
        return info

    def _check_signature(
        self,
        signer: cms.SignerInfo,
        content: bytes,
        carried: cms.CertificateSet,
        info: tsp.TSTInfo,
    ) -> None:
        attrs = {a["type"].native: a["values"][0] for a in signer["signed_attrs"]}
        digest_name = signer["digest_algorithm"]["algorithm"].native
        if digest_name not in _HASHES:
            raise TokenRefused(f"it is signed over {digest_name}, which Baton does not accept")
        if attrs.get("content_type") is None or attrs["content_type"].native != "tst_info":
            raise TokenRefused("its signed attributes do not say it signs a TSTInfo")
        digest = hashes.Hash(_HASHES[digest_name]())
        digest.update(content)
        if attrs.get("message_digest") is None or (
            attrs["message_digest"].native != digest.finalize()
        ):
            raise TokenRefused("its TSTInfo was changed after it was signed")
        cert = self._signer_certificate(signer, carried)
        _check_binding(attrs, cert)
        made = info["gen_time"].native
        if not cert.not_valid_before_utc <= made <= cert.not_valid_after_utc:
            raise TokenRefused(
                f"it was made at {format_timestamp(made)}, outside the validity of the TSA "
                "certificate that signed it"
            )
        # The signature is over the signed attributes as a DER SET, not as the [0] they are.
        message = b"\x31" + signer["signed_attrs"].dump()[1:]
        try:
            _verify(cert, signer, message, _HASHES[digest_name]())
        except InvalidSignature:
            raise TokenRefused("its CMS signature does not verify: the token was changed") from None

    def _signer_certificate(
        self, signer: cms.SignerInfo, carried: cms.CertificateSet
    ) -> x509.Certificate:
        sid = signer["sid"]
        candidates = list(self.certificates)
        if self.cas:
            for choice in carried or []:
                if choice.name != "certificate":
                    continue
                cert = x509.load_der_x509_certificate(choice.chosen.dump())
                if _issued_by_one_of(cert, self.cas) and not _not_for_timestamping(cert):
                    candidates.append(cert)
        for cert in candidates:
            if _identifies(sid, cert):
                return cert
        raise TokenRefused(
            "it is not signed by the configured TSA: no trusted TSA certificate matches its "
            "signer (another TSA, or another key)"
        )


def _identifies(sid: cms.SignerIdentifier, cert: x509.Certificate) -> bool:
    if sid.name == "issuer_and_serial_number":
        chosen = sid.chosen
        return bool(
            chosen["serial_number"].native == cert.serial_number
            and chosen["issuer"].dump() == cert.issuer.public_bytes()
        )
    try:
        ski = cert.extensions.get_extension_for_class(x509.SubjectKeyIdentifier).value.digest
    except x509.ExtensionNotFound:
        return False
    return bool(sid.chosen.native == ski)


def _check_binding(attrs: dict[str, core.Asn1Value], cert: x509.Certificate) -> None:
    """RFC 3161 wants the signing certificate named inside the signature (ESS), so that
    no other certificate with the same key and name can stand in for it."""
    der = cert.public_bytes(serialization.Encoding.DER)
    if "signing_certificate_v2" in attrs:
        first = attrs["signing_certificate_v2"]["certs"][0]
        name = first["hash_algorithm"]["algorithm"].native
        if name not in _HASHES:
            raise TokenRefused(f"it names its certificate by {name}, which Baton does not accept")
        digest = hashes.Hash(_HASHES[name]())
    elif "signing_certificate" in attrs:
        first = attrs["signing_certificate"]["certs"][0]
        digest = hashes.Hash(hashes.SHA1())
    else:
        raise TokenRefused("its signature does not name the certificate it was made with (ESS)")
    digest.update(der)
    if first["cert_hash"].native != digest.finalize():
        raise TokenRefused("its signature names another certificate than the one it matches")


def _verify(
    cert: x509.Certificate, signer: cms.SignerInfo, message: bytes, digest: hashes.HashAlgorithm
) -> None:
    public = cert.public_key()
    signature = signer["signature"].native
    scheme = signer["signature_algorithm"]["algorithm"].native
    if isinstance(public, rsa.RSAPublicKey):
        if scheme == "rsassa_pss":
            params = signer["signature_algorithm"]["parameters"]
            salt = params["salt_length"].native
            pss = padding.PSS(mgf=padding.MGF1(digest), salt_length=salt)
            public.verify(signature, message, pss, digest)
        else:
            public.verify(signature, message, padding.PKCS1v15(), digest)
    elif isinstance(public, ec.EllipticCurvePublicKey):
        public.verify(signature, message, ec.ECDSA(digest))
    else:
        raise TokenRefused(f"it is signed with a {type(public).__name__}, not RSA or ECDSA")


def _issued_by_one_of(cert: x509.Certificate, cas: Sequence[x509.Certificate]) -> bool:
    for ca in cas:
        try:
            cert.verify_directly_issued_by(ca)
        except (ValueError, TypeError, InvalidSignature):
            continue
        return True
    return False


def _not_for_timestamping(cert: x509.Certificate) -> str:
    """Why ``cert`` may not sign time-stamps ("" when it may)."""
    try:
        usage = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage)
    except x509.ExtensionNotFound:
        return "the certificate has no extended key usage; a TSA's must be timeStamping"
    if list(usage.value) != [ExtendedKeyUsageOID.TIME_STAMPING] or not usage.critical:
        return "the certificate's extended key usage is not timeStamping alone, marked critical"
    return ""


def _pem_certificates(path: Path, setting: str) -> tuple[x509.Certificate, ...]:
    try:
        found = x509.load_pem_x509_certificates(path.read_bytes())
    except OSError as err:
        raise ValueError(f"[audit] {setting} {path}: {err.strerror}; give a PEM file") from None
    except ValueError:
        raise ValueError(f"[audit] {setting} {path} holds no PEM certificate") from None
    return tuple(found)


# -- the log's tokens ---------------------------------------------------------------------------


def stamp(
    log: CheckpointLog, tsa: TimestampAuthority, checkpoints: Iterable[Checkpoint]
) -> list[Checkpoint]:
    """Fetch a token for each of ``checkpoints`` that has none, oldest first, and keep it
    beside its note; a token that could no longer be timely is not asked for. Stops at the
    first failure (the TSA is down: the next call tries again). Returns those still
    waiting for their token."""
    waiting = sorted(checkpoints, key=lambda c: c.number)
    while waiting:
        checkpoint = waiting[0]
        path = token_path(log.folder, checkpoint.number)
        if not path.exists() and datetime.now(UTC) - checkpoint.at <= tsa.max_delay:
            try:
                token = tsa.fetch(checkpoint.note)
            except (TimestampUnavailable, TokenRefused) as err:
                logger.warning("checkpoint %d not timestamped yet: %s", checkpoint.number, err)
                return waiting
            try:
                with open(path, "xb") as out:
                    out.write(token)
            except FileExistsError:
                pass  # stamped by another writer meanwhile: the first token stays
        waiting.pop(0)
    return waiting


def unstamped(log: CheckpointLog, checkpoints: Sequence[Checkpoint]) -> list[Checkpoint]:
    """The checkpoints taken with a TSA configured that carry no token yet."""
    return [c for c in checkpoints if c.tsa and not token_path(log.folder, c.number).exists()]


@dataclass(frozen=True)
class TokenFindings:
    problems: list[str]
    pending: list[int]


def check_tokens(
    log: CheckpointLog,
    checkpoints: Sequence[Checkpoint],
    tsa: TimestampAuthority | None,
    *,
    now: datetime,
) -> TokenFindings:
    """Every token in the log against its note, and every note that should carry one:
    problems (a token that does not hold, one missing past ``max_delay``, a note re-signed
    without its TSA line) and the checkpoints not timestamped yet."""
    problems: list[str] = []
    pending: list[int] = []
    declared = False
    for checkpoint in checkpoints:
        path = token_path(log.folder, checkpoint.number)
        name = f"checkpoint {checkpoint.number}"
        if tsa is None:
            if checkpoint.tsa or path.exists():
                problems.append(
                    f"{name} was timestamped by {checkpoint.tsa or 'a TSA'}, but no TSA "
                    "certificate is configured to check its token: set [audit] "
                    f"timestamp_certificate or {CERT_ENV}"
                )
                break
            continue
        if path.exists():
            why = _token_problem(tsa, path.read_bytes(), checkpoint)
            if why:
                problems.append(f"{name}: its time-stamp token {path.name} {why}")
        elif checkpoint.tsa and now - checkpoint.at <= tsa.max_delay:
            pending.append(checkpoint.number)
        elif checkpoint.tsa:
            problems.append(
                f"{name} has no time-stamp token, though a TSA ({checkpoint.tsa}) was configured "
                f"when it was taken at {format_timestamp(checkpoint.at)}, over "
                f"{tsa.max_delay} ago: its token was removed, or the TSA could not be reached "
                "for that long"
            )
        elif declared:
            problems.append(
                f"{name} does not name a TSA though a checkpoint before it did: the TSA was "
                "turned off, or the note was re-signed without it"
            )
        declared |= bool(checkpoint.tsa)
    return TokenFindings(problems, pending)


def _token_problem(tsa: TimestampAuthority, token: bytes, checkpoint: Checkpoint) -> str:
    """What is wrong with ``token`` as the token of ``checkpoint`` ("" when nothing)."""
    try:
        info = tsa.check(token, checkpoint.note)
    except TokenRefused as err:
        return f"is refused: {err}"
    made = info["gen_time"].native
    if made < checkpoint.at - CLOCK_SKEW:
        return (
            f"says it was made at {format_timestamp(made)}, before the note's own time "
            f"{format_timestamp(checkpoint.at)}: it cannot have been made for this note"
        )
    if made > checkpoint.at + tsa.max_delay:
        return (
            f"was made at {format_timestamp(made)}, {made - checkpoint.at} after the time the "
            f"note claims ({format_timestamp(checkpoint.at)}), later than {tsa.max_delay} "
            "allows: a note re-signed after the fact looks like this"
        )
    return ""


def check_token_for(tsa: TimestampAuthority | None, token: bytes, checkpoint: Checkpoint) -> str:
    """``_token_problem`` for a token that travels with an export."""
    if tsa is None:
        return f"cannot be checked: no TSA certificate is configured (set {CERT_ENV})"
    return _token_problem(tsa, token, checkpoint)
