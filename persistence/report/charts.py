"""The report's charts: one plotly figure per name in :data:`CHARTS`, drawn from a
:class:`~persistence.report.tables.Report`'s tables, and their HTML (plotly.js inline, once)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..errors import ValidationError
from ..formatting import percent
from .tables import Report, _label

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
            text=[percent(x) for x in d["cost_share"]],
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
