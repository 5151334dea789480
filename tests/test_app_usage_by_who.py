"""Usage & cost by who and what: spend by tag, session and user, with links to the threads."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from app_seed import go_to, open_page, plotly_figure, plotly_values, table_with
from streamlit.testing.v1 import AppTest

import persistence
from persistence.formatting import thread_cost

ALICE = "11111111-1111-4111-8111-111111111111"
BOB = "22222222-2222-4222-8222-222222222222"
AT = datetime(2026, 1, 20, 9, 0, tzinfo=UTC)
# thread: (user, session, tags, model, prompt tokens); costs come from the store's prices
THREADS = {
    "t-billing-1": (ALICE, "sess-a", ("billing",), "glm-4.6", 40_000),
    "t-billing-2": (ALICE, "sess-a", ("billing", "search"), "kimi-k2-0905-preview", 90_000),
    "t-search": (BOB, "sess-b", ("search",), "glm-4.6", 10_000),
    "t-untagged": (BOB, "sess-b", (), "glm-4.6", 5_000),
    "t-local": (BOB, None, ("local",), "my-local-model", 3_000),
}


@pytest.fixture
def who_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> persistence.Store:
    url = f"sqlite:///{tmp_path / 'who.db'}"
    store = persistence.open_store(url)
    for i, (cid, (user, session, tags, model, prompt)) in enumerate(THREADS.items()):
        at = AT + timedelta(minutes=i)
        store.start_conversation(cid, title=cid, user_id=user, session_id=session, tags=tags, created_at=at)
        store.record_message(cid, "user", f"question {i}", created_at=at)
        store.record_message(
            cid,
            "assistant",
            f"answer {i}",
            model=model,
            usage={"prompt_tokens": prompt, "completion_tokens": 500},
            created_at=at + timedelta(seconds=5),
        )
    monkeypatch.setenv("PERSISTENCE_URL", url)
    return store


def spend_table(at: AppTest) -> Any:
    return table_with(at, "Open")


def cost_of(store: persistence.Store, *cids: str) -> tuple[float, int]:
    convs = [store.get_conversation(c, last=0) for c in cids]
    return sum(c.cost_usd for c in convs if c), sum(c.unpriced_messages for c in convs if c)


def test_spend_by_tag_counts_each_tag_of_a_thread(who_store: persistence.Store) -> None:
    at = open_page("usage", period="all")
    assert not at.exception
    table = spend_table(at).set_index("Tag")
    assert table.loc["billing", "Threads"] == 2 and table.loc["search", "Threads"] == 2
    assert table.loc["billing", "Cost"] == thread_cost(*cost_of(who_store, "t-billing-1", "t-billing-2"))
    assert table.loc["search", "Cost"] == thread_cost(*cost_of(who_store, "t-billing-2", "t-search"))
    assert table.loc["local", "Cost"] == "unpriced"  # a model without a price: never $0
    assert table.loc["(no tag)", "Threads"] == 1
    assert list(table["Open"].dropna()) == [
        f"threads?tag={tag}&period=all" for tag in table.index if not tag.startswith("(")
    ]
    # Costliest first, in the table and in the chart beside it.
    assert table.index[0] == "billing"
    bars = plotly_figure(at, "usage_spend_by")["data"][0]
    assert list(bars["y"])[-1] == "billing"
    assert max(plotly_values(bars["x"])) == pytest.approx(cost_of(who_store, "t-billing-1", "t-billing-2")[0])
    assert any("a thread with several tags counts under each" in c.value.lower() for c in at.caption)


def test_spend_by_session_and_by_user(who_store: persistence.Store) -> None:
    at = open_page("usage", period="all", by="session_id")
    assert not at.exception
    table = spend_table(at).set_index("Session")
    assert table.loc["sess-a", "Threads"] == 2 and table.loc["sess-b", "Threads"] == 2
    assert table.loc["sess-a", "Cost"] == thread_cost(*cost_of(who_store, "t-billing-1", "t-billing-2"))
    assert "(no session)" in table.index

    at.segmented_control(key="by").set_value("user_id").run()
    assert not at.exception
    assert at.query_params["by"] == "user_id"
    table = spend_table(at).set_index("User")
    by_user = who_store.usage(("user_id",)).set_index("user_id")
    assert set(table.index) == {ALICE, BOB}
    for user, row in by_user.iterrows():
        assert table.loc[user, "Messages"] == int(row["messages"])
        assert table.loc[user, "Cost"] == thread_cost(float(row["cost_usd"]), int(row["unpriced_messages"]))
    assert table.loc[BOB, "Cost"].endswith("+ 1 unpriced")


def test_a_session_link_opens_the_threads_of_that_session(who_store: persistence.Store) -> None:
    at = open_page("usage", period="all", by="session_id")
    link = spend_table(at).set_index("Session").loc["sess-b", "Open"]
    assert link == "threads?session=sess-b&period=all"
    page, query = link.split("?")
    go_to(at, page, dict(pair.split("=") for pair in query.split("&")))
    assert not at.exception
    listed = " ".join(str(e.proto) for e in at.get("html"))
    assert "thread=t-search" in listed and "thread=t-untagged" in listed
    assert "thread=t-billing-1" not in listed and "thread=t-local" not in listed
    assert any("sess-b" in c.value for c in at.caption)
    at.button(key="clear_session").click().run()  # back to every session
    listed = " ".join(str(e.proto) for e in at.get("html"))
    assert "session" not in at.query_params and "thread=t-billing-1" in listed


def test_the_daily_charts_stack_by_user(who_store: persistence.Store) -> None:
    at = open_page("usage", period="all", stack="user_id")
    assert not at.exception
    fig = plotly_figure(at, "usage_cost_chart")
    totals = {t["name"]: sum(plotly_values(t["y"])) for t in fig["data"]}
    by_user = who_store.usage(("user_id",)).set_index("user_id")["cost_usd"]
    assert totals == pytest.approx({u: float(c) for u, c in by_user.items() if c > 0})


def test_a_filter_narrows_the_groups_and_their_links(who_store: persistence.Store) -> None:
    at = open_page("usage", period="all", model="glm-4.6")
    assert not at.exception
    table = spend_table(at).set_index("Tag")
    assert "local" not in table.index  # that thread never used glm-4.6
    assert table.loc["billing", "Threads"] == 1  # t-billing-2 answered with Kimi only
    assert all(link.startswith("threads?model=glm-4.6&tag=") for link in table["Open"].dropna())


def test_a_tag_link_opens_the_threads_page_filtered(who_store: persistence.Store) -> None:
    """The link of a row is a URL the Threads page reads: same period, same filters."""
    at = open_page("usage", period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    table = spend_table(at).set_index("Tag")
    link = table.loc["billing", "Open"]
    assert link == "threads?tag=billing&period=custom&from=2026-01-18&to=2026-01-24"
    page, query = link.split("?")
    go_to(at, page, dict(pair.split("=") for pair in query.split("&")))
    assert not at.exception
    assert at.selectbox(key="tag").value == "billing"
    assert at.selectbox(key="period").value == "custom"
    listed = " ".join(str(e.proto) for e in at.get("html"))  # the Threads page's rows are HTML links
    assert "thread=t-billing-1" in listed and "thread=t-billing-2" in listed
    assert "thread=t-search" not in listed and "thread=t-untagged" not in listed
