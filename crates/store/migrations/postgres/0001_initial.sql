-- carevault schema, version 1 (PostgreSQL). Keep the shape identical to ../sqlite/0001_initial.sql.
-- Every tenant table's primary key starts with tenant_id, so the tables can be distributed by
-- tenant. Tenant-data tables carry row-level security keyed on the transaction-local setting
-- `carevault.tenant`; the server's role (carevault_app, created by the store's `migrate`) cannot
-- bypass it, and cannot update or delete audit records.

-- ---- platform records (no clinical data; read before a tenant scope exists) ----

CREATE TABLE tenants (
    id         uuid   NOT NULL PRIMARY KEY,
    name       text   NOT NULL UNIQUE,
    status     text   NOT NULL CHECK (status IN ('active', 'quarantined')),
    created_ms bigint NOT NULL
);

CREATE TABLE tenant_keys (
    tenant_id  uuid    NOT NULL REFERENCES tenants (id),
    purpose    text    NOT NULL CHECK (purpose IN ('data', 'index')),
    version    bigint  NOT NULL,
    wrapped    bytea   NOT NULL,
    kek_id     text    NOT NULL,
    created_ms bigint  NOT NULL,
    PRIMARY KEY (tenant_id, purpose, version)
);

CREATE TABLE clients (
    id         text   NOT NULL PRIMARY KEY,
    tenant_id  uuid   NOT NULL REFERENCES tenants (id),
    name       text   NOT NULL,
    jwks       text   NOT NULL,
    scopes     text   NOT NULL,
    status     text   NOT NULL CHECK (status IN ('active', 'disabled')),
    created_ms bigint NOT NULL
);
CREATE INDEX clients_by_tenant ON clients (tenant_id, id);

CREATE TABLE client_jti (
    client_id  text   NOT NULL,
    jti        text   NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (client_id, jti)
);
CREATE INDEX client_jti_by_expiry ON client_jti (expires_ms);

CREATE TABLE access_tokens (
    token_hash bytea  NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id  uuid   NOT NULL REFERENCES tenants (id),
    client_id  text   NOT NULL REFERENCES clients (id),
    scopes     text   NOT NULL,
    issued_ms  bigint NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX access_tokens_by_expiry ON access_tokens (expires_ms);

-- ---- tenant data ----

CREATE TABLE resource_versions (
    tenant_id       uuid    NOT NULL REFERENCES tenants (id),
    resource_type   text    NOT NULL,
    id              text    NOT NULL,
    version         bigint  NOT NULL,
    last_updated_ms bigint  NOT NULL,
    deleted         boolean NOT NULL,
    body            bytea   NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, version)
);
CREATE INDEX resource_versions_history
    ON resource_versions (tenant_id, resource_type, last_updated_ms, id, version);

CREATE TABLE resource_current (
    tenant_id       uuid    NOT NULL,
    resource_type   text    NOT NULL,
    id              text    NOT NULL,
    version         bigint  NOT NULL,
    last_updated_ms bigint  NOT NULL,
    deleted         boolean NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id),
    FOREIGN KEY (tenant_id, resource_type, id, version)
        REFERENCES resource_versions (tenant_id, resource_type, id, version)
);
CREATE INDEX resource_current_by_update
    ON resource_current (tenant_id, resource_type, deleted, last_updated_ms, id);

CREATE TABLE search_tokens (
    tenant_id     uuid  NOT NULL,
    resource_type text  NOT NULL,
    id            text  NOT NULL,
    token         bytea NOT NULL CHECK (length(token) = 16),
    PRIMARY KEY (tenant_id, resource_type, id, token)
);
CREATE INDEX search_tokens_by_token ON search_tokens (tenant_id, resource_type, token, id);

CREATE TABLE search_dates (
    tenant_id     uuid   NOT NULL,
    resource_type text   NOT NULL,
    id            text   NOT NULL,
    param         text   NOT NULL,
    low           bigint NOT NULL,
    high          bigint NOT NULL,
    PRIMARY KEY (tenant_id, resource_type, id, param, low, high)
);
CREATE INDEX search_dates_by_low ON search_dates (tenant_id, resource_type, param, low);
CREATE INDEX search_dates_by_high ON search_dates (tenant_id, resource_type, param, high);

CREATE TABLE audit_heads (
    tenant_id uuid   NOT NULL PRIMARY KEY,
    seq       bigint NOT NULL
);

CREATE TABLE audit_log (
    tenant_id uuid   NOT NULL,
    seq       bigint NOT NULL,
    time_ms   bigint NOT NULL,
    action    text   NOT NULL,
    outcome   text   NOT NULL,
    record    text   NOT NULL,
    prev_hash bytea,
    hash      bytea,
    PRIMARY KEY (tenant_id, seq)
);
CREATE INDEX audit_log_by_time ON audit_log (tenant_id, time_ms);

CREATE FUNCTION carevault_refuse_audit_change() RETURNS trigger
LANGUAGE plpgsql AS $$
BEGIN
    RAISE EXCEPTION 'audit records cannot be changed or deleted' USING ERRCODE = 'insufficient_privilege';
END;
$$;

CREATE TRIGGER audit_log_no_update BEFORE UPDATE OR DELETE ON audit_log
    FOR EACH ROW EXECUTE FUNCTION carevault_refuse_audit_change();
CREATE TRIGGER audit_log_no_truncate BEFORE TRUNCATE ON audit_log
    FOR EACH STATEMENT EXECUTE FUNCTION carevault_refuse_audit_change();

-- ---- row-level security: the second wall between tenants ----
-- An unset (NULL) or reset ('') tenant setting matches no row.

ALTER TABLE resource_versions ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_versions FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON resource_versions
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE resource_current ENABLE ROW LEVEL SECURITY;
ALTER TABLE resource_current FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON resource_current
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE search_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_tokens
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE search_dates ENABLE ROW LEVEL SECURITY;
ALTER TABLE search_dates FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON search_dates
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE audit_heads ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_heads FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_heads
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);

ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON audit_log
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);
