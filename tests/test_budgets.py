"""Budgets (issue 17, item 2): kept in the store, progress from the rollup, projected spend
from the pace so far, the budgets a call counts against, bad input named; on every backend."""

from __future__ import annotations

import subprocess
import sys
import threading
import time
import uuid
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import pytest
from conftest import server_side

import persistence
from persistence import Budget, BudgetStatus, ValidationError
from persistence.pricing import Price

# $1 per million tokens: a message's cost is its tokens / 1e6.
PRICES = [
    Price(provider=p, model=m, match=f"^{m}$", effective_from=date(2026, 1, 1), input=1.0, output=1.0)
    for p, m in (("acme", "acme-big"), ("beta", "beta-small"))
]
AT = datetime(2026, 11, 18, 12, 0, tzinfo=UTC)  # a Wednesday, noon: half the day, 5/14 of the week gone


def _spend(store: persistence.Store, cid: str, when: datetime, cost: float, model: str, tool: str) -> None:
    store.record_message(
        cid,
        "assistant",
        "answer",
        model=model,
        tool_name=tool,
        usage={"prompt_tokens": round(cost * 1e6), "completion_tokens": 0},
        created_at=when,
    )


def _fill(store: persistence.Store) -> None:
    server_side(store).add_prices(PRICES)  # the server's: a signed-in user may not change prices
    store.start_conversation("tagged-today", tags=["client-x"], created_at=datetime(2026, 11, 18, 8, tzinfo=UTC))
    store.start_conversation("tagged-monday", tags=["client-x"], created_at=datetime(2026, 11, 16, 8, tzinfo=UTC))
    store.start_conversation("tagged-october", tags=["client-x"], created_at=datetime(2026, 10, 30, 8, tzinfo=UTC))
    _spend(store, "tagged-today", datetime(2026, 11, 18, 9, tzinfo=UTC), 4.0, "acme-big", "chat")  # today
    _spend(store, "tagged-monday", datetime(2026, 11, 16, 9, tzinfo=UTC), 2.0, "acme-big", "codereview")  # this week
    _spend(store, "plain", datetime(2026, 11, 3, 9, tzinfo=UTC), 10.0, "beta-small", "chat")  # this month
    _spend(store, "tagged-october", datetime(2026, 10, 30, 9, tzinfo=UTC), 50.0, "acme-big", "chat")  # last month
    _spend(store, "later", datetime(2026, 11, 19, 9, tzinfo=UTC), 70.0, "acme-big", "chat")  # after AT


def _by(states: list[BudgetStatus]) -> dict[tuple[str, str | None, str], BudgetStatus]:
    return {(s.budget.scope, s.budget.key, s.budget.period): s for s in states}


def test_budgets_are_kept_changed_and_deleted(store: persistence.Store) -> None:
    day = store.set_budget(5, period="day", model="acme-big")
    month = store.set_budget(100)
    assert isinstance(day, Budget) and (day.scope, day.key, day.period, day.limit_usd) == (
        "model",
        "acme-big",
        "day",
        5,
    )
    assert (month.scope, month.key, month.period) == ("store", None, "month")
    again = store.set_budget(7.5, period="day", model="acme-big")  # same scope and period: the limit changes
    assert again.id == day.id and again.limit_usd == 7.5 and again.created_at == day.created_at
    assert again.updated_at >= day.updated_at
    assert sorted((b.scope, b.limit_usd) for b in store.list_budgets()) == [("model", 7.5), ("store", 100)]
    assert store.delete_budget(day.id) is True
    assert store.delete_budget(day.id) is False
    assert [b.id for b in store.list_budgets()] == [month.id]


def test_progress_and_projection_per_period_and_scope(store: persistence.Store) -> None:
    _fill(store)
    store.set_budget(6, period="day", model="acme-big")
    store.set_budget(30, period="week")
    store.set_budget(18, period="month")
    store.set_budget(5, period="week", tool_name="codereview")
    store.set_budget(20, period="month", provider="beta")
    store.set_budget(8, period="month", tag="client-x")
    states = store.budget_status(at=AT)
    got = _by(states)

    day = got[("model", "acme-big", "day")]
    assert (day.period_start, day.period_end) == (date(2026, 11, 18), date(2026, 11, 19))
    assert day.spent_usd == pytest.approx(4.0)
    assert day.projected_usd == pytest.approx(8.0)  # $4 by noon: $8 by midnight
    assert day.state == "warning"  # not over yet, but on pace to pass $6
    assert (
        day.reason
        == "model acme-big, day 2026-11-18: $4.00 of $6.00 (67 %), on pace for $8.00 by the end of 2026-11-18"
    )

    week = got[("store", None, "week")]
    assert (week.period_start, week.period_end) == (date(2026, 11, 16), date(2026, 11, 23))  # Monday to Sunday
    assert week.spent_usd == pytest.approx(6.0)
    assert week.projected_usd == pytest.approx(6.0 / (2.5 / 7))
    assert week.state == "ok"

    month = got[("store", None, "month")]
    assert month.spent_usd == pytest.approx(16.0)  # October's $50 and the later $70 are not in it
    assert month.state == "warning" and month.fraction == pytest.approx(16 / 18)  # 80 % spent

    assert got[("tool_name", "codereview", "week")].spent_usd == pytest.approx(2.0)
    assert got[("provider", "beta", "month")].spent_usd == pytest.approx(10.0)
    # A tag counts its threads' whole cost in the period each thread started: the October one not.
    tag = got[("tag", "client-x", "month")]
    assert tag.spent_usd == pytest.approx(6.0)

    # Over first, then by how much of the limit is spent.
    assert [s.state for s in states] == sorted((s.state for s in states), key=["over", "warning", "ok"].index)

    # The next day, $70 later: the day budget is over.
    later = _by(store.budget_status(at=datetime(2026, 11, 19, 23, tzinfo=UTC)))
    over = later[("model", "acme-big", "day")]
    assert over.state == "over" and over.spent_usd == pytest.approx(70.0)
    assert over.reason.endswith("over by $64.00")


def test_the_budgets_a_call_counts_against(store: persistence.Store) -> None:
    _fill(store)
    store.set_budget(100, period="month")
    store.set_budget(6, period="day", model="acme-big")
    store.set_budget(20, period="month", provider="acme")
    store.set_budget(20, period="month", provider="beta")
    store.set_budget(5, period="week", tool_name="codereview")
    store.set_budget(8, period="month", tag="client-x")

    def scopes(**call: Any) -> set[tuple[str, str | None]]:
        return {(s.budget.scope, s.budget.key) for s in store.budget_status(at=AT, **call)}

    # The provider is inferred from the model's price when not given.
    assert scopes(model="acme-big") == {("store", None), ("model", "acme-big"), ("provider", "acme")}
    assert scopes(model="beta-small", tool_name="codereview", tags=["client-x", "other"]) == {
        ("store", None),
        ("provider", "beta"),
        ("tool_name", "codereview"),
        ("tag", "client-x"),
    }
    assert len(scopes()) == 6  # no call given: every budget


def test_status_now_sees_todays_writes_at_once(store: persistence.Store) -> None:
    server_side(store).add_prices(PRICES)
    store.set_budget(1, period="day", model="acme-big")
    assert store.budget_status()[0].spent_usd == 0
    _spend(store, "now", datetime.now(UTC), 0.25, "acme-big", "chat")
    assert store.budget_status()[0].spent_usd == pytest.approx(0.25)  # today is read live, not cached
    _spend(store, "now", datetime.now(UTC), 1.0, "acme-big", "chat")
    status = store.budget_status(model="acme-big")[0]
    assert status.state == "over" and status.spent_usd == pytest.approx(1.25)
    store.set_budget(10, period="day", model="acme-big")  # the summary is refreshed after a change
    assert store.budget_status()[0].budget.limit_usd == 10


@pytest.mark.parametrize(
    ("call", "field"),
    [
        (lambda s: s.set_budget(0), "limit_usd"),
        (lambda s: s.set_budget(-5), "limit_usd"),
        (lambda s: s.set_budget(float("nan")), "limit_usd"),
        (lambda s: s.set_budget(float("inf")), "limit_usd"),
        (lambda s: s.set_budget("10"), "limit_usd"),
        (lambda s: s.set_budget(True), "limit_usd"),
        (lambda s: s.set_budget(10, period="year"), "period"),
        (lambda s: s.set_budget(10, model="a", tag="b"), "tag"),
        (lambda s: s.set_budget(10, model=""), "model"),
        (lambda s: s.set_budget(10, tag="  "), "tag"),
        (lambda s: s.set_budget(10, tag=["a"]), "tag"),
        (lambda s: s.set_budget(10, tool_name=5), "tool_name"),
        (lambda s: s.delete_budget("not-a-uuid"), "budget_id"),
        (lambda s: s.budget_status(tags="client-x"), "tags"),
        (lambda s: s.budget_status(model=3), "model"),
        (lambda s: s.budget_status(at="noon"), "at"),
    ],
)
def test_bad_input_names_the_field(sqlite_store: persistence.Store, call: Any, field: str) -> None:
    with pytest.raises(ValidationError) as err:
        call(sqlite_store)
    assert err.value.field == field
    assert sqlite_store.list_budgets() == []


def test_budgets_survive_reopening(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as s:
        kept = s.set_budget(12.5, period="week", tag="client-x")
    with persistence.open_store(url) as s:
        assert s.list_budgets() == [kept]
        assert s.delete_budget(str(uuid.uuid4())) is False


def test_budget_cli(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as s:
        s.add_prices(PRICES)
        _spend(s, "now", datetime.now(UTC), 3.0, "acme-big", "chat")

    def cli(*args: str) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "persistence", *args, "--url", url], capture_output=True, text=True, timeout=120
        )

    made = cli("budget", "set", "2", "--period", "day", "--model", "acme-big")
    assert made.returncode == 0 and "day budget of $2.00 on model acme-big" in made.stdout
    status = cli("budget", "status", "--model", "acme-big")
    assert status.returncode == 1  # over: a script can stop before the call
    assert "OVER" in status.stdout and "over by $1.00" in status.stdout
    alerts = cli("alerts")
    assert alerts.returncode == 1 and "budget OVER" in alerts.stdout
    listed = cli("budget", "list")
    budget_id = listed.stdout.split()[0]
    assert cli("budget", "delete", budget_id).returncode == 0
    assert "No budgets" in cli("budget", "list").stdout
    bad = cli("budget", "set", "lots")
    assert bad.returncode != 0 and "limit_usd" in bad.stderr


def test_another_process_writes_show_after_a_refresh(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as server, persistence.open_store(url) as other:
        server.add_prices(PRICES)
        server.set_budget(10, period="day")
        assert server.budget_status()[0].spent_usd == 0
        _spend(other, "elsewhere", datetime.now(UTC), 2.0, "acme-big", "chat")
        # Read from the summary, not the database (what makes a call cheap) ...
        assert server.budget_status()[0].spent_usd == 0
        # ... which is read again in the background once it is older than BUDGET_REFRESH_S.
        server.BUDGET_REFRESH_S = 0.0
        deadline = time.monotonic() + 20
        while server.budget_status()[0].spent_usd == 0 and time.monotonic() < deadline:
            time.sleep(0.05)
        assert server.budget_status()[0].spent_usd == pytest.approx(2.0)
        # Past BUDGET_STALE_S the caller reads it itself.
        _spend(other, "elsewhere", datetime.now(UTC), 1.0, "acme-big", "chat")
        server.BUDGET_REFRESH_S, server.BUDGET_STALE_S = 3600.0, 0.0
        assert server.budget_status()[0].spent_usd == pytest.approx(3.0)


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_close_waits_for_a_background_refresh(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, caplog: pytest.LogCaptureFixture
) -> None:
    """A store closed while its budget summary is being read again in the background waits
    for that read, which goes through the store's own connections (a SQLite connection closed
    under a running query took the whole process down: a CLI command, a test worker)."""
    url = f"sqlite:///{tmp_path / 'history.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = persistence.open_store(url)
    store.set_budget(10, period="day")
    store.budget_status()  # the summary, read once
    real = store._list_budgets
    reading = threading.Event()
    finished: list[float] = []

    def slow_list_budgets() -> list[Budget]:
        reading.set()
        time.sleep(0.3)  # still reading when close() is called
        out = real()
        finished.append(time.monotonic())
        return out

    store._list_budgets = slow_list_budgets  # type: ignore[method-assign]
    store.BUDGET_REFRESH_S = 0.0
    store.budget_status()  # answered from the summary; a refresh starts in the background
    assert reading.wait(10)
    store.close()
    closed = time.monotonic()
    assert finished and finished[0] <= closed  # the refresh ended first, and read its rows
    assert "reading the budget summary failed" not in caplog.text
