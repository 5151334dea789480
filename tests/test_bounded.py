"""Bounded search (issue 11, finding 4): over-limit queries are refused with the limit named,
never cut, the same on every backend; every accepted query has a bounded cost.

The SQL side (caps, timeouts, hostile calls as a signed-in user) is proven by
supabase/tests/30_bounded.sql (tests/test_pgtap.py); here the package's limits, the same
refusals through the function, and the snippet of a match beyond the bounded fragment.
"""

from __future__ import annotations

import time
from pathlib import Path

import pytest

import persistence
from persistence.errors import ValidationError
from persistence.search_query import MAX_QUERY_CHARS, MAX_QUERY_WORDS, parse_query


def test_the_limits_are_what_the_readme_says() -> None:
    assert (MAX_QUERY_CHARS, MAX_QUERY_WORDS) == (1000, 64)


def test_a_query_over_the_length_limit_is_refused_naming_it() -> None:
    assert parse_query("a" * MAX_QUERY_CHARS)  # at the limit: accepted
    with pytest.raises(ValidationError) as err:
        parse_query("a" * (MAX_QUERY_CHARS + 1))
    assert err.value.field == "query"
    assert "1,000 characters" in err.value.message and "1,001" in err.value.message


def test_a_query_over_the_word_limit_is_refused_naming_it() -> None:
    words = [f"w{i}" for i in range(MAX_QUERY_WORDS)]
    assert len(parse_query(" ".join(words))) == MAX_QUERY_WORDS
    assert parse_query(" OR ".join(words))  # operators are not words
    for over in (
        " ".join([*words, "one"]),
        " OR ".join([*words, "one"]),
        '"' + " ".join([*words, "one"]) + '"',  # a phrase counts its words
        " ".join(words) + " -one",  # so does an exclusion
    ):
        with pytest.raises(ValidationError) as err:
            parse_query(over)
        assert err.value.field == "query" and f"at most {MAX_QUERY_WORDS} words" in err.value.message


def test_cjk_characters_count_as_words() -> None:
    assert parse_query("数" * MAX_QUERY_WORDS)
    with pytest.raises(ValidationError, match="Chinese, Japanese, Korean or Thai character counts as one"):
        parse_query("数" * (MAX_QUERY_WORDS + 1))


def test_punctuation_is_not_a_word() -> None:
    assert parse_query("!!! " * 200 + "pool")  # 801 characters, one word


def test_every_backend_refuses_the_same_queries(store: persistence.Store) -> None:
    store.record_message("t-bounded", "user", "connection pool sizing")
    for query in ("x" * (MAX_QUERY_CHARS + 1), " ".join(["pool"] * (MAX_QUERY_WORDS + 1)), "池" * 65):
        with pytest.raises(ValidationError) as err:
            store.search(query)
        assert err.value.field == "query"
    with pytest.raises(ValidationError, match="limit"):
        store.search("pool", limit=501)
    assert len(store.search("pool " * MAX_QUERY_WORDS, limit=500)) == 1  # at both caps: accepted
    assert len(store.search("pool", limit=500)) == 1


def test_a_match_past_the_bounded_snippet_is_still_highlighted(store: persistence.Store) -> None:
    # Postgres cuts ts_headline from a message's first 3,000 characters; the package finds a
    # later match itself, so the snippet is the same kind on every backend.
    content = "filler words here " * 400 + "the zanzibarquokka is here"
    store.record_message("t-far", "assistant", content)
    hit = store.search("zanzibarquokka")[0]
    assert ("zanzibarquokka", True) in hit.fragments or any(
        matched and "zanzibarquokka" in text for text, matched in hit.fragments
    )


def test_a_long_query_over_long_messages_is_fast(store: persistence.Store) -> None:
    words = [f"word{i}" for i in range(MAX_QUERY_WORDS)]
    body = (" ".join(words) + " ") * 40  # about 3,500 characters, every word many times
    store.record_messages(
        [{"continuation_id": "t-long", "role": "user", "content": body[: 3000 + i]} for i in range(40)]
    )
    for query in ('"' + " ".join(words) + '"', " OR ".join(words), " ".join(words)):
        start = time.perf_counter()
        hits = store.search(query, limit=500)
        elapsed = time.perf_counter() - start
        assert len(hits) == 40, query[:40]
        assert elapsed < 5, f"{query[:40]}…: {elapsed:.2f} s"  # generous: shared CI machines


@pytest.mark.postgres
def test_the_function_refuses_what_the_package_refuses(pg_url: str) -> None:
    """A signed-in user calls search_messages directly: the caps hold there too (PT400)."""
    store = persistence.open_store(pg_url)
    try:
        for args, named in (
            ({"p_tsquery": "'pool'", "p_limit": 501}, "p_limit must be from 1 to 500"),
            ({"p_tsquery": "'pool'", "p_window": 5000}, "p_window must be from 1 to 1000"),
            ({"p_query": "pool " * 201}, "the limit is 1000"),
            ({"p_tsquery": " | ".join(f"'w{i}'" for i in range(4000))}, "the limit is 4000"),
            ({"p_tsquery": " | ".join(f"'w{i}'" for i in range(101))}, "the limit is 200"),
        ):
            with pytest.raises(ValidationError, match=named):
                store._call("search_messages", args)  # type: ignore[attr-defined]
        with pytest.raises(ValidationError, match="p_limit must be from 1 to 1000"):
            store._call("get_messages", {"p_continuation_id": "x", "p_limit": 5000})  # type: ignore[attr-defined]
        with pytest.raises(ValidationError, match="p_limit must be from 1 to 1001"):
            store._call("list_conversations", {"p_limit": 1002})  # type: ignore[attr-defined]
        with pytest.raises(ValidationError, match="p_limit must be from 1 to 1001"):
            store._call("list_files", {"p_limit": 1002})  # type: ignore[attr-defined]
    finally:
        store.close()


@pytest.mark.postgres
def test_a_search_stops_at_the_functions_own_time_limit_on_a_plain_connection(pg_url: str) -> None:
    """PostgREST applies search_messages' statement_timeout; a plain postgresql:// connection
    would not (a function's SET does not time out the statement calling it), so the psycopg
    transport applies it itself: a search over its limit stops with a named error, and the
    connection it used serves the next call as before."""
    import psycopg

    store = persistence.open_store(pg_url)
    try:
        store.record_messages(
            [{"continuation_id": "t-slow", "role": "user", "content": f"pool number {i}"} for i in range(300)]
        )
        assert len(store.search("pool", limit=5)) == 5
        with psycopg.connect(pg_url, autocommit=True) as admin:
            # pg_sleep in a search term is not possible, so the limit shrinks instead.
            admin.execute("alter function public.search_messages set statement_timeout = '1ms'")
        try:
            with pytest.raises(ValidationError, match="stopped at the search time limit"):
                for _ in range(20):  # a call may finish inside 1 ms on a fast machine; most cannot
                    store.search("pool OR number OR nothing", limit=500)
        finally:
            with psycopg.connect(pg_url, autocommit=True) as admin:
                admin.execute("alter function public.search_messages set statement_timeout = '2s'")
        assert len(store.search("pool", limit=5)) == 5
        assert store.get_conversation("t-slow") is not None  # the pooled connection still works
    finally:
        store.close()


@pytest.mark.postgres
def test_every_function_a_signed_in_user_can_call_has_a_timeout(pg_url: str) -> None:
    import psycopg

    with psycopg.connect(pg_url) as conn:
        rows = conn.execute(
            """select p.proname,
                   (select c from unnest(coalesce(p.proconfig, '{}')) as c where c like 'statement_timeout=%%')
               from pg_catalog.pg_proc p join pg_catalog.pg_namespace n on n.oid = p.pronamespace
               where n.nspname = 'public' and p.prokind = 'f'
                   and has_function_privilege('authenticated', p.oid, 'execute')
                   and p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype
                   and not exists (select 1 from pg_catalog.pg_depend d
                                   where d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass
                                       and d.objid = p.oid and d.deptype = 'e')"""
        ).fetchall()
    missing = sorted(name for name, timeout in rows if timeout is None)
    # Per-row helpers, reading no table (uuid_v7: the id columns' default).
    assert missing == ["conversations_where", "file_json", "message_json", "uuid_v7"]
    timeouts = {name: timeout.split("=", 1)[1] for name, timeout in rows if timeout}
    assert timeouts["search_messages"] == "2s"
    assert set(timeouts.values()) <= {"2s", "5s"}


def test_a_sqlite_search_stops_at_the_time_limit(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """SQLite holds a search to the same time limit as Postgres' statement_timeout: over it,
    a named error; the store (and its connection) serve the next search as before."""
    from persistence.backends.sqlite import store as sqlite_store

    store = persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        store.record_messages(
            [{"continuation_id": "t-slow", "role": "user", "content": f"pool number {i}"} for i in range(3000)]
        )
        monkeypatch.setattr(sqlite_store, "SEARCH_TIME_LIMIT_S", -1.0)  # every search is over it
        with pytest.raises(ValidationError, match="stopped at the search time limit") as stopped:
            store.search("pool", limit=500)  # long enough for the handler to be called
        assert stopped.value.field == "query"
        monkeypatch.setattr(sqlite_store, "SEARCH_TIME_LIMIT_S", 2.0)
        assert len(store.search("pool", limit=5)) == 5
        assert store.get_conversation("t-slow") is not None
    finally:
        store.close()


def test_a_short_prefix_is_refused_naming_the_limit(store: persistence.Store) -> None:
    """``s*`` merged the index entries of every word starting with s (seconds at a million
    messages on both backends): a prefix has at least MIN_PREFIX_CHARS characters."""
    from persistence.search_query import MIN_PREFIX_CHARS

    store.record_message("t-prefix", "user", "connection pool sizing")
    for query in ("s*", "con*", '"connection p"*', "pool OR c*"):
        with pytest.raises(ValidationError) as err:
            store.search(query)
        assert err.value.field == "query"
        assert f"at least {MIN_PREFIX_CHARS} characters" in err.value.message
    assert len(store.search("conn*")) == 1  # at the limit: accepted
    assert len(store.search("池*")) == 0  # a CJK prefix counts by the number of prefixes instead


def test_more_prefixes_than_the_limit_are_refused_naming_it(store: persistence.Store) -> None:
    """A single Chinese character is a prefix of the character pairs it starts: 64 of them
    OR'd took minutes on SQLite. At most MAX_QUERY_PREFIXES prefixes, CJK characters included."""
    from persistence.search_query import MAX_QUERY_PREFIXES

    store.record_message("t-prefixes", "user", "数据库连接池 and the connection pool")
    at_limit = " OR ".join("数据库连"[:MAX_QUERY_PREFIXES])
    assert len(store.search(at_limit)) == 1
    for over in (at_limit + " OR 池", " OR ".join(["conn*", "pool*", "data*", "sizi*", "libr*"])):
        with pytest.raises(ValidationError) as err:
            store.search(over)
        assert err.value.field == "query" and f"at most {MAX_QUERY_PREFIXES} prefixes" in err.value.message


def test_more_exclusions_than_the_limit_are_refused_naming_it(store: persistence.Store) -> None:
    """``queue`` minus 63 common words checked every match of ``queue`` against 63 lists
    (over a second at a million messages): at most MAX_QUERY_EXCLUSIONS exclusions."""
    from persistence.search_query import MAX_QUERY_EXCLUSIONS

    store.record_message("t-excl", "user", "the queue drains slowly")
    store.record_message("t-excl", "user", "the queue drains fast")
    words = [f"word{i}" for i in range(MAX_QUERY_EXCLUSIONS - 1)]
    at_limit = "queue " + " ".join(f"-{w}" for w in [*words, "fast"])
    assert [h.message.content for h in store.search(at_limit)] == ["the queue drains slowly"]
    for over in (at_limit + " -more", 'queue -"one phrase" ' + " ".join(f"-{w}" for w in [*words, "x"])):
        with pytest.raises(ValidationError) as err:
            store.search(over)
        assert err.value.field == "query" and f"at most {MAX_QUERY_EXCLUSIONS} words or phrases" in err.value.message
    assert len(store.search("queue --flag")) == 0  # --flag is a word to find, not an exclusion


def test_a_word_typed_many_times_is_searched_once() -> None:
    """64 copies of one word were 64 lookups (and 64 bm25 passes over its matches)."""
    assert parse_query(" ".join(["unacknowledged"] * MAX_QUERY_WORDS)) == parse_query("unacknowledged")
    assert len(parse_query("pool -cache pool -cache")) == 2
    assert len(parse_query("pool cache pool OR queue")) == 3  # "pool OR queue" is another clause: kept
