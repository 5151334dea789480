"""A durable write-behind outbox for remote backends.

The caller appends an operation to a local SQLite file and returns (well under a
millisecond); a background flusher delivers the operations to the store in order, in
batches, retrying with exponential backoff while the backend is down or slow. Nothing is
dropped: not when the queue is long (it is a file, not a bounded queue), not at shutdown
(``close`` flushes with a bounded wait and leaves the rest for the next start), not when the
process is killed (committed rows survive; delivery resumes on the next start).

Delivery is at-least-once and every operation is idempotent (messages carry their id, thread
snapshots merge by turn id), so a row delivered but not yet deleted when the process died is
delivered again without doubling anything: exactly-once in effect.

Order: one flusher at a time per outbox file (a lease row, renewed while it works) delivers
rows in the order they were written, and stops a batch at the first transient failure, so a
thread's turns arrive in their order even with several server processes appending.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
import random
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from .errors import ConflictError, NotFoundError, ValidationError
from .store import Store

log = logging.getLogger("persistence.outbox")

__all__ = ["OPS", "Outbox", "OutboxStatus", "outbox_path_for", "read_status"]

PERMANENT_ERRORS = (ValidationError, ConflictError, NotFoundError)
LEASE_SECONDS = 15.0

_SCHEMA = """
create table if not exists outbox (
    id integer primary key,
    op text not null,
    key text,                      -- the thread an operation belongs to (for read-your-writes)
    payload text not null,
    created_at real not null,
    attempts integer not null default 0,
    last_error text
);
create index if not exists outbox_key on outbox (key, id);
create table if not exists outbox_dead (
    id integer primary key,
    op text not null,
    key text,
    payload text not null,
    created_at real not null,
    failed_at real not null,
    error text not null
);
create table if not exists outbox_state (
    name text primary key,
    value text,
    until real
);
"""


def outbox_path_for(url: str, folder: Path) -> Path:
    """One outbox file per target store: pending writes never go to a different store."""
    return folder / f"outbox-{hashlib.sha256(url.encode()).hexdigest()[:12]}.db"


class OutboxStatus(dict[str, Any]):
    """``depth``, ``oldest_age_s``, ``dead``, ``last_error``, ``last_error_at``, ``last_delivery_at``."""


def _connect(path: Path) -> sqlite3.Connection:
    path.parent.mkdir(parents=True, exist_ok=True)
    db = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    db.execute("pragma journal_mode = wal")
    # NORMAL in WAL mode: a committed append survives the process being killed.
    db.execute("pragma synchronous = normal")
    db.execute("pragma busy_timeout = 30000")
    db.executescript(_SCHEMA)
    return db


def read_status(path: Path) -> OutboxStatus | None:
    """The outbox's figures, or None when there is no outbox file (nothing was ever queued)."""
    if not path.exists():
        return None
    db = sqlite3.connect(f"file:{path}?mode=ro", uri=True, timeout=5)
    try:
        return _status(db)
    except sqlite3.Error:
        return None
    finally:
        db.close()


def _status(db: sqlite3.Connection) -> OutboxStatus:
    depth, oldest = db.execute("select count(*), min(created_at) from outbox").fetchone()
    dead = db.execute("select count(*) from outbox_dead").fetchone()[0]
    state = {name: (value, until) for name, value, until in db.execute("select name, value, until from outbox_state")}
    last_error = state.get("last_error", (None, None))
    delivered = state.get("last_delivery", (None, None))
    return OutboxStatus(
        depth=int(depth),
        oldest_age_s=round(time.time() - oldest, 1) if oldest else 0.0,
        dead=int(dead),
        last_error=last_error[0],
        last_error_at=_iso(last_error[1]),
        last_delivery_at=_iso(delivered[1]),
    )


def _iso(ts: float | None) -> str | None:
    return None if ts is None else datetime.fromtimestamp(ts, UTC).isoformat(timespec="seconds")


class Outbox:
    """Queue writes for ``store`` (or a factory that opens it, so a backend that is down when
    the server starts does not stop the server from recording turns).

    Operations (``OPS``): ``record_message``, ``start_conversation`` and
    ``update_conversation`` (payloads are their keyword arguments; timestamps as ISO strings)
    and ``zen_snapshot`` (a ThreadContext, see ``persistence.integrations.zen``).
    """

    def __init__(
        self,
        store: Store | Callable[[], Store],
        path: str | Path,
        *,
        batch_size: int = 200,
        max_backoff: float = 30.0,
        lease_seconds: float = LEASE_SECONDS,
        quiet: float = 0.05,
        start: bool = True,
    ) -> None:
        self.path = Path(path)
        self._store_or_factory = store
        self._store: Store | None = store if isinstance(store, Store) else None
        self.batch_size = batch_size
        self.max_backoff = max_backoff
        self.lease_seconds = lease_seconds
        self.quiet = quiet
        self._draining = threading.Event()  # close() and wait_idle() want delivery now
        # Two connections: the callers' appends never wait behind the flusher's Python lock,
        # and only the flusher checkpoints the WAL (PASSIVE, between batches), so copying
        # pages back into the file never lands on a caller's append.
        self._db = _connect(self.path)
        self._db.execute("pragma wal_autocheckpoint = 0")
        self._lock = threading.Lock()
        self._fdb = _connect(self.path)
        self._flock = threading.Lock()
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._idle = threading.Event()
        self._owner = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self._thread: threading.Thread | None = None
        if start:
            self.start()

    # -- the server-facing side ----------------------------------------------------------

    def submit(self, op: str, payload: dict[str, Any], *, key: str | None = None) -> int:
        """Append one operation durably and return its id. Never touches the network."""
        if op not in OPS:
            raise ValidationError("op", f"unknown outbox operation {op!r}")
        text = json.dumps(payload, ensure_ascii=False, separators=(",", ":"), default=_json_default)
        with self._lock:
            cur = self._db.execute(
                "insert into outbox (op, key, payload, created_at) values (?, ?, ?, ?)", (op, key, text, time.time())
            )
        self._idle.clear()
        self._wake.set()
        return int(cur.lastrowid or 0)

    def pending(self, key: str) -> list[tuple[str, dict[str, Any]]]:
        """Operations for ``key`` not delivered yet, oldest first (for read-your-writes)."""
        with self._lock:
            rows = self._db.execute("select op, payload from outbox where key = ? order by id", (key,)).fetchall()
        return [(op, json.loads(payload)) for op, payload in rows]

    def status(self) -> OutboxStatus:
        with self._lock:
            return _status(self._db)

    # -- the flusher -----------------------------------------------------------------------

    def start(self) -> None:
        if self._thread is None or not self._thread.is_alive():
            self._stop.clear()
            self._thread = threading.Thread(target=self._run, name=f"outbox-flusher-{self.path.name}", daemon=True)
            self._thread.start()

    def _store_now(self) -> Store:
        if self._store is None:
            factory = self._store_or_factory
            assert callable(factory)
            self._store = factory()  # may raise while the backend is down: retried with backoff
        return self._store

    def _run(self) -> None:
        backoff = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(sqlite3.Error), self._flock:
                self._fdb.execute("pragma wal_checkpoint(passive)")
            if self._busy_burst():
                # Writes are arriving right now: deliver once they pause (or the batch fills,
                # or the oldest waits a second), so the flusher's work does not compete with
                # the server's calls and batches come out bigger.
                self._wake.wait(self.quiet)
                self._wake.clear()
                continue
            try:
                delivered = self.flush_once()
            except Exception as exc:  # transient: recorded, retried after a pause
                self._record_error(exc)
                self._drop_store()
                backoff = min(self.max_backoff, max(0.25, backoff * 2)) * random.uniform(0.8, 1.2)
                self._wake.wait(backoff)
                self._wake.clear()
                continue
            backoff = 0.0
            if delivered == 0:
                if self.depth() == 0:
                    self._idle.set()
                self._wake.wait(1.0)
                self._wake.clear()

    def _busy_burst(self) -> bool:
        if self._stop.is_set() or self._draining.is_set():
            return False
        with self._flock:
            n, oldest, newest = self._fdb.execute(
                "select count(*), min(created_at), max(created_at) from outbox"
            ).fetchone()
        now = time.time()
        return bool(n) and n < self.batch_size and now - newest < self.quiet and now - oldest < 1.0

    def depth(self) -> int:
        with self._lock:
            return int(self._db.execute("select count(*) from outbox").fetchone()[0])

    def _take_lease(self) -> bool:
        now = time.time()
        with self._flock, _transaction(self._fdb):
            row = self._fdb.execute("select value, until from outbox_state where name = 'lease'").fetchone()
            if row and row[0] != self._owner and row[1] and row[1] > now:
                return False
            self._fdb.execute(
                "insert into outbox_state (name, value, until) values ('lease', ?, ?) "
                "on conflict (name) do update set value = excluded.value, until = excluded.until",
                (self._owner, now + self.lease_seconds),
            )
        return True

    def _release_lease(self) -> None:
        with self._flock:
            self._fdb.execute("delete from outbox_state where name = 'lease' and value = ?", (self._owner,))

    def flush_once(self) -> int:
        """Deliver one batch (in order); returns how many operations were delivered.

        Raises on a transient failure after recording what was delivered before it.
        """
        if not self._take_lease():
            return 0  # another process is flushing this outbox
        with self._flock:
            rows = self._fdb.execute(
                "select id, op, payload from outbox order by id limit ?", (self.batch_size,)
            ).fetchall()
        if not rows:
            return 0
        store = self._store_now()
        done: list[int] = []
        try:
            i = 0
            while i < len(rows):
                # Consecutive messages go in one batch: one transaction, one round trip.
                j = i
                while j < len(rows) and rows[j][1] == "record_message":
                    j += 1
                if j - i > 1:
                    try:
                        store.record_messages([json.loads(payload) for _, _, payload in rows[i:j]])
                    except PERMANENT_ERRORS:
                        pass  # one of them is bad: deliver them one by one to set it aside
                    else:
                        done.extend(row_id for row_id, _, _ in rows[i:j])
                        i = j
                        continue
                row_id, op, payload = rows[i]
                self._deliver_one(store, row_id, op, payload, done)
                i += 1
        finally:
            if done:
                with self._flock, _transaction(self._fdb):
                    self._fdb.executemany("delete from outbox where id = ?", [(i,) for i in done])
                    self._fdb.execute(
                        "insert into outbox_state (name, value, until) values ('last_delivery', ?, ?) "
                        "on conflict (name) do update set value = excluded.value, until = excluded.until",
                        (str(len(done)), time.time()),
                    )
        return len(done)

    def _deliver_one(self, store: Store, row_id: int, op: str, payload: str, done: list[int]) -> None:
        try:
            OPS[op](store, json.loads(payload))
        except PERMANENT_ERRORS as exc:
            # It will never succeed: set aside (kept, reported) so it blocks nothing.
            log.error("outbox: %s #%s refused by the store, moved to outbox_dead: %s", op, row_id, exc)
            with self._flock, _transaction(self._fdb):
                self._fdb.execute(
                    "insert into outbox_dead (id, op, key, payload, created_at, failed_at, error) "
                    "select id, op, key, payload, created_at, ?, ? from outbox where id = ?",
                    (time.time(), f"{type(exc).__name__}: {exc}", row_id),
                )
                self._fdb.execute("delete from outbox where id = ?", (row_id,))
            return
        except Exception:
            with self._flock:
                self._fdb.execute("update outbox set attempts = attempts + 1 where id = ?", (row_id,))
            raise
        done.append(row_id)

    def _record_error(self, exc: BaseException) -> None:
        log.warning("outbox: delivery failed, will retry: %s: %s", type(exc).__name__, exc)
        with contextlib.suppress(sqlite3.Error), self._flock:
            self._fdb.execute(
                "insert into outbox_state (name, value, until) values ('last_error', ?, ?) "
                "on conflict (name) do update set value = excluded.value, until = excluded.until",
                (f"{type(exc).__name__}: {exc}"[:500], time.time()),
            )

    def _drop_store(self) -> None:
        # A store opened by the factory is reopened after a failure (its pool may be dead).
        if self._store is not None and not isinstance(self._store_or_factory, Store):
            with contextlib.suppress(Exception):
                self._store.close()
            self._store = None

    def wait_idle(self, timeout: float) -> bool:
        """Wait until everything queued so far is delivered; False on timeout."""
        self._draining.set()
        try:
            self._wake.set()
            return self._idle.wait(timeout) if self.depth() else True
        finally:
            self._draining.clear()

    def close(self, timeout: float = 5.0) -> int:
        """Deliver what can be delivered within ``timeout`` seconds, then stop. Returns how
        many operations are left in the file for the next start."""
        deadline = time.monotonic() + timeout
        self._draining.set()
        while self.depth() and time.monotonic() < deadline and self._thread and self._thread.is_alive():
            self._wake.set()
            self._idle.wait(min(0.1, max(0.0, deadline - time.monotonic())))
        self._stop.set()
        self._wake.set()
        if self._thread:
            self._thread.join(timeout=max(1.0, deadline - time.monotonic()))
        self._release_lease()
        left = self.depth()
        with self._lock:
            self._db.close()
        with self._flock:
            with contextlib.suppress(sqlite3.Error):
                self._fdb.execute("pragma wal_checkpoint(truncate)")
            self._fdb.close()
        if self._store is not None and not isinstance(self._store_or_factory, Store):
            self._store.close()
        if left:
            log.warning("outbox: %d operation(s) left in %s for the next start", left, self.path)
        return left


@contextlib.contextmanager
def _transaction(db: sqlite3.Connection) -> Iterator[None]:
    db.execute("begin immediate")
    try:
        yield
        db.execute("commit")
    except BaseException:
        db.execute("rollback")
        raise


def _json_default(value: object) -> object:
    if isinstance(value, datetime):
        return value.isoformat()
    if isinstance(value, tuple | set):
        return list(value)
    raise TypeError(f"{type(value).__name__} cannot be queued")


def _zen_snapshot(store: Store, payload: dict[str, Any]) -> None:
    from .integrations.zen import apply_snapshot

    apply_snapshot(store, payload)


# Every process that flushes an outbox must know every op that any process may queue.
OPS: dict[str, Callable[[Store, dict[str, Any]], Any]] = {
    "record_message": lambda s, p: s.record_message(**p),
    "start_conversation": lambda s, p: s.start_conversation(**p),
    "update_conversation": lambda s, p: s.update_conversation(**p),
    "zen_snapshot": _zen_snapshot,
}
