"""The ``postgresql://`` backend: Postgres (self-hosted, or Supabase's direct/pooler connection)
through psycopg 3 and a connection pool.

Every operation is one ``SELECT public.fn(...)`` of the SQL API in ``persistence/sql``
(see :mod:`persistence.backends.postgres.store`): one round trip, one transaction (the connections run in
autocommit, so the function call is the transaction). Opening the store applies pending
migrations (and, on a plain Postgres, the stand-in for Supabase's built-ins first), as the
SQLite store does. File bytes go to a local content-addressed folder, or to the Supabase
Storage bucket when ``SUPABASE_URL`` and ``SUPABASE_SERVICE_ROLE_KEY`` are set.
"""

from __future__ import annotations

import contextlib
import re
import threading
from collections.abc import Iterator, Mapping
from decimal import Decimal
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import psycopg
from psycopg.types.json import Jsonb
from psycopg_pool import ConnectionPool, PoolTimeout

from ...env import APP_NAME, load_env, redact_url
from ...errors import PersistenceError, StoreOpenError
from ...filestore import LocalFileStore
from .schema import migrate, pending_migrations, reindex_search
from .store import BlobStore, FunctionStore, J, sql_error

__all__ = ["PostgresStore"]

_NAME = re.compile(r"^[a-z_]+$")
# Reads whose own statement_timeout (set in their migration) this transport applies, as
# PostgREST does for every function: a plain connection ignores a function's SET for the
# statement that calls it, so an accepted but costly search would otherwise run for as long as
# it takes (issue 12). Writes are left to the connection's own settings.
_TIMED_READS = frozenset({"search_messages", "count_search_messages"})


class PostgresStore(FunctionStore):
    backend = "postgres"

    def __init__(
        self,
        url: str,
        *,
        files_dir: str | Path | None = None,
        env: Mapping[str, str] | None = None,
        auto_migrate: bool = True,
        pool_size: int = 10,
        connect_timeout: int = 10,
        files: BlobStore | None = None,
    ) -> None:
        """``files``: where file bytes go, instead of the folder or bucket the environment
        names (a :class:`~persistence.backends.postgres.supabase_store.SupabaseStorage` with a client of your own)."""
        super().__init__()
        e = load_env(env)
        self.url = redact_url(url)
        self._local = threading.local()
        self._sql: dict[tuple[str, tuple[str, ...]], str] = {}
        # autocommit: a function call is its own transaction (one round trip, no BEGIN/COMMIT);
        # no server-side prepared statements, so transaction-mode poolers (Supavisor,
        # PgBouncer) work too.
        kwargs: dict[str, Any] = {"autocommit": True, "prepare_threshold": None}
        if "connect_timeout" not in url:
            kwargs["connect_timeout"] = connect_timeout
        try:
            with psycopg.connect(url, **kwargs) as conn:
                if auto_migrate:
                    migrate(conn)
                    # Rows written before the current index text (persistence.search_query)
                    # get it recomputed once; a no-op lookup afterwards.
                    reindex_search(conn)
                else:
                    pending = pending_migrations(conn)
                    if pending:
                        raise StoreOpenError(
                            f"{self.url} needs migrating ({', '.join(m.label for m in pending)}): "
                            "run `python -m persistence migrate --url …` or `supabase db push`"
                        )
        except psycopg.Error as exc:
            raise StoreOpenError(f"cannot open {self.url}: {str(exc).strip()}") from None
        self._pool = ConnectionPool(
            url, min_size=1, max_size=pool_size, kwargs=kwargs, open=False, name="persistence", timeout=30
        )
        try:
            self._pool.open(wait=True, timeout=connect_timeout)
        except PoolTimeout:
            self._pool.close()
            raise StoreOpenError(f"cannot open a connection pool to {self.url}") from None
        try:
            if files is not None:
                self.files, self.bucket_name = files, getattr(files, "bucket", "local")
            else:
                self.files, self.bucket_name = self._file_store(files_dir, e, url)
            self._sync_package_prices()
        except BaseException:
            self.close()
            raise

    @staticmethod
    def _file_store(files_dir: str | Path | None, e: Mapping[str, str], url: str) -> tuple[Any, str]:
        if e.get("SUPABASE_URL") and e.get("SUPABASE_SERVICE_ROLE_KEY"):
            # Here, not at the top: the supabase client is an optional extra (pip install '.[supabase]').
            from .supabase_store import SupabaseStorage

            storage = SupabaseStorage.from_env(e)
            return storage, storage.bucket
        folder = files_dir or e.get("PERSISTENCE_FILES_DIR")
        if not folder:
            # One folder per database: prune deletes bytes no row of *this* database uses.
            from platformdirs import user_data_dir

            parts = urlsplit(url)
            name = f"{parts.hostname or 'local'}_{parts.port or 5432}_{parts.path.strip('/') or 'postgres'}"
            home = e.get("PERSISTENCE_HOME")
            base = Path(home).expanduser() if home else Path(user_data_dir(APP_NAME))
            folder = base / "postgres-files" / re.sub(r"[^A-Za-z0-9_.-]", "_", name)
        return LocalFileStore(Path(folder).expanduser()), "local"

    # -- calls ---------------------------------------------------------------------------

    @staticmethod
    def _adapt(value: Any) -> Any:
        if isinstance(value, J):
            return Jsonb(value.value)
        if isinstance(value, float):
            # Costs are numeric: float8 has no implicit cast to it. repr is the shortest exact text.
            return Decimal(repr(value))
        return value

    def _statement(self, fn: str, names: tuple[str, ...]) -> str:
        key = (fn, names)
        sql = self._sql.get(key)
        if sql is None:
            if not _NAME.match(fn) or not all(_NAME.match(n) for n in names):
                raise ValueError(f"not a SQL API name: {fn}({', '.join(names)})")
            sql = f"select public.{fn}(" + ", ".join(f"{n} => %({n})s" for n in names) + ")"
            self._sql[key] = sql
        return sql

    def _call(self, fn: str, args: dict[str, Any]) -> Any:
        sql = self._statement(fn, tuple(args))
        params = {k: self._adapt(v) for k, v in args.items()}
        conn = getattr(self._local, "conn", None)
        try:
            if conn is not None:
                row = conn.execute(sql, params).fetchone()
            elif fn in _TIMED_READS:
                with self._pool.connection() as pooled, pooled.transaction():
                    pooled.execute(
                        "select set_config('statement_timeout', coalesce((select split_part(c, '=', 2) "
                        "from pg_catalog.pg_proc p, unnest(p.proconfig) as c where p.proname = %s "
                        "and p.pronamespace = 'public'::regnamespace and c like 'statement_timeout=%%' limit 1), "
                        "current_setting('statement_timeout')), true)",
                        (fn,),
                    )
                    row = pooled.execute(sql, params).fetchone()
            else:
                with self._pool.connection() as pooled:
                    row = pooled.execute(sql, params).fetchone()
        except psycopg.Error as exc:
            raise self._error(exc, fn) from None
        except PoolTimeout:
            raise PersistenceError(f"{fn}: no free database connection within 30 s ({self.url})") from None
        return None if row is None else row[0]

    def _error(self, exc: psycopg.Error, fn: str) -> PersistenceError:
        if isinstance(exc, psycopg.OperationalError) and exc.sqlstate is None:
            return PersistenceError(f"{fn}: lost the connection to {self.url}: {str(exc).strip()}")
        diag = exc.diag
        message = diag.message_primary or str(exc).strip()
        if diag.message_detail:
            message += f" ({diag.message_detail})"
        return sql_error(exc.sqlstate, message, fn, where=f"the database {self.url}")

    @contextlib.contextmanager
    def _atomic(self) -> Iterator[None]:
        if getattr(self._local, "conn", None) is not None:
            yield  # already inside one
            return
        with self._pool.connection() as conn, conn.transaction():
            self._local.conn = conn
            try:
                yield
            finally:
                self._local.conn = None

    def close(self) -> None:
        self._stop_background()
        pool = getattr(self, "_pool", None)
        if pool is not None:
            pool.close()
        files = getattr(self, "files", None)
        if files is not None and hasattr(files, "close"):
            files.close()
