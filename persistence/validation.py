"""Input checks shared by every backend, so bad input is refused the same way everywhere.

Text policy (the same on SQLite, Postgres and Supabase): Postgres cannot store NUL in
``text``/``jsonb`` and no backend can store a lone UTF-16 surrogate as UTF-8, so both are
replaced with U+FFFD in content, titles and metadata strings rather than refusing the turn.
Everything else that is wrong raises :class:`ValidationError` naming the field, before any
write.
"""

from __future__ import annotations

import json
import math
import re
import unicodedata
import uuid
from collections.abc import Iterable, Mapping
from datetime import UTC, date, datetime, time
from typing import Any

from .errors import ValidationError

ROLES = ("user", "assistant", "system", "tool")
MAX_CONTENT_BYTES = 16 * 1024 * 1024
MAX_ID_LENGTH = 200
MAX_FILENAME_LENGTH = 255
MAX_TAGS = 64

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
        raise ValidationError("role", f"must be one of {', '.join(ROLES)}; got {role!r}")
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
    try:
        return str(uuid.UUID(str(value)))
    except (ValueError, TypeError, AttributeError):
        raise ValidationError(field, f"{value!r} is not a UUID") from None


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


def check_tags(tags: object, field: str = "tags") -> tuple[str, ...]:
    if tags is None:
        return ()
    if isinstance(tags, str) or not isinstance(tags, Iterable):
        raise ValidationError(field, "expected a list of strings")
    out: list[str] = []
    for tag in tags:
        if not isinstance(tag, str) or not tag.strip():
            raise ValidationError(field, f"every tag must be a non-empty string; got {tag!r}")
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


def check_json(value: object, field: str) -> dict[str, Any]:
    """A JSON object, with its strings cleaned (see module docstring). ``None`` -> ``{}``."""
    if value is None:
        return {}
    if not isinstance(value, Mapping):
        raise ValidationError(field, f"expected a JSON object (dict), got {type(value).__name__}")
    cleaned = _clean_json(value, field)
    assert isinstance(cleaned, dict)
    return cleaned


def optional_json(value: object, field: str) -> dict[str, Any] | None:
    return None if value is None else check_json(value, field)


def _clean_json(value: Any, path: str) -> Any:
    if value is None or isinstance(value, bool | int):
        return value
    if isinstance(value, float):
        if not math.isfinite(value):
            raise ValidationError(path, f"{value} cannot be stored in JSON")
        return value
    if isinstance(value, str):
        return clean_text(value)
    if isinstance(value, Mapping):
        out = {}
        for k, v in value.items():
            if not isinstance(k, str):
                raise ValidationError(path, f"JSON object keys must be strings, got {k!r}")
            out[clean_text(k)] = _clean_json(v, f"{path}.{k}")
        return out
    if isinstance(value, list | tuple):
        return [_clean_json(v, f"{path}[{i}]") for i, v in enumerate(value)]
    if isinstance(value, datetime | date):
        return value.isoformat()
    raise ValidationError(path, f"{type(value).__name__} is not JSON-serialisable")


def check_nonneg_int(value: object, field: str) -> int:
    """A token count or duration: a non-negative integer (an integral float is accepted)."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise ValidationError(field, f"expected a non-negative integer, got {value!r}")
    if isinstance(value, float):
        if not value.is_integer():
            raise ValidationError(field, f"expected a non-negative integer, got {value!r}")
        value = int(value)
    if value < 0:
        raise ValidationError(field, f"expected a non-negative integer, got {value}")
    if value > 2**62:
        raise ValidationError(field, f"{value} is implausibly large")
    return value


def optional_nonneg_int(value: object, field: str) -> int | None:
    return None if value is None else check_nonneg_int(value, field)


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
    """An aware datetime (or ISO-8601 string with offset) as UTC. Naive times are refused:
    guessing their zone is how timestamps drift."""
    if isinstance(value, str):
        try:
            value = date.fromisoformat(value) if len(value) == 10 else datetime.fromisoformat(value)
        except ValueError:
            raise ValidationError(field, f"{value!r} is not an ISO-8601 timestamp") from None
    elif isinstance(value, date) and not isinstance(value, datetime):
        value = datetime.combine(value, time(), tzinfo=UTC)
    if not isinstance(value, datetime):
        raise ValidationError(field, f"expected a datetime, got {type(value).__name__}")
    if value.tzinfo is None or value.utcoffset() is None:
        raise ValidationError(field, "naive datetime; pass an aware one, e.g. datetime.now(timezone.utc)")
    return value.astimezone(UTC)


def optional_utc(value: object, field: str) -> datetime | None:
    return None if value is None else to_utc(value, field)


def dumps(value: Any) -> str:
    """Compact, deterministic JSON for storage."""
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"), sort_keys=False)
