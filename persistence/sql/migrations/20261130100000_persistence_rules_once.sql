-- Each rule written once (issue 13, item 3): the unpriced flag is stored, the thread filters
-- travel as one jsonb argument.
--
-- 1. Unpriced. A message is unpriced when it has no cost but has tokens, or usage the package
--    could not read (kept in metadata.usage_raw). That rule was spelled out wherever a count
--    was made: record_message, import_batch, reprice_apply, prune and the migrations that
--    moved rows. It now lives in one function, public.message_unpriced, and messages store
--    its answer in a generated column, messages.unpriced: computed by the database whenever a
--    row is written or its cost changes (record_message, record_messages, import_batch,
--    reprice_apply, and any direct write of the server's), filled for existing rows when the
--    column is added. Totals, rollups and prune only sum the column; reprice_apply asks the
--    function what a new cost makes of a row. The package's own copy of the rule is
--    persistence.pricing.is_unpriced (the SQLite backend stores its answer); the conformance
--    suite (the backend-parametrized store fixture of tests/conftest.py) holds both to the same
--    answers.
-- 2. Thread filters. list_conversations and count_conversations took the twelve filters as
--    twelve arguments each, and conversations_where a third copy of them. They now take one
--    p_filters jsonb ({"since": ..., "model": ..., ...}: the keys of the package's
--    ConversationFilters, persistence/prepared.py; absent or null means unfiltered), and
--    conversations_where names each filter once, refusing unknown keys with PT400. The old
--    overloads are dropped, so PostgREST has one function per name. Bounds, grants and
--    statement timeouts as in 20261130080000_persistence_bounded.
--
-- Functions redefined here are copied from the migration named above each, with the changes
-- above; create or replace keeps their grants.

-- ---------------------------------------------------------------------------------------
-- 1. The unpriced flag

create or replace function public.message_unpriced(p_cost numeric, p_tokens bigint, p_metadata jsonb)
returns boolean
language sql
immutable
set search_path = ''
as $$
    select coalesce(p_cost is null and (p_tokens > 0 or p_metadata ? 'usage_raw'), false)
$$;
comment on function public.message_unpriced is
    'The unpriced rule: no cost, but tokens or usage the package could not read (metadata.usage_raw). '
    'What messages.unpriced stores; persistence.pricing.is_unpriced is the package''s copy.';
-- Called by the generated column and by the server's functions; nobody else needs it.
revoke all on function public.message_unpriced from public, anon, authenticated;
grant execute on function public.message_unpriced to service_role;

alter table public.messages
    add column if not exists unpriced boolean not null
        generated always as (public.message_unpriced(cost, tokens, metadata)) stored;
comment on column public.messages.unpriced is
    'No known price for tokens it has (public.message_unpriced): what unpriced_messages counts.';

-- As in 20261130070000_persistence_ownership (with the statement_timeout of
-- 20261130080000_persistence_bounded), the unpriced flag read from the stored row.
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
set statement_timeout = '5s'
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
        unpriced_messages = c.unpriced_messages + v_msg.unpriced::integer,
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
        p_reasoning_tokens, coalesce(v_cost, 0), v_msg.unpriced::integer, coalesce(p_duration_ms, 0))
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

-- As in 20261126000002_persistence_api, the unpriced flag read from the inserted rows.
create or replace function public.import_batch(p_records jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_threads integer := jsonb_array_length(p_records);
    v_new_threads integer;
    v_messages integer;
    v_new_messages integer;
    v_files integer := 0;
    v_n integer;
    v_rec record;
    v_f record;
    v_file_id uuid;
begin
    -- Threads not present yet (by continuation_id), with the fields the record gives.
    with incoming as (
        select r -> 'conversation' as c, r ->> 'model' as model, (r ->> 'updated_at')::timestamptz as updated_at
        from jsonb_array_elements(p_records) as r
    ), inserted as (
        insert into public.conversations (id, continuation_id, parent_id, session_id, user_id, title, summary,
            tool_name, model_used, status, tags, initial_context, metadata, created_at, updated_at, expires_at)
        select (c ->> 'id')::uuid, c ->> 'continuation_id', c ->> 'parent_id', c ->> 'session_id',
            (c ->> 'user_id')::uuid, c ->> 'title', c ->> 'summary', c ->> 'tool_name', model,
            coalesce(c ->> 'status', 'active'),
            coalesce(array(select jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))), '{}'),
            nullif(c -> 'initial_context', 'null'::jsonb), coalesce(nullif(c -> 'metadata', 'null'::jsonb), '{}'),
            (c ->> 'created_at')::timestamptz, coalesce(updated_at, (c ->> 'created_at')::timestamptz),
            (c ->> 'expires_at')::timestamptz
        from incoming
        on conflict (continuation_id) do nothing
        returning 1
    )
    select count(*) into v_new_threads from inserted;

    -- Messages not present yet (by id, within their thread), ids, seq and costs as given;
    -- then the rollup and the thread totals, incremented by what was inserted.
    select coalesce(sum(jsonb_array_length(coalesce(r -> 'messages', '[]'))), 0) into v_messages
    from jsonb_array_elements(p_records) as r;
    with incoming as (
        select c.id as conversation_id, c.user_id, m.*
        from jsonb_array_elements(p_records) as r
        join public.conversations c on c.continuation_id = r -> 'conversation' ->> 'continuation_id'
        cross join lateral jsonb_to_recordset(coalesce(r -> 'messages', '[]')) as m(id uuid, seq integer, role text,
            content text, created_at timestamptz, model text, provider text, tool_name text, input_tokens bigint,
            cached_input_tokens bigint, cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
            cost numeric, price_id text, duration_ms bigint, files text[], images text[], metadata jsonb,
            search_extra text)
        where not exists (select 1 from public.messages e where e.id = m.id and e.conversation_id = c.id)
    ), inserted as (
        insert into public.messages (id, conversation_id, seq, role, content, tool_name, provider, model_used,
            tokens, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost,
            price_id, duration_ms, files, images, metadata, user_id, created_at, search_extra)
        select id, conversation_id, seq, role, content, tool_name, provider, model,
            input_tokens + cached_input_tokens + cache_write_tokens + output_tokens + reasoning_tokens,
            input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id,
            duration_ms, coalesce(files, '{}'), coalesce(images, '{}'), coalesce(metadata, '{}'), user_id,
            created_at, search_extra
        from incoming
        returning conversation_id, user_id, created_at, model_used, provider, tool_name, tokens, input_tokens,
            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, duration_ms,
            unpriced::integer as unpriced
    ), rollup as (
        insert into public.usage_daily as u (day, user_id, model, provider, tool_name, messages, input_tokens,
            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_messages,
            duration_ms)
        select (created_at at time zone 'UTC')::date, user_id, coalesce(model_used, ''), coalesce(provider, ''),
            coalesce(tool_name, ''), count(*), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens),
            sum(output_tokens), sum(reasoning_tokens), coalesce(sum(cost), 0), sum(unpriced),
            coalesce(sum(duration_ms), 0)
        from inserted
        group by 1, 2, 3, 4, 5
        on conflict on constraint usage_daily_key do update set
            messages = u.messages + excluded.messages,
            input_tokens = u.input_tokens + excluded.input_tokens,
            cached_input_tokens = u.cached_input_tokens + excluded.cached_input_tokens,
            cache_write_tokens = u.cache_write_tokens + excluded.cache_write_tokens,
            output_tokens = u.output_tokens + excluded.output_tokens,
            reasoning_tokens = u.reasoning_tokens + excluded.reasoning_tokens,
            cost_usd = u.cost_usd + excluded.cost_usd,
            unpriced_messages = u.unpriced_messages + excluded.unpriced_messages,
            duration_ms = u.duration_ms + excluded.duration_ms
        returning 1
    ), totals as (
        update public.conversations c set
            message_count = c.message_count + t.n,
            total_tokens = c.total_tokens + t.tokens,
            input_tokens = c.input_tokens + t.i,
            cached_input_tokens = c.cached_input_tokens + t.ci,
            cache_write_tokens = c.cache_write_tokens + t.cw,
            output_tokens = c.output_tokens + t.o,
            reasoning_tokens = c.reasoning_tokens + t.r,
            total_cost = c.total_cost + t.cost,
            unpriced_messages = c.unpriced_messages + t.unpriced
        from (
            select conversation_id, count(*) as n, sum(tokens) as tokens, sum(input_tokens) as i,
                sum(cached_input_tokens) as ci, sum(cache_write_tokens) as cw, sum(output_tokens) as o,
                sum(reasoning_tokens) as r, coalesce(sum(cost), 0) as cost, sum(unpriced) as unpriced
            from inserted
            group by conversation_id
        ) as t
        where c.id = t.conversation_id
        returning 1
    )
    select (select count(*) from inserted) into v_new_messages;

    -- File metadata (bytes travel separately): the stored object by path or id, the upload,
    -- and the thread's use of it.
    for v_rec in
        select c.id as conversation_id, c.user_id, r -> 'files' as files
        from jsonb_array_elements(p_records) as r
        join public.conversations c on c.continuation_id = r -> 'conversation' ->> 'continuation_id'
        where jsonb_array_length(coalesce(r -> 'files', '[]')) > 0
    loop
        for v_f in
            select * from jsonb_to_recordset(v_rec.files) as f(id uuid, upload_id uuid, file_hash text, size bigint,
                mime_type text, filename text, storage_path text, bucket_name text, created_at timestamptz,
                user_id uuid, session_id text, tags text[], description text, metadata jsonb)
        loop
            select f.id into v_file_id from public.files f where f.storage_path = v_f.storage_path or f.id = v_f.id
            limit 1;
            if v_file_id is null then
                insert into public.files (id, file_hash, bucket_name, storage_path, filename, mime_type, file_size,
                    user_id, session_id, conversation_id, tags, description, metadata, created_at, updated_at)
                values (v_f.id, v_f.file_hash, coalesce(v_f.bucket_name, 'local'), v_f.storage_path, v_f.filename,
                    v_f.mime_type, v_f.size, v_f.user_id, v_f.session_id, v_rec.conversation_id,
                    coalesce(v_f.tags, '{}'), v_f.description, coalesce(v_f.metadata, '{}'), v_f.created_at,
                    v_f.created_at);
                v_file_id := v_f.id;
            else
                -- The stored object describes its first upload (as a live write does): records
                -- arrive in thread order, not upload order, so an earlier upload takes it over.
                update public.files set filename = v_f.filename, mime_type = v_f.mime_type,
                    session_id = v_f.session_id, conversation_id = v_rec.conversation_id,
                    tags = coalesce(v_f.tags, '{}'), description = v_f.description,
                    metadata = coalesce(v_f.metadata, '{}'), created_at = v_f.created_at
                where id = v_file_id and created_at > v_f.created_at;
            end if;
            if v_f.upload_id is not null then
                insert into public.file_uploads (id, file_id, filename, mime_type, file_size, user_id, session_id,
                    conversation_id, tags, description, metadata, created_at)
                values (v_f.upload_id, v_file_id, v_f.filename, v_f.mime_type, v_f.size, v_f.user_id, v_f.session_id,
                    v_rec.conversation_id, coalesce(v_f.tags, '{}'), v_f.description, coalesce(v_f.metadata, '{}'),
                    v_f.created_at)
                on conflict (id) do nothing;
                get diagnostics v_n = row_count;
                v_files := v_files + v_n;
            end if;
            insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
            values (v_rec.conversation_id, v_file_id, v_rec.user_id, v_f.created_at)
            on conflict do nothing;
            v_file_id := null;
        end loop;
    end loop;

    return jsonb_build_object(
        'conversations', v_new_threads, 'conversations_skipped', v_threads - v_new_threads,
        'messages', v_new_messages, 'messages_skipped', v_messages - v_new_messages, 'files', v_files);
end;
$$;
comment on function public.import_batch is
    'Write exported threads back, ids, seq and costs unchanged; present threads and messages are skipped. '
    'The rollup and totals grow by what was inserted.';

-- As in 20261126000002_persistence_api: the new cost's flag from public.message_unpriced, the
-- old one as stored.
create or replace function public.reprice_apply(p_updates jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_n integer;
begin
    with upd as (
        select * from jsonb_to_recordset(p_updates) as u(id uuid, cost numeric, price_id text)
    ), delta as (
        select m.id, m.conversation_id, (m.created_at at time zone 'UTC')::date as day, m.user_id,
            coalesce(m.model_used, '') as model, coalesce(m.provider, '') as provider,
            coalesce(m.tool_name, '') as tool_name,
            coalesce(upd.cost, 0) - coalesce(m.cost, 0) as cost,
            public.message_unpriced(upd.cost, m.tokens, m.metadata)::integer - m.unpriced::integer as unpriced
        from public.messages m join upd on upd.id = m.id
    ), changed as (
        update public.messages m set cost = upd.cost, price_id = upd.price_id
        from upd where m.id = upd.id
        returning 1
    ), totals as (
        update public.conversations c set total_cost = c.total_cost + d.cost,
            unpriced_messages = c.unpriced_messages + d.unpriced
        from (select conversation_id, sum(cost) as cost, sum(unpriced) as unpriced from delta group by 1) as d
        where c.id = d.conversation_id
        returning 1
    ), rollup as (
        update public.usage_daily u set cost_usd = u.cost_usd + d.cost,
            unpriced_messages = u.unpriced_messages + d.unpriced
        from (
            select day, user_id, model, provider, tool_name, sum(cost) as cost, sum(unpriced) as unpriced
            from delta group by 1, 2, 3, 4, 5
        ) as d
        where u.day = d.day and u.user_id is not distinct from d.user_id and u.model = d.model
            and u.provider = d.provider and u.tool_name = d.tool_name
        returning 1
    )
    select count(*) into v_n from changed;
    return to_jsonb(v_n);
end;
$$;
comment on function public.reprice_apply is
    'Store recomputed costs (and so the unpriced flags) and correct totals and rollup by the difference.';

-- As in 20261130060000_persistence_blob_sweeps, counting the stored flag.
create or replace function public.prune(p_cutoff timestamptz, p_dry_run boolean default false)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_threads integer;
    v_messages integer;
    v_files jsonb;
    v_sweep uuid := gen_random_uuid();
    v_claimed jsonb := '[]';
begin
    perform 1 from public.conversations where updated_at < p_cutoff for update;
    select count(*) into v_threads from public.conversations where updated_at < p_cutoff;
    select count(*) into v_messages
    from public.messages m join public.conversations c on c.id = m.conversation_id
    where c.updated_at < p_cutoff;
    if not p_dry_run then
        update public.usage_daily u set
            messages = u.messages - d.n,
            input_tokens = u.input_tokens - d.i,
            cached_input_tokens = u.cached_input_tokens - d.ci,
            cache_write_tokens = u.cache_write_tokens - d.cw,
            output_tokens = u.output_tokens - d.o,
            reasoning_tokens = u.reasoning_tokens - d.r,
            cost_usd = u.cost_usd - d.cost,
            unpriced_messages = u.unpriced_messages - d.unpriced,
            duration_ms = u.duration_ms - d.duration
        from (
            select (m.created_at at time zone 'UTC')::date as day, m.user_id, coalesce(m.model_used, '') as model,
                coalesce(m.provider, '') as provider, coalesce(m.tool_name, '') as tool_name, count(*) as n,
                sum(m.input_tokens) as i, sum(m.cached_input_tokens) as ci, sum(m.cache_write_tokens) as cw,
                sum(m.output_tokens) as o, sum(m.reasoning_tokens) as r, coalesce(sum(m.cost), 0) as cost,
                count(*) filter (where m.unpriced) as unpriced,
                coalesce(sum(m.duration_ms), 0) as duration
            from public.messages m join public.conversations c on c.id = m.conversation_id
            where c.updated_at < p_cutoff
            group by 1, 2, 3, 4, 5
        ) as d
        where u.day = d.day and u.user_id is not distinct from d.user_id and u.model = d.model
            and u.provider = d.provider and u.tool_name = d.tool_name;
        delete from public.usage_daily where messages <= 0;
        delete from public.conversations where updated_at < p_cutoff;
        -- Claims of prunes that died mid-sweep: their leases ran out long ago.
        delete from public.blob_sweeps where expires_at < now() - interval '1 day';
    end if;
    if not p_dry_run then
        -- Uploads hold this lock shared while they record their rows (put_file_metadata). The
        -- statement below runs once it is held, so it sees every upload committed before: an
        -- object someone just uploaded again is kept, and uploads after our commit see our claims.
        perform pg_catalog.pg_advisory_xact_lock(1651, 0);
    end if;
    select coalesce(jsonb_agg(jsonb_build_object('id', f.id, 'bucket_name', f.bucket_name,
            'storage_path', f.storage_path, 'file_size', f.file_size,
            'uploads', (select count(*) from public.file_uploads u where u.file_id = f.id))), '[]')
    into v_files
    from public.files f
    where not exists (
            select 1 from public.conversation_files cf join public.conversations c on c.id = cf.conversation_id
            where cf.file_id = f.id and c.updated_at >= p_cutoff)
        and not exists (select 1 from public.file_uploads u where u.file_id = f.id and u.created_at >= p_cutoff);
    if not p_dry_run then
        delete from public.files f where f.id in (select (x ->> 'id')::uuid from jsonb_array_elements(v_files) as x);
        -- A path another prune still holds a live claim on is left to that prune: it deletes
        -- the bytes, and uploaders wait for its claim. Taking the claim over would let that
        -- prune's delete land after our release, when uploaders no longer wait.
        with claimed as (
            insert into public.blob_sweeps as s (storage_path, bucket_name, sweep_id, expires_at)
            select x ->> 'storage_path', x ->> 'bucket_name', v_sweep, now() + interval '10 minutes'
            from jsonb_array_elements(v_files) as x
            on conflict (storage_path) do update
                set bucket_name = excluded.bucket_name, sweep_id = excluded.sweep_id,
                    expires_at = excluded.expires_at, created_at = now()
                where s.expires_at <= now()
            returning s.bucket_name, s.storage_path)
        select coalesce(jsonb_agg(jsonb_build_array(bucket_name, storage_path)), '[]') into v_claimed from claimed;
    end if;
    return jsonb_build_object(
        'conversations', v_threads, 'messages', v_messages, 'files', jsonb_array_length(v_files),
        'bytes', coalesce((select sum((x ->> 'file_size')::bigint) from jsonb_array_elements(v_files) as x), 0),
        'uploads', coalesce((select sum((x ->> 'uploads')::bigint) from jsonb_array_elements(v_files) as x), 0),
        'sweep_id', case when p_dry_run then null else v_sweep end,
        'deleted', v_claimed);
end;
$$;
comment on function public.prune is
    'Delete threads inactive since p_cutoff and the files nothing uses any more; p_dry_run only counts. '
    'The caller deletes the bytes of "deleted" under the claim sweep_id (renew_blob_sweep, release_blob_sweep).';

-- ---------------------------------------------------------------------------------------
-- 2. Thread filters as one jsonb argument

drop function if exists public.list_conversations(timestamptz, timestamptz, text, text, text, text, text, uuid, text,
    text, numeric, text, text, integer, text, uuid);
drop function if exists public.count_conversations(timestamptz, timestamptz, text, text, text, text, text, uuid, text,
    text, numeric, text);
drop function if exists public.conversations_where(timestamptz, timestamptz, text, text, text, text, text, uuid, text,
    text, numeric, text);

-- The WHERE clause of a thread listing for the filters set in p_filters. Values are never
-- spliced in: the clause reads them from the parameter $1 (p_filters itself) of
-- list_conversations and count_conversations.
create or replace function public.conversations_where(p_filters jsonb)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
    v_unknown text;
    v_where text;
begin
    if p_filters is not null and jsonb_typeof(p_filters) <> 'object' then
        raise exception 'p_filters must be a JSON object, not %', jsonb_typeof(p_filters) using errcode = 'PT400';
    end if;
    with filters (name, clause) as (values
        ('since', $q$c.updated_at >= ($1 ->> 'since')::timestamptz$q$),
        ('until', $q$c.created_at < ($1 ->> 'until')::timestamptz$q$),
        ('model', $q$exists (select 1 from public.messages m
                             where m.conversation_id = c.id and m.model_used = ($1 ->> 'model'))$q$),
        ('provider', $q$exists (select 1 from public.messages m
                                where m.conversation_id = c.id and m.provider = ($1 ->> 'provider'))$q$),
        ('tool_name', $q$(c.tool_name = ($1 ->> 'tool_name') or exists (select 1 from public.messages m
                          where m.conversation_id = c.id and m.tool_name = ($1 ->> 'tool_name')))$q$),
        ('tag', $q$c.tags @> array[$1 ->> 'tag']$q$),
        ('session_id', $q$c.session_id = ($1 ->> 'session_id')$q$),
        ('user_id', $q$c.user_id = ($1 ->> 'user_id')::uuid$q$),
        ('parent_id', $q$c.parent_id = ($1 ->> 'parent_id')$q$),
        ('status', $q$c.status = ($1 ->> 'status')$q$),
        ('min_cost', $q$c.total_cost >= ($1 ->> 'min_cost')::numeric$q$),
        -- A case-insensitive substring of the title; % and _ in the text are literal.
        ('text', $q$c.title ilike '%' || replace(replace(replace($1 ->> 'text', '\', '\\'), '%', '\%'), '_', '\_')
                 || '%'$q$))
    select string_agg(e.key, ', ' order by e.key) filter (where f.name is null),
        string_agg(f.clause, ' and ' order by f.name)
    into v_unknown, v_where
    from jsonb_each(coalesce(p_filters, '{}')) as e
    left join filters f on f.name = e.key
    where e.value <> 'null'::jsonb;
    if v_unknown is not null then
        raise exception 'p_filters: unknown filter %; the filters are since, until, model, provider, tool_name, '
            'tag, session_id, user_id, parent_id, status, min_cost, text', v_unknown using errcode = 'PT400';
    end if;
    return coalesce(v_where, 'true');
end;
$$;
comment on function public.conversations_where is
    'Helper of list_conversations and count_conversations: the WHERE clause of the filters in p_filters.';

-- As in 20261130080000_persistence_bounded, the filters in p_filters.
create or replace function public.list_conversations(
    p_filters jsonb default '{}',
    p_order text default 'recent',
    p_limit integer default 50,
    p_after_key text default null,
    p_after_id uuid default null)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
declare
    v_column text := case p_order when 'recent' then 'c.updated_at' when 'created' then 'c.created_at'
                                  when 'cost' then 'c.total_cost' end;
    v_where text;
    v_result jsonb;
begin
    if v_column is null then
        raise exception 'p_order must be recent, created or cost, not %', p_order using errcode = 'PT400';
    end if;
    if p_limit is null or p_limit < 1 or p_limit > 1001 then  -- the package asks for a page of <= 1000, plus one
        raise exception 'p_limit must be from 1 to 1001, not %', p_limit using errcode = 'PT400';
    end if;
    v_where := public.conversations_where(p_filters);
    if p_after_key is not null then  -- keyset: the page after (key, id)
        v_where := v_where || format(' and (%s, c.id) < ($2::%s, $3)', v_column,
                                     case p_order when 'cost' then 'numeric' else 'timestamptz' end);
    end if;
    execute format(
        'select coalesce(jsonb_agg(to_jsonb(c) order by %1$s desc, c.id desc), ''[]'') from ('
        'select c.* from public.conversations c where %2$s order by %1$s desc, c.id desc limit $4) as c',
        v_column, v_where)
    into v_result
    using p_filters, p_after_key, p_after_id, p_limit;
    return v_result;
end;
$$;
comment on function public.list_conversations is
    'Threads matching p_filters (keys since, until, model, provider, tool_name, tag, session_id, user_id, '
    'parent_id, status, min_cost, text), newest first by p_order (recent, created, cost), keyset-paginated '
    'with (p_after_key, p_after_id) from the last row of the previous page.';

create or replace function public.count_conversations(p_filters jsonb default '{}')
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
declare
    v_count bigint;
begin
    execute 'select count(*) from public.conversations c where ' || public.conversations_where(p_filters)
    into v_count
    using p_filters;
    return to_jsonb(v_count);
end;
$$;
comment on function public.count_conversations is 'How many threads list_conversations would list with p_filters.';

revoke all on function public.conversations_where, public.list_conversations, public.count_conversations
    from public, anon, authenticated;
grant execute on function public.conversations_where, public.list_conversations, public.count_conversations
    to authenticated, service_role;
