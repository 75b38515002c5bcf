"""The document store: documents kept under their SHA-256, so that a run
carries a reference to its document (a claim check) and never its text.

The starter puts the file in (`baton start FILE`, `baton documents put
FILE`); workers read it out by its hash, and only from here. History,
queries, results and the audit trail hold the reference and what was
extracted, which keeps a 1 MiB document out of Temporal's payloads and the
document's personal data out of everything but this folder.

`FolderStore` keeps each document as a file named by its hash under a
folder of the data dir (mode 0600 in 0700 folders). An object store fits
the same small protocol: `put` bytes and get a reference, `read` a
reference and get the bytes back, checked against the hash.
"""

from __future__ import annotations

import hashlib
import mimetypes
import os
import stat
import tempfile
from pathlib import Path
from typing import Protocol

from pydantic import BaseModel, ConfigDict, Field

DEFAULT_MAX_DOCUMENT_BYTES = 1024 * 1024
MAX_BYTES_ENV = "BATON_MAX_DOCUMENT_BYTES"
STORE_ENV = "BATON_DOCUMENT_STORE"


class DocumentRef(BaseModel):
    """What a run knows of a document: enough to fetch it and to be sure
    that what was fetched is what the requester signed for."""

    model_config = ConfigDict(extra="forbid", frozen=True)

    # A hash, never a path: nothing a starter writes here can name a file.
    sha256: str = Field(pattern=r"^[0-9a-f]{64}$", description="SHA-256 of the bytes, hex")
    name: str = Field(
        min_length=1,
        max_length=255,
        pattern=r"^[^/\\\x00]+$",
        description="The file name it was put in under, for people; not a path",
    )
    size: int = Field(ge=0, description="Bytes")
    media_type: str = Field(max_length=100, default="application/octet-stream")

    @classmethod
    def of(cls, data: bytes, *, name: str) -> DocumentRef:
        """The reference of ``data`` put in under the file name ``name``."""
        return cls(
            sha256=hashlib.sha256(data).hexdigest(),
            name=Path(name).name,
            size=len(data),
            media_type=mimetypes.guess_type(name)[0] or "application/octet-stream",
        )


class DocumentError(Exception):
    """A document that cannot be stored or read; the message says why and
    what to do."""


class DocumentNotInStore(DocumentError):
    pass


class DocumentTampered(DocumentError):
    pass


class DocumentTooLarge(DocumentError):
    pass


class DocumentStore(Protocol):
    def put(self, data: bytes, *, name: str) -> DocumentRef: ...

    def read(self, ref: DocumentRef) -> bytes: ...


def max_document_bytes() -> int:
    return int(os.environ.get(MAX_BYTES_ENV, DEFAULT_MAX_DOCUMENT_BYTES))


def _amount(size: int) -> str:
    return f"{size / 2**20:.1f} MiB" if size >= 2**20 // 10 else f"{size:,} bytes"


def _too_large(what: str, size: int, limit: int) -> DocumentTooLarge:
    return DocumentTooLarge(
        f"{what} is {_amount(size)}; documents may be at most {_amount(limit)}. "
        f"Split the document, or raise {MAX_BYTES_ENV} on the worker and the starter"
    )


class FolderStore:
    """Documents as files under ``root``, at ``<root>/<first 2 hex>/<hash>``."""

    def __init__(self, root: Path) -> None:
        self.root = root

    def path_of(self, sha256: str) -> Path:
        return self.root / sha256[:2] / sha256

    def put(self, data: bytes, *, name: str) -> DocumentRef:
        limit = max_document_bytes()
        if len(data) > limit:
            raise _too_large(name, len(data), limit)
        ref = DocumentRef.of(data, name=name)
        target = self.path_of(ref.sha256)
        if not target.exists():
            # Explicit modes, whatever the umask: documents are for this user alone.
            self.root.mkdir(mode=0o700, parents=True, exist_ok=True)
            target.parent.mkdir(mode=0o700, exist_ok=True)
            # Written aside and renamed: a reader never sees half a document,
            # and two starters putting the same one leave one whole file.
            fd, temporary = tempfile.mkstemp(dir=target.parent, prefix=".put-")
            try:
                with os.fdopen(fd, "wb") as out:
                    out.write(data)
                os.replace(temporary, target)
            except BaseException:
                Path(temporary).unlink(missing_ok=True)
                raise
        return ref

    def read(self, ref: DocumentRef) -> bytes:
        """The document's bytes, checked against its hash and size. Through
        one descriptor, following no symlink: a link planted in the store
        does not lead out of it, and a FIFO neither blocks nor is read."""
        limit = max_document_bytes()
        if ref.size > limit:
            raise _too_large(f"document {ref.sha256} ({ref.name})", ref.size, limit)
        path = self.path_of(ref.sha256)
        try:
            fd = os.open(path, os.O_RDONLY | os.O_NOFOLLOW | os.O_NONBLOCK)
        except FileNotFoundError:
            raise DocumentNotInStore(
                f"the document store at {self.root} has no document {ref.sha256} "
                f"({ref.name}): put it in with `baton documents put FILE` against the store "
                f"the workers read ({STORE_ENV})"
            ) from None
        except OSError as err:
            raise DocumentTampered(
                f"the stored document {ref.sha256} ({ref.name}) cannot be read: "
                f"{err.strerror}; put the document in again"
            ) from None
        with os.fdopen(fd, "rb") as file:
            if not stat.S_ISREG(os.fstat(file.fileno()).st_mode):
                raise DocumentTampered(
                    f"the stored document {ref.sha256} ({ref.name}) is not a regular file; "
                    "put the document in again"
                )
            data = file.read(ref.size + 1)
        if len(data) != ref.size or hashlib.sha256(data).hexdigest() != ref.sha256:
            raise DocumentTampered(
                f"the stored document {ref.sha256} ({ref.name}) does not match its hash: "
                "it was changed after it was put in. Put the original in again"
            )
        return data


def put_file(store: DocumentStore, path: Path) -> DocumentRef:
    """Put the file at ``path`` in ``store``, read with the caller's own rights."""
    limit = max_document_bytes()
    with path.open("rb") as file:
        data = file.read(limit + 1)
    if len(data) > limit:
        raise _too_large(str(path), os.path.getsize(path), limit)
    return store.put(data, name=path.name)


def document_store(data_dir: Path | None = None) -> FolderStore:
    """The store this process uses: BATON_DOCUMENT_STORE, else the folder
    `documents` of the data dir (BATON_DATA_DIR, default .baton)."""
    explicit = os.environ.get(STORE_ENV)
    if explicit:
        return FolderStore(Path(explicit))
    data_dir = data_dir or Path(os.environ.get("BATON_DATA_DIR", ".baton"))
    return FolderStore(data_dir / "documents")


def decode_text(raw: bytes) -> tuple[str, str | None]:
    """The text of a document and, when there is none to use, why."""
    if not raw.strip():
        return "", "the file is empty"
    if b"\x00" in raw:
        return "", "the file is binary, not text"
    try:
        return raw.decode("utf-8"), None
    except UnicodeDecodeError as err:
        return "", f"the file is not UTF-8 text ({err.reason} at byte {err.start})"
