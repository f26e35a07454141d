//! Row decoding for the people store, per engine: one function per record, reading the
//! columns in the order `people_sql.rs` selects them. Expanded inside
//! `implement_people_store!`.

macro_rules! people_rows {
    ($db:ty, $row:ty) => {
        mod rows {
            use carevault_domain::ids::{PersonId, TenantId};
            use carevault_domain::people::{
                BreakGlassRecord, FactorResetRecord, GrantRecord, GrantStatus, HomeEntryRecord,
                InvitationRecord, PasskeyRecord, PersonRecord, PersonStatus, RecoveryCodeRecord,
                SecondFactor, SecurityEvent, SessionLevel, SessionRecord, TotpRecord,
            };
            use carevault_domain::store::StoreResult;
            use sqlx::Row;

            use super::super::*;
            use crate::engine::{backend, corrupt};
            use crate::people::{hash_from, person_from_uuid, roles_from};

            pub(super) fn get<T>(row: &$row, index: usize) -> StoreResult<T>
            where
                T: for<'r> sqlx::Decode<'r, $db> + sqlx::Type<$db>,
            {
                row.try_get(index).map_err(backend)
            }

            fn person_id(row: &$row, index: usize) -> StoreResult<PersonId> {
                person_from_uuid(get(row, index)?)
            }

            fn optional_person_id(row: &$row, index: usize) -> StoreResult<Option<PersonId>> {
                let id: Option<uuid::Uuid> = get(row, index)?;
                id.map(person_from_uuid).transpose()
            }

            fn tenant_id(row: &$row, index: usize) -> StoreResult<TenantId> {
                Ok(TenantId::from_uuid(get(row, index)?))
            }

            /// Reads the columns of `person_columns!`.
            pub(super) fn person_from(row: &$row) -> StoreResult<PersonRecord> {
                let roles: String = get(row, 4)?;
                let status: String = get(row, 7)?;
                Ok(PersonRecord {
                    id: person_id(row, 0)?,
                    tenant: tenant_id(row, 1)?,
                    email: get(row, 2)?,
                    display_name: get(row, 3)?,
                    roles: roles_from(&roles)?,
                    practitioner: get(row, 5)?,
                    password_hash: get(row, 6)?,
                    status: PersonStatus::parse(&status).ok_or_else(|| corrupt("person status"))?,
                    created_ms: get(row, 8)?,
                })
            }

            pub(super) fn invitation_from(row: &$row) -> StoreResult<InvitationRecord> {
                let roles: String = get(row, 4)?;
                Ok(InvitationRecord {
                    token_hash: hash_from(get(row, 0)?, "invitation hash")?,
                    tenant: tenant_id(row, 1)?,
                    email: get(row, 2)?,
                    display_name: get(row, 3)?,
                    roles: roles_from(&roles)?,
                    practitioner: get(row, 5)?,
                    invited_by: get(row, 6)?,
                    created_ms: get(row, 7)?,
                    expires_ms: get(row, 8)?,
                    used_ms: get(row, 9)?,
                })
            }

            pub(super) fn totp_from(row: &$row) -> StoreResult<TotpRecord> {
                Ok(TotpRecord {
                    person: person_id(row, 0)?,
                    sealed_secret: get(row, 1)?,
                    last_step: get(row, 2)?,
                    created_ms: get(row, 3)?,
                })
            }

            pub(super) fn passkey_from(row: &$row) -> StoreResult<PasskeyRecord> {
                Ok(PasskeyRecord {
                    person: person_id(row, 0)?,
                    credential_id: get(row, 1)?,
                    name: get(row, 2)?,
                    passkey_json: get(row, 3)?,
                    created_ms: get(row, 4)?,
                    last_used_ms: get(row, 5)?,
                })
            }

            pub(super) fn recovery_code_from(row: &$row) -> StoreResult<RecoveryCodeRecord> {
                Ok(RecoveryCodeRecord {
                    person: person_id(row, 0)?,
                    index: get(row, 1)?,
                    code_hash: get(row, 2)?,
                    used_ms: get(row, 3)?,
                })
            }

            /// Reads the columns of `session_columns!`.
            pub(super) fn session_from(row: &$row) -> StoreResult<SessionRecord> {
                let level: String = get(row, 3)?;
                let factor: Option<String> = get(row, 4)?;
                Ok(SessionRecord {
                    token_hash: hash_from(get(row, 0)?, "session hash")?,
                    person: person_id(row, 1)?,
                    tenant: tenant_id(row, 2)?,
                    level: SessionLevel::parse(&level).ok_or_else(|| corrupt("session level"))?,
                    factor: factor
                        .map(|factor| {
                            SecondFactor::parse(&factor).ok_or_else(|| corrupt("session factor"))
                        })
                        .transpose()?,
                    created_ms: get(row, 5)?,
                    last_seen_ms: get(row, 6)?,
                    verified_ms: get(row, 7)?,
                    csrf: get(row, 8)?,
                    grant: get(row, 9)?,
                    pending: get(row, 10)?,
                    revoked: get(row, 11)?,
                })
            }

            /// Reads the columns of `grant_columns!`.
            pub(super) fn grant_from(row: &$row) -> StoreResult<GrantRecord> {
                let status: String = get(row, 5)?;
                Ok(GrantRecord {
                    id: get(row, 0)?,
                    tenant: tenant_id(row, 1)?,
                    operator: person_id(row, 2)?,
                    reason: get(row, 3)?,
                    duration_ms: get(row, 4)?,
                    status: GrantStatus::parse(&status).ok_or_else(|| corrupt("grant status"))?,
                    requested_ms: get(row, 6)?,
                    decided_by: optional_person_id(row, 7)?,
                    decided_ms: get(row, 8)?,
                    expires_ms: get(row, 9)?,
                })
            }

            pub(super) fn break_glass_from(row: &$row) -> StoreResult<BreakGlassRecord> {
                Ok(BreakGlassRecord {
                    tenant: tenant_id(row, 0)?,
                    person: person_id(row, 1)?,
                    patient: get(row, 2)?,
                    reason: get(row, 3)?,
                    created_ms: get(row, 4)?,
                    expires_ms: get(row, 5)?,
                })
            }

            /// Reads the columns of `factor_reset_columns!`.
            pub(super) fn factor_reset_from(row: &$row) -> StoreResult<FactorResetRecord> {
                Ok(FactorResetRecord {
                    id: get(row, 0)?,
                    tenant: tenant_id(row, 1)?,
                    person: person_id(row, 2)?,
                    requested_by: person_id(row, 3)?,
                    requested_ms: get(row, 4)?,
                    approved_by: optional_person_id(row, 5)?,
                    approved_ms: get(row, 6)?,
                })
            }

            pub(super) fn security_event_from(row: &$row) -> StoreResult<SecurityEvent> {
                Ok(SecurityEvent {
                    tenant: tenant_id(row, 0)?,
                    time_ms: get(row, 1)?,
                    kind: get(row, 2)?,
                    person: optional_person_id(row, 3)?,
                    detail: get(row, 4)?,
                })
            }

            pub(super) fn home_entry_from(row: &$row) -> StoreResult<HomeEntryRecord> {
                Ok(HomeEntryRecord {
                    tenant: tenant_id(row, 0)?,
                    patient: get(row, 1)?,
                    version: get(row, 2)?,
                    updated_ms: get(row, 3)?,
                    sealed: get(row, 4)?,
                })
            }
        }
    };
}

pub(crate) use people_rows;
