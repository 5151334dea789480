"""Migrations on the real Postgres: a fresh database, a second run, the Supabase CLI's history
table, the stand-in for Supabase's built-ins, a newer schema, an in-place upgrade of a database
that ran the plan's migrations, and the usage schemas SQLite and Postgres expose."""

from __future__ import annotations

import subprocess
import sys
import threading
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest

import persistence
from persistence import SchemaVersionError, StoreOpenError
from persistence.backends.postgres.schema import migrate, migration_files, needs_standin, split_statements, standin_sql

psycopg = pytest.importorskip("psycopg")

from conftest import create_database, drop_database  # noqa: E402

pytestmark = pytest.mark.postgres

# The schema the plan's two original migrations created, kept with the tests.
PLAN_SCHEMA = Path(__file__).resolve().parent / "fixtures" / "plan_schema.sql"
T0 = datetime(2026, 4, 6, 9, 0, tzinfo=UTC)


@pytest.fixture
def fresh_db(pg_server: str) -> Iterator[str]:
    url = create_database()
    yield url
    drop_database(url)


def catalog(url: str) -> list[tuple[Any, ...]]:
    """What the schema is made of: columns, indexes, functions, policies, grants."""
    with psycopg.connect(url) as conn:
        return conn.execute(
            """select 'column', table_name || '.' || column_name || ' ' || data_type || coalesce(' ' || generation_expression, '')
               from information_schema.columns where table_schema in ('public', 'storage', 'auth')
               union all select 'index', indexdef from pg_indexes where schemaname = 'public'
               union all select 'function', p.oid::regprocedure::text || md5(p.prosrc) || coalesce(p.proacl::text, '')
               from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'auth', 'storage')
               union all select 'policy', schemaname || '.' || tablename || ' ' || policyname || ' ' || cmd
               from pg_policies
               union all select 'grant', table_name || ' ' || grantee || ' ' || privilege_type
               from information_schema.role_table_grants where table_schema = 'public'
               order by 1, 2"""
        ).fetchall()


def test_an_empty_database_is_migrated_and_a_second_run_changes_nothing(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert needs_standin(conn)
        applied = migrate(conn)
        assert [m.label for m in applied] == [m.label for m in migration_files()]
        assert not needs_standin(conn)
    before = catalog(fresh_db)
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        assert migrate(conn) == []
    assert catalog(fresh_db) == before
    tables = {r[1].split(".")[0] for r in before if r[0] == "column"}
    assert {"conversations", "messages", "files", "file_uploads", "conversation_files", "provider_files",
            "model_prices", "usage_daily", "store_meta", "buckets", "objects"} <= tables  # fmt: skip


def test_history_is_recorded_the_way_the_supabase_cli_records_it(fresh_db: str) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
        columns = conn.execute(
            "select column_name, data_type from information_schema.columns "
            "where table_schema = 'supabase_migrations' and table_name = 'schema_migrations' order by ordinal_position"
        ).fetchall()
        rows = conn.execute("select version, name, statements from supabase_migrations.schema_migrations").fetchall()
    assert columns == [("version", "text"), ("statements", "ARRAY"), ("name", "text")]
    files = {m.version: m for m in migration_files()}
    assert {v for v, _, _ in rows} == set(files)
    for version, name, statements in rows:
        migration = files[version]
        assert name == migration.name and statements == split_statements(migration.sql)
    # The repository's supabase/migrations is the package's folder, for `supabase db push`.
    linked = Path(__file__).resolve().parents[1] / "supabase" / "migrations"
    assert sorted(p.name for p in linked.glob("*.sql")) == sorted(f"{m.label}.sql" for m in migration_files())


def test_the_cli_splitter_matches_the_supabase_cli_on_the_hard_cases() -> None:
    script = (
        "-- header; with a semicolon\ncreate table t (a text default ';');\n"
        "create function f() returns text language sql as $body$ select 'x;y' $body$;\n"
        "/* block; /* nested; */ still comment */ select 1;\n"
        "create function g() returns int begin atomic select 1; select 2; end;\n"
        "select $$a;b$$, \"semi;colon\", 'it''s';\n\n"
    )
    assert split_statements(script) == [
        "-- header; with a semicolon\ncreate table t (a text default ';')",
        "create function f() returns text language sql as $body$ select 'x;y' $body$",
        "/* block; /* nested; */ still comment */ select 1",
        "create function g() returns int begin atomic select 1; select 2; end",
        "select $$a;b$$, \"semi;colon\", 'it''s'",
    ]


def test_the_standin_is_applied_only_where_supabase_builtins_are_missing(fresh_db: str) -> None:
    """A database that has auth.uid() and the roles (as Supabase has) gets only the migrations;
    without a storage schema the bucket step is skipped, not an error."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "create schema auth; create function auth.uid() returns uuid language sql stable as "
            "$$ select (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')::uuid $$"
        )
        for role in ("anon", "authenticated", "service_role"):
            exists = conn.execute("select 1 from pg_roles where rolname = %s", (role,)).fetchone()
            assert exists, "the session's stand-in created the cluster-wide roles"
        assert not needs_standin(conn)
        migrate(conn)
        assert conn.execute("select to_regclass('storage.objects')").fetchone()[0] is None
        assert conn.execute("select to_regprocedure('auth.role()')").fetchone()[0] is None  # stand-in not run
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(
            migration_files()
        )


def test_concurrent_migrations_apply_each_file_once(fresh_db: str) -> None:
    errors: list[BaseException] = []

    def run() -> None:
        try:
            with psycopg.connect(fresh_db, autocommit=True) as conn:
                migrate(conn)
        except BaseException as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=run) for _ in range(3)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert not errors
    with psycopg.connect(fresh_db) as conn:
        assert conn.execute("select count(*) from supabase_migrations.schema_migrations").fetchone()[0] == len(
            migration_files()
        )


def test_a_newer_schema_is_refused_and_other_migrations_are_left_alone(fresh_db: str, tmp_path: Path) -> None:
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        migrate(conn)
        conn.execute(
            "insert into supabase_migrations.schema_migrations (version, name) values ('20991231000000', 'add_my_table')"
        )
    store = persistence.open_store(fresh_db, files_dir=tmp_path)  # the project's own migration: fine
    store.close()
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        conn.execute(
            "insert into supabase_migrations.schema_migrations (version, name) "
            "values ('20991231000001', 'persistence_from_the_future')"
        )
    with pytest.raises(SchemaVersionError, match="persistence_from_the_future"):
        persistence.open_store(fresh_db, files_dir=tmp_path)


def test_python_m_persistence_migrate(fresh_db: str, tmp_path: Path) -> None:
    out = subprocess.run(
        [sys.executable, "-m", "persistence", "migrate", "--url", fresh_db],
        capture_output=True,
        text=True,
        env={"PATH": "/usr/bin:/bin", "PERSISTENCE_HOME": str(tmp_path), "HOME": str(tmp_path)},
        check=False,
    )
    assert out.returncode == 0, out.stderr
    for m in migration_files():
        assert m.label in out.stdout
    assert "up to date" in out.stderr


def test_usage_schemas_agree_between_sqlite_and_postgres(pg_url: str, tmp_path: Path) -> None:
    """usage() and storage_usage() have the same columns, dtypes and numbers on both backends."""
    stores = [
        persistence.open_store(f"sqlite:///{tmp_path / 'u.db'}"),
        persistence.open_store(pg_url, files_dir=tmp_path / "pg"),
    ]
    try:
        for s in stores:
            for day in range(9):
                s.record_message(
                    f"t-{day % 4}",
                    "assistant",
                    "x",
                    model=("glm-4.6", "kimi-k2-0905-preview", "llama-3.1-8b-local")[day % 3],
                    tool_name=("chat", None)[day % 2],
                    usage={"prompt_tokens": 1000 + day, "completion_tokens": 100, "cached_tokens": day},
                    created_at=T0 + timedelta(days=day, hours=day),
                )
                s.put_file(f"file {day % 3}".encode(), filename=f"f{day}.txt", created_at=T0 + timedelta(days=day))
        for group_by in ((), ("day", "model"), ("week", "provider"), ("month", "tool_name"), ("user_id",)):
            sqlite_df, pg_df = (s.usage(group_by) for s in stores)
            assert list(sqlite_df.columns) == list(pg_df.columns)
            assert list(sqlite_df.dtypes) == list(pg_df.dtypes), group_by
            pd.testing.assert_frame_equal(sqlite_df, pg_df, check_exact=False, rtol=1e-9)
        for group_by in ((), ("day", "mime_type"), ("month",), ("user_id",)):
            sqlite_df, pg_df = (s.storage_usage(group_by) for s in stores)
            pd.testing.assert_frame_equal(sqlite_df, pg_df)
    finally:
        for s in stores:
            s.close()


# -- the plan's database -------------------------------------------------------------------


# PLAN.md 2.2: the bucket and its storage policies, which any role may use.
PLAN_STORAGE = """
INSERT INTO storage.buckets (id, name, public) VALUES ('mcp-files', 'mcp-files', false);
CREATE POLICY "Service role can upload files" ON storage.objects FOR INSERT WITH CHECK (bucket_id = 'mcp-files');
CREATE POLICY "Service role can read files" ON storage.objects FOR SELECT USING (bucket_id = 'mcp-files');
CREATE POLICY "Service role can delete files" ON storage.objects FOR DELETE USING (bucket_id = 'mcp-files');
"""

OWNER = "0a0a0a0a-1111-4222-8333-444444444444"
CONV = "11111111-2222-4333-8444-555555555555"
FILE_A, FILE_B, FILE_C = (f"f0000000-0000-4000-8000-00000000000{i}" for i in (1, 2, 3))
SHA = "9f86d081884c7d659a2feaa0c55ad015a3bf4f1b2b0b822cd15d6c15b0f00a08"


@pytest.fixture
def plan_db(fresh_db: str) -> str:
    """A database as the plan left it: its two migrations, its bucket policies, and rows."""
    with psycopg.connect(fresh_db, autocommit=True) as conn:
        for statement in split_statements(standin_sql()):
            conn.execute(statement)  # Supabase's built-ins, as on the project the plan ran on
        conn.execute(PLAN_SCHEMA.read_bytes())  # the plan's tables, indexes, trigger and policies
        conn.execute(PLAN_STORAGE)
        conn.execute(
            """insert into conversations (id, continuation_id, session_id, title, summary, model_used, total_tokens,
                   total_cost, status, tags, metadata, created_at, updated_at)
               values (%s, 'plan-thread', 'sess-9', 'From the plan', 'a summary', 'glm-4.6', 999, 1.5, 'archived',
                       array['legacy'], '{"client": "old"}', %s, %s)""",
            (CONV, T0, T0 + timedelta(hours=1)),
        )
        for i, (role, content, cost) in enumerate(
            (("user", "How do I size the pool?", None), ("assistant", "Twenty connections.", 0.0012))
        ):
            conn.execute(
                """insert into messages (conversation_id, role, content, model_used, tokens, cost, duration_ms,
                       metadata, created_at) values (%s, %s, %s, %s, %s, %s, %s, %s, %s)""",
                (CONV, role, content, "glm-4.6" if cost else None, 500 * i, cost, 800 if cost else None,
                 '{"plan": true}', T0 + timedelta(minutes=i)),
            )  # fmt: skip
        # Two uploads of the same bytes by one owner (the plan kept both), and another file.
        for fid, path, name, at in (
            (FILE_A, f"sess-9/{SHA}.txt", "notes.txt", T0),
            (FILE_B, f"sess-10/{SHA}.txt", "notes-copy.txt", T0 + timedelta(hours=2)),
            (FILE_C, "uploads/other.pdf", "other.pdf", T0 + timedelta(hours=3)),
        ):
            conn.execute(
                """insert into files (id, filename, storage_path, file_size, mime_type, file_hash, user_id, session_id,
                       conversation_id, tags, metadata, created_at) values (%s, %s, %s, 4, 'text/plain', %s, %s,
                       'sess-9', %s, array['plan'], '{}', %s)""",
                (fid, path.split("/")[0] and name, path, SHA if fid != FILE_C else "ab" * 32, OWNER,
                 CONV if fid == FILE_A else None, at),
            )  # fmt: skip
    return fresh_db


def test_a_plan_database_upgrades_in_place(plan_db: str, tmp_path: Path) -> None:
    store = persistence.open_store(plan_db, files_dir=tmp_path)  # migrates
    try:
        conv = store.get_conversation("plan-thread")
        assert conv is not None
        assert (conv.title, conv.summary, conv.status, conv.tags, conv.metadata) == (
            "From the plan",
            "a summary",
            "archived",
            ("legacy",),
            {"client": "old"},
        )
        assert [(m.seq, m.role, m.content) for m in conv.messages] == [
            (1, "user", "How do I size the pool?"),
            (2, "assistant", "Twenty connections."),
        ]
        assert conv.messages[1].cost_usd == pytest.approx(0.0012) and conv.messages[1].duration_ms == 800
        assert conv.messages[0].metadata == {"plan": True}
        assert conv.message_count == 2 and conv.cost_usd == pytest.approx(0.0012)  # totals from the messages
        assert conv.created_at == T0 and conv.updated_at == T0 + timedelta(hours=1)
        # The duplicate upload became an upload of the first stored object.
        files = store.list_files(limit=10)
        assert sorted(f.filename for f in files) == ["notes-copy.txt", "notes.txt", "other.pdf"]
        assert len({f.id for f in files}) == 2
        assert [f.filename for f in conv.files] == ["notes.txt"]
        totals = store.storage_usage(())
        assert (int(totals["files"].iloc[0]), int(totals["uploads"].iloc[0])) == (2, 3)
        assert int(store.usage(())["messages"].iloc[0]) == 2
        # It keeps working: the next turn is number 3, costs are no longer rounded to 4 places.
        m = store.record_message(
            "plan-thread",
            "assistant",
            "More.",
            model="glm-4.5-air",
            usage={"prompt_tokens": 100, "completion_tokens": 10},
        )
        assert m.seq == 3 and m.cost_usd == pytest.approx(0.000031)
        assert store.get_message(m.id).cost_usd == pytest.approx(0.000031)  # type: ignore[union-attr]
        assert [h.message.seq for h in store.search("connections")] == [2]
    finally:
        store.close()
    with psycopg.connect(plan_db) as conn:
        policies = conn.execute("select policyname from pg_policies").fetchall()
        assert not [p for (p,) in policies if p.startswith(("Service role", "service role"))]
        scale = conn.execute(
            "select numeric_scale from information_schema.columns where table_name = 'messages' and column_name = 'cost'"
        ).fetchone()[0]
        assert scale == 10


def test_a_plan_database_with_orphan_messages_is_refused_untouched(plan_db: str, tmp_path: Path) -> None:
    with psycopg.connect(plan_db, autocommit=True) as conn:
        conn.execute("insert into messages (role, content) values ('user', 'an orphan')")
    with pytest.raises(StoreOpenError, match=r"without a conversation_id.*hint"):
        persistence.open_store(plan_db, files_dir=tmp_path)
    with psycopg.connect(plan_db) as conn:
        applied = [r[0] for r in conn.execute("select name from supabase_migrations.schema_migrations")]
        assert applied == ["plan_tables"]  # the upgrade rolled back whole
        # The plan's three table policies and three bucket policies are still there.
        assert conn.execute("select count(*) from pg_policies where policyname like 'Service role%'").fetchone()[0] == 6
