-- carevault schema, version 8 (SQLite): date searches range over `low`; `high` keeps an index
-- only for the long ranges.
--
-- An index on every `high` cost as much to write as the one on `low`: an import's dates arrive
-- in no order, so each new row dirtied a page of each index, a seventh of all an import wrote
-- to the WAL at 10,000 patients (bench/wal-profile). Searches now bound `low` in every term
-- they can (see store/src/date_sql.rs) and reach the ranges longer than 366 days (open
-- periods, ongoing care plans and medication), which no bound on `low` can find, through
-- the partial index below. Its WHERE clause must stay the expression the queries use.
--
-- The bounds on `low` assume that no range ends before it starts. A period given with its
-- end before its start is now stored with its ends in order (fhir terms::date_ranges), and
-- rows stored before are put in order here.
INSERT INTO search_dates (tenant_id, resource_type, id, param, low, high)
    SELECT tenant_id, resource_type, id, param, high, low FROM search_dates WHERE low > high
    ON CONFLICT DO NOTHING;
DELETE FROM search_dates WHERE low > high;

DROP INDEX search_dates_by_high;
CREATE INDEX search_dates_long ON search_dates (tenant_id, resource_type, param, high)
    WHERE high > low + 31622400000;
