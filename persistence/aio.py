"""Use a store from asyncio without blocking the event loop.

Every method of :class:`~persistence.store.Store` is available on :class:`AsyncStore` as a
coroutine that runs the blocking call in a worker thread (``asyncio.to_thread``); the store
is thread-safe, so calls may overlap::

    store = persistence.open_async_store()
    await store.record_message(thread_id, "user", prompt)
    conv = await store.get_conversation(thread_id, last=20)

A stream returned by ``open_file`` is a plain blocking file: read it with
``await asyncio.to_thread(fh.read, n)``.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Coroutine
from typing import Any

from .store import Store

__all__ = ["AsyncStore"]


class AsyncStore:
    def __init__(self, store: Store) -> None:
        self.sync = store

    def __getattr__(self, name: str) -> Any:
        attr = getattr(self.sync, name)
        if name.startswith("_") or not callable(attr):
            return attr

        @functools.wraps(attr)
        def call(*args: Any, **kwargs: Any) -> Coroutine[Any, Any, Any]:
            return asyncio.to_thread(attr, *args, **kwargs)

        return call

    async def close(self) -> None:
        await asyncio.to_thread(self.sync.close)

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncStore {self.sync.url}>"
