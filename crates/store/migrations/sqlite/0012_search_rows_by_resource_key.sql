-- Search rows name their resource by an integer key, and token rows keep only the token, a
-- type code and that key.
--
-- A token row held the tenant id (16 bytes), the type's name (13.6 characters on average), the
-- id (36 characters) and the token: about 98 bytes a row, 3.0 GB of the 8.0 GB file at
-- 100,000 patients, and 60 % of what an import wrote to the WAL. It now holds the token, a
-- type code and the resource's key: about 30 bytes.
--
-- - `resource_current.rkey` is the table's INTEGER PRIMARY KEY (SQLite's rowid, made explicit
--   so that VACUUM never renumbers it). An update keeps its row and so its key; the key
--   outlives a delete (the tombstone's row), so a resource keeps one key for ever.
-- - `resource_types` gives each type name a small code. Blind tokens are made from a
--   parameter name and a term (crypto index_key), not the type, so the code keeps one type's
--   rows apart from another's with the same parameter (`patient`, `status`).
-- - `search_tokens` (token, type_code, rkey): no tenant column. A search joins each token row
--   to `resource_current` by key and checks the tenant and type there, on the row every
--   search reads anyway. Two tenants' tokens differ (each tenant has its own index key), and
--   even equal bytes would not mix: the keys of their resources differ.
-- - `search_dates` is keyed by (rkey, param, low, high); a date-driven search still ranges
--   over (tenant_id, resource_type, param, low) and yields keys.

CREATE TABLE resource_types (
    code INTEGER PRIMARY KEY,
    name TEXT    NOT NULL UNIQUE
) STRICT;
INSERT INTO resource_types (name)
    SELECT DISTINCT resource_type FROM resource_current ORDER BY resource_type;

CREATE TABLE resource_current_v12 (
    rkey            INTEGER PRIMARY KEY,
    tenant_id       BLOB    NOT NULL,
    resource_type   TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    last_updated_ms INTEGER NOT NULL,
    deleted         INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    tokens          BLOB,
    UNIQUE (tenant_id, resource_type, id),
    FOREIGN KEY (tenant_id, resource_type, id, version)
        REFERENCES resource_versions (tenant_id, resource_type, id, version)
) STRICT;
INSERT INTO resource_current_v12
    (tenant_id, resource_type, id, version, last_updated_ms, deleted, tokens)
    SELECT tenant_id, resource_type, id, version, last_updated_ms, deleted, tokens
    FROM resource_current ORDER BY tenant_id, resource_type, id;

CREATE TABLE search_tokens_v12 (
    token     BLOB    NOT NULL CHECK (length(token) = 16),
    type_code INTEGER NOT NULL,
    rkey      INTEGER NOT NULL,
    PRIMARY KEY (token, type_code, rkey)
) STRICT, WITHOUT ROWID;
INSERT INTO search_tokens_v12 (token, type_code, rkey)
    SELECT t.token, types.code, c.rkey
    FROM search_tokens t
    JOIN resource_types types ON types.name = t.resource_type
    JOIN resource_current_v12 c
      ON c.tenant_id = t.tenant_id AND c.resource_type = t.resource_type AND c.id = t.id
    ORDER BY 1, 2, 3;

CREATE TABLE search_dates_v12 (
    rkey          INTEGER NOT NULL,
    param         TEXT    NOT NULL,
    low           INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    tenant_id     BLOB    NOT NULL,
    resource_type TEXT    NOT NULL,
    PRIMARY KEY (rkey, param, low, high)
) STRICT, WITHOUT ROWID;
INSERT INTO search_dates_v12 (rkey, param, low, high, tenant_id, resource_type)
    SELECT c.rkey, d.param, d.low, d.high, d.tenant_id, d.resource_type
    FROM search_dates d
    JOIN resource_current_v12 c
      ON c.tenant_id = d.tenant_id AND c.resource_type = d.resource_type AND c.id = d.id
    ORDER BY 1, 2, 3, 4;

DROP TABLE search_tokens;
DROP TABLE search_dates;
DROP TABLE resource_current;
ALTER TABLE resource_current_v12 RENAME TO resource_current;
ALTER TABLE search_tokens_v12 RENAME TO search_tokens;
ALTER TABLE search_dates_v12 RENAME TO search_dates;

CREATE INDEX resource_current_by_update
    ON resource_current (tenant_id, resource_type, deleted, last_updated_ms, id);
CREATE INDEX search_dates_by_low ON search_dates (tenant_id, resource_type, param, low);
-- Its WHERE clause must stay the expression the queries use (see 0008).
CREATE INDEX search_dates_long ON search_dates (tenant_id, resource_type, param, high)
    WHERE high > low + 31622400000;

-- The planner's shape hints of version 5, for the rebuilt tables (dropping a table drops its
-- statistics): many resources per type, a few per token, about twelve tokens per resource.
DELETE FROM sqlite_stat1 WHERE tbl IN ('resource_current', 'search_tokens', 'search_dates');
INSERT INTO sqlite_stat1 (tbl, idx, stat) VALUES
    ('resource_current', 'sqlite_autoindex_resource_current_1', '1000000 100000 20000 1'),
    ('resource_current', 'resource_current_by_update', '1000000 100000 20000 10000 2 1'),
    ('search_tokens', 'sqlite_autoindex_search_tokens_1', '12000000 3 3 1');
ANALYZE sqlite_master;
