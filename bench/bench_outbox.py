"""The server-facing write path on a remote backend: latency while the outbox delivers, with the
backend slow and down; and how fast the outbox delivers to Postgres.

    python bench/bench_outbox.py [--calls 3000 --rate 200 --backlog 30000 --messages 20000]
        [--template pt_bench] [--latency-modes up,slow,down] [--skip-throughput] [--switch-interval MS]
        [--flushers thread,process] [--rounds 2] [--backlog-kind messages|snapshots]

Needs the Postgres at 127.0.0.1:5432. The database ``bench_outbox`` is a copy of the
million-message ``pt_bench`` (``create database … template pt_bench``, then ``VACUUM
(ANALYZE)``: autovacuum is off on these machines), dropped at the end, so the shared one is
left as it was; ``--template ''`` starts from an empty database instead. Content is the
demo's (``persistence.demo``: 100-1,500 characters, English and Chinese, code blocks).

- latency: ``ThreadStorage.set_with_ttl`` (what zen's ``add_turn`` calls), threads of up to 20
  turns, through the outbox, against the same call writing straight to Postgres.
  "up, delivering": the outbox starts with a backlog of ``--backlog`` queued messages, and the
  calls are paced at ``--rate`` per second while the flusher delivers it (and the calls' own
  snapshots) into the million-message database, with each of ``--flushers`` (a thread of the
  server's process, or a process of its own) in turn for ``--rounds`` rounds; the table says how many it delivered during
  the timed calls and how many were still queued at the end, so the overlap is visible.
  ``--backlog-kind snapshots`` queues zen snapshots instead (what an outage of zen's server
  leaves: the whole ThreadContext per call, ~11 KB at 20 turns).
  "slow" and "down": a TCP proxy (tests/tcpproxy.py) between the store and Postgres adds 100 ms
  to every request or refuses connections; calls back to back. (The proxy relays in a Python
  thread of this process, so it is kept out of the "up" case, where it would compete for the
  GIL as no production setup does.)
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
from persistence.demo import _assistant_text, _user_text
from persistence.integrations.zen import ThreadStorage
from persistence.outbox import Outbox, outbox_path_for

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
        chinese = self.rng.random() < 0.25  # as the demo's threads
        turn = {
            "role": role,
            "content": _user_text(self.rng, chinese, n // 2 + 1)
            if role == "user"
            else _assistant_text(self.rng, chinese),
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


def _fresh_db(template: str) -> str:
    url = ADMIN.rsplit("/", 1)[0] + f"/{DB}"
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB} with (force)")
        if not template:
            conn.execute(f"create database {DB}")
            return url
        print(f"Copying {template} …", file=sys.stderr)
        for attempt in range(60):  # the template may not have other sessions: wait them out
            try:
                conn.execute(f'create database {DB} template "{template}"')
                break
            except psycopg.errors.ObjectInUse:
                if attempt == 59:
                    raise
                time.sleep(5)
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute("vacuum (analyze)")  # autovacuum is off on these machines
    return url


def _count_messages(url: str) -> int:
    store = persistence.open_store(url)
    try:
        return int(store.usage(())["messages"].iloc[0])
    finally:
        store.close()


def _drop_db() -> None:
    with psycopg.connect(ADMIN, autocommit=True) as conn:
        conn.execute(f"drop database if exists {DB} with (force)")


def _via(proxy: TcpProxy) -> str:
    return f"postgresql://postgres@127.0.0.1:{proxy.port}/{DB}"


def _backlog(store: persistence.Store, path: Path, n: int, seed: int = 11, kind: str = "messages") -> None:
    """Queue ``n`` demo-length messages (or, ``kind="snapshots"``, ``n`` zen snapshots: the
    whole ThreadContext, ~11 KB at 20 turns) in the outbox file at ``path`` without delivering
    them (no flusher), as a server does while its backend is away."""
    rng = random.Random(seed)
    pre = Outbox(store, path, start=False)
    if kind == "snapshots":
        threads = Threads(seed=seed)
        for _ in range(n):
            key, value = threads.next_value()
            pre.submit("zen_snapshot", {"value": value, "ttl": 3600, "at": "2026-11-20T09:00:00+00:00"}, key=key)
        pre.close()
        return
    tag = uuid.uuid4().hex[:6]
    for i in range(n):
        chinese = rng.random() < 0.25
        user = i % 2 == 0
        pre.submit(
            "record_message",
            {
                "continuation_id": f"backlog-{tag}-{i // 8}",
                "role": "user" if user else "assistant",
                "content": _user_text(rng, chinese, 1) if user else _assistant_text(rng, chinese),
                "model": None if user else "kimi-k2-0905-preview",
                "provider": None if user else "kimi",
                "usage": None if user else {"prompt_tokens": 1200 + i % 900, "completion_tokens": 300},
                "message_id": str(uuid.UUID(int=rng.getrandbits(128), version=4)),
            },
            key=f"backlog-{tag}-{i // 8}",
        )
    pre.close()


def _timed_calls(storage: ThreadStorage, threads: Threads, calls: int, rate: float | None) -> list[float]:
    """``calls`` set_with_ttl calls, paced at ``rate`` per second (None: back to back); ms each."""
    samples = []
    gap = 1.0 / rate if rate else 0.0
    due = time.perf_counter()
    for _ in range(calls):
        key, value = threads.next_value()
        start = time.perf_counter()
        storage.set_with_ttl(key, 3600, value)
        samples.append((time.perf_counter() - start) * 1000)
        due += gap
        pause = due - time.perf_counter()
        if pause > 0:
            time.sleep(pause)
    return samples


def _row(label: str, samples: list[float], *extra: object) -> list[object]:
    return [
        label,
        len(samples),
        f"{percentile(samples, 50):.3f}",
        f"{percentile(samples, 99):.3f}",
        f"{max(samples):.2f}",
        *extra,
    ]


def bench_latency(
    url: str,
    proxy: TcpProxy,
    calls: int,
    rate: float,
    backlog: int,
    tmp: Path,
    modes: list[str],
    flushers: list[str],
    rounds: int,
    backlog_kind: str = "messages",
) -> None:
    rows = []
    # Up, delivering: a backlog keeps the flusher busy for the whole run of paced calls; each
    # flusher in turn, round after round, so they meet the same machine.
    for r in range(rounds):
        for k, flusher in enumerate(flushers):
            store = persistence.open_store(url, files_dir=tmp / "files")
            folder = tmp / f"queue-up-{r}-{flusher}"
            _backlog(store, outbox_path_for(store.url, folder), backlog, seed=11 + 100 * r + k, kind=backlog_kind)
            before = _count_messages(url)
            storage = ThreadStorage(store, outbox_dir=folder, flusher=flusher)
            assert storage.outbox is not None
            deadline = time.monotonic() + 60
            while storage.outbox.depth() >= backlog and time.monotonic() < deadline:
                time.sleep(0.05)  # the first batch is in: delivery is under way
            depth_before = storage.outbox.depth()
            started = time.perf_counter()
            samples = _timed_calls(storage, Threads(seed=1 + 100 * r + k), calls, rate)
            seconds = time.perf_counter() - started
            depth_after = storage.outbox.depth()
            delivered = depth_before + calls - depth_after
            assert storage.outbox.wait_idle(1800)
            storage.shutdown()
            rows.append(
                _row(
                    f"set_with_ttl via outbox ({flusher} flusher), backend up, {rate:,.0f} calls/s while delivering",
                    samples,
                    f"{delivered:,} in {seconds:.1f} s ({delivered / seconds:,.0f}/s)",
                    f"{depth_after:,}",
                )
            )
            print(
                f"Messages in the database: {before:,} before the backlog, {_count_messages(url):,} after",
                file=sys.stderr,
            )
    direct = ThreadStorage(persistence.open_store(url, files_dir=tmp / "files"), outbox=False)
    rows.append(
        _row(
            "set_with_ttl straight to Postgres, backend up",
            _timed_calls(direct, Threads(seed=2), calls, rate),
            "-",
            "-",
        )
    )
    direct.shutdown()

    for mode in [m for m in ("slow", "down") if m in modes]:
        proxy.delay = 0.1 if mode == "slow" else 0.0
        proxy.up()
        store = persistence.open_store(_via(proxy), files_dir=tmp / "files")
        storage = ThreadStorage(store, outbox_dir=tmp / f"queue-{mode}")
        if mode == "down":
            proxy.down()
        samples = _timed_calls(storage, Threads(seed=3), calls, None)
        depth = storage.outbox.depth() if storage.outbox else 0
        proxy.delay = 0.0
        proxy.up()
        assert storage.outbox is not None and storage.outbox.wait_idle(1800)
        storage.shutdown()
        rows.append(_row(f"set_with_ttl via outbox, backend {mode}, back to back", samples, "0", f"{depth:,}"))
        if mode == "slow":
            proxy.delay = 0.1
            direct = ThreadStorage(persistence.open_store(_via(proxy), files_dir=tmp / "files"), outbox=False)
            rows.append(
                _row(
                    "set_with_ttl straight to Postgres, backend slow",
                    _timed_calls(direct, Threads(seed=4), max(20, calls // 50), None),
                    "-",
                    "-",
                )
            )
            direct.shutdown()
            proxy.delay = 0.0
        else:
            rows.append(["set_with_ttl straight to Postgres, backend down", "-", "raises", "raises", "-", "-", "-"])
    table(
        "Server-facing call latency (target: p99 <= 1 ms in all three)",
        ["call", "calls", "p50 ms", "p99 ms", "max ms", "delivered during the calls", "queued at the end"],
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
    parser.add_argument("--rate", type=float, default=200.0, help="calls per second while delivering")
    parser.add_argument("--backlog", type=int, default=30000, help="messages queued before the paced calls")
    parser.add_argument("--messages", type=int, default=20000)
    parser.add_argument("--template", default="pt_bench", help="database to copy ('' for an empty one)")
    parser.add_argument("--skip-throughput", action="store_true")
    parser.add_argument("--latency-modes", default="up,slow,down", help="which latency cases (up is always run)")
    parser.add_argument(
        "--switch-interval", type=float, help="sys.setswitchinterval for this process, in ms (a GIL diagnostic)"
    )
    parser.add_argument(
        "--flushers", default="thread,process", help="which outbox flushers the 'up, delivering' case compares"
    )
    parser.add_argument("--rounds", type=int, default=2, help="rounds of the 'up, delivering' case")
    parser.add_argument(
        "--backlog-kind",
        choices=("messages", "snapshots"),
        default="messages",
        help="what is queued: record_message rows, or zen snapshots as after an outage of zen's server",
    )
    args = parser.parse_args()
    if args.switch_interval:
        sys.setswitchinterval(args.switch_interval / 1000)
    url = _fresh_db(args.template)
    proxy = TcpProxy("127.0.0.1", 5432)
    try:
        with tempfile.TemporaryDirectory() as tmp:
            persistence.open_store(url, files_dir=Path(tmp) / "files").close()  # migrate once
            print(
                f"# Outbox benchmark — {_count_messages(url):,} messages in {DB} (a copy of {args.template or 'nothing'})"
            )
            print(f"GIL switch interval {sys.getswitchinterval() * 1000:g} ms")
            bench_latency(
                url,
                proxy,
                args.calls,
                args.rate,
                args.backlog,
                Path(tmp),
                args.latency_modes.split(","),
                args.flushers.split(","),
                args.rounds,
                args.backlog_kind,
            )
            if not args.skip_throughput:
                bench_throughput(proxy, args.messages, Path(tmp))
    finally:
        proxy.close()
        _drop_db()


if __name__ == "__main__":
    main()
