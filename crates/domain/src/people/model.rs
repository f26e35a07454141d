//! People, their factors, sessions, invitations and grants, as stored.
//!
//! Secrets never appear here in a usable form: passwords as Argon2id PHC strings, TOTP seeds
//! sealed with the owner's tenant data key, session and invitation tokens as SHA-256 hashes,
//! recovery codes as hashes.

use crate::ids::{PersonId, TenantId};

#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub enum Role {
    Clinician,
    Carer,
    TenantAdmin,
    SecurityOfficer,
    PlatformOperator,
}

impl Role {
    pub const ALL: [Role; 5] = [
        Role::Clinician,
        Role::Carer,
        Role::TenantAdmin,
        Role::SecurityOfficer,
        Role::PlatformOperator,
    ];

    pub fn as_str(self) -> &'static str {
        match self {
            Role::Clinician => "clinician",
            Role::Carer => "carer",
            Role::TenantAdmin => "tenant_admin",
            Role::SecurityOfficer => "security_officer",
            Role::PlatformOperator => "platform_operator",
        }
    }

    pub fn parse(text: &str) -> Option<Role> {
        Role::ALL.into_iter().find(|role| role.as_str() == text)
    }

    /// Roles that must sign in with a phishing-resistant factor (a passkey).
    pub fn requires_passkey(self) -> bool {
        matches!(
            self,
            Role::TenantAdmin | Role::SecurityOfficer | Role::PlatformOperator
        )
    }

    /// Supplier staff belong to the platform, everyone else to a tenant.
    pub fn is_platform(self) -> bool {
        self == Role::PlatformOperator
    }
}

pub fn roles_text(roles: &[Role]) -> String {
    roles
        .iter()
        .map(|role| role.as_str())
        .collect::<Vec<_>>()
        .join(",")
}

pub fn parse_roles(text: &str) -> Option<Vec<Role>> {
    let mut roles: Vec<Role> = text
        .split(',')
        .filter(|part| !part.trim().is_empty())
        .map(|part| Role::parse(part.trim()))
        .collect::<Option<_>>()?;
    roles.sort();
    roles.dedup();
    (!roles.is_empty()).then_some(roles)
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum PersonStatus {
    Active,
    Disabled,
}

impl PersonStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            PersonStatus::Active => "active",
            PersonStatus::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<PersonStatus> {
        match text {
            "active" => Some(PersonStatus::Active),
            "disabled" => Some(PersonStatus::Disabled),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct PersonRecord {
    pub id: PersonId,
    /// The person's tenant; the platform pseudo-tenant for supplier staff.
    pub tenant: TenantId,
    /// Sign-in name, normalised to lower case; unique across the platform.
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    /// `Practitioner/<id>` in the tenant's records: links a carer to their visits and teams.
    pub practitioner: Option<String>,
    /// Argon2id PHC string; `None` until the invitation is accepted.
    pub password_hash: Option<String>,
    pub status: PersonStatus,
    pub created_ms: i64,
}

/// The password hash is never printed, not even in a debug log line.
impl std::fmt::Debug for PersonRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PersonRecord")
            .field("id", &self.id)
            .field("tenant", &self.tenant)
            .field("roles", &self.roles)
            .field("practitioner", &self.practitioner)
            .field(
                "password_hash",
                &self.password_hash.as_ref().map(|_| "[redacted]"),
            )
            .field("status", &self.status)
            .finish_non_exhaustive()
    }
}

/// An enrolled TOTP factor. The seed is sealed (AEAD) under the person's tenant data key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TotpRecord {
    pub person: PersonId,
    pub sealed_secret: Vec<u8>,
    /// The last time step accepted: each step is accepted once.
    pub last_step: Option<i64>,
    pub created_ms: i64,
}

/// A registered passkey (public key material and counters only).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct PasskeyRecord {
    pub person: PersonId,
    /// Base64url credential id.
    pub credential_id: String,
    pub name: String,
    /// The WebAuthn library's serialised credential (public key, counter, flags).
    pub passkey_json: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct RecoveryCodeRecord {
    pub person: PersonId,
    pub index: i64,
    pub code_hash: String,
    pub used_ms: Option<i64>,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct InvitationRecord {
    pub token_hash: [u8; 32],
    pub tenant: TenantId,
    pub email: String,
    pub display_name: String,
    pub roles: Vec<Role>,
    pub practitioner: Option<String>,
    /// `operator/cli` or `person/<id>` of the inviter.
    pub invited_by: String,
    pub created_ms: i64,
    pub expires_ms: i64,
    pub used_ms: Option<i64>,
}

/// How far a session has proven its holder.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum SessionLevel {
    /// Password proven; no usable second factor enrolled (or the roles need a passkey that
    /// is not enrolled): the session may only enrol.
    Enrolment,
    /// Password proven; the second factor is still to come.
    Password,
    /// Two factors proven (password + TOTP or recovery code, or a passkey with user
    /// verification).
    Mfa,
}

impl SessionLevel {
    pub fn as_str(self) -> &'static str {
        match self {
            SessionLevel::Enrolment => "enrolment",
            SessionLevel::Password => "password",
            SessionLevel::Mfa => "mfa",
        }
    }

    pub fn parse(text: &str) -> Option<SessionLevel> {
        match text {
            "enrolment" => Some(SessionLevel::Enrolment),
            "password" => Some(SessionLevel::Password),
            "mfa" => Some(SessionLevel::Mfa),
            _ => None,
        }
    }
}

/// Which factor completed the sign-in, for the audit trail.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum SecondFactor {
    Totp,
    RecoveryCode,
    Passkey,
}

impl SecondFactor {
    pub fn as_str(self) -> &'static str {
        match self {
            SecondFactor::Totp => "totp",
            SecondFactor::RecoveryCode => "recovery-code",
            SecondFactor::Passkey => "passkey",
        }
    }

    pub fn parse(text: &str) -> Option<SecondFactor> {
        match text {
            "totp" => Some(SecondFactor::Totp),
            "recovery-code" => Some(SecondFactor::RecoveryCode),
            "passkey" => Some(SecondFactor::Passkey),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq)]
pub struct SessionRecord {
    pub token_hash: [u8; 32],
    pub person: PersonId,
    pub tenant: TenantId,
    pub level: SessionLevel,
    pub factor: Option<SecondFactor>,
    pub created_ms: i64,
    pub last_seen_ms: i64,
    /// When a second factor (or passkey) was last proven: step-up needs this to be recent.
    pub verified_ms: Option<i64>,
    /// Anti-forgery token for forms and cookie-authenticated writes.
    pub csrf: String,
    /// For supplier staff: the tenant they act in under an approved grant.
    pub grant: Option<String>,
    /// Server-side ceremony state (WebAuthn challenge) between two requests.
    pub pending: Option<String>,
    pub revoked: bool,
}

/// Token hash, CSRF token and ceremony state are never printed.
impl std::fmt::Debug for SessionRecord {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("SessionRecord")
            .field("person", &self.person)
            .field("tenant", &self.tenant)
            .field("level", &self.level)
            .field("factor", &self.factor)
            .field("created_ms", &self.created_ms)
            .field("last_seen_ms", &self.last_seen_ms)
            .field("verified_ms", &self.verified_ms)
            .field("grant", &self.grant)
            .field("revoked", &self.revoked)
            .finish_non_exhaustive()
    }
}

/// A recorded failure, for throttling (per account and per source address).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FailureRecord {
    /// `account:<email>` or `address:<ip>`.
    pub key: String,
    pub time_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum GrantStatus {
    Requested,
    Approved,
    Refused,
    Revoked,
}

impl GrantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            GrantStatus::Requested => "requested",
            GrantStatus::Approved => "approved",
            GrantStatus::Refused => "refused",
            GrantStatus::Revoked => "revoked",
        }
    }

    pub fn parse(text: &str) -> Option<GrantStatus> {
        match text {
            "requested" => Some(GrantStatus::Requested),
            "approved" => Some(GrantStatus::Approved),
            "refused" => Some(GrantStatus::Refused),
            "revoked" => Some(GrantStatus::Revoked),
            _ => None,
        }
    }
}

/// Supplier access to one tenant: requested by a platform operator, decided by that tenant's
/// administrator, expiring by itself.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct GrantRecord {
    pub id: String,
    pub tenant: TenantId,
    pub operator: PersonId,
    pub reason: String,
    pub duration_ms: i64,
    pub status: GrantStatus,
    pub requested_ms: i64,
    pub decided_by: Option<PersonId>,
    pub decided_ms: Option<i64>,
    /// Set on approval: decided_ms + duration_ms.
    pub expires_ms: Option<i64>,
}

/// Break-glass access by one person to one patient, for a limited time, with a reason.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct BreakGlassRecord {
    pub tenant: TenantId,
    pub person: PersonId,
    pub patient: String,
    pub reason: String,
    pub created_ms: i64,
    pub expires_ms: i64,
}

/// A reset of someone's factors: requested by one administrator, approved by another.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct FactorResetRecord {
    pub id: String,
    pub tenant: TenantId,
    pub person: PersonId,
    pub requested_by: PersonId,
    pub requested_ms: i64,
    pub approved_by: Option<PersonId>,
    pub approved_ms: Option<i64>,
}

/// A security event: something a security officer should see (and, later, be alerted to).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SecurityEvent {
    pub tenant: TenantId,
    pub time_ms: i64,
    /// `second-factor-failed`, `break-glass`, `factor-reset`, `grant-requested`, …
    pub kind: String,
    pub person: Option<PersonId>,
    /// Non-personal detail (ids, counts).
    pub detail: String,
}

/// Home-entry details of one patient's home, sealed like a resource body.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HomeEntryRecord {
    pub tenant: TenantId,
    pub patient: String,
    pub version: i64,
    pub updated_ms: i64,
    pub sealed: Vec<u8>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn debug_output_hides_password_hashes_and_session_secrets() {
        let person = PersonRecord {
            id: PersonId::generate(),
            tenant: TenantId::generate(),
            email: "a@example.org".to_owned(),
            display_name: "A".to_owned(),
            roles: vec![Role::Clinician],
            practitioner: None,
            password_hash: Some("$argon2id$v=19$secret-hash".to_owned()),
            status: PersonStatus::Active,
            created_ms: 0,
        };
        let printed = format!("{person:?}");
        assert!(!printed.contains("secret-hash"), "{printed}");
        let session = SessionRecord {
            token_hash: [42; 32],
            person: person.id,
            tenant: person.tenant,
            level: SessionLevel::Mfa,
            factor: None,
            created_ms: 0,
            last_seen_ms: 0,
            verified_ms: None,
            csrf: "csrf-secret".to_owned(),
            grant: None,
            pending: Some("webauthn-state".to_owned()),
            revoked: false,
        };
        let printed = format!("{session:?}");
        assert!(
            !printed.contains("csrf-secret")
                && !printed.contains("webauthn-state")
                && !printed.contains("42, 42"),
            "{printed}"
        );
    }
}
