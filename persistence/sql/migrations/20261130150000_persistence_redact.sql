-- Forget content, keep the numbers (issue 17): redact erases the text of threads, messages and
-- uploads and the bytes of stored objects nothing unredacted refers to, and keeps every token,
-- cost, model, tool and time, so thread totals, the daily rollup and the reports are unchanged.
-- What is erased and kept is listed in persistence/redaction.py; SQLite does the same in
-- persistence/backends/sqlite/redact.py.
--
-- The old row versions stay in the table files until VACUUM reclaims them (autovacuum, or a
-- VACUUM of messages, conversations, file_uploads and files right after, for a guarantee now).
-- The search index (messages_search, over the generated search_tsv) follows the row: a query
-- no longer finds an erased message.
--
-- The server's: only the service role may execute redact. It deletes bytes by the claims of
-- blob_sweeps (20261130060000_persistence_blob_sweeps), the server's own table, as prune does;
-- and it acts on whatever threads its selector names, so a signed-in user calling it would need
-- checks RLS cannot give (a user's redaction goes through the server, by p_user_id).

alter table public.conversations add column if not exists redacted_at timestamptz;
alter table public.messages add column if not exists redacted_at timestamptz;
alter table public.file_uploads add column if not exists redacted_at timestamptz;
comment on column public.conversations.redacted_at is
    'When redact erased the thread''s title, summary, metadata and initial context (null: never).';
comment on column public.messages.redacted_at is
    'When redact erased the message''s content, search text, files, images and metadata; tokens and cost stay.';
comment on column public.file_uploads.redacted_at is
    'When redact erased the upload''s name, description, tags and metadata. A stored object whose uploads are '
    'all redacted has no bytes any more.';

-- As in 20261126000002_persistence_api, with redacted_at (the app marks a redacted message).
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
        'user_id', m.user_id, 'redacted_at', m.redacted_at)
$$;

-- As in 20261126000002_persistence_api, without the objects redact emptied (their bytes are
-- gone on purpose: doctor would report them missing).
create or replace function public.file_paths(p_limit integer default null)
returns jsonb
language sql
stable
security invoker
set search_path = ''
as $$
    select coalesce(jsonb_agg(jsonb_build_array(bucket_name, storage_path)), '[]')
    from (
        select f.bucket_name, f.storage_path from public.files f
        where exists (select 1 from public.file_uploads u where u.file_id = f.id and u.redacted_at is null)
            or not exists (select 1 from public.file_uploads u where u.file_id = f.id)
        order by f.created_at, f.id
        limit p_limit) as f
$$;

-- p_continuation_ids, p_user_id, p_cutoff: exactly one selects the threads (those named; a
-- user's; those inactive since the cutoff) and the uploads (the threads' own, and a user's
-- anywhere, or those outside any thread made before the cutoff).
create or replace function public.redact(
    p_continuation_ids text[] default null,
    p_user_id uuid default null,
    p_cutoff timestamptz default null,
    p_dry_run boolean default false)
returns jsonb
language plpgsql
security invoker
set search_path = ''
as $$
declare
    v_at timestamptz := now();
    v_threads uuid[];
    v_uploads uuid[];
    v_messages integer;
    v_objects jsonb;
    v_sweep uuid := gen_random_uuid();
    v_claimed jsonb := '[]'::jsonb;
begin
    if (p_continuation_ids is not null)::integer + (p_user_id is not null)::integer
            + (p_cutoff is not null)::integer <> 1 then
        raise exception 'redact: give exactly one of p_continuation_ids, p_user_id, p_cutoff' using errcode = 'PT400';
    end if;
    -- The threads are locked (a message appended meanwhile waits, and is written after: not redacted).
    with picked as (
        select c.id from public.conversations c
        where (p_continuation_ids is not null and c.continuation_id = any(p_continuation_ids))
            or (p_user_id is not null and c.user_id = p_user_id)
            or (p_cutoff is not null and c.updated_at < p_cutoff)
        for update)
    select coalesce(array_agg(id), '{}') into v_threads from picked;
    select coalesce(array_agg(u.id), '{}') into v_uploads from public.file_uploads u
    where u.conversation_id = any(v_threads)
        or (p_user_id is not null and u.user_id = p_user_id)
        or (p_cutoff is not null and u.conversation_id is null and u.created_at < p_cutoff);
    select count(*) into v_messages from public.messages m where m.conversation_id = any(v_threads);
    if not p_dry_run then
        -- As prune: uploads record their rows holding this lock shared (put_file_metadata), so
        -- the objects below are decided against every upload committed before, and uploads
        -- after our commit see our claims and place their bytes again once they are released.
        perform pg_catalog.pg_advisory_xact_lock(1651, 0);
    end if;
    -- The stored objects no unredacted upload outside the selection refers to: their bytes go.
    -- fresh: this redaction empties it (one emptied before is swept again, not counted again).
    select coalesce(jsonb_agg(jsonb_build_object('bucket_name', f.bucket_name, 'storage_path', f.storage_path,
            'file_size', f.file_size,
            'fresh', exists (select 1 from public.file_uploads u
                             where u.file_id = f.id and u.redacted_at is null and u.id = any(v_uploads)))), '[]'::jsonb)
    into v_objects
    from public.files f
    where f.id in (select u.file_id from public.file_uploads u where u.id = any(v_uploads))
        and not exists (select 1 from public.file_uploads u
                        where u.file_id = f.id and u.redacted_at is null and u.id <> all(v_uploads));
    if not p_dry_run then
        update public.messages m set
            content = '', search_extra = null, files = '{}', images = '{}',
            -- The unreadable usage report stays: it makes the message unpriced (message_unpriced).
            metadata = case when m.metadata ? 'usage_raw'
                            then jsonb_build_object('usage_raw', m.metadata -> 'usage_raw') else '{}'::jsonb end,
            redacted_at = v_at
        where m.conversation_id = any(v_threads)
            and (m.redacted_at is null or m.content <> '' or m.search_extra is not null or m.metadata <> '{}'::jsonb);
        update public.conversations c set title = null, summary = null, metadata = '{}'::jsonb,
            initial_context = null, redacted_at = coalesce(c.redacted_at, v_at)
        where c.id = any(v_threads);
        update public.file_uploads u set filename = 'redacted', description = null, metadata = '{}'::jsonb,
            tags = '{}', redacted_at = coalesce(u.redacted_at, v_at)
        where u.id = any(v_uploads);
        -- The object's own text is its first upload's: erased whenever one of its uploads is.
        update public.files f set filename = 'redacted', description = null, metadata = '{}'::jsonb, tags = '{}'
        where f.id in (select u.file_id from public.file_uploads u where u.id = any(v_uploads));
        -- Claims on the paths whose bytes the caller deletes next, as prune takes them.
        with claimed as (
            insert into public.blob_sweeps as s (storage_path, bucket_name, sweep_id, expires_at)
            select x ->> 'storage_path', x ->> 'bucket_name', v_sweep, now() + interval '10 minutes'
            from jsonb_array_elements(v_objects) as x
            on conflict (storage_path) do update
                set bucket_name = excluded.bucket_name, sweep_id = excluded.sweep_id,
                    expires_at = excluded.expires_at, created_at = now()
                where s.expires_at <= now()
            returning s.bucket_name, s.storage_path)
        select coalesce(jsonb_agg(jsonb_build_array(bucket_name, storage_path)), '[]'::jsonb) into v_claimed
        from claimed;
    end if;
    return jsonb_build_object(
        'conversations', cardinality(v_threads), 'messages', v_messages, 'uploads', cardinality(v_uploads),
        'files', (select count(*) from jsonb_array_elements(v_objects) as x where (x ->> 'fresh')::boolean),
        'bytes', (select coalesce(sum((x ->> 'file_size')::bigint), 0) from jsonb_array_elements(v_objects) as x
                  where (x ->> 'fresh')::boolean),
        'sweep_id', case when p_dry_run then null else v_sweep end,
        'deleted', v_claimed);
end;
$$;
comment on function public.redact is
    'Erase the text of the selected threads and uploads (exactly one of p_continuation_ids, p_user_id, p_cutoff), '
    'keeping tokens, costs, models, tools and times; p_dry_run only counts. The caller deletes the bytes of '
    '"deleted" under the claim sweep_id (renew_blob_sweep, release_blob_sweep), as after prune.';

revoke all on function public.redact(text[], uuid, timestamptz, boolean) from public, anon, authenticated;
grant execute on function public.redact(text[], uuid, timestamptz, boolean) to service_role;
