-- files_queue: the table the original service's workers poll (only needed with EXPORT_BUCKET).
--
-- It belongs to the downstream workers' project: when it already exists this file changes
-- NOTHING (not its columns, not its row-level security), so run it freely. The export needs
-- `file_path` unique (it upserts on it), `bucket_id` and `status` ('pending' = (re)process the
-- file, EXPORT_RETIRED_STATUS, default 'retired' = the article version is no longer in force:
-- drop its chunks). A table created here has RLS on with no policy and no grant to
-- anon / authenticated, like the collector's own tables; service_role may read and write it.
do $$
begin
if to_regclass('public.files_queue') is null then
create table if not exists public.files_queue (
    file_path  text primary key,
    bucket_id  text not null,
    status     text not null default 'pending',
    created_at timestamptz not null default now()
);
    create index files_queue_status_idx on public.files_queue (status);
    alter table public.files_queue enable row level security;
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant select, insert, update, delete on public.files_queue to service_role;
    end if;
    if exists (select 1 from pg_roles where rolname = 'anon') then
        revoke all on public.files_queue from anon;
    end if;
    if exists (select 1 from pg_roles where rolname = 'authenticated') then
        revoke all on public.files_queue from authenticated;
    end if;
end if;
end;
$$;
