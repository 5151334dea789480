"""Search parity: one multilingual corpus, one query list, the same hits on every backend.

The `store` fixture runs this on SQLite, Postgres and the Supabase path. Every query must
give exactly its expected hit set on each, so the three agree with each other too (the order
may differ where ranks tie, so sets are compared). The corpus covers what issue 12 found
missing: emoji and ZWJ sequences, scripts with combining marks (Hindi, Arabic with vowel
marks, Hebrew with points), text stored decomposed (NFD), code identifiers and URLs.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import persistence

T0 = datetime(2026, 5, 1, 9, 0, tzinfo=UTC)

# key -> message text (each its own thread, p-<key>)
CORPUS: dict[str, str] = {
    "en-run": "The runners were running late because the connection pool was exhausted.",
    "en-connect": "Connect to the database and reconnect on ECONNRESET errors.",
    "en-quiet": "Nothing about pools here, just a quiet afternoon in the garden.",
    "zh": "为什么缓存层在失效之后仍然返回旧数据？数据库索引需要优化。",
    "ja-kana": "データベースの接続プールが枯渇しています。",
    "ja-kanji": "東京の天気は晴れです。",
    "ko": "데이터베이스 연결 풀이 고갈되었습니다.",
    "th": "สวัสดีครับ ระบบฐานข้อมูลทำงานช้า",
    "hi": "नमस्ते दुनिया, सर्वर फिर से चालू है।",
    "ar": "مَرْحَبًا بِالْعَالَمِ، الخادم يعمل الآن",
    "he": "שָׁלוֹם עוֹלָם, השרת פועל",
    "ru": "Привет, мир! Сервер перезапущен.",
    "emoji": "Deployed 🚀 to prod, the team 👩\u200d💻 celebrated ❤️",
    "emoji-2": "Another launch 🚀🚀 done, thumbs 👍🏽",
    "code-call": "Call get_conversation(thread_id) then snake_case_helper in file.py",
    "code-class": "The CamelCase class ConnectionPool reads --flag and --verbose",
    "code-url": "Error: ECONNRESET while fetching https://example.com/api/v1?page=2",
    "nfd": "Le cafe\u0301 est ouvert",
    "nfc": "Un café crème, s'il vous plaît",
    "fullwidth": "ＡＢＣ Corporation reported ①",
    "plain-get": "get the conversation going",
}

# query -> the keys it must find, on every backend
QUERIES: dict[str, set[str]] = {}


def _record(store: persistence.Store) -> None:
    for i, (key, text) in enumerate(CORPUS.items()):
        store.record_message(f"p-{key}", "user", text, created_at=T0 + timedelta(minutes=i))


def _hits(store: persistence.Store, query: str) -> set[str]:
    return {h.message.continuation_id.removeprefix("p-") for h in store.search(query, limit=100)}


QUERIES.update(
    {
        # English, by stem
        "running": {"en-run"},
        "run": {"en-run"},
        "connection": {"en-run", "en-connect", "code-class"},  # connect, ConnectionPool's part
        "conn*": {"en-run", "en-connect", "code-class"},
        # identifiers: whole, by part, by their parts as a phrase
        "ECONNRESET": {"en-connect", "code-url"},
        "econnreset": {"en-connect", "code-url"},
        "get_conversation": {"code-call"},
        "conversation": {"code-call", "plain-get"},
        "snake_case": {"code-call"},
        "file.py": {"code-call"},
        "CamelCase": {"code-class"},
        "camelcase": {"code-class"},
        "ConnectionPool": {"code-class", "en-run"},  # its parts, "connection pool", as a phrase
        "--flag": {"code-class"},
        "https://example.com/api/v1?page=2": {"code-url"},
        "example.com": {"code-url"},
        # emoji and symbols, ZWJ sequences whole, variation selectors ignored
        "🚀": {"emoji", "emoji-2"},
        "👩\u200d💻": {"emoji"},
        "❤": {"emoji"},
        "❤\ufe0f": {"emoji"},
        "👍🏽": {"emoji-2"},
        # combining marks: Hindi, Arabic with vowel marks, Hebrew with points
        "नमस्ते": {"hi"},
        "दुनिया": {"hi"},
        "مَرْحَبًا": {"ar"},
        "الخادم": {"ar"},
        "שָׁלוֹם": {"he"},
        "השרת": {"he"},
        # Cyrillic, case-folded
        "Привет": {"ru"},
        "привет": {"ru"},
        "СЕРВЕР": {"ru"},
        # normalisation: NFC query finds NFD text and back; accents on Latin letters ignored;
        # NFKC folds full-width letters and circled digits
        "café": {"nfc", "nfd"},
        "cafe\u0301": {"nfc", "nfd"},
        "cafe": {"nfc", "nfd"},
        "CAFÉ": {"nfc", "nfd"},
        "abc": {"fullwidth"},
        "1": {"fullwidth"},
        # CJK and Thai by substring: 1, 2 and n characters
        "数据库": {"zh"},
        "数": {"zh"},
        "缓存层": {"zh"},
        "データベース": {"ja-kana"},
        "接続": {"ja-kana"},
        "東京": {"ja-kanji"},
        "晴れ": {"ja-kanji"},
        "데이터베이스": {"ko"},
        "연결": {"ko"},
        "สวัสดี": {"th"},
        "ฐานข้อมูล": {"th"},
        "ส": {"th"},
        # phrases, OR, exclusions
        '"connection pool"': {"en-run", "code-class"},
        '"pool connection"': set(),
        '"get the conversation"': {"plain-get"},
        '"snake_case_helper in file.py"': {"code-call"},
        '"cafe est"': {"nfd"},
        "pool -connection": {"en-quiet"},
        "ECONNRESET OR 🚀": {"en-connect", "code-url", "emoji", "emoji-2"},
        "-pool": set(),
    }
)


def test_every_query_finds_its_expected_hits_on_every_backend(store: persistence.Store) -> None:
    _record(store)
    wrong = {}
    for query, expected in QUERIES.items():
        got = _hits(store, query)
        if got != expected:
            wrong[query] = (sorted(got), sorted(expected))
    assert not wrong, f"{store.backend}: query -> (got, expected): {wrong}"


def test_rows_written_before_the_index_change_are_reindexed(tmp_path: Any, request: pytest.FixtureRequest) -> None:
    """A store written by the previous release (search_extra only for CJK text) is
    reindexed when opened: SQLite by its migration, Postgres by store_meta's index version."""
    import sqlite3

    path = tmp_path / "old.db"
    store = persistence.open_store(f"sqlite:///{path}")
    _record(store)
    store.close()
    db = sqlite3.connect(path)
    with db:  # what the previous release left: no index text but for CJK, migration unapplied
        db.execute("update messages set search_extra = null where content not glob '*[数東データ데ส]*'")
        db.execute("delete from _migrations where name = '0002_search_index_v2'")
    db.close()
    store = persistence.open_store(f"sqlite:///{path}")
    try:
        assert _hits(store, "🚀") == {"emoji", "emoji-2"} and _hits(store, "café") == {"nfc", "nfd"}
    finally:
        store.close()


@pytest.mark.postgres
def test_postgres_rows_written_before_the_index_change_are_reindexed(pg_url: str, tmp_path: Any) -> None:
    import psycopg

    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    _record(store)
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("update public.messages set search_extra = null where content !~ '[数東データ데ส]'")
        conn.execute("delete from public.store_meta where key = 'search_index_version'")
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    try:
        assert _hits(store, "नमस्ते") == {"hi"} and _hits(store, "get_conversation") == {"code-call"}
    finally:
        store.close()


@pytest.mark.postgres
def test_the_reindex_command_recomputes_postgres_index_text(pg_url: str, tmp_path: Any) -> None:
    import psycopg

    from persistence.cli import main

    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    _record(store)
    store.close()
    with psycopg.connect(pg_url, autocommit=True) as conn:
        conn.execute("update public.messages set search_extra = null")
    assert main(["reindex", "--url", pg_url]) == 0
    with psycopg.connect(pg_url, autocommit=True) as conn:
        row = conn.execute("select search_extra from public.messages where content like 'Deployed%'").fetchone()
    assert row is not None and "q0qq1f680qq0q" in row[0]  # 🚀, spelled as one token


def test_snippets_mark_what_matched_however_it_was_spelled(store: persistence.Store) -> None:
    _record(store)
    for query, key, marked in [("café", "nfd", "cafe\u0301"), ("cafe", "nfc", "café"), ("🚀", "emoji", "🚀")]:
        hit = next(h for h in store.search(query) if h.message.continuation_id == f"p-{key}")
        assert marked in [text for text, matched in hit.fragments if matched], (query, hit.fragments)


@settings(max_examples=300, deadline=None)
@given(text=st.text(alphabet=st.characters(max_codepoint=127), max_size=80))
def test_the_ascii_fast_path_finds_the_same_units(text: str) -> None:
    """index_text splits ASCII text with a simpler, faster pattern: it must find exactly the
    units the full pattern finds, or SQLite and Postgres rows written before and after differ."""
    from persistence import search_query

    assert search_query._UNIT_ASCII.findall(text) == search_query._UNIT.findall(text)


def test_ranking_covers_the_same_newest_window_on_every_backend(store: persistence.Store) -> None:
    """A word with more matches than the rank window is ranked among its newest
    SEARCH_RANK_WINDOW matches on every backend (SQLite used to rank 10,000, Postgres about
    1,000 by an estimate), so both answer the same. The oldest matches here say the word
    three times, which would rank them first if they were inside the window."""
    from persistence.search_query import SEARCH_RANK_WINDOW

    old, new = 150, SEARCH_RANK_WINDOW + 50
    rows = [
        {
            "continuation_id": f"w-old-{i % 10}",
            "role": "user",
            "content": f"pool pool pool overflow {i}",
            "created_at": T0 + timedelta(hours=i),
        }
        for i in range(old)
    ] + [
        {
            "continuation_id": f"w-new-{i % 50}",
            "role": "user",
            "content": f"the pool is fine today, ticket {i}, nothing else to report here at all",
            "created_at": T0 + timedelta(days=30, hours=i),
        }
        for i in range(new)
    ]
    for start in range(0, len(rows), 400):
        store.record_messages(rows[start : start + 400])
    hits = store.search("pool", limit=SEARCH_RANK_WINDOW)
    assert len(hits) == SEARCH_RANK_WINDOW
    # Only the newest SEARCH_RANK_WINDOW matches are ranked: none of the old, higher-scored ones.
    assert {h.message.continuation_id.split("-")[1] for h in hits} == {"new"}
    oldest_ranked = T0 + timedelta(days=30, hours=new - SEARCH_RANK_WINDOW)
    assert min(h.message.created_at for h in hits) >= oldest_ranked
    # A page larger than the window ranks as many of the newest matches as it asks for, so it
    # is full: here every match, the old ones first.
    page = store.search("pool", limit=500)
    assert len(page) == old + new
    assert [h.message.continuation_id.split("-")[1] for h in page[:old]] == ["old"] * old
    # A filter that leaves fewer matches than the window ranks them all: the old ones first.
    best = store.search("pool", limit=5, until=T0 + timedelta(days=29))
    assert [h.message.continuation_id.split("-")[1] for h in best] == ["old"] * 5
    # Newest first is exact whatever the window.
    recent = store.search("pool", limit=3, order="recent")
    assert [h.message.content.split(", ")[1] for h in recent] == [f"ticket {i}" for i in (new - 1, new - 2, new - 3)]
