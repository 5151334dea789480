"""The Overview page (and the app shell around every page): AppTest on a seeded store."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pytest
from app_lists import shown_rows
from app_seed import (
    APP,
    UNPRICED_MODEL,
    app_store,
    app_url,
    first_run,
    open_page,
    plotly_figure,
    plotly_values,
    seeded_folder,
    texts,
)
from streamlit.testing.v1 import AppTest

import persistence
from persistence.backends.sqlite.store import SQLiteStore
from persistence.formatting import money, size, tokens
from ui import fmt

__all__ = ["app_store", "app_url", "seeded_folder"]  # fixtures used by the tests below


def metric(at: AppTest, label: str) -> Any:
    return next(m for m in at.metric if m.label == label)


def test_all_time_totals_match_the_store(app_store: persistence.Store) -> None:
    at = open_page(period="all")
    assert not at.exception
    totals = app_store.usage(()).iloc[0]
    assert at.title[0].value == "Overview"
    assert metric(at, "Active threads").value == f"{app_store.count_conversations():,}"
    assert metric(at, "Messages").value == f"{int(totals['messages']):,}"
    assert metric(at, "Cost").value == money(float(totals["cost_usd"]))
    # The seeded store has models without a price: the card says so under the figure.
    assert metric(at, "Cost").delta == f"+ {int(totals['unpriced_messages'])} unpriced"
    assert metric(at, "Tokens").value == tokens(int(totals["total_tokens"]))
    stored = app_store.storage_usage(()).iloc[0]
    assert metric(at, "Stored").value == size(int(stored["bytes"]))
    # All time has no period before it: no made-up change.
    assert metric(at, "Messages").delta == ""


def test_a_period_is_compared_with_the_one_before(app_store: persistence.Store) -> None:
    at = open_page(period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    assert not at.exception
    since, until = datetime(2026, 1, 18, tzinfo=UTC), datetime(2026, 1, 25, tzinfo=UTC)
    now = app_store.usage((), since=since, until=until).iloc[0]
    before = app_store.usage((), since=datetime(2026, 1, 11, tzinfo=UTC), until=since).iloc[0]
    assert metric(at, "Messages").value == f"{int(now['messages']):,}"
    assert metric(at, "Messages").delta == fmt.change(int(now["messages"]), int(before["messages"]))
    assert metric(at, "Active threads").value == f"{app_store.count_conversations(since=since, until=until):,}"


def test_the_cost_chart_covers_the_period_of_the_cards(app_store: persistence.Store) -> None:
    """Every day of the chosen period, no more: its total is the Cost card beside it."""
    at = open_page(period="custom", **{"from": "2026-01-01", "to": "2026-01-31"})
    assert not at.exception
    fig = plotly_figure(at, "overview_cost_by_day")
    days = plotly_values(fig["data"][0]["x"])
    assert len(days) == 31 and str(days[0]).startswith("2026-01-01") and str(days[-1]).startswith("2026-01-31")
    expected = app_store.usage((), since=datetime(2026, 1, 1, tzinfo=UTC), until=datetime(2026, 2, 1, tzinfo=UTC))
    cost = float(expected["cost_usd"].iloc[0])
    assert sum(float(y) for y in plotly_values(fig["data"][0]["y"])) == pytest.approx(cost)
    assert cost > 0 and metric(at, "Cost").value == money(cost)


def test_all_time_chart_and_cost_card_agree(app_store: persistence.Store) -> None:
    """With "All time" the chart is not fixed to 30 days: it adds up to the all-time Cost card,
    and its caption names the days it shows."""
    at = open_page(period="all")
    assert not at.exception
    fig = plotly_figure(at, "overview_cost_by_day")
    total = float(app_store.usage(()).iloc[0]["cost_usd"])
    assert sum(float(y) for y in plotly_values(fig["data"][0]["y"])) == pytest.approx(total)
    assert metric(at, "Cost").value == money(total)
    first_day = app_store.usage(("day",))["day"].min()
    assert str(plotly_values(fig["data"][0]["x"])[0]).startswith(f"{first_day:%Y-%m-%d}")
    assert any(c.value.startswith(f"All time ({first_day:%Y-%m-%d} – ") and money(total) in c.value for c in at.caption)


def test_uploads_that_were_all_duplicates_say_so(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A week whose only uploads repeat bytes stored earlier adds 0 B: that is dedup, not a
    "−100 %" drop, and the Stored card says what happened."""
    url = f"sqlite:///{tmp_path / 'dups.db'}"
    s = persistence.open_store(url)
    try:
        s.record_message("t1", "user", "hello", created_at=datetime(2026, 1, 2, tzinfo=UTC))
        s.put_file(b"same bytes\n", filename="first.txt", created_at=datetime(2026, 1, 2, tzinfo=UTC))
        for day in (20, 21):
            s.put_file(b"same bytes\n", filename=f"again-{day}.txt", created_at=datetime(2026, 1, day, tzinfo=UTC))
    finally:
        s.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page(period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    assert not at.exception
    card = metric(at, "Stored")
    assert card.value == "0 B new"
    assert card.delta == "all 2 uploads were duplicates of stored files"
    assert "%" not in card.delta


def test_a_cost_with_no_price_at_all_reads_unpriced(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'unpriced.db'}"
    s = persistence.open_store(url)
    try:
        s.record_message("t1", "user", "hello", created_at=datetime(2026, 1, 20, tzinfo=UTC))
        usage = {"prompt_tokens": 100, "completion_tokens": 10}
        s.record_message(
            "t1", "assistant", "hi", model=UNPRICED_MODEL, usage=usage, created_at=datetime(2026, 1, 20, 1, tzinfo=UTC)
        )
    finally:
        s.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page(period="custom", **{"from": "2026-01-18", "to": "2026-01-24"})
    assert not at.exception
    assert metric(at, "Cost").value == "unpriced"  # not $0.00, the cost of a free model
    assert "+ 1 unpriced" in metric(at, "Cost").delta + str(metric(at, "Cost").proto.delta_description)


def test_unpriced_messages_are_flagged_with_their_models(app_url: str) -> None:
    at = open_page(period="all")
    warning = " ".join(w.value for w in at.warning)
    assert "messages have no price" in warning
    assert UNPRICED_MODEL in warning and "llama-3.1-8b-local" in warning


def test_an_idle_period_says_so_and_points_to_the_last_activity(app_url: str) -> None:
    at = open_page()  # the default, last 30 days: the seeded data is older
    assert not at.exception
    assert metric(at, "Messages").value == "0"
    assert any("Nothing happened in this period" in i.value for i in at.info)


def test_recent_threads_link_to_their_thread(app_store: persistence.Store) -> None:
    at = open_page(period="all")
    rows = shown_rows(at)
    newest = app_store.list_conversations(limit=6).items
    assert [r.href for r in rows] == [f"thread?thread={c.continuation_id}" for c in newest]
    assert rows[0].title == newest[0].title
    assert all(r.cost for r in rows)  # the cost rule of ui.fmt.cost, beside each title


def test_the_backend_and_a_redacted_url_are_shown(app_url: str) -> None:
    at = open_page(period="all")
    sidebar = " ".join(c.value for c in at.sidebar.caption)
    assert "sqlite" in sidebar and "history.db" in sidebar


def test_a_behind_outbox_is_a_warning(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    url = f"sqlite:///{tmp_path / 'outbox.db'}"
    s = persistence.open_store(url)
    s.record_message("t1", "user", "hello")
    s.close()
    original = SQLiteStore._doctor_quick  # the app runs doctor's quick mode

    def doctor(self: SQLiteStore) -> dict[str, Any]:
        return {**original(self), "outbox_depth": 42, "outbox_oldest_age_s": 900.0, "outbox_last_error": None}

    monkeypatch.setattr(SQLiteStore, "_doctor_quick", doctor)
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page(period="all")
    assert not at.exception
    warning = " ".join(w.value for w in at.warning)
    assert "outbox is behind" in warning and "42" in warning and "15 min" in warning


def test_an_empty_store_offers_demo_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCE_URL", f"sqlite:///{tmp_path / 'empty.db'}")
    at = AppTest.from_file(APP, default_timeout=120)
    first_run(at)
    assert at.title[0].value == "No conversations yet"
    at.button(key="load_demo").click().run()
    assert not at.exception
    assert at.title[0].value == "Overview"
    assert int(next(m for m in at.metric if m.label == "Active threads").value.replace(",", "")) > 0


def test_a_store_that_cannot_open_shows_why_without_the_password(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCE_URL", "postgresql://app:s3cret-Pa55@127.0.0.1:9/nodb?connect_timeout=1")
    at = AppTest.from_file(APP, default_timeout=60)
    at.run()
    assert not at.exception
    assert at.title[0].value == "Cannot open the store"
    assert "s3cret-Pa55" not in texts(at)
    assert "s3cret-Pa55" not in " ".join(e.value for e in at.error)


def test_every_page_loads_without_an_error(app_url: str) -> None:
    for page in ("overview", "threads", "thread", "search", "usage", "storage", "files"):
        at = open_page(page, period="all")
        assert not at.exception, (page, at.exception)
        assert not at.error, (page, [e.value for e in at.error])
