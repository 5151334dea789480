"""Conversation history, files and usage analytics for MCP servers.

    import persistence
    store = persistence.open_store()          # PERSISTENCE_URL, else Supabase, else SQLite
    store.record_message(thread_id, "assistant", text, model="kimi-k2-0905-preview",
                         usage=response.usage, duration_ms=1830, message_id=turn_id)
    conv = store.get_conversation(thread_id, last=20)   # newest 20 turns, oldest first
    store.usage(("day", "model"))                         # pandas DataFrame

See DESIGN.md for the data model and README.md for configuration.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

from .aio import AsyncStore
from .config import open_store
from .env import resolve_url
from .errors import (
    ConflictError,
    NotFoundError,
    PersistenceError,
    ReadOnlyStoreError,
    SchemaVersionError,
    ServerOnlyError,
    StorageFullError,
    StoreDamagedError,
    StoreOpenError,
    ValidationError,
)
from .insights import Anomaly, Budget, BudgetStatus, ThreadShare
from .models import (
    Conversation,
    ImportResult,
    Message,
    Page,
    ProviderFile,
    PruneResult,
    RedactResult,
    RepriceResult,
    SearchHit,
    StoredFile,
    Usage,
)
from .pricing import Price
from .store import Store
from .usage import normalise_usage
from .whatif import WhatIf

__all__ = [
    "Anomaly",
    "AsyncStore",
    "Budget",
    "BudgetStatus",
    "ConflictError",
    "Conversation",
    "ImportResult",
    "Message",
    "NotFoundError",
    "Page",
    "PersistenceError",
    "Price",
    "ProviderFile",
    "PruneResult",
    "ReadOnlyStoreError",
    "RedactResult",
    "RepriceResult",
    "SchemaVersionError",
    "SearchHit",
    "ServerOnlyError",
    "StorageFullError",
    "Store",
    "StoreDamagedError",
    "StoreOpenError",
    "StoredFile",
    "ThreadShare",
    "Usage",
    "ValidationError",
    "WhatIf",
    "normalise_usage",
    "open_async_store",
    "open_store",
    "resolve_url",
]

__version__ = "0.1.0"


def open_async_store(
    url: str | None = None,
    *,
    files_dir: str | Path | None = None,
    read_only: bool = False,
    env: Mapping[str, str] | None = None,
) -> AsyncStore:
    """:func:`open_store`, wrapped for asyncio (see :mod:`persistence.aio`)."""
    return AsyncStore(open_store(url, files_dir=files_dir, read_only=read_only, env=env))
