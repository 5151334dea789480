"""The worst calls a signed-in user can make, timed against a normal call (issue 11: every
function ``authenticated`` can call has a bounded cost; target: any single call <= 1 s at a
million messages).

    python bench/bench_hostile.py                    # 1M demo messages in database pt_bench (reused)
    python bench/bench_hostile.py --messages 200000 --db pt_bench_small
    python bench/bench_hostile.py --sql-only         # no Python store: leaves the schema as it is

Each call runs as PostgREST runs it (one transaction, ``set local role``, and the function's
own ``statement_timeout`` applied to the transaction, as PostgREST 12.2+ does), as
``service_role``, which sees all the million messages (a signed-in user sees only their own
rows, so this is the larger cost). A call that hits its timeout is shown as "timeout". The
Python path (``PostgresStore.search``: the package's limits, no timeout) is timed too, and a
signed-in attacker's own messages shaped for the worst case (long, made of the query's
words). Every figure is beside the baseline, a normal search measured in the same rounds.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
import uuid
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import psycopg
from psycopg.types.json import Jsonb

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from bench_postgres import ensure_database  # noqa: E402
from common import ensure_demo_store, table  # noqa: E402

# The most common words of the demo data (stems), for queries that match the most.
_COMMON = (
    "fix request run queue change most index which code before like cause timeout time cache body test "
    "concurrent boundary migrate stream column idempotent lock memory file return chunk message reconnect "
    "window try get metric add growth depth start alert note explain last default release configure batch "
    "backfill online consider swap look failure response happen fire would that for with when then pool "
    "connection retry error session deploy"
)
COMMON = _COMMON.split()
assert len(COMMON) >= 65


def _quote(word: str) -> str:
    return "'" + word.replace("'", "''") + "'"


def rendered(words: list[str], op: str) -> str:
    """A p_tsquery as the package renders one (every word quoted)."""
    return f" {op} ".join(_quote(w) for w in words)


def proconfig_timeout(conn: psycopg.Connection[Any], fn: str) -> str | None:
    row = conn.execute(
        "select c from pg_proc p, unnest(coalesce(p.proconfig, '{}')) as c "
        "where p.oid = %s::regproc and c like 'statement_timeout=%%'",
        (f"public.{fn}",),
    ).fetchone()
    return row[0].split("=", 1)[1] if row else None


class Caller:
    """Calls SQL functions the way PostgREST does (role, hoisted statement_timeout)."""

    def __init__(self, conn: psycopg.Connection[Any], role: str, sub: str | None = None) -> None:
        self.conn, self.role, self.sub = conn, role, sub
        self.timeouts: dict[str, str | None] = {}

    def __call__(self, fn: str, args: dict[str, Any]) -> tuple[float, str]:
        if fn not in self.timeouts:
            self.timeouts[fn] = proconfig_timeout(self.conn, fn)
        sql = f"select public.{fn}(" + ", ".join(f"{k} => %({k})s" for k in args) + ")"
        claims = {"role": self.role, **({"sub": self.sub} if self.sub else {})}
        start = time.perf_counter()
        try:
            with self.conn.transaction():
                self.conn.execute(
                    "select set_config('role', %s, true), set_config('request.jwt.claims', %s, true), "
                    "set_config('statement_timeout', %s, true)",
                    (self.role, json.dumps(claims), self.timeouts[fn] or "0"),
                )
                row = self.conn.execute(sql, args).fetchone()
            outcome = f"{len(row[0]) if row and isinstance(row[0], list) else 'ok'}"
        except psycopg.errors.QueryCanceled:
            outcome = "timeout"
        except psycopg.Error as exc:
            outcome = f"refused {exc.sqlstate}"
        return (time.perf_counter() - start) * 1000, outcome


def measure(
    calls: dict[str, Callable[[], tuple[float, str]]], baseline: Callable[[], tuple[float, str]], rounds: int
) -> list[list[Any]]:
    """Median ms of each call over ``rounds``, interleaved with the baseline."""
    base: list[float] = []
    samples: dict[str, list[float]] = {name: [] for name in calls}
    outcomes: dict[str, str] = {}
    base_outcome = baseline()[1]
    for _ in range(rounds):
        for name, fn in calls.items():
            base.append(baseline()[0])
            ms, outcome = fn()
            samples[name].append(ms)
            outcomes[name] = outcome
    b = statistics.median(base)
    rows = [["baseline: search '\"connection pool\"', limit 20", f"{b:.1f}", f"{max(base):.1f}", "1.0x", base_outcome]]
    for name, times in samples.items():
        m = statistics.median(times)
        rows.append([name, f"{m:.1f}", f"{max(times):.1f}", f"{m / b:.1f}x", outcomes[name]])
    return rows


def sql_calls(call: Caller) -> dict[str, Callable[[], tuple[float, str]]]:
    words64 = COMMON[:64]
    # 1,000 characters of websearch syntax with as many words as the caps let through
    # (at most 200 words and operators): 100 words.
    long_query = " ".join((COMMON * 2)[:100])
    long_query = (long_query + " " + "!" * 1000)[:1000]
    search = "search_messages"
    return {
        "search: 64 common words OR'd, limit 500 (cap)": lambda: call(
            search, {"p_tsquery": rendered(words64, "|"), "p_limit": 500}
        ),
        "search: 64 common words as a phrase, limit 500": lambda: call(
            search, {"p_tsquery": "(" + rendered(words64, "<->") + ") | 'queue'", "p_limit": 500}
        ),
        "search: 64 common words AND'd, limit 500": lambda: call(
            search, {"p_tsquery": rendered(words64, "&"), "p_limit": 500}
        ),
        "search: p_query of 1,000 characters (cap), websearch syntax": lambda: call(
            search, {"p_query": long_query, "p_limit": 500}
        ),
        "search: 'queue', order recent, limit 500, p_window 1000": lambda: call(
            search, {"p_tsquery": "'queue'", "p_limit": 500, "p_order": "recent", "p_window": 1000}
        ),
        "search: 4,000 words (refused)": lambda: call(
            search, {"p_tsquery": rendered((COMMON * 80)[:4000], "|"), "p_limit": 20}
        ),
        "list_conversations: limit 1001, order cost, model filter": lambda: call(
            "list_conversations", {"p_limit": 1001, "p_order": "cost", "p_filters": Jsonb({"model": "kimi-k2"})}
        ),
        "count_conversations: model + tool filters, all time": lambda: call(
            "count_conversations", {"p_filters": Jsonb({"model": "glm-4.6", "tool_name": "chat"})}
        ),
        "usage_report: by day, model, provider, tool, all time": lambda: call(
            "usage_report", {"p_group_by": ["day", "model", "provider", "tool_name"]}
        ),
        "facets()": lambda: call("facets", {}),
        "conversation_ids: all time (export)": lambda: call("conversation_ids", {}),
        "list_files: limit 1001": lambda: call("list_files", {"p_limit": 1001}),
        "storage_usage_report: by day, mime type": lambda: call(
            "storage_usage_report", {"p_group_by": ["day", "mime_type"]}
        ),
        "get_messages: limit 1000 (cap)": lambda: call(
            "get_messages", {"p_continuation_id": "missing-thread", "p_limit": 1000}
        ),
    }


def attacker(conn: psycopg.Connection[Any], messages: int) -> tuple[str, str]:
    """A signed-in user with ``messages`` messages of 100,000 characters made of the query's
    words: the worst data for ts_rank and ts_headline. Written in ``conn``'s open
    transaction, which the caller rolls back (the store is left as it was)."""
    sub = str(uuid.UUID(int=0xBADBAD))
    cid = "attacker-thread"
    print(f"Writing {messages:,} attacker messages of 100,000 characters (rolled back after) …", file=sys.stderr)
    body = ((" ".join(COMMON[:16]) + " ") * 1000)[:100_000]
    call = Caller(conn, "authenticated", sub)
    for _ in range(messages):
        _, outcome = call(
            "record_message",
            {"p_continuation_id": cid, "p_role": "user", "p_content": body, "p_id": str(uuid.uuid4())},
        )
        if outcome != "ok":
            raise SystemExit(f"record_message as authenticated: {outcome}")
    return sub, cid


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=1_000_000)
    parser.add_argument("--db", default="pt_bench", help="database to fill (created; reused when full)")
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--attacker", type=int, default=1000, help="long messages the attacker writes")
    parser.add_argument("--sql-only", action="store_true", help="skip the Python store (it would migrate)")
    args = parser.parse_args()
    url = ensure_database(args.db)
    store = None
    if not args.sql_only:
        import persistence

        ensure_demo_store(url, args.messages)
        store = persistence.open_store(url)  # migrated to the latest schema first
    conn = psycopg.connect(url, autocommit=True)
    conn.execute("analyze")
    version = conn.execute("show server_version").fetchone()[0]  # type: ignore[index]
    n = conn.execute("select count(*) from messages").fetchone()[0]  # type: ignore[index]
    last = conn.execute("select max(version) from supabase_migrations.schema_migrations").fetchone()[0]  # type: ignore[index]
    print(f"# Hostile calls — {datetime.now(UTC):%Y-%m-%d %H:%M} UTC, PostgreSQL {version}")
    print(f"Store: {n:,} messages; last migration {last}")
    service = Caller(conn, "service_role")
    pool = '"connection pool"'

    def baseline() -> tuple[float, str]:
        return service("search_messages", {"p_tsquery": "'connect' <-> 'pool'", "p_limit": 20})

    rows = measure(sql_calls(service), baseline, args.rounds)
    table(
        "SQL functions as PostgREST calls them (service_role: sees every message; hoisted statement_timeout)",
        ["call", "median ms", "max ms", "vs baseline", "outcome"],
        rows,
    )
    if store is None:
        return

    from persistence.errors import ValidationError

    def py(query: str, limit: int) -> Callable[[], tuple[float, str]]:
        def run() -> tuple[float, str]:
            start = time.perf_counter()
            try:
                outcome = f"{len(store.search(query, limit=limit))} hits"
            except ValidationError as exc:
                outcome = f"refused: {exc.message[:40]}…"
            return (time.perf_counter() - start) * 1000, outcome

        return run

    words = COMMON[:64]
    py_calls = {
        "store.search: 64 words OR'd (at the cap), limit 500": py(" OR ".join(words), 500),
        "store.search: 64 words, limit 500": py(" ".join(words), 500),
        'store.search: a 64-word "phrase", limit 500': py('"' + " ".join(words) + '"', 500),
        "store.search: 64 words OR'd in 1,000 characters (both caps), limit 500": py(
            (" OR ".join(words) + " " + "!" * 1000)[:1000], 500
        ),
        "store.search: 2,000 characters (refused)": py("connection pool " * 125, 500),
        "store.search: 65 words (refused)": py(" ".join(COMMON[:65]), 20),
    }
    py_rows = measure(py_calls, lambda: py(pool, 20)(), args.rounds)
    table(
        "The Python path: PostgresStore.search (the package's limits; no statement_timeout)",
        ["call", "median ms", "max ms", "vs baseline", "outcome"],
        py_rows,
    )
    store.close()

    if args.attacker <= 0:
        conn.close()
        return
    aconn = psycopg.connect(url)  # one transaction, rolled back at the end
    aconn.execute("select 1")
    sub, cid = attacker(aconn, args.attacker)
    user = Caller(aconn, "authenticated", sub)
    w16 = COMMON[:16]
    attack = {
        "attacker: 16 of its words AND'd, limit 500": lambda: user(
            "search_messages", {"p_tsquery": rendered(w16, "&"), "p_limit": 500}
        ),
        "attacker: its 16 words as a phrase, limit 500": lambda: user(
            "search_messages", {"p_tsquery": rendered(w16, "<->"), "p_limit": 500}
        ),
        "attacker: 2 of its words AND'd, limit 500": lambda: user(
            "search_messages", {"p_tsquery": rendered(w16[:2], "&"), "p_limit": 500}
        ),
        "attacker: 1 word, limit 500": lambda: user("search_messages", {"p_tsquery": "'fix'", "p_limit": 500}),
        "attacker: get_conversation, whole thread": lambda: user("get_conversation", {"p_continuation_id": cid}),
    }
    rows = measure(attack, lambda: user("search_messages", {"p_tsquery": "'connect' <-> 'pool'", "p_limit": 20}), 1)
    rows[0][0] = "baseline: the attacker searching '\"connection pool\"'"
    table(
        f"A signed-in user's own {args.attacker:,} messages of 100,000 characters made of the query's words",
        ["call", "median ms", "max ms", "vs baseline", "outcome"],
        rows,
    )
    aconn.rollback()
    aconn.close()
    conn.close()


if __name__ == "__main__":
    main()
