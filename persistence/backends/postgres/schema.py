"""The runner that applies the Postgres schema and SQL API (the SQL files in ``persistence/sql``).

``persistence/sql/migrations/`` holds the migrations in the Supabase CLI's layout
(``YYYYMMDDHHMMSS_name.sql``); ``supabase/migrations`` at the repository root is a symlink to
it, so ``supabase db push`` and ``python -m persistence migrate`` apply the very same files. This runner records them the way
the CLI does: each file is split into statements by a port of the CLI's splitter
(``pkg/parser``), run statement by statement in one transaction, and recorded in
``supabase_migrations.schema_migrations (version, name, statements)``, so either tool sees the
other's work as applied and never runs a file twice.

``persistence/sql/supabase_standin.sql`` creates what a Supabase project has built in and a
plain Postgres lacks (the roles anon/authenticated/service_role, ``auth.uid()``, a minimal
``storage`` schema). It is applied only where ``auth.uid()`` or those roles are missing, never
on Supabase.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime
from functools import cache
from importlib import resources
from typing import TYPE_CHECKING, Any

from ...errors import SchemaVersionError, StoreOpenError

if TYPE_CHECKING:
    import psycopg

# The SQL files are package data of ``persistence`` (a folder, not a package): only Python
# moved into the backends, so the Supabase CLI's symlink keeps pointing at the same files.
SQL_DIR = resources.files("persistence").joinpath("sql")

__all__ = [
    "Migration",
    "applied_versions",
    "migrate",
    "migration_files",
    "needs_standin",
    "pending_migrations",
    "reindex_search",
    "split_statements",
    "standin_sql",
]

MIGRATION_FILE = re.compile(r"^([0-9]+)_(.*)\.sql$")
# Our migrations are named persistence_*: an applied one this package does not know means a
# newer release migrated the database. Other unknown versions are the project's own.
OWN_PREFIX = "persistence_"
# Serialises concurrent migrate runs (two servers starting at once); any constant will do.
LOCK_KEY = 0x5E5_5A11

# The Supabase CLI's statements (pkg/migration/history.go), so the table is the one it makes.
CLI_HISTORY_SETUP = (
    "SET LOCAL lock_timeout = '4s'",
    "CREATE SCHEMA IF NOT EXISTS supabase_migrations",
    "CREATE TABLE IF NOT EXISTS supabase_migrations.schema_migrations (version text NOT NULL PRIMARY KEY)",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS statements text[]",
    "ALTER TABLE supabase_migrations.schema_migrations ADD COLUMN IF NOT EXISTS name text",
)
CLI_INSERT_VERSION = "INSERT INTO supabase_migrations.schema_migrations(version, name, statements) VALUES(%s, %s, %s)"


@dataclass(frozen=True, slots=True)
class Migration:
    version: str
    name: str
    sql: str

    @property
    def statements(self) -> list[str]:
        return split_statements(self.sql)

    @property
    def label(self) -> str:
        return f"{self.version}_{self.name}"

    @property
    def created_at(self) -> datetime:
        """The time in the version (when the migration was written; the CLI records no apply time)."""
        return version_time(self.version)


def version_time(version: str) -> datetime:
    try:
        return datetime.strptime(version[:14].ljust(14, "0"), "%Y%m%d%H%M%S").replace(tzinfo=UTC)
    except ValueError:
        return datetime(1970, 1, 1, tzinfo=UTC)


@cache
def migration_files() -> tuple[Migration, ...]:
    """The package's migrations, oldest first."""
    found = []
    for entry in SQL_DIR.joinpath("migrations").iterdir():
        m = MIGRATION_FILE.match(entry.name)
        if m:
            found.append(Migration(m.group(1), m.group(2), entry.read_text(encoding="utf-8")))
    return tuple(sorted(found, key=lambda mig: mig.version))


def standin_sql() -> str:
    return SQL_DIR.joinpath("supabase_standin.sql").read_text(encoding="utf-8")


# -- the Supabase CLI's statement splitter (pkg/parser/state.go, token.go), ported ---------
#
# A small state machine finds the semicolons that end statements: not inside quotes, dollar
# quotes, comments, parentheses or BEGIN ATOMIC bodies. Each statement keeps its comments and
# whitespace; the CLI then trims the trailing ';' and whitespace and drops empty ones.


class _Ready:
    def next(self, ch: str, data: str) -> Any:
        if ch == "$":
            return _Tag(len(data) - 1)
        if ch in ("'", '"'):
            return _Quote(ch)
        if ch == "-":
            return _Comment()
        if ch == "/":
            return _Block()
        if ch == "\\":
            return _Escape()
        if ch == ";":
            return None  # end of statement
        if ch == "(":
            return _Atomic(self, ")")
        if ch in ("c", "C"):
            offset = len(data) - len("ATOMIC")
            if offset > 0 and data[offset:].upper() == "ATOMIC" and data[offset - 1].isspace():
                return _Atomic(self, "END")
        return self


class _Comment:
    def next(self, ch: str, data: str) -> Any:
        if ch == "-":
            return _Dollar("\n")  # a line comment runs to the end of the line
        return _Ready().next(ch, data)


class _Block:
    def __init__(self) -> None:
        self.depth = 0

    def next(self, ch: str, data: str) -> Any:
        window = data[-2:]
        if window == "/*":
            self.depth += 1
            return self
        if self.depth == 0:
            return _Ready().next(ch, data)
        if window == "*/":
            self.depth -= 1
            if self.depth == 0:
                return _Ready()
        return self


class _Quote:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter
        self.escape = False

    def next(self, ch: str, data: str) -> Any:
        if self.escape:
            if ch == self.delimiter:  # a doubled quote stays inside
                self.escape = False
                return self
            return _Ready().next(ch, data)
        if ch == self.delimiter:
            self.escape = True
        return self


class _Dollar:
    def __init__(self, delimiter: str) -> None:
        self.delimiter = delimiter

    def next(self, ch: str, data: str) -> Any:
        if data.endswith(self.delimiter):
            return _Ready()
        return self


class _Tag:
    def __init__(self, offset: int) -> None:
        self.offset = offset

    def next(self, ch: str, data: str) -> Any:
        if ch == "$":
            return _Dollar(data[self.offset :])
        if ch.isalpha() or ch.isdigit() or ch == "_":
            return self
        return _Ready().next(ch, data)


class _Escape:
    def next(self, ch: str, data: str) -> Any:
        return _Ready()


class _Atomic:
    def __init__(self, prev: Any, delimiter: str) -> None:
        self.prev = prev
        self.delimiter = delimiter

    def next(self, ch: str, data: str) -> Any:
        current = self.prev.next(ch, data)
        if current is not None:
            self.prev = current
        if isinstance(self.prev, _Ready) and data[-len(self.delimiter) :].upper() == self.delimiter.upper():
            return _Ready()
        return self


def split_statements(sql: str) -> list[str]:
    """The statements of a migration exactly as the Supabase CLI splits and records them."""
    statements: list[str] = []
    state: Any = _Ready()
    start = 0
    for i, ch in enumerate(sql):
        state = state.next(ch, sql[start : i + 1])
        if state is None:
            statements.append(sql[start : i + 1])
            start = i + 1
            state = _Ready()
    statements.append(sql[start:])
    return [s.rstrip(";").strip() for s in statements if s.rstrip(";").strip()]


# -- applying ------------------------------------------------------------------------------


def needs_standin(conn: psycopg.Connection[Any]) -> bool:
    """True on a plain Postgres: auth.uid() or the API roles are missing."""
    row = conn.execute(
        "select to_regprocedure('auth.uid()') is not null, "
        "(select count(*) from pg_catalog.pg_roles where rolname in ('anon', 'authenticated', 'service_role'))"
    ).fetchone()
    assert row is not None
    return not (row[0] and row[1] == 3)


def applied_versions(conn: psycopg.Connection[Any]) -> dict[str, str]:
    """version -> name of the applied migrations ({} before the history table exists)."""
    exists = conn.execute("select to_regclass('supabase_migrations.schema_migrations') is not null").fetchone()
    if not exists or not exists[0]:
        return {}
    rows = conn.execute(
        "select version, coalesce(name, '') from supabase_migrations.schema_migrations order by version"
    ).fetchall()
    return {str(v): str(n) for v, n in rows}


def _check_not_newer(applied: dict[str, str]) -> None:
    known = {m.version for m in migration_files()}
    newest = max(known)
    newer = [f"{v}_{n}" for v, n in applied.items() if v not in known and v > newest and n.startswith(OWN_PREFIX)]
    if newer:
        raise SchemaVersionError(
            f"the database was migrated by a newer version of persistence ({', '.join(newer)}); upgrade the package"
        )


def pending_migrations(conn: psycopg.Connection[Any]) -> list[Migration]:
    applied = applied_versions(conn)
    _check_not_newer(applied)
    return [m for m in migration_files() if m.version not in applied]


def migrate(conn: psycopg.Connection[Any], *, standin: bool | None = None) -> list[Migration]:
    """Apply the pending migrations (and, on a plain Postgres, the Supabase stand-in first).

    ``conn`` must be in autocommit mode; each migration runs in a transaction of its own.
    Idempotent and safe to run concurrently. Returns what was applied.
    """
    import psycopg

    if not conn.autocommit:
        raise ValueError("migrate() needs a connection in autocommit mode")
    applied: list[Migration] = []
    try:
        with conn.transaction():
            conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
            if standin if standin is not None else needs_standin(conn):
                for statement in split_statements(standin_sql()):
                    conn.execute(statement)
            for statement in CLI_HISTORY_SETUP:
                conn.execute(statement)
        for migration in migration_files():
            with conn.transaction():
                conn.execute("select pg_advisory_xact_lock(%s)", (LOCK_KEY,))
                done = applied_versions(conn)
                _check_not_newer(done)
                if migration.version in done:
                    continue  # applied before, or by a concurrent run while we waited
                statements = migration.statements
                for i, statement in enumerate(statements):
                    try:
                        conn.execute(statement)
                    except psycopg.Error as exc:
                        raise StoreOpenError(
                            f"migration {migration.label} failed at statement {i + 1} of {len(statements)} "
                            f"(nothing of it was applied): {_describe(exc)}"
                        ) from exc
                conn.execute(CLI_INSERT_VERSION, (migration.version, migration.name, statements))
                applied.append(migration)
    except psycopg.errors.InsufficientPrivilege as exc:
        raise StoreOpenError(f"not allowed to migrate this database: {_describe(exc)}") from exc
    return applied


def _describe(exc: Exception) -> str:
    diag = getattr(exc, "diag", None)
    primary = getattr(diag, "message_primary", None) or str(exc).strip()
    hint = getattr(diag, "message_hint", None)
    return f"{primary} (hint: {hint})" if hint else primary


# -- the search index text, recomputed in Python ---------------------------------------------
#
# search_extra is computed by the package (persistence.search_query.index_text), so when that
# changes, existing rows need it recomputed. The migration files are SQL the Supabase CLI can
# apply too, so this step is not one of them: it runs when the package opens the store (and
# as ``python -m persistence reindex``) while store_meta records an older index version.

REINDEX_LOCK_KEY = 0x5E5_5A12
REINDEX_BATCH = 2000


def reindex_search(conn: psycopg.Connection[Any], *, force: bool = False) -> int | None:
    """Recompute search_extra where it differs from what ``index_text`` writes now, in one
    transaction (so a search never sees half the rows re-spelled). None when the recorded
    index version is current (nothing done), else the number of rows changed.
    ``conn`` must be in autocommit mode."""
    from ...search_query import INDEX_VERSION, index_text

    def current() -> bool:
        row = conn.execute("select value from public.store_meta where key = 'search_index_version'").fetchone()
        return row is not None and row[0].isdigit() and int(row[0]) >= INDEX_VERSION

    if not force and current():
        return None
    changed = 0
    with conn.transaction():
        conn.execute("select pg_advisory_xact_lock(%s)", (REINDEX_LOCK_KEY,))
        if not force and current():  # a concurrent open did it while we waited
            return None
        last = None
        while True:
            rows = conn.execute(
                "select id, content, search_extra from public.messages "
                "where %s::uuid is null or id > %s::uuid order by id limit %s",
                (last, last, REINDEX_BATCH),
            ).fetchall()
            if not rows:
                break
            updates = [(new, mid) for mid, content, old in rows if (new := index_text(content)) != old]
            if updates:
                with conn.cursor() as cur:
                    cur.executemany("update public.messages set search_extra = %s where id = %s", updates)
                changed += len(updates)
            last = rows[-1][0]
        conn.execute(
            "insert into public.store_meta (key, value) values ('search_index_version', %s) "
            "on conflict (key) do update set value = excluded.value",
            (str(INDEX_VERSION),),
        )
    return changed
