"""Tenancy on Postgres and Supabase (issue 11, findings 1, 2, 3 and 5).

Users A and B sign in (the real supabase client with their tokens, through the stand-in
gateway, or a connection acting as PostgREST does) and try what the issue found working:
writing into another's thread, reaching another's file through a row of their own, forging
tokens, costs and totals. Then, as the server: for every user, thread totals and the daily
rollup are the sums over their messages, priced by the table (the package's own pricing,
``PriceTable``, computes the expected costs). Last, the migration that brings these keys to a
database that has data: a plan-era thread takes the owner of the files it used, and rows that
already cross owners stop it, untouched. The same guarantees in SQL, one assertion each:
supabase/tests/20_ownership_and_totals.sql (pg_prove).
"""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from decimal import Decimal
from pathlib import Path
from typing import Any

import pytest

import persistence
from persistence import StoreOpenError
from persistence.backends.postgres.schema import (
    CLI_HISTORY_SETUP,
    CLI_INSERT_VERSION,
    migrate,
    migration_files,
    split_statements,
    standin_sql,
)
from persistence.models import Usage

psycopg = pytest.importorskip("psycopg")

from conftest import create_database, drop_database  # noqa: E402

pytestmark = pytest.mark.postgres

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
OWNERSHIP_VERSION = "20261130070000"


@contextmanager
def as_role(url: str, role: str, sub: str | None = None) -> Iterator[Any]:
    """A connection acting as PostgREST does for a request with this JWT."""
    claims = {"role": role} | ({"sub": sub} if sub else {})
    with psycopg.connect(url, autocommit=True) as conn:
        conn.execute(
            "select set_config('role', %s, false), set_config('request.jwt.claims', %s, false)",
            (role, json.dumps(claims)),
        )
        yield conn


@contextmanager
def signed_in(standin: Any, sub: str) -> Iterator[Any]:
    client, http = standin.signed_in(sub)
    try:
        yield client
    finally:
        http.close()


def rpc(client: Any, fn: str, **args: Any) -> Any:
    return client.rpc(fn, args).execute().data


def rpc_error(client: Any, fn: str, **args: Any) -> str:
    from postgrest.exceptions import APIError

    with pytest.raises(APIError) as info:
        client.rpc(fn, args).execute()
    return str(info.value.code)


@pytest.fixture
def tenants(pg_url: str, standin: Any, tmp_path: Path) -> Iterator[tuple[persistence.Store, str]]:
    """B owns a thread with a message and a file (the server wrote them); A owns an empty thread."""
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")  # syncs the price table too
    store.start_conversation("thread-b", user_id=B)
    store.record_message("thread-b", "user", "B's secret", model="glm-4.6", usage={"prompt_tokens": 10})
    store.put_file(b"B's bytes", filename="b.txt", continuation_id="thread-b", user_id=B)
    store.start_conversation("thread-a", user_id=A)
    try:
        yield store, pg_url
    finally:
        store.close()


def test_a_user_cannot_write_into_anothers_thread(tenants: tuple[persistence.Store, str], standin: Any) -> None:
    store, url = tenants
    with signed_in(standin, A) as a:
        assert rpc_error(a, "record_message", p_continuation_id="thread-b", p_id=str(uuid.uuid4()),
                         p_role="user", p_content="injected") == "PT409"  # fmt: skip
        # Taken, and nothing more: reading or changing it answers as for a thread that is not there.
        assert rpc_error(a, "get_messages", p_continuation_id="thread-b") == "PT404"
        assert rpc_error(a, "get_messages", p_continuation_id="no-such-thread") == "PT404"
    b_id = store.get_conversation("thread-b").id  # type: ignore[union-attr]
    with as_role(url, "authenticated", A) as conn, pytest.raises(psycopg.errors.InsufficientPrivilege):
        conn.execute(
            "insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at) "
            "values (%s, %s, 2, 'user', 'injected', %s, now())",
            (str(uuid.uuid4()), b_id, A),
        )
    # Not even the server can file a message of A's (or an ownerless one) under B's thread.
    with as_role(url, "service_role") as conn:
        for owner in (A, None):
            with pytest.raises(psycopg.errors.ForeignKeyViolation):
                conn.execute(
                    "insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at) "
                    "values (%s, %s, 2, 'user', 'injected', %s, now())",
                    (str(uuid.uuid4()), b_id, owner),
                )
    b = store.get_conversation("thread-b")
    assert b is not None and [m.content for m in b.messages] == ["B's secret"]
    assert store.record_message("thread-b", "assistant", "B goes on").seq == 2


def test_a_user_cannot_reach_anothers_file(tenants: tuple[persistence.Store, str], standin: Any) -> None:
    store, url = tenants
    b_file = store.get_conversation("thread-b").files[0]  # type: ignore[union-attr]
    a_thread = store.get_conversation("thread-a").id  # type: ignore[union-attr]
    upload = str(uuid.uuid4())
    with as_role(url, "authenticated", A) as conn:
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, created_at) "
                "values (%s, %s, 'mine.txt', 'text/plain', 9, %s, now())",
                (upload, b_file.id, A),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "insert into public.conversation_files (conversation_id, file_id, user_id, created_at) "
                "values (%s, %s, %s, now())",
                (a_thread, b_file.id, A),
            )
        with pytest.raises(psycopg.errors.ForeignKeyViolation):
            conn.execute(
                "insert into public.provider_files (id, file_id, provider, provider_file_id, user_id, created_at) "
                "values (%s, %s, 'kimi', 'x', %s, now())",
                (str(uuid.uuid4()), b_file.id, A),
            )
    with signed_in(standin, A) as a:
        assert rpc_error(a, "link_file", p_continuation_id="thread-a", p_file_id=b_file.id) == "PT404"
    # The server, asked for "A's upload", has nothing to give.
    assert store.get_file(upload) is None
    with pytest.raises(persistence.NotFoundError):
        store.open_file(upload)
    assert [f.filename for f in store.get_conversation("thread-a").files] == []  # type: ignore[union-attr]


def test_usage_and_cost_cannot_be_forged(tenants: tuple[persistence.Store, str], standin: Any) -> None:
    store, url = tenants
    with signed_in(standin, A) as a:
        assert rpc_error(a, "record_message", p_continuation_id="thread-a", p_id=str(uuid.uuid4()), p_role="user",
                         p_content="x", p_input_tokens=-1_000_000_000) == "PT400"  # fmt: skip
        assert rpc_error(a, "record_message", p_continuation_id="thread-a", p_id=str(uuid.uuid4()), p_role="user",
                         p_content="x", p_output_tokens=10**10 + 1) == "PT400"  # fmt: skip
        assert rpc_error(a, "record_message", p_continuation_id="thread-a", p_id=str(uuid.uuid4()), p_role="boss",
                         p_content="x") == "PT400"  # fmt: skip
        m = rpc(a, "record_message", p_continuation_id="thread-a", p_id=str(uuid.uuid4()), p_role="assistant",
                p_content="forged", p_model="glm-4.6", p_input_tokens=1000, p_output_tokens=100,
                p_cost=-99999, p_price_id="forged", p_unpriced=True)  # fmt: skip
    price = store.prices.lookup("glm-4.6", datetime.now(UTC))
    assert price is not None
    assert m["cost"] == pytest.approx(price.cost(Usage(1000, 0, 0, 100, 0))) and m["price_id"] == price.id
    with as_role(url, "authenticated", A) as conn:
        for sql in (
            "update public.usage_daily set cost_usd = -999999999",
            "insert into public.usage_daily (day, user_id, cost_usd) values (current_date, %s, -5)",
            "update public.conversations set total_cost = -999999999, message_count = 0",
            "update public.messages set cost = 0, price_id = null, seq = 99",
            "delete from public.conversations",
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(sql, (A,) if "%s" in sql else None)
    total = float(store.usage(())["cost_usd"].sum())
    assert 0 <= total < 1


def test_totals_are_the_sums_over_messages_priced_by_the_table(
    tenants: tuple[persistence.Store, str], standin: Any
) -> None:
    """Whatever a signed-in user calls, every thread's totals and every user's rollup are
    the sums over their messages, and each of their messages costs what the table says."""
    store, url = tenants
    now = datetime.now(UTC).isoformat()
    with signed_in(standin, A) as a, signed_in(standin, B) as b:
        for client, cid in ((a, "thread-a"), (b, "thread-b")):
            for model, usage, cost in (
                ("glm-4.6", (1000, 200, 0, 50, 10), 123),
                ("gpt-4o", (300, 0, 0, 30, 0), -5),
                ("gemini-2.5-pro", (250_000, 0, 0, 1000, 500), 0),  # over its long-context tier
                ("no-such-model", (10, 0, 0, 0, 0), 1),
            ):
                i, ci, cw, o, r = usage
                rpc(client, "record_message", p_continuation_id=cid, p_id=str(uuid.uuid4()), p_role="assistant",
                    p_content=model, p_created_at=now, p_model=model, p_input_tokens=i, p_cached_input_tokens=ci,
                    p_cache_write_tokens=cw, p_output_tokens=o, p_reasoning_tokens=r, p_cost=cost,
                    p_price_id="forged")  # fmt: skip
            item = {"continuation_id": cid, "id": str(uuid.uuid4()), "role": "user", "content": "batch",
                    "created_at": now, "model": "glm-4.6", "input_tokens": 77, "cached_input_tokens": 0,
                    "cache_write_tokens": 0, "output_tokens": 0, "reasoning_tokens": 0, "cost": 9999,
                    "unpriced": False, "files": [], "images": [], "metadata": {}}  # fmt: skip
            rpc(client, "record_messages", p_items=[item])
            rpc(client, "update_conversation", p_continuation_id=cid,
                p_changes={"title": "mine", "total_cost": -1, "message_count": 0})  # fmt: skip
    with psycopg.connect(url) as conn:
        messages = conn.execute(
            "select m.user_id::text, m.model_used, m.created_at, m.input_tokens, m.cached_input_tokens, "
            "m.cache_write_tokens, m.output_tokens, m.reasoning_tokens, m.cost from public.messages m "
            "join public.conversations c on c.id = m.conversation_id where c.continuation_id = 'thread-a' "
            "or (c.continuation_id = 'thread-b' and m.content <> 'B''s secret')"
        ).fetchall()
        assert len(messages) == 10
        for owner, model, created, i, ci, cw, o, r, cost in messages:
            price = store.prices.lookup(model, created)
            want = price.cost(Usage(i, ci, cw, o, r)) if price else None
            assert owner in (A, B)
            assert (cost is None, float(cost or 0)) == (want is None, pytest.approx(want or 0, abs=1e-9)), model
        bad_threads = conn.execute(
            """select c.continuation_id from public.conversations c
               left join lateral (select count(m.id) as n, coalesce(sum(m.tokens), 0) as t,
                   coalesce(sum(m.cost), 0) as cost,
                   count(*) filter (where m.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw')) as u
                   from public.messages m where m.conversation_id = c.id) s on true
               where (c.message_count, c.total_tokens, c.total_cost, c.unpriced_messages)
                   is distinct from (s.n, s.t, s.cost, s.u)"""
        ).fetchall()
        assert bad_threads == []
        rollup = conn.execute(
            "select user_id::text, sum(messages), sum(input_tokens + cached_input_tokens + cache_write_tokens "
            "+ output_tokens + reasoning_tokens), sum(cost_usd), sum(unpriced_messages) from public.usage_daily "
            "group by 1 order by 1"
        ).fetchall()
        sums = conn.execute(
            "select user_id::text, count(*), sum(tokens), coalesce(sum(cost), 0), "
            "count(*) filter (where cost is null and (tokens > 0 or metadata ? 'usage_raw')) "
            "from public.messages group by 1 order by 1"
        ).fetchall()
        assert rollup == sums
        assert all(cost >= 0 for _, _, _, cost, _ in rollup)
    assert store.get_conversation("thread-a").title == "mine"  # type: ignore[union-attr]


def test_anon_cannot_truncate_storage_and_applied_migrations_is_the_servers(pg_url: str) -> None:
    with psycopg.connect(pg_url) as conn:
        for role in ("anon", "authenticated"):
            for table in ("storage.objects", "storage.buckets"):
                assert not conn.execute("select has_table_privilege(%s, %s, 'truncate')", (role, table)).fetchone()[0]
            assert not conn.execute(
                "select has_function_privilege(%s, 'public.applied_migrations()', 'execute')", (role,)
            ).fetchone()[0]


# -- the migration on a database with data -------------------------------------------------------


@pytest.fixture
def before_ownership(pg_server: str) -> Iterator[str]:
    """A database migrated up to, not including, the ownership migration."""
    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            for statement in split_statements(standin_sql()):
                conn.execute(statement)
            for statement in CLI_HISTORY_SETUP:
                conn.execute(statement)
            for m in migration_files():
                if m.version >= OWNERSHIP_VERSION:
                    break
                with conn.transaction():
                    for statement in m.statements:
                        conn.execute(statement)
                    conn.execute(CLI_INSERT_VERSION, (m.version, m.name, m.statements))
        yield url
    finally:
        drop_database(url)


def _call(conn: Any, fn: str, **args: Any) -> Any:
    sql = f"select public.{fn}(" + ", ".join(f"{k} => %({k})s" for k in args) + ")"
    return conn.execute(sql, args).fetchone()[0]


def test_the_migration_gives_an_ownerless_thread_the_owner_of_its_files(before_ownership: str) -> None:
    url = before_ownership
    with psycopg.connect(url, autocommit=True) as conn:
        # What an upgraded plan database holds: a thread without an owner that used A's file.
        _call(conn, "record_message", p_continuation_id="plan-thread", p_id=str(uuid.uuid4()), p_role="assistant",
              p_content="x", p_model="m", p_input_tokens=100, p_cost=Decimal("0.5"))  # fmt: skip
        conn.execute(
            "insert into public.files (id, file_hash, storage_path, filename, mime_type, file_size, user_id, "
            "created_at, updated_at) values (%s, 'ab', 'sess-9/ab.txt', 'a.txt', 'text/plain', 1, %s, now(), now())",
            (str(uuid.uuid4()), A),
        )
        conn.execute(
            "insert into public.conversation_files (conversation_id, file_id, user_id, created_at) "
            "select c.id, f.id, null, now() from public.conversations c, public.files f"
        )
        migrate(conn)
        assert conn.execute("select user_id::text from public.conversations").fetchall() == [(A,)]
        assert conn.execute("select user_id::text from public.messages").fetchall() == [(A,)]
        assert conn.execute("select user_id::text, messages, cost_usd from public.usage_daily").fetchall() == [
            (A, 1, Decimal("0.5"))
        ]


def test_the_migration_refuses_rows_that_cross_owners(before_ownership: str) -> None:
    url = before_ownership
    with psycopg.connect(url, autocommit=True) as conn:
        _call(conn, "start_conversation", p_continuation_id="thread-b", p_user_id=B)
        # What finding 1 left behind: A's message in B's thread.
        forged = str(uuid.uuid4())
        conn.execute(
            "insert into public.messages (id, conversation_id, seq, role, content, user_id, created_at) "
            "select %s, id, 2, 'user', 'injected', %s, now() from public.conversations",
            (forged, A),
        )
        with pytest.raises(StoreOpenError, match=rf"(?s)another owner.s rows.*{forged}.*hint"):
            migrate(conn)
        versions = [r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")]
        assert OWNERSHIP_VERSION not in versions
        assert (
            conn.execute("select count(*) from information_schema.columns where column_name = 'owner_key'").fetchone()[
                0
            ]
            == 0
        )  # rolled back whole
        conn.execute("delete from public.messages where id = %s", (forged,))  # as the hint says
        migrate(conn)
        assert OWNERSHIP_VERSION in [
            r[0] for r in conn.execute("select version from supabase_migrations.schema_migrations")
        ]
