//! What the SQLite store's unit tests share: an audit record, a tenant, a file migrated only
//! part of the way.

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

/// A fresh file (`db.sqlite` in the returned directory) migrated through `version` and no
/// further, and a connection to it: where a migration's test writes rows the old way.
pub(crate) async fn database_through(
    version: i64,
) -> (
    tempfile::TempDir,
    std::path::PathBuf,
    sqlx::SqliteConnection,
) {
    use sqlx::Connection;
    use sqlx::sqlite::{SqliteConnectOptions, SqliteJournalMode};

    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("db.sqlite");
    let options = SqliteConnectOptions::new()
        .filename(&path)
        .create_if_missing(true)
        .journal_mode(SqliteJournalMode::Wal);
    let mut connection = sqlx::SqliteConnection::connect_with(&options)
        .await
        .unwrap();
    crate::migrations::sqlite_through(version)
        .run(&mut connection)
        .await
        .unwrap();
    (dir, path, connection)
}
