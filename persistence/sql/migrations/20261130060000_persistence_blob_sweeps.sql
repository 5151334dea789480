-- Bytes are deleted only while no row refers to them, decided atomically with uploads.
--
-- File bytes live outside the database (a local folder or a Storage bucket), so deleting them
-- cannot be part of a transaction. Two things make the decision atomic anyway:
--
-- 1. A transaction-level advisory lock: put_file_metadata records an upload holding it shared
--    (uploads do not wait on each other), prune decides which stored objects go holding it
--    exclusive. So either prune sees the new upload (and keeps the object), or the upload is
--    recorded after prune committed, and then:
-- 2. prune leaves a claim in blob_sweeps for every object whose bytes the caller is about to
--    delete, and put_file_metadata reports the claim ('sweep_until'). The caller of
--    put_file_metadata waits until the claim is released (the bytes are gone by then), then
--    checks that its bytes exist and uploads them again if not. Once an upload's row is
--    committed no later prune claims that path, so after that check the bytes stay.
--
-- The claim is a lease (expires_at), renewed by the sweeping process before each batch of
-- deletes: an uploader never waits forever on a prune that died, and a prune deletes nothing
-- whose lease it no longer holds.

create table if not exists public.blob_sweeps (
    storage_path text primary key,
    bucket_name text not null,
    sweep_id uuid not null,
    expires_at timestamptz not null,
    created_at timestamptz not null default now()
);
comment on table public.blob_sweeps is
    'Stored objects whose rows prune deleted and whose bytes a prune is deleting now (a lease per object).';

-- Bookkeeping of the server: no policy, so only the service role (which bypasses RLS) sees it.
alter table public.blob_sweeps enable row level security;
revoke all on table public.blob_sweeps from anon, authenticated, public;
grant all on table public.blob_sweeps to service_role;

-- Security definer: blob_sweeps is the server's; a signed-in uploader learns only whether the
-- path it uploads to is being swept, and until when at most.
create or replace function public.blob_sweep_until(p_storage_path text)
returns jsonb
language sql
stable
security definer
set search_path = ''
as $$
    select to_jsonb(s.expires_at) from public.blob_sweeps s
    where s.storage_path = p_storage_path and s.expires_at > now()
$$;
comment on function public.blob_sweep_until is
    'When a prune is deleting the bytes at this path: until when its lease runs (null: nobody is).';

-- As in 20261126000002_persistence_api, with the lock taken before the row is recorded and
-- the sweep of the path, if any, reported as sweep_until.
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
    -- After the thread, as prune locks threads before this lock: the two never wait on each
    -- other in opposite orders. From here no prune decides which objects go until we commit.
    -- (Two-key form, 1651/0: a lock of its own, apart from other advisory locks. One lock, not
    -- one per path: a prune of many files would otherwise fill the lock table.)
    perform pg_catalog.pg_advisory_xact_lock_shared(1651, 0);
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
    return public.file_json(v_file, v_upload, p_continuation_id)
        || jsonb_build_object('deduplicated', v_dedup,
            'sweep_until', public.blob_sweep_until(v_file.storage_path));
end;
$$;
comment on function public.put_file_metadata is
    'Record an upload whose bytes are stored: the stored object (once per owner and hash; deduplicated says '
    'it already was), the upload, and the thread''s use of it (the thread is created when missing). '
    'sweep_until: a prune is deleting the bytes at this path; wait for it, then store them again if missing.';

-- As in 20261126000002_persistence_api, with the uploads' lock held before the stored objects
-- to delete are decided, and a claim (returned as sweep_id) on each deleted object's path.
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

-- Before deleting a batch of bytes: extend the sweep's lease on these paths, and learn which
-- of them it still holds (a claim that ran out may have been taken by an uploader).
create or replace function public.renew_blob_sweep(p_sweep_id uuid, p_paths text[])
returns jsonb
language sql
volatile
security invoker
set search_path = ''
as $$
    with renewed as (
        update public.blob_sweeps s set expires_at = now() + interval '10 minutes'
        where s.sweep_id = p_sweep_id and s.storage_path = any(p_paths) and s.expires_at > now()
        returning s.storage_path)
    select coalesce(jsonb_agg(storage_path), '[]') from renewed
$$;
comment on function public.renew_blob_sweep is
    'Extend a prune''s claims on these paths by 10 minutes; returns the paths it still holds.';

-- After the bytes are deleted (or the sweep gave up): uploaders waiting on these paths go on.
create or replace function public.release_blob_sweep(p_sweep_id uuid, p_paths text[])
returns integer
language sql
volatile
security invoker
set search_path = ''
as $$
    with released as (
        delete from public.blob_sweeps s where s.sweep_id = p_sweep_id and s.storage_path = any(p_paths)
        returning 1)
    select count(*)::integer from released
$$;
comment on function public.release_blob_sweep is 'Drop a prune''s claims on these paths once their bytes are deleted.';

revoke all on function public.blob_sweep_until, public.renew_blob_sweep, public.release_blob_sweep
    from public, anon, authenticated;
-- put_file_metadata calls it for a signed-in uploader too.
grant execute on function public.blob_sweep_until to authenticated;
grant execute on function public.blob_sweep_until, public.renew_blob_sweep, public.release_blob_sweep
    to service_role;
