"""Upload safety: a size limit, an allow-list of types sniffed from the bytes, and a
per-session rate limit. A refused upload raises :class:`UploadRefusedError` naming the rule
and stores nothing: the checks run on the stream while it is read, before bytes are renamed
into place or a row is written.

Settings (environment or ``.env``):

* ``PERSISTENCE_MAX_UPLOAD_BYTES`` - largest file, default 100 MiB (Kimi's limit); 0 = none.
* ``PERSISTENCE_UPLOAD_ALLOWED_TYPES`` - comma-separated MIME patterns (``text/*``,
  ``application/pdf``); ``*/*`` allows anything. Default: text, PDF, JSON/XML/YAML/TOML/SQL,
  common images and Office/EPUB documents (no executables, archives or unknown binaries).
* ``PERSISTENCE_UPLOADS_PER_MINUTE`` (default 30) and ``PERSISTENCE_UPLOAD_BYTES_PER_MINUTE``
  (default 500 MiB) per ``session_id``; 0 = no limit. Uploads without a session are not
  rate-limited. The count is read from the store, so it holds across processes, and is
  soft under races (two uploads checked at the same instant can both pass).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Mapping
from dataclasses import dataclass
from typing import BinaryIO

from .errors import ValidationError
from .filestore import HEAD_BYTES, sniff_mime

__all__ = ["DEFAULT_ALLOWED_TYPES", "GuardedReader", "UploadRefusedError", "UploadRules"]

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
    """An upload broke a rule (``rule``: max_bytes, allowed_types, uploads_per_minute,
    bytes_per_minute). Nothing was stored."""

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

    def allows(self, mime: str) -> bool:
        return any(fnmatch.fnmatchcase(mime, pattern) for pattern in self.allowed_types)


class GuardedReader:
    """Reads through to ``stream``, refusing the upload as soon as a rule is broken."""

    def __init__(self, stream: BinaryIO, rules: UploadRules, filename: str, limit: int | None, limit_rule: str) -> None:
        self.stream = stream
        self.rules = rules
        self.filename = filename
        self.limit = limit
        self.limit_rule = limit_rule
        self.size = 0
        self.head = b""
        self.checked = False
        self.mime: str | None = None

    def _check_type(self) -> None:
        self.checked = True
        self.mime = sniff_mime(self.head, self.filename)
        if not self.rules.allows(self.mime):
            raise UploadRefusedError(
                "allowed_types",
                f"{self.filename!r} is {self.mime} (from its bytes), not one of "
                f"{', '.join(self.rules.allowed_types)} (PERSISTENCE_UPLOAD_ALLOWED_TYPES)",
            )

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
