"""The conformance scenarios against a real Supabase project (opt-in).

Set ``SUPABASE_TEST_URL`` and ``SUPABASE_TEST_SERVICE_ROLE_KEY`` (optionally
``SUPABASE_TEST_ANON_KEY``) for a project whose database has the migrations applied
(``supabase db push``); see README, "Supabase: the live test". Without them the ``live`` cases
skip with that reason. The same scenarios always run against the gateway stand-in, so this
module cannot rot unnoticed.

A real project is shared and has no reset: every scenario writes threads dated in the year
2001 under ids unique to the run, reads only those (by id, or by a 2001 time window), and
ends with ``prune`` of what was last active before 2002 — those threads and their files.
Use a project for testing, not production.
"""

from __future__ import annotations

import concurrent.futures
import os
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import httpx
import pytest

from persistence import ConflictError

LIVE_URL = os.environ.get("SUPABASE_TEST_URL", "")
LIVE_KEY = os.environ.get("SUPABASE_TEST_SERVICE_ROLE_KEY", "")
LIVE_ANON_KEY = os.environ.get("SUPABASE_TEST_ANON_KEY", "")
SKIP_REASON = "SUPABASE_TEST_URL and SUPABASE_TEST_SERVICE_ROLE_KEY are not set (opt-in: see README)"

RUN = uuid.uuid4().hex[:8]
T0 = datetime(2001, 3, 5, 9, 0, tzinfo=UTC) + timedelta(minutes=uuid.uuid4().int % 100_000)
WINDOW = {"since": datetime(2001, 1, 1, tzinfo=UTC), "until": datetime(2002, 1, 1, tzinfo=UTC)}


def tid(name: str) -> str:
    return f"live-{RUN}-{name}"


@pytest.fixture(
    params=[
        pytest.param("standin", marks=pytest.mark.postgres),
        pytest.param("live", marks=pytest.mark.skipif(not (LIVE_URL and LIVE_KEY), reason=SKIP_REASON)),
    ],
)
def live(request: pytest.FixtureRequest) -> Iterator[Any]:
    from persistence.backends.postgres.supabase_store import SupabaseStore

    if request.param == "live":
        store = SupabaseStore(env={"SUPABASE_URL": LIVE_URL, "SUPABASE_SERVICE_ROLE_KEY": LIVE_KEY})
        anon_key = LIVE_ANON_KEY
        base = LIVE_URL
        http: httpx.Client | None = None
    else:
        request.getfixturevalue("pg_url")
        gateway = request.getfixturevalue("standin")
        http = gateway.client()
        store = SupabaseStore(
            env={"SUPABASE_URL": "http://supabase.test", "SUPABASE_SERVICE_ROLE_KEY": gateway.token("service_role")},
            http_client=http,
        )
        anon_key = gateway.token("anon")
        base = "http://supabase.test"
    store.test_anon = (base, anon_key, http)  # type: ignore[attr-defined]
    try:
        yield store
    finally:
        store.prune(older_than=WINDOW["until"])  # this run's threads and files (all dated 2001)
        store.close()


def test_write_and_read_back_the_newest_turns(live: Any) -> None:
    for i in range(12):
        live.record_message(
            tid("long"), "user" if i % 2 == 0 else "assistant", f"turn {i}", created_at=T0 + timedelta(minutes=i)
        )
    conv = live.get_conversation(tid("long"), last=5)
    assert [m.content for m in conv.messages] == [f"turn {i}" for i in range(7, 12)]
    assert conv.message_count == 12 and conv.title == "turn 0"


def test_an_idempotent_retry_and_concurrent_writers(live: Any) -> None:
    mid = str(uuid.uuid4())
    first = live.record_message(tid("retry"), "user", "once", message_id=mid, created_at=T0)
    assert live.record_message(tid("retry"), "user", "once", message_id=mid, created_at=T0).seq == first.seq
    with pytest.raises(ConflictError):
        live.record_message(tid("elsewhere"), "user", "once", message_id=mid, created_at=T0)

    def write(n: int) -> None:
        for i in range(5):
            live.record_message(tid("busy"), "user", f"writer {n} turn {i}", created_at=T0)

    with concurrent.futures.ThreadPoolExecutor(4) as pool:
        list(pool.map(write, range(4)))
    conv = live.get_conversation(tid("busy"))
    assert [m.seq for m in conv.messages] == list(range(1, 21))


def test_search_usage_and_unknown_prices(live: Any) -> None:
    cid = tid("search")
    live.record_message(cid, "user", "The runners were running late: the connection pool was exhausted.", created_at=T0)
    live.record_message(cid, "user", "为什么缓存层在失效之后仍然返回旧数据？", created_at=T0)
    # glm-4.6 has a price from 2025 on: in 2001 no price was in force, so it is unpriced (NULL,
    # never 0), like a model with no price at all.
    before_price = live.record_message(
        cid,
        "assistant",
        "x",
        model="glm-4.6",
        usage={"prompt_tokens": 1000, "completion_tokens": 100},
        created_at=T0,
    )
    unknown = live.record_message(
        cid, "assistant", "y", model="llama-local", usage={"prompt_tokens": 10, "completion_tokens": 1}, created_at=T0
    )
    assert before_price.cost_usd is None and unknown.cost_usd is None
    assert live.prices.lookup("glm-4.6", datetime.now(UTC)) is not None  # the price table was synced

    def found(q: str) -> int:
        return len(live.search(q, continuation_id=cid))

    assert found("run") == 1 and found("缓存") == 1 and found('"connection pool"') == 1
    assert found('"pool connection"') == 0 and live.search("!!!") == []
    usage = live.usage(("model",), **WINDOW).set_index("model")
    assert usage.loc["llama-local", "unpriced_messages"] >= 1 and usage.loc["llama-local", "cost_usd"] == 0


def test_files_dedup_and_signed_urls(live: Any) -> None:
    data = f"live run {RUN}".encode()
    a = live.put_file(data, filename="a.txt", continuation_id=tid("files"), created_at=T0)
    b = live.put_file(data, filename="b.txt", continuation_id=tid("files"), created_at=T0)
    assert not a.deduplicated and b.deduplicated and a.id == b.id
    with live.open_file(b.upload_id) as fh:
        assert fh.read() == data
    url = live.signed_url(a.id, expires_in=60)
    http = live.test_anon[2] or httpx.Client(timeout=30)
    assert http.get(url).content == data
    storage = live.storage_usage((), **WINDOW)
    assert int(storage["uploads"].iloc[0]) >= 2


def test_export_import_round_trip(live: Any) -> None:
    live.record_message(tid("export"), "user", "export me", created_at=T0, metadata={"k": [1, "二"]})
    window = {"since": T0 - timedelta(seconds=1), "until": T0 + timedelta(seconds=1)}
    records = [r for r in live.export_records(**window) if r["conversation"]["continuation_id"] == tid("export")]
    assert len(records) == 1 and records[0]["messages"][0]["metadata"] == {"k": [1, "二"]}
    again = live.import_records(records)
    assert (again.conversations_skipped, again.messages_skipped) == (1, 1)


def test_anon_gets_nothing(live: Any) -> None:
    base, anon_key, http = live.test_anon
    if not anon_key:
        pytest.skip("SUPABASE_TEST_ANON_KEY is not set")
    from persistence.backends.postgres.supabase_store import make_client

    client, own = make_client(base, anon_key, http_client=http)
    from postgrest.exceptions import APIError

    with pytest.raises(APIError) as info:
        client.rpc("list_conversations", {}).execute()
    assert info.value.code == "42501"
    if http is None:
        own.close()
