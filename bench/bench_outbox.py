"""The server-facing write path on a remote backend: latency with the backend up, slow, down;
and how fast the outbox delivers to Postgres.

    python bench/bench_outbox.py [--calls 3000] [--messages 20000]

Needs the Postgres at 127.0.0.1:5432 (creates and drops the database ``bench_outbox``). A
TCP proxy (tests/tcpproxy.py) sits between the store and Postgres, to add 100 ms to every
request ("slow") or refuse connections ("down").

- latency: ``ThreadStorage.set_with_ttl`` (what zen's ``add_turn`` calls), realistic threads of
  up to 20 turns, through the outbox, against the same call writing straight to Postgres.
- throughput: messages queued while Postgres is down, then delivered when it is back: batches
  of 200 per transaction, against one message per transaction (``batch_size=1``) and against
  ``record_message`` called in a loop.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))
sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

import psycopg
from common import percentile, table
from tcpproxy import TcpProxy

import persistence
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox

ADMIN = "postgresql://postgres@127.0.0.1:5432/postgres"
DB = "bench_outbox"
WORDS = [
    "the",
    "pool",
    "runs",
    "dry",
    "when",
    "connections",
    "leak",
    "on",
    "timeout",
    "so",
    "add",
    "a",
    "deadline",
    "and",
    "retry",
    "with",
    "backoff",
]


def _text(rng: random.Random, n: int) -> str:
    return " ".join(rng.choice(WORDS) for _ in range(n))


class Threads:
    """zen's add_turn, as the server does it: read the context, append a turn, write it all back."""

    def __init__(self, seed: int) -> None:
        self.rng = random.Random(seed)
        self.contexts: list[dict[str, Any]] = []

    def next_value(self) -> tuple[str, str]:
        if not self.contexts or len(self.contexts[-1]["turns"]) >= 20 or self.rng.random() < 0.05:
            tid = str(uuid.UUID(int=self.rng.getrandbits(128), version=4))
            now = "2026-11-20T09:00:00+00:00"
            self.contexts.append(
                {
                    "thread_id": tid,
                    "parent_thread_id": None,
                    "created_at": now,
                    "last_updated_at": now,
                    "tool_name": "chat",
                    "turns": [],
                    "initial_context": {"prompt": _text(self.rng, 20)},
                }
            )
        ctx = self.rng.choice(self.contexts[-8:])
        n = len(ctx["turns"])
        role = "user" if n % 2 == 0 else "assistant"
        turn = {
            "role": role,
            "content": _text(self.rng, 60 if role == "user" else 150),
            "timestamp": f"2026-11-20T09:{n // 60:02d}:{n % 60:02d}.{self.rng.randint(0, 999999):06d}+00:00",
            "files": None,
            "images": None,
            "tool_name": "chat",
            "model_provider": "kimi" if role == "assistant" else None,
            "model_name": "kimi-k2-0905-preview" if role == "assistant" else None,
            "model_metadata": {"usage": {"input_tokens": 900 + 40 * n, "output_tokens": 200}}
            if role == "assistant"
            else None,
        }
        ctx["turns"].append(turn)
        return f"thread:{ctx['thread_id']}", json.dumps(ctx)


def _fresh_db() -> str:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB} with (force)")
        conn.execute(f"create database {DB}")
    return ADMIN.rsplit("/", 1)[0] + f"/{DB}"


def _drop_db() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB} with (force)")


def _via(proxy: TcpProxy) -> str:
    return f"postgresql://postgres@127.0.0.1:{proxy.port}/{DB}"


def bench_latency(proxy: TcpProxy, calls: int, tmp: Path) -> None:
    rows = []
    for mode in ("up", "slow", "down"):
        proxy.delay = 0.1 if mode == "slow" else 0.0
        proxy.up()
        store = persistence.open_store(_via(proxy), files_dir=tmp / "files")
        storage = ThreadStorage(store, outbox_dir=tmp / f"queue-{mode}")
        if mode == "down":
            proxy.down()
        threads = Threads(seed=1)
        samples = []
        for _ in range(calls):
            key, value = threads.next_value()
            start = time.perf_counter()
            storage.set_with_ttl(key, 3600, value)
            samples.append((time.perf_counter() - start) * 1000)
        depth = storage.outbox.depth() if storage.outbox else 0
        proxy.delay = 0.0
        proxy.up()
        assert storage.outbox is not None and storage.outbox.wait_idle(600)
        storage.shutdown()
        rows.append(
            [
                f"set_with_ttl via outbox, backend {mode}",
                calls,
                f"{percentile(samples, 50):.3f}",
                f"{percentile(samples, 99):.3f}",
                f"{max(samples):.2f}",
                depth,
            ]
        )
        # The same calls written straight to the backend (no outbox), for comparison.
        if mode != "down":
            proxy.delay = 0.1 if mode == "slow" else 0.0
            direct = ThreadStorage(persistence.open_store(_via(proxy), files_dir=tmp / "files"), outbox=False)
            threads = Threads(seed=2)
            n = calls if mode == "up" else max(20, calls // 50)
            samples = []
            for _ in range(n):
                key, value = threads.next_value()
                start = time.perf_counter()
                direct.set_with_ttl(key, 3600, value)
                samples.append((time.perf_counter() - start) * 1000)
            direct.shutdown()
            proxy.delay = 0.0
            rows.append(
                [
                    f"set_with_ttl straight to Postgres, backend {mode}",
                    n,
                    f"{percentile(samples, 50):.3f}",
                    f"{percentile(samples, 99):.3f}",
                    f"{max(samples):.2f}",
                    "-",
                ]
            )
        else:
            rows.append(["set_with_ttl straight to Postgres, backend down", "-", "raises", "raises", "-", "-"])
    table(
        "Server-facing call latency (target: p99 <= 1 ms in all three)",
        ["call", "calls", "p50 ms", "p99 ms", "max ms", "queued when done"],
        rows,
    )


def bench_throughput(proxy: TcpProxy, messages: int, tmp: Path) -> None:
    rows = []
    base: float | None = None
    for label, batch_size in (
        ("outbox, batches of up to 200 per transaction", 200),
        ("outbox, one message per transaction", 1),
    ):
        proxy.up()
        url = _via(proxy)
        proxy.down()
        outbox = Outbox(
            lambda url=url: persistence.open_store(url, files_dir=tmp / "files"),  # type: ignore[misc]
            tmp / f"tp-{batch_size}.db",
            batch_size=batch_size,
            max_backoff=0.05,
        )
        tag = uuid.uuid4().hex[:6]
        for i in range(messages):
            outbox.submit(
                "record_message",
                {
                    "continuation_id": f"tp-{tag}-{i % 500}",
                    "role": "assistant" if i % 2 else "user",
                    "content": f"message {i} " + " ".join(WORDS),
                    "model": "glm-4.6" if i % 2 else None,
                    "usage": {"prompt_tokens": 1000, "completion_tokens": 200} if i % 2 else None,
                    "message_id": str(uuid.uuid4()),
                },
                key=f"tp-{tag}-{i % 500}",
            )
        start = time.perf_counter()
        proxy.up()
        assert outbox.wait_idle(1800)
        seconds = time.perf_counter() - start
        outbox.close()
        rate = messages / seconds
        base = base or rate
        rows.append([label, messages, f"{seconds:.1f} s", f"{rate:,.0f}", f"{rate / base:.2f}x"])
    store = persistence.open_store(_via(proxy), files_dir=tmp / "files")
    n = max(1000, messages // 10)
    start = time.perf_counter()
    for i in range(n):
        store.record_message(f"loop-{i % 500}", "user", f"message {i} " + " ".join(WORDS))
    seconds = time.perf_counter() - start
    store.close()
    rows.append(
        [
            "record_message in a loop (no outbox)",
            n,
            f"{seconds:.1f} s",
            f"{n / seconds:,.0f}",
            f"{n / seconds / (base or 1):.2f}x",
        ]
    )
    table(
        "Delivery to Postgres after an outage (messages/s)",
        ["path", "messages", "time", "messages/s", "vs batches"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--calls", type=int, default=3000)
    parser.add_argument("--messages", type=int, default=20000)
    args = parser.parse_args()
    _fresh_db()
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            persistence.open_store(_via(proxy), files_dir=Path(tmp) / "files").close()  # migrate once
            print(f"# Outbox benchmark — Postgres via a TCP proxy, {threading.active_count()} threads")
            bench_latency(proxy, args.calls, Path(tmp))
            bench_throughput(proxy, args.messages, Path(tmp))
    finally:
        proxy.close()
        _drop_db()


if __name__ == "__main__":
    main()
