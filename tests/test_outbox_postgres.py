"""The outbox against the real Postgres, through a TCP proxy that takes it away and back.

The proxy (tests/tcpproxy.py) is a real network hop: while it is down, connecting is refused
and open connections are cut, exactly what the server sees when its database host goes away.
"""

from __future__ import annotations

import json
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import pytest
from tcpproxy import TcpProxy

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox

pytestmark = pytest.mark.postgres


@pytest.fixture
def proxy() -> Iterator[TcpProxy]:
    p = TcpProxy("127.0.0.1", 5432)
    yield p
    p.close()


def through(url: str, proxy: TcpProxy) -> str:
    parts = urlsplit(url)
    return urlunsplit(parts._replace(netloc=f"{parts.username or 'postgres'}@127.0.0.1:{proxy.port}"))


def test_ten_thousand_turns_while_postgres_is_unreachable(pg_url: str, proxy: TcpProxy, tmp_path: Path) -> None:
    url = through(pg_url, proxy)
    proxy.down()
    outbox = Outbox(
        lambda: persistence.open_store(url, files_dir=tmp_path / "files"), tmp_path / "outbox.db", max_backoff=0.3
    )
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
    assert status["depth"] == 10_000 and "cannot open" in status["last_error"]
    proxy.up()
    time.sleep(0.5)
    proxy.down()  # gone again mid-delivery: connections are cut under the flusher
    time.sleep(0.5)
    proxy.up()
    assert outbox.wait_idle(180), outbox.status()
    outbox.close()
    direct = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    assert int(direct.usage(())["messages"].iloc[0]) == 10_000  # every turn, none twice
    conv = direct.get_conversation("t-7")
    assert conv is not None and [m.content for m in conv.messages] == [f"turn {k} of t-7" for k in range(250)]
    direct.close()
    assert queued_in < 30  # the writer never waited for the network


def test_thread_storage_on_postgres_reads_its_own_writes_while_down(
    pg_url: str, proxy: TcpProxy, tmp_path: Path
) -> None:
    url = through(pg_url, proxy)
    store = persistence.open_store(url, files_dir=tmp_path / "files")
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
    assert json.loads(storage.get(f"thread:{tid}") or "null") == ctx  # now from Postgres
    storage.shutdown()
    direct = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    assert direct.get_conversation(tid).message_count == 3  # type: ignore[union-attr]
    direct.close()
