"""The store and cached reads for the pages.

The store is opened once per URL (``st.cache_resource``); query results are cached for
``TTL`` seconds (``st.cache_data``) keyed by the store URL and the query's arguments, never by
the store object. The URL comes from ``streamlit run app.py -- --url URL``, else the
environment / ``.env`` (``PERSISTENCE_URL``, then Supabase, then the embedded file).
"""

from __future__ import annotations

import argparse
import os
import sys
import threading
import time
from datetime import UTC, date, datetime
from typing import Any

import pandas as pd
import streamlit as st

import persistence
from persistence import Conversation, Message, Page, SearchHit, StoredFile
from persistence.config import resolve_url

from . import queries as q

__all__ = ["TTL", "get_store", "health", "refresh", "scrub", "store_url", "today"]

TTL = 30  # seconds: fresh enough to follow a live server, cheap enough at a million messages


def store_url() -> str:
    """The store URL as resolved (may hold a password: never show it; show ``store.url``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--url")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.url)


@st.cache_resource(show_spinner=False)
def _open(url: str) -> persistence.Store:
    return persistence.open_store(url)


def get_store() -> persistence.Store:
    return _open(store_url())


def today() -> date:
    return datetime.now(UTC).date()


def refresh() -> None:
    """Forget cached results (after new data, or on the user's request)."""
    st.cache_data.clear()


_SECRET_NAMES = ("KEY", "SECRET", "PASSWORD", "TOKEN")


def scrub(text: str, url: str | None = None) -> str:
    """An error message with any secret it might echo replaced by ``***``: the URL's password
    and the value of every environment variable named like a key, secret, password or token."""
    secrets = [v for k, v in os.environ.items() if any(s in k.upper() for s in _SECRET_NAMES) and len(v) >= 6]
    if url:
        from urllib.parse import unquote, urlsplit

        try:
            password = urlsplit(url).password
        except ValueError:
            password = None
        if password:
            secrets += [password, unquote(password)]
        if "@" in url or "?" in url:
            secrets.append(url)
    for secret in sorted(set(secrets), key=len, reverse=True):
        text = text.replace(secret, "***")
    return text


# -- cached reads (one per page section) -------------------------------------------------


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def is_empty(url: str) -> bool:
    return q.is_empty(_open(url))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def overview(
    url: str,
    since: datetime | None,
    until: datetime | None,
    prev_since: datetime | None,
    prev_until: datetime | None,
    today: date,
) -> q.OverviewData:
    return q.overview(_open(url), since, until, prev_since, prev_until, today)


@st.cache_data(ttl=5 * TTL, show_spinner=False, max_entries=16)
def facets(url: str) -> dict[str, list[str]]:
    return q.facets(_open(url))


@st.cache_data(ttl=5 * TTL, show_spinner=False, max_entries=16)
def choices(url: str) -> dict[str, list[str]]:
    return q.choices(_open(url))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def list_threads(url: str, **kwargs: Any) -> Page[Conversation]:
    return q.list_threads(_open(url), **kwargs)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def count_threads(url: str, **filters: Any) -> int:
    return q.count_threads(_open(url), **filters)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def thread(url: str, continuation_id: str, last: int = q.THREAD_PAGE) -> Conversation | None:
    return q.thread(_open(url), continuation_id, last)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def older_messages(url: str, continuation_id: str, before_seq: int, limit: int = q.THREAD_PAGE) -> list[Message]:
    return q.older_messages(_open(url), continuation_id, before_seq, limit)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def related_threads(
    url: str, continuation_id: str, parent_id: str | None
) -> tuple[Conversation | None, tuple[Conversation, ...], bool]:
    return q.related_threads(_open(url), continuation_id, parent_id)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def search(url: str, query: str, **kwargs: Any) -> list[SearchHit]:
    return q.search(_open(url), query, **kwargs)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def usage(url: str, stack: str, **kwargs: Any) -> q.UsageData:
    return q.usage(_open(url), stack, **kwargs)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def storage(url: str, since: datetime | None, until: datetime | None) -> q.StorageData:
    return q.storage(_open(url), since, until)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def list_files(url: str, **kwargs: Any) -> Page[StoredFile]:
    return q.list_files(_open(url), **kwargs)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=16)
def mime_types(url: str) -> list[str]:
    return q.mime_types(_open(url))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def file_conversations(url: str, file_id: str) -> list[Conversation]:
    return q.file_conversations(_open(url), file_id)


def usage_frame(url: str, group_by: tuple[str, ...], **kwargs: Any) -> pd.DataFrame:
    return _open(url).usage(group_by, **kwargs)


# -- health, checked in the background ---------------------------------------------------


class _HealthMonitor:
    """Runs ``store.doctor()`` in a background thread at most once a minute.

    ``doctor`` checks integrity and file bytes, which takes a second on a large store: too
    long to hold up a page, too useful to skip. Pages read the latest result at once; only
    the very first check is waited for (briefly)."""

    MAX_AGE = 60.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: q.Health | None = None
        self._started_at = 0.0
        self._running = False

    def latest(self, wait: float) -> q.Health | None:
        with self._lock:
            stale = self._result is None or time.monotonic() - self._started_at > self.MAX_AGE
            start = stale and not self._running
            if start:
                self._running = True
                self._started_at = time.monotonic()
        if start:
            threading.Thread(target=self._run, name="store-health", daemon=True).start()
        if self._result is None:
            self._done.wait(wait)
        return self._result

    def _run(self) -> None:
        try:
            result = q.health(_open(self.url))
        except Exception as exc:  # the store did not even open: report it like any failed check
            result = q.Health(checked_at=datetime.now(UTC), error=scrub(f"{type(exc).__name__}: {exc}", self.url))
        with self._lock:
            self._result = result
            self._running = False
        self._done.set()


@st.cache_resource(show_spinner=False)
def _monitor(url: str) -> _HealthMonitor:
    return _HealthMonitor(url)


def health(wait: float = 0.5) -> q.Health | None:
    """The latest health report, or None while the first check is still running."""
    return _monitor(store_url()).latest(wait)
