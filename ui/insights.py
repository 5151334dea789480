"""The Overview's Alerts and Budgets panels (issue 17): unusual days against a rolling baseline,
and each budget's progress with its projected end-of-period spend (persistence/insights.py)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import streamlit as st

import persistence
from persistence import Anomaly

from .data import TTL, open_store, scrub, store_url
from .period import Period
from .safe import escape_markdown

__all__ = ["draw_alerts", "draw_budgets"]

ALERTS_SHOWN = 6  # the worst few on the page; the rest in an expander
ALERT_DAYS = 30  # an open-ended or very long period is looked at over its last 30 days
ICONS = {"spike": ":material/trending_up:", "dip": ":material/trending_down:", "new": ":material/fiber_new:"}
STATE_ICONS = {"over": ":material/error:", "warning": ":material/warning:", "ok": ":material/check_circle:"}


# From the rollup only: the thread alerts read every thread of the 28 days before each day (seconds
# on a million-message store), so the page leaves them to `alerts` and the report.
DIMENSIONS = ("model", "provider", "tool_name")


@st.cache_data(ttl=TTL, show_spinner=False)
def anomalies(url: str, since: datetime, until: datetime) -> list[Anomaly]:
    """The period's anomalies (cached: they read up to 8 weeks before the period)."""
    return open_store(url).anomalies(since=since, until=until, dimensions=DIMENSIONS)


def _window(period: Period) -> tuple[datetime, datetime, bool]:
    """[since, until) looked at, and whether it is shorter than the period."""
    until = period.until or datetime.now(UTC)
    since = period.since
    if since is None or until - since > timedelta(days=ALERT_DAYS):
        return until - timedelta(days=ALERT_DAYS), until, True
    return since, until, False


KIND_ORDER = {"spike": 0, "new": 1, "dip": 2}  # on the page: what costs money first, newest day first


def draw_alerts(store: persistence.Store, period: Period) -> None:
    """Days in the period on which a model, provider, tool or thread was far from its usual."""
    since, until, cut = _window(period)
    url = store_url()
    try:
        found = anomalies(url, since, until)
    except persistence.PersistenceError as exc:
        st.warning(
            f"The alerts could not be computed: {escape_markdown(scrub(str(exc), url))}", icon=":material/warning:"
        )
        return
    span = f"the last {ALERT_DAYS} days" if cut else "this period"
    if not found:
        st.caption(
            f":material/check_circle: No unusual cost or usage in {span}: every model, provider and tool "
            "stayed near its usual (median of the 28 days before)."
        )
        return
    spikes = sum(a.kind == "spike" for a in found)
    st.subheader("Alerts", anchor=False)
    st.caption(
        f"{len(found)} unusual in {span} ({spikes} above the usual), against each one's median of the 28 days "
        "before (the same weekday's where there is enough history). `python -m persistence alerts` lists them too."
    )
    ordered = sorted(found, key=lambda a: (KIND_ORDER.get(a.kind, 3), -a.day.toordinal()))
    for a in ordered[:ALERTS_SHOWN]:
        (st.warning if a.kind == "spike" else st.info)(escape_markdown(a.reason), icon=ICONS.get(a.kind))
    if len(ordered) > ALERTS_SHOWN:
        with st.expander(f"{len(ordered) - ALERTS_SHOWN} more"):
            st.markdown(
                "\n".join(f"- {ICONS.get(a.kind, '')} {escape_markdown(a.reason)}" for a in ordered[ALERTS_SHOWN:])
            )


def draw_budgets(store: persistence.Store) -> None:
    """Each budget's progress in its current period, with the spend projected from the pace."""
    try:
        states = store.budget_status()
    except persistence.PersistenceError as exc:
        st.warning(
            f"The budgets could not be read: {escape_markdown(scrub(str(exc), store_url()))}", icon=":material/warning:"
        )
        return
    if not states:
        return
    st.subheader("Budgets", anchor=False)
    for s in states:
        text = f"{STATE_ICONS[s.state]} {escape_markdown(s.reason)}"
        st.progress(min(1.0, s.fraction), text=text)
