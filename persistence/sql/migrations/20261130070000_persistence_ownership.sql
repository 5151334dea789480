-- Ownership follows references; totals only the store writes (issue 11).
--
-- Row level security checks a row's own user_id and nothing else, so a signed-in user could
-- insert a message of their own into another user's thread, or an upload of their own that
-- points at another user's stored file (whose bytes the server then served them), and could
-- write their own thread totals and daily rollup. This migration:
--
-- 1. Makes every reference between user tables point at a row of the same owner, for every
--    caller (service role included; a thread may also use the server's shared files, which a
--    trigger checks): composite foreign keys on (id, owner_key), where
--    owner_key is user_id with the service's own rows (user_id NULL) as the nil uuid. A
--    foreign key on (id, user_id) alone would not do: with MATCH SIMPLE a NULL user_id is not
--    checked at all (a service row could point at anyone's), and MATCH FULL refuses the
--    service's rows outright. Existing data: a thread without an owner that used files of
--    one user becomes that user's (the plan's threads had no owner, its files did); any
--    other row that crosses owners stops the migration, listed, with a hint.
-- 2. Takes direct writes of totals, rollups, seq, costs and price ids away from authenticated:
--    no INSERT/UPDATE/DELETE on messages (but their content) and usage_daily, no DELETE on
--    threads (deleting one would leave the rollup counting its messages: threads go by
--    prune, which corrects it), UPDATE on stored objects only for descriptive fields, and UPDATE on
--    threads only for the fields update_conversation changes. record_message, which writes
--    them, becomes security definer, checks the ownership RLS checked before, validates its
--    arguments with the package's bounds (persistence/validation.py) and, for callers other
--    than the server, prices the message itself from model_prices (persistence/pricing.py's
--    rule) instead of taking p_cost and p_price_id. Whoever calls, a thread's totals and the
--    rollup stay the sums over the messages as stored, and a signed-in user's messages are
--    priced by the table.
-- 3. Smaller: a signed-in user's stored objects lie in their own folder, blob_sweep_until
--    answers them only about that folder; lock_conversation and applied_migrations: see there.

-- ---------------------------------------------------------------------------------------
-- Threads without an owner that used files of one user become that user's. The plan's
-- threads had no user_id column, while its files had one: on an upgraded plan database every
-- thread that used a file crosses owners, and the file's owner is the only evidence of whose
-- thread it was (and the plan's policies showed every row to everyone, so nobody sees more
-- than before). On a database already on the current schema such a thread is one the server
-- put that user's file in: theirs too. Its messages and their share of the rollup move with it.

create temporary table ownership_adopted on commit drop as
select c.id, min(f.user_id::text)::uuid as owner
from public.conversations c
join public.conversation_files cf on cf.conversation_id = c.id
join public.files f on f.id = cf.file_id and f.user_id is not null
where c.user_id is null
    and not exists (select 1 from public.messages m where m.conversation_id = c.id and m.user_id is not null)
group by c.id
having count(distinct f.user_id) = 1;

with moved as (
    select (m.created_at at time zone 'UTC')::date as day, a.owner, coalesce(m.model_used, '') as model,
        coalesce(m.provider, '') as provider, coalesce(m.tool_name, '') as tool_name, count(*) as n,
        sum(m.input_tokens) as i, sum(m.cached_input_tokens) as ci, sum(m.cache_write_tokens) as cw,
        sum(m.output_tokens) as o, sum(m.reasoning_tokens) as r, coalesce(sum(m.cost), 0) as cost,
        count(*) filter (where m.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw')) as unpriced,
        coalesce(sum(m.duration_ms), 0) as duration
    from public.messages m join ownership_adopted a on a.id = m.conversation_id
    group by 1, 2, 3, 4, 5
), taken as (
    update public.usage_daily u set
        messages = u.messages - d.n, input_tokens = u.input_tokens - d.i,
        cached_input_tokens = u.cached_input_tokens - d.ci, cache_write_tokens = u.cache_write_tokens - d.cw,
        output_tokens = u.output_tokens - d.o, reasoning_tokens = u.reasoning_tokens - d.r,
        cost_usd = u.cost_usd - d.cost, unpriced_messages = u.unpriced_messages - d.unpriced,
        duration_ms = u.duration_ms - d.duration
    from (select day, model, provider, tool_name, sum(n) as n, sum(i) as i, sum(ci) as ci, sum(cw) as cw,
              sum(o) as o, sum(r) as r, sum(cost) as cost, sum(unpriced) as unpriced, sum(duration) as duration
          from moved group by 1, 2, 3, 4) as d
    where u.day = d.day and u.user_id is null and u.model = d.model and u.provider = d.provider
        and u.tool_name = d.tool_name
    returning 1
)
insert into public.usage_daily as u (day, user_id, model, provider, tool_name, messages, input_tokens,
    cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_messages,
    duration_ms)
select day, owner, model, provider, tool_name, n, i, ci, cw, o, r, cost, unpriced, duration from moved
on conflict on constraint usage_daily_key do update set
    messages = u.messages + excluded.messages,
    input_tokens = u.input_tokens + excluded.input_tokens,
    cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
    cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
    output_tokens = u.output_tokens + excluded.output_tokens,
    reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
    cost_usd = u.cost_usd + excluded.cost_usd,
    unpriced_messages = u.unpriced_messages + excluded.unpriced_messages,
    duration_ms = u.duration_ms + excluded.duration_ms;
delete from public.usage_daily where messages <= 0;
update public.messages m set user_id = a.owner from ownership_adopted a where m.conversation_id = a.id;
update public.conversation_files cf set user_id = a.owner from ownership_adopted a where cf.conversation_id = a.id;
update public.conversations c set user_id = a.owner from ownership_adopted a where c.id = a.id;

-- ---------------------------------------------------------------------------------------
-- Refuse rows that still cross owners, before adding the keys. They are a forgery, or a
-- user_id set wrong by hand: which side is right is not for a migration to guess.

do $$
declare
    v_rows text;
begin
    select string_agg(x, E'\n') into v_rows from (
        select format('messages %s (owner %s) in conversation %s (owner %s)', m.id, m.user_id, c.id, c.user_id) as x
        from public.messages m join public.conversations c on c.id = m.conversation_id
        where m.user_id is distinct from c.user_id
        union all
        select format('file_uploads %s (owner %s) of file %s (owner %s)', u.id, u.user_id, f.id, f.user_id)
        from public.file_uploads u join public.files f on f.id = u.file_id
        where u.user_id is distinct from f.user_id
        union all
        select format('conversation_files (%s, %s) (owner %s): conversation owner %s, file owner %s',
            cf.conversation_id, cf.file_id, cf.user_id, c.user_id, f.user_id)
        from public.conversation_files cf
        join public.conversations c on c.id = cf.conversation_id
        join public.files f on f.id = cf.file_id
        where cf.user_id is distinct from c.user_id or (f.user_id is not null and f.user_id is distinct from cf.user_id)
        union all
        select format('provider_files %s (owner %s) of file %s (owner %s)', p.id, p.user_id, f.id, f.user_id)
        from public.provider_files p join public.files f on f.id = p.file_id
        where p.user_id is distinct from f.user_id
        limit 50
    ) as s;
    if v_rows is not null then
        raise exception 'rows that refer to another owner''s rows (first 50):%', E'\n' || v_rows
            using hint = 'Each is either a forgery (delete it) or has the wrong user_id (correct it); then migrate again.';
    end if;
end
$$;

-- ---------------------------------------------------------------------------------------
-- 1. Ownership follows references

do $$
declare
    v_table text;
begin
    foreach v_table in array array['conversations', 'messages', 'files', 'file_uploads', 'conversation_files',
                                   'provider_files'] loop
        execute format('alter table public.%I add column if not exists owner_key uuid generated always as '
                       '(coalesce(user_id, ''00000000-0000-0000-0000-000000000000''::uuid)) stored', v_table);
        execute format('comment on column public.%I.owner_key is %L', v_table,
                       'user_id, with the nil uuid for the service''s own rows (NULL): what the foreign keys '
                       'between user tables compare, so a row can only refer to rows of the same owner.');
    end loop;
end
$$;

alter table public.conversations drop constraint if exists conversations_id_owner;
alter table public.conversations add constraint conversations_id_owner unique (id, owner_key);
alter table public.files drop constraint if exists files_id_owner;
alter table public.files add constraint files_id_owner unique (id, owner_key);

-- The single-column foreign keys stay (they are the ones the plan's tools know); these add
-- the owner. Both cascade the same way.
alter table public.messages drop constraint if exists messages_conversation_owner;
alter table public.messages add constraint messages_conversation_owner
    foreign key (conversation_id, owner_key) references public.conversations (id, owner_key) on delete cascade;
alter table public.file_uploads drop constraint if exists file_uploads_file_owner;
alter table public.file_uploads add constraint file_uploads_file_owner
    foreign key (file_id, owner_key) references public.files (id, owner_key) on delete cascade;
alter table public.conversation_files drop constraint if exists conversation_files_conversation_owner;
alter table public.conversation_files add constraint conversation_files_conversation_owner
    foreign key (conversation_id, owner_key) references public.conversations (id, owner_key) on delete cascade;
-- A thread may use its owner's files and the shared ones (stored by the server without an
-- owner, at shared/...: the package lets any thread use those), which a foreign key cannot
-- say; this trigger does. It is security invoker on purpose: a signed-in user sees only their
-- own files, so they can link nothing else, shared files included; the server sees all.
create or replace function public.conversation_files_check_file_owner()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if not exists (select 1 from public.files f
                   where f.id = new.file_id and (f.user_id is null or f.user_id = new.user_id)) then
        raise exception 'conversation % cannot use file %: it is another owner''s', new.conversation_id, new.file_id
            using errcode = '23503';
    end if;
    return null;
end;
$$;
comment on function public.conversation_files_check_file_owner is
    'A thread links only files of its own owner or shared ones (trigger of conversation_files).';
drop trigger if exists conversation_files_file_owner on public.conversation_files;
create constraint trigger conversation_files_file_owner
    after insert or update of file_id, user_id on public.conversation_files
    for each row execute function public.conversation_files_check_file_owner();
alter table public.provider_files drop constraint if exists provider_files_file_owner;
alter table public.provider_files add constraint provider_files_file_owner
    foreign key (file_id, owner_key) references public.files (id, owner_key) on delete cascade;

comment on constraint messages_conversation_owner on public.messages is
    'A message belongs to a thread of the same owner (a user cannot write into another''s thread).';
comment on constraint file_uploads_file_owner on public.file_uploads is
    'An upload refers to a stored object of the same owner (nobody reaches another''s bytes by its id).';
comment on constraint conversation_files_conversation_owner on public.conversation_files is
    'A thread''s file link belongs to the thread''s owner.';
comment on constraint provider_files_file_owner on public.provider_files is
    'A provider upload is of a stored object of the same owner.';
-- file_uploads.conversation_id (which thread an upload was made in) and files.conversation_id
-- (the plan's) are labels: nothing is read through them without the owner-checked
-- conversation_files, and a composite key could not set only conversation_id to NULL when
-- the thread goes (ON DELETE SET NULL is not allowed on a generated column).

-- ---------------------------------------------------------------------------------------
-- 2. Direct writes: what authenticated may still do itself

revoke insert, update, delete on table public.messages, public.usage_daily from authenticated;
revoke update, delete on table public.conversations from authenticated;
revoke insert on table public.conversations from authenticated;
-- A new thread (start_conversation, lock_conversation): its totals start at zero.
grant insert (id, continuation_id, parent_id, session_id, user_id, title, tool_name, tags, initial_context,
    metadata, created_at, updated_at, expires_at) on table public.conversations to authenticated;
-- What update_conversation changes (and what lock_conversation's FOR UPDATE needs one of).
grant update (title, summary, status, tags, metadata, initial_context, expires_at)
    on table public.conversations to authenticated;
-- A message's text may be corrected; its tokens, cost, price, seq and thread may not.
grant update (content) on table public.messages to authenticated;
-- Stored objects: the descriptive fields only; the path, hash, size and owner are the store's.
revoke update on table public.files from authenticated;
grant update (filename, tags, description, metadata) on table public.files to authenticated;

-- Storage paths come from the owner ({owner}/{sha[:2]}/{sha}, as storage.objects' policies
-- already demand of the bytes): a signed-in user's stored object lies in their own folder, so
-- nobody registers, ahead of its owner, a row at the path another user's bytes will take.
drop policy if exists "files: owners insert" on public.files;
create policy "files: owners insert" on public.files for insert to authenticated
    with check ((select auth.uid()) = user_id and split_part(storage_path, '/', 1) = (select auth.uid())::text);

-- The policies stay, one per operation: they still confine what is granted (a message's
-- content, a thread's fields), and would confine anything granted again by mistake.

-- The package's price rule (persistence/pricing.py): the row whose match (a regex, matched
-- at the start, case-insensitively) fits the model and whose effective_from is the latest on
-- or before the message's UTC day; ties as the package sorts (provider, model). Reasoning
-- tokens bill at the output rate, a missing cached_input rate at the input rate, a missing
-- cache_write rate as free; a prompt over a tier's threshold bills the whole request at that
-- tier. NULL (unpriced) when no row fits: never 0 for unknown.
create or replace function public.price_message(
    p_model text,
    p_at timestamptz,
    p_input_tokens bigint,
    p_cached_input_tokens bigint,
    p_cache_write_tokens bigint,
    p_output_tokens bigint,
    p_reasoning_tokens bigint)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object('price_id', p.id, 'cost', round((
            p_input_tokens * r.inp + p_cached_input_tokens * coalesce(r.cached, r.inp)
            + p_cache_write_tokens * coalesce(r.write, 0) + (p_output_tokens + p_reasoning_tokens) * r.out
        ) / 1000000, 10))
    from (
        select * from public.model_prices x
        where x.effective_from <= (p_at at time zone 'UTC')::date
            and regexp_replace(p_model, '^\s+|\s+$', '', 'g') ~* ('^(?:' || x.match || ')')
        order by x.effective_from desc, x.provider, x.model
        limit 1
    ) as p
    cross join lateral (
        select
            case when t2 then coalesce(p.tier2_input, p.input) when t1 then coalesce(p.tier_input, p.input)
                 else p.input end as inp,
            case when t2 then coalesce(p.tier2_cached_input, p.cached_input)
                 when t1 then coalesce(p.tier_cached_input, p.cached_input) else p.cached_input end as cached,
            case when t1 and not t2 then coalesce(p.tier_cache_write, p.cache_write) else p.cache_write end as write,
            case when t2 then coalesce(p.tier2_output, p.output) when t1 then coalesce(p.tier_output, p.output)
                 else p.output end as out
        from (select
                p.tier2_above_tokens is not null
                    and p_input_tokens + p_cached_input_tokens + p_cache_write_tokens > p.tier2_above_tokens as t2,
                p.tier_above_tokens is not null
                    and p_input_tokens + p_cached_input_tokens + p_cache_write_tokens > p.tier_above_tokens as t1
        ) as t
    ) as r
    where nullif(btrim(p_model), '') is not null
$$;
comment on function public.price_message is
    '{price_id, cost} of a message from model_prices (the package''s rule, persistence/pricing.py); null when unpriced.';

-- Whether the caller is the server: a role row level security does not confine (the service
-- role, the database owner on a postgresql:// store). Read from the session's role, which a
-- security definer function does not change; PostgREST sets it to anon, authenticated or
-- service_role for each request.
create or replace function public.caller_is_server()
returns boolean
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce((
        select r.rolsuper or r.rolbypassrls
            or r.oid = (select c.relowner from pg_catalog.pg_class c where c.oid = 'public.messages'::regclass)
        from pg_catalog.pg_roles r
        where r.rolname = case when current_setting('role') = 'none' then session_user
                               else current_setting('role') end), false)
$$;
comment on function public.caller_is_server is
    'True for the server (service role, or a role row level security does not confine); false for signed-in users.';

-- As in 20261126000002_persistence_api, with: security definer (authenticated cannot write
-- totals, the rollup, seq, cost or price ids itself), the owner checks RLS made before, the
-- package's bounds on every argument, a price computed here for signed-in users, and the
-- unpriced flag derived from the row (as reprice_apply and prune count it) instead of taken
-- from p_unpriced, which stays for compatibility.
create or replace function public.record_message(
    p_continuation_id text,
    p_id uuid,
    p_role text,
    p_content text,
    p_created_at timestamptz default now(),
    p_model text default null,
    p_provider text default null,
    p_tool_name text default null,
    p_input_tokens bigint default 0,
    p_cached_input_tokens bigint default 0,
    p_cache_write_tokens bigint default 0,
    p_output_tokens bigint default 0,
    p_reasoning_tokens bigint default 0,
    p_cost numeric default null,
    p_price_id text default null,
    p_unpriced boolean default false,
    p_duration_ms bigint default null,
    p_files text[] default '{}',
    p_images text[] default '{}',
    p_metadata jsonb default '{}',
    p_search_extra text default null,
    p_title text default null)
returns jsonb
language plpgsql
security definer
set search_path = ''
as $$
declare
    v_server boolean := public.caller_is_server();
    v_uid uuid := auth.uid();
    v_conv public.conversations;
    v_msg public.messages;
    v_thread text;
    v_seq integer;
    v_tokens bigint;
    v_cost numeric := p_cost;
    v_price_id text := p_price_id;
    v_price jsonb;
    v_unpriced boolean;
begin
    if not v_server and v_uid is null then
        raise exception 'sign in to record messages' using errcode = '42501';
    end if;
    -- The bounds of persistence/validation.py, so SQL callers meet the same refusals.
    if p_continuation_id is null or length(p_continuation_id) > 200
            or p_continuation_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$' then
        raise exception 'p_continuation_id must be 1-200 characters from A-Z a-z 0-9 . _ : @ / + = -'
            using errcode = 'PT400';
    end if;
    if p_id is null then
        raise exception 'p_id is required' using errcode = 'PT400';
    end if;
    if p_role is null or p_role not in ('user', 'assistant', 'system', 'tool') then
        raise exception 'p_role must be user, assistant, system or tool, not %', p_role using errcode = 'PT400';
    end if;
    if p_content is null or (not v_server and octet_length(p_content) > 16 * 1024 * 1024) then
        raise exception 'p_content is required and at most 16 MiB' using errcode = 'PT400';
    end if;
    if p_created_at is null or p_created_at < '1970-01-01 00:00:00+00' or p_created_at >= '2200-01-01 00:00:00+00' then
        raise exception 'p_created_at must be in [1970-01-01, 2200-01-01) UTC' using errcode = 'PT400';
    end if;
    if length(p_model) > 200 or length(p_provider) > 100 or length(p_tool_name) > 200 or length(p_title) > 10000 then
        raise exception 'p_model, p_tool_name (200), p_provider (100) or p_title (10,000 characters) too long'
            using errcode = 'PT400';
    end if;
    if coalesce(p_input_tokens, -1) not between 0 and 10000000000
            or coalesce(p_cached_input_tokens, -1) not between 0 and 10000000000
            or coalesce(p_cache_write_tokens, -1) not between 0 and 10000000000
            or coalesce(p_output_tokens, -1) not between 0 and 10000000000
            or coalesce(p_reasoning_tokens, -1) not between 0 and 10000000000 then
        raise exception 'token counts must be integers in [0, 10^10]' using errcode = 'PT400';
    end if;
    if p_duration_ms not between 0 and 2592000000 then  -- 30 days
        raise exception 'p_duration_ms must be in [0, 30 days]' using errcode = 'PT400';
    end if;
    if p_metadata is not null and jsonb_typeof(p_metadata) <> 'object' then
        raise exception 'p_metadata must be a JSON object' using errcode = 'PT400';
    end if;
    if not v_server and (octet_length(p_metadata::text) > 1048576 or octet_length(p_search_extra) > 64 * 1024 * 1024
                         or cardinality(p_files) > 1000 or cardinality(p_images) > 1000) then
        raise exception 'p_metadata (1 MiB), p_search_extra, p_files or p_images (1,000) too large'
            using errcode = 'PT400';
    end if;
    v_tokens := p_input_tokens + p_cached_input_tokens + p_cache_write_tokens + p_output_tokens + p_reasoning_tokens;

    if not v_server then
        -- Priced here: usage the package could not read (metadata.usage_raw) is unpriced, no
        -- usage at all stays without a price, anything else gets the table's price.
        v_cost := null;
        v_price_id := null;
        if not coalesce(p_metadata ? 'usage_raw', false) and (p_cost is not null or p_price_id is not null
                                                               or v_tokens > 0) then
            v_price := public.price_message(p_model, p_created_at, p_input_tokens, p_cached_input_tokens,
                                            p_cache_write_tokens, p_output_tokens, p_reasoning_tokens);
            v_cost := (v_price ->> 'cost')::numeric;
            v_price_id := v_price ->> 'price_id';
        end if;
    end if;
    if v_cost is not null and v_cost not between 0 and 10000 then
        raise exception 'a message costs $0 to $10,000, not %', v_cost using errcode = 'PT400';
    end if;
    v_unpriced := v_cost is null and (v_tokens > 0 or coalesce(p_metadata ? 'usage_raw', false));

    -- A retry of a stored message returns it and writes nothing. Someone else's message id is
    -- answered like one of another thread of one's own.
    select m.* into v_msg from public.messages m where m.id = p_id;
    if found then
        select c.continuation_id into v_thread from public.conversations c where c.id = v_msg.conversation_id;
        if not v_server and v_msg.user_id is distinct from v_uid then
            raise exception 'message_id % already belongs to another conversation', p_id using errcode = 'PT409';
        end if;
        if v_thread is distinct from p_continuation_id then
            raise exception 'message_id % already belongs to conversation %, not %', p_id, v_thread, p_continuation_id
                using errcode = 'PT409';
        end if;
        return public.message_json(v_msg, v_thread);
    end if;

    -- The thread's row lock orders concurrent writers: seq is max + 1 under it. (As definer,
    -- lock_conversation sees every thread: the owner is checked here.)
    v_conv := public.lock_conversation(p_continuation_id, p_created_at, p_tool_name);
    if not v_server and v_conv.user_id is distinct from v_uid then
        raise exception 'continuation_id % is used by a thread you cannot access', p_continuation_id
            using errcode = 'PT409';
    end if;
    select m.* into v_msg from public.messages m where m.id = p_id;  -- a retry that won the race
    if found then
        if v_msg.conversation_id <> v_conv.id then
            raise exception 'message_id % already belongs to another conversation', p_id using errcode = 'PT409';
        end if;
        return public.message_json(v_msg, p_continuation_id);
    end if;
    select coalesce(max(m.seq), 0) + 1 into v_seq from public.messages m where m.conversation_id = v_conv.id;

    insert into public.messages (id, conversation_id, seq, role, content, tool_name, provider, model_used, tokens,
        input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id,
        duration_ms, files, images, metadata, user_id, created_at, search_extra)
    values (p_id, v_conv.id, v_seq, p_role, p_content, p_tool_name, p_provider, p_model, v_tokens,
        p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens, p_reasoning_tokens, v_cost,
        v_price_id, p_duration_ms, coalesce(p_files, '{}'), coalesce(p_images, '{}'), coalesce(p_metadata, '{}'),
        v_conv.user_id, p_created_at, p_search_extra)
    returning * into v_msg;

    update public.conversations c set
        message_count = c.message_count + 1,
        total_tokens = c.total_tokens + v_tokens,
        input_tokens = c.input_tokens + p_input_tokens,
        cached_input_tokens = c.cached_input_tokens + p_cached_input_tokens,
        cache_write_tokens = c.cache_write_tokens + p_cache_write_tokens,
        output_tokens = c.output_tokens + p_output_tokens,
        reasoning_tokens = c.reasoning_tokens + p_reasoning_tokens,
        total_cost = c.total_cost + coalesce(v_cost, 0),
        unpriced_messages = c.unpriced_messages + v_unpriced::integer,
        -- The newest turn's model; a late-arriving older turn does not take over.
        model_used = case when p_model is not null and p_created_at >= c.updated_at then p_model
                          else coalesce(c.model_used, p_model) end,
        title = coalesce(c.title, p_title),
        updated_at = greatest(c.updated_at, p_created_at)
    where c.id = v_conv.id;

    insert into public.usage_daily as u (day, user_id, model, provider, tool_name, messages, input_tokens,
        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_messages,
        duration_ms)
    values ((p_created_at at time zone 'UTC')::date, v_conv.user_id, coalesce(p_model, ''), coalesce(p_provider, ''),
        coalesce(p_tool_name, ''), 1, p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens,
        p_reasoning_tokens, coalesce(v_cost, 0), v_unpriced::integer, coalesce(p_duration_ms, 0))
    on conflict on constraint usage_daily_key do update set
        messages = u.messages + 1,
        input_tokens = u.input_tokens + excluded.input_tokens,
        cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
        cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
        output_tokens = u.output_tokens + excluded.output_tokens,
        reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
        cost_usd = u.cost_usd + excluded.cost_usd,
        unpriced_messages = u.unpriced_messages + excluded.unpriced_messages,
        duration_ms = u.duration_ms + excluded.duration_ms;

    return public.message_json(v_msg, p_continuation_id);
end;
$$;
comment on function public.record_message is
    'Append a turn in one transaction: the message, its seq, the thread''s totals and the daily rollup. '
    'Creates the thread when missing. Idempotent on p_id. The server passes the cost and price it computed; '
    'for signed-in users (security definer: they cannot write totals themselves) the price comes from model_prices.';

-- ---------------------------------------------------------------------------------------
-- Files: a thread links only its owner's files and shared ones; an upload with an owner into
-- a thread has the thread's owner (refused with a clear PT409 rather than the key's error).

-- As in 20261130060000_persistence_blob_sweeps, with the owner check.
create or replace function public.put_file_metadata(
    p_file_id uuid,
    p_upload_id uuid,
    p_file_hash text,
    p_file_size bigint,
    p_storage_path text,
    p_bucket_name text,
    p_mime_type text,
    p_filename text,
    p_continuation_id text default null,
    p_session_id text default null,
    p_user_id uuid default null,
    p_tags text[] default '{}',
    p_description text default null,
    p_metadata jsonb default '{}',
    p_created_at timestamptz default now())
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
    v_file public.files;
    v_upload public.file_uploads;
    v_owner uuid := coalesce(p_user_id, auth.uid());
    v_dedup boolean := false;
begin
    if p_continuation_id is not null then
        v_conv := public.lock_conversation(p_continuation_id, p_created_at);
        if v_owner is not null and v_conv.user_id is distinct from v_owner then
            raise exception 'the file''s owner (%) is not the owner of conversation %', v_owner, p_continuation_id
                using errcode = 'PT409';
        end if;
    end if;
    -- After the thread, as prune locks threads before this lock: the two never wait on each
    -- other in opposite orders. From here no prune decides which objects go until we commit.
    perform pg_catalog.pg_advisory_xact_lock_shared(1651, 0);
    -- One row per stored object: a second upload of the same bytes by the same owner
    -- points at the first one's row.
    insert into public.files (id, file_hash, bucket_name, storage_path, filename, mime_type, file_size, user_id,
        session_id, conversation_id, tags, description, metadata, created_at, updated_at)
    values (p_file_id, p_file_hash, p_bucket_name, p_storage_path, p_filename, p_mime_type, p_file_size, v_owner,
        p_session_id, v_conv.id, coalesce(p_tags, '{}'), p_description, coalesce(p_metadata, '{}'), p_created_at,
        p_created_at)
    on conflict do nothing
    returning * into v_file;
    if not found then
        v_dedup := true;
        select * into v_file from public.files f
        where f.storage_path = p_storage_path or (f.user_id is not distinct from v_owner and f.file_hash = p_file_hash)
        order by f.storage_path = p_storage_path desc
        limit 1;
        if not found or v_file.user_id is distinct from v_owner then
            raise exception 'file % is stored by another owner', p_storage_path using errcode = 'PT409';
        end if;
    end if;
    insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, session_id,
        conversation_id, tags, description, metadata, created_at)
    values (p_upload_id, v_file.id, p_filename, p_mime_type, p_file_size, v_owner, p_session_id, v_conv.id,
        coalesce(p_tags, '{}'), p_description, coalesce(p_metadata, '{}'), p_created_at)
    returning * into v_upload;
    if v_conv.id is not null then
        insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
        values (v_conv.id, v_file.id, v_conv.user_id, p_created_at)
        on conflict do nothing;
    end if;
    return public.file_json(v_file, v_upload, p_continuation_id)
        || jsonb_build_object('deduplicated', v_dedup,
            'sweep_until', public.blob_sweep_until(v_file.storage_path));
end;
$$;
comment on function public.put_file_metadata is
    'Record an upload whose bytes are stored: the stored object (once per owner and hash; deduplicated says '
    'it already was), the upload, and the thread''s use of it (the thread is created when missing; it must '
    'have the file''s owner). sweep_until: a prune is deleting the bytes at this path; wait for it, then '
    'store them again if missing.';

-- As in 20261126000002_persistence_api, with the owner check.
create or replace function public.link_file(p_continuation_id text, p_file_id uuid)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
    v_file public.files;
begin
    select f.* into v_file from public.files f
    where f.id = p_file_id or f.id = (select u.file_id from public.file_uploads u where u.id = p_file_id)
    limit 1;
    if not found then
        raise exception 'no file with id %', p_file_id using errcode = 'PT404';
    end if;
    v_conv := public.lock_conversation(p_continuation_id, now());
    if v_file.user_id is not null and v_conv.user_id is distinct from v_file.user_id then
        raise exception 'file % and conversation % have different owners', p_file_id, p_continuation_id
            using errcode = 'PT409';
    end if;
    insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values (v_conv.id, v_file.id, v_conv.user_id, now())
    on conflict do nothing;
    return to_jsonb(found);
end;
$$;
comment on function public.link_file is
    'Record that a thread used a stored file of its owner or a shared one (by file or upload id); true when new.';

-- ---------------------------------------------------------------------------------------
-- 3. Smaller

-- lock_conversation: unchanged in what it answers. Thread ids are one namespace for all
-- users (they are the MCP continuation ids), so creating one that another user holds must
-- fail, and that failure (PT409) is all a signed-in user learns: not the owner, the title or
-- anything of the thread; every function that reads or changes a thread answers PT404 (or
-- null) alike for another user's and a missing one. The MCP server's ids are random uuids.
comment on function public.lock_conversation is
    'The thread with this continuation_id, locked, created (owned by the caller) when missing. Another user''s '
    'thread: PT409, which says only that the id is taken (ids are global).';

-- applied_migrations stays security definer, the one exception besides blob_sweep_until and
-- record_message: the migration history is in supabase_migrations, a schema API roles
-- cannot read, and only the service role may execute it (revoked from public, anon and
-- authenticated in 20261126000002); it returns versions and names, nothing of the data.
comment on function public.applied_migrations is
    'Versions and names of the applied migrations (supabase_migrations.schema_migrations). Security definer: '
    'that schema is not readable by API roles; executable by the service role only.';

-- As in 20261130060000_persistence_blob_sweeps, answering a signed-in user only about paths
-- in their own folder (the only ones they can store to): nothing of another user's prunes.
create or replace function public.blob_sweep_until(p_storage_path text)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select to_jsonb(s.expires_at) from public.blob_sweeps s
    where s.storage_path = p_storage_path and s.expires_at > now()
        and (public.caller_is_server() or split_part(p_storage_path, '/', 1) = auth.uid()::text)
$$;
comment on function public.blob_sweep_until is
    'When a prune is deleting the bytes at this path: until when its lease runs (null: nobody is, or the '
    'path is not in the signed-in caller''s folder).';

revoke all on function public.price_message, public.caller_is_server, public.conversation_files_check_file_owner
    from public, anon, authenticated;
-- record_message, running as its owner, calls these; signed-in users may price too.
grant execute on function public.price_message, public.caller_is_server to authenticated, service_role;
-- create or replace keeps the grants of record_message, put_file_metadata and link_file.
