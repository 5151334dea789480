"""Store.count_search: the true number of messages a search matches (issue 14), on every backend.

The Search page shows it instead of "more than 20": it must count exactly what search would
return with no limit, with the same filters, the same refusals and the same time limit, and a
signed-in user must count only their own messages.
"""

from __future__ import annotations

import uuid
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
from conftest import server_side, signed_in

import persistence
from persistence.errors import ValidationError
from persistence.search_query import SEARCH_STOPPED

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)
MODELS = ("glm-4.6", "kimi-k2-0905-preview", None)
TEXTS = (
    "The connection pool was exhausted under load; raise the pool size.",
    "Add a timeout to every connection checkout, then retry with backoff.",
    "The cache returned stale entries after invalidation.",
    "Pool of workers and a queue: the connection count stays bounded.",
    "数据库连接池在多个请求之间共享。",
    "Use `record_message(thread_id)` in the handler; see retry_policy.py.",
)
QUERIES = (
    "pool",
    '"connection pool"',
    "pool OR cache",
    "connection -timeout",
    "conn*",
    "数据库",
    "record_message",
    "nowhere-to-be-found",
)


def _seed(store: persistence.Store, n: int = 72) -> None:
    """``n`` messages over 6 threads, 3 models, 2 roles and 12 days."""
    store.record_messages(
        [
            {
                "continuation_id": f"t-count-{i % 6}",
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"{TEXTS[i % len(TEXTS)]} (note {i})",
                "model": MODELS[i % 3],
                "created_at": T0 + timedelta(days=i % 12, minutes=i),
            }
            for i in range(n)
        ]
    )


def test_count_equals_the_hits_a_search_returns(store: persistence.Store) -> None:
    """For each query, alone and with each filter and all together, the count is the number
    of hits a search with a limit above them returns."""
    _seed(store)
    filters: list[dict[str, object]] = [
        {},
        {"since": T0 + timedelta(days=3)},
        {"until": T0 + timedelta(days=5)},
        {"model": "glm-4.6"},
        {"role": "assistant"},
        {"continuation_id": "t-count-3"},
        {"since": T0 + timedelta(days=1), "until": T0 + timedelta(days=9), "model": "kimi-k2-0905-preview"},
    ]
    nonzero = 0
    for query in QUERIES:
        for kw in filters:
            hits = store.search(query, limit=500, **kw)  # type: ignore[arg-type]
            assert len(hits) < 500  # the search returned every hit there is
            assert store.count_search(query, **kw) == len(hits), (query, kw)  # type: ignore[arg-type]
            nonzero += bool(hits)
    assert nonzero > 30  # the comparisons are not all 0 == 0
    assert store.count_search("pool") == 24  # texts 0 and 3: a third of the 72
    assert store.count_search("nowhere-to-be-found") == 0


def test_count_goes_past_a_page(store: persistence.Store) -> None:
    """What the Search page needs: the total where a page of 20 (or the 500 cap) stops."""
    _seed(store, n=120)
    assert store.count_search("connection") == 60  # texts 0, 1 and 3: 3 of every 6
    assert len(store.search("connection", limit=20)) == 20


def test_nothing_to_search_for_counts_zero(store: persistence.Store) -> None:
    _seed(store, n=12)
    assert store.count_search("") == 0
    assert store.count_search("  !!! ") == 0  # only punctuation, as search returns []
    assert store.count_search("-pool") == 0  # only an exclusion: nothing to match


def test_bad_input_is_refused_naming_the_field(store: persistence.Store) -> None:
    _seed(store, n=6)
    cases: list[tuple[dict[str, object], str]] = [
        ({"query": 42}, "query"),
        ({"query": "pool " * 300}, "query"),  # over MAX_QUERY_CHARS
        ({"query": "s*"}, "query"),  # a prefix shorter than MIN_PREFIX_CHARS
        ({"query": "pool", "role": "robot"}, "role"),
        ({"query": "pool", "since": datetime(2026, 5, 1)}, "since"),  # naive: no time zone
        ({"query": "pool", "until": "yesterday"}, "until"),
        ({"query": "pool", "continuation_id": "has spaces"}, "continuation_id"),
    ]
    for kw, field in cases:
        with pytest.raises(ValidationError) as err:
            store.count_search(**kw)  # type: ignore[arg-type]
        assert err.value.field == field, kw
    with pytest.raises(TypeError):
        store.count_search("pool", limit=5)  # type: ignore[call-arg]  # a count takes no limit


def test_a_user_counts_only_their_own_messages(store: persistence.Store) -> None:
    """Another owner's matching messages: the server counts them; a signed-in user (row level
    security, through the gateway) does not."""
    _seed(store, n=12)
    own = store.count_search("pool")
    server = server_side(store)
    other = str(uuid.uuid4())
    server.start_conversation("t-someone-else", user_id=other)
    server.record_messages(
        [{"continuation_id": "t-someone-else", "role": "user", "content": f"pool {i}"} for i in range(5)]
    )
    assert server.count_search("pool") == own + 5
    assert store.count_search("pool") == (own if signed_in(store) else own + 5)
    assert store.count_search("pool") == len(store.search("pool", limit=500))


def test_a_count_over_the_time_limit_is_stopped_on_sqlite(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """The count is held to the search's time limit: over it, the search's named error, and
    the store serves the next call as before."""
    from persistence.backends.sqlite import store as sqlite_store

    store = persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        store.record_messages(
            [{"continuation_id": "t-slow", "role": "user", "content": f"pool number {i}"} for i in range(3000)]
        )
        monkeypatch.setattr(sqlite_store, "SEARCH_TIME_LIMIT_S", -1.0)  # every count is over it
        with pytest.raises(ValidationError) as stopped:
            store.count_search("pool", role="user")  # joined: long enough for the handler to be called
        assert stopped.value.field == "query" and stopped.value.message == SEARCH_STOPPED
        monkeypatch.setattr(sqlite_store, "SEARCH_TIME_LIMIT_S", 2.0)
        assert store.count_search("pool") == 3000
    finally:
        store.close()


@pytest.mark.postgres
def test_a_count_over_the_time_limit_is_stopped_on_postgres(pg_url: str) -> None:
    """count_search_messages' own statement_timeout applies on a plain connection too (as
    PostgREST applies it): over it, the search's named error."""
    import psycopg

    store = persistence.open_store(pg_url)
    try:
        store.record_messages(
            [{"continuation_id": "t-slow", "role": "user", "content": f"pool number {i}"} for i in range(3000)]
        )
        with psycopg.connect(pg_url, autocommit=True) as admin:
            admin.execute("alter function public.count_search_messages set statement_timeout = '1ms'")
        try:
            with pytest.raises(ValidationError, match="stopped at the search time limit") as stopped:
                for _ in range(20):  # a call may finish inside 1 ms on a fast machine; most cannot
                    store.count_search("pool OR number")
            assert stopped.value.field == "query"
        finally:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("alter function public.count_search_messages set statement_timeout = '2s'")
        assert store.count_search("pool") == 3000
    finally:
        store.close()


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_a_count_stops_past_the_cap(backend: str, tmp_path: Path, request: pytest.FixtureRequest) -> None:
    """Counting every match of a common word read every matching row (1.5-2 s on Postgres at a
    million messages): past SEARCH_COUNT_CAP the count answers SEARCH_COUNT_CAP + 1, "more than
    10,000", on both backends (the SQL function stops at the same number). The Supabase path
    calls the same SQL function."""
    from persistence.search_query import SEARCH_COUNT_CAP

    if backend == "sqlite":
        s = persistence.open_store(f"sqlite:///{tmp_path / 'cap.db'}")
    else:
        s = persistence.open_store(request.getfixturevalue("pg_url"), files_dir=tmp_path / "pg-files")
    with s:
        n = SEARCH_COUNT_CAP + 25
        for start in range(0, n, 2_500):
            s.record_messages(
                [
                    {"continuation_id": f"t-cap-{i % 50}", "role": "user", "content": f"pool item {i}"}
                    for i in range(start, min(n, start + 2_500))
                ]
            )
        assert s.count_search("pool") == SEARCH_COUNT_CAP + 1
        assert s.count_search("pool", continuation_id="t-cap-7") == len(range(7, n, 50))  # under the cap: exact
