-- carevault schema, version 5 (SQLite): cheaper search indexes. PostgreSQL has no counterpart
-- (../postgres/0005_perf.sql is empty): its tables keep their shape.
--
-- search_tokens and search_dates become WITHOUT ROWID tables, so the primary key is the table
-- itself rather than a rowid table plus a copy of every row in the key's index. search_tokens
-- is keyed in search order (tenant, type, token, id): a search by token reads the table
-- directly, and one secondary index (tenant, type, id) serves the replacement of a resource's
-- tokens. Every token is then written into two B-trees instead of three. Nothing refers to
-- either table, so they are copied and swapped in this migration's transaction.

CREATE TABLE search_tokens_v5 (
    tenant_id     BLOB NOT NULL,
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    token         BLOB NOT NULL CHECK (length(token) = 16),
    PRIMARY KEY (tenant_id, resource_type, token, id)
) STRICT, WITHOUT ROWID;
INSERT INTO search_tokens_v5 (tenant_id, resource_type, id, token)
    SELECT tenant_id, resource_type, id, token FROM search_tokens;
DROP TABLE search_tokens;
ALTER TABLE search_tokens_v5 RENAME TO search_tokens;
CREATE INDEX search_tokens_by_resource ON search_tokens (tenant_id, resource_type, id);

CREATE TABLE search_dates_v5 (
    tenant_id     BLOB    NOT NULL,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    param         TEXT    NOT NULL,
    low           INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, param, low, high)
) STRICT, WITHOUT ROWID;
INSERT INTO search_dates_v5 (tenant_id, resource_type, id, param, low, high)
    SELECT tenant_id, resource_type, id, param, low, high FROM search_dates;
DROP TABLE search_dates;
ALTER TABLE search_dates_v5 RENAME TO search_dates;
CREATE INDEX search_dates_by_low ON search_dates (tenant_id, resource_type, param, low);
CREATE INDEX search_dates_by_high ON search_dates (tenant_id, resource_type, param, high);

-- Planner statistics for a search by token. Without them SQLite walks every current resource
-- of the type (resource_current_by_update) and tests each id against the token list, a scan
-- that grows with the number of patients; with them it looks up each matching id by primary
-- key. These are shape hints (many resources per type, a few per token, about twelve tokens
-- per resource), not measurements; a later ANALYZE replaces them with real figures.
ANALYZE sqlite_master;
INSERT INTO sqlite_stat1 (tbl, idx, stat)
    SELECT hint.tbl, hint.idx, hint.stat FROM (
        SELECT 'resource_current' AS tbl, 'sqlite_autoindex_resource_current_1' AS idx,
               '1000000 100000 20000 1' AS stat
        UNION ALL SELECT 'resource_current', 'resource_current_by_update',
               '1000000 100000 20000 10000 2 1'
        UNION ALL SELECT 'search_tokens', 'sqlite_autoindex_search_tokens_1',
               '12000000 1200000 240000 3 1'
        UNION ALL SELECT 'search_tokens', 'search_tokens_by_resource',
               '12000000 1200000 240000 12'
    ) AS hint
    -- Real statistics from an operator's ANALYZE win.
    WHERE NOT EXISTS (SELECT 1 FROM sqlite_stat1 AS real WHERE real.tbl = hint.tbl);
ANALYZE sqlite_master;
