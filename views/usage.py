"""Usage & cost: tokens and cost by day, stacked by model, provider or tool; where the money goes."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from persistence.formatting import money, tokens
from persistence.store import USAGE_COLUMNS
from ui import data, queries, widgets
from ui.nav import PAGES
from ui.queries import STACK_KEYS
from ui.safe import escape_markdown, inline_code

url = data.store_url()

period = widgets.page_header("Usage & cost").period

facets = queries.choices(url)
c = st.columns([2, 2, 2, 2])
stack = c[0].segmented_control(
    "Stack by", list(STACK_KEYS), format_func=STACK_KEYS.__getitem__, default="model", required=True, key="usage_stack"
)
stack = stack or "model"


def any_of(col: st.delta_generator.DeltaGenerator, label: str, options: list[str], key: str) -> str | None:
    return col.selectbox(label, [None, *options], format_func=lambda v: "Any" if v is None else v, key=key)


model = any_of(c[1], "Model", facets.get("models", []), "usage_model")
provider = any_of(c[2], "Provider", facets.get("providers", []), "usage_provider")
tool = any_of(c[3], "Tool", facets.get("tools", []), "usage_tool")

d = queries.usage(url, stack, since=period.since, until=period.until, model=model, provider=provider, tool_name=tool)
by_day = d.by_day
if by_day.empty or int(by_day["messages"].sum()) == 0:
    st.info(
        f"No usage in {escape_markdown(period.describe())} with these filters. Choose a longer period.",
        icon=":material/event_busy:",
    )
    st.stop()

none_label = {"model": "(no model)", "provider": "(no provider)", "tool_name": "(no tool)"}[stack]
by_day = by_day.assign(**{stack: by_day[stack].fillna(none_label)})
totals = by_day[list(USAGE_COLUMNS)].sum()

m = st.columns(4)
m[0].metric("Messages", f"{int(totals['messages']):,}", border=True)
m[1].metric("Tokens", tokens(totals["total_tokens"]), help=f"{int(totals['total_tokens']):,} tokens", border=True)
m[2].metric("Cost", money(float(totals["cost_usd"])), help=f"${float(totals['cost_usd']):,.6f} USD", border=True)
m[3].metric(
    "Unpriced messages",
    f"{int(totals['unpriced_messages']):,}",
    help="Messages from models without a price: their cost is unknown and not in the totals",
    border=True,
)

missing = d.by_model[d.by_model["unpriced_messages"] > 0]
if len(missing):
    listed = ", ".join(
        f"{inline_code(model or '(no model)')} ({int(n):,})"
        for model, n in zip(missing["model"], missing["unpriced_messages"], strict=True)
    )
    st.warning(
        f"**{int(totals['unpriced_messages']):,} messages have no price.** Models missing a price: {listed}. "
        "Add prices (a TOML file like the package's `model_prices.toml`) and run "
        "`python -m persistence reprice --prices FILE`.",
        icon=":material/money_off:",
    )

# -- charts ------------------------------------------------------------------------------

order = (
    by_day.groupby(stack)[["cost_usd", "total_tokens"]].sum().sort_values(["cost_usd", "total_tokens"], ascending=False)
)
colors = widgets.color_map([*order.index, none_label])
colors[none_label] = "#B0B0B0"
days = pd.date_range(by_day["day"].min(), by_day["day"].max(), freq="D")


def stacked(column: str, prefix: str = "") -> go.Figure:
    fig = go.Figure()
    for name in order.index:
        series = by_day[by_day[stack] == name].set_index("day")[column].reindex(days, fill_value=0)
        if not series.any():
            continue
        fig.add_bar(
            x=series.index,
            y=series.values,
            name=str(name),
            marker_color=colors.get(str(name)),
            hovertemplate=f"{escape_hover(str(name))}: {prefix}%{{y:,.4~f}}<extra></extra>",
        )
    fig.update_layout(barmode="stack")
    if prefix:
        fig.update_yaxes(tickprefix=prefix)
    return fig


def escape_hover(text: str) -> str:
    # Plotly hover templates interpret %{…} and a few HTML tags: keep category names literal.
    return text.replace("%", "%%").replace("<", "&lt;").replace(">", "&gt;").replace("{", "(").replace("}", ")")


left, right = st.columns(2)
with left:
    widgets.plot(stacked("cost_usd", "$"), key="usage_cost_chart", height=420, title="Cost per day (USD)")
with right:
    widgets.plot(stacked("total_tokens"), key="usage_tokens_chart", height=420, title="Tokens per day")

csv = by_day.assign(day=by_day["day"].dt.strftime("%Y-%m-%d")).to_csv(index=False)
first, last = by_day["day"].min(), by_day["day"].max()
st.download_button(
    "Download CSV",
    data=csv,
    file_name=f"usage-by-day-and-{stack}-{first:%Y%m%d}-{last:%Y%m%d}.csv",
    mime="text/csv",
    icon=":material/download:",
    on_click="ignore",
    help="The daily figures behind these charts, one row per day and " + STACK_KEYS[stack].lower(),
    key="usage_csv",
)

# -- tables ------------------------------------------------------------------------------

st.subheader("Cost by model")
table = d.by_model.assign(
    model=d.by_model["model"].fillna("(no model)"),
    per_message=d.by_model["cost_usd"] / d.by_model["messages"].where(d.by_model["messages"] > 0),
)
st.dataframe(
    table[
        [
            "model",
            "provider",
            "messages",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "total_tokens",
            "cost_usd",
            "per_message",
            "unpriced_messages",
        ]
    ],
    hide_index=True,
    key="usage_by_model",
    column_config={
        "model": "Model",
        "provider": "Provider",
        "messages": st.column_config.NumberColumn("Messages", format="localized"),
        "input_tokens": st.column_config.NumberColumn("Input", format="localized"),
        "cached_input_tokens": st.column_config.NumberColumn("Cached input", format="localized"),
        "cache_write_tokens": st.column_config.NumberColumn("Cache write", format="localized"),
        "output_tokens": st.column_config.NumberColumn("Output", format="localized"),
        "reasoning_tokens": st.column_config.NumberColumn("Reasoning", format="localized"),
        "total_tokens": st.column_config.NumberColumn("Total tokens", format="localized"),
        "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f"),
        "per_message": st.column_config.NumberColumn("Per message", format="$%.5f"),
        "unpriced_messages": st.column_config.NumberColumn("Unpriced", format="localized"),
    },
)

st.subheader("Top threads by cost")
if d.top_threads:
    top = pd.DataFrame(
        {
            "Title": [widgets.thread_title(t) for t in d.top_threads],
            "Cost": [t.cost_usd for t in d.top_threads],
            "Messages": [t.message_count for t in d.top_threads],
            "Tokens": [t.total_tokens for t in d.top_threads],
            "Model": [t.model for t in d.top_threads],
            "Tool": [t.tool_name for t in d.top_threads],
            "Last activity": [t.updated_at for t in d.top_threads],
        }
    )
    event = st.dataframe(
        top,
        hide_index=True,
        on_select="rerun",
        selection_mode="single-row",
        key="usage_top_threads",
        column_config={
            "Title": st.column_config.TextColumn(width="large"),
            "Cost": st.column_config.NumberColumn(format="$%.4f"),
            "Tokens": st.column_config.NumberColumn(format="localized"),
            "Last activity": st.column_config.DatetimeColumn(format="YYYY-MM-DD HH:mm", timezone="UTC"),
        },
    )
    st.caption("Threads active in the period, by their whole cost. Select a row to open it.")
    if event.selection.rows:
        chosen = d.top_threads[event.selection.rows[0]]
        st.switch_page(PAGES["thread"].path, query_params={"thread": chosen.continuation_id})
else:
    st.caption("No thread in this period.")
