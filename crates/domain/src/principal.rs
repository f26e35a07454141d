//! Who is asking, and the tenant they are bound to.
//!
//! A [`TenantScope`] is a proof value: only this crate's authentication code can build one
//! (after checking a token or an operator's authority), and every store method takes one.
//! So no code path reaches tenant data with a tenant id that came from a request.

use std::net::IpAddr;

use crate::ids::{ClientId, TenantId};
use crate::scopes::ScopeSet;

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
}

impl AuthStrength {
    pub fn as_str(self) -> &'static str {
        match self {
            AuthStrength::ClientKey => "client-key",
            AuthStrength::HostOperator => "host-operator",
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum Actor {
    Client { id: ClientId, name: String },
    Operator,
}

impl Actor {
    /// The audit trail's name for the actor: a kind and an id, never a person's name.
    pub fn audit_name(&self) -> String {
        match self {
            Actor::Client { id, .. } => format!("client/{id}"),
            Actor::Operator => "operator/cli".to_owned(),
        }
    }

    pub fn roles(&self) -> Vec<String> {
        match self {
            Actor::Client { .. } => vec!["integration".to_owned()],
            Actor::Operator => vec!["platform_operator".to_owned()],
        }
    }
}

/// An authenticated caller: the proof of tenant, who, what they may do, and from where.
#[derive(Clone, Debug)]
pub struct Principal {
    scope: TenantScope,
    actor: Actor,
    scopes: ScopeSet,
    strength: AuthStrength,
    /// Short, non-secret id of the token or session (for the audit trail and revocation).
    session: Option<String>,
    source: Option<IpAddr>,
}

impl Principal {
    pub(crate) fn new(
        scope: TenantScope,
        actor: Actor,
        scopes: ScopeSet,
        strength: AuthStrength,
        session: Option<String>,
        source: Option<IpAddr>,
    ) -> Principal {
        Principal {
            scope,
            actor,
            scopes,
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

    pub fn scopes(&self) -> &ScopeSet {
        &self.scopes
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
