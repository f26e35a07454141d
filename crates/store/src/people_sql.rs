//! SQL of the people store, shared by both engines (see `sql.rs` for the dialect rules).
//! Every statement is static text with numbered placeholders.

// ---- people and invitations ----

/// Columns of a person, in the order `person_from` reads them.
macro_rules! person_columns {
    () => {
        "id, tenant_id, email, display_name, roles, practitioner, password_hash, status, created_ms"
    };
}

pub(crate) const INSERT_PERSON: &str = "INSERT INTO people \
     (id, tenant_id, email, display_name, roles, practitioner, password_hash, status, created_ms) \
     VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9)";
pub(crate) const SELECT_PERSON: &str =
    concat!("SELECT ", person_columns!(), " FROM people WHERE id = $1",);
pub(crate) const SELECT_PERSON_BY_EMAIL: &str = concat!(
    "SELECT ",
    person_columns!(),
    " FROM people WHERE email = $1",
);
pub(crate) const LIST_PEOPLE: &str = concat!(
    "SELECT ",
    person_columns!(),
    " FROM people WHERE tenant_id = $1 ORDER BY email, id",
);
pub(crate) const UPDATE_PERSON: &str = "UPDATE people SET display_name = $2, roles = $3, \
     practitioner = $4, password_hash = $5, status = $6 WHERE id = $1";

pub(crate) const INSERT_INVITATION: &str = "INSERT INTO invitations \
     (token_hash, tenant_id, email, display_name, roles, practitioner, invited_by, created_ms, \
      expires_ms, used_ms) VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)";
pub(crate) const SELECT_INVITATION: &str = "SELECT token_hash, tenant_id, email, display_name, \
     roles, practitioner, invited_by, created_ms, expires_ms, used_ms \
     FROM invitations WHERE token_hash = $1";
/// Claims an unused, unexpired invitation; affects no row when it was used (or has expired).
pub(crate) const CLAIM_INVITATION: &str = "UPDATE invitations SET used_ms = $2 \
     WHERE token_hash = $1 AND used_ms IS NULL AND expires_ms > $2";

// ---- factors ----

pub(crate) const SELECT_TOTP: &str = "SELECT person_id, sealed_secret, last_step, created_ms \
     FROM totp_factors WHERE person_id = $1";
pub(crate) const UPSERT_TOTP: &str = "INSERT INTO totp_factors \
     (person_id, sealed_secret, last_step, created_ms) VALUES ($1, $2, $3, $4) \
     ON CONFLICT (person_id) DO UPDATE SET sealed_secret = excluded.sealed_secret, \
       last_step = excluded.last_step, created_ms = excluded.created_ms";
/// Accepts `$2` only when it is newer than every step accepted before: one statement, so two
/// concurrent sign-ins with the same code cannot both succeed.
pub(crate) const USE_TOTP_STEP: &str = "UPDATE totp_factors SET last_step = $2 \
     WHERE person_id = $1 AND (last_step IS NULL OR last_step < $2)";
pub(crate) const DELETE_TOTP: &str = "DELETE FROM totp_factors WHERE person_id = $1";

pub(crate) const SELECT_PASSKEYS: &str = "SELECT person_id, credential_id, name, passkey_json, \
     created_ms, last_used_ms FROM passkeys WHERE person_id = $1 \
     ORDER BY created_ms, credential_id";
pub(crate) const INSERT_PASSKEY: &str = "INSERT INTO passkeys \
     (credential_id, person_id, name, passkey_json, created_ms, last_used_ms) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const UPDATE_PASSKEY: &str = "UPDATE passkeys SET passkey_json = $3, \
     last_used_ms = $4 WHERE person_id = $1 AND credential_id = $2";
pub(crate) const DELETE_PASSKEY: &str =
    "DELETE FROM passkeys WHERE person_id = $1 AND credential_id = $2";
pub(crate) const DELETE_PASSKEYS: &str = "DELETE FROM passkeys WHERE person_id = $1";

pub(crate) const DELETE_RECOVERY_CODES: &str = "DELETE FROM recovery_codes WHERE person_id = $1";
pub(crate) const INSERT_RECOVERY_CODE: &str = "INSERT INTO recovery_codes \
     (person_id, code_index, code_hash, used_ms) VALUES ($1, $2, $3, NULL)";
pub(crate) const SELECT_RECOVERY_CODES: &str = "SELECT person_id, code_index, code_hash, \
     used_ms FROM recovery_codes WHERE person_id = $1 ORDER BY code_index";
/// Spends an unused code; affects no row when it was spent already.
pub(crate) const USE_RECOVERY_CODE: &str = "UPDATE recovery_codes SET used_ms = $3 \
     WHERE person_id = $1 AND code_index = $2 AND used_ms IS NULL";

// ---- sessions and ceremonies ----

macro_rules! session_columns {
    () => {
        "token_hash, person_id, tenant_id, level, factor, created_ms, \
     last_seen_ms, verified_ms, csrf, grant_id, pending, revoked"
    };
}

pub(crate) const INSERT_SESSION: &str = concat!(
    "INSERT INTO sessions (",
    session_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, $11, $12)",
);
pub(crate) const SELECT_SESSION: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE token_hash = $1",
);
pub(crate) const SELECT_SESSIONS_OF: &str = concat!(
    "SELECT ",
    session_columns!(),
    " FROM sessions WHERE person_id = $1 ORDER BY created_ms, token_hash",
);
pub(crate) const UPDATE_SESSION: &str = "UPDATE sessions SET level = $2, factor = $3, \
     last_seen_ms = $4, verified_ms = $5, csrf = $6, grant_id = $7, pending = $8, revoked = $9 \
     WHERE token_hash = $1";
pub(crate) const DELETE_SESSION: &str = "DELETE FROM sessions WHERE token_hash = $1";
pub(crate) const DELETE_SESSIONS_OF: &str = "DELETE FROM sessions WHERE person_id = $1";

pub(crate) const UPSERT_CEREMONY: &str = "INSERT INTO ceremonies (id_hash, state, expires_ms) \
     VALUES ($1, $2, $3) ON CONFLICT (id_hash) DO UPDATE SET state = excluded.state, \
       expires_ms = excluded.expires_ms";
/// Removes the ceremony whatever its expiry, so it can never be used twice.
pub(crate) const TAKE_CEREMONY: &str =
    "DELETE FROM ceremonies WHERE id_hash = $1 RETURNING state, expires_ms";
pub(crate) const PRUNE_CEREMONIES: &str = "DELETE FROM ceremonies WHERE expires_ms <= $1";

// ---- throttling ----

pub(crate) const INSERT_FAILURE: &str =
    "INSERT INTO auth_failures (key_hash, time_ms) VALUES ($1, $2)";
pub(crate) const PRUNE_FAILURES: &str =
    "DELETE FROM auth_failures WHERE key_hash = $1 AND time_ms < $2";
pub(crate) const SELECT_FAILURES: &str = "SELECT time_ms FROM auth_failures \
     WHERE key_hash = $1 AND time_ms >= $2 ORDER BY time_ms, id";
pub(crate) const DELETE_FAILURES: &str = "DELETE FROM auth_failures WHERE key_hash = $1";

// ---- grants, break-glass, factor resets, security events ----

macro_rules! grant_columns {
    () => {
        "id, tenant_id, operator_id, reason, duration_ms, status, \
     requested_ms, decided_by, decided_ms, expires_ms"
    };
}

pub(crate) const INSERT_GRANT: &str = concat!(
    "INSERT INTO supplier_grants (",
    grant_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)",
);
pub(crate) const SELECT_GRANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM supplier_grants WHERE id = $1",
);
pub(crate) const SELECT_GRANTS_FOR_TENANT: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM supplier_grants WHERE tenant_id = $1 ORDER BY requested_ms, id",
);
pub(crate) const SELECT_GRANTS_OF_OPERATOR: &str = concat!(
    "SELECT ",
    grant_columns!(),
    " FROM supplier_grants WHERE operator_id = $1 ORDER BY requested_ms, id",
);
pub(crate) const UPDATE_GRANT: &str = "UPDATE supplier_grants SET status = $2, \
     decided_by = $3, decided_ms = $4, expires_ms = $5 WHERE id = $1";

pub(crate) const INSERT_BREAK_GLASS: &str = "INSERT INTO break_glass \
     (tenant_id, person_id, patient, reason, created_ms, expires_ms) \
     VALUES ($1, $2, $3, $4, $5, $6)";
pub(crate) const SELECT_ACTIVE_BREAK_GLASS: &str = "SELECT tenant_id, person_id, patient, \
     reason, created_ms, expires_ms FROM break_glass \
     WHERE tenant_id = $1 AND person_id = $2 AND expires_ms > $3 \
     ORDER BY created_ms, patient";

macro_rules! factor_reset_columns {
    () => {
        "id, tenant_id, person_id, requested_by, requested_ms, approved_by, approved_ms"
    };
}

pub(crate) const INSERT_FACTOR_RESET: &str = concat!(
    "INSERT INTO factor_resets (",
    factor_reset_columns!(),
    ") VALUES ($1, $2, $3, $4, $5, $6, $7)",
);
pub(crate) const SELECT_FACTOR_RESET: &str = concat!(
    "SELECT ",
    factor_reset_columns!(),
    " FROM factor_resets WHERE id = $1",
);
pub(crate) const SELECT_PENDING_FACTOR_RESETS: &str = concat!(
    "SELECT ",
    factor_reset_columns!(),
    " FROM factor_resets WHERE tenant_id = $1 AND approved_by IS NULL \
      ORDER BY requested_ms, id",
);
/// Records the first approval; affects no row when the reset was approved already.
pub(crate) const APPROVE_FACTOR_RESET: &str = "UPDATE factor_resets SET approved_by = $2, \
     approved_ms = $3 WHERE id = $1 AND approved_by IS NULL";

pub(crate) const INSERT_SECURITY_EVENT: &str = "INSERT INTO security_events \
     (tenant_id, time_ms, kind, person_id, detail) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_SECURITY_EVENTS: &str = "SELECT tenant_id, time_ms, kind, person_id, \
     detail FROM security_events WHERE tenant_id = $1 AND time_ms >= $2 ORDER BY time_ms, id";

// ---- home-entry details (tenant data) ----

pub(crate) const INSERT_HOME_ENTRY: &str = "INSERT INTO home_entry \
     (tenant_id, patient, version, updated_ms, sealed) VALUES ($1, $2, $3, $4, $5)";
pub(crate) const SELECT_HOME_ENTRY: &str = "SELECT tenant_id, patient, version, updated_ms, \
     sealed FROM home_entry WHERE tenant_id = $1 AND patient = $2 \
     ORDER BY version DESC LIMIT 1";

// ---- PostgreSQL privileges ----

/// What the server's role ([`crate::APP_ROLE`]) may do on these tables: append-only for
/// security events and home-entry versions, read and write elsewhere.
pub(crate) const POSTGRES_GRANTS: &str = "GRANT SELECT, INSERT, UPDATE, DELETE ON people, \
       invitations, totp_factors, passkeys, recovery_codes, sessions, ceremonies, \
       auth_failures, supplier_grants, break_glass, factor_resets TO carevault_app; \
     REVOKE ALL ON security_events, home_entry FROM carevault_app; \
     GRANT SELECT, INSERT ON security_events, home_entry TO carevault_app";
