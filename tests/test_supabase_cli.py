"""The migrations checked by Supabase's own CLI against the local Postgres.

* ``supabase db push --db-url …`` applies ``supabase/migrations`` to a fresh database that
  has only the stand-in bootstrap (what a Supabase project has built in), ``supabase
  migration list`` then shows every file applied, and ``python -m persistence migrate`` finds
  nothing left to do; the other way round, after ``python -m persistence migrate`` the CLI
  finds nothing to push. Both tools record history in the same table, so either may be used.
* ``supabase db lint`` (plpgsql_check over every PL/pgSQL function) reports no warning in any
  schema of the migrated database: ``--level warning --fail-on warning``, every issue printed.

The CLI is the npm package ``supabase``, pinned (scripts/test installs it into ``.tools/``;
``SUPABASE_CLI`` points elsewhere); lint needs the ``plpgsql_check`` extension for the
server's major version (Debian ``postgresql-NN-plpgsql-check``, installed by scripts/test):
the CLI itself runs ``create extension if not exists plpgsql_check`` inside the transaction
it lints in and rolls back, so the database keeps nothing of it, but the server must have the
extension's files and the CLI must connect as a role allowed to create it. Without the CLI or
the extension these tests skip, and fail instead under ``CI=true``.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any, NoReturn
from urllib.parse import urlsplit, urlunsplit

import pytest
from conftest import IN_CI, create_database, drop_database

from persistence.backends.postgres.schema import migration_files, split_statements, standin_sql

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

ROOT = Path(__file__).resolve().parent.parent
CLI_VERSION = "2.117.0"  # as scripts/test pins it
CLI = Path(os.environ.get("SUPABASE_CLI") or ROOT / ".tools" / "node_modules" / ".bin" / "supabase")
# Postgres' own schemas: everything else in the database is what the bootstrap and the
# migrations made (public, auth, storage, supabase_migrations), and all of it is linted.
SYSTEM_SCHEMAS = ("pg_catalog", "information_schema", "pg_toast")


def _missing(what: str) -> NoReturn:
    message = f"{what}; scripts/test installs it"
    if IN_CI:
        pytest.fail(message + " (CI=true: the Supabase CLI tests may not skip)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def cli() -> Path:
    if not os.access(CLI, os.X_OK):
        _missing(f"the Supabase CLI is not at {CLI} (npm i -E supabase@{CLI_VERSION})")
    version = subprocess.run([str(CLI), "--version"], capture_output=True, text=True, timeout=60).stdout.strip()
    assert version == CLI_VERSION, f"{CLI} is version {version!r}, the tests are pinned to {CLI_VERSION}"
    return CLI


@pytest.fixture
def bootstrapped_db(pg_server: str) -> Iterator[str]:
    """A fresh database with only the stand-in for Supabase's built-ins (roles, auth, storage)."""
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in split_statements(standin_sql()):
                conn.execute(statement)
        yield url
    finally:
        drop_database(url)


def cli_url(url: str) -> str:
    """The database URL as the CLI takes it: no TLS on the local server."""
    parts = urlsplit(url)
    query = "&".join(q for q in (parts.query, "sslmode=disable") if q)
    return urlunsplit(parts._replace(query=query))


def run_cli(cli: Path, *args: str, check: bool = True) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "DO_NOT_TRACK": "1", "SUPABASE_TELEMETRY_DISABLED": "1"}
    try:
        run = subprocess.run(
            [str(cli), *args], cwd=ROOT, capture_output=True, text=True, timeout=300, env=env, stdin=subprocess.DEVNULL
        )
    except subprocess.TimeoutExpired as exc:
        pytest.fail(f"supabase {' '.join(args[:2])} ran over {exc.timeout} s")
    if check and run.returncode != 0:
        pytest.fail(f"supabase {' '.join(args)} failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}")
    return run


def history(url: str) -> list[tuple[Any, ...]]:
    with psycopg.connect(url) as conn:
        return conn.execute(
            "select version, name, statements from supabase_migrations.schema_migrations order by version"
        ).fetchall()


def migration_list(cli: Path, url: str) -> list[tuple[str, str]]:
    """(local, remote) versions per row of ``supabase migration list``."""
    out = run_cli(cli, "migration", "list", "--db-url", cli_url(url)).stdout
    rows = []
    for line in out.splitlines():
        cells = [c.strip().strip("`") for c in line.split("|")]
        if len(cells) == 3 and (cells[0].isdigit() or cells[1].isdigit()):
            rows.append((cells[0], cells[1]))
    return rows


def package_migrate(url: str) -> subprocess.CompletedProcess[str]:
    run = subprocess.run(
        [sys.executable, "-m", "persistence", "migrate", "--url", url],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stdout + run.stderr
    return run


def expected_versions() -> list[str]:
    local = [m.version for m in migration_files()]
    assert sorted(p.stem for p in (ROOT / "supabase" / "migrations").glob("*.sql")) == [
        m.label for m in migration_files()
    ], "supabase/migrations and the package's migrations differ"
    return local


def test_cli_push_then_the_package_finds_nothing_to_do(cli: Path, bootstrapped_db: str) -> None:
    versions = expected_versions()
    push = run_cli(cli, "db", "push", "--db-url", cli_url(bootstrapped_db), "--yes")
    for m in migration_files():
        assert f"Applying migration {m.label}.sql" in push.stdout + push.stderr, push.stdout + push.stderr
    assert migration_list(cli, bootstrapped_db) == [(v, v) for v in versions]

    pushed = history(bootstrapped_db)
    assert [r[0] for r in pushed] == versions
    run = package_migrate(bootstrapped_db)
    assert "is up to date" in run.stderr
    assert [line.split()[-1] for line in run.stdout.splitlines()] == [m.label for m in migration_files()]
    assert history(bootstrapped_db) == pushed  # nothing applied a second time


def test_package_migrate_then_the_cli_finds_nothing_to_push(cli: Path, bootstrapped_db: str) -> None:
    versions = expected_versions()
    package_migrate(bootstrapped_db)
    migrated = history(bootstrapped_db)
    assert [r[0] for r in migrated] == versions
    assert migration_list(cli, bootstrapped_db) == [(v, v) for v in versions]

    dry = run_cli(cli, "db", "push", "--db-url", cli_url(bootstrapped_db), "--dry-run")
    push = run_cli(cli, "db", "push", "--db-url", cli_url(bootstrapped_db), "--yes")
    for run in (dry, push):
        out = run.stdout + run.stderr
        assert "Remote database is up to date" in out, out
        assert "Applying migration" not in out and "Would push" not in out, out
    assert history(bootstrapped_db) == migrated


def test_db_lint_reports_no_warning_in_any_schema(cli: Path, bootstrapped_db: str) -> None:
    with psycopg.connect(bootstrapped_db) as conn:
        available = conn.execute("select 1 from pg_available_extensions where name = 'plpgsql_check'").fetchone()
    if not available:
        _missing("the plpgsql_check extension is not available on the test Postgres (postgresql-NN-plpgsql-check)")
    run_cli(cli, "db", "push", "--db-url", cli_url(bootstrapped_db), "--yes")
    with psycopg.connect(bootstrapped_db) as conn:
        schemas = [
            r[0]
            for r in conn.execute(
                "select nspname from pg_namespace where not (nspname = any(%s) or nspname like 'pg\\_temp\\_%%' "
                "or nspname like 'pg\\_toast\\_temp\\_%%') order by 1",
                (list(SYSTEM_SCHEMAS),),
            )
        ]
    assert {"public", "auth", "storage", "supabase_migrations"} <= set(schemas), schemas

    lint = run_cli(
        cli,
        "db",
        "lint",
        "--db-url",
        cli_url(bootstrapped_db),
        "--schema",
        ",".join(schemas),
        "--level",
        "warning",
        "--fail-on",
        "warning",
        check=False,
    )
    for schema in schemas:
        assert f"Linting schema: {schema}" in lint.stderr, lint.stderr
    report = lint.stdout.strip()
    issues = json.loads(report) if report.startswith("[") else []
    listed = "\n".join(
        f"{fn['function']}: {i['level']}: {i['message']}"
        + (f" ({i['detail']})" if i.get("detail") else "")
        + (f" [{i['context']}]" if i.get("context") else "")
        for fn in issues
        for i in fn["issues"]
    )
    assert not issues and lint.returncode == 0, (
        f"supabase db lint found (exit {lint.returncode}):\n{listed or report}\n{lint.stderr}"
    )
    with psycopg.connect(bootstrapped_db) as conn:  # lint rolled its extension back
        assert conn.execute("select 1 from pg_extension where extname = 'plpgsql_check'").fetchone() is None
