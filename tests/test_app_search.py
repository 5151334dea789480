"""The Search page: the store's query syntax, filters, hits grouped by thread that link to the message."""

from __future__ import annotations

import re

import pytest
from app_lists import hit_links, search_results
from app_seed import CJK_THREAD, XSS_THREAD, app_store, app_url, open_page, seeded_folder
from streamlit.testing.v1 import AppTest

import persistence

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def cards(at: AppTest) -> list[str]:
    return re.findall(r'<div class="tl-card">.*?</div>', search_results(at))


def test_a_known_word_finds_its_message_and_links_to_it() -> None:
    at = open_page("search", period="all", q="zebracorn")
    assert not at.exception
    assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]
    assert "<mark>zebracorn</mark>" in search_results(at)
    assert at.caption[0].value.startswith("1 matching message in 1 thread")


def test_typing_a_query_runs_the_search(app_store: persistence.Store) -> None:
    at = open_page("search", period="all")
    assert not hit_links(at)
    at.text_input(key="q").input('"connection pool"').run()
    assert not at.exception
    expected = app_store.search('"connection pool"', limit=20)
    assert len(hit_links(at)) == len(expected) > 0
    assert hit_links(at)[0] == f"thread={expected[0].message.continuation_id}&seq={expected[0].message.seq}"
    assert search_results(at).count("<mark>") >= len(expected)


def test_hits_are_grouped_by_thread_with_count_model_and_cost(app_store: persistence.Store) -> None:
    at = open_page("search", period="all", q="pool", hits="50")
    expected = app_store.search("pool", limit=50)
    by_thread: dict[str, int] = {}
    for hit in expected:
        by_thread[hit.continuation_id] = by_thread.get(hit.continuation_id, 0) + 1
    shown = cards(at)
    assert len(shown) == len(by_thread) < len(expected)  # some thread has several hits
    first_cid = expected[0].continuation_id
    conv = app_store.get_conversation(first_cid, last=0)
    assert conv is not None
    n = by_thread[first_cid]
    assert f"thread?thread={first_cid}&amp;seq={expected[0].message.seq}" in shown[0]
    assert f"{n} hit{'s' if n != 1 else ''} · {conv.model}" in shown[0]
    from ui import fmt

    assert f">{fmt.cost(conv)}</span>" in shown[0]


def test_the_total_is_exact_within_a_page() -> None:
    at = open_page("search", period="all", q="zebracorn")
    assert at.caption[0].value.startswith("1 matching message in 1 thread")


def test_the_total_past_a_page_is_the_true_count(app_store: persistence.Store) -> None:
    """Issue 14: a true total instead of "20+" / "more than 10" when the hits fill more than a page."""
    total = app_store.count_search("pool")
    assert total > 10 and total == len(app_store.search("pool", limit=500))
    at = open_page("search", period="all", q="pool", hits="10")
    assert not at.exception
    caption = at.caption[0].value
    assert caption.startswith(f"{total:,} matching messages · ")
    assert "More than" not in caption and "+" not in caption.split(" ")[0]
    assert len(hit_links(at)) == 10
    shown_threads = len(cards(at))
    assert f"showing the first 10, in {shown_threads} thread" in caption
    at = open_page("search", period="all", q="pool", role="assistant", hits="10")
    assert at.caption[0].value.startswith(f"{app_store.count_search('pool', role='assistant'):,} matching message")


def test_a_count_past_the_cap_says_more_than_the_cap(
    app_store: persistence.Store, monkeypatch: pytest.MonkeyPatch
) -> None:
    """Past SEARCH_COUNT_CAP the store answers cap + 1 and the page says "More than <cap>"
    (the cap made small here; it is 10,000)."""
    import persistence.backends.sqlite.store as sqlite_store
    import persistence.search_query as search_query

    total = app_store.count_search("pool")
    assert total > 4
    for module in (search_query, sqlite_store):
        monkeypatch.setattr(module, "SEARCH_COUNT_CAP", 3)
    at = open_page("search", period="all", q="pool", hits="10")
    assert not at.exception
    assert at.caption[0].value.startswith("More than 3 matching messages · ")


def test_a_count_stopped_at_the_time_limit_says_more_than(monkeypatch: pytest.MonkeyPatch) -> None:
    """A count that runs into the search time limit (a very common word at a million messages)
    falls back to "more than" the page; the hits are still shown."""
    from persistence.backends.sqlite.store import SQLiteStore
    from persistence.errors import ValidationError
    from persistence.search_query import SEARCH_STOPPED

    def stopped(self: SQLiteStore, *args: object, **kwargs: object) -> int:
        raise ValidationError("query", SEARCH_STOPPED)

    monkeypatch.setattr(SQLiteStore, "_count_search", stopped)
    # A query no other test counts: the page's count is cached per query.
    at = open_page("search", period="all", q="pool -zebracornless", hits="10")
    assert not at.exception
    assert at.caption[0].value.startswith("More than 10 matching messages")
    assert len(hit_links(at)) == 10


def test_the_score_is_shown_only_when_ranked() -> None:
    at = open_page("search", period="all", q="pool")
    assert "score " in search_results(at)
    at = open_page("search", period="all", q="pool", order="recent")
    assert "score " not in search_results(at) and hit_links(at)
    assert "newest first" in at.caption[0].value


def test_chinese_is_found_by_substring() -> None:
    at = open_page("search", period="all", q="连接池")
    assert f"thread={CJK_THREAD}&seq=1" in hit_links(at)
    assert "<mark>连接池</mark>" in search_results(at)


def test_filters_narrow_the_hits() -> None:
    at = open_page("search", period="all", q="zebracorn")
    at.selectbox(key="role").select("user").run()
    assert not hit_links(at) and "No message matches" in at.info[0].value
    at.selectbox(key="role").select("assistant").run()
    assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]


def test_markup_in_a_query_or_a_hit_stays_text() -> None:
    at = open_page("search", period="all", q="<script>alert(1)</script> onerror")
    assert not at.exception
    for h in at.html:
        assert "<script" not in h.value and "<img" not in h.value
    at = open_page("search", period="all", q="xss OR payloads")
    block = search_results(at)
    assert "&lt;script&gt;" in block or "&lt;img" in block
    assert "<script" not in block and "<img" not in block


def test_the_period_applies_and_all_time_is_one_click() -> None:
    at = open_page("search", q="zebracorn")  # the default last 30 days: the seeded history is older
    assert not hit_links(at) and "No message matches" in at.info[0].value
    at.button(key="search_all_time").click().run()
    assert not at.exception
    assert at.query_params["period"] == "all"
    assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]


def test_a_query_over_the_word_limit_says_so_without_an_error_page() -> None:
    at = open_page("search", period="all", q=" ".join(f"w{i}" for i in range(65)))
    assert not at.exception
    assert not hit_links(at)
    assert any("at most 64 words" in w.value for w in at.warning)
