"""``store.budget_status(...)`` per request (issue 17: <= 1 ms on SQLite from a small cached
summary), beside a plain ``usage()`` call and the same status computed without the summary.

    python bench/bench_budgets.py                       # the million-message store bench_sqlite.py fills
    python bench/bench_budgets.py --source sqlite:////path/history.db --calls 2000

The shared store is never written: it is copied to a temp dir (SQLite's online backup), and the
copy gets a day of traffic for today (the demo data ends before today; today's rollup rows are
what every call reads live) and six budgets: the whole store per month and per day, a model per
day, a provider per week, a tool per month and a tag per month. Rounds alternate between the
contenders, so machine noise hits all alike.
"""

from __future__ import annotations

import argparse
import sqlite3
import statistics
import sys
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import percentile, table  # noqa: E402

import persistence  # noqa: E402
from persistence.backends.sqlite.store import SQLiteStore  # noqa: E402
from persistence.demo import generate  # noqa: E402


def copy_store(source: Path, target: Path) -> None:
    """A consistent copy of a live SQLite file (the backup API; the source is only read)."""
    with sqlite3.connect(f"file:{source}?mode=ro", uri=True) as src, sqlite3.connect(target) as dst:
        src.backup(dst, pages=65536)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--source", default="sqlite:////tmp/bench-sqlite/history.db")
    parser.add_argument("--calls", type=int, default=3000, help="calls per contender")
    parser.add_argument("--rounds", type=int, default=10)
    parser.add_argument("--today-threads", type=int, default=1300, help="threads written today (~10k messages)")
    args = parser.parse_args()

    source = Path(args.source.removeprefix("sqlite:///"))
    with tempfile.TemporaryDirectory(prefix="bench-budgets-") as tmp:
        path = Path(tmp) / "history.db"
        started = time.perf_counter()
        copy_store(source, path)
        print(f"Copied {source} in {time.perf_counter() - started:.0f} s", file=sys.stderr)
        store = persistence.open_store(f"sqlite:///{path}")
        assert isinstance(store, SQLiteStore)  # the figures below read its rollup table directly
        # end is the midnight the threads lead up to: weeks=0 puts them all in today's last hours.
        generate(
            store, args.today_threads, seed=17, end=datetime.now(UTC).date() + timedelta(days=1), weeks=0, files=False
        )
        facets = store.facets()
        model, provider, tool = facets["models"][0], facets["providers"][0], facets["tools"][0]
        tag = facets["tags"][0] if facets["tags"] else "bench"
        store.set_budget(5000, period="month")
        store.set_budget(300, period="day")
        store.set_budget(50, period="day", model=model)
        store.set_budget(500, period="week", provider=provider)
        store.set_budget(800, period="month", tool_name=tool)
        store.set_budget(100, period="month", tag=tag)
        month_start = datetime.now(UTC).replace(day=1, hour=0, minute=0, second=0, microsecond=0)
        rollup_rows = store._conn().execute("select count(*) from usage_daily").fetchone()[0]
        today_rows = (
            store._conn()
            .execute("select count(*) from usage_daily where day = ?", (datetime.now(UTC).date().isoformat(),))
            .fetchone()[0]
        )

        contenders = {
            "budget_status() (all 6 budgets, cached summary)": lambda: store.budget_status(),
            f"budget_status(model, tool_name, tags) (a call's {4} budgets)": lambda: store.budget_status(
                model=model, tool_name=tool, tags=[tag]
            ),
            "baseline: usage(()) since the month's start": lambda: store.usage((), since=month_start),
            "budget_status(at=now): no summary, the period read in full": lambda: store.budget_status(
                at=datetime.now(UTC)
            ),
        }
        samples: dict[str, list[float]] = {name: [] for name in contenders}
        for fn in contenders.values():  # warm: the summary, the page cache, the price table
            fn()
        per_round = max(1, args.calls // args.rounds)
        for _ in range(args.rounds):
            for name, fn in contenders.items():
                # The slow full recompute gets a tenth of the calls: its figure is stable and it is
                # not what a request runs.
                n = per_round if "at=now" not in name else max(1, per_round // 10)
                for _ in range(n):
                    t0 = time.perf_counter()
                    fn()
                    samples[name].append((time.perf_counter() - t0) * 1000)
        store.close()

    base = statistics.median(samples["baseline: usage(()) since the month's start"])
    rows = []
    for name, values in samples.items():
        p50 = statistics.median(values)
        rows.append(
            [
                name,
                f"{base / p50:.1f}x" if p50 else "-",
                f"{p50:.3f}",
                f"{percentile(values, 95):.3f}",
                f"{percentile(values, 99):.3f}",
                len(values),
            ]
        )
    table(
        f"budget_status on {source.name} (+ today's traffic): {rollup_rows:,} rollup rows, {today_rows:,} of them today",
        ["call", "faster than baseline", "p50 ms", "p95 ms", "p99 ms", "calls"],
        rows,
    )


if __name__ == "__main__":
    main()
