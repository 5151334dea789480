"""The outbox against the real Postgres and the Supabase backend, through a TCP proxy that
takes them away and back.

The proxy (tests/tcpproxy.py) is a real network hop: while it is down, connecting is refused
and open connections are cut, exactly what the server sees when its database host goes away.
Each test runs on both remote backends (``remote``): ``postgres`` with the proxy in front of
Postgres, ``supabase`` (the real client, its own httpx client) with the proxy in front of the
gateway stand-in (tests/supabase_standin.py), so the outage is of the HTTP API.
"""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from tcpproxy import TcpProxy

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox

pytestmark = pytest.mark.postgres


@dataclass
class Remote:
    """A remote backend as the server reaches it: directly, or through a proxy."""

    name: str
    port: int  # where the proxy forwards to
    unreachable: str  # what the outbox's last error says while the backend is away
    url: str  # for persistence.open_store, with ``env`` in a child process's environment
    env: dict[str, str]
    open_through: Callable[[TcpProxy], persistence.Store]
    open: Callable[[], persistence.Store]


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"))


@pytest.fixture(params=["postgres", "supabase"])
def remote(request: pytest.FixtureRequest, pg_url: str, tmp_path: Path) -> Remote:
    files = tmp_path / "files"
    if request.param == "postgres":
        return Remote(
            "postgres",
            5432,
            "cannot open",
            pg_url,
            {},
            lambda proxy: persistence.open_store(through(pg_url, proxy), files_dir=files),
            lambda: persistence.open_store(pg_url, files_dir=files),
        )
    from persistence.backends.postgres.supabase_store import SupabaseStore

    standin = request.getfixturevalue("standin")

    def env(port: int) -> dict[str, str]:
        return {"SUPABASE_URL": f"http://127.0.0.1:{port}", "SUPABASE_SERVICE_ROLE_KEY": standin.service_key}

    return Remote(
        "supabase",
        standin.port,
        "cannot reach",
        "supabase",
        env(standin.port),
        lambda proxy: SupabaseStore(env=env(proxy.port)),  # the production httpx client, its real sockets
        lambda: SupabaseStore(env=env(standin.port)),
    )


@pytest.fixture
def proxy(remote: Remote) -> Iterator[TcpProxy]:
    p = TcpProxy("127.0.0.1", remote.port)
    yield p
    p.close()


def test_ten_thousand_turns_while_the_backend_is_unreachable(remote: Remote, proxy: TcpProxy, tmp_path: Path) -> None:
    proxy.down()
    outbox = Outbox(lambda: remote.open_through(proxy), tmp_path / "outbox.db", max_backoff=0.3)
    started = time.perf_counter()
    for i in range(10_000):
        t = f"t-{i % 40}"
        outbox.submit(
            "record_message",
            {
                "continuation_id": t,
                "role": "user",
                "content": f"turn {i // 40} of {t}",
                "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"pg/{i}")),
            },
            key=t,
        )
    queued_in = time.perf_counter() - started
    deadline = time.monotonic() + 10
    while outbox.status()["last_error"] is None and time.monotonic() < deadline:
        time.sleep(0.05)
    status = outbox.status()
    assert status["depth"] == 10_000 and remote.unreachable in status["last_error"], status
    proxy.up()
    time.sleep(0.5)
    proxy.down()  # gone again mid-delivery: connections are cut under the flusher
    time.sleep(0.5)
    proxy.up()
    assert outbox.wait_idle(180), outbox.status()
    outbox.close()
    direct = remote.open()
    assert int(direct.usage(())["messages"].iloc[0]) == 10_000  # every turn, none twice
    conv = direct.get_conversation("t-7")
    assert conv is not None and [m.content for m in conv.messages] == [f"turn {k} of t-7" for k in range(250)]
    direct.close()
    assert queued_in < 30  # the writer never waited for the network


def test_thread_storage_reads_its_own_writes_while_the_backend_is_down(
    remote: Remote, proxy: TcpProxy, tmp_path: Path
) -> None:
    store = remote.open_through(proxy)
    storage = ThreadStorage(store, outbox_dir=tmp_path / "queue")
    assert storage.outbox is not None  # a remote backend writes through the outbox by default
    tid = str(uuid.uuid4())
    ctx: dict[str, Any] = {
        "thread_id": tid,
        "parent_thread_id": None,
        "created_at": "2026-11-20T09:00:00+00:00",
        "last_updated_at": "2026-11-20T09:00:00+00:00",
        "tool_name": "chat",
        "turns": [],
        "initial_context": {},
    }
    proxy.down()
    for i in range(3):
        ctx["turns"].append(
            {
                "role": "user" if i % 2 == 0 else "assistant",
                "content": f"turn {i}",
                "timestamp": f"2026-11-20T09:00:0{i}+00:00",
            }
        )
        started = time.perf_counter()
        storage.set_with_ttl(f"thread:{tid}", 3600, json.dumps(ctx))
        assert time.perf_counter() - started < 0.2
        assert json.loads(storage.get(f"thread:{tid}") or "null") == ctx
    proxy.up()
    assert storage.outbox.wait_idle(60)
    assert json.loads(storage.get(f"thread:{tid}") or "null") == ctx  # now from the backend
    storage.shutdown()
    direct = remote.open()
    assert direct.get_conversation(tid).message_count == 3  # type: ignore[union-attr]
    direct.close()


_KILLED_WRITER = r"""
import sys, time, uuid
import persistence
from persistence.outbox import Outbox
url, path, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
outbox = Outbox(lambda: persistence.open_store(url), path, batch_size=25, lease_seconds=1.0, start=False)
for i in range(n):
    outbox.submit("record_message", {"continuation_id": f"t-{i % 7}", "role": "user", "content": f"message {i}",
                                     "message_id": str(uuid.uuid5(uuid.NAMESPACE_URL, f"kill/{i}"))}, key=f"t-{i % 7}")
print("queued", flush=True)
outbox.start()
time.sleep(600)
"""


def test_kill_9_mid_flush_loses_and_doubles_nothing(remote: Remote, tmp_path: Path) -> None:
    """A server killed while its outbox delivers to the remote backend: a restarted one takes
    the dead process's lease over and delivers the rest; the backend ends with every message
    once (a batch the dead process had sent but not marked is sent again, and dedups)."""
    path = tmp_path / "outbox.db"
    n = 2000
    child = subprocess.Popen(
        [sys.executable, "-c", _KILLED_WRITER, remote.url, str(path), str(n)],
        stdout=subprocess.PIPE,
        text=True,
        env={**os.environ, **remote.env},
    )
    store = remote.open()
    try:
        assert child.stdout is not None and child.stdout.readline().strip() == "queued"

        def delivered() -> int:
            return int(store.usage(())["messages"].iloc[0]) if store.count_conversations() else 0

        deadline = time.monotonic() + 60
        while delivered() <= 200 and time.monotonic() < deadline:
            time.sleep(0.05)
        os.kill(child.pid, signal.SIGKILL)  # mid-flush: batches of 25, hundreds to go
        child.wait()
        left = Outbox(remote.open, path, start=False).depth()  # not closed: closing would deliver
        assert 0 < left < n
        restarted = Outbox(remote.open, path)  # takes the dead process's lease over at once
        assert restarted.wait_idle(120), restarted.status()
        restarted.close()
        assert delivered() == n
        contents = [m.content for t in range(7) for m in store.get_conversation(f"t-{t}").messages]  # type: ignore[union-attr]
        assert sorted(contents) == sorted(f"message {i}" for i in range(n))
    finally:
        if child.poll() is None:
            child.kill()
            child.wait()
        store.close()
