-- Agent search on PostgreSQL: pg_trgm GIN indexes serve
-- pc_id ILIKE '%q%' OR hostname ILIKE '%q%' for a q of three characters or
-- more. pg_trgm is a trusted extension (PostgreSQL 13+), so the database's
-- owner may create it; Debian ships it with postgresql-15. Without it
-- (not installed, or a role that may not create extensions) the search
-- stays correct and scans the table, as before this migration; the
-- indexes can be added later by hand with the same two statements.
DO $$
BEGIN
    IF EXISTS (SELECT 1 FROM pg_available_extensions WHERE name = 'pg_trgm') THEN
        BEGIN
            CREATE EXTENSION IF NOT EXISTS pg_trgm;
        EXCEPTION WHEN insufficient_privilege THEN
            RAISE NOTICE 'pg_trgm not created (%): agent search scans the agents table', SQLERRM;
        END;
    END IF;
    IF EXISTS (SELECT 1 FROM pg_extension WHERE extname = 'pg_trgm') THEN
        CREATE INDEX agents_search_pc_id ON agents USING gin (pc_id gin_trgm_ops);
        CREATE INDEX agents_search_hostname ON agents USING gin (hostname gin_trgm_ops);
    END IF;
END
$$;
