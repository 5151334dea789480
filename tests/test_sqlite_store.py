"""The embedded default: one file, WAL, self-migrating, found from the environment."""

from __future__ import annotations

import sqlite3
from pathlib import Path

import pytest

import persistence
from persistence import SchemaVersionError
from persistence.backends.sqlite.schema import MIGRATIONS
from persistence.backends.sqlite.store import SQLiteStore
from persistence.env import redact_url, resolve_url


def test_the_store_migrates_itself_once(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    store = persistence.open_store(f"sqlite:///{path}")
    assert [name for name, _ in store.migrations()] == [name for name, _ in MIGRATIONS]
    store.record_message("t", "user", "hello")
    store.close()
    again = persistence.open_store(f"sqlite:///{path}")  # reopening applies nothing twice
    assert len(again.migrations()) == len(MIGRATIONS) and again.count_conversations() == 1
    again.close()
    db = sqlite3.connect(path)
    assert db.execute("pragma journal_mode").fetchone()[0] == "wal"
    db.close()


def test_the_unpriced_flag_is_filled_in_for_a_store_older_than_it(tmp_path: Path) -> None:
    """0003_unpriced_flag: messages written before the column get the flag the rule gives,
    so the totals and rollups (counted before, by the rule) equal the sums of the column."""
    path = tmp_path / "old.db"
    store = persistence.open_store(f"sqlite:///{path}")
    store.record_message("t", "user", "no usage at all")
    store.record_message(
        "t", "assistant", "priced", model="glm-4.6", usage={"prompt_tokens": 10, "completion_tokens": 2}
    )
    store.record_message("t", "assistant", "no price", model="my-local-model", usage={"input_tokens": 5})
    store.record_message("t", "assistant", "unreadable", model="glm-4.6", usage={"tokens_in": 5})
    store.close()
    db = sqlite3.connect(path)
    db.execute("alter table messages drop column unpriced")  # as 0002 left it
    db.execute("delete from _migrations where name = '0003_unpriced_flag'")
    db.commit()
    db.close()

    store = persistence.open_store(f"sqlite:///{path}")
    assert "0003_unpriced_flag" in [name for name, _ in store.migrations()]
    store.close()
    db = sqlite3.connect(path)
    flags = dict(db.execute("select content, unpriced from messages"))
    assert flags == {"no usage at all": 0, "priced": 0, "no price": 1, "unreadable": 1}
    assert db.execute("select unpriced_messages from conversations").fetchone()[0] == 2
    assert db.execute("select sum(unpriced_messages) from usage_daily").fetchone()[0] == 2
    db.close()


def test_each_thread_filter_has_its_where_clause() -> None:
    from persistence.backends.sqlite.store import _CONVERSATION_FILTERS
    from persistence.prepared import FILTER_NAMES

    assert set(_CONVERSATION_FILTERS) == FILTER_NAMES


def test_a_newer_schema_is_refused_not_clobbered(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    persistence.open_store(f"sqlite:///{path}").close()
    db = sqlite3.connect(path)
    db.execute("insert into _migrations values ('0099_from_the_future', '2030-01-01')")
    db.commit()
    db.close()
    with pytest.raises(SchemaVersionError, match="0099_from_the_future"):
        persistence.open_store(f"sqlite:///{path}")


def test_search_survives_vacuum(sqlite_store: SQLiteStore) -> None:
    for i in range(30):
        sqlite_store.record_message(f"t-{i}", "user", f"message number {i} about pools")
    # Deleting rows leaves gaps that VACUUM would renumber, were rowid not declared.
    sqlite_store._conn().execute("delete from conversations where continuation_id in ('t-3', 't-6', 't-9')")
    sqlite_store._conn().execute("vacuum")
    sqlite_store.check_fts()
    assert [h.message.content for h in sqlite_store.search('"number 29"')] == ["message number 29 about pools"]
    assert sqlite_store.search('"number 9"') == []
    assert len(sqlite_store.search("pools", limit=100)) == 27


def test_where_the_default_store_lives(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCE_HOME", str(tmp_path / "home"))
    store = persistence.open_store()
    assert isinstance(store, SQLiteStore)
    assert store.path == tmp_path / "home" / "history.db"
    assert store.files.root == tmp_path / "home" / "history-files"
    store.close()


def test_url_forms_and_env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    rel = persistence.open_store("sqlite:///rel.db?files_dir=blobs")
    assert isinstance(rel, SQLiteStore)
    assert rel.path == Path("rel.db") and rel.files.root == Path("blobs")
    rel.close()
    plain = persistence.open_store(str(tmp_path / "plain.db"))
    assert isinstance(plain, SQLiteStore) and plain.path == tmp_path / "plain.db"
    plain.close()
    monkeypatch.setenv("PERSISTENCE_URL", f"sqlite:///{tmp_path / 'from-env.db'}")
    assert resolve_url() == f"sqlite:///{tmp_path / 'from-env.db'}"
    monkeypatch.delenv("PERSISTENCE_URL")
    (tmp_path / ".env").write_text(f"PERSISTENCE_URL=sqlite:///{tmp_path / 'from-dotenv.db'}\n")
    assert resolve_url() == f"sqlite:///{tmp_path / 'from-dotenv.db'}"
    monkeypatch.setenv("PERSISTENCE_URL", "sqlite:///env-wins.db")
    assert resolve_url() == "sqlite:///env-wins.db"
    assert resolve_url(env={"SUPABASE_URL": "https://x.supabase.co", "SUPABASE_SERVICE_ROLE_KEY": "k"}) == "supabase"


def test_passwords_are_redacted() -> None:
    assert (
        redact_url("postgresql://app:s3cret@db.example.com:6543/postgres")
        == "postgresql://app:***@db.example.com:6543/postgres"
    )
    assert "s3cret" not in redact_url("postgresql://app:s3cret@localhost/db")
