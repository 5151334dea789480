"""Content-addressed file bytes on a local folder.

An object lives at ``{owner}/{sha256[:2]}/{sha256}``: the path comes from the owner and the
content hash, never from a user's filename. Bytes are streamed (1 MiB at a time) into a
temporary file in the same folder while they are hashed, then renamed (or, by ``place``,
hard-linked) into place, so a crash leaves either the whole object or nothing; a second
upload of the same bytes is discarded after hashing and stores nothing new.

The stores keep an upload's temporary copy (:class:`HeldBlob`) until its row is recorded:
a prune racing the upload may delete the object in between, and the bytes are then placed
again from the copy (see ``SQLiteStore._record_upload`` and ``FunctionStore._settle``).
"""

from __future__ import annotations

import contextlib
import errno
import hashlib
import io
import mimetypes
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from .errors import NotFoundError, StorageFullError, ValidationError

__all__ = [
    "HeldBlob",
    "LocalFileStore",
    "StoredBlob",
    "hold",
    "naming_full_disk",
    "open_source",
    "sniff_mime",
    "storage_path_for",
]

CHUNK = 1024 * 1024
HEAD_BYTES = 8192
SHARED_OWNER = "shared"


def storage_path_for(owner: str | None, sha256: str) -> str:
    return f"{owner or SHARED_OWNER}/{sha256[:2]}/{sha256}"


_FILE_ID_NAMESPACE = uuid.UUID("6f1c3a52-7d0e-4b8e-9a51-3c2f0d6b9e41")


def file_id_for(storage_path: str) -> str:
    """A stored object's id follows from its path (owner + hash): the same file has the same
    id in every store, so copies between stores line up."""
    return str(uuid.uuid5(_FILE_ID_NAMESPACE, storage_path))


@dataclass(frozen=True, slots=True)
class StoredBlob:
    sha256: str
    size: int
    storage_path: str
    head: bytes
    created: bool


@contextlib.contextmanager
def open_source(source: object, field: str = "source") -> Iterator[BinaryIO]:
    """A readable binary stream for a path, bytes or binary stream."""
    if isinstance(source, bytes | bytearray | memoryview):
        yield io.BytesIO(bytes(source))
    elif isinstance(source, str | os.PathLike):
        try:
            fh = open(source, "rb")  # noqa: SIM115 - closed below
        except FileNotFoundError:
            raise ValidationError(field, f"no such file: {os.fspath(source)}") from None
        except IsADirectoryError:
            raise ValidationError(field, f"is a directory: {os.fspath(source)}") from None
        except OSError as exc:
            raise ValidationError(field, f"cannot read {os.fspath(source)}: {exc.strerror}") from None
        with fh:
            yield fh
    elif hasattr(source, "read"):
        yield source  # type: ignore[misc]
    else:
        raise ValidationError(field, f"expected a path, bytes or a binary stream, got {type(source).__name__}")


@dataclass(frozen=True, slots=True)
class Spooled:
    """A stream copied into a temporary file while hashed: where it is and what it was."""

    path: str
    sha256: str
    size: int
    head: bytes


@contextlib.contextmanager
def spool(stream: BinaryIO, directory: str | Path | None = None, *, fsync: bool = False) -> Iterator[Spooled]:
    """Copy ``stream`` into a temporary file 1 MiB at a time, hashing it (never the whole
    file in memory). The file is removed on exit unless the caller moved it away."""
    where = directory if directory is not None else tempfile.gettempdir()
    with naming_full_disk(where):
        if directory is not None:
            Path(directory).mkdir(parents=True, exist_ok=True)
        fd, tmp_name = tempfile.mkstemp(dir=directory, prefix="upload-")
    digest = hashlib.sha256()
    size = 0
    head = b""
    try:
        # A full disk raises StorageFullError; the finally below removes the partial copy.
        with naming_full_disk(where), os.fdopen(fd, "wb") as out:
            while True:
                chunk = stream.read(CHUNK)
                if not chunk:
                    break
                if isinstance(chunk, str):
                    raise ValidationError("source", "stream must be opened in binary mode")
                size += len(chunk)
                if len(head) < HEAD_BYTES:
                    head += chunk[: HEAD_BYTES - len(head)]
                digest.update(chunk)
                out.write(chunk)
            if fsync:
                out.flush()
                os.fsync(out.fileno())
        yield Spooled(tmp_name, digest.hexdigest(), size, head)
    finally:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp_name)


class HeldBlob:
    """An upload's bytes, spooled and hashed, with the temporary copy kept until its row is
    recorded. A prune may delete the stored object between the moment an upload finds (or
    writes) its bytes and the moment its row is committed; the store then places the bytes
    again from this copy. ``release()`` removes the copy."""

    def __init__(self, spooled: Spooled, owner: str | None, stack: contextlib.ExitStack) -> None:
        self.spooled = spooled
        self.owner = owner
        self.storage_path = storage_path_for(owner, spooled.sha256)
        self._stack = stack

    @property
    def sha256(self) -> str:
        return self.spooled.sha256

    @property
    def size(self) -> int:
        return self.spooled.size

    @property
    def head(self) -> bytes:
        return self.spooled.head

    def release(self) -> None:
        self._stack.close()


def hold(stream: BinaryIO, owner: str | None, directory: str | Path | None = None, *, fsync: bool = False) -> HeldBlob:
    """Spool ``stream`` (see :func:`spool`) and keep the copy until ``release()``."""
    stack = contextlib.ExitStack()
    try:
        spooled = stack.enter_context(spool(stream, directory, fsync=fsync))
    except BaseException:
        stack.close()
        raise
    return HeldBlob(spooled, owner, stack)


# "No space left on device" and "disk quota exceeded": both mean the write cannot fit.
_NO_SPACE = frozenset({errno.ENOSPC, errno.EDQUOT})


@contextlib.contextmanager
def naming_full_disk(where: str | Path) -> Iterator[None]:
    """Raise a full disk as :class:`StorageFullError` naming ``where``; other errors pass."""
    try:
        yield
    except OSError as exc:
        if exc.errno in _NO_SPACE:
            raise StorageFullError(str(where), exc.strerror or "no space left on device") from None
        raise


class LocalFileStore:
    def __init__(self, root: str | Path) -> None:
        self.root = Path(root)

    def describe(self) -> str:
        return str(self.root)

    def _path(self, storage_path: str) -> Path:
        path = (self.root / storage_path).resolve()
        if self.root.resolve() not in path.parents:
            raise ValidationError("storage_path", f"{storage_path!r} is outside the file store")
        return path

    def put(self, stream: BinaryIO, owner: str | None) -> StoredBlob:
        # The temporary file sits in the store's own folder, so the rename below is atomic.
        with spool(stream, self.root / ".tmp", fsync=True) as tmp:
            storage_path = storage_path_for(owner, tmp.sha256)
            final = self._path(storage_path)
            if final.exists() and final.stat().st_size == tmp.size:
                return StoredBlob(tmp.sha256, tmp.size, storage_path, tmp.head, created=False)
            # The folder for a new hash prefix takes space too (a full tmpfs refuses mkdir).
            with naming_full_disk(self.root):
                final.parent.mkdir(parents=True, exist_ok=True)
                os.replace(tmp.path, final)  # atomic on one file system
            _fsync_dir(final.parent)
            return StoredBlob(tmp.sha256, tmp.size, storage_path, tmp.head, created=True)

    @property
    def spool_dir(self) -> Path:
        """Where uploads are spooled: inside the store, so placing one is a link or a rename."""
        return self.root / ".tmp"

    def place(self, spooled: Spooled, storage_path: str) -> StoredBlob:
        """Make sure the bytes of ``spooled`` (a file in :attr:`spool_dir`) are at
        ``storage_path``, keeping the spooled file: it is hard-linked into place, so the
        caller can place it again if a prune deletes the object before the upload's row is
        recorded."""
        final = self._path(storage_path)
        if final.exists() and final.stat().st_size == spooled.size:
            return StoredBlob(spooled.sha256, spooled.size, storage_path, spooled.head, created=False)
        aside = self.spool_dir / f"place-{uuid.uuid4().hex}"
        with naming_full_disk(self.root):
            final.parent.mkdir(parents=True, exist_ok=True)
            try:
                os.link(spooled.path, aside)
            except OSError as exc:
                if exc.errno in _NO_SPACE:
                    raise
                # A file system without hard links: a copy, synced before it is renamed in.
                shutil.copyfile(spooled.path, aside)
                with open(aside, "rb+") as fh:
                    os.fsync(fh.fileno())
            try:
                os.replace(aside, final)  # atomic on one file system; replaces a damaged object
            finally:
                with contextlib.suppress(FileNotFoundError):
                    os.unlink(aside)
        _fsync_dir(final.parent)
        return StoredBlob(spooled.sha256, spooled.size, storage_path, spooled.head, created=True)

    def exists(self, storage_path: str) -> bool:
        return self._path(storage_path).exists()

    def open(self, storage_path: str) -> BinaryIO:
        try:
            return open(self._path(storage_path), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"the bytes of {storage_path} are missing from the file store at {self.root}") from None

    def delete(self, storage_path: str) -> bool:
        try:
            self._path(storage_path).unlink()
            return True
        except FileNotFoundError:
            return False

    def total_bytes(self) -> int:
        return sum(p.stat().st_size for p in self.root.rglob("*") if p.is_file() and ".tmp" not in p.parts)


def _fsync_dir(path: Path) -> None:
    with contextlib.suppress(OSError):  # not supported on every platform / file system
        fd = os.open(path, os.O_RDONLY)
        try:
            os.fsync(fd)
        finally:
            os.close(fd)


_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"BM", "image/bmp"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x7fELF", "application/x-executable"),
    (b"MZ", "application/x-msdownload"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"OggS", "audio/ogg"),
    (b"ID3", "audio/mpeg"),
    (b"fLaC", "audio/flac"),
)
_ZIP_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".jar": "application/java-archive",
    ".epub": "application/epub+zip",
}


def sniff_mime(head: bytes, filename: str | None = None) -> str:
    """The type from the bytes themselves; the filename only refines text and zip types."""
    ext = os.path.splitext(filename or "")[1].lower()
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head[4:8] == b"ftyp":
        return "video/mp4"
    if head.startswith(b"PK\x03\x04") or head.startswith(b"PK\x05\x06"):
        return _ZIP_TYPES.get(ext, "application/zip")
    if _looks_like_text(head):
        stripped = head.lstrip()[:256].lower()
        if stripped.startswith((b"<!doctype html", b"<html")):
            return "text/html"
        if stripped.startswith(b"<svg") or (stripped.startswith(b"<?xml") and b"<svg" in head.lower()):
            return "image/svg+xml"
        guessed = mimetypes.guess_type("x" + ext)[0] if ext else None
        if guessed and (guessed.startswith("text/") or guessed in _TEXTUAL):
            return guessed
        return "text/plain"
    return "application/octet-stream"


_TEXTUAL = {
    "application/json",
    "application/xml",
    "application/javascript",
    "application/x-sh",
    "application/toml",
    "application/x-yaml",
    "application/yaml",
    "application/sql",
}


def _looks_like_text(head: bytes) -> bool:
    if not head:
        return True  # an empty file is (empty) text
    if b"\x00" in head:
        return False
    try:
        head.decode("utf-8")
        return True
    except UnicodeDecodeError as exc:
        # A multi-byte character cut by the end of the sample is still text.
        return exc.start >= len(head) - 3
