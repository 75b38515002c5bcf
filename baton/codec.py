"""Payload encryption: every payload a Baton client or worker hands to
Temporal (workflow and activity inputs and outputs, signals, updates,
queries, failure messages and stack traces) is AES-256-GCM ciphertext
before it leaves the process, so Temporal's history, its database and its
backups hold nothing readable for the whole retention period.

Keys: ``BATON_PAYLOAD_KEYS`` (``id1:base64key,id2:base64key``, the first
is current) wins; else the TOML file ``BATON_PAYLOAD_KEY_FILE``; else
``<data dir>/payload-keys.toml``, which `baton payload-keys new` writes.
New payloads are encrypted with the current key; every key listed
decrypts, so a rotated key stays listed as long as history encrypted with
it is kept. Each payload names its key id in its metadata, and the id is
bound to the ciphertext as associated data.

Decoding passes payloads that are not encrypted through unchanged, on
purpose: the `temporal` CLI and the Web UI send plaintext (a signal or a
start from there), and refusing it would make them useless without the
codec server. Accepting it is safe because nothing that steers a run comes
from a payload alone: every start and decision is signed and verified by
the run against its directory snapshot, and with intake by reference the
input holds a document's hash, never its text. Plaintext someone sends is
stored as they sent it; Baton's own payloads are always encrypted.

The codec server in the reviewer inbox (baton.web.codec) lets people with
the right role read these payloads in the Web UI and the `temporal` CLI.
"""

from __future__ import annotations

import base64
import binascii
import contextlib
import dataclasses
import os
import re
import secrets
import tempfile
import tomllib
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path

from cryptography.exceptions import InvalidTag
from cryptography.hazmat.primitives.ciphers.aead import AESGCM
from temporalio.api.common.v1 import Payload
from temporalio.contrib.pydantic import pydantic_data_converter
from temporalio.converter import (
    DataConverter,
    DefaultFailureConverterWithEncodedAttributes,
    PayloadCodec,
)

from baton.config import ConfigError

KEYS_ENV = "BATON_PAYLOAD_KEYS"
KEY_FILE_ENV = "BATON_PAYLOAD_KEY_FILE"
KEY_FILE_NAME = "payload-keys.toml"
KEY_SIZE = 32
NONCE_SIZE = 12
ENCODING = b"binary/encrypted"
KEY_ID_METADATA = "encryption-key-id"
# Key ids travel in payload metadata and TOML keys: keep them plain.
KEY_ID = re.compile(r"[A-Za-z0-9._-]{1,64}")
MAKE_KEYS = (
    "make a key file with `baton payload-keys new`, or set "
    f"{KEYS_ENV}=<id>:<base64 of 32 random bytes> (`openssl rand -base64 32` makes one)"
)
KEY_FILE_HEADER = f"""\
# Baton's payload keys: AES-256 keys that encrypt every workflow and activity
# payload (inputs, outputs, failures) before it reaches Temporal.
#
# `current` names the key new payloads are encrypted with; every key under
# [keys] decrypts. Keep an old key for as long as any history encrypted with
# it is kept: without it, that history cannot be read. `baton payload-keys
# new --rotate` adds a key and makes it current.
#
# Workers, clients and the inbox's codec server need this same file (or the
# same keys in {KEYS_ENV}). Keep it mode 0600; never commit it; back it up
# apart from Temporal's database.
"""


class MissingPayloadKeys(ConfigError):
    """No payload keys are configured; the message says how to make them."""


class PayloadDecryptionError(ValueError):
    """An encrypted payload cannot be decrypted; the message says why."""


@dataclass(frozen=True)
class PayloadKeys:
    """The AES-256 keys payloads are encrypted with: ``current`` encrypts,
    all of ``keys`` decrypt. ``source`` says where they came from, for
    messages."""

    current: str
    # Out of repr: a logged or printed PayloadKeys must not give the keys away.
    keys: Mapping[str, bytes] = field(repr=False)
    source: str = "the payload keys"

    def __post_init__(self) -> None:
        for key_id, key in self.keys.items():
            if not KEY_ID.fullmatch(key_id):
                raise ConfigError(
                    f"{self.source}: key id {key_id!r} may hold only letters, digits, '.', '_' "
                    "and '-' (at most 64)"
                )
            if len(key) != KEY_SIZE:
                raise ConfigError(
                    f"{self.source}: key '{key_id}' is {len(key)} bytes; AES-256 needs "
                    f"{KEY_SIZE} (base64 of 32 random bytes: `openssl rand -base64 32`)"
                )
        if self.current not in self.keys:
            listed = ", ".join(sorted(self.keys)) or "none"
            raise ConfigError(
                f"{self.source}: the current key '{self.current}' is not among its keys "
                f"({listed}); set current to one of them"
            )

    @classmethod
    def from_env(
        cls, env: Mapping[str, str] = os.environ, data_dir: Path | None = None
    ) -> PayloadKeys:
        """The keys of ``BATON_PAYLOAD_KEYS``, else of the key file
        (``BATON_PAYLOAD_KEY_FILE``, else ``<data_dir>/payload-keys.toml``,
        data_dir defaulting to ``BATON_DATA_DIR`` or ``.baton``)."""
        listed = env.get(KEYS_ENV)
        if listed:
            return parse_keys_env(listed)
        path = key_file_path(env, data_dir)
        if not path.exists():
            if env.get(KEY_FILE_ENV):
                raise MissingPayloadKeys(
                    f"{KEY_FILE_ENV}={path} names no file: `baton payload-keys new` writes a "
                    f"new key file there, or point {KEY_FILE_ENV} at the existing one"
                )
            raise MissingPayloadKeys(
                f"no payload keys: payloads are encrypted, and neither {KEYS_ENV} nor "
                f"{KEY_FILE_ENV} is set, nor is there a key file at {path}; {MAKE_KEYS}. "
                "Workers and clients must share the same keys"
            )
        return read_key_file(path)


def key_file_path(env: Mapping[str, str] = os.environ, data_dir: Path | None = None) -> Path:
    """The key file: ``BATON_PAYLOAD_KEY_FILE``, else ``payload-keys.toml``
    in the data dir."""
    explicit = env.get(KEY_FILE_ENV)
    if explicit:
        return Path(explicit)
    return (data_dir or Path(env.get("BATON_DATA_DIR") or ".baton")) / KEY_FILE_NAME


def parse_keys_env(text: str) -> PayloadKeys:
    """``id1:base64key,id2:base64key``: the first is current."""
    keys: dict[str, bytes] = {}
    for number, entry in enumerate(text.split(","), start=1):
        # The entry is never echoed: it holds a key.
        key_id, colon, encoded = entry.strip().partition(":")
        if not colon or not key_id:
            raise ConfigError(
                f"{KEYS_ENV}: entry {number} is not <id>:<base64 key>; the format is "
                "id1:base64key,id2:base64key, the current key first"
            )
        if key_id in keys:
            raise ConfigError(f"{KEYS_ENV}: key id '{key_id}' is listed twice; ids must differ")
        keys[key_id] = _decoded_key(encoded.strip(), key_id, KEYS_ENV)
    return PayloadKeys(current=next(iter(keys)), keys=keys, source=KEYS_ENV)


def read_key_file(path: Path) -> PayloadKeys:
    """The keys of the TOML key file at ``path``; refused if anyone but
    its owner may read it."""
    if path.stat().st_mode & 0o077:
        raise ConfigError(
            f"{path} can be read by other users, and it holds the keys to every payload: "
            f"`chmod 600 {path}` and try again"
        )
    layout = (
        'it must hold current = "<id>" and a [keys] table of "<id>" = "<base64 key>" lines '
        "(see the comment at its top)"
    )
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as err:
        raise ConfigError(f"{path} is not valid TOML ({err}); {layout}") from None
    current = data.get("current")
    table = data.get("keys")
    if (
        not isinstance(current, str)
        or not isinstance(table, dict)
        or not all(isinstance(v, str) for v in table.values())
        or set(data) - {"current", "keys"}
    ):
        raise ConfigError(f"{path} is not a payload key file: {layout}")
    keys = {key_id: _decoded_key(encoded, key_id, str(path)) for key_id, encoded in table.items()}
    return PayloadKeys(current=current, keys=keys, source=str(path))


def _decoded_key(encoded: str, key_id: str, source: str) -> bytes:
    try:
        return base64.b64decode(encoded, validate=True)
    except (binascii.Error, ValueError):
        raise ConfigError(
            f"{source}: key '{key_id}' is not base64 (of 32 random bytes: "
            "`openssl rand -base64 32`)"
        ) from None


def new_key_id(taken: Sequence[str] = ()) -> str:
    """``k<UTC date>-<4 hex>``: sorts by age at a glance, and differs from ``taken``."""
    while True:
        key_id = f"k{datetime.now(UTC):%Y%m%d}-{secrets.token_hex(2)}"
        if key_id not in taken:
            return key_id


def create_payload_key(path: Path, *, rotate: bool = False) -> str:
    """Write a new key to the key file at ``path`` (mode 0600, its folder
    0700 if made here) and return its id. An existing file is kept unless
    ``rotate``: then the new key is added and made current, and the old
    keys stay to read older history."""
    path.parent.mkdir(parents=True, exist_ok=True, mode=0o700)
    if path.exists():
        if not rotate:
            raise FileExistsError(
                f"{path} exists already: `baton payload-keys new --rotate` adds a new key "
                "and makes it current (the old keys stay, to read older history)"
            )
        keys = read_key_file(path)
        key_id = new_key_id(list(keys.keys))
        _replace(path, _key_file_text(key_id, {**keys.keys, key_id: AESGCM.generate_key(256)}))
        return key_id
    key_id = new_key_id()
    # O_EXCL: of two commands racing to make the file, one fails rather
    # than both writing keys that payloads may already be encrypted with.
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(_key_file_text(key_id, {key_id: AESGCM.generate_key(256)}))
        out.flush()
        os.fsync(out.fileno())
    _sync_folder(path.parent)
    return key_id


def ensure_payload_key(data_dir: Path, env: Mapping[str, str] = os.environ) -> PayloadKeys:
    """The configured keys; when none are (no variable, no file), a key
    file made once at ``<data_dir>/payload-keys.toml``. For the demo: a key
    file someone named but that is missing stays an error."""
    if not env.get(KEYS_ENV) and not env.get(KEY_FILE_ENV):
        path = data_dir / KEY_FILE_NAME
        # Another process of the demo may make it at the same moment.
        with contextlib.suppress(FileExistsError):
            create_payload_key(path)
    return PayloadKeys.from_env(env, data_dir)


def _key_file_text(current: str, keys: Mapping[str, bytes]) -> str:
    lines = [KEY_FILE_HEADER, f'current = "{current}"', "", "[keys]"]
    lines += [f'"{key_id}" = "{base64.b64encode(key).decode()}"' for key_id, key in keys.items()]
    return "\n".join(lines) + "\n"


def _replace(path: Path, text: str) -> None:
    """Write ``text`` to ``path`` atomically: a crash half-way must leave
    the old keys, never a truncated file that lost them."""
    fd, tmp = tempfile.mkstemp(dir=path.parent, prefix=f".{path.name}.")  # mode 0600
    try:
        with os.fdopen(fd, "w", encoding="utf-8") as out:
            out.write(text)
            out.flush()
            os.fsync(out.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _sync_folder(path.parent)


def _sync_folder(folder: Path) -> None:
    """Make a new or renamed file's name durable: a lost key file loses history."""
    fd = os.open(folder, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


class EncryptionCodec(PayloadCodec):
    """AES-256-GCM over each whole serialized payload (its metadata too,
    which names the type): a random 96-bit nonce per payload, the key id as
    associated data."""

    def __init__(self, keys: PayloadKeys) -> None:
        self._keys = keys
        self._ciphers = {key_id: AESGCM(key) for key_id, key in keys.keys.items()}

    async def encode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [self._encrypt(payload) for payload in payloads]

    async def decode(self, payloads: Sequence[Payload]) -> list[Payload]:
        return [
            self._decrypt(payload) if payload.metadata.get("encoding") == ENCODING else payload
            for payload in payloads
        ]

    def _encrypt(self, payload: Payload) -> Payload:
        key_id = self._keys.current.encode()
        nonce = os.urandom(NONCE_SIZE)
        sealed = self._ciphers[self._keys.current].encrypt(
            nonce, payload.SerializeToString(), key_id
        )
        return Payload(
            metadata={"encoding": ENCODING, KEY_ID_METADATA: key_id}, data=nonce + sealed
        )

    def _decrypt(self, payload: Payload) -> Payload:
        key_id = payload.metadata.get(KEY_ID_METADATA, b"").decode(errors="replace")
        cipher = self._ciphers.get(key_id)
        if cipher is None:
            raise PayloadDecryptionError(
                f"a payload is encrypted with key '{key_id}', which {self._keys.source} lacks "
                f"(it holds {', '.join(sorted(self._keys.keys))}): the key was rotated out, or "
                "the payload comes from another deployment; add that key back to read it"
            )
        nonce, sealed = payload.data[:NONCE_SIZE], payload.data[NONCE_SIZE:]
        try:
            plain = cipher.decrypt(nonce, sealed, key_id.encode())
        except (InvalidTag, ValueError):  # ValueError: too short to hold a nonce
            raise PayloadDecryptionError(
                f"a payload encrypted with key '{key_id}' does not decrypt: it was altered "
                "after encryption (or damaged), so it is not what a Baton process wrote"
            ) from None
        return Payload.FromString(plain)


def encrypted_data_converter(keys: PayloadKeys) -> DataConverter:
    """Baton's converter (pydantic models) with every payload encrypted;
    failure messages and stack traces travel as encrypted payloads too,
    since they can name a vendor or quote a document."""
    return dataclasses.replace(
        pydantic_data_converter,
        payload_codec=EncryptionCodec(keys),
        failure_converter_class=DefaultFailureConverterWithEncodedAttributes,
    )
