"""How pages fit a screen: the app's stylesheet (``static/app.css``: titles on two lines at most,
the phone layout) and the filter panel that folds a page's filters away on a phone.

Streamlit cannot tell the server how wide the screen is, so the phone rules are CSS media
queries (a phone is a screen at most 640 px wide) and the server only says what is open."""

from __future__ import annotations

import re
from pathlib import Path

import streamlit as st
from streamlit.delta_generator import DeltaGenerator

__all__ = ["PHONE_MAX_WIDTH", "STYLESHEET", "filter_panel", "style"]

STYLESHEET = Path(__file__).resolve().parents[1] / "static" / "app.css"
PHONE_MAX_WIDTH = 640  # px; the same number as in static/app.css
_KEY = re.compile(r"^[A-Za-z0-9_-]{1,64}$")


def style() -> None:
    """Put the app's stylesheet on the page (it takes no space: style-only HTML goes to
    Streamlit's event container)."""
    st.html(STYLESHEET)


def filter_panel(key: str, *, active: int = 0) -> DeltaGenerator:
    """A container for a page's filters. On a wide screen it is simply there; on a phone it is
    folded behind one "Filters" switch (which says how many filters are on), so the page's
    content comes first. Use it as the row of filters is used now::

        c = widgets.filter_panel("threads", active=n).columns([2, 2, 2, 2, 1])

    The filters are always drawn (their values and URL state do not depend on the switch);
    only their display is folded, by CSS that applies below 640 px.
    """
    if not _KEY.match(key):
        raise ValueError(f"filter panel key {key!r}: letters, digits, - and _ only")
    label = "Filters" + (f" ({active} on)" if active else "")
    with st.container(key=f"filters-switch-{key}"):
        shown = st.toggle(label, key=f"filters_open_{key}", help="Show or hide this page's filters")
    if not shown:
        st.html(
            f"<style>@media (max-width: {PHONE_MAX_WIDTH}px) {{ .st-key-filters-{key} {{ display: none; }} }}</style>"
        )
    return st.container(key=f"filters-{key}")
