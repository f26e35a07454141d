//! Machine-client authentication (SMART Backend Services) and bearer-token checks.
//!
//! This is the only code that builds a [`Principal`] (and so a [`TenantScope`]) for a request.
//! Access tokens are opaque random strings; only their SHA-256 is stored, so checking one is a
//! hash and an indexed lookup, with no signature verification per request. The lookup reads the
//! tenant's and the client's current status every time, so quarantine and disable bite on the
//! very next request, even when another process (the CLI) made the change.

use std::net::IpAddr;
use std::sync::Arc;

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;

use crate::audit::{AUDIT_RECORD_VERSION, AuditRecord, AuditTrail, Outcome};
use crate::ids::{ClientId, TenantId};
use crate::principal::{Access, Actor, AuthStrength, Principal, TenantScope};
use crate::scopes::ScopeSet;
use crate::store::{AccessTokenRecord, ClientStatus, Store, StoreError, TenantStatus};

/// The longest life of an access token, in seconds (SMART Backend Services recommends 5 minutes).
pub const MAX_TOKEN_SECONDS: i64 = 300;
const TOKEN_PREFIX: &str = "cv1_";

/// Checks a client assertion's signature and claims. Implemented by `carevault-auth`.
pub trait AssertionVerifier: Send + Sync {
    /// The unverified `iss`, only to choose which client's keys to verify with.
    fn unverified_issuer(&self, assertion: &str) -> Result<String, String>;
    /// Verifies signature and claims; returns (jti, exp in unix seconds).
    fn verify(
        &self,
        assertion: &str,
        client_id: &str,
        jwks: &str,
        token_url: &str,
        now_s: i64,
    ) -> Result<(String, i64), String>;
    /// Validates a JWK Set of public keys for registration and returns its canonical JSON.
    fn canonical_jwks(&self, jwks: &str) -> Result<String, String>;
}

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    /// OAuth `invalid_client`: the reason goes to the log, the client sees a generic sentence.
    #[error("client authentication failed: {0}")]
    InvalidClient(String),
    #[error("invalid scope: {0}")]
    InvalidScope(String),
    #[error("invalid request: {0}")]
    InvalidRequest(String),
    /// The bearer token is missing, unknown, expired, or its client or tenant is stopped.
    #[error("unauthenticated: {0}")]
    Unauthenticated(&'static str),
    #[error("the audit trail could not be written")]
    AuditUnavailable,
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// An issued access token. The secret is returned to the client once and never stored.
pub struct IssuedToken {
    pub access_token: String,
    pub expires_in: i64,
    pub scope: String,
}

pub struct Authority {
    store: Arc<dyn Store>,
    audit: AuditTrail,
    verifier: Arc<dyn AssertionVerifier>,
    token_seconds: i64,
}

fn token_hash(token: &str) -> [u8; 32] {
    carevault_crypto::sha256(token.as_bytes())
}

/// The short, non-secret id of a token for the audit trail: the first 8 bytes of its hash.
fn token_id(hash: &[u8; 32]) -> String {
    hex::encode(&hash[..8])
}

impl Authority {
    pub fn new(
        store: Arc<dyn Store>,
        audit: AuditTrail,
        verifier: Arc<dyn AssertionVerifier>,
        token_seconds: i64,
    ) -> Authority {
        Authority {
            store,
            audit,
            verifier,
            token_seconds: token_seconds.clamp(1, MAX_TOKEN_SECONDS),
        }
    }

    pub fn verifier(&self) -> &dyn AssertionVerifier {
        self.verifier.as_ref()
    }

    /// `POST /oauth/token` with `grant_type=client_credentials` and a `private_key_jwt`.
    pub async fn exchange_assertion(
        &self,
        assertion: &str,
        requested_scope: &str,
        token_url: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<IssuedToken, AccessError> {
        let issuer = self
            .verifier
            .unverified_issuer(assertion)
            .map_err(AccessError::InvalidClient)?;
        let client_id = ClientId::parse(&issuer).ok_or_else(|| {
            AccessError::InvalidClient("iss is not a registered client id".into())
        })?;
        let Some(client) = self.store.client(&client_id).await? else {
            return Err(AccessError::InvalidClient("unknown client".into()));
        };
        let mut event = TokenEvent {
            tenant: client.tenant,
            client: &client_id,
            source,
            now_ms,
        };
        let tenant_active = matches!(
            self.store.tenant(client.tenant).await?.map(|t| t.status),
            Some(TenantStatus::Active)
        );
        if client.status != ClientStatus::Active || !tenant_active {
            self.refuse(&mut event, "client or tenant stopped").await?;
            return Err(AccessError::InvalidClient(
                "client or tenant is not active".into(),
            ));
        }
        let (jti, exp_s) = match self.verifier.verify(
            assertion,
            client_id.as_str(),
            &client.jwks,
            token_url,
            now_ms.div_euclid(1000),
        ) {
            Ok(claims) => claims,
            Err(reason) => {
                self.refuse(&mut event, "assertion rejected").await?;
                return Err(AccessError::InvalidClient(reason));
            }
        };
        let fresh = self
            .store
            .remember_jti(&client_id, &jti, exp_s.saturating_mul(1000), now_ms)
            .await?;
        if !fresh {
            self.refuse(&mut event, "assertion jti replayed").await?;
            return Err(AccessError::InvalidClient(
                "assertion jti was already used".into(),
            ));
        }
        let is_known = |name: &str| carevault_fhir::resource_type(name).is_some();
        let requested = ScopeSet::parse(requested_scope, &is_known)
            .map_err(|error| AccessError::InvalidScope(error.to_string()))?;
        let registered = ScopeSet::parse(&client.scopes, &is_known)
            .map_err(|error| AccessError::InvalidScope(format!("registered scopes: {error}")))?;
        let granted = requested.intersect(&registered);
        if granted.is_empty() {
            self.refuse(&mut event, "no requested scope is registered")
                .await?;
            return Err(AccessError::InvalidScope(
                "none of the requested scopes is registered for this client".into(),
            ));
        }
        let secret: [u8; 32] = carevault_crypto::random_bytes();
        let access_token = format!("{TOKEN_PREFIX}{}", URL_SAFE_NO_PAD.encode(secret));
        let hash = token_hash(&access_token);
        let record = AccessTokenRecord {
            token_hash: hash,
            tenant: client.tenant,
            client: client_id.clone(),
            scopes: granted.to_string(),
            issued_ms: now_ms,
            expires_ms: now_ms + self.token_seconds * 1000,
        };
        self.store.store_access_token(&record).await?;
        let mut issued = event.record("token.issue", Outcome::Success, None);
        issued.session = Some(token_id(&hash));
        self.audit
            .record(issued)
            .await
            .map_err(|_| AccessError::AuditUnavailable)?;
        Ok(IssuedToken {
            access_token,
            expires_in: self.token_seconds,
            scope: record.scopes,
        })
    }

    async fn refuse(&self, event: &mut TokenEvent<'_>, why: &str) -> Result<(), AccessError> {
        let record = event.record("token.issue", Outcome::Denied, Some(why));
        self.audit
            .record(record)
            .await
            .map_err(|_| AccessError::AuditUnavailable)
    }

    /// Checks a bearer token and builds the request's principal.
    pub async fn authenticate_bearer(
        &self,
        token: &str,
        source: Option<IpAddr>,
        now_ms: i64,
    ) -> Result<Principal, AccessError> {
        if !token.starts_with(TOKEN_PREFIX) || token.len() > 128 {
            return Err(AccessError::Unauthenticated("not a carevault access token"));
        }
        let hash = token_hash(token);
        let Some(found) = self.store.find_access_token(&hash).await? else {
            return Err(AccessError::Unauthenticated("unknown token"));
        };
        if found.token.expires_ms <= now_ms {
            return Err(AccessError::Unauthenticated("token expired"));
        }
        if found.tenant_status != TenantStatus::Active {
            return Err(AccessError::Unauthenticated("tenant quarantined"));
        }
        if found.client_status != ClientStatus::Active {
            return Err(AccessError::Unauthenticated("client disabled"));
        }
        let is_known = |name: &str| carevault_fhir::resource_type(name).is_some();
        let scopes = ScopeSet::parse(&found.token.scopes, &is_known)
            .map_err(|_| AccessError::Unauthenticated("token scopes unreadable"))?;
        Ok(Principal::new(
            TenantScope::new(found.token.tenant),
            Actor::Client {
                id: found.token.client,
                name: found.client_name,
            },
            Access::Scopes(scopes),
            AuthStrength::ClientKey,
            Some(token_id(&hash)),
            source,
        ))
    }
}

struct TokenEvent<'a> {
    tenant: TenantId,
    client: &'a ClientId,
    source: Option<IpAddr>,
    now_ms: i64,
}

impl TokenEvent<'_> {
    fn record(&mut self, action: &str, outcome: Outcome, detail: Option<&str>) -> AuditRecord {
        AuditRecord {
            v: AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms: self.now_ms,
            tenant: self.tenant,
            principal: format!("client/{}", self.client),
            session: None,
            roles: vec!["integration".to_owned()],
            auth_strength: AuthStrength::ClientKey.as_str().to_owned(),
            source: self.source.map(|ip| ip.to_string()),
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
}
