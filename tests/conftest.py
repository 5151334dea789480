"""Shared fixtures: every store lives in a temp dir and is closed after the test.

``store`` is parametrized over ``BACKENDS``: a test that takes it runs the same scenario on
every backend (the conformance suite). ``sqlite_store`` is for SQLite-only behaviour.
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from pathlib import Path

import pytest

import persistence
from persistence.sqlite_store import SQLiteStore

BACKENDS = ["sqlite"]

IN_CI = os.environ.get("CI", "").lower() in ("1", "true", "yes")


@pytest.fixture(autouse=True)
def _isolated_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    """No test reads the developer's own store or .env."""
    for key in list(os.environ):
        if key.startswith(("PERSISTENCE_", "SUPABASE_")):
            monkeypatch.delenv(key, raising=False)
    monkeypatch.setenv("PERSISTENCE_HOME", str(tmp_path / "home"))


@pytest.fixture
def sqlite_store(tmp_path: Path) -> Iterator[SQLiteStore]:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'history.db'}")
    assert isinstance(store, SQLiteStore)
    yield store
    store.close()


@pytest.fixture(params=BACKENDS)
def store(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[persistence.Store]:
    if request.param == "sqlite":
        s = persistence.open_store(f"sqlite:///{tmp_path / 'history.db'}")
    else:  # pragma: no cover - other backends register themselves in BACKENDS
        raise AssertionError(f"unknown backend {request.param}")
    yield s
    s.close()
