-- Budgets and the reads behind cost alerts (issue 17; persistence/insights.py).
--
-- * public.budgets: a spending limit in USD per day, week (Monday to Sunday, UTC) or month, on
--   the whole store (scope 'store', key '') or on one model, provider, tool_name or tag. Owned
--   like every other row: user_id is the owner (null: the server's own, set by the service
--   role), RLS confines signed-in users to their own.
-- * set_budget / list_budgets / delete_budget: what Store.set_budget, list_budgets and
--   delete_budget call.
-- * tag_costs: a tag budget's spend, from the threads' running totals (the rollup has no tags).
-- * thread_costs: threads' totals by the day they started, the baseline of thread anomalies.
-- * top_threads: the thread behind a flagged model, provider or tool on one day: one day of
--   one key's messages, the only read here that touches messages (bounded by the day).
--
-- All are security invoker: row level security confines a signed-in caller to their own rows.
-- Each has a statement timeout and caps on its arguments (every function authenticated may
-- call has a bounded cost).

create table if not exists public.budgets (
    id uuid primary key,
    user_id uuid,
    scope text not null check (scope in ('store', 'model', 'provider', 'tool_name', 'tag')),
    key text not null default '' check (length(key) <= 200),
    period text not null check (period in ('day', 'week', 'month')),
    limit_usd numeric not null check (limit_usd > 0 and limit_usd <= 1000000000),
    created_at timestamptz not null,
    updated_at timestamptz not null,
    constraint budgets_scope_key check ((scope = 'store') = (key = '')),
    constraint budgets_one_per_scope unique nulls not distinct (user_id, scope, key, period)
);
comment on table public.budgets is
    'Spending limits (USD) per day, week or month on the whole store (scope store, key '''') or on one model, '
    'provider, tool_name or tag. user_id is the owner; null: the server''s own (service role).';
create index if not exists budgets_user_id on public.budgets (user_id);

alter table public.budgets enable row level security;
create policy "budgets: owners select" on public.budgets for select to authenticated
    using ((select auth.uid()) = user_id);
create policy "budgets: owners insert" on public.budgets for insert to authenticated
    with check ((select auth.uid()) = user_id);
create policy "budgets: owners update" on public.budgets for update to authenticated
    using ((select auth.uid()) = user_id) with check ((select auth.uid()) = user_id);
create policy "budgets: owners delete" on public.budgets for delete to authenticated
    using ((select auth.uid()) = user_id);

revoke all on table public.budgets from anon, authenticated, public;
grant select, insert, update, delete on table public.budgets to authenticated;
grant all on table public.budgets to service_role;

-- ---------------------------------------------------------------------------------------
-- Budgets

create or replace function public.budget_json(p_budget public.budgets)
returns jsonb
language sql
immutable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
    select jsonb_build_object('id', p_budget.id, 'scope', p_budget.scope, 'key', nullif(p_budget.key, ''),
        'period', p_budget.period, 'limit_usd', p_budget.limit_usd, 'created_at', p_budget.created_at,
        'updated_at', p_budget.updated_at, 'user_id', p_budget.user_id)
$$;
comment on function public.budget_json is 'A budget as the package reads it (key null for the whole store).';

-- Insert, or change the limit of the caller's budget with this scope, key and period (its id
-- and created_at stay). The server may set one for a user (p_user_id) or its own (null); a
-- signed-in user's budget is always their own.
create or replace function public.set_budget(
    p_id uuid,
    p_scope text,
    p_period text,
    p_limit_usd numeric,
    p_key text default null,
    p_at timestamptz default null,
    p_user_id uuid default null)
returns jsonb
language plpgsql
volatile
security invoker
set search_path = ''
set statement_timeout = '5s'
as $$
declare
    v_user uuid := case when public.caller_is_server() then p_user_id else (select auth.uid()) end;
    v_at timestamptz := coalesce(p_at, pg_catalog.now());
    v_row public.budgets;
begin
    if not public.caller_is_server() and v_user is null then
        raise exception 'set_budget needs a signed-in user' using errcode = '42501';
    end if;
    if p_scope is null or p_scope not in ('store', 'model', 'provider', 'tool_name', 'tag') then
        raise exception 'p_scope must be store, model, provider, tool_name or tag, not %', p_scope using errcode = 'PT400';
    end if;
    if p_period is null or p_period not in ('day', 'week', 'month') then
        raise exception 'p_period must be day, week or month, not %', p_period using errcode = 'PT400';
    end if;
    if p_limit_usd is null or not (p_limit_usd > 0 and p_limit_usd <= 1000000000) then
        raise exception 'p_limit_usd must be more than 0 and at most 1,000,000,000, not %', p_limit_usd
            using errcode = 'PT400';
    end if;
    if (p_scope = 'store') <> (coalesce(p_key, '') = '') then
        raise exception 'p_key must be given for a % budget, and only then', p_scope using errcode = 'PT400';
    end if;
    insert into public.budgets as b (id, user_id, scope, key, period, limit_usd, created_at, updated_at)
    values (p_id, v_user, p_scope, coalesce(p_key, ''), p_period, p_limit_usd, v_at, v_at)
    on conflict on constraint budgets_one_per_scope
        do update set limit_usd = excluded.limit_usd, updated_at = excluded.updated_at
    returning b.* into v_row;
    return public.budget_json(v_row);
end;
$$;
comment on function public.set_budget is
    'Keep a budget (insert, or change the limit of the caller''s one with this scope, key and period).';

create or replace function public.list_budgets()
returns jsonb
language sql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
    select coalesce(jsonb_agg(public.budget_json(b) order by b.scope, b.key, b.period, b.id), '[]'::jsonb)
    from (select * from public.budgets limit 10000) as b
$$;
comment on function public.list_budgets is 'The caller''s budgets (every budget for the server), by scope, key, period.';

create or replace function public.delete_budget(p_id uuid)
returns boolean
language sql
volatile
security invoker
set search_path = ''
set statement_timeout = '5s'
as $$
    with gone as (delete from public.budgets where id = p_id returning 1)
    select exists (select 1 from gone)
$$;
comment on function public.delete_budget is 'Remove one of the caller''s budgets; false when there was none.';

-- ---------------------------------------------------------------------------------------
-- Reads for budgets and anomalies

-- {tag: cost} of the threads carrying each tag that started on a UTC day in [first, last].
create or replace function public.tag_costs(p_tags text[], p_first_day date, p_last_day date)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
begin
    if coalesce(pg_catalog.cardinality(p_tags), 0) > 100 then
        raise exception 'p_tags has % tags; the limit is 100', pg_catalog.cardinality(p_tags) using errcode = 'PT400';
    end if;
    if p_last_day - p_first_day > 400 then
        raise exception 'the days span % days; the limit is 400', p_last_day - p_first_day using errcode = 'PT400';
    end if;
    return (
        select coalesce(jsonb_object_agg(t.tag, t.cost), '{}'::jsonb)
        from (
            select g.tag, sum(c.total_cost) as cost
            from public.conversations c, unnest(c.tags) as g (tag)
            where c.tags && p_tags and g.tag = any (p_tags)
                and c.created_at >= (p_first_day::timestamp at time zone 'UTC')
                and c.created_at < ((p_last_day + 1)::timestamp at time zone 'UTC')
            group by g.tag
        ) as t
    );
end;
$$;
comment on function public.tag_costs is
    'A tag budget''s spend: {tag: summed total_cost} of the threads with the tag started in the days (inclusive).';

-- Rows of [continuation_id, title, tool_name, start day, cost_usd, total_tokens].
create or replace function public.thread_costs(p_first_day date, p_last_day date)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '5s'
as $$
begin
    if p_first_day is null or p_last_day is null or p_last_day - p_first_day > 400 then
        raise exception 'give both days, at most 400 days apart' using errcode = 'PT400';
    end if;
    return (
        select coalesce(jsonb_agg(jsonb_build_array(c.continuation_id, c.title, c.tool_name,
            (c.created_at at time zone 'UTC')::date, c.total_cost, c.total_tokens)), '[]'::jsonb)
        from public.conversations c
        where c.created_at >= (p_first_day::timestamp at time zone 'UTC')
            and c.created_at < ((p_last_day + 1)::timestamp at time zone 'UTC')
    );
end;
$$;
comment on function public.thread_costs is
    'Threads started in the days (inclusive) with their totals: the baseline of thread anomalies.';

-- Rows of [continuation_id, title, tool_name, cost_usd, total_tokens]: one UTC day's messages
-- whose model, provider or tool is p_key, summed by thread, costliest first.
create or replace function public.top_threads(p_day date, p_dimension text, p_key text, p_limit integer default 3)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
begin
    if p_dimension is null or p_dimension not in ('model', 'provider', 'tool_name') then
        raise exception 'p_dimension must be model, provider or tool_name, not %', p_dimension using errcode = 'PT400';
    end if;
    if p_limit is null or p_limit < 1 or p_limit > 50 then
        raise exception 'p_limit must be from 1 to 50, not %', p_limit using errcode = 'PT400';
    end if;
    return (
        select coalesce(jsonb_agg(jsonb_build_array(t.continuation_id, t.title, t.tool_name, t.cost, t.tokens)
            order by t.cost desc, t.tokens desc), '[]'::jsonb)
        from (
            select c.continuation_id, c.title, c.tool_name, coalesce(sum(m.cost), 0) as cost,
                sum(m.tokens) as tokens
            from public.messages m
            join public.conversations c on c.id = m.conversation_id
            where m.created_at >= (p_day::timestamp at time zone 'UTC')
                and m.created_at < ((p_day + 1)::timestamp at time zone 'UTC')
                and case p_dimension when 'model' then m.model_used when 'provider' then m.provider
                         else m.tool_name end = p_key
            group by c.id, c.continuation_id, c.title, c.tool_name
            order by 4 desc, 5 desc
            limit p_limit
        ) as t
    );
end;
$$;
comment on function public.top_threads is
    'The threads behind one day of one model, provider or tool (the thread an alert names).';

-- ---------------------------------------------------------------------------------------
-- Grants. Postgres lets PUBLIC execute new functions and Supabase grants anon too: revoke both.

revoke all on function public.budget_json, public.set_budget, public.list_budgets, public.delete_budget,
    public.tag_costs, public.thread_costs, public.top_threads
from public, anon, authenticated;
-- Row level security confines these to the caller's own rows.
grant execute on function public.budget_json, public.set_budget, public.list_budgets, public.delete_budget,
    public.tag_costs, public.thread_costs, public.top_threads
to authenticated, service_role;
