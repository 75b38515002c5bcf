"""RFC 3161 time-stamps on the audit checkpoints, against OpenSSL's own TSA.

The adversary here holds the checkpoint key and the checkpoint log: they can rewrite a
record, re-hash the chain and re-sign a checkpoint in its place. What they cannot do is
make the TSA have signed, back then, the hash of the note they sign now. The TSA is
`openssl ts -reply` behind a local HTTP server, with a key and certificate made here.
"""

from __future__ import annotations

import base64
import dataclasses
import os
import subprocess
import threading
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from baton.audit.anchor import leaf_bytes, merkle_root, note_text
from baton.audit.anchoring import Anchors, verify_export
from baton.audit.export import export_jsonl
from baton.audit.sink import AuditSettings, AuditSink
from baton.audit.store import SqliteAuditStore
from baton.audit.timestamping import TimestampAuthority, TimestampUnavailable, token_path
from baton.audit.verify import ChainHead
from baton.cli import main
from baton.config import ConfigError, Settings
from tests.test_audit_anchor import ended_run, reseal, set_head
from tests.test_audit_store import Backend, FakeClock, _sqlite_backend, chain, insert_record

OPENSSL = "/usr/bin/openssl"
TSA_CONFIG = """\
[ tsa ]
default_tsa = baton_test_tsa
[ baton_test_tsa ]
serial = {folder}/serial
crypto_device = builtin
signer_digest = sha256
default_policy = 1.3.6.1.4.1.99999.1
other_policies = 1.3.6.1.4.1.99999.2
digests = sha256, sha384, sha512
accuracy = secs:1
ordering = no
tsa_name = no
ess_cert_id_chain = no
ess_cert_id_alg = sha256
"""


def _name(common: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common)])


def _pem(path: Path, cert: x509.Certificate) -> Path:
    path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    return path


@dataclass
class LocalTSA:
    """OpenSSL's TSA on 127.0.0.1: a CA, the TSA's key and certificate (signed by the CA,
    extended key usage timeStamping, critical), and a server that answers each query with
    `openssl ts -reply`. ``hold`` makes it keep every request waiting until set."""

    folder: Path
    ca: x509.Certificate
    cert: x509.Certificate
    url: str = ""
    hold: threading.Event = field(default_factory=threading.Event)

    @property
    def cert_file(self) -> Path:
        return self.folder / "tsa.crt"

    @property
    def ca_file(self) -> Path:
        return self.folder / "ca.crt"

    def authority(self, **changes: Any) -> TimestampAuthority:
        return dataclasses.replace(TimestampAuthority.load(self.url, self.cert_file), **changes)

    def reply(self, query: bytes) -> bytes:
        (self.folder / "query.tsq").write_bytes(query)
        subprocess.run(
            [
                OPENSSL,
                "ts",
                "-reply",
                "-queryfile",
                str(self.folder / "query.tsq"),
                "-signer",
                str(self.cert_file),
                "-inkey",
                str(self.folder / "tsa.key"),
                "-config",
                str(self.folder / "tsa.cnf"),
                "-out",
                str(self.folder / "reply.tsr"),
            ],
            check=True,
            capture_output=True,
        )
        return (self.folder / "reply.tsr").read_bytes()


def make_tsa(folder: Path, *, key_type: str = "rsa") -> LocalTSA:
    folder.mkdir(parents=True)
    now = datetime.now(UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca = (
        x509.CertificateBuilder()
        .subject_name(_name("Baton test TSA root"))
        .issuer_name(_name("Baton test TSA root"))
        .public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(
            x509.KeyUsage(False, False, False, False, False, True, True, False, False),
            critical=True,
        )
        .sign(ca_key, hashes.SHA256())
    )
    key: rsa.RSAPrivateKey | ec.EllipticCurvePrivateKey = (
        rsa.generate_private_key(public_exponent=65537, key_size=2048)
        if key_type == "rsa"
        else ec.generate_private_key(ec.SECP256R1())
    )
    cert = (
        x509.CertificateBuilder()
        .subject_name(_name(f"Baton test TSA ({key_type})"))
        .issuer_name(ca.subject)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - timedelta(days=1))
        .not_valid_after(now + timedelta(days=30))
        .add_extension(x509.ExtendedKeyUsage([ExtendedKeyUsageOID.TIME_STAMPING]), critical=True)
        .add_extension(
            x509.KeyUsage(True, True, False, False, False, False, False, False, False),
            critical=True,
        )
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    (folder / "tsa.key").write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    (folder / "serial").write_text("01\n")
    (folder / "tsa.cnf").write_text(TSA_CONFIG.format(folder=folder))
    tsa = LocalTSA(folder, ca, cert)
    _pem(tsa.cert_file, cert)
    _pem(tsa.ca_file, ca)
    return tsa


@pytest.fixture
def tsa(tmp_path: Path) -> Iterator[LocalTSA]:
    served = make_tsa(tmp_path / "tsa")
    served.hold.set()
    # One reply at a time: openssl keeps its serial number in a file.
    replying = threading.Lock()

    class Handler(BaseHTTPRequestHandler):
        def do_POST(self) -> None:
            query = self.rfile.read(int(self.headers["Content-Length"]))
            served.hold.wait()
            if self.headers["Content-Type"] != "application/timestamp-query":
                self.send_error(415)
                return
            with replying:
                body = served.reply(query)
            self.send_response(200)
            self.send_header("Content-Type", "application/timestamp-reply")
            self.send_header("Content-Length", str(len(body)))
            self.end_headers()
            self.wfile.write(body)

        def log_message(self, format: str, *args: object) -> None:
            """Quiet: the tests say what went wrong."""

    server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)
    served.url = f"http://127.0.0.1:{server.server_address[1]}/tsa"
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield served
    served.hold.set()
    server.shutdown()
    server.server_close()
    thread.join()


def dead_url() -> str:
    """A local port nobody listens on: a TSA that is down."""
    server = ThreadingHTTPServer(("127.0.0.1", 0), BaseHTTPRequestHandler)
    port = server.server_address[1]
    server.server_close()
    return f"http://127.0.0.1:{port}/tsa"


def stamped_anchors(tmp_path: Path, tsa: TimestampAuthority) -> Anchors:
    return Anchors.writer(tmp_path / "audit-checkpoint.key", tmp_path / "checkpoints", tsa)


def problems_of(anchors: Anchors, store: SqliteAuditStore, now: datetime | None = None) -> str:
    report = anchors.verify_each(store, None, now=now)
    assert not report.ok
    return "\n".join(p.detail for p in report.problems)


# -- a checkpoint and its token -------------------------------------------------------------


def test_a_checkpoint_gets_a_token_that_we_and_openssl_both_verify(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)
    anchors = stamped_anchors(tmp_path, tsa.authority())

    made = anchors.checkpoint(store, now=datetime.now(UTC))

    assert made is not None and f"\ntsa {tsa.url}\n" in made.note
    token = token_path(anchors.log.folder, made.number)
    assert token.exists()
    report = anchors.verify(store)
    assert report.ok and report.not_timestamped == [], report.problems

    # OpenSSL, on its own, agrees: the token is over the note's SHA-256 and its signer
    # chains to the CA...
    note = anchors.log.folder / f"{made.number:08d}.note"
    verify = [OPENSSL, "ts", "-verify", "-data", str(note), "-in", str(token), "-token_in"]
    verify += ["-CAfile", str(tsa.ca_file), "-untrusted", str(tsa.cert_file)]
    assert "Verification: OK" in subprocess.run(verify, capture_output=True, text=True).stdout
    # ...and neither accepts it for a note that was re-signed.
    other = tmp_path / "other.note"
    other.write_text(note.read_text() + "\n")
    rejected = subprocess.run([*verify[:4], str(other), *verify[5:]], capture_output=True)
    assert rejected.returncode != 0


def test_a_checkpoint_re_signed_in_place_by_the_key_holder_is_named(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    """The insider changes a record, re-hashes the chain after it, and signs a new checkpoint
    1 over the new head with the checkpoint key, in place of the old one. Every signature and
    every hash in the store and the log holds; the token from back then does not."""
    path = tmp_path / "audit.db"
    store = SqliteAuditStore(path)
    store.append(ended_run("wf-1", 3), retention_days=183)
    anchors = stamped_anchors(tmp_path, tsa.authority())
    taken = datetime.now(UTC)
    made = anchors.checkpoint(store, now=taken)
    assert made is not None and anchors.verify(store).ok

    forged_head = rewrite_approver(path, store)
    signer = anchors.signer
    assert signer is not None
    note = signer.sign_note(note_text(1, forged_root(forged_head), "", taken, tsa.url))
    write_checkpoint(anchors, 1, note, forged_head)
    assert store.verify().ok, "the chain holds: only the token can tell"

    assert (
        "checkpoint 1: its time-stamp token 00000001.tst is refused: its message imprint "
        "is not the note's SHA-256"
    ) in problems_of(anchors, store)

    # Without the old token, the note looks as if its token were still to come, until the
    # TSA would have had to answer: after that, it is named.
    token_path(anchors.log.folder, 1).unlink()
    fresh = anchors.verify_each(store, None)
    assert fresh.ok and fresh.not_timestamped == [1]
    later = taken + timedelta(hours=2)
    assert "checkpoint 1 has no time-stamp token, though a TSA" in problems_of(
        anchors, store, later
    )


def test_a_note_re_signed_later_and_stamped_then_is_named_by_its_token_time(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    """The checkpoint was taken two hours ago, while the TSA was down. The insider re-signs
    it now over a rewritten chain and has the TSA stamp the forgery: the token says now."""
    path = tmp_path / "audit.db"
    store = SqliteAuditStore(path)
    store.append(ended_run("wf-1", 3), retention_days=183)
    taken = datetime.now(UTC) - timedelta(hours=2)
    anchors = stamped_anchors(tmp_path, tsa.authority(url=dead_url()))
    assert anchors.checkpoint(store, now=taken) is not None

    forged_head = rewrite_approver(path, store)
    signer = anchors.signer
    assert signer is not None
    note = signer.sign_note(note_text(1, forged_root(forged_head), "", taken, tsa.url))
    write_checkpoint(anchors, 1, note, forged_head)
    token_path(anchors.log.folder, 1).write_bytes(tsa.authority().fetch(note))

    found = problems_of(anchors, store)
    assert "checkpoint 1: its time-stamp token 00000001.tst was made at " in found
    assert "after the time the note claims" in found and "later than 1:00:00 allows" in found


def test_a_token_from_another_tsa_or_with_one_byte_changed_is_refused(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    store = SqliteAuditStore(tmp_path / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)
    anchors = stamped_anchors(tmp_path, tsa.authority())
    made = anchors.checkpoint(store, now=datetime.now(UTC))
    assert made is not None
    token = token_path(anchors.log.folder, 1)
    genuine = token.read_bytes()

    # Another TSA (its own key and certificate, ECDSA this time) stamps the same note.
    other = make_tsa(tmp_path / "other-tsa", key_type="ec")
    query = TimestampAuthority("", (other.cert,))
    stranger = query_token(other, made.note)
    assert query.check(stranger, made.note)["nonce"].native, "a token fine for its own TSA"
    token.unlink()
    token.write_bytes(stranger)
    assert "is not signed by the configured TSA" in problems_of(anchors, store)

    # The genuine token with one byte of its signature changed.
    edited = bytearray(genuine)
    edited[-1] ^= 0x01
    token.unlink()
    token.write_bytes(bytes(edited))
    assert "its CMS signature does not verify: the token was changed" in problems_of(anchors, store)


def test_a_tsa_down_keeps_every_record_and_a_later_checkpoint_fetches_the_token(
    tsa: LocalTSA,
    tmp_path: Path,
    monkeypatch: pytest.MonkeyPatch,
    capsys: pytest.CaptureFixture[str],
) -> None:
    data = Path(os.environ["BATON_DATA_DIR"])
    monkeypatch.delenv("BATON_AUDIT_URL", raising=False)
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_URL", dead_url())
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_CERT", str(tsa.cert_file))
    store = SqliteAuditStore(data / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)

    assert main(["audit", "checkpoint"]) == 0
    out = capsys.readouterr().out
    assert "checkpoint 1: 1 chain head(s) signed" in out
    assert "1 checkpoint(s) not yet timestamped: the TSA at http://127.0.0.1:" in out
    assert len(store.records("wf-1")) == 3
    assert main(["audit", "verify"]) == 0
    assert "1 checkpoint(s) not yet timestamped (1)" in capsys.readouterr().out

    # The TSA is back: the next checkpoint stamps itself and the one left waiting.
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_URL", tsa.url)
    store.append(ended_run("wf-2", 2), retention_days=183)
    assert main(["audit", "checkpoint"]) == 0
    assert "no checkpoint is waiting for its token" in capsys.readouterr().out
    folder = data / "audit-checkpoints"
    assert sorted(p.name for p in folder.glob("*.tst")) == ["00000001.tst", "00000002.tst"]
    assert main(["audit", "verify"]) == 0
    out = capsys.readouterr().out
    assert "chain ok: 2 run(s), 5 records verified" in out and "not yet" not in out


def test_the_audit_writer_is_not_held_up_by_a_tsa_that_does_not_answer(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    tsa.hold.clear()  # every request waits until the test lets it go
    settings = AuditSettings(
        url=f"sqlite:///{tmp_path / 'audit.db'}",
        salt="salt",
        checkpoint_key=tmp_path / "audit-checkpoint.key",
        checkpoint_log=tmp_path / "checkpoints",
        timestamps=tsa.authority(timeout=600.0),
    )
    sink = AuditSink(settings)

    # A run's end checkpoints at once; the writer must go on while the TSA keeps it waiting.
    sink.submit(ended_run("wf-1", 3)).result(timeout=30)
    sink.submit(ended_run("wf-2", 3)).result(timeout=30)
    sink.submit(ended_run("wf-3", 3)).result(timeout=30)

    assert [len(sink.store.records(f"wf-{i}")) for i in (1, 2, 3)] == [3, 3, 3]
    assert (tmp_path / "checkpoints" / "00000001.note").exists()
    assert not token_path(tmp_path / "checkpoints", 1).exists()
    tsa.hold.set()
    deadline = datetime.now(UTC) + timedelta(seconds=60)
    while not token_path(tmp_path / "checkpoints", 1).exists():
        assert datetime.now(UTC) < deadline, "the token never came once the TSA answered"
        threading.Event().wait(0.05)


def test_an_export_carries_the_token_and_is_checked_offline(tsa: LocalTSA, tmp_path: Path) -> None:
    store = SqliteAuditStore(tmp_path / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)
    anchors = stamped_anchors(tmp_path, tsa.authority())
    anchors.checkpoint(store, now=datetime.now(UTC))
    export = tmp_path / "wf-1.jsonl"
    (proof,) = anchors.proofs(["wf-1"])
    assert proof.timestamp
    export_jsonl(store.records("wf-1"), export, [proof])
    auditor = TimestampAuthority("", (tsa.cert,))

    assert verify_export(export, anchors.public, auditor).ok
    edited = bytearray(base64.b64decode(proof.timestamp))
    edited[-1] ^= 0x01
    export_jsonl(
        store.records("wf-1"),
        export,
        [proof.model_copy(update={"timestamp": base64.b64encode(edited).decode()})],
    )
    (problem,) = verify_export(export, anchors.public, auditor).problems
    assert "time-stamp token is refused: its CMS signature does not verify" in problem.detail
    export_jsonl(store.records("wf-1"), export, [proof.model_copy(update={"timestamp": ""})])
    (problem,) = verify_export(export, anchors.public, auditor).problems
    assert "the export carries no token for it" in problem.detail


def test_a_token_signed_by_a_certificate_the_ca_issued_is_accepted_with_a_ca_bundle(
    tsa: LocalTSA, tmp_path: Path
) -> None:
    """A TSA that renews its certificate: trusted through the CA that issued it."""
    store = SqliteAuditStore(tmp_path / "audit.db")
    store.append(ended_run("wf-1", 3), retention_days=183)
    anchors = stamped_anchors(tmp_path, tsa.authority())
    made = anchors.checkpoint(store, now=datetime.now(UTC))
    assert made is not None
    token = token_path(anchors.log.folder, 1).read_bytes()
    unrelated = make_tsa(tmp_path / "unrelated").cert

    assert TimestampAuthority("", (unrelated,), (tsa.ca,)).check(token, made.note)
    with pytest.raises(ValueError, match="not signed by the configured TSA"):
        TimestampAuthority("", (unrelated,)).check(token, made.note)


def test_timestamp_settings_that_cannot_work_are_refused_with_the_fix(
    tsa: LocalTSA, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = Settings.from_env()
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_URL", tsa.url)
    with pytest.raises(ConfigError, match=r"set \[audit\] timestamp_certificate"):
        AuditSettings.from_env(settings)
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_CERT", str(tmp_path / "missing.pem"))
    with pytest.raises(ConfigError, match=r"missing.pem: No such file"):
        AuditSettings.from_env(settings)
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_CERT", str(tsa.ca_file))
    with pytest.raises(ConfigError, match="extended key usage"):
        AuditSettings.from_env(settings)
    monkeypatch.setenv("BATON_AUDIT_TIMESTAMP_CERT", str(tsa.cert_file))
    loaded = AuditSettings.from_env(settings).timestamps
    assert loaded is not None and loaded.url == tsa.url
    with pytest.raises(TimestampUnavailable, match="could not be reached"):
        TimestampAuthority(dead_url(), loaded.certificates).fetch("a note\n")


# -- helpers ----------------------------------------------------------------------------------


def query_token(tsa: LocalTSA, note: str) -> bytes:
    """A token from ``tsa`` over ``note``, asked for with OpenSSL's own client."""
    (tsa.folder / "note").write_text(note)
    query = subprocess.run(
        [OPENSSL, "ts", "-query", "-data", str(tsa.folder / "note"), "-sha256", "-cert"],
        capture_output=True,
        check=True,
    ).stdout
    (tsa.folder / "query.tsq").write_bytes(query)
    subprocess.run(
        [
            OPENSSL,
            "ts",
            "-reply",
            "-queryfile",
            str(tsa.folder / "query.tsq"),
            "-signer",
            str(tsa.cert_file),
            "-inkey",
            str(tsa.folder / "tsa.key"),
            "-config",
            str(tsa.folder / "tsa.cnf"),
            "-token_out",
            "-out",
            str(tsa.folder / "token.tst"),
        ],
        check=True,
        capture_output=True,
    )
    return (tsa.folder / "token.tst").read_bytes()


def rewrite_approver(path: Path, store: SqliteAuditStore) -> tuple[int, str]:
    """Record 2 of wf-1 changed and every record after it re-hashed, the head moved to the
    new last hash, the guards dropped and put back: the chain verifies. Returns the head."""
    backend: Backend = next(_sqlite_backend(path.parent))
    backend.clock = FakeClock(datetime.now(UTC))
    records = store.records("wf-1")
    backend.drop_guards()
    backend.sql(f"DELETE FROM audit_records WHERE workflow_id = {chain('wf-1')} AND seq >= 2", ())
    prev = records[0].record_hash
    for index, record in enumerate(records[1:]):
        changed = {"data": {**record.data, "approver": "sam"}} if index == 0 else {}
        forged = reseal(record, prev, **changed)
        insert_record(backend, forged)
        prev = forged.record_hash
    set_head(backend, "wf-1", 0, "")
    set_head(backend, "wf-1", len(records), prev)
    backend.restore_guards()
    return len(records), prev


def forged_root(head: tuple[int, str]) -> bytes:
    return merkle_root([leaf_bytes("wf-1", ChainHead(*head))])


def write_checkpoint(anchors: Anchors, number: int, note: str, head: tuple[int, str]) -> None:
    """A checkpoint's files written over the old ones, as the log's owner can."""
    folder = anchors.log.folder
    (folder / f"{number:08d}.heads.json").write_text(
        f'{{"wf-1": {{"hash": "{head[1]}", "seq": {head[0]}}}}}'
    )
    (folder / f"{number:08d}.note").write_text(note)
