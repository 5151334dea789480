"""Overview: the period's totals against the period before, its cost per day, and what needs attention."""

from __future__ import annotations

import plotly.graph_objects as go
import streamlit as st

import persistence
from persistence import palette
from persistence.formatting import money, size, thread_cost, tokens
from ui import cards, data, fmt, lists, queries, stored, widgets
from ui.insights import draw_alerts, draw_budgets
from ui.nav import PAGES
from ui.safe import escape_markdown, inline_code

OUTBOX_BEHIND_S = 60  # an outbox whose oldest item waits longer than this is behind

url = data.store_url()
store = data.get_store()

header = widgets.page_header("Overview")
period = header.period
try:
    d = queries.overview(url, period.since, period.until, period.prev_since, period.prev_until, data.today())
except persistence.StoreDamagedError as exc:  # the figures sit on a damaged page: say so, no traceback
    st.error(f"**The database file is damaged.** {escape_markdown(data.scrub(str(exc), url))}", icon=":material/error:")
    st.stop()
header.caption(
    f"{escape_markdown(period.describe())} · {widgets.store_caption(store)} · "
    f"last activity {escape_markdown(fmt.ago(d.last_activity))}"
)

# -- what needs attention ----------------------------------------------------------------

cur, prev = d.current, d.previous
if cur.unpriced_messages:
    missing = d.by_model[d.by_model["unpriced_messages"] > 0]
    names = ", ".join(inline_code(m or "(no model)") for m in missing["model"])
    st.warning(
        f"**{cur.unpriced_messages:,} messages have no price**, so the cost shown leaves them out. "
        f"Models without a price: {names}. Add their prices, then run `python -m persistence reprice`.",
        icon=":material/money_off:",
    )

health = queries.health()
if health is None:
    st.caption(":material/hourglass_top: Checking the store's health…")
else:
    if health.error:
        st.warning(
            f"The health check failed: {escape_markdown(data.scrub(health.error, url))}", icon=":material/warning:"
        )
    if health.outbox_depth:
        age = health.outbox_oldest_age_s or 0.0
        if age > OUTBOX_BEHIND_S or health.outbox_last_error:
            text = (
                f"**The write outbox is behind:** {health.outbox_depth:,} writes waiting, "
                f"the oldest for {fmt.duration(age * 1000)}."
            )
            if health.outbox_last_error:
                text += f" Last error: {escape_markdown(data.scrub(health.outbox_last_error, url))}"
            st.warning(text, icon=":material/schedule_send:")
    elif health.outbox_last_error:
        st.warning(
            f"The write outbox reported an error: {escape_markdown(data.scrub(health.outbox_last_error, url))}",
            icon=":material/schedule_send:",
        )
    if health.outbox_dead:
        turns = (
            f" ({health.outbox_set_aside:,} of them single turns left out of threads)"
            if health.outbox_set_aside
            else ""
        )
        st.error(
            f"**The store refused {health.outbox_dead:,} queued writes**{turns}. They are kept in the "
            "outbox's `outbox_dead` table, not in the store; `python -m persistence doctor` reports them "
            "and the server's log names each thread.",
            icon=":material/report:",
        )
    if health.integrity and health.integrity != "ok":
        text = f"**The database integrity check failed:** {escape_markdown(health.integrity)}. Writes are refused."
        if health.recover_command:
            text += f" Copy what is readable into a new file with {inline_code(health.recover_command)}."
        st.error(text, icon=":material/error:")
    if health.files_missing_bytes:
        st.warning(
            f"{health.files_missing_bytes:,} stored files have no bytes in the file store "
            "(`python -m persistence doctor` lists them).",
            icon=":material/broken_image:",
        )

# -- totals ------------------------------------------------------------------------------


def delta(current: float, previous: float | None) -> str | None:
    return fmt.change(current, previous)


p = prev
cols = st.columns(5)
cols[0].metric(
    "Active threads",
    fmt.number(cur.threads),
    delta(cur.threads, p.threads if p else None),
    delta_color="off",
    delta_description=period.compare_label,
    help="Threads with any activity in the period",
    border=True,
)
cols[1].metric(
    "Messages",
    fmt.number(cur.messages),
    delta(cur.messages, p.messages if p else None),
    delta_color="off",
    delta_description=period.compare_label,
    border=True,
)
cols[2].metric(
    "Tokens",
    tokens(cur.tokens),
    delta(cur.tokens, p.tokens if p else None),
    delta_color="off",
    delta_description=period.compare_label,
    help=f"{cur.tokens:,} tokens: input, cached input, cache writes, output and reasoning",
    border=True,
)
cost_change = delta(cur.cost_usd, p.cost_usd if p else None)
unpriced = cards.unpriced_note(cur.unpriced_messages)  # never a bare $0 for usage without a price
cols[3].metric(
    "Cost",
    cards.cost_value(cur.cost_usd, cur.unpriced_messages),
    cost_change or unpriced,
    delta_color="off",
    delta_arrow="auto" if cost_change else "off",
    delta_description=" · ".join(x for x in (period.compare_label, unpriced) if x) if cost_change else None,
    help=f"${cur.cost_usd:,.6f} USD at the price in force when each message was written"
    + (f"; {cur.unpriced_messages:,} unpriced messages are not included" if cur.unpriced_messages else ""),
    border=True,
)
all_stored = d.stored_total.iloc[0] if len(d.stored_total) else None
duplicates = stored.all_duplicates(files=cur.files, uploads=cur.uploads)
cols[4].metric(
    "Stored",
    stored.stored_value(cur.stored_bytes, files=cur.files, uploads=cur.uploads),
    # "−100 %" would read as a failure when dedup kept every upload out of storage: say that instead.
    duplicates or delta(cur.stored_bytes, p.stored_bytes if p else None),
    delta_color="off",
    delta_arrow="off" if duplicates else "auto",
    delta_description=None if duplicates else period.compare_label,
    help=(
        f"New bytes stored in the period, after dedup ({cur.uploads:,} uploads of {size(cur.uploaded_bytes)}). "
        + (
            f"All time: {size(int(all_stored['bytes']))} in {int(all_stored['files']):,} files."
            if all_stored is not None
            else ""
        )
    ),
    border=True,
)

if cur.messages == 0 and cur.threads == 0:
    st.info(
        f"Nothing happened in this period. The last activity was {escape_markdown(fmt.ago(d.last_activity))}: "
        "choose a longer period above.",
        icon=":material/event_busy:",
    )

# Unusual days against each model's, tool's … usual, and the budgets' progress (ui/insights.py).
draw_alerts(store, period)
draw_budgets(store)

# -- cost per day of the period, models, recent threads ---------------------------------------

left, right = st.columns([3, 2])
with left:
    st.subheader("Cost per day")
    if len(d.daily):
        # The chart covers the page's period, so its total is the Cost card's.
        shown = f"{d.daily['day'].iloc[0]:%Y-%m-%d} – {d.daily['day'].iloc[-1]:%Y-%m-%d}"
        st.caption(
            f"{escape_markdown(period.label)} ({shown}): {money(float(d.daily['cost_usd'].sum()))}, "
            f"{int(d.daily['messages'].sum()):,} messages"
        )
    spark = go.Figure(
        go.Scatter(
            x=d.daily["day"],
            y=d.daily["cost_usd"],
            mode="lines",
            fill="tozeroy",
            line={"width": 2, "color": palette.COST},
            hovertemplate="%{x|%Y-%m-%d}: $%{y:.4f}<extra></extra>",
            name="cost",
        )
    )
    spark.update_yaxes(tickprefix="$", rangemode="tozero")
    widgets.plot(spark, key="overview_cost_by_day", height=220)

with right:
    st.subheader("Cost by model")
    top = d.by_model.head(8).iloc[::-1]
    if len(top):
        colors = widgets.color_map(d.by_model["model"])
        bars = go.Figure(
            go.Bar(
                x=top["cost_usd"],
                y=[m or widgets.NONE_LABEL for m in top["model"]],
                orientation="h",
                marker_color=[colors[m or widgets.NONE_LABEL] for m in top["model"]],
                customdata=[
                    thread_cost(float(c), int(u))
                    for c, u in zip(top["cost_usd"], top["unpriced_messages"], strict=True)
                ],
                hovertemplate="%{y}: %{customdata}<extra></extra>",
                name="cost",
            )
        )
        bars.update_xaxes(tickprefix="$")
        widgets.plot(bars, key="overview_models", height=260, hovermode="closest")
        st.page_link(PAGES["usage"].path, label="Usage & cost by day", icon=":material/arrow_forward:")
    else:
        st.caption("No model calls in this period.")

st.subheader("Recent threads")
if d.recent:
    # Plain links (one history entry each), so Back from a thread returns here.
    lists.thread_rows(
        d.recent,
        title=widgets.thread_title,
        meta=lambda conv: (
            f"{fmt.ago(conv.updated_at)} · {conv.tool_name or 'no tool'} · {conv.model or 'no model'} · "
            f"{conv.message_count} messages"
        ),
    )
    st.page_link(PAGES["threads"].path, label="All threads", icon=":material/arrow_forward:")
else:
    st.caption("No thread was active in this period.")
