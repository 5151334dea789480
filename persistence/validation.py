"""Input checks shared by every backend, so bad input is refused the same way everywhere.

Text policy (the same on SQLite, Postgres and Supabase): Postgres cannot store NUL in
``text``/``jsonb`` and no backend can store a lone UTF-16 surrogate as UTF-8, so both are
replaced with U+FFFD in content, titles and metadata strings rather than refusing the turn.
Everything else that is wrong raises :class:`ValidationError` naming the field, before any
write: also input no backend would refuse but that would break something later (a number
that overflows a total, a timestamp at the edge of what ``datetime`` can convert, JSON nested
deeper than a parser recurses). The bounds below are the documented ones (README, "Bad
input"); each says why it is where it is.
"""

from __future__ import annotations

import json
import math
import numbers
import os
import re
import sys
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from .errors import ValidationError
from .providers import canonical_provider

ROLES = ("user", "assistant", "system", "tool")
MAX_CONTENT_BYTES = 16 * 1024 * 1024
MAX_ID_LENGTH = 200
MAX_FILENAME_LENGTH = 255
MAX_TAGS = 64

# Token counts, per bucket per message. The largest context window offered today is 10M
# tokens, so 10**10 leaves 1000x for reports that sum an agent's many calls into one turn,
# while the sums the store keeps (a thread's totals, a day's rollup, ``usage()`` over
# everything) stay exact 64-bit integers on every backend for 180 million messages at the
# limit (5 buckets x 10**10 each). Near 2**62 instead, two messages overflow: SQLite turns the
# total into a float, Postgres raises.
MAX_TOKENS = 10**10
# Cost of one message in USD (computed from the tokens and the price in force). The dearest
# message today (a full 1M-token context on the dearest model in the price table) costs tens
# of dollars; totals and rollups are numeric(20, 10) on Postgres (under $10**10), which a
# million messages at this limit in one thread or one day would just reach.
MAX_COST_USD = 10_000
# A turn that took longer than 30 days is a unit mistake (seconds or microseconds); the
# daily rollup sums durations as 64-bit milliseconds.
MAX_DURATION_MS = 30 * 24 * 3600 * 1000
# JSON (metadata, initial_context, an unrecognised usage report): Postgres refuses jsonb
# nested deeper than its stack allows and Python's json module recurses per level, so nesting
# is bounded well below both; 1 MiB of compact JSON per field keeps a page of threads cheap
# to read (message content has its own, larger limit). Integers are bounded by the largest
# float: Postgres reads a float such as 1e308 back as the integer 10**308, which must pass
# again when sent back; beyond that no JSON reader keeps a number, and Python cannot even
# print an integer of over 4300 digits.
MAX_JSON_DEPTH = 64
MAX_JSON_BYTES = 1024 * 1024
MAX_JSON_INT = int(sys.float_info.max)
# Stored timestamps (created_at, expires_at): 1970-01-01 up to, not including, 2200-01-01 UTC.
# Python's datetime ends at years 1 and 9999, so a time near either end cannot be converted
# to UTC or have a TTL added; pandas (2.x) day keys in usage() and the app's charts end in
# 2262; SQLite compares the stored ISO text, which needs four-digit years; Postgres
# timestamptz and JSON carry all of these unchanged. Nothing before 1970 is a conversation
# with a language model. Read filters (since, until) are not bounded.
TIME_MIN = datetime(1970, 1, 1, tzinfo=UTC)
TIME_MAX = datetime(2200, 1, 1, tzinfo=UTC)

_BAD_CHARS = re.compile("[\x00\ud800-\udfff]")
_ID_PATTERN = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$")


def clean_text(value: str) -> str:
    """Replace NUL and lone surrogates (unstorable on some backends) with U+FFFD."""
    if _BAD_CHARS.search(value):
        return _BAD_CHARS.sub("\ufffd", value)
    return value


def check_content(content: object, max_bytes: int = MAX_CONTENT_BYTES) -> str:
    if not isinstance(content, str):
        raise ValidationError("content", f"expected a string, got {type(content).__name__}")
    content = clean_text(content)
    # A str of n characters is at most 4n bytes of UTF-8: encode only when it could be over.
    if len(content) * 4 > max_bytes:
        size = len(content.encode("utf-8"))
        if size > max_bytes:
            raise ValidationError(
                "content",
                f"{size:,} bytes exceeds the limit of {max_bytes:,} bytes (PERSISTENCE_MAX_CONTENT_BYTES)",
            )
    return content


def check_role(role: object) -> str:
    if role not in ROLES:
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}; got {shown(role)}")
    return str(role)


def check_id(value: object, field: str) -> str:
    """A thread / message / session id: 1-200 printable ASCII characters, no spaces."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    if not value or len(value) > MAX_ID_LENGTH or not _ID_PATTERN.match(value):
        shown = value if len(value) <= 60 else value[:57] + "..."
        raise ValidationError(
            field,
            f"{shown!r} is not a valid id (1-{MAX_ID_LENGTH} characters from A-Z a-z 0-9 . _ : @ / + = -)",
        )
    return value


def optional_id(value: object, field: str) -> str | None:
    return None if value is None else check_id(value, field)


def check_uuid(value: object, field: str) -> str:
    if isinstance(value, uuid.UUID):
        return str(value)
    if not isinstance(value, str):  # str() of anything else could be huge, or raise
        raise ValidationError(field, f"expected a UUID string, got {type(value).__name__}")
    try:
        return str(uuid.UUID(value))
    except (ValueError, TypeError, AttributeError):
        raise ValidationError(field, f"{shown(value)} is not a UUID") from None


def optional_uuid(value: object, field: str) -> str | None:
    return None if value is None else check_uuid(value, field)


def optional_text(value: object, field: str, *, max_length: int = 10_000) -> str | None:
    if value is None:
        return None
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string, got {type(value).__name__}")
    value = clean_text(value)
    if len(value) > max_length:
        raise ValidationError(field, f"longer than {max_length:,} characters")
    return value


def optional_provider(value: object, field: str = "provider") -> str | None:
    """A provider's name in the package's one vocabulary (:mod:`persistence.providers`): lower
    case, a vendor's alias (``moonshot``, ``zhipu`` …) mapped to its canonical name (``kimi``,
    ``glm`` …); None or blank is None."""
    return canonical_provider(optional_text(value, field, max_length=100)) or None


def check_tags(tags: object, field: str = "tags") -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError(field, "expected a list of strings")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError(field, f"every tag must be a non-empty string; got {shown(tag)}")
        tag = clean_text(tag.strip())
        if len(tag) > 100:
            raise ValidationError(field, f"tag longer than 100 characters: {tag[:40]!r}...")
        if tag not in out:
            out.append(tag)
    if len(out) > MAX_TAGS:
        raise ValidationError(field, f"at most {MAX_TAGS} tags")
    return tuple(out)


def check_str_list(values: object, field: str) -> tuple[str, ...]:
    if values is None:
        return ()
    if isinstance(values, str) or not isinstance(values, Iterable):
        raise ValidationError(field, "expected a list of strings")
    out = []
    for v in values:
        if not isinstance(v, str):
            raise ValidationError(field, f"expected strings, got {type(v).__name__}")
        out.append(clean_text(v))
    return tuple(out)


def check_json(
    value: object, field: str, *, max_depth: int = MAX_JSON_DEPTH, max_bytes: int = MAX_JSON_BYTES
) -> dict[str, Any]:
    """A JSON object, with its strings cleaned (see module docstring). ``None`` -> ``{}``.

    Refused, naming the path (``metadata.a.b[3]``): nesting deeper than ``max_depth``, an
    object that contains itself, NaN and infinities, integers past 1.8e308, keys that are
    not strings (or that become equal once NUL and surrogates are replaced), anything that
    is not JSON, and more than ``max_bytes`` of compact UTF-8 JSON.
    """
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"expected a JSON object (dict), got {type(value).__name__}")
    walk = _JsonWalk(field, max_depth, max_bytes)
    cleaned = walk.clean(value, field, 1)
    assert isinstance(cleaned, dict)
    check_json_size(cleaned, field, max_bytes, at_least=walk.chars)
    return cleaned


def optional_json(value: object, field: str) -> dict[str, Any] | None:
    return None if value is None else check_json(value, field)


def check_json_size(value: object, field: str, max_bytes: int = MAX_JSON_BYTES, *, at_least: int = 0) -> None:
    """Refuse JSON over ``max_bytes`` as stored (compact UTF-8). ``at_least``: a known lower
    bound in characters, which saves serialising small values twice."""
    # A character is 1-4 bytes of UTF-8, or 6 as a JSON escape: only a value that could be
    # over the limit is serialised to measure it.
    if at_least * 6 <= max_bytes:
        return
    size = len(dumps(value).encode("utf-8"))
    if size > max_bytes:
        raise ValidationError(field, f"{size:,} bytes of JSON exceeds the limit of {max_bytes:,} bytes")


def _short(key: str) -> str:
    return key if len(key) <= 40 else key[:37] + "..."


class _JsonWalk:
    """One pass over a JSON value: clean strings and check every bound as it goes, so a
    value far over a limit is refused without being walked (or serialised) whole."""

    def __init__(self, field: str, max_depth: int, max_bytes: int) -> None:
        self.field = field
        self.max_depth = max_depth
        self.max_bytes = max_bytes
        self.chars = 0  # a lower bound of the serialised size
        self.open: set[int] = set()  # ids of the containers on the current path: a cycle

    def _count(self, n: int, path: str) -> None:
        self.chars += n
        if self.chars > self.max_bytes:
            raise ValidationError(self.field, f"more than {self.max_bytes:,} bytes of JSON (at {path})")

    def clean(self, value: Any, path: str, depth: int) -> Any:
        if value is None or isinstance(value, bool):
            self._count(5, path)
            return value
        if isinstance(value, int):
            if not -MAX_JSON_INT <= value <= MAX_JSON_INT:
                raise ValidationError(path, "integer larger than any JSON number (about 1.8e308)")
            self._count(1, path)
            return int(value)
        if isinstance(value, float):
            if not math.isfinite(value):
                raise ValidationError(path, f"{value} cannot be stored in JSON")
            self._count(3, path)
            return float(value)
        if isinstance(value, str):
            self._count(len(value) + 2, path)
            return clean_text(value)
        if isinstance(value, datetime | date):
            self._count(12, path)
            return value.isoformat()
        if not isinstance(value, Mapping | list | tuple):
            raise ValidationError(path, f"{type(value).__name__} is not JSON-serialisable")
        if depth > self.max_depth:
            raise ValidationError(path, f"nested deeper than {self.max_depth} levels")
        if id(value) in self.open:
            raise ValidationError(path, "contains itself (a cycle); JSON cannot hold that")
        self.open.add(id(value))
        try:
            self._count(2, path)
            if isinstance(value, Mapping):
                out: dict[str, Any] = {}
                for k, v in value.items():
                    if not isinstance(k, str):
                        raise ValidationError(path, f"JSON object keys must be strings, got {shown(k)}")
                    key = clean_text(k)
                    if key in out:
                        raise ValidationError(
                            path, f"keys become equal once NUL and lone surrogates are replaced: {_short(key)!r}"
                        )
                    self._count(len(key) + 4, path)
                    out[key] = self.clean(v, f"{path}.{_short(key)}", depth + 1)
                return out
            return [self.clean(v, f"{path}[{i}]", depth + 1) for i, v in enumerate(value)]
        finally:
            self.open.discard(id(value))


def shown(value: object) -> str:
    """A short repr of a caller's value for an error message (never a huge or recursive one)."""
    try:
        text = repr(value)
    except Exception:  # a broken __repr__ (or an int too long to print) must not hide the real error
        text = f"<{type(value).__name__}>"
    return text if len(text) <= 80 else text[:77] + "..."


def check_nonneg_int(value: object, field: str, maximum: int = 2**62) -> int:
    """A count or duration: a non-negative integer up to ``maximum`` (an integral float, or
    an integer type such as numpy's, is accepted; ``True`` is not a number here)."""
    if isinstance(value, bool) or not isinstance(value, numbers.Integral | float):
        raise ValidationError(field, f"expected a non-negative integer, got {shown(value)}")
    if isinstance(value, float) and not value.is_integer():
        raise ValidationError(field, f"expected a non-negative integer, got {value!r}")
    number = int(value)
    if number < 0:
        raise ValidationError(field, f"expected a non-negative integer, got {number}")
    if number > maximum:
        size = f"{number:,}" if number < 10**30 else f"a {number.bit_length()}-bit number"
        raise ValidationError(field, f"{size} is over the limit of {maximum:,}")
    return number


def optional_nonneg_int(value: object, field: str, maximum: int = 2**62) -> int | None:
    return None if value is None else check_nonneg_int(value, field, maximum)


def check_filename(name: object, field: str = "filename") -> str:
    """Keep the last path component of a user's filename; it is display metadata only.

    Storage paths never come from it (they come from the owner and the content hash), so
    ``../../etc/passwd`` is stored as the name ``passwd`` and touches nothing.
    """
    if not isinstance(name, str):
        raise ValidationError(field, f"expected a string, got {type(name).__name__}")
    base = clean_text(name).replace("\\", "/").rstrip("/").rsplit("/", 1)[-1]
    base = "".join(ch for ch in base if unicodedata.category(ch)[0] != "C").strip()
    if base in ("", ".", ".."):
        raise ValidationError(field, f"{name[:80]!r} has no usable file name")
    if len(base) > MAX_FILENAME_LENGTH:
        raise ValidationError(field, f"longer than {MAX_FILENAME_LENGTH} characters ({len(base):,}): {base[:40]!r}...")
    return base


def to_utc(value: object, field: str) -> datetime:
    """An aware datetime (or ISO-8601 string with offset, or a date: its midnight UTC) as UTC.
    Naive times are refused: guessing their zone is how timestamps drift."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, f"{shown(value)} is not an ISO-8601 timestamp") from None
    if isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, datetime):
        raise ValidationError(field, f"expected a datetime, got {type(value).__name__}")
    try:
        if value.tzinfo is None or value.utcoffset() is None:
            raise ValidationError(field, "naive datetime; pass an aware one, e.g. datetime.now(timezone.utc)")
        return value.astimezone(UTC)
    except (OverflowError, ValueError) as exc:  # year 1 at +05:00 is before datetime.min in UTC
        if isinstance(exc, ValidationError):
            raise
        raise ValidationError(field, f"{value.isoformat()} cannot be converted to UTC ({exc})") from None


def optional_utc(value: object, field: str) -> datetime | None:
    return None if value is None else to_utc(value, field)


def check_timestamp(value: object, field: str) -> datetime:
    """A timestamp to store: :func:`to_utc`, within [TIME_MIN, TIME_MAX) (see there why)."""
    ts = to_utc(value, field)
    if not TIME_MIN <= ts < TIME_MAX:
        raise ValidationError(
            field,
            f"{ts.isoformat()} is outside the stored range {TIME_MIN.date().isoformat()} to "
            f"{TIME_MAX.date().isoformat()} (exclusive) UTC",
        )
    return ts


def optional_timestamp(value: object, field: str) -> datetime | None:
    return None if value is None else check_timestamp(value, field)


# RFC 6838 section 4.2: a type or subtype name is a letter or digit, then up to 126 of
# letters, digits and ! # $ & - ^ _ . +. Parameters (RFC 9110 section 8.3.1): ; name=value,
# the value a token or a quoted string. ASCII only, so no CR, LF or other control character
# can reach a stored header-like value (nor a Content-Type the app or Storage sends).
_MIME_NAME = r"[A-Za-z0-9][A-Za-z0-9!#$&^_.+-]{0,126}"
_MIME_TOKEN = r"[A-Za-z0-9!#$%&'*+.^_`|~-]+"
_MIME_QUOTED = r'"(?:[\t !#-\[\]-~]|\\[\t -~])*"'
_MIME = re.compile(rf"({_MIME_NAME})/({_MIME_NAME})((?:[ \t]*;[ \t]*{_MIME_TOKEN}=(?:{_MIME_TOKEN}|{_MIME_QUOTED}))*)")
_MIME_PARAM = re.compile(rf"[ \t]*;[ \t]*({_MIME_TOKEN})=({_MIME_TOKEN}|{_MIME_QUOTED})")
MAX_MIME_LENGTH = 200


def check_mime_type(value: object, field: str = "mime_type") -> str:
    """A caller's MIME type, e.g. ``text/plain; charset=utf-8``: type and subtype lower-cased
    (they are case-insensitive, and storage_usage groups by them), parameters as
    ``; name=value``."""
    if not isinstance(value, str):
        raise ValidationError(field, f"expected a string like 'text/plain', got {type(value).__name__}")
    text = value.strip(" \t")
    m = _MIME.fullmatch(text) if len(text) <= MAX_MIME_LENGTH else None
    if m is None:
        raise ValidationError(
            field,
            f"{shown(value)} is not a MIME type like 'text/plain' or 'text/plain; charset=utf-8' "
            f"(RFC 6838: ASCII type/subtype, optional ;name=value parameters, at most {MAX_MIME_LENGTH} "
            "characters, no control characters)",
        )
    params = "".join(f"; {name.lower()}={val}" for name, val in _MIME_PARAM.findall(m.group(3)))
    return f"{m.group(1).lower()}/{m.group(2).lower()}{params}"


def check_path(source: Any, field: str = "source") -> None:
    """A file path the OS can open: no NUL, nothing the file system encoding cannot encode
    (a lone surrogate outside the surrogateescape range), a ``__fspath__`` that returns one."""
    try:
        path = os.fspath(source)
    except TypeError as exc:
        raise ValidationError(field, f"not a usable path: {exc}") from None
    if ("\x00" if isinstance(path, str) else b"\x00") in path:
        raise ValidationError(field, "the path contains a NUL character, which no file system allows")
    if isinstance(path, str):
        try:
            os.fsencode(path)
        except UnicodeError:
            raise ValidationError(field, f"the path {shown(path)} cannot be encoded for the file system") from None


def dumps(value: Any) -> str:
    """Compact, deterministic JSON for storage."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
