"""The pgTAP suite in supabase/tests, run with pg_prove against the local Postgres.

``supabase test db`` runs the same files on a Supabase project. Here each runs on a fresh
database with the stand-in bootstrap and every migration applied the way
``python -m persistence migrate`` applies them; every file is self-contained and rolls back
what it writes. One test per file, so a new file is picked up without a change here.

Needs pg_prove (Debian: libtap-parser-sourcehandler-pgtap-perl) and the pgtap extension for
the server's major version (postgresql-NN-pgtap); scripts/test installs both. Without them
the tests skip, and fail instead under ``CI=true``.
"""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from pathlib import Path
from typing import NoReturn

import pytest
from conftest import IN_CI, create_database, drop_database

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

TESTS_DIR = Path(__file__).resolve().parent.parent / "supabase" / "tests"
FILES = sorted(TESTS_DIR.glob("*.sql"))


def _missing(what: str) -> NoReturn:
    message = f"{what}; scripts/test installs it (postgresql-NN-pgtap, libtap-parser-sourcehandler-pgtap-perl)"
    if IN_CI:
        pytest.fail(message + " (CI=true: the pgTAP suite may not skip)")
    pytest.skip(message)


@pytest.fixture(scope="module")
def pgtap_db(pg_server: str) -> Iterator[str]:
    """A migrated database of its own, on a server that has the pgtap extension."""
    from persistence.backends.postgres.schema import migrate

    with psycopg.connect(pg_server, autocommit=True) as conn:
        available = conn.execute("select 1 from pg_catalog.pg_available_extensions where name = 'pgtap'").fetchone()
    if not available:
        _missing("the pgtap extension is not available on the test Postgres")
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url
    finally:
        drop_database(url)


def test_the_suite_is_there() -> None:
    assert (TESTS_DIR / "10_rls_matrix.sql") in FILES, FILES


@pytest.mark.parametrize("path", FILES, ids=[p.name for p in FILES])
def test_pgtap_file(pgtap_db: str, path: Path) -> None:
    pg_prove = shutil.which("pg_prove")
    if pg_prove is None:
        _missing("pg_prove is not installed")
    env = {**os.environ, "PGCONNECT_TIMEOUT": "10"}
    try:
        run = subprocess.run(
            [pg_prove, "--nocolor", "--failures", "--comments", "-d", pgtap_db, str(path)],
            capture_output=True,
            text=True,
            timeout=600,
            env=env,
        )
    except subprocess.TimeoutExpired as exc:
        # TimeoutExpired carries bytes whatever text=True says.
        output = b"".join(o if isinstance(o, bytes) else o.encode() for o in (exc.stdout, exc.stderr) if o)
        pytest.fail(f"pg_prove {path.name} ran over {exc.timeout} s:\n{output.decode(errors='replace')}")
    if run.returncode != 0:
        pytest.fail(f"pg_prove {path.name} failed (exit {run.returncode}):\n{run.stdout}\n{run.stderr}", pytrace=False)
