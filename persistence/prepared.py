"""The records a backend writes, validated and normalised before they reach it.

:class:`~persistence.store.Store`'s public methods build them from a caller's arguments and the
export reader (:func:`persistence.transfer.parse_record`) from an exported record; a backend's
``_``-prefixed primitives take them as they are, so every backend writes the same values.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from typing import Any, TypedDict

from .models import Usage

__all__ = [
    "FILTER_NAMES",
    "ConversationFilters",
    "ParsedFile",
    "ParsedRecord",
    "PreparedConversation",
    "PreparedMessage",
    "title_from",
]


@dataclass(frozen=True, slots=True)
class PreparedMessage:
    """A validated, normalised and priced message, ready for a backend to write."""

    id: str
    role: str
    content: str
    created_at: datetime
    model: str | None
    provider: str | None
    usage: Usage
    cost: float | None
    price_id: str | None
    unpriced: bool
    duration_ms: int | None
    tool_name: str | None
    files: tuple[str, ...]
    images: tuple[str, ...]
    metadata: dict[str, Any]
    search_extra: str | None
    title_hint: str | None


@dataclass(frozen=True, slots=True)
class PreparedConversation:
    id: str
    continuation_id: str
    created_at: datetime
    tool_name: str | None = None
    title: str | None = None
    session_id: str | None = None
    user_id: str | None = None
    parent_id: str | None = None
    tags: tuple[str, ...] = ()
    metadata: dict[str, Any] = field(default_factory=dict)
    initial_context: dict[str, Any] | None = None
    expires_at: datetime | None = None
    status: str = "active"
    summary: str | None = None


class ConversationFilters(TypedDict, total=False):
    """The filters of a thread listing, typed once: the keyword arguments of
    :meth:`~persistence.store.Store.list_conversations` and ``count_conversations``
    (``**filters: Unpack[ConversationFilters]``), what a backend is given (validated, the
    unset ones left out) and, as one jsonb ``p_filters``, what the SQL functions take."""

    since: datetime | None  # active (updated_at) at or after
    until: datetime | None  # created before
    model: str | None  # any message used it
    provider: str | None  # any message used it
    tool_name: str | None  # the thread's or any message's
    tag: str | None
    session_id: str | None
    user_id: str | None
    parent_id: str | None
    status: str | None
    min_cost: float | None  # total cost at least, USD
    text: str | None  # a case-insensitive substring of the title


FILTER_NAMES: frozenset[str] = ConversationFilters.__optional_keys__


def title_from(content: str) -> str | None:
    line = " ".join(content.split())
    if not line:
        return None
    return line if len(line) <= 80 else line[:79] + "…"


@dataclass(frozen=True, slots=True)
class ParsedFile:
    id: str
    upload_id: str | None
    file_hash: str
    size: int
    mime_type: str
    filename: str
    storage_path: str
    bucket_name: str
    created_at: Any
    user_id: str | None
    session_id: str | None
    tags: tuple[str, ...]
    description: str | None
    metadata: dict[str, Any]
    # Whether the upload found its bytes stored already; None (an export made before the flag
    # was stored): the importing store decides as its migration did, by an earlier upload.
    deduplicated: bool | None = None


@dataclass(frozen=True, slots=True)
class ParsedRecord:
    conversation: PreparedConversation
    model: str | None
    updated_at: Any
    messages: list[tuple[int, PreparedMessage]]
    files: list[ParsedFile]
