//! What a signed-in person may reach: the principal for a session (roles, care relationships,
//! break-glass, supplier grants), and home-entry details.

use std::collections::BTreeSet;
use std::net::IpAddr;

use serde::{Deserialize, Serialize};

use super::identity::{Identity, SessionView, SignInError, person_record, session_id};
use super::model::{
    BreakGlassRecord, GrantRecord, GrantStatus, HomeEntryRecord, Role, SecondFactor, SecurityEvent,
    SessionLevel,
};
use crate::audit::Outcome;
use crate::ids::TenantId;
use crate::principal::{Access, Actor, AuthStrength, PatientReach, Principal, TenantScope};

const DAY_MS: i64 = 86_400_000;

/// Home-entry details: a key-safe code and how to get in. Their own data category.
#[derive(Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct HomeEntryDetails {
    pub key_safe_code: String,
    pub instructions: String,
}

impl std::fmt::Debug for HomeEntryDetails {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("HomeEntryDetails([redacted])")
    }
}

fn home_entry_aad(tenant: TenantId, patient: &str, version: i64) -> Vec<u8> {
    format!("carevault/home-entry/v1|{tenant}|{patient}|{version}").into_bytes()
}

fn is_any(view: &SessionView, roles: &[Role]) -> bool {
    view.person.roles.iter().any(|role| roles.contains(role))
}

impl Identity {
    /// The principal of a fully signed-in session, or `None` for a session that has not
    /// proven two factors (it reaches no data, whatever route it calls).
    pub async fn principal(
        &self,
        view: &SessionView,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Option<Principal>, SignInError> {
        if view.session.level != SessionLevel::Mfa {
            return Ok(None);
        }
        let person = &view.person;
        let strength = match view.session.factor {
            Some(SecondFactor::Passkey) => AuthStrength::Passkey,
            Some(SecondFactor::RecoveryCode) => AuthStrength::PasswordRecoveryCode,
            _ => AuthStrength::PasswordTotp,
        };
        let actor = Actor::Person {
            id: person.id,
            roles: person.roles.clone(),
        };
        let session = Some(view.id());
        // Supplier staff: no standing access; a tenant only under an approved, unexpired grant.
        if person.tenant.is_platform() {
            let grant = match &view.session.grant {
                Some(id) => self.people.grant(id).await?.filter(|grant| {
                    grant.operator == person.id
                        && grant.status == GrantStatus::Approved
                        && grant.expires_ms.is_some_and(|end| end > now_ms)
                }),
                None => None,
            };
            let Some(grant) = grant else {
                return Ok(Some(Principal::new(
                    TenantScope::new(TenantId::platform()),
                    actor,
                    Access::Roles {
                        roles: person.roles.clone(),
                        reach: PatientReach::Only(BTreeSet::new()),
                        grant: None,
                        break_glass: Vec::new(),
                    },
                    strength,
                    session,
                    source,
                )));
            };
            return Ok(Some(Principal::new(
                TenantScope::new(grant.tenant),
                actor,
                Access::Roles {
                    roles: person.roles.clone(),
                    reach: PatientReach::All,
                    grant: Some(grant.id),
                    break_glass: Vec::new(),
                },
                strength,
                session,
                source,
            )));
        }
        let scope = TenantScope::new(person.tenant);
        let break_glass = self
            .people
            .active_break_glass(person.tenant, person.id, now_ms)
            .await?;
        let reach = if person.roles.contains(&Role::Clinician) {
            PatientReach::All
        } else {
            let mut patients: BTreeSet<String> = break_glass
                .iter()
                .map(|record| record.patient.clone())
                .collect();
            if person.roles.contains(&Role::Carer)
                && let Some(practitioner) = &person.practitioner
            {
                let day_start = now_ms - now_ms.rem_euclid(DAY_MS);
                let in_care = self
                    .records
                    .patients_in_care(&scope, practitioner, day_start, day_start + DAY_MS)
                    .await
                    .map_err(|error| SignInError::Internal(error.to_string()))?;
                patients.extend(in_care);
            }
            PatientReach::Only(patients)
        };
        Ok(Some(Principal::new(
            scope,
            actor,
            Access::Roles {
                roles: person.roles.clone(),
                reach,
                grant: None,
                break_glass: break_glass
                    .into_iter()
                    .map(|record| (record.patient, record.reason))
                    .collect(),
            },
            strength,
            session,
            source,
        )))
    }

    /// Break-glass: a clinician or carer opens one patient's record outside their
    /// relationship, with a reason, for a limited time. Needs step-up; raises a security event.
    pub async fn break_glass(
        &self,
        view: &SessionView,
        patient: &str,
        reason: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<i64, SignInError> {
        if !is_any(view, &[Role::Clinician, Role::Carer]) {
            return Err(SignInError::Invalid(
                "only clinicians and carers can use break-glass access".into(),
            ));
        }
        self.require_fresh(view, now_ms)?;
        let reason = reason.trim();
        if reason.chars().count() < 10 {
            return Err(SignInError::Invalid(
                "give the reason for break-glass access in a sentence (at least 10 characters)"
                    .into(),
            ));
        }
        let patient = patient.trim().trim_start_matches("Patient/");
        if crate::ids::ResourceId::parse(patient).is_none() {
            return Err(SignInError::Invalid("that is not a patient id".into()));
        }
        let expires_ms = now_ms + self.settings.break_glass_ms;
        self.people
            .add_break_glass(&BreakGlassRecord {
                tenant: view.person.tenant,
                person: view.person.id,
                patient: patient.to_owned(),
                reason: reason.chars().take(500).collect(),
                created_ms: now_ms,
                expires_ms,
            })
            .await?;
        self.people
            .record_security_event(&SecurityEvent {
                tenant: view.person.tenant,
                time_ms: now_ms,
                kind: "break-glass".to_owned(),
                person: Some(view.person.id),
                detail: format!("Patient/{patient} until {expires_ms}"),
            })
            .await?;
        let mut record = person_record(
            &view.person,
            Some(view.id()),
            "break-glass",
            Outcome::Success,
            None,
            source,
            now_ms,
        );
        record.subjects = vec![patient.to_owned()];
        record.purpose = Some(reason.chars().take(500).collect());
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)?;
        Ok(expires_ms)
    }

    // ---- supplier access ----

    /// A platform operator asks for access to one tenant, with a reason and a duration.
    pub async fn request_grant(
        &self,
        view: &SessionView,
        tenant: TenantId,
        reason: &str,
        duration_ms: i64,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<GrantRecord, SignInError> {
        if !view.person.roles.contains(&Role::PlatformOperator) {
            return Err(SignInError::Invalid(
                "only supplier staff request access grants".into(),
            ));
        }
        if self.store.tenant(tenant).await?.is_none() {
            return Err(SignInError::Invalid("no such tenant".into()));
        }
        let reason = reason.trim();
        if reason.chars().count() < 10 {
            return Err(SignInError::Invalid("give the reason in a sentence".into()));
        }
        if !(60_000..=8 * 3_600_000).contains(&duration_ms) {
            return Err(SignInError::Invalid(
                "a grant lasts from 1 minute to 8 hours".into(),
            ));
        }
        let grant = GrantRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant,
            operator: view.person.id,
            reason: reason.chars().take(500).collect(),
            duration_ms,
            status: GrantStatus::Requested,
            requested_ms: now_ms,
            decided_by: None,
            decided_ms: None,
            expires_ms: None,
        };
        self.people.create_grant(&grant).await?;
        self.people
            .record_security_event(&SecurityEvent {
                tenant,
                time_ms: now_ms,
                kind: "grant-requested".to_owned(),
                person: Some(view.person.id),
                detail: format!("grant {}", grant.id),
            })
            .await?;
        self.audit_grant(view, &grant, "grant.request", source, now_ms)
            .await?;
        Ok(grant)
    }

    /// The tenant's administrator approves or refuses (needs step-up).
    pub async fn decide_grant(
        &self,
        view: &SessionView,
        grant_id: &str,
        approve: bool,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<GrantRecord, SignInError> {
        let mut grant = self
            .people
            .grant(grant_id)
            .await?
            .filter(|grant| grant.tenant == view.person.tenant)
            .ok_or_else(|| SignInError::Invalid("no such grant request".into()))?;
        if !view.person.roles.contains(&Role::TenantAdmin) {
            return Err(SignInError::Invalid(
                "only the tenant's administrators decide grants".into(),
            ));
        }
        self.require_fresh(view, now_ms)?;
        if grant.status != GrantStatus::Requested {
            return Err(SignInError::Invalid(
                "this request was already decided".into(),
            ));
        }
        grant.status = if approve {
            GrantStatus::Approved
        } else {
            GrantStatus::Refused
        };
        grant.decided_by = Some(view.person.id);
        grant.decided_ms = Some(now_ms);
        grant.expires_ms = approve.then_some(now_ms + grant.duration_ms);
        self.people.update_grant(&grant).await?;
        let action = if approve {
            "grant.approve"
        } else {
            "grant.refuse"
        };
        self.audit_grant(view, &grant, action, source, now_ms)
            .await?;
        Ok(grant)
    }

    /// The operator starts acting under an approved grant (rotating nothing: the grant is
    /// re-checked on every request and expires by itself).
    pub async fn use_grant(
        &self,
        view: &SessionView,
        grant_id: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let grant = self
            .people
            .grant(grant_id)
            .await?
            .filter(|grant| {
                grant.operator == view.person.id
                    && grant.status == GrantStatus::Approved
                    && grant.expires_ms.is_some_and(|end| end > now_ms)
            })
            .ok_or_else(|| {
                SignInError::Invalid("no approved, unexpired grant with that id".into())
            })?;
        let mut session = view.session.clone();
        session.grant = Some(grant.id.clone());
        self.people.update_session(&session).await?;
        self.audit_grant(view, &grant, "grant.use", source, now_ms)
            .await
    }

    pub async fn grants_for(&self, view: &SessionView) -> Result<Vec<GrantRecord>, SignInError> {
        if view.person.roles.contains(&Role::PlatformOperator) {
            Ok(self.people.grants_of_operator(view.person.id).await?)
        } else if view.person.roles.contains(&Role::TenantAdmin) {
            Ok(self.people.grants_for_tenant(view.person.tenant).await?)
        } else {
            Ok(Vec::new())
        }
    }

    async fn audit_grant(
        &self,
        view: &SessionView,
        grant: &GrantRecord,
        action: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        // Recorded in the tenant's own trail, whoever acted.
        let mut record = person_record(
            &view.person,
            Some(view.id()),
            action,
            Outcome::Success,
            Some(&format!("grant {}", grant.id)),
            source,
            now_ms,
        );
        record.tenant = grant.tenant;
        record.purpose = Some(grant.reason.clone());
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)
    }

    // ---- home-entry details ----

    /// Records a patient's home-entry details (clinicians: the care coordinators).
    pub async fn put_home_entry(
        &self,
        principal: &Principal,
        patient: &str,
        details: &HomeEntryDetails,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let Actor::Person { roles, .. } = principal.actor() else {
            return Err(SignInError::Invalid(
                "only people record home-entry details".into(),
            ));
        };
        if !roles.contains(&Role::Clinician) || principal.scope().tenant().is_platform() {
            return Err(SignInError::Invalid(
                "only clinicians record home-entry details".into(),
            ));
        }
        if details.key_safe_code.trim().is_empty() && details.instructions.trim().is_empty() {
            return Err(SignInError::Invalid(
                "enter a key-safe code or instructions".into(),
            ));
        }
        let patient = patient.trim_start_matches("Patient/");
        let scope = principal.scope();
        let version = self
            .people
            .home_entry(scope, patient)
            .await?
            .map_or(1, |record| record.version + 1);
        let keys = self.tenant_keys_for(scope.tenant()).await?;
        let plaintext = serde_json::to_vec(details)
            .map_err(|error| SignInError::Internal(error.to_string()))?;
        let sealed = keys
            .sealing_key()
            .seal(
                &home_entry_aad(scope.tenant(), patient, version),
                &plaintext,
            )
            .map_err(|error| SignInError::Internal(error.to_string()))?;
        self.people
            .put_home_entry(
                scope,
                &HomeEntryRecord {
                    tenant: scope.tenant(),
                    patient: patient.to_owned(),
                    version,
                    updated_ms: now_ms,
                    sealed,
                },
            )
            .await?;
        self.audit_home_entry(principal, patient, "home-entry.write", now_ms)
            .await
    }

    /// Reveals one home's entry details to a carer who visits the patient today (or under
    /// break-glass), after step-up. Each reveal is audited under the `home-entry` category.
    pub async fn reveal_home_entry(
        &self,
        view: &SessionView,
        principal: &Principal,
        patient: &str,
        now_ms: i64,
    ) -> Result<HomeEntryDetails, SignInError> {
        let patient = patient.trim_start_matches("Patient/").to_owned();
        let scope = principal.scope();
        let Access::Roles { break_glass, .. } = principal.access() else {
            return Err(SignInError::Invalid(
                "only people reveal home-entry details".into(),
            ));
        };
        let under_break_glass = break_glass.iter().any(|(p, _)| p == &patient);
        let visiting_today = match (
            &view.person.practitioner,
            view.person.roles.contains(&Role::Carer),
        ) {
            (Some(practitioner), true) => {
                let day_start = now_ms - now_ms.rem_euclid(DAY_MS);
                self.records
                    .patients_on_visit_list(scope, practitioner, day_start, day_start + DAY_MS)
                    .await
                    .map_err(|error| SignInError::Internal(error.to_string()))?
                    .contains(&patient)
            }
            _ => false,
        };
        if !(visiting_today || under_break_glass) {
            // Indistinguishable from a patient with no details recorded.
            self.audit_home_entry_refusal(view, principal, &patient, now_ms)
                .await?;
            return Err(SignInError::Invalid(
                "no home-entry details for you here".into(),
            ));
        }
        self.require_fresh(view, now_ms)?;
        let record = self.people.home_entry(scope, &patient).await?;
        let Some(record) = record else {
            return Err(SignInError::Invalid(
                "no home-entry details for you here".into(),
            ));
        };
        let keys = self.tenant_keys_for(scope.tenant()).await?;
        let details = carevault_crypto::sealed_key_version(&record.sealed)
            .ok()
            .and_then(|version| keys.data_key(version))
            .and_then(|key| {
                key.open(
                    &home_entry_aad(scope.tenant(), &patient, record.version),
                    &record.sealed,
                )
                .ok()
            })
            .and_then(|plaintext| serde_json::from_slice::<HomeEntryDetails>(&plaintext).ok())
            .ok_or_else(|| {
                tracing::error!(tenant = %scope.tenant(), patient = %patient, "integrity failure: home-entry details did not open");
                SignInError::Internal("stored home-entry details failed their integrity check".into())
            })?;
        self.audit_home_entry(principal, &patient, "home-entry.reveal", now_ms)
            .await?;
        Ok(details)
    }

    async fn tenant_keys_for(
        &self,
        tenant: TenantId,
    ) -> Result<std::sync::Arc<crate::keyring::TenantKeys>, SignInError> {
        self.keyring
            .keys(tenant)
            .await
            .map_err(|error| SignInError::Internal(error.to_string()))
    }

    async fn audit_home_entry(
        &self,
        principal: &Principal,
        patient: &str,
        action: &str,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let about = crate::records::AuditSubject {
            action,
            resource_type: None,
            resource_id: None,
        };
        let subjects = vec![patient.to_owned()];
        let record = crate::records::audit_record(
            principal,
            &about,
            subjects,
            vec!["home-entry".to_owned()],
            Outcome::Success,
            None,
            now_ms,
        );
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)
    }

    async fn audit_home_entry_refusal(
        &self,
        view: &SessionView,
        principal: &Principal,
        patient: &str,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let mut record = person_record(
            &view.person,
            Some(session_id(&view.session.token_hash)),
            "home-entry.reveal",
            Outcome::Denied,
            None,
            principal.source(),
            now_ms,
        );
        record.subjects = vec![patient.to_owned()];
        record.categories = vec!["home-entry".to_owned()];
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)
    }
}
