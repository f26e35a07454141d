//! Who is asking, the tenant they are bound to, and what they may reach.
//!
//! A [`TenantScope`] is a proof value: only this crate's authentication code can build one
//! (after checking a token or a session), and every store method takes one. So no code path
//! reaches tenant data with a tenant id that came from a request.

use std::collections::BTreeSet;
use std::net::IpAddr;

use crate::ids::{ClientId, PersonId, TenantId};
use crate::people::Role;
use crate::scopes::{Interaction, ScopeSet};

/// Proof that the holder was authenticated into exactly one tenant.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TenantScope {
    tenant: TenantId,
}

impl TenantScope {
    pub(crate) fn new(tenant: TenantId) -> TenantScope {
        TenantScope { tenant }
    }

    pub fn tenant(&self) -> TenantId {
        self.tenant
    }
}

/// How strongly the principal proved who they are. Recorded in every audit record.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum AuthStrength {
    /// A machine client's asymmetric key (SMART Backend Services assertion).
    ClientKey,
    /// The operator on the host, holding the data directory and its key files.
    HostOperator,
    /// Password, then a TOTP code.
    PasswordTotp,
    /// Password, then a single-use recovery code.
    PasswordRecoveryCode,
    /// A passkey with user verification (two factors in one phishing-resistant step).
    Passkey,
}

impl AuthStrength {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStrength::ClientKey => "client-key",
            AuthStrength::HostOperator => "host-operator",
            AuthStrength::PasswordTotp => "password+totp",
            AuthStrength::PasswordRecoveryCode => "password+recovery-code",
            AuthStrength::Passkey => "passkey",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Actor {
    Client { id: ClientId, name: String },
    Person { id: PersonId, roles: Vec<Role> },
    Operator,
}

impl Actor {
    /// The audit trail's name for the actor: a kind and an id, never a person's name.
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Client { id, .. } => format!("client/{id}"),
            Actor::Person { id, .. } => format!("person/{id}"),
            Actor::Operator => "operator/cli".to_owned(),
        }
    }

    pub fn roles(&self) -> Vec<String> {
        match self {
            Actor::Client { .. } => vec!["integration".to_owned()],
            Actor::Person { roles, .. } => roles.iter().map(|r| r.as_str().to_owned()).collect(),
            Actor::Operator => vec!["platform_operator".to_owned()],
        }
    }
}

/// Which patients a person's records access reaches.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum PatientReach {
    /// Every patient of the tenant (clinicians; supplier staff under a grant, read-only).
    All,
    /// Only these patient ids (carers: their care teams and today's visits, plus break-glass).
    Only(BTreeSet<String>),
}

/// What a principal may do with records.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Access {
    /// A machine client: SMART v2 scopes, all patients of the tenant.
    Scopes(ScopeSet),
    /// A person: interactions by role, patients by relationship.
    Roles {
        roles: Vec<Role>,
        reach: PatientReach,
        /// The supplier grant this access rests on, if any (recorded in every audit record).
        grant: Option<String>,
        /// Break-glass reasons in force for some patients (recorded as the purpose).
        break_glass: Vec<(String, String)>,
    },
}

/// Types a carer may write when recording a visit.
const VISIT_RECORD_TYPES: [&str; 4] = ["Encounter", "Observation", "DocumentReference", "Flag"];

impl Access {
    /// Whether this access allows the interaction on the type at all (before any relationship
    /// check). Roles: clinicians read and write everything; carers read, search, and record
    /// visits; administrators and security officers reach no records; supplier staff only
    /// read and search, and only under an approved grant.
    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        match self {
            Access::Scopes(scopes) => scopes.allows(resource_type, interaction),
            Access::Roles { roles, grant, .. } => roles.iter().any(|role| match role {
                Role::Clinician => true,
                Role::Carer => match interaction {
                    Interaction::Read | Interaction::Search => true,
                    Interaction::Create | Interaction::Update => {
                        VISIT_RECORD_TYPES.contains(&resource_type)
                    }
                    Interaction::Delete => false,
                },
                Role::PlatformOperator => {
                    grant.is_some()
                        && matches!(interaction, Interaction::Read | Interaction::Search)
                }
                Role::TenantAdmin | Role::SecurityOfficer => false,
            }),
        }
    }

    /// Whether a resource about these patients is within reach. Resources about no patient
    /// (practitioners, organisations, locations) are within reach of anyone allowed the type.
    pub fn reaches(&self, subjects: &[String]) -> bool {
        match self {
            Access::Scopes(_) => true,
            Access::Roles { reach, .. } => match reach {
                PatientReach::All => true,
                PatientReach::Only(allowed) => {
                    subjects.is_empty() || subjects.iter().any(|subject| allowed.contains(subject))
                }
            },
        }
    }

    /// For writes: every patient the new version is about must be within reach.
    pub fn reaches_all(&self, subjects: &[String]) -> bool {
        match self {
            Access::Scopes(_) => true,
            Access::Roles { reach, .. } => match reach {
                PatientReach::All => true,
                PatientReach::Only(allowed) => {
                    !subjects.is_empty() && subjects.iter().all(|subject| allowed.contains(subject))
                }
            },
        }
    }

    /// True when only some patients are within reach (so every resource must be checked).
    pub fn is_restricted(&self) -> bool {
        matches!(
            self,
            Access::Roles {
                reach: PatientReach::Only(_),
                ..
            }
        )
    }

    /// The purpose to record for access to these patients (a break-glass reason, or the
    /// supplier grant).
    pub fn purpose_for(&self, subjects: &[String]) -> Option<String> {
        match self {
            Access::Scopes(_) => None,
            Access::Roles {
                grant, break_glass, ..
            } => {
                let reasons: Vec<String> = break_glass
                    .iter()
                    .filter(|(patient, _)| subjects.contains(patient))
                    .map(|(patient, reason)| format!("break-glass Patient/{patient}: {reason}"))
                    .collect();
                if !reasons.is_empty() {
                    Some(reasons.join("; "))
                } else {
                    grant
                        .as_ref()
                        .map(|grant| format!("supplier grant {grant}"))
                }
            }
        }
    }
}

/// An authenticated caller: the proof of tenant, who, what they may do, and from where.
#[derive(Clone, Debug)]
pub struct Principal {
    scope: TenantScope,
    actor: Actor,
    access: Access,
    strength: AuthStrength,
    /// Short, non-secret id of the token or session (for the audit trail and revocation).
    session: Option<String>,
    source: Option<IpAddr>,
}

impl Principal {
    pub(crate) fn new(
        scope: TenantScope,
        actor: Actor,
        access: Access,
        strength: AuthStrength,
        session: Option<String>,
        source: Option<IpAddr>,
    ) -> Principal {
        Principal {
            scope,
            actor,
            access,
            strength,
            session,
            source,
        }
    }

    pub fn scope(&self) -> &TenantScope {
        &self.scope
    }

    pub fn actor(&self) -> &Actor {
        &self.actor
    }

    pub fn access(&self) -> &Access {
        &self.access
    }

    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.access.allows(resource_type, interaction)
    }

    pub fn strength(&self) -> AuthStrength {
        self.strength
    }

    pub fn session(&self) -> Option<&str> {
        self.session.as_deref()
    }

    pub fn source(&self) -> Option<IpAddr> {
        self.source
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn person(roles: Vec<Role>, reach: PatientReach, grant: Option<&str>) -> Access {
        Access::Roles {
            roles,
            reach,
            grant: grant.map(str::to_owned),
            break_glass: Vec::new(),
        }
    }

    #[test]
    fn roles_reach_what_the_design_says() {
        let clinician = person(vec![Role::Clinician], PatientReach::All, None);
        assert!(clinician.allows("Patient", Interaction::Delete));
        let admin = person(
            vec![Role::TenantAdmin, Role::SecurityOfficer],
            PatientReach::All,
            None,
        );
        for interaction in Interaction::ALL {
            assert!(!admin.allows("Patient", interaction));
            assert!(!admin.allows("Observation", interaction));
        }
        let carer = person(
            vec![Role::Carer],
            PatientReach::Only(["p1".to_owned()].into()),
            None,
        );
        assert!(carer.allows("Patient", Interaction::Read));
        assert!(carer.allows("Encounter", Interaction::Create));
        assert!(!carer.allows("Patient", Interaction::Create));
        assert!(!carer.allows("Encounter", Interaction::Delete));
        assert!(carer.reaches(&["p1".to_owned()]));
        assert!(!carer.reaches(&["p2".to_owned()]));
        assert!(!carer.reaches_all(&["p1".to_owned(), "p2".to_owned()]));
        assert!(
            !carer.reaches_all(&[]),
            "a carer cannot write records about nobody"
        );
        let operator = person(vec![Role::PlatformOperator], PatientReach::All, None);
        assert!(!operator.allows("Patient", Interaction::Read));
        let granted = person(vec![Role::PlatformOperator], PatientReach::All, Some("g1"));
        assert!(granted.allows("Patient", Interaction::Read));
        assert!(!granted.allows("Patient", Interaction::Update));
    }
}
