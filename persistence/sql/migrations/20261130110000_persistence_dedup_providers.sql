-- Uploads keep whether they were deduplicated; providers have one vocabulary (issue 13).
--
-- 1. file_uploads.deduplicated: put_file_metadata answered whether an upload's bytes were
--    stored already, but nothing kept the answer, so every later read (the app's Files page,
--    get_file, list_files, an export) called every upload new. It is stored now, returned by
--    file_json (so by get_file, list_files and a thread's file list) and carried by export and
--    import (import_records: import_batch, then the flags the records give). Existing uploads
--    are deduplicated when an earlier upload of the same stored object exists (by time, then
--    id): the SQLite migration 0004_dedup_and_providers backfills by the same rule.
-- 2. Providers: a provider not given was inferred from the price table as moonshot or zhipu,
--    while the server, the zen adapter and the demo say kimi and glm, so "by provider" split
--    one vendor in two. The package now writes one vocabulary (persistence/providers.py: the
--    EX-AI server's names, aliases mapped at validation), and the price table names kimi and
--    glm. Here every stored name is lower-cased with its alias mapped: messages (and the price
--    ids they name), the daily rollup (its key holds the provider: rows that meet under the new
--    name are merged by summing every other column), provider uploads (of two that meet, the
--    newest is kept, as a new upload replaces an old one) and price rows (renamed with their
--    ids; one whose new id is taken is dropped). The aliases are those of
--    persistence/providers.py when this was released, copied, as in the SQLite migration.
--
-- Functions changed here (file functions only), in place: file_json (one key more, still
-- reading no table) and put_file_metadata (storing the flag). New: import_records, the
-- server's only, as import_batch is.

-- ---------------------------------------------------------------------------------------
-- 1. Deduplicated uploads

alter table public.file_uploads add column if not exists deduplicated boolean not null default false;
comment on column public.file_uploads.deduplicated is
    'The upload found its bytes stored already (same owner and hash): it cost no storage.';

update public.file_uploads u set deduplicated = true
where not u.deduplicated
    and exists (select 1 from public.file_uploads e
                where e.file_id = u.file_id and (e.created_at, e.id) < (u.created_at, u.id));

-- file_json and put_file_metadata, each changed in place: its definition as the earlier
-- migrations left it (pg_get_functiondef: header, settings such as search_path and
-- put_file_metadata's statement_timeout, body) with one fragment of its body replaced, so
-- nothing else about it changes and create or replace keeps its grants and comment. A
-- fragment that is not found exactly once stops the migration.
do $patch$
declare
    v_patch record;
    v_def text;
begin
    for v_patch in
        select * from (values
            -- file_json: the upload's flag (false for a stored object without an upload).
            ('public.file_json(public.files, public.file_uploads, text, boolean)'::regprocedure,
             $old$ else u.description end)$old$,
             $new$ else u.description end,
        'deduplicated', coalesce(u.deduplicated, false))$new$),
            -- put_file_metadata: the upload keeps what the call found (the object stored already).
            ('public.put_file_metadata(uuid, uuid, text, bigint, text, text, text, text, text, text, uuid, text[], '
             'text, jsonb, timestamptz)'::regprocedure,
             $old$
        conversation_id, tags, description, metadata, created_at)
    values (p_upload_id, v_file.id, p_filename, p_mime_type, p_file_size, v_owner, p_session_id, v_conv.id,
        coalesce(p_tags, '{}'), p_description, coalesce(p_metadata, '{}'), p_created_at)
    returning * into v_upload;
$old$,
             $new$
        conversation_id, tags, description, metadata, created_at, deduplicated)
    values (p_upload_id, v_file.id, p_filename, p_mime_type, p_file_size, v_owner, p_session_id, v_conv.id,
        coalesce(p_tags, '{}'), p_description, coalesce(p_metadata, '{}'), p_created_at, v_dedup)
    returning * into v_upload;
$new$)
        ) as patches (fn, old, new)
    loop
        v_def := pg_catalog.pg_get_functiondef(v_patch.fn);
        if (pg_catalog.length(v_def) - pg_catalog.length(pg_catalog.replace(v_def, v_patch.old, '')))
                / pg_catalog.length(v_patch.old) <> 1 then
            raise exception '% does not hold the fragment to replace exactly once: %', v_patch.fn, v_patch.old;
        end if;
        execute pg_catalog.replace(v_def, v_patch.old, v_patch.new);
    end loop;
end;
$patch$;
comment on function public.put_file_metadata is
    'Record an upload whose bytes are stored: the stored object (once per owner and hash; deduplicated says '
    'it already was, and is kept with the upload), the upload, and the thread''s use of it (the thread is '
    'created when missing; it must have the file''s owner). sweep_until: a prune is deleting the bytes at '
    'this path; wait for it, then store them again if missing.';

-- Import: import_batch writes the uploads (it knows no flag), then each new upload gets the
-- flag its record gives; a record without one (an export made before the flag was stored)
-- gets the backfill's rule. One call, one transaction; import_batch itself is unchanged.
create or replace function public.import_records(p_records jsonb)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_new uuid[];
    v_result jsonb;
begin
    select coalesce(array_agg(distinct x.upload_id), '{}') into v_new
    from (select (f ->> 'upload_id')::uuid as upload_id
          from jsonb_array_elements(p_records) as r
          cross join lateral jsonb_array_elements(coalesce(r -> 'files', '[]')) as f) as x
    where x.upload_id is not null
        and not exists (select 1 from public.file_uploads u where u.id = x.upload_id);
    v_result := public.import_batch(p_records);
    update public.file_uploads u set deduplicated = coalesce(x.flag, exists (
            select 1 from public.file_uploads e
            where e.file_id = u.file_id and (e.created_at, e.id) < (u.created_at, u.id)))
    from (select distinct on ((f ->> 'upload_id')::uuid) (f ->> 'upload_id')::uuid as upload_id,
                 (f ->> 'deduplicated')::boolean as flag
          from jsonb_array_elements(p_records) as r
          cross join lateral jsonb_array_elements(coalesce(r -> 'files', '[]')) as f
          where f ->> 'upload_id' is not null) as x
    where u.id = x.upload_id and u.id = any(v_new);
    return v_result;
end;
$$;
comment on function public.import_records is
    'import_batch, keeping each new upload''s deduplicated flag as the records give it (by the backfill''s '
    'rule, an earlier upload of the same object, when a record has none).';

revoke all on function public.import_records from public, anon, authenticated;
grant execute on function public.import_records to service_role;

-- ---------------------------------------------------------------------------------------
-- 2. One provider vocabulary

-- The canonical name of a stored provider name: lower case, the aliases mapped.
create function pg_temp.provider_0004(p_name text)
returns text
language sql
immutable
as $$
    select case lower(btrim(p_name))
        when 'moonshot' then 'kimi'
        when 'moonshotai' then 'kimi'
        when 'moonshot-ai' then 'kimi'
        when 'moonshot_ai' then 'kimi'
        when 'zhipu' then 'glm'
        when 'zhipuai' then 'glm'
        when 'zhipu-ai' then 'glm'
        when 'zhipu_ai' then 'glm'
        when 'bigmodel' then 'glm'
        when 'zai' then 'glm'
        when 'z.ai' then 'glm'
        when 'z-ai' then 'glm'
        when 'gemini' then 'google'
        when 'x.ai' then 'xai'
        when 'x-ai' then 'xai'
        else lower(btrim(p_name))
    end
$$;

-- Messages: each distinct name once (from the provider index), then the rows that change.
update public.messages m set provider = v.canonical
from (select d.provider, nullif(pg_temp.provider_0004(d.provider), '') as canonical
      from (select distinct provider from public.messages where provider is not null) as d) as v
where m.provider = v.provider and v.canonical is distinct from v.provider;

-- The price ids messages name: provider/model@effective_from, the provider part renamed.
update public.messages m set price_id = pg_temp.provider_0004(split_part(m.price_id, '/', 1))
        || substr(m.price_id, strpos(m.price_id, '/'))
where strpos(m.price_id, '/') > 1
    and pg_temp.provider_0004(split_part(m.price_id, '/', 1)) <> lower(btrim(split_part(m.price_id, '/', 1)));

-- The daily rollup: rows under an old name are added into the row of the new name (created
-- when missing), every column but the key summed, then deleted.
do $$
declare
    v_cols text;
    v_sums text;
    v_set text;
begin
    select string_agg(format('%I', c.column_name), ', ' order by c.ordinal_position),
           string_agg(format('sum(d.%I)', c.column_name), ', ' order by c.ordinal_position),
           string_agg(format('%1$I = u.%1$I + excluded.%1$I', c.column_name), ', ' order by c.ordinal_position)
    into v_cols, v_sums, v_set
    from information_schema.columns c
    where c.table_schema = 'public' and c.table_name = 'usage_daily' and c.is_generated = 'NEVER'
        and c.column_name not in ('day', 'user_id', 'model', 'provider', 'tool_name');
    execute format(
        'insert into public.usage_daily as u (day, user_id, model, provider, tool_name, %1$s) '
        'select d.day, d.user_id, d.model, pg_temp.provider_0004(d.provider), d.tool_name, %2$s '
        'from public.usage_daily d where d.provider <> pg_temp.provider_0004(d.provider) '
        'group by d.day, d.user_id, d.model, pg_temp.provider_0004(d.provider), d.tool_name '
        'on conflict on constraint usage_daily_key do update set %3$s',
        v_cols, v_sums, v_set);
    delete from public.usage_daily d where d.provider <> pg_temp.provider_0004(d.provider);
end;
$$;

-- Provider uploads: one per file, provider and purpose; of two that meet, the newest stays.
delete from public.provider_files p
using (select id, row_number() over (
           partition by file_id, pg_temp.provider_0004(provider), purpose order by created_at desc, id desc) as n
       from public.provider_files) as r
where p.id = r.id and r.n > 1;
update public.provider_files set provider = pg_temp.provider_0004(provider)
where provider <> pg_temp.provider_0004(provider);

-- Price rows of an aliased provider: renamed with their id, or dropped when the new id is
-- taken (the package's rows come back under the new ids when the store syncs its table).
with renamed as (
    select p.id, pg_temp.provider_0004(p.provider) || substr(p.id, strpos(p.id, '/')) as new_id
    from public.model_prices p
    where pg_temp.provider_0004(p.provider) <> lower(btrim(p.provider)) and strpos(p.id, '/') > 0
), ranked as (
    select r.id, row_number() over (partition by r.new_id order by r.id) as n,
        exists (select 1 from public.model_prices q where q.id = r.new_id) as taken
    from renamed r
)
delete from public.model_prices p using ranked r where p.id = r.id and (r.n > 1 or r.taken);
update public.model_prices p set provider = pg_temp.provider_0004(p.provider),
    id = case when strpos(p.id, '/') > 0 then pg_temp.provider_0004(p.provider) || substr(p.id, strpos(p.id, '/'))
              else p.id end
where pg_temp.provider_0004(p.provider) <> lower(btrim(p.provider));

drop function pg_temp.provider_0004(text);
