"""SQLite's thread facets (migration 0005): the Threads page's model, provider and tool filters
read a per-thread table the write path keeps, so they must list exactly the threads a scan of
the messages finds, after every kind of write."""

from __future__ import annotations

import sqlite3
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import persistence
from persistence.backends.sqlite.store import SQLiteStore
from persistence.demo import generate

# The filters as they were before the facet table: a probe of each thread's messages.
SCAN = {
    "model": "exists (select 1 from messages m where m.conversation_id = c.id and m.model_used = ?)",
    "provider": "exists (select 1 from messages m where m.conversation_id = c.id and m.provider = ?)",
    "tool_name": "(c.tool_name = ? or exists (select 1 from messages m "
    "where m.conversation_id = c.id and m.tool_name = ?))",
}


def scanned(path: Path, name: str, value: str, since: datetime | None = None) -> set[str]:
    """The continuation ids the message scan finds for one filter (threads active since ``since``)."""
    db = sqlite3.connect(path)
    try:
        args = (value, value) if name == "tool_name" else (value,)
        sql = f"select continuation_id, updated_at from conversations c where {SCAN[name]}"
        return {
            cid
            for cid, updated_at in db.execute(sql, args)
            if since is None or datetime.fromisoformat(updated_at) >= since
        }
    finally:
        db.close()


def values_of(path: Path) -> dict[str, set[str]]:
    """Every model, provider and tool name stored, plus one nobody used."""
    db = sqlite3.connect(path)
    try:
        out = {
            "model": {
                r[0] for r in db.execute("select distinct model_used from messages where model_used is not null")
            },
            "provider": {r[0] for r in db.execute("select distinct provider from messages where provider is not null")},
            "tool_name": {
                r[0]
                for r in db.execute(
                    "select tool_name from messages where tool_name is not null "
                    "union select tool_name from conversations where tool_name is not null"
                )
            },
        }
    finally:
        db.close()
    for values in out.values():
        values.add("nobody-used-this")
    return out


def listed(store: persistence.Store, **filters: Any) -> set[str]:
    ids: list[str] = []
    cursor = None
    while True:
        page = store.list_conversations(limit=200, cursor=cursor, **filters)
        ids += [c.continuation_id for c in page.items]
        cursor = page.next_cursor
        if cursor is None:
            return set(ids)


def assert_facets_match_a_scan(store: SQLiteStore) -> int:
    """Every filter value's count and listing equal the scan, all time and over a period (the
    two ways a count is planned); returns how many were compared."""
    compared = 0
    for name, values in values_of(store.path).items():
        for value in sorted(values):
            for since in (None, datetime(2026, 11, 1, tzinfo=UTC)):
                expected = scanned(store.path, name, value, since)
                filters: dict[str, Any] = {name: value, "since": since}
                assert store.count_conversations(**filters) == len(expected), filters
                assert listed(store, **filters) == expected, filters
                compared += 1
    return compared


def write_live(store: persistence.Store) -> None:
    """Live writes of every shape: a thread's own tool, messages with and without each facet,
    a batch, a retried message (stored once) and a second thread touched by the same batch."""
    store.start_conversation("own-tool", tool_name="my-own-tool")  # a tool no message names
    store.record_message("own-tool", "user", "plan this")
    store.start_conversation("no-messages", tool_name="idle-tool")  # a thread with a tool and nothing else
    store.record_message("live-1", "user", "hi", tool_name="chat")
    store.record_message(
        "live-1", "assistant", "hello", model="glm-4.6", provider="glm", usage={"input_tokens": 3, "output_tokens": 2}
    )
    mid = "7d0f3a4e-2b1c-4c1e-9a52-0d7c5b6a1e11"
    store.record_message("live-2", "assistant", "once", model="kimi-k2", provider="kimi", message_id=mid)
    store.record_message("live-2", "assistant", "once", model="kimi-k2", provider="kimi", message_id=mid)
    store.record_messages(
        [
            {"continuation_id": "live-2", "role": "user", "content": "more", "tool_name": "codereview"},
            {"continuation_id": "live-3", "role": "assistant", "content": "x", "model": "my-local-model"},
            {"continuation_id": "live-3", "role": "assistant", "content": "y", "provider": "ollama"},
        ]
    )


def test_facet_filters_equal_a_message_scan_after_writes_import_and_prune(tmp_path: Path) -> None:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'a.db'}")
    assert isinstance(store, SQLiteStore)
    generate(store, 60, seed=3, end=date(2026, 11, 20), weeks=6, files=False)  # the bulk path
    write_live(store)
    assert assert_facets_match_a_scan(store) > 10

    # Import into a store with threads of its own, then the same export again (all skipped).
    other = persistence.open_store(f"sqlite:///{tmp_path / 'b.db'}")
    assert isinstance(other, SQLiteStore)
    other.record_message("before", "user", "written before the import", model="deepseek-chat", provider="deepseek")
    assert other.import_records(store.export_records()).messages > 0
    again = other.import_records(store.export_records())
    assert again.messages == 0 and again.conversations_skipped == store.count_conversations()
    assert other.count_conversations(model="deepseek-chat") == 1
    assert other.count_conversations(model="glm-4.6") == store.count_conversations(model="glm-4.6")
    assert assert_facets_match_a_scan(other) > 10

    # Prune: the threads it deletes leave every filter; the ones it keeps stay.
    before = other.count_conversations()
    pruned = other.prune(older_than=datetime(2026, 11, 1, tzinfo=UTC))
    assert 0 < pruned.conversations < before
    assert_facets_match_a_scan(other)
    db = sqlite3.connect(other.path)
    orphans = db.execute(
        "select count(*) from thread_facets where conversation_id not in (select id from conversations)"
    ).fetchone()[0]
    db.close()
    assert orphans == 0
    other.prune(older_than=datetime.now(UTC) + timedelta(days=1))  # everything
    assert other.count_conversations(model="glm-4.6") == 0 and other.count_conversations(tool_name="chat") == 0
    store.close()
    other.close()


def test_a_store_older_than_the_facets_gets_them_filled_in(tmp_path: Path) -> None:
    """0005_thread_facets on a store written before it: the filters find the same threads."""
    path = tmp_path / "old.db"
    store = persistence.open_store(f"sqlite:///{path}")
    generate(store, 40, seed=5, end=date(2026, 11, 20), weeks=4, files=False)
    write_live(store)
    expected = {
        ("model", "glm-4.6"): scanned(path, "model", "glm-4.6"),
        ("tool_name", "my-own-tool"): {"own-tool"},
        ("provider", "ollama"): {"live-3"},
    }
    store.close()
    db = sqlite3.connect(path)
    db.execute("drop table thread_facets")  # as 0004 left it
    db.execute("delete from _migrations where name = '0005_thread_facets'")
    db.commit()
    db.close()

    store = persistence.open_store(f"sqlite:///{path}")
    assert isinstance(store, SQLiteStore)
    assert "0005_thread_facets" in [name for name, _ in store.migrations()]
    for (name, value), ids in expected.items():
        assert listed(store, **{name: value}) == ids
    assert_facets_match_a_scan(store)
    store.close()
