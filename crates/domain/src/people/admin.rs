//! Managing people: invitations (and the first administrator's setup link), accepting one,
//! disabling, changing roles, and resetting factors with a second administrator's approval.

use std::net::IpAddr;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::identity::{Identity, SessionView, SignInError, normalise_email, person_record};
use super::model::{
    FactorResetRecord, InvitationRecord, PersonRecord, PersonStatus, Role, SecurityEvent,
};
use crate::audit::Outcome;
use crate::ids::{PersonId, TenantId};
use crate::store::StoreError;

/// Who is inviting: the operator on the host (CLI) or a signed-in administrator.
pub enum Inviter<'a> {
    Operator,
    Person(&'a SessionView),
}

/// An invitation's secret link token (shown once) and when it expires.
pub struct Invitation {
    pub token: String,
    pub expires_ms: i64,
}

fn token_hash(token: &str) -> [u8; 32] {
    carevault_crypto::sha256(token.as_bytes())
}

fn valid_email(email: &str) -> bool {
    let Some((local, domain)) = email.split_once('@') else {
        return false;
    };
    !local.is_empty()
        && domain.contains('.')
        && email.len() <= 254
        && !email.chars().any(|c| c.is_whitespace() || c.is_control())
}

impl Identity {
    /// Creates a one-time invitation link token. Tenant administrators invite into their own
    /// tenant (any role but supplier staff); the host operator invites anyone, and only the
    /// operator creates supplier staff. `email` may be empty for the first-administrator setup
    /// link (the person enters it when accepting).
    #[allow(clippy::too_many_arguments)]
    pub async fn invite(
        &self,
        inviter: Inviter<'_>,
        tenant: TenantId,
        email: &str,
        display_name: &str,
        roles: &[Role],
        practitioner: Option<&str>,
        lifetime_ms: Option<i64>,
        now_ms: i64,
    ) -> Result<Invitation, SignInError> {
        if roles.is_empty() {
            return Err(SignInError::Invalid("give at least one role".into()));
        }
        let platform_roles = roles.iter().any(|role| role.is_platform());
        if platform_roles && roles.iter().any(|role| !role.is_platform()) {
            return Err(SignInError::Invalid(
                "supplier staff (platform_operator) cannot hold tenant roles too".into(),
            ));
        }
        if platform_roles != tenant.is_platform() {
            return Err(SignInError::Invalid(
                "platform_operator belongs to the platform; other roles belong to a tenant".into(),
            ));
        }
        let invited_by = match &inviter {
            Inviter::Operator => "operator/cli".to_owned(),
            Inviter::Person(view) => {
                let admin =
                    view.person.roles.contains(&Role::TenantAdmin) && view.person.tenant == tenant;
                if !admin || platform_roles {
                    return Err(SignInError::Invalid(
                        "only this tenant's administrators invite people to it".into(),
                    ));
                }
                format!("person/{}", view.person.id)
            }
        };
        if !tenant.is_platform() && self.store.tenant(tenant).await?.is_none() {
            return Err(SignInError::Invalid("no such tenant".into()));
        }
        let email = normalise_email(email);
        if !email.is_empty() && !valid_email(&email) {
            return Err(SignInError::Invalid(
                "enter an email address such as name@example.org".into(),
            ));
        }
        if !email.is_empty() && self.people.person_by_email(&email).await?.is_some() {
            return Err(SignInError::Invalid(
                "someone with that email address already has an account".into(),
            ));
        }
        let secret: [u8; 32] = carevault_crypto::random_bytes();
        let token = format!("cvi_{}", URL_SAFE_NO_PAD.encode(secret));
        let expires_ms = now_ms + lifetime_ms.unwrap_or(self.settings.invitation_ms);
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        self.people
            .create_invitation(&InvitationRecord {
                token_hash: token_hash(&token),
                tenant,
                email,
                display_name: display_name.trim().chars().take(100).collect(),
                roles: roles.clone(),
                practitioner: practitioner
                    .map(|p| format!("Practitioner/{}", p.trim_start_matches("Practitioner/"))),
                invited_by: invited_by.clone(),
                created_ms: now_ms,
                expires_ms,
                used_ms: None,
            })
            .await?;
        let mut record = crate::audit::AuditRecord {
            v: crate::audit::AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms: now_ms,
            tenant,
            principal: invited_by,
            session: None,
            roles: Vec::new(),
            auth_strength: "none".to_owned(),
            source: None,
            action: "person.invite".to_owned(),
            resource_type: None,
            resource_id: None,
            subjects: Vec::new(),
            categories: Vec::new(),
            purpose: None,
            outcome: Outcome::Success,
            detail: Some(super::model::roles_text(&roles)),
        };
        if let Inviter::Person(view) = inviter {
            record.session = Some(view.id());
        }
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)?;
        Ok(Invitation { token, expires_ms })
    }

    /// A valid (unused, unexpired) invitation, for the acceptance page.
    pub async fn invitation(
        &self,
        token: &str,
        now_ms: i64,
    ) -> Result<InvitationRecord, SignInError> {
        self.people
            .invitation(&token_hash(token))
            .await?
            .filter(|invitation| invitation.used_ms.is_none() && invitation.expires_ms > now_ms)
            .ok_or_else(|| {
                SignInError::Invalid(
                    "this invitation link has expired or was already used; ask for a new one"
                        .into(),
                )
            })
    }

    /// Accepts an invitation: sets the password and creates the account (once).
    pub async fn accept_invitation(
        &self,
        token: &str,
        email: &str,
        display_name: &str,
        password: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<PersonRecord, SignInError> {
        let invitation = self.invitation(token, now_ms).await?;
        let email = if invitation.email.is_empty() {
            normalise_email(email)
        } else {
            invitation.email.clone()
        };
        if !valid_email(&email) {
            return Err(SignInError::Invalid(
                "enter an email address such as name@example.org".into(),
            ));
        }
        let display_name = if display_name.trim().is_empty() {
            invitation.display_name.clone()
        } else {
            display_name.trim().chars().take(100).collect()
        };
        if display_name.is_empty() {
            return Err(SignInError::Invalid("enter your name".into()));
        }
        self.credentials
            .check_new_password(password, &[&email, &display_name])
            .map_err(SignInError::Invalid)?;
        let hash = self
            .credentials
            .hash_password(password)
            .map_err(SignInError::Internal)?;
        let person = PersonRecord {
            id: PersonId::generate(),
            tenant: invitation.tenant,
            email,
            display_name,
            roles: invitation.roles.clone(),
            practitioner: invitation.practitioner.clone(),
            password_hash: Some(hash),
            status: PersonStatus::Active,
            created_ms: now_ms,
        };
        match self
            .people
            .accept_invitation(&invitation.token_hash, &person, now_ms)
            .await
        {
            Ok(true) => {}
            Ok(false) => {
                return Err(SignInError::Invalid(
                    "this invitation link was already used".into(),
                ));
            }
            Err(StoreError::Duplicate(_)) => {
                return Err(SignInError::Invalid(
                    "someone with that email address already has an account".into(),
                ));
            }
            Err(other) => return Err(other.into()),
        }
        self.audit_person(
            &person,
            None,
            "person.create",
            Outcome::Success,
            Some(&super::model::roles_text(&person.roles)),
            source,
            now_ms,
        )
        .await?;
        Ok(person)
    }

    fn require_admin_of(&self, view: &SessionView, tenant: TenantId) -> Result<(), SignInError> {
        if view.person.tenant == tenant && view.person.roles.contains(&Role::TenantAdmin) {
            Ok(())
        } else {
            Err(SignInError::Invalid(
                "only this tenant's administrators can do that".into(),
            ))
        }
    }

    async fn person_in(&self, tenant: TenantId, id: PersonId) -> Result<PersonRecord, SignInError> {
        self.people
            .person(id)
            .await?
            .filter(|person| person.tenant == tenant)
            .ok_or_else(|| SignInError::Invalid("no such person in your organisation".into()))
    }

    pub async fn list_people(&self, view: &SessionView) -> Result<Vec<PersonRecord>, SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        Ok(self.people.list_people(view.person.tenant).await?)
    }

    /// Disables (ending every session at once) or re-enables a person.
    pub async fn set_person_status(
        &self,
        view: &SessionView,
        person: PersonId,
        status: PersonStatus,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        let mut target = self.person_in(view.person.tenant, person).await?;
        target.status = status;
        self.people.update_person(&target).await?;
        if status == PersonStatus::Disabled {
            self.people.delete_sessions_of(target.id).await?;
        }
        let action = match status {
            PersonStatus::Active => "person.enable",
            PersonStatus::Disabled => "person.disable",
        };
        self.audit_admin(view, &target, action, source, now_ms)
            .await
    }

    /// Changes someone's roles (step-up). Their sessions end: a privilege change never carries
    /// over an old session id.
    pub async fn set_roles(
        &self,
        view: &SessionView,
        person: PersonId,
        roles: &[Role],
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        self.require_fresh(view, now_ms)?;
        if roles.is_empty() || roles.iter().any(|role| role.is_platform()) {
            return Err(SignInError::Invalid(
                "choose one or more tenant roles".into(),
            ));
        }
        let mut target = self.person_in(view.person.tenant, person).await?;
        let mut roles = roles.to_vec();
        roles.sort();
        roles.dedup();
        target.roles = roles;
        self.people.update_person(&target).await?;
        self.people.delete_sessions_of(target.id).await?;
        self.audit_admin(view, &target, "person.roles", source, now_ms)
            .await
    }

    /// Factor resets of the administrator's tenant awaiting a second administrator.
    pub async fn pending_factor_resets(
        &self,
        view: &SessionView,
    ) -> Result<Vec<FactorResetRecord>, SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        Ok(self
            .people
            .pending_factor_resets(view.person.tenant)
            .await?)
    }

    /// First administrator asks to reset someone's factors (step-up).
    pub async fn request_factor_reset(
        &self,
        view: &SessionView,
        person: PersonId,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<FactorResetRecord, SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        self.require_fresh(view, now_ms)?;
        let target = self.person_in(view.person.tenant, person).await?;
        let reset = FactorResetRecord {
            id: uuid::Uuid::new_v4().to_string(),
            tenant: view.person.tenant,
            person: target.id,
            requested_by: view.person.id,
            requested_ms: now_ms,
            approved_by: None,
            approved_ms: None,
        };
        self.people.create_factor_reset(&reset).await?;
        self.audit_admin(view, &target, "factors.reset-request", source, now_ms)
            .await?;
        Ok(reset)
    }

    /// A second administrator approves (step-up): the person's factors and sessions go, they
    /// are told (a security event and the notification hook), and they must enrol again.
    pub async fn approve_factor_reset(
        &self,
        view: &SessionView,
        reset_id: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        self.require_admin_of(view, view.person.tenant)?;
        self.require_fresh(view, now_ms)?;
        let reset = self
            .people
            .factor_reset(reset_id)
            .await?
            .filter(|reset| reset.tenant == view.person.tenant)
            .ok_or_else(|| SignInError::Invalid("no such reset request".into()))?;
        if reset.requested_by == view.person.id {
            return Err(SignInError::Invalid(
                "a second administrator must approve a reset you requested".into(),
            ));
        }
        if reset.person == view.person.id {
            return Err(SignInError::Invalid(
                "another administrator must approve a reset of your own factors".into(),
            ));
        }
        if !self
            .people
            .approve_factor_reset(reset_id, view.person.id, now_ms)
            .await?
        {
            return Err(SignInError::Invalid(
                "this reset was already approved".into(),
            ));
        }
        let target = self.person_in(view.person.tenant, reset.person).await?;
        self.people.delete_factors(target.id).await?;
        self.people.delete_sessions_of(target.id).await?;
        let event = SecurityEvent {
            tenant: target.tenant,
            time_ms: now_ms,
            kind: "factor-reset".to_owned(),
            person: Some(target.id),
            detail: format!(
                "requested by person/{}, approved by person/{}",
                reset.requested_by, view.person.id
            ),
        };
        self.people.record_security_event(&event).await?;
        self.notifier.notify(&target, &event);
        self.audit_admin(view, &target, "factors.reset", source, now_ms)
            .await
    }

    async fn audit_admin(
        &self,
        view: &SessionView,
        target: &PersonRecord,
        action: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let record = person_record(
            &view.person,
            Some(view.id()),
            action,
            Outcome::Success,
            Some(&format!("person/{}", target.id)),
            source,
            now_ms,
        );
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)
    }
}

/// Tells a person about a security event concerning their account. Later issues deliver
/// these (email, SMS); the default writes a log line with ids only.
pub trait Notifier: Send + Sync {
    fn notify(&self, person: &PersonRecord, event: &SecurityEvent);
}

pub struct LogNotifier;

impl Notifier for LogNotifier {
    fn notify(&self, person: &PersonRecord, event: &SecurityEvent) {
        tracing::warn!(person = %person.id, tenant = %person.tenant, kind = %event.kind, "notification to the person concerned");
    }
}
