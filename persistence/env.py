"""Environment and store URLs: ``.env`` and the environment merged, the default locations,
which URL ``open_store(url=None)`` opens, and URLs made safe to print.

Resolution order for ``open_store(url=None)``: ``PERSISTENCE_URL``; else Supabase when
``SUPABASE_URL`` and ``SUPABASE_SERVICE_ROLE_KEY`` are both set; else the embedded SQLite
file in the user's data folder. Variables in the environment win over ``.env`` (read from
the current directory; never written back into ``os.environ``).

This module imports nothing from the package, so any module may import it.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from urllib.parse import parse_qs, urlsplit, urlunsplit

from dotenv import dotenv_values
from platformdirs import user_data_dir

__all__ = [
    "APP_NAME",
    "default_sqlite_path",
    "load_env",
    "outbox_dir",
    "redact_url",
    "resolve_url",
    "sqlite_url_path",
]

APP_NAME = "mcp-persistence"


def load_env(env: Mapping[str, str] | None = None) -> dict[str, str]:
    """``.env`` from the current directory overlaid with the real environment."""
    if env is not None:
        return dict(env)
    merged = {k: v for k, v in dotenv_values(".env").items() if v is not None} if Path(".env").is_file() else {}
    merged.update(os.environ)
    return merged


def default_sqlite_path(env: Mapping[str, str] | None = None) -> Path:
    env = load_env(env)
    home = env.get("PERSISTENCE_HOME")
    return Path(home).expanduser() / "history.db" if home else Path(user_data_dir(APP_NAME)) / "history.db"


def outbox_dir(env: Mapping[str, str] | None = None) -> Path:
    """Where outboxes live: ``PERSISTENCE_OUTBOX_DIR``, else beside the embedded default."""
    e = load_env(env)
    return (
        Path(e["PERSISTENCE_OUTBOX_DIR"]).expanduser()
        if e.get("PERSISTENCE_OUTBOX_DIR")
        else default_sqlite_path(e).parent
    )


def resolve_url(url: str | None = None, env: Mapping[str, str] | None = None) -> str:
    e = load_env(env)
    if url:
        return url
    if e.get("PERSISTENCE_URL"):
        return e["PERSISTENCE_URL"]
    if e.get("SUPABASE_URL") and e.get("SUPABASE_SERVICE_ROLE_KEY"):
        return "supabase"
    return f"sqlite:///{default_sqlite_path(e)}"


def redact_url(url: str) -> str:
    """The URL with any password removed, safe to print."""
    parts = urlsplit(url)
    if parts.password:
        host = parts.hostname or ""
        if parts.port:
            host += f":{parts.port}"
        user = parts.username or ""
        parts = parts._replace(netloc=f"{user}:***@{host}")
    return urlunsplit(parts)


def sqlite_url_path(url: str) -> tuple[str, dict[str, list[str]]]:
    """The file path and the query parameters of a ``sqlite://`` URL (or a plain path)."""
    if url.startswith("sqlite://"):
        parts = urlsplit(url)
        # sqlite:///relative/path.db and sqlite:////absolute/path.db (SQLAlchemy's convention)
        path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else parts.path
        return path, parse_qs(parts.query)
    return url, {}
