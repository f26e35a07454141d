-- carevault schema, version 2 (SQLite): people, their factors, sessions, throttling,
-- ceremonies, supplier grants, break-glass, factor resets, security events and home-entry
-- details. Keep the shape identical to ../postgres/0002_people.sql.
--
-- No column holds a usable secret: passwords are Argon2id PHC strings, TOTP seeds are sealed
-- under the tenant data key, session, invitation and ceremony ids are SHA-256 hashes, recovery
-- codes are hashes, and throttling keys (which name an email or an address) are stored as
-- SHA-256 hashes. `tenant_id` here has no foreign key to `tenants`: supplier staff belong to
-- the platform pseudo-tenant (the nil UUID), which has no row there.

CREATE TABLE people (
    id            BLOB    NOT NULL PRIMARY KEY CHECK (length(id) = 16),
    tenant_id     BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    email         TEXT    NOT NULL UNIQUE,
    display_name  TEXT    NOT NULL,
    roles         TEXT    NOT NULL,
    practitioner  TEXT,
    password_hash TEXT,
    status        TEXT    NOT NULL CHECK (status IN ('active', 'disabled')),
    created_ms    INTEGER NOT NULL
) STRICT;
CREATE INDEX people_by_tenant ON people (tenant_id, email);

CREATE TABLE invitations (
    token_hash   BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    tenant_id    BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    email        TEXT    NOT NULL,
    display_name TEXT    NOT NULL,
    roles        TEXT    NOT NULL,
    practitioner TEXT,
    invited_by   TEXT    NOT NULL,
    created_ms   INTEGER NOT NULL,
    expires_ms   INTEGER NOT NULL,
    used_ms      INTEGER
) STRICT;

CREATE TABLE totp_factors (
    person_id     BLOB    NOT NULL PRIMARY KEY REFERENCES people (id),
    sealed_secret BLOB    NOT NULL,
    last_step     INTEGER,
    created_ms    INTEGER NOT NULL
) STRICT;

-- A WebAuthn credential id is unique across the platform: one authenticator key, one account.
CREATE TABLE passkeys (
    credential_id TEXT    NOT NULL PRIMARY KEY,
    person_id     BLOB    NOT NULL REFERENCES people (id),
    name          TEXT    NOT NULL,
    passkey_json  TEXT    NOT NULL,
    created_ms    INTEGER NOT NULL,
    last_used_ms  INTEGER
) STRICT;
CREATE INDEX passkeys_by_person ON passkeys (person_id, created_ms);

CREATE TABLE recovery_codes (
    person_id  BLOB    NOT NULL REFERENCES people (id),
    code_index INTEGER NOT NULL,
    code_hash  TEXT    NOT NULL,
    used_ms    INTEGER,
    PRIMARY KEY (person_id, code_index)
) STRICT;

CREATE TABLE sessions (
    token_hash   BLOB    NOT NULL PRIMARY KEY CHECK (length(token_hash) = 32),
    person_id    BLOB    NOT NULL REFERENCES people (id),
    tenant_id    BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    level        TEXT    NOT NULL CHECK (level IN ('enrolment', 'password', 'mfa')),
    factor       TEXT    CHECK (factor IN ('totp', 'recovery-code', 'passkey')),
    created_ms   INTEGER NOT NULL,
    last_seen_ms INTEGER NOT NULL,
    verified_ms  INTEGER,
    csrf         TEXT    NOT NULL,
    grant_id     TEXT,
    pending      TEXT,
    revoked      INTEGER NOT NULL CHECK (revoked IN (0, 1))
) STRICT;
CREATE INDEX sessions_by_person ON sessions (person_id);

CREATE TABLE ceremonies (
    id_hash    BLOB    NOT NULL PRIMARY KEY CHECK (length(id_hash) = 32),
    state      TEXT    NOT NULL,
    expires_ms INTEGER NOT NULL
) STRICT;
CREATE INDEX ceremonies_by_expiry ON ceremonies (expires_ms);

CREATE TABLE auth_failures (
    id       INTEGER NOT NULL PRIMARY KEY,
    key_hash BLOB    NOT NULL CHECK (length(key_hash) = 32),
    time_ms  INTEGER NOT NULL
) STRICT;
CREATE INDEX auth_failures_by_key ON auth_failures (key_hash, time_ms);

CREATE TABLE supplier_grants (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    operator_id  BLOB    NOT NULL REFERENCES people (id),
    reason       TEXT    NOT NULL,
    duration_ms  INTEGER NOT NULL,
    status       TEXT    NOT NULL CHECK (status IN ('requested', 'approved', 'refused', 'revoked')),
    requested_ms INTEGER NOT NULL,
    decided_by   BLOB    REFERENCES people (id),
    decided_ms   INTEGER,
    expires_ms   INTEGER
) STRICT;
CREATE INDEX supplier_grants_by_tenant ON supplier_grants (tenant_id, requested_ms);
CREATE INDEX supplier_grants_by_operator ON supplier_grants (operator_id, requested_ms);

CREATE TABLE break_glass (
    tenant_id  BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    person_id  BLOB    NOT NULL REFERENCES people (id),
    patient    TEXT    NOT NULL,
    reason     TEXT    NOT NULL,
    created_ms INTEGER NOT NULL,
    expires_ms INTEGER NOT NULL,
    PRIMARY KEY (tenant_id, person_id, patient, created_ms)
) STRICT;
CREATE INDEX break_glass_by_expiry ON break_glass (tenant_id, person_id, expires_ms);

-- Two administrators: the approver is never the requester.
CREATE TABLE factor_resets (
    id           TEXT    NOT NULL PRIMARY KEY,
    tenant_id    BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    person_id    BLOB    NOT NULL REFERENCES people (id),
    requested_by BLOB    NOT NULL REFERENCES people (id),
    requested_ms INTEGER NOT NULL,
    approved_by  BLOB    REFERENCES people (id),
    approved_ms  INTEGER,
    CHECK (approved_by IS NULL OR approved_by <> requested_by)
) STRICT;
CREATE INDEX factor_resets_by_tenant ON factor_resets (tenant_id, requested_ms);

-- Append only.
CREATE TABLE security_events (
    id        INTEGER NOT NULL PRIMARY KEY,
    tenant_id BLOB    NOT NULL CHECK (length(tenant_id) = 16),
    time_ms   INTEGER NOT NULL,
    kind      TEXT    NOT NULL,
    person_id BLOB,
    detail    TEXT    NOT NULL
) STRICT;
CREATE INDEX security_events_by_time ON security_events (tenant_id, time_ms);

CREATE TRIGGER security_events_no_update BEFORE UPDATE ON security_events
BEGIN
    SELECT RAISE(ABORT, 'security events cannot be changed');
END;

CREATE TRIGGER security_events_no_delete BEFORE DELETE ON security_events
BEGIN
    SELECT RAISE(ABORT, 'security events cannot be deleted');
END;

-- ---- tenant data ----

-- Home-entry details (key safe codes, access notes), sealed like a resource body; every
-- version is kept.
CREATE TABLE home_entry (
    tenant_id  BLOB    NOT NULL REFERENCES tenants (id),
    patient    TEXT    NOT NULL,
    version    INTEGER NOT NULL,
    updated_ms INTEGER NOT NULL,
    sealed     BLOB    NOT NULL,
    PRIMARY KEY (tenant_id, patient, version)
) STRICT;
