//! The [`PeopleStore`](carevault_domain::people::PeopleStore) implementation, written once and
//! instantiated for each engine by [`implement_people_store!`] (next to `implement_store!`, on
//! the same four engine methods: see `engine.rs`). The SQL is in `people_sql.rs`, the row
//! decoding in `people_rows.rs`.
//!
//! Guarantees:
//! - One-use things are spent by one conditional statement (`UPDATE … WHERE used IS NULL`,
//!   `DELETE … RETURNING`), so two concurrent requests can never both spend an invitation, a
//!   TOTP step, a recovery code, a ceremony or a factor-reset approval.
//! - Accepting an invitation claims it and creates the person in one transaction.
//! - Throttling keys (`account:<email>`, `address:<ip>`) are stored as SHA-256 hashes; every
//!   other secret arrives here already hashed or sealed.
//! - Home-entry details are read and written in a transaction bound to the caller's tenant
//!   (row-level security on PostgreSQL) and every statement names that tenant.

use carevault_domain::ids::PersonId;
use carevault_domain::people::{Role, parse_roles};
use carevault_domain::store::{StoreError, StoreResult};

use crate::engine::corrupt;

/// The stored form of a throttling key: it names an email or an address, so only its hash is
/// kept.
pub(crate) fn failure_key_hash(key: &str) -> Vec<u8> {
    carevault_crypto::sha256(key.as_bytes()).to_vec()
}

/// `PersonId` has no constructor from a `Uuid`; its text form round-trips.
pub(crate) fn person_from_uuid(id: uuid::Uuid) -> StoreResult<PersonId> {
    PersonId::parse(&id.to_string()).ok_or_else(|| corrupt("person id"))
}

pub(crate) fn roles_from(text: &str) -> StoreResult<Vec<Role>> {
    parse_roles(text).ok_or_else(|| corrupt("roles"))
}

pub(crate) fn hash_from(bytes: Vec<u8>, what: &str) -> StoreResult<[u8; 32]> {
    bytes.try_into().map_err(|_| corrupt(what))
}

pub(crate) fn home_entry_conflict(patient: &str) -> StoreError {
    StoreError::Conflict {
        resource_type: "home-entry".to_owned(),
        id: patient.to_owned(),
    }
}

macro_rules! implement_people_store {
    ($store:ty, $db:ty, $row:ty) => {
        mod people_implementation {
            use async_trait::async_trait;
            use carevault_domain::ids::{PersonId, TenantId};
            use carevault_domain::people::{
                BreakGlassRecord, FactorResetRecord, GrantRecord, HomeEntryRecord,
                InvitationRecord, PasskeyRecord, PeopleStore, PersonRecord, RecoveryCodeRecord,
                SecondFactor, SecurityEvent, SessionRecord, TotpRecord, roles_text,
            };
            use carevault_domain::principal::TenantScope;
            use carevault_domain::store::{StoreError, StoreResult};

            use super::*;
            use crate::engine::{backend, duplicate_or_backend, is_unique_violation};
            use crate::people::{failure_key_hash, home_entry_conflict};
            use crate::people_sql as sql;

            crate::people_rows::people_rows!($db, $row);
            use rows::*;

            type Query = sqlx::query::Query<'static, $db, <$db as sqlx::Database>::Arguments>;

            fn insert_person(person: &PersonRecord) -> Query {
                sqlx::query(sql::INSERT_PERSON)
                    .bind(person.id.as_uuid())
                    .bind(person.tenant.as_uuid())
                    .bind(person.email.clone())
                    .bind(person.display_name.clone())
                    .bind(roles_text(&person.roles))
                    .bind(person.practitioner.clone())
                    .bind(person.password_hash.clone())
                    .bind(person.status.as_str())
                    .bind(person.created_ms)
            }

            fn person_duplicate(error: sqlx::Error, person: &PersonRecord) -> StoreError {
                duplicate_or_backend(error, || format!("person {}", person.id))
            }

            #[async_trait]
            impl PeopleStore for $store {
                // ---- people and invitations ----

                async fn create_person(&self, person: &PersonRecord) -> StoreResult<()> {
                    insert_person(person)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| person_duplicate(error, person))
                }

                async fn person(&self, id: PersonId) -> StoreResult<Option<PersonRecord>> {
                    let row = sqlx::query(sql::SELECT_PERSON)
                        .bind(id.as_uuid())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(person_from).transpose()
                }

                async fn person_by_email(&self, email: &str) -> StoreResult<Option<PersonRecord>> {
                    let row = sqlx::query(sql::SELECT_PERSON_BY_EMAIL)
                        .bind(email.to_owned())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(person_from).transpose()
                }

                async fn list_people(&self, tenant: TenantId) -> StoreResult<Vec<PersonRecord>> {
                    let rows = sqlx::query(sql::LIST_PEOPLE)
                        .bind(tenant.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(person_from).collect()
                }

                async fn update_person(&self, person: &PersonRecord) -> StoreResult<()> {
                    sqlx::query(sql::UPDATE_PERSON)
                        .bind(person.id.as_uuid())
                        .bind(person.display_name.clone())
                        .bind(roles_text(&person.roles))
                        .bind(person.practitioner.clone())
                        .bind(person.password_hash.clone())
                        .bind(person.status.as_str())
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn create_invitation(
                    &self,
                    invitation: &InvitationRecord,
                ) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_INVITATION)
                        .bind(invitation.token_hash.to_vec())
                        .bind(invitation.tenant.as_uuid())
                        .bind(invitation.email.clone())
                        .bind(invitation.display_name.clone())
                        .bind(roles_text(&invitation.roles))
                        .bind(invitation.practitioner.clone())
                        .bind(invitation.invited_by.clone())
                        .bind(invitation.created_ms)
                        .bind(invitation.expires_ms)
                        .bind(invitation.used_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| duplicate_or_backend(error, || "invitation".to_owned()))
                }

                async fn invitation(
                    &self,
                    token_hash: &[u8; 32],
                ) -> StoreResult<Option<InvitationRecord>> {
                    let row = sqlx::query(sql::SELECT_INVITATION)
                        .bind(token_hash.to_vec())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(invitation_from).transpose()
                }

                async fn accept_invitation(
                    &self,
                    token_hash: &[u8; 32],
                    person: &PersonRecord,
                    now_ms: i64,
                ) -> StoreResult<bool> {
                    let mut tx = self.begin_write(None).await?;
                    let claimed = sqlx::query(sql::CLAIM_INVITATION)
                        .bind(token_hash.to_vec())
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?
                        .rows_affected();
                    if claimed == 0 {
                        // Used already (or expired, or unknown): dropping rolls back.
                        return Ok(false);
                    }
                    let invitation = sqlx::query(sql::SELECT_INVITATION)
                        .bind(token_hash.to_vec())
                        .fetch_one(&mut *tx)
                        .await
                        .map_err(backend)
                        .and_then(|row| invitation_from(&row))?;
                    // The invitation decides the tenant and the roles; a person built from
                    // anything else is a caller bug that must not grant access.
                    let mut roles = person.roles.clone();
                    roles.sort();
                    roles.dedup();
                    if invitation.tenant != person.tenant || invitation.roles != roles {
                        return Err(StoreError::Backend(
                            "the person does not match the invitation's tenant and roles"
                                .to_owned(),
                        ));
                    }
                    insert_person(person)
                        .execute(&mut *tx)
                        .await
                        .map_err(|error| person_duplicate(error, person))?;
                    tx.commit().await.map_err(backend)?;
                    Ok(true)
                }

                // ---- factors ----

                async fn totp(&self, person: PersonId) -> StoreResult<Option<TotpRecord>> {
                    let row = sqlx::query(sql::SELECT_TOTP)
                        .bind(person.as_uuid())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(totp_from).transpose()
                }

                async fn set_totp(&self, totp: &TotpRecord) -> StoreResult<()> {
                    sqlx::query(sql::UPSERT_TOTP)
                        .bind(totp.person.as_uuid())
                        .bind(totp.sealed_secret.clone())
                        .bind(totp.last_step)
                        .bind(totp.created_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn use_totp_step(&self, person: PersonId, step: i64) -> StoreResult<bool> {
                    let done = sqlx::query(sql::USE_TOTP_STEP)
                        .bind(person.as_uuid())
                        .bind(step)
                        .execute(self.write_pool())
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn remove_totp(&self, person: PersonId) -> StoreResult<bool> {
                    let done = sqlx::query(sql::DELETE_TOTP)
                        .bind(person.as_uuid())
                        .execute(self.write_pool())
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn passkeys(&self, person: PersonId) -> StoreResult<Vec<PasskeyRecord>> {
                    let rows = sqlx::query(sql::SELECT_PASSKEYS)
                        .bind(person.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(passkey_from).collect()
                }

                async fn add_passkey(&self, passkey: &PasskeyRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_PASSKEY)
                        .bind(passkey.credential_id.clone())
                        .bind(passkey.person.as_uuid())
                        .bind(passkey.name.clone())
                        .bind(passkey.passkey_json.clone())
                        .bind(passkey.created_ms)
                        .bind(passkey.last_used_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| {
                            duplicate_or_backend(error, || {
                                format!("passkey {}", passkey.credential_id)
                            })
                        })
                }

                async fn update_passkey(
                    &self,
                    person: PersonId,
                    credential_id: &str,
                    passkey_json: &str,
                    used_ms: i64,
                ) -> StoreResult<()> {
                    sqlx::query(sql::UPDATE_PASSKEY)
                        .bind(person.as_uuid())
                        .bind(credential_id.to_owned())
                        .bind(passkey_json.to_owned())
                        .bind(used_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn remove_passkey(
                    &self,
                    person: PersonId,
                    credential_id: &str,
                ) -> StoreResult<bool> {
                    let done = sqlx::query(sql::DELETE_PASSKEY)
                        .bind(person.as_uuid())
                        .bind(credential_id.to_owned())
                        .execute(self.write_pool())
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() > 0)
                }

                async fn set_recovery_codes(
                    &self,
                    person: PersonId,
                    hashes: &[String],
                    _now_ms: i64,
                ) -> StoreResult<()> {
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(sql::DELETE_RECOVERY_CODES)
                        .bind(person.as_uuid())
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    for (index, hash) in (0_i64..).zip(hashes) {
                        sqlx::query(sql::INSERT_RECOVERY_CODE)
                            .bind(person.as_uuid())
                            .bind(index)
                            .bind(hash.clone())
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)
                }

                async fn recovery_codes(
                    &self,
                    person: PersonId,
                ) -> StoreResult<Vec<RecoveryCodeRecord>> {
                    let rows = sqlx::query(sql::SELECT_RECOVERY_CODES)
                        .bind(person.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(recovery_code_from).collect()
                }

                async fn use_recovery_code(
                    &self,
                    person: PersonId,
                    index: i64,
                    now_ms: i64,
                ) -> StoreResult<bool> {
                    let done = sqlx::query(sql::USE_RECOVERY_CODE)
                        .bind(person.as_uuid())
                        .bind(index)
                        .bind(now_ms)
                        .execute(self.write_pool())
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn delete_factors(&self, person: PersonId) -> StoreResult<()> {
                    let mut tx = self.begin_write(None).await?;
                    for statement in [
                        sql::DELETE_TOTP,
                        sql::DELETE_PASSKEYS,
                        sql::DELETE_RECOVERY_CODES,
                    ] {
                        sqlx::query(statement)
                            .bind(person.as_uuid())
                            .execute(&mut *tx)
                            .await
                            .map_err(backend)?;
                    }
                    tx.commit().await.map_err(backend)
                }

                // ---- sessions ----

                async fn create_session(&self, session: &SessionRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_SESSION)
                        .bind(session.token_hash.to_vec())
                        .bind(session.person.as_uuid())
                        .bind(session.tenant.as_uuid())
                        .bind(session.level.as_str())
                        .bind(session.factor.map(SecondFactor::as_str))
                        .bind(session.created_ms)
                        .bind(session.last_seen_ms)
                        .bind(session.verified_ms)
                        .bind(session.csrf.clone())
                        .bind(session.grant.clone())
                        .bind(session.pending.clone())
                        .bind(session.revoked)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| duplicate_or_backend(error, || "session".to_owned()))
                }

                async fn session(
                    &self,
                    token_hash: &[u8; 32],
                ) -> StoreResult<Option<SessionRecord>> {
                    let row = sqlx::query(sql::SELECT_SESSION)
                        .bind(token_hash.to_vec())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(session_from).transpose()
                }

                async fn update_session(&self, session: &SessionRecord) -> StoreResult<()> {
                    sqlx::query(sql::UPDATE_SESSION)
                        .bind(session.token_hash.to_vec())
                        .bind(session.level.as_str())
                        .bind(session.factor.map(SecondFactor::as_str))
                        .bind(session.last_seen_ms)
                        .bind(session.verified_ms)
                        .bind(session.csrf.clone())
                        .bind(session.grant.clone())
                        .bind(session.pending.clone())
                        .bind(session.revoked)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn delete_session(&self, token_hash: &[u8; 32]) -> StoreResult<()> {
                    sqlx::query(sql::DELETE_SESSION)
                        .bind(token_hash.to_vec())
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn delete_sessions_of(&self, person: PersonId) -> StoreResult<u64> {
                    sqlx::query(sql::DELETE_SESSIONS_OF)
                        .bind(person.as_uuid())
                        .execute(self.write_pool())
                        .await
                        .map(|done| done.rows_affected())
                        .map_err(backend)
                }

                async fn sessions_of(&self, person: PersonId) -> StoreResult<Vec<SessionRecord>> {
                    let rows = sqlx::query(sql::SELECT_SESSIONS_OF)
                        .bind(person.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(session_from).collect()
                }

                async fn put_ceremony(
                    &self,
                    id_hash: &[u8; 32],
                    state: &str,
                    expires_ms: i64,
                ) -> StoreResult<()> {
                    sqlx::query(sql::UPSERT_CEREMONY)
                        .bind(id_hash.to_vec())
                        .bind(state.to_owned())
                        .bind(expires_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn take_ceremony(
                    &self,
                    id_hash: &[u8; 32],
                    now_ms: i64,
                ) -> StoreResult<Option<String>> {
                    let mut tx = self.begin_write(None).await?;
                    let taken = sqlx::query(sql::TAKE_CEREMONY)
                        .bind(id_hash.to_vec())
                        .fetch_optional(&mut *tx)
                        .await
                        .map_err(backend)?;
                    // Abandoned ceremonies go with the next one taken.
                    sqlx::query(sql::PRUNE_CEREMONIES)
                        .bind(now_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    let Some(row) = taken else {
                        return Ok(None);
                    };
                    let state: String = get(&row, 0)?;
                    let expires_ms: i64 = get(&row, 1)?;
                    Ok((now_ms < expires_ms).then_some(state))
                }

                // ---- throttling ----

                async fn record_failure(&self, key: &str, time_ms: i64) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_FAILURE)
                        .bind(failure_key_hash(key))
                        .bind(time_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn failures_since(&self, key: &str, since_ms: i64) -> StoreResult<Vec<i64>> {
                    let key_hash = failure_key_hash(key);
                    let mut tx = self.begin_write(None).await?;
                    sqlx::query(sql::PRUNE_FAILURES)
                        .bind(key_hash.clone())
                        .bind(since_ms)
                        .execute(&mut *tx)
                        .await
                        .map_err(backend)?;
                    let rows = sqlx::query(sql::SELECT_FAILURES)
                        .bind(key_hash)
                        .bind(since_ms)
                        .fetch_all(&mut *tx)
                        .await
                        .map_err(backend)?;
                    tx.commit().await.map_err(backend)?;
                    rows.iter().map(|row| get(row, 0)).collect()
                }

                async fn clear_failures(&self, key: &str) -> StoreResult<()> {
                    sqlx::query(sql::DELETE_FAILURES)
                        .bind(failure_key_hash(key))
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                // ---- grants, break-glass, factor resets, security events ----

                async fn create_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_GRANT)
                        .bind(grant.id.clone())
                        .bind(grant.tenant.as_uuid())
                        .bind(grant.operator.as_uuid())
                        .bind(grant.reason.clone())
                        .bind(grant.duration_ms)
                        .bind(grant.status.as_str())
                        .bind(grant.requested_ms)
                        .bind(grant.decided_by.map(|person| person.as_uuid()))
                        .bind(grant.decided_ms)
                        .bind(grant.expires_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| {
                            duplicate_or_backend(error, || format!("grant {}", grant.id))
                        })
                }

                async fn grant(&self, id: &str) -> StoreResult<Option<GrantRecord>> {
                    let row = sqlx::query(sql::SELECT_GRANT)
                        .bind(id.to_owned())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(grant_from).transpose()
                }

                async fn grants_for_tenant(
                    &self,
                    tenant: TenantId,
                ) -> StoreResult<Vec<GrantRecord>> {
                    let rows = sqlx::query(sql::SELECT_GRANTS_FOR_TENANT)
                        .bind(tenant.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(grant_from).collect()
                }

                async fn grants_of_operator(
                    &self,
                    operator: PersonId,
                ) -> StoreResult<Vec<GrantRecord>> {
                    let rows = sqlx::query(sql::SELECT_GRANTS_OF_OPERATOR)
                        .bind(operator.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(grant_from).collect()
                }

                async fn update_grant(&self, grant: &GrantRecord) -> StoreResult<()> {
                    sqlx::query(sql::UPDATE_GRANT)
                        .bind(grant.id.clone())
                        .bind(grant.status.as_str())
                        .bind(grant.decided_by.map(|person| person.as_uuid()))
                        .bind(grant.decided_ms)
                        .bind(grant.expires_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn add_break_glass(&self, record: &BreakGlassRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_BREAK_GLASS)
                        .bind(record.tenant.as_uuid())
                        .bind(record.person.as_uuid())
                        .bind(record.patient.clone())
                        .bind(record.reason.clone())
                        .bind(record.created_ms)
                        .bind(record.expires_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| {
                            duplicate_or_backend(error, || {
                                format!("break-glass on {}", record.patient)
                            })
                        })
                }

                async fn active_break_glass(
                    &self,
                    tenant: TenantId,
                    person: PersonId,
                    now_ms: i64,
                ) -> StoreResult<Vec<BreakGlassRecord>> {
                    let rows = sqlx::query(sql::SELECT_ACTIVE_BREAK_GLASS)
                        .bind(tenant.as_uuid())
                        .bind(person.as_uuid())
                        .bind(now_ms)
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(break_glass_from).collect()
                }

                async fn create_factor_reset(&self, reset: &FactorResetRecord) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_FACTOR_RESET)
                        .bind(reset.id.clone())
                        .bind(reset.tenant.as_uuid())
                        .bind(reset.person.as_uuid())
                        .bind(reset.requested_by.as_uuid())
                        .bind(reset.requested_ms)
                        .bind(reset.approved_by.map(|person| person.as_uuid()))
                        .bind(reset.approved_ms)
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(|error| {
                            duplicate_or_backend(error, || format!("factor reset {}", reset.id))
                        })
                }

                async fn factor_reset(&self, id: &str) -> StoreResult<Option<FactorResetRecord>> {
                    let row = sqlx::query(sql::SELECT_FACTOR_RESET)
                        .bind(id.to_owned())
                        .fetch_optional(self.read_pool())
                        .await
                        .map_err(backend)?;
                    row.as_ref().map(factor_reset_from).transpose()
                }

                async fn pending_factor_resets(
                    &self,
                    tenant: TenantId,
                ) -> StoreResult<Vec<FactorResetRecord>> {
                    let rows = sqlx::query(sql::SELECT_PENDING_FACTOR_RESETS)
                        .bind(tenant.as_uuid())
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(factor_reset_from).collect()
                }

                async fn approve_factor_reset(
                    &self,
                    id: &str,
                    approver: PersonId,
                    now_ms: i64,
                ) -> StoreResult<bool> {
                    let done = sqlx::query(sql::APPROVE_FACTOR_RESET)
                        .bind(id.to_owned())
                        .bind(approver.as_uuid())
                        .bind(now_ms)
                        .execute(self.write_pool())
                        .await
                        .map_err(backend)?;
                    Ok(done.rows_affected() == 1)
                }

                async fn record_security_event(&self, event: &SecurityEvent) -> StoreResult<()> {
                    sqlx::query(sql::INSERT_SECURITY_EVENT)
                        .bind(event.tenant.as_uuid())
                        .bind(event.time_ms)
                        .bind(event.kind.clone())
                        .bind(event.person.map(|person| person.as_uuid()))
                        .bind(event.detail.clone())
                        .execute(self.write_pool())
                        .await
                        .map(|_| ())
                        .map_err(backend)
                }

                async fn security_events(
                    &self,
                    tenant: TenantId,
                    since_ms: i64,
                ) -> StoreResult<Vec<SecurityEvent>> {
                    let rows = sqlx::query(sql::SELECT_SECURITY_EVENTS)
                        .bind(tenant.as_uuid())
                        .bind(since_ms)
                        .fetch_all(self.read_pool())
                        .await
                        .map_err(backend)?;
                    rows.iter().map(security_event_from).collect()
                }

                // ---- home-entry details ----

                async fn put_home_entry(
                    &self,
                    scope: &TenantScope,
                    record: &HomeEntryRecord,
                ) -> StoreResult<()> {
                    let tenant = scope.tenant();
                    if record.tenant != tenant {
                        return Err(StoreError::Backend(
                            "a home-entry record names another tenant than its scope".to_owned(),
                        ));
                    }
                    let mut tx = self.begin_write(Some(tenant)).await?;
                    sqlx::query(sql::INSERT_HOME_ENTRY)
                        .bind(tenant.as_uuid())
                        .bind(record.patient.clone())
                        .bind(record.version)
                        .bind(record.updated_ms)
                        .bind(record.sealed.clone())
                        .execute(&mut *tx)
                        .await
                        .map_err(|error| {
                            if is_unique_violation(&error) {
                                home_entry_conflict(&record.patient)
                            } else {
                                backend(error)
                            }
                        })?;
                    tx.commit().await.map_err(backend)
                }

                async fn home_entry(
                    &self,
                    scope: &TenantScope,
                    patient: &str,
                ) -> StoreResult<Option<HomeEntryRecord>> {
                    let query = sqlx::query(sql::SELECT_HOME_ENTRY)
                        .bind(scope.tenant().as_uuid())
                        .bind(patient.to_owned());
                    let row = self.read_one(scope.tenant(), query).await?;
                    row.as_ref().map(home_entry_from).transpose()
                }
            }
        }
    };
}

pub(crate) use implement_people_store;
