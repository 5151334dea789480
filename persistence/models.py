"""Result objects returned by every backend.

Attribute names are the friendly ones; the table columns they come from are noted where they
differ (``model`` <- ``model_used``, ``cost_usd`` <- ``cost`` / ``total_cost``). Every
timestamp is an aware ``datetime`` in UTC.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, Generic, TypeVar

__all__ = [
    "Conversation",
    "ImportResult",
    "Message",
    "Page",
    "RedactResult",
    "RepriceResult",
    "SearchHit",
    "StoredFile",
    "Usage",
]

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Usage:
    """Token usage in five non-overlapping buckets.

    ``input_tokens`` is uncached input only; ``cached_input_tokens`` are cache reads;
    ``cache_write_tokens`` are cache creation; ``output_tokens`` excludes reasoning;
    ``reasoning_tokens`` are thinking tokens (billed at the output price). Their sum is
    ``total``, what providers call ``total_tokens``.
    """

    input_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    output_tokens: int = 0
    reasoning_tokens: int = 0

    @property
    def total(self) -> int:
        return (
            self.input_tokens
            + self.cached_input_tokens
            + self.cache_write_tokens
            + self.output_tokens
            + self.reasoning_tokens
        )

    @property
    def prompt_tokens(self) -> int:
        """Everything sent to the model: what long-context price tiers are decided on."""
        return self.input_tokens + self.cached_input_tokens + self.cache_write_tokens

    def __add__(self, other: Usage) -> Usage:
        return Usage(*(a + b for a, b in zip(dataclasses.astuple(self), dataclasses.astuple(other), strict=True)))

    def to_dict(self) -> dict[str, int]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class Message:
    """One turn of a conversation (a row of ``messages``)."""

    id: str
    conversation_id: str
    continuation_id: str
    seq: int
    role: str
    content: str
    created_at: datetime
    tool_name: str | None = None
    provider: str | None = None
    model: str | None = None
    usage: Usage = field(default_factory=Usage)
    cost_usd: float | None = None
    price_id: str | None = None
    duration_ms: int | None = None
    files: tuple[str, ...] = ()
    images: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    user_id: str | None = None
    # When its content was erased by ``Store.redact`` (tokens, cost and model stay); None: never.
    redacted_at: datetime | None = None

    @property
    def tokens(self) -> int:
        return self.usage.total

    def to_dict(self) -> dict[str, Any]:
        """A JSON-ready dict (timestamps as ISO-8601 strings)."""
        out = _plain(self)
        out["usage"] = self.usage.to_dict()
        return out


@dataclass(frozen=True, slots=True)
class StoredFile:
    """A stored file as one upload sees it.

    ``id`` is the stored object (one per owner and content hash); ``upload_id`` is this
    upload (its own filename, session, conversation and time). ``deduplicated`` is True when
    the bytes were already stored and this upload cost no storage.
    """

    id: str
    file_hash: str
    size: int
    mime_type: str
    filename: str
    storage_path: str
    bucket_name: str
    created_at: datetime
    upload_id: str | None = None
    deduplicated: bool = False
    user_id: str | None = None
    session_id: str | None = None
    continuation_id: str | None = None
    tags: tuple[str, ...] = ()
    description: str | None = None
    metadata: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


@dataclass(frozen=True, slots=True)
class Conversation:
    """A thread (a row of ``conversations``) with its running totals.

    ``messages`` holds what ``get_conversation`` loaded (oldest first; the newest ``last``
    when that was given) and is empty in listings. ``usage``, ``cost_usd``,
    ``message_count`` and ``unpriced_messages`` are totals over the whole thread.
    """

    id: str
    continuation_id: str
    created_at: datetime
    updated_at: datetime
    parent_id: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    title: str | None = None
    summary: str | None = None
    tool_name: str | None = None
    model: str | None = None
    status: str = "active"
    tags: tuple[str, ...] = ()
    initial_context: dict[str, Any] | None = None
    metadata: dict[str, Any] = field(default_factory=dict)
    expires_at: datetime | None = None
    message_count: int = 0
    usage: Usage = field(default_factory=Usage)
    cost_usd: float = 0.0
    unpriced_messages: int = 0
    messages: tuple[Message, ...] = ()
    files: tuple[StoredFile, ...] = ()
    # When the thread's text was erased by ``Store.redact`` (its numbers stay); None: never.
    redacted_at: datetime | None = None

    @property
    def total_tokens(self) -> int:
        return self.usage.total

    def to_dict(self) -> dict[str, Any]:
        out = _plain(self)
        out["usage"] = self.usage.to_dict()
        out["messages"] = [m.to_dict() for m in self.messages]
        out["files"] = [f.to_dict() for f in self.files]
        return out


@dataclass(frozen=True, slots=True)
class SearchHit:
    """A message that matched a search.

    ``fragments`` is the snippet as ``(text, matched)`` pairs so a UI can highlight without
    ever interpreting message text as markup; ``snippet`` renders it with ``[`` ``]``.
    ``score`` is higher for better matches (negated bm25 / ts_rank).
    """

    message: Message
    conversation_title: str | None
    score: float
    fragments: tuple[tuple[str, bool], ...]

    @property
    def continuation_id(self) -> str:
        return self.message.continuation_id

    @property
    def snippet(self) -> str:
        return self.highlighted("[", "]")

    def highlighted(self, open: str, close: str) -> str:
        return "".join(f"{open}{text}{close}" if hit else text for text, hit in self.fragments)


@dataclass(frozen=True, slots=True)
class Page(Generic[T]):
    """One page of a listing. Pass ``next_cursor`` back as ``cursor`` for the next one."""

    items: tuple[T, ...]
    next_cursor: str | None = None

    def __iter__(self):  # type: ignore[no-untyped-def]
        return iter(self.items)

    def __len__(self) -> int:
        return len(self.items)


@dataclass(frozen=True, slots=True)
class RepriceResult:
    messages_checked: int
    messages_changed: int
    cost_before: float
    cost_after: float
    unpriced_before: int
    unpriced_after: int


@dataclass(frozen=True, slots=True)
class ImportResult:
    conversations: int = 0
    conversations_skipped: int = 0
    messages: int = 0
    messages_skipped: int = 0
    files: int = 0


@dataclass(frozen=True, slots=True)
class PruneResult:
    """What ``prune`` deleted (or, with ``dry_run``, would delete)."""

    cutoff: datetime
    conversations: int = 0
    messages: int = 0
    uploads: int = 0
    files: int = 0
    bytes: int = 0
    dry_run: bool = False


@dataclass(frozen=True, slots=True)
class RedactResult:
    """What ``redact`` erased (or, with ``dry_run``, would erase). ``files``/``bytes``: stored
    objects whose bytes were deleted because no unredacted upload refers to them any more."""

    conversations: int = 0
    messages: int = 0
    uploads: int = 0
    files: int = 0
    bytes: int = 0
    dry_run: bool = False

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)


@dataclass(frozen=True, slots=True)
class ProviderFile:
    """A stored file as uploaded to a provider (Kimi, GLM …), so it is not uploaded twice."""

    id: str
    file_id: str
    file_hash: str
    provider: str
    provider_file_id: str
    purpose: str | None
    created_at: datetime
    expires_at: datetime | None = None

    def to_dict(self) -> dict[str, Any]:
        return _plain(self)


def _plain(obj: Any) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for f in dataclasses.fields(obj):
        value = getattr(obj, f.name)
        if isinstance(value, datetime):
            value = value.isoformat()
        elif isinstance(value, tuple) and f.name in ("tags", "files", "images"):
            value = list(value)
        out[f.name] = value
    return out
