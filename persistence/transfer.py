"""The JSONL export format: one line per thread, lossless across backends.

A record holds the thread's own fields, every message as stored (id, seq, the five token
buckets, cost and the price id used, metadata …) and the metadata of the files the thread
used. Derived figures (message counts, token and cost totals) are not exported: the importing
store recomputes them from the messages, so they cannot disagree. File bytes travel separately
(``python -m persistence copy``); a record names them by sha256.

Redaction travels too: a redacted thread, message or upload carries ``redacted_at`` (only when
set, so records of unredacted threads stay as compact as before, and exports made before the
field was written import unchanged). An upload's is not on :class:`StoredFile`: the backend's
export hands the thread over as an :class:`ExportedConversation` that carries it.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from . import validation as v
from .errors import ValidationError
from .models import Conversation, StoredFile, Usage
from .prepared import ParsedFile, ParsedRecord, PreparedConversation, PreparedMessage, title_from
from .pricing import UNREAD_USAGE, is_unpriced
from .providers import canonical_price_id
from .search_query import index_text

__all__ = [
    "EXPORT_FORMAT",
    "ExportedConversation",
    "ImportedRecord",
    "conversation_record",
    "parse_record",
    "redactions_of",
    "with_upload_redactions",
]

EXPORT_FORMAT = "mcp-persistence/1"


@dataclass(frozen=True, slots=True)
class ExportedConversation(Conversation):
    """A thread as a backend's export reads it: with when each of its redacted uploads was
    redacted (by upload id), which :class:`StoredFile` does not carry."""

    upload_redactions: Mapping[str, datetime] = field(default_factory=dict)


def with_upload_redactions(conv: Conversation, redactions: Mapping[str, datetime]) -> Conversation:
    """``conv`` carrying ``redactions`` (upload id -> redacted_at) for its export record."""
    if not redactions:
        return conv
    values = {f.name: getattr(conv, f.name) for f in dataclasses.fields(Conversation)}
    return ExportedConversation(**values, upload_redactions=dict(redactions))


@dataclass(frozen=True, slots=True)
class ImportedRecord(ParsedRecord):
    """A parsed record with what was redacted: the thread, messages by id, uploads by id."""

    redacted_at: datetime | None = None
    message_redactions: Mapping[str, datetime] = field(default_factory=dict)
    upload_redactions: Mapping[str, datetime] = field(default_factory=dict)


def redactions_of(
    rec: ParsedRecord,
) -> tuple[datetime | None, Mapping[str, datetime], Mapping[str, datetime]]:
    """The thread's redacted_at and those of its messages and uploads (by id) in ``rec``."""
    if isinstance(rec, ImportedRecord):
        return rec.redacted_at, rec.message_redactions, rec.upload_redactions
    return None, {}, {}


def conversation_record(conv: Conversation, uploads: Sequence[StoredFile] | None = None) -> dict[str, Any]:
    """The export record of ``conv``; ``uploads`` (default ``conv.files``) are its files."""
    c = conv.to_dict()
    conversation = {
        key: c[key]
        for key in (
            "id",
            "continuation_id",
            "parent_id",
            "session_id",
            "user_id",
            "title",
            "summary",
            "tool_name",
            "model",
            "status",
            "tags",
            "initial_context",
            "metadata",
            "created_at",
            "updated_at",
            "expires_at",
        )
    }
    if conv.redacted_at is not None:
        conversation["redacted_at"] = c["redacted_at"]
    messages = []
    for m in conv.messages:
        d = m.to_dict()
        for key in ("conversation_id", "continuation_id", "user_id"):
            d.pop(key)
        if d["redacted_at"] is None:
            del d["redacted_at"]
        messages.append(d)
    redacted_uploads = conv.upload_redactions if isinstance(conv, ExportedConversation) else {}
    files = []
    for f in conv.files if uploads is None else uploads:
        d = f.to_dict()  # deduplicated included: whether this upload stored new bytes
        d.pop("continuation_id")
        redacted_at = redacted_uploads.get(f.upload_id) if f.upload_id else None
        if redacted_at is not None:
            d["redacted_at"] = redacted_at.isoformat()
        files.append(d)
    return {"format": EXPORT_FORMAT, "conversation": conversation, "messages": messages, "files": files}


def _optional_bool(value: object, field: str) -> bool | None:
    """A flag, or None when the record has none (an export made before it was stored)."""
    if value is None or isinstance(value, bool):
        return value
    raise ValidationError(field, f"expected true, false or null, got {v.shown(value)}")


def _get(d: dict[str, Any], key: str, where: str) -> Any:
    if key not in d:
        raise ValidationError(f"{where}.{key}", "is missing")
    return d[key]


def parse_record(record: Any, where: str = "record") -> ParsedRecord:
    """Validate an exported record (every field, as on a live write)."""
    if not isinstance(record, dict):
        raise ValidationError(where, "expected a JSON object")
    if record.get("format") != EXPORT_FORMAT:
        raise ValidationError(f"{where}.format", f"expected {EXPORT_FORMAT!r}, got {record.get('format')!r}")
    c = _get(record, "conversation", where)
    if not isinstance(c, dict):
        raise ValidationError(f"{where}.conversation", "expected a JSON object")
    w = f"{where}.conversation"
    conv = PreparedConversation(
        id=v.check_uuid(_get(c, "id", w), f"{w}.id"),
        continuation_id=v.check_id(_get(c, "continuation_id", w), f"{w}.continuation_id"),
        created_at=v.check_timestamp(_get(c, "created_at", w), f"{w}.created_at"),
        tool_name=v.optional_text(c.get("tool_name"), f"{w}.tool_name", max_length=200),
        title=v.optional_text(c.get("title"), f"{w}.title", max_length=500),
        session_id=v.optional_id(c.get("session_id"), f"{w}.session_id"),
        user_id=v.optional_uuid(c.get("user_id"), f"{w}.user_id"),
        parent_id=v.optional_id(c.get("parent_id"), f"{w}.parent_id"),
        tags=v.check_tags(c.get("tags"), f"{w}.tags"),
        metadata=v.check_json(c.get("metadata"), f"{w}.metadata"),
        initial_context=v.optional_json(c.get("initial_context"), f"{w}.initial_context"),
        expires_at=v.optional_timestamp(c.get("expires_at"), f"{w}.expires_at"),
        status=str(c.get("status") or "active"),
        summary=v.optional_text(c.get("summary"), f"{w}.summary", max_length=100_000),
    )
    redacted_at = v.optional_timestamp(c.get("redacted_at"), f"{w}.redacted_at")
    message_redactions: dict[str, datetime] = {}
    upload_redactions: dict[str, datetime] = {}
    messages: list[tuple[int, PreparedMessage]] = []
    raw_messages = record.get("messages") or []
    if not isinstance(raw_messages, list):
        raise ValidationError(f"{where}.messages", "expected a list")
    for i, m in enumerate(raw_messages):
        w = f"{where}.messages[{i}]"
        if not isinstance(m, dict):
            raise ValidationError(w, "expected a JSON object")
        u = m.get("usage") or {}
        if not isinstance(u, dict):
            raise ValidationError(f"{w}.usage", "expected a JSON object")
        usage = Usage(
            **{k: v.check_nonneg_int(u.get(k, 0), f"{w}.usage.{k}", v.MAX_TOKENS) for k in Usage.__dataclass_fields__}
        )
        cost = m.get("cost_usd")
        if cost is not None and (
            isinstance(cost, bool) or not isinstance(cost, int | float) or not 0 <= cost <= v.MAX_COST_USD
        ):
            raise ValidationError(
                f"{w}.cost_usd", f"expected a number from 0 to {v.MAX_COST_USD:,} or null, got {v.shown(cost)}"
            )
        content = v.check_content(_get(m, "content", w))
        role = v.check_role(_get(m, "role", w))
        metadata = v.check_json(m.get("metadata"), f"{w}.metadata")
        message_id = v.check_uuid(_get(m, "id", w), f"{w}.id")
        message_redacted = v.optional_timestamp(m.get("redacted_at"), f"{w}.redacted_at")
        if message_redacted is not None:
            message_redactions[message_id] = message_redacted
        messages.append(
            (
                v.check_nonneg_int(_get(m, "seq", w), f"{w}.seq"),
                PreparedMessage(
                    id=message_id,
                    role=role,
                    content=content,
                    created_at=v.check_timestamp(_get(m, "created_at", w), f"{w}.created_at"),
                    model=v.optional_text(m.get("model"), f"{w}.model", max_length=200),
                    provider=v.optional_provider(m.get("provider"), f"{w}.provider"),
                    usage=usage,
                    cost=float(cost) if cost is not None else None,
                    price_id=canonical_price_id(v.optional_text(m.get("price_id"), f"{w}.price_id", max_length=300)),
                    unpriced=is_unpriced(cost, usage.total, UNREAD_USAGE in metadata),
                    duration_ms=v.optional_nonneg_int(m.get("duration_ms"), f"{w}.duration_ms", v.MAX_DURATION_MS),
                    tool_name=v.optional_text(m.get("tool_name"), f"{w}.tool_name", max_length=200),
                    files=v.check_str_list(m.get("files"), f"{w}.files"),
                    images=v.check_str_list(m.get("images"), f"{w}.images"),
                    metadata=metadata,
                    search_extra=index_text(content),
                    title_hint=title_from(content) if role == "user" else None,
                ),
            )
        )
    files: list[ParsedFile] = []
    for i, f in enumerate(record.get("files") or []):
        w = f"{where}.files[{i}]"
        if not isinstance(f, dict):
            raise ValidationError(w, "expected a JSON object")
        sha = str(_get(f, "file_hash", w))
        if len(sha) != 64 or any(ch not in "0123456789abcdef" for ch in sha):
            raise ValidationError(f"{w}.file_hash", f"{sha!r} is not a sha256 hex digest")
        upload_id = v.optional_uuid(f.get("upload_id"), f"{w}.upload_id")
        upload_redacted = v.optional_timestamp(f.get("redacted_at"), f"{w}.redacted_at")
        if upload_redacted is not None and upload_id is not None:  # no upload: not this thread's to mark
            upload_redactions[upload_id] = upload_redacted
        files.append(
            ParsedFile(
                id=v.check_uuid(_get(f, "id", w), f"{w}.id"),
                upload_id=upload_id,
                file_hash=sha,
                size=v.check_nonneg_int(_get(f, "size", w), f"{w}.size"),
                mime_type=str(_get(f, "mime_type", w)),
                filename=v.check_filename(_get(f, "filename", w), f"{w}.filename"),
                storage_path=str(_get(f, "storage_path", w)),
                bucket_name=str(f.get("bucket_name") or "local"),
                created_at=v.check_timestamp(_get(f, "created_at", w), f"{w}.created_at"),
                user_id=v.optional_uuid(f.get("user_id"), f"{w}.user_id"),
                session_id=v.optional_id(f.get("session_id"), f"{w}.session_id"),
                tags=v.check_tags(f.get("tags"), f"{w}.tags"),
                description=v.optional_text(f.get("description"), f"{w}.description"),
                metadata=v.check_json(f.get("metadata"), f"{w}.metadata"),
                deduplicated=_optional_bool(f.get("deduplicated"), f"{w}.deduplicated"),
            )
        )
    return ImportedRecord(
        conversation=conv,
        model=v.optional_text(c.get("model"), "conversation.model", max_length=200),
        updated_at=v.check_timestamp(c.get("updated_at") or c["created_at"], f"{where}.conversation.updated_at"),
        messages=messages,
        files=files,
        redacted_at=redacted_at,
        message_redactions=message_redactions,
        upload_redactions=upload_redactions,
    )
