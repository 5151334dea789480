-- An import that brings newer turns to a thread the store already holds moves the thread on.
--
-- import_batch (20261130200000_persistence_import_fixes) added the imported messages to an
-- existing thread's totals but left its updated_at and model_used as they were, so a thread
-- continued by an import kept its old place in the Threads list and its old model. Now, as
-- record_message does for each turn: updated_at becomes the newest of the thread's and the
-- imported messages' times, and model_used the model of the newest imported message that has
-- one when that message is newer than the thread (otherwise it fills a thread without a
-- model). A thread the batch creates keeps the record's own fields (its messages are not
-- newer than the record's updated_at). SQLite does the same (SQLiteStore._import_batch).
-- Everything else is as in 20261130200000.

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
            tool_name, model_used, status, tags, initial_context, metadata, created_at, updated_at, expires_at,
            redacted_at)
        select (c ->> 'id')::uuid, c ->> 'continuation_id', c ->> 'parent_id', c ->> 'session_id',
            (c ->> 'user_id')::uuid, c ->> 'title', c ->> 'summary', c ->> 'tool_name', model,
            coalesce(c ->> 'status', 'active'),
            coalesce(array(select jsonb_array_elements_text(coalesce(c -> 'tags', '[]'))), '{}'),
            nullif(c -> 'initial_context', 'null'::jsonb), coalesce(nullif(c -> 'metadata', 'null'::jsonb), '{}'),
            (c ->> 'created_at')::timestamptz, coalesce(updated_at, (c ->> 'created_at')::timestamptz),
            (c ->> 'expires_at')::timestamptz, (c ->> 'redacted_at')::timestamptz
        from incoming
        on conflict (continuation_id) do nothing
        returning 1
    )
    select count(*) into v_new_threads from inserted;

    -- The batch's threads, locked in id order before their last turn is read below.
    perform 1 from public.conversations c
    where c.continuation_id in (select r -> 'conversation' ->> 'continuation_id'
                                from jsonb_array_elements(p_records) as r)
    order by c.id
    for update;

    -- Messages not present yet (by id, within their thread), ids and costs as given, seq as
    -- given or after the thread's last turn (above); then the rollup and the thread totals,
    -- incremented by what was inserted.
    select coalesce(sum(jsonb_array_length(coalesce(r -> 'messages', '[]'))), 0) into v_messages
    from jsonb_array_elements(p_records) as r;
    with given as (
        select c.id as conversation_id, c.user_id, r.ord as rec_ord, e.ord as msg_ord, m.*
        from jsonb_array_elements(p_records) with ordinality as r(rec, ord)
        join public.conversations c on c.continuation_id = r.rec -> 'conversation' ->> 'continuation_id'
        cross join lateral jsonb_array_elements(coalesce(r.rec -> 'messages', '[]')) with ordinality as e(msg, ord)
        cross join lateral jsonb_to_record(e.msg) as m(id uuid, seq integer, role text, content text,
            created_at timestamptz, model text, provider text, tool_name text, input_tokens bigint,
            cached_input_tokens bigint, cache_write_tokens bigint, output_tokens bigint, reasoning_tokens bigint,
            cost numeric, price_id text, duration_ms bigint, files text[], images text[], metadata jsonb,
            search_extra text, redacted_at timestamptz)
    ), fresh as (
        select distinct on (g.conversation_id, g.id) g.*
        from given g
        where not exists (select 1 from public.messages e where e.id = g.id and e.conversation_id = g.conversation_id)
        order by g.conversation_id, g.id, g.rec_ord, g.msg_ord
    ), checked as (
        select f.*,
            exists (select 1 from public.messages e where e.conversation_id = f.conversation_id and e.seq = f.seq)
                or count(*) over (partition by f.conversation_id, f.seq) > 1 as clash
        from fresh f
    ), placed as (
        select k.*,
            case when bool_or(k.clash) over (partition by k.conversation_id)
                then coalesce((select max(e.seq) from public.messages e where e.conversation_id = k.conversation_id), 0)
                    + row_number() over (partition by k.conversation_id order by k.rec_ord, k.seq, k.msg_ord)
                else k.seq end as placed_seq
        from checked k
    ), inserted as (
        insert into public.messages (id, conversation_id, seq, role, content, tool_name, provider, model_used,
            tokens, input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost,
            price_id, duration_ms, files, images, metadata, user_id, created_at, search_extra, redacted_at)
        select id, conversation_id, placed_seq, role, content, tool_name, provider, model,
            input_tokens + cached_input_tokens + cache_write_tokens + output_tokens + reasoning_tokens,
            input_tokens, cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, price_id,
            duration_ms, coalesce(files, '{}'), coalesce(images, '{}'), coalesce(metadata, '{}'), user_id,
            created_at, search_extra, redacted_at
        from placed
        order by rec_ord, msg_ord  -- in the records' order, as before
        returning conversation_id, user_id, created_at, model_used, provider, tool_name, tokens, input_tokens,
            cached_input_tokens, cache_write_tokens, output_tokens, reasoning_tokens, cost, duration_ms,
            unpriced::integer as unpriced
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
            unpriced_messages = c.unpriced_messages + t.unpriced,
            -- As record_message: the newest turn's model; older turns only fill a thread without one.
            model_used = case when t.model_at > c.updated_at then t.model else coalesce(c.model_used, t.model) end,
            updated_at = greatest(c.updated_at, t.newest)
        from (
            select conversation_id, count(*) as n, sum(tokens) as tokens, sum(input_tokens) as i,
                sum(cached_input_tokens) as ci, sum(cache_write_tokens) as cw, sum(output_tokens) as o,
                sum(reasoning_tokens) as r, coalesce(sum(cost), 0) as cost, sum(unpriced) as unpriced,
                max(created_at) as newest,
                max(created_at) filter (where model_used is not null) as model_at,
                (array_agg(model_used order by created_at desc) filter (where model_used is not null))[1] as model
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
                user_id uuid, session_id text, tags text[], description text, metadata jsonb,
                redacted_at timestamptz)
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
                    conversation_id, tags, description, metadata, created_at, redacted_at)
                values (v_f.upload_id, v_file_id, v_f.filename, v_f.mime_type, v_f.size, v_f.user_id, v_f.session_id,
                    v_rec.conversation_id, coalesce(v_f.tags, '{}'), v_f.description, coalesce(v_f.metadata, '{}'),
                    v_f.created_at, v_f.redacted_at)
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
    'Write exported threads back, ids and costs unchanged, redacted_at as given; present threads and messages '
    'are skipped. A thread''s new messages keep their seq when all are free, else all go after its last turn '
    'in their records'' order. The rollup and totals grow by what was inserted; newer turns move the thread''s '
    'updated_at and model_used as record_message does.';

