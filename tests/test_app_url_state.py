"""State in the URL: every filter, the sort, the search query and the page of Threads and Search
(and Thread's id) come back from the address alone, as after a reload, a shared link or Back.

Each test opens a fresh app session with only a query string, the way a browser loading that
address does. (Streamlit's browser side writes a bound widget's changes into the address; the
browser test walks that path.)
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import pytest
from app_costs_seed import (
    CHEAP,
    COSTLY,
    PRICED,
    START,
    UNPRICED,
    UNPRICED_ONLY,
    WORD,
    costs_folder,
    costs_store,
)
from app_lists import hit_links, search_results, shown_rows
from app_seed import APP, first_run, go_to, open_page
from streamlit.testing.v1 import AppTest

import persistence

__all__ = ["costs_folder", "costs_store"]
pytestmark = pytest.mark.usefixtures("costs_store")


def fresh(page: str, query: dict[str, str]) -> AppTest:
    """A new session that opens ``views/<page>.py`` at this query string (``open_page`` takes
    the query as keywords, and ``page`` is one of the parameters here)."""
    at = AppTest.from_file(APP, default_timeout=60)
    first_run(at)
    go_to(at, page, query)
    return at


def hrefs(at: AppTest) -> list[str]:
    return [r.href for r in shown_rows(at)]


def expected(threads: tuple[persistence.Conversation, ...]) -> list[str]:
    return [f"thread?thread={c.continuation_id}" for c in threads]


def test_threads_filters_and_sort_come_back_from_the_url(costs_store: persistence.Store) -> None:
    at = open_page("threads", period="all", model=PRICED, tag="cheap", min_cost="0.0001", title="question", sort="cost")
    assert not at.exception
    assert at.selectbox(key="model").value == PRICED
    assert at.selectbox(key="tag").value == "cheap"
    assert at.number_input(key="min_cost").value == pytest.approx(0.0001)
    assert at.text_input(key="title").value == "question"
    assert at.segmented_control(key="sort").value == "cost"
    want = costs_store.list_conversations(
        order="cost", model=PRICED, tag="cheap", min_cost=0.0001, text="question", limit=50
    ).items
    assert hrefs(at) == expected(want) and want
    assert "sorted by cost, highest first" in at.caption[0].value


def test_a_model_filter_survives_a_reload(costs_store: persistence.Store) -> None:
    at = open_page("threads", period="all", model=UNPRICED)
    assert hrefs(at) == expected(costs_store.list_conversations(model=UNPRICED).items)
    assert f"thread?thread={UNPRICED_ONLY}" in hrefs(at) and f"thread?thread={COSTLY}" not in hrefs(at)


def test_the_page_comes_back_from_the_url_and_previous_still_works(costs_store: persistence.Store) -> None:
    at = open_page("threads", period="all", sort="cost")
    first = hrefs(at)
    at.button(key="threads_next").click().run()
    second = hrefs(at)
    place = {k: at.query_params[k] for k in ("page", "after")}
    assert place["page"] == "2" and second and not set(second) & set(first)

    # A new session from that address (a reload, a shared link): the same second page ...
    again = fresh("threads", {"period": "all", "sort": "cost", **place})
    assert not again.exception
    assert hrefs(again) == second
    total = costs_store.count_conversations()
    assert f"page 2 of 2 · showing 51–{total}" in again.caption[0].value
    # ... and Previous finds page 1 though this session never saw it.
    again.button(key="threads_prev").click().run()
    assert hrefs(again) == first
    assert "page" not in again.query_params and "after" not in again.query_params


def test_a_filter_change_starts_again_at_page_one() -> None:
    at = open_page("threads", period="all")
    at.button(key="threads_next").click().run()
    assert at.query_params["page"] == "2"
    at.selectbox(key="model").select(PRICED).run()
    assert "page" not in at.query_params
    assert "page 1 of" in at.caption[0].value


def test_a_broken_page_in_the_url_shows_the_first_page(costs_store: persistence.Store) -> None:
    newest = expected(costs_store.list_conversations(limit=50).items)
    at = fresh("threads", {"period": "all", "page": "2", "after": "not-a-cursor"})
    assert not at.exception
    assert hrefs(at) == newest
    assert any("does not belong to this list" in c.value for c in at.caption)
    at = fresh("threads", {"period": "all", "page": "two", "after": "x"})
    assert not at.exception and hrefs(at) == newest


def test_an_unknown_sort_falls_back_to_last_activity(costs_store: persistence.Store) -> None:
    at = open_page("threads", period="all", sort="bogus")
    assert not at.exception
    assert at.segmented_control(key="sort").value == "recent"
    assert hrefs(at) == expected(costs_store.list_conversations(limit=50).items)


def test_search_query_filters_and_order_come_back_from_the_url(costs_store: persistence.Store) -> None:
    at = open_page("search", period="all", q=WORD, model=PRICED, role="assistant", order="recent", hits="10")
    assert not at.exception
    assert at.text_input(key="q").value == WORD
    assert at.selectbox(key="model").value == PRICED
    assert at.selectbox(key="role").value == "assistant"
    assert at.segmented_control(key="order").value == "recent"
    assert at.select_slider(key="hits").value == 10
    want = costs_store.search(WORD, model=PRICED, role="assistant", order="recent", limit=10)
    assert hit_links(at) == [f"thread={h.continuation_id}&seq={h.message.seq}" for h in want]
    assert "score" not in search_results(at)
    total = costs_store.count_search(WORD, model=PRICED, role="assistant")
    assert total > 10 and at.caption[0].value.startswith(f"{total:,} matching messages")


def test_the_thread_id_is_the_url() -> None:
    at = open_page("thread", thread=COSTLY)
    assert not at.exception
    assert at.title[0].value == "The one expensive investigation"
    assert len(hrefs(open_page("threads", period="all", tag="cheap"))) == min(CHEAP, 50)


def test_previous_from_a_deep_page_in_a_new_session_walks_back(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """Page 3 opened from its address: Previous needs page 2's cursor, which this session never
    saw; it is found by reading forward from the first page (ui.urlstate)."""
    url = f"sqlite:///{tmp_path / 'many.db'}"
    store = persistence.open_store(url)
    try:
        for i in range(120):
            at_time = START + timedelta(minutes=i)
            store.record_message(f"t-{i:03}", "user", f"question {i}", created_at=at_time)
        page2 = store.list_conversations(limit=50, cursor=store.list_conversations(limit=50).next_cursor)
        page3_cursor = page2.next_cursor
        assert page3_cursor is not None
        want_page2 = expected(page2.items)
    finally:
        store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = fresh("threads", {"period": "all", "page": "3", "after": page3_cursor})
    assert not at.exception
    assert "page 3 of 3 · showing 101–120" in at.caption[0].value
    at.button(key="threads_prev").click().run()
    assert not at.exception
    assert hrefs(at) == want_page2
    assert at.query_params["page"] == "2" and "page 2 of 3" in at.caption[0].value


def test_the_oldest_thread_links_to_the_next_newer_one() -> None:
    """Newer is found in growing time windows (ui.queries.neighbours): a day lies between the
    oldest thread and the next."""
    at = open_page("thread", thread=COSTLY)
    links = " ".join(h.value for h in at.html if "tl-nav" in h.value)
    assert 'href="thread?thread=cheap-00"' in links and "← Newer" in links
    assert "Older →" not in links
