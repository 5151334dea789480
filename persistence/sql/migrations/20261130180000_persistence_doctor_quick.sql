-- doctor's quick mode (issue 16). The app checks the store's health every minute; the full
-- check (store_doctor, then every stored file's bytes) counts every message and takes seconds
-- at a million, so the app reads this instead: the counts it can get from small tables or an
-- index (messages from the daily rollup, which every write keeps current) and the findings of
-- the last full check, which `python -m persistence doctor` records with record_doctor_check.
-- Both are the server's (service role) only, like store_doctor: store_meta has no policy.

create or replace function public.store_doctor_quick()
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
        'messages', (select coalesce(sum(messages), 0) from public.usage_daily),
        'files', (select count(*) from public.files),
        'uploads', (select count(*) from public.file_uploads),
        'last_message_at', (select max(created_at) from public.messages),
        'unpriced_models', coalesce((
            select jsonb_object_agg(model, n) from (
                select coalesce(nullif(model, ''), '(no model)') as model, sum(unpriced_messages) as n
                from public.usage_daily where unpriced_messages > 0 group by 1) as s), '{}'),
        'last_full_check', (select value::jsonb from public.store_meta where key = 'last_full_check'))
$$;
comment on function public.store_doctor_quick is
    'The quick health figures (the app''s): counts, and the last full check recorded by record_doctor_check.';

create or replace function public.record_doctor_check(p_findings jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
begin
    if p_findings is null or pg_catalog.jsonb_typeof(p_findings) <> 'object' then
        raise exception 'p_findings must be a JSON object' using errcode = 'PT400';
    end if;
    -- Findings are a handful of figures; a bound keeps store_meta small whoever calls.
    if pg_catalog.length(p_findings::text) > 10000 then
        raise exception 'p_findings is % characters; the limit is 10000', pg_catalog.length(p_findings::text)
            using errcode = 'PT400';
    end if;
    insert into public.store_meta (key, value) values ('last_full_check', p_findings::text)
    on conflict (key) do update set value = excluded.value;
    return 'true'::jsonb;
end;
$$;
comment on function public.record_doctor_check is
    'Keep the findings of a full doctor check (python -m persistence doctor) for store_doctor_quick.';

revoke all on function public.store_doctor_quick, public.record_doctor_check from public, anon, authenticated;
grant execute on function public.store_doctor_quick, public.record_doctor_check to service_role;
