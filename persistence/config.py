"""Which store to open, from an explicit URL, the environment or ``.env``.

Resolution order for ``open_store(url=None)``: ``PERSISTENCE_URL``; else Supabase when
``SUPABASE_URL`` and ``SUPABASE_SERVICE_ROLE_KEY`` are both set; else the embedded SQLite
file in the user's data folder. Variables in the environment win over ``.env`` (read from
the current directory; never written back into ``os.environ``).
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING
from urllib.parse import parse_qs, urlsplit, urlunsplit

from dotenv import dotenv_values
from platformdirs import user_data_dir

from .errors import StoreOpenError, ValidationError
from .uploads import UploadRules

if TYPE_CHECKING:
    from .store import Store

__all__ = ["default_sqlite_path", "load_env", "open_store", "redact_url", "resolve_url"]

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


def _sqlite_path(url: str) -> tuple[str, dict[str, list[str]]]:
    if url.startswith("sqlite://"):
        parts = urlsplit(url)
        # sqlite:///relative/path.db and sqlite:////absolute/path.db (SQLAlchemy's convention)
        path = url[len("sqlite:///") :].split("?", 1)[0] if url.startswith("sqlite:///") else parts.path
        return path, parse_qs(parts.query)
    return url, {}


def open_store(
    url: str | None = None,
    *,
    files_dir: str | Path | None = None,
    read_only: bool = False,
    env: Mapping[str, str] | None = None,
) -> Store:
    """Open (and migrate) the store at ``url``.

    * ``sqlite:///path/to/history.db`` (or a plain path): the embedded default. File bytes
      go to ``PERSISTENCE_FILES_DIR``, ``?files_dir=…``, or ``<name>-files/`` beside the
      database. ``?mode=ro`` opens read-only.
    * ``postgresql://…``: Postgres with ``supabase/migrations`` applied.
    * ``supabase``: Supabase through the official client (``SUPABASE_URL`` + key).
    """
    e = load_env(env)
    resolved = resolve_url(url, e)
    scheme = resolved.split(":", 1)[0].lower() if "://" in resolved else ""
    if scheme in ("postgresql", "postgres"):
        try:
            from .postgres_store import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreOpenError(f"the Postgres backend is not available: {exc}") from None
        store: Store = PostgresStore(resolved, files_dir=files_dir, env=e)
    elif resolved == "supabase" or scheme == "supabase":
        try:
            from .supabase_store import SupabaseStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreOpenError(f"the Supabase backend is not available: {exc}") from None
        store = SupabaseStore(env=e)
    elif scheme in ("", "sqlite", "file"):
        from .sqlite_store import SQLiteStore

        path, query = _sqlite_path(resolved[len("file://") :] if scheme == "file" else resolved)
        if not path:
            raise StoreOpenError(f"no database path in {resolved!r} (expected sqlite:///path/to/history.db)")
        folder = files_dir or next(iter(query.get("files_dir", [])), None) or e.get("PERSISTENCE_FILES_DIR")
        mode_ro = "ro" in query.get("mode", [])
        store = SQLiteStore(path, files_dir=folder, read_only=read_only or mode_ro)
    else:
        raise StoreOpenError(
            f"unsupported store URL {redact_url(resolved)!r}: use sqlite:///path, postgresql://… or supabase"
        )
    try:
        store.upload_rules = UploadRules.from_env(e)
    except ValidationError as exc:
        store.close()
        raise StoreOpenError(str(exc)) from None
    if e.get("PERSISTENCE_MAX_CONTENT_BYTES"):
        try:
            store.max_content_bytes = int(e["PERSISTENCE_MAX_CONTENT_BYTES"])
        except ValueError:
            store.close()
            raise StoreOpenError(
                f"PERSISTENCE_MAX_CONTENT_BYTES must be a number of bytes, got {e['PERSISTENCE_MAX_CONTENT_BYTES']!r}"
            ) from None
    return store
