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

from .search_query import index_text


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
]
