-- Légifrance Collector: full-text search over the stored articles (after 0001_collector.sql).
--
-- Run once in the Supabase SQL editor (or `psql -f`), after the earlier migrations. Idempotent.
-- Accent- and case-insensitive French full text:
--   * `public.collector_french`: a copy of the `french` configuration whose words pass through
--     the `unaccent` dictionary before the French stemmer. Because unaccent sits inside the
--     configuration, documents, queries (plainto_tsquery) and snippets (ts_headline) all use it:
--     "deliberation" finds "délibération", and the snippet keeps the accents and marks the word.
--     to_tsvector(regconfig, text) is immutable, so no unaccent() wrapper is needed for the index.
--   * a stored generated column `search_tsv` (to_tsvector('public.collector_french', text)) with
--     a GIN index: always in step with `text`, written by PostgreSQL itself.
--   * `public.collector_search(...)`: the RPC the Supabase store calls; executable by
--     service_role only.

begin;

-- Supabase keeps extensions in the `extensions` schema; a plain PostgreSQL gets one too.
create schema if not exists extensions;
create extension if not exists unaccent with schema extensions;

do $$
declare
    v_schema text;
begin
    select n.nspname into v_schema
    from pg_extension e join pg_namespace n on n.oid = e.extnamespace
    where e.extname = 'unaccent';
    if not exists (
        select 1 from pg_ts_config
        where cfgname = 'collector_french' and cfgnamespace = 'public'::regnamespace
    ) then
        create text search configuration public.collector_french (copy = pg_catalog.french);
    end if;
    -- Words with non-ASCII letters: unaccent first (a filtering dictionary), then the stemmer.
    execute format(
        'alter text search configuration public.collector_french '
        'alter mapping for hword, hword_part, word with %I.unaccent, pg_catalog.french_stem',
        v_schema);
end;
$$;

-- The document vector, stored: ranking reads it instead of parsing each match's text again.
-- Adding it rewrites the table once (a few seconds per 100,000 articles; writes wait meanwhile).
alter table public.legifrance_articles add column if not exists search_tsv tsvector
    generated always as (to_tsvector('public.collector_french'::regconfig, text)) stored;
create index if not exists legifrance_articles_search_idx on public.legifrance_articles using gin (search_tsv);

-- The best p_limit stored articles holding every word of p_query, best first (rank: higher is
-- better). p_query is plain words (plainto_tsquery: no operator syntax); stop words alone
-- match nothing. p_etat matches as a prefix ('VIGUEUR' also finds 'VIGUEUR_DIFF').
-- A query matching more than 5,000 articles ranks the first 5,000 the index scan finds.
create or replace function public.collector_search(
    p_query text, p_code_id text default null, p_etat text default null, p_limit integer default 20)
returns table (id text, code_id text, code_title text, num text, etat text, section_path text,
               snippet text, rank real)
language plpgsql
stable
set search_path = public, pg_catalog
as $$
#variable_conflict use_column
declare
    v_query tsquery := plainto_tsquery('public.collector_french'::regconfig, coalesce(p_query, ''));
    v_limit integer := least(greatest(coalesce(p_limit, 20), 1), 200);
begin
    if numnode(v_query) = 0 then
        return;  -- no searchable word (empty, or stop words only)
    end if;
    return query
    with matched as (
        select a.id, ts_rank(a.search_tsv, v_query) as r
        from public.legifrance_articles a
        where a.search_tsv @@ v_query
          and (p_code_id is null or a.code_id = p_code_id)
          and (p_etat is null or left(a.etat, length(p_etat)) = p_etat)
        limit 5000
    ), best as (
        select m.id, m.r from matched m order by m.r desc, m.id limit v_limit
    ), ranked as (
        select a.id, a.code_id, a.code_title, a.num, a.etat, a.section_path, a.text, b.r
        from best b join public.legifrance_articles a on a.id = b.id
    )
    select r.id, r.code_id, r.code_title, r.num, r.etat, r.section_path,
           ts_headline('public.collector_french'::regconfig, r.text, v_query,
                       'StartSel="[", StopSel="]", MaxWords=30, MinWords=12, '
                       'MaxFragments=2, FragmentDelimiter=" … "'),
           r.r
    from ranked r
    order by r.r desc, r.id;
end;
$$;

revoke all on function public.collector_search(text, text, text, integer) from public;

-- Supabase roles: only where they exist (a plain PostgreSQL has none of them).
do $$
declare
    r text;
begin
    if exists (select 1 from pg_roles where rolname = 'service_role') then
        grant execute on function public.collector_search(text, text, text, integer) to service_role;
    end if;
    -- Supabase grants EXECUTE on new functions to anon/authenticated by default privileges.
    foreach r in array array['anon', 'authenticated'] loop
        if exists (select 1 from pg_roles where rolname = r) then
            execute format('revoke all on function public.collector_search(text, text, text, integer) from %I', r);
        end if;
    end loop;
end;
$$;

commit;

notify pgrst, 'reload schema';
