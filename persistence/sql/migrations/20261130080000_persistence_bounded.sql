-- Bounded functions (issue 11): every function a signed-in user can call has a bounded cost.
--
-- A signed-in user reaches these functions directly (PostgREST exposes every granted
-- function), so the package's own checks are not enough. This migration:
--
-- 1. Caps what a call may ask for, refusing more with PT400 naming the limit (never cutting
--    silently): search_messages p_limit 1..500, p_window 1..1000, p_query <= 1,000 and
--    p_tsquery <= 4,000 characters, at most 200 words and operators in the query (the
--    package refuses earlier: 1,000 characters, 64 words; persistence/search_query.py);
--    get_messages p_limit 1..1000; list_conversations and list_files p_limit 1..1001.
-- 2. Bounds ts_headline, where a 4,000-word query spent 13-20 s: it runs only on the rows of
--    the returned page, over the first 3,000 characters of each, and for queries of more
--    than 4 words it marks the query's words (an OR of its lexemes, linear) rather than the
--    covers of the query itself (superlinear in the query's operators). The hits are the
--    same; the package cuts the snippet from the whole message when this one has no match.
-- 3. Indexes the thread filters on messages (model, provider, tool): list_conversations and
--    count_conversations with such a filter read every message of every thread without one
--    (2.3 s for a count at a million messages; 0.17 s with them, bench/bench_hostile.py).
-- 4. Sets a statement_timeout on every function in public that authenticated may execute:
--    2 s for reads and search, 5 s for writes and whole-thread reads (Supabase's defaults are
--    8 s for authenticated, 3 s for anon). PostgREST (12.2 and later) applies a function's
--    statement_timeout to the request's transaction; a plain Postgres connection applies its
--    own (a function's SET does not time out the statement that called it), so on
--    postgresql:// the caps above are what bound a call. Exempt, because they read no table,
--    cost what their argument costs and run once per row inside the functions above (a SET
--    clause would cost a settings save/restore per row): message_json, file_json,
--    conversations_where. supabase/tests/30_bounded.sql checks that every other function
--    has one, so a later `create or replace` that drops it fails the suite.
--
-- Functions redefined here are copied from 20261126000002_persistence_api with the changes
-- above; create or replace keeps their grants.

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
set statement_timeout = '2s'
as $$
declare
    v_query tsquery;
    v_marks tsquery;
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
    if p_order is null or p_order not in ('rank', 'recent') then
        raise exception 'p_order must be rank or recent, not %', p_order using errcode = 'PT400';
    end if;
    -- Bounded cost: refuse (never cut) what is over a limit, naming it.
    if p_limit is null or p_limit < 1 or p_limit > 500 then
        raise exception 'p_limit must be from 1 to 500, not %', p_limit using errcode = 'PT400';
    end if;
    if p_window is null or p_window < 1 or p_window > 1000 then
        raise exception 'p_window must be from 1 to 1000, not %', p_window using errcode = 'PT400';
    end if;
    if length(p_query) > 1000 then
        raise exception 'p_query is % characters; the limit is 1000', length(p_query) using errcode = 'PT400';
    end if;
    if length(p_tsquery) > 4000 then
        raise exception 'p_tsquery is % characters; the limit is 4000', length(p_tsquery) using errcode = 'PT400';
    end if;
    -- The package sends the user's syntax already rendered (p_tsquery: every word quoted, so
    -- it cannot fail); SQL callers may pass websearch syntax in p_query.
    v_query := case when p_tsquery is not null then to_tsquery('public.persistence_english', p_tsquery)
                    else websearch_to_tsquery('public.persistence_english', coalesce(p_query, '')) end;
    if numnode(v_query) = 0 then  -- only punctuation: nothing to search for
        return '[]'::jsonb;
    end if;
    if numnode(v_query) > 200 then
        raise exception 'the query has % words and operators; the limit is 200', numnode(v_query)
            using errcode = 'PT400';
    end if;
    -- What ts_headline marks. Its cost grows with the query's operators times the matches in
    -- the text (a 64-word phrase takes about a second on 2,000 characters), so beyond 4 words
    -- it marks each word of the query (an OR of its lexemes: linear) instead of the covers of
    -- the query itself. Hits are the same either way; only the snippet's marks differ.
    v_marks := case when numnode(v_query) <= 7 then v_query else (
        select string_agg(distinct '''' || x[1] || '''' || coalesce(x[2], ''), ' | ')::tsquery
        from regexp_matches(v_query::text, '''((?:[^'']|'''')+)''(:[*A-D]+)?', 'g') as x) end;
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
            'replace(replace(left(m.content, 3000), ''<'', chr(57346)), ''>'', chr(57347)), $10, '
            '''StartSel='' || chr(57344) || '', StopSel='' || chr(57345) || '', MaxWords=24, MinWords=12, '
            'ShortWord=2''), chr(57346), ''<''), chr(57347), ''>'') end'
            ') order by h.ord), ''[]'') '
            'from (select x.id, x.score, row_number() over (order by x.score desc, x.created_at desc, x.id desc) as ord '
            'from (%s) as x order by x.score desc, x.created_at desc, x.id desc limit $7) as h '
            'join public.messages m on m.id = h.id join public.conversations c on c.id = m.conversation_id',
            v_hits)
        into v_result
        using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want, v_cutoff, v_marks;
        exit when v_cutoff is null or v_cutoff <= v_first or jsonb_array_length(v_result) >= p_limit;
        v_days := v_days * 4;
    end loop;
    return v_result;
end;
$$;
comment on function public.search_messages is
    'Full-text search over message content: ranked by ts_rank (over the newest p_window matches when there '
    'are more, found through the newest slice of time that holds them) or newest first, with a highlighted ts_headline (U+E000/U+E001 around matches; null for CJK '
    'text, whose index is character pairs) cut from the first 3,000 characters of each returned message. '
    'Angle brackets are hidden from ts_headline, which would drop what looks like an HTML tag. Bounded: '
    'p_limit 1..500, p_window 1..1000, p_query <= 1,000 and p_tsquery <= 4,000 characters, at most 200 '
    'words and operators (PT400 beyond), statement_timeout 2 s.';

-- ---------------------------------------------------------------------------------------
-- Listings: a page is at most what the package asks for

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
    if p_limit is null or p_limit < 1 or p_limit > 1000 then
        raise exception 'p_limit must be from 1 to 1000, not %', p_limit using errcode = 'PT400';
    end if;
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
    if p_limit is null or p_limit < 1 or p_limit > 1001 then  -- the package asks for a page of <= 1000, plus one
        raise exception 'p_limit must be from 1 to 1001, not %', p_limit using errcode = 'PT400';
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
    if p_limit is null or p_limit < 1 or p_limit > 1001 then  -- the package asks for a page of <= 1000, plus one
        raise exception 'p_limit must be from 1 to 1001, not %', p_limit using errcode = 'PT400';
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

-- ---------------------------------------------------------------------------------------
-- The thread filters that read messages (conversations_where: model, provider, tool)

create index if not exists messages_model_used on public.messages (model_used, conversation_id)
    where model_used is not null;
create index if not exists messages_provider on public.messages (provider, conversation_id)
    where provider is not null;
create index if not exists messages_tool_name on public.messages (tool_name, conversation_id)
    where tool_name is not null;

-- ---------------------------------------------------------------------------------------
-- Statement timeouts

-- Writes and whole-thread reads (a thread's every message, export's id list): 5 s.
alter function public.start_conversation set statement_timeout = '5s';
alter function public.update_conversation set statement_timeout = '5s';
alter function public.record_message set statement_timeout = '5s';
alter function public.record_messages set statement_timeout = '5s';
alter function public.put_file_metadata set statement_timeout = '5s';
alter function public.link_file set statement_timeout = '5s';
alter function public.record_provider_file set statement_timeout = '5s';
alter function public.get_conversation set statement_timeout = '5s';
alter function public.conversation_ids set statement_timeout = '5s';

-- Every other function of ours authenticated may execute (reads, search, lookups, and helpers
-- such as price_message and blob_sweep_until): 2 s, unless it already has a timeout or is one
-- of the per-row helpers named above. Not ours: extension members and trigger functions.
do $$
declare
    r record;
begin
    for r in
        select p.oid::regprocedure as fn
        from pg_catalog.pg_proc p
        join pg_catalog.pg_namespace n on n.oid = p.pronamespace
        where n.nspname = 'public' and p.prokind = 'f'
            and has_function_privilege('authenticated', p.oid, 'execute')
            and p.proname not in ('message_json', 'file_json', 'conversations_where')
            and p.prorettype <> 'pg_catalog.trigger'::pg_catalog.regtype  -- run by triggers, not callable
            and not exists (  -- an extension's functions are the extension's (pg_trgm, btree_gin)
                select 1 from pg_catalog.pg_depend d
                where d.classid = 'pg_catalog.pg_proc'::pg_catalog.regclass and d.objid = p.oid and d.deptype = 'e')
            and not exists (
                select 1 from unnest(coalesce(p.proconfig, '{}')) as c where c like 'statement_timeout=%')
    loop
        execute format('alter function %s set statement_timeout = %L', r.fn, '2s');
    end loop;
end;
$$;
