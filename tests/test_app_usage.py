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
from persistence.formatting import money, percent
from ui.widgets import thread_title

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
    at.segmented_control(key="stack").set_value("provider").run()
    assert not at.exception
    providers = app_store.usage(("provider",))
    expected = {p: c for p, c in zip(providers["provider"], providers["cost_usd"], strict=True) if c > 0}
    assert trace_totals(at, "usage_cost_chart") == pytest.approx(expected)
    at.segmented_control(key="stack").set_value("tool_name").run()
    tools = app_store.usage(("tool_name",))
    expected = {(t or "(no tool)"): c for t, c in zip(tools["tool_name"], tools["cost_usd"], strict=True) if c > 0}
    assert trace_totals(at, "usage_cost_chart") == pytest.approx(expected)


def test_a_period_and_a_filter_narrow_the_figures(app_store: persistence.Store) -> None:
    at = open_page("usage", period="custom", **{"from": "2026-01-10", "to": "2026-01-20"})
    at.selectbox(key="provider").select("kimi").run()
    assert not at.exception
    expected = app_store.usage(
        (), since=datetime(2026, 1, 10, tzinfo=UTC), until=datetime(2026, 1, 21, tzinfo=UTC), provider="kimi"
    ).iloc[0]
    assert sum(trace_totals(at, "usage_cost_chart").values()) == pytest.approx(expected["cost_usd"])
    messages = next(m for m in at.metric if m.label == "Messages")
    assert messages.value == f"{int(expected['messages']):,}"
    # The charts span the whole period the cards count, quiet days included.
    days = plotly_values(plotly_figure(at, "usage_cost_chart")["data"][0]["x"])
    assert len(days) == 11 and str(days[0]).startswith("2026-01-10") and str(days[-1]).startswith("2026-01-20")


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
    assert list(top["Title"]) == [thread_title(c) for c in costliest]  # titles as displayed


def test_a_csv_of_the_shown_figures_is_offered() -> None:
    at = open_page("usage", period="all")
    button = next(b for b in at.download_button if b.proto.label == "Download CSV")
    assert button.proto.url.endswith(".csv")


def test_an_empty_period_says_so() -> None:
    at = open_page("usage")
    assert not at.exception and "No usage in" in at.info[0].value


def test_the_choices_are_in_the_url_and_restored_from_it(app_store: persistence.Store) -> None:
    """A shared link (or a reload) with ?stack=provider&model=glm-4.6 shows that view; a change
    on the page goes back into the URL."""
    at = open_page("usage", period="all", stack="provider", model="glm-4.6")
    assert not at.exception
    assert at.segmented_control(key="stack").value == "provider"
    assert at.selectbox(key="model").value == "glm-4.6"
    glm = app_store.usage(("provider",), model="glm-4.6")
    expected = {p: c for p, c in zip(glm["provider"], glm["cost_usd"], strict=True) if c > 0}
    assert trace_totals(at, "usage_cost_chart") == pytest.approx(expected)

    at.segmented_control(key="stack").set_value("tool_name").run()
    at.segmented_control(key="by").set_value("session_id").run()
    assert not at.exception
    assert at.query_params["stack"] == "tool_name"
    assert at.query_params["by"] == "session_id"
    # The filters are bound to the URL by Streamlit, which writes the address in the browser
    # (AppTest does not see that write): each names its parameter.
    for name in ("model", "provider", "tool"):
        assert at.selectbox(key=name).proto.query_param_key == name
    at.segmented_control(key="stack").set_value("model").run()
    assert "stack" not in at.query_params  # the default leaves the URL


def test_a_stale_choice_in_the_url_falls_back() -> None:
    at = open_page("usage", period="all", stack="colour", by="nonsense")
    assert not at.exception
    assert at.segmented_control(key="stack").value == "model"
    assert at.segmented_control(key="by").value == "tag"


def test_cache_hit_rate_and_savings_per_model_are_the_reports(app_store: persistence.Store) -> None:
    from persistence.report.tables import build

    at = open_page("usage", period="all")
    assert not at.exception
    report = build(app_store).tables["cache_savings"]
    assert len(report) and float(report["saved_usd"].sum()) > 0
    shown = table_with(at, "saved_usd")
    assert list(shown["model"]) == list(report["model"])
    assert list(shown["cache_hit_rate"]) == pytest.approx(list(report["cache_hit_rate"]))
    # A model cached on days it had no price saved an unknown amount: NaN, drawn as "unpriced".
    assert list(shown["saved_usd"]) == pytest.approx(list(report["saved_usd"]), nan_ok=True)
    saved = next(m for m in at.metric if m.label == "Saved by caching")
    assert saved.value == money(float(report["saved_usd"].sum()))  # NaN rows add nothing
    rate = next(m for m in at.metric if m.label == "Cache-hit rate")
    assert rate.value == percent(float(report["cached_input_tokens"].sum() / report["prompt_tokens"].sum()))
    assert all(link.startswith("threads?model=") and "period=all" in link for link in shown["threads"])


def test_an_unpriced_model_never_costs_zero(app_store: persistence.Store) -> None:
    at = open_page("usage", period="all")
    table = table_with(at, "per_message")
    row = table[table["model"] == UNPRICED_MODEL].iloc[0]
    assert row["cost_usd"] is None or row["cost_usd"] != row["cost_usd"]  # missing: drawn as "unpriced"
    cost = next(m for m in at.metric if m.label == "Cost")
    assert cost.value == money(float(app_store.usage(()).iloc[0]["cost_usd"])) and cost.delta == "+ 3 unpriced"
