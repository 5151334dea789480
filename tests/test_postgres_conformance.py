"""The three backends compared: the same history written to SQLite, Postgres and Supabase (the
real client through the gateway stand-in) reads back the same — exports record for record,
listings in the same order, the same usage and storage figures, the same search hits.

The other conformance scenarios are the ``store`` tests of every module (conftest.BACKENDS);
the few below are the ones the Postgres work adds.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import STANDIN_JWT_SECRET, assert_server_only, create_database, drop_database, signed_in

import persistence
from persistence.demo import generate

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)
QUERIES = [
    "pool",
    "connection",
    "connections",
    "the",
    "after",
    "running",
    '"connection pool"',
    '"versioned keys"',
    "cache OR queue",
    "pool -timeout",
    "migrat*",
    "invalid*",
    "缓存",
    "数据库",
    "连接池",
    "库",
    "令牌计数",
    "索引 OR 缓存",
    "GLM",
    "retry_policy.py",
    "!!!",
    '"unbalanced',
]


@pytest.fixture(scope="module")
def three(pg_server: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, persistence.Store]]:
    """One demo history (files included) written to each backend by the same code."""
    import psycopg
    from supabase_standin import SupabaseStandin

    from persistence.backends.postgres.schema import migrate
    from persistence.backends.postgres.supabase_store import SupabaseStore

    tmp = tmp_path_factory.mktemp("three")
    pg_db, supa_db = create_database(), create_database()
    with psycopg.connect(supa_db, autocommit=True) as conn:
        migrate(conn)
    gateway = SupabaseStandin(supa_db, STANDIN_JWT_SECRET, tmp / "storage")
    stores = {
        "sqlite": persistence.open_store(f"sqlite:///{tmp / 'h.db'}"),
        "postgres": persistence.open_store(pg_db, files_dir=tmp / "pg-files"),
        "supabase": SupabaseStore(
            env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_SERVICE_ROLE_KEY": gateway.token("service_role")},
            http_client=gateway.client(),
        ),
    }
    try:
        for store in stores.values():
            generate(store, 60, seed=23, end=date(2026, 3, 1), weeks=3)
        yield stores
    finally:
        for store in stores.values():
            store.close()
        gateway.close()
        drop_database(pg_db)
        drop_database(supa_db)


def _comparable(record: dict[str, Any]) -> dict[str, Any]:
    for f in record["files"]:
        f.pop("upload_id")  # random per upload
        f.pop("bucket_name")  # "local" on SQLite and Postgres, the bucket on Supabase
    return record


def _each(three: dict[str, persistence.Store], fn: Any) -> list[Any]:
    return [fn(store) for store in three.values()]


@pytest.mark.postgres
def test_exports_are_identical(three: dict[str, persistence.Store]) -> None:
    sqlite, pg, supa = _each(three, lambda s: [_comparable(r) for r in s.export_records()])
    assert len(sqlite) == 60
    assert pg == sqlite
    assert supa == sqlite


@pytest.mark.postgres
def test_listings_and_threads_read_the_same(three: dict[str, persistence.Store]) -> None:
    for order in ("recent", "created", "cost"):
        ids = _each(three, lambda s, o=order: [c.continuation_id for c in s.list_conversations(order=o, limit=1000)])
        assert ids[0] == ids[1] == ids[2], order
    for kw in ({"model": "glm-4.6"}, {"tool_name": "debug"}, {"tag": "infra"}, {"min_cost": 0.01}, {"text": "pool"}):
        ids = _each(three, lambda s, k=kw: [c.continuation_id for c in s.list_conversations(limit=1000, **k)])
        assert ids[0] == ids[1] == ids[2] and ids[0], kw
        counts = _each(three, lambda s, k=kw: s.count_conversations(**k))
        assert counts[0] == counts[1] == counts[2] == len(ids[0])
    some = [c.continuation_id for c in three["sqlite"].list_conversations(limit=12)]
    for cid in some:
        convs = _each(three, lambda s, c=cid: s.get_conversation(c, last=3))
        dicts = [c.to_dict() for c in convs]
        for d in dicts:
            d["cost_usd"] = round(d["cost_usd"], 9)  # SQLite sums floats, Postgres exact numerics
            for f in d["files"]:
                f.pop("upload_id")
                f.pop("bucket_name")
        assert dicts[0] == dicts[1] == dicts[2], cid
    assert _each(three, lambda s: s.facets())[1:] == [three["sqlite"].facets()] * 2


@pytest.mark.postgres
def test_usage_and_storage_usage_are_the_same(three: dict[str, persistence.Store]) -> None:
    for group_by in ((), ("day", "model"), ("week", "provider"), ("month", "tool_name"), ("model",)):
        frames = _each(three, lambda s, g=group_by: s.usage(g))
        for other in frames[1:]:
            pd.testing.assert_frame_equal(frames[0], other, check_exact=False, rtol=1e-9)
    for group_by in ((), ("day", "mime_type"), ("week",)):
        frames = _each(three, lambda s, g=group_by: s.storage_usage(g))
        for other in frames[1:]:
            pd.testing.assert_frame_equal(frames[0], other)


@pytest.mark.postgres
def test_search_finds_the_same_messages(three: dict[str, persistence.Store]) -> None:
    for q in QUERIES:
        recent = _each(three, lambda s, q=q: [h.message.id for h in s.search(q, order="recent", limit=50)])
        assert recent[0] == recent[1] == recent[2], q
        ranked = _each(three, lambda s, q=q: {h.message.id for h in s.search(q, limit=500)})
        assert ranked[0] == ranked[1] == ranked[2], q
    for store in three.values():
        hit = store.search('"connection pool"')[0]
        assert any(matched and "pool" in text.lower() for text, matched in hit.fragments)
        zh = store.search("缓存")[0]
        assert ("缓存", True) in zh.fragments


def test_a_message_larger_than_a_tsvector_is_stored_and_searchable(store: persistence.Store) -> None:
    """3 MiB of distinct words: more than a tsvector holds (1 MB), so Postgres indexes the first
    100,000 characters; the message is stored whole on every backend."""
    words = " ".join(f"w{i:x}" for i in range(450_000))
    content = ("needle " + words)[: 3 * 1024 * 1024]
    m = store.record_message("t-big", "user", content)
    got = store.get_message(m.id)
    assert got is not None and len(got.content) == len(content)
    assert [h.message.id for h in store.search("needle")] == [m.id]


def test_search_stems_chinese_phrases_and_exclusions(store: persistence.Store) -> None:
    for text in (
        "We are migrating the orders table online",
        "迁移订单表时不要锁表",
        "The migration locked the orders table",
    ):
        store.record_message("t-s", "user", text, created_at=T0)

    def found(q: str) -> set[str]:
        return {h.message.content[:8] for h in store.search(q)}

    assert found("migrate") == {"We are m", "The migr"}
    assert found("订单表") == {"迁移订单表时不要"}
    assert found('"orders table"') == {"We are m", "The migr"}
    assert found('"table orders"') == set()
    assert found("locks -online") == {"The migr"}
    assert found("after OR the") == {"We are m", "The migr"}  # no stop words on any backend


def test_export_then_import_into_another_backend_round_trips(store: persistence.Store, tmp_path: Path) -> None:
    """Every backend imports what SQLite exported and exports it back unchanged; twice adds nothing."""
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    source = persistence.open_store(f"sqlite:///{tmp_path / 'src.db'}")
    generate(source, 25, seed=4, end=date(2026, 2, 1), weeks=2, files=False)
    records = list(source.export_records())
    first = store.import_records(records)
    assert (first.conversations, first.messages) == (25, sum(len(r["messages"]) for r in records))
    again = store.import_records(records)
    assert (again.conversations, again.messages, again.conversations_skipped) == (0, 0, 25)
    assert [_comparable(r) for r in store.export_records()] == [_comparable(r) for r in records]
    pd.testing.assert_frame_equal(store.usage(("day", "model")), source.usage(("day", "model")), rtol=1e-9)
    source.close()
