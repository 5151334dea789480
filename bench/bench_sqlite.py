"""The embedded default at scale: ingest, search, reads, usage and file storage.

    python bench/bench_sqlite.py                     # 1M messages in /tmp/bench-sqlite (reused)
    python bench/bench_sqlite.py --messages 100000 --dir /tmp/small

Every figure is printed beside a baseline measured in the same run:
- ingest: ``record_message`` (one transaction per message, with full-text index, thread
  totals and the daily rollup) against LangChain's ``SQLChatMessageHistory`` writing the same
  messages to SQLite (its defaults, and with WAL + synchronous=NORMAL like ours), and a raw
  ``executemany`` into a bare table as the floor; both stores already hold the full data set.
- search: ``store.search`` against a ``LIKE '%word%'`` scan of the same messages table.
- reads: ``get_conversation(last=50)`` against ``SQLChatMessageHistory.messages``.
- usage: ``usage(("model",))`` over 90 days from the rollup against the same numbers by
  GROUP BY over messages (and checks they are equal).
- filters: ``count_conversations`` / ``list_conversations`` with a model, provider or tool
  filter (the thread_facets table) against the message scan those filters were before it.
- doctor: ``doctor(quick=True)`` (the app's) against the full check (the CLI's).
- files: ``put_file`` of a 200 MB file against hashing it and copying it, with peak RSS growth.

Opening the store migrates it: point ``--dir`` at a copy to leave a shared store as it was.
"""

from __future__ import annotations

import argparse
import functools
import json
import random
import resource
import sqlite3
import subprocess
import sys
import tempfile
import time
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parent))

from common import ensure_demo_store, file_size_mb, latencies, percentile, race, table, timed

import persistence
import persistence.demo

warnings.filterwarnings("ignore", category=DeprecationWarning)

SEARCH_QUERIES = [
    # common words
    "the",
    "connection",
    "cache",
    "pool",
    "timeout",
    "request",
    "lock",
    "index",
    "queue",
    "memory",
    "retry",
    "tests",
    "configuration",
    "migration",
    "stale",
    # rarer words
    "DST",
    "reconnects",
    "websocket",
    "scheduler",
    "unicode",
    "exporter",
    "burst",
    "idempotent",
    "backfill",
    "refresh",
    "detector",
    "segment",
    "boundary",
    "chunks",
    "deploy",
    # phrases
    '"connection pool"',
    '"versioned keys"',
    '"race detector"',
    '"sliding log"',
    '"request id"',
    # syntax
    "cache OR queue",
    "pool -timeout",
    "invalid*",
    "migrat*",
    '"retry decorator" OR scheduler',
    # Chinese / mixed
    "缓存",
    "数据库",
    "连接池",
    "失效",
    "令牌计数",
    "限流器",
    "消息队列",
    "索引 OR 缓存",
    "定时任务",
    "GLM",
]


def _messages_for_ingest(n: int, seed: int) -> list[dict[str, Any]]:
    """Realistic messages (demo content and usage) for the ingest race, as plain dicts."""
    with tempfile.TemporaryDirectory() as tmp:
        store = persistence.open_store(f"sqlite:///{tmp}/source.db")
        persistence.demo.generate(store, max(1, round(n / 8.4)), seed=seed, files=False)
        out = []
        for record in store.export_records():
            cid = "bench-" + record["conversation"]["continuation_id"]
            for m in record["messages"]:
                out.append(
                    {
                        "continuation_id": cid,
                        "role": m["role"],
                        "content": m["content"],
                        "model": m["model"],
                        "provider": m["provider"],
                        "usage": m["usage"] if m["model"] else None,
                        "duration_ms": m["duration_ms"],
                        "tool_name": m["tool_name"],
                    }
                )
        store.close()
    return out[:n]


def _fill_langchain(path: Path, source: sqlite3.Connection, wal: bool) -> None:
    """SQLChatMessageHistory's table holding the same messages as our store (bulk loaded)."""
    from langchain_community.chat_message_histories import SQLChatMessageHistory

    SQLChatMessageHistory(session_id="init", connection=f"sqlite:///{path}")  # creates its table
    db = sqlite3.connect(path)
    if wal:
        db.execute("pragma journal_mode = wal")
    have = db.execute("select count(*) from message_store").fetchone()[0]
    if have == 0:
        rows = source.execute("select conversation_id, role, content from messages")
        while batch := rows.fetchmany(50_000):
            db.executemany(
                "insert into message_store (session_id, message) values (?, ?)",
                [
                    (
                        cid,
                        json.dumps(
                            {
                                "type": "human" if role == "user" else "ai",
                                "data": {"content": content, "type": "human" if role == "user" else "ai"},
                            }
                        ),
                    )
                    for cid, role, content in batch
                ],
            )
        db.commit()
    db.close()


def bench_ingest(store: persistence.Store, workdir: Path, source: sqlite3.Connection, n: int, rounds: int) -> None:
    from langchain_community.chat_message_histories import SQLChatMessageHistory
    from langchain_core.messages import AIMessage, HumanMessage
    from sqlalchemy import create_engine, event

    messages = _messages_for_ingest(n, seed=777)
    lc_paths = {"default": workdir / "langchain-default.db", "wal": workdir / "langchain-wal.db"}
    engines = {}
    for name, path in lc_paths.items():
        _fill_langchain(path, source, wal=name == "wal")
        engine = create_engine(f"sqlite:///{path}")
        if name == "wal":

            @event.listens_for(engine, "connect")
            def _pragmas(dbapi_conn: Any, _record: Any) -> None:
                dbapi_conn.execute("pragma synchronous = normal")

        engines[name] = engine
    floor = sqlite3.connect(workdir / "floor.db", isolation_level=None)
    floor.execute("pragma journal_mode = wal")
    floor.execute("pragma synchronous = normal")
    floor.execute("create table if not exists bare (conversation text, role text, content text)")

    histories: dict[tuple[str, str], Any] = {}

    def ours_batched(batch: list[dict[str, Any]]) -> None:
        for k in range(0, len(batch), 200):  # what the outbox flusher and bulk writers use
            store.record_messages(batch[k : k + 200])

    def ours(batch: list[dict[str, Any]]) -> None:
        for m in batch:
            store.record_message(**m)  # the items are its arguments

    def langchain(name: str) -> Any:
        def write(batch: list[dict[str, Any]]) -> None:
            for m in batch:
                key = (name, m["continuation_id"])
                if key not in histories:
                    histories[key] = SQLChatMessageHistory(session_id=m["continuation_id"], connection=engines[name])
                message = HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"])
                histories[key].add_message(message)

        return write

    def bare(batch: list[dict[str, Any]]) -> None:
        floor.execute("begin")
        floor.executemany(
            "insert into bare values (?, ?, ?)", [(m["continuation_id"], m["role"], m["content"]) for m in batch]
        )
        floor.execute("commit")

    contenders = {
        "record_message (FTS + rollup + totals)": ours,
        "record_messages, batches of 200": ours_batched,
        "SQLChatMessageHistory (its defaults)": langchain("default"),
        "SQLChatMessageHistory (WAL, synchronous=NORMAL)": langchain("wal"),
        "executemany into a bare table (floor, one tx per batch)": bare,
    }
    elapsed, written = race(contenders, messages, rounds)
    ours_rate = written / elapsed["record_message (FTS + rollup + totals)"]
    rows = []
    for name, seconds in elapsed.items():
        rate = written / seconds
        rows.append([name, written, f"{seconds:.1f} s", f"{rate:,.0f}", f"{ours_rate / rate:.2f}x"])
    table(
        f"Ingest at {store.count_conversations():,} threads: {written:,} messages, {rounds} interleaved rounds",
        ["writer", "messages", "time", "messages/s", "record_message is"],
        rows,
    )


def bench_search(store: persistence.Store, db: sqlite3.Connection, like_sample: int) -> None:
    ours = latencies(lambda q: store.search(q, limit=20), SEARCH_QUERIES)
    # What ranking needs without an index: every match (LIMIT would stop early on common words
    # and return an arbitrary 20). Sampled over common and rare words alike.
    words = [q for q in SEARCH_QUERIES if q.isalnum()]
    words = words[:: max(1, len(words) // like_sample)][:like_sample]
    like = latencies(
        lambda w: db.execute("select rowid from messages where content like ?", (f"%{w}%",)).fetchall(), words, warmup=1
    )
    rows = [
        ["store.search (bm25, snippets)", len(SEARCH_QUERIES), *_pcts(ours)],
        ["LIKE '%word%', every match (no index)", len(words), *_pcts(like)],
    ]
    table(
        "Search over the whole store (targets: p50 <= 20 ms, p95 <= 150 ms)",
        ["query path", "queries", "p50 ms", "p95 ms", "max ms"],
        rows,
    )
    slowest = sorted(zip(ours, SEARCH_QUERIES, strict=True), reverse=True)[:5]
    print("\nSlowest queries: " + ", ".join(f"{q!r} {ms:.1f} ms" for ms, q in slowest))
    print(f"p50 ratio LIKE/search: {percentile(like, 50) / percentile(ours, 50):,.0f}x")


def _pcts(samples: list[float]) -> list[str]:
    return [f"{percentile(samples, 50):.2f}", f"{percentile(samples, 95):.2f}", f"{max(samples):.2f}"]


def bench_reads(store: persistence.Store, db: sqlite3.Connection, lc_path: Path) -> None:
    from langchain_community.chat_message_histories import SQLChatMessageHistory
    from sqlalchemy import create_engine

    rng = random.Random(5)
    ids = [r[0] for r in db.execute("select continuation_id from conversations where message_count >= 12 limit 5000")]
    sample = rng.sample(ids, min(200, len(ids)))
    ours = latencies(lambda cid: store.get_conversation(cid, last=50), sample)
    conv_ids = {
        r[0]: r[1]
        for r in db.execute(
            f"select continuation_id, id from conversations where continuation_id in ({','.join('?' * len(sample))})",
            sample,
        )
    }
    engine = create_engine(f"sqlite:///{lc_path}")
    lc = latencies(
        lambda cid: SQLChatMessageHistory(session_id=conv_ids[cid], connection=engine).messages, sample[:20], warmup=1
    )
    table(
        "Read a thread back",
        ["read", "threads", "p50 ms", "p95 ms", "max ms"],
        [
            ["get_conversation(last=50) (target <= 2 ms)", len(sample), *_pcts(ours)],
            ["SQLChatMessageHistory.messages", 20, *_pcts(lc)],
        ],
    )


def bench_usage(store: persistence.Store, db: sqlite3.Connection) -> None:
    end = db.execute("select max(created_at) from messages").fetchone()[0]
    until = datetime.fromisoformat(end) + timedelta(days=1)
    since = until - timedelta(days=90)
    ours = latencies(lambda _: store.usage(("model",), since=since, until=until), range(20))
    sql = """select model_used, count(*), sum(tokens), coalesce(sum(cost), 0) from messages
             where created_at >= ? and created_at < ? group by model_used"""
    lo, hi = since.date().isoformat(), until.date().isoformat()
    direct = latencies(lambda _: db.execute(sql, (lo, hi)).fetchall(), range(5), warmup=1)
    frame = store.usage(("model",), since=since, until=until)
    by_sql = {r[0]: r for r in db.execute(sql, (lo, hi))}
    same = all(
        by_sql[row.model][1] == row.messages
        and by_sql[row.model][2] == row.total_tokens
        and abs(by_sql[row.model][3] - row.cost_usd) < 1e-6
        for row in frame.itertuples()
    ) and len(by_sql) == len(frame)
    table(
        "usage() for 90 days by model",
        ["path", "p50 ms", "p95 ms", "max ms"],
        [
            ["store.usage (daily rollup) (target <= 20 ms)", *_pcts(ours)],
            ["GROUP BY over messages", *_pcts(direct)],
        ],
    )
    print(
        f"Same numbers from both: {same}; rollup is {percentile(direct, 50) / percentile(ours, 50):,.0f}x faster at p50"
    )


# The thread filters as they were before migration 0005 (thread_facets): a probe of each
# thread's messages. The baseline of bench_thread_filters.
_SCAN_FILTERS = {
    "model": "exists (select 1 from messages m where m.conversation_id = c.id and m.model_used = :value)",
    "provider": "exists (select 1 from messages m where m.conversation_id = c.id and m.provider = :value)",
    "tool_name": "(c.tool_name = :value or exists (select 1 from messages m "
    "where m.conversation_id = c.id and m.tool_name = :value))",
}


def _scan_count(store: persistence.Store, sql: str, params: dict[str, Any]) -> int:
    # On the store's own connection: the same cache and pragmas as the filtered count.
    return int(store._conn().execute(sql, params).fetchone()[0])  # type: ignore[attr-defined]


def bench_thread_filters(store: persistence.Store, db: sqlite3.Connection, rounds: int) -> None:
    """The Threads page with a model, provider or tool filter: ``count_conversations`` and the
    first page of ``list_conversations`` (thread_facets) against the message scan, all time and
    the app's default period (active in the last 30 days), rounds interleaved; counts checked."""
    end = datetime.fromisoformat(db.execute("select max(updated_at) from conversations").fetchone()[0])
    since = end - timedelta(days=30)
    cases = [
        ("model", db.execute("select model_used from messages where model_used is not null limit 1").fetchone()[0]),
        ("provider", "glm"),
        ("tool_name", "codereview"),
    ]
    rows = []
    for name, value in cases:
        for period, start in (("all time", None), ("last 30 days", since)):
            filters: dict[str, Any] = {name: value, "since": start}
            where = _SCAN_FILTERS[name] + (" and c.updated_at >= :since" if start else "")
            params = {"value": value, "since": None if start is None else start.isoformat(timespec="microseconds")}
            count: list[float] = []
            listing: list[float] = []
            scan: list[float] = []
            sql = f"select count(*) from conversations c where {where}"
            for _ in range(rounds):
                ms, ours_n = timed(functools.partial(store.count_conversations, **filters))
                count.append(ms)
                listing.append(timed(functools.partial(store.list_conversations, limit=50, **filters))[0])
                ms, scan_n = timed(functools.partial(_scan_count, store, sql, params))
                scan.append(ms)
                assert ours_n == scan_n, (name, value, period, ours_n, scan_n)
            rows.append(
                [
                    f"{name}={value}, {period}",
                    f"{ours_n:,}",
                    f"{percentile(count, 50):.1f}",
                    f"{percentile(listing, 50):.1f}",
                    f"{percentile(scan, 50):,.0f}",
                    f"{percentile(scan, 50) / percentile(count, 50):,.0f}x",
                ]
            )
    table(
        f"Threads with a model/provider/tool filter, median of {rounds} (target: count <= 100 ms)",
        ["filter", "threads", "count ms", "list 50 ms", "message scan count ms", "count faster by"],
        rows,
    )


def bench_doctor(store: persistence.Store, rounds: int) -> None:
    """doctor's quick mode (the app's) against the full check (the CLI's), rounds interleaved."""
    full: list[float] = []
    quick: list[float] = []
    for _ in range(rounds):
        full.append(timed(store.doctor)[0])
        quick += [timed(lambda: store.doctor(quick=True))[0] for _ in range(10)]
    table(
        "doctor (target: quick <= 100 ms)",
        ["mode", "calls", "p50 ms", "p95 ms", "max ms"],
        [["doctor(quick=True)", len(quick), *_pcts(quick)], ["doctor() (full check)", len(full), *_pcts(full)]],
    )
    print(f"Quick is {percentile(full, 50) / percentile(quick, 50):,.0f}x faster at p50")


_PUT_FILE_CHILD = r"""
import hashlib, json, shutil, sys, time
import persistence

def status(key):  # kB, from the kernel's view of this process
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1])

path, url, mode = sys.argv[1], sys.argv[2], sys.argv[3]
# Random bytes of 200 MB: past the default upload rules on purpose, so lift them here.
store = persistence.open_store(url, env={"PERSISTENCE_MAX_UPLOAD_BYTES": "0", "PERSISTENCE_UPLOAD_ALLOWED_TYPES": "*/*"})
with open("/proc/self/clear_refs", "w") as fh:
    fh.write("5")  # reset the peak (VmHWM) to the current RSS, so imports do not hide growth
before = status("VmRSS")
start = time.perf_counter()
if mode == "put_file":
    f = store.put_file(path)
    assert f.size > 0
elif mode == "sha256":
    h = hashlib.sha256()
    with open(path, "rb") as fh:
        while chunk := fh.read(1 << 20):
            h.update(chunk)
else:
    shutil.copyfile(path, path + ".copy")
seconds = time.perf_counter() - start
print(json.dumps({"seconds": seconds, "rss_growth_mb": (status("VmHWM") - before) / 1024}))
"""


def bench_put_file(workdir: Path, size_mb: int) -> None:
    path = workdir / "big.bin"
    if not path.exists() or path.stat().st_size != size_mb * 1024 * 1024:
        rng = random.Random(1)
        with open(path, "wb") as fh:
            block = rng.randbytes(1024 * 1024)
            for i in range(size_mb):
                fh.write(block[i % 97 :] + block[: i % 97])  # distinct blocks, cheap to make
    rows = []
    for mode in ("put_file", "sha256", "copy"):
        url = f"sqlite:///{workdir}/files-{time.time_ns()}.db"
        out = subprocess.run(
            [sys.executable, "-c", _PUT_FILE_CHILD, str(path), url, mode], capture_output=True, text=True, check=True
        )
        r = json.loads(out.stdout)
        rows.append(
            [
                {
                    "put_file": "put_file (hash + atomic write + row)",
                    "sha256": "sha256 in 1 MiB chunks (floor)",
                    "copy": "shutil.copyfile",
                }[mode],
                f"{r['seconds']:.2f} s",
                f"{size_mb / r['seconds']:,.0f}",
                f"{r['rss_growth_mb']:.1f}",
            ]
        )
    table(
        f"put_file of a {size_mb} MB file (target: RSS growth < 30 MB)",
        ["operation", "time", "MB/s", "peak RSS growth MB"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--dir", type=Path, default=Path("/tmp/bench-sqlite"))
    parser.add_argument("--ingest", type=int, default=20_000, help="messages each writer writes")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--file-mb", type=int, default=200)
    parser.add_argument(
        "--only", choices=("ingest", "search", "reads", "usage", "filters", "doctor", "files"), action="append"
    )
    args = parser.parse_args()
    args.dir.mkdir(parents=True, exist_ok=True)
    url = f"sqlite:///{args.dir / 'history.db'}"
    only = set(args.only or ("ingest", "search", "reads", "usage", "filters", "doctor", "files"))
    ensure_demo_store(url, args.messages)
    store = persistence.open_store(url)
    db = sqlite3.connect(args.dir / "history.db")
    print(
        f"# SQLite benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, SQLite {sqlite3.sqlite_version}, Python {sys.version.split()[0]}"
    )
    print(
        f"Store: {store.count_conversations():,} threads, {int(store.usage(())['messages'].iloc[0]):,} messages, "
        f"{file_size_mb(args.dir / 'history.db'):,.0f} MB on disk"
    )
    print(f"CPU time so far {resource.getrusage(resource.RUSAGE_SELF).ru_utime:.1f} s")
    if "usage" in only:
        bench_usage(store, db)
    if "filters" in only:
        bench_thread_filters(store, db, rounds=3)
    if "doctor" in only:
        bench_doctor(store, rounds=3)
    if "reads" in only:
        _fill_langchain(args.dir / "langchain-default.db", db, wal=False)
        bench_reads(store, db, args.dir / "langchain-default.db")
    if "search" in only:
        bench_search(store, db, like_sample=10)
    if "ingest" in only:
        bench_ingest(store, args.dir, db, args.ingest, args.rounds)
    if "files" in only:
        bench_put_file(args.dir, args.file_mb)
    store.close()


if __name__ == "__main__":
    main()
