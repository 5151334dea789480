"""The outbox's flusher in a process of its own (``Outbox(flusher="process")``): it delivers
every queued write in order and once, stops when the outbox closes, is started again if it
dies, and delivers what a killed server queued before it ends itself."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import uuid
from pathlib import Path

import pytest
from test_outbox import _message, _wait

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox, _connect


def _lease_holder(path: Path) -> str | None:
    db = _connect(path)
    try:
        row = db.execute("select value from outbox_state where name = 'lease'").fetchone()
        return None if row is None else str(row[0])
    finally:
        db.close()


def _context(tid: str, turns: int) -> str:
    return json.dumps(
        {
            "thread_id": tid,
            "parent_thread_id": None,
            "created_at": "2026-11-20T09:00:00+00:00",
            "last_updated_at": "2026-11-20T09:00:00+00:00",
            "tool_name": "chat",
            "turns": [
                {
                    "role": "user" if i % 2 == 0 else "assistant",
                    "content": f"turn {i} of {tid}",
                    "timestamp": f"2026-11-20T09:00:{i:02d}+00:00",
                    "model_provider": None if i % 2 == 0 else "glm",
                    "model_name": None if i % 2 == 0 else "glm-4.6",
                }
                for i in range(turns)
            ],
            "initial_context": {},
        }
    )


@pytest.mark.parametrize("backend", ["sqlite", "postgres"])
def test_zen_turns_go_through_a_flusher_process_in_order_and_once(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest
) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}" if backend == "sqlite" else request.getfixturevalue("pg_url")
    store = persistence.open_store(url, files_dir=tmp_path / "files")
    storage = ThreadStorage(store, outbox=True, outbox_dir=tmp_path / "queue", flusher="process")
    outbox = storage.outbox
    assert outbox is not None and outbox.flusher == "process" and outbox._process is not None
    child = outbox._process.pid
    assert child != os.getpid()
    tids = [str(uuid.uuid4()) for _ in range(6)]
    for n in range(1, 21):  # zen's add_turn: the whole context written back each time
        for tid in tids:
            storage.set_with_ttl(f"thread:{tid}", 3600, _context(tid, n))
    # The process that holds the lease (host:pid:tag) is the flusher process, not this one.
    assert _wait(lambda: (_lease_holder(outbox.path) or "").startswith(f"{socket.gethostname()}:{child}:"), 30)
    assert outbox.wait_idle(120), outbox.status()
    storage.shutdown()
    assert outbox._process.poll() == 0  # close() stopped it
    with persistence.open_store(url, files_dir=tmp_path / "files") as check:
        assert int(check.usage(())["messages"].iloc[0]) == 6 * 20  # none lost, none twice
        for tid in tids:
            conv = check.get_conversation(tid)
            assert conv is not None
            assert [m.content for m in conv.messages] == [f"turn {i} of {tid}" for i in range(20)]
    assert _lease_holder(outbox.path) is None  # released on the way out


def test_a_flusher_process_that_dies_is_started_again(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    store = persistence.open_store(url)
    outbox = Outbox(store, tmp_path / "outbox.db", flusher="process")
    assert outbox._process is not None
    first = outbox._process
    first.kill()
    first.wait()
    outbox._process_started -= 10  # it ran long enough not to count as failing to start
    outbox.submit("record_message", _message("t-1", 0), key="t-1")  # notices, starts another
    assert outbox._process is not first and outbox._process.poll() is None
    assert outbox.wait_idle(60)
    assert outbox.close() == 0
    assert store.get_conversation("t-1") is not None
    store.close()


_KILLED_SERVER = r"""
import sys, uuid
import persistence
from persistence.outbox import Outbox
url, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = persistence.open_store(url)
outbox = Outbox(store, path, flusher="process", batch_size=10, start=False)
for i in range(n):
    outbox.submit("record_message", {"continuation_id": f"t-{i % 5}", "role": "user", "content": f"message {i}",
                                     "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"killed/{i}"))}, key=f"t-{i % 5}")
outbox.start()  # everything is queued before the flusher process starts
print(outbox._process.pid, flush=True)
import time
time.sleep(600)
"""


def test_a_killed_servers_flusher_process_delivers_what_it_queued_then_ends(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    path = tmp_path / "outbox.db"
    n = 3000
    server = subprocess.Popen([sys.executable, "-c", _KILLED_SERVER, url, str(path), str(n)], stdout=subprocess.PIPE)
    assert server.stdout is not None
    flusher = int(server.stdout.readline())
    os.kill(server.pid, signal.SIGKILL)  # no atexit, no SIGTERM handler: the server just vanishes
    server.wait()
    left = Outbox(lambda: persistence.open_store(url), path, start=False)
    assert left.depth() > 0  # batches of 10: far from delivered when the server died
    left.close(timeout=0)

    def flusher_gone() -> bool:
        try:
            os.kill(flusher, 0)
        except ProcessLookupError:
            return True
        return Path(f"/proc/{flusher}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"

    assert _wait(flusher_gone, 60)  # it ended by itself, once the queue was delivered
    with persistence.open_store(url) as store:
        assert int(store.usage(())["messages"].iloc[0]) == n
    assert Outbox(lambda: persistence.open_store(url), path, start=False).depth() == 0


def test_a_flusher_process_needs_a_store_it_can_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'remote.db'}"
    with pytest.raises(persistence.ValidationError, match=r"flusher.*open_store"):
        Outbox(lambda: persistence.open_store(url), tmp_path / "o.db", flusher="process")
    store = persistence.open_store(url)
    with pytest.raises(persistence.ValidationError, match=r"flusher.*thread, process"):
        Outbox(store, tmp_path / "o.db", flusher="fork")
    store.close()
