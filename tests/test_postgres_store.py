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
from datetime import UTC, datetime, timedelta
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


# ---------------------------------------------------------------------------------------
# Set-based record_messages and the thread facets (issue 16,
# 20261130130000_persistence_set_based_writes.sql)

USER_A = "aaaaaaaa-0000-4000-8000-00000000000a"


def _item(cid: str, n: int, **fields: Any) -> dict[str, Any]:
    """record_message's arguments without the p_ prefix, as the package sends them in a batch."""
    item: dict[str, Any] = {
        "continuation_id": cid,
        "id": str(uuid.UUID(int=0x5E7 << 64 | n)),
        "role": "assistant" if n % 2 else "user",
        "content": f"turn {n} about the connection pool and retries",
        "created_at": (T0 + timedelta(minutes=n)).isoformat(),
        "model": None,
        "provider": None,
        "tool_name": None,
        "input_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
        "output_tokens": 0,
        "reasoning_tokens": 0,
        "cost": None,
        "price_id": None,
        "unpriced": False,
        "duration_ms": None,
        "files": [],
        "images": [],
        "metadata": {},
        "search_extra": None,
        "title": None,
    }
    item.update(fields)
    return item


def _mixed_batch() -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(turns stored before, the batch): threads old and new, turns out of time order, a title
    arriving late, the same id twice, a retry of a stored turn, priced, unpriced and unread usage."""
    glm = {
        "model": "glm-4.6",
        "provider": "glm",
        "input_tokens": 1200,
        "output_tokens": 300,
        "cost": 0.0014,
        "price_id": "t-glm",
    }
    kimi = {
        "model": "kimi-k2",
        "provider": "kimi",
        "input_tokens": 800,
        "cached_input_tokens": 400,
        "output_tokens": 90,
        "reasoning_tokens": 20,
        "cost": 0.0009,
        "price_id": "t-kimi",
    }
    before = [
        _item("b-old", 1, tool_name="chat"),
        _item("b-old", 2, tool_name="chat", **glm),
        _item("b-old", 30, created_at=(T0 + timedelta(hours=5)).isoformat(), **kimi),
    ]
    batch = [
        _item("b-old", 3, tool_name="codereview", duration_ms=40, **glm),  # older than the thread's last turn
        _item("b-new", 4, tool_name="planner", title="First title"),
        _item("b-new", 5, **kimi, duration_ms=12),
        _item("b-new", 6, title="Second title", created_at=(T0 - timedelta(days=1)).isoformat(), **glm),
        _item("b-new", 5, **kimi, duration_ms=12),  # the same id again: stored once
        _item("b-old", 2, tool_name="chat", **glm),  # a retry of a stored turn
        _item("b-third", 7, model="llama-local", provider="ollama", input_tokens=50, output_tokens=5),  # unpriced
        _item("b-third", 8, model="glm-4.6", provider="glm", metadata={"usage_raw": {"odd": 1}}),
        _item("b-old", 9, created_at=(T0 + timedelta(hours=6)).isoformat(), files=["f1"]),
        _item("b-third", 10, tool_name="chat", created_at=(T0 + timedelta(days=2)).isoformat(), **glm),
    ]
    return before, batch


def _state(conn: Any) -> dict[str, Any]:
    """Everything a write leaves, with the ids the database draws (new threads') left out."""
    threads = conn.execute(
        "select continuation_id, message_count, total_tokens, input_tokens, cached_input_tokens, cache_write_tokens,"
        " output_tokens, reasoning_tokens, total_cost, unpriced_messages, model_used, title, tool_name, created_at,"
        " updated_at, user_id from public.conversations order by continuation_id"
    ).fetchall()
    messages = conn.execute(
        "select c.continuation_id, m.id, m.seq, m.role, m.content, m.model_used, m.provider, m.tool_name, m.tokens,"
        " m.input_tokens, m.cost, m.price_id, m.unpriced, m.duration_ms, m.files, m.metadata, m.user_id,"
        " m.created_at, m.search_tsv::text from public.messages m"
        " join public.conversations c on c.id = m.conversation_id order by 1, m.seq"
    ).fetchall()
    rollup = conn.execute("select * from public.usage_daily order by day, model, provider, tool_name").fetchall()
    facets = conn.execute(
        "select c.continuation_id, f.kind, f.value, f.user_id from public.conversation_facets f"
        " join public.conversations c on c.id = f.conversation_id order by 1, 2, 3"
    ).fetchall()
    return {"threads": threads, "messages": messages, "rollup": rollup, "facets": facets}


def _as(conn: Any, actor: str) -> None:
    """Act within the transaction as PostgREST would: the server (service_role) or user A."""
    if actor == "user":
        conn.execute("select set_config('request.jwt.claims', %s, true)", (f'{{"sub": "{USER_A}"}}',))
        conn.execute("set local role authenticated")
    else:
        conn.execute("set local role service_role")


# record_message's parameter types where a Python value would not convert by itself.
_CASTS = {"id": "uuid", "created_at": "timestamptz", "cost": "numeric", "files": "text[]", "images": "text[]"}


def _record_message(conn: Any, item: dict[str, Any]) -> Any:
    """One record_message call with the arguments of a record_messages item; its answer."""
    from psycopg.types.json import Jsonb

    args = ", ".join(f"p_{k} => %({k})s" + (f"::{_CASTS[k]}" if k in _CASTS else "") for k in item)
    values = {k: Jsonb(v) if k == "metadata" else v for k, v in item.items()}
    return conn.execute(f"select public.record_message({args})", values).fetchone()[0]


def _without_thread_ids(docs: list[dict[str, Any]]) -> list[dict[str, Any]]:
    return [{k: v for k, v in d.items() if k != "conversation_id"} for d in docs]


@pytest.mark.parametrize("actor", ["server", "user"])
def test_a_batch_leaves_what_the_same_turns_one_at_a_time_leave(pg_url: str, actor: str) -> None:
    """record_messages (one insert, one update per thread, one upsert per rollup row) against
    record_message called turn by turn: the same messages, seq, totals, newest model, title,
    rollup, facets and answers; for a signed-in user, the same prices from model_prices."""
    from psycopg.types.json import Jsonb

    before, batch = _mixed_batch()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute(
            "insert into public.model_prices (id, provider, model, match, effective_from, input, output, origin)"
            " values ('t-glm', 'glm', 'glm-4.6', 'glm-4\\.6', '2026-01-01', 0.6, 2.2, 'user'),"
            " ('t-kimi', 'kimi', 'kimi-k2', 'kimi-k2', '2026-01-01', 0.6, 2.5, 'user')"
        )
        with conn.transaction():
            _as(conn, actor)
            conn.execute("select public.record_messages(%s)", (Jsonb(before),))
    results: dict[str, tuple[Any, dict[str, Any]]] = {}
    with psycopg.connect(pg_url) as conn:
        for mode in ("one at a time", "batch"):
            _as(conn, actor)
            if mode == "batch":
                docs = conn.execute("select public.record_messages(%s)", (Jsonb(batch),)).fetchone()[0]
            else:
                docs = [_record_message(conn, item) for item in batch]
            conn.execute("reset role")
            results[mode] = (_without_thread_ids(docs), _state(conn))
            conn.rollback()
    one, many = results["one at a time"], results["batch"]
    assert many[1] == one[1]
    assert many[0] == one[0]
    threads = {t[0]: t for t in many[1]["threads"]}
    assert threads["b-old"][1] == 5 and threads["b-new"][1] == 3 and threads["b-third"][1] == 3
    assert threads["b-new"][11] == "First title"
    # The newest turn's model: older turns (glm-4.6 in both) arriving later do not take over.
    assert threads["b-old"][10] == "kimi-k2" and threads["b-new"][10] == "kimi-k2"
    assert [d["seq"] for d in many[0]] == [4, 1, 2, 3, 2, 2, 1, 2, 5, 3]
    assert any(row[12] for row in many[1]["messages"])  # an unpriced turn is in the comparison
    if actor == "user":
        assert {row[16] for row in many[1]["messages"]} == {uuid.UUID(USER_A)}
        priced = [row for row in many[1]["messages"] if row[11] == "t-glm"]
        assert priced and all(row[10] > 0 for row in priced)  # priced by the table, not by the caller


def test_a_batch_writes_each_thread_and_rollup_row_once_and_a_retry_writes_nothing(pg_url: str) -> None:
    """One update per touched thread and one upsert per touched rollup row, not one per message
    (the per-message loop updated the thread's row 40 times here); the same batch again stores
    nothing and answers the same."""
    from psycopg.types.json import Jsonb

    batch = [
        _item(f"once-{n % 3}", n, model="glm-4.6", provider="glm", input_tokens=10, output_tokens=2, cost=0.001)
        for n in range(40)
    ]
    with psycopg.connect(pg_url) as conn:
        first = conn.execute("select public.record_messages(%s)", (Jsonb(batch),)).fetchone()[0]
        threads_updated, rollup_written = conn.execute(
            "select sum(n_tup_upd) filter (where relname = 'conversations'),"
            " sum(n_tup_upd + n_tup_ins) filter (where relname = 'usage_daily')"
            " from pg_stat_xact_user_tables where schemaname = 'public'"
        ).fetchone()
        assert threads_updated == 3
        assert rollup_written == 1  # 40 turns, one day, one model, provider and tool
        conn.commit()
        state = _state(conn)
        again = conn.execute("select public.record_messages(%s)", (Jsonb(batch),)).fetchone()[0]
        conn.commit()
        assert again == first and _state(conn) == state
        assert [t[1] for t in state["threads"]] == [14, 13, 13]
        assert state["rollup"][0][5] == 40


def test_a_batch_is_refused_whole_with_the_item_named(pg_url: str) -> None:
    from psycopg.types.json import Jsonb

    good = _item("refused", 1)
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("select public.record_messages(%s)", (Jsonb([_item("other", 2)]),))
        cases = [
            ([good, _item("refused", 3, role="robot")], "PT400", r"p_items\[1\]: p_role must be"),
            ([good, _item("refused", 4, input_tokens=-1)], "PT400", r"p_items\[1\]: token counts"),
            (
                [good, _item("refused", 2)],
                "PT409",
                r"p_items\[1\]: message_id .* already belongs to conversation other",
            ),
            (
                [good, _item("elsewhere", 1)],
                "PT409",
                r"p_items\[1\]: message_id .* conversation refused, not elsewhere",
            ),
            ([good, _item("refused", 5, cost=10001)], "PT400", r"costs \$0 to \$10,000"),
            ([good, "not an object"], "PT400", "array of objects"),
        ]
        for items, code, message in cases:
            with pytest.raises(psycopg.Error, match=message) as info:
                conn.execute("select public.record_messages(%s)", (Jsonb(items),))
            assert info.value.sqlstate == code
        assert conn.execute("select count(*) from public.messages").fetchone()[0] == 1  # nothing of the batches
        assert (
            conn.execute("select count(*) from public.conversations where continuation_id = 'refused'").fetchone()[0]
            == 0
        )


# The thread filters as they were before the facets: a probe of each thread's messages.
FACET_SCAN = {
    "model": "exists (select 1 from public.messages m where m.conversation_id = c.id and m.model_used = %(v)s)",
    "provider": "exists (select 1 from public.messages m where m.conversation_id = c.id and m.provider = %(v)s)",
    "tool_name": "(c.tool_name = %(v)s or exists (select 1 from public.messages m"
    " where m.conversation_id = c.id and m.tool_name = %(v)s))",
}


def _facets_match_a_scan(conn: Any) -> int:
    """count_conversations and list_conversations with each model, provider and tool filter
    (and one value nobody used) against a scan of the messages; how many were compared."""
    from psycopg.types.json import Jsonb

    compared = 0
    for name, column in (("model", "model_used"), ("provider", "provider"), ("tool_name", "tool_name")):
        values = {
            r[0] for r in conn.execute(f"select distinct {column} from public.messages where {column} is not null")
        }
        values |= {r[0] for r in conn.execute("select tool_name from public.conversations where tool_name is not null")}
        for value in [*sorted(values), "nobody-used-this"]:
            expected = {
                r[0]
                for r in conn.execute(
                    f"select continuation_id from public.conversations c where {FACET_SCAN[name]}", {"v": value}
                )
            }
            filters = Jsonb({name: value})
            counted = conn.execute("select public.count_conversations(%s)", (filters,)).fetchone()[0]
            listed = conn.execute("select public.list_conversations(%s, p_limit => 1001)", (filters,)).fetchone()[0]
            assert counted == len(expected), (name, value)
            assert {c["continuation_id"] for c in listed} == expected, (name, value)
            compared += 1
    return compared


def test_facet_filters_equal_a_message_scan_after_writes_import_and_prune(pg_url: str, tmp_path: Path) -> None:
    from datetime import date

    from persistence.demo import generate

    store = persistence.open_store(pg_url, files_dir=tmp_path / "a")
    other_db = create_database()
    other = persistence.open_store(other_db, files_dir=tmp_path / "b")
    try:
        generate(store, 40, seed=3, end=date(2026, 11, 20), weeks=6, files=False)  # import_batch
        store.start_conversation("own-tool", tool_name="own-planner")  # a tool no message names
        store.record_message("own-tool", "user", "plan this")
        store.record_message("live-1", "user", "hi", tool_name="chat")
        store.record_message("live-1", "assistant", "hello", model="glm-4.6", provider="glm")
        store.record_messages(
            [
                {"continuation_id": "live-2", "role": "user", "content": "more", "tool_name": "codereview"},
                {"continuation_id": "live-3", "role": "assistant", "content": "x", "model": "my-local-model"},
                {"continuation_id": "live-3", "role": "assistant", "content": "y", "provider": "ollama"},
            ]
        )
        with psycopg.connect(pg_url, autocommit=True) as conn:
            assert _facets_match_a_scan(conn) > 10
            assert (
                conn.execute('select public.count_conversations(\'{"tool_name": "own-planner"}\')').fetchone()[0] == 1
            )

        # Import into a store that holds other threads, and one of the exported ones, empty.
        other.record_message(
            "pre-existing", "user", "written before the import", model="deepseek-chat", provider="deepseek"
        )
        other.start_conversation("own-tool")
        result = other.import_records(store.export_records())
        assert result.messages > 0 and result.conversations_skipped == 1
        assert other.count_conversations(model="deepseek-chat") == 1
        assert other.count_conversations(model="glm-4.6") == store.count_conversations(model="glm-4.6") > 0
        with psycopg.connect(other_db, autocommit=True) as conn:
            assert _facets_match_a_scan(conn) > 10

        pruned = other.prune(older_than=datetime(2026, 11, 1, tzinfo=UTC))
        assert pruned.conversations > 0
        with psycopg.connect(other_db, autocommit=True) as conn:
            _facets_match_a_scan(conn)
            assert (
                conn.execute(
                    "select count(*) from public.conversation_facets f"
                    " where not exists (select 1 from public.conversations c where c.id = f.conversation_id)"
                ).fetchone()[0]
                == 0
            )
        other.prune(older_than=datetime.now(UTC) + timedelta(days=1))  # everything
        assert other.count_conversations(model="glm-4.6") == 0 and other.count_conversations(tool_name="chat") == 0
    finally:
        store.close()
        other.close()
        drop_database(other_db)


def test_a_database_older_than_the_facets_gets_them_filled_in(pg_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    """20261130130000_persistence_set_based_writes on a database written before it: the
    filters find the threads the message scan finds, the threads' own tools included."""

    from persistence.backends.postgres import schema

    everything = schema.migration_files()
    ours = next(m for m in everything if m.name == "persistence_set_based_writes")
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            monkeypatch.setattr(
                schema, "migration_files", lambda: tuple(m for m in everything if m.version < ours.version)
            )
            schema.migrate(conn)
            assert conn.execute("select to_regclass('public.conversation_facets')").fetchone()[0] is None
            conn.execute("select public.start_conversation('own-tool', p_tool_name => 'own-planner')")
            _, batch = _mixed_batch()
            for n, item in enumerate(batch):  # turn by turn, as the release before wrote them
                item = dict(item, id=str(uuid.UUID(int=n + 1)), continuation_id=f"{item['continuation_id']}-{n % 4}")
                _record_message(conn, item)
            monkeypatch.undo()
            applied = schema.migrate(conn)
            assert ours.label in [m.label for m in applied]
            assert _facets_match_a_scan(conn) >= 8
            assert (
                conn.execute('select public.count_conversations(\'{"tool_name": "own-planner"}\')').fetchone()[0] == 1
            )
            assert conn.execute("select public.refresh_conversation_facets()").fetchone()[0] == {
                "removed": 0,
                "added": 0,
            }
    finally:
        drop_database(url)


def test_concurrent_batches_on_shared_threads_lose_nothing(pg_url: str, tmp_path: Path) -> None:
    """Six writers send batches into the same three threads (two of them new) at the same moment:
    every turn is stored once, seq has no gap or repeat, the totals and the rollup count them all."""
    stores = [persistence.open_store(pg_url, files_dir=tmp_path) for _ in range(2)]
    try:
        stores[0].record_message("race-0", "user", "already here")
        barrier = threading.Barrier(6)

        def write(n: int) -> None:
            barrier.wait()
            for r in range(3):
                stores[n % 2].record_messages(
                    [
                        {
                            "continuation_id": f"race-{k % 3}",
                            "role": "user",
                            "content": f"w{n} r{r} k{k}",
                            "model": "glm-4.6",
                            "provider": "glm",
                            "usage": {"input_tokens": 10, "output_tokens": 1},
                        }
                        for k in range(8)
                    ]
                )

        with concurrent.futures.ThreadPoolExecutor(6) as pool:
            list(pool.map(write, range(6)))
        counts = []
        for k in range(3):
            conv = stores[1].get_conversation(f"race-{k}")
            assert conv is not None
            assert [m.seq for m in conv.messages] == list(range(1, len(conv.messages) + 1))
            assert conv.message_count == len(conv.messages)
            counts.append(len(conv.messages))
        assert counts == [1 + 6 * 3 * 3, 6 * 3 * 3, 6 * 3 * 2]
        assert int(stores[0].usage(())["messages"].iloc[0]) == 1 + 6 * 3 * 8
    finally:
        for s in stores:
            s.close()
