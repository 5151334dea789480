-- How many messages a search matches (issue 14: the Search page shows a true total instead
-- of "more than 20").
--
-- count_search_messages counts what search_messages would return with no limit: the same
-- query (p_tsquery as the package renders it, or websearch syntax in p_query), the same
-- filters, the same argument limits (PT400 beyond, the limit named) and the same 2 s
-- statement_timeout (57014 beyond; the package then says "more than" a page). Security
-- invoker: row level security counts a signed-in user's own messages only.

create or replace function public.count_search_messages(
    p_query text default null,
    p_tsquery text default null,
    p_since timestamptz default null,
    p_until timestamptz default null,
    p_model text default null,
    p_role text default null,
    p_continuation_id text default null)
returns bigint
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
declare
    v_query tsquery;
    v_filters text := '';
    v_count bigint;
begin
    -- Bounded cost: refuse (never cut) what is over a limit, naming it, as search_messages does.
    if length(p_query) > 1000 then
        raise exception 'p_query is % characters; the limit is 1000', length(p_query) using errcode = 'PT400';
    end if;
    if length(p_tsquery) > 4000 then
        raise exception 'p_tsquery is % characters; the limit is 4000', length(p_tsquery) using errcode = 'PT400';
    end if;
    v_query := case when p_tsquery is not null then to_tsquery('public.persistence_english', p_tsquery)
                    else websearch_to_tsquery('public.persistence_english', coalesce(p_query, '')) end;
    if numnode(v_query) = 0 then  -- only punctuation: nothing to search for
        return 0;
    end if;
    if numnode(v_query) > 200 then
        raise exception 'the query has % words and operators; the limit is 200', numnode(v_query)
            using errcode = 'PT400';
    end if;
    -- A period also bounds the day beside the words in the messages_search index, so the
    -- index scan reads only that period's entries (created_at alone would be checked per row).
    if p_since is not null then
        v_filters := v_filters || ' and m.created_at >= $2 and m.created_day >= ($2 at time zone ''UTC'')::date';
    end if;
    if p_until is not null then
        v_filters := v_filters || ' and m.created_at < $3 and m.created_day <= ($3 at time zone ''UTC'')::date';
    end if;
    if p_model is not null then v_filters := v_filters || ' and m.model_used = $4'; end if;
    if p_role is not null then v_filters := v_filters || ' and m.role = $5'; end if;
    if p_continuation_id is not null then
        v_filters := v_filters
            || ' and m.conversation_id = (select id from public.conversations where continuation_id = $6)';
    end if;
    -- Counted up to 10,001 (persistence/search_query.py: SEARCH_COUNT_CAP + 1, "more than 10,000"):
    -- every match of a common word was 1.5-2 s of heap reads at a million messages.
    execute format('select count(*) from (select 1 from public.messages m where m.search_tsv @@ $1%s limit 10001) s',
                   v_filters)
    into v_count
    using v_query, p_since, p_until, p_model, p_role, p_continuation_id;
    return v_count;
end;
$$;
comment on function public.count_search_messages is
    'How many messages search_messages would return with no limit (same query, filters and row level '
    'security), counted up to 10,001 (more than 10,000). Bounded: p_query <= 1,000 and p_tsquery <= 4,000 characters, at most 200 words and '
    'operators (PT400 beyond), statement_timeout 2 s.';

-- Postgres lets PUBLIC execute a new function and Supabase grants anon too: revoke both.
revoke all on function public.count_search_messages from public, anon, authenticated;
grant execute on function public.count_search_messages to authenticated, service_role;
