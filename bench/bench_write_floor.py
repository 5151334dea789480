"""Where a single ``record_message`` on Postgres spends its time, against LangChain's
``PostgresChatMessageHistory.add_message``: the floor each layer of the write sets.

    python bench/bench_write_floor.py [--messages 2000] [--rounds 4] [--template pt_bench]

Two scratch copies of the million-message ``pt_bench`` (``create database … template``,
dropped at the end; the template's statistics come along): one as the package migrates it,
one whose ``messages`` table is stripped of what a plain message log does not have (the
search column and its GIN index, the unpriced flag, both foreign keys, the facets trigger,
row level security), keeping its b-tree indexes. The same demo messages are appended to
threads that already exist, interleaved in ``--rounds`` slices (bench/common.py ``race``),
each path once with ``synchronous_commit`` on (the default) and once off (what is left is
CPU, not the commit's flush):

- ``add_message``: LangChain's history into its own table, which holds the same million
  messages (bench_postgres.fill_langchain): one INSERT, one commit.
- the message row alone: a PL/pgSQL function that locks the thread, takes ``max(seq) + 1``
  and inserts the row, no totals, rollup or checks; in the package's table and in the
  stripped one.
- ``record_message`` through the package (checks, price, search text in Python; in the
  database the row, the thread's totals, the daily rollup, the facets).
"""

from __future__ import annotations

import argparse
import sys
import uuid
import warnings
from pathlib import Path
from typing import Any

import psycopg

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "bench"))
sys.path.insert(0, str(ROOT / "tests"))

from bench_postgres import ADMIN_URL, LC_TABLE, ensure_database, fill_langchain  # noqa: E402
from bench_sqlite import _messages_for_ingest  # noqa: E402
from common import race, table  # noqa: E402

import persistence  # noqa: E402

warnings.filterwarnings("ignore", category=DeprecationWarning)

FULL, BARE = "pt_floor", "pt_floor_bare"

# The message row and nothing else: the thread's lock and the next seq, as record_message takes them.
APPEND_ROW = """
create or replace function public.bench_append_row(p_continuation_id text, p_id uuid, p_role text, p_content text,
    p_model text, p_provider text, p_tool_name text, p_input bigint, p_output bigint) returns integer
language plpgsql as $$
declare
    v_conv uuid;
    v_seq integer;
begin
    select id into v_conv from public.conversations where continuation_id = p_continuation_id for update;
    select coalesce(max(seq), 0) + 1 into v_seq from public.messages where conversation_id = v_conv;
    insert into public.messages (id, conversation_id, seq, role, content, model_used, provider, tool_name, tokens,
        input_tokens, output_tokens, created_at)
    values (p_id, v_conv, v_seq, p_role, p_content, p_model, p_provider, p_tool_name, p_input + p_output, p_input,
        p_output, now());
    return v_seq;
end $$;
"""

STRIP = """
alter table public.messages drop column search_tsv;
alter table public.messages drop column unpriced cascade;
alter table public.messages drop constraint messages_conversation_id_fkey;
alter table public.messages drop constraint messages_conversation_owner;
alter table public.messages disable trigger messages_facets;
alter table public.messages disable row level security;
"""


def _copy(template: str, name: str) -> str:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        conn.execute(f'drop database if exists "{name}" with (force)')
        conn.execute(f'create database "{name}" template "{template}"')
    return ADMIN_URL.rsplit("/", 1)[0] + f"/{name}"


def _drop(*names: str) -> None:
    with psycopg.connect(ADMIN_URL, autocommit=True) as conn:
        for name in names:
            conn.execute(f'drop database if exists "{name}" with (force)')


def _tokens(m: dict[str, Any]) -> tuple[int, int]:
    usage = m["usage"] or {}
    return int(usage.get("prompt_tokens", 0)), int(usage.get("completion_tokens", 0))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--messages", type=int, default=2000)
    parser.add_argument("--rounds", type=int, default=4)
    parser.add_argument("--template", default="pt_bench")
    args = parser.parse_args()
    from langchain_core.messages import AIMessage, HumanMessage
    from langchain_postgres import PostgresChatMessageHistory

    template_url = ensure_database(args.template)
    with psycopg.connect(template_url) as conn:
        fill_langchain(conn)  # before the copies, so both have it
        total = conn.execute("select count(*) from messages").fetchone()[0]  # type: ignore[index]
    print(f"Copying {args.template} ({total:,} messages) twice …", file=sys.stderr)
    urls = {FULL: _copy(args.template, FULL), BARE: _copy(args.template, BARE)}
    try:
        messages = _messages_for_ingest(args.messages, seed=991)
        run = uuid.uuid4().hex[:6]
        for m in messages:
            m["continuation_id"] = f"{m['continuation_id']}-{run}"
        threads = sorted({m["continuation_id"] for m in messages})
        for name, url in urls.items():
            with psycopg.connect(url, autocommit=True) as conn:
                if name == BARE:
                    conn.execute(STRIP)
                conn.execute(APPEND_ROW)
                # The threads exist already, on every path: appending is what is measured.
                with conn.cursor() as cur:
                    cur.executemany(
                        "insert into conversations (continuation_id, created_at, updated_at) values (%s, now(), now())",
                        [(t,) for t in threads],
                    )
        sessions = {t: str(uuid.uuid4()) for t in threads}
        contenders: dict[str, Any] = {}
        opened: list[Any] = []
        for commit in ("on", "off"):
            options = "" if commit == "on" else "?options=-c%20synchronous_commit%3Doff"
            lc = psycopg.connect(urls[FULL] + options)
            histories = {t: PostgresChatMessageHistory(LC_TABLE, sessions[t], sync_connection=lc) for t in threads}
            store = persistence.open_store(urls[FULL] + options)
            rows = {n: psycopg.connect(urls[n] + options, autocommit=True) for n in (FULL, BARE)}
            opened += [lc, store, *rows.values()]

            def add_message(batch: list[dict[str, Any]], histories: dict[str, Any] = histories) -> None:
                for m in batch:
                    kind = HumanMessage if m["role"] == "user" else AIMessage
                    histories[m["continuation_id"]].add_message(kind(m["content"]))

            def row_alone(conn: psycopg.Connection[Any]) -> Any:
                def write(batch: list[dict[str, Any]]) -> None:
                    for m in batch:
                        conn.execute(
                            "select public.bench_append_row(%s, %s, %s, %s, %s, %s, %s, %s, %s)",
                            (
                                m["continuation_id"],
                                uuid.uuid4(),
                                m["role"],
                                m["content"],
                                m["model"],
                                m["provider"],
                                m["tool_name"],
                                *_tokens(m),
                            ),
                        )

                return write

            def record_message(batch: list[dict[str, Any]], store: persistence.Store = store) -> None:
                for m in batch:
                    store.record_message(**m)  # the items are its arguments

            contenders[f"add_message (LangChain), commit {commit}"] = add_message
            contenders[f"message row alone, stripped table, commit {commit}"] = row_alone(rows[BARE])
            contenders[f"message row alone, package's table, commit {commit}"] = row_alone(rows[FULL])
            contenders[f"record_message, commit {commit}"] = record_message
        elapsed, written = race(contenders, messages, args.rounds)
        for thing in opened:
            thing.close()
        out = []
        for commit in ("on", "off"):
            base = elapsed[f"add_message (LangChain), commit {commit}"]
            for label, seconds in elapsed.items():
                if label.endswith(f"commit {commit}"):
                    out.append(
                        [label, f"{seconds / written * 1000:.3f}", f"{base / seconds:.2f}x", f"{seconds / base:.2f}"]
                    )
        table(
            f"One message per call, into {total:,} messages, {written:,} messages per path "
            f"({args.rounds} interleaved rounds)",
            ["path", "ms per message", "rate vs add_message", "time vs add_message"],
            out,
        )
    finally:
        _drop(FULL, BARE)


if __name__ == "__main__":
    main()
