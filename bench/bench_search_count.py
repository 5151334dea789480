"""The true total of a search (issue 14): ``store.count_search`` beside ``store.search(limit=20)``,
the page it sits next to on the Search page, at a million messages.

    python bench/bench_search_count.py --sqlite /tmp/copy/history.db --postgres postgresql://…/pt_copy

Opening a store applies pending migrations, so point it at copies of bench_sqlite.py's and
bench_postgres.py's stores. Each query is timed in ``--rounds`` rounds (the first dropped as
warm-up), the count and the search interleaved so machine noise hits both alike; a count
stopped at the search time limit (2 s) is reported as such (the page then says "more than").
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import table  # noqa: E402

import persistence  # noqa: E402
from persistence.errors import ValidationError  # noqa: E402

QUERIES = ('"connection pool"', "timeout", "the", "idempotency", "缓存")


def _count(store: persistence.Store, query: str) -> int | str:
    try:
        return store.count_search(query)
    except ValidationError:
        return "stopped"


def measure(name: str, store: persistence.Store, rounds: int) -> list[list[object]]:
    rows: list[list[object]] = []
    for query in QUERIES:
        count_ms: list[float] = []
        search_ms: list[float] = []
        total: int | str = 0
        for _ in range(rounds):
            start = time.perf_counter()
            total = _count(store, query)
            count_ms.append((time.perf_counter() - start) * 1000)
            start = time.perf_counter()
            store.search(query, limit=20)
            search_ms.append((time.perf_counter() - start) * 1000)
        count_ms, search_ms = count_ms[1:], search_ms[1:]
        c, s = statistics.median(count_ms), statistics.median(search_ms)
        rows.append([name, query, total, f"{c / s:.1f}x", round(c, 1), round(max(count_ms), 1), round(s, 1)])
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--sqlite", help="a copy of a million-message history.db")
    ap.add_argument("--postgres", help="the URL of a copy of a million-message database")
    ap.add_argument("--rounds", type=int, default=4)
    args = ap.parse_args()
    rows: list[list[object]] = []
    for name, url in (("sqlite", args.sqlite and f"sqlite:///{args.sqlite}"), ("postgres", args.postgres)):
        if not url:
            continue
        store = persistence.open_store(url)
        try:
            rows += measure(name, store, args.rounds)
        finally:
            store.close()
    table(
        "count_search beside search(limit=20)",
        ["backend", "query", "matches", "count / search", "count median ms", "count max ms", "search median ms"],
        rows,
    )


if __name__ == "__main__":
    main()
