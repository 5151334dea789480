"""State that lives in the URL: a choice (``?sort=cost``) and a keyset page (``?page=3&after=…``).

Filters are widgets bound to the URL by Streamlit itself (``bind="query-params"``: the key is
the parameter). A choice whose URL value should be its key rather than its label (``sort=cost``,
not ``sort=Cost``) is kept here, as is the place in a keyset listing:

The store pages by keyset (a cursor names where a page starts), so the URL keeps both the page
number (what a reader sees) and the cursor of its first row (what the store needs): a reload, a
shared link or the browser's Back button lands on the same rows. The cursors of pages already
seen are kept in the session, so "Previous" is one read; after a reload the cursor of an
earlier page is found again by walking from the first page in large steps.

Changing a filter or the order starts again at page 1; a cursor the store refuses (edited or
from another order) does too, with a note.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import streamlit as st

from persistence import Page
from persistence.errors import ValidationError

__all__ = ["PagePlace", "choice", "keep_choice", "keyset_page", "page_buttons"]

Fetch = Callable[[str | None, int], Page[Any]]  # (cursor, limit) -> one page of the listing
WALK_LIMIT = 1000  # rows per read when walking to an earlier page's cursor (the store's maximum)


@dataclass(frozen=True, slots=True)
class PagePlace:
    number: int  # 1-based
    page: Page[Any]
    refused: bool = False  # the URL's cursor was refused: this is page 1 instead


def choice(key: str, options: Sequence[str], default: str) -> str:
    """Prepare the widget with ``key`` to show the choice the URL's ``?key=`` names (its
    default when absent or not one of ``options``), and return it; pass :func:`keep_choice` as
    the widget's ``on_change`` so a change goes into the URL. Create the widget without a
    default: the session holds its value."""
    value = st.query_params.get(key)
    chosen = value if value is not None and value in options else default
    st.session_state[key] = chosen
    if (value is not None and value != chosen) or value == default:
        st.query_params.pop(key, None)  # the default is no parameter: a clean, shareable URL
    return chosen


def keep_choice(key: str, default: str) -> None:
    """``on_change`` of a widget prepared by :func:`choice`: its new value into the URL."""
    value = st.session_state.get(key)
    if value is None or value == default:
        st.query_params.pop(key, None)
    else:
        st.query_params[key] = str(value)


def _known(name: str) -> dict[int, str | None]:
    known: dict[int, str | None] = st.session_state.setdefault(f"_{name}_cursors", {1: None})
    return known


def _set_place(number: int, cursor: str | None) -> None:
    if number <= 1:
        st.query_params.pop("page", None)
        st.query_params.pop("after", None)
    else:
        st.query_params["page"] = str(number)
        st.query_params["after"] = cursor or ""


def _url_place() -> tuple[int, str | None]:
    try:
        number = int(st.query_params.get("page", "1"))
    except ValueError:
        number = 1
    cursor = st.query_params.get("after") or None
    if number <= 1 or cursor is None:
        return 1, None
    return number, cursor


def keyset_page(name: str, signature: tuple[Any, ...], fetch: Fetch, page_size: int) -> PagePlace:
    """The page the URL names, read with ``fetch``. ``signature`` is the order and filters:
    when it differs from the one this session last showed, the listing starts at page 1."""
    sig_key = f"_{name}_signature"
    if sig_key in st.session_state and st.session_state[sig_key] != signature:
        _set_place(1, None)
        st.session_state[f"_{name}_cursors"] = {1: None}
    elif sig_key not in st.session_state:
        st.session_state[f"_{name}_cursors"] = {1: None}
    st.session_state[sig_key] = signature
    number, cursor = _url_place()
    try:
        page = fetch(cursor, page_size)
        refused = False
    except ValidationError as exc:
        if exc.field != "cursor":
            raise
        number, cursor, refused = 1, None, True
        _set_place(1, None)
        page = fetch(None, page_size)
    known = _known(name)
    known[number] = cursor
    if page.next_cursor is not None:
        known[number + 1] = page.next_cursor
    return PagePlace(number, page, refused)


def _cursor_of(name: str, number: int, fetch: Fetch, page_size: int) -> str | None:
    """The cursor of page ``number``: known, or found by reading forward from the first page."""
    known = _known(name)
    if number in known:
        return known[number]
    cursor: str | None = None
    rows_before = (number - 1) * page_size
    read = 0
    while read < rows_before:
        step = min(WALK_LIMIT, rows_before - read)
        page = fetch(cursor, step)
        read += step
        cursor = page.next_cursor
        if cursor is None:  # the listing is shorter than that now: its first page
            return None
    known[number] = cursor
    return cursor


def page_buttons(name: str, place: PagePlace, fetch: Fetch, page_size: int) -> None:
    """← Previous and Next → under a page; each puts the new place in the URL."""

    def go(number: int) -> None:
        _set_place(number, _cursor_of(name, number, fetch, page_size) if number > 1 else None)

    cols = st.columns([1, 1, 6])
    cols[0].button(
        "← Previous",
        on_click=go,
        args=(place.number - 1,),
        disabled=place.number == 1,
        key=f"{name}_prev",
        width="stretch",
    )
    cols[1].button(
        "Next →",
        on_click=go,
        args=(place.number + 1,),
        disabled=place.page.next_cursor is None,
        key=f"{name}_next",
        width="stretch",
    )
