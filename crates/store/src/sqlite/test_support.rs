//! What the SQLite store's unit tests share: an audit record and a tenant.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::store::{Store, TenantRecord, TenantStatus};

use crate::SqliteStore;

/// An operator's record of `action` on a Patient of `tenant`, told apart by `detail`.
pub(crate) fn record(tenant: TenantId, action: &str, detail: &str) -> AuditRecord {
    AuditRecord {
        v: 1,
        seq: 0,
        time_ms: 1,
        tenant,
        principal: "operator/cli".to_owned(),
        session: None,
        roles: Vec::new(),
        auth_strength: "host-operator".to_owned(),
        source: None,
        action: action.to_owned(),
        resource_type: Some("Patient".to_owned()),
        resource_id: None,
        subjects: Vec::new(),
        categories: Vec::new(),
        purpose: None,
        outcome: Outcome::Success,
        detail: Some(detail.to_owned()),
    }
}

/// A new active tenant in `store`.
pub(crate) async fn add_tenant(store: &SqliteStore) -> TenantId {
    let tenant = TenantId::generate();
    let record = TenantRecord {
        id: tenant,
        name: format!("tenant {tenant}"),
        status: TenantStatus::Active,
        created_ms: 1,
    };
    store.create_tenant(&record, &[]).await.unwrap();
    tenant
}
