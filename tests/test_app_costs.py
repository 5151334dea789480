"""One cost rule everywhere the app shows a cost: threads, a thread, search hits, files, exports.

An unpriced amount never reads as a bare ``$0``: a thread with no priced message reads
``unpriced``, one priced in part ``$0.41 + 1 unpriced``, a message ``unpriced``. Sorting by
cost sorts the whole list on the server, so the costliest thread comes first even when it is
the oldest (not on the first page by recency). CSV money is exact decimal text.
"""

from __future__ import annotations

import csv
import io
import re

import pytest
from app_costs_seed import (
    COSTLY,
    PARTLY,
    UNPRICED_ONLY,
    WORD,
    costs_folder,
    costs_store,
)
from app_lists import search_results, shown_rows
from app_seed import open_page

import persistence
from persistence.formatting import money
from ui.export import decimal_text, thread_markdown, threads_csv

__all__ = ["costs_folder", "costs_store"]
pytestmark = pytest.mark.usefixtures("costs_store")

BARE_ZERO = re.compile(r"\$0(\.0+)?(?![\d.])")  # "$0", "$0.00", "$0.0000": but not "$0.0042"


def row_cost(at, continuation_id: str) -> str:  # type: ignore[no-untyped-def]
    return next(r.cost for r in shown_rows(at) if r.href == f"thread?thread={continuation_id}")


def test_sort_by_cost_finds_the_costliest_thread_beyond_the_first_page(costs_store: persistence.Store) -> None:
    first_page_by_recency = {c.continuation_id for c in costs_store.list_conversations(limit=50).items}
    assert COSTLY not in first_page_by_recency  # the precondition: a client-side sort would miss it
    at = open_page("threads", period="all", sort="cost")
    assert not at.exception
    rows = shown_rows(at)
    assert rows[0].href == f"thread?thread={COSTLY}"
    costliest = costs_store.get_conversation(COSTLY, last=0)
    assert costliest is not None and rows[0].cost == money(costliest.cost_usd)
    assert "sorted by cost, highest first" in at.caption[0].value


def test_an_unpriced_thread_never_shows_zero_in_the_list(costs_store: persistence.Store) -> None:
    at = open_page("threads", period="all")
    assert row_cost(at, UNPRICED_ONLY) == "unpriced"
    partly = costs_store.get_conversation(PARTLY, last=0)
    assert partly is not None and partly.unpriced_messages == 1
    assert row_cost(at, PARTLY) == f"{money(partly.cost_usd)} + 1 unpriced"
    for row in shown_rows(at):
        assert not BARE_ZERO.search(row.cost), row


def test_an_unpriced_thread_page_says_unpriced(costs_store: persistence.Store) -> None:
    at = open_page("thread", thread=UNPRICED_ONLY)
    assert not at.exception
    assert {m.label: m.value for m in at.metric}["Cost"] == "unpriced"
    reply_meta = at.chat_message[1].caption[0].value
    assert "unpriced" in reply_meta and not BARE_ZERO.search(reply_meta.replace("\\", ""))
    strip = next(f.value for f in at.dataframe if "Running cost" in f.value.columns)
    assert list(strip["Cost"]) == ["", "unpriced"]  # the user's turn had nothing to price
    assert list(strip["Running cost"]) == ["–", "unpriced"]  # nothing spent before the reply
    header = [m.value for m in at.metric if m.label in ("Messages", "Tokens", "Cost")]
    chat = [c.value for msg in at.chat_message for c in msg.caption]
    assert not BARE_ZERO.search(" ".join([*header, *chat]).replace("\\", ""))


def test_a_partly_priced_thread_page_says_both(costs_store: persistence.Store) -> None:
    conv = costs_store.get_conversation(PARTLY)
    assert conv is not None
    at = open_page("thread", thread=PARTLY)
    assert {m.label: m.value for m in at.metric}["Cost"] == f"{money(conv.cost_usd)} + 1 unpriced"
    strip = next(f.value for f in at.dataframe if "Running cost" in f.value.columns)
    assert list(strip["Cost"]) == [money(conv.messages[0].cost_usd), "unpriced"]
    assert list(strip["Running cost"]) == [money(conv.cost_usd), f"{money(conv.cost_usd)} + 1 unpriced"]


def test_search_hits_say_unpriced() -> None:
    at = open_page("search", period="all", q=f"local {WORD}")
    block = search_results(at)
    card = next(c for c in re.findall(r'<div class="tl-card">.*?</div>', block) if UNPRICED_ONLY in c)
    assert '<span class="tl-cost tl-unpriced">unpriced</span>' in card
    assert "· unpriced" in card  # the message's own cost
    assert not BARE_ZERO.search(block)


def test_files_say_unpriced_for_the_threads_that_used_them(costs_store: persistence.Store) -> None:
    at = open_page("files", period="all")
    names = list(at.dataframe[0].value["File"])
    at.session_state["files_table_1"] = {
        "selection": {"rows": [names.index("local-notes.txt")], "columns": [], "cells": []}
    }
    at.run()
    assert not at.exception
    rows = shown_rows(at)
    assert [(r.href, r.cost) for r in rows] == [(f"thread?thread={UNPRICED_ONLY}", "unpriced")]


def test_the_threads_csv_is_exact_and_honest(costs_store: persistence.Store) -> None:
    rows = {
        r["continuation_id"]: r
        for r in csv.DictReader(io.StringIO(threads_csv(costs_store.list_conversations(limit=100).items)))
    }
    assert rows[UNPRICED_ONLY]["cost_usd"] == "" and rows[UNPRICED_ONLY]["cost"] == "unpriced"
    partly = costs_store.get_conversation(PARTLY, last=0)
    assert partly is not None
    assert rows[PARTLY]["cost_usd"] == decimal_text(partly.cost_usd) and rows[PARTLY]["unpriced_messages"] == "1"
    for row in rows.values():
        assert row["cost_usd"] == "" or re.fullmatch(r"\d+(\.\d{1,10})?", row["cost_usd"]), row


@pytest.mark.parametrize(
    ("usd", "text"),
    [
        (0.06742799000000001, "0.06742799"),  # float noise from a sum
        (0.1 + 0.2, "0.3"),
        (1e-05, "0.00001"),  # no exponent
        (100.0, "100"),
        (0.0, "0"),  # a real zero (a free model) stays a zero
        (None, ""),  # no amount is no text, never 0
        (float("nan"), ""),
    ],
)
def test_decimal_text(usd: float | None, text: str) -> None:
    assert decimal_text(usd) == text


def test_the_markdown_export_says_unpriced(costs_store: persistence.Store) -> None:
    conv = costs_store.get_conversation(PARTLY)
    assert conv is not None
    text = thread_markdown(conv)
    assert f"cost: {money(conv.cost_usd)} + 1 unpriced" in text
    assert "unpriced" in text.split("## 2.")[1].split("\n\n")[1]  # the unpriced reply's line of figures
