"""The gateway stand-in refuses what Supabase refuses (tests/supabase_standin.py, its header).

The package's own Supabase path runs through it everywhere else (the ``supabase`` backend of
the ``store`` fixture); these tests hold the stand-in to the gateway's rules, so a lenient
stand-in cannot hide a request real Supabase would refuse.
"""

from __future__ import annotations

import threading
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from conftest import STANDIN_JWT_SECRET, create_database, drop_database, open_supabase

from persistence import PersistenceError

psycopg = pytest.importorskip("psycopg")

from storage3.exceptions import StorageApiError  # noqa: E402
from supabase_standin import BASE_URL, SupabaseStandin  # noqa: E402

from persistence.backends.postgres.supabase_store import make_client  # noqa: E402

pytestmark = pytest.mark.postgres

A = str(uuid.uuid4())


@pytest.fixture(scope="module")
def db(pg_server: str) -> Iterator[str]:
    from persistence.backends.postgres.schema import migrate

    url = create_database()
    try:
        with psycopg.connect(url, autocommit=True) as conn:
            migrate(conn)
            conn.execute(
                "create function public.standin_probe() returns jsonb language sql stable "
                "as $$ select jsonb_build_object('read_only', current_setting('transaction_read_only'), "
                "'session_user', session_user, 'current_user', current_user) $$"
            )
            conn.execute("grant execute on function public.standin_probe() to anon, authenticated, service_role")
        yield url
    finally:
        drop_database(url)


@pytest.fixture
def gateway(db: str, tmp_path: Path) -> Iterator[SupabaseStandin]:
    g = SupabaseStandin(db, STANDIN_JWT_SECRET, tmp_path / "storage")
    yield g
    g.close()


def post(g: SupabaseStandin, fn: str, body: Any = None, **headers: str) -> httpx.Response:
    with httpx.Client(timeout=10) as http:
        return http.post(f"{g.url}/rest/v1/rpc/{fn}", json=body or {}, headers=headers)


def test_the_apikey_must_be_one_of_the_projects_keys(gateway: SupabaseStandin) -> None:
    missing = post(gateway, "applied_migrations")
    assert missing.status_code == 401 and missing.json()["message"] == "No API key found in request"
    user_token = gateway.token("authenticated", A)
    for bad in (user_token, "not-a-key", gateway.token("service_role", expires_in=60)):
        refused = post(gateway, "applied_migrations", apikey=bad, authorization=f"Bearer {gateway.service_key}")
        assert refused.status_code == 401 and refused.json()["message"] == "Invalid API key", bad
    # Without Authorization: the key's role, so anon only with the anon key.
    assert post(gateway, "standin_probe", apikey=gateway.anon_key).json()["current_user"] == "anon"
    assert post(gateway, "standin_probe", apikey=gateway.service_key).json()["current_user"] == "service_role"
    signed_in = post(gateway, "standin_probe", apikey=gateway.anon_key, authorization=f"Bearer {user_token}")
    assert signed_in.json()["current_user"] == "authenticated"
    expired = gateway.token("authenticated", A, expires_in=-10)
    answer = post(gateway, "standin_probe", apikey=gateway.anon_key, authorization=f"Bearer {expired}")
    assert (answer.status_code, answer.json()["code"]) == (401, "PGRST303")


def test_it_connects_as_authenticator_and_stable_functions_run_read_only(gateway: SupabaseStandin) -> None:
    with gateway.pool.connection() as conn:
        row = conn.execute("select current_user, rolsuper, rolinherit from pg_roles where rolname = current_user")
        assert row.fetchone() == ("authenticator", False, False)
    probe = post(gateway, "standin_probe", apikey=gateway.service_key).json()
    assert probe == {"read_only": "on", "session_user": "authenticator", "current_user": "service_role"}
    # A volatile function runs read-write: the package's writes go through.
    client, http = make_client(BASE_URL, gateway.service_key, http_client=gateway.client())
    try:
        assert client.rpc("start_conversation", {"p_continuation_id": "standin-rw"}).execute().data
    finally:
        http.close()


def test_profiles_and_arguments_are_checked(gateway: SupabaseStandin) -> None:
    key = gateway.service_key
    for header in ("content-profile", "accept-profile"):
        answer = post(gateway, "applied_migrations", apikey=key, **{header: "auth"})
        assert (answer.status_code, answer.json()["code"]) == (406, "PGRST106")
        assert "public" in answer.json()["message"]
    missing = post(gateway, "get_conversation", {}, apikey=key)  # p_continuation_id has no default
    assert (missing.status_code, missing.json()["code"]) == (404, "PGRST202")
    unknown = post(gateway, "get_conversation", {"p_continuation_id": "x", "p_nope": 1}, apikey=key)
    assert (unknown.status_code, unknown.json()["code"]) == (404, "PGRST202")
    assert post(gateway, "get_conversation", {"p_continuation_id": "x"}, apikey=key).json() is None


def test_storage_enforces_bucket_limits_listing_and_policies(gateway: SupabaseStandin) -> None:
    service, http_s = make_client(BASE_URL, gateway.service_key, http_client=gateway.client())
    user, http_u = gateway.signed_in(A)
    try:
        service.storage.create_bucket(
            "limited", options={"public": False, "file_size_limit": 10, "allowed_mime_types": ["text/*"]}
        )
        with pytest.raises(StorageApiError) as info:
            service.storage.from_("limited").upload("big.txt", b"x" * 11, {"content-type": "text/plain"})
        assert (str(info.value.status), info.value.code) == ("413", "Payload too large")
        with pytest.raises(StorageApiError) as info:
            service.storage.from_("limited").upload("a.png", b"\x89PNG", {"content-type": "image/png"})
        assert (str(info.value.status), info.value.code) == ("415", "invalid_mime_type")
        service.storage.from_("limited").upload("ok.txt", b"fits", {"content-type": "text/plain"})

        for name in (f"{A}/ab/one", f"{A}/ab/two", f"{A}/cd/three", f"{A}/top"):
            user.storage.from_("mcp-files").upload(name, b"mine", {"content-type": "text/plain"})
        service.storage.from_("mcp-files").upload("shared/ab/other", b"theirs", {"content-type": "text/plain"})
        assert [e["name"] for e in user.storage.from_("mcp-files").list(A)] == ["ab", "cd", "top"]
        assert [e["name"] for e in user.storage.from_("mcp-files").list(f"{A}/ab")] == ["one", "two"]
        assert [e["name"] for e in user.storage.from_("mcp-files").list()] == [A]  # policies hide "shared"
        assert sorted(e["name"] for e in service.storage.from_("mcp-files").list()) == sorted([A, "shared"])
        # storage.buckets has no policy for signed-in users: they neither see nor create buckets.
        with pytest.raises(StorageApiError) as info:
            user.storage.get_bucket("mcp-files")
        assert str(info.value.status) == "404"
        assert service.storage.get_bucket("mcp-files").id == "mcp-files"
        with pytest.raises(StorageApiError) as info:
            user.storage.create_bucket("mine", options={"public": False})
        assert str(info.value.status) == "403"
    finally:
        http_s.close()
        http_u.close()


def test_timeouts_and_connection_errors_are_real(db: str, gateway: SupabaseStandin) -> None:
    store = open_supabase(gateway)
    slow = open_supabase(gateway)
    slow.client.postgrest.session.timeout = httpx.Timeout(0.5)
    try:
        store.start_conversation("standin-locked")
        locked, release = threading.Event(), threading.Event()

        def hold_lock() -> None:
            with psycopg.connect(db) as conn:
                conn.execute("lock table public.conversations in access exclusive mode")
                locked.set()
                release.wait(10)

        holder = threading.Thread(target=hold_lock)
        holder.start()
        locked.wait(5)
        started = time.monotonic()
        try:
            with pytest.raises(PersistenceError, match="ReadTimeout"):
                slow.get_conversation("standin-locked")
        finally:
            release.set()
            holder.join()
        assert time.monotonic() - started < 5
        assert store.get_conversation("standin-locked") is not None
    finally:
        slow.close()
    gateway.close()
    with pytest.raises(PersistenceError, match="ConnectError"):
        store.get_conversation("standin-locked")
    store.close()


READER = """
import hashlib, json, sys
from persistence.backends.postgres.supabase_store import SupabaseStore

def status(field):
    for line in open("/proc/self/status"):
        if line.startswith(field + ":"):
            return int(line.split()[1])  # kB

url, key, upload_id = sys.argv[1:4]
store = SupabaseStore(env={"SUPABASE_URL": url, "SUPABASE_SERVICE_ROLE_KEY": key})
before = status("VmRSS")
digest, size = hashlib.sha256(), 0
with store.open_file(upload_id) as fh:
    while chunk := fh.read(1 << 20):
        digest.update(chunk)
        size += len(chunk)
print(json.dumps({"sha256": digest.hexdigest(), "size": size, "rss_growth_mb": (status("VmHWM") - before) / 1024}))
"""


def test_a_200_mb_file_is_read_as_a_stream(gateway: SupabaseStandin, tmp_path: Path) -> None:
    """open_file on the Supabase backend streams a signed URL: reading 200 MB costs < 30 MB of
    RSS (measured in a process of its own, with the production httpx client, so the stand-in's
    memory is not counted)."""
    import dataclasses
    import hashlib
    import json
    import os
    import subprocess
    import sys

    big = tmp_path / "big.bin"
    digest = hashlib.sha256()
    with open(big, "wb") as fh:
        block = os.urandom(1 << 19).hex().encode()  # 1 MiB of text (an allowed type)
        for i in range(200):
            chunk = b"%08d" % i + block[8:]
            digest.update(chunk)
            fh.write(chunk)
    store = open_supabase(gateway)
    store.upload_rules = dataclasses.replace(store.upload_rules, max_bytes=None, bytes_per_minute=None)
    try:
        stored = store.put_file(big, filename="big.txt")
    finally:
        store.close()
    big.unlink()
    run = subprocess.run(
        [sys.executable, "-c", READER, gateway.url, gateway.service_key, stored.upload_id],
        capture_output=True,
        text=True,
        timeout=300,
    )
    assert run.returncode == 0, run.stderr
    result = json.loads(run.stdout)
    print(f"reading 200 MB through the Supabase backend: RSS grew {result['rss_growth_mb']:.1f} MB")
    assert result["sha256"] == digest.hexdigest() and result["size"] == 200 << 20
    assert result["rss_growth_mb"] < 30, result


def test_a_schema_other_than_public_is_refused_with_the_reason(gateway: SupabaseStandin) -> None:
    from persistence import StoreOpenError

    with pytest.raises(StoreOpenError, match=r"SUPABASE_DB_SCHEMA='persistence' is not supported.*public"):
        open_supabase(gateway, SUPABASE_DB_SCHEMA="persistence")
    open_supabase(gateway, SUPABASE_DB_SCHEMA="public").close()


def test_an_object_answered_before_a_delete_is_sent_whole(tmp_path: Path) -> None:
    """Storage serves the object as it was when it answered: a delete (a prune racing a
    download) between the headers and the body does not cut the body short. The stand-in
    opened the file only once the headers were out, so such a download ended mid-body."""
    from supabase_standin import _file_response

    path = tmp_path / "object"
    path.write_bytes(b"0123456789" * 20_000)
    response = _file_response(path, "text/plain")
    path.unlink()
    assert response.headers["content-length"] == "200000"
    assert response.read() == b"0123456789" * 20_000
