-- Search ranks the same window on every backend (issue 12).
--
-- search_messages ranked "the newest p_window matches" only approximately: it stopped
-- widening its slice of recent days once the slice held p_limit matches, so a word whose
-- estimate ran low was ranked among fewer (say the newest 600) than SQLite ranks, and the two
-- backends returned different hits for the same query and data. It now widens until the
-- slice holds p_window matches (or reaches the first day), ranks exactly those, and builds
-- the page (message, title, ts_headline) only for the rows returned. The window is 1,000 on
-- both backends (persistence.search_query.SEARCH_RANK_WINDOW). Same signature, grants,
-- limits and statement_timeout as 20261130080000_persistence_bounded.
--
-- Also cheaper at a million messages (bench/bench_search.py): a common word is recognised by
-- its matches among the newest 1,000 messages before anything counts its matches through
-- the GIN index (which reads the word's whole posting list), and only the rows kept in the
-- window are ranked (ts_rank had run on every match in the slice of days, often 2-3x as many).

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
    v_found integer;
    v_ids uuid[];
    v_scores real[];
    v_times timestamptz[];
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
    -- for order recent), the same window as SQLite (persistence.search_query.SEARCH_RANK_WINDOW).
    -- A rare word (fewer than 200 matches, which the GIN index finds at once) is ranked in full.
    v_want := case when p_order = 'recent' then p_limit else p_window end;
    -- How often the query matches among the newest 1,000 messages comes first: it reads at
    -- most 1,000 rows whatever the word, while counting a common word's matches through the
    -- GIN index reads its whole posting list (about a millisecond per 50,000 matches).
    execute format('select count(*) from (select * from public.messages order by created_at desc limit 1000) as m '
                   'where m.search_tsv @@ $1%s', v_filters)
    into v_recent
    using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want;
    if v_recent < 20 then
        -- Rare lately: count up to 200 matches in all; fewer are ranked in full.
        execute format('select count(*) from (select 1 from public.messages m where m.search_tsv @@ $1%s limit 200) as x',
                       v_filters)
        into v_matches
        using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want;
        if v_matches = 0 then
            return '[]'::jsonb;
        end if;
    end if;
    if v_recent >= 20 or v_matches >= 200 then
        -- A common word: fetching every match to find the newest would cost a row per match.
        -- Search only the newest days expected to hold about 1.5 x v_want matches (the index
        -- has each message's day beside its words), sized by how often it matches among the
        -- newest 1,000 messages; widened below while they hold fewer than v_want.
        select (min(created_at) at time zone 'UTC')::date, (max(created_at) at time zone 'UTC')::date
        into v_first, v_last from public.messages;
        select greatest(c.reltuples, 1) into v_rows from pg_catalog.pg_class c where c.oid = 'public.messages'::regclass;
        v_first := greatest(v_first, (p_since at time zone 'UTC')::date);
        v_last := least(v_last, (p_until at time zone 'UTC')::date);
        -- days = wanted matches / (matches per message x messages per day)
        v_days := ceil(1.5 * v_want / (greatest(v_recent, 1) / 1000.0)
                       / greatest(v_rows / greatest(v_last - v_first + 1, 1), 1));
    end if;
    -- The newest v_want matches, exactly (the set SQLite ranks too): widen the slice of days
    -- until it holds that many or reaches the first day. Scores are computed in the same pass.
    loop
        v_cutoff := case when v_days is null then null else v_last - v_days + 1 end;
        -- Ranked outside the subquery, so only the rows kept are ranked (a slice of days may
        -- hold several times v_want matches; ranking them all cost about 2x the search).
        execute format(
            'select count(*)::integer, array_agg(s.id), array_agg(%s), array_agg(s.created_at) '
            'from (select m.id, m.created_at, m.search_tsv from public.messages m '
            'where m.search_tsv @@ $1%s%s order by m.created_at desc, m.id desc limit $8) as s',
            case when p_order = 'rank' then 'ts_rank(s.search_tsv, $1)' else '0::real' end,
            v_filters, case when v_cutoff > v_first then ' and m.created_day >= $9' else '' end)
        into v_found, v_ids, v_scores, v_times
        using v_query, p_since, p_until, p_model, p_role, p_continuation_id, p_limit, v_want, v_cutoff;
        exit when v_cutoff is null or v_cutoff <= v_first or v_found >= v_want;
        v_days := v_days * 4;
    end loop;
    if v_found = 0 then
        return '[]'::jsonb;
    end if;
    -- The page: best first (ties: newest first), snippets only for the rows returned.
    select coalesce(jsonb_agg(jsonb_build_object(
               'message', public.message_json(m, c.continuation_id), 'title', c.title, 'score', h.score,
               'cjk', m.search_extra is not null,
               'headline', case when m.search_extra is null then replace(replace(ts_headline(
                   'public.persistence_english',
                   replace(replace(left(m.content, 3000), '<', chr(57346)), '>', chr(57347)), v_marks,
                   'StartSel=' || chr(57344) || ', StopSel=' || chr(57345) || ', MaxWords=24, MinWords=12, '
                   'ShortWord=2'), chr(57346), '<'), chr(57347), '>') end)
               order by h.ord), '[]')
    into v_result
    from (select u.id, u.score, row_number() over (order by u.score desc, u.created_at desc, u.id desc) as ord
          from unnest(v_ids, v_scores, v_times) as u(id, score, created_at)
          order by u.score desc, u.created_at desc, u.id desc
          limit p_limit) as h
    join public.messages m on m.id = h.id
    join public.conversations c on c.id = m.conversation_id;
    return v_result;
end;
$$;
comment on function public.search_messages is
    'Full-text search over message content: ranked by ts_rank (over exactly the newest p_window matches '
    'when there are more, found through the newest slice of time that holds them) or newest first, with a highlighted ts_headline (U+E000/U+E001 around matches; null for CJK '
    'text, whose index is character pairs) cut from the first 3,000 characters of each returned message. '
    'Angle brackets are hidden from ts_headline, which would drop what looks like an HTML tag. Bounded: '
    'p_limit 1..500, p_window 1..1000, p_query <= 1,000 and p_tsquery <= 4,000 characters, at most 200 '
    'words and operators (PT400 beyond), statement_timeout 2 s.';
