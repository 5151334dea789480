"""Full-text search: stems, CJK substrings, the user syntax, garbage, filters."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

import persistence
from persistence.search_query import cjk_index_text, parse_query, to_fts5

T0 = datetime(2026, 4, 1, 10, 0, tzinfo=UTC)

CORPUS = [
    ("t-en", "user", "The runners were running late because the connection pool was exhausted.", None),
    ("t-en", "assistant", "Increase the pool size and add a timeout to every connection checkout.", "glm-4.6"),
    ("t-cache", "user", "Why does the cache layer return stale entries after invalidation?", None),
    (
        "t-cache",
        "assistant",
        "Invalidation races with the refill; use versioned keys for the cache.",
        "kimi-k2-0905-preview",
    ),
    ("t-zh", "user", "为什么缓存层在失效之后仍然返回旧数据？我们需要优化数据库索引。", None),
    ("t-zh", "assistant", "最可能的原因是数据库连接池在多个请求之间共享。GLM模型建议使用版本号。", "glm-4.6"),
    ("t-ja", "user", "データベースの接続プールが枯渇しています。", None),
    (
        "t-code",
        "assistant",
        "Use `record_message(thread_id)` in the handler; see retry_policy.py for backoff.",
        "gpt-5",
    ),
    ("t-xss", "user", "<script>alert('pwned')</script> and [click](javascript:alert(1))", None),
]


@pytest.fixture
def corpus_store(store: persistence.Store) -> persistence.Store:
    for i, (cid, role, text, model) in enumerate(CORPUS):
        store.record_message(cid, role, text, model=model, created_at=T0 + timedelta(minutes=i))
    return store


def found(store: persistence.Store, query: str, **kw: object) -> list[str]:
    return [h.message.content for h in store.search(query, **kw)]  # type: ignore[arg-type]


def test_english_by_stem(corpus_store: persistence.Store) -> None:
    assert found(corpus_store, "run") == [CORPUS[0][2]]  # "running" -> run
    assert set(found(corpus_store, "connections")) == {CORPUS[0][2], CORPUS[1][2]}
    assert found(corpus_store, "INVALIDATED") != []  # case and suffix folded


def test_chinese_and_japanese_by_substring(corpus_store: persistence.Store) -> None:
    assert found(corpus_store, "数据库") == [CORPUS[5][2], CORPUS[4][2]] or set(found(corpus_store, "数据库")) == {
        CORPUS[4][2],
        CORPUS[5][2],
    }
    assert found(corpus_store, "缓存") == [CORPUS[4][2]]  # two characters
    assert set(found(corpus_store, "库")) == {CORPUS[4][2], CORPUS[5][2]}  # one character
    assert found(corpus_store, "失效之后仍然") == [CORPUS[4][2]]  # a longer run
    assert found(corpus_store, "接続プール") == [CORPUS[6][2]]  # Japanese
    assert found(corpus_store, "模型") == [CORPUS[5][2]]  # run glued to latin text
    assert found(corpus_store, "GLM模型") == [CORPUS[5][2]]
    assert found(corpus_store, "GLM") == [CORPUS[5][2]]  # a latin word glued to CJK text is a word
    assert found(corpus_store, "数据仓库") == []  # a substring that does not occur
    hit = corpus_store.search("缓存")[0]
    assert ("缓存", True) in hit.fragments


def test_phrase_or_not_and_prefix(corpus_store: persistence.Store) -> None:
    assert found(corpus_store, '"connection pool"') == [CORPUS[0][2]]
    assert found(corpus_store, '"pool connection"') == []
    assert set(found(corpus_store, "stale OR timeout")) == {CORPUS[2][2], CORPUS[1][2]}
    assert found(corpus_store, "pool -timeout") == [CORPUS[0][2]]
    assert found(corpus_store, 'cache -"versioned keys"') == [CORPUS[2][2]]
    assert set(found(corpus_store, "invalid*")) == {CORPUS[2][2], CORPUS[3][2]}
    assert found(corpus_store, "record_message") == [CORPUS[7][2]]  # underscores split words as indexed
    assert found(corpus_store, "retry_policy.py") == [CORPUS[7][2]]


@pytest.mark.parametrize(
    ("garbage", "expected"),
    [
        ("!!!", []),  # only punctuation: nothing to search for
        ("(((", []),
        ('"', []),
        ("-", []),
        ("*", []),
        ("OR", []),
        ("\x00\ud800", []),
        ("-pool", []),  # only exclusions: nothing to search for
        ("pool!!!", [0, 1]),  # punctuation separates words
        ("(((cache", [2, 3]),
        ("pool*)", [0, 1]),
        ("^runners", [0]),
        ("pool AND", [0, 1]),
        ('"stale', [2]),  # an unbalanced quote runs to the end of the query
        ('"unbalanced', []),
        ("NEAR(a b)", []),  # NEAR is a word, and no message has it
        ("col:val ^start", []),
        ("'; drop table messages; --", []),  # every word must match, and "drop" is in no message
        ("a" * 1000, []),  # at the length limit (over it is refused: tests/test_bounded.py)
    ],
)
def test_anything_typed_is_searched_as_words_never_an_error(
    corpus_store: persistence.Store, garbage: str, expected: list[int]
) -> None:
    assert sorted(found(corpus_store, garbage)) == sorted(CORPUS[i][2] for i in expected)
    assert corpus_store.count_conversations() == 6  # and nothing was harmed


def test_typed_syntax_words_are_plain_words(corpus_store: persistence.Store) -> None:
    assert found(corpus_store, '"unbalanced pool') == []  # phrase "unbalanced pool" runs to the end
    assert found(corpus_store, "pool AND size") == [CORPUS[1][2]]
    assert found(corpus_store, "NEAR pool") == []  # NEAR is a word here, not an operator


def test_snippets_highlight_the_match(corpus_store: persistence.Store) -> None:
    hit = corpus_store.search('"connection pool"')[0]
    assert [text for text, matched in hit.fragments if matched] == ["connection pool"] or any(
        matched and "pool" in text for text, matched in hit.fragments
    )
    assert "[" in hit.snippet and hit.conversation_title is not None
    assert hit.message.continuation_id == "t-en" and hit.message.seq == 1


def test_markup_in_content_stays_text(corpus_store: persistence.Store) -> None:
    hit = corpus_store.search("pwned")[0]
    assert "<script>" in "".join(text for text, _ in hit.fragments)  # returned as text, for the UI to escape


def test_filters_and_order(corpus_store: persistence.Store) -> None:
    assert found(corpus_store, "pool", role="assistant") == [CORPUS[1][2]]
    assert found(corpus_store, "cache", model="kimi-k2-0905-preview") == [CORPUS[3][2]]
    assert found(corpus_store, "cache", continuation_id="t-cache", role="user") == [CORPUS[2][2]]
    assert found(corpus_store, "pool", since=T0 + timedelta(minutes=1)) == [CORPUS[1][2]]
    assert found(corpus_store, "pool", until=T0 + timedelta(minutes=1)) == [CORPUS[0][2]]
    recent = found(corpus_store, "cache OR pool", order="recent")
    assert recent == [CORPUS[3][2], CORPUS[2][2], CORPUS[1][2], CORPUS[0][2]]
    assert len(found(corpus_store, "cache OR pool", limit=2)) == 2
    with pytest.raises(persistence.ValidationError, match="role"):
        corpus_store.search("pool", role="robot")


def test_ranking_prefers_the_denser_match(store: persistence.Store) -> None:
    store.record_message("t-r", "user", "pool " * 5 + "of water", created_at=T0)
    store.record_message(
        "t-r", "user", "a long sentence that mentions a pool once among many other words here", created_at=T0
    )
    hits = store.search("pool")
    assert hits[0].message.seq == 1 and hits[0].score > hits[1].score


def test_query_rendering_quotes_every_word() -> None:
    assert (
        to_fts5(parse_query('pool OR "exact phrase" -bad pref*'))
        == '("pool" OR "exact phrase") AND "pref"* NOT ("bad")'
        or to_fts5(parse_query('pool OR "exact phrase" -bad pref*'))
        == '(("pool" OR "exact phrase") AND "pref"*) NOT ("bad")'
    )
    assert to_fts5(parse_query("数据库")) == '"数据 据库"'
    assert to_fts5(parse_query("库")) == '"库"*'
    assert to_fts5(parse_query("-only")) is None
    indexed = cjk_index_text("abc 数据库 x GLM模型")
    assert indexed is not None and " ".join(indexed.split()) == "abc 数据 据库 库 x GLM 模型 型"
    assert to_fts5(parse_query("模型GLM")) == '"模型 型 GLM"'  # a run glued to a word ends there
    assert cjk_index_text("plain english") is None


def test_a_query_of_many_words_is_ranked_by_how_densely_it_matches(store: persistence.Store) -> None:
    """A query of many words is ranked without bm25 on SQLite (its rarity pass over the whole
    table costs seconds for dozens of common words); the denser match still comes first."""
    words = ["pool", "cache", "queue", "index", "shard", "replica"]
    store.record_message("t-m", "user", "pool cache queue index " + "filler " * 4, created_at=T0)
    store.record_message("t-m", "user", "a pool mentioned once " + "among filler words " * 20, created_at=T0)
    store.record_message("t-m", "user", "nothing relevant at all", created_at=T0)
    hits = store.search(" OR ".join(words))
    assert [h.message.seq for h in hits] == [1, 2]
    assert hits[0].score > hits[1].score


def test_sqlite_ranks_many_words_without_bm25(tmp_path: Path) -> None:
    store = persistence.open_store(f"sqlite:///{tmp_path / 'h.db'}")
    try:
        store.record_message("t-m", "user", "pool cache queue index shard")
        statements: list[str] = []
        db = store._conn()  # type: ignore[attr-defined]
        db.set_trace_callback(statements.append)
        assert len(store.search("pool OR cache OR queue OR index OR shard")) == 1
        assert not any("bm25" in s for s in statements)
        statements.clear()
        assert len(store.search("pool cache")) == 1  # a few words: bm25 as before
        assert any("bm25" in s for s in statements)
    finally:
        store.close()
