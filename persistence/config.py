"""Open the store a URL names: :func:`open_store`.

Which URL ``open_store(url=None)`` opens (``PERSISTENCE_URL``, else Supabase, else the embedded
SQLite file) and the other environment helpers are in :mod:`persistence.env`, which imports
nothing of the package; this module imports the backends (each only when its URL is opened).
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING

from .env import load_env, redact_url, resolve_url, sqlite_url_path
from .errors import StoreOpenError, ValidationError
from .uploads import UploadRules

if TYPE_CHECKING:
    from .store import Store

__all__ = ["open_store"]


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
            from .backends.postgres.psycopg_store import PostgresStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreOpenError(f"the Postgres backend is not available: {exc}") from None
        store: Store = PostgresStore(resolved, files_dir=files_dir, env=e)
    elif resolved == "supabase" or scheme == "supabase":
        try:
            from .backends.postgres.supabase_store import SupabaseStore  # type: ignore[import-not-found,unused-ignore]
        except ImportError as exc:
            raise StoreOpenError(f"the Supabase backend is not available: {exc}") from None
        store = SupabaseStore(env=e)
    elif scheme in ("", "sqlite", "file"):
        from .backends.sqlite.store import SQLiteStore

        path, query = sqlite_url_path(resolved[len("file://") :] if scheme == "file" else resolved)
        if not path:
            raise StoreOpenError(f"no database path in {resolved!r} (expected sqlite:///path/to/history.db)")
        folder = files_dir or next(iter(query.get("files_dir", [])), None) or e.get("PERSISTENCE_FILES_DIR")
        mode_ro = "ro" in query.get("mode", [])
        store = SQLiteStore(path, files_dir=folder, read_only=read_only or mode_ro)
    else:
        raise StoreOpenError(
            f"unsupported store URL {redact_url(resolved)!r}: use sqlite:///path, postgresql://… or supabase"
        )
    store.opened_from = (resolved, None if files_dir is None else str(files_dir), e)
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
