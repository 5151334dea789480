"""SQLite schema migrations, applied in order when a store opens.

Each migration runs in one transaction and is recorded by name in ``_migrations``. A
released migration is never edited: a fix is a new migration appended to the list.

The tables mirror the Postgres ones in ``supabase/migrations`` (see DESIGN.md's data model):
uuids and JSON are TEXT, ``text[]`` is a JSON array, timestamps are fixed-width ISO-8601 UTC
text (``2025-01-02T03:04:05.000006+00:00``), so they sort as they compare.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Callable

from ...pricing import UNREAD_USAGE, is_unpriced
from ...search_query import index_text


def reindex_search(db: sqlite3.Connection) -> None:
    """Recompute every message's search_extra with the current ``index_text`` (normalised
    text, emoji, marks, identifiers): the update trigger re-indexes the changed rows. A
    Python step because the index text is computed in Python, on every backend alike."""
    last = 0
    while True:  # in batches, so a large store is never read into memory at once
        rows = db.execute(
            "select rowid, content, search_extra from messages where rowid > ? order by rowid limit 2000", (last,)
        ).fetchall()
        if not rows:
            return
        changed = [(new, rowid) for rowid, content, old in rows if (new := index_text(content)) != old]
        db.executemany("update messages set search_extra = ? where rowid = ?", changed)
        last = rows[-1][0]


def flag_unpriced(db: sqlite3.Connection) -> None:
    """Set every message's ``unpriced`` flag to what :func:`persistence.pricing.is_unpriced`
    says of it (the rule's one copy in the package; a migration and ``recover`` run this,
    every write sets the flag as it prices the message)."""
    last = 0
    while True:  # in batches, as reindex_search
        rows = db.execute(
            f"select rowid, cost, tokens, json_type(metadata, '$.{UNREAD_USAGE}') is not null, unpriced "
            "from messages where rowid > ? order by rowid limit 2000",
            (last,),
        ).fetchall()
        if not rows:
            return
        changed = [
            (int(new), rowid)
            for rowid, cost, tokens, unread, old in rows
            if (new := is_unpriced(cost, tokens, bool(unread))) != bool(old)
        ]
        db.executemany("update messages set unpriced = ? where rowid = ?", changed)
        last = rows[-1][0]


def add_unpriced_flag(db: sqlite3.Connection) -> None:
    """0003: messages store whether they are unpriced, so totals and rollups only sum it."""
    db.execute("alter table messages add column unpriced integer not null default 0")
    flag_unpriced(db)


# The aliases 0004 renamed: persistence/providers.py's PROVIDER_ALIASES when it was released
# (a copy, so the released migration never changes when the package learns a new alias).
ALIASES_0004 = (
    ("moonshot", "kimi"),
    ("moonshotai", "kimi"),
    ("moonshot-ai", "kimi"),
    ("moonshot_ai", "kimi"),
    ("zhipu", "glm"),
    ("zhipuai", "glm"),
    ("zhipu-ai", "glm"),
    ("zhipu_ai", "glm"),
    ("bigmodel", "glm"),
    ("zai", "glm"),
    ("z.ai", "glm"),
    ("z-ai", "glm"),
    ("gemini", "google"),
    ("x.ai", "xai"),
    ("x-ai", "xai"),
)
USAGE_DAILY_KEY = ("day", "user_id", "model", "provider", "tool_name")


def dedup_and_providers(db: sqlite3.Connection) -> None:
    """0004: uploads store whether their bytes were stored already, and providers have one
    vocabulary (persistence/providers.py).

    ``file_uploads.deduplicated``: put_file returned it but nothing kept it, so the Files page
    showed every upload as new. Existing uploads are deduplicated when an earlier upload of the
    same stored object exists (by time, then id).

    Providers: a provider not given was inferred from the price table as ``moonshot`` or
    ``zhipu`` while the server, the zen adapter and the demo say ``kimi`` and ``glm``, so "by
    provider" split one vendor in two. Every stored name is lower-cased with its alias mapped:
    messages (and the price ids they name), the daily rollup (whose key holds the provider:
    rows that meet under the new name are merged by summing every other column), provider
    uploads (the newest of two that meet is kept, as a new upload replaces an old one) and
    price rows (renamed with their ids; a row whose new id is taken is dropped)."""
    db.execute("alter table file_uploads add column deduplicated integer not null default 0")
    db.execute(
        """update file_uploads set deduplicated = 1 where exists (
               select 1 from file_uploads e where e.file_id = file_uploads.file_id
                   and (e.created_at, e.id) < (file_uploads.created_at, file_uploads.id))"""
    )

    db.execute("create temp table provider_alias_0004 (alias text primary key, canonical text not null)")
    db.executemany("insert into temp.provider_alias_0004 (alias, canonical) values (?, ?)", ALIASES_0004)

    def canon(column: str) -> str:
        name = f"lower(trim({column}))"
        return f"coalesce((select a.canonical from temp.provider_alias_0004 a where a.alias = {name}), {name})"

    def alias_of(column: str) -> str:  # the canonical name when column is an alias, else NULL
        return f"(select a.canonical from temp.provider_alias_0004 a where a.alias = lower(trim({column})))"

    db.execute(
        f"update messages set provider = nullif({canon('provider')}, '') where provider is not {canon('provider')}"
    )
    prefix = "substr(price_id, 1, instr(price_id, '/') - 1)"
    db.execute(
        f"update messages set price_id = {alias_of(prefix)} || substr(price_id, instr(price_id, '/')) "
        f"where instr(price_id, '/') > 1 and {alias_of(prefix)} is not null"
    )

    sums = [r[1] for r in db.execute("pragma table_info(usage_daily)") if r[1] not in USAGE_DAILY_KEY]
    keys = ", ".join(USAGE_DAILY_KEY)
    db.execute(
        f"""insert into usage_daily ({keys}, {", ".join(sums)})
            select day, user_id, model, {canon("provider")}, tool_name, {", ".join(f"sum({c})" for c in sums)}
            from usage_daily where provider <> {canon("provider")}
            group by day, user_id, model, {canon("provider")}, tool_name
            on conflict ({keys}) do update set {", ".join(f"{c} = {c} + excluded.{c}" for c in sums)}"""
    )
    db.execute(f"delete from usage_daily where provider <> {canon('provider')}")

    db.execute(
        f"""delete from provider_files where id in (
                select id from (
                    select id, row_number() over (
                        partition by file_id, {canon("provider")}, purpose order by created_at desc, id desc) as n
                    from provider_files)
                where n > 1)"""
    )
    db.execute(f"update provider_files set provider = {canon('provider')} where provider <> {canon('provider')}")

    renamed = db.execute(
        f"select id, {alias_of('provider')}, substr(id, instr(id, '/')) from model_prices "
        f"where {alias_of('provider')} is not null order by id"
    ).fetchall()
    taken = {r[0] for r in db.execute("select id from model_prices")}
    for old_id, canonical, rest in renamed:
        new_id = canonical + rest if rest.startswith("/") else old_id
        if new_id != old_id and new_id in taken:
            db.execute("delete from model_prices where id = ?", (old_id,))
        else:
            db.execute("update model_prices set id = ?, provider = ? where id = ?", (new_id, canonical, old_id))
            taken.discard(old_id)
            taken.add(new_id)
    db.execute("drop table temp.provider_alias_0004")


# Which facets a thread has: the models, providers and tools any of its messages used, and the
# thread's own tool. What the Threads page's model/provider/tool filters read (issue 16: probing
# every thread's messages cost 0.5-7 s at a million). Messages are only ever deleted with their
# thread, by prune, which deletes the thread's facets too, so a row never goes stale. No foreign
# key: a cascade needs an index on conversation_id, a second b-tree every new facet row lands
# in at a random place (bulk writes at a million pay for each page it dirties), while prune
# deletes in one pass over the table.
THREAD_FACETS_TABLE = """
create table thread_facets (
    kind text not null check (kind in ('model', 'provider', 'tool')),
    value text not null,
    conversation_id text not null,
    primary key (kind, value, conversation_id)
) without rowid
"""
# What the facet rows of the messages a WHERE fragment selects are (the thread's own tool aside).
FACETS_OF_MESSAGES = """
select 'model', model_used, conversation_id from messages where {where} and model_used is not null
union select 'provider', provider, conversation_id from messages where {where} and provider is not null
union select 'tool', tool_name, conversation_id from messages where {where} and tool_name is not null
"""


def rebuild_thread_facets(db: sqlite3.Connection) -> None:
    """Every thread's facets from its messages and its own tool (the migration's backfill, and
    ``recover``, which copies messages in without the write path)."""
    db.execute("delete from thread_facets")
    # UNION sorts and removes duplicates, so the rows go in in key order: one pass at a million.
    db.execute(
        "insert into thread_facets (kind, value, conversation_id) "
        + FACETS_OF_MESSAGES.format(where="1")
        + " union select 'tool', tool_name, id from conversations where tool_name is not null"
    )


def add_thread_facets(db: sqlite3.Connection) -> None:
    """0005: the thread_facets table, filled from the messages stored so far."""
    db.execute(THREAD_FACETS_TABLE)
    rebuild_thread_facets(db)


# A migration is SQL, or a Python step given the open write transaction.
MIGRATIONS: list[tuple[str, str | Callable[[sqlite3.Connection], None]]] = [
    (
        "0001_initial",
        """
create table conversations (
    id text primary key,
    continuation_id text not null unique,   -- the MCP thread id
    parent_id text,                         -- the parent thread's continuation_id (may be unstored)
    session_id text,
    user_id text,
    title text,
    summary text,
    tool_name text,
    model_used text,                        -- the model of the latest turn that named one
    status text not null default 'active',
    tags text not null default '[]',
    initial_context text,
    metadata text not null default '{}',
    created_at text not null,
    updated_at text not null,               -- last activity
    expires_at text,
    message_count integer not null default 0,
    total_tokens integer not null default 0,
    input_tokens integer not null default 0,
    cached_input_tokens integer not null default 0,
    cache_write_tokens integer not null default 0,
    output_tokens integer not null default 0,
    reasoning_tokens integer not null default 0,
    total_cost real not null default 0,     -- sum of the priced messages' cost (USD)
    unpriced_messages integer not null default 0
);
create index conversations_updated_at on conversations (updated_at, id);
create index conversations_created_at on conversations (created_at, id);
create index conversations_total_cost on conversations (total_cost, id);
create index conversations_parent_id on conversations (parent_id);
create index conversations_session_id on conversations (session_id);

create table messages (
    -- Declared so VACUUM can never renumber it: the full-text index points at it.
    rowid integer primary key,
    id text not null unique,                -- client-generated uuid: the idempotency key
    conversation_id text not null references conversations (id) on delete cascade,
    seq integer not null,                   -- turn number, assigned inside the write transaction
    role text not null check (role in ('user', 'assistant', 'system', 'tool')),
    content text not null,
    tool_name text,
    provider text,
    model_used text,
    tokens integer not null default 0,
    input_tokens integer not null default 0,
    cached_input_tokens integer not null default 0,
    cache_write_tokens integer not null default 0,
    output_tokens integer not null default 0,
    reasoning_tokens integer not null default 0,
    cost real,                              -- USD; NULL when no price is known
    price_id text,
    duration_ms integer,
    files text not null default '[]',
    images text not null default '[]',
    metadata text not null default '{}',
    user_id text,
    created_at text not null,
    search_extra text,                      -- what is indexed instead of content when it has CJK runs
    unique (conversation_id, seq)
);
create index messages_created_at on messages (created_at);

-- What the full-text index reads: the content, or for text with CJK runs the same text with
-- each run spelled as overlapping character pairs (see persistence/search_query.py).
create view messages_search as
    select rowid, coalesce(search_extra, content) as body from messages;

create virtual table messages_fts using fts5 (
    body,
    content = 'messages_search',
    content_rowid = 'rowid',
    tokenize = 'porter unicode61 remove_diacritics 2'
);
create trigger messages_fts_insert after insert on messages begin
    insert into messages_fts (rowid, body) values (new.rowid,
        coalesce(new.search_extra, new.content));
end;
create trigger messages_fts_delete after delete on messages begin
    insert into messages_fts (messages_fts, rowid, body) values ('delete', old.rowid,
        coalesce(old.search_extra, old.content));
end;
create trigger messages_fts_update after update of content, search_extra on messages begin
    insert into messages_fts (messages_fts, rowid, body) values ('delete', old.rowid,
        coalesce(old.search_extra, old.content));
    insert into messages_fts (rowid, body) values (new.rowid,
        coalesce(new.search_extra, new.content));
end;

-- One row per stored object: bytes are stored once per owner and content hash.
create table files (
    id text primary key,
    file_hash text not null,                -- sha256 hex
    bucket_name text not null,
    storage_path text not null unique,      -- {owner}/{hash[:2]}/{hash}
    filename text not null,                 -- of the first upload
    mime_type text not null,
    file_size integer not null,
    user_id text,
    session_id text,
    conversation_id text,
    tags text not null default '[]',
    description text,
    metadata text not null default '{}',
    created_at text not null,
    updated_at text not null
);
create unique index files_owner_hash on files (coalesce(user_id, ''), file_hash);
create index files_created_at on files (created_at);

-- One row per upload: its own name, session, conversation and time (what logical_bytes counts).
create table file_uploads (
    id text primary key,
    file_id text not null references files (id) on delete cascade,
    filename text not null,
    mime_type text not null,
    file_size integer not null,
    user_id text,
    session_id text,
    conversation_id text references conversations (id) on delete set null,
    tags text not null default '[]',
    description text,
    metadata text not null default '{}',
    created_at text not null
);
create index file_uploads_file_id on file_uploads (file_id);
create index file_uploads_created_at on file_uploads (created_at, id);
create index file_uploads_conversation_id on file_uploads (conversation_id);

create table conversation_files (
    conversation_id text not null references conversations (id) on delete cascade,
    file_id text not null references files (id) on delete cascade,
    created_at text not null,
    primary key (conversation_id, file_id)
) without rowid;
create index conversation_files_file_id on conversation_files (file_id);

-- The provider-side id of a stored file (Kimi, GLM …), so one file is never uploaded twice
-- to one provider for one purpose.
create table provider_files (
    id text primary key,
    file_id text not null references files (id) on delete cascade,
    provider text not null,
    provider_file_id text not null,
    purpose text not null default '',       -- '' stands for none, so the unique key can merge
    created_at text not null,
    expires_at text,
    unique (file_id, provider, purpose)
);
create index file_uploads_session_id on file_uploads (session_id, created_at);
create index files_file_hash on files (file_hash);

create table model_prices (
    id text primary key,                    -- provider/model@effective_from
    provider text not null,
    model text not null,
    match text not null,                    -- case-insensitive regex over model names
    effective_from text not null,
    input real not null,
    cached_input real,
    cache_write real,
    output real not null,
    tier_above_tokens integer,
    tier_input real,
    tier_cached_input real,
    tier_cache_write real,
    tier_output real,
    tier2_above_tokens integer,
    tier2_input real,
    tier2_cached_input real,
    tier2_output real,
    source text not null default '',
    as_of text,
    origin text not null default 'package'  -- package | user
);

-- Kept current by every write, so charts cost O(days x models), not O(messages).
-- '' stands for "none" in the key columns, so the primary key can merge them.
create table usage_daily (
    day text not null,
    user_id text not null default '',
    model text not null default '',
    provider text not null default '',
    tool_name text not null default '',
    messages integer not null default 0,
    input_tokens integer not null default 0,
    cached_input_tokens integer not null default 0,
    cache_write_tokens integer not null default 0,
    output_tokens integer not null default 0,
    reasoning_tokens integer not null default 0,
    cost_usd real not null default 0,
    unpriced_messages integer not null default 0,
    duration_ms integer not null default 0,
    primary key (day, user_id, model, provider, tool_name)
) without rowid;

create table store_meta (
    key text primary key,
    value text not null
);
""",
    ),
    ("0002_search_index_v2", reindex_search),
    ("0003_unpriced_flag", add_unpriced_flag),
    ("0004_dedup_and_providers", dedup_and_providers),
    ("0005_thread_facets", add_thread_facets),
    (
        "0006_budgets",
        """
-- Spending limits (persistence/insights.py): per day, week or month, on the whole store
-- (scope 'store', key '') or on one model, provider, tool_name or tag.
create table budgets (
    id text primary key,
    scope text not null check (scope in ('store', 'model', 'provider', 'tool_name', 'tag')),
    key text not null default '',
    period text not null check (period in ('day', 'week', 'month')),
    limit_usd real not null check (limit_usd > 0),
    created_at text not null,
    updated_at text not null,
    unique (scope, key, period)
);
""",
    ),
    (
        "0007_redaction",
        """
-- When redact erased the text of a thread, a message or an upload; NULL: never. Tokens,
-- costs, models and times stay (persistence/redaction.py). A stored object's bytes are gone
-- while it has uploads and every one of them is redacted (a new upload places them again).
alter table conversations add column redacted_at text;
alter table messages add column redacted_at text;
alter table file_uploads add column redacted_at text;
""",
    ),
]
