"""What every page is framed by: who may see it, the store (or why it cannot be opened), the
sidebar, and the welcome of an empty store."""

from __future__ import annotations

import streamlit as st

import persistence

from . import auth, data, layout, queries, widgets

__all__ = ["frame"]


def frame() -> persistence.Store:
    """Open the store and draw the sidebar; stop the run with the sign-in when the visitor may not
    see the history, with an explanation when there is no store to show, or with the welcome
    when it is empty."""
    layout.style()  # titles on two lines at most, the phone layout (static/app.css)
    auth.gate()  # before the store is even opened: a visitor who may not come in learns nothing of it
    auth.warn_if_exposed()
    url = data.store_url()
    try:
        store = data.get_store()
    except Exception as exc:  # no traceback on the page: say which store and why, never a secret
        st.title("Cannot open the store")
        st.error(data.scrub(f"{type(exc).__name__}: {exc}", url), icon=":material/error:")
        st.caption(
            "Set PERSISTENCE_URL (or SUPABASE_URL and SUPABASE_SERVICE_ROLE_KEY) in the environment or .env, "
            "or start the app with `streamlit run app.py -- --url sqlite:///path/to/history.db`."
        )
        st.stop()

    with st.sidebar:
        st.caption(widgets.store_caption(store))
        if st.button("Refresh", key="refresh", icon=":material/refresh:", help=f"Results are cached for {data.TTL} s"):
            data.refresh()
            st.rerun()
        auth.sidebar()

    if queries.is_empty(url):
        widgets.welcome(store)
        st.stop()
    return store
