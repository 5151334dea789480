"""How the app and the report look (issue 14, "Looks"): model colours grouped by provider and
fixed everywhere, one meaning per colour, byte axes in KiB/MiB, legends clear of the dates,
titles without Markdown, no chart toolbar, filters folded on a phone."""

from __future__ import annotations

import colorsys
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import plotly.graph_objects as go
import pytest
from app_seed import go_to, open_page
from streamlit.testing.v1 import AppTest

import persistence
from persistence import palette
from persistence.demo import MODELS
from persistence.formatting import money, plain_title, plural, size_ticks
from ui import widgets

ROOT = Path(__file__).resolve().parents[1]

# -- the palette -----------------------------------------------------------------------------


def hls(color: str) -> tuple[float, float, float]:
    r, g, b = (int(color.lstrip("#")[i : i + 2], 16) / 255 for i in (0, 2, 4))
    return colorsys.rgb_to_hls(r, g, b)


def test_models_are_shades_of_their_providers_hue() -> None:
    for model, provider, _, _ in MODELS:
        family = palette.family_of(model, provider)
        if provider in palette.FAMILIES:
            assert family == provider, model
        assert palette.model_color(model) in palette.FAMILIES[family or "other"], model
    # Gateways and aliases: the same family, whoever routed the call.
    assert palette.family_of("moonshotai/kimi-k2-0905-preview") == "kimi"
    assert palette.family_of("anything", "moonshot") == palette.family_of("anything", "kimi") == "kimi"
    assert palette.family_of("openrouter/anthropic/claude-sonnet-4-5") == "anthropic"
    assert palette.model_color("glm-4.6") != palette.model_color("glm-4.5-air") != palette.model_color("glm-4.5-flash")
    kimi = {palette.model_color(m) for m, p, _, _ in MODELS if p == "kimi"}
    assert len(kimi) == 3  # the demo's three Kimi models are three different shades
    assert palette.provider_color("moonshot") == palette.provider_color("kimi") == palette.FAMILIES["kimi"][0]
    assert palette.model_color(None) == palette.model_color("(no model)") == palette.NO_MODEL


def test_a_models_colour_depends_on_its_name_only() -> None:
    """Fixed across pages, filters, the app and the report, and across processes (not Python's
    salted ``hash``)."""
    names = ["kimi-k2-0905-preview", "my-local-model", "kimi-k9-unknown", "qwen3-coder", None]
    alone = {n: palette.model_color(n) for n in names}
    assert palette.colors(reversed(names)) == palette.colors(names)
    assert palette.colors(names[:1])["kimi-k2-0905-preview"] == alone["kimi-k2-0905-preview"]
    script = "import json, sys; from persistence import palette; print(json.dumps([palette.model_color(n) for n in json.loads(sys.argv[1])]))"
    for seed in ("1", "2"):
        out = subprocess.run(
            [sys.executable, "-c", script, json.dumps(names)],
            env={**os.environ, "PYTHONHASHSEED": seed},
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=True,
        )
        assert json.loads(out.stdout) == [alone[n] for n in names]
    # Pinned: a colour that moves would re-colour every saved screenshot and report.
    assert alone["kimi-k2-0905-preview"] == "#7E57C2"
    assert palette.model_color("glm-4.6") == "#1E88E5"
    assert palette.model_color("gpt-5") == "#00897B"
    assert palette.model_color("claude-sonnet-4-5-20250929") == "#E64A19"


def test_each_colour_means_one_thing() -> None:
    models = {c for shades in palette.FAMILIES.values() for c in shades}
    quantities = {
        palette.COST,
        palette.SAVED,
        palette.UPLOADED,
        palette.STORED,
        palette.NO_MODEL,
        *palette.TOKEN_KIND_COLORS.values(),
        *palette.NEUTRALS,
    }
    assert not models & quantities
    assert len(models) == sum(len(s) for s in palette.FAMILIES.values())  # no shade in two families
    # Quantities are greys, models are not: a grey never reads as a model.
    for color in quantities - {palette.SAVED}:
        assert hls(color)[2] <= 0.2, color
    for color in models:
        assert hls(color)[2] >= 0.25, color
    # Savings are green and far from every family's hue; nothing is red.
    saved_hue = hls(palette.SAVED)[0] * 360
    assert 90 <= saved_hue <= 150
    for color in models | quantities:
        hue, _, saturation = hls(color)
        assert not (saturation > 0.5 and (hue * 360 < 10 or hue * 360 > 345)), color
        if color != palette.SAVED and saturation > 0.25:
            assert min(abs(hue * 360 - saved_hue), 360 - abs(hue * 360 - saved_hue)) >= 25, color


def test_app_colour_map_is_the_palette() -> None:
    names = ["glm-4.6", "kimi-k2-0905-preview", None]
    assert widgets.color_map(names) == {
        "glm-4.6": palette.model_color("glm-4.6"),
        "kimi-k2-0905-preview": palette.model_color("kimi-k2-0905-preview"),
        "(no model)": palette.NO_MODEL,
        widgets.NONE_LABEL: palette.NO_MODEL,
    }
    assert widgets.color_map(["kimi", "glm"], kind="provider") == {
        "kimi": palette.provider_color("kimi"),
        "glm": palette.provider_color("glm"),
        "(none)": palette.NO_MODEL,
    }
    tools = widgets.color_map(["chat", "debug", None], kind="tool_name")
    assert (
        tools[widgets.NONE_LABEL] == palette.NO_MODEL
        and tools["chat"] == widgets.color_map(["chat"], kind="tool_name")["chat"]
    )


# -- numbers and titles --------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("title", "shown"),
    [
        (
            "```python def fetch(session, url, *, retries=3): for attempt",
            "def fetch(session, url, *, retries=3): for attempt",
        ),
        ("```python\ndef fetch(session):\n    return 1\n```", "def fetch(session): return 1"),
        ("``` def fetch(", "def fetch("),
        ("~~~sql select 1", "select 1"),
        ("## Why does the pool run dry?", "Why does the pool run dry?"),
        ("# **Fix** the [parser](https://example.com/p) now", "Fix the parser now"),
        ("Why does __init__ call get_conversation twice?", "Why does __init__ call get_conversation twice?"),
        ("*italic* and _emphasis_ and ~~gone~~", "italic and emphasis and gone"),
        ("> quoted - item", "quoted - item"),
        ("- a list item", "a list item"),
        ("![diagram](https://x.invalid/a.png) of the flow", "diagram of the flow"),
        ("[x](javascript:alert(3)) *title*", "x title"),
        ("see [Pool](https://en.wikipedia.org/wiki/Pool_(computer_science)) now", "see Pool now"),
        ("See <https://example.com> and `store.search()`", "See https://example.com and store.search()"),
        ("C# and F# with a * b", "C# and F# with a * b"),
        (r"\*literal stars\*", "*literal stars*"),
        ("Plan a fix, with tests. ``…", "Plan a fix, with tests.…"),
        ("为什么 **数据库** 连接池耗尽？", "为什么 数据库 连接池耗尽？"),
        ("```", None),
        ("   ", None),
    ],
)
def test_titles_are_shown_without_markdown(title: str, shown: str | None) -> None:
    assert plain_title(title) == shown


def test_plural() -> None:
    assert [plural(n, "row") for n in (0, 1, 2, 1234)] == ["0 rows", "1 row", "2 rows", "1,234 rows"]
    assert plural(1, "reply", "replies") == "1 reply" and plural(3, "reply", "replies") == "3 replies"


@pytest.mark.parametrize(
    ("top", "last"),
    [(0, "1 B"), (700, "800 B"), (5_000, "5 KiB"), (700_000, "800 KiB"), (12_345_678, "12 MiB"), (3 * 2**30, "3 GiB")],
)
def test_byte_ticks(top: float, last: str) -> None:
    values, labels = size_ticks(top)
    assert labels[0] == "0" and labels[-1] == last and values[-1] >= top
    assert len(values) <= 8 and values == sorted(values)


def test_the_app_chart_helper_writes_bytes_as_sizes() -> None:
    fig = go.Figure()
    fig.add_bar(x=["a", "b"], y=[1_500_000, 300_000], name="Uploaded")
    fig.add_bar(x=["a", "b"], y=[1_000_000, 2_000], name="Stored <b>")
    fig.update_layout(barmode="group")
    fig.update_yaxes(ticksuffix="B")
    widgets.byte_axes(fig)
    assert fig.layout.yaxis.ticksuffix == ""
    assert list(fig.layout.yaxis.ticktext) == ["0", "0.25 MiB", "0.5 MiB", "0.75 MiB", "1 MiB", "1.25 MiB", "1.5 MiB"]
    assert list(fig.data[0].customdata) == ["1.4 MiB", "293.0 KiB"]
    assert "<b>" not in fig.data[1].hovertemplate


# -- the app ---------------------------------------------------------------------------------------

FENCED = "thread-fenced"
FENCED_QUESTION = "```python\ndef fetch(session, url):\n    return session.get(url)\n```\nWhy does this hang?"


@pytest.fixture(scope="module")
def looks_folder(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small store: a few models of two providers, uploads, and a thread whose first message
    opens with a code fence (its title is that fence)."""
    folder = tmp_path_factory.mktemp("looks-store")
    at = datetime.now(UTC).replace(microsecond=0) - timedelta(days=2)
    with persistence.open_store(f"sqlite:///{folder / 'history.db'}") as store:
        store.record_message(FENCED, "user", FENCED_QUESTION, tool_name="chat", created_at=at)
        for i, model in enumerate(("kimi-k2-0905-preview", "glm-4.6", "kimi-k2-thinking")):
            store.record_message(
                FENCED,
                "assistant",
                f"answer {i}",
                model=model,
                usage={"prompt_tokens": 20_000 * (i + 1), "completion_tokens": 900},
                created_at=at + timedelta(minutes=i + 1),
            )
        store.put_file(b"x" * 700_000, filename="big.txt", mime_type="text/plain", created_at=at)
        store.put_file(b"y" * 3_000, filename="small.txt", mime_type="text/plain", created_at=at)
    return folder


@pytest.fixture
def looks_app(looks_folder: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[str]:
    url = f"sqlite:///{looks_folder / 'history.db'}"
    monkeypatch.setenv("PERSISTENCE_URL", url)
    yield url


def charts(at: AppTest) -> list[tuple[dict[str, Any], dict[str, Any]]]:
    """(figure, config) of every plotly chart on the page."""
    return [(json.loads(e.proto.spec), json.loads(e.proto.config or "{}")) for e in at.get("plotly_chart")]


@pytest.mark.usefixtures("looks_app")
def test_thread_titles_show_without_markdown() -> None:
    at = open_page("thread", thread=FENCED)
    assert not at.exception
    assert at.title[0].value.startswith("def fetch\\(session, url\\)")  # escaped for st.title
    assert "```" not in at.title[0].value and "python" not in at.title[0].value
    go_to(at, "threads", {"period": "all"})
    assert not at.exception
    # However the list draws its rows (a table, links or HTML), the title reads as plain words.
    shown = [str(h.proto.body) for h in at.get("html")]
    shown += [str(t) for frame in at.dataframe for col in frame.value.columns for t in frame.value[col]]
    shown += [str(link.proto.label) for link in at.get("page_link")]
    page = "\n".join(shown)
    assert "def fetch(session, url)" in page
    assert "```" not in page and "```python" not in page


@pytest.mark.usefixtures("looks_app")
def test_app_charts_have_no_toolbar_and_legends_above_the_dates() -> None:
    seen = 0
    for page in ("overview", "usage", "storage"):
        at = open_page(page, period="all")
        assert not at.exception, page
        for fig, config in charts(at):
            seen += 1
            assert config.get("displayModeBar") is False, page
            legend = fig["layout"].get("legend", {})
            assert legend.get("y", 0) > 1 and legend.get("yanchor") == "bottom", page
    assert seen >= 4


@pytest.mark.usefixtures("looks_app")
def test_usage_charts_colour_models_by_the_palette() -> None:
    at = open_page("usage", period="all")
    assert not at.exception
    drawn = {t["name"]: t["marker"]["color"] for fig, _ in charts(at) for t in fig["data"] if t.get("name")}
    for model in ("kimi-k2-0905-preview", "glm-4.6", "kimi-k2-thinking"):
        assert drawn[model] == palette.model_color(model), model
    assert palette.family_of("kimi-k2-thinking") == palette.family_of("kimi-k2-0905-preview") == "kimi"


@pytest.mark.usefixtures("looks_app")
def test_storage_axes_read_in_kib_and_mib() -> None:
    at = open_page("storage", period="all")
    assert not at.exception
    axes = [
        fig["layout"][axis]
        for fig, _ in charts(at)
        for axis in ("xaxis", "yaxis")
        if fig["layout"].get(axis, {}).get("tickmode") == "array"
    ]
    assert len(axes) == 2  # bytes by day (y) and bytes by type (x)
    for axis in axes:
        assert "KiB" in " ".join(axis["ticktext"]) and axis.get("ticksuffix", "") == ""


def filter_page() -> None:
    import streamlit as st

    from ui import layout

    layout.style()
    c = layout.filter_panel("demo", active=1).columns(2)
    c[0].selectbox("Model", ["Any", "glm-4.6"], key="demo_model")
    c[1].selectbox("Tool", ["Any", "chat"], key="demo_tool")
    st.write("content")


def test_filters_fold_behind_one_switch_on_a_phone() -> None:
    at = AppTest.from_function(filter_page, default_timeout=30)
    at.run()
    assert not at.exception
    assert [t.label for t in at.toggle] == ["Filters (1 on)"]
    assert [s.label for s in at.selectbox] == ["Model", "Tool"]  # always drawn: state never depends on it
    folded = [h.proto.body for h in at.get("html") if ".st-key-filters-demo" in h.proto.body]
    assert len(folded) == 1 and "max-width: 640px" in folded[0] and "display: none" in folded[0]
    at.toggle[0].set_value(True).run()
    assert not [h for h in at.get("html") if ".st-key-filters-demo" in h.proto.body]
    css = (ROOT / "static" / "app.css").read_text()
    assert "-webkit-line-clamp: 2" in css and '[class*="st-key-filters-switch-"]' in css


def test_a_negative_amount_reads_minus_dollars() -> None:
    # "$-0.15" read as a rise in Streamlit's metric delta (it looks for a leading minus).
    assert [money(x) for x in (-0.15, -0.0042, -1234.5, 0.5)] == ["-$0.15", "-$0.0042", "-$1,234", "$0.50"]
