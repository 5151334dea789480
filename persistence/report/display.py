"""What the report notebook shows: its styles, header, KPI cards, findings, charts and
tables as HTML outputs. Each output keeps the exact values of the table it shows in its
metadata (under :data:`GLUE_KEY`), which :func:`read_tables` reads back from an executed
notebook."""

from __future__ import annotations

import html
import json
from collections.abc import Callable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import pandas as pd

from ..formatting import money, percent, plain_title, plural, size, thread_cost, tokens
from .charts import chart_html, figure, plotlyjs_html
from .tables import NO_MODEL, Report

if TYPE_CHECKING:  # pragma: no cover
    import nbformat


GLUE_KEY = "persistence_report"  # output metadata key carrying a displayed table's data

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
.pr-chart-title{font-weight:600;font-size:1.05em;margin:18px 0 0;color:#2a3f5f}
table.pr-table td.text a{color:#2a6fb0;text-decoration:none}
table.pr-table td.text a:hover{text-decoration:underline}
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
        (money(k["cost_usd"]), "total cost"),
        (money(k["cost_per_day_usd"]), f"per day over {k['days']} days"),
        (f"{k['messages']:,}", "messages"),
        (f"{k['threads']:,}", "threads"),
        (tokens(k["total_tokens"]), "tokens"),
        (percent(k["cache_hit_rate"]), "of input from cache"),
        (money(k["cached_savings_usd"]), "saved by caching"),
        (f"{k['unpriced_messages']:,}", "unpriced messages"),
        (size(k["bytes_stored"]), f"stored for {size(k['logical_bytes'])} uploaded"),
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
    "cost_usd": money,
    "cached_cost_usd": money,
    "uncached_cost_usd": money,
    "saved_usd": money,
    "cached_savings_usd": money,
    "cost_share": percent,
    "token_share": percent,
    "cache_hit_rate": percent,
    "bytes": size,
    "logical_bytes": size,
    "dedup_saved_bytes": size,
}
_HEADERS = {
    "cost_usd": "cost",
    "app_link": "link",
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


_NONE_TEXT = {"model": NO_MODEL, "provider": "(no provider)", "tool_name": "(no tool)", "mime_type": "(unknown type)"}


def table_html(df: pd.DataFrame, *, links: pd.Series | None = None, unpriced: pd.Series | None = None) -> str:
    """A readable HTML table (values escaped: titles are user text). ``links`` (one URL per row)
    makes each title a link into the app; ``unpriced`` (messages without a price, per row) makes
    each cost honest about them (``$0.41 + 10 unpriced``, as in the app)."""
    head = "".join(
        f'<th class="{"text" if c in _TEXT_COLUMNS else "num"}">{html.escape(_HEADERS.get(c, c.replace("_", " ")))}</th>'
        for c in df.columns
    )
    rows = []
    for i, rec in enumerate(df.itertuples(index=False)):
        cells = []
        for col, value in zip(df.columns, rec, strict=True):
            text = html.escape(_cell(col, value))
            if col == "cost_usd" and unpriced is not None:
                text = html.escape(thread_cost(float(value or 0.0), int(unpriced.iloc[i] or 0)))
            if col == "title" and links is not None and isinstance(links.iloc[i], str):
                text = f'<a href="{html.escape(links.iloc[i], quote=True)}" target="_blank" rel="noopener">{text}</a>'
            cells.append(f'<td class="{"text" if col in _TEXT_COLUMNS else "num"}">{text}</td>')
        rows.append("<tr>" + "".join(cells) + "</tr>")
    return f'<table class="pr-table"><thead><tr>{head}</tr></thead><tbody>{"".join(rows)}</tbody></table>'


def _cell(col: str, value: Any) -> str:
    if value is None or (not isinstance(value, str) and pd.isna(value)):
        return _NONE_TEXT.get(col, "–")
    if col == "title":  # the first words of a message: show them without their Markdown
        return plain_title(str(value)) or "(untitled)"
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
    links = df["app_link"] if "app_link" in df and "title" in shown else None
    unpriced = df["unpriced_messages"] if name == "top_threads" and "cost_usd" in shown else None
    markup = (
        table_html(shown, links=links, unpriced=unpriced) if not df.empty else "<p><i>Nothing in this period.</i></p>"
    )
    if collapsed:
        markup = f'<details class="pr-data"><summary>Show {html.escape(caption)} ({plural(len(df), "row")})</summary>{markup}</details>'
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
