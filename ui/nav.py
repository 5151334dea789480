"""The app's pages, in one place: app.py builds the navigation from it, pages link with it."""

from __future__ import annotations

from typing import NamedTuple

import streamlit as st

__all__ = ["PAGES", "PageInfo", "require_app"]


class PageInfo(NamedTuple):
    path: str
    title: str
    icon: str


PAGES: dict[str, PageInfo] = {
    "overview": PageInfo("pages/overview.py", "Overview", ":material/dashboard:"),
    "threads": PageInfo("pages/threads.py", "Threads", ":material/forum:"),
    "thread": PageInfo("pages/thread.py", "Thread", ":material/chat:"),
    "search": PageInfo("pages/search.py", "Search", ":material/search:"),
    "usage": PageInfo("pages/usage.py", "Usage & cost", ":material/payments:"),
    "storage": PageInfo("pages/storage.py", "Storage", ":material/hard_drive:"),
    "files": PageInfo("pages/files.py", "Files", ":material/description:"),
}


def require_app(*, entry: bool = False) -> None:
    """Make sure the app runs with app.py's navigation (app.py and each page call this first).

    Streamlit still honours the old ``pages/`` folder convention until some script calls
    ``st.navigation``: a fresh server's first run goes through that convention, so a deep link
    such as ``/thread?thread=…`` runs ``pages/thread.py`` alone (automatic sidebar, no app.py),
    and widgets of that first run get other ids than in later runs (a first click is lost).
    Switch the process to app.py's navigation and run the same URL again.

    Under ``AppTest`` (which starts every run the old way and loses a click across a rerun) a
    page that ran alone is framed here instead, as app.py would have framed it.
    """
    from streamlit import config
    from streamlit.runtime.pages_manager import PagesManager

    if not PagesManager.uses_pages_directory:
        return
    PagesManager.uses_pages_directory = False
    if not config.get_option("global.appTest"):
        st.rerun()
    if not entry:
        from . import shell

        st.set_page_config(page_title="MCP history", page_icon=":material/forum:", layout="wide")
        shell.frame()
