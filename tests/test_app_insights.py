"""The Overview's Alerts and Budgets panels (issue 17): AppTest on a store with planted anomalies
and budgets, and on a steady one."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path

import pytest
from app_seed import open_page
from streamlit.testing.v1 import AppTest
from test_anomalies import _fill

import persistence

PERIOD = {"period": "custom", "from": "2026-10-06", "to": "2026-10-12"}


def _plain(markdown: str) -> str:
    """The text of escaped Markdown (the app escapes every reason: names are user data)."""
    return markdown.replace("\\", "")


def _open(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, *, planted: bool, budgets: bool) -> AppTest:
    url = f"sqlite:///{tmp_path / 'history.db'}"
    with persistence.open_store(url) as store:
        _fill(store, planted=planted)
        if budgets:
            store.record_message(
                "today",
                "assistant",
                "answer",
                model="acme-big",
                usage={"prompt_tokens": 3_000_000, "completion_tokens": 0},
                created_at=datetime.now(UTC),
            )
            store.set_budget(2, period="day", model="acme-big")
            store.set_budget(1000, period="month")
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page(**PERIOD)
    assert not at.exception
    return at


def test_alerts_and_budgets_panels(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(tmp_path, monkeypatch, planted=True, budgets=True)
    assert "Alerts" in [s.value for s in at.subheader]
    # Spikes first (what costs money), as warnings, with the thread behind them.
    warnings = [_plain(w.value) for w in at.warning]
    assert (
        "acme-big cost $41.20 on 2026-10-08, 6.3x its usual Thursday $6.50; 84 % of it in thread 3f0c9a1e… (codereview)"
        in warnings
    )
    # Threads are compared with threads by `alerts` and the report, not on the page (seconds at scale).
    assert not any(w.startswith("thread ") for w in warnings)
    infos = [_plain(i.value) for i in at.info]
    assert any(i.startswith("new model gamma-new: $2.00") for i in infos)
    assert "beta-small cost $0.00 on 2026-10-10, down from its usual Saturday $3.00" in infos  # a dip
    # What did not fit among the first six is one click away.
    more = next(e for e in at.expander if e.label == "2 more")
    assert "tool codereview cost $0.00 on 2026-10-10" in _plain(more.markdown[0].value)
    # Budgets: over first, as a full bar that says by how much.
    assert "Budgets" in [s.value for s in at.subheader]
    bars = at.get("progress")
    assert len(bars) == 2
    first = bars[0].proto
    assert first.value == 100
    assert _plain(first.text).endswith(": $3.00 of $2.00 (150 %), over by $1.00")
    assert "model acme-big, day" in _plain(first.text)
    assert "whole store, month" in _plain(bars[1].proto.text)


def test_a_steady_store_with_no_budgets_shows_no_alert(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    at = _open(tmp_path, monkeypatch, planted=False, budgets=False)
    assert "Alerts" not in [s.value for s in at.subheader]
    assert "Budgets" not in [s.value for s in at.subheader]
    assert any("No unusual cost or usage in this period" in c.value for c in at.caption)
    assert not at.get("progress")
