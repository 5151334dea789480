"""What each page reads, cached where the store is called.

Every read goes through ``persistence``; each is a function of the store's URL (what the cache
is keyed by, never the store object) and plain arguments, and returns plain, picklable values.
Results are cached for :data:`ui.data.TTL` seconds (``st.cache_data``); the store itself is
opened once per URL (:func:`ui.data.open_store`). The benchmark times the same functions
uncached, through their ``__wrapped__``.

The store's health (``doctor``) is checked in a background thread instead: see :func:`health`.
"""

from __future__ import annotations

import threading
import time as clock
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Any

import pandas as pd
import streamlit as st

from persistence import Conversation, Message, Page, SearchHit, Store, StoredFile
from persistence.errors import ValidationError
from persistence.outbox import doctor as doctor_with_outbox
from persistence.search_query import SEARCH_STOPPED
from persistence.store import encode_cursor

from .data import TTL, open_store, scrub, store_url

__all__ = [
    "STACK_KEYS",
    "THREAD_PAGE",
    "Health",
    "OverviewData",
    "StorageData",
    "ThreadGroups",
    "Totals",
    "UsageData",
    "cache_savings",
    "choices",
    "count_threads",
    "facets",
    "file_conversations",
    "health",
    "is_empty",
    "list_files",
    "list_threads",
    "mime_types",
    "neighbours",
    "older_messages",
    "open_ended",
    "overview",
    "related_threads",
    "search",
    "storage",
    "thread",
    "thread_groups",
    "threads_by_id",
    "usage",
]

THREAD_PAGE = 30  # messages per "page" of a thread: the newest 30, then 30 older per click
STACK_KEYS = {"model": "Model", "provider": "Provider", "tool_name": "Tool", "user_id": "User"}
THREAD_GROUPS = {"tag": "Tag", "session_id": "Session"}  # not in the daily rollup: from thread totals
GROUP_THREADS = 1000  # threads read for the spend by tag and session: one page, the costliest


@dataclass(frozen=True, slots=True)
class Totals:
    threads: int
    messages: int
    tokens: int
    cost_usd: float
    unpriced_messages: int
    stored_bytes: int
    files: int
    uploaded_bytes: int
    uploads: int


@dataclass(frozen=True, slots=True)
class OverviewData:
    current: Totals
    previous: Totals | None
    stored_total: pd.DataFrame  # one row: all-time files, bytes, uploads, logical_bytes
    daily: pd.DataFrame  # day, cost_usd, messages, total_tokens for every day of the period
    by_model: pd.DataFrame  # the period's usage by model, costliest first
    recent: tuple[Conversation, ...]
    last_activity: datetime | None


@dataclass(frozen=True, slots=True)
class UsageData:
    by_day: pd.DataFrame  # day, <stack key>, usage columns
    by_model: pd.DataFrame  # model, provider, usage columns; costliest first
    top_threads: tuple[Conversation, ...]


@dataclass(frozen=True, slots=True)
class StorageData:
    totals: pd.DataFrame  # one row: files, bytes, uploads, logical_bytes
    by_day: pd.DataFrame  # day, files, bytes, uploads, logical_bytes
    by_type: pd.DataFrame  # mime_type, ...; largest first
    largest: tuple[StoredFile, ...]  # distinct stored objects, largest first
    unused: tuple[StoredFile, ...]
    more_unused: bool


@dataclass(frozen=True, slots=True)
class Health:
    """What the Overview warns about. ``outbox_*`` are filled by stores with a write-behind outbox."""

    checked_at: datetime
    outbox_depth: int | None = None
    outbox_oldest_age_s: float | None = None
    outbox_last_error: str | None = None
    outbox_dead: int = 0  # writes the store refused, kept in the outbox's outbox_dead table
    outbox_set_aside: int = 0  # of those, single zen turns left out of a thread that went on
    integrity: str | None = None
    files_missing_bytes: int = 0
    read_only: bool = False
    error: str | None = None
    recover_command: str | None = None  # set when the database file is damaged


def open_ended(until: datetime | None) -> datetime | None:
    """``until`` for thread listings and counts: None when it lies in the future. A period that
    ends today includes every thread created so far, and without the bound the store can answer
    from its index on last activity alone (several times faster on a large store)."""
    return None if until is not None and until > datetime.now(UTC) else until


def _bounded(filters: dict[str, Any]) -> dict[str, Any]:
    return {**filters, "until": open_ended(filters["until"])} if "until" in filters else filters


def _row(df: pd.DataFrame) -> dict[str, Any]:
    return {str(k): (v.item() if hasattr(v, "item") else v) for k, v in df.iloc[0].to_dict().items()} if len(df) else {}


def _totals(store: Store, since: datetime | None, until: datetime | None) -> Totals:
    u = _row(store.usage((), since=since, until=until))
    s = _row(store.storage_usage((), since=since, until=until))
    return Totals(
        threads=store.count_conversations(since=since, until=open_ended(until)),
        messages=int(u.get("messages", 0)),
        tokens=int(u.get("total_tokens", 0)),
        cost_usd=float(u.get("cost_usd", 0.0)),
        unpriced_messages=int(u.get("unpriced_messages", 0)),
        stored_bytes=int(s.get("bytes", 0)),
        files=int(s.get("files", 0)),
        uploaded_bytes=int(s.get("logical_bytes", 0)),
        uploads=int(s.get("uploads", 0)),
    )


def _days(first: date, last: date) -> pd.DatetimeIndex:
    return pd.date_range(pd.Timestamp(first), pd.Timestamp(last), freq="D")


# -- the reads, one per page section -------------------------------------------------------


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def is_empty(url: str) -> bool:
    store = open_store(url)
    return store.count_conversations() == 0 and len(store.list_files(limit=1)) == 0


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def overview(
    url: str,
    since: datetime | None,
    until: datetime | None,
    prev_since: datetime | None,
    prev_until: datetime | None,
    today: date,
) -> OverviewData:
    store = open_store(url)
    current = _totals(store, since, until)
    previous = _totals(store, prev_since, prev_until) if prev_since is not None else None
    # Cost per day over the period itself, so the chart adds up to the Cost card beside it
    # (zeros where nothing happened). All time runs from the first day with usage to today.
    raw = store.usage(("day",), since=since, until=until).set_index("day")
    if since is not None:
        first = since.date()
        last = (until - timedelta(days=1)).date() if until else max(today, first)
    else:
        first = raw.index.min().date() if len(raw) else today
        last = max(today, raw.index.max().date()) if len(raw) else today
    daily = (
        raw.reindex(_days(first, last), fill_value=0)[["cost_usd", "messages", "total_tokens"]]
        .rename_axis("day")
        .reset_index()
    )
    by_model = store.usage(("model",), since=since, until=until)
    by_model = by_model[by_model["messages"] > 0].sort_values(["cost_usd", "messages"], ascending=False)
    recent = store.list_conversations(since=since, until=open_ended(until), limit=6).items
    newest = recent[:1] or store.list_conversations(limit=1).items
    return OverviewData(
        current=current,
        previous=previous,
        stored_total=store.storage_usage(()),
        daily=daily,
        by_model=by_model.reset_index(drop=True),
        recent=recent,
        last_activity=newest[0].updated_at if newest else None,
    )


@st.cache_data(ttl=5 * TTL, show_spinner=False, max_entries=16)
def facets(url: str) -> dict[str, list[str]]:
    return open_store(url).facets()


@st.cache_data(ttl=5 * TTL, show_spinner=False, max_entries=16)
def choices(url: str) -> dict[str, list[str]]:
    """Models, providers and tools in use, for filter choices: from the daily rollup, which is
    much cheaper than :meth:`Store.facets` (that also collects every thread's tags)."""
    store = open_store(url)
    out: dict[str, list[str]] = {}
    for key, name in (("model", "models"), ("provider", "providers"), ("tool_name", "tools")):
        df = store.usage((key,))
        out[name] = sorted(str(v) for v in df[key].dropna())
    return out


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def list_threads(
    url: str, *, order: str = "recent", cursor: str | None = None, limit: int = 50, **filters: Any
) -> Page[Conversation]:
    return open_store(url).list_conversations(order=order, cursor=cursor, limit=limit, **_bounded(filters))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def count_threads(url: str, **filters: Any) -> int:
    return open_store(url).count_conversations(**_bounded(filters))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def thread(url: str, continuation_id: str, last: int = THREAD_PAGE) -> Conversation | None:
    return open_store(url).get_conversation(continuation_id, last=last)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def older_messages(url: str, continuation_id: str, before_seq: int, limit: int = THREAD_PAGE) -> list[Message]:
    return open_store(url).get_messages(continuation_id, before_seq=before_seq, limit=limit)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def related_threads(
    url: str, continuation_id: str, parent_id: str | None
) -> tuple[Conversation | None, tuple[Conversation, ...], bool]:
    """(parent, children, more children than shown) of a thread."""
    store = open_store(url)
    parent = store.get_conversation(parent_id, last=0) if parent_id else None
    children = store.list_conversations(parent_id=continuation_id, order="created", limit=20)
    return parent, children.items, children.next_cursor is not None


NEIGHBOUR_WINDOWS = (timedelta(hours=1), timedelta(days=1), timedelta(days=7), timedelta(days=30), timedelta(days=365))
NEIGHBOUR_ROWS = 200  # threads read per window at most


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def neighbours(url: str, continuation_id: str) -> tuple[Conversation | None, Conversation | None]:
    """(newer, older): the threads just before and after this one by last activity, as the
    Threads list orders them by default."""
    store = open_store(url)
    conv = store.get_conversation(continuation_id, last=0)
    if conv is None:
        return None, None
    # Older: the listing's own keyset continued from this thread (its cursor is
    # ("recent", updated_at, id), as Store.list_conversations makes it).
    after = encode_cursor(["recent", conv.updated_at.isoformat(timespec="microseconds"), conv.id])
    older_page = store.list_conversations(order="recent", cursor=after, limit=1).items
    return _newer(store, conv), older_page[0] if older_page else None


def _newer(store: Store, conv: Conversation) -> Conversation | None:
    """The thread active next after ``conv``. The listing runs newest first only, so the nearest
    newer one is found in growing windows: a thread active in [t, t + w) was created before
    t + w, so ``since=t, until=t + w`` (until bounds creation) holds every such thread, and
    the window is read whole (few rows) before the next is tried. None when there is no newer
    thread, or a window holds more threads than is cheap to read."""
    t = conv.updated_at
    for width in NEIGHBOUR_WINDOWS:
        page = store.list_conversations(order="recent", since=t, until=t + width, limit=NEIGHBOUR_ROWS)
        later = [c for c in page.items if c.updated_at > t and c.continuation_id != conv.continuation_id]
        if page.next_cursor is not None and not later:
            return None  # a crowded window: not cheap to look further
        if later and page.next_cursor is None:
            return min(later, key=lambda c: (c.updated_at, c.id))
        if later:  # more rows than read: the nearest may be among those not read
            return None
    return None


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def threads_by_id(url: str, continuation_ids: tuple[str, ...]) -> dict[str, Conversation]:
    """The threads (totals, no messages) with these ids, for the search page's thread cards; a
    thread deleted meanwhile is left out."""
    store = open_store(url)
    found = {cid: store.get_conversation(cid, last=0) for cid in continuation_ids}
    return {cid: conv for cid, conv in found.items() if conv is not None}


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def search(
    url: str,
    query: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    role: str | None = None,
    order: str = "rank",
    limit: int = 20,
) -> list[SearchHit]:
    return open_store(url).search(query, limit=limit, since=since, until=until, model=model, role=role, order=order)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=128)
def count_search(
    url: str,
    query: str,
    *,
    since: datetime | None = None,
    until: datetime | None = None,
    model: str | None = None,
    role: str | None = None,
) -> int | None:
    """How many messages the search matches in all, or None when counting them ran into the
    search time limit (a very common word at a large store): the page then says "more than".
    None is cached like a count, so a rerun does not spend the time limit again."""
    try:
        return open_store(url).count_search(query, since=since, until=until, model=model, role=role)
    except ValidationError as exc:
        if exc.field == "query" and exc.message.startswith(SEARCH_STOPPED):
            return None
        raise


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def usage(
    url: str,
    stack: str,
    *,
    since: datetime | None,
    until: datetime | None,
    model: str | None = None,
    provider: str | None = None,
    tool_name: str | None = None,
) -> UsageData:
    if stack not in STACK_KEYS:
        raise ValueError(f"stack must be one of {', '.join(STACK_KEYS)}")
    store = open_store(url)
    filters = {"model": model, "provider": provider, "tool_name": tool_name}
    by_day = store.usage(("day", stack), since=since, until=until, **filters)
    by_model = store.usage(("model", "provider"), since=since, until=until, **filters)
    by_model = by_model[by_model["messages"] > 0].sort_values(["cost_usd", "messages"], ascending=False)
    top = store.list_conversations(
        since=since,
        until=open_ended(until),
        model=model,
        provider=provider,
        tool_name=tool_name,
        order="cost",
        limit=10,
    )
    return UsageData(by_day=by_day, by_model=by_model.reset_index(drop=True), top_threads=top.items)


@dataclass(frozen=True, slots=True)
class ThreadGroups:
    """Spend by tag or session, summed from thread totals (the daily rollup has neither)."""

    table: pd.DataFrame  # <by>, threads, messages, total_tokens, cost_usd, unpriced_messages; costliest first
    threads_read: int  # threads summed: the costliest GROUP_THREADS at most
    threads_total: int  # threads active in the period with the filters


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def thread_groups(
    url: str,
    by: str,
    *,
    since: datetime | None,
    until: datetime | None,
    model: str | None = None,
    provider: str | None = None,
    tool_name: str | None = None,
) -> ThreadGroups:
    """Threads active in the period, grouped by ``by`` (a thread counts under each of its
    tags), with their whole totals. One read of the costliest :data:`GROUP_THREADS`, so the
    cost is bounded on any store; the count says how many there were in all."""
    if by not in THREAD_GROUPS:
        raise ValueError(f"by must be one of {', '.join(THREAD_GROUPS)}")
    store = open_store(url)
    filters: dict[str, Any] = {
        "since": since,
        "until": open_ended(until),
        "model": model,
        "provider": provider,
        "tool_name": tool_name,
    }
    page = store.list_conversations(order="cost", limit=GROUP_THREADS, **filters)
    rows = [
        (key, t.message_count, t.total_tokens, t.cost_usd, t.unpriced_messages)
        for t in page.items
        for key in ((t.tags or (None,)) if by == "tag" else (t.session_id,))
    ]
    columns = ["messages", "total_tokens", "cost_usd", "unpriced_messages"]
    frame = pd.DataFrame(rows, columns=[by, *columns])
    table = (
        frame.groupby(by, dropna=False, as_index=False)
        .agg(threads=(by, "size"), **{c: (c, "sum") for c in columns})
        .sort_values(["cost_usd", "total_tokens"], ascending=False, kind="stable")
        .reset_index(drop=True)
    )
    total = len(page.items) if page.next_cursor is None else store.count_conversations(**filters)
    return ThreadGroups(table=table[[by, "threads", *columns]], threads_read=len(page.items), threads_total=total)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def cache_savings(
    url: str,
    *,
    since: datetime | None,
    until: datetime | None,
    model: str | None = None,
    provider: str | None = None,
    tool_name: str | None = None,
) -> pd.DataFrame:
    """Per model: prompt tokens, cached input tokens, the cache-hit rate, what the cached
    tokens cost, would have cost uncached, and the difference saved (NaN where no price was in
    force). The report's own computation (:mod:`persistence.report.tables`), so the app and
    the report give the same figure."""
    # Imported here: the report package brings the notebook machinery, which the other pages do not need.
    from persistence.report.tables import _cache_savings, _cache_table

    store = open_store(url)
    day_model = store.usage(
        ("day", "model", "provider"), since=since, until=until, model=model, provider=provider, tool_name=tool_name
    )
    return _cache_table(_cache_savings(store, day_model))


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=64)
def storage(url: str, since: datetime | None, until: datetime | None) -> StorageData:
    store = open_store(url)
    totals = store.storage_usage((), since=since, until=until)
    by_day = store.storage_usage(("day",), since=since, until=until)
    by_type = store.storage_usage(("mime_type",), since=since, until=until).sort_values(
        ["logical_bytes", "bytes"], ascending=False
    )
    seen: set[str] = set()
    largest: list[StoredFile] = []
    for f in store.list_files(since=since, until=until, order="size", limit=200):
        if f.id not in seen:  # one row per stored object, not per upload of it
            seen.add(f.id)
            largest.append(f)
        if len(largest) == 10:
            break
    unused = store.list_files(unused=True, limit=25)
    return StorageData(
        totals=totals,
        by_day=by_day,
        by_type=by_type.reset_index(drop=True),
        largest=tuple(largest),
        unused=unused.items,
        more_unused=unused.next_cursor is not None,
    )


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def list_files(
    url: str, *, order: str = "recent", cursor: str | None = None, limit: int = 50, **filters: Any
) -> Page[StoredFile]:
    return open_store(url).list_files(order=order, cursor=cursor, limit=limit, **filters)


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=16)
def mime_types(url: str) -> list[str]:
    df = open_store(url).storage_usage(("mime_type",))
    return sorted(str(m) for m in df["mime_type"].dropna())


@st.cache_data(ttl=TTL, show_spinner=False, max_entries=256)
def file_conversations(url: str, file_id: str) -> list[Conversation]:
    return open_store(url).file_conversations(file_id)


# -- health, checked in the background -----------------------------------------------------


def check_health(url: str) -> Health:
    """The store's own health report (``doctor``, with its write outbox), reduced to what the
    app warns about. A failed check is reported, not raised: it is news, not a crash."""
    now = datetime.now(UTC)
    try:
        report = doctor_with_outbox(open_store(url), quick=True)
    except Exception as exc:
        return Health(checked_at=now, error=scrub(f"{type(exc).__name__}: {exc}", url))
    depth = report.get("outbox_depth")
    age = report.get("outbox_oldest_age_s")
    return Health(
        checked_at=now,
        outbox_depth=int(depth) if depth is not None else None,
        outbox_oldest_age_s=float(age) if age is not None else None,
        outbox_last_error=str(report["outbox_last_error"]) if report.get("outbox_last_error") else None,
        outbox_dead=int(report.get("outbox_dead") or 0),
        outbox_set_aside=int(report.get("outbox_set_aside") or 0),
        integrity=str(report["quick_check"]) if report.get("quick_check") is not None else None,
        files_missing_bytes=int(report.get("files_missing_bytes_count") or 0),
        read_only=bool(report.get("read_only", False)),
        recover_command=str(report["recover_command"]) if report.get("recover_command") else None,
    )


class _HealthMonitor:
    """Runs :func:`check_health` in a background thread at most once a minute.

    It runs ``doctor``'s quick mode: the counts, the outbox and the findings of the last full
    check (``python -m persistence doctor`` reads every page and every file's bytes, seconds on
    a large store). A remote store can still be slow to answer, so pages read the latest
    result at once; only the very first check is waited for (briefly)."""

    MAX_AGE = 60.0

    def __init__(self, url: str) -> None:
        self.url = url
        self._lock = threading.Lock()
        self._done = threading.Event()
        self._result: Health | None = None
        self._started_at = 0.0
        self._running = False

    def latest(self, wait: float) -> Health | None:
        with self._lock:
            stale = self._result is None or clock.monotonic() - self._started_at > self.MAX_AGE
            start = stale and not self._running
            if start:
                self._running = True
                self._started_at = clock.monotonic()
        if start:
            threading.Thread(target=self._run, name="store-health", daemon=True).start()
        if self._result is None:
            self._done.wait(wait)
        return self._result

    def _run(self) -> None:
        result = check_health(self.url)
        with self._lock:
            self._result = result
            self._running = False
        self._done.set()


@st.cache_resource(show_spinner=False)
def _monitor(url: str) -> _HealthMonitor:
    return _HealthMonitor(url)


def health(wait: float = 0.5) -> Health | None:
    """The latest health report of the app's store, or None while the first check is still running."""
    return _monitor(store_url()).latest(wait)
