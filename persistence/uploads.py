"""Upload safety: a size limit, an allow-list of types sniffed from the bytes, no smuggling,
and a per-session rate limit. A refused upload raises :class:`UploadRefusedError` naming the
rule and stores nothing: the checks run on the stream while it is read and on its spooled
copy once it is whole, before bytes are placed in the store or a row is written.

Settings (environment or ``.env``):

* ``PERSISTENCE_MAX_UPLOAD_BYTES`` - largest file, default 100 MiB (Kimi's limit); 0 = none.
* ``PERSISTENCE_UPLOAD_ALLOWED_TYPES`` - comma-separated MIME patterns (``text/*``,
  ``application/pdf``). Default: text, PDF, JSON/XML/YAML/TOML/SQL, common images and
  Office/EPUB documents (no executables, archives, active content or unknown binaries).
  Active content (HTML, XHTML, SVG: a browser runs their script) is admitted only by its
  exact name (``image/svg+xml``), never by a wildcard such as ``text/*``. ``*/*`` turns the
  type rules off: anything is stored under its sniffed type (``copy`` uses it for files a
  store accepted already).
* ``PERSISTENCE_UPLOADS_PER_MINUTE`` (default 30) and ``PERSISTENCE_UPLOAD_BYTES_PER_MINUTE``
  (default 500 MiB) per ``session_id``; 0 = no limit. Uploads without a session are not
  rate-limited. The count is read from the store, so it holds across processes, and is
  soft under races (two uploads checked at the same instant can both pass).

What is sniffed, and how (rules ``allowed_types``, ``active_content``, ``polyglot``):

* The type comes from the bytes (:func:`~persistence.filestore.sniff_mime`: our signatures
  for the allowed types, puremagic for the rest); the filename only refines text.
* A ZIP is what its manifest says, never its name: Word/Excel/PowerPoint when
  ``[Content_Types].xml`` declares the main part and that part exists (macro-enabled when it
  declares a VBA project), EPUB (or OpenDocument) when the first entry is an uncompressed
  ``mimetype`` naming it, else ``application/zip``, which the default list refuses.
* Text whose first element, after a BOM, whitespace, the XML declaration, comments and a
  DOCTYPE, is ``svg`` or an HTML root is SVG or HTML; an HTML fragment or XML with a script
  element, handler or the XHTML/SVG namespace anywhere in the file is active too
  (:func:`~persistence.filestore.markup_type`). Active content is never stored as text.
* Polyglots (one file, two formats: each reader sees its own) are refused: a ZIP that a ZIP
  reader finds from the end of a file of another type; ``%PDF-`` in the first 1 KiB of a
  binary file that is not a PDF (PDF readers look there); data after a PDF's last
  ``%%EOF``; script or HTML markup inside an image or PDF; and in an Office/EPUB/ZIP file,
  any byte outside the archive's own records (before the first entry, between entries, after
  the end record) or another format's signature in its comment.
* A caller's ``mime_type`` never overrides the sniffed type (:func:`settle_type`).
"""

from __future__ import annotations

import codecs
import fnmatch
import logging
import re
import struct
import zipfile
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .errors import ValidationError
from .filestore import (
    ACTIVE_TYPES,
    HEAD_BYTES,
    HTML_ACTIVE,
    ZIP_HEADS,
    Spooled,
    active_markup_pattern,
    decode_text,
    is_textual,
    sniff_mime,
)

__all__ = [
    "ACTIVE_TYPES",
    "DEFAULT_ALLOWED_TYPES",
    "GuardedReader",
    "UploadRefusedError",
    "UploadRules",
    "download_type",
    "inspect_upload",
    "settle_type",
]

log = logging.getLogger("persistence.uploads")

MIB = 1024 * 1024
DEFAULT_ALLOWED_TYPES = (
    "text/*",
    "application/pdf",
    "application/json",
    "application/xml",
    "application/x-yaml",
    "application/yaml",
    "application/toml",
    "application/sql",
    "application/javascript",
    "application/x-sh",
    "image/png",
    "image/jpeg",
    "image/gif",
    "image/webp",
    "image/bmp",
    "application/vnd.openxmlformats-officedocument.*",
    "application/epub+zip",
)


class UploadRefusedError(ValidationError):
    """An upload broke a rule (``rule``: max_bytes, allowed_types, active_content, polyglot,
    uploads_per_minute, bytes_per_minute). Nothing was stored."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        super().__init__("source", f"refused by the {rule} rule: {message}; nothing was stored")


DEFAULT_MAX_BYTES = 100 * MIB
DEFAULT_UPLOADS_PER_MINUTE = 30
DEFAULT_BYTES_PER_MINUTE = 500 * MIB


@dataclass(frozen=True, slots=True)
class UploadRules:
    max_bytes: int | None = DEFAULT_MAX_BYTES
    allowed_types: tuple[str, ...] = DEFAULT_ALLOWED_TYPES
    uploads_per_minute: int | None = DEFAULT_UPLOADS_PER_MINUTE
    bytes_per_minute: int | None = DEFAULT_BYTES_PER_MINUTE

    @classmethod
    def from_env(cls, env: Mapping[str, str]) -> UploadRules:
        def number(name: str, default: int | None) -> int | None:
            raw = env.get(name)
            if raw is None or raw.strip() == "":
                return default
            try:
                value = int(raw)
            except ValueError:
                raise ValidationError(name, f"must be a whole number, got {raw!r}") from None
            if value < 0:
                raise ValidationError(name, f"must be 0 (no limit) or more, got {value}")
            return value or None

        types = env.get("PERSISTENCE_UPLOAD_ALLOWED_TYPES")
        return cls(
            max_bytes=number("PERSISTENCE_MAX_UPLOAD_BYTES", DEFAULT_MAX_BYTES),
            allowed_types=tuple(t.strip() for t in types.split(",") if t.strip()) if types else DEFAULT_ALLOWED_TYPES,
            uploads_per_minute=number("PERSISTENCE_UPLOADS_PER_MINUTE", DEFAULT_UPLOADS_PER_MINUTE),
            bytes_per_minute=number("PERSISTENCE_UPLOAD_BYTES_PER_MINUTE", DEFAULT_BYTES_PER_MINUTE),
        )

    @property
    def anything(self) -> bool:
        """``*/*``: the type rules are off (types are still sniffed and recorded)."""
        return "*/*" in self.allowed_types

    def allows(self, mime: str) -> bool:
        if self.anything:
            return True
        if mime in ACTIVE_TYPES:  # a browser runs it: only when named, never by a wildcard
            return mime in self.allowed_types
        return any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.allowed_types)


def _essence(mime: str) -> str:
    return mime.split(";", 1)[0].strip().lower()


def settle_type(sniffed: str, claimed: str | None) -> str:
    """The type an upload is stored under: the sniffed one, or the caller's ``claimed`` type
    when it only refines it, i.e. names the same type (with parameters such as a charset) or,
    for text, another textual type (``text/plain`` -> ``text/markdown``, ``text/x-python``,
    ``application/json``). Anything else (another family, active content, a binary type for
    text) is ignored, not refused: the bytes are what they are, and the stored type says so."""
    if claimed is None:
        return sniffed
    if _essence(claimed) == _essence(sniffed):
        return claimed
    if is_textual(sniffed) and is_textual(claimed):
        return claimed
    if _essence(sniffed) == "application/octet-stream" and not is_textual(claimed) and claimed not in ACTIVE_TYPES:
        return claimed  # bytes we cannot name: the caller may know better, short of text or script
    log.info("ignored the caller's type %s for bytes sniffed as %s", claimed, sniffed)
    return sniffed


def download_type(mime: str) -> str:
    """The Content-Type to serve a stored file with: active content goes out as
    ``application/octet-stream`` (and, from the app, always as an attachment), so no browser
    renders it on our origin."""
    return "application/octet-stream" if _essence(mime) in ACTIVE_TYPES else mime


# -- the whole file ----------------------------------------------------------------------

_ZIP_END = b"PK\x05\x06"
_ZIP_END_SIZE = 22
_ZIP_SEARCH = 65_535 + _ZIP_END_SIZE  # a ZIP reader looks for the end record this far back
_ZIP64_LOCATOR = b"PK\x06\x07"
_OOXML_MAIN = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document.main+xml": (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.document"
    ),
    "application/vnd.openxmlformats-officedocument.wordprocessingml.template.main+xml": (
        "application/vnd.openxmlformats-officedocument.wordprocessingml.template"
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet.main+xml": (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet"
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.template.main+xml": (
        "application/vnd.openxmlformats-officedocument.spreadsheetml.template"
    ),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation.main+xml": (
        "application/vnd.openxmlformats-officedocument.presentationml.presentation"
    ),
    "application/vnd.openxmlformats-officedocument.presentationml.template.main+xml": (
        "application/vnd.openxmlformats-officedocument.presentationml.template"
    ),
    "application/vnd.ms-word.document.macroenabled.main+xml": "application/vnd.ms-word.document.macroenabled.12",
    "application/vnd.ms-excel.sheet.macroenabled.main+xml": "application/vnd.ms-excel.sheet.macroenabled.12",
    "application/vnd.ms-powerpoint.presentation.macroenabled.main+xml": (
        "application/vnd.ms-powerpoint.presentation.macroenabled.12"
    ),
}
_MACRO_TYPES = {
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": (
        "application/vnd.ms-word.document.macroenabled.12"
    ),
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": (
        "application/vnd.ms-excel.sheet.macroenabled.12"
    ),
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": (
        "application/vnd.ms-powerpoint.presentation.macroenabled.12"
    ),
}
_OVERRIDE = re.compile(rb"<(?:\w+:)?Override\b([^>]*)>", re.IGNORECASE)
_ATTR = re.compile(rb"""(\w+)\s*=\s*(?:"([^"]*)"|'([^']*)')""")
# The file names its own type here: only a plain type name is taken (it is stored and served).
_OPENDOCUMENT = re.compile(r"application/vnd\.oasis\.opendocument\.[a-z0-9.+\-]{1,80}")
_MANIFEST_LIMIT = 1 * MIB  # [Content_Types].xml is a few KiB: never inflate more of it
# Signatures of other formats that do not belong in a ZIP comment.
_FOREIGN = re.compile(rb"%PDF-|<(?:[\w.\-]+:)?(?:script|html|svg)[\s>/]|PK\x03\x04|\x7fELF|MZ\x90\x00", re.IGNORECASE)
_MARKUP_IN_BINARY = re.compile(rb"<(?:[\w.\-]+:)?(?:script|html|svg|iframe|body)[\s>/]|javascript:", re.IGNORECASE)
_SCAN_CHUNK = 1 * MIB
_SCAN_OVERLAP = 256


class Smuggled(Exception):
    """What :func:`inspect_upload` found (``rule``, ``message``); the reader names the file."""

    def __init__(self, rule: str, message: str) -> None:
        self.rule = rule
        self.message = message
        super().__init__(f"{rule}: {message}")


def _zip_end(fh: BinaryIO, size: int) -> tuple[int, int, int, int, int] | None:
    """Where a ZIP reader finds an archive in a file, looking back from its end as they do:
    (end record offset, central directory offset, its size, where it should end, comment
    length), or None. The central directory must start with its signature where the end
    record says, or where its size says (a ZIP reader allows bytes prepended to an archive)."""
    start = max(0, size - _ZIP_SEARCH)
    tail = _read_at(fh, start, _ZIP_SEARCH)
    pos = len(tail)
    while (pos := tail.rfind(_ZIP_END, 0, pos)) >= 0:
        if len(tail) - pos < _ZIP_END_SIZE:
            continue
        _, _, _, _, _, cd_size, cd_offset, comment_len = struct.unpack("<4s4H2LH", tail[pos : pos + _ZIP_END_SIZE])
        end = start + pos
        cd_end = end
        if end >= 20 and _read_at(fh, end - 20, 4) == _ZIP64_LOCATOR:  # the real sizes are in the ZIP64 end record
            (record_at,) = struct.unpack("<Q", _read_at(fh, end - 12, 8))
            record = _read_at(fh, record_at, 56) if record_at < size else b""
            cd_end = record_at if record[:4] == b"PK\x06\x06" else end - 20
            if record[:4] == b"PK\x06\x06":
                cd_size, cd_offset = struct.unpack("<QQ", record[40:56])
        for where in (cd_offset, cd_end - cd_size):
            if 0 <= where <= size - 4 and (cd_size == 0 or _read_at(fh, where, 4) == b"PK\x01\x02"):
                return end, where, cd_size, cd_end, comment_len
    return None


def _read_at(fh: BinaryIO, offset: int, n: int) -> bytes:
    fh.seek(offset)
    return fh.read(n)


def _zip_layout_problem(fh: BinaryIO, size: int, archive: zipfile.ZipFile) -> str | None:
    """Bytes in a ZIP that no record accounts for: where a second format hides in an archive."""
    found = _zip_end(fh, size)
    if found is None:
        return "its end record is missing"
    end, cd_offset, cd_size, cd_end, comment_len = found
    if end + _ZIP_END_SIZE + comment_len != size:
        return f"{size - end - _ZIP_END_SIZE - comment_len:,} bytes follow its end record"
    if _FOREIGN.search(archive.comment):
        return "its comment holds another format"
    if cd_offset + cd_size != cd_end:
        return "bytes stand between its central directory and its end record"
    expected = 0
    for info in sorted(archive.infolist(), key=lambda i: i.header_offset):
        if info.header_offset not in _next_record(expected):
            return f"unaccounted bytes stand before the entry {info.filename!r}"
        header = _read_at(fh, info.header_offset, 30)
        if len(header) < 30 or header[:4] != b"PK\x03\x04":
            return f"the entry {info.filename!r} has no local header"
        name_len, extra_len = struct.unpack("<HH", header[26:30])
        data_end = info.header_offset + 30 + name_len + extra_len + info.compress_size
        expected = -data_end if info.flag_bits & 0x08 else data_end
    if cd_offset not in _next_record(expected):
        return "unaccounted bytes stand before its central directory"
    return None


def _next_record(expected: int) -> tuple[int, ...]:
    """Offsets where the next record may start after data ending at ``abs(expected)``;
    negative: the data is followed by a data descriptor (flag bit 3), 12 to 24 bytes with or
    without its signature, with 32- or 64-bit sizes."""
    if expected >= 0:
        return (expected,)
    end = -expected
    return (end + 12, end + 16, end + 20, end + 24)


def _zip_type(fh: BinaryIO, size: int, anything: bool) -> str:
    """The type of a ZIP-based file from its manifest; refuses one with hidden bytes."""
    try:
        archive = zipfile.ZipFile(fh)
    except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
        if anything:
            return "application/zip"
        raise Smuggled("allowed_types", f"a damaged ZIP that no ZIP reader can open ({exc})") from None
    with archive:
        if not anything:
            problem = _zip_layout_problem(fh, size, archive)
            if problem:
                raise Smuggled("polyglot", f"a polyglot: a ZIP in which {problem}")
        names = {info.filename for info in archive.infolist()}
        infos = archive.infolist()
        first = min(infos, key=lambda i: i.header_offset) if infos else None
        if first is not None and first.filename == "mimetype" and first.compress_type == zipfile.ZIP_STORED:
            declared = _read_member(archive, first, 200).strip().decode("ascii", "replace").lower()
            if declared == "application/epub+zip" and "META-INF/container.xml" in names:
                return declared
            if _OPENDOCUMENT.fullmatch(declared) and "META-INF/manifest.xml" in names:
                return declared
        if "[Content_Types].xml" in names and "_rels/.rels" in names:
            manifest = _read_member(archive, archive.getinfo("[Content_Types].xml"), _MANIFEST_LIMIT)
            kind = None
            macros = b"vbaproject" in manifest.lower() or any(n.lower().endswith("vbaproject.bin") for n in names)
            for attrs in _OVERRIDE.findall(manifest):
                values = {k.lower(): (a or b) for k, a, b in _ATTR.findall(attrs)}
                content_type = values.get(b"contenttype", b"").decode("ascii", "replace").strip().lower()
                part = values.get(b"partname", b"").decode("utf-8", "replace").lstrip("/")
                if content_type in _OOXML_MAIN and part in names:
                    kind = _OOXML_MAIN[content_type]
                    break
            if kind is not None:
                return _MACRO_TYPES.get(kind, kind) if macros else kind
        if "META-INF/MANIFEST.MF" in names:
            return "application/java-archive"
        return "application/zip"


def _read_member(archive: zipfile.ZipFile, info: zipfile.ZipInfo, limit: int) -> bytes:
    try:
        with archive.open(info) as member:
            return member.read(limit)
    except (zipfile.BadZipFile, NotImplementedError, RuntimeError, OSError, ValueError, EOFError):
        return b""


def _scan(fh: BinaryIO, pattern: re.Pattern[bytes], start: int = 0) -> bool:
    """Whether ``pattern`` occurs anywhere from ``start`` on, read 1 MiB at a time."""
    fh.seek(start)
    carry = b""
    while True:
        chunk = fh.read(_SCAN_CHUNK)
        if not chunk:
            return False
        window = carry + chunk
        if pattern.search(window):
            return True
        carry = window[-_SCAN_OVERLAP:]


def _scan_text(fh: BinaryIO, pattern: re.Pattern[str], codec: str) -> bool:
    """Like :func:`_scan`, for markup decoded from ``codec``."""
    fh.seek(0)
    decoder = codecs.getincrementaldecoder(codec)(errors="replace")
    carry = ""
    while True:
        chunk = fh.read(_SCAN_CHUNK)
        window = carry + decoder.decode(chunk, final=not chunk)
        if pattern.search(window):
            return True
        if not chunk:
            return False
        carry = window[-_SCAN_OVERLAP:]


def _codec(head: bytes) -> str:
    for bom, codec in (
        (b"\xff\xfe\x00\x00", "utf-32"),
        (b"\x00\x00\xfe\xff", "utf-32"),
        (b"\xff\xfe", "utf-16"),
        (b"\xfe\xff", "utf-16"),
    ):
        if head.startswith(bom):
            return codec
    return "utf-8-sig"


def inspect_upload(spooled: Spooled, head_type: str, rules: UploadRules) -> str:
    """The final type of a whole upload (spooled to ``spooled.path``), given the type its
    first bytes showed; raises :class:`UploadRefusedError` for a polyglot. With ``*/*`` the
    type is still worked out, but nothing is refused."""
    size = spooled.size
    head = spooled.head
    anything = rules.anything
    with open(spooled.path, "rb") as fh:
        textual = False
        if head.startswith(ZIP_HEADS):
            mime = _zip_type(fh, size, anything)
        else:
            mime = head_type
            text = decode_text(head) if is_textual(mime) or mime in ACTIVE_TYPES else None
            if text is not None:
                textual = True
                pattern = active_markup_pattern(text)
                if pattern is not None and mime not in ACTIVE_TYPES and _scan_text(fh, pattern, _codec(head)):
                    mime = "text/html" if pattern is HTML_ACTIVE else "application/xhtml+xml"
            found = None if anything else _zip_end(fh, size)
            if found is not None and found[2] > 0:
                raise Smuggled(
                    "polyglot", f"a polyglot: a ZIP archive hides behind its {mime} bytes (from byte {found[1]:,})"
                )
        if anything or textual:
            return mime
        if mime != "application/pdf" and b"%PDF-" in head[:1024]:
            raise Smuggled("polyglot", f"a polyglot: a PDF header hides in the first KiB of its {mime} bytes")
        if mime == "application/pdf":
            tail = _read_at(fh, max(0, size - 1024), 1024)
            eof = tail.rfind(b"%%EOF")
            if eof >= 0 and tail[eof + 5 :].strip(b" \t\r\n\f\x00"):
                raise Smuggled("polyglot", "a polyglot: data follows the PDF's last %%EOF")
        if (mime.startswith("image/") or mime == "application/pdf") and _scan(fh, _MARKUP_IN_BINARY):
            raise Smuggled("polyglot", f"a polyglot: script or HTML markup hides inside its {mime} bytes")
    return mime


class GuardedReader:
    """Reads through to ``stream``, refusing the upload as soon as a rule is broken: the type
    from the first bytes while streaming, the whole file once spooled (:meth:`check_spooled`,
    called by :func:`persistence.filestore.spool` before anything is stored)."""

    def __init__(self, stream: BinaryIO, rules: UploadRules, filename: str, limit: int | None, limit_rule: str) -> None:
        self.stream = stream
        self.rules = rules
        self.filename = filename
        self.limit = limit
        self.limit_rule = limit_rule
        self.size = 0
        self.head = b""
        self.checked = False
        self.inspected = False
        self.mime: str | None = None

    def _refuse_type(self, mime: str, why: str = "") -> None:
        if mime in ACTIVE_TYPES:
            raise UploadRefusedError(
                "active_content",
                f"{self.filename!r} is {mime} (from its bytes{why}), which a browser runs script in; "
                f"allowed only when PERSISTENCE_UPLOAD_ALLOWED_TYPES names {mime} itself",
            )
        raise UploadRefusedError(
            "allowed_types",
            f"{self.filename!r} is {mime} (from its bytes{why}), not one of "
            f"{', '.join(self.rules.allowed_types)} (PERSISTENCE_UPLOAD_ALLOWED_TYPES)",
        )

    def _check_type(self) -> None:
        self.checked = True
        self.mime = sniff_mime(self.head, self.filename)
        # A ZIP is judged by its manifest once it is whole (check_spooled), not by its name.
        if not self.head.startswith(ZIP_HEADS) and not self.rules.allows(self.mime):
            self._refuse_type(self.mime)

    def check_spooled(self, spooled: Spooled) -> None:
        """The whole upload is in ``spooled``: settle its type and refuse smuggling."""
        if not self.checked:
            self.head = spooled.head
            self._check_type()
        try:
            self.mime = inspect_upload(spooled, self.mime or "application/octet-stream", self.rules)
        except Smuggled as exc:
            raise UploadRefusedError(exc.rule, f"{self.filename!r} is {exc.message}") from None
        self.inspected = True
        if not self.rules.allows(self.mime):
            zip_note = ", its ZIP manifest" if self.head.startswith(ZIP_HEADS) else ""
            self._refuse_type(self.mime, zip_note)

    def read(self, n: int = -1) -> bytes:
        chunk = self.stream.read(n)
        if isinstance(chunk, str):
            raise ValidationError("source", "stream must be opened in binary mode")
        if not isinstance(chunk, bytes | bytearray):  # a file-like object of some other kind
            raise ValidationError("source", f"read() returned {type(chunk).__name__}, not bytes")
        self.size += len(chunk)
        if self.limit is not None and self.size > self.limit:
            setting = (
                "PERSISTENCE_MAX_UPLOAD_BYTES"
                if self.limit_rule == "max_bytes"
                else "PERSISTENCE_UPLOAD_BYTES_PER_MINUTE"
            )
            raise UploadRefusedError(
                self.limit_rule, f"{self.filename!r} is larger than {self.limit:,} bytes ({setting})"
            )
        if not self.checked:
            if len(self.head) < HEAD_BYTES and chunk:
                self.head += chunk[: HEAD_BYTES - len(self.head)]
            if len(self.head) >= HEAD_BYTES or not chunk:
                self._check_type()  # enough bytes to tell (or all there is): decide now
        return chunk
