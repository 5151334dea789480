"""Shared helpers for the benchmarks: timing, percentiles, a plain table, the demo store.

Benchmarks print figures and ratios against a baseline measured in the same run (rounds
interleaved, so machine noise hits both sides alike). They assert nothing.
"""

from __future__ import annotations

import subprocess
import sys
import time
from collections.abc import Callable, Sequence
from pathlib import Path
from typing import Any

MESSAGES_PER_THREAD = 8.4  # what `demo` averages; 1M messages ~ 119,000 threads


def percentile(samples: Sequence[float], p: float) -> float:
    ordered = sorted(samples)
    if not ordered:
        return float("nan")
    k = (len(ordered) - 1) * p / 100
    lo, hi = int(k), min(int(k) + 1, len(ordered) - 1)
    return ordered[lo] + (ordered[hi] - ordered[lo]) * (k - lo)


def timed(fn: Callable[[], Any]) -> tuple[float, Any]:
    """(milliseconds, result) of one call."""
    start = time.perf_counter()
    result = fn()
    return (time.perf_counter() - start) * 1000, result


def latencies(fn: Callable[[Any], Any], args: Sequence[Any], warmup: int = 3) -> list[float]:
    for a in args[:warmup]:
        fn(a)
    return [timed(lambda a=a: fn(a))[0] for a in args]


def race(
    contenders: dict[str, Callable[[list[Any]], Any]], items: Sequence[Any], rounds: int
) -> tuple[dict[str, float], int]:
    """Feed ``items`` to every contender in ``rounds`` interleaved slices (so machine noise
    hits all alike); returns seconds per contender and how many items each wrote."""
    elapsed = dict.fromkeys(contenders, 0.0)
    size = max(1, len(items) // rounds)
    for r in range(rounds):
        batch = list(items[r * size : (r + 1) * size])
        for name, fn in contenders.items():
            start = time.perf_counter()
            fn(batch)
            elapsed[name] += time.perf_counter() - start
    return elapsed, size * rounds


def table(title: str, header: Sequence[str], rows: Sequence[Sequence[Any]]) -> None:
    cells = [[str(h) for h in header]] + [[_fmt(c) for c in row] for row in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(cells[0], widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in cells[1:]:
        print(
            "| "
            + " | ".join(c.rjust(w) if _numeric(c) else c.ljust(w) for c, w in zip(row, widths, strict=True))
            + " |"
        )
    sys.stdout.flush()


def _fmt(value: Any) -> str:
    if isinstance(value, float):
        return f"{value:,.2f}" if abs(value) < 1000 else f"{value:,.0f}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)


def _numeric(text: str) -> bool:
    return text.replace(",", "").replace(".", "").replace("x", "").replace("-", "").strip().isdigit()


def ensure_demo_store(url: str, messages: int, seed: int = 42, end: str = "2026-11-25") -> None:
    """Fill ``url`` with about ``messages`` demo messages unless it already holds them."""
    import persistence

    store = persistence.open_store(url)
    have = int(store.usage(())["messages"].iloc[0])
    store.close()
    if have >= messages * 0.95:
        print(f"Reusing {url}: {have:,} messages", file=sys.stderr)
        return
    if have:
        raise SystemExit(f"{url} holds {have:,} messages, not ~{messages:,}: pass an empty or a full store")
    threads = max(1, round(messages / MESSAGES_PER_THREAD))
    print(f"Writing ~{messages:,} demo messages ({threads:,} threads) to {url} …", file=sys.stderr)
    subprocess.run(
        [
            sys.executable,
            "-m",
            "persistence",
            "demo",
            "--url",
            url,
            "--conversations",
            str(threads),
            "--seed",
            str(seed),
            "--end",
            end,
            "--weeks",
            "13",
        ],
        check=True,
    )


def file_size_mb(path: Path) -> float:
    return sum(p.stat().st_size for p in path.parent.glob(path.name + "*")) / 1e6
