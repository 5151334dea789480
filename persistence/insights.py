"""Cost alerts against a baseline, and budgets: what ``store.anomalies`` and ``store.budget_status`` compute.

Both read the daily rollup (``usage_daily``, through the store's usage primitives) and the
threads' running totals, never the message table, so their cost follows days x keys, not
messages. The one exception is bounded on purpose: naming the thread behind a flagged
model, provider or tool ("80 % of it in thread 3f0c…") reads the messages of that one day
and that one key, once per anomaly.

Anomalies
    For each day and each model, provider, tool and thread, cost and tokens are compared with a
    rolling baseline: the median of the previous 28 days and their median absolute deviation
    (MAD), which a single past spike does not drag along as a mean and standard deviation
    would. Where there is enough history (four or more of the same weekday in the eight weeks
    before) the same weekday is a second baseline and a day is flagged only when it is far
    outside both, so a busy Monday that every Monday is busy raises nothing. See
    :func:`find_anomalies` for the thresholds.

Budgets
    A limit in USD per day, week (Monday to Sunday, UTC) or month, on the whole store, a
    model, a provider, a tool or a tag. Progress is the period's spend from the rollup; the
    projection is that spend divided by the share of the period gone by. A tag budget counts
    the whole cost of every thread carrying the tag, in the period the thread started (the
    rollup has no tags; threads' running totals do).
"""

from __future__ import annotations

import math
import statistics
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any, Protocol

import pandas as pd

from .formatting import money, tokens

__all__ = [
    "ANOMALY_DIMENSIONS",
    "BUDGET_PERIODS",
    "BUDGET_SCOPES",
    "Anomaly",
    "Budget",
    "BudgetStatus",
    "ThreadShare",
    "find_anomalies",
    "period_bounds",
]

ANOMALY_DIMENSIONS = ("model", "provider", "tool_name", "thread")
BUDGET_PERIODS = ("day", "week", "month")
BUDGET_SCOPES = ("store", "model", "provider", "tool_name", "tag")

BASELINE_DAYS = 28  # the rolling window every day is compared with
WEEKDAY_WEEKS = 8  # same-weekday history looked at ...
WEEKDAY_MIN = 4  # ... and used as a second baseline when it has at least this many days
MIN_HISTORY_DAYS = 7  # with less history nothing is compared (and nothing is "new")
# 1.4826 x MAD estimates the standard deviation of normally distributed data; a day is far
# outside when it is this many of them away from the median.
FAR = 5.0
SPIKE_RATIO = 2.0  # ... and at least twice the usual amount
DIP_RATIO = 0.4  # ... or at most 40 % of it
# A baseline that barely moves (MAD near 0) would flag every cent; the spread is taken as at
# least this share of the median.
MIN_SPREAD_SHARE = 0.1
THREAD_RATIO = 10.0  # thread costs are heavy-tailed: a thread must cost 10x the usual one ...
THREAD_MIN_COUNT = 20  # ... among at least this many threads in the 28 days before
THREADS_PER_DAY = 5  # the costliest flagged threads of a day, not every one
TOP_THREAD_SHARE = 0.3  # name the thread behind a flagged key when it holds this share of it
WARN_SHARE = 0.8  # a budget warns at 80 % spent, or when the pace reaches the limit
MIN_ELAPSED = 1 / 24  # the pace is not extrapolated from the first 24th of a period

WEEKDAYS = ("Monday", "Tuesday", "Wednesday", "Thursday", "Friday", "Saturday", "Sunday")
DIMENSION_WORDS = {"model": "model", "provider": "provider", "tool_name": "tool", "thread": "thread"}


@dataclass(frozen=True, slots=True)
class ThreadShare:
    """The thread that holds most of a flagged day's cost (or tokens) for one key."""

    continuation_id: str
    title: str | None
    tool_name: str | None
    cost_usd: float
    total_tokens: int
    share: float  # of the flagged amount, 0..1


@dataclass(frozen=True, slots=True)
class Anomaly:
    """A day on which one model, provider, tool or thread was far from its usual.

    ``kind``: ``spike`` (far above), ``dip`` (far below; only the first day of a run of low
    days is reported) or ``new`` (used today, not in the 28 days before). ``metric`` is
    ``cost_usd`` or ``total_tokens`` (tokens when cost alone was not far out, e.g. an
    unpriced model). ``usual`` is the baseline median, ``ratio`` value / usual (None when
    usual is 0), ``score`` how many robust standard deviations away it is. ``baseline``
    says which days ``usual`` comes from: ``28 days`` or a weekday name.
    """

    day: date
    dimension: str
    key: str | None
    kind: str
    metric: str
    value: float
    usual: float
    ratio: float | None
    score: float
    baseline: str
    reason: str
    top_thread: ThreadShare | None = None

    def as_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "day": self.day.isoformat(),
            "dimension": self.dimension,
            "key": self.key,
            "kind": self.kind,
            "metric": self.metric,
            "value": round(self.value, 6),
            "usual": round(self.usual, 6),
            "ratio": None if self.ratio is None else round(self.ratio, 2),
            "score": round(self.score, 2) if math.isfinite(self.score) else None,
            "baseline": self.baseline,
            "reason": self.reason,
            "top_thread": None,
        }
        if self.top_thread is not None:
            t = self.top_thread
            out["top_thread"] = {
                "continuation_id": t.continuation_id,
                "title": t.title,
                "tool_name": t.tool_name,
                "cost_usd": round(t.cost_usd, 6),
                "total_tokens": t.total_tokens,
                "share": round(t.share, 3),
            }
        return out


@dataclass(frozen=True, slots=True)
class Budget:
    """A spending limit (USD) per ``period`` on the whole store (``scope`` ``store``, ``key``
    None) or on one model, provider, tool_name or tag (``key``)."""

    id: str
    scope: str
    key: str | None
    period: str
    limit_usd: float
    created_at: datetime
    updated_at: datetime

    def describe(self) -> str:
        what = (
            "the whole store" if self.scope == "store" else f"{DIMENSION_WORDS.get(self.scope, self.scope)} {self.key}"
        )
        return f"{self.period} budget of {money(self.limit_usd)} on {what}"

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "scope": self.scope,
            "key": self.key,
            "period": self.period,
            "limit_usd": self.limit_usd,
            "created_at": self.created_at.isoformat(),
            "updated_at": self.updated_at.isoformat(),
        }


@dataclass(frozen=True, slots=True)
class BudgetStatus:
    """Where one budget stands in its current period.

    ``state``: ``over`` (spent reached the limit), ``warning`` (80 % spent, or on pace to
    reach the limit by ``period_end``), else ``ok``. ``projected_usd``: the spend at the end
    of the period if it goes on at the pace so far.
    """

    budget: Budget
    period_start: date
    period_end: date  # exclusive
    spent_usd: float
    projected_usd: float
    state: str
    reason: str

    @property
    def fraction(self) -> float:
        """Share of the limit spent (may pass 1)."""
        return self.spent_usd / self.budget.limit_usd

    @property
    def remaining_usd(self) -> float:
        return max(0.0, self.budget.limit_usd - self.spent_usd)

    def as_dict(self) -> dict[str, Any]:
        return {
            "budget": self.budget.as_dict(),
            "period_start": self.period_start.isoformat(),
            "period_end": self.period_end.isoformat(),
            "spent_usd": round(self.spent_usd, 6),
            "remaining_usd": round(self.remaining_usd, 6),
            "fraction": round(self.fraction, 4),
            "projected_usd": round(self.projected_usd, 6),
            "state": self.state,
            "reason": self.reason,
        }


class Store(Protocol):
    """What the anomaly search reads of a store (persistence.store.Store; named here, not
    imported, since the store imports this module)."""

    def usage(
        self, group_by: Sequence[str] = ..., *, since: datetime | None = ..., until: datetime | None = ...
    ) -> pd.DataFrame: ...

    def _thread_costs(self, first_day: str, last_day: str) -> list[Sequence[Any]]: ...

    def _top_threads(self, day: str, dimension: str, key: str, limit: int) -> list[Sequence[Any]]: ...


# -- budgets -------------------------------------------------------------------------------


def period_bounds(period: str, day: date) -> tuple[date, date]:
    """The [start, end) days of the budget period containing ``day`` (weeks start on Monday,
    as the rollup's ``week`` does)."""
    if period == "day":
        return day, day + timedelta(days=1)
    if period == "week":
        start = day - timedelta(days=day.weekday())
        return start, start + timedelta(days=7)
    start = day.replace(day=1)
    end = (start + timedelta(days=32)).replace(day=1)
    return start, end


def budget_applies(budget: Budget, call: dict[str, Any] | None) -> bool:
    """Whether a call with these keys (model, provider, tool_name, tags) counts against the
    budget; ``call`` None: every budget applies (the status of all of them)."""
    if call is None or budget.scope == "store":
        return True
    if budget.scope == "tag":
        return budget.key in call["tags"]
    return call.get(budget.scope) == budget.key


def rollup_spend(budget: Budget, rows: Iterable[Sequence[Any]], start_day: str) -> float:
    """The budget's spend from rollup rows of (day, model, provider, tool_name, cost_usd) on
    days from ``start_day`` (ISO text compares as dates)."""
    column = {"model": 1, "provider": 2, "tool_name": 3}.get(budget.scope)
    total = 0.0
    for row in rows:
        if row[0] >= start_day and (column is None or row[column] == budget.key):
            total += float(row[4] or 0)
    return total


def status_of(budget: Budget, spent: float, at: datetime) -> BudgetStatus:
    start, end = period_bounds(budget.period, at.date())
    start_at = datetime.combine(start, datetime.min.time(), UTC)
    end_at = datetime.combine(end, datetime.min.time(), UTC)
    elapsed = (at - start_at) / (end_at - start_at)
    projected = spent / max(elapsed, MIN_ELAPSED) if spent else 0.0
    projected = max(projected, spent)
    limit = budget.limit_usd
    if spent >= limit:
        state = "over"
    elif spent >= WARN_SHARE * limit or projected >= limit:
        state = "warning"
    else:
        state = "ok"
    last_day = (end - timedelta(days=1)).isoformat()
    span = start.isoformat() if budget.period == "day" else f"{start.isoformat()} to {last_day}"
    what = (
        "whole store" if budget.scope == "store" else f"{DIMENSION_WORDS.get(budget.scope, budget.scope)} {budget.key}"
    )
    reason = f"{what}, {budget.period} {span}: {money(spent)} of {money(limit)} ({round(100 * spent / limit)} %)"
    if state == "over":
        reason += f", over by {money(spent - limit)}"
    elif budget.period != "day" or elapsed < 1:
        reason += f", on pace for {money(projected)} by the end of {last_day}"
    return BudgetStatus(budget, start, end, spent, projected, state, reason)


# -- anomalies -----------------------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Baseline:
    median: float
    spread: float  # robust standard deviation, floored
    label: str

    def far_above(self, x: float, min_change: float) -> bool:
        change = x - self.median
        return x >= SPIKE_RATIO * self.median and change >= FAR * self.spread and change >= min_change

    def far_below(self, x: float, min_change: float) -> bool:
        change = self.median - x
        return x <= DIP_RATIO * self.median and change >= FAR * self.spread and change >= min_change

    def score(self, x: float) -> float:
        return (x - self.median) / self.spread if self.spread else math.inf


def _baseline(values: list[float], label: str) -> _Baseline:
    med = statistics.median(values)
    mad = statistics.median(abs(v - med) for v in values)
    return _Baseline(med, max(1.4826 * mad, MIN_SPREAD_SHARE * med), label)


def _amount(metric: str, x: float) -> str:
    return money(x) if metric == "cost_usd" else f"{tokens(x)} tokens"


def _short(continuation_id: str) -> str:
    return continuation_id if len(continuation_id) <= 10 else continuation_id[:8] + "…"


def _thread_words(continuation_id: str, tool_name: str | None) -> str:
    return f"thread {_short(continuation_id)}" + (f" ({tool_name})" if tool_name else "")


def _key_words(dimension: str, key: str | None) -> str:
    if dimension == "model":
        return key or "(no model)"
    return f"{DIMENSION_WORDS[dimension]} {key or '(none)'}"


def find_anomalies(
    store: Store,
    *,
    first_day: date,
    last_day: date,
    dimensions: Sequence[str] = ANOMALY_DIMENSIONS,
    min_cost_usd: float = 1.0,
    min_tokens: int = 100_000,
    today: date | None = None,
) -> list[Anomaly]:
    """Days in [first_day, last_day] on which a key was far from its baseline, worst first.

    Far means all of: at least ``FAR`` robust standard deviations (1.4826 x MAD, at least
    10 % of the median) from the median of the 28 days before; at least twice (spike) or at
    most 40 % (dip) of that median; a change of at least ``min_cost_usd`` (or ``min_tokens``
    for tokens), so cents and small counts never page anyone. With a same-weekday baseline
    the day must be far outside that one too. A key used on a day and on none of the 28
    before is ``new`` once the store has a week of history. Threads are compared with the
    threads started in the 28 days before (the same tool's when there are enough): a thread
    is flagged when it costs 10x the usual one and more than any of them. ``today`` (UTC), still
    under way, is never a dip: it has not had the whole day's traffic yet.
    """
    fetch_from = first_day - timedelta(days=WEEKDAY_WEEKS * 7)
    since = datetime.combine(fetch_from, datetime.min.time(), UTC)
    until = datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC)
    totals = store.usage(("day",), since=since, until=until)
    active = totals[totals["messages"] > 0]
    if active.empty:
        return []
    store_first = active["day"].min().date()
    found: list[Anomaly] = []
    for dimension in dimensions:
        if dimension == "thread":
            found.extend(_thread_anomalies(store, first_day, last_day, store_first, min_cost_usd, min_tokens))
        else:
            frame = store.usage(("day", dimension), since=since, until=until)
            found.extend(
                _key_anomalies(
                    store, frame, dimension, first_day, last_day, store_first, min_cost_usd, min_tokens, today
                )
            )
    # Newest day first; within a day the farthest out first (new keys have no baseline: first).
    found.sort(key=lambda a: (-a.day.toordinal(), -min(abs(a.score), 1e9), -a.value))
    return found


def _key_anomalies(
    store: Store,
    frame: pd.DataFrame,
    dimension: str,
    first_day: date,
    last_day: date,
    store_first: date,
    min_cost_usd: float,
    min_tokens: int,
    today: date | None,
) -> list[Anomaly]:
    if frame.empty:
        return []
    frame = frame.assign(day=frame["day"].dt.date, key=frame[dimension].where(frame[dimension].notna(), None))
    series: dict[str, dict[Any, dict[date, float]]] = {"cost_usd": {}, "total_tokens": {}}
    for metric in series:
        for key, day, value in zip(frame["key"], frame["day"], frame[metric], strict=True):
            series[metric].setdefault(key, {})[day] = float(value)
    out: list[Anomaly] = []
    day = first_day
    while day <= last_day:
        window = [day - timedelta(days=i) for i in range(1, BASELINE_DAYS + 1)]
        window = [d for d in window if d >= store_first]
        if len(window) >= MIN_HISTORY_DAYS:
            same_weekday = [day - timedelta(days=7 * i) for i in range(1, WEEKDAY_WEEKS + 1)]
            same_weekday = [d for d in same_weekday if d >= store_first]
            for key in series["cost_usd"]:
                found = _judge(
                    store, series, dimension, key, day, window, same_weekday, min_cost_usd, min_tokens, day != today
                )
                if found is not None:
                    out.append(found)
        day += timedelta(days=1)
    return out


def _judge(
    store: Store,
    series: dict[str, dict[Any, dict[date, float]]],
    dimension: str,
    key: Any,
    day: date,
    window: list[date],
    same_weekday: list[date],
    min_cost_usd: float,
    min_tokens: int,
    complete: bool,
) -> Anomaly | None:
    cost = series["cost_usd"][key]
    toks = series["total_tokens"][key]
    x_cost, x_tokens = cost.get(day, 0.0), toks.get(day, 0.0)
    if x_cost == 0 and x_tokens == 0 and not any(cost.get(d) or toks.get(d) for d in window):
        return None
    who = _key_words(dimension, key)
    if not any(cost.get(d) or toks.get(d) for d in window):
        # Used today and on none of the days before (and the store has the history to say so).
        reason = (
            f"new {DIMENSION_WORDS[dimension]} {key or '(none)'}: {money(x_cost)} and {tokens(x_tokens)} tokens "
            f"on {day.isoformat()}, not used in the {BASELINE_DAYS} days before"
        )
        return Anomaly(
            day, dimension, key, "new", "cost_usd", x_cost, 0.0, None, math.inf, f"{BASELINE_DAYS} days", reason
        )
    for metric, values, minimum in (("cost_usd", cost, min_cost_usd), ("total_tokens", toks, float(min_tokens))):
        x = values.get(day, 0.0)
        baselines = [_baseline([values.get(d, 0.0) for d in window], f"{BASELINE_DAYS} days")]
        if len(same_weekday) >= WEEKDAY_MIN:
            baselines.append(_baseline([values.get(d, 0.0) for d in same_weekday], WEEKDAYS[day.weekday()]))
        usual = baselines[-1]  # the weekday's when there is one: what this day is usually like
        if all(b.far_above(x, minimum) for b in baselines):
            kind = "spike"
        elif complete and all(b.far_below(x, minimum) for b in baselines):
            # Report a run of low days once, on its first day (a model no longer used would
            # otherwise be reported every day until its baseline caught up).
            x_before = values.get(day - timedelta(days=1), 0.0)
            if all(b.far_below(x_before, minimum) for b in baselines):
                return None
            kind = "dip"
        else:
            continue
        ratio = x / usual.median if usual.median else None
        usual_words = (
            f"its usual{'' if usual.label.endswith('days') else ' ' + usual.label} {_amount(metric, usual.median)}"
        )
        verb = "cost" if metric == "cost_usd" else "used"
        reason = f"{who} {verb} {_amount(metric, x)} on {day.isoformat()}, "
        if kind == "spike" and ratio is not None:
            reason += f"{ratio:.1f}x {usual_words}"
        elif kind == "spike":
            on = "" if usual.label.endswith("days") else f" on a {usual.label}"
            reason += f"when it usually {'costs nothing' if metric == 'cost_usd' else 'uses none'}{on}"
        else:
            reason += f"down from {usual_words}"
        top = None
        if kind == "spike" and dimension in ("model", "provider", "tool_name") and key is not None:
            top = _top_thread(store, day, dimension, key, metric, x)
            if top is not None:
                reason += f"; {round(top.share * 100)} % of it in {_thread_words(top.continuation_id, top.tool_name)}"
        return Anomaly(
            day, dimension, key, kind, metric, x, usual.median, ratio, usual.score(x), usual.label, reason, top
        )
    return None


def _top_thread(store: Store, day: date, dimension: str, key: str, metric: str, amount: float) -> ThreadShare | None:
    """The thread with the largest share of the flagged amount (a bounded read of that one day
    and key's messages), when its share is large enough to be worth naming."""
    if amount <= 0:
        return None
    rows = store._top_threads(day.isoformat(), dimension, key, 1)
    if not rows:
        return None
    cid, title, tool_name, cost, total = rows[0]
    mine = float(cost or 0) if metric == "cost_usd" else float(total or 0)
    share = mine / amount
    if share < TOP_THREAD_SHARE:
        return None
    return ThreadShare(cid, title, tool_name, float(cost or 0), int(total or 0), min(share, 1.0))


def _thread_anomalies(
    store: Store, first_day: date, last_day: date, store_first: date, min_cost_usd: float, min_tokens: int
) -> list[Anomaly]:
    rows = store._thread_costs((first_day - timedelta(days=BASELINE_DAYS)).isoformat(), last_day.isoformat())
    if not rows:
        return []
    frame = pd.DataFrame(
        [tuple(r) for r in rows], columns=["continuation_id", "title", "tool_name", "day", "cost_usd", "total_tokens"]
    )
    frame["tool"] = frame["tool_name"].fillna("")  # "" groups the threads without a tool
    frame[["cost_usd", "total_tokens"]] = frame[["cost_usd", "total_tokens"]].fillna(0).astype(float)
    metrics = (("cost_usd", min_cost_usd), ("total_tokens", float(min_tokens)))
    out: list[Anomaly] = []
    day = first_day
    while day <= last_day:
        todays = frame[frame["day"] == day.isoformat()]
        if (day - store_first).days >= MIN_HISTORY_DAYS and len(todays):
            since = (day - timedelta(days=BASELINE_DAYS)).isoformat()
            window = frame[(frame["day"] >= since) & (frame["day"] < day.isoformat())]
            pools = _thread_pools(window)
            flagged: list[Anomaly] = []
            for cid, title, tool_name, tool, cost, total in zip(
                todays["continuation_id"],
                todays["title"],
                todays["tool_name"],
                todays["tool"],
                todays["cost_usd"],
                todays["total_tokens"],
                strict=True,
            ):
                if tool and pools.get(tool, {}).get("count", 0) >= THREAD_MIN_COUNT:
                    pool, label = pools[tool], f"{tool} thread"
                elif pools.get(_ALL, {}).get("count", 0) >= THREAD_MIN_COUNT:
                    pool, label = pools[_ALL], "thread"
                else:
                    continue
                for metric, minimum in metrics:
                    x = float(cost if metric == "cost_usd" else total)
                    median, mad, highest = pool[metric]
                    base = _Baseline(median, max(1.4826 * mad, MIN_SPREAD_SHARE * median), label)
                    if not (x > highest and x >= THREAD_RATIO * median and x - median >= minimum):
                        continue
                    if x - median < FAR * base.spread:
                        continue
                    ratio = x / median if median else None
                    verb = "cost" if metric == "cost_usd" else "used"
                    named = f" “{title[:60]}”" if isinstance(title, str) and title else ""
                    compared = (
                        f"{ratio:.1f}x a usual {label}'s {_amount(metric, median)}"
                        if ratio
                        else f"more than any {label} in the {BASELINE_DAYS} days before"
                    )
                    reason = (
                        f"{_thread_words(cid, tool_name)}{named} {verb} {_amount(metric, x)}, "
                        f"started {day.isoformat()}, {compared}"
                    )
                    flagged.append(
                        Anomaly(day, "thread", cid, "spike", metric, x, median, ratio, base.score(x), label, reason)
                    )
                    break
            flagged.sort(key=lambda a: -a.value)
            out.extend(flagged[:THREADS_PER_DAY])
        day += timedelta(days=1)
    return out


_ALL = "\x00all"  # the pool of every thread, when a tool has too few of its own (no tool is named so)


def _thread_pools(window: pd.DataFrame) -> dict[str, dict[str, Any]]:
    """Per tool (and ``_ALL``): the count of threads, and per metric (median, MAD, max): the
    baseline of one day's threads, computed with pandas (a day's window holds tens of thousands
    of threads on a large store)."""
    pools: dict[str, dict[str, Any]] = {}
    if window.empty:
        return pools
    values = window[["cost_usd", "total_tokens"]]
    by_tool = values.groupby(window["tool"])
    medians = by_tool.median()
    mads = (values - medians.loc[window["tool"]].to_numpy()).abs().groupby(window["tool"]).median()
    highest = by_tool.max()
    counts = by_tool.size()
    metrics = ("cost_usd", "total_tokens")
    med, mad, top = ({m: df[m].to_dict() for m in metrics} for df in (medians, mads, highest))
    for tool, count in counts.to_dict().items():
        pools[str(tool)] = {"count": int(count)} | {
            m: (float(med[m][tool]), float(mad[m][tool]), float(top[m][tool])) for m in metrics
        }
    all_median = values.median()
    all_mad = (values - all_median).abs().median()
    pools[_ALL] = {"count": len(window)} | {
        m: (float(all_median[m]), float(all_mad[m]), float(values[m].max())) for m in ("cost_usd", "total_tokens")
    }
    return pools
