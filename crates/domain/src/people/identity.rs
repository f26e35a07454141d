//! Sign-in, second factors, enrolment, sessions and step-up.
//!
//! The rules (promise 1): a person reaches data only with two factors. A session starts at
//! `Password` (second factor to come) or `Enrolment` (nothing usable enrolled: it may only
//! enrol); only `Mfa` sessions yield a [`Principal`]. Roles that need a phishing-resistant
//! factor (administrators, security officers, supplier staff) reach `Mfa` only with a passkey.
//! Every failure answers the same whether or not the account exists; a correct password
//! followed by a failed second factor is a security event.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use super::credentials::Credentials;
use super::model::{
    PersonRecord, PersonStatus, Role, SecondFactor, SecurityEvent, SessionLevel, SessionRecord,
    TotpRecord,
};
use super::settings::IdentitySettings;
use super::store::PeopleStore;
use super::throttle::ThrottlePolicy;
use crate::audit::{AUDIT_RECORD_VERSION, AuditRecord, AuditTrail, Outcome};
use crate::ids::{PersonId, TenantId};
use crate::keyring::Keyring;
use crate::store::{Store, StoreError, TenantStatus};

#[derive(Debug, thiserror::Error)]
pub enum SignInError {
    /// Wrong email, password or code — deliberately the same for every cause.
    #[error("the details you entered are not right")]
    Refused,
    /// Too many recent failures: try again after this many milliseconds.
    #[error("too many attempts; try again in {0} ms")]
    Throttled(i64),
    /// This person's roles need a passkey: TOTP and recovery codes do not complete sign-in.
    #[error("your role needs a passkey to sign in")]
    PasskeyRequired,
    /// The session is missing, expired, revoked or at the wrong step.
    #[error("the sign-in session has ended; start again")]
    SessionEnded,
    /// A sensitive action needs the second factor again.
    #[error("confirm it is you with your second factor first")]
    StepUpRequired,
    #[error("{0}")]
    Invalid(String),
    #[error("the audit trail could not be written")]
    AuditUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for SignInError {
    fn from(error: StoreError) -> SignInError {
        SignInError::Internal(error.to_string())
    }
}

/// A session token, returned to the browser once (as a cookie) and stored only as a hash.
pub struct SessionToken(String);

impl SessionToken {
    fn generate() -> SessionToken {
        let bytes: [u8; 32] = carevault_crypto::random_bytes();
        SessionToken(format!("cvs_{}", URL_SAFE_NO_PAD.encode(bytes)))
    }

    pub fn from_cookie(value: &str) -> SessionToken {
        SessionToken(value.to_owned())
    }

    /// The cookie value. Declassified only to be set as an HttpOnly cookie.
    pub fn reveal(&self) -> &str {
        &self.0
    }

    pub(crate) fn hash(&self) -> [u8; 32] {
        carevault_crypto::sha256(self.0.as_bytes())
    }
}

/// The short, non-secret id of a session for audit records and the "my sessions" page.
pub fn session_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..8])
}

/// A session as the web layer sees it.
#[derive(Clone, Debug)]
pub struct SessionView {
    pub session: SessionRecord,
    pub person: PersonRecord,
}

impl SessionView {
    pub fn id(&self) -> String {
        session_id(&self.session.token_hash)
    }

    /// The server-side state a ceremony left on the session (`kind` is its prefix, such as
    /// `totp:`), or `SessionEnded` when a different ceremony, or none, is pending.
    fn pending(&self, kind: &str) -> Result<&str, SignInError> {
        self.session
            .pending
            .as_deref()
            .and_then(|pending| pending.strip_prefix(kind))
            .ok_or(SignInError::SessionEnded)
    }

    pub fn needs_passkey(&self) -> bool {
        self.person.roles.iter().any(|role| role.requires_passkey())
    }
}

/// What enrolling TOTP shows the person.
pub struct TotpEnrolment {
    pub secret_base32: String,
    pub otpauth_url: String,
    pub qr_svg: String,
}

/// A person's factors and sessions, as their account page lists them.
pub struct AccountOverview {
    pub totp: bool,
    pub passkeys: Vec<PasskeySummary>,
    pub recovery_codes_left: usize,
    pub sessions: Vec<SessionSummary>,
}

pub struct PasskeySummary {
    pub credential_id: String,
    pub name: String,
    pub created_ms: i64,
    pub last_used_ms: Option<i64>,
}

pub struct SessionSummary {
    /// The short, non-secret session id.
    pub id: String,
    pub current: bool,
    pub level: SessionLevel,
    pub created_ms: i64,
    pub last_seen_ms: i64,
}

pub struct Identity {
    pub(crate) people: Arc<dyn PeopleStore>,
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) audit: AuditTrail,
    pub(crate) credentials: Arc<dyn Credentials>,
    pub(crate) records: Arc<crate::records::Records>,
    pub(crate) notifier: Arc<dyn super::admin::Notifier>,
    pub(crate) settings: IdentitySettings,
}

pub fn normalise_email(email: &str) -> String {
    email.trim().to_lowercase()
}

fn totp_aad(tenant: TenantId, person: PersonId) -> Vec<u8> {
    format!("carevault/totp/v1|{tenant}|{person}").into_bytes()
}

impl Identity {
    #[allow(clippy::too_many_arguments)]
    pub fn new(
        people: Arc<dyn PeopleStore>,
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        audit: AuditTrail,
        credentials: Arc<dyn Credentials>,
        records: Arc<crate::records::Records>,
        notifier: Arc<dyn super::admin::Notifier>,
        settings: IdentitySettings,
    ) -> Identity {
        Identity {
            people,
            store,
            keyring,
            audit,
            credentials,
            records,
            notifier,
            settings,
        }
    }

    async fn tenant_keys(
        &self,
        tenant: TenantId,
    ) -> Result<Arc<crate::keyring::TenantKeys>, SignInError> {
        self.keyring
            .keys(tenant)
            .await
            .map_err(|error| SignInError::Internal(error.to_string()))
    }

    pub fn settings(&self) -> &IdentitySettings {
        &self.settings
    }

    pub fn credentials(&self) -> &dyn Credentials {
        self.credentials.as_ref()
    }

    // ---- throttling ----

    async fn throttle_wait(
        &self,
        keys: &[(String, ThrottlePolicy)],
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let mut wait = 0;
        for (key, throttle) in keys {
            let failures = self
                .people
                .failures_since(key, now_ms - throttle.window_ms)
                .await?;
            if let Some(&last) = failures.last() {
                let ready = last + throttle.required_delay_ms(failures.len() as u32);
                wait = wait.max(ready - now_ms);
            }
        }
        if wait > 0 {
            Err(SignInError::Throttled(wait))
        } else {
            Ok(())
        }
    }

    fn throttle_keys(&self, email: &str, source: Option<IpAddr>) -> Vec<(String, ThrottlePolicy)> {
        let mut keys = vec![(format!("account:{email}"), self.settings.account_throttle)];
        if let Some(source) = source {
            keys.push((format!("address:{source}"), self.settings.address_throttle));
        }
        keys
    }

    async fn record_failures(
        &self,
        keys: &[(String, ThrottlePolicy)],
        now_ms: i64,
    ) -> Result<(), SignInError> {
        for (key, _) in keys {
            self.people.record_failure(key, now_ms).await?;
        }
        Ok(())
    }

    // ---- sign-in ----

    /// Step one: email and password. Succeeds into a `Password` or `Enrolment` session.
    pub async fn sign_in_password(
        &self,
        email: &str,
        password: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(SessionToken, SessionLevel), SignInError> {
        let email = normalise_email(email);
        let keys = self.throttle_keys(&email, source);
        self.throttle_wait(&keys, now_ms).await?;
        let person = self.people.person_by_email(&email).await?;
        let verified = match &person {
            Some(person) if person.status == PersonStatus::Active => match &person.password_hash {
                Some(hash) => self.credentials.verify_password(password, hash),
                None => {
                    self.credentials.dummy_verify(password);
                    false
                }
            },
            _ => {
                // Unknown or disabled: spend the same time, give the same answer.
                self.credentials.dummy_verify(password);
                false
            }
        };
        let person = match (person, verified) {
            (Some(person), true) if self.tenant_active(person.tenant).await? => person,
            (person, _) => {
                self.record_failures(&keys, now_ms).await?;
                if let Some(person) = &person {
                    self.audit_person(
                        person,
                        None,
                        "signin.password",
                        Outcome::Denied,
                        None,
                        source,
                        now_ms,
                    )
                    .await?;
                }
                return Err(SignInError::Refused);
            }
        };
        let level = self.level_after_password(&person).await?;
        let token = self.new_session(&person, level, None, now_ms).await?;
        self.audit_person(
            &person,
            Some(&token),
            "signin.password",
            Outcome::Success,
            Some(level.as_str()),
            source,
            now_ms,
        )
        .await?;
        Ok((token, level))
    }

    async fn tenant_active(&self, tenant: TenantId) -> Result<bool, SignInError> {
        if tenant.is_platform() {
            return Ok(true);
        }
        Ok(matches!(
            self.store.tenant(tenant).await?.map(|t| t.status),
            Some(TenantStatus::Active)
        ))
    }

    /// `Password` when a usable second factor is enrolled, otherwise `Enrolment`.
    async fn level_after_password(
        &self,
        person: &PersonRecord,
    ) -> Result<SessionLevel, SignInError> {
        let has_passkey = !self.people.passkeys(person.id).await?.is_empty();
        let needs_passkey = person.roles.iter().any(|role| role.requires_passkey());
        let usable = if needs_passkey {
            has_passkey
        } else {
            has_passkey || self.people.totp(person.id).await?.is_some()
        };
        Ok(if usable {
            SessionLevel::Password
        } else {
            SessionLevel::Enrolment
        })
    }

    async fn new_session(
        &self,
        person: &PersonRecord,
        level: SessionLevel,
        factor: Option<SecondFactor>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        let token = SessionToken::generate();
        let csrf: [u8; 24] = carevault_crypto::random_bytes();
        let session = SessionRecord {
            token_hash: token.hash(),
            person: person.id,
            tenant: person.tenant,
            level,
            factor,
            created_ms: now_ms,
            last_seen_ms: now_ms,
            verified_ms: (level == SessionLevel::Mfa).then_some(now_ms),
            csrf: URL_SAFE_NO_PAD.encode(csrf),
            grant: None,
            pending: None,
            revoked: false,
        };
        self.people.create_session(&session).await?;
        Ok(token)
    }

    /// Replaces a session with a fresh id at a new level: every privilege change rotates the
    /// session id, so a token seen before the change is worthless after it.
    async fn rotate(
        &self,
        view: &SessionView,
        level: SessionLevel,
        factor: Option<SecondFactor>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        self.people.delete_session(&view.session.token_hash).await?;
        let token = self
            .new_session(&view.person, level, factor, now_ms)
            .await?;
        Ok(token)
    }

    /// Step two with a TOTP code.
    pub async fn sign_in_totp(
        &self,
        token: &SessionToken,
        code: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        let (view, keys) = self.second_factor_step(token, source, now_ms).await?;
        let passed = self.check_totp(&view.person, code, now_ms).await?;
        self.finish_second_factor(&view, &keys, passed, SecondFactor::Totp, source, now_ms)
            .await
    }

    /// The checks before any second factor: a session at the password step, roles that allow
    /// this kind of factor, and no throttling delay pending.
    async fn second_factor_step(
        &self,
        token: &SessionToken,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(SessionView, Vec<(String, ThrottlePolicy)>), SignInError> {
        let view = self.session(token, now_ms).await?;
        if view.session.level != SessionLevel::Password {
            return Err(SignInError::SessionEnded);
        }
        if view.needs_passkey() {
            return Err(SignInError::PasskeyRequired);
        }
        let keys = self.throttle_keys(&view.person.email, source);
        self.throttle_wait(&keys, now_ms).await?;
        Ok((view, keys))
    }

    /// Completes sign-in (a fresh session id at level `mfa`) or records the failure.
    async fn finish_second_factor(
        &self,
        view: &SessionView,
        keys: &[(String, ThrottlePolicy)],
        passed: bool,
        factor: SecondFactor,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        if !passed {
            self.second_factor_failed(view, keys, factor.as_str(), source, now_ms)
                .await?;
            return Err(SignInError::Refused);
        }
        let token = self
            .rotate(view, SessionLevel::Mfa, Some(factor), now_ms)
            .await?;
        self.audit_person(
            &view.person,
            Some(&token),
            "signin.second-factor",
            Outcome::Success,
            Some(factor.as_str()),
            source,
            now_ms,
        )
        .await?;
        Ok(token)
    }

    /// Verifies a code against the enrolled seed and spends its time step (each step once).
    async fn check_totp(
        &self,
        person: &PersonRecord,
        code: &str,
        now_ms: i64,
    ) -> Result<bool, SignInError> {
        let Some(totp) = self.people.totp(person.id).await? else {
            return Ok(false);
        };
        let secret = self.open_totp_secret(person, &totp).await?;
        let Some(step) =
            self.credentials
                .verify_totp(&secret, code, now_ms.div_euclid(1000), totp.last_step)
        else {
            return Ok(false);
        };
        // The store refuses a step not newer than the last one, even under a race.
        Ok(self.people.use_totp_step(person.id, step).await?)
    }

    async fn open_totp_secret(
        &self,
        person: &PersonRecord,
        totp: &TotpRecord,
    ) -> Result<Vec<u8>, SignInError> {
        let keys = self.tenant_keys(person.tenant).await?;
        let version = carevault_crypto::sealed_key_version(&totp.sealed_secret)
            .map_err(|e| SignInError::Internal(e.to_string()))?;
        let key = keys
            .data_key(version)
            .ok_or_else(|| SignInError::Internal("unknown key version for a TOTP seed".into()))?;
        key.open(&totp_aad(person.tenant, person.id), &totp.sealed_secret)
            .map_err(|_| SignInError::Internal("a TOTP seed failed its integrity check".into()))
    }

    async fn second_factor_failed(
        &self,
        view: &SessionView,
        keys: &[(String, ThrottlePolicy)],
        factor: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        self.record_failures(keys, now_ms).await?;
        // The password was right: it is probably known to someone else.
        self.people
            .record_security_event(&SecurityEvent {
                tenant: view.person.tenant,
                time_ms: now_ms,
                kind: "second-factor-failed".to_owned(),
                person: Some(view.person.id),
                detail: format!("correct password, failed {factor}"),
            })
            .await?;
        self.audit_person(
            &view.person,
            None,
            "signin.second-factor",
            Outcome::Denied,
            Some(factor),
            source,
            now_ms,
        )
        .await
    }

    /// Step two with a single-use recovery code.
    pub async fn sign_in_recovery_code(
        &self,
        token: &SessionToken,
        code: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        let (view, keys) = self.second_factor_step(token, source, now_ms).await?;
        let codes = self.people.recovery_codes(view.person.id).await?;
        // Used codes are blanked so they can never match.
        let unused: Vec<String> = codes
            .iter()
            .map(|c| {
                if c.used_ms.is_some() {
                    String::new()
                } else {
                    c.code_hash.clone()
                }
            })
            .collect();
        let passed = match self
            .credentials
            .match_recovery_code(code, &unused)
            .and_then(|position| codes.get(position))
        {
            Some(record) => {
                self.people
                    .use_recovery_code(view.person.id, record.index, now_ms)
                    .await?
            }
            None => false,
        };
        self.finish_second_factor(
            &view,
            &keys,
            passed,
            SecondFactor::RecoveryCode,
            source,
            now_ms,
        )
        .await
    }

    /// A passkey sign-in begins: options for the browser and a ceremony id (kept in a cookie).
    pub async fn start_passkey_sign_in(
        &self,
        now_ms: i64,
    ) -> Result<(serde_json::Value, String), SignInError> {
        let ceremony = self
            .credentials
            .start_passkey_authentication()
            .map_err(SignInError::Internal)?;
        let id = SessionToken::generate();
        self.people
            .put_ceremony(&id.hash(), &ceremony.state, now_ms + 5 * 60_000)
            .await?;
        Ok((ceremony.options, id.0))
    }

    /// A passkey with user verification completes sign-in on its own.
    pub async fn finish_passkey_sign_in(
        &self,
        ceremony_id: &str,
        response: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<SessionToken, SignInError> {
        let state = self
            .people
            .take_ceremony(&SessionToken::from_cookie(ceremony_id).hash(), now_ms)
            .await?
            .ok_or(SignInError::SessionEnded)?;
        let refused = |_| SignInError::Refused;
        let (user, _credential) = self
            .credentials
            .passkey_response_user(response)
            .map_err(refused)?;
        let person = self
            .people
            .person(PersonId::from_uuid(user))
            .await?
            .filter(|person| person.status == PersonStatus::Active)
            .ok_or(SignInError::Refused)?;
        let keys = self.throttle_keys(&person.email, source);
        self.throttle_wait(&keys, now_ms).await?;
        if !self.tenant_active(person.tenant).await? {
            return Err(SignInError::Refused);
        }
        let stored = self.people.passkeys(person.id).await?;
        let jsons: Vec<String> = stored.iter().map(|p| p.passkey_json.clone()).collect();
        match self
            .credentials
            .finish_passkey_authentication(response, &state, &jsons)
        {
            Ok(assertion) if assertion.user_verified => {
                if let Some(updated) = &assertion.updated_passkey_json {
                    self.people
                        .update_passkey(person.id, &assertion.credential_id, updated, now_ms)
                        .await?;
                }
                let token = self
                    .new_session(
                        &person,
                        SessionLevel::Mfa,
                        Some(SecondFactor::Passkey),
                        now_ms,
                    )
                    .await?;
                self.audit_person(
                    &person,
                    Some(&token),
                    "signin.passkey",
                    Outcome::Success,
                    None,
                    source,
                    now_ms,
                )
                .await?;
                Ok(token)
            }
            _ => {
                self.record_failures(&keys, now_ms).await?;
                self.audit_person(
                    &person,
                    None,
                    "signin.passkey",
                    Outcome::Denied,
                    None,
                    source,
                    now_ms,
                )
                .await?;
                Err(SignInError::Refused)
            }
        }
    }

    // ---- sessions ----

    /// Finds a live session: not revoked, within the idle and absolute timeouts, its person
    /// active and its tenant not quarantined. Touches `last_seen` at most once a minute.
    pub async fn session(
        &self,
        token: &SessionToken,
        now_ms: i64,
    ) -> Result<SessionView, SignInError> {
        let hash = token.hash();
        let Some(mut session) = self.people.session(&hash).await? else {
            return Err(SignInError::SessionEnded);
        };
        let expired = session_expired(&session, &self.settings, now_ms);
        if expired {
            self.people.delete_session(&hash).await?;
            return Err(SignInError::SessionEnded);
        }
        let person = self
            .people
            .person(session.person)
            .await?
            .filter(|person| person.status == PersonStatus::Active)
            .ok_or(SignInError::SessionEnded)?;
        if !self.tenant_active(person.tenant).await? {
            return Err(SignInError::SessionEnded);
        }
        if now_ms - session.last_seen_ms > 60_000 {
            session.last_seen_ms = now_ms;
            self.people.update_session(&session).await?;
        }
        Ok(SessionView { session, person })
    }

    pub async fn sign_out(
        &self,
        token: &SessionToken,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        if let Ok(view) = self.session(token, now_ms).await {
            self.people.delete_session(&view.session.token_hash).await?;
            self.audit_person(
                &view.person,
                Some(token),
                "signout",
                Outcome::Success,
                None,
                source,
                now_ms,
            )
            .await?;
        }
        Ok(())
    }

    /// Ends every session of the person (the current one too).
    pub async fn sign_out_everywhere(
        &self,
        view: &SessionView,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<u64, SignInError> {
        let ended = self.people.delete_sessions_of(view.person.id).await?;
        self.audit_person(
            &view.person,
            None,
            "signout.everywhere",
            Outcome::Success,
            Some(&ended.to_string()),
            source,
            now_ms,
        )
        .await?;
        Ok(ended)
    }

    /// True when a second factor was proven within the step-up window.
    pub fn is_fresh(&self, view: &SessionView, now_ms: i64) -> bool {
        session_is_fresh(&view.session, &self.settings, now_ms)
    }

    pub fn require_fresh(&self, view: &SessionView, now_ms: i64) -> Result<(), SignInError> {
        if self.is_fresh(view, now_ms) {
            Ok(())
        } else {
            Err(SignInError::StepUpRequired)
        }
    }

    /// Step-up with TOTP (for people whose roles allow it). Marks the session fresh.
    pub async fn step_up_totp(
        &self,
        view: &SessionView,
        code: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        if view.session.level != SessionLevel::Mfa {
            return Err(SignInError::SessionEnded);
        }
        if view.needs_passkey() {
            return Err(SignInError::PasskeyRequired);
        }
        let keys = self.throttle_keys(&view.person.email, source);
        self.throttle_wait(&keys, now_ms).await?;
        if self.check_totp(&view.person, code, now_ms).await? {
            let mut session = view.session.clone();
            session.verified_ms = Some(now_ms);
            self.people.update_session(&session).await?;
            self.audit_person(
                &view.person,
                None,
                "step-up",
                Outcome::Success,
                Some("totp"),
                source,
                now_ms,
            )
            .await
        } else {
            self.second_factor_failed(view, &keys, "totp step-up", source, now_ms)
                .await?;
            Err(SignInError::Refused)
        }
    }

    /// Step-up with a passkey: the ceremony state rides on the session.
    pub async fn start_passkey_step_up(
        &self,
        view: &SessionView,
    ) -> Result<serde_json::Value, SignInError> {
        let ceremony = self
            .credentials
            .start_passkey_authentication()
            .map_err(SignInError::Internal)?;
        let mut session = view.session.clone();
        session.pending = Some(format!("step-up:{}", ceremony.state));
        self.people.update_session(&session).await?;
        Ok(ceremony.options)
    }

    pub async fn finish_passkey_step_up(
        &self,
        view: &SessionView,
        response: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let state = view.pending("step-up:")?.to_owned();
        let stored = self.people.passkeys(view.person.id).await?;
        let jsons: Vec<String> = stored.iter().map(|p| p.passkey_json.clone()).collect();
        let mut session = view.session.clone();
        session.pending = None;
        match self
            .credentials
            .finish_passkey_authentication(response, &state, &jsons)
        {
            Ok(assertion) if assertion.user_verified => {
                // Keep the signature counter current, as a sign-in does, so a cloned
                // authenticator is noticed.
                if let Some(updated) = &assertion.updated_passkey_json {
                    self.people
                        .update_passkey(view.person.id, &assertion.credential_id, updated, now_ms)
                        .await?;
                }
                session.verified_ms = Some(now_ms);
                self.people.update_session(&session).await?;
                self.audit_person(
                    &view.person,
                    None,
                    "step-up",
                    Outcome::Success,
                    Some("passkey"),
                    source,
                    now_ms,
                )
                .await
            }
            _ => {
                self.people.update_session(&session).await?;
                let keys = self.throttle_keys(&view.person.email, source);
                self.second_factor_failed(view, &keys, "passkey step-up", source, now_ms)
                    .await?;
                Err(SignInError::Refused)
            }
        }
    }

    // ---- enrolment ----

    /// Begins TOTP enrolment: a new seed, kept sealed on the session until confirmed.
    pub async fn start_totp_enrolment(
        &self,
        view: &SessionView,
    ) -> Result<TotpEnrolment, SignInError> {
        if view.session.level == SessionLevel::Password {
            return Err(SignInError::SessionEnded);
        }
        if view.needs_passkey() {
            return Err(SignInError::Invalid(
                "your role signs in with a passkey: register a passkey instead".into(),
            ));
        }
        let secret = self.credentials.new_totp_secret();
        let keys = self.tenant_keys(view.person.tenant).await?;
        let sealed = keys
            .sealing_key()
            .seal(&totp_aad(view.person.tenant, view.person.id), &secret)
            .map_err(|e| SignInError::Internal(e.to_string()))?;
        let (secret_base32, otpauth_url, qr_svg) = self
            .credentials
            .totp_enrolment(&secret, &view.person.email)
            .map_err(SignInError::Internal)?;
        let mut session = view.session.clone();
        session.pending = Some(format!("totp:{}", hex::encode(sealed)));
        self.people.update_session(&session).await?;
        Ok(TotpEnrolment {
            secret_base32,
            otpauth_url,
            qr_svg,
        })
    }

    /// Confirms TOTP enrolment with a code from the app. An `Enrolment` session whose roles
    /// do not need a passkey becomes `Mfa` (password and the new factor are both proven).
    /// Returns the new session token (rotated) and recovery codes if this was the first factor.
    pub async fn confirm_totp_enrolment(
        &self,
        view: &SessionView,
        code: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(SessionToken, Option<Vec<String>>), SignInError> {
        let sealed = hex::decode(view.pending("totp:")?).map_err(|_| SignInError::SessionEnded)?;
        let record = TotpRecord {
            person: view.person.id,
            sealed_secret: sealed,
            last_step: None,
            created_ms: now_ms,
        };
        let secret = self.open_totp_secret(&view.person, &record).await?;
        let Some(step) = self
            .credentials
            .verify_totp(&secret, code, now_ms.div_euclid(1000), None)
        else {
            return Err(SignInError::Invalid(
                "that code did not match: check the time on your phone and enter the newest code"
                    .into(),
            ));
        };
        self.people
            .set_totp(&TotpRecord {
                last_step: Some(step),
                ..record
            })
            .await?;
        let codes = self.first_recovery_codes(&view.person, now_ms).await?;
        let level = if view.session.level == SessionLevel::Enrolment && !view.needs_passkey() {
            SessionLevel::Mfa
        } else {
            view.session.level
        };
        let token = self
            .rotate(
                view,
                level,
                view.session.factor.or(Some(SecondFactor::Totp)),
                now_ms,
            )
            .await?;
        self.audit_person(
            &view.person,
            Some(&token),
            "factor.enrol",
            Outcome::Success,
            Some("totp"),
            source,
            now_ms,
        )
        .await?;
        Ok((token, codes))
    }

    async fn first_recovery_codes(
        &self,
        person: &PersonRecord,
        now_ms: i64,
    ) -> Result<Option<Vec<String>>, SignInError> {
        if !self.people.recovery_codes(person.id).await?.is_empty() {
            return Ok(None);
        }
        let (codes, hashes) = self.credentials.new_recovery_codes();
        self.people
            .set_recovery_codes(person.id, &hashes, now_ms)
            .await?;
        Ok(Some(codes))
    }

    /// New recovery codes, replacing the old ones (needs a fresh second factor).
    pub async fn regenerate_recovery_codes(
        &self,
        view: &SessionView,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Vec<String>, SignInError> {
        self.require_fresh(view, now_ms)?;
        let (codes, hashes) = self.credentials.new_recovery_codes();
        self.people
            .set_recovery_codes(view.person.id, &hashes, now_ms)
            .await?;
        self.audit_person(
            &view.person,
            None,
            "factor.recovery-codes",
            Outcome::Success,
            None,
            source,
            now_ms,
        )
        .await?;
        Ok(codes)
    }

    pub async fn start_passkey_enrolment(
        &self,
        view: &SessionView,
    ) -> Result<serde_json::Value, SignInError> {
        if view.session.level == SessionLevel::Password {
            return Err(SignInError::SessionEnded);
        }
        let existing: Vec<String> = self
            .people
            .passkeys(view.person.id)
            .await?
            .into_iter()
            .map(|p| p.passkey_json)
            .collect();
        let ceremony = self
            .credentials
            .start_passkey_registration(
                view.person.id.as_uuid(),
                &view.person.email,
                &view.person.display_name,
                &existing,
            )
            .map_err(SignInError::Internal)?;
        let mut session = view.session.clone();
        session.pending = Some(format!("passkey-registration:{}", ceremony.state));
        self.people.update_session(&session).await?;
        Ok(ceremony.options)
    }

    /// Completes passkey registration. An `Enrolment` session becomes `Mfa`: the password and
    /// a user-verified passkey are both proven.
    pub async fn finish_passkey_enrolment(
        &self,
        view: &SessionView,
        name: &str,
        response: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(SessionToken, Option<Vec<String>>), SignInError> {
        let state = view.pending("passkey-registration:")?;
        let passkey = self
            .credentials
            .finish_passkey_registration(response, state)
            .map_err(|reason| {
                SignInError::Invalid(format!("the passkey was not registered: {reason}"))
            })?;
        let name = name.trim();
        let name = if name.is_empty() { "Passkey" } else { name };
        self.people
            .add_passkey(&super::model::PasskeyRecord {
                person: view.person.id,
                credential_id: passkey.credential_id,
                name: name.chars().take(60).collect(),
                passkey_json: passkey.passkey_json,
                created_ms: now_ms,
                last_used_ms: None,
            })
            .await?;
        let codes = self.first_recovery_codes(&view.person, now_ms).await?;
        let level = if view.session.level == SessionLevel::Enrolment {
            SessionLevel::Mfa
        } else {
            view.session.level
        };
        let factor = if view.session.level == SessionLevel::Enrolment {
            Some(SecondFactor::Passkey)
        } else {
            view.session.factor
        };
        let token = self.rotate(view, level, factor, now_ms).await?;
        self.audit_person(
            &view.person,
            Some(&token),
            "factor.enrol",
            Outcome::Success,
            Some("passkey"),
            source,
            now_ms,
        )
        .await?;
        Ok((token, codes))
    }

    /// Removes one of the person's own passkeys (needs a fresh second factor, and never the
    /// last factor of a role that needs a passkey).
    pub async fn remove_passkey(
        &self,
        view: &SessionView,
        credential_id: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        self.require_fresh(view, now_ms)?;
        let passkeys = self.people.passkeys(view.person.id).await?;
        if view.needs_passkey() && passkeys.len() <= 1 {
            return Err(SignInError::Invalid(
                "your role needs a passkey: register another one before removing this one".into(),
            ));
        }
        if !self
            .people
            .remove_passkey(view.person.id, credential_id)
            .await?
        {
            return Err(SignInError::Invalid("no such passkey".into()));
        }
        self.audit_person(
            &view.person,
            None,
            "factor.remove",
            Outcome::Success,
            Some("passkey"),
            source,
            now_ms,
        )
        .await
    }

    // ---- the person's own account ----

    /// What the "my account" page shows: enrolled factors and live sessions, no secrets.
    pub async fn account_overview(
        &self,
        view: &SessionView,
        now_ms: i64,
    ) -> Result<AccountOverview, SignInError> {
        let person = view.person.id;
        let totp = self.people.totp(person).await?.is_some();
        let passkeys = self
            .people
            .passkeys(person)
            .await?
            .into_iter()
            .map(|passkey| PasskeySummary {
                credential_id: passkey.credential_id,
                name: passkey.name,
                created_ms: passkey.created_ms,
                last_used_ms: passkey.last_used_ms,
            })
            .collect();
        let recovery_codes_left = self
            .people
            .recovery_codes(person)
            .await?
            .iter()
            .filter(|code| code.used_ms.is_none())
            .count();
        let sessions = self
            .people
            .sessions_of(person)
            .await?
            .into_iter()
            .filter(|session| {
                !session.revoked
                    && now_ms - session.last_seen_ms <= self.settings.idle_ms
                    && now_ms - session.created_ms <= self.settings.absolute_ms
            })
            .map(|session| SessionSummary {
                id: session_id(&session.token_hash),
                current: session.token_hash == view.session.token_hash,
                level: session.level,
                created_ms: session.created_ms,
                last_seen_ms: session.last_seen_ms,
            })
            .collect();
        Ok(AccountOverview {
            totp,
            passkeys,
            recovery_codes_left,
            sessions,
        })
    }

    // ---- audit ----

    #[allow(clippy::too_many_arguments)]
    pub(crate) async fn audit_person(
        &self,
        person: &PersonRecord,
        token: Option<&SessionToken>,
        action: &str,
        outcome: Outcome,
        detail: Option<&str>,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<(), SignInError> {
        let record = person_record(
            person,
            token.map(|t| session_id(&t.hash())),
            action,
            outcome,
            detail,
            source,
            now_ms,
        );
        self.audit
            .record(record)
            .await
            .map_err(|_| SignInError::AuditUnavailable)
    }
}

/// Whether a session has ended: revoked, idle for longer than the idle timeout, or older than
/// the absolute timeout.
pub fn session_expired(session: &SessionRecord, settings: &IdentitySettings, now_ms: i64) -> bool {
    session.revoked
        || now_ms - session.last_seen_ms > settings.idle_ms
        || now_ms - session.created_ms > settings.absolute_ms
}

/// Whether a session proved a second factor within the step-up window.
pub fn session_is_fresh(session: &SessionRecord, settings: &IdentitySettings, now_ms: i64) -> bool {
    session.level == SessionLevel::Mfa
        && session
            .verified_ms
            .is_some_and(|at| now_ms - at <= settings.step_up_ms)
}

pub(crate) fn person_record(
    person: &PersonRecord,
    session: Option<String>,
    action: &str,
    outcome: Outcome,
    detail: Option<&str>,
    source: Option<IpAddr>,
    now_ms: i64,
) -> AuditRecord {
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: now_ms,
        tenant: person.tenant,
        principal: format!("person/{}", person.id),
        session,
        roles: person
            .roles
            .iter()
            .map(|r: &Role| r.as_str().to_owned())
            .collect(),
        auth_strength: "none".to_owned(),
        source: source.map(|ip| ip.to_string()),
        action: action.to_owned(),
        resource_type: None,
        resource_id: None,
        subjects: Vec::new(),
        categories: Vec::new(),
        purpose: None,
        outcome,
        detail: detail.map(str::to_owned),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn session(created_ms: i64, last_seen_ms: i64) -> SessionRecord {
        SessionRecord {
            token_hash: [1; 32],
            person: PersonId::generate(),
            tenant: TenantId::generate(),
            level: SessionLevel::Mfa,
            factor: Some(SecondFactor::Totp),
            created_ms,
            last_seen_ms,
            verified_ms: Some(created_ms),
            csrf: "x".to_owned(),
            grant: None,
            pending: None,
            revoked: false,
        }
    }

    #[test]
    fn sessions_end_after_idle_and_absolute_timeouts() {
        let settings = IdentitySettings::defaults("http://localhost:1");
        let minute = 60_000;
        let start = 1_000_000_000;
        // Active every 10 minutes: alive until the 12-hour absolute limit.
        assert!(!session_expired(
            &session(start, start + 11 * 60 * minute),
            &settings,
            start + 11 * 60 * minute + 10 * minute
        ));
        assert!(session_expired(
            &session(start, start + 12 * 60 * minute),
            &settings,
            start + 12 * 60 * minute + minute
        ));
        // Idle for 15 minutes is fine, a moment longer is not.
        assert!(!session_expired(
            &session(start, start),
            &settings,
            start + 15 * minute
        ));
        assert!(session_expired(
            &session(start, start),
            &settings,
            start + 15 * minute + 1
        ));
        let mut revoked = session(start, start);
        revoked.revoked = true;
        assert!(session_expired(&revoked, &settings, start));
    }

    #[test]
    fn step_up_needs_a_recent_second_factor() {
        let settings = IdentitySettings::defaults("http://localhost:1");
        let start = 1_000_000_000;
        let fresh = |verified: Option<i64>, level: SessionLevel, now: i64| {
            let mut record = session(start, start);
            record.verified_ms = verified;
            record.level = level;
            session_is_fresh(&record, &settings, now)
        };
        assert!(fresh(Some(start), SessionLevel::Mfa, start + 5 * 60_000));
        assert!(!fresh(
            Some(start),
            SessionLevel::Mfa,
            start + 5 * 60_000 + 1
        ));
        assert!(!fresh(Some(start), SessionLevel::Password, start));
        assert!(!fresh(None, SessionLevel::Mfa, start));
    }
}
