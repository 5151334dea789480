"""What-if pricing and redaction on the million-message SQLite store (issue 17), each beside a
baseline measured in the same run.

    python bench/bench_whatif_redact.py                       # /tmp/bench-sqlite/history.db
    python bench/bench_whatif_redact.py --store PATH --days 30

* what-if of a period against ``store.usage(("day",))`` of the same period: both read the daily
  rollup, so the ratio is the cost of pricing the days;
* what-if of the costliest thread against ``get_conversation`` of it (what it reads);
* redact of one thread (with the full-text index merge and the VACUUM that make it leave no byte
  behind) against a plain ``VACUUM`` of the same file, run just before and just after it: the
  redaction costs about one rewrite of the file. Run on a copy of the store (the shared one is
  left as it was).
"""

from __future__ import annotations

import argparse
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import UTC, timedelta
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))

from common import table  # noqa: E402

import persistence  # noqa: E402
from persistence.whatif import whatif_period, whatif_thread  # noqa: E402


def interleaved(base: Callable[[], object], other: Callable[[], object], n: int) -> tuple[float, float]:
    """Medians of ``n`` timings of each, alternating (same cache, same machine noise), after a
    warm-up call of each."""
    base()
    other()
    times: tuple[list[float], list[float]] = ([], [])
    for _ in range(n):
        for fn, sink in ((base, times[0]), (other, times[1])):
            started = time.perf_counter()
            fn()
            sink.append(time.perf_counter() - started)
    return statistics.median(times[0]), statistics.median(times[1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--store", type=Path, default=Path("/tmp/bench-sqlite/history.db"))
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--repeat", type=int, default=21)
    args = parser.parse_args()

    with tempfile.TemporaryDirectory(prefix="bench-redact-") as tmp:
        copy = Path(tmp) / "history.db"
        shutil.copyfile(args.store, copy)
        url = f"sqlite:///{copy}"
        with persistence.open_store(url) as store:
            messages = int(store.usage(())["messages"].iloc[0])
            last = store.usage(("day",))["day"].max().to_pydatetime().replace(tzinfo=UTC)
            since = last - timedelta(days=args.days - 1)
            thread = store.list_conversations(order="cost", limit=1).items[0]
            target = "glm-4.6"
            base_usage, period = interleaved(
                lambda: store.usage(("day",), since=since),
                lambda: whatif_period(store, target, since=since),
                args.repeat,
            )
            base_thread, one = interleaved(
                lambda: store.get_conversation(thread.continuation_id),
                lambda: whatif_thread(store, thread.continuation_id, target),
                args.repeat,
            )
            table(
                f"What-if on {target}, {messages:,} messages (median of {args.repeat})",
                ["what", "ratio", "baseline", "baseline ms", "what-if ms"],
                [
                    [
                        f"period of {args.days} days",
                        f"{period / base_usage:.2f}x",
                        "usage(day)",
                        f"{base_usage * 1000:.1f}",
                        f"{period * 1000:.1f}",
                    ],
                    [
                        f"thread of {thread.message_count} messages",
                        f"{one / base_thread:.2f}x",
                        "get_conversation",
                        f"{base_thread * 1000:.1f}",
                        f"{one * 1000:.1f}",
                    ],
                ],
            )
        size_before = copy.stat().st_size

        def plain_vacuum() -> float:
            db = sqlite3.connect(copy)
            try:
                started = time.perf_counter()
                db.execute("vacuum")
                return time.perf_counter() - started
            finally:
                db.close()

        # A plain VACUUM before and after the redaction: the file's state (free pages, cache)
        # differs between the first rewrite and the next, so the baseline is their mean.
        before = plain_vacuum()
        with persistence.open_store(url) as store:
            started = time.perf_counter()
            result = store.redact(continuation_id=thread.continuation_id)
            redact = time.perf_counter() - started
        after = plain_vacuum()
        vacuum = (before + after) / 2
        table(
            f"Redact one thread ({result.messages} messages) of {messages:,}, file {size_before / 1e9:.2f} GB",
            ["ratio", "baseline", "baseline s", "redact s"],
            [
                [
                    f"{redact / vacuum:.2f}x",
                    f"plain VACUUM of the same file (before {before:.1f} s, after {after:.1f} s)",
                    f"{vacuum:.1f}",
                    f"{redact:.1f}",
                ]
            ],
        )


if __name__ == "__main__":
    main()
