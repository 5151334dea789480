"""Conversation history, search, usage and storage of an MCP server.

    streamlit run app.py                       # the store from PERSISTENCE_URL / Supabase / .env
    streamlit run app.py -- --url sqlite:///history.db

The pages live in ``pages/`` and only draw; reads and shared widgets are in ``ui/``.
"""

from __future__ import annotations

import streamlit as st

from ui import nav, shell
from ui.nav import PAGES

nav.require_app(entry=True)
st.set_page_config(page_title="MCP history", page_icon=":material/forum:", layout="wide")

navigation = st.navigation(
    [st.Page(info.path, title=info.title, icon=info.icon, default=(key == "overview")) for key, info in PAGES.items()]
)
shell.frame()
navigation.run()
