-- The persistence data model (DESIGN.md), built on the plan's tables in place.
--
-- On a new database this extends the tables the previous migration just created; on a
-- database that ran the plan's migrations it upgrades them keeping every row: new columns,
-- costs widened from decimal(10,4) (a message can cost $0.00003), turn numbers (seq) assigned
-- to existing messages in time order, thread totals and the daily rollup computed from them,
-- each plan file row recorded as an upload and duplicate bytes folded into one stored object.
-- The plan's "for all using (true)" policies are dropped: every table gets row level security
-- with one policy per operation for authenticated users, scoped to the rows they own.
-- anon gets nothing; service_role bypasses RLS (it stays on the server).

-- ---------------------------------------------------------------------------------------
-- Refuse data that cannot be upgraded, before changing anything.

do $$
begin
    if exists (select 1 from public.messages where conversation_id is null) then
        raise exception 'public.messages has % row(s) without a conversation_id; they cannot be upgraded',
            (select count(*) from public.messages where conversation_id is null)
            using hint = 'Delete them, or point them at a conversation, then migrate again.';
    end if;
end
$$;

-- Extensions: btree_gin (a date beside the tsvector in one GIN index, below) and pg_trgm
-- (substring search in titles, any script). In Supabase's extensions schema where it exists.
do $$
declare
    v_schema text := case when to_regnamespace('extensions') is null then 'public' else 'extensions' end;
begin
    execute format('create extension if not exists btree_gin with schema %I', v_schema);
    execute format('create extension if not exists pg_trgm with schema %I', v_schema);
end
$$;

-- ---------------------------------------------------------------------------------------
-- conversations

alter table public.conversations
    add column if not exists parent_id text,
    add column if not exists user_id uuid,
    add column if not exists tool_name text,
    add column if not exists initial_context jsonb,
    add column if not exists expires_at timestamptz,
    add column if not exists message_count integer not null default 0,
    add column if not exists input_tokens bigint not null default 0,
    add column if not exists cached_input_tokens bigint not null default 0,
    add column if not exists cache_write_tokens bigint not null default 0,
    add column if not exists output_tokens bigint not null default 0,
    add column if not exists reasoning_tokens bigint not null default 0,
    add column if not exists unpriced_messages integer not null default 0;

update public.conversations set
    created_at = coalesce(created_at, now()),
    updated_at = coalesce(updated_at, created_at, now()),
    total_tokens = coalesce(total_tokens, 0),
    total_cost = coalesce(total_cost, 0),
    status = coalesce(status, 'active'),
    tags = coalesce(tags, '{}'),
    metadata = coalesce(metadata, '{}')
where created_at is null or updated_at is null or total_tokens is null or total_cost is null
    or status is null or tags is null or metadata is null;

alter table public.conversations
    alter column created_at set not null,
    alter column updated_at set not null,
    alter column total_tokens type bigint,
    alter column total_tokens set not null,
    alter column total_cost type numeric(20, 10),
    alter column total_cost set not null,
    alter column status set not null,
    alter column tags set default '{}',
    alter column tags set not null,
    alter column metadata set default '{}',
    alter column metadata set not null;

alter table public.conversations drop constraint if exists conversations_status_check;
alter table public.conversations
    add constraint conversations_status_check check (status in ('active', 'archived', 'deleted'));

-- updated_at is the thread's last activity, kept by the write functions (a late-arriving
-- older turn does not move it). The plan's trigger stamped the wall clock on every update,
-- totals included, so it goes; files keep theirs.
drop trigger if exists update_conversations_updated_at on public.conversations;

comment on table public.conversations is
    'A thread (the MCP continuation), with running totals kept by record_message. Owned by user_id.';
comment on column public.conversations.continuation_id is 'The MCP thread id; unique.';
comment on column public.conversations.parent_id is 'The parent thread''s continuation_id (it need not be stored).';
comment on column public.conversations.model_used is 'The model of the newest turn that named one.';
comment on column public.conversations.updated_at is 'Last activity: the newest turn''s time.';
comment on column public.conversations.total_cost is 'USD, the sum of the priced messages'' cost.';
comment on column public.conversations.unpriced_messages is 'Messages with tokens but no known price (cost NULL).';

-- The plan's index on continuation_id duplicates its unique constraint's; created_at is
-- indexed with id below, for keyset pages.
drop index if exists public.idx_conversations_continuation_id;
drop index if exists public.idx_conversations_created_at;

create index if not exists conversations_updated_at on public.conversations (updated_at, id);
create index if not exists conversations_created_at on public.conversations (created_at, id);
create index if not exists conversations_total_cost on public.conversations (total_cost, id);
create index if not exists conversations_parent_id on public.conversations (parent_id);
create index if not exists conversations_user_id on public.conversations (user_id);
-- No GIN index on tags or on the title's trigrams: every message updates its thread's row, and
-- as updated_at and total_cost are indexed that update is not HOT, so each GIN index would take
-- the whole title's trigrams again on every message (about 10% of record_message at a million
-- messages, more with long titles). The tag and title filters scan the threads in the period.

-- ---------------------------------------------------------------------------------------
-- messages

alter table public.messages
    add column if not exists seq integer,
    add column if not exists tool_name text,
    add column if not exists provider text,
    add column if not exists input_tokens bigint not null default 0,
    add column if not exists cached_input_tokens bigint not null default 0,
    add column if not exists cache_write_tokens bigint not null default 0,
    add column if not exists output_tokens bigint not null default 0,
    add column if not exists reasoning_tokens bigint not null default 0,
    add column if not exists price_id text,
    add column if not exists files text[] not null default '{}',
    add column if not exists images text[] not null default '{}',
    add column if not exists user_id uuid,
    add column if not exists search_extra text;

-- The plan's rows: turn numbers in time order, the owner of their thread. Their token
-- totals stay in tokens (the plan did not split them into buckets) and their cost as stored.
update public.messages m set seq = s.n
from (
    select id, row_number() over (partition by conversation_id order by created_at, id) as n
    from public.messages
) as s
where m.id = s.id and m.seq is null;

update public.messages m set
    created_at = coalesce(m.created_at, c.created_at),
    tokens = coalesce(m.tokens, 0),
    metadata = coalesce(m.metadata, '{}'),
    user_id = coalesce(m.user_id, c.user_id)
from public.conversations c
where c.id = m.conversation_id
    and (m.created_at is null or m.tokens is null or m.metadata is null or (m.user_id is null and c.user_id is not null));

alter table public.messages
    alter column conversation_id set not null,
    alter column seq set not null,
    alter column created_at set not null,
    alter column tokens type bigint,
    alter column tokens set default 0,
    alter column tokens set not null,
    alter column cost type numeric(20, 10),
    alter column duration_ms type bigint,
    alter column metadata set default '{}',
    alter column metadata set not null;

alter table public.messages drop constraint if exists messages_role_check;
alter table public.messages
    add constraint messages_role_check check (role in ('user', 'assistant', 'system', 'tool'));
alter table public.messages drop constraint if exists messages_conversation_seq;
alter table public.messages add constraint messages_conversation_seq unique (conversation_id, seq);

-- English stemming without a stop-word list, like SQLite's porter tokenizer: "after", "the"
-- or "between" are words a user can search for on every backend.
create text search dictionary public.persistence_english_stem (template = snowball, language = english);
create text search configuration public.persistence_english (copy = pg_catalog.english);
alter text search configuration public.persistence_english
    alter mapping for asciiword, asciihword, hword_asciipart, word, hword, hword_part
    with public.persistence_english_stem;
comment on text search configuration public.persistence_english is
    'English stemming (snowball) without stop words: what message search indexes and queries with.';

-- What full-text search reads: the content, or, when it has Chinese/Japanese/Korean/Thai
-- runs, search_extra (the same text with each run spelled as overlapping character pairs,
-- written by the package), so a run is found by any substring. Punctuation becomes spaces,
-- so words split exactly where the query parser splits them (retry_policy.py is three words,
-- not a file name). Only the first 100,000 characters are indexed: a tsvector is at most 1 MB.
alter table public.messages add column if not exists search_tsv tsvector
    generated always as (
        to_tsvector('public.persistence_english'::regconfig,
            regexp_replace(left(coalesce(search_extra, content), 100000), '[[:punct:]]', ' ', 'g'))
    ) stored;

-- The UTC day of a message, indexed with search_tsv: search finds the newest matches of a
-- common word in one index scan of the newest days instead of fetching every match.
alter table public.messages add column if not exists created_day date
    generated always as ((created_at at time zone 'UTC')::date) stored;

comment on table public.messages is
    'One turn of a thread. id is client-generated (the idempotency key); seq is assigned by record_message.';
comment on column public.messages.tokens is 'Total tokens: the sum of the five buckets.';
comment on column public.messages.cost is 'USD; NULL when no price is known (never 0 for unknown).';
comment on column public.messages.price_id is 'The model_prices row the cost was computed with.';
comment on column public.messages.search_extra is
    'For text with CJK runs: what is indexed instead of content (runs as overlapping character pairs).';

-- Covered by the unique (conversation_id, seq) index; replaced by search_tsv.
drop index if exists public.idx_messages_conversation_id;
drop index if exists public.idx_messages_content_fts;

create index if not exists messages_search on public.messages using gin (created_day, search_tsv);
create index if not exists messages_user_id on public.messages (user_id);

-- ---------------------------------------------------------------------------------------
-- files: one row per stored object (bytes are stored once per owner and sha256)

update public.files set
    created_at = coalesce(created_at, now()),
    updated_at = coalesce(updated_at, created_at, now()),
    file_size = coalesce(file_size, 0),
    mime_type = coalesce(mime_type, 'application/octet-stream'),
    tags = coalesce(tags, '{}'),
    metadata = coalesce(metadata, '{}')
where created_at is null or updated_at is null or file_size is null or mime_type is null
    or tags is null or metadata is null;

alter table public.files
    alter column created_at set not null,
    alter column updated_at set not null,
    alter column file_size set not null,
    alter column mime_type set not null,
    alter column tags set default '{}',
    alter column tags set not null,
    alter column metadata set default '{}',
    alter column metadata set not null;

comment on table public.files is
    'A stored object: one row per owner and content hash, at storage_path {owner}/{sha[:2]}/{sha}. '
    'Every upload of it is a row of file_uploads.';
comment on column public.files.filename is 'The name of the first upload (display only; never a path).';

drop index if exists public.idx_files_storage_path;  -- duplicates the unique constraint's index
create index if not exists files_user_id on public.files (user_id);
create index if not exists files_file_hash on public.files (file_hash);

create table if not exists public.file_uploads (
    id uuid primary key,
    file_id uuid not null references public.files (id) on delete cascade,
    filename text not null,
    mime_type text not null,
    file_size bigint not null,
    user_id uuid,
    session_id text,
    conversation_id uuid references public.conversations (id) on delete set null,
    tags text[] not null default '{}',
    description text,
    metadata jsonb not null default '{}',
    created_at timestamptz not null
);
comment on table public.file_uploads is
    'One row per upload, with its own name, session, thread and time (what logical bytes count).';
create index if not exists file_uploads_file_id on public.file_uploads (file_id);
create index if not exists file_uploads_created_at on public.file_uploads (created_at, id);
create index if not exists file_uploads_conversation_id on public.file_uploads (conversation_id);
create index if not exists file_uploads_session_id on public.file_uploads (session_id, created_at);
create index if not exists file_uploads_user_id on public.file_uploads (user_id);

create table if not exists public.conversation_files (
    conversation_id uuid not null references public.conversations (id) on delete cascade,
    file_id uuid not null references public.files (id) on delete cascade,
    user_id uuid,
    created_at timestamptz not null,
    primary key (conversation_id, file_id)
);
comment on table public.conversation_files is 'Which files each thread used. user_id is the thread''s owner.';
create index if not exists conversation_files_file_id on public.conversation_files (file_id);
create index if not exists conversation_files_user_id on public.conversation_files (user_id);

-- The plan's file rows: each is an upload of its own; where it named a thread, the thread
-- used it. Rows with the same owner and hash then become one stored object (the bytes at
-- the other paths are left where they are, unreferenced).
insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, session_id,
    conversation_id, tags, description, metadata, created_at)
select f.id, f.id, f.filename, f.mime_type, f.file_size, f.user_id, f.session_id,
    (select c.id from public.conversations c where c.id = f.conversation_id), f.tags, f.description,
    f.metadata, f.created_at
from public.files f
where not exists (select 1 from public.file_uploads u where u.file_id = f.id);

insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
select c.id, f.id, c.user_id, f.created_at
from public.files f
join public.conversations c on c.id = f.conversation_id
on conflict do nothing;

create temporary table file_merges on commit drop as
select id, first_value(id) over (partition by user_id, file_hash order by created_at, id) as keep
from public.files
where file_hash is not null;
delete from file_merges where id = keep;

update public.file_uploads u set file_id = m.keep from file_merges m where u.file_id = m.id;
insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
select cf.conversation_id, m.keep, cf.user_id, cf.created_at
from public.conversation_files cf
join file_merges m on m.id = cf.file_id
on conflict do nothing;
delete from public.files f using file_merges m where f.id = m.id;

create unique index if not exists files_owner_hash on public.files (user_id, file_hash) nulls not distinct
    where file_hash is not null;

-- ---------------------------------------------------------------------------------------
-- provider_files, model_prices, usage_daily, store_meta

create table if not exists public.provider_files (
    id uuid primary key,
    file_id uuid not null references public.files (id) on delete cascade,
    provider text not null,
    provider_file_id text not null,
    purpose text not null default '',
    user_id uuid,
    created_at timestamptz not null,
    expires_at timestamptz,
    unique (file_id, provider, purpose)
);
comment on table public.provider_files is
    'The provider-side id of a stored file (Kimi, GLM …), so a file is not uploaded twice. '
    'purpose '''' stands for none. user_id is the file''s owner.';
create index if not exists provider_files_user_id on public.provider_files (user_id);

create table if not exists public.model_prices (
    id text primary key,
    provider text not null,
    model text not null,
    match text not null,
    effective_from date not null,
    input numeric not null,
    cached_input numeric,
    cache_write numeric,
    output numeric not null,
    tier_above_tokens bigint,
    tier_input numeric,
    tier_cached_input numeric,
    tier_cache_write numeric,
    tier_output numeric,
    tier2_above_tokens bigint,
    tier2_input numeric,
    tier2_cached_input numeric,
    tier2_output numeric,
    source text not null default '',
    as_of text,
    origin text not null default 'package'
);
comment on table public.model_prices is
    'USD per 1M tokens per bucket, versioned by effective_from. Rows of origin ''package'' are synced '
    'from the package''s data/model_prices.toml when a store opens; ''user'' rows are added with add_prices.';

create table if not exists public.usage_daily (
    day date not null,
    user_id uuid,
    model text not null default '',
    provider text not null default '',
    tool_name text not null default '',
    messages bigint not null default 0,
    input_tokens bigint not null default 0,
    cached_input_tokens bigint not null default 0,
    cache_write_tokens bigint not null default 0,
    output_tokens bigint not null default 0,
    reasoning_tokens bigint not null default 0,
    cost_usd numeric(20, 10) not null default 0,
    unpriced_messages bigint not null default 0,
    duration_ms bigint not null default 0,
    constraint usage_daily_key unique nulls not distinct (day, user_id, model, provider, tool_name)
);
comment on table public.usage_daily is
    'Token and cost totals per UTC day, owner, model, provider and tool, kept current by every write, '
    'so usage reads O(days x models) rows. '''' stands for none in the text keys.';
create index if not exists usage_daily_user_id on public.usage_daily (user_id);

create table if not exists public.store_meta (
    key text primary key,
    value text not null
);
comment on table public.store_meta is 'Bookkeeping of the package (e.g. the digest of the synced price table).';

-- The plan's messages as a rollup and thread totals (nothing to do on a new database).
insert into public.usage_daily (day, user_id, model, provider, tool_name, messages, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd,
    unpriced_messages, duration_ms)
select (created_at at time zone 'UTC')::date, user_id, coalesce(model_used, ''), coalesce(provider, ''),
    coalesce(tool_name, ''), count(*), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens),
    sum(output_tokens), sum(reasoning_tokens), coalesce(sum(cost), 0),
    count(*) filter (where cost is null and (tokens > 0 or metadata ? 'usage_raw')), coalesce(sum(duration_ms), 0)
from public.messages
group by 1, 2, 3, 4, 5
on conflict on constraint usage_daily_key do nothing;

update public.conversations c set
    message_count = t.n,
    total_tokens = t.tokens,
    input_tokens = t.i,
    cached_input_tokens = t.ci,
    cache_write_tokens = t.cw,
    output_tokens = t.o,
    reasoning_tokens = t.r,
    total_cost = t.cost,
    unpriced_messages = t.unpriced
from (
    select conversation_id, count(*) as n, sum(tokens) as tokens, sum(input_tokens) as i,
        sum(cached_input_tokens) as ci, sum(cache_write_tokens) as cw, sum(output_tokens) as o,
        sum(reasoning_tokens) as r, coalesce(sum(cost), 0) as cost,
        count(*) filter (where cost is null and (tokens > 0 or metadata ? 'usage_raw')) as unpriced
    from public.messages
    group by conversation_id
) as t
where c.id = t.conversation_id and c.message_count = 0;

-- ---------------------------------------------------------------------------------------
-- Row level security: one policy per operation, for authenticated users, on their own rows.

alter table public.conversations enable row level security;
alter table public.messages enable row level security;
alter table public.files enable row level security;
alter table public.file_uploads enable row level security;
alter table public.conversation_files enable row level security;
alter table public.provider_files enable row level security;
alter table public.model_prices enable row level security;
alter table public.usage_daily enable row level security;
alter table public.store_meta enable row level security;

drop policy if exists "Service role has full access to conversations" on public.conversations;
drop policy if exists "Service role has full access to messages" on public.messages;
drop policy if exists "Service role has full access" on public.files;

do $$
declare
    v_table text;
begin
    foreach v_table in array array['conversations', 'messages', 'files', 'file_uploads',
                                   'conversation_files', 'provider_files', 'usage_daily'] loop
        execute format('drop policy if exists %I on public.%I', v_table || ': owners select', v_table);
        execute format('drop policy if exists %I on public.%I', v_table || ': owners insert', v_table);
        execute format('drop policy if exists %I on public.%I', v_table || ': owners update', v_table);
        execute format('drop policy if exists %I on public.%I', v_table || ': owners delete', v_table);
        execute format('create policy %I on public.%I for select to authenticated '
                       'using ((select auth.uid()) = user_id)', v_table || ': owners select', v_table);
        execute format('create policy %I on public.%I for insert to authenticated '
                       'with check ((select auth.uid()) = user_id)', v_table || ': owners insert', v_table);
        execute format('create policy %I on public.%I for update to authenticated '
                       'using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id)',
                       v_table || ': owners update', v_table);
        execute format('create policy %I on public.%I for delete to authenticated '
                       'using ((select auth.uid()) = user_id)', v_table || ': owners delete', v_table);
    end loop;
end
$$;

-- Prices are reference data every signed-in user may read; only the service role writes them.
drop policy if exists "model_prices: signed-in users select" on public.model_prices;
create policy "model_prices: signed-in users select" on public.model_prices
    for select to authenticated using (true);
-- store_meta: no policy, so only the service role (which bypasses RLS) reads or writes it.

-- Supabase grants anon and authenticated every privilege on new tables in public and relies
-- on RLS; anon gets nothing here, authenticated only the four operations its policies guard.
revoke all on table public.conversations, public.messages, public.files, public.file_uploads,
    public.conversation_files, public.provider_files, public.model_prices, public.usage_daily,
    public.store_meta from anon, authenticated, public;
grant select, insert, update, delete on table public.conversations, public.messages, public.files,
    public.file_uploads, public.conversation_files, public.provider_files, public.usage_daily
    to authenticated;
grant select on table public.model_prices to authenticated;
grant all on table public.conversations, public.messages, public.files, public.file_uploads,
    public.conversation_files, public.provider_files, public.model_prices, public.usage_daily,
    public.store_meta to service_role;

-- ---------------------------------------------------------------------------------------
-- The private Storage bucket, where the storage schema exists (Supabase, or the stand-in on a
-- plain Postgres). Objects live at {owner}/{sha[:2]}/{sha}: an authenticated user reaches only
-- the objects in their own folder. The plan's bucket policies (any role, any object) go.

do $$
begin
    if to_regclass('storage.buckets') is null or to_regclass('storage.objects') is null then
        return;
    end if;
    insert into storage.buckets (id, name, public) values ('mcp-files', 'mcp-files', false)
    on conflict (id) do nothing;
    update storage.buckets set public = false where id = 'mcp-files' and public;

    drop policy if exists "Service role can upload files" on storage.objects;
    drop policy if exists "Service role can read files" on storage.objects;
    drop policy if exists "Service role can delete files" on storage.objects;
    drop policy if exists "mcp-files: owners select" on storage.objects;
    drop policy if exists "mcp-files: owners insert" on storage.objects;
    drop policy if exists "mcp-files: owners update" on storage.objects;
    drop policy if exists "mcp-files: owners delete" on storage.objects;
    create policy "mcp-files: owners select" on storage.objects for select to authenticated
        using (bucket_id = 'mcp-files' and (storage.foldername(name))[1] = (select auth.uid())::text);
    create policy "mcp-files: owners insert" on storage.objects for insert to authenticated
        with check (bucket_id = 'mcp-files' and (storage.foldername(name))[1] = (select auth.uid())::text);
    create policy "mcp-files: owners update" on storage.objects for update to authenticated
        using (bucket_id = 'mcp-files' and (storage.foldername(name))[1] = (select auth.uid())::text)
        with check (bucket_id = 'mcp-files' and (storage.foldername(name))[1] = (select auth.uid())::text);
    create policy "mcp-files: owners delete" on storage.objects for delete to authenticated
        using (bucket_id = 'mcp-files' and (storage.foldername(name))[1] = (select auth.uid())::text);
end
$$;
