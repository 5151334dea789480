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
import re
import shutil
import tempfile
import unicodedata
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
        spooled = Spooled(tmp_name, digest.hexdigest(), size, head)
        # An upload's reader (persistence.uploads.GuardedReader) judges the whole file here,
        # before any backend places the bytes or records a row: a ZIP's directory is at its end.
        check = getattr(stream, "check_spooled", None)
        if callable(check):
            check(spooled)
        yield spooled
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


# Signatures that decide a type on their own: long or binary enough that text never starts so.
_MAGIC: tuple[tuple[bytes, str], ...] = (
    (b"%PDF-", "application/pdf"),
    (b"\x89PNG\r\n\x1a\n", "image/png"),
    (b"\xff\xd8\xff", "image/jpeg"),
    (b"GIF87a", "image/gif"),
    (b"GIF89a", "image/gif"),
    (b"\x1f\x8b", "application/gzip"),
    (b"7z\xbc\xaf\x27\x1c", "application/x-7z-compressed"),
    (b"Rar!\x1a\x07", "application/vnd.rar"),
    (b"\x7fELF", "application/x-executable"),
    (b"SQLite format 3\x00", "application/vnd.sqlite3"),
    (b"OggS", "audio/ogg"),
    (b"fLaC", "audio/flac"),
)
ZIP_HEADS = (b"PK\x03\x04", b"PK\x05\x06")
_ZIP_TYPES = {
    ".docx": "application/vnd.openxmlformats-officedocument.wordprocessingml.document",
    ".xlsx": "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet",
    ".pptx": "application/vnd.openxmlformats-officedocument.presentationml.presentation",
    ".jar": "application/java-archive",
    ".epub": "application/epub+zip",
}
# Content a browser runs when it renders it: refused unless named on the allow-list, and
# offered only as a download (see persistence.uploads).
ACTIVE_TYPES = frozenset({"text/html", "application/xhtml+xml", "image/svg+xml"})
# Names a browser opens as HTML or SVG whatever the first bytes say.
_ACTIVE_EXTENSIONS = {
    ".html": "text/html",
    ".htm": "text/html",
    ".shtml": "text/html",
    ".mht": "text/html",
    ".mhtml": "text/html",
    ".xhtml": "application/xhtml+xml",
    ".xht": "application/xhtml+xml",
    ".svg": "image/svg+xml",
}


def sniff_mime(head: bytes, filename: str | None = None) -> str:
    """The type from the first bytes (up to ``HEAD_BYTES``); the filename only refines text
    and, as a first guess, ZIP types. Uploads confirm a ZIP type from the archive's manifest
    and look at the whole file for a second format (:func:`persistence.uploads.inspect_upload`)."""
    ext = os.path.splitext(filename or "")[1].lower()
    for magic, mime in _MAGIC:
        if head.startswith(magic):
            return mime
    if head[:4] == b"RIFF" and head[8:12] == b"WEBP":
        return "image/webp"
    if head[:4] == b"RIFF" and head[8:12] == b"WAVE":
        return "audio/wav"
    if head.startswith(ZIP_HEADS):
        return _ZIP_TYPES.get(ext, "application/zip")
    text = decode_text(head)
    if text is not None:
        return _text_type(text, ext)
    # Short signatures that plain text could start with come after the text test.
    if head[:2] == b"BM" and head[6:10] == b"\x00\x00\x00\x00":
        return "image/bmp"
    if head[:2] == b"MZ":
        return "application/x-msdownload"
    if head[:3] == b"ID3":
        return "audio/mpeg"
    if head[4:8] == b"ftyp":
        return _library_type(head) or "video/mp4"
    return _library_type(head) or "application/octet-stream"


def _library_type(head: bytes) -> str | None:
    """What puremagic (a signature database far larger than ours) makes of the bytes: its
    most confident match that names a MIME type."""
    try:
        import puremagic
    except ImportError:  # pragma: no cover - requirements.txt installs it
        return None
    try:
        matches = puremagic.magic_string(head)
    except (puremagic.PureError, ValueError):
        return None
    for match in matches:
        mime = str(match.mime_type or "").lower()
        # Text, active content and the types our own signatures decide are never taken from a
        # short match (puremagic calls any bytes after FF FE "text/plain", any "BM" a bitmap).
        if "/" in mime and not is_textual(mime) and mime not in ACTIVE_TYPES and mime not in _OWN_TYPES:
            return mime
    return None


_OWN_TYPES = frozenset(
    {mime for _, mime in _MAGIC}
    | set(_ZIP_TYPES.values())
    | {"application/zip", "image/webp", "audio/wav", "image/bmp", "image/x-ms-bmp", "image/x-bmp", "video/mp4"}
    | {"application/x-msdownload", "audio/mpeg"}
)


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


def is_textual(mime: str) -> bool:
    """Text a person can read (not active content): text/* and the textual application types."""
    essence = mime.split(";", 1)[0].strip().lower()
    if essence in ACTIVE_TYPES:
        return False
    return essence.startswith("text/") or essence in _TEXTUAL or essence.endswith(("+json", "+xml"))


def _text_type(text: str, ext: str) -> str:
    markup = markup_type(text)
    if markup in ACTIVE_TYPES:
        return markup
    if ext in _ACTIVE_EXTENSIONS:
        return _ACTIVE_EXTENSIONS[ext]
    guessed = mimetypes.guess_type("x" + ext)[0] if ext else None
    if guessed and (guessed.startswith("text/") or guessed in _TEXTUAL):
        return guessed
    return markup or "text/plain"


_BOMS = (
    (b"\xef\xbb\xbf", "utf-8"),
    (b"\xff\xfe\x00\x00", "utf-32-le"),
    (b"\x00\x00\xfe\xff", "utf-32-be"),
    (b"\xff\xfe", "utf-16-le"),
    (b"\xfe\xff", "utf-16-be"),
)


def decode_text(head: bytes) -> str | None:
    """``head`` as text when it is text (UTF-8, or UTF-16/32 with a byte order mark), else None."""
    if not head:
        return ""  # an empty file is (empty) text
    codec, body = "utf-8", head
    for bom, name in _BOMS:
        if head.startswith(bom):
            codec, body = name, head[len(bom) :]
            break
    unit = 4 if "32" in codec else 2 if "16" in codec else 1
    body = body[: len(body) - len(body) % unit]
    try:
        text = body.decode(codec)
    except UnicodeDecodeError as exc:
        if exc.start < len(body) - 4:
            return None
        text = body[: exc.start].decode(codec)  # a character cut by the end of the sample
    if unit == 1:
        return None if "\x00" in text else text
    # Almost any bytes decode as UTF-16: only what reads as text counts (no controls, private
    # use or unassigned code points, which random bytes after a BOM are full of).
    if any(unicodedata.category(ch) in _NOT_TEXT and ch not in "\t\n\r\f\v" for ch in text):
        return None
    return text


_NOT_TEXT = frozenset({"Cc", "Co", "Cs", "Cn"})


# What may stand before a document's first element: whitespace, the XML declaration and other
# processing instructions, comments and a DOCTYPE (with an internal subset).
_PROLOG = re.compile(r"\s+|<\?.*?\?>|<!--.*?-->|<!doctype(?:[^\[>]|\[.*?\])*>", re.IGNORECASE | re.DOTALL)
_FIRST_TAG = re.compile(r"<(?:[a-z_][\w.\-]*:)?([a-z][\w.\-]*)", re.IGNORECASE)
_DOCTYPE = re.compile(r"<!doctype\s+(?:[\w.\-]+:)?([\w.\-]+)", re.IGNORECASE)
# First elements that make a document HTML whatever follows.
_HTML_ROOTS = frozenset(["html", "head", "body", "script", "iframe", "frameset", "frame", "object", "embed"])
# First elements a browser's sniffer also takes for HTML (the WHATWG list), but which start
# many a Markdown README too: such text is HTML when it carries script (HTML_ACTIVE).
_HTML_TAGS = frozenset(
    [
        "h1",
        "h2",
        "h3",
        "div",
        "font",
        "table",
        "a",
        "style",
        "title",
        "b",
        "br",
        "p",
        "img",
        "meta",
        "link",
        "form",
        "base",
        "span",
        "center",
    ]
)
# Script in XML runs only in the XHTML or SVG namespace, or through an XSLT stylesheet.
XML_ACTIVE = re.compile(
    r"<(?:[\w.\-]+:)?script[\s>/]|http://www\.w3\.org/1999/xhtml|http://www\.w3\.org/2000/svg|<\?xml-stylesheet",
    re.IGNORECASE,
)
# In HTML also event handlers, script URLs and embedded documents.
HTML_ACTIVE = re.compile(
    XML_ACTIVE.pattern + r"|\son[a-z]+\s*=|javascript:|<(?:iframe|frame|object|embed)[\s>/]", re.IGNORECASE
)


def _first_element(text: str) -> tuple[str, str | None] | None:
    """The local name of markup's first element after the prolog ("" when none follows) and
    its DOCTYPE's name; None for text that is not markup (does not start with ``<``)."""
    if not text.lstrip("\ufeff \t\r\n\f\v").startswith("<"):
        return None
    pos = 0
    doctype = None
    while True:
        m = _PROLOG.match(text, pos)
        if m is None or m.end() == pos:
            break
        d = _DOCTYPE.match(m.group(0))
        if d:
            doctype = d.group(1).lower()
        pos = m.end()
    tag = _FIRST_TAG.match(text, pos)
    return (tag.group(1).lower() if tag else ""), doctype


def markup_type(text: str) -> str | None:
    """The type of text that is markup (first character ``<`` after a BOM and whitespace),
    from its first element after the prolog: ``image/svg+xml`` for ``svg`` (or an SVG
    DOCTYPE), ``text/html`` for an HTML root or DOCTYPE, or an HTML fragment with script
    (:data:`HTML_ACTIVE`), ``application/xhtml+xml`` for other XML with script
    (:data:`XML_ACTIVE`), ``application/xml`` for other XML. None for text that is not markup."""
    first = _first_element(text.lstrip("\ufeff"))
    if first is None:
        return None
    name, doctype = first
    if name == "svg" or doctype == "svg":
        return "image/svg+xml"
    if name in _HTML_ROOTS or doctype == "html":
        return "text/html"
    if name in _HTML_TAGS:
        return "text/html" if HTML_ACTIVE.search(text) else None
    if XML_ACTIVE.search(text):
        return "application/xhtml+xml"
    return "application/xml" if name else None


def active_markup_pattern(text: str) -> re.Pattern[str] | None:
    """For markup not yet found active in its first bytes: what to look for in the rest of the
    file (script in an HTML fragment or in XML). None when there is nothing to look for."""
    first = _first_element(text.lstrip("\ufeff"))
    if first is None or first[0] == "":
        return None
    name, doctype = first
    if name == "svg" or doctype in ("svg", "html") or name in _HTML_ROOTS:
        return None  # already active from the first element
    return HTML_ACTIVE if name in _HTML_TAGS else XML_ACTIVE
