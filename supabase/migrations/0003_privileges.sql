-- Légifrance Collector: no table privilege at all for Supabase's API roles.
--
-- Run after 0001 (and 0002 when present), in the SQL editor or with `psql -f`. Idempotent, and
-- harmless on a plain PostgreSQL where the roles anon / authenticated do not exist.
--
-- Why: Supabase grants ALL on new tables in schema public to anon and authenticated by default
-- privileges. Row-level security (0001) hides and blocks rows, but it does not cover TRUNCATE
-- (nor REFERENCES or TRIGGER): with the grant, the anon key could empty legifrance_articles.
-- The collector uses the service_role key only. Every table and sequence of the collector (names
-- starting with legifrance_ or collector_ in schema public) is covered, so tables added by later
-- migrations are too when this file runs after them; run it again after adding a table by hand.

begin;

do $$
declare
    r   text;
    obj record;
begin
    foreach r in array array['anon', 'authenticated'] loop
        if not exists (select 1 from pg_roles where rolname = r) then
            continue;
        end if;
        for obj in
            select c.relname, c.relkind
            from pg_class c
            where c.relnamespace = 'public'::regnamespace
              and c.relkind in ('r', 'p', 'v', 'm', 'f', 'S')
              and (c.relname like 'legifrance\_%' or c.relname like 'collector\_%')
            order by c.relname
        loop
            if obj.relkind = 'S' then
                execute format('revoke all on sequence public.%I from %I', obj.relname, r);
            else
                execute format('revoke all on table public.%I from %I', obj.relname, r);
            end if;
        end loop;
    end loop;
end;
$$;

commit;
