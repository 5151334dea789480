"""Row level security on the real Postgres with the real roles.

A user signed in as A (role ``authenticated``, ``sub`` = A in ``request.jwt.claims``, as
PostgREST sets them) cannot read, change or delete B's threads, messages or files, neither
with SQL nor through a function; ``anon`` gets nothing; ``service_role`` sees everything. The
last tests go end to end through the supabase client and the gateway stand-in.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import pytest

import persistence
from persistence.backends.postgres.supabase_store import make_client

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

A = "aaaaaaaa-0000-4000-8000-00000000000a"
B = "bbbbbbbb-0000-4000-8000-00000000000b"
USER_TABLES = ("conversations", "messages", "files", "file_uploads", "conversation_files", "usage_daily")


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


def call(conn: Any, fn: str, **args: Any) -> Any:
    sql = f"select public.{fn}(" + ", ".join(f"{k} => %({k})s" for k in args) + ")"
    return conn.execute(sql, args).fetchone()[0]


@pytest.fixture
def two_users(pg_url: str, tmp_path: Any) -> str:
    """A and B each own a thread with two messages and a file, written by the server."""
    store = persistence.open_store(pg_url, files_dir=tmp_path / "files")
    for owner, cid in ((A, "thread-a"), (B, "thread-b")):
        store.start_conversation(cid, user_id=owner, title=f"secret plans of {cid}")
        store.record_message(cid, "user", f"the password of {cid} is swordfish", model="glm-4.6")
        store.record_message(
            cid, "assistant", "noted", model="glm-4.6", usage={"prompt_tokens": 10, "completion_tokens": 2}
        )
        store.put_file(f"bytes of {cid}".encode(), filename=f"{cid}.txt", continuation_id=cid, user_id=owner)
    store.close()
    return pg_url


def test_a_user_reads_only_their_own_rows(two_users: str) -> None:
    with as_role(two_users, "authenticated", A) as conn:
        for table in USER_TABLES:
            owners = {r[0] for r in conn.execute(f"select distinct user_id::text from public.{table}")}
            assert owners == {A}, table
        assert call(conn, "get_conversation", p_continuation_id="thread-b") is None
        assert [c["continuation_id"] for c in call(conn, "list_conversations")] == ["thread-a"]
        assert call(conn, "count_conversations") == 1
        hits = call(conn, "search_messages", p_tsquery="'swordfish'")
        assert [h["message"]["continuation_id"] for h in hits] == ["thread-a"]
        assert [r[5] for r in call(conn, "usage_report")] == [2]  # A's two messages, not four
        assert {f["user_id"] for f in call(conn, "list_files")} == {A}
        b_file = conn.execute("select count(*) from public.files where user_id = %s", (B,)).fetchone()[0]
        assert b_file == 0
    with as_role(two_users, "service_role") as conn:
        b_file_id = conn.execute("select id from public.files where user_id = %s", (B,)).fetchone()[0]
    with as_role(two_users, "authenticated", A) as conn:
        assert call(conn, "get_file", p_id=b_file_id) is None
        assert call(conn, "file_conversations", p_file_id=b_file_id) == []


def test_a_user_cannot_change_or_delete_anothers_rows(two_users: str) -> None:
    with as_role(two_users, "authenticated", A) as conn:
        for sql in (
            "update public.conversations set title = 'mine now' where continuation_id = 'thread-b'",
            "update public.messages set content = 'overwritten' where user_id = %s",
            "delete from public.messages where user_id = %s",
            "delete from public.conversations where continuation_id = 'thread-b'",
            "delete from public.files where user_id = %s",
            "delete from public.usage_daily where user_id = %s",
        ):
            try:  # not A's rows, or (messages, rollup, thread deletion) not A's to write at all
                assert conn.execute(sql, (B,) if "%s" in sql else None).rowcount == 0, sql
            except psycopg.errors.InsufficientPrivilege:
                assert sql.startswith("delete from public.") and "files" not in sql, sql
        with pytest.raises(psycopg.errors.Error) as info:
            call(conn, "update_conversation", p_continuation_id="thread-b", p_changes=psycopg.types.json.Jsonb({}))
        assert info.value.sqlstate == "PT404"
        # Writing into B's thread: it exists but is not A's, so the function refuses.
        with pytest.raises(psycopg.errors.Error) as info:
            call(
                conn,
                "record_message",
                p_continuation_id="thread-b",
                p_id="cccccccc-0000-4000-8000-00000000000c",
                p_role="user",
                p_content="injected",
            )
        assert info.value.sqlstate == "PT409"
        # Rows cannot be made out to, or handed over to, another user.
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            call(conn, "start_conversation", p_continuation_id="for-b", p_user_id=B)
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("update public.conversations set user_id = %s where continuation_id = 'thread-a'", (B,))
        # Maintenance functions are the server's only.
        for fn, args in (
            ("prune", "p_cutoff => now() + interval '1 day'"),
            ("import_batch", "p_records => '[]'"),
            ("import_records", "p_records => '[]'"),
            ("reprice_apply", "p_updates => '[]'"),
            ("upsert_model_prices", "p_prices => '[]'"),
            ("store_doctor", ""),
            ("applied_migrations", ""),
        ):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select public.{fn}({args})")
    with as_role(two_users, "service_role") as conn:
        b = call(conn, "get_conversation", p_continuation_id="thread-b")
        assert b["title"] == "secret plans of thread-b" and b["message_count"] == 2
        assert [m["content"] for m in b["messages"]] == ["the password of thread-b is swordfish", "noted"]
        assert conn.execute("select count(*) from public.files").fetchone()[0] == 2


def test_a_user_writes_their_own_thread_through_the_functions(two_users: str) -> None:
    with as_role(two_users, "authenticated", A) as conn:
        m = call(
            conn,
            "record_message",
            p_continuation_id="a-new-thread",
            p_id="dddddddd-0000-4000-8000-00000000000d",
            p_role="user",
            p_content="my own words",
        )
        assert m["user_id"] == A and m["seq"] == 1
        conv = call(conn, "get_conversation", p_continuation_id="a-new-thread")
        assert conv["user_id"] == A  # a thread created by a signed-in user is theirs
        assert [r[4] for r in call(conn, "usage_report", p_group_by=["user_id"])] == [A]


def test_anon_gets_nothing(two_users: str) -> None:
    with as_role(two_users, "anon") as conn:
        for table in (*USER_TABLES, "provider_files", "model_prices", "store_meta"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select * from public.{table}")
        for fn in ("list_conversations", "search_messages", "usage_report", "facets", "list_model_prices"):
            with pytest.raises(psycopg.errors.InsufficientPrivilege):
                conn.execute(f"select public.{fn}()")


def test_service_role_sees_everything(two_users: str) -> None:
    with as_role(two_users, "service_role") as conn:
        for table in USER_TABLES:
            owners = {r[0] for r in conn.execute(f"select distinct user_id::text from public.{table}")}
            assert owners == {A, B}, table
        assert call(conn, "count_conversations") == 2


def test_every_table_has_rls_and_one_policy_per_operation(two_users: str) -> None:
    with psycopg.connect(two_users) as conn:
        tables = conn.execute(
            "select c.relname, c.relrowsecurity from pg_class c join pg_namespace n on n.oid = c.relnamespace "
            "where n.nspname = 'public' and c.relkind = 'r'"
        ).fetchall()
        assert tables and all(rls for _, rls in tables), tables
        policies = conn.execute(
            "select tablename, cmd, roles::text[], qual, with_check from pg_policies where schemaname = 'public'"
        ).fetchall()
    by_table: dict[str, list[str]] = {}
    for table, cmd, roles, qual, check in policies:
        assert roles == ["authenticated"], (table, cmd, roles)
        by_table.setdefault(table, []).append(cmd)
        if table != "model_prices":
            assert "auth.uid()" in (qual or check) and "user_id" in (qual or check), (table, cmd)
    for table in (*USER_TABLES, "provider_files"):
        assert sorted(by_table[table]) == ["DELETE", "INSERT", "SELECT", "UPDATE"], table
    assert by_table["model_prices"] == ["SELECT"] and "store_meta" not in by_table
    assert not [p for p in policies if p[3] == "true" and p[0] != "model_prices"]  # no "using (true)"


def test_storage_objects_are_confined_to_the_owners_folder(pg_url: str, standin: Any) -> None:
    with as_role(pg_url, "authenticated", A) as conn:
        conn.execute("insert into storage.objects (bucket_id, name) values ('mcp-files', %s)", (f"{A}/ab/abc",))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into storage.objects (bucket_id, name) values ('mcp-files', %s)", (f"{B}/ab/abc",))
        with pytest.raises(psycopg.errors.InsufficientPrivilege):
            conn.execute("insert into storage.objects (bucket_id, name) values ('mcp-files', 'shared/ab/abc')")
    with as_role(pg_url, "service_role") as conn:
        conn.execute("insert into storage.objects (bucket_id, name) values ('mcp-files', %s)", (f"{B}/cd/cde",))
        assert conn.execute("select public from storage.buckets where id = 'mcp-files'").fetchone()[0] is False
    with as_role(pg_url, "authenticated", A) as conn:
        names = [r[0] for r in conn.execute("select name from storage.objects")]
        assert names == [f"{A}/ab/abc"]
        assert conn.execute("delete from storage.objects where name like %s", (f"{B}/%",)).rowcount == 0


def test_end_to_end_through_the_client_as_a_signed_in_user(two_users: str, standin: Any) -> None:
    """The supabase client with A's token (what an app using the anon key + sign-in sends)."""
    from postgrest.exceptions import APIError

    client, http = standin.signed_in(A)  # the anon key, and A's token as Authorization
    try:
        assert client.rpc("get_conversation", {"p_continuation_id": "thread-b"}).execute().data is None
        mine = cast(list[dict[str, Any]], client.rpc("list_conversations", {}).execute().data)  # rows, as JSON
        assert [c["continuation_id"] for c in mine] == ["thread-a"]
        with pytest.raises(APIError) as info:
            client.rpc(
                "update_conversation", {"p_continuation_id": "thread-b", "p_changes": {"title": "mine"}}
            ).execute()
        assert info.value.code == "PT404"
        with pytest.raises(APIError) as info:
            client.rpc("prune", {"p_cutoff": "2100-01-01T00:00:00+00:00"}).execute()
        assert info.value.code == "42501"
    finally:
        http.close()
    anon, http = make_client("http://supabase.test", standin.token("anon"), http_client=standin.client())
    try:
        with pytest.raises(APIError) as info:
            anon.rpc("list_conversations", {}).execute()
        assert info.value.code == "42501"
    finally:
        http.close()


def test_storage_end_to_end_as_a_signed_in_user(pg_url: str, standin: Any) -> None:
    from storage3.exceptions import StorageApiError

    service, http_s = make_client("http://supabase.test", standin.token("service_role"), http_client=standin.client())
    user_a, http_a = standin.signed_in(A)
    try:
        service.storage.from_("mcp-files").upload(f"{B}/aa/secret", b"B's bytes")
        user_a.storage.from_("mcp-files").upload(f"{A}/aa/mine", b"A's bytes")
        assert user_a.storage.from_("mcp-files").download(f"{A}/aa/mine") == b"A's bytes"
        assert not user_a.storage.from_("mcp-files").exists(f"{B}/aa/secret")
        with pytest.raises(StorageApiError):
            user_a.storage.from_("mcp-files").download(f"{B}/aa/secret")
        with pytest.raises(StorageApiError):
            user_a.storage.from_("mcp-files").upload(f"{B}/aa/planted", b"A's bytes in B's folder")
        assert user_a.storage.from_("mcp-files").remove([f"{B}/aa/secret"]) == []
        assert service.storage.from_("mcp-files").download(f"{B}/aa/secret") == b"B's bytes"
    finally:
        http_s.close()
        http_a.close()
