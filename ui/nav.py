"""The app's pages, in one place: app.py builds the navigation from it, pages link with it.

Each page is a script in ``views/`` (not ``pages/``: Streamlit would also run a folder named
``pages`` beside app.py through its older multipage mechanism) served at its ``url_path``, so
``/thread?thread=…&seq=…``, ``/search?q=…`` and the others are links a visitor can keep. The
default page (the Overview) is served at the app's root URL.
"""

from __future__ import annotations

from typing import NamedTuple
from urllib.parse import urlencode

__all__ = ["DEFAULT", "PAGES", "PageInfo", "link"]


class PageInfo(NamedTuple):
    path: str  # the script, relative to app.py
    title: str
    icon: str
    url_path: str


PAGES: dict[str, PageInfo] = {
    "overview": PageInfo("views/overview.py", "Overview", ":material/dashboard:", "overview"),
    "threads": PageInfo("views/threads.py", "Threads", ":material/forum:", "threads"),
    "thread": PageInfo("views/thread.py", "Thread", ":material/chat:", "thread"),
    "search": PageInfo("views/search.py", "Search", ":material/search:", "search"),
    "usage": PageInfo("views/usage.py", "Usage & cost", ":material/payments:", "usage"),
    "storage": PageInfo("views/storage.py", "Storage", ":material/hard_drive:", "storage"),
    "files": PageInfo("views/files.py", "Files", ":material/description:", "files"),
}
DEFAULT = "overview"


def link(page: str, **query: str) -> str:
    """A page's address relative to the app's root, for link columns: ``thread?thread=…``."""
    path = "" if page == DEFAULT else PAGES[page].url_path
    return f"{path}?{urlencode(query)}" if query else path
