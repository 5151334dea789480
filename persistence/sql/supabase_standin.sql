-- STAND-IN FOR SUPABASE'S BUILT-INS ON A PLAIN POSTGRES. NEVER APPLY THIS TO A SUPABASE PROJECT.
--
-- A Supabase project already has everything below (and the real versions do more). This file
-- creates the minimum the migrations in persistence/sql/migrations rely on, so they run
-- unchanged on a plain Postgres 15+:
--   * authenticator, the login role PostgREST and Storage connect as: not a superuser, no
--     privileges of its own (noinherit), a member of the three API roles it switches to per
--     request (tests/supabase_standin.py connects as it);
--   * the roles anon, authenticated and service_role (service_role bypasses RLS), with
--     Supabase's default privileges on the public schema (anon and authenticated get every
--     privilege on new tables and functions: the migrations must revoke what RLS cannot guard);
--   * auth.uid(), auth.role() and auth.jwt(), reading the request.jwt.claims setting that
--     PostgREST sets per request;
--   * a minimal storage schema: storage.buckets, storage.objects (RLS on) and
--     storage.foldername().
-- `python -m persistence migrate` applies it only when auth.uid() is missing; it is not a
-- migration and is not recorded in supabase_migrations.schema_migrations. Everything is
-- created only where missing, so running it twice changes nothing. Roles are cluster-wide;
-- the schemas belong to the one database.

do $$
declare
    v_role text;
begin
    foreach v_role in array array['anon', 'authenticated', 'service_role'] loop
        if not exists (select 1 from pg_catalog.pg_roles where rolname = v_role) then
            begin
                execute format('create role %I nologin noinherit', v_role);
            exception when duplicate_object or unique_violation then
                null;  -- created by a concurrent bootstrap of another database
            end;
        end if;
    end loop;
    -- Roles are cluster-wide: alter only when needed, so concurrent bootstraps do not collide.
    if not (select rolbypassrls from pg_catalog.pg_roles where rolname = 'service_role') then
        alter role service_role bypassrls;
    end if;
    if not exists (select 1 from pg_catalog.pg_roles where rolname = 'authenticator') then
        begin
            create role authenticator login noinherit;
        exception when duplicate_object or unique_violation then
            null;
        end;
    end if;
    foreach v_role in array array['anon', 'authenticated', 'service_role'] loop
        if not pg_catalog.pg_has_role('authenticator', v_role, 'member') then
            begin
                execute format('grant %I to authenticator', v_role);
            exception when duplicate_object or unique_violation or sqlstate 'XX000' then
                null;  -- granted by a concurrent bootstrap ("tuple concurrently updated")
            end;
        end if;
    end loop;
end
$$;

grant usage on schema public to anon, authenticated, service_role;
alter default privileges in schema public grant all on tables to anon, authenticated, service_role;
alter default privileges in schema public grant all on functions to anon, authenticated, service_role;
alter default privileges in schema public grant all on sequences to anon, authenticated, service_role;

create schema if not exists auth;
grant usage on schema auth to anon, authenticated, service_role;

create or replace function auth.uid()
returns uuid
language sql
stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.sub', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
    )::uuid
$$;

create or replace function auth.role()
returns text
language sql
stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim.role', true), ''),
        (nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'role')
    )::text
$$;

create or replace function auth.jwt()
returns jsonb
language sql
stable
as $$
    select coalesce(
        nullif(current_setting('request.jwt.claim', true), ''),
        nullif(current_setting('request.jwt.claims', true), '')
    )::jsonb
$$;

grant execute on function auth.uid(), auth.role(), auth.jwt() to anon, authenticated, service_role;

create schema if not exists storage;
grant usage on schema storage to anon, authenticated, service_role;

create table if not exists storage.buckets (
    id text primary key,
    name text not null unique,
    owner uuid,
    public boolean not null default false,
    file_size_limit bigint,
    allowed_mime_types text[],
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now()
);

create table if not exists storage.objects (
    id uuid primary key default gen_random_uuid(),
    bucket_id text references storage.buckets (id),
    name text,
    owner uuid,
    owner_id text,
    metadata jsonb,
    user_metadata jsonb,
    version text,
    path_tokens text[] generated always as (string_to_array(name, '/')) stored,
    created_at timestamptz not null default now(),
    updated_at timestamptz not null default now(),
    last_accessed_at timestamptz not null default now(),
    unique (bucket_id, name)
);

alter table storage.buckets enable row level security;
alter table storage.objects enable row level security;
-- Not TRUNCATE (or REFERENCES, TRIGGER) for API roles: TRUNCATE is not subject to row level
-- security, so anon could empty the bucket's index. Revoked explicitly too, for databases
-- bootstrapped by an earlier version of this file.
revoke truncate, references, trigger on table storage.buckets, storage.objects from anon, authenticated;
grant select, insert, update, delete on table storage.buckets, storage.objects to anon, authenticated;
grant all on table storage.buckets, storage.objects to service_role;

create or replace function storage.foldername(name text)
returns text[]
language plpgsql
immutable
as $$
declare
    _parts text[];
begin
    select string_to_array(name, '/') into _parts;
    return _parts[1:array_length(_parts, 1) - 1];
end
$$;

grant execute on function storage.foldername(text) to anon, authenticated, service_role;
