"""The Supabase backend opened as a signed-in user (the anon key and the user's token, role
``authenticated``), through the gateway stand-in: what the open skips, where the user's files
go, and what is refused with ServerOnlyError. The conformance suite runs every ``store``
scenario on this store too (``supabase_user`` in conftest.BACKENDS); these are the particulars.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from conftest import SIGNED_IN_USER, STANDIN_JWT_SECRET, create_database, drop_database, open_supabase

import persistence
from persistence import ServerOnlyError, StoreOpenError
from persistence.backends.postgres.supabase_store import SupabaseStore, key_claims

psycopg = pytest.importorskip("psycopg")

pytestmark = pytest.mark.postgres

OTHER = "0abc0000-0000-4000-8000-000000000b0b"
T0 = datetime(2026, 5, 4, 10, 0, tzinfo=UTC)


def test_a_user_opens_without_the_servers_steps_and_sees_only_their_rows(pg_url: str, standin: Any) -> None:
    """applied_migrations and sync_package_prices are the service role's: the user's open
    calls neither (on this fresh database the price table stays empty until the server opens)."""
    user = open_supabase(standin, user=SIGNED_IN_USER)
    try:
        assert not user.is_server and user.user_id == SIGNED_IN_USER
        with psycopg.connect(pg_url) as conn:
            assert conn.execute("select count(*) from public.model_prices").fetchone() == (0,)
        server = open_supabase(standin)  # the server's open syncs the prices
        try:
            server.start_conversation("theirs", user_id=OTHER, created_at=T0)
            server.record_message("theirs", "user", "not for the user", created_at=T0)
        finally:
            server.close()
        m = user.record_message("mine", "user", "my words", created_at=T0)
        assert m.user_id == SIGNED_IN_USER
        assert [c.continuation_id for c in user.list_conversations()] == ["mine"]
        assert user.get_conversation("theirs") is None
        assert len(user.prices) > 0  # read through the user's grant on model_prices
    finally:
        user.close()


def test_a_users_file_goes_to_their_own_folder(pg_url: str, standin: Any) -> None:
    user = open_supabase(standin, user=SIGNED_IN_USER)
    try:
        f = user.put_file(b"%PDF-1.7 my contract", filename="contract.pdf")
        assert f.storage_path.startswith(f"{SIGNED_IN_USER}/") and f.user_id == SIGNED_IN_USER
        with user.open_file(f.id) as fh:
            assert fh.read() == b"%PDF-1.7 my contract"
        again = user.put_file(b"%PDF-1.7 my contract", filename="copy.pdf")
        assert again.deduplicated and again.storage_path == f.storage_path
        with psycopg.connect(pg_url) as conn:
            names = [r[0] for r in conn.execute("select name from storage.objects")]
        assert names == [f.storage_path]  # nothing under shared/
        # Another owner's folder is Storage's to refuse, and the row's too.
        with pytest.raises(persistence.PersistenceError):
            user.put_file(b"planted", filename="p.txt", user_id=OTHER)
    finally:
        user.close()


@pytest.mark.parametrize(
    ("what", "call"),
    [
        ("prune", lambda s: s.prune(older_than=timedelta(days=30), dry_run=True)),
        ("redact", lambda s: s.redact(continuation_id="mine", dry_run=True)),
        ("reprice", lambda s: s.reprice()),
        ("import", lambda s: s.import_records([])),
        ("doctor", lambda s: s.doctor(quick=True)),
        ("doctor", lambda s: s.doctor()),
        ("price table", lambda s: s.add_prices([])),
        ("migration history", lambda s: s.migrations()),
    ],
)
def test_the_servers_operations_are_refused_by_name(pg_url: str, standin: Any, what: str, call: Any) -> None:
    user = open_supabase(standin, user=SIGNED_IN_USER)
    try:
        user.record_message("mine", "user", "kept", created_at=T0)
        before = standin.requests
        with pytest.raises(ServerOnlyError, match=what) as info:
            call(user)
        assert "SUPABASE_SERVICE_ROLE_KEY" in str(info.value)
        assert standin.requests == before  # refused before any request
        assert user.get_conversation("mine").message_count == 1
    finally:
        user.close()


def test_the_anon_key_alone_is_refused_at_open(pg_url: str, standin: Any) -> None:
    with pytest.raises(StoreOpenError, match="anon may read and write nothing"):
        SupabaseStore(
            env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_SERVICE_ROLE_KEY": standin.anon_key},
            http_client=standin.client(),
        )
    with pytest.raises(StoreOpenError, match="SUPABASE_ANON_KEY"):
        SupabaseStore(
            env={"SUPABASE_URL": "http://supabase.test"},
            access_token=standin.token("authenticated", SIGNED_IN_USER),
            http_client=standin.client(),
        )


def test_a_user_on_a_project_without_the_schema_is_told_at_open(pg_server: str, tmp_path: Any) -> None:
    from supabase_standin import SupabaseStandin

    url = create_database()
    gateway = SupabaseStandin(url, STANDIN_JWT_SECRET, tmp_path / "storage")
    try:
        with pytest.raises(StoreOpenError, match="no persistence schema yet"):
            open_supabase(gateway, user=SIGNED_IN_USER)
    finally:
        gateway.close()
        drop_database(url)


def test_a_missing_bucket_says_who_must_create_it(pg_url: str, standin: Any) -> None:
    user = open_supabase(standin, user=SIGNED_IN_USER, SUPABASE_STORAGE_BUCKET_FILES="team-files")
    try:
        with pytest.raises(persistence.PersistenceError, match="may not create it"):
            user.put_file(b"hello", filename="h.txt")
    finally:
        user.close()


def test_the_role_is_read_from_the_key() -> None:
    assert key_claims("sb_secret_abc") == {"role": "service_role"}
    assert key_claims("sb_publishable_abc") == {"role": "anon"}
    assert key_claims("not-a-jwt") == {} and key_claims("a.!!!.c") == {}
