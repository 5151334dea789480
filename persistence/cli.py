"""``python -m persistence``: migrate, reindex, demo, doctor, search, export, import, reprice, report,
prune, import-files, copy, recover, whatif, redact, alerts, budget.

Every command takes ``--url`` (default: the store ``open_store()`` resolves from the
environment). Long work shows a progress bar on stderr; data goes to stdout.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from datetime import date
from pathlib import Path
from typing import IO, Any

from tqdm import tqdm

from .config import open_store
from .env import redact_url, resolve_url, sqlite_url_path
from .errors import PersistenceError, ValidationError
from .formatting import size
from .insights import Anomaly, BudgetStatus
from .outbox import doctor as doctor_with_outbox
from .store import Store
from .when import parse_age, parse_when

__all__ = ["build_parser", "main"]


def _open(args: argparse.Namespace) -> Store:
    return open_store(args.url)


def _period(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--since", type=parse_when, help="from (YYYY-MM-DD, ISO time, or 30d ago)")
    parser.add_argument("--until", type=parse_when, help="until, exclusive")


def _progress(total: int | None, desc: str, unit: str) -> tqdm:
    return tqdm(total=total, desc=desc, unit=unit, file=sys.stderr, disable=not sys.stderr.isatty() and total is None)


# -- commands --------------------------------------------------------------------------


def cmd_migrate(args: argparse.Namespace) -> int:
    with _open(args) as store:
        for name, applied in store.migrations():
            print(f"{applied:%Y-%m-%d %H:%M:%S}  {name}")
        print(f"{redact_url(store.url)} is up to date.", file=sys.stderr)
    return 0


def cmd_reindex(args: argparse.Namespace) -> int:
    """Recompute the search index text of every message (after an upgrade that changed it).

    Postgres: direct SQL over the URL (a Supabase project's database URL too); SQLite does
    it in a migration when the store opens, so there it only re-checks."""
    url = resolve_url(args.url)
    if url.startswith(("postgresql://", "postgres://")):
        import psycopg

        from .backends.postgres.schema import reindex_search

        with psycopg.connect(url, autocommit=True) as conn:
            changed = reindex_search(conn, force=True)
        print(f"{redact_url(url)}: search index text recomputed ({changed:,} messages changed).", file=sys.stderr)
        return 0
    with _open(args) as store:
        print(
            f"{redact_url(store.url)}: the search index is current (SQLite reindexes when it opens).", file=sys.stderr
        )
    return 0


def cmd_demo(args: argparse.Namespace) -> int:
    from .demo import generate

    started = time.perf_counter()
    with _open(args) as store, _progress(args.conversations, "threads", " threads") as bar:
        summary = generate(
            store,
            args.conversations,
            seed=args.seed,
            end=args.end,
            weeks=args.weeks,
            files=not args.no_files,
            progress=bar.update,
        )
    elapsed = time.perf_counter() - started
    print(
        f"Wrote {summary.conversations:,} threads, {summary.messages:,} messages and {summary.uploads:,} file "
        f"uploads in {elapsed:.1f} s ({summary.messages / max(elapsed, 1e-9):,.0f} messages/s) to {store.url}"
    )
    return 0


def cmd_doctor(args: argparse.Namespace) -> int:
    with _open(args) as store:
        if args.quick:
            report = doctor_with_outbox(store, quick=True)
        else:
            # The full check reads every page and checks every file's bytes: seconds on a large store.
            with _progress(None, "checking", "checks") as bar:
                shown = [""]

                def progress(step: str, done: int, total: int) -> None:
                    bar.total = total
                    bar.update(done - bar.n)
                    if step != shown[0]:  # shown at once: the integrity check is one long step
                        shown[0] = step
                        bar.set_description(step)

                report = doctor_with_outbox(store, progress=progress)
    if args.json:
        print(json.dumps(report, indent=2, default=str))
    else:
        width = max(len(k) for k in report)
        for key, value in report.items():
            if isinstance(value, dict | list):
                value = json.dumps(value, ensure_ascii=False, default=str)
            print(f"{key:<{width}}  {value}")
    problems = []
    if report.get("quick_check") not in (None, "ok") or report.get("damaged"):
        # Which check failed, and the way out: writes stay refused until the file is replaced.
        problems.append(
            f"the database file is damaged (pragma quick_check: {report.get('quick_check')}); "
            "writes are refused. Copy what is readable into a new file with: "
            f"{report.get('recover_command') or 'python -m persistence recover --url …'}"
        )
    if report.get("files_missing_bytes_count"):
        problems.append(f"{report['files_missing_bytes_count']} file(s) have no bytes in the file store")
    if report.get("outbox_depth") and report.get("outbox_oldest_age_s", 0) > 60:
        problems.append(
            f"outbox: {report['outbox_depth']} write(s) waiting, oldest {report['outbox_oldest_age_s']:.0f} s; "
            f"last error: {report.get('outbox_last_error')}"
        )
    if report.get("outbox_dead"):
        problems.append(f"outbox: {report['outbox_dead']} write(s) refused by the store (table outbox_dead)")
    for problem in problems:
        print(f"PROBLEM: {problem}", file=sys.stderr)
    return 1 if problems else 0


def cmd_search(args: argparse.Namespace) -> int:
    with _open(args) as store:
        hits = store.search(
            args.query,
            limit=args.limit,
            since=args.since,
            until=args.until,
            model=args.model,
            role=args.role,
            continuation_id=args.thread,
            order=args.order,
        )
    if args.json:
        for hit in hits:
            print(
                json.dumps(
                    {
                        "score": hit.score,
                        "snippet": hit.snippet,
                        "title": hit.conversation_title,
                        "message": hit.message.to_dict(),
                    },
                    ensure_ascii=False,
                )
            )
        return 0
    if not hits:
        print("No matches.", file=sys.stderr)
    for hit in hits:
        m = hit.message
        print(f"{m.created_at:%Y-%m-%d %H:%M}  {m.continuation_id}  #{m.seq} {m.role}  {m.model or ''}")
        text = hit.highlighted("\033[1m", "\033[0m") if sys.stdout.isatty() else hit.snippet
        print("    " + " ".join(text.split()))
    return 0


def _output(path: str | None) -> IO[str]:
    if path in (None, "-"):
        return sys.stdout
    return open(path, "w", encoding="utf-8")


def cmd_export(args: argparse.Namespace) -> int:
    with _open(args) as store:
        total = store.count_conversations()
        out = _output(args.out)
        try:
            with _progress(total, "export", " threads") as bar:
                for record in store.export_records(since=args.since, until=args.until):
                    out.write(json.dumps(record, ensure_ascii=False, separators=(",", ":")) + "\n")
                    bar.update(1)
        finally:
            if out is not sys.stdout:
                out.close()
    return 0


def _read_jsonl(paths: Sequence[str]) -> Iterator[dict[str, Any]]:
    for path in paths:
        if path.endswith(".json"):  # one JSON document: an object, or a list of them
            try:
                doc = json.loads(Path(path).read_text(encoding="utf-8"))
            except (OSError, json.JSONDecodeError) as exc:
                raise ValidationError(path, f"cannot read JSON: {exc}") from None
            yield from doc if isinstance(doc, list) else [doc]
            continue
        fh = sys.stdin if path == "-" else open(path, encoding="utf-8")  # noqa: SIM115
        try:
            for n, line in enumerate(fh, 1):
                if not line.strip():
                    continue
                try:
                    yield json.loads(line)
                except json.JSONDecodeError as exc:
                    raise ValidationError(f"{path}:{n}", f"not JSON: {exc.msg}") from None
        finally:
            if fh is not sys.stdin:
                fh.close()


def cmd_import(args: argparse.Namespace) -> int:
    from .integrations.zen import import_thread_context

    contexts = context_turns = 0
    with _open(args) as store, _progress(None, "import", " threads") as bar:

        def records() -> Iterator[dict[str, Any]]:
            nonlocal contexts, context_turns
            for record in _read_jsonl(args.files):
                bar.update(1)
                if isinstance(record, dict) and "format" not in record and "thread_id" in record and "turns" in record:
                    context_turns += import_thread_context(store, record)  # the MCP server's own JSON
                    contexts += 1
                else:
                    yield record

        result = store.import_records(records())
    print(
        f"Imported {result.conversations:,} threads ({result.conversations_skipped:,} already present), "
        f"{result.messages:,} messages ({result.messages_skipped:,} already present), {result.files:,} file uploads."
        + (f" And {contexts:,} ThreadContexts with {context_turns:,} new turns." if contexts else "")
    )
    return 0


def cmd_reprice(args: argparse.Namespace) -> int:
    from .pricing import load_price_file

    with _open(args) as store:
        if args.prices:
            added = store.add_prices(load_price_file(args.prices))
            print(f"Loaded {added} price rows from {args.prices}.", file=sys.stderr)
        result = store.reprice(since=args.since, until=args.until, model=args.model)
    print(
        f"Checked {result.messages_checked:,} messages, changed {result.messages_changed:,}. "
        f"Cost ${result.cost_before:,.4f} -> ${result.cost_after:,.4f}; "
        f"unpriced {result.unpriced_before:,} -> {result.unpriced_after:,}."
    )
    return 0


def cmd_report(args: argparse.Namespace) -> int:
    from . import report

    started = time.perf_counter()
    if args.timeout < 1:
        raise ValidationError("--timeout", f"must be at least 1 second, got {args.timeout}")
    # Open (and close) the store here first: a wrong URL fails fast, before a kernel starts.
    with open_store(args.url, read_only=True) as store:
        data = report.build(store, since=args.since, until=args.until, top=args.top)
    if args.format == "csv":
        out = Path(args.out or "report")
        paths = report.write_csv(data, out)
        for path in paths:
            print(path)
        print(
            f"Wrote {len(paths)} tables for {data.period_label} to {out}/ in {time.perf_counter() - started:.1f} s",
            file=sys.stderr,
        )
        return 0
    out = Path(args.out or "report.html")
    nb = report.load_notebook(
        args.notebook or report.NOTEBOOK, url=args.url, since=args.since, until=args.until, top=args.top
    )
    with _progress(report.code_cells(nb), "report", " cells") as bar:
        report.execute_notebook(nb, timeout=args.timeout, progress=bar.update)
    page = report.export_html(nb, title=f"Cost and usage report, {data.period_label}")
    report.write_html(page, out)
    print(out)
    print(
        f"Wrote {out} ({size(len(page.encode()))}, {len(report.CHARTS)} charts) for {data.period_label} "
        f"in {time.perf_counter() - started:.1f} s",
        file=sys.stderr,
    )
    return 0


def cmd_prune(args: argparse.Namespace) -> int:
    with _open(args) as store:
        result = store.prune(older_than=args.older_than, dry_run=args.dry_run)
    verb = "Would delete" if result.dry_run else "Deleted"
    print(
        f"{verb} {result.conversations:,} threads last active before {result.cutoff:%Y-%m-%d %H:%M} UTC "
        f"with {result.messages:,} messages, and {result.files:,} files no remaining thread uses "
        f"({result.uploads:,} uploads, {size(result.bytes)})."
    )
    if result.dry_run:
        print("Dry run: nothing was changed.", file=sys.stderr)
    return 0


def cmd_whatif(args: argparse.Namespace) -> int:
    from .whatif import whatif

    with open_store(args.url, read_only=True) as store:
        result = whatif(
            store,
            args.model,
            continuation_id=args.thread,
            since=args.since,
            until=args.until,
            tool_name=args.tool,
            source_model=args.used_model,
            provider=args.provider,
        )
    if args.json:
        print(json.dumps(result.to_dict(), indent=2))
        return 0
    cost = result.whatif_cost_usd
    label = f"on {result.model}"
    width = max(len(label), len("actual")) + 2
    print(f"{result.scope}: {result.messages:,} messages, {result.usage.total:,} tokens")
    print(f"  {'actual':<{width}}${result.actual_cost_usd:,.4f}")
    if cost is None:
        print(f"  {label:<{width}}no price in force on any day")
    else:
        diff = result.difference_usd or 0.0
        ratio = f" ({cost / result.actual_cost_usd:.2f}x)" if result.actual_cost_usd else ""
        print(f"  {label:<{width}}${cost:,.4f}{ratio}, {'+' if diff >= 0 else '-'}${abs(diff):,.4f}")
    for note in result.notes:
        print(f"  note: {note}")
    print("Nothing was written: stored costs are unchanged.", file=sys.stderr)
    return 0


def cmd_redact(args: argparse.Namespace) -> int:
    selector = {
        "continuation_id": args.thread,
        "user_id": args.user,
        "older_than": args.older_than,
        "query": args.query,
    }
    with _open(args) as store:
        chosen = {k: val for k, val in selector.items() if val is not None}
        preview = store.redact(**chosen, dry_run=True)
        what = (
            f"{preview.conversations:,} threads ({preview.messages:,} messages), {preview.uploads:,} uploads, "
            f"and the bytes of {preview.files:,} stored files ({size(preview.bytes)})"
        )
        if args.dry_run:
            print(f"Would erase the text of {what}; tokens, costs, models, tools and times stay.")
            if args.query is not None and preview.conversations >= store.REDACT_SEARCH_PAGE:
                print(f"(at least: the first {store.REDACT_SEARCH_PAGE} matches were counted)", file=sys.stderr)
            print("Dry run: nothing was changed.", file=sys.stderr)
            return 0
        if not args.yes:
            if not sys.stdin.isatty():
                raise ValidationError("--yes", f"redact would erase the text of {what}: pass --yes to confirm")
            answer = input(f"Erase the text of {what}? This cannot be undone. [y/N] ")
            if answer.strip().lower() not in ("y", "yes"):
                print("Nothing was changed.", file=sys.stderr)
                return 1
        result = store.redact(**chosen)
    print(
        f"Erased the text of {result.conversations:,} threads ({result.messages:,} messages) and "
        f"{result.uploads:,} uploads; deleted the bytes of {result.files:,} stored files ({size(result.bytes)}). "
        "Tokens, costs, models, tools and times are kept."
    )
    return 0


def cmd_import_files(args: argparse.Namespace) -> int:
    from .cutover import _walk, import_folder

    folder = Path(args.folder)
    total = sum(1 for _ in _walk(folder)) if folder.is_dir() else 0
    with _open(args) as store, _progress(total, "files", " files") as bar:
        r = import_folder(store, folder, tags=tuple(args.tag or ()), session_id=args.session_id, progress=bar.update)
    for rel, why in r.refusals:
        print(f"rejected {rel}: {why}", file=sys.stderr)
    print(
        f"new {r.new:,} ({size(r.new_bytes)}), deduplicated {r.deduplicated:,} ({size(r.deduplicated_bytes)}), "
        f"skipped {r.skipped:,} ({size(r.skipped_bytes)}), rejected {r.rejected:,} ({size(r.rejected_bytes)})"
    )
    return 1 if r.rejected and not (r.new or r.deduplicated or r.skipped) else 0


def cmd_recover(args: argparse.Namespace) -> int:
    from .backends.sqlite.recover import recover_sqlite

    url = resolve_url(args.url)
    if "://" in url and not url.startswith(("sqlite://", "file://")):
        raise PersistenceError(
            f"recover reads a SQLite file; {redact_url(url)} is not one (Postgres has its own backups)"
        )
    source = Path(sqlite_url_path(url[len("file://") :] if url.startswith("file://") else url)[0]).expanduser()
    output = Path(args.output) if args.output else source.with_name(f"{source.stem}-recovered{source.suffix or '.db'}")
    print(f"Reading {source} (left untouched) into {output} …", file=sys.stderr)
    r = recover_sqlite(source, output, method=args.method)
    how = "the sqlite3 shell's .recover" if r.method == "shell" else "a table-by-table copy of what is readable"
    print(f"Recovered with {how} into {r.output}:")
    for table, n in r.rows.items():
        skipped = r.unreadable.get(table)
        print(f"  {table:<20} {n:>10,} rows" + (f"  ({skipped} unreadable stretch(es) skipped)" if skipped else ""))
    if r.stand_in_threads:
        print(f"  {r.stand_in_threads:,} thread(s) lost their record; their messages are kept under 'recovered-<id>'")
    for table, n in r.dropped.items():
        print(f"  dropped {n:,} {table} row(s) that pointed at a lost file")
    if r.lost_and_found:
        print(f"  {r.lost_and_found:,} row(s) could not be placed in any table and were left out")
    for note in r.notes:
        print(f"  note: {note}", file=sys.stderr)
    print(f"Totals, daily rollups and the search index were rebuilt; quick_check: {r.quick_check}")
    if not r.rows.get("conversations") and not r.rows.get("messages"):
        print(f"Nothing could be read from {source}: {r.output} holds no threads.", file=sys.stderr)
        return 1
    print(
        f"Next: check it (python -m persistence doctor --url sqlite:///{r.output}), then move the damaged "
        f"{source.name} (and its -wal/-shm files) aside and put {r.output.name} in its place. "
        f"File bytes stay in {source.stem}-files/."
    )
    return 0 if r.quick_check == "ok" else 1


def cmd_copy(args: argparse.Namespace) -> int:
    from .cutover import copy_store, verify_stores

    with open_store(args.source) as source, open_store(args.target) as target:
        bars: dict[str, tqdm] = {}
        totals = {"threads": source.count_conversations(), "uploads": int(source.storage_usage(())["uploads"].iloc[0])}

        def progress(kind: str, n: int) -> None:
            if kind not in bars:
                bars[kind] = _progress(totals.get(kind), kind, f" {kind}")
            bars[kind].update(n)

        try:
            r = copy_store(source, target, progress=progress)
        finally:
            for bar in bars.values():
                bar.close()
        print(
            f"Copied {r.conversations:,} threads ({r.conversations_skipped:,} already there), {r.messages:,} messages "
            f"({r.messages_skipped:,} already there), {r.uploads:,} uploads ({r.uploads_skipped:,} already there), "
            f"{r.objects_copied:,} stored files ({size(r.bytes_copied)}), {r.provider_files:,} provider file ids, "
            f"{r.prices:,} prices: {source.url} -> {target.url}"
        )
        if not args.verify:
            return 0
        problems = verify_stores(source, target)
    for problem in problems:
        print(f"DIFFERENCE: {problem}")
    print(
        "Verified: the target holds everything the source does." if not problems else f"{len(problems)} difference(s)."
    )
    return 1 if problems else 0


def _alert_lines(anomalies: Sequence[Anomaly], budgets: Sequence[BudgetStatus]) -> list[str]:
    lines = [f"  {a.day.isoformat()}  {a.kind:<5}  {a.reason}" for a in anomalies]
    lines += [f"  budget {s.state.upper():<7}  {s.reason}" for s in budgets if s.state != "ok"]
    return lines


def cmd_alerts(args: argparse.Namespace) -> int:
    """Anomalies and budgets that need attention; exit 1 when there is any (for cron and CI)."""
    with open_store(args.url, read_only=True) as store:
        anomalies = store.anomalies(since=args.since, until=args.until, min_cost_usd=args.min_cost)
        budgets = store.budget_status()
    flagged = bool(anomalies) or any(s.state != "ok" for s in budgets)
    if args.json:
        print(
            json.dumps(
                {
                    "flagged": flagged,
                    "anomalies": [a.as_dict() for a in anomalies],
                    "budgets": [s.as_dict() for s in budgets],
                },
                indent=2,
            )
        )
        return 1 if flagged else 0
    if not flagged:
        print(
            f"Nothing unusual in {store.url}"
            + (f", and all {len(budgets)} budget(s) are on track." if budgets else " (no budgets set).")
        )
        return 0
    watch = sum(s.state != "ok" for s in budgets)
    print(f"{len(anomalies)} alert(s), {watch} budget(s) to watch in {store.url}:")
    for line in _alert_lines(anomalies, budgets):
        print(line)
    return 1


def cmd_budget(args: argparse.Namespace) -> int:
    scope = {"model": args.model, "provider": args.provider, "tool_name": args.tool, "tag": args.tag}
    with open_store(args.url, read_only=args.action in ("list", "status")) as store:
        if args.action == "set":
            if args.value is None:
                raise ValidationError("limit_usd", "give the limit in USD: budget set 50 --period month")
            try:
                limit = float(args.value)
            except ValueError:
                raise ValidationError("limit_usd", f"{args.value!r} is not a number of USD") from None
            b = store.set_budget(limit, period=args.period, **scope)
            print(f"Kept: {b.describe()} (id {b.id})")
            return 0
        if args.action == "delete":
            if args.value is None:
                raise ValidationError("budget_id", "give the id of the budget to delete (budget list shows them)")
            if not store.delete_budget(args.value):
                print(f"No budget with id {args.value}.", file=sys.stderr)
                return 1
            print(f"Deleted budget {args.value}.")
            return 0
        if args.action == "list":
            budgets = store.list_budgets()
            if args.json:
                print(json.dumps([b.as_dict() for b in budgets], indent=2))
            for b in budgets if not args.json else ():
                print(f"  {b.id}  {b.describe()}")
            if not budgets and not args.json:
                print("No budgets. Set one: python -m persistence budget set 50 --period month [--model M]")
            return 0
        states = store.budget_status(
            model=args.model, provider=args.provider, tool_name=args.tool, tags=[args.tag] if args.tag else ()
        )
    if args.json:
        print(json.dumps([s.as_dict() for s in states], indent=2))
    else:
        for s in states:
            print(f"  {s.state.upper():<7}  {s.reason}")
        if not states:
            print("No budget applies.")
    return 1 if any(s.state == "over" for s in states) else 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="python -m persistence", description=__doc__.split("\n")[0])
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    def add(name: str, func: Callable[[argparse.Namespace], int], help_text: str) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text, description=help_text)
        p.add_argument("--url", help="store URL (default: PERSISTENCE_URL, else Supabase, else the embedded file)")
        p.set_defaults(func=func)
        return p

    add("migrate", cmd_migrate, "create or upgrade the schema")
    add("reindex", cmd_reindex, "recompute the search index text of every message (Postgres)")

    p = add("demo", cmd_demo, "write realistic synthetic threads")
    p.add_argument("--conversations", type=int, default=200, help="threads to write (default 200)")
    p.add_argument("--seed", type=int, default=0, help="random seed: same seed and end, same data")
    p.add_argument("--end", type=date.fromisoformat, help="last day of the data (default today, UTC)")
    p.add_argument("--weeks", type=int, default=8, help="weeks of history (default 8)")
    p.add_argument("--no-files", action="store_true", help="skip file uploads")

    p = add("doctor", cmd_doctor, "check the store and show its size and health")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    p.add_argument(
        "--quick",
        action="store_true",
        help="counts and the last full check's findings only (what the app shows), without reading every page",
    )

    p = add("search", cmd_search, "full-text search over messages")
    p.add_argument("query", help='words, "exact phrase", a OR b, -word, prefix*')
    p.add_argument("--limit", type=int, default=20)
    _period(p)
    p.add_argument("--model")
    p.add_argument("--role", choices=("user", "assistant", "system", "tool"))
    p.add_argument("--thread", help="only this continuation id")
    p.add_argument("--order", choices=("rank", "recent"), default="rank")
    p.add_argument("--json", action="store_true", help="one JSON object per hit")

    p = add("export", cmd_export, "write threads as JSONL (one thread per line)")
    p.add_argument("--out", "-o", help="file to write (default stdout)")
    _period(p)

    p = add(
        "import", cmd_import, "read threads from export's JSONL or the MCP server's ThreadContext JSON (idempotent)"
    )
    p.add_argument(
        "files", nargs="+", help="JSONL files (one record or ThreadContext per line), .json files, - for stdin"
    )

    p = add("import-files", cmd_import_files, "store a folder of existing files (hash, dedup, sniffed type)")
    p.add_argument("folder", help="the folder to walk (e.g. the server's old local file directory)")
    p.add_argument("--tag", action="append", help="tag every file (repeatable)")
    p.add_argument("--session-id", help="record the uploads under this session")

    p = sub.add_parser(
        "copy", help="copy one store into another, then --verify", description="copy one store into another"
    )
    p.add_argument("--from", dest="source", required=True, help="the store to copy from")
    p.add_argument("--to", dest="target", required=True, help="the store to copy into (e.g. supabase)")
    p.add_argument("--verify", action="store_true", help="then compare counts, message hashes and file hashes")
    p.set_defaults(func=cmd_copy)

    p = add("reprice", cmd_reprice, "recompute stored costs from the price table")
    p.add_argument("--prices", type=Path, help="a TOML price file to add first (format of data/model_prices.toml)")
    p.add_argument("--model", help="only this model")
    _period(p)

    p = add("report", cmd_report, "write the cost and usage report (HTML from the notebook, or CSV tables)")
    p.add_argument(
        "--out", "-o", help="HTML file (default report.html), or with --format csv a folder (default report/)"
    )
    p.add_argument(
        "--format", choices=("html", "csv"), default="html", help="html (default) or csv: one file per table"
    )
    _period(p)
    p.add_argument("--top", type=int, default=20, help="costliest threads to list (default 20)")
    p.add_argument("--notebook", type=Path, default=None, help="the report notebook (default: the one in the package)")
    p.add_argument("--timeout", type=int, default=600, help="seconds one notebook cell may run (default 600)")

    p = add("prune", cmd_prune, "delete threads inactive since a cutoff, and the files only they used")
    p.add_argument(
        "--older-than",
        required=True,
        type=parse_age,
        metavar="AGE|DATE",
        help="an age (90d, 12w, 36h) or a date (2025-01-01): threads last active before it go",
    )
    p.add_argument("--dry-run", action="store_true", help="count what would be deleted, change nothing")

    p = add("whatif", cmd_whatif, "what a thread or a period would have cost on another model (nothing is written)")
    p.add_argument("--model", required=True, help="the model to price the stored tokens with")
    p.add_argument("--thread", help="one thread (continuation id); otherwise the period from the daily rollup")
    _period(p)
    p.add_argument("--tool", help="only this tool")
    p.add_argument("--used-model", help="only the tokens of this model (the one actually used)")
    p.add_argument("--provider", help="only this provider")
    p.add_argument("--json", action="store_true", help="machine-readable output, with each day")

    p = add("redact", cmd_redact, "erase the text of threads and files, keep their tokens, costs and times")
    which = p.add_mutually_exclusive_group(required=True)
    which.add_argument("--thread", help="one thread (continuation id)")
    which.add_argument("--user", help="every thread and upload of this user id")
    which.add_argument(
        "--older-than", type=parse_age, metavar="AGE|DATE", help="threads last active before it (90d, 2025-01-01)"
    )
    which.add_argument("--query", help="every thread with a message matching this search")
    p.add_argument("--dry-run", action="store_true", help="count what would be erased, change nothing")
    p.add_argument("--yes", action="store_true", help="do not ask for confirmation")

    p = add("recover", cmd_recover, "copy what is readable from a damaged SQLite store into a new file")
    p.add_argument("--output", "-o", help="the new database file (default: NAME-recovered.db beside the damaged one)")
    p.add_argument(
        "--method",
        choices=("auto", "shell", "copy"),
        default="auto",
        help="shell: the sqlite3 shell's .recover (keeps the most); copy: table by table in Python; "
        "auto (default): shell when installed",
    )

    p = add("alerts", cmd_alerts, "unusual days (against a rolling baseline) and budgets to watch; exit 1 if any")
    p.add_argument("--since", type=parse_when, help="from (YYYY-MM-DD, ISO time, or 30d ago; default 7d ago)")
    p.add_argument("--until", type=parse_when, help="until, exclusive (default now)")
    p.add_argument("--min-cost", type=float, default=1.0, help="smaller changes in USD are never flagged (default 1)")
    p.add_argument("--json", action="store_true", help="machine-readable output")

    p = add("budget", cmd_budget, "set, list, delete budgets, or show their status (exit 1 when one is over)")
    p.add_argument("action", choices=("set", "list", "delete", "status"))
    p.add_argument("value", nargs="?", help="set: the limit in USD; delete: the budget's id")
    p.add_argument("--period", choices=("day", "week", "month"), default="month", help="set: default month")
    p.add_argument("--model", help="a budget on (or the status of a call to) this model")
    p.add_argument("--provider")
    p.add_argument("--tool", help="tool name")
    p.add_argument("--tag", help="threads carrying this tag")
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    try:
        return int(args.func(args))
    except PersistenceError as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 2
    except BrokenPipeError:  # e.g. `export | head`
        return 0
    except KeyboardInterrupt:
        print("interrupted", file=sys.stderr)
        return 130
