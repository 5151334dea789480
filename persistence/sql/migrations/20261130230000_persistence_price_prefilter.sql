-- price_message tests only the price rows whose pattern's literal the model name contains.
--
-- It matched the model against every row's pattern (78 rows, 70 distinct patterns), and
-- Postgres keeps 32 compiled regular expressions per backend: every call compiled all 70 again,
-- about 1.2 ms, so a signed-in user's record_message spent most of its time pricing. Each row
-- now carries the literal text every match of its pattern contains (match_literal, derived
-- from the pattern); a row is tested only when the model name contains it, so a call compiles
-- a handful of patterns that stay cached. A pattern of a shape the derivation does not read
-- (character classes, braces, escapes other than \. \- \/, an alternation outside a group) has
-- no literal and is always tested: the result is the same for every model, only cheaper.
-- price_message becomes PL/pgSQL so its query is planned once per session, as caller_is_server
-- (20261130220000); same arguments, result, settings (2 s statement_timeout) and grants.

-- The text every match of ``p_match`` (a price row's pattern, matched case-insensitively
-- from the start of the model name) contains, lowercased; null when the pattern's shape is not
-- one read here. Read: an optional ``^``, an optional leading group (``(openai/)?``), then
-- the run of plain characters that follows, less a last one made optional by ``?``/``*``.
create or replace function public.price_match_literal(p_match text)
returns text
language plpgsql
immutable
set search_path = ''
as $$
declare
    v_flat text := p_match;
    v_before text;
    v_rest text;
    v_run text;
begin
    if p_match is null or p_match ~ '[][{}]' or p_match ~ '\\[^./-]' or p_match ~ '\\$' then
        return null;
    end if;
    -- An alternation outside every group means no text is common to all matches.
    loop
        v_before := v_flat;
        v_flat := regexp_replace(v_flat, '\([^()]*\)', '', 'g');
        exit when v_flat = v_before;
    end loop;
    if v_flat ~ '[()|]' then
        return null;
    end if;
    v_rest := regexp_replace(regexp_replace(p_match, '^\^', ''), '^\([^()]*\)[?*]\??', '');
    v_run := substring(v_rest from '^((?:[A-Za-z0-9_/-]|\\[./-])+)');
    if v_run is null then
        return null;
    end if;
    if substr(v_rest, length(v_run) + 1, 1) in ('?', '*') then  -- its last character is optional
        v_run := regexp_replace(v_run, '(\\[./-]|.)$', '');
    end if;
    return nullif(lower(regexp_replace(v_run, '\\(.)', '\1', 'g')), '');
end;
$$;
comment on function public.price_match_literal is
    'The lowercased text every match of a model_prices pattern contains (null: none read); '
    'model_prices.match_literal, the prefilter of price_message.';
revoke all on function public.price_match_literal(text) from public, anon, authenticated;
grant execute on function public.price_match_literal(text) to service_role;

alter table public.model_prices
    add column if not exists match_literal text generated always as (public.price_match_literal(match)) stored;
comment on column public.model_prices.match_literal is
    'Derived from match: text every matching model name contains (lowercased), or null. '
    'price_message tests a row''s pattern only for names that contain it.';

create or replace function public.price_message(
    p_model text,
    p_at timestamptz,
    p_input_tokens bigint,
    p_cached_input_tokens bigint,
    p_cache_write_tokens bigint,
    p_output_tokens bigint,
    p_reasoning_tokens bigint)
returns jsonb
language plpgsql
stable
security invoker
set search_path = ''
set statement_timeout = '2s'
as $$
declare
    v_model text := regexp_replace(p_model, '^\s+|\s+$', '', 'g');
    v_lower text := lower(regexp_replace(p_model, '^\s+|\s+$', '', 'g'));
begin
    if nullif(btrim(p_model), '') is null then
        return null;
    end if;
    return (
        select jsonb_build_object('price_id', p.id, 'cost', round((
                p_input_tokens * r.inp + p_cached_input_tokens * coalesce(r.cached, r.inp)
                + p_cache_write_tokens * coalesce(r.write, 0) + (p_output_tokens + p_reasoning_tokens) * r.out
            ) / 1000000, 10))
        from (
            select * from public.model_prices x
            where x.effective_from <= (p_at at time zone 'UTC')::date
                -- case: the cheap test decides whether the pattern is compiled at all.
                and case when x.match_literal is null or strpos(v_lower, x.match_literal) > 0
                         then v_model ~* ('^(?:' || x.match || ')') else false end
            order by x.effective_from desc, x.provider, x.model
            limit 1
        ) as p
        cross join lateral (
            select
                case when t2 then coalesce(p.tier2_input, p.input) when t1 then coalesce(p.tier_input, p.input)
                     else p.input end as inp,
                case when t2 then coalesce(p.tier2_cached_input, p.cached_input)
                     when t1 then coalesce(p.tier_cached_input, p.cached_input) else p.cached_input end as cached,
                case when t1 and not t2 then coalesce(p.tier_cache_write, p.cache_write) else p.cache_write end
                    as write,
                case when t2 then coalesce(p.tier2_output, p.output) when t1 then coalesce(p.tier_output, p.output)
                     else p.output end as out
            from (select
                    p.tier2_above_tokens is not null
                        and p_input_tokens + p_cached_input_tokens + p_cache_write_tokens > p.tier2_above_tokens as t2,
                    p.tier_above_tokens is not null
                        and p_input_tokens + p_cached_input_tokens + p_cache_write_tokens > p.tier_above_tokens as t1
            ) as t
        ) as r);
end;
$$;
