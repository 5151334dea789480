"""What is particular to the postgresql:// and supabase backends: opening and failing, errors,
keys and passwords, Storage, concurrency across processes' worth of stores, and bad input at
the Postgres boundary. The shared behaviour is the conformance suite (every ``store`` test)."""

from __future__ import annotations

import asyncio
import concurrent.futures
import hashlib
import threading
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx
import pytest

import persistence
from persistence import ConflictError, NotFoundError, PersistenceError, StoreOpenError
from persistence.backends.postgres.supabase_store import SupabaseStorage, SupabaseStore, make_client

psycopg = pytest.importorskip("psycopg")

from conftest import STANDIN_JWT_SECRET, create_database, drop_database, open_supabase  # noqa: E402
from supabase_standin import SupabaseStandin  # noqa: E402

pytestmark = pytest.mark.postgres

T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_no_password_or_key_is_ever_shown(pg_url: str, standin: Any, tmp_path: Path) -> None:
    url = pg_url.replace("postgres@", "postgres:s3cret-pw@")  # trust auth: the password is not needed
    store = persistence.open_store(url, files_dir=tmp_path)
    try:
        assert "s3cret-pw" not in store.url and "s3cret-pw" not in repr(store) and "***" in store.url
        assert "s3cret-pw" not in str(store.doctor())
    finally:
        store.close()
    key = standin.token("service_role")
    supa = open_supabase(standin)
    try:
        assert key not in supa.url and key not in repr(supa) and key not in str(supa.doctor())
        assert supa.url == "supabase:http://supabase.test"
    finally:
        supa.close()


def test_an_unreachable_database_fails_fast_and_clearly(tmp_path: Path) -> None:
    started = time.monotonic()
    with pytest.raises(StoreOpenError) as info:
        persistence.open_store("postgresql://app:s3cret-pw@127.0.0.1:9/nodb?connect_timeout=2", files_dir=tmp_path)
    assert time.monotonic() - started < 10
    assert "127.0.0.1" in str(info.value) and "s3cret-pw" not in str(info.value)


def test_supabase_refuses_a_project_without_the_schema(pg_server: str, tmp_path: Path) -> None:
    url = create_database()
    gateway = SupabaseStandin(url, STANDIN_JWT_SECRET, tmp_path)
    try:
        with pytest.raises(StoreOpenError, match="no persistence schema") as info:
            SupabaseStore(
                env={"SUPABASE_URL": "http://x.test", "SUPABASE_SERVICE_ROLE_KEY": gateway.token("service_role")},
                http_client=gateway.client(),
            )
        assert "supabase db push" in str(info.value)
        with pytest.raises(StoreOpenError, match="SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY"):
            SupabaseStore(env={"SUPABASE_URL": "http://x.test"})
    finally:
        gateway.close()
        drop_database(url)


def test_a_store_opens_in_two_round_trips_once_prices_are_synced(pg_url: str, standin: Any) -> None:
    open_supabase(standin).close()  # the first open copies the price table in
    before = standin.requests
    store = open_supabase(standin)
    assert standin.requests - before == 2  # migration check + price digest check
    before = standin.requests
    store.record_message("t-rt", "user", "one request per operation")
    assert standin.requests - before == 1
    store.close()


def test_gateway_errors_become_the_packages_errors(pg_url: str, standin: Any) -> None:
    store = open_supabase(standin)
    try:
        mid = str(uuid.uuid4())
        store.record_message("t-one", "user", "hi", message_id=mid)
        with pytest.raises(ConflictError, match="t-one"):
            store.record_message("t-two", "user", "hi", message_id=mid)
        with pytest.raises(NotFoundError):
            store.update_conversation("no-such-thread", title="x")
        with pytest.raises(StoreOpenError, match=r"PGRST202|schema cache"):
            store._call("no_such_function", {})
    finally:
        store.close()


def test_client_retries_are_off_and_failures_raise_at_once(pg_url: str, standin: Any) -> None:
    store = open_supabase(standin)
    calls = 0

    def unavailable(request: httpx.Request) -> httpx.Response:
        nonlocal calls
        calls += 1
        return httpx.Response(503, json={"code": "PGRST000", "message": "database unavailable"})

    store.client.postgrest.session._transport = httpx.MockTransport(unavailable)
    started = time.monotonic()
    with pytest.raises(PersistenceError, match="database unavailable"):
        store.get_conversation("t")
    assert calls == 1 and time.monotonic() - started < 1

    def down(request: httpx.Request) -> httpx.Response:
        raise httpx.ConnectError("connection refused", request=request)

    store.client.postgrest.session._transport = httpx.MockTransport(down)
    with pytest.raises(PersistenceError, match=r"cannot reach supabase:http://supabase\.test"):
        store.record_message("t", "user", "lost?")
    store.close()


def test_storage_dedups_by_owner_and_hash_and_signs_urls(pg_url: str, standin: Any) -> None:
    store = open_supabase(standin)
    owner = str(uuid.uuid4())
    try:
        a = store.put_file(b"%PDF-1.7 report", filename="a.pdf", user_id=owner)
        b = store.put_file(b"%PDF-1.7 report", filename="b.pdf", user_id=owner)
        c = store.put_file(b"%PDF-1.7 report", filename="c.pdf")  # another owner: its own object
        sha = hashlib.sha256(b"%PDF-1.7 report").hexdigest()
        assert a.storage_path == f"{owner}/{sha[:2]}/{sha}" and c.storage_path == f"shared/{sha[:2]}/{sha}"
        assert (a.deduplicated, b.deduplicated, c.deduplicated) == (False, True, False)
        assert a.bucket_name == "mcp-files"
        with psycopg.connect(pg_url) as conn:
            names = sorted(r[0] for r in conn.execute("select name from storage.objects where bucket_id = 'mcp-files'"))
        assert names == sorted([a.storage_path, c.storage_path])
        with store.open_file(b.upload_id) as fh:
            assert fh.read() == b"%PDF-1.7 report"
        url = store.signed_url(a.id, expires_in=60)
        assert url.startswith("http://supabase.test/storage/v1/object/sign/mcp-files/") and "token=" in url
        with standin.client() as http:
            assert http.get(url).content == b"%PDF-1.7 report"
        with pytest.raises(NotFoundError):
            store.signed_url(str(uuid.uuid4()))
    finally:
        store.close()


def test_a_custom_bucket_is_created_private_on_first_upload(pg_url: str, standin: Any) -> None:
    store = open_supabase(standin, SUPABASE_STORAGE_BUCKET_FILES="team-files")
    try:
        f = store.put_file(b"hello", filename="h.txt")
        assert f.bucket_name == "team-files"
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("select public from storage.buckets where id = 'team-files'").fetchone() == (False,)
        with store.open_file(f.id) as fh:
            assert fh.read() == b"hello"
    finally:
        store.close()
        with psycopg.connect(pg_url, autocommit=True) as conn:
            conn.execute("delete from storage.objects where bucket_id = 'team-files'")
            conn.execute("delete from storage.buckets where id = 'team-files'")


def test_postgres_with_its_file_bytes_in_supabase_storage(pg_url: str, standin: Any) -> None:
    from persistence.backends.postgres.psycopg_store import PostgresStore

    client, http = make_client("http://supabase.test", standin.token("service_role"), http_client=standin.client())
    store = PostgresStore(pg_url, files=SupabaseStorage(client, "mcp-files", http=http))
    try:
        f = store.put_file(b"col\n1\n", filename="data.csv", continuation_id="t-files")
        assert f.bucket_name == "mcp-files"
        assert client.storage.from_("mcp-files").download(f.storage_path) == b"col\n1\n"
        with store.open_file(f.id) as fh:
            assert fh.read() == b"col\n1\n"
        assert store.doctor()["files_missing_bytes_count"] == 0
    finally:
        store.close()


def test_two_stores_on_one_thread_lose_no_turn_and_store_a_retry_once(pg_url: str, tmp_path: Path) -> None:
    """Two stores (two servers' worth of connection pools) write one thread at once, and eight
    threads retry the same message at the same moment."""
    stores = [persistence.open_store(pg_url, files_dir=tmp_path) for _ in range(2)]
    try:
        stores[0].start_conversation("t-shared")

        def write(n: int) -> None:
            for i in range(20):
                stores[n % 2].record_message("t-shared", "user", f"writer {n} turn {i}")

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            list(pool.map(write, range(8)))
        conv = stores[1].get_conversation("t-shared")
        assert conv is not None and [m.seq for m in conv.messages] == list(range(1, 161))

        mid = str(uuid.uuid4())
        barrier = threading.Barrier(8)

        def retry(n: int) -> int:
            barrier.wait()
            return stores[n % 2].record_message("t-retry", "assistant", "once", message_id=mid).seq

        with concurrent.futures.ThreadPoolExecutor(8) as pool:
            seqs = list(pool.map(retry, range(8)))
        assert seqs == [1] * 8
        retried = stores[0].get_conversation("t-retry")
        assert retried is not None and retried.message_count == 1
        assert int(stores[0].usage(())["messages"].iloc[0]) == 161
    finally:
        for s in stores:
            s.close()


def test_async_store_over_postgres(pg_url: str, tmp_path: Path) -> None:
    async def main() -> list[int]:
        store = persistence.open_async_store(pg_url, files_dir=tmp_path)
        await asyncio.gather(*(store.record_message("t-async", "user", f"turn {i}") for i in range(20)))
        conv = await store.get_conversation("t-async")
        await store.close()
        return [m.seq for m in conv.messages]

    assert asyncio.run(main()) == list(range(1, 21))


def test_postgres_itself_refuses_nul_so_every_backend_replaces_it(pg_url: str, tmp_path: Path) -> None:
    """The policy: NUL (and lone surrogates) become U+FFFD in content, names and JSON on every
    backend (persistence.validation), because Postgres cannot store them at all."""
    with psycopg.connect(pg_url) as conn:
        with pytest.raises(psycopg.DataError):
            conn.execute("select %s::text", ("a\x00b",))
        conn.rollback()
        with pytest.raises(psycopg.DataError):
            conn.execute("select %s::jsonb", ('{"a": "\\u0000"}',))
    store = persistence.open_store(pg_url, files_dir=tmp_path)
    m = store.record_message("t-nul", "user", "a\x00b", metadata={"k": "v\x00"})
    got = store.get_message(m.id)
    store.close()
    assert got is not None and (got.content, got.metadata) == ("a\ufffdb", {"k": "v\ufffd"})


def test_websearch_syntax_for_sql_callers_never_errors(pg_url: str, tmp_path: Path) -> None:
    """search_messages also takes websearch_to_tsquery syntax (p_query) for SQL and RPC users;
    punctuation only is an empty result, as the package's parser gives on every backend."""
    store = persistence.open_store(pg_url, files_dir=tmp_path)
    store.record_message("t-ws", "user", "The connection pool was exhausted after the deploy")
    store.close()
    with psycopg.connect(pg_url) as conn:

        def ws(q: str) -> list[str]:
            hits = conn.execute("select public.search_messages(p_query => %s)", (q,)).fetchone()[0]
            return [h["message"]["content"] for h in hits]

        assert ws("!!!") == [] and ws("'\"") == [] and ws("") == [] and ws("(((") == []
        assert ws('"connection pool" -timeout') == ["The connection pool was exhausted after the deploy"]
        assert ws("pools OR nothing") == ["The connection pool was exhausted after the deploy"]
        assert ws("after") != []  # no stop words: every word can be searched for


def test_common_words_are_searched_in_the_newest_days(pg_url: str, tmp_path: Path) -> None:
    """More than 200 matches: search reads the newest days only (the index holds each message's
    day), so `recent` is exactly the newest matches and `rank` ranks among the newest ones."""
    from datetime import timedelta

    store = persistence.open_store(pg_url, files_dir=tmp_path)
    try:
        records = []
        for i in range(400):  # one a day-quarter over 100 days, "pool" 1-4 times
            at = T0 - timedelta(hours=6 * i)
            records.append((f"t-{i % 40}", "user" if i % 2 else "assistant", "pool " * (1 + i % 4) + f"n{i}", at))
        for cid, role, text, at in reversed(records):
            store.record_message(cid, role, text, created_at=at)
        newest = [h.message.content for h in store.search("pool", order="recent", limit=7)]
        assert newest == [records[i][2] for i in range(7)]
        users = [h.message.content for h in store.search("pool", order="recent", role="user", limit=3)]
        assert users == [records[i][2] for i in (1, 3, 5)]
        ranked = store._call(  # type: ignore[attr-defined]
            "search_messages", {"p_tsquery": "'pool'", "p_limit": 10, "p_window": 40}
        )
        numbers = [int(h["message"]["content"].rsplit("n", 1)[1]) for h in ranked]
        assert len(numbers) == 10 and max(numbers) < 160  # from the newest days, not all 100
        assert all(h["message"]["content"].count("pool") == 4 for h in ranked)  # the densest first
        old = store.search("pool", until=T0 - timedelta(days=90), order="recent", limit=2)
        assert [h.message.content for h in old] == [records[i][2] for i in (361, 362)]
    finally:
        store.close()


def test_the_unpriced_rule_and_the_filters_are_the_packages(pg_url: str, tmp_path: Path) -> None:
    """Postgres' copies of two rules (issue 13): public.message_unpriced, which the generated
    column messages.unpriced stores, answers as persistence.pricing.is_unpriced does, and
    public.conversations_where takes exactly the keys of ConversationFilters."""
    import itertools
    from decimal import Decimal

    from psycopg.types.json import Jsonb

    from persistence.prepared import FILTER_NAMES
    from persistence.pricing import UNREAD_USAGE, is_unpriced

    with psycopg.connect(pg_url, autocommit=True) as conn:
        metadatas: tuple[dict[str, object], ...] = ({}, {UNREAD_USAGE: {"odd": 1}}, {UNREAD_USAGE: None}, {"x": 1})
        for cost, tokens, metadata in itertools.product((None, Decimal(0), Decimal("1.5")), (0, 7), metadatas):
            sql = conn.execute("select public.message_unpriced(%s, %s, %s)", (cost, tokens, Jsonb(metadata)))
            row = sql.fetchone()
            assert row is not None
            expected = is_unpriced(None if cost is None else float(cost), tokens, UNREAD_USAGE in metadata)
            assert row[0] is expected, (cost, tokens, metadata)
        for name in FILTER_NAMES:  # each is known (a value of the wrong type would say so instead)
            conn.execute("select public.conversations_where(%s)", (Jsonb({name: "2026-01-01T00:00:00+00:00"}),))
        with pytest.raises(psycopg.Error, match="unknown filter modle"):
            conn.execute("select public.conversations_where(%s)", (Jsonb({"modle": "x", "model": "y"}),))
    store = persistence.open_store(pg_url, files_dir=tmp_path)
    try:
        with pytest.raises(persistence.ValidationError, match="unknown filter"):
            store._call("count_conversations", {"p_filters": Jsonb({"tags": "x"})})  # type: ignore[attr-defined]
    finally:
        store.close()
