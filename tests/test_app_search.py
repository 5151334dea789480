"""The Search page: the store's query syntax, filters, highlighted hits that link to the message."""

from __future__ import annotations

import pytest
from app_seed import CJK_THREAD, XSS_THREAD, app_store, app_url, open_page, seeded_folder

import persistence

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def hit_links(at) -> list[str]:  # type: ignore[no-untyped-def]
    return [p.proto.query_string for p in at.get("page_link") if "seq=" in p.proto.query_string]


def test_a_known_word_finds_its_message_and_links_to_it() -> None:
    at = open_page("search", period="all", q="zebracorn")
    assert not at.exception
    assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]
    snippet = at.html[0].value
    assert "<mark>zebracorn</mark>" in snippet


def test_typing_a_query_runs_the_search(app_store: persistence.Store) -> None:
    at = open_page("search", period="all")
    assert not hit_links(at)
    at.text_input(key="q").input('"connection pool"').run()
    assert not at.exception
    expected = app_store.search('"connection pool"', limit=20)
    assert len(hit_links(at)) == len(expected) > 0
    assert hit_links(at)[0] == f"thread={expected[0].message.continuation_id}&seq={expected[0].message.seq}"
    assert all("<mark>" in h.value for h in at.html)


def test_chinese_is_found_by_substring() -> None:
    at = open_page("search", period="all", q="连接池")
    assert f"thread={CJK_THREAD}&seq=1" in hit_links(at)
    assert any("<mark>连接池</mark>" in h.value for h in at.html)


def test_filters_narrow_the_hits() -> None:
    at = open_page("search", period="all", q="zebracorn")
    at.selectbox(key="search_role").select("user").run()
    assert not hit_links(at) and "No message matches" in at.info[0].value
    at.selectbox(key="search_role").select("assistant").run()
    assert hit_links(at) == [f"thread={XSS_THREAD}&seq=2"]


def test_markup_in_a_query_or_a_hit_stays_text() -> None:
    at = open_page("search", period="all", q="<script>alert(1)</script> onerror")
    assert not at.exception
    for h in at.html:
        assert "<script" not in h.value and "<img" not in h.value
    at = open_page("search", period="all", q="xss OR payloads")
    assert any("&lt;script&gt;" in h.value or "&lt;img" in h.value for h in at.html)


def test_the_period_applies() -> None:
    at = open_page("search", q="zebracorn")  # the default last 30 days: the seeded history is older
    assert not hit_links(at) and "No message matches" in at.info[0].value


def test_a_query_over_the_word_limit_says_so_without_an_error_page() -> None:
    at = open_page("search", period="all", q=" ".join(f"w{i}" for i in range(65)))
    assert not at.exception
    assert not hit_links(at)
    assert any("at most 64 words" in w.value for w in at.warning)
