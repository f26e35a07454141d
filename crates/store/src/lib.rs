//! carevault-store: the SQLite and PostgreSQL adapters of
//! [`carevault_domain::store::Store`] and [`carevault_domain::people::PeopleStore`], their
//! migrations, and [`open_store`] / [`open_stores`], which pick one from a database URL.
//!
//! Both engines share one schema shape and one SQL text (see `sql.rs`); every statement on
//! tenant data names the tenant of the caller's `TenantScope`, and PostgreSQL adds row-level
//! security on top. The conformance suite in `tests/conformance/` runs against both.

mod audit;
pub mod audit_segment;
mod date_sql;
mod engine;
mod migrations;
mod people;
mod people_rows;
mod people_sql;
mod postgres;
mod sql;
mod sqlite;

use std::path::Path;
use std::sync::Arc;

use carevault_domain::people::PeopleStore;
use carevault_domain::store::{Store, StoreError};

pub use postgres::{APP_ROLE, PgStore, migrate};
pub use sqlite::SqliteStore;

/// Opens the store a URL names: `postgres://…` or `postgresql://…` → PostgreSQL;
/// `sqlite:/path`, `sqlite:///path` or a plain path → SQLite.
pub async fn open_store(database_url: &str) -> Result<Arc<dyn Store>, StoreError> {
    open_stores(database_url).await.map(|(store, _)| store)
}

/// Opens the store a URL names (as [`open_store`]) and returns it as both the resource store
/// and the people store: one database, one pool.
pub async fn open_stores(
    database_url: &str,
) -> Result<(Arc<dyn Store>, Arc<dyn PeopleStore>), StoreError> {
    if database_url.starts_with("postgres://") || database_url.starts_with("postgresql://") {
        let store = Arc::new(PgStore::connect(database_url).await?);
        return Ok((store.clone(), store));
    }
    let path = database_url
        .strip_prefix("sqlite://")
        .or_else(|| database_url.strip_prefix("sqlite:"))
        .unwrap_or(database_url);
    if path.is_empty() || path.contains("://") {
        return Err(StoreError::Backend(format!(
            "unsupported database URL (expected postgres://…, sqlite:/path or a file path): {}",
            describe_url(database_url)
        )));
    }
    let store = Arc::new(SqliteStore::open(Path::new(path)).await?);
    Ok((store.clone(), store))
}

/// The URL without credentials, for messages.
fn describe_url(url: &str) -> String {
    match (url.find("://"), url.rfind('@')) {
        (Some(scheme_end), Some(at)) if at > scheme_end => {
            format!("{}://…{}", &url[..scheme_end], &url[at..])
        }
        _ => url.to_owned(),
    }
}
