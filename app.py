"""Conversation history, search, usage and storage of an MCP server.

    streamlit run app.py                       # the store from PERSISTENCE_URL / Supabase / .env
    streamlit run app.py -- --url sqlite:///history.db
    streamlit run app.py --server.address 0.0.0.0   # serve others: configure sign-in first (README, App)

The pages live in ``pages/`` and only draw; reads and shared widgets are in ``ui/``. The app is
served on 127.0.0.1 (``.streamlit/config.toml``); who may see it is ``ui/auth.py``.
"""

from __future__ import annotations

import streamlit as st

from ui import auth, nav, shell
from ui.nav import PAGES

nav.require_app(entry=True)
st.set_page_config(page_title="MCP history", page_icon=":material/forum:", layout="wide")

navigation = st.navigation(
    [st.Page(info.path, title=info.title, icon=info.icon, default=(key == "overview")) for key, info in PAGES.items()],
    # Before sign-in the menu is hidden too; shell.frame draws the sign-in instead of the page.
    position="sidebar" if auth.admitted() else "hidden",
)
shell.frame()
navigation.run()
