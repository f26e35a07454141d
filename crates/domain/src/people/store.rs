//! Storage of people, factors, sessions and grants. Implemented for SQLite and PostgreSQL in
//! `carevault-store` (src/people.rs), next to the resource store.
//!
//! People, sessions and throttling records are platform tables: they are read before a tenant
//! scope exists (sign-in). Home-entry details are tenant data and take a [`TenantScope`].

use async_trait::async_trait;

use super::model::{
    BreakGlassRecord, FactorResetRecord, GrantRecord, HomeEntryRecord, InvitationRecord,
    PasskeyRecord, PersonRecord, RecoveryCodeRecord, SecurityEvent, SessionRecord, TotpRecord,
};
use crate::ids::{PersonId, TenantId};
use crate::principal::TenantScope;
use crate::store::StoreResult;

#[async_trait]
pub trait PeopleStore: Send + Sync {
    // ---- people and invitations ----

    /// Fails with `Duplicate` when the email is taken.
    async fn create_person(&self, person: &PersonRecord) -> StoreResult<()>;
    async fn person(&self, id: PersonId) -> StoreResult<Option<PersonRecord>>;
    async fn person_by_email(&self, email: &str) -> StoreResult<Option<PersonRecord>>;
    async fn list_people(&self, tenant: TenantId) -> StoreResult<Vec<PersonRecord>>;
    /// Replaces display name, roles, practitioner, password hash and status.
    async fn update_person(&self, person: &PersonRecord) -> StoreResult<()>;

    async fn create_invitation(&self, invitation: &InvitationRecord) -> StoreResult<()>;
    async fn invitation(&self, token_hash: &[u8; 32]) -> StoreResult<Option<InvitationRecord>>;
    /// Marks the invitation used and creates the person, atomically. Returns false (and
    /// creates nothing) when it was already used.
    async fn accept_invitation(
        &self,
        token_hash: &[u8; 32],
        person: &PersonRecord,
        now_ms: i64,
    ) -> StoreResult<bool>;

    // ---- factors ----

    async fn totp(&self, person: PersonId) -> StoreResult<Option<TotpRecord>>;
    /// Replaces the person's TOTP factor.
    async fn set_totp(&self, totp: &TotpRecord) -> StoreResult<()>;
    /// Records `step` as used when it is newer than the last used step. False means a replay
    /// (or an older code): the caller must refuse the sign-in.
    async fn use_totp_step(&self, person: PersonId, step: i64) -> StoreResult<bool>;
    async fn remove_totp(&self, person: PersonId) -> StoreResult<bool>;

    async fn passkeys(&self, person: PersonId) -> StoreResult<Vec<PasskeyRecord>>;
    async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<()>;
    async fn update_passkey(
        &self,
        person: PersonId,
        credential_id: &str,
        passkey_json: &str,
        used_ms: i64,
    ) -> StoreResult<()>;
    async fn remove_passkey(&self, person: PersonId, credential_id: &str) -> StoreResult<bool>;

    /// Replaces the person's recovery codes with these hashes (indexes 0..n).
    async fn set_recovery_codes(
        &self,
        person: PersonId,
        hashes: &[String],
        now_ms: i64,
    ) -> StoreResult<()>;
    async fn recovery_codes(&self, person: PersonId) -> StoreResult<Vec<RecoveryCodeRecord>>;
    /// Marks one code used; false when it already was.
    async fn use_recovery_code(
        &self,
        person: PersonId,
        index: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    /// Removes every factor (TOTP, passkeys, recovery codes) of the person.
    async fn delete_factors(&self, person: PersonId) -> StoreResult<()>;

    // ---- sessions ----

    async fn create_session(&self, session: &SessionRecord) -> StoreResult<()>;
    async fn session(&self, token_hash: &[u8; 32]) -> StoreResult<Option<SessionRecord>>;
    /// Replaces level, factor, last_seen, verified, csrf, grant, pending and revoked.
    async fn update_session(&self, session: &SessionRecord) -> StoreResult<()>;
    async fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()>;
    /// Ends every session of the person; returns how many.
    async fn delete_sessions_of(&self, person: PersonId) -> StoreResult<u64>;
    async fn sessions_of(&self, person: PersonId) -> StoreResult<Vec<SessionRecord>>;

    /// Keeps WebAuthn ceremony state (or other short-lived server-side state) under the hash
    /// of a random id until `expires_ms`.
    async fn put_ceremony(
        &self,
        id_hash: &[u8; 32],
        state: &str,
        expires_ms: i64,
    ) -> StoreResult<()>;
    /// Removes and returns the state if it exists and has not expired (one use only).
    async fn take_ceremony(&self, id_hash: &[u8; 32], now_ms: i64) -> StoreResult<Option<String>>;

    // ---- throttling ----

    async fn record_failure(&self, key: &str, time_ms: i64) -> StoreResult<()>;
    /// Times of failures for `key` at or after `since_ms`, oldest first. May prune older rows.
    async fn failures_since(&self, key: &str, since_ms: i64) -> StoreResult<Vec<i64>>;
    async fn clear_failures(&self, key: &str) -> StoreResult<()>;

    // ---- grants, break-glass, factor resets, security events ----

    async fn create_grant(&self, grant: &GrantRecord) -> StoreResult<()>;
    async fn grant(&self, id: &str) -> StoreResult<Option<GrantRecord>>;
    async fn grants_for_tenant(&self, tenant: TenantId) -> StoreResult<Vec<GrantRecord>>;
    async fn grants_of_operator(&self, operator: PersonId) -> StoreResult<Vec<GrantRecord>>;
    /// Replaces status, decided_by, decided_ms and expires_ms.
    async fn update_grant(&self, grant: &GrantRecord) -> StoreResult<()>;

    async fn add_break_glass(&self, record: &BreakGlassRecord) -> StoreResult<()>;
    /// Break-glass records of the person in the tenant that have not expired at `now_ms`.
    async fn active_break_glass(
        &self,
        tenant: TenantId,
        person: PersonId,
        now_ms: i64,
    ) -> StoreResult<Vec<BreakGlassRecord>>;

    async fn create_factor_reset(&self, reset: &FactorResetRecord) -> StoreResult<()>;
    async fn factor_reset(&self, id: &str) -> StoreResult<Option<FactorResetRecord>>;
    async fn pending_factor_resets(&self, tenant: TenantId) -> StoreResult<Vec<FactorResetRecord>>;
    /// Records the approval; false when it was already approved.
    async fn approve_factor_reset(
        &self,
        id: &str,
        approver: PersonId,
        now_ms: i64,
    ) -> StoreResult<bool>;

    async fn record_security_event(&self, event: &SecurityEvent) -> StoreResult<()>;
    async fn security_events(
        &self,
        tenant: TenantId,
        since_ms: i64,
    ) -> StoreResult<Vec<SecurityEvent>>;

    // ---- home-entry details (tenant data, sealed) ----

    /// Stores a new version of a patient's home-entry details.
    async fn put_home_entry(
        &self,
        scope: &TenantScope,
        record: &HomeEntryRecord,
    ) -> StoreResult<()>;
    /// The newest version for the patient.
    async fn home_entry(
        &self,
        scope: &TenantScope,
        patient: &str,
    ) -> StoreResult<Option<HomeEntryRecord>>;
}
