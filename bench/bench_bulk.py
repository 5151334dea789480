"""Every write path into an empty store against the same writes into a million-message store
(issue 16: within 1.3x, on SQLite and Postgres).

    python bench/bench_bulk.py                      # both backends, every path
    python bench/bench_bulk.py --backend sqlite --paths bulk --threads 4000 --rounds 8

Paths (``--paths``, comma-separated):
- ``bulk``: `demo`'s writes, ``persistence.demo.generate`` (``_import_batch``, the path of
  `demo`, `import` and `copy`), without file uploads, which cost the same at any size;
  ``--threads`` threads.
- ``record_message``: one call per message (``--messages-per-path`` demo-length messages, new
  threads of ~8 turns).
- ``record_messages``: the same messages in batches of 200 (the outbox's delivery).
- ``zen``: zen's ``add_turn`` through ``ThreadStorage.set_with_ttl`` without an outbox, each
  call the whole ThreadContext of a thread of up to 20 turns (``--messages-per-path // 4``
  calls).

The large store is a copy of the one bench_sqlite.py / bench_postgres.py fill (SQLite: the file
copied to a temp dir; Postgres: ``create database … template pt_bench``, then ``VACUUM
(ANALYZE)``: autovacuum is off on these machines), so the shared one is left as it was. Rounds
alternate between the empty and the large store with the same data, so both get the same
writes and the same machine noise.
"""

from __future__ import annotations

import argparse
import shutil
import sys
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_outbox import Threads  # noqa: E402
from bench_postgres import ADMIN_URL, ensure_database  # noqa: E402
from bench_sqlite import _messages_for_ingest  # noqa: E402
from common import ensure_demo_store, table  # noqa: E402

import persistence  # noqa: E402
from persistence.demo import generate  # noqa: E402
from persistence.integrations.zen import ThreadStorage  # noqa: E402

# A round of a write path into a store: (store, round) -> nothing; messages are counted around it.
Writer = Callable[[persistence.Store, int], None]


def writers(threads: int, messages: int, rounds: int) -> dict[str, Writer]:
    """Each path's rounds; the same data for both stores (seeds and ids no other bench uses)."""
    items = _messages_for_ingest(messages, seed=4242)
    size = max(1, len(items) // rounds)
    chunks = [items[r * size : (r + 1) * size] for r in range(rounds)]
    calls = max(1, messages // 4 // rounds)
    snapshots = []
    for r in range(rounds):
        threads_of_round = Threads(seed=7000 + r)
        snapshots.append([threads_of_round.next_value() for _ in range(calls)])

    def bulk(store: persistence.Store, r: int) -> None:
        # Ending after the bench stores' last day: new threads.
        generate(store, max(1, threads // rounds), seed=9000 + r, end=date(2026, 12, 20), weeks=4, files=False)

    def record_message(store: persistence.Store, r: int) -> None:
        for m in chunks[r]:
            store.record_message(**{**m, "continuation_id": f"growth-1-{m['continuation_id']}"})

    def record_messages(store: persistence.Store, r: int) -> None:
        batch = [{**m, "continuation_id": f"growth-n-{m['continuation_id']}"} for m in chunks[r]]
        for k in range(0, len(batch), 200):
            store.record_messages(batch[k : k + 200])

    def zen(store: persistence.Store, r: int) -> None:
        storage = ThreadStorage(store, outbox=False)
        for key, value in snapshots[r]:
            storage.set_with_ttl(key, 3600, value)

    return {"bulk": bulk, "record_message": record_message, "record_messages": record_messages, "zen": zen}


def messages_in(store: persistence.Store) -> int:
    return int(store.usage(())["messages"].iloc[0])


def race(empty: persistence.Store, large: persistence.Store, write: Writer, rounds: int) -> list[list[object]]:
    """Seconds and messages written into each store, rounds interleaved. CPU seconds too: this
    process's (Python and, on SQLite, the database engine itself), which a loaded machine
    inflates less than wall time."""
    seconds = {"empty": 0.0, "large": 0.0}
    cpu = {"empty": 0.0, "large": 0.0}
    written = {"empty": 0, "large": 0}
    for r in range(rounds):
        for name, store in (("empty", empty), ("large", large)):
            before = messages_in(store)
            start, start_cpu = time.perf_counter(), time.process_time()
            write(store, r)
            seconds[name] += time.perf_counter() - start
            cpu[name] += time.process_time() - start_cpu
            written[name] += messages_in(store) - before
    rate = {name: written[name] / seconds[name] for name in seconds}
    return [
        [
            "into an empty store",
            f"{written['empty']:,}",
            f"{seconds['empty']:.1f}",
            f"{rate['empty']:,.0f}",
            "1.00x",
            f"{cpu['empty']:.1f}",
            "1.00x",
        ],
        [
            f"into the store of {messages_in(large) - written['large']:,} messages",
            f"{written['large']:,}",
            f"{seconds['large']:.1f}",
            f"{rate['large']:,.0f}",
            f"{rate['empty'] / rate['large']:.2f}x",
            f"{cpu['large']:.1f}",
            f"{cpu['large'] / written['large'] / (cpu['empty'] / written['empty']):.2f}x",
        ],
    ]


def sqlite_pair(source_dir: Path, work: Path, messages: int) -> tuple[persistence.Store, persistence.Store]:
    source = source_dir / "history.db"
    ensure_demo_store(f"sqlite:///{source}", messages)
    print(f"Copying {source} …", file=sys.stderr)
    (work / "large").mkdir()
    (work / "empty").mkdir()
    shutil.copy(source, work / "large" / "history.db")
    return (
        persistence.open_store(f"sqlite:///{work / 'empty' / 'history.db'}"),
        persistence.open_store(f"sqlite:///{work / 'large' / 'history.db'}"),
    )


def postgres_pair(db: str, messages: int) -> tuple[persistence.Store, persistence.Store, list[str]]:
    ensure_demo_store(ensure_database(db), messages)
    names = [f"{db}_bulk_empty", f"{db}_bulk_large"]
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}"')  # type: ignore[arg-type]
        print(f"Copying {db} …", file=sys.stderr)
        conn.execute(f'create database "{names[0]}"')  # type: ignore[arg-type]
        conn.execute(f'create database "{names[1]}" template "{db}"')  # type: ignore[arg-type]
    base = ADMIN_URL.rsplit("/", 1)[0]
    empty = persistence.open_store(f"{base}/{names[0]}")
    large = persistence.open_store(f"{base}/{names[1]}")
    with psycopg.connect(f"{base}/{names[1]}", autocommit=True) as conn:
        conn.execute("vacuum (analyze)")  # autovacuum is off on these machines
    return empty, large, names


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--backend", choices=("sqlite", "postgres"), action="append")
    parser.add_argument("--messages", type=int, default=1_000_000, help="size of the large store")
    parser.add_argument("--sqlite-dir", type=Path, default=Path("/tmp/bench-sqlite"))
    parser.add_argument("--db", default="pt_bench")
    parser.add_argument("--threads", type=int, default=2000, help="threads written into each store")
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--paths", default="bulk,record_message,record_messages,zen", help="which write paths")
    parser.add_argument("--messages-per-path", type=int, default=4000, help="messages per store (zen: a quarter)")
    args = parser.parse_args()
    paths = writers(args.threads, args.messages_per_path, args.rounds)
    unknown = set(args.paths.split(",")) - set(paths)
    if unknown:
        parser.error(f"unknown --paths {', '.join(sorted(unknown))}; choose from {', '.join(paths)}")
    for backend in args.backend or ["sqlite", "postgres"]:
        with tempfile.TemporaryDirectory(prefix="bench-bulk-") as tmp:
            work = Path(tmp)
            names: list[str] = []
            if backend == "sqlite":
                empty, large = sqlite_pair(args.sqlite_dir, work, args.messages)
            else:
                empty, large, names = postgres_pair(args.db, args.messages)
            try:
                for path in args.paths.split(","):
                    table(
                        f"{backend}, {path}: into the large store against an empty one (target: within 1.3x)",
                        [
                            "store",
                            "messages",
                            "seconds",
                            "messages/s",
                            "slower by",
                            "CPU s (this process)",
                            "CPU per message",
                        ],
                        race(empty, large, paths[path], args.rounds),
                    )
            finally:
                empty.close()
                large.close()
                if names:
                    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
                        for name in names:
                            conn.execute(f'drop database if exists "{name}"')  # type: ignore[arg-type]


if __name__ == "__main__":
    main()
