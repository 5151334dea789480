"""The Threads page: server-side filters and sort, keyset pages, rows that open their thread."""

from __future__ import annotations

import csv
import io
import re

import pytest
from app_lists import shown_rows
from app_seed import UNPRICED_MODEL, XSS_THREAD, app_store, app_url, open_page, seeded_folder
from streamlit.testing.v1 import AppTest

import persistence

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def titles(at: AppTest) -> list[str]:
    return [r.title for r in shown_rows(at)]


def test_first_page_lists_the_newest_threads(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    assert not at.exception
    total = app_store.count_conversations()
    newest = app_store.list_conversations(limit=50).items
    assert [r.href for r in shown_rows(at)] == [f"thread?thread={c.continuation_id}" for c in newest]
    assert f"**{total:,}** threads · page 1 of 2 · showing 1–50 · sorted by last activity" in at.caption[0].value
    # No data grid: its column headers would sort the 50 rows on screen, not the list.
    assert not at.dataframe


def test_next_and_previous_walk_the_pages(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    first = titles(at)
    at.button(key="threads_next").click().run()
    assert not at.exception
    total = app_store.count_conversations()
    second = titles(at)
    assert len(second) == total - 50 and not set(second) & set(first[:1])
    assert f"page 2 of 2 · showing 51–{total}" in at.caption[0].value
    assert at.query_params["page"] == "2"
    assert at.button(key="threads_next").disabled
    at.button(key="threads_prev").click().run()
    assert titles(at) == first
    assert "page" not in at.query_params


def test_filters_run_on_the_server(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.selectbox(key="model").select(UNPRICED_MODEL).run()
    assert not at.exception
    assert titles(at) == ["Continuing the long session"]
    assert "**1** threads" in at.caption[0].value

    at.selectbox(key="model").select(None).run()
    at.text_input(key="title").input("long").run()
    assert set(titles(at)) == {"A long debugging session", "Continuing the long session"}

    at.text_input(key="title").input("no title has this").run()
    assert not shown_rows(at) and "No thread matches" in at.info[0].value


def test_sorting_by_cost_sorts_the_whole_list(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.segmented_control(key="sort").set_value("cost").run()
    assert not at.exception
    expected = app_store.list_conversations(order="cost", limit=50).items
    assert [r.href for r in shown_rows(at)] == [f"thread?thread={c.continuation_id}" for c in expected]
    assert "sorted by cost, highest first" in at.caption[0].value
    assert at.query_params["sort"] == "cost"


def test_min_cost_and_tag_filters(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.number_input(key="min_cost").set_value(0.05).run()
    expected = app_store.list_conversations(min_cost=0.05, limit=50).items
    assert [r.href for r in shown_rows(at)] == [f"thread?thread={c.continuation_id}" for c in expected] and expected
    assert f"**{app_store.count_conversations(min_cost=0.05):,}** threads" in at.caption[0].value
    at.number_input(key="min_cost").set_value(0.0).run()
    at.selectbox(key="tag").select("security").run()
    assert [r.href for r in shown_rows(at)] == [f"thread?thread={XSS_THREAD}"]


def test_the_period_limits_the_list(app_store: persistence.Store) -> None:
    at = open_page("threads")  # the last 30 days: the seeded history is older
    assert not at.exception
    assert "No thread matches" in at.info[0].value


def test_a_title_is_text_not_markup() -> None:
    at = open_page("threads", period="all", tag="security")
    block = next(b.value for b in at.html if "tl-list" in b.value)
    assert "<b>Bold</b>" not in block and "&lt;b&gt;Bold&lt;/b&gt;" in block
    assert "javascript:" not in block.split('class="tl-title"')[0]  # never an href


def test_the_csv_has_exact_money_and_says_unpriced(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all", sort="cost")
    button = at.get("download_button")[0]
    assert button.proto.label == "Download CSV"
    from ui.export import threads_csv

    rows = list(csv.DictReader(io.StringIO(threads_csv(app_store.list_conversations(order="cost", limit=1000).items))))
    assert len(rows) == app_store.count_conversations()
    for row in rows:
        if row["cost_usd"]:
            assert re.fullmatch(r"\d+(\.\d{1,10})?", row["cost_usd"]), row["cost_usd"]
    unpriced = next(r for r in rows if r["model"] == UNPRICED_MODEL)
    assert unpriced["cost_usd"] == "" and unpriced["unpriced_messages"] == "1" and unpriced["cost"] == "unpriced"
