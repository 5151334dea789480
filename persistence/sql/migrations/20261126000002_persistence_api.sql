-- The SQL API: one function per write and per multi-row read ("the database is the API").
--
-- The postgresql:// backend calls these with SELECT, the supabase backend with client.rpc():
-- one round trip per operation, atomic, the same SQL on both paths. Each returns jsonb, the
-- document the package parses on both paths. Validation, usage normalisation and pricing
-- happen once, in the package (persistence/store.py); these functions store what they are
-- given atomically. All are security invoker, so row level security applies to authenticated
-- callers, and run with an empty search_path (every name is schema-qualified).
--
-- Errors: SQLSTATE PT404 (not found), PT409 (conflict) and PT400 (bad argument); PostgREST
-- answers them with HTTP 404, 409 and 400.
--
-- Grants at the end: every function to service_role; to authenticated where RLS confines it
-- to the caller's own rows; nothing to anon or public.

-- ---------------------------------------------------------------------------------------
-- Row shapes

create or replace function public.message_json(m public.messages, p_continuation_id text)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select jsonb_build_object(
        'id', m.id, 'conversation_id', m.conversation_id, 'continuation_id', p_continuation_id,
        'seq', m.seq, 'role', m.role, 'content', m.content, 'created_at', m.created_at,
        'tool_name', m.tool_name, 'provider', m.provider, 'model_used', m.model_used, 'tokens', m.tokens,
        'input_tokens', m.input_tokens, 'cached_input_tokens', m.cached_input_tokens,
        'cache_write_tokens', m.cache_write_tokens, 'output_tokens', m.output_tokens,
        'reasoning_tokens', m.reasoning_tokens, 'cost', m.cost, 'price_id', m.price_id,
        'duration_ms', m.duration_ms, 'files', m.files, 'images', m.images, 'metadata', m.metadata,
        'user_id', m.user_id)
$$;
comment on function public.message_json is 'A message as the API returns it.';

-- A stored file as one upload sees it (u may be null: the object as first stored).
-- p_fallback: fill the upload's empty fields from the object (a thread's file list).
create or replace function public.file_json(
    f public.files, u public.file_uploads, p_continuation_id text, p_fallback boolean default false)
returns jsonb
language sql
stable
set search_path = ''
as $$
    select jsonb_build_object(
        'id', f.id, 'file_hash', f.file_hash, 'storage_path', f.storage_path, 'bucket_name', f.bucket_name,
        'upload_id', u.id, 'continuation_id', p_continuation_id,
        'file_size', coalesce(u.file_size, f.file_size),
        'mime_type', coalesce(u.mime_type, f.mime_type),
        'filename', coalesce(u.filename, f.filename),
        'created_at', coalesce(u.created_at, f.created_at),
        'tags', coalesce(u.tags, f.tags),
        'metadata', coalesce(u.metadata, f.metadata),
        'user_id', case when u.id is null then f.user_id else u.user_id end,
        'session_id', case when u.id is null or p_fallback then coalesce(u.session_id, f.session_id) else u.session_id end,
        'description', case when u.id is null or p_fallback then coalesce(u.description, f.description) else u.description end)
$$;
comment on function public.file_json is 'A stored file as the API returns it.';

-- The thread, locked for this transaction, created when missing. Two writers creating the
-- same thread at once both end up with the one row.
create or replace function public.lock_conversation(
    p_continuation_id text, p_created_at timestamptz, p_tool_name text default null)
returns public.conversations
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
begin
    select * into v_conv from public.conversations where continuation_id = p_continuation_id for update;
    if found then
        return v_conv;
    end if;
    insert into public.conversations (continuation_id, tool_name, user_id, created_at, updated_at)
    values (p_continuation_id, p_tool_name, auth.uid(), p_created_at, p_created_at)
    on conflict (continuation_id) do nothing
    returning * into v_conv;
    if found then
        return v_conv;
    end if;
    select * into v_conv from public.conversations where continuation_id = p_continuation_id for update;
    if not found then  -- it exists, but row level security hides it: another owner's thread
        raise exception 'continuation_id % is used by a thread you cannot access', p_continuation_id
            using errcode = 'PT409';
    end if;
    return v_conv;
end;
$$;
comment on function public.lock_conversation is
    'The thread with this continuation_id, locked, created (owned by the caller) when missing.';

-- ---------------------------------------------------------------------------------------
-- Threads and messages

create or replace function public.start_conversation(
    p_continuation_id text,
    p_id uuid default gen_random_uuid(),
    p_created_at timestamptz default now(),
    p_tool_name text default null,
    p_title text default null,
    p_session_id text default null,
    p_user_id uuid default null,
    p_parent_id text default null,
    p_tags text[] default '{}',
    p_metadata jsonb default '{}',
    p_initial_context jsonb default null,
    p_expires_at timestamptz default null)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
begin
    insert into public.conversations (id, continuation_id, parent_id, session_id, user_id, title, tool_name,
        tags, initial_context, metadata, created_at, updated_at, expires_at)
    values (p_id, p_continuation_id, p_parent_id, p_session_id, coalesce(p_user_id, auth.uid()), p_title,
        p_tool_name, coalesce(p_tags, '{}'), p_initial_context, coalesce(p_metadata, '{}'), p_created_at,
        p_created_at, p_expires_at)
    on conflict (continuation_id) do nothing
    returning * into v_conv;
    if not found then
        select * into v_conv from public.conversations where continuation_id = p_continuation_id;
        if not found then
            raise exception 'continuation_id % is used by a thread you cannot access', p_continuation_id
                using errcode = 'PT409';
        end if;
    end if;
    return to_jsonb(v_conv);
end;
$$;
comment on function public.start_conversation is
    'Create a thread, or return the existing one with this continuation_id unchanged.';

create or replace function public.update_conversation(p_continuation_id text, p_changes jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
begin
    update public.conversations c set
        title = case when p_changes ? 'title' then p_changes ->> 'title' else c.title end,
        summary = case when p_changes ? 'summary' then p_changes ->> 'summary' else c.summary end,
        status = case when p_changes ? 'status' then p_changes ->> 'status' else c.status end,
        tags = case when p_changes ? 'tags'
                    then coalesce(array(select jsonb_array_elements_text(p_changes -> 'tags')), '{}')
                    else c.tags end,
        metadata = case when p_changes ? 'metadata' then coalesce(p_changes -> 'metadata', '{}') else c.metadata end,
        initial_context = case when p_changes ? 'initial_context'
                               then nullif(p_changes -> 'initial_context', 'null'::jsonb)
                               else c.initial_context end,
        expires_at = case when p_changes ? 'expires_at' then (p_changes ->> 'expires_at')::timestamptz
                          else c.expires_at end
    where c.continuation_id = p_continuation_id
    returning c.* into v_conv;
    if not found then
        raise exception 'no conversation with continuation_id %', p_continuation_id using errcode = 'PT404';
    end if;
    return to_jsonb(v_conv);
end;
$$;
comment on function public.update_conversation is
    'Change the fields named in p_changes (title, summary, status, tags, metadata, initial_context, expires_at).';

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
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
    v_msg public.messages;
    v_thread text;
    v_seq integer;
    v_tokens bigint := p_input_tokens + p_cached_input_tokens + p_cache_write_tokens + p_output_tokens
                       + p_reasoning_tokens;
begin
    -- A retry of a stored message returns it and writes nothing.
    select m.* into v_msg from public.messages m where m.id = p_id;
    if found then
        select c.continuation_id into v_thread from public.conversations c where c.id = v_msg.conversation_id;
        if v_thread is distinct from p_continuation_id then
            raise exception 'message_id % already belongs to conversation %, not %', p_id, v_thread, p_continuation_id
                using errcode = 'PT409';
        end if;
        return public.message_json(v_msg, v_thread);
    end if;

    -- The thread's row lock orders concurrent writers: seq is max + 1 under it.
    v_conv := public.lock_conversation(p_continuation_id, p_created_at, p_tool_name);
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
        p_input_tokens, p_cached_input_tokens, p_cache_write_tokens, p_output_tokens, p_reasoning_tokens, p_cost,
        p_price_id, p_duration_ms, coalesce(p_files, '{}'), coalesce(p_images, '{}'), coalesce(p_metadata, '{}'),
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
        total_cost = c.total_cost + coalesce(p_cost, 0),
        unpriced_messages = c.unpriced_messages + p_unpriced::integer,
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
        p_reasoning_tokens, coalesce(p_cost, 0), p_unpriced::integer, coalesce(p_duration_ms, 0))
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
    'Creates the thread when missing. Idempotent on p_id. Tokens, cost and price come priced by the caller.';

-- Many turns in one transaction and one round trip: what the write outbox's flusher and bulk
-- writers use. Each item is record_message's arguments without the p_ prefix. All or nothing.
create or replace function public.record_messages(p_items jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_item jsonb;
    v_out jsonb := '[]';
begin
    for v_item in select value from jsonb_array_elements(p_items) loop
        v_out := v_out || jsonb_build_array(public.record_message(
            p_continuation_id => v_item->>'continuation_id',
            p_id => (v_item->>'id')::uuid,
            p_role => v_item->>'role',
            p_content => v_item->>'content',
            p_created_at => (v_item->>'created_at')::timestamptz,
            p_model => v_item->>'model',
            p_provider => v_item->>'provider',
            p_tool_name => v_item->>'tool_name',
            p_input_tokens => (v_item->>'input_tokens')::bigint,
            p_cached_input_tokens => (v_item->>'cached_input_tokens')::bigint,
            p_cache_write_tokens => (v_item->>'cache_write_tokens')::bigint,
            p_output_tokens => (v_item->>'output_tokens')::bigint,
            p_reasoning_tokens => (v_item->>'reasoning_tokens')::bigint,
            p_cost => (v_item->>'cost')::numeric,
            p_price_id => v_item->>'price_id',
            p_unpriced => (v_item->>'unpriced')::boolean,
            p_duration_ms => (v_item->>'duration_ms')::bigint,
            p_files => array(select jsonb_array_elements_text(v_item->'files')),
            p_images => array(select jsonb_array_elements_text(v_item->'images')),
            p_metadata => v_item->'metadata',
            p_search_extra => v_item->>'search_extra',
            p_title => v_item->>'title'));
    end loop;
    return v_out;
end;
$$;
comment on function public.record_messages is
    'record_message for many turns in one transaction (all or nothing); returns the messages in order.';

create or replace function public.get_conversation(p_continuation_id text, p_last bigint default null)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
    v_messages jsonb;
    v_files jsonb;
begin
    select * into v_conv from public.conversations where continuation_id = p_continuation_id;
    if not found then
        return null;
    end if;
    select coalesce(jsonb_agg(public.message_json(m, p_continuation_id) order by m.seq), '[]')
    into v_messages
    from (
        select * from public.messages x where x.conversation_id = v_conv.id order by x.seq desc limit p_last
    ) as m;
    select coalesce(jsonb_agg(public.file_json(f, (
                select x from public.file_uploads x
                where x.file_id = f.id and x.conversation_id = cf.conversation_id
                order by x.created_at, x.id limit 1), p_continuation_id, true)
            order by cf.created_at, f.id), '[]')
    into v_files
    from public.conversation_files cf
    join public.files f on f.id = cf.file_id
    where cf.conversation_id = v_conv.id;
    return to_jsonb(v_conv) || jsonb_build_object('messages', v_messages, 'files', v_files);
end;
$$;
comment on function public.get_conversation is
    'The thread with its messages oldest to newest (only the newest p_last when given) and its files; null when missing.';

create or replace function public.get_messages(
    p_continuation_id text, p_before_seq bigint default null, p_limit integer default 50)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_id uuid;
    v_messages jsonb;
begin
    select id into v_id from public.conversations where continuation_id = p_continuation_id;
    if not found then
        raise exception 'no conversation with continuation_id %', p_continuation_id using errcode = 'PT404';
    end if;
    select coalesce(jsonb_agg(public.message_json(m, p_continuation_id) order by m.seq), '[]')
    into v_messages
    from (
        select * from public.messages x
        where x.conversation_id = v_id and (p_before_seq is null or x.seq < p_before_seq)
        order by x.seq desc limit p_limit
    ) as m;
    return v_messages;
end;
$$;
comment on function public.get_messages is 'The newest p_limit messages before p_before_seq, oldest first.';

create or replace function public.get_message(p_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select public.message_json(m, c.continuation_id)
    from public.messages m join public.conversations c on c.id = m.conversation_id
    where m.id = p_id
$$;
comment on function public.get_message is 'One message by id; null when missing.';

-- The WHERE clause of a thread listing, for the filters that are set. Values are never
-- spliced in: the clause refers to the parameters $1 .. $12 of list/count_conversations.
create or replace function public.conversations_where(
    p_since timestamptz, p_until timestamptz, p_model text, p_provider text, p_tool_name text, p_tag text,
    p_session_id text, p_user_id uuid, p_parent_id text, p_status text, p_min_cost numeric, p_text text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
    v text[] := array['true'];
begin
    if p_since is not null then v := array_append(v, 'c.updated_at >= $1'); end if;
    if p_until is not null then v := array_append(v, 'c.created_at < $2'); end if;
    if p_model is not null then
        v := array_append(v, 'exists (select 1 from public.messages m where m.conversation_id = c.id and m.model_used = $3)');
    end if;
    if p_provider is not null then
        v := array_append(v, 'exists (select 1 from public.messages m where m.conversation_id = c.id and m.provider = $4)');
    end if;
    if p_tool_name is not null then
        v := array_append(v, ('(c.tool_name = $5 or exists (select 1 from public.messages m '
                   'where m.conversation_id = c.id and m.tool_name = $5))'));
    end if;
    if p_tag is not null then v := array_append(v, 'c.tags @> array[$6]'); end if;
    if p_session_id is not null then v := array_append(v, 'c.session_id = $7'); end if;
    if p_user_id is not null then v := array_append(v, 'c.user_id = $8'); end if;
    if p_parent_id is not null then v := array_append(v, 'c.parent_id = $9'); end if;
    if p_status is not null then v := array_append(v, 'c.status = $10'); end if;
    if p_min_cost is not null then v := array_append(v, 'c.total_cost >= $11'); end if;
    if p_text is not null then
        -- A case-insensitive substring of the title; % and _ in the text are literal.
        v := array_append(v, $q$c.title ilike '%' || replace(replace(replace($12, '\', '\\'), '%', '\%'), '_', '\_') || '%'$q$);
    end if;
    return array_to_string(v, ' and ');
end;
$$;
comment on function public.conversations_where is 'Helper of list_conversations and count_conversations.';

create or replace function public.list_conversations(
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_model text default null,
    p_provider text default null,
    p_tool_name text default null,
    p_tag text default null,
    p_session_id text default null,
    p_user_id uuid default null,
    p_parent_id text default null,
    p_status text default null,
    p_min_cost numeric default null,
    p_text text default null,
    p_order text default 'recent',
    p_limit integer default 50,
    p_after_key text default null,
    p_after_id uuid default null)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
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
    v_where := public.conversations_where(p_since, p_until, p_model, p_provider, p_tool_name, p_tag, p_session_id,
                                          p_user_id, p_parent_id, p_status, p_min_cost, p_text);
    if p_after_key is not null then  -- keyset: the page after (key, id)
        v_where := v_where || format(' and (%s, c.id) < ($13::%s, $14)', v_column,
                                     case p_order when 'cost' then 'numeric' else 'timestamptz' end);
    end if;
    execute format(
        'select coalesce(jsonb_agg(to_jsonb(c) order by %1$s desc, c.id desc), ''[]'') from ('
        'select c.* from public.conversations c where %2$s order by %1$s desc, c.id desc limit $15) as c',
        v_column, v_where)
    into v_result
    using p_since, p_until, p_model, p_provider, p_tool_name, p_tag, p_session_id, p_user_id, p_parent_id,
          p_status, p_min_cost, p_text, p_after_key, p_after_id, p_limit;
    return v_result;
end;
$$;
comment on function public.list_conversations is
    'Threads active in [p_since, p_until), newest first by p_order (recent, created, cost), keyset-paginated '
    'with (p_after_key, p_after_id) from the last row of the previous page.';

create or replace function public.count_conversations(
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_model text default null,
    p_provider text default null,
    p_tool_name text default null,
    p_tag text default null,
    p_session_id text default null,
    p_user_id uuid default null,
    p_parent_id text default null,
    p_status text default null,
    p_min_cost numeric default null,
    p_text text default null)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_count bigint;
begin
    execute 'select count(*) from public.conversations c where '
        || public.conversations_where(p_since, p_until, p_model, p_provider, p_tool_name, p_tag, p_session_id,
                                      p_user_id, p_parent_id, p_status, p_min_cost, p_text)
    into v_count
    using p_since, p_until, p_model, p_provider, p_tool_name, p_tag, p_session_id, p_user_id, p_parent_id,
          p_status, p_min_cost, p_text;
    return to_jsonb(v_count);
end;
$$;
comment on function public.count_conversations is 'How many threads list_conversations would list.';

create or replace function public.conversation_ids(p_since timestamptz default null, p_until timestamptz default null)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(continuation_id order by created_at, id), '[]')
    from public.conversations
    where (p_since is null or created_at >= p_since) and (p_until is null or created_at < p_until)
$$;
comment on function public.conversation_ids is 'Continuation ids of the threads created in [p_since, p_until), oldest first (export).';

-- ---------------------------------------------------------------------------------------
-- Search

create or replace function public.search_messages(
    p_query text default null,
    p_tsquery text default null,
    p_limit integer default 20,
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_model text default null,
    p_role text default null,
    p_continuation_id text default null,
    p_order text default 'rank',
    p_window integer default 1000)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_query tsquery;
    v_filters text := '';
    v_want integer;
    v_matches integer;
    v_recent integer;
    v_rows float8;
    v_first date;
    v_last date;
    v_days integer;
    v_cutoff date;
    v_source text;
    v_hits text;
    v_result jsonb;
begin
    if p_order not in ('rank', 'recent') then
        raise exception 'p_order must be rank or recent, not %', p_order using errcode = 'PT400';
    end if;
    -- The package sends the user's syntax already rendered (p_tsquery: every word quoted, so
    -- it cannot fail); SQL callers may pass websearch syntax in p_query.
    v_query := case when p_tsquery is not null then to_tsquery('public.persistence_english', p_tsquery)
                    else websearch_to_tsquery('public.persistence_english', coalesce(p_query, '')) end;
    if numnode(v_query) = 0 then  -- only punctuation: nothing to search for
        return '[]'::jsonb;
    end if;
    if p_since is not null then v_filters := v_filters || ' and m.created_at >= $2'; end if;
    if p_until is not null then v_filters := v_filters || ' and m.created_at < $3'; end if;
    if p_model is not null then v_filters := v_filters || ' and m.model_used = $4'; end if;
    if p_role is not null then v_filters := v_filters || ' and m.role = $5'; end if;
    if p_continuation_id is not null then
        v_filters := v_filters
            || ' and m.conversation_id = (select id from public.conversations where continuation_id = $6)';
    end if;
    -- Ranking reads each candidate's row, so it covers the newest p_window matches (p_limit
    -- for order recent). A rare word (fewer than 200 matches, which the GIN index finds at
    -- once) is ranked in full.
    v_want := case when p_order = 'recent' then p_limit else p_window end;
    execute format('select count(*) from (select 1 from public.messages m where m.search_tsv @@ $1%s limit 200) as x',
                   v_filters)
    into v_matches
    using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want;
    if v_matches = 0 then
        return '[]'::jsonb;
    end if;
    if v_matches >= 200 then
        -- A common word: fetching every match to find the newest would cost a row per match.
        -- Search only the newest days expected to hold about 1.5 x v_want matches (the index
        -- has each message's day beside its words), sized by how often it matches among the
        -- newest 1,000 messages; widened below while they hold fewer than p_limit.
        execute format('select count(*) from (select * from public.messages order by created_at desc limit 1000) as m '
                       'where m.search_tsv @@ $1%s', v_filters)
        into v_recent
        using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want;
        select (min(created_at) at time zone 'UTC')::date, (max(created_at) at time zone 'UTC')::date
        into v_first, v_last from public.messages;
        select greatest(c.reltuples, 1) into v_rows from pg_catalog.pg_class c where c.oid = 'public.messages'::regclass;
        v_first := greatest(v_first, (p_since at time zone 'UTC')::date);
        v_last := least(v_last, (p_until at time zone 'UTC')::date);
        -- days = wanted matches / (matches per message x messages per day)
        v_days := ceil(1.5 * v_want / (greatest(v_recent, 1) / 1000.0)
                       / greatest(v_rows / greatest(v_last - v_first + 1, 1), 1));
    end if;
    loop
        v_cutoff := case when v_days is null then null else v_last - v_days + 1 end;
        v_source := format('select m.id, m.search_tsv, m.created_at from public.messages m '
                           'where m.search_tsv @@ $1%s%s order by m.created_at desc limit $8',
                           v_filters, case when v_cutoff > v_first then ' and m.created_day >= $9' else '' end);
        v_hits := format('select s.id, %s as score, s.created_at from (%s) as s',
                         case when p_order = 'rank' then 'ts_rank(s.search_tsv, $1)' else '0::real' end, v_source);
        execute format(
            'select coalesce(jsonb_agg(jsonb_build_object('
            '''message'', public.message_json(m, c.continuation_id), ''title'', c.title, ''score'', h.score, '
            '''cjk'', m.search_extra is not null, '
            '''headline'', case when m.search_extra is null then replace(replace(ts_headline('
            '''public.persistence_english'', '
            'replace(replace(left(m.content, 100000), ''<'', chr(57346)), ''>'', chr(57347)), $1, '
            '''StartSel='' || chr(57344) || '', StopSel='' || chr(57345) || '', MaxWords=24, MinWords=12, '
            'ShortWord=2''), chr(57346), ''<''), chr(57347), ''>'') end'
            ') order by h.ord), ''[]'') '
            'from (select x.id, x.score, row_number() over (order by x.score desc, x.created_at desc, x.id desc) as ord '
            'from (%s) as x order by x.score desc, x.created_at desc, x.id desc limit $7) as h '
            'join public.messages m on m.id = h.id join public.conversations c on c.id = m.conversation_id',
            v_hits)
        into v_result
        using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want, v_cutoff;
        exit when v_cutoff is null or v_cutoff <= v_first or jsonb_array_length(v_result) >= p_limit;
        v_days := v_days * 4;
    end loop;
    return v_result;
end;
$$;
comment on function public.search_messages is
    'Full-text search over message content: ranked by ts_rank (over the newest p_window matches when there '
    'are more, found through the newest slice of time that holds them) or newest first, with a highlighted ts_headline (U+E000/U+E001 around matches; null for CJK '
    'text, whose index is character pairs). Angle brackets are hidden from ts_headline, which would drop what '
    'looks like an HTML tag.';

-- ---------------------------------------------------------------------------------------
-- Files

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
    end if;
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
        if not found then
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
    return public.file_json(v_file, v_upload, p_continuation_id) || jsonb_build_object('deduplicated', v_dedup);
end;
$$;
comment on function public.put_file_metadata is
    'Record an upload whose bytes are stored: the stored object (once per owner and hash; deduplicated says '
    'it already was), the upload, and the thread''s use of it (the thread is created when missing).';

create or replace function public.link_file(p_continuation_id text, p_file_id uuid)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_conv public.conversations;
    v_file_id uuid;
begin
    select f.id into v_file_id from public.files f where f.id = p_file_id
    union all
    select u.file_id from public.file_uploads u where u.id = p_file_id
    limit 1;
    if v_file_id is null then
        raise exception 'no file with id %', p_file_id using errcode = 'PT404';
    end if;
    v_conv := public.lock_conversation(p_continuation_id, now());
    insert into public.conversation_files (conversation_id, file_id, user_id, created_at)
    values (v_conv.id, v_file_id, v_conv.user_id, now())
    on conflict do nothing;
    return to_jsonb(found);
end;
$$;
comment on function public.link_file is 'Record that a thread used a stored file (by file or upload id); true when new.';

create or replace function public.get_file(p_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(
        (select public.file_json(f, u, c.continuation_id)
         from public.file_uploads u
         join public.files f on f.id = u.file_id
         left join public.conversations c on c.id = u.conversation_id
         where u.id = p_id),
        (select public.file_json(f, null, null) from public.files f where f.id = p_id))
$$;
comment on function public.get_file is 'A file by upload id (that upload''s view) or stored-object id; null when missing.';

create or replace function public.list_files(
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_mime_type text default null,
    p_continuation_id text default null,
    p_session_id text default null,
    p_unused boolean default false,
    p_order text default 'recent',
    p_limit integer default 50,
    p_after_key text default null,
    p_after_id uuid default null)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
as $$
declare
    v_column text := case p_order when 'recent' then 'u.created_at' when 'size' then 'u.file_size' end;
    v_where text[] := array['true'];
    v_result jsonb;
begin
    if v_column is null then
        raise exception 'p_order must be recent or size, not %', p_order using errcode = 'PT400';
    end if;
    if p_since is not null then v_where := array_append(v_where, 'u.created_at >= $1'); end if;
    if p_until is not null then v_where := array_append(v_where, 'u.created_at < $2'); end if;
    if p_mime_type is not null then
        -- A prefix such as image/ matches the family; otherwise the exact type.
        v_where := array_append(v_where, case when right(p_mime_type, 1) = '/' then 'left(u.mime_type, length($3)) = $3'
                                   else 'u.mime_type = $3' end);
    end if;
    if p_continuation_id is not null then
        v_where := array_append(v_where, ('u.file_id in (select cf.file_id from public.conversation_files cf '
                               'join public.conversations cc on cc.id = cf.conversation_id where cc.continuation_id = $4)'));
    end if;
    if p_session_id is not null then v_where := array_append(v_where, 'u.session_id = $5'); end if;
    if p_unused then
        v_where := array_append(v_where, 'not exists (select 1 from public.conversation_files cf where cf.file_id = u.file_id)');
    end if;
    if p_after_key is not null then
        v_where := array_append(v_where, format('(%s, u.id) < ($6::%s, $7)', v_column,
                                     case p_order when 'size' then 'bigint' else 'timestamptz' end));
    end if;
    execute format(
        'select coalesce(jsonb_agg(public.file_json(f, u, c.continuation_id) order by %1$s desc, u.id desc), ''[]'') '
        'from (select * from public.file_uploads u where %2$s order by %1$s desc, u.id desc limit $8) as u '
        'join public.files f on f.id = u.file_id left join public.conversations c on c.id = u.conversation_id',
        v_column, array_to_string(v_where, ' and '))
    into v_result
    using p_since, p_until, p_mime_type, p_continuation_id, p_session_id, p_after_key, p_after_id, p_limit;
    return v_result;
end;
$$;
comment on function public.list_files is
    'Uploads newest first (p_order size: largest first), keyset-paginated with (p_after_key, p_after_id).';

create or replace function public.file_conversations(p_file_id uuid)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(to_jsonb(c) order by c.updated_at desc), '[]')
    from public.conversations c
    where c.id in (
        select cf.conversation_id from public.conversation_files cf
        where cf.file_id = p_file_id
           or cf.file_id = (select u.file_id from public.file_uploads u where u.id = p_file_id))
$$;
comment on function public.file_conversations is 'The threads that used a file (by file or upload id).';

create or replace function public.record_provider_file(
    p_id uuid,
    p_file_id uuid,
    p_provider text,
    p_provider_file_id text,
    p_purpose text default null,
    p_expires_at timestamptz default null,
    p_created_at timestamptz default now())
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_file public.files;
    v_row public.provider_files;
begin
    select f.* into v_file from public.files f
    where f.id = p_file_id or f.id = (select u.file_id from public.file_uploads u where u.id = p_file_id)
    limit 1;
    if not found then
        raise exception 'no file with id %', p_file_id using errcode = 'PT404';
    end if;
    insert into public.provider_files as p (id, file_id, provider, provider_file_id, purpose, user_id, created_at,
        expires_at)
    values (p_id, v_file.id, p_provider, p_provider_file_id, coalesce(p_purpose, ''), v_file.user_id, p_created_at,
        p_expires_at)
    on conflict (file_id, provider, purpose) do update set
        provider_file_id = excluded.provider_file_id, created_at = excluded.created_at, expires_at = excluded.expires_at
    returning p.* into v_row;
    return to_jsonb(v_row) || jsonb_build_object('file_hash', v_file.file_hash);
end;
$$;
comment on function public.record_provider_file is
    'Remember the provider-side id of a stored file (one per file, provider and purpose; a new upload replaces it).';

create or replace function public.find_provider_file(
    p_file_hash text,
    p_provider text,
    p_purpose text default null,
    p_user_id uuid default null,
    p_at timestamptz default now())
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select to_jsonb(p) || jsonb_build_object('file_hash', f.file_hash)
    from public.provider_files p join public.files f on f.id = p.file_id
    where f.file_hash = p_file_hash and p.provider = p_provider and f.user_id is not distinct from p_user_id
        and (p.expires_at is null or p.expires_at > p_at) and (p_purpose is null or p.purpose = p_purpose)
    order by p.created_at desc
    limit 1
$$;
comment on function public.find_provider_file is 'The unexpired provider upload of these bytes, or null: upload only on a miss.';

create or replace function public.list_provider_files()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(to_jsonb(p) || jsonb_build_object('file_hash', f.file_hash) order by p.created_at, p.id), '[]')
    from public.provider_files p join public.files f on f.id = p.file_id
$$;
comment on function public.list_provider_files is 'Every provider upload on record, oldest first (copying a store).';

create or replace function public.upload_activity(p_session_id text, p_since timestamptz)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_array(count(*), coalesce(sum(file_size), 0))
    from public.file_uploads
    where session_id = p_session_id and created_at >= p_since
$$;
comment on function public.upload_activity is '[uploads, bytes] a session made since p_since (what upload rate limits read).';

-- ---------------------------------------------------------------------------------------
-- Usage

-- Rows of [period, model, provider, tool_name, user_id, messages, input_tokens,
-- cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, total_tokens,
-- cost_usd, unpriced_messages], grouped by the keys in p_group_by (the others are null).
create or replace function public.usage_report(
    p_group_by text[] default '{}',
    p_first_day date default null,
    p_last_day date default null,
    p_model text default null,
    p_provider text default null,
    p_tool_name text default null)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(period, model, provider, tool_name, user_id, messages, input_tokens,
        cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, total_tokens, cost_usd,
        unpriced_messages)), '[]')
    from (
        select
            case when 'day' = any(p_group_by) then u.day
                 when 'week' = any(p_group_by) then date_trunc('week', u.day::timestamp)::date
                 when 'month' = any(p_group_by) then date_trunc('month', u.day::timestamp)::date end as period,
            case when 'model' = any(p_group_by) then nullif(u.model, '') end as model,
            case when 'provider' = any(p_group_by) then nullif(u.provider, '') end as provider,
            case when 'tool_name' = any(p_group_by) then nullif(u.tool_name, '') end as tool_name,
            case when 'user_id' = any(p_group_by) then u.user_id end as user_id,
            sum(u.messages) as messages,
            sum(u.input_tokens) as input_tokens,
            sum(u.cached_input_tokens) as cached_input_tokens,
            sum(u.cache_write_tokens) as cache_write_tokens,
            sum(u.output_tokens) as output_tokens,
            sum(u.reasoning_tokens) as reasoning_tokens,
            sum(u.input_tokens + u.cached_input_tokens + u.cache_write_tokens + u.output_tokens
                + u.reasoning_tokens) as total_tokens,
            sum(u.cost_usd) as cost_usd,
            sum(u.unpriced_messages) as unpriced_messages
        from public.usage_daily u
        where (p_first_day is null or u.day >= p_first_day) and (p_last_day is null or u.day <= p_last_day)
            and (p_model is null or u.model = p_model) and (p_provider is null or u.provider = p_provider)
            and (p_tool_name is null or u.tool_name = p_tool_name)
        group by 1, 2, 3, 4, 5
    ) as g
$$;
comment on function public.usage_report is
    'Token and cost totals from the daily rollup (never a scan of messages), grouped by any of day, week, month, '
    'model, provider, tool_name, user_id; days are inclusive bounds.';

-- Rows of [period, mime_type, user_id, files, bytes, uploads, logical_bytes].
create or replace function public.storage_usage_report(
    p_group_by text[] default '{}',
    p_first_day date default null,
    p_last_day date default null)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(period, mime_type, user_id, files, bytes, uploads, logical_bytes)), '[]')
    from (
        select
            case when 'day' = any(p_group_by) then s.day
                 when 'week' = any(p_group_by) then date_trunc('week', s.day::timestamp)::date
                 when 'month' = any(p_group_by) then date_trunc('month', s.day::timestamp)::date end as period,
            case when 'mime_type' = any(p_group_by) then s.mime_type end as mime_type,
            case when 'user_id' = any(p_group_by) then s.user_id end as user_id,
            sum(s.files) as files, sum(s.bytes) as bytes, sum(s.uploads) as uploads,
            sum(s.logical_bytes) as logical_bytes
        from (
            select (f.created_at at time zone 'UTC')::date as day, f.mime_type, f.user_id, 1 as files,
                f.file_size as bytes, 0 as uploads, 0 as logical_bytes
            from public.files f
            union all
            select (u.created_at at time zone 'UTC')::date, u.mime_type, u.user_id, 0, 0, 1, u.file_size
            from public.file_uploads u
        ) as s
        where (p_first_day is null or s.day >= p_first_day) and (p_last_day is null or s.day <= p_last_day)
        group by 1, 2, 3
    ) as g
$$;
comment on function public.storage_usage_report is
    'Stored objects and bytes (counted when first stored) against uploads and uploaded bytes (before dedup).';

create or replace function public.facets()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'models', coalesce((select jsonb_agg(x order by x) from (
            select distinct model as x from public.usage_daily where model <> '') as s), '[]'),
        'providers', coalesce((select jsonb_agg(x order by x) from (
            select distinct provider as x from public.usage_daily where provider <> '') as s), '[]'),
        'tools', coalesce((select jsonb_agg(x order by x) from (
            select distinct tool_name as x from public.usage_daily where tool_name <> '') as s), '[]'),
        'tags', coalesce((select jsonb_agg(x order by x) from (
            select distinct unnest(tags) as x from public.conversations order by 1 limit 1000) as s), '[]'))
$$;
comment on function public.facets is 'Distinct models, providers, tools and tags in use, for filter choices.';

-- ---------------------------------------------------------------------------------------
-- Prices

create or replace function public.list_model_prices()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(to_jsonb(p) order by p.id), '[]') from public.model_prices p
$$;
comment on function public.list_model_prices is 'Every price row.';

create or replace function public.upsert_model_prices(p_prices jsonb, p_origin text default 'user')
returns jsonb
language sql
security invoker
set search_path = ''
as $$
    with rows as (
        insert into public.model_prices as m (id, provider, model, match, effective_from, input, cached_input,
            cache_write, output, tier_above_tokens, tier_input, tier_cached_input, tier_cache_write, tier_output,
            tier2_above_tokens, tier2_input, tier2_cached_input, tier2_output, source, as_of, origin)
        select p.id, p.provider, p.model, p.match, p.effective_from, p.input, p.cached_input, p.cache_write,
            p.output, p.tier_above_tokens, p.tier_input, p.tier_cached_input, p.tier_cache_write, p.tier_output,
            p.tier2_above_tokens, p.tier2_input, p.tier2_cached_input, p.tier2_output, coalesce(p.source, ''),
            p.as_of, p_origin
        from jsonb_to_recordset(p_prices) as p(id text, provider text, model text, match text, effective_from date,
            input numeric, cached_input numeric, cache_write numeric, output numeric, tier_above_tokens bigint,
            tier_input numeric, tier_cached_input numeric, tier_cache_write numeric, tier_output numeric,
            tier2_above_tokens bigint, tier2_input numeric, tier2_cached_input numeric, tier2_output numeric,
            source text, as_of text)
        on conflict (id) do update set
            provider = excluded.provider, model = excluded.model, match = excluded.match,
            effective_from = excluded.effective_from, input = excluded.input, cached_input = excluded.cached_input,
            cache_write = excluded.cache_write, output = excluded.output,
            tier_above_tokens = excluded.tier_above_tokens, tier_input = excluded.tier_input,
            tier_cached_input = excluded.tier_cached_input, tier_cache_write = excluded.tier_cache_write,
            tier_output = excluded.tier_output, tier2_above_tokens = excluded.tier2_above_tokens,
            tier2_input = excluded.tier2_input, tier2_cached_input = excluded.tier2_cached_input,
            tier2_output = excluded.tier2_output, source = excluded.source, as_of = excluded.as_of,
            origin = excluded.origin
        returning 1
    )
    select to_jsonb(count(*)) from rows
$$;
comment on function public.upsert_model_prices is 'Add or replace (by id) price rows; reprice applies them to past messages.';

-- The package's price table is copied in when a store opens, once per version of it: a
-- matching digest answers true at once; otherwise the caller is asked (false) for the rows.
create or replace function public.sync_package_prices(p_digest text, p_prices jsonb default null)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if exists (select 1 from public.store_meta where key = 'package_prices_sha256' and value = p_digest) then
        return 'true'::jsonb;
    end if;
    if p_prices is null then
        return 'false'::jsonb;
    end if;
    perform public.upsert_model_prices(p_prices, 'package');
    insert into public.store_meta (key, value) values ('package_prices_sha256', p_digest)
    on conflict (key) do update set value = excluded.value;
    return 'true'::jsonb;
end;
$$;
comment on function public.sync_package_prices is
    'Copy the package''s price table in (origin package) unless this digest of it is already synced.';

-- ---------------------------------------------------------------------------------------
-- Bulk import (export/import, the demo): one call per batch of threads

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
            (cost is null and (tokens > 0 or metadata ? 'usage_raw'))::integer as unpriced
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

-- ---------------------------------------------------------------------------------------
-- Maintenance

-- A page of the messages reprice looks at (those with tokens or a cost), in time order.
create or replace function public.reprice_scan(
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_model text default null,
    p_after_created_at timestamptz default null,
    p_after_id uuid default null,
    p_limit integer default 5000)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(id, model_used, created_at, input_tokens, cached_input_tokens,
        cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id, metadata ? 'usage_raw')
        order by created_at, id), '[]')
    from (
        select * from public.messages m
        where (m.tokens > 0 or m.cost is not null)
            and (p_since is null or m.created_at >= p_since) and (p_until is null or m.created_at < p_until)
            and (p_model is null or m.model_used = p_model)
            and (p_after_created_at is null or (m.created_at, m.id) > (p_after_created_at, p_after_id))
        order by m.created_at, m.id
        limit p_limit
    ) as m
$$;
comment on function public.reprice_scan is
    'Rows of [id, model, created_at, 5 token buckets, cost, price_id, unknown usage] for reprice, keyset-paged.';

-- New costs for messages ([{id, cost, price_id}]), with the thread totals and the daily
-- rollup corrected by the difference, in one transaction.
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
            (upd.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw'))::integer
                - (m.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw'))::integer as unpriced
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
comment on function public.reprice_apply is 'Store recomputed costs and correct totals and rollup by the difference.';

-- Delete threads inactive since p_cutoff with their messages (the rollup is corrected), then
-- the stored objects no remaining thread uses and nobody uploaded since. Returns the counts
-- and, unless p_dry_run, [bucket, path] of each deleted object, whose bytes the caller deletes
-- after the commit (a crash in between leaves unreferenced bytes, never a row without bytes).
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
                count(*) filter (where m.cost is null and (m.tokens > 0 or m.metadata ? 'usage_raw')) as unpriced,
                coalesce(sum(m.duration_ms), 0) as duration
            from public.messages m join public.conversations c on c.id = m.conversation_id
            where c.updated_at < p_cutoff
            group by 1, 2, 3, 4, 5
        ) as d
        where u.day = d.day and u.user_id is not distinct from d.user_id and u.model = d.model
            and u.provider = d.provider and u.tool_name = d.tool_name;
        delete from public.usage_daily where messages <= 0;
        delete from public.conversations where updated_at < p_cutoff;
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
    end if;
    return jsonb_build_object(
        'conversations', v_threads, 'messages', v_messages, 'files', jsonb_array_length(v_files),
        'bytes', coalesce((select sum((x ->> 'file_size')::bigint) from jsonb_array_elements(v_files) as x), 0),
        'uploads', coalesce((select sum((x ->> 'uploads')::bigint) from jsonb_array_elements(v_files) as x), 0),
        'deleted', case when p_dry_run then '[]'::jsonb else coalesce((
            select jsonb_agg(jsonb_build_array(x ->> 'bucket_name', x ->> 'storage_path'))
            from jsonb_array_elements(v_files) as x), '[]') end);
end;
$$;
comment on function public.prune is
    'Delete threads inactive since p_cutoff and the files nothing uses any more; p_dry_run only counts.';

create or replace function public.store_doctor()
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select jsonb_build_object(
        'server_version', current_setting('server_version'),
        'database_bytes', pg_database_size(current_database()),
        'conversations', (select count(*) from public.conversations),
        'messages', (select count(*) from public.messages),
        'files', (select count(*) from public.files),
        'uploads', (select count(*) from public.file_uploads),
        'prices', (select count(*) from public.model_prices),
        'last_message_at', (select max(created_at) from public.messages),
        'unpriced_models', coalesce((
            select jsonb_object_agg(model, n) from (
                select coalesce(nullif(model, ''), '(no model)') as model, sum(unpriced_messages) as n
                from public.usage_daily where unpriced_messages > 0 group by 1) as s), '{}'))
$$;
comment on function public.store_doctor is 'Health and size figures (python -m persistence doctor).';

-- The storage paths of stored objects, for a check that their bytes exist.
create or replace function public.file_paths(p_limit integer default null)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(bucket_name, storage_path)), '[]')
    from (select bucket_name, storage_path from public.files order by created_at, id limit p_limit) as f
$$;
comment on function public.file_paths is '[bucket, path] of stored objects, oldest first (doctor).';

-- Security definer: the migration history lives in a schema API roles cannot read. It
-- returns only versions and names.
create or replace function public.applied_migrations()
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(version, name) order by version), '[]')
    from supabase_migrations.schema_migrations
$$;
comment on function public.applied_migrations is
    'Versions and names of the applied migrations (supabase_migrations.schema_migrations).';

-- ---------------------------------------------------------------------------------------
-- Grants. Postgres lets PUBLIC execute new functions and Supabase grants anon too: revoke both.

revoke all on function
    public.message_json, public.file_json, public.lock_conversation, public.start_conversation,
    public.update_conversation, public.record_message, public.record_messages, public.get_conversation,
    public.get_messages,
    public.get_message, public.conversations_where, public.list_conversations, public.count_conversations,
    public.conversation_ids, public.search_messages, public.put_file_metadata, public.link_file, public.get_file,
    public.list_files, public.file_conversations, public.record_provider_file, public.find_provider_file, public.list_provider_files,
    public.upload_activity, public.usage_report, public.storage_usage_report, public.facets,
    public.list_model_prices, public.upsert_model_prices, public.sync_package_prices, public.import_batch,
    public.reprice_scan, public.reprice_apply, public.prune, public.store_doctor, public.file_paths,
    public.applied_migrations
from public, anon, authenticated;

-- Row level security confines these to the caller's own rows.
grant execute on function
    public.message_json, public.file_json, public.lock_conversation, public.start_conversation,
    public.update_conversation, public.record_message, public.record_messages, public.get_conversation,
    public.get_messages,
    public.get_message, public.conversations_where, public.list_conversations, public.count_conversations,
    public.conversation_ids, public.search_messages, public.put_file_metadata, public.link_file, public.get_file,
    public.list_files, public.file_conversations, public.record_provider_file, public.find_provider_file, public.list_provider_files,
    public.upload_activity, public.usage_report, public.storage_usage_report, public.facets,
    public.list_model_prices
to authenticated;

-- Maintenance, prices, bulk import and the migration history: the server (service role) only.
grant execute on function
    public.message_json, public.file_json, public.lock_conversation, public.start_conversation,
    public.update_conversation, public.record_message, public.record_messages, public.get_conversation,
    public.get_messages,
    public.get_message, public.conversations_where, public.list_conversations, public.count_conversations,
    public.conversation_ids, public.search_messages, public.put_file_metadata, public.link_file, public.get_file,
    public.list_files, public.file_conversations, public.record_provider_file, public.find_provider_file, public.list_provider_files,
    public.upload_activity, public.usage_report, public.storage_usage_report, public.facets,
    public.list_model_prices, public.upsert_model_prices, public.sync_package_prices, public.import_batch,
    public.reprice_scan, public.reprice_apply, public.prune, public.store_doctor, public.file_paths,
    public.applied_migrations
to service_role;
