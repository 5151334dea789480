"""The cost and usage report: its tables, charts and findings, and the headless run of
``notebooks/usage_report.ipynb`` that turns them into one self-contained HTML file.

:func:`build` reads a store only through its public API (``usage``, ``storage_usage``,
``list_conversations``, ``count_conversations``, ``prices``) and returns a :class:`Report`
of plain DataFrames. The notebook displays those tables; ``python -m persistence report
--format csv`` writes the very same ones (:func:`write_csv`), so the HTML and the CSVs
cannot disagree.

Cached-token savings are what the cached input tokens would have cost at the model's input
price minus what they cost at its cached price, from the price in force on each day (at
the base tier: the daily rollup does not keep per-request prompt sizes, which long-context
tiers depend on). Tokens of models with no price are counted as unpriced, never as $0.
"""

from __future__ import annotations

import html
import json
import math
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any

import pandas as pd

from .errors import PersistenceError, ValidationError
from .store import Store, period_days

if TYPE_CHECKING:  # pragma: no cover
    import nbformat
    import plotly.graph_objects as go

__all__ = [
    "CHARTS",
    "NOTEBOOK",
    "TABLES",
    "Report",
    "ReportError",
    "build",
    "chart_html",
    "code_cells",
    "execute_notebook",
    "export_html",
    "figure",
    "inject_parameters",
    "load_notebook",
    "plotlyjs_html",
    "read_tables",
    "run_notebook",
    "table_html",
    "write_csv",
    "write_html",
]

NOTEBOOK = Path(__file__).resolve().parent.parent / "notebooks" / "usage_report.ipynb"
"""The report notebook in a source checkout (``--notebook`` points elsewhere)."""

TABLES = (
    "summary",
    "daily",
    "daily_by_model",
    "by_model",
    "by_provider",
    "by_tool",
    "cache_savings",
    "top_threads",
    "unpriced",
    "storage_daily",
    "storage_by_type",
    "findings",
)
"""Every table of a report, in report order: one CSV each with ``--format csv``."""

CHARTS = (
    "cost_by_day",
    "tokens_by_day",
    "cost_by_model",
    "cost_by_provider",
    "cost_by_tool",
    "cache_savings",
    "unpriced",
    "storage_by_day",
    "storage_by_type",
)
"""Every chart of a report; in the HTML each is the element ``id="chart-<name>"``."""

TOKEN_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
GLUE_KEY = "persistence_report"  # output metadata key carrying a displayed table's data
NO_MODEL = "(no model)"


class ReportError(PersistenceError):
    """The report could not be built (a notebook cell failed, the notebook is missing …)."""


@dataclass
class Report:
    """The tables of one report. ``tables[name]`` for every name in :data:`TABLES`."""

    store_url: str
    since: datetime | None
    until: datetime | None
    first_day: date | None  # the UTC days the report covers (inclusive), None when empty
    last_day: date | None
    generated_at: datetime
    top: int
    tables: dict[str, pd.DataFrame] = field(default_factory=dict)

    @property
    def findings(self) -> list[str]:
        return list(self.tables["findings"]["finding"])

    @property
    def kpis(self) -> dict[str, Any]:
        s = self.tables["summary"]
        return dict(zip(s["metric"], s["value"], strict=True))

    @property
    def period_label(self) -> str:
        if self.first_day is None or self.last_day is None:
            return "no activity"
        if self.first_day == self.last_day:
            return f"{self.first_day:%d %b %Y}"
        return f"{self.first_day:%d %b %Y} – {self.last_day:%d %b %Y}"


# -- formatting ------------------------------------------------------------------------


def usd(x: float) -> str:
    """Money as people read it: $12,345 / $12.35 / $0.44 / $0.0042."""
    if x is None or math.isnan(x):
        return "–"
    a = abs(x)
    if a >= 1000:
        return f"${x:,.0f}"
    if a >= 0.1 or a == 0:
        return f"${x:,.2f}"
    return f"${x:.{1 - math.floor(math.log10(a))}f}"  # two significant digits


def tokens(n: float) -> str:
    n = float(n)
    for size, suffix in ((1e9, "B"), (1e6, "M"), (1e3, "k")):
        if abs(n) >= size:
            return f"{n / size:.1f}{suffix}"
    return f"{n:,.0f}"


def nbytes(n: float) -> str:
    n = float(n)
    for size, suffix in ((1 << 30, "GiB"), (1 << 20, "MiB"), (1 << 10, "KiB")):
        if abs(n) >= size:
            return f"{n / size:.1f} {suffix}"
    return f"{n:,.0f} B"


def pct(x: float) -> str:
    if x is None or (isinstance(x, float) and math.isnan(x)):
        return "–"
    return f"{x:.0%}" if abs(x) >= 0.01 or x == 0 else f"{x:.1%}"


def _share(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0


# -- building --------------------------------------------------------------------------


def _when(value: datetime | str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(name, f"{value!r} has no time zone (use UTC)")
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    import argparse

    from .cli import parse_when

    try:
        return parse_when(str(value))
    except argparse.ArgumentTypeError as exc:
        raise ValidationError(name, str(exc)) from None


def _label(value: Any) -> str:
    return NO_MODEL if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def build(
    store: Store,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    top: int = 20,
) -> Report:
    """Compute every report table for the UTC days overlapping [since, until).

    ``since``/``until`` take datetimes or the CLI's forms (``2025-10-01``, an ISO time,
    ``30d``). Nothing is cached: each call reads the store afresh.
    """
    since_dt, until_dt = _when(since, "since"), _when(until, "until")
    if since_dt and until_dt and since_dt >= until_dt:
        raise ValidationError("until", f"must be after since ({since_dt:%Y-%m-%d %H:%M} UTC)")
    if isinstance(top, bool) or not isinstance(top, int) or not 1 <= top <= 1000:
        raise ValidationError("top", f"expected an integer from 1 to 1000, got {top!r}")

    def usage(*keys: str) -> pd.DataFrame:
        return store.usage(keys, since=since_dt, until=until_dt)

    daily = usage("day")
    daily_by_model = usage("day", "model", "provider")
    by_model = usage("model", "provider")
    by_provider = usage("provider")
    by_tool = usage("tool_name")
    storage_daily = store.storage_usage(("day",), since=since_dt, until=until_dt)
    storage_by_type = store.storage_usage(("mime_type",), since=since_dt, until=until_dt)

    # The days covered: the period's whole UTC days; an open end stops at the data (or today).
    first, last = period_days(since_dt, until_dt)
    data_days = [d.date() for d in daily["day"]] + [d.date() for d in storage_daily["day"]]
    first_day = date.fromisoformat(first) if first else min(data_days, default=None)
    last_day = date.fromisoformat(last) if last else max(data_days, default=None)
    if since_dt and not last:
        last_day = max([datetime.now(UTC).date(), *data_days])

    savings = _cache_savings(store, daily_by_model)
    total_cost = float(daily["cost_usd"].sum())

    daily = daily.merge(
        savings.groupby("day", as_index=False).agg(cached_savings_usd=("saved_usd", "sum")), on="day", how="left"
    )
    daily["cached_savings_usd"] = daily["cached_savings_usd"].fillna(0.0)

    by_model = _with_shares(by_model, total_cost)
    by_model = by_model.merge(
        savings.groupby(["model", "provider"], as_index=False, dropna=False).agg(
            cached_savings_usd=("saved_usd", "sum")
        ),
        on=["model", "provider"],
        how="left",
    )
    by_model["cached_savings_usd"] = by_model["cached_savings_usd"].fillna(0.0)
    by_model = by_model.sort_values(["cost_usd", "total_tokens", "messages"], ascending=False, kind="stable")
    by_provider = _with_shares(by_provider, total_cost).sort_values(
        ["cost_usd", "total_tokens"], ascending=False, kind="stable"
    )
    by_tool = _with_shares(by_tool, total_cost).sort_values(
        ["cost_usd", "total_tokens"], ascending=False, kind="stable"
    )

    cache = _cache_table(savings)
    unpriced = _unpriced_table(store, by_model, savings)
    top_threads = _top_threads(store, since_dt, until_dt, top)
    for df in (storage_daily, storage_by_type):
        df["dedup_saved_bytes"] = df["logical_bytes"] - df["bytes"]

    report = Report(
        store_url=store.url,
        since=since_dt,
        until=until_dt,
        first_day=first_day,
        last_day=last_day,
        generated_at=datetime.now(UTC).replace(microsecond=0),
        top=top,
    )
    threads = store.count_conversations(since=since_dt, until=until_dt)
    report.tables = {
        "summary": _summary(daily, by_model, cache, unpriced, storage_daily, threads, first_day, last_day),
        "daily": daily.reset_index(drop=True),
        "daily_by_model": daily_by_model.reset_index(drop=True),
        "by_model": by_model.reset_index(drop=True),
        "by_provider": by_provider.reset_index(drop=True),
        "by_tool": by_tool.reset_index(drop=True),
        "cache_savings": cache,
        "top_threads": top_threads,
        "unpriced": unpriced,
        "storage_daily": storage_daily.reset_index(drop=True),
        "storage_by_type": storage_by_type.sort_values("logical_bytes", ascending=False).reset_index(drop=True),
    }
    report.tables["findings"] = pd.DataFrame({"finding": _findings(report)}, dtype=object)
    return report


def _records(df: pd.DataFrame) -> list[dict[str, Any]]:
    """Rows as dicts (plain row access, typed as Any)."""
    return [dict(zip(map(str, df.columns), row, strict=True)) for row in df.itertuples(index=False, name=None)]


def _with_shares(df: pd.DataFrame, total_cost: float) -> pd.DataFrame:
    df = df.copy()
    total_tokens = float(df["total_tokens"].sum())
    df["cost_share"] = df["cost_usd"] / total_cost if total_cost else 0.0
    df["token_share"] = df["total_tokens"] / total_tokens if total_tokens else 0.0
    return df


def _cache_savings(store: Store, day_model: pd.DataFrame) -> pd.DataFrame:
    """Per (day, model, provider): cached tokens, what they cost, what they would have cost uncached
    (NaN where no price was in force: unknown, not $0)."""
    prices = store.prices
    rates: list[tuple[float, float] | None] = []
    for model, day in zip(day_model["model"], day_model["day"], strict=True):
        price = prices.lookup(model, day.date()) if model else None
        rates.append(price.rates_for(0)[:2] if price else None)
    df = day_model[["day", "model", "provider", "total_tokens", "cached_input_tokens"]].copy()
    df["priced"] = pd.Series([r is not None for r in rates], index=df.index, dtype=bool)
    df["prompt_tokens"] = day_model["input_tokens"] + day_model["cached_input_tokens"] + day_model["cache_write_tokens"]
    full_rate = pd.Series([r[0] if r else math.nan for r in rates], index=df.index, dtype="float64")
    cached_rate = pd.Series([r[1] if r else math.nan for r in rates], index=df.index, dtype="float64")
    df["cached_cost_usd"] = df["cached_input_tokens"] * cached_rate / 1e6
    df["uncached_cost_usd"] = df["cached_input_tokens"] * full_rate / 1e6
    df["saved_usd"] = df["uncached_cost_usd"] - df["cached_cost_usd"]
    return df


def _cache_table(savings: pd.DataFrame) -> pd.DataFrame:
    """Per model with cached input: tokens, paid, would-have-paid, saved. Days with no price
    count no savings; their cached tokens are ``unpriced_cached_tokens`` (NaN: never priced)."""
    columns = [
        "model",
        "prompt_tokens",
        "cached_input_tokens",
        "cache_hit_rate",
        "cached_cost_usd",
        "uncached_cost_usd",
        "saved_usd",
        "unpriced_cached_tokens",
    ]
    s = savings[savings["model"].notna() & (savings["prompt_tokens"] > 0)].copy()
    s["unpriced_cached_tokens"] = s["cached_input_tokens"].where(~s["priced"], 0)
    if s.empty:
        return pd.DataFrame(columns=columns)
    g = s.groupby("model", as_index=False).agg(
        prompt_tokens=("prompt_tokens", "sum"),
        cached_input_tokens=("cached_input_tokens", "sum"),
        cached_cost_usd=("cached_cost_usd", lambda x: x.sum(min_count=1)),
        uncached_cost_usd=("uncached_cost_usd", lambda x: x.sum(min_count=1)),
        saved_usd=("saved_usd", lambda x: x.sum(min_count=1)),
        unpriced_cached_tokens=("unpriced_cached_tokens", "sum"),
    )
    g = g[g["cached_input_tokens"] > 0].copy()
    g["cache_hit_rate"] = g["cached_input_tokens"] / g["prompt_tokens"]
    g = g.sort_values(["saved_usd", "cached_input_tokens"], ascending=False, na_position="last", kind="stable")
    return g[columns].reset_index(drop=True)


def _unpriced_table(store: Store, by_model: pd.DataFrame, savings: pd.DataFrame) -> pd.DataFrame:
    columns = ["model", "provider", "unpriced_messages", "unpriced_tokens", "first_day", "last_day", "reason"]
    u = by_model[by_model["unpriced_messages"] > 0]
    rows = []
    prices = store.prices
    for r in _records(u):
        model, provider = r["model"], r["provider"]
        same_model = savings["model"].isna() if model is None else savings["model"] == model
        same_provider = savings["provider"].isna() if provider is None else savings["provider"] == provider
        unpriced_days = savings[same_model & same_provider & ~savings["priced"]]
        if model is None:
            reason = "no model named"
        elif prices.lookup(model, date.max) is None:
            reason = "no price for this model"
        else:
            reason = "before its first listed price"
        rows.append(
            {
                "model": model,
                "provider": provider,
                "unpriced_messages": int(r["unpriced_messages"]),
                # Within a (day, model) a price is in force for every message or for none.
                "unpriced_tokens": int(unpriced_days["total_tokens"].sum()),
                "first_day": unpriced_days["day"].min() if not unpriced_days.empty else pd.NaT,
                "last_day": unpriced_days["day"].max() if not unpriced_days.empty else pd.NaT,
                "reason": reason,
            }
        )
    df = pd.DataFrame(rows, columns=columns)
    return df.sort_values("unpriced_messages", ascending=False, kind="stable").reset_index(drop=True)


def _top_threads(store: Store, since: datetime | None, until: datetime | None, top: int) -> pd.DataFrame:
    page = store.list_conversations(since=since, until=until, order="cost", limit=top)
    rows = [
        {
            "continuation_id": c.continuation_id,
            "title": c.title,
            "tool_name": c.tool_name,
            "model": c.model,
            "created_at": c.created_at,
            "updated_at": c.updated_at,
            "messages": c.message_count,
            "total_tokens": c.total_tokens,
            "cost_usd": c.cost_usd,
            "unpriced_messages": c.unpriced_messages,
        }
        for c in page
    ]
    columns = [
        "continuation_id",
        "title",
        "tool_name",
        "model",
        "created_at",
        "updated_at",
        "messages",
        "total_tokens",
        "cost_usd",
        "unpriced_messages",
    ]
    return pd.DataFrame(rows, columns=columns)


def _summary(
    daily: pd.DataFrame,
    by_model: pd.DataFrame,
    cache: pd.DataFrame,
    unpriced: pd.DataFrame,
    storage: pd.DataFrame,
    threads: int,
    first_day: date | None,
    last_day: date | None,
) -> pd.DataFrame:
    days = (last_day - first_day).days + 1 if first_day and last_day else 0
    cost = float(daily["cost_usd"].sum())
    prompt = int(daily[["input_tokens", "cached_input_tokens", "cache_write_tokens"]].to_numpy().sum())
    saved = float(cache["saved_usd"].sum()) if not cache.empty else 0.0
    logical = int(storage["logical_bytes"].sum())
    stored = int(storage["bytes"].sum())
    metrics: list[tuple[str, Any]] = [
        ("first_day", first_day.isoformat() if first_day else ""),
        ("last_day", last_day.isoformat() if last_day else ""),
        ("days", days),
        ("threads", int(threads)),
        ("messages", int(daily["messages"].sum())),
        *((col, int(daily[col].sum())) for col in TOKEN_COLUMNS),
        ("total_tokens", int(daily["total_tokens"].sum())),
        ("cost_usd", cost),
        ("cost_per_day_usd", cost / days if days else 0.0),
        ("cost_per_thread_usd", cost / threads if threads else 0.0),
        ("cache_hit_rate", _share(daily["cached_input_tokens"].sum(), prompt)),
        ("cached_savings_usd", saved),
        ("models", int(by_model["model"].notna().sum())),
        ("unpriced_messages", int(daily["unpriced_messages"].sum())),
        ("unpriced_tokens", int(unpriced["unpriced_tokens"].sum()) if not unpriced.empty else 0),
        ("files_stored", int(storage["files"].sum())),
        ("bytes_stored", stored),
        ("uploads", int(storage["uploads"].sum())),
        ("logical_bytes", logical),
        ("dedup_saved_bytes", logical - stored),
    ]
    return pd.DataFrame(metrics, columns=["metric", "value"])


def _findings(r: Report) -> list[str]:
    """Short sentences computed from the tables: what a reader should notice first."""
    k = r.kpis
    t = r.tables
    out: list[str] = []
    if not k["messages"] and not k["uploads"]:
        return ["No messages or uploads were recorded in this period."]
    cost = float(k["cost_usd"])
    if k["messages"]:
        out.append(
            f"{k['messages']:,} messages in {k['threads']:,} threads used {tokens(k['total_tokens'])} tokens "
            f"and cost {usd(cost)} over {k['days']} days ({usd(k['cost_per_day_usd'])} a day)."
        )
    priced = _records(t["by_model"][t["by_model"]["cost_usd"] > 0])
    if cost > 0 and priced:
        head = priced[0]
        sentence = f"{_label(head['model'])} was {pct(head['cost_share'])} of cost ({usd(head['cost_usd'])})"
        if len(priced) > 3:
            sentence += f"; the top 3 models were {pct(sum(m['cost_share'] for m in priced[:3]))}"
        out.append(sentence + ".")
        providers = _records(t["by_provider"])
        if len(providers) > 1:
            prov = providers[0]
            out.append(
                f"{_label(prov['provider'])} accounts for {pct(prov['cost_share'])} of cost "
                f"and {pct(prov['token_share'])} of tokens."
            )
        tool = _records(t["by_tool"])[0]
        if tool["tool_name"] is not None and tool["cost_usd"] > 0:
            out.append(
                f"The {tool['tool_name']} tool cost the most: {usd(tool['cost_usd'])} ({pct(tool['cost_share'])})."
            )
    if k["cached_input_tokens"]:
        sentence = f"{pct(k['cache_hit_rate'])} of input tokens were cache hits"
        if k["cached_savings_usd"] > 0:
            sentence += (
                f", which saved {usd(k['cached_savings_usd'])} (without caching the priced usage "
                f"would have cost {pct(_share(k['cached_savings_usd'], cost))} more)"
            )
            best = _records(t["cache_savings"].dropna(subset=["saved_usd"]))
            if best:
                sentence += f"; {best[0]['model']} saved the most ({usd(best[0]['saved_usd'])})"
        out.append(sentence + ".")
    daily = t["daily"]
    if cost > 0 and len(daily) >= 3:
        peak = _records(daily.sort_values("cost_usd", ascending=False, kind="stable"))[0]
        median = float(daily["cost_usd"].median())
        ratio = f", {peak['cost_usd'] / median:.1f}× the median day" if median > 0 else ""
        out.append(f"The costliest day was {peak['day']:%a %d %b %Y} ({usd(peak['cost_usd'])}{ratio}).")
    if cost > 0 and k["days"] >= 14 and r.last_day is not None:
        end = pd.Timestamp(r.last_day)
        week = pd.Timedelta(days=7)
        last7 = float(daily.loc[daily["day"] > end - week, "cost_usd"].sum())
        prev7 = float(daily.loc[(daily["day"] > end - 2 * week) & (daily["day"] <= end - week), "cost_usd"].sum())
        if prev7 > 0:
            change = last7 / prev7 - 1
            direction = "up" if change >= 0 else "down"
            out.append(
                f"The last 7 days cost {usd(last7)}, {direction} {pct(abs(change))} on the 7 days before ({usd(prev7)})."
            )
    threads = _records(t["top_threads"])
    if threads and threads[0]["cost_usd"] > 0:
        head = threads[0]
        title = head["title"] or head["continuation_id"]
        title = title if len(title) <= 60 else title[:59] + "…"
        sentence = (
            f"The costliest thread, “{title}” ({head['tool_name'] or 'no tool'}, {head['model'] or NO_MODEL}), "
            f"cost {usd(head['cost_usd'])}"
        )
        if r.since is None and r.until is None and cost > 0 and len(threads) > 1:
            top_cost = sum(x["cost_usd"] for x in threads)
            sentence += f"; the top {len(threads)} threads made {pct(_share(top_cost, cost))} of all cost"
        out.append(sentence + ".")
    unpriced = _records(t["unpriced"])
    for u in unpriced[:3]:
        where = f"from {u['model']}" if u["model"] is not None else "naming no model"
        out.append(
            f"{u['unpriced_messages']:,} messages {where} have no price ({u['reason']}): "
            f"their {tokens(u['unpriced_tokens'])} tokens are not in the cost."
        )
    if len(unpriced) > 3:
        rest = sum(u["unpriced_messages"] for u in unpriced[3:])
        out.append(f"{rest:,} more unpriced messages come from {len(unpriced) - 3} other models.")
    if k["reasoning_tokens"]:
        m = _records(t["by_model"].sort_values("reasoning_tokens", ascending=False, kind="stable"))[0]
        out.append(
            f"Reasoning was {pct(_share(k['reasoning_tokens'], k['output_tokens'] + k['reasoning_tokens']))} "
            f"of output tokens; {_label(m['model'])} thought the most ({tokens(m['reasoning_tokens'])} tokens)."
        )
    if k["uploads"]:
        out.append(
            f"{k['uploads']:,} uploads ({nbytes(k['logical_bytes'])}) were stored as {k['files_stored']:,} new files "
            f"({nbytes(k['bytes_stored'])}): deduplication saved {nbytes(k['dedup_saved_bytes'])} "
            f"({pct(_share(k['dedup_saved_bytes'], k['logical_bytes']))})."
        )
    return out


# -- CSV -------------------------------------------------------------------------------


def write_csv(report: Report, directory: str | Path) -> list[Path]:
    """One ``<table>.csv`` per entry of :data:`TABLES` in ``directory`` (created)."""
    folder = Path(directory)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise ReportError(f"cannot create {folder}: {exc.strerror}") from None
    written = []
    for name in TABLES:
        path = folder / f"{name}.csv"
        df = report.tables[name].copy()
        for col in df.columns:
            if col in ("day", "first_day", "last_day"):
                df[col] = df[col].map(lambda d: "" if pd.isna(d) else f"{d:%Y-%m-%d}")
            elif isinstance(df[col].dtype, pd.DatetimeTZDtype) or df[col].map(lambda x: isinstance(x, datetime)).any():
                df[col] = df[col].map(lambda d: "" if pd.isna(d) else d.isoformat())
        df.to_csv(path, index=False, lineterminator="\n")
        written.append(path)
    return written


# -- charts ----------------------------------------------------------------------------

_BUCKET_LABELS = {
    "input_tokens": "input",
    "cached_input_tokens": "cached input",
    "cache_write_tokens": "cache write",
    "output_tokens": "output",
    "reasoning_tokens": "reasoning",
}


def figure(report: Report, name: str) -> go.Figure:
    """The plotly figure of chart ``name`` (one of :data:`CHARTS`)."""
    import plotly.graph_objects as go

    if name not in CHARTS:
        raise ValidationError("chart", f"{name!r} is not one of {', '.join(CHARTS)}")
    t = report.tables
    fig = go.Figure()
    title = ""
    empty = False
    if name == "cost_by_day":
        title = "Cost by day and provider (USD)"
        d = t["daily_by_model"].copy()
        d["provider"] = d["provider"].map(_label)
        d = d.groupby(["day", "provider"], as_index=False).agg(cost_usd=("cost_usd", "sum"))
        order = d.groupby("provider")["cost_usd"].sum().sort_values(ascending=False).index
        for prov in order:
            part = d[d["provider"] == prov]
            if part["cost_usd"].sum() > 0:
                fig.add_bar(x=part["day"], y=part["cost_usd"], name=prov, hovertemplate="%{x|%a %d %b}: $%{y:.4f}")
        fig.update_layout(barmode="stack", yaxis_tickprefix="$")
        empty = float(d["cost_usd"].sum()) == 0
    elif name == "tokens_by_day":
        title = "Tokens by day and kind"
        d = t["daily"]
        for col, label in _BUCKET_LABELS.items():
            if d[col].sum() > 0:
                fig.add_bar(x=d["day"], y=d[col], name=label, hovertemplate="%{x|%a %d %b}: %{y:,}")
        fig.update_layout(barmode="stack")
        empty = d.empty or int(d["total_tokens"].sum()) == 0
    elif name in ("cost_by_model", "cost_by_tool"):
        key = "model" if name == "cost_by_model" else "tool_name"
        title = "Cost by model (USD)" if key == "model" else "Cost by tool (USD)"
        d = t["by_model" if key == "model" else "by_tool"]
        d = d[d["cost_usd"] > 0].sort_values("cost_usd")
        labels = [_label(x) for x in d[key]]
        fig.add_bar(
            x=d["cost_usd"],
            y=labels,
            orientation="h",
            text=[pct(x) for x in d["cost_share"]],
            textposition="auto",
            customdata=d[["total_tokens", "messages"]],
            hovertemplate="%{y}: $%{x:.4f} (%{text})<br>%{customdata[0]:,} tokens, %{customdata[1]:,} messages<extra></extra>",
        )
        fig.update_layout(xaxis_tickprefix="$", height=max(320, 28 * len(d) + 120), showlegend=False)
        empty = d.empty
    elif name == "cost_by_provider":
        title = "Share of cost by provider"
        d = t["by_provider"]
        d = d[d["cost_usd"] > 0]
        fig.add_pie(
            labels=[_label(x) for x in d["provider"]],
            values=d["cost_usd"],
            hole=0.45,
            sort=True,
            hovertemplate="%{label}: $%{value:.4f} (%{percent})<extra></extra>",
        )
        empty = d.empty
    elif name == "cache_savings":
        title = "Cached input: paid vs saved (USD)"
        d = t["cache_savings"].dropna(subset=["saved_usd"])
        d = d[d["uncached_cost_usd"] > 0].sort_values("uncached_cost_usd")
        fig.add_bar(x=d["cached_cost_usd"], y=d["model"], orientation="h", name="paid for cached input")
        fig.add_bar(x=d["saved_usd"], y=d["model"], orientation="h", name="saved by caching")
        fig.update_layout(barmode="stack", xaxis_tickprefix="$", height=max(320, 28 * len(d) + 120))
        empty = d.empty
    elif name == "unpriced":
        title = "Unpriced messages by model (not in the cost)"
        d = t["unpriced"].sort_values("unpriced_messages")
        fig.add_bar(
            x=d["unpriced_messages"],
            y=[_label(x) for x in d["model"]],
            orientation="h",
            customdata=d[["unpriced_tokens", "reason"]],
            hovertemplate="%{y}: %{x:,} messages, %{customdata[0]:,} tokens<br>%{customdata[1]}<extra></extra>",
        )
        fig.update_layout(height=max(320, 28 * len(d) + 120), showlegend=False)
        empty = d.empty
    elif name == "storage_by_day":
        title = "Uploaded vs stored bytes by day"
        d = t["storage_daily"]
        fig.add_bar(x=d["day"], y=d["logical_bytes"], name="uploaded (before dedup)")
        fig.add_bar(x=d["day"], y=d["bytes"], name="stored")
        fig.update_layout(barmode="group", yaxis_title="bytes")
        empty = d.empty
    elif name == "storage_by_type":
        title = "Uploaded vs stored bytes by type"
        d = t["storage_by_type"]
        fig.add_bar(x=[_label(x) for x in d["mime_type"]], y=d["logical_bytes"], name="uploaded (before dedup)")
        fig.add_bar(x=[_label(x) for x in d["mime_type"]], y=d["bytes"], name="stored")
        fig.update_layout(barmode="group", yaxis_title="bytes")
        empty = d.empty
    fig.update_layout(
        title={"text": title, "x": 0.01},
        template="plotly_white",
        margin={"l": 10, "r": 10, "t": 60, "b": 10},
        legend={"orientation": "h", "y": -0.15},
        font={"family": "system-ui, -apple-system, Segoe UI, sans-serif"},
    )
    if empty:
        fig.add_annotation(text="No data in this period", showarrow=False, font={"size": 16, "color": "#888"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return fig


def chart_html(fig: go.Figure, name: str) -> str:
    """The chart as an HTML fragment that needs ``window.Plotly`` (see :func:`plotlyjs_html`)."""
    return str(
        fig.to_html(
            full_html=False,
            include_plotlyjs=False,
            include_mathjax=False,
            div_id=f"chart-{name}",
            default_width="100%",
            default_height="460px",
            config={"displaylogo": False, "responsive": True},
        )
    )


def plotlyjs_html() -> str:
    """plotly.js itself, inline: the report needs no network to draw its charts."""
    from plotly.offline import get_plotlyjs

    return f'<script type="text/javascript">window.PlotlyConfig = {{MathJaxConfig: "local"}};</script>\n<script type="text/javascript">{get_plotlyjs()}</script>'


# -- notebook display helpers ----------------------------------------------------------

_CSS = """<style>
.pr-kpis{display:grid;grid-template-columns:repeat(auto-fill,minmax(170px,1fr));gap:10px;margin:8px 0 4px}
.pr-kpi{border:1px solid #e3e6ea;border-radius:8px;padding:10px 12px;background:#fafbfc}
.pr-kpi .v{font-size:1.45em;font-weight:600;line-height:1.2}
.pr-kpi .l{color:#5f6b76;font-size:.85em;margin-top:2px}
.pr-meta{color:#5f6b76;font-size:.9em}
.pr-findings li{margin:3px 0}
table.pr-table{border-collapse:collapse;font-size:.88em;margin:6px 0}
table.pr-table th,table.pr-table td{padding:3px 10px;border-bottom:1px solid #eceff2;text-align:right;white-space:nowrap}
table.pr-table th{background:#f5f7f9}
table.pr-table td.text,table.pr-table th.text{text-align:left;white-space:normal}
table.pr-table td.text{max-width:32em}
details.pr-data summary{cursor:pointer;color:#2a6fb0;margin:4px 0}
</style>"""


def _display_html(
    markup: str, *, plotly_json: dict[str, Any] | None = None, glue: dict[str, Any] | None = None
) -> None:
    from IPython.display import display

    bundle: dict[str, Any] = {"text/html": markup, "text/plain": "(see the HTML output)"}
    if plotly_json is not None:
        bundle["application/vnd.plotly.v1+json"] = plotly_json
    display(bundle, raw=True, metadata={GLUE_KEY: glue} if glue else None)


def setup_notebook() -> None:
    """Make plotly.js available to the chart outputs (inline, once) and add the styles."""
    _display_html(_CSS + plotlyjs_html())


def show_header(report: Report) -> None:
    period = report.period_label
    bounds = []
    if report.since:
        bounds.append(f"since {report.since:%Y-%m-%d %H:%M} UTC")
    if report.until:
        bounds.append(f"until {report.until:%Y-%m-%d %H:%M} UTC (exclusive)")
    detail = f" ({', '.join(bounds)}; whole UTC days)" if bounds else " (all data)"
    _display_html(
        f'<p class="pr-meta"><b>Period:</b> {html.escape(period)}{html.escape(detail)}<br>'
        f"<b>Store:</b> {html.escape(report.store_url)}<br>"
        f"<b>Generated:</b> {report.generated_at:%Y-%m-%d %H:%M} UTC</p>"
    )


def show_kpis(report: Report) -> None:
    k = report.kpis
    cards = [
        (usd(k["cost_usd"]), "total cost"),
        (usd(k["cost_per_day_usd"]), f"per day over {k['days']} days"),
        (f"{k['messages']:,}", "messages"),
        (f"{k['threads']:,}", "threads"),
        (tokens(k["total_tokens"]), "tokens"),
        (pct(k["cache_hit_rate"]), "of input from cache"),
        (usd(k["cached_savings_usd"]), "saved by caching"),
        (f"{k['unpriced_messages']:,}", "unpriced messages"),
        (nbytes(k["bytes_stored"]), f"stored for {nbytes(k['logical_bytes'])} uploaded"),
    ]
    body = "".join(
        f'<div class="pr-kpi"><div class="v">{html.escape(v)}</div><div class="l">{html.escape(label)}</div></div>'
        for v, label in cards
    )
    _display_html(f'<div class="pr-kpis">{body}</div>', glue=_glue(report, "summary"))


def show_findings(report: Report) -> None:
    items = "".join(f"<li>{html.escape(s)}</li>" for s in report.findings)
    _display_html(f'<ul class="pr-findings">{items}</ul>', glue=_glue(report, "findings"))


def show_chart(report: Report, name: str) -> None:
    fig = figure(report, name)
    _display_html(chart_html(fig, name), plotly_json=json.loads(str(fig.to_json())), glue={"chart": name})


_FORMATS: dict[str, Callable[[Any], str]] = {
    "cost_usd": usd,
    "cached_cost_usd": usd,
    "uncached_cost_usd": usd,
    "saved_usd": usd,
    "cached_savings_usd": usd,
    "cost_share": pct,
    "token_share": pct,
    "cache_hit_rate": pct,
    "bytes": nbytes,
    "logical_bytes": nbytes,
    "dedup_saved_bytes": nbytes,
}
_HEADERS = {
    "cost_usd": "cost",
    "total_tokens": "tokens",
    "updated_at": "last active",
    "unpriced_messages": "unpriced",
    "tool_name": "tool",
    "cached_savings_usd": "cache savings",
    "cached_cost_usd": "paid for cached",
    "uncached_cost_usd": "at input price",
    "saved_usd": "saved",
    "logical_bytes": "uploaded bytes",
    "bytes": "stored bytes",
    "dedup_saved_bytes": "dedup saved",
}
_TEXT_COLUMNS = (
    "model",
    "provider",
    "tool_name",
    "title",
    "continuation_id",
    "mime_type",
    "reason",
    "finding",
    "metric",
)


def table_html(df: pd.DataFrame) -> str:
    """A readable HTML table (values escaped: titles are user text)."""
    head = "".join(
        f'<th class="{"text" if c in _TEXT_COLUMNS else "num"}">{html.escape(_HEADERS.get(c, c.replace("_", " ")))}</th>'
        for c in df.columns
    )
    rows = []
    for rec in df.itertuples(index=False):
        cells = []
        for col, value in zip(df.columns, rec, strict=True):
            cells.append(
                f'<td class="{"text" if col in _TEXT_COLUMNS else "num"}">{html.escape(_cell(col, value))}</td>'
            )
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="pr-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(col: str, value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return NO_MODEL if col in ("model", "provider", "tool_name", "mime_type") else "–"
    if col in _FORMATS:
        return _FORMATS[col](value)
    if isinstance(value, pd.Timestamp | datetime):
        return f"{value:%Y-%m-%d}" if col in ("day", "first_day", "last_day") else f"{value:%Y-%m-%d %H:%M}"
    if isinstance(value, bool):
        return "yes" if value else "no"
    if isinstance(value, int | float) and not isinstance(value, bool):
        return f"{value:,.0f}" if float(value).is_integer() else f"{value:,.4f}"
    return str(value)


def show_table(
    report: Report,
    name: str,
    *,
    collapsed: bool = True,
    caption: str = "the data",
    columns: list[str] | None = None,
) -> None:
    """Table ``name`` as HTML (only ``columns`` when given); ``collapsed`` puts it in a
    <details> under its chart. The output carries the whole table (see :func:`read_tables`)."""
    df = report.tables[name]
    shown = df[columns] if columns else df
    markup = table_html(shown) if not df.empty else "<p><i>No rows in this period.</i></p>"
    if collapsed:
        markup = f'<details class="pr-data"><summary>Show {html.escape(caption)} ({len(df):,} rows)</summary>{markup}</details>'
    _display_html(markup, glue=_glue(report, name))


def _glue(report: Report, name: str) -> dict[str, Any]:
    """The table's exact values, kept in the output's metadata (see :func:`read_tables`)."""
    data = json.loads(report.tables[name].to_json(orient="split", date_format="iso", double_precision=15, index=False))
    return {"table": name, "data": data}


def read_tables(nb: nbformat.NotebookNode) -> dict[str, pd.DataFrame]:
    """The tables an executed report notebook displayed, with their exact values."""
    found: dict[str, pd.DataFrame] = {}
    for cell in nb.cells:
        for output in cell.get("outputs", []):
            glue = output.get("metadata", {}).get(GLUE_KEY)
            if glue and "table" in glue:
                d = glue["data"]
                df = pd.DataFrame(d["data"], columns=d["columns"])
                for col in df.columns:
                    if col in ("day", "first_day", "last_day"):
                        df[col] = pd.to_datetime(df[col]).dt.tz_localize(None)
                    elif not pd.api.types.is_numeric_dtype(df[col]):
                        df[col] = df[col].astype(object).where(df[col].notna(), None)
                found[glue["table"]] = df
    return found


# -- running the notebook --------------------------------------------------------------

_TEMPLATE = """{%- extends 'index.html.j2' -%}
{#- Self-contained: no require.js, MathJax or mermaid from a CDN (the report uses none). -#}
{%- block html_head_js_requirejs -%}{%- endblock html_head_js_requirejs -%}
{%- block html_head_js_mathjax -%}{%- endblock html_head_js_mathjax -%}
{%- block html_head_js_mermaidjs -%}{%- endblock html_head_js_mermaidjs -%}
{%- block extra_css -%}
<style>
body.jp-Notebook main { max-width: 1180px; margin: 0 auto; padding: 12px 24px 48px; }
.jp-Cell { padding: 0 !important; }
.jp-Cell-outputWrapper .jp-OutputArea-output { overflow-x: auto; }
</style>
{%- endblock extra_css -%}
"""


def inject_parameters(nb: nbformat.NotebookNode, params: dict[str, Any]) -> nbformat.NotebookNode:
    """Papermill's convention: a cell tagged ``injected-parameters`` right after the one
    tagged ``parameters`` overrides its defaults."""
    import nbformat

    cells = [c for c in nb.cells if "injected-parameters" not in c.get("metadata", {}).get("tags", [])]
    index = next(
        (i for i, c in enumerate(cells) if "parameters" in c.get("metadata", {}).get("tags", [])),
        None,
    )
    if index is None:
        raise ReportError("the notebook has no cell tagged 'parameters'")
    source = "# Parameters injected by `python -m persistence report`\n" + "".join(
        f"{key} = {value!r}\n" for key, value in params.items()
    )
    cell = nbformat.v4.new_code_cell(source=source, metadata={"tags": ["injected-parameters"]})
    cells.insert(index + 1, cell)
    nb.cells = cells
    return nb


def load_notebook(
    notebook: str | Path = NOTEBOOK,
    *,
    url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int = 20,
) -> nbformat.NotebookNode:
    """The report notebook with these parameters injected, ready to execute."""
    import nbformat

    path = Path(notebook)
    if not path.is_file():
        raise ReportError(f"report notebook {path} not found (pass --notebook PATH)")
    try:
        nb = nbformat.read(path, as_version=4)
    except Exception as exc:  # nbformat raises several kinds for a file that is not a notebook
        raise ReportError(f"{path} is not a readable notebook: {exc}") from None
    params = {
        "url": url,
        "since": since.isoformat() if since else None,
        "until": until.isoformat() if until else None,
        "top": top,
    }
    return inject_parameters(nb, params)


def execute_notebook(
    nb: nbformat.NotebookNode,
    *,
    timeout: int = 600,
    cwd: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
) -> nbformat.NotebookNode:
    """Execute ``nb`` in place with a fresh kernel; ``progress(1)`` after each code cell.

    The kernel is this interpreter (``python3`` resolves to ``sys.executable``), imports
    this copy of the package and starts in ``cwd`` (default: the current directory), so a
    relative ``sqlite:///`` URL and ``.env`` mean there what they mean to the caller.
    """
    from nbclient import NotebookClient
    from traitlets.config import Config

    env = dict(os.environ)
    package_root = str(Path(__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    env.setdefault("PYDEVD_DISABLE_FILE_VALIDATION", "1")  # quiets a debugpy warning on stderr
    with tempfile.TemporaryDirectory(prefix="persistence-report-") as sockets:
        # Where the OS has them, IPC sockets in a private temp folder rather than TCP ports.
        kernel = {"transport": "ipc", "ip": os.path.join(sockets, "kernel")} if os.name == "posix" else {}
        client = NotebookClient(
            nb,
            config=Config({"KernelManager": kernel}),
            timeout=timeout,
            kernel_name="python3",
            resources={"metadata": {"path": str(cwd or os.getcwd())}},
        )
        if progress:
            client.on_cell_executed = lambda **_: progress(1)
        _execute(client, env)
    return nb


def _execute(client: Any, env: dict[str, str]) -> None:
    from nbclient.exceptions import CellExecutionError, CellTimeoutError, DeadKernelError

    try:
        client.execute(env=env)
    except CellExecutionError as exc:
        raise ReportError(f"a report notebook cell failed:\n{_last_lines(str(exc))}") from None
    except (CellTimeoutError, DeadKernelError, TimeoutError, RuntimeError) as exc:
        raise ReportError(f"running the report notebook failed: {exc}") from None


def run_notebook(
    notebook: str | Path = NOTEBOOK,
    *,
    url: str | None = None,
    since: datetime | None = None,
    until: datetime | None = None,
    top: int = 20,
    timeout: int = 600,
    cwd: str | Path | None = None,
    progress: Callable[[int], object] | None = None,
) -> nbformat.NotebookNode:
    """:func:`load_notebook` then :func:`execute_notebook`: the executed report notebook."""
    nb = load_notebook(notebook, url=url, since=since, until=until, top=top)
    return execute_notebook(nb, timeout=timeout, cwd=cwd, progress=progress)


def code_cells(nb: nbformat.NotebookNode) -> int:
    return sum(c.cell_type == "code" for c in nb.cells)


def _last_lines(text: str, n: int = 12) -> str:
    lines = [line for line in text.strip().splitlines() if line.strip()]
    return "\n".join(lines[-n:])


def export_html(nb: nbformat.NotebookNode, *, title: str = "Cost and usage report") -> str:
    """The executed notebook as one self-contained HTML page: outputs only (no code, no
    cells tagged ``notebook-only``), plotly.js inline once, nothing loaded from the network."""
    import jinja2
    from nbconvert import HTMLExporter

    nb.metadata["title"] = title
    from traitlets.config import Config

    config = Config({"TagRemovePreprocessor": {"enabled": True, "remove_cell_tags": {"notebook-only"}}})
    exporter = HTMLExporter(
        config=config,
        template_name="lab",
        extra_loaders=[jinja2.DictLoader({"persistence_report.html.j2": _TEMPLATE})],
        template_file="persistence_report.html.j2",
        exclude_input=True,
        exclude_input_prompt=True,
        exclude_output_prompt=True,
    )
    body, _ = exporter.from_notebook_node(nb)
    return str(body)


def write_html(html_text: str, out: str | Path) -> Path:
    path = Path(out)
    try:
        if path.parent and not path.parent.exists():
            path.parent.mkdir(parents=True, exist_ok=True)
        tmp = path.with_name(path.name + ".tmp")
        tmp.write_text(html_text, encoding="utf-8")
        tmp.replace(path)
    except OSError as exc:
        raise ReportError(f"cannot write {path}: {exc.strerror}") from None
    return path
