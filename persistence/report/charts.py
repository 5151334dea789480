"""The report's charts: one plotly figure per name in :data:`CHARTS`, drawn from a
:class:`~persistence.report.tables.Report`'s tables, and their HTML.

Colours come from :mod:`persistence.palette`, as in the app: a model or provider in its
provider's hue, token kinds, cost and bytes in greys, savings in green. plotly.js is in the
report once, compressed (:func:`plotlyjs_html`); each chart waits for it."""

from __future__ import annotations

import base64
import functools
import gzip
import html
import json
from typing import TYPE_CHECKING, Any

from .. import palette
from ..errors import ValidationError
from ..formatting import money, percent, size, size_ticks
from .tables import NO_MODEL, Report, _label

if TYPE_CHECKING:  # pragma: no cover
    import plotly.graph_objects as go


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

_BUCKET_LABELS = {
    "input_tokens": "input",
    "cached_input_tokens": "cached input",
    "cache_write_tokens": "cache write",
    "output_tokens": "output",
    "reasoning_tokens": "reasoning",
}


_LEGEND_NAMES = {"(no model)": "no model named"}


def _hover(text: object) -> str:
    """A name inside a plotly hover template, shown literally (templates read %{…} and tags)."""
    return str(text).replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("%", "%%")


def _money_hover(values: Any) -> list[str]:
    return [money(float(v)) for v in values]


def figure(report: Report, name: str) -> go.Figure:
    """The plotly figure of chart ``name`` (one of :data:`CHARTS`)."""
    import plotly.graph_objects as go

    if name not in CHARTS:
        raise ValidationError("chart", f"{name!r} is not one of {', '.join(CHARTS)}")
    t = report.tables
    fig = go.Figure()
    title = ""
    empty = False
    bytes_axis: str | None = None
    if name == "cost_by_day":
        title = "Cost by day and provider (USD)"
        d = t["daily_by_model"].copy()
        d["provider"] = d["provider"].map(_label)
        d = d.groupby(["day", "provider"], as_index=False).agg(cost_usd=("cost_usd", "sum"))
        order = d.groupby("provider")["cost_usd"].sum().sort_values(ascending=False).index
        for prov in order:
            part = d[d["provider"] == prov]
            if part["cost_usd"].sum() > 0:
                fig.add_bar(
                    x=part["day"],
                    y=part["cost_usd"],
                    name=_LEGEND_NAMES.get(prov, prov),
                    marker_color=palette.provider_color(None if prov == NO_MODEL else prov),
                    customdata=_money_hover(part["cost_usd"]),
                    hovertemplate=f"{_hover(prov)}: %{{customdata}}<extra>%{{x|%a %d %b}}</extra>",
                )
        fig.update_layout(barmode="stack", yaxis_tickprefix="$")
        empty = float(d["cost_usd"].sum()) == 0
    elif name == "tokens_by_day":
        title = "Tokens by day and kind"
        d = t["daily"]
        for col, label in _BUCKET_LABELS.items():
            if d[col].sum() > 0:
                fig.add_bar(
                    x=d["day"],
                    y=d[col],
                    name=label,
                    marker_color=palette.TOKEN_KIND_COLORS[col],
                    hovertemplate=f"{label}: %{{y:,}} tokens<extra>%{{x|%a %d %b}}</extra>",
                )
        fig.update_layout(barmode="stack")
        empty = d.empty or int(d["total_tokens"].sum()) == 0
    elif name in ("cost_by_model", "cost_by_tool"):
        key = "model" if name == "cost_by_model" else "tool_name"
        title = "Cost by model (USD)" if key == "model" else "Cost by tool (USD)"
        d = t["by_model" if key == "model" else "by_tool"]
        d = d[d["cost_usd"] > 0].sort_values("cost_usd")
        labels = [_label(x) for x in d[key]]
        if key == "model":
            colors = [palette.model_color(m, p) for m, p in zip(d["model"], d["provider"], strict=True)]
        else:
            colors = [palette.COST] * len(d)
        fig.add_bar(
            x=d["cost_usd"],
            y=labels if key == "model" else [x if x != NO_MODEL else "(no tool)" for x in labels],
            orientation="h",
            marker_color=colors,
            text=[percent(x) for x in d["cost_share"]],
            textposition="auto",
            customdata=list(zip(_money_hover(d["cost_usd"]), d["total_tokens"], d["messages"], strict=True)),
            hovertemplate="%{y}: %{customdata[0]} (%{text})<br>%{customdata[1]:,} tokens, %{customdata[2]:,} messages<extra></extra>",
        )
        fig.update_layout(xaxis_tickprefix="$", height=max(320, 28 * len(d) + 140), showlegend=False)
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
            marker={"colors": [palette.provider_color(x) for x in d["provider"]]},
            customdata=_money_hover(d["cost_usd"]),
            hovertemplate="%{label}: %{customdata} (%{percent})<extra></extra>",
        )
        empty = d.empty
    elif name == "cache_savings":
        title = "Cached input: paid vs saved (USD)"
        d = t["cache_savings"].dropna(subset=["saved_usd"])
        d = d[d["uncached_cost_usd"] > 0].sort_values("uncached_cost_usd")
        fig.add_bar(
            x=d["cached_cost_usd"],
            y=d["model"],
            orientation="h",
            name="paid for cached input",
            marker_color=palette.COST,
            customdata=_money_hover(d["cached_cost_usd"]),
            hovertemplate="%{y}: paid %{customdata}<extra></extra>",
        )
        fig.add_bar(
            x=d["saved_usd"],
            y=d["model"],
            orientation="h",
            name="saved by caching",
            marker_color=palette.SAVED,
            customdata=_money_hover(d["saved_usd"]),
            hovertemplate="%{y}: saved %{customdata}<extra></extra>",
        )
        fig.update_layout(barmode="stack", xaxis_tickprefix="$", height=max(320, 28 * len(d) + 140))
        empty = d.empty
    elif name == "unpriced":
        title = "Unpriced messages by model (not in the cost)"
        d = t["unpriced"].sort_values("unpriced_messages")
        fig.add_bar(
            x=d["unpriced_messages"],
            y=[_label(x) for x in d["model"]],
            orientation="h",
            marker_color=[palette.model_color(m, p) for m, p in zip(d["model"], d["provider"], strict=True)],
            customdata=d[["unpriced_tokens", "reason"]],
            hovertemplate="%{y}: %{x:,} messages, %{customdata[0]:,} tokens<br>%{customdata[1]}<extra></extra>",
        )
        fig.update_layout(height=max(240, 28 * len(d) + 160), showlegend=False)
        empty = d.empty
    elif name in ("storage_by_day", "storage_by_type"):
        by_day = name == "storage_by_day"
        title = "Uploaded vs stored by day" if by_day else "Uploaded vs stored by type"
        d = t["storage_daily" if by_day else "storage_by_type"]
        x = d["day"] if by_day else [_label(v) if v is not None else "(unknown type)" for v in d["mime_type"]]
        when = "%{x|%a %d %b}" if by_day else "%{x}"
        for col, label, color in (
            ("logical_bytes", "uploaded (before dedup)", palette.UPLOADED),
            ("bytes", "stored", palette.STORED),
        ):
            fig.add_bar(
                x=x,
                y=d[col],
                name=label,
                marker_color=color,
                customdata=[size(v) for v in d[col]],
                hovertemplate=f"{label}: %{{customdata}}<extra>{when}</extra>",
            )
        fig.update_layout(barmode="group")
        bytes_axis = "yaxis"
        empty = d.empty
    fig.update_layout(
        title={"text": title, "x": 0.01, "xanchor": "left", "y": 0.98, "yanchor": "top", "yref": "container"},
        template=_template(),
        colorway=list(palette.NEUTRALS),
        margin={"l": 10, "r": 10, "t": 84, "b": 10},
        # Above the plot, under the title: below it, the legend sat on the x axis's dates.
        legend={"orientation": "h", "yanchor": "bottom", "y": 1.02, "xanchor": "left", "x": 0, "traceorder": "normal"},
        font={"family": "system-ui, -apple-system, Segoe UI, sans-serif"},
    )
    if bytes_axis and not empty:
        d = t["storage_daily" if name == "storage_by_day" else "storage_by_type"]
        tickvals, ticktext = size_ticks(float(d[["bytes", "logical_bytes"]].to_numpy().max()))
        fig.layout[bytes_axis].update(tickmode="array", tickvals=tickvals, ticktext=ticktext, rangemode="tozero")
    if empty:
        fig.add_annotation(text="No data in this period", showarrow=False, font={"size": 16, "color": "#888"})
        fig.update_xaxes(visible=False)
        fig.update_yaxes(visible=False)
    return fig


@functools.lru_cache(maxsize=1)
def _template() -> go.layout.Template:
    """plotly's white theme cut down to what these charts use: the full one is 8 KB in every
    chart's JSON."""
    import plotly.graph_objects as go

    axis = {"automargin": True, "gridcolor": "#EBF0F8", "linecolor": "#EBF0F8", "zerolinecolor": "#EBF0F8", "ticks": ""}
    return go.layout.Template(
        layout={
            "paper_bgcolor": "white",
            "plot_bgcolor": "white",
            "font": {"color": "#2a3f5f"},
            "hoverlabel": {"align": "left"},
            "xaxis": {**axis, "zerolinewidth": 2},
            "yaxis": {**axis, "zerolinewidth": 2},
        },
        data={"pie": [{"automargin": True}]},
    )


_CONFIG = {"displayModeBar": False, "displaylogo": False, "responsive": True}


def chart_html(fig: go.Figure, name: str) -> str:
    """The chart as an HTML fragment: its div and a script that draws it once plotly.js is
    ready (see :func:`plotlyjs_html`, which the page must hold once, before any chart)."""
    import plotly.graph_objects as go

    # The title goes above the chart as text: inside the figure, a legend that wraps onto
    # several rows on a phone grew into it. Without it the legend pushes the plot down itself.
    title = html.escape(str(fig.layout.title.text or ""))
    fig = go.Figure(fig)
    fig.update_layout(title=None, margin={"t": 10})
    spec = str(fig.to_json())
    # Inside <script>, "</" would end the element early: user text (titles, model names) may hold it.
    spec = spec.replace("<", "\\u003c").replace("\u2028", "\\u2028").replace("\u2029", "\\u2029")
    div = f"chart-{name}"
    height = int(fig.layout.height or 460)
    return (
        (f'<div class="pr-chart-title">{title}</div>\n' if title else "")
        + f'<div id="{div}" class="plotly-graph-div pr-chart" style="height:{height}px; width:100%;"></div>\n'
        '<script type="text/javascript">'
        f"(function () {{ var spec = {spec}; var ready = window.prPlotly || Promise.resolve(window.Plotly);"
        f' ready.then(function (Plotly) {{ Plotly.newPlot("{div}", spec.data, spec.layout, {json.dumps(_CONFIG)}); }})'
        f'.catch(function (err) {{ var el = document.getElementById("{div}"); el.style.height = "auto";'
        ' el.textContent = "This browser could not draw the chart (" + err + "); the table below has its numbers."; });'
        " })();</script>"
    )


@functools.lru_cache(maxsize=1)
def _packed_plotlyjs() -> str:
    from plotly.offline import get_plotlyjs

    return base64.b64encode(gzip.compress(get_plotlyjs().encode("utf-8"), 9, mtime=0)).decode("ascii")


def plotlyjs_html() -> str:
    """plotly.js itself, once, inline and gzip-compressed (a third of its 4.8 MB): the page
    unpacks it with the browser's own ``DecompressionStream`` and then draws the charts, so the
    report needs no network and stays small. ``window.prPlotly`` is the promise of it."""
    return (
        '<script type="text/javascript">window.PlotlyConfig = {MathJaxConfig: "local"};\n'
        "window.prPlotly = window.prPlotly || (async function () {\n"
        f'  var packed = "{_packed_plotlyjs()}";\n'
        "  var bytes = Uint8Array.from(atob(packed), function (c) { return c.charCodeAt(0); });\n"
        '  var stream = new Blob([bytes]).stream().pipeThrough(new DecompressionStream("gzip"));\n'
        "  var code = await new Response(stream).text();\n"
        "  // Loaded as a plain script even where a module loader (require.js) is on the page.\n"
        "  var define = window.define; window.define = undefined;\n"
        '  try { var s = document.createElement("script"); s.text = code; document.head.appendChild(s); }\n'
        "  finally { window.define = define; }\n"
        "  return window.Plotly;\n"
        "})();</script>"
    )
