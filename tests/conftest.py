"""Shared fixtures: every store lives in a temp dir and is closed after the test.

``store`` is parametrized over ``BACKENDS``: a test that takes it runs the same scenario on
every backend (the conformance suite). ``supabase_user`` is the Supabase backend opened as a
signed-in user (``SIGNED_IN_USER``: role ``authenticated``, the anon key and the user's token),
so row level security applies; what only the server may do raises ``ServerOnlyError`` there
(``signed_in(store)`` tells a test which it has). ``sqlite_store`` is for SQLite-only behaviour.

Postgres and Supabase run against the real Postgres at 127.0.0.1:5432 (user postgres, trust
auth; ``PERSISTENCE_TEST_POSTGRES_URL`` points elsewhere): one database per test session,
named ``pt_…``, migrated once, emptied before each test and dropped at the end. ``supabase``
is the real ``supabase`` client talking to that database through ``tests/supabase_standin.py``
(a stand-in for PostgREST's RPC endpoint and Storage). Postgres tests are marked ``postgres``;
they skip when Postgres is unreachable, and fail instead under ``CI=true``.

Under ``CI=true`` no test may skip (a missing psycopg, Chromium, pgTAP, root…): every skip,
a whole module's included, is reported as a failure, except the opt-in ones whose reason
starts with one of ``CI_MAY_SKIP``.
"""

from __future__ import annotations

import os
import re
import sys
import uuid
from collections.abc import Generator, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest

import persistence
from persistence.backends.sqlite.store import SQLiteStore

BACKENDS = ["sqlite", "postgres", "supabase", "supabase_user"]
# The user the ``supabase_user`` store is signed in as.
SIGNED_IN_USER = "5e1f0000-0000-4000-8000-00000000a11c"

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")
# The skips CI accepts: tests that need what CI does not have by design (a real Supabase project),
# or a tool the distribution ships broken (Debian 12's sqlite3 3.40.1: `.recover` fails with
# "SQL logic error"; tests/test_damaged_store.py then tests the table copy only).
CI_MAY_SKIP = (
    "SUPABASE_TEST_URL and SUPABASE_TEST_SERVICE_ROLE_KEY are not set",  # tests/test_supabase_live.py
    "SUPABASE_TEST_ANON_KEY is not set",
    "this sqlite3 shell's .recover does not work",
)

# Read at import: the autouse fixture below clears PERSISTENCE_* from each test's environment.
PG_ADMIN_URL = os.environ.get("PERSISTENCE_TEST_POSTGRES_URL", "postgresql://postgres@127.0.0.1:5432/postgres")
STANDIN_JWT_SECRET = "standin-jwt-secret-for-tests-only-0123456789"
# What a test leaves behind, emptied before the next one (storage.buckets keeps mcp-files).
PG_TABLES = (
    "public.conversations, public.messages, public.files, public.file_uploads, public.conversation_files, "
    "public.provider_files, public.usage_daily, public.model_prices, public.store_meta, public.blob_sweeps, "
    "public.budgets, "
    "storage.objects"
)


def database_url(name: str) -> str:
    return urlunsplit(urlsplit(PG_ADMIN_URL)._replace(path=f"/{name}"))


def create_database(prefix: str = "pt") -> str:
    """A new empty database named ``pt_…`` (dropped with :func:`drop_database`); its URL."""
    import psycopg

    worker = os.environ.get("PYTEST_XDIST_WORKER", "main")
    name = f"{prefix}_{worker}_{os.getpid()}_{uuid.uuid4().hex[:8]}"
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'create database "{name}"')
    return database_url(name)


def drop_database(url: str) -> None:
    import psycopg

    name = urlsplit(url).path.strip("/")
    assert name.startswith("pt_"), name
    with psycopg.connect(PG_ADMIN_URL, autocommit=True, connect_timeout=5) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')


def _unreachable(why: str) -> None:
    message = f"Postgres at {urlsplit(PG_ADMIN_URL).netloc} is unreachable: {why}"
    if IN_CI:
        pytest.fail(message + " (CI=true: Postgres tests may not skip)")
    pytest.skip(message)


@pytest.fixture(scope="session")
def pg_server() -> str:
    """The admin URL of the test Postgres (skips, or fails under CI, when it is down)."""
    try:
        import psycopg
    except ImportError as exc:  # pragma: no cover - requirements.txt installs it
        _unreachable(f"psycopg is not installed ({exc})")
    try:
        with psycopg.connect(PG_ADMIN_URL, connect_timeout=3, autocommit=True) as conn:
            names = [r[0] for r in conn.execute("select datname from pg_database where datname like 'pt\\_%'")]
            # Databases of test runs that were killed before they could drop them.
            for name in names:
                m = re.fullmatch(r"pt_[A-Za-z0-9]+_(\d+)_[0-9a-f]{8}", name)
                if m and not _alive(int(m.group(1))):
                    conn.execute(f'drop database if exists "{name}" with (force)')
    except psycopg.Error as exc:
        _unreachable(str(exc).strip())
    return PG_ADMIN_URL


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


@pytest.fixture(scope="session")
def pg_session_db(pg_server: str) -> Iterator[str]:
    import psycopg

    from persistence.backends.postgres.schema import migrate

    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
        yield url
    finally:
        drop_database(url)


@pytest.fixture(scope="session")
def standin(pg_session_db: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Any]:
    from supabase_standin import SupabaseStandin

    gateway = SupabaseStandin(pg_session_db, STANDIN_JWT_SECRET, tmp_path_factory.mktemp("standin-storage"))
    yield gateway
    gateway.close()


@pytest.fixture
def pg_url(pg_session_db: str, standin: Any) -> str:
    """The session database, emptied: no test sees another's rows or stored objects."""
    import psycopg

    with psycopg.connect(pg_session_db, autocommit=True) as conn:
        conn.execute(f"truncate {PG_TABLES} cascade")
    standin.reset_storage()
    return pg_session_db


def open_supabase(standin: Any, role: str = "service_role", *, user: str | None = None, **env: str) -> Any:
    """A SupabaseStore: the real client, through the stand-in, with this role's key; with
    ``user``, signed in as that user (the anon key, and the user's token as the client sends
    it after sign-in)."""
    from persistence.backends.postgres.supabase_store import SupabaseStore

    if user is not None:
        return SupabaseStore(
            env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_ANON_KEY": standin.anon_key, **env},
            access_token=standin.token("authenticated", user),
            http_client=standin.client(),
        )
    return SupabaseStore(
        env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_SERVICE_ROLE_KEY": standin.token(role), **env},
        http_client=standin.client(),
    )


def signed_in(store: Any) -> bool:
    """True for a store opened as a signed-in user (the ``supabase_user`` backend)."""
    return getattr(store, "backend", None) == "supabase" and not store.is_server


def assert_server_only(call: Any, what: str) -> None:
    """On a signed-in user's store, ``call()`` is refused with ServerOnlyError naming ``what``
    (the scenario the test runs with the service role key is the server's only)."""
    from persistence.errors import ServerOnlyError

    with pytest.raises(ServerOnlyError, match=what):
        call()


def server_side(store: Any) -> Any:
    """The store a test's setup uses for what only the server may do (adding prices): the
    store itself, or for a signed-in user's store the server's store of the same project
    (opened once, closed with the test)."""
    return store.server_for_tests() if signed_in(store) else store


def _backend_params() -> list[Any]:
    marks = {
        "postgres": [pytest.mark.postgres],
        "supabase": [pytest.mark.postgres],
        "supabase_user": [pytest.mark.postgres],
    }
    return [pytest.param(name, marks=marks.get(name, [])) for name in BACKENDS]


def _skip_reason(report: pytest.TestReport | pytest.CollectReport) -> str:
    longrepr = report.longrepr
    reason = str(longrepr[2]) if isinstance(longrepr, tuple) else str(longrepr)
    return reason.removeprefix("Skipped: ")


def _no_skip_in_ci(report: pytest.TestReport | pytest.CollectReport) -> None:
    """Under CI=true a skip (of a test, or of a module: ``importorskip``) is a failure."""
    if IN_CI and report.skipped and not hasattr(report, "wasxfail"):
        reason = _skip_reason(report)
        if not reason.startswith(CI_MAY_SKIP):
            report.outcome = "failed"
            report.longrepr = f"CI=true: this may not skip (conftest.CI_MAY_SKIP lists the skips that may): {reason}"


@pytest.hookimpl(wrapper=True)
def pytest_runtest_makereport(
    item: pytest.Item, call: pytest.CallInfo[None]
) -> Generator[None, pytest.TestReport, pytest.TestReport]:
    report = yield
    _no_skip_in_ci(report)
    return report


@pytest.hookimpl(wrapper=True)
def pytest_make_collect_report(
    collector: pytest.Collector,
) -> Generator[None, pytest.CollectReport, pytest.CollectReport]:
    report = yield
    _no_skip_in_ci(report)
    return report


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own store or .env."""
    for key in list(os.environ):
        if key.startswith(("PERSISTENCE_", "SUPABASE_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PERSISTENCE_HOME", str(tmp_path / "home"))


@pytest.fixture(autouse=True)
def _main_module_kept() -> Iterator[None]:
    """Streamlit's AppTest runs the app as ``__main__`` and leaves it in ``sys.modules``; a later
    test that spawns processes (multiprocessing re-runs the parent's ``__main__`` file in each
    child) would then run app.py in every child, which fails (seen in CI as a writer process
    exiting 1 in test_writes). Each test gets back the ``__main__`` it started with."""
    main = sys.modules.get("__main__")
    yield
    if main is not None:
        sys.modules["__main__"] = main


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'history.db'}")
    assert isinstance(store, SQLiteStore)
    yield store
    store.close()


@pytest.fixture(params=_backend_params())
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[persistence.Store]:
    s: persistence.Store
    if request.param == "sqlite":
        s = persistence.open_store(f"sqlite:///{tmp_path / 'history.db'}")
    elif request.param == "postgres":
        s = persistence.open_store(request.getfixturevalue("pg_url"), files_dir=tmp_path / "pg-files")
    elif request.param == "supabase":
        request.getfixturevalue("pg_url")
        s = open_supabase(request.getfixturevalue("standin"))
    elif request.param == "supabase_user":
        request.getfixturevalue("pg_url")
        standin = request.getfixturevalue("standin")
        # The server opened the project first (it syncs the package's prices, which a user
        # may not); the test then works as a signed-in user, as an app's client does.
        server = open_supabase(standin)
        s = open_supabase(standin, user=SIGNED_IN_USER)
        s.server_for_tests = lambda: server  # type: ignore[attr-defined]  # see server_side
    else:  # pragma: no cover
        raise AssertionError(f"unknown backend {request.param}")
    yield s
    s.close()
    if request.param == "supabase_user":
        server.close()
