"""The Threads page: server-side filters, keyset pages, sort orders."""

from __future__ import annotations

import pytest
from app_seed import UNPRICED_MODEL, app_store, app_url, open_page, seeded_folder

import persistence

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def titles(at) -> list[str]:  # type: ignore[no-untyped-def]
    return list(at.dataframe[0].value["Title"])


def test_first_page_lists_the_newest_threads(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    assert not at.exception
    total = app_store.count_conversations()
    newest = app_store.list_conversations(limit=50).items
    assert titles(at) == [c.title for c in newest]
    assert f"**{total:,}** threads · page 1 of 2 · showing 1–50" in at.caption[0].value
    assert at.dataframe[0].value["Open"].iloc[0] == f"thread?thread={newest[0].continuation_id}"


def test_next_and_previous_walk_the_pages(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    first = titles(at)
    at.button(key="threads_next").click().run()
    assert not at.exception
    total = app_store.count_conversations()
    second = titles(at)
    assert len(second) == total - 50 and not set(second) & set(first[:1])
    assert f"page 2 of 2 · showing 51–{total}" in at.caption[0].value
    assert at.button(key="threads_next").disabled
    at.button(key="threads_prev").click().run()
    assert titles(at) == first


def test_filters_run_on_the_server(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.selectbox(key="threads_model").select(UNPRICED_MODEL).run()
    assert not at.exception
    assert titles(at) == ["Continuing the long session"]
    assert "**1** threads" in at.caption[0].value

    at.selectbox(key="threads_model").select(None).run()
    at.text_input(key="threads_text").input("long").run()
    assert set(titles(at)) == {"A long debugging session", "Continuing the long session"}

    at.text_input(key="threads_text").input("no title has this").run()
    assert not at.dataframe and "No thread matches" in at.info[0].value


def test_sorting_by_cost_puts_the_costliest_first(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.segmented_control(key="threads_order").set_value("cost").run()
    assert not at.exception
    costs = list(at.dataframe[0].value["Cost"])
    assert costs == sorted(costs, reverse=True)
    assert costs[0] == app_store.list_conversations(order="cost", limit=1).items[0].cost_usd


def test_min_cost_and_tag_filters(app_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    at.number_input(key="threads_min_cost").set_value(0.05).run()
    assert all(c >= 0.05 for c in at.dataframe[0].value["Cost"])
    assert f"**{app_store.count_conversations(min_cost=0.05):,}** threads" in at.caption[0].value
    at.number_input(key="threads_min_cost").set_value(0.0).run()
    at.selectbox(key="threads_tag").select("security").run()
    assert titles(at) == ["<b>Bold</b> [x](javascript:alert(3)) *title*"]


def test_the_period_limits_the_list(app_store: persistence.Store) -> None:
    at = open_page("threads")  # the last 30 days: the seeded history is older
    assert not at.exception
    assert "No thread matches" in at.info[0].value
