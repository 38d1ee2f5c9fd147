-- Légifrance Collector: the change log (run after 0001_collector.sql; SQLite mirrors it).
--
-- Idempotent like 0001: running it again changes nothing. Every migration file runs in name
-- order (0001, 0002, ...); re-running an earlier file alone after a later one is not supported.
--
-- legifrance_changes: one event per change of the in-force set or of an article's content,
-- written by the same function call (the same transaction) as the rows it describes:
--   added      a cid enters the in-force set (id = the version stored)
--   modified   a new version of a cid comes into force (previous_id = the version it retires)
--   repealed   a cid leaves the in-force set with no stored successor (etat ABROGE, or MODIFIE
--              when its successor is in force but not stored, e.g. too short)
--   corrected  same version id, another content_sha256 (previous_text keeps the old text)
-- seq is the consumers' cursor. Writers of events take one transaction-level advisory lock
-- before they insert, so events commit in seq order and a reader at `seq > N` never skips one
-- that commits later with a smaller seq.
--
-- Security model as in 0001: RLS on with no policy; the functions are executable by
-- service_role only.

begin;

create table if not exists public.legifrance_changes (
    seq            bigint generated always as identity primary key,
    kind           text not null check (kind in ('added', 'modified', 'repealed', 'corrected')),
    code_id        text not null,
    cid            text not null,
    id             text not null,
    previous_id    text,
    num            text,
    etat           text not null,
    content_sha256 text,
    run_id         text,                           -- the pass's run id, or a dump stamp
    at             timestamptz not null default now(),
    previous_text  text                            -- corrected only: the text it replaced
);
create index if not exists legifrance_changes_code_id_seq_idx on public.legifrance_changes (code_id, seq);

-- Where each named consumer is in the log (collector_claim_changes, Store.get/set_cursor).
create table if not exists public.legifrance_change_consumers (
    consumer   text primary key,
    last_seq   bigint not null default 0,
    updated_at timestamptz not null default now()
);

alter table public.legifrance_changes          enable row level security;
alter table public.legifrance_change_consumers enable row level security;

-- ---- internal: event writers (called inside the public functions' transaction) -----------------

-- Serialises the writers of events until their transaction ends (see the header).
create or replace function public.collector_lock_changes()
returns void
language sql
set search_path = public
as $$
    select pg_advisory_xact_lock(7046323091876315972);
$$;

-- Upsert article rows (legifrance_articles columns as JSON objects, one per id) and write their
-- events, row by row in the given order (rules in collector/store/base.py, Store.commit_batch).
-- Returns the events written by kind: {"added": n, "modified": n, "repealed": 0, "corrected": n}.
create or replace function public.collector_log_articles(p_rows jsonb, p_tag text)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    r        public.legifrance_articles;
    v_etat   text;
    v_sha    text;
    v_text   text;
    v_prev   text;
    v_counts jsonb := '{"added": 0, "modified": 0, "repealed": 0, "corrected": 0}'::jsonb;
    v_kind   text;
begin
    if p_rows is null or jsonb_typeof(p_rows) <> 'array' or jsonb_array_length(p_rows) = 0 then
        return v_counts;
    end if;
    perform public.collector_lock_changes();
    -- Rows entering force first (stable otherwise): [V1 leaving, V2 of its cid entering] is one
    -- `modified` event whatever the order, as in SQLite.
    for r in select x.* from jsonb_populate_recordset(null::public.legifrance_articles, p_rows)
             with ordinality as x
             order by (x.etat like 'VIGUEUR%') desc, x.ordinality loop
        v_kind := null;
        v_prev := null;
        v_etat := null;
        select a.etat, a.content_sha256, a.text into v_etat, v_sha, v_text
        from public.legifrance_articles a where a.id = r.id for update;
        if r.etat like 'VIGUEUR%' then
            if v_etat like 'VIGUEUR%' then
                if v_sha is distinct from r.content_sha256 then
                    v_kind := 'corrected';
                end if;
            else
                select a.id into v_prev
                from public.legifrance_articles a
                where a.cid = r.cid and a.etat like 'VIGUEUR%' and a.id <> r.id
                order by coalesce(a.date_debut::text, '') desc, a.id desc
                limit 1;
                if v_prev is not null then
                    v_kind := 'modified';
                    update public.legifrance_articles a set etat = 'MODIFIE'
                    where a.cid = r.cid and a.etat like 'VIGUEUR%' and a.id <> r.id;
                else
                    v_kind := 'added';
                end if;
            end if;
        elsif v_etat like 'VIGUEUR%' and not exists (  -- leaves the in-force set, no successor
            select 1 from public.legifrance_articles a
            where a.cid = r.cid and a.id <> r.id and a.etat like 'VIGUEUR%') then
            v_kind := 'repealed';
        end if;
        -- Columns named: a later migration may add generated columns (0005's search_tsv).
        insert into public.legifrance_articles as a (
            id, cid, code_id, code_title, num, etat, date_debut, date_fin, section_path, text,
            html, nota, content_sha256, collected_at)
        values (
            r.id, r.cid, r.code_id, r.code_title, r.num, r.etat, r.date_debut, r.date_fin,
            r.section_path, r.text, r.html, r.nota, r.content_sha256, r.collected_at)
        on conflict (id) do update set
            cid = excluded.cid, code_id = excluded.code_id, code_title = excluded.code_title,
            num = excluded.num, etat = excluded.etat, date_debut = excluded.date_debut,
            date_fin = excluded.date_fin, section_path = excluded.section_path, text = excluded.text,
            html = excluded.html, nota = excluded.nota, content_sha256 = excluded.content_sha256,
            collected_at = excluded.collected_at;
        if v_kind is not null then
            insert into public.legifrance_changes
                (kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id, previous_text)
            values (v_kind, r.code_id, r.cid, r.id, v_prev, r.num, r.etat, r.content_sha256, p_tag,
                    case when v_kind = 'corrected' then v_text end);
            v_counts := jsonb_set(v_counts, array[v_kind], to_jsonb((v_counts ->> v_kind)::integer + 1));
        end if;
    end loop;
    return v_counts;
end;
$$;

-- Events of rows one statement took out of force / put back in force (p_changed: objects with
-- id, cid, code_id, num, etat, content_sha256, restored), written after that statement
-- (rules in Store.retire_absent): a restored row and a retired row of one cid -> `modified`;
-- other retired rows -> `repealed`, unless 'MODIFIE' with another row of the cid still in
-- force; other restored rows -> `added`. Returns the events by kind.
create or replace function public.collector_log_retired(p_changed jsonb, p_tag text)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_counts jsonb;
begin
    perform public.collector_lock_changes();
    with ch as (
        select * from jsonb_to_recordset(coalesce(p_changed, '[]'::jsonb)) as c(
            id text, cid text, code_id text, num text, etat text, content_sha256 text, restored boolean)
    ), back as (  -- one restored row per cid (the highest id)
        select distinct on (cid) * from ch where restored order by cid, id desc
    ), gone as (
        select * from ch where not restored
    ), pairs as (
        select distinct on (g.cid) b.*, g.id as previous_id, g.id as sort_id
        from gone g join back b using (cid) order by g.cid, g.id
    ), events as (
        select 1 as grp, p.sort_id, 'modified' as kind, p.code_id, p.cid, p.id, p.previous_id, p.num,
               p.etat, p.content_sha256 from pairs p
        union all
        select 2, g.id, 'repealed', g.code_id, g.cid, g.id, null, g.num, g.etat, g.content_sha256
        from gone g
        where g.cid not in (select cid from back)
          and not (g.etat = 'MODIFIE' and exists (
              select 1 from public.legifrance_articles a where a.cid = g.cid and a.etat like 'VIGUEUR%'))
        union all
        select 3, b.id, 'added', b.code_id, b.cid, b.id, null, b.num, b.etat, b.content_sha256
        from back b where b.cid not in (select cid from gone)
    ), written as (
        insert into public.legifrance_changes
            (kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id)
        select e.kind, e.code_id, e.cid, e.id, e.previous_id, e.num, e.etat, e.content_sha256, p_tag
        from events e order by e.grp, e.sort_id
        returning kind
    )
    select jsonb_build_object(
        'added', count(*) filter (where kind = 'added'),
        'modified', count(*) filter (where kind = 'modified'),
        'repealed', count(*) filter (where kind = 'repealed'),
        'corrected', 0)
    into v_counts from written;
    return v_counts;
end;
$$;

-- ---- public functions (called through supabase-py rpc) ------------------------------------------

-- One commit of the collector: articles + rejected ids + the run's progress + the events, in
-- ONE transaction (the function call). Replaying it writes no second event.
create or replace function public.collector_commit_batch(
    p_articles jsonb default '[]'::jsonb,
    p_rejected jsonb default '[]'::jsonb,
    p_run_id bigint default null,
    p_progress jsonb default null,
    p_tag text default null)
returns jsonb
language plpgsql
set search_path = public
as $$
declare
    v_counts jsonb;
begin
    v_counts := public.collector_log_articles(p_articles, coalesce(p_tag, p_run_id::text));
    if p_rejected is not null and jsonb_array_length(p_rejected) > 0 then
        insert into public.legifrance_rejected as j (id, code_id, reason, length, rejected_at)
        select id, code_id, reason, length, rejected_at
        from jsonb_populate_recordset(null::public.legifrance_rejected, p_rejected)
        on conflict (id) do update set
            code_id = excluded.code_id, reason = excluded.reason, length = excluded.length,
            rejected_at = excluded.rejected_at;
    end if;
    if p_run_id is not null and p_progress is not null then
        update public.collector_runs set progress = p_progress where id = p_run_id;
    end if;
    return v_counts;
end;
$$;

-- collector_retire_absent (0001) with its events: same arguments plus the events' run_id, same
-- counts plus `events` (by kind). One statement retires and restores; the events follow.
create or replace function public.collector_retire_absent_logged(
    p_code_id text, p_ids text[], p_cids text[] default null, p_tag text default null)
returns table (superseded integer, repealed integer, events jsonb)
language plpgsql
set search_path = public
as $$
#variable_conflict use_column
declare
    v_changed jsonb;
begin
    if p_code_id is null or p_code_id = '' or p_ids is null then
        raise exception 'collector_retire_absent: p_code_id and p_ids are required'
            using errcode = '22023';
    end if;
    perform public.collector_lock_changes();  -- before any row lock: the order of every writer
    -- Plan stability: see collector_retire_absent in 0001 (IN sub-plans, never a join).
    with live_ids as (
        select distinct i as id from unnest(p_ids) i where i is not null
    ), live_cids as (
        select c as cid from unnest(coalesce(p_cids, '{}'::text[])) c
        union
        select (select s.cid from public.legifrance_articles s where s.id = l.id) from live_ids l
    ), changed as (
        update public.legifrance_articles a
        set etat = case
            when a.id in (select id from live_ids) then 'VIGUEUR'
            when a.cid in (select cid from live_cids) then 'MODIFIE'
            else 'ABROGE'
        end
        where a.code_id = p_code_id
          and ((a.etat like 'VIGUEUR%' and a.id not in (select id from live_ids))
            or (a.etat not like 'VIGUEUR%' and a.id in (select id from live_ids)))
        returning a.id, a.cid, a.code_id, a.num, a.etat, a.content_sha256, a.etat = 'VIGUEUR' as restored
    )
    select coalesce(jsonb_agg(to_jsonb(c)), '[]'::jsonb) into v_changed from changed c;
    return query
    select (select count(*) from jsonb_array_elements(v_changed) e where e ->> 'etat' = 'MODIFIE')::integer,
           (select count(*) from jsonb_array_elements(v_changed) e where e ->> 'etat' = 'ABROGE')::integer,
           public.collector_log_retired(v_changed, p_tag);
end;
$$;

-- 0001's function keeps its name and answer but writes the events too (nothing retires rows
-- without them).
create or replace function public.collector_retire_absent(
    p_code_id text, p_ids text[], p_cids text[] default null)
returns table (superseded integer, repealed integer)
language sql
set search_path = public
as $$
    select r.superseded, r.repealed from public.collector_retire_absent_logged(p_code_id, p_ids, p_cids) r;
$$;

-- Dumps: versions no longer in force, as (p_ids[i], p_etats[i]) pairs (see Store.retire_versions).
-- A stored row of that id still in force takes the etat; it makes a `repealed` event unless
-- another row of its cid is still in force. superseded = rows set to MODIFIE, repealed = others.
create or replace function public.collector_retire_versions(
    p_ids text[], p_etats text[], p_tag text default null)
returns table (superseded integer, repealed integer, events jsonb)
language plpgsql
set search_path = public
as $$
#variable_conflict use_column
declare
    v_changed jsonb;
    v_events  jsonb;
begin
    if p_ids is null or p_etats is null or cardinality(p_ids) <> cardinality(p_etats)
       or exists (select 1 from unnest(p_etats) e where e is null or e like 'VIGUEUR%') then
        raise exception 'collector_retire_versions: p_ids and p_etats must pair each id with an etat not in force'
            using errcode = '22023';
    end if;
    perform public.collector_lock_changes();
    with pairs as (
        select distinct on (i) i as id, e as etat, n
        from unnest(p_ids, p_etats) with ordinality as p(i, e, n)
        order by i, n desc
    ), changed as (
        update public.legifrance_articles a set etat = p.etat
        from pairs p
        where a.id = p.id and a.etat like 'VIGUEUR%'
        returning a.id, a.cid, a.code_id, a.num, a.etat, a.content_sha256, p.n
    )
    select coalesce(jsonb_agg(to_jsonb(c) order by c.n), '[]'::jsonb) into v_changed from changed c;
    with ch as (
        select * from jsonb_to_recordset(v_changed) as c(
            id text, cid text, code_id text, num text, etat text, content_sha256 text, n bigint)
    ), written as (
        insert into public.legifrance_changes
            (kind, code_id, cid, id, previous_id, num, etat, content_sha256, run_id)
        select 'repealed', c.code_id, c.cid, c.id, null, c.num, c.etat, c.content_sha256, p_tag
        from ch c
        where not exists (select 1 from public.legifrance_articles a where a.cid = c.cid and a.etat like 'VIGUEUR%')
        order by c.n
        returning kind
    )
    select jsonb_build_object('added', 0, 'modified', 0, 'repealed', count(*), 'corrected', 0)
    into v_events from written;
    return query
    select (select count(*) from jsonb_array_elements(v_changed) e where e ->> 'etat' = 'MODIFIE')::integer,
           (select count(*) from jsonb_array_elements(v_changed) e where e ->> 'etat' <> 'MODIFIE')::integer,
           v_events;
end;
$$;

-- Hand the named consumer its next events, once: its cursor row is locked FOR UPDATE SKIP
-- LOCKED, so while one worker of that consumer holds it another gets nothing at once (it
-- polls again) instead of the same events; the cursor moves in the same transaction. A worker
-- that must not lose events on a crash reads with `seq > cursor` and moves the cursor itself
-- after its work (Store.get_cursor / set_cursor).
create or replace function public.collector_claim_changes(consumer text, max_rows integer default 100)
returns table (seq bigint, kind text, code_id text, cid text, id text, previous_id text, num text,
               etat text, content_sha256 text, run_id text, at timestamptz)
language plpgsql
set search_path = public
as $$
#variable_conflict use_column
declare
    v_consumer text := consumer;
    v_last     bigint;
    v_next     bigint;
begin
    if v_consumer is null or v_consumer = '' or max_rows is null or max_rows < 1 then
        raise exception 'collector_claim_changes: consumer must be a non-empty text and max_rows >= 1'
            using errcode = '22023';
    end if;
    insert into public.legifrance_change_consumers (consumer) values (v_consumer)
    on conflict (consumer) do nothing;
    select c.last_seq into v_last from public.legifrance_change_consumers c
    where c.consumer = v_consumer for update skip locked;
    if not found then
        return;
    end if;
    select max(x.seq) into v_next from (
        select l.seq from public.legifrance_changes l where l.seq > v_last order by l.seq limit max_rows) x;
    if v_next is null then
        return;
    end if;
    update public.legifrance_change_consumers c set last_seq = v_next, updated_at = now()
    where c.consumer = v_consumer;
    return query
    select l.seq, l.kind, l.code_id, l.cid, l.id, l.previous_id, l.num, l.etat, l.content_sha256, l.run_id, l.at
    from public.legifrance_changes l where l.seq > v_last and l.seq <= v_next order by l.seq;
end;
$$;

-- Move a consumer's cursor forward, never back: of two writers (two exporters during a
-- deploy's overlap) the late one cannot make the other's events replay.
create or replace function public.collector_advance_cursor(p_consumer text, p_seq bigint)
returns void
language sql
set search_path = public
as $$
    insert into public.legifrance_change_consumers as c (consumer, last_seq, updated_at)
    values (p_consumer, p_seq, now())
    on conflict (consumer) do update
    set last_seq = greatest(c.last_seq, excluded.last_seq), updated_at = excluded.updated_at;
$$;

revoke all on function public.collector_lock_changes() from public;
revoke all on function public.collector_log_articles(jsonb, text) from public;
revoke all on function public.collector_log_retired(jsonb, text) from public;
revoke all on function public.collector_commit_batch(jsonb, jsonb, bigint, jsonb, text) from public;
revoke all on function public.collector_retire_absent_logged(text, text[], text[], text) from public;
revoke all on function public.collector_retire_absent(text, text[], text[]) from public;
revoke all on function public.collector_retire_versions(text[], text[], text) from public;
revoke all on function public.collector_claim_changes(text, integer) from public;
revoke all on function public.collector_advance_cursor(text, bigint) from public;

-- Supabase roles: only where they exist (a plain PostgreSQL has none of them).
do $$
declare
    fns text[] := array[
        'public.collector_lock_changes()',
        'public.collector_log_articles(jsonb, text)',
        'public.collector_log_retired(jsonb, text)',
        'public.collector_commit_batch(jsonb, jsonb, bigint, jsonb, text)',
        'public.collector_retire_absent_logged(text, text[], text[], text)',
        'public.collector_retire_absent(text, text[], text[])',
        'public.collector_retire_versions(text[], text[], text)',
        'public.collector_claim_changes(text, integer)',
        'public.collector_advance_cursor(text, bigint)'
    ];
    fn text;
    r  text;
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant select, insert, update, delete on
            public.legifrance_changes, public.legifrance_change_consumers
            to service_role;
        execute format('grant usage, select on sequence %s to service_role',
                       pg_get_serial_sequence('public.legifrance_changes', 'seq'));
        foreach fn in array fns loop
            execute format('grant execute on function %s to service_role', fn);
        end loop;
    end if;
    -- Supabase grants table rights and EXECUTE to anon/authenticated by default privileges.
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on public.legifrance_changes, public.legifrance_change_consumers from %I', r);
            foreach fn in array fns loop
                execute format('revoke all on function %s from %I', fn, r);
            end loop;
        end if;
    end loop;
end;
$$;

commit;

-- Make PostgREST see the new tables and functions at once (harmless where nobody listens).
notify pgrst, 'reload schema';
