-- carevault schema, version 2 (PostgreSQL): people, their factors, sessions, throttling,
-- ceremonies, supplier grants, break-glass, factor resets, security events and home-entry
-- details. Keep the shape identical to ../sqlite/0002_people.sql.
--
-- Everything but home_entry is a platform table: read before a tenant scope exists (sign-in),
-- so it has no row-level security. No column holds a usable secret: passwords are Argon2id PHC
-- strings, TOTP seeds are sealed under the tenant data key, session, invitation and ceremony
-- ids are SHA-256 hashes, recovery codes are hashes, and throttling keys (which name an email
-- or an address) are stored as SHA-256 hashes.
-- `tenant_id` here has no foreign key to `tenants`: supplier staff belong to the platform
-- pseudo-tenant (the nil UUID), which has no row there.

CREATE TABLE people (
    id            uuid   NOT NULL PRIMARY KEY,
    tenant_id     uuid   NOT NULL,
    email         text   NOT NULL UNIQUE,
    display_name  text   NOT NULL,
    roles         text   NOT NULL,
    practitioner  text,
    password_hash text,
    status        text   NOT NULL CHECK (status IN ('active', 'disabled')),
    created_ms    bigint NOT NULL
);
CREATE INDEX people_by_tenant ON people (tenant_id, email);

CREATE TABLE invitations (
    token_hash   bytea  NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id    uuid   NOT NULL,
    email        text   NOT NULL,
    display_name text   NOT NULL,
    roles        text   NOT NULL,
    practitioner text,
    invited_by   text   NOT NULL,
    created_ms   bigint NOT NULL,
    expires_ms   bigint NOT NULL,
    used_ms      bigint
);

CREATE TABLE totp_factors (
    person_id     uuid   NOT NULL PRIMARY KEY REFERENCES people (id),
    sealed_secret bytea  NOT NULL,
    last_step     bigint,
    created_ms    bigint NOT NULL
);

-- A WebAuthn credential id is unique across the platform: one authenticator key, one account.
CREATE TABLE passkeys (
    credential_id text   NOT NULL PRIMARY KEY,
    person_id     uuid   NOT NULL REFERENCES people (id),
    name          text   NOT NULL,
    passkey_json  text   NOT NULL,
    created_ms    bigint NOT NULL,
    last_used_ms  bigint
);
CREATE INDEX passkeys_by_person ON passkeys (person_id, created_ms);

CREATE TABLE recovery_codes (
    person_id  uuid   NOT NULL REFERENCES people (id),
    code_index bigint NOT NULL,
    code_hash  text   NOT NULL,
    used_ms    bigint,
    PRIMARY KEY (person_id, code_index)
);

CREATE TABLE sessions (
    token_hash   bytea   NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    person_id    uuid    NOT NULL REFERENCES people (id),
    tenant_id    uuid    NOT NULL,
    level        text    NOT NULL CHECK (level IN ('enrolment', 'password', 'mfa')),
    factor       text    CHECK (factor IN ('totp', 'recovery-code', 'passkey')),
    created_ms   bigint  NOT NULL,
    last_seen_ms bigint  NOT NULL,
    verified_ms  bigint,
    csrf         text    NOT NULL,
    grant_id     text,
    pending      text,
    revoked      boolean NOT NULL
);
CREATE INDEX sessions_by_person ON sessions (person_id);

CREATE TABLE ceremonies (
    id_hash    bytea  NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
    state      text   NOT NULL,
    expires_ms bigint NOT NULL
);
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_ms);

CREATE TABLE auth_failures (
    id       bigint NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    key_hash bytea  NOT NULL CHECK (length(key_hash) = 32),
    time_ms  bigint NOT NULL
);
CREATE INDEX auth_failures_by_key ON auth_failures (key_hash, time_ms);

CREATE TABLE supplier_grants (
    id           text   NOT NULL PRIMARY KEY,
    tenant_id    uuid   NOT NULL,
    operator_id  uuid   NOT NULL REFERENCES people (id),
    reason       text   NOT NULL,
    duration_ms  bigint NOT NULL,
    status       text   NOT NULL CHECK (status IN ('requested', 'approved', 'refused', 'revoked')),
    requested_ms bigint NOT NULL,
    decided_by   uuid   REFERENCES people (id),
    decided_ms   bigint,
    expires_ms   bigint
);
CREATE INDEX supplier_grants_by_tenant ON supplier_grants (tenant_id, requested_ms);
CREATE INDEX supplier_grants_by_operator ON supplier_grants (operator_id, requested_ms);

CREATE TABLE break_glass (
    tenant_id  uuid   NOT NULL,
    person_id  uuid   NOT NULL REFERENCES people (id),
    patient    text   NOT NULL,
    reason     text   NOT NULL,
    created_ms bigint NOT NULL,
    expires_ms bigint NOT NULL,
    PRIMARY KEY (tenant_id, person_id, patient, created_ms)
);
CREATE INDEX break_glass_by_expiry ON break_glass (tenant_id, person_id, expires_ms);

-- Two administrators: the approver is never the requester.
CREATE TABLE factor_resets (
    id           text   NOT NULL PRIMARY KEY,
    tenant_id    uuid   NOT NULL,
    person_id    uuid   NOT NULL REFERENCES people (id),
    requested_by uuid   NOT NULL REFERENCES people (id),
    requested_ms bigint NOT NULL,
    approved_by  uuid   REFERENCES people (id),
    approved_ms  bigint,
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
);
CREATE INDEX factor_resets_by_tenant ON factor_resets (tenant_id, requested_ms);

-- Append only: the server's role may insert and read, never change or delete.
CREATE TABLE security_events (
    id        bigint NOT NULL GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    tenant_id uuid   NOT NULL,
    time_ms   bigint NOT NULL,
    kind      text   NOT NULL,
    person_id uuid,
    detail    text   NOT NULL
);
CREATE INDEX security_events_by_time ON security_events (tenant_id, time_ms);

-- ---- tenant data ----

-- Home-entry details (key safe codes, access notes), sealed like a resource body; every
-- version is kept.
CREATE TABLE home_entry (
    tenant_id  uuid   NOT NULL REFERENCES tenants (id),
    patient    text   NOT NULL,
    version    bigint NOT NULL,
    updated_ms bigint NOT NULL,
    sealed     bytea  NOT NULL,
    PRIMARY KEY (tenant_id, patient, version)
);

ALTER TABLE home_entry ENABLE ROW LEVEL SECURITY;
ALTER TABLE home_entry FORCE ROW LEVEL SECURITY;
CREATE POLICY tenant_isolation ON home_entry
    USING (tenant_id = NULLIF(current_setting('carevault.tenant', true), '')::uuid);
