"""Streamlit entry point: `streamlit run app.py [-- --url URL]`."""

from __future__ import annotations

import argparse
import sys

import streamlit as st

import persistence


def _url_from_argv() -> str | None:
    parser = argparse.ArgumentParser(add_help=False)
    parser.add_argument("--url")
    args, _ = parser.parse_known_args(sys.argv[1:])
    return args.url


@st.cache_resource
def get_store(url: str | None) -> persistence.Store:
    return persistence.open_store(url)


store = get_store(_url_from_argv())
st.title("MCP conversation history")
st.caption(f"{store.backend} store")
totals = store.usage(())
col1, col2, col3 = st.columns(3)
col1.metric("Threads", f"{store.count_conversations():,}")
col2.metric("Messages", f"{int(totals['messages'].iloc[0]):,}")
col3.metric("Cost (USD)", f"${totals['cost_usd'].iloc[0]:,.2f}")
