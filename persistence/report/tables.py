"""The report's tables: :func:`build` reads a store only through its public API (``usage``,
``storage_usage``, ``list_conversations``, ``count_conversations``, ``prices``) and returns a
:class:`Report` of plain DataFrames, with the findings computed from them; :func:`write_csv`
writes those very tables as CSV.

Cached-token savings are what the cached input tokens would have cost at the model's input
price minus what they cost at its cached price, from the price in force on each day (at
the base tier: the daily rollup does not keep per-request prompt sizes, which long-context
tiers depend on). Tokens of models with no price are counted as unpriced, never as $0.
"""

from __future__ import annotations

import argparse
import math
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any
from urllib.parse import urlencode, urlsplit

import pandas as pd

from ..env import load_env
from ..errors import PersistenceError, ValidationError
from ..formatting import money, percent, plain_title, plural, size, tokens
from ..store import Store, period_days
from ..when import parse_when

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


TOKEN_COLUMNS = (
    "input_tokens",
    "cached_input_tokens",
    "cache_write_tokens",
    "output_tokens",
    "reasoning_tokens",
)
NO_MODEL = "(no model)"
DEFAULT_APP_URL = "http://localhost:8501"
"""Where the report's thread links point when neither ``app_url`` nor ``PERSISTENCE_APP_URL`` says."""


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
    app_url: str = DEFAULT_APP_URL  # the app the thread links open (no trailing slash)

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


def _share(part: float, whole: float) -> float:
    return float(part) / float(whole) if whole else 0.0


def _when(value: datetime | str | None, name: str) -> datetime | None:
    if value is None or value == "":
        return None
    if isinstance(value, datetime):
        if value.tzinfo is None:
            raise ValidationError(name, f"{value!r} has no time zone (use UTC)")
        return value
    if isinstance(value, date):
        return datetime(value.year, value.month, value.day, tzinfo=UTC)
    try:
        return parse_when(str(value))
    except argparse.ArgumentTypeError as exc:
        raise ValidationError(name, str(exc)) from None


def _label(value: Any) -> str:
    return NO_MODEL if value is None or (isinstance(value, float) and math.isnan(value)) else str(value)


def app_base_url(app_url: str | None = None) -> str:
    """The app's address for links: ``app_url``, else ``PERSISTENCE_APP_URL`` (environment or
    ``.env``), else :data:`DEFAULT_APP_URL`; an http(s) URL without a trailing slash."""
    value = (app_url or load_env().get("PERSISTENCE_APP_URL") or DEFAULT_APP_URL).strip()
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.netloc or parts.query or parts.fragment:
        raise ValidationError("app_url", f"expected the app's http(s) address like {DEFAULT_APP_URL}, got {value!r}")
    return value.rstrip("/")


def build(
    store: Store,
    *,
    since: datetime | str | None = None,
    until: datetime | str | None = None,
    top: int = 20,
    app_url: str | None = None,
) -> Report:
    """Compute every report table for the UTC days overlapping [since, until).

    ``since``/``until`` take datetimes or the CLI's forms (``2025-10-01``, an ISO time,
    ``30d``). ``app_url`` is where the costliest threads link to (see :func:`app_base_url`).
    Nothing is cached: each call reads the store afresh.
    """
    base_url = app_base_url(app_url)
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
    saved_by_model = savings.groupby(["model", "provider"], as_index=False, dropna=False).agg(
        cached_savings_usd=("saved_usd", "sum")
    )
    # A key column with no value at all comes back as float (NaN): merge on text either way.
    keys = {"model": object, "provider": object}
    by_model = by_model.astype(keys).merge(saved_by_model.astype(keys), on=["model", "provider"], how="left")
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
    top_threads = _top_threads(store, since_dt, until_dt, top, base_url)
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
        app_url=base_url,
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
    findings = _findings(report) + _alert_findings(store, first_day, last_day)
    report.tables["findings"] = pd.DataFrame({"finding": findings}, dtype=object)
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


def _top_threads(store: Store, since: datetime | None, until: datetime | None, top: int, app_url: str) -> pd.DataFrame:
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
            # The thread in the app (views/thread.py reads ?thread=): the report's way in.
            "app_link": f"{app_url}/thread?{urlencode({'thread': c.continuation_id})}",
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
        "app_link",
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
            f"{plural(k['messages'], 'message')} in {plural(k['threads'], 'thread')} used "
            f"{tokens(k['total_tokens'])} tokens and cost {money(cost)} over {plural(k['days'], 'day')} "
            f"({money(k['cost_per_day_usd'])} a day)."
        )
    priced = _records(t["by_model"][t["by_model"]["cost_usd"] > 0])
    if cost > 0 and priced:
        head = priced[0]
        sentence = f"{_label(head['model'])} was {percent(head['cost_share'])} of cost ({money(head['cost_usd'])})"
        if len(priced) > 3:
            sentence += f"; the top 3 models were {percent(sum(m['cost_share'] for m in priced[:3]))}"
        out.append(sentence + ".")
        providers = _records(t["by_provider"])
        if len(providers) > 1:
            prov = providers[0]
            out.append(
                f"{_label(prov['provider'])} accounts for {percent(prov['cost_share'])} of cost "
                f"and {percent(prov['token_share'])} of tokens."
            )
        tool = _records(t["by_tool"])[0]
        if tool["tool_name"] is not None and tool["cost_usd"] > 0:
            out.append(
                f"The {tool['tool_name']} tool cost the most: {money(tool['cost_usd'])} ({percent(tool['cost_share'])})."
            )
    if k["cached_input_tokens"]:
        sentence = f"{percent(k['cache_hit_rate'])} of input tokens were cache hits"
        if k["cached_savings_usd"] > 0:
            sentence += (
                f", which saved {money(k['cached_savings_usd'])} (without caching the priced usage "
                f"would have cost {percent(_share(k['cached_savings_usd'], cost))} more)"
            )
            best = _records(t["cache_savings"].dropna(subset=["saved_usd"]))
            if best:
                sentence += f"; {best[0]['model']} saved the most ({money(best[0]['saved_usd'])})"
        out.append(sentence + ".")
    daily = t["daily"]
    if cost > 0 and len(daily) >= 3:
        peak = _records(daily.sort_values("cost_usd", ascending=False, kind="stable"))[0]
        median = float(daily["cost_usd"].median())
        ratio = f", {peak['cost_usd'] / median:.1f}× the median day" if median > 0 else ""
        out.append(f"The costliest day was {peak['day']:%a %d %b %Y} ({money(peak['cost_usd'])}{ratio}).")
    if cost > 0 and k["days"] >= 14 and r.last_day is not None:
        end = pd.Timestamp(r.last_day)
        week = pd.Timedelta(days=7)
        last7 = float(daily.loc[daily["day"] > end - week, "cost_usd"].sum())
        prev7 = float(daily.loc[(daily["day"] > end - 2 * week) & (daily["day"] <= end - week), "cost_usd"].sum())
        if prev7 > 0:
            change = last7 / prev7 - 1
            direction = "up" if change >= 0 else "down"
            out.append(
                f"The last 7 days cost {money(last7)}, {direction} {percent(abs(change))} on the 7 days before ({money(prev7)})."
            )
    threads = _records(t["top_threads"])
    if threads and threads[0]["cost_usd"] > 0:
        head = threads[0]
        title = plain_title(head["title"]) or head["continuation_id"]
        title = title if len(title) <= 60 else title[:59] + "…"
        sentence = (
            f"The costliest thread, “{title}” ({head['tool_name'] or 'no tool'}, {head['model'] or NO_MODEL}), "
            f"cost {money(head['cost_usd'])}"
        )
        if r.since is None and r.until is None and cost > 0 and len(threads) > 1:
            top_cost = sum(x["cost_usd"] for x in threads)
            sentence += f"; the top {len(threads)} threads made {percent(_share(top_cost, cost))} of all cost"
        out.append(sentence + ".")
    unpriced = _records(t["unpriced"])
    for u in unpriced[:3]:
        where = f"from {u['model']}" if u["model"] is not None else "naming no model"
        out.append(
            f"{plural(u['unpriced_messages'], 'message')} {where} {'has' if u['unpriced_messages'] == 1 else 'have'} "
            f"no price ({u['reason']}): "
            f"their {tokens(u['unpriced_tokens'])} tokens are not in the cost."
        )
    if len(unpriced) > 3:
        rest = sum(u["unpriced_messages"] for u in unpriced[3:])
        out.append(
            f"{plural(rest, 'more unpriced message')} {'comes' if rest == 1 else 'come'} from "
            f"{plural(len(unpriced) - 3, 'other model')}."
        )
    if k["reasoning_tokens"]:
        m = _records(t["by_model"].sort_values("reasoning_tokens", ascending=False, kind="stable"))[0]
        out.append(
            f"Reasoning was {percent(_share(k['reasoning_tokens'], k['output_tokens'] + k['reasoning_tokens']))} "
            f"of output tokens; {_label(m['model'])} thought the most ({tokens(m['reasoning_tokens'])} tokens)."
        )
    if k["uploads"]:
        out.append(
            f"{plural(k['uploads'], 'upload')} ({size(k['logical_bytes'])}) {'was' if k['uploads'] == 1 else 'were'} "
            f"stored as {plural(k['files_stored'], 'new file')} "
            f"({size(k['bytes_stored'])}): deduplication saved {size(k['dedup_saved_bytes'])} "
            f"({percent(_share(k['dedup_saved_bytes'], k['logical_bytes']))})."
        )
    return out


# -- CSV -----------------------------------------------------------------------------------


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


ALERT_FINDINGS = 3  # unusual days named in the findings; the rest are counted
ALERT_DAYS = 30  # the report's last 30 days are looked at (the baseline reads 8 weeks before)


def _alert_findings(store: Store, first_day: date | None, last_day: date | None) -> list[str]:
    """The report's unusual days (``store.anomalies``, persistence/insights.py) in words: spikes
    first, as they cost money, then new models and tools, then dips."""
    if first_day is None or last_day is None:
        return []
    start = max(first_day, last_day - timedelta(days=ALERT_DAYS - 1))
    found = store.anomalies(
        since=datetime.combine(start, datetime.min.time(), UTC),
        until=datetime.combine(last_day + timedelta(days=1), datetime.min.time(), UTC),
    )
    rank = {"spike": 0, "new": 1, "dip": 2}
    found.sort(key=lambda a: (rank.get(a.kind, 3), -a.day.toordinal()))
    out = [f"Unusual: {a.reason}." for a in found[:ALERT_FINDINGS]]
    if len(found) > ALERT_FINDINGS:
        out.append(
            f"{plural(len(found) - ALERT_FINDINGS, 'more alert')} from {start:%d %b} to {last_day:%d %b}; "
            "the alerts command lists every one."
        )
    return out
