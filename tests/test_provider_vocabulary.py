"""One provider vocabulary (persistence/providers.py): the server's names (kimi, glm …), a
vendor's alias (moonshot, zhipu …) mapped on every write, and stores written before renamed
by the migrations (SQLite 0004_dedup_and_providers, Postgres
20261130110000_persistence_dedup_providers), which also backfill file_uploads.deduplicated."""

from __future__ import annotations

import sqlite3
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pandas as pd
import pytest
from conftest import assert_server_only, signed_in

import persistence
from persistence.backends.postgres import schema as pg_schema
from persistence.backends.sqlite.schema import ALIASES_0004
from persistence.backends.sqlite.store import SQLiteStore
from persistence.providers import PROVIDER_ALIASES, canonical_price_id, canonical_provider
from persistence.transfer import EXPORT_FORMAT

T0 = datetime(2026, 3, 2, 9, 0, tzinfo=UTC)
KIMI = "kimi-k2-0905-preview"
GLM = "glm-4.6"
USAGE = {"prompt_tokens": 1000, "completion_tokens": 200}
USAGE_KEYS = ["day", "model", "provider", "tool_name"]
MIGRATION_PG = "20261130110000"


def test_the_vocabulary() -> None:
    assert canonical_provider(" Moonshot ") == "kimi" and canonical_provider("Z.AI") == "glm"
    assert canonical_provider("OpenAI") == "openai" and canonical_provider(None) is None
    assert canonical_price_id("moonshot/kimi-k2@2025-09-05") == "kimi/kimi-k2@2025-09-05"
    assert canonical_price_id("acme/acme-1@2026-01-01") == "acme/acme-1@2026-01-01"
    assert set(PROVIDER_ALIASES.values()) <= {"kimi", "glm", "google", "xai"}
    # The migrations renamed exactly the aliases the package maps (an alias added later needs
    # a migration of its own to rename what was stored under it).
    assert dict(ALIASES_0004) == PROVIDER_ALIASES, "a new alias: add a migration renaming stored rows"
    sql = next(m.sql for m in pg_schema.migration_files() if m.version == MIGRATION_PG)
    for alias, canonical in PROVIDER_ALIASES.items():
        assert f"when '{alias}' then '{canonical}'" in sql


def test_the_price_table_speaks_the_vocabulary(sqlite_store: SQLiteStore) -> None:
    providers = {p.provider for p in sqlite_store.prices.prices}
    assert {"kimi", "glm"} <= providers and not providers & set(PROVIDER_ALIASES)
    assert sqlite_store.prices.provider_of(KIMI) == "kimi" and sqlite_store.prices.provider_of(GLM) == "glm"
    # A price file written with a vendor's name is read in the vocabulary, its id too.
    added = sqlite_store.add_prices(
        [
            persistence.pricing.Price.from_mapping(
                {
                    "provider": "Zhipu",
                    "model": "glm-x",
                    "match": "glm-x",
                    "effective_from": "2026-01-01",
                    "input": 1,
                    "output": 2,
                }
            )
        ]
    )
    assert added == 1 and sqlite_store.prices.get("glm/glm-x@2026-01-01") is not None


def test_a_provider_alias_is_stored_under_its_canonical_name(store: persistence.Store) -> None:
    store.record_message("t", "assistant", "given as a vendor name", model=KIMI, provider="Moonshot", usage=USAGE)
    store.record_message("t", "assistant", "inferred from the model", model=KIMI, usage=USAGE)
    store.record_message("t", "assistant", "given as the server names it", model=KIMI, provider="kimi", usage=USAGE)
    store.record_message("t", "assistant", "z.ai", model=GLM, provider="Z.AI", usage=USAGE)
    store.record_message("t", "assistant", "inferred", model=GLM, usage=USAGE)
    store.record_messages(
        [{"continuation_id": "t", "role": "assistant", "content": "batch", "model": GLM, "provider": "zhipu"}]
    )
    conv = store.get_conversation("t")
    assert conv is not None
    assert [m.provider for m in conv.messages] == ["kimi", "kimi", "kimi", "glm", "glm", "glm"]
    by_provider = store.usage(("provider",)).set_index("provider")
    assert list(by_provider.index) == ["glm", "kimi"]
    assert list(by_provider["messages"]) == [3, 3]
    # Reads take an alias too.
    assert int(store.usage((), provider="moonshot")["messages"].iloc[0]) == 3

    f = store.put_file(b"for the provider\n", filename="p.txt")
    store.record_provider_file(f.id, "MoonshotAI", "file-1")
    found = store.find_provider_file(f.file_hash, "moonshot")
    assert found is not None and found.provider == "kimi" and found.provider_file_id == "file-1"
    assert [p.provider for p in store.list_provider_files()] == ["kimi"]


def test_an_import_maps_aliases_and_the_price_ids_that_name_them(store: persistence.Store) -> None:
    if signed_in(store):  # import writes rows for any owner: the server's only
        assert_server_only(lambda: store.import_records([]), "import")
        return
    record = {
        "format": EXPORT_FORMAT,
        "conversation": {
            "id": "5c1d9c1e-2b1a-4c1d-9e1f-0a1b2c3d4e5f",
            "continuation_id": "old",
            "created_at": T0.isoformat(),
        },
        "messages": [
            {
                "id": "6d2e0d2f-3c2b-4d2e-8f20-1b2c3d4e5f60",
                "seq": 1,
                "role": "assistant",
                "content": "old",
                "created_at": T0.isoformat(),
                "model": KIMI,
                "provider": "moonshot",
                "cost_usd": 0.001,
                "price_id": f"moonshot/{KIMI}@2025-09-05",
                "usage": {"input_tokens": 1000, "output_tokens": 200},
            }
        ],
    }
    store.import_records([record])
    conv = store.get_conversation("old")
    assert conv is not None
    assert (conv.messages[0].provider, conv.messages[0].price_id) == ("kimi", f"kimi/{KIMI}@2025-09-05")


# -- the migrations --------------------------------------------------------------------------


def _write(store: persistence.Store) -> tuple[list[str], dict[str, str]]:
    """Threads on two days with Kimi and GLM turns, uploads (one deduplicated) and provider
    uploads. Returns the ids of the messages an old store named by the vendor, and the upload
    ids by filename."""
    aliased: list[str] = []
    # Per day 4 Kimi turns (every other one named by the vendor) and 3 GLM turns (the first).
    turns = [(KIMI, i, i % 2 == 1) for i in range(4)] + [(GLM, 10 + i, i == 0) for i in range(3)]
    for day in range(2):
        for model, minute, by_vendor in turns:
            m = store.record_message(
                f"t-{day}",
                "assistant",
                f"{model} at minute {minute}",
                model=model,
                usage=USAGE,
                tool_name="chat",
                created_at=T0 + timedelta(days=day, minutes=minute),
                duration_ms=100 * (minute + 1),
            )
            if by_vendor:
                aliased.append(m.id)
    uploads = {}
    for name, data, minutes in (("a.txt", b"same\n", 0), ("b.txt", b"same\n", 5), ("c.txt", b"other\n", 10)):
        f = store.put_file(data, filename=name, continuation_id="t-0", created_at=T0 + timedelta(minutes=minutes))
        assert f.upload_id is not None
        uploads[name] = f.upload_id
    a = store.get_file(uploads["a.txt"])
    assert a is not None
    store.record_provider_file(a.id, "kimi", "pf-old")
    store.record_provider_file(a.id, "glm", "pf-glm")
    return aliased, uploads


OLD_ROLLUP = """insert into {t}usage_daily (day, user_id, model, provider, tool_name, messages, input_tokens,
        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_messages,
        duration_ms)
    select {day}, {user}, coalesce(model_used, ''), coalesce(provider, ''), coalesce(tool_name, ''), count(*),
        sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens), sum(output_tokens),
        sum(reasoning_tokens), coalesce(sum(cost), 0), sum(case when cost is null and tokens > 0 then 1 else 0 end),
        coalesce(sum(duration_ms), 0)
    from {t}messages group by 1, 2, 3, 4, 5"""
PRICE_COLUMNS = (
    "model, match, effective_from, input, cached_input, cache_write, output, tier_above_tokens, tier_input, "
    "tier_cached_input, tier_cache_write, tier_output, tier2_above_tokens, tier2_input, tier2_cached_input, "
    "tier2_output, source, as_of, origin"
)


def _make_old(execute: Any, ids: str, file_id: str, *, t: str, day: str, user: str) -> set[str]:
    """Turn a store into what one written before the vocabulary holds: the inferred turns
    named by the vendor (their price ids too) and a rollup keyed so; a provider upload under
    the vendor's name older than the current one; a price row under the vendor's name and one
    whose new id is taken. Returns the rollup's providers."""
    execute(f"update {t}messages set provider = 'moonshot' where provider = 'kimi' and id {ids}")
    execute(f"update {t}messages set provider = 'zhipu' where provider = 'glm' and id {ids}")
    execute(f"update {t}messages set price_id = 'moonshot' || substr(price_id, 5) where provider = 'moonshot'")
    execute(f"update {t}messages set price_id = 'zhipu' || substr(price_id, 4) where provider = 'zhipu'")
    execute(f"delete from {t}usage_daily")
    execute(OLD_ROLLUP.format(t=t, day=day, user=user))
    execute(
        f"update {t}provider_files set provider = 'moonshot', created_at = '2020-01-01T00:00:00+00:00' "
        "where provider = 'kimi'"
    )
    execute(f"update {t}provider_files set provider = 'zhipu' where provider_file_id = 'pf-glm'")
    execute(
        f"insert into {t}provider_files (id, file_id, provider, provider_file_id, purpose, created_at) "
        f"values ('0b1c2d3e-0000-4000-8000-000000000001', '{file_id}', 'kimi', 'pf-new', '', "
        "'2021-01-01T00:00:00+00:00')"
    )
    execute(
        f"update {t}model_prices set id = 'moonshot' || substr(id, 5), provider = 'moonshot' "
        "where id = 'kimi/kimi-k3@2026-07-16'"
    )
    execute(
        f"insert into {t}model_prices (id, provider, {PRICE_COLUMNS}) select 'moonshot' || substr(id, 5), "
        f"'moonshot', {PRICE_COLUMNS} from {t}model_prices where id = 'kimi/kimi-k2-thinking@2025-11-06'"
    )
    return {r[0] for r in execute(f"select distinct provider from {t}usage_daily").fetchall()}


READS = {
    "providers": "select distinct provider from {t}messages order by 1",
    "price_ids": "select distinct substr(price_id, 1, {pos}) from {t}messages order by 1",
    "rollup": "select count(*) from {t}usage_daily",
    "provider_files": "select provider, provider_file_id from {t}provider_files order by provider",
    "prices": "select id, provider from {t}model_prices order by id",
}


def _read(execute: Any, t: str, pos: str) -> dict[str, list[tuple[Any, ...]]]:
    return {k: [tuple(r) for r in execute(sql.format(t=t, pos=pos)).fetchall()] for k, sql in READS.items()}


@pytest.mark.parametrize("backend", ["sqlite", pytest.param("postgres", marks=pytest.mark.postgres)])
def test_a_store_with_both_spellings_is_merged_by_the_migration(
    backend: str, tmp_path: Path, request: pytest.FixtureRequest, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A store migrated up to the one before (SQLite 0003, Postgres 20261130100000), holding
    rows written as the package wrote them then, is migrated: one name per vendor, sums kept,
    uploads' deduplicated flags backfilled."""
    store: persistence.Store
    if backend == "sqlite":
        path = tmp_path / "h.db"
        store = persistence.open_store(f"sqlite:///{path}")
    else:
        import psycopg
        from conftest import create_database, drop_database

        request.getfixturevalue("pg_server")
        url = create_database()
        request.addfinalizer(lambda: drop_database(url))
        before_this = tuple(m for m in pg_schema.migration_files() if m.version < MIGRATION_PG)
        with monkeypatch.context() as m:  # a store of the release before: the migrations before this one
            m.setattr(pg_schema, "migration_files", lambda: before_this)
            with psycopg.connect(url, autocommit=True) as conn:
                pg_schema.migrate(conn)
            store = persistence.open_store(url, files_dir=tmp_path / "files")
    request.addfinalizer(store.close)
    aliased, uploads = _write(store)
    a = store.get_file(uploads["a.txt"])
    assert a is not None
    before = store.usage(USAGE_KEYS)
    before_prices = [(p.id, p.provider) for p in sorted(store.prices.prices, key=lambda p: p.id)]
    if backend == "sqlite":
        store.close()
        db = sqlite3.connect(path)
        with db:
            ids = "in (" + ", ".join(f"'{i}'" for i in aliased) + ")"
            old = _make_old(db.execute, ids, a.id, t="", day="substr(created_at, 1, 10)", user="coalesce(user_id, '')")
            # What 0003 left: 0004 not applied, no deduplicated column.
            db.execute("delete from _migrations where name = '0004_dedup_and_providers'")
            db.execute("alter table file_uploads drop column deduplicated")
        db.close()
        store = persistence.open_store(f"sqlite:///{path}")  # migrates
        request.addfinalizer(store.close)
        with sqlite3.connect(path) as db:
            after = _read(db.execute, "", "instr(price_id, '/')")
        db.close()
    else:
        with psycopg.connect(url) as conn:
            ids = "= any(array[" + ", ".join(f"'{i}'::uuid" for i in aliased) + "])"
            old = _make_old(
                conn.execute, ids, a.id, t="public.", day="(created_at at time zone 'UTC')::date", user="user_id"
            )
            conn.commit()
        with psycopg.connect(url, autocommit=True) as conn:
            assert [m.version for m in pg_schema.migrate(conn)][:1] == [MIGRATION_PG]
            after = _read(conn.execute, "public.", "strpos(price_id, '/')")
    assert old == {"kimi", "moonshot", "glm", "zhipu"}  # the old store split each vendor in two
    assert after["providers"] == [("glm",), ("kimi",)]
    assert after["price_ids"] == [("glm/",), ("kimi/",)]
    assert after["rollup"] == [(4,)]  # 2 days x 2 models: one row each
    assert after["provider_files"] == [("glm", "pf-glm"), ("kimi", "pf-new")]  # the newer kimi upload stays
    assert after["prices"] == before_prices  # renamed back; the copy whose new id was taken dropped
    # One row per vendor, the sums preserved.
    by_provider = store.usage(("provider",))
    assert list(by_provider["provider"]) == ["glm", "kimi"] and list(by_provider["messages"]) == [6, 8]
    pd.testing.assert_frame_equal(store.usage(USAGE_KEYS), before, check_exact=False, rtol=1e-12)
    # Uploads are backfilled: deduplicated when an earlier upload of the same object exists.
    flags = {f.filename: f.deduplicated for f in store.list_files(limit=10)}
    assert flags == {"a.txt": False, "b.txt": True, "c.txt": False}


def test_the_thread_filter_takes_an_alias_too(store: persistence.Store) -> None:
    store.record_message("alias-filter", "assistant", "hi", model="kimi-k2-0905-preview", provider="moonshot")
    assert [c.continuation_id for c in store.list_conversations(provider="moonshot")] == ["alias-filter"]
    assert store.count_conversations(provider="MoonShot") == 1
