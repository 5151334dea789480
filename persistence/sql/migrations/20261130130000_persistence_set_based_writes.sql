-- Set-based batches and per-thread facets (issue 16).
--
-- 1. Thread facets. The Threads page's model, provider and tool filters (conversations_where)
--    probed every thread's messages: at a million messages a filtered count took 0.54 s (0.93
--    s first call). public.conversation_facets holds, per thread, each model, provider and
--    tool name it used (a tool: the thread's own tool_name or any of its messages'), so a
--    filter reads the threads of one value from one index. It is kept by triggers, so every
--    way rows arrive keeps it: record_message, record_messages, import_batch (import, copy,
--    demo) and the server's own inserts; prune deletes threads, and their facets go with
--    them (on delete cascade); reprice changes costs only. Messages are never moved to
--    another thread nor relabelled by the API (a signed-in user may correct a message's
--    content only): a direct SQL edit of messages.model_used, provider or tool_name by the
--    server leaves a facet behind until public.refresh_conversation_facets(ids) is run.
--    Filled here for the threads already stored.
-- 2. record_messages, set-based. It called record_message once per item: per message a call,
--    a thread lock, an update of the thread's row (a new row version and an entry in each of
--    its nine indexes) and an upsert of its rollup row.
--    Now one statement inserts every message of the batch (each tsvector computed once, by
--    the insert), one update per touched thread adds the batch's sums, one upsert per touched
--    rollup row adds them there. Everything record_message does is kept, with the same
--    checks and messages (prefixed with the item's index): the package's bounds on every
--    argument, seq under the thread's row lock (taken in id order, so two batches lock the
--    threads they share in the same order), idempotency by message id (a retry, or the
--    same id twice in one batch, returns the stored message; an id of another thread is
--    PT409), owner checks for signed-in callers and their prices from model_prices, the
--    newest turn's model on the thread, the first title. It becomes security definer, as
--    record_message is (authenticated may not write messages, totals or the rollup).
-- 3. Two indexes the old filters needed and nothing else reads: messages_provider and
--    messages_tool_name (20261130080000_persistence_bounded) cost two b-tree inserts per
--    message. messages_model_used stays: search_messages' model filter may use it.

-- ---------------------------------------------------------------------------------------
-- 1. Thread facets

create table if not exists public.conversation_facets (
    conversation_id uuid not null,
    kind text not null,
    value text not null,
    user_id uuid,
    owner_key uuid not null
        generated always as (coalesce(user_id, '00000000-0000-0000-0000-000000000000'::uuid)) stored,
    constraint conversation_facets_pkey primary key (kind, value, conversation_id),
    constraint conversation_facets_kind_check check (kind in ('model', 'provider', 'tool_name')),
    -- The thread's owner, as every reference between user tables (20261130070000_persistence_ownership).
    constraint conversation_facets_conversation_owner foreign key (conversation_id, owner_key)
        references public.conversations (id, owner_key) on delete cascade
);
comment on table public.conversation_facets is
    'Each model, provider and tool name a thread used (its own tool_name or its messages''), kept by triggers: '
    'what the thread filters of list_conversations and count_conversations read.';
comment on column public.conversation_facets.kind is 'model, provider or tool_name: the filter it answers.';
comment on column public.conversation_facets.user_id is 'The thread''s owner.';
comment on column public.conversation_facets.owner_key is
    'user_id, with the nil uuid for the service''s own rows (NULL): what the foreign key to the thread compares.';
-- Prune deletes threads by the thousand: the cascade finds their facets here.
create index if not exists conversation_facets_conversation_id on public.conversation_facets (conversation_id);
create index if not exists conversation_facets_user_id on public.conversation_facets (user_id);

-- Written by the store only (triggers below), as the rollup is; signed-in users read their own.
alter table public.conversation_facets enable row level security;
drop policy if exists "conversation_facets: owners select" on public.conversation_facets;
create policy "conversation_facets: owners select" on public.conversation_facets for select to authenticated
    using ((select auth.uid()) = user_id);
revoke all on table public.conversation_facets from anon, authenticated, public;
grant select on table public.conversation_facets to authenticated;
grant all on table public.conversation_facets to service_role;

-- The facets of inserted messages: one statement-level trigger, so a batch of any size costs
-- one insert (of the values its threads did not have yet).
create or replace function public.conversation_facets_of_messages()
returns trigger
language plpgsql
security invoker
set search_path = ''
as $$
begin
    insert into public.conversation_facets (conversation_id, kind, value, user_id)
    select distinct n.conversation_id, f.kind, f.value, n.user_id
    from new_messages as n
    cross join lateral (values ('model', n.model_used), ('provider', n.provider), ('tool_name', n.tool_name))
        as f (kind, value)
    where f.value is not null
    on conflict do nothing;
    return null;
end;
$$;
comment on function public.conversation_facets_of_messages is
    'Trigger of messages: the models, providers and tool names of inserted messages, as facets of their threads.';
revoke all on function public.conversation_facets_of_messages from public, anon, authenticated;

drop trigger if exists messages_facets on public.messages;
create trigger messages_facets after insert on public.messages
    referencing new table as new_messages
    for each statement execute function public.conversation_facets_of_messages();

-- A thread's own tool. Security definer: signed-in users create threads themselves
-- (start_conversation), and may not write facets.
create or replace function public.conversation_facets_of_threads()
returns trigger
language plpgsql
security definer
set search_path = ''
as $$
begin
    insert into public.conversation_facets (conversation_id, kind, value, user_id)
    select n.id, 'tool_name', n.tool_name, n.user_id
    from new_threads as n
    where n.tool_name is not null
    on conflict do nothing;
    return null;
end;
$$;
comment on function public.conversation_facets_of_threads is
    'Trigger of conversations: a new thread''s tool_name as its facet.';
revoke all on function public.conversation_facets_of_threads from public, anon, authenticated;

drop trigger if exists conversations_facets on public.conversations;
create trigger conversations_facets after insert on public.conversations
    referencing new table as new_threads
    for each statement execute function public.conversation_facets_of_threads();

-- The facets of these threads recomputed from what is stored: the fill below, and the
-- server's repair after editing messages' model, provider or tool name by hand.
create or replace function public.refresh_conversation_facets(p_ids uuid[] default null)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_removed bigint;
    v_added bigint;
begin
    with actual as (
        select m.conversation_id, f.kind, f.value, m.user_id
        from public.messages m
        cross join lateral (values ('model', m.model_used), ('provider', m.provider), ('tool_name', m.tool_name))
            as f (kind, value)
        where f.value is not null and (p_ids is null or m.conversation_id = any(p_ids))
        union
        select c.id, 'tool_name', c.tool_name, c.user_id
        from public.conversations c
        where c.tool_name is not null and (p_ids is null or c.id = any(p_ids))
    ), removed as (
        delete from public.conversation_facets x
        where (p_ids is null or x.conversation_id = any(p_ids))
            and not exists (select 1 from actual a
                            where a.conversation_id = x.conversation_id and a.kind = x.kind and a.value = x.value)
        returning 1
    ), added as (
        insert into public.conversation_facets (conversation_id, kind, value, user_id)
        select conversation_id, kind, value, user_id from actual
        on conflict do nothing
        returning 1
    )
    select (select count(*) from removed), (select count(*) from added) into v_removed, v_added;
    return jsonb_build_object('removed', v_removed, 'added', v_added);
end;
$$;
comment on function public.refresh_conversation_facets is
    'Recompute the facets of the threads p_ids (null: every thread) from their messages; {removed, added}.';
revoke all on function public.refresh_conversation_facets from public, anon, authenticated;
grant execute on function public.refresh_conversation_facets to service_role;

select public.refresh_conversation_facets();

-- As in 20261130100000_persistence_rules_once, the model, provider and tool filters read the
-- facets (one index range per value) instead of probing every thread's messages.
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
        ('model', $q$exists (select 1 from public.conversation_facets f
                             where f.kind = 'model' and f.value = ($1 ->> 'model') and f.conversation_id = c.id)$q$),
        ('provider', $q$exists (select 1 from public.conversation_facets f
                                where f.kind = 'provider' and f.value = ($1 ->> 'provider')
                                    and f.conversation_id = c.id)$q$),
        ('tool_name', $q$exists (select 1 from public.conversation_facets f
                                 where f.kind = 'tool_name' and f.value = ($1 ->> 'tool_name')
                                     and f.conversation_id = c.id)$q$),
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

-- The old filters' indexes (see the top).
drop index if exists public.messages_provider;
drop index if exists public.messages_tool_name;

-- ---------------------------------------------------------------------------------------
-- 2. record_messages, set-based

-- The items of a record_messages call as rows, in order (ord from 1): record_message's
-- arguments without the p_ prefix.
create or replace function public.message_items(p_items jsonb)
returns table (
    ord bigint, continuation_id text, id uuid, role text, content text, created_at timestamptz, model text,
    provider text, tool_name text, input_tokens bigint, cached_input_tokens bigint, cache_write_tokens bigint,
    output_tokens bigint, reasoning_tokens bigint, cost numeric, price_id text, duration_ms bigint, files text[],
    images text[], metadata jsonb, search_extra text, title text)
language sql
immutable
set search_path = ''
as $$
    select i.ord, i.continuation_id, i.id, i.role, i.content, i.created_at, i.model, i.provider, i.tool_name,
        i.input_tokens, i.cached_input_tokens, i.cache_write_tokens, i.output_tokens, i.reasoning_tokens, i.cost,
        i.price_id, i.duration_ms, coalesce(i.files, '{}'), coalesce(i.images, '{}'), coalesce(i.metadata, '{}'),
        i.search_extra, i.title
    from rows from (jsonb_to_recordset(p_items) as (continuation_id text, id uuid, role text, content text,
            created_at timestamptz, model text, provider text, tool_name text, input_tokens bigint,
            cached_input_tokens bigint, cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
            cost numeric, price_id text, duration_ms bigint, files text[], images text[], metadata jsonb,
            search_extra text, title text))
        with ordinality as i (continuation_id, id, role, content, created_at, model, provider, tool_name,
            input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id,
            duration_ms, files, images, metadata, search_extra, title, ord)
$$;
comment on function public.message_items is 'Helper of record_messages: its items as typed rows, in order.';
revoke all on function public.message_items from public, anon, authenticated;
grant execute on function public.message_items to service_role;

create or replace function public.record_messages(p_items jsonb)
returns jsonb
language plpgsql
security definer
set search_path = ''
set statement_timeout = '5s'
as $$
declare
    v_server boolean := public.caller_is_server();
    v_uid uuid := auth.uid();
    v_problem text;
    v_ids uuid[];
    v_threads text[];
    v_firsts text[];
    v_tools text[];
    v_times timestamptz[];
    v_stored uuid[];
    v_won uuid[];
    v_out jsonb;
    v_cost numeric;
begin
    if p_items is null or jsonb_typeof(p_items) <> 'array' then
        raise exception 'p_items must be a JSON array of messages' using errcode = 'PT400';
    end if;
    if jsonb_array_length(p_items) = 0 then
        return '[]'::jsonb;
    end if;
    if not v_server and v_uid is null then
        raise exception 'sign in to record messages' using errcode = '42501';
    end if;
    if exists (select 1 from jsonb_array_elements(p_items) as e where jsonb_typeof(e) <> 'object') then
        raise exception 'p_items must be a JSON array of objects' using errcode = 'PT400';
    end if;

    -- Every item's arguments against record_message's bounds (persistence/validation.py): the
    -- first item that fails is named, with record_message's message. The ids and threads are
    -- kept in arrays, so the lookups below go through the indexes (= any), whatever the
    -- planner guesses of a batch's size.
    select (array_agg(format('p_items[%s]: %s', i.ord - 1, p.problem) order by i.ord)
                filter (where p.problem is not null))[1],
        array_agg(i.id order by i.ord), array_agg(i.continuation_id order by i.ord),
        array_agg(i.tool_name order by i.ord), array_agg(i.created_at order by i.ord)
    into v_problem, v_ids, v_firsts, v_tools, v_times
    from public.message_items(p_items) as i
    cross join lateral (select case
        when i.continuation_id is null or length(i.continuation_id) > 200
                or i.continuation_id !~ '^[A-Za-z0-9][A-Za-z0-9._:@/+=-]*$' then
            'p_continuation_id must be 1-200 characters from A-Z a-z 0-9 . _ : @ / + = -'
        when i.id is null then 'p_id is required'
        when i.role is null or i.role not in ('user', 'assistant', 'system', 'tool') then
            format('p_role must be user, assistant, system or tool, not %s', i.role)
        when i.content is null or (not v_server and octet_length(i.content) > 16 * 1024 * 1024) then
            'p_content is required and at most 16 MiB'
        when i.created_at is null or i.created_at < '1970-01-01 00:00:00+00'
                or i.created_at >= '2200-01-01 00:00:00+00' then
            'p_created_at must be in [1970-01-01, 2200-01-01) UTC'
        when length(i.model) > 200 or length(i.provider) > 100 or length(i.tool_name) > 200
                or length(i.title) > 10000 then
            'p_model, p_tool_name (200), p_provider (100) or p_title (10,000 characters) too long'
        when coalesce(i.input_tokens, -1) not between 0 and 10000000000
                or coalesce(i.cached_input_tokens, -1) not between 0 and 10000000000
                or coalesce(i.cache_write_tokens, -1) not between 0 and 10000000000
                or coalesce(i.output_tokens, -1) not between 0 and 10000000000
                or coalesce(i.reasoning_tokens, -1) not between 0 and 10000000000 then
            'token counts must be integers in [0, 10^10]'
        when i.duration_ms not between 0 and 2592000000 then 'p_duration_ms must be in [0, 30 days]'
        when jsonb_typeof(i.metadata) <> 'object' then 'p_metadata must be a JSON object'
        when not v_server and (octet_length(i.metadata::text) > 1048576
                               or octet_length(i.search_extra) > 64 * 1024 * 1024
                               or cardinality(i.files) > 1000 or cardinality(i.images) > 1000) then
            'p_metadata (1 MiB), p_search_extra, p_files or p_images (1,000) too large'
        end as problem) as p;
    if v_problem is not null then
        raise exception '%', v_problem using errcode = 'PT400';
    end if;

    -- A retry of a stored message returns it and writes nothing; so does the same id again
    -- later in the batch. Someone else's message id is answered like one of another thread
    -- of one's own.
    select (array_agg(case
                when not v_server and m.user_id is distinct from v_uid then
                    format('p_items[%s]: message_id %s already belongs to another conversation', i.ord - 1, i.id)
                else format('p_items[%s]: message_id %s already belongs to conversation %s, not %s', i.ord - 1,
                            i.id, c.continuation_id, i.continuation_id) end order by i.ord)
            filter (where (not v_server and m.user_id is distinct from v_uid)
                          or c.continuation_id <> i.continuation_id))[1],
        array_agg(m.id)
    into v_problem, v_stored
    from public.messages m
    join public.conversations c on c.id = m.conversation_id
    join unnest(v_ids, v_firsts) with ordinality as i (id, continuation_id, ord) on i.id = m.id
    where m.id = any(v_ids);
    if v_problem is null then
        select format('p_items[%s]: message_id %s already belongs to conversation %s, not %s', d.ord - 1, d.id,
                      d.first_thread, d.continuation_id)
        into v_problem
        from (select i.ord, i.id, i.continuation_id,
                  first_value(i.continuation_id) over (partition by i.id order by i.ord) as first_thread
              from unnest(v_ids, v_firsts) with ordinality as i (id, continuation_id, ord)) as d
        where d.first_thread <> d.continuation_id
        order by d.ord
        limit 1;
    end if;
    if v_problem is not null then
        raise exception '%', v_problem using errcode = 'PT409';
    end if;
    v_stored := coalesce(v_stored, '{}'::uuid[]);

    -- The threads written to: created when missing (owned by the caller, with their first
    -- item's time and tool, as lock_conversation does), then locked in id order. Their row
    -- locks order concurrent writers: seq is max + 1 under them.
    select array_agg(distinct i.continuation_id) into v_threads
    from unnest(v_ids, v_firsts) as i (id, continuation_id)
    where i.id <> all(v_stored);
    if v_threads is not null then
        insert into public.conversations (continuation_id, tool_name, user_id, created_at, updated_at)
        select distinct on (i.continuation_id) i.continuation_id, i.tool_name, v_uid, i.created_at, i.created_at
        from unnest(v_ids, v_firsts, v_tools, v_times) with ordinality as i (id, continuation_id, tool_name,
                                                                              created_at, ord)
        where i.id <> all(v_stored)
        order by i.continuation_id, i.ord
        on conflict (continuation_id) do nothing;
        perform 1 from public.conversations c where c.continuation_id = any(v_threads) order by c.id for update;
        if not v_server then
            select c.continuation_id into v_problem
            from public.conversations c
            where c.continuation_id = any(v_threads) and c.user_id is distinct from v_uid
            order by c.continuation_id
            limit 1;
            if v_problem is not null then
                raise exception 'continuation_id % is used by a thread you cannot access', v_problem
                    using errcode = 'PT409';
            end if;
        end if;
        -- A retry that won the race (stored while we waited for the locks): returned as
        -- stored when it is in the same thread.
        select (array_agg(format('p_items[%s]: message_id %s already belongs to another conversation',
                                 i.ord - 1, i.id) order by i.ord)
                    filter (where c.continuation_id <> i.continuation_id))[1],
            array_agg(m.id)
        into v_problem, v_won
        from public.messages m
        join public.conversations c on c.id = m.conversation_id
        join unnest(v_ids, v_firsts) with ordinality as i (id, continuation_id, ord) on i.id = m.id
        where m.id = any(v_ids) and m.id <> all(v_stored);
        if v_problem is not null then
            raise exception '%', v_problem using errcode = 'PT409';
        end if;
        v_stored := v_stored || coalesce(v_won, '{}'::uuid[]);
    end if;

    -- The writes, one statement: the new messages (the first item of each id not stored yet),
    -- their threads' totals and the rollup, each grown by the batch's sums.
    with items as (
        select i.*, row_number() over (partition by i.id order by i.ord) as nth
        from public.message_items(p_items) as i
    ), fresh as (
        select i.*, t.id as conversation_id, t.user_id, t.updated_at as thread_updated_at, t.seq0,
            i.input_tokens + i.cached_input_tokens + i.cache_write_tokens + i.output_tokens
                + i.reasoning_tokens as tokens
        from items as i
        join lateral (
            select c.id, c.user_id, c.updated_at, coalesce((select m.seq from public.messages m
                                                            where m.conversation_id = c.id
                                                            order by m.seq desc limit 1), 0) as seq0
            from public.conversations c where c.continuation_id = i.continuation_id) as t on true
        where i.nth = 1 and i.id <> all(v_stored)
    ), priced as (
        -- Signed-in callers: priced here (usage the package could not read, metadata.usage_raw,
        -- is unpriced; no usage at all stays without a price; anything else gets the table's
        -- price). The server passes the cost and price it computed.
        select i.*, case when v_server then i.cost else (p.price ->> 'cost')::numeric end as final_cost,
            case when v_server then i.price_id else p.price ->> 'price_id' end as final_price_id
        from fresh as i
        left join lateral (
            select public.price_message(i.model, i.created_at, i.input_tokens, i.cached_input_tokens,
                                        i.cache_write_tokens, i.output_tokens, i.reasoning_tokens) as price
            where not v_server and not (i.metadata ? 'usage_raw')
                and (i.cost is not null or i.price_id is not null or i.tokens > 0)) as p on true
    ), inserted as (
        insert into public.messages as m (id, conversation_id, seq, role, content, tool_name, provider, model_used,
            tokens, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost,
            price_id, duration_ms, files, images, metadata, user_id, created_at, search_extra)
        select c.id, c.conversation_id, c.seq0 + row_number() over (partition by c.conversation_id order by c.ord),
            c.role, c.content, c.tool_name, c.provider, c.model, c.tokens, c.input_tokens, c.cached_input_tokens,
            c.cache_write_tokens, c.output_tokens, c.reasoning_tokens, c.final_cost, c.final_price_id,
            c.duration_ms, c.files, c.images, c.metadata, c.user_id, c.created_at, c.search_extra
        from priced as c
        order by c.ord
        returning m.id, m.cost, m.unpriced, public.message_json(m, null) as doc
    ), sums as (
        select c.conversation_id, c.ord, c.created_at, c.model, c.title, c.provider, c.tool_name, c.user_id,
            c.tokens, c.input_tokens, c.cached_input_tokens, c.cache_write_tokens, c.output_tokens,
            c.reasoning_tokens, c.final_cost, c.duration_ms, n.unpriced::integer as unpriced,
            -- The newest turn's model, as record_message decides it turn by turn: a turn takes
            -- over when it is at least as new as the thread's last activity before it.
            c.model is not null and c.created_at >= greatest(c.thread_updated_at, max(c.created_at) over (
                partition by c.conversation_id order by c.ord rows between unbounded preceding and 1 preceding))
                as takes_over
        from priced as c join inserted as n on n.id = c.id
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
            unpriced_messages = c.unpriced_messages + t.unpriced,
            model_used = coalesce(t.newest_model, c.model_used, t.first_model),
            title = coalesce(c.title, t.first_title),
            updated_at = greatest(c.updated_at, t.last_at)
        from (
            select conversation_id, count(*) as n, sum(tokens) as tokens, sum(input_tokens) as i,
                sum(cached_input_tokens) as ci, sum(cache_write_tokens) as cw, sum(output_tokens) as o,
                sum(reasoning_tokens) as r, coalesce(sum(final_cost), 0) as cost, sum(unpriced) as unpriced,
                max(created_at) as last_at,
                (array_agg(model order by ord desc) filter (where takes_over))[1] as newest_model,
                (array_agg(model order by ord) filter (where model is not null))[1] as first_model,
                (array_agg(title order by ord) filter (where title is not null))[1] as first_title
            from sums
            group by conversation_id
        ) as t
        where c.id = t.conversation_id
    ), rollup as (
        insert into public.usage_daily as u (day, user_id, model, provider, tool_name, messages, input_tokens,
            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost_usd, unpriced_messages,
            duration_ms)
        select (created_at at time zone 'UTC')::date, user_id, coalesce(model, ''), coalesce(provider, ''),
            coalesce(tool_name, ''), count(*), sum(input_tokens), sum(cached_input_tokens), sum(cache_write_tokens),
            sum(output_tokens), sum(reasoning_tokens), coalesce(sum(final_cost), 0), sum(unpriced),
            coalesce(sum(duration_ms), 0)
        from sums
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
    )
    -- Every item, in order: the message it wrote or the one stored under its id. (A refusal
    -- raised after the writes undoes them: the whole call is one transaction.)
    select jsonb_agg(coalesce(n.doc, (select public.message_json(m, null) from public.messages m where m.id = i.id))
                     || jsonb_build_object('continuation_id', i.continuation_id) order by i.ord),
        (array_agg(n.cost order by i.ord) filter (where n.cost not between 0 and 10000))[1]
    into v_out, v_cost
    from items as i
    left join inserted as n on n.id = i.id;
    if v_cost is not null then
        raise exception 'a message costs $0 to $10,000, not %', v_cost using errcode = 'PT400';
    end if;
    return v_out;
end;
$$;
comment on function public.record_messages is
    'Many turns in one transaction (all or nothing), set-based: one insert of the messages, one update per '
    'thread, one upsert per rollup row. Each item is record_message''s arguments without the p_ prefix; '
    'returns the messages in order (a stored id: the stored message). Priced and owner-checked as record_message.';
revoke all on function public.record_messages from public, anon;
grant execute on function public.record_messages to authenticated, service_role;
