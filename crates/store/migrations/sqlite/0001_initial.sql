-- carevault schema, version 1 (SQLite). Keep the shape identical to ../postgres/0001_initial.sql.
-- Tenant ids are 16-byte UUID blobs. Every tenant table's primary key starts with tenant_id.

-- ---- platform records (no clinical data; read before a tenant scope exists) ----

CREATE TABLE tenants (
    id         BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    name       TEXT    NOT NULL UNIQUE,
    status     TEXT    NOT NULL CHECK (status IN ('active', 'quarantined')),
    created_ms INTEGER NOT NULL
) STRICT;

CREATE TABLE tenant_keys (
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    purpose    TEXT    NOT NULL CHECK (purpose IN ('data', 'index')),
    version    INTEGER NOT NULL,
    wrapped    BLOB    NOT NULL,
    kek_id     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, purpose, version)
) STRICT;

CREATE TABLE clients (
    id         TEXT    NOT NULL PRIMARY KEY,
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    name       TEXT    NOT NULL,
    jwks       TEXT    NOT NULL,
    scopes     TEXT    NOT NULL,
    status     TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    created_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX clients_by_tenant ON clients (tenant_id, id);

CREATE TABLE client_jti (
    client_id  TEXT    NOT NULL,
    jti        TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (client_id, jti)
) STRICT;
CREATE INDEX client_jti_by_expiry ON client_jti (expires_ms);

CREATE TABLE access_tokens (
    token_hash BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    client_id  TEXT    NOT NULL REFERENCES clients (id),
    scopes     TEXT    NOT NULL,
    issued_ms  INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_ms);

-- ---- tenant data ----

-- Every version of every resource. `body` is sealed (empty for a tombstone).
CREATE TABLE resource_versions (
    tenant_id       BLOB    NOT NULL REFERENCES tenants (id),
    resource_type   TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    last_updated_ms INTEGER NOT NULL,
    deleted         INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    body            BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, version)
) STRICT;
CREATE INDEX resource_versions_history
    ON resource_versions (tenant_id, resource_type, last_updated_ms, id, version);

-- The current version of each resource (tombstones included), so reads and searches never scan
-- old versions.
CREATE TABLE resource_current (
    tenant_id       BLOB    NOT NULL,
    resource_type   TEXT    NOT NULL,
    id              TEXT    NOT NULL,
    version         INTEGER NOT NULL,
    last_updated_ms INTEGER NOT NULL,
    deleted         INTEGER NOT NULL CHECK (deleted IN (0, 1)),
    PRIMARY KEY (tenant_id, resource_type, id),
    FOREIGN KEY (tenant_id, resource_type, id, version)
        REFERENCES resource_versions (tenant_id, resource_type, id, version)
) STRICT;
CREATE INDEX resource_current_by_update
    ON resource_current (tenant_id, resource_type, deleted, last_updated_ms, id);

-- Blind-index tokens of current versions only.
CREATE TABLE search_tokens (
    tenant_id     BLOB NOT NULL,
    resource_type TEXT NOT NULL,
    id            TEXT NOT NULL,
    token         BLOB NOT NULL CHECK (length(token) = 16),
    PRIMARY KEY (tenant_id, resource_type, id, token)
) STRICT;
CREATE INDEX search_tokens_by_token ON search_tokens (tenant_id, resource_type, token, id);

-- Range-searchable dates of current versions only: [low, high) in milliseconds.
CREATE TABLE search_dates (
    tenant_id     BLOB    NOT NULL,
    resource_type TEXT    NOT NULL,
    id            TEXT    NOT NULL,
    param         TEXT    NOT NULL,
    low           INTEGER NOT NULL,
    high          INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, param, low, high)
) STRICT;
CREATE INDEX search_dates_by_low ON search_dates (tenant_id, resource_type, param, low);
CREATE INDEX search_dates_by_high ON search_dates (tenant_id, resource_type, param, high);

-- The last sequence number given out per tenant; updating this row serialises appenders.
CREATE TABLE audit_heads (
    tenant_id BLOB    NOT NULL PRIMARY KEY,
    seq       INTEGER NOT NULL
) STRICT;

-- The audit trail: append only. `record` is the AuditRecord's JSON with `seq` filled in.
-- `prev_hash` and `hash` are reserved for the per-tenant hash chain.
CREATE TABLE audit_log (
    tenant_id BLOB    NOT NULL,
    seq       INTEGER NOT NULL,
    time_ms   INTEGER NOT NULL,
    action    TEXT    NOT NULL,
    outcome   TEXT    NOT NULL,
    record    TEXT    NOT NULL,
    prev_hash BLOB,
    hash      BLOB,
    PRIMARY KEY (tenant_id, seq)
) STRICT;
CREATE INDEX audit_log_by_time ON audit_log (tenant_id, time_ms);

CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be changed');
END;

CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log
BEGIN
    SELECT RAISE(ABORT, 'audit records cannot be deleted');
END;
