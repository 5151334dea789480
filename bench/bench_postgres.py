"""The postgresql:// and supabase backends at scale: ingest, search, reads, usage, and the
per-call cost of the supabase path.

    python bench/bench_postgres.py                        # 1M messages in database pt_bench (reused)
    python bench/bench_postgres.py --messages 100000 --db pt_bench_small

Every figure is printed beside a baseline measured in the same run (bench/common.py):
- ingest: ``record_message`` (one transaction per message: FTS, thread totals, daily rollup,
  RLS enabled) against langchain-postgres ``PostgresChatMessageHistory.add_message`` writing the
  same messages (its defaults: a psycopg connection, one commit per message) into a table that
  already holds the same data set, and a ``COPY`` of each batch into a bare table as the floor.
  Both sides run with synchronous_commit on (the default) and again with it off.
- search: ``store.search`` (the bench_sqlite queries) against ``ILIKE '%word%'`` over messages.
- reads: ``get_conversation(last=50)`` against ``PostgresChatMessageHistory.get_messages``.
- usage: ``usage(("model",))`` over 90 days from the rollup against GROUP BY over messages.
- supabase: the same calls through ``SupabaseStore`` (the real client) and the gateway
  stand-in of tests/supabase_standin.py against ``PostgresStore``: what the RPC path adds per
  call in process (client, JSON, JWT, the stand-in's transaction), without network latency.
"""

from __future__ import annotations

import argparse
import json
import random
import sys
import time
import uuid
import warnings
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_sqlite import SEARCH_QUERIES, _messages_for_ingest  # noqa: E402
from common import ensure_demo_store, latencies, percentile, race, table  # noqa: E402

import persistence  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

ADMIN_URL = "postgresql://postgres@127.0.0.1:5432/postgres"
LC_TABLE = "langchain_message_store"


def _pcts(samples: list[float]) -> list[str]:
    return [f"{percentile(samples, 50):.2f}", f"{percentile(samples, 95):.2f}", f"{max(samples):.2f}"]


def ensure_database(name: str) -> str:
    if not name.startswith("pt_"):
        raise SystemExit(f"benchmark databases are named pt_…, not {name!r}")
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        if not conn.execute("select 1 from pg_database where datname = %s", (name,)).fetchone():
            conn.execute(f'create database "{name}"')  # type: ignore[arg-type]
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def fill_langchain(conn: psycopg.Connection[Any]) -> None:
    """PostgresChatMessageHistory's table holding the same messages as the store (COPY)."""
    from langchain_postgres import PostgresChatMessageHistory

    PostgresChatMessageHistory.create_tables(conn, LC_TABLE)
    if conn.execute(f"select exists (select 1 from {LC_TABLE})").fetchone()[0]:  # type: ignore[index]
        return
    print(f"Copying the messages into {LC_TABLE} …", file=sys.stderr)
    with conn.cursor() as read, conn.cursor() as write:
        read.execute("select conversation_id, role, content, created_at from messages order by conversation_id, seq")
        with write.copy(f"copy {LC_TABLE} (session_id, message, created_at) from stdin") as copy:  # type: ignore[arg-type]
            for cid, role, content, at in read:
                kind = "human" if role == "user" else "ai"
                copy.write_row((cid, json.dumps({"type": kind, "data": {"content": content, "type": kind}}), at))
    conn.commit()


# The thread filters as they were before the facet table (20261130130000): a probe of each
# thread's messages per filter, the baseline of bench_filters.
FILTER_SCAN = {
    "model": "exists (select 1 from messages m where m.conversation_id = c.id and m.model_used = %(v)s)",
    "provider": "exists (select 1 from messages m where m.conversation_id = c.id and m.provider = %(v)s)",
    "tool_name": "(c.tool_name = %(v)s or exists (select 1 from messages m "
    "where m.conversation_id = c.id and m.tool_name = %(v)s))",
}


def bench_filters(store: persistence.Store, conn: psycopg.Connection[Any], rounds: int = 7) -> None:
    """count_conversations and the first page of list_conversations with a model, provider or
    tool filter (the Threads page), all time and the last 30 days, against the message scan the
    filters were before the facets (same numbers: checked)."""
    end = conn.execute("select max(updated_at) from conversations").fetchone()[0]  # type: ignore[index]
    since = end - timedelta(days=30)
    picks = {
        name: conn.execute(  # the most used value: the largest count
            f"select {column} from messages where {column} is not null group by 1 order by count(*) desc limit 1"
        ).fetchone()[0]  # type: ignore[index]
        for name, column in (("model", "model_used"), ("provider", "provider"), ("tool_name", "tool_name"))
    }
    rows = []
    for name, value in picks.items():
        for period, lower in (("all time", None), ("30 days", since)):
            filters: dict[str, Any] = {name: value, "since": lower}
            count = store.count_conversations(**filters)
            ours = latencies(lambda _: store.count_conversations(**filters), range(rounds))  # noqa: B023
            page = latencies(lambda _: store.list_conversations(limit=50, **filters), range(rounds))  # noqa: B023
            sql = f"select count(*) from conversations c where {FILTER_SCAN[name]}" + (
                " and c.updated_at >= %(since)s" if lower else ""
            )
            scanned = conn.execute(sql, {"v": value, "since": lower}).fetchone()[0]  # type: ignore[index]
            scan = latencies(lambda _: conn.execute(sql, {"v": value, "since": lower}).fetchone(), range(3))  # noqa: B023
            rows.append(
                [
                    f"{name}={value}, {period}",
                    f"{count:,}",
                    f"{percentile(ours, 50):.1f}",
                    f"{max(ours):.1f}",
                    f"{percentile(page, 50):.1f}",
                    f"{percentile(scan, 50):.1f}",
                    f"{percentile(scan, 50) / percentile(ours, 50):.1f}x",
                    "yes" if scanned == count else f"NO ({scanned:,})",
                ]
            )
    table(
        "Thread filters: count_conversations from the facets (target <= 100 ms) against the message scan",
        ["filter", "threads", "count p50 ms", "count max ms", "list p50 ms", "scan p50 ms", "scan / ours", "same"],
        rows,
    )


def bench_usage(store: persistence.Store, conn: psycopg.Connection[Any]) -> None:
    end = conn.execute("select max(created_at) from messages").fetchone()[0]  # type: ignore[index]
    until = end + timedelta(days=1)
    since = until - timedelta(days=90)
    ours = latencies(lambda _: store.usage(("model",), since=since, until=until), range(20))
    sql = """select model_used, count(*), sum(tokens), coalesce(sum(cost), 0) from messages
             where created_at >= %s and created_at < %s group by model_used"""
    lo = datetime.combine(since.date(), datetime.min.time(), tzinfo=UTC)
    hi = datetime.combine(until.date(), datetime.min.time(), tzinfo=UTC)
    direct = latencies(lambda _: conn.execute(sql, (lo, hi)).fetchall(), range(5), warmup=1)
    frame = store.usage(("model",), since=since, until=until)
    by_sql = {r[0]: r for r in conn.execute(sql, (lo, hi))}
    same = len(by_sql) == len(frame) and all(
        by_sql[row.model][1] == row.messages
        and by_sql[row.model][2] == row.total_tokens
        and abs(float(by_sql[row.model][3]) - row.cost_usd) < 1e-6
        for row in frame.itertuples()
    )
    table(
        "usage() for 90 days by model",
        ["path", "p50 ms", "p95 ms", "max ms"],
        [["store.usage (daily rollup) (target <= 20 ms)", *_pcts(ours)], ["GROUP BY over messages", *_pcts(direct)]],
    )
    print(f"Same numbers from both: {same}; rollup is {percentile(direct, 50) / percentile(ours, 50):,.0f}x faster")


def bench_reads(store: persistence.Store, conn: psycopg.Connection[Any]) -> list[str]:
    from langchain_postgres import PostgresChatMessageHistory

    rows = conn.execute(
        "select continuation_id, id::text from conversations where message_count >= 12 limit 5000"
    ).fetchall()
    sample = random.Random(5).sample(rows, min(200, len(rows)))
    ours = latencies(lambda r: store.get_conversation(r[0], last=50), sample)
    lc = latencies(
        lambda r: PostgresChatMessageHistory(LC_TABLE, r[1], sync_connection=conn).get_messages(), sample, warmup=3
    )
    table(
        "Read a thread back",
        ["read", "threads", "p50 ms", "p95 ms", "max ms"],
        [
            ["get_conversation(last=50) (target <= 3 ms)", len(sample), *_pcts(ours)],
            ["PostgresChatMessageHistory.get_messages (all)", len(sample), *_pcts(lc)],
        ],
    )
    return [r[0] for r in sample]


def bench_search(store: persistence.Store, conn: psycopg.Connection[Any], like_sample: int) -> None:
    ours = latencies(lambda q: store.search(q, limit=20), SEARCH_QUERIES)
    words = [q for q in SEARCH_QUERIES if q.isalnum()]
    words = words[:: max(1, len(words) // like_sample)][:like_sample]
    like = latencies(
        lambda w: conn.execute("select id from messages where content ilike %s", (f"%{w}%",)).fetchall(),
        words,
        warmup=1,
    )
    table(
        "Search over the whole store (targets: p50 <= 20 ms, p95 <= 150 ms)",
        ["query path", "queries", "p50 ms", "p95 ms", "max ms"],
        [
            ["store.search (ts_rank, ts_headline)", len(SEARCH_QUERIES), *_pcts(ours)],
            ["ILIKE '%word%', every match (no index)", len(words), *_pcts(like)],
        ],
    )
    slowest = sorted(zip(ours, SEARCH_QUERIES, strict=True), reverse=True)[:5]
    print("\nSlowest queries: " + ", ".join(f"{q!r} {ms:.1f} ms" for ms, q in slowest))
    print(f"p50 ratio ILIKE/search: {percentile(like, 50) / percentile(ours, 50):,.0f}x")


def bench_ingest(url: str, n: int, rounds: int) -> None:
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    messages = _messages_for_ingest(n, seed=777)
    run = uuid.uuid4().hex[:6]
    for m in messages:
        m["continuation_id"] = f"{m['continuation_id']}-{run}"
    session_ids = {cid: str(uuid.uuid4()) for cid in {m["continuation_id"] for m in messages}}
    async_url = url + "?options=-c%20synchronous_commit%3Doff"
    stores = {"on": persistence.open_store(url), "off": persistence.open_store(async_url)}
    lc_conns = {"on": psycopg.connect(url), "off": psycopg.connect(async_url)}
    floor = psycopg.connect(url)
    floor.execute("create table if not exists bare_messages (conversation text, role text, content text)")
    floor.commit()
    histories: dict[tuple[str, str], Any] = {}

    def ours(mode: str) -> Any:
        def write(batch: list[dict[str, Any]]) -> None:
            for m in batch:
                stores[mode].record_message(**m)  # the items are its arguments

        return write

    def ours_batched(batch: list[dict[str, Any]]) -> None:
        # The server's write path on a remote backend: the outbox delivers in batches.
        for k in range(0, len(batch), 200):
            stores["on"].record_messages(
                [
                    {
                        "continuation_id": m["continuation_id"],
                        "role": m["role"],
                        "content": m["content"],
                        "model": m["model"],
                        "provider": m["provider"],
                        "usage": m["usage"],
                        "duration_ms": m["duration_ms"],
                        "tool_name": m["tool_name"],
                    }
                    for m in batch[k : k + 200]
                ]
            )

    def langchain(mode: str) -> Any:
        def write(batch: list[dict[str, Any]]) -> None:
            for m in batch:
                key = (mode, m["continuation_id"])
                if key not in histories:
                    histories[key] = PostgresChatMessageHistory(
                        LC_TABLE, session_ids[m["continuation_id"]], sync_connection=lc_conns[mode]
                    )
                message = HumanMessage(m["content"]) if m["role"] == "user" else AIMessage(m["content"])
                histories[key].add_message(message)

        return write

    def bare(batch: list[dict[str, Any]]) -> None:
        with floor.cursor() as cur, cur.copy("copy bare_messages from stdin") as copy:
            for m in batch:
                copy.write_row((m["continuation_id"], m["role"], m["content"]))
        floor.commit()

    contenders = {
        "record_message (FTS + rollup + totals + RLS)": ours("on"),
        "PostgresChatMessageHistory.add_message": langchain("on"),
        "record_messages, batches of 200 (the outbox's path)": ours_batched,
        "record_message, synchronous_commit=off": ours("off"),
        "PostgresChatMessageHistory, synchronous_commit=off": langchain("off"),
        "COPY into a bare table (floor, one COPY per batch)": bare,
    }

    def thread_updates() -> tuple[int, int]:
        time.sleep(1.5)  # backends report their table statistics within a second
        row = floor.execute(
            "select n_tup_upd, n_tup_hot_upd from pg_stat_user_tables where schemaname = 'public' "
            "and relname = 'conversations'"
        ).fetchone()
        floor.commit()
        return (int(row[0]), int(row[1])) if row else (0, 0)

    updates_before = thread_updates()
    elapsed, written = race(contenders, messages, rounds)
    updates, hot = (a - b for a, b in zip(thread_updates(), updates_before, strict=True))
    rows = []
    pairs = {
        "record_message (FTS + rollup + totals + RLS)": "PostgresChatMessageHistory.add_message",
        "record_messages, batches of 200 (the outbox's path)": "PostgresChatMessageHistory.add_message",
        "record_message, synchronous_commit=off": "PostgresChatMessageHistory, synchronous_commit=off",
    }
    for name, seconds in elapsed.items():
        rate = written / seconds
        versus = (
            f"{elapsed[pairs[name]] / seconds:.2f}x its LangChain pair"
            if name in pairs
            else f"{seconds * 1e6 / written:,.0f} µs/msg"
        )
        rows.append([name, written, f"{seconds:.1f} s", f"{rate:,.0f}", versus])
    table(
        f"Ingest at {stores['on'].count_conversations():,} threads: {written:,} messages, {rounds} interleaved rounds",
        ["writer", "messages", "time", "messages/s", "ratio / per message"],
        rows,
    )
    print(
        f"\nThread row updates during the race: {updates:,} for {3 * written:,} of our messages "
        f"({written:,} of them in batches), {hot:,} of them HOT"
    )
    for s in stores.values():
        s.close()
    for c in (*lc_conns.values(), floor):
        c.close()


def bench_supabase_path(url: str, store: persistence.Store, thread_ids: list[str]) -> None:
    from supabase_standin import SupabaseStandin

    from persistence.backends.postgres.supabase_store import SupabaseStore

    gateway = SupabaseStandin(url, "bench-secret-0123456789-0123456789", Path("/tmp/pt-bench-standin"))
    supa = SupabaseStore(
        env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_SERVICE_ROLE_KEY": gateway.token("service_role")},
        http_client=gateway.client(),
    )
    calls = {
        "get_conversation(last=50)": lambda s, i: s.get_conversation(thread_ids[i % len(thread_ids)], last=50),
        "record_message": lambda s, i: s.record_message(f"bench-rpc-{i % 50}", "user", f"overhead probe {i}"),
        'search("connection pool")': lambda s, i: s.search('"connection pool"', limit=20),
        "usage(('day', 'model'))": lambda s, i: s.usage(("day", "model")),
        "count_conversations()": lambda s, i: s.count_conversations(),
    }
    rows = []
    for name, fn in calls.items():
        pg: list[float] = []
        rpc: list[float] = []
        for i in range(60):  # interleaved
            for samples, s in ((pg, store), (rpc, supa)):
                start = time.perf_counter()
                fn(s, i)
                samples.append((time.perf_counter() - start) * 1000)
        pg, rpc = pg[5:], rpc[5:]
        rows.append(
            [
                name,
                f"{percentile(pg, 50):.2f}",
                f"{percentile(rpc, 50):.2f}",
                f"{percentile(rpc, 50) - percentile(pg, 50):+.2f}",
                f"{percentile(rpc, 50) / percentile(pg, 50):.2f}x",
            ]
        )
    table(
        "The supabase path (real client + gateway stand-in, in process) against postgresql://",
        ["call", "postgresql:// p50 ms", "supabase p50 ms", "added ms", "ratio"],
        rows,
    )
    supa.close()
    gateway.close()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", default="pt_bench", help="database to fill (created; reused when full)")
    parser.add_argument("--ingest", type=int, default=5_000, help="messages each writer writes")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument(
        "--only", choices=("ingest", "search", "reads", "usage", "filters", "supabase"), action="append"
    )
    args = parser.parse_args()
    url = ensure_database(args.db)
    only = set(args.only or ("ingest", "search", "reads", "usage", "filters", "supabase"))
    ensure_demo_store(url, args.messages)
    store = persistence.open_store(url)
    conn = psycopg.connect(url, autocommit=True)
    # Autovacuum is off on these machines: a fresh load has no visibility map (no index-only
    # scans) and no planner statistics until someone vacuums, so the bench does, once.
    if conn.execute(
        "select last_vacuum is null from pg_stat_user_tables where schemaname = 'public' and relname = 'messages'"
    ).fetchone()[0]:  # type: ignore[index]
        print("vacuum (analyze) …", file=sys.stderr)
        conn.execute("vacuum (analyze)")
    else:
        conn.execute("analyze")
    version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
    size = conn.execute("select pg_size_pretty(pg_database_size(current_database()))").fetchone()[0]  # type: ignore[index]
    print(
        f"# Postgres benchmark — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, PostgreSQL {version}, Python {sys.version.split()[0]}"
    )
    print(
        f"Store: {store.count_conversations():,} threads, {int(store.usage(())['messages'].iloc[0]):,} messages, "
        f"database {size}"
    )
    with psycopg.connect(url) as lc_conn:
        fill_langchain(lc_conn)
    thread_ids: list[str] = []
    if "usage" in only:
        bench_usage(store, conn)
    if "filters" in only:
        bench_filters(store, conn)
    if "reads" in only or "supabase" in only:
        with psycopg.connect(url) as lc_conn:
            thread_ids = bench_reads(store, lc_conn)
    if "search" in only:
        bench_search(store, conn, like_sample=10)
    if "supabase" in only:
        bench_supabase_path(url, store, thread_ids)
    if "ingest" in only:
        bench_ingest(url, args.ingest, args.rounds)
    store.close()
    conn.close()


if __name__ == "__main__":
    main()
