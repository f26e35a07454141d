//! Operator use cases run from the command line: tenants and machine clients.
//! None of them reads clinical data. Each leaves an audit record in the tenant's trail.

use std::sync::Arc;

use crate::access::AssertionVerifier;
use crate::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use crate::ids::{ClientId, TenantId};
use crate::keyring::{KeyError, Keyring};
use crate::principal::{Actor, AuthStrength};
use crate::scopes::ScopeSet;
use crate::store::{ClientRecord, ClientStatus, Store, StoreError, TenantRecord, TenantStatus};

#[derive(Debug, thiserror::Error)]
pub enum AdminError {
    /// The input was wrong; the message says how to mend it.
    #[error("{0}")]
    Invalid(String),
    #[error("{0} not found")]
    NotFound(String),
    #[error(transparent)]
    Keys(#[from] KeyError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

pub struct Administration {
    store: Arc<dyn Store>,
    keyring: Arc<Keyring>,
    verifier: Arc<dyn AssertionVerifier>,
}

impl Administration {
    pub fn new(
        store: Arc<dyn Store>,
        keyring: Arc<Keyring>,
        verifier: Arc<dyn AssertionVerifier>,
    ) -> Administration {
        Administration {
            store,
            keyring,
            verifier,
        }
    }

    pub async fn create_tenant(&self, name: &str, now_ms: i64) -> Result<TenantRecord, AdminError> {
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 || name.chars().any(char::is_control) {
            return Err(AdminError::Invalid(
                "a tenant name must be 1 to 100 printable characters".into(),
            ));
        }
        let tenant = TenantRecord {
            id: TenantId::generate(),
            name: name.to_owned(),
            status: TenantStatus::Active,
            created_ms: now_ms,
        };
        let keys = self.keyring.new_tenant_keys(tenant.id, now_ms)?;
        match self.store.create_tenant(&tenant, &keys).await {
            Err(StoreError::Duplicate(_)) => {
                return Err(AdminError::Invalid(format!(
                    "a tenant named {name:?} already exists; choose another name"
                )));
            }
            other => other?,
        }
        self.record(tenant.id, "tenant.create", None, now_ms)
            .await?;
        Ok(tenant)
    }

    pub async fn list_tenants(&self) -> Result<Vec<TenantRecord>, AdminError> {
        Ok(self.store.list_tenants().await?)
    }

    /// Quarantine stops every token and client of the tenant at once; release undoes it.
    pub async fn set_tenant_status(
        &self,
        tenant: TenantId,
        status: TenantStatus,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        if !self.store.set_tenant_status(tenant, status).await? {
            return Err(AdminError::NotFound(format!("tenant {tenant}")));
        }
        let action = match status {
            TenantStatus::Active => "tenant.release",
            TenantStatus::Quarantined => "tenant.quarantine",
        };
        self.record(tenant, action, None, now_ms).await
    }

    pub async fn register_client(
        &self,
        tenant: TenantId,
        name: &str,
        jwks: &str,
        scopes: &str,
        now_ms: i64,
    ) -> Result<ClientRecord, AdminError> {
        if self.store.tenant(tenant).await?.is_none() {
            return Err(AdminError::NotFound(format!("tenant {tenant}")));
        }
        let name = name.trim();
        if name.is_empty() || name.chars().count() > 100 {
            return Err(AdminError::Invalid(
                "a client name must be 1 to 100 characters".into(),
            ));
        }
        let jwks = self.verifier.canonical_jwks(jwks).map_err(|reason| {
            AdminError::Invalid(format!("the JWK Set is not usable: {reason}"))
        })?;
        let is_known = |name: &str| carevault_fhir::resource_type(name).is_some();
        let scopes = ScopeSet::parse(scopes, &is_known)
            .map_err(|error| AdminError::Invalid(format!("scopes: {error}")))?;
        let client = ClientRecord {
            id: ClientId::generate(),
            tenant,
            name: name.to_owned(),
            jwks,
            scopes: scopes.to_string(),
            status: ClientStatus::Active,
            created_ms: now_ms,
        };
        self.store.create_client(&client).await?;
        self.record(tenant, "client.register", Some(client.id.as_str()), now_ms)
            .await?;
        Ok(client)
    }

    pub async fn list_clients(
        &self,
        tenant: Option<TenantId>,
    ) -> Result<Vec<ClientRecord>, AdminError> {
        Ok(self.store.list_clients(tenant).await?)
    }

    pub async fn set_client_status(
        &self,
        client: &ClientId,
        status: ClientStatus,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        let Some(record) = self.store.client(client).await? else {
            return Err(AdminError::NotFound(format!("client {client}")));
        };
        self.store.set_client_status(client, status).await?;
        let action = match status {
            ClientStatus::Active => "client.enable",
            ClientStatus::Disabled => "client.disable",
        };
        self.record(record.tenant, action, Some(client.as_str()), now_ms)
            .await
    }

    pub(crate) fn store(&self) -> &dyn Store {
        self.store.as_ref()
    }

    async fn record(
        &self,
        tenant: TenantId,
        action: &str,
        detail: Option<&str>,
        now_ms: i64,
    ) -> Result<(), AdminError> {
        let actor = Actor::Operator;
        let record = AuditRecord {
            v: AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms: now_ms,
            tenant,
            principal: actor.audit_name(),
            session: None,
            roles: actor.roles(),
            auth_strength: AuthStrength::HostOperator.as_str().to_owned(),
            source: None,
            action: action.to_owned(),
            resource_type: None,
            resource_id: None,
            subjects: Vec::new(),
            categories: Vec::new(),
            purpose: None,
            outcome: Outcome::Success,
            detail: detail.map(str::to_owned),
        };
        Ok(self.store.append_audit(&[record]).await?)
    }
}
