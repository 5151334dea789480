"""The Usage & cost page: charts whose totals are the store's, unpriced models, tables."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from app_seed import (
    UNPRICED_MODEL,
    app_store,
    app_url,
    open_page,
    plotly_figure,
    plotly_values,
    seeded_folder,
    table_with,
)

import persistence

__all__ = ["app_store", "app_url", "seeded_folder"]
pytestmark = pytest.mark.usefixtures("app_url")


def trace_totals(at, key: str) -> dict[str, float]:  # type: ignore[no-untyped-def]
    fig = plotly_figure(at, key)
    return {t["name"]: float(sum(plotly_values(t["y"]))) for t in fig["data"]}


def test_charts_add_up_to_the_store_usage(app_store: persistence.Store) -> None:
    at = open_page("usage", period="all")
    assert not at.exception
    by_model = app_store.usage(("model",)).fillna({"model": "(no model)"}).set_index("model")
    costs = trace_totals(at, "usage_cost_chart")
    tokens = trace_totals(at, "usage_tokens_chart")
    priced = by_model[by_model["cost_usd"] > 0]["cost_usd"]
    assert costs == pytest.approx(priced.to_dict())
    used = by_model[by_model["total_tokens"] > 0]["total_tokens"]
    assert tokens == pytest.approx(used.astype(float).to_dict())
    assert sum(costs.values()) == pytest.approx(app_store.usage(()).iloc[0]["cost_usd"])


def test_stacking_by_provider_or_tool(app_store: persistence.Store) -> None:
    at = open_page("usage", period="all")
    at.segmented_control(key="usage_stack").set_value("provider").run()
    assert not at.exception
    providers = app_store.usage(("provider",))
    expected = {p: c for p, c in zip(providers["provider"], providers["cost_usd"], strict=True) if c > 0}
    assert trace_totals(at, "usage_cost_chart") == pytest.approx(expected)
    at.segmented_control(key="usage_stack").set_value("tool_name").run()
    tools = app_store.usage(("tool_name",))
    expected = {(t or "(no tool)"): c for t, c in zip(tools["tool_name"], tools["cost_usd"], strict=True) if c > 0}
    assert trace_totals(at, "usage_cost_chart") == pytest.approx(expected)


def test_a_period_and_a_filter_narrow_the_figures(app_store: persistence.Store) -> None:
    at = open_page("usage", period="custom", **{"from": "2026-01-10", "to": "2026-01-20"})
    at.selectbox(key="usage_provider").select("kimi").run()
    assert not at.exception
    expected = app_store.usage(
        (), since=datetime(2026, 1, 10, tzinfo=UTC), until=datetime(2026, 1, 21, tzinfo=UTC), provider="kimi"
    ).iloc[0]
    assert sum(trace_totals(at, "usage_cost_chart").values()) == pytest.approx(expected["cost_usd"])
    messages = next(m for m in at.metric if m.label == "Messages")
    assert messages.value == f"{int(expected['messages']):,}"


def test_unpriced_models_are_named() -> None:
    at = open_page("usage", period="all")
    warning = " ".join(w.value for w in at.warning)
    assert "3 messages have no price" in warning and UNPRICED_MODEL in warning
    assert next(m for m in at.metric if m.label == "Unpriced messages").value == "3"


def test_cost_by_model_and_top_threads_tables(app_store: persistence.Store) -> None:
    at = open_page("usage", period="all")
    table = table_with(at, "per_message")
    expected = app_store.usage(("model",))
    expected = expected[expected["messages"] > 0]
    assert float(table["cost_usd"].sum()) == pytest.approx(float(expected["cost_usd"].sum()))
    assert table["cost_usd"].iloc[0] == pytest.approx(float(expected["cost_usd"].max()))
    top = next(d for d in at.dataframe if d.key == "usage_top_threads").value
    costliest = app_store.list_conversations(order="cost", limit=10).items
    assert list(top["Title"]) == [c.title for c in costliest]


def test_a_csv_of_the_shown_figures_is_offered() -> None:
    at = open_page("usage", period="all")
    button = next(b for b in at.download_button if b.proto.label == "Download CSV")
    assert button.proto.url.endswith(".csv")


def test_an_empty_period_says_so() -> None:
    at = open_page("usage")
    assert not at.exception and "No usage in" in at.info[0].value
