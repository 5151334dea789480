"""The store the app shows: its URL, the store itself (opened once per URL), and error messages
with their secrets taken out.

The URL comes from ``streamlit run app.py -- --url URL``, else the environment / ``.env``
(``PERSISTENCE_URL``, then Supabase, then the embedded file). What the pages read from the
store, and how long it is cached, is :mod:`ui.queries`.
"""

from __future__ import annotations

import argparse
import os
import sys
from datetime import UTC, date, datetime
from urllib.parse import unquote, urlsplit

import streamlit as st

import persistence
from persistence.env import resolve_url

__all__ = ["TTL", "get_store", "open_store", "refresh", "scrub", "store_url", "today"]

TTL = 30  # seconds query results are cached: fresh enough to follow a live server, cheap at a million messages


def store_url() -> str:
    """The store URL as resolved (may hold a password: never show it; show ``store.url``)."""
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--url")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return resolve_url(args.url)


@st.cache_resource(show_spinner=False)
def open_store(url: str) -> persistence.Store:
    """The store at ``url``, opened once per process and shared by every session."""
    return persistence.open_store(url)


def get_store() -> persistence.Store:
    return open_store(store_url())


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
