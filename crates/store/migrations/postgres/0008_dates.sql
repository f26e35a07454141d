-- carevault schema, version 8 (PostgreSQL): no range ends before it starts.
--
-- Date searches now bound `low` wherever they can (see store/src/date_sql.rs), which assumes
-- that no stored range ends before it starts. A period given with its end before its start is
-- now stored with its ends in order (fhir terms::date_ranges); rows stored before are put in
-- order here. PostgreSQL keeps both of its range indexes: SQLite's migration 0008 replaces the
-- index on every `high` with a partial one on the long ranges, to halve what an import writes
-- for dates, but here the same partial index would have to be proven usable under row-level
-- security, and the import rate is not PostgreSQL's bottleneck.
--
-- As the owner: the table's forced policy would hide every row from a migration that has
-- bound no tenant. It is forced again before the transaction ends.
ALTER TABLE search_dates NO FORCE ROW LEVEL SECURITY;
INSERT INTO search_dates (tenant_id, resource_type, id, param, low, high)
    SELECT tenant_id, resource_type, id, param, high, low FROM search_dates WHERE low > high
    ON CONFLICT DO NOTHING;
DELETE FROM search_dates WHERE low > high;
ALTER TABLE search_dates FORCE ROW LEVEL SECURITY;
