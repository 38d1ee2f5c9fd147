-- Légifrance Collector: DILA LEGI dumps (collector/dumps). Needs 0001 and 0002 first.
--
-- Idempotent: running it again changes nothing. RLS on without policy (the anon key reads and
-- writes nothing); the function is executable by service_role only (grants guarded: a plain
-- PostgreSQL has no Supabase roles).
--
-- collector_dump_state: the last archive applied completely (its stamp), the global the store
-- was built on, the code scope of the loads, and the archive half-applied with how far its
-- committed batches went. collector_apply_dump_batch() writes one batch of a dump (rows, their
-- change-log events, retirements) AND that state in ONE transaction, so a kill never skips or
-- doubles an archive (Store.apply_dump_batch in collector/store/base.py).

begin;

create table if not exists public.collector_dump_state (
    id           boolean primary key default true check (id),   -- one row only
    last_stamp   text,                                 -- "YYYYMMDD-HHMMSS" of the last archive applied
    last_archive text,
    global_stamp text,
    codes        text,                                 -- "all" or comma-separated LEGITEXT ids
    archive      text,                                 -- half-applied archive (null when none)
    members      bigint not null default 0,            -- its members whose rows are committed
    bytes_read   bigint not null default 0,
    updated_at   timestamptz
);

alter table public.collector_dump_state enable row level security;

-- Sum two event-count objects ({"added": n, ...}) key by key.
create or replace function public.collector_sum_counts(p_a jsonb, p_b jsonb)
returns jsonb
language sql
immutable
set search_path = public
as $$
    select coalesce(jsonb_object_agg(k, coalesce((p_a ->> k)::bigint, 0) + coalesce((p_b ->> k)::bigint, 0)), '{}'::jsonb)
    from (select jsonb_object_keys(coalesce(p_a, '{}'::jsonb)) union select jsonb_object_keys(coalesce(p_b, '{}'::jsonb))) t(k);
$$;

-- One batch of a dump load, in one transaction: upsert p_articles with their events and
-- p_rejected (collector_commit_batch), retire the (p_retire_ids[i], p_retire_etats[i]) versions
-- (collector_retire_versions), reconcile each p_reconcile code ([{code_id, ids, cids}]) with a
-- global's in-force set (collector_retire_absent_logged), then the dump state: the progress, or
-- for p_final the archive's stamp as the last applied. A final stamp not after the last one
-- applied raises 22023 "already applied" and the whole call writes nothing. Returns the event
-- counts by kind plus superseded and retired.
create or replace function public.collector_apply_dump_batch(
    p_archive text,
    p_stamp text,
    p_is_global boolean,
    p_codes text,
    p_members bigint,
    p_bytes_read bigint,
    p_final boolean,
    p_tag text,
    p_articles jsonb default '[]'::jsonb,
    p_rejected jsonb default '[]'::jsonb,
    p_retire_ids text[] default '{}'::text[],
    p_retire_etats text[] default '{}'::text[],
    p_reconcile jsonb default '[]'::jsonb)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_state  public.collector_dump_state;
    v_counts jsonb;
    v_sup    bigint := 0;
    v_rep    bigint := 0;
    r        record;
    c        jsonb;
begin
    if p_archive is null or p_stamp is null or p_final is null then
        raise exception 'collector_apply_dump_batch: p_archive, p_stamp and p_final are required'
            using errcode = '22023';
    end if;
    insert into public.collector_dump_state (id) values (true) on conflict (id) do nothing;
    select * into v_state from public.collector_dump_state where id for update;  -- one loader at a time
    if p_final and v_state.last_stamp is not null and p_stamp <= v_state.last_stamp then
        raise exception 'dump % (stamp %) is not after the last one applied (%, %): already applied, or applied out of order',
            p_archive, p_stamp, v_state.last_archive, v_state.last_stamp using errcode = '22023';
    end if;
    v_counts := public.collector_commit_batch(coalesce(p_articles, '[]'::jsonb), coalesce(p_rejected, '[]'::jsonb),
                                              null, null, p_tag);
    if cardinality(p_retire_ids) > 0 then
        select * into r from public.collector_retire_versions(p_retire_ids, p_retire_etats, p_tag);
        v_sup := v_sup + r.superseded;
        v_rep := v_rep + r.repealed;
        v_counts := public.collector_sum_counts(v_counts, r.events);
    end if;
    for c in select * from jsonb_array_elements(coalesce(p_reconcile, '[]'::jsonb)) loop
        select * into r from public.collector_retire_absent_logged(
            c ->> 'code_id',
            array(select jsonb_array_elements_text(c -> 'ids')),
            array(select jsonb_array_elements_text(c -> 'cids')),
            p_tag);
        v_sup := v_sup + r.superseded;
        v_rep := v_rep + r.repealed;
        v_counts := public.collector_sum_counts(v_counts, r.events);
    end loop;
    if p_final then
        update public.collector_dump_state set
            last_stamp = p_stamp, last_archive = p_archive,
            global_stamp = case when p_is_global then p_stamp else global_stamp end,
            codes = p_codes, archive = null, members = 0, bytes_read = 0, updated_at = now()
        where id;
    else
        update public.collector_dump_state set
            archive = p_archive, members = p_members, bytes_read = p_bytes_read, updated_at = now()
        where id;
    end if;
    return v_counts || jsonb_build_object('superseded', v_sup, 'retired', v_rep);
end;
$$;

revoke all on function public.collector_sum_counts(jsonb, jsonb) from public;
revoke all on function public.collector_apply_dump_batch(text, text, boolean, text, bigint, bigint, boolean, text,
                                                        jsonb, jsonb, text[], text[], jsonb) from public;

-- Supabase roles: only where they exist (a plain PostgreSQL has none of them).
do $$
declare
    fns text[] := array[
        'public.collector_sum_counts(jsonb, jsonb)',
        'public.collector_apply_dump_batch(text, text, boolean, text, bigint, bigint, boolean, text, jsonb, jsonb, text[], text[], jsonb)'
    ];
    fn text;
    r  text;
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant select, insert, update, delete on public.collector_dump_state to service_role;
        foreach fn in array fns loop
            execute format('grant execute on function %s to service_role', fn);
        end loop;
    end if;
    -- Supabase grants table rights and EXECUTE to anon/authenticated by default privileges.
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on public.collector_dump_state from %I', r);
            foreach fn in array fns loop
                execute format('revoke all on function %s from %I', fn, r);
            end loop;
        end if;
    end loop;
end;
$$;

commit;

-- Make PostgREST see the new table and function at once (harmless where nobody listens).
notify pgrst, 'reload schema';
