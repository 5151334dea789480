"""Conversation history, search, usage and storage of an MCP server.

    streamlit run app.py                       # the store from PERSISTENCE_URL / Supabase / .env
    streamlit run app.py -- --url sqlite:///history.db
    streamlit run app.py --server.address 0.0.0.0   # serve others: configure sign-in first (README, App)

The pages live in ``views/`` and only draw; reads and shared widgets are in ``ui/``, the list of
pages and their URLs in ``ui/nav.py``. The app is served on 127.0.0.1 (``.streamlit/config.toml``);
who may see it is ``ui/auth.py``. It asks nothing of any other server: the favicon is
``static/icon.png`` (a Material icon there would be fetched from Google's font server).
"""

from __future__ import annotations

from pathlib import Path

import streamlit as st

from ui import auth, shell
from ui.nav import DEFAULT, PAGES

ICON = Path(__file__).resolve().parent / "static" / "icon.png"

st.set_page_config(page_title="MCP history", page_icon=ICON, layout="wide")

navigation = st.navigation(
    [
        st.Page(info.path, title=info.title, icon=info.icon, url_path=info.url_path, default=key == DEFAULT)
        for key, info in PAGES.items()
    ],
    # Before sign-in the menu is hidden too; shell.frame draws the sign-in instead of the page.
    position="sidebar" if auth.admitted() else "hidden",
)
shell.frame()
navigation.run()
