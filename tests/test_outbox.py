"""The durable write-behind outbox: nothing dropped, nothing doubled, order kept."""

from __future__ import annotations

import json
import os
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox, doctor, outbox_path_for


class Backend:
    """Opens the real store, or fails like an unreachable server while ``down`` is set.

    Stands in for the network between the server and a remote database: the outbox only ever
    sees a factory that raises ConnectionError, as psycopg or httpx do when the host is down.
    """

    def __init__(self, url: str) -> None:
        self.url = url
        self.down = threading.Event()
        self.opened = 0

    def __call__(self) -> persistence.Store:
        if self.down.is_set():
            raise ConnectionError(f"connection refused: {self.url}")
        self.opened += 1
        store = persistence.open_store(self.url)
        backend = self

        class FlakyStore(type(store)):  # type: ignore[misc]
            def record_message(self, *a, **kw):  # type: ignore[no-untyped-def]
                if backend.down.is_set():
                    raise ConnectionError("server closed the connection unexpectedly")
                return super().record_message(*a, **kw)

            def record_messages(self, *a, **kw):  # type: ignore[no-untyped-def]
                if backend.down.is_set():
                    raise ConnectionError("server closed the connection unexpectedly")
                return super().record_messages(*a, **kw)

        store.__class__ = FlakyStore
        return store


def _message(thread: str, i: int) -> dict[str, object]:
    return {
        "continuation_id": thread,
        "role": "user" if i % 2 == 0 else "assistant",
        "content": f"turn {i} of {thread}",
        "model": None if i % 2 == 0 else "glm-4.6",
        "usage": None if i % 2 == 0 else {"prompt_tokens": 100, "completion_tokens": 10},
        "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{thread}/{i}")),
    }


def _wait(predicate: Callable[[], bool], timeout: float = 60) -> bool:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(0.05)
    return predicate()


def test_ten_thousand_turns_while_the_backend_is_down_arrive_exactly_once(tmp_path: Path) -> None:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    backend.down.set()
    outbox = Outbox(backend, tmp_path / "outbox.db", max_backoff=0.2)
    threads = [f"t-{n}" for n in range(50)]
    started = time.perf_counter()
    for i in range(200):
        for t in threads:
            outbox.submit("record_message", _message(t, i), key=t)
    assert time.perf_counter() - started < 60
    assert _wait(lambda: outbox.status()["last_error"] is not None, 10)
    status = outbox.status()
    assert status["depth"] == 10_000 and "refused" in status["last_error"]
    backend.down.clear()
    assert outbox.wait_idle(120)
    assert outbox.close() == 0
    store = persistence.open_store(backend.url)
    assert int(store.usage(())["messages"].iloc[0]) == 10_000
    for t in threads[:5]:
        conv = store.get_conversation(t)
        assert conv is not None
        assert [m.content for m in conv.messages] == [f"turn {i} of {t}" for i in range(200)]  # in order
    store.close()


def test_delivery_survives_failures_mid_batch_without_doubles(tmp_path: Path) -> None:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    outbox = Outbox(backend, tmp_path / "outbox.db", max_backoff=0.1, batch_size=50)
    flapping = threading.Event()

    def flap() -> None:
        while not flapping.is_set():
            backend.down.set()
            time.sleep(0.02)
            backend.down.clear()
            time.sleep(0.05)

    flapper = threading.Thread(target=flap)
    flapper.start()
    for i in range(2000):
        outbox.submit("record_message", _message("t-flap", i), key="t-flap")
        # A redelivered duplicate (same message id) is stored once.
        if i % 100 == 0:
            outbox.submit("record_message", _message("t-flap", i), key="t-flap")
    time.sleep(0.5)
    flapping.set()
    flapper.join()
    backend.down.clear()
    assert outbox.wait_idle(120)
    outbox.close()
    store = persistence.open_store(backend.url)
    conv = store.get_conversation("t-flap")
    assert conv is not None and conv.message_count == 2000
    assert [m.content for m in conv.messages] == [f"turn {i} of t-flap" for i in range(2000)]
    store.close()


def test_close_flushes_with_a_bounded_wait_and_keeps_the_rest(tmp_path: Path) -> None:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    backend.down.set()
    outbox = Outbox(backend, tmp_path / "outbox.db", max_backoff=0.1)
    for i in range(30):
        outbox.submit("record_message", _message("t-close", i), key="t-close")
    started = time.monotonic()
    left = outbox.close(timeout=0.5)
    assert left == 30 and time.monotonic() - started < 3
    backend.down.clear()
    again = Outbox(backend, tmp_path / "outbox.db")  # the next start delivers the rest
    assert again.wait_idle(30)
    again.close()
    store = persistence.open_store(backend.url)
    assert store.get_conversation("t-close").message_count == 30  # type: ignore[union-attr]
    store.close()


def test_refused_writes_are_set_aside_not_retried_forever(tmp_path: Path) -> None:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    outbox = Outbox(backend, tmp_path / "outbox.db")
    outbox.submit("record_message", _message("t-ok", 0), key="t-ok")
    outbox.submit("record_message", {**_message("t-bad", 0), "role": "robot"}, key="t-bad")
    outbox.submit("record_message", _message("t-ok", 1), key="t-ok")
    assert outbox.wait_idle(30)
    status = outbox.status()
    assert status["depth"] == 0 and status["dead"] == 1
    outbox.close()
    store = persistence.open_store(backend.url)
    assert store.get_conversation("t-ok").message_count == 2  # type: ignore[union-attr]
    store.close()


def test_doctor_shows_the_outbox(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("PERSISTENCE_OUTBOX_DIR", str(tmp_path / "queue"))
    store = persistence.open_store(f"sqlite:///{tmp_path / 'remote.db'}")
    assert "outbox_depth" not in doctor(store)  # nothing was ever queued for this store
    outbox = Outbox(store, outbox_path_for(store.url, tmp_path / "queue"), start=False)
    for i in range(3):
        outbox.submit("record_message", _message("t-doc", i), key="t-doc")
    report = doctor(store)
    assert "outbox_depth" not in store.doctor()  # the store's own figures; the outbox is the caller's
    assert report["outbox_depth"] == 3 and report["outbox_oldest_age_s"] >= 0 and report["outbox_dead"] == 0
    outbox.start()
    assert outbox.wait_idle(30)
    assert doctor(store)["outbox_depth"] == 0 and doctor(store)["outbox_last_delivery_at"]
    outbox.close()
    store.close()


_KILLED_WRITER = r"""
import sys, time, uuid
import persistence
from persistence.outbox import Outbox, outbox_path_for
url, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
outbox = Outbox(lambda: persistence.open_store(url), path, batch_size=25, lease_seconds=1.0, start=False)
for i in range(n):
    outbox.submit("record_message", {"continuation_id": f"t-{i % 7}", "role": "user", "content": f"message {i}",
                                     "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kill/{i}"))}, key=f"t-{i % 7}")
print("queued", flush=True)
outbox.start()
time.sleep(600)
"""


def test_kill_9_mid_flush_loses_and_doubles_nothing(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    path = tmp_path / "outbox.db"
    n = 4000
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, url, str(path), str(n)], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "queued"
    store = persistence.open_store(url)

    def delivered() -> int:
        return int(store.usage(())["messages"].iloc[0]) if store.count_conversations() else 0

    assert _wait(lambda: delivered() > 300, 60)
    os.kill(child.pid, signal.SIGKILL)  # mid-flush: batches of 25, thousands to go
    child.wait()
    left = Outbox(lambda: persistence.open_store(url), path, start=False).depth()
    assert 0 < left < n
    restarted = Outbox(lambda: persistence.open_store(url), path)  # takes the dead process's lease over at once
    assert restarted.wait_idle(120)
    restarted.close()
    assert delivered() == n
    contents = [m.content for t in range(7) for m in store.get_conversation(f"t-{t}").messages]  # type: ignore[union-attr]
    assert sorted(contents) == sorted(f"message {i}" for i in range(n))
    store.close()


def test_thread_storage_reads_its_own_queued_writes(tmp_path: Path) -> None:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    store = backend()
    backend.down.set()  # the store object stays, but every write fails like a dropped connection
    storage = ThreadStorage(store, outbox=True, outbox_dir=tmp_path / "queue")
    tid = str(uuid.uuid4())
    value = json.dumps(
        {
            "thread_id": tid,
            "parent_thread_id": None,
            "created_at": "2026-11-20T09:00:00+00:00",
            "last_updated_at": "2026-11-20T09:00:00+00:00",
            "tool_name": "chat",
            "turns": [{"role": "user", "content": "queued turn", "timestamp": "2026-11-20T09:00:00+00:00"}],
            "initial_context": {},
        }
    )
    started = time.perf_counter()
    storage.set_with_ttl(f"thread:{tid}", 3600, value)
    assert time.perf_counter() - started < 0.5  # returned without waiting for the backend
    assert storage.get(f"thread:{tid}") == value
    assert storage.outbox is not None and storage.outbox.depth() == 1
    backend.down.clear()
    assert storage.outbox.wait_idle(30)
    assert json.loads(storage.get(f"thread:{tid}") or "null")["turns"][0]["content"] == "queued turn"
    storage.shutdown()


@pytest.mark.parametrize("op", ["record_message", "not_an_op"])
def test_unknown_operations_are_refused_at_once(tmp_path: Path, op: str) -> None:
    outbox = Outbox(lambda: persistence.open_store(f"sqlite:///{tmp_path / 'r.db'}"), tmp_path / "o.db", start=False)
    if op == "not_an_op":
        with pytest.raises(persistence.ValidationError, match="op"):
            outbox.submit(op, {})
    else:
        assert outbox.submit(op, _message("t", 0)) > 0


# -- a server that exits (issue 10, item 8) ---------------------------------------------------


def _dead_pid() -> int:
    """The pid of a process of this host that has exited (and been reaped)."""
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_a_lease_whose_holder_is_gone_is_taken_over_at_once(tmp_path: Path) -> None:
    import socket

    from persistence.outbox import _connect

    url = f"sqlite:///{tmp_path / 'remote.db'}"
    path = tmp_path / "outbox.db"
    db = _connect(path)
    # What a server killed mid-flush leaves: a lease good for a while yet, its process gone.
    db.execute(
        "insert into outbox_state (name, value, until) values ('lease', ?, ?)",
        (f"{socket.gethostname()}:{_dead_pid()}:deadbeef", time.time() + 600),
    )
    db.close()
    outbox = Outbox(lambda: persistence.open_store(url), path)
    for i in range(5):
        outbox.submit("record_message", _message("t-lease", i), key="t-lease")
    assert outbox.wait_idle(5), outbox.status()  # not after the 600 s
    outbox.close()


def test_a_live_holders_lease_is_respected(tmp_path: Path) -> None:
    import socket

    from persistence.outbox import _connect

    path = tmp_path / "outbox.db"
    db = _connect(path)
    for owner in (f"{socket.gethostname()}:1:cafe", f"another-host:{_dead_pid()}:cafe", "12345-cafe"):
        db.execute(
            "insert into outbox_state (name, value, until) values ('lease', ?, ?) "
            "on conflict (name) do update set value = excluded.value, until = excluded.until",
            (owner, time.time() + 600),
        )
        outbox = Outbox(lambda: persistence.open_store(f"sqlite:///{tmp_path / 'r.db'}"), path, start=False)
        outbox.submit("record_message", _message("t-live", 0), key="t-live")
        assert outbox.flush_once() == 0, owner  # pid 1 runs; another host's or an old owner: wait
        outbox.close(timeout=0)
    db.close()


_EXITING_WRITER = r"""
import os, signal, sys, time, uuid
import persistence
from persistence.outbox import Outbox
url, path, n, how = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4]

def open_slow():
    # A remote store: every batch takes a while, so delivery is far from done at exit.
    store = persistence.open_store(url)
    record_messages = store.record_messages
    def slow(items):
        time.sleep(0.05)
        return record_messages(items)
    store.record_messages = slow
    return store

if how == "host-handler":
    def host(signum, frame):
        open(path + ".host-handler", "w").write("called")
        sys.exit(3)
    signal.signal(signal.SIGTERM, host)
outbox = Outbox(open_slow, path, batch_size=50)
for i in range(n):
    outbox.submit("record_message", {"continuation_id": f"t-{i % 3}", "role": "user", "content": f"message {i}",
                                     "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"exit/{i}"))}, key=f"t-{i % 3}")
print("queued", flush=True)
if how == "exit":
    sys.exit(0)  # as an MCP stdio server does when its client closes stdin
time.sleep(600)
"""


@pytest.mark.parametrize("how", ["exit", "sigterm", "host-handler"])
def test_a_process_that_exits_delivers_its_outbox_first(tmp_path: Path, how: str) -> None:
    """At interpreter exit, and on SIGTERM (then the host's own handler, or the default, as
    before), a bounded flush delivers what is queued."""
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    path = tmp_path / "outbox.db"
    n = 400  # 8 batches of 50, 50 ms each: about 0.4 s of delivery
    child = subprocess.Popen(
        [sys.executable, "-c", _EXITING_WRITER, url, str(path), str(n), how], stdout=subprocess.PIPE, text=True
    )
    assert child.stdout is not None and child.stdout.readline().strip() == "queued"
    if how != "exit":
        child.send_signal(signal.SIGTERM)
    code = child.wait(30)
    assert code == {"exit": 0, "sigterm": -signal.SIGTERM, "host-handler": 3}[how]
    if how == "host-handler":
        assert Path(str(path) + ".host-handler").read_text() == "called"
    assert Outbox(lambda: persistence.open_store(url), path, start=False).depth() == 0
    store = persistence.open_store(url)
    assert int(store.usage(())["messages"].iloc[0]) == n
    store.close()


def test_the_overview_says_when_a_turn_was_set_aside(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """A queued turn the store refused is shown on the app's Overview, not only in a log."""
    from app_seed import open_page

    monkeypatch.setenv("PERSISTENCE_OUTBOX_DIR", str(tmp_path / "queue"))
    url = f"sqlite:///{tmp_path / 'history.db'}"
    store = persistence.open_store(url)
    outbox = Outbox(store, outbox_path_for(store.url, tmp_path / "queue"))
    tid = str(uuid.uuid4())
    turns = [
        {"role": "user", "content": "q", "timestamp": "2026-11-20T09:00:00+00:00"},
        {"role": "assistant", "content": "a", "timestamp": "2026-11-20T09:00:01+00:00", "model_name": "m" * 300},
    ]
    ctx = {"thread_id": tid, "created_at": "2026-11-20T09:00:00+00:00", "tool_name": "chat", "turns": turns}
    outbox.submit("zen_snapshot", {"value": json.dumps(ctx), "ttl": 60, "at": "2026-11-20T09:00:02+00:00"}, key=tid)
    assert outbox.wait_idle(30)
    outbox.close()
    store.close()
    monkeypatch.setenv("PERSISTENCE_URL", url)
    at = open_page(period="all")
    assert not at.exception
    shown = " ".join(e.value for e in at.error)
    assert "refused 1 queued writes" in shown and "1 of them single turns" in shown


class _CountingDeletes:
    """The flusher's connection, counting the rows of each ``delete from outbox`` (one per
    write transaction) and failing the ``fail_at``-th of them like a disk error."""

    def __init__(self, db: Any, fail_at: int = 0) -> None:
        self.db = db
        self.fail_at = fail_at
        self.slices: list[int] = []

    def executemany(self, sql: str, rows: Any) -> Any:
        if sql.startswith("delete from outbox "):
            rows = list(rows)
            self.slices.append(len(rows))
            if len(self.slices) == self.fail_at:
                raise sqlite3.OperationalError("disk I/O error")
        return self.db.executemany(sql, rows)

    def __getattr__(self, name: str) -> Any:
        return getattr(self.db, name)


def _queued(tmp_path: Path, thread: str, n: int, content_chars: int) -> tuple[Backend, Outbox]:
    backend = Backend(f"sqlite:///{tmp_path / 'remote.db'}")
    backend.down.set()
    outbox = Outbox(backend, tmp_path / "outbox.db", max_backoff=0.1)
    for i in range(n):
        message = _message(thread, i)
        message["content"] = f"turn {i} of {thread} " + "x" * content_chars
        outbox.submit("record_message", message, key=thread)
    return backend, outbox


def test_a_delivered_batch_of_big_rows_is_deleted_in_slices_and_of_small_ones_at_once(tmp_path: Path) -> None:
    """With SQLite's secure_delete (on in Debian's build) deleting a batch of 200 zen snapshots
    held the outbox's write lock ~12 ms, and every append waited for it. Big rows are deleted a
    few per transaction (about 64 K characters of payload), small ones a batch at once."""
    from persistence.outbox import DELETE_SLICE_CHARS

    (tmp_path / "big").mkdir()
    (tmp_path / "small").mkdir()
    backend, outbox = _queued(tmp_path / "big", "t-big", 40, 20_000)
    small_backend, small = _queued(tmp_path / "small", "t-small", 40, 100)
    counted, counted_small = _CountingDeletes(outbox._fdb), _CountingDeletes(small._fdb)
    outbox._fdb, small._fdb = counted, counted_small  # type: ignore[assignment]
    backend.down.clear()
    small_backend.down.clear()
    assert outbox.wait_idle(60) and small.wait_idle(60)
    assert outbox.close() == 0 and small.close() == 0
    assert counted_small.slices == [40]
    per_slice = DELETE_SLICE_CHARS // 20_300  # each payload: the content and ~300 characters of JSON
    assert sum(counted.slices) == 40 and len(counted.slices) >= 40 // per_slice
    assert max(counted.slices) <= per_slice
    for url, thread in ((backend.url, "t-big"), (small_backend.url, "t-small")):
        store = persistence.open_store(url)
        conv = store.get_conversation(thread)
        assert conv is not None and conv.message_count == 40
        store.close()


def test_a_failure_between_delete_slices_delivers_the_rest_again_never_twice(tmp_path: Path) -> None:
    """When deleting a delivered batch fails after its first slice (a disk error, a killed
    process), the rows still queued were delivered already: they go again, and the store keeps
    every message once, with totals to match."""
    backend, outbox = _queued(tmp_path, "t-slices", 40, 20_000)
    counted = _CountingDeletes(outbox._fdb, fail_at=2)
    outbox._fdb = counted  # type: ignore[assignment]
    backend.down.clear()
    assert outbox.wait_idle(60), outbox.status()
    assert len(counted.slices) > 2 and sum(counted.slices[2:]) == 40 - counted.slices[0]
    assert outbox.close() == 0
    store = persistence.open_store(backend.url)
    conv = store.get_conversation("t-slices")
    assert conv is not None and conv.message_count == 40
    assert [m.content.split(" x")[0] for m in conv.messages] == [f"turn {i} of t-slices" for i in range(40)]
    assert int(store.usage(())["messages"].iloc[0]) == 40
    assert conv.total_tokens == 20 * 110
    store.close()
