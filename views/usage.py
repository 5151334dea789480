"""Usage & cost: tokens and cost by day, stacked by model, provider, tool or user; where the money
goes (by model, tag, session and user), and what prompt caching saved."""

from __future__ import annotations

import pandas as pd
import plotly.graph_objects as go
import streamlit as st

from persistence import palette
from persistence.formatting import money, percent, thread_cost, tokens
from persistence.store import USAGE_COLUMNS
from ui import cards, data, export, layout, queries, urlstate, whatif, widgets
from ui import period as periods
from ui.nav import PAGES, link
from ui.queries import STACK_KEYS, THREAD_GROUPS
from ui.safe import escape_markdown, inline_code

url = data.store_url()

period = widgets.page_header("Usage & cost").period

facets = queries.choices(url)
# Every choice on this page is in the URL (``?stack=provider&model=glm-4.6&by=session_id``), as
# the period is: a reload, Back or a shared link shows the same figures.
c = layout.filter_panel("usage").columns([3, 2, 2, 2])  # four stacking choices need the room at 1280 px
urlstate.choice("stack", list(STACK_KEYS), "model")
stack = c[0].segmented_control(
    "Stack by",
    list(STACK_KEYS),
    format_func=STACK_KEYS.__getitem__,
    required=True,
    key="stack",
    on_change=urlstate.keep_choice,
    args=("stack", "model"),
)
stack = stack if stack in STACK_KEYS else "model"


def any_of(col: st.delta_generator.DeltaGenerator, label: str, options: list[str], key: str) -> str | None:
    return col.selectbox(
        label, [None, *options], format_func=lambda v: "Any" if v is None else v, key=key, bind="query-params"
    )


model = any_of(c[1], "Model", facets.get("models", []), "model")
provider = any_of(c[2], "Provider", facets.get("providers", []), "provider")
tool = any_of(c[3], "Tool", facets.get("tools", []), "tool")
filters = {"model": model, "provider": provider, "tool_name": tool}
# What the Threads page calls its filters in the URL (views/threads.py): groups it can list.
THREAD_PARAMS = {"tag": "tag", "model": "model", "session_id": "session"}


def threads_link(**narrow: str | None) -> str:
    """The Threads page listing what a row of this page counts: this page's period and filters
    (under the Threads page's own parameter names), narrowed by ``narrow``."""
    query = {"model": model, "provider": provider, "tool": tool, **narrow}
    if period.key != periods.DEFAULT:
        query["period"] = period.key
        if period.key == "custom" and period.first_day and period.last_day:
            query["from"], query["to"] = period.first_day.isoformat(), period.last_day.isoformat()
    return link("threads", **{k: v for k, v in query.items() if v})


d = queries.usage(url, stack, since=period.since, until=period.until, **filters)
by_day = d.by_day
if by_day.empty or int(by_day["messages"].sum()) == 0:
    st.info(
        f"No usage in {escape_markdown(period.describe())} with these filters. Choose a longer period.",
        icon=":material/event_busy:",
    )
    st.stop()

none_label = {"model": "(no model)", "provider": "(no provider)", "tool_name": "(no tool)", "user_id": "(no user)"}[
    stack
]
by_day = by_day.assign(**{stack: by_day[stack].fillna(none_label)})
totals = by_day[list(USAGE_COLUMNS)].sum()

m = st.columns(4)
m[0].metric("Messages", f"{int(totals['messages']):,}", border=True)
m[1].metric("Tokens", tokens(totals["total_tokens"]), help=f"{int(totals['total_tokens']):,} tokens", border=True)
m[2].metric(
    "Cost",
    cards.cost_value(float(totals["cost_usd"]), int(totals["unpriced_messages"])),
    cards.unpriced_note(int(totals["unpriced_messages"])),  # never a bare $0 for usage without a price
    delta_color="off",
    delta_arrow="off",
    help=f"${float(totals['cost_usd']):,.6f} USD",
    border=True,
)
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
colors = widgets.color_map([*order.index, none_label], kind=stack)
colors[none_label] = palette.NO_MODEL
# Every day of the period (all time: from the first day with usage), so the charts span what
# the cards above count and a quiet stretch shows as one.
days = pd.date_range(
    pd.Timestamp(period.first_day) if period.first_day else by_day["day"].min(),
    pd.Timestamp(period.last_day) if period.last_day else by_day["day"].max(),
    freq="D",
)


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

# Exact decimals (0.06742799, not 0.06742799000000001): the export's rule for money in CSV.
csv = by_day.assign(
    day=by_day["day"].dt.strftime("%Y-%m-%d"), cost_usd=by_day["cost_usd"].map(export.decimal_text)
).to_csv(index=False)
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
unpriced_only = (d.by_model["unpriced_messages"] > 0) & (d.by_model["cost_usd"] == 0)
table = d.by_model.assign(
    model=d.by_model["model"].fillna("(no model)"),
    # A model with no price has an unknown cost, not $0: the cell reads "unpriced".
    cost_usd=d.by_model["cost_usd"].mask(unpriced_only),
    per_message=(d.by_model["cost_usd"] / d.by_model["messages"].where(d.by_model["messages"] > 0)).mask(unpriced_only),
    threads=pd.Series([threads_link(model=m) if m else None for m in d.by_model["model"]], dtype="object"),
)
st.dataframe(
    # What a reader decides from first (cost, its link), so it stays on screen at 1280 px.
    table[
        [
            "model",
            "cost_usd",
            "unpriced_messages",
            "per_message",
            "threads",
            "messages",
            "total_tokens",
            "input_tokens",
            "cached_input_tokens",
            "cache_write_tokens",
            "output_tokens",
            "reasoning_tokens",
            "provider",
        ]
    ],
    hide_index=True,
    key="usage_by_model",
    placeholder="unpriced",
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
        "cost_usd": st.column_config.NumberColumn("Cost", format="$%.4f", help="USD; unpriced messages not included"),
        "per_message": st.column_config.NumberColumn("Per message", format="$%.5f"),
        "unpriced_messages": st.column_config.NumberColumn(
            "Unpriced", format="localized", help="Messages without a price: their cost is not in Cost"
        ),
        "threads": st.column_config.LinkColumn("Threads", display_text="Threads ↗", help="Its threads in this period"),
    },
)

whatif.draw_period(url, since=period.since, until=period.until, **filters)

# -- prompt caching ------------------------------------------------------------------------

st.subheader("Prompt caching")
cache = queries.cache_savings(url, since=period.since, until=period.until, **filters)
if cache.empty:
    st.caption("No cached input tokens in this period: no model read its prompt from a cache.")
else:
    saved = float(cache["saved_usd"].sum())  # NaN rows (no price) add nothing, and are named below
    prompt = int(cache["prompt_tokens"].sum())
    cached = int(cache["cached_input_tokens"].sum())
    k = st.columns(3)
    k[0].metric(
        "Saved by caching",
        money(saved),
        help="What the cached input tokens would have cost at each model's input price, minus what they cost "
        "at its cached price, with the price in force on each day (base tier)",
        border=True,
    )
    k[1].metric(
        "Cache-hit rate",
        percent(cached / prompt if prompt else None),
        help="Cached input tokens out of all prompt tokens (input, cached input and cache writes) "
        "of the models that used a cache",
        border=True,
    )
    k[2].metric("Cached input tokens", tokens(cached), help=f"{cached:,} tokens", border=True)
    st.dataframe(
        cache.assign(threads=[threads_link(model=m) for m in cache["model"]])[
            [
                "model",
                "saved_usd",
                "cache_hit_rate",
                "threads",
                "cached_input_tokens",
                "prompt_tokens",
                "cached_cost_usd",
                "uncached_cost_usd",
                "unpriced_cached_tokens",
            ]
        ],
        hide_index=True,
        key="usage_cache",
        placeholder="unpriced",
        column_config={
            "model": "Model",
            "prompt_tokens": st.column_config.NumberColumn("Prompt tokens", format="localized"),
            "cached_input_tokens": st.column_config.NumberColumn("Cached", format="localized"),
            "cache_hit_rate": st.column_config.NumberColumn("Cache-hit rate", format="percent"),
            "cached_cost_usd": st.column_config.NumberColumn("Paid for cached", format="$%.4f"),
            "uncached_cost_usd": st.column_config.NumberColumn("Uncached it would cost", format="$%.4f"),
            "saved_usd": st.column_config.NumberColumn("Saved", format="$%.4f"),
            "unpriced_cached_tokens": st.column_config.NumberColumn(
                "Unpriced cached", format="localized", help="Cached tokens on days the model had no price"
            ),
            "threads": st.column_config.LinkColumn("Threads", display_text="Threads ↗"),
        },
    )
    unknown = cache[cache["saved_usd"].isna()]
    st.caption(
        "The same computation as the report's cache table (`python -m persistence report`)."
        + (
            f" Not in the savings: {', '.join(inline_code(str(m)) for m in unknown['model'])}, cached on days "
            "without a price (an unknown amount, not $0)."
            if len(unknown)
            else ""
        )
    )

# -- spend by who and what -------------------------------------------------------------------

GROUPS = {**THREAD_GROUPS, "user_id": "User"}
NO_GROUP = {"tag": "(no tag)", "session_id": "(no session)", "user_id": "(no user)"}
st.subheader("Spend by tag, session and user")
urlstate.choice("by", list(GROUPS), "tag")
by = st.segmented_control(
    "Group by",
    list(GROUPS),
    format_func=GROUPS.__getitem__,
    required=True,
    key="by",
    on_change=urlstate.keep_choice,
    args=("by", "tag"),
)
by = by if by in GROUPS else "tag"
if by in THREAD_GROUPS:
    groups = queries.thread_groups(url, by, since=period.since, until=period.until, **filters)
    spend = groups.table
    counted = (
        f"the {groups.threads_read:,} costliest of the {groups.threads_total:,} threads"
        if groups.threads_read < groups.threads_total
        else f"the {groups.threads_total:,} threads"
    )
    what = (
        "a thread with several tags counts under each, so the rows add up to more than the total"
        if by == "tag"
        else "each thread belongs to one session"
    )
    caption = (
        f"From {counted} active in the period with these filters, each with its whole cost (also turns "
        f"outside the period): tags and sessions are kept on threads, not in the daily rollup. {what.capitalize()}."
    )
else:
    spend = queries.usage(url, "user_id", since=period.since, until=period.until, **filters).by_day
    spend = (
        spend.groupby("user_id", dropna=False, as_index=False)[
            ["messages", "total_tokens", "cost_usd", "unpriced_messages"]
        ]
        .sum()
        .sort_values(["cost_usd", "total_tokens"], ascending=False, kind="stable")
    )
    spend = spend[spend["messages"] > 0].reset_index(drop=True)
    caption = "Messages written in the period, by the user who owns them (from the daily rollup)."

if spend.empty:
    st.caption("Nothing to group in this period.")
else:
    names = spend[by].astype(object).fillna(NO_GROUP[by]).astype(str)  # an all-empty key column is float
    top_rows = spend.head(12).iloc[::-1]
    bars = go.Figure(
        go.Bar(
            x=top_rows["cost_usd"],
            y=[escape_hover(n) for n in names.head(12).iloc[::-1]],
            orientation="h",
            marker_color=palette.COST,
            customdata=[
                thread_cost(float(c), int(u))
                for c, u in zip(top_rows["cost_usd"], top_rows["unpriced_messages"], strict=True)
            ],
            hovertemplate="%{y}: %{customdata}<extra></extra>",
            name="cost",
        )
    )
    bars.update_xaxes(tickprefix="$")
    widgets.plot(bars, key="usage_spend_by", height=max(160, 28 * len(top_rows) + 60), hovermode="closest")
    links = [
        threads_link(**{THREAD_PARAMS[by]: str(v)}) if by in THREAD_PARAMS and isinstance(v, str) else None
        for v in spend[by]
    ]
    shown = pd.DataFrame(
        {
            GROUPS[by]: names,
            **({"Threads": spend["threads"]} if "threads" in spend else {}),
            "Messages": spend["messages"],
            "Tokens": spend["total_tokens"],
            "Cost": [
                thread_cost(float(c), int(u))
                for c, u in zip(spend["cost_usd"], spend["unpriced_messages"], strict=True)
            ],
            "Open": links,
        }
    )
    st.dataframe(
        shown,
        hide_index=True,
        key="usage_spend_table",
        placeholder="",  # no link for "(no tag)" and the like: the Threads page has no such filter
        column_config={
            "Messages": st.column_config.NumberColumn(format="localized"),
            "Tokens": st.column_config.NumberColumn(format="localized"),
            "Cost": st.column_config.TextColumn(help="Costliest first; unpriced messages are named, never $0"),
            "Open": st.column_config.LinkColumn(display_text="Threads ↗", help="Its threads, filtered"),
        },
    )
    st.caption(escape_markdown(caption))

st.subheader("Top threads by cost")
if d.top_threads:
    top = pd.DataFrame(
        {
            "Title": [widgets.thread_title(t) for t in d.top_threads],
            # No price for any of its turns: an unknown cost (drawn "unpriced"), not $0.
            "Cost": [None if t.unpriced_messages and not t.cost_usd else t.cost_usd for t in d.top_threads],
            "Unpriced": [t.unpriced_messages for t in d.top_threads],
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
        placeholder="unpriced",
        column_config={
            "Title": st.column_config.TextColumn(width="large"),
            "Cost": st.column_config.NumberColumn(format="$%.4f", help="USD; unpriced messages not included"),
            "Unpriced": st.column_config.NumberColumn(help="Messages without a price"),
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
