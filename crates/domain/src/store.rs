//! The storage contract. Adapters (SQLite, PostgreSQL) live in `carevault-store` and implement
//! [`Store`]; the conformance suite there runs against both.
//!
//! The store never sees plaintext personal data: bodies arrive sealed, search terms arrive as
//! blind tokens, and only clinical dates (documented in docs/threat-model.md) arrive as numbers.
//! Every method that touches tenant data takes a [`TenantScope`], and adapters bind every
//! statement to `scope.tenant()` (and, on PostgreSQL, set the row-level-security tenant for the
//! transaction).

use async_trait::async_trait;
use carevault_fhir::DateCondition;

use crate::audit::AuditRecord;
use crate::audit::storage::AuditStore;
use crate::ids::{ClientId, TenantId};
use crate::principal::TenantScope;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    /// A write's precondition failed: the current version is not the one the caller read.
    #[error("version conflict on {resource_type}/{id}")]
    Conflict { resource_type: String, id: String },
    /// A unique value already exists (tenant name, client id, token hash).
    #[error("already exists: {0}")]
    Duplicate(String),
    /// The database refused or failed. The message is for the log, never for a client.
    #[error("database error: {0}")]
    Backend(String),
}

pub type StoreResult<T> = Result<T, StoreError>;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum TenantStatus {
    Active,
    Quarantined,
}

impl TenantStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            TenantStatus::Active => "active",
            TenantStatus::Quarantined => "quarantined",
        }
    }

    pub fn parse(text: &str) -> Option<TenantStatus> {
        match text {
            "active" => Some(TenantStatus::Active),
            "quarantined" => Some(TenantStatus::Quarantined),
            _ => None,
        }
    }
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TenantRecord {
    pub id: TenantId,
    pub name: String,
    pub status: TenantStatus,
    pub created_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum KeyPurpose {
    Data,
    Index,
}

impl KeyPurpose {
    pub fn as_str(self) -> &'static str {
        match self {
            KeyPurpose::Data => "data",
            KeyPurpose::Index => "index",
        }
    }

    pub fn parse(text: &str) -> Option<KeyPurpose> {
        match text {
            "data" => Some(KeyPurpose::Data),
            "index" => Some(KeyPurpose::Index),
            _ => None,
        }
    }
}

/// A tenant key as stored: only ever wrapped by the key-encryption key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct WrappedKey {
    pub tenant: TenantId,
    pub purpose: KeyPurpose,
    pub version: u32,
    pub wrapped: Vec<u8>,
    /// Which key-encryption key wrapped it (so a rotation knows what to re-wrap).
    pub kek_id: String,
    pub created_ms: i64,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum ClientStatus {
    Active,
    Disabled,
}

impl ClientStatus {
    pub fn as_str(self) -> &'static str {
        match self {
            ClientStatus::Active => "active",
            ClientStatus::Disabled => "disabled",
        }
    }

    pub fn parse(text: &str) -> Option<ClientStatus> {
        match text {
            "active" => Some(ClientStatus::Active),
            "disabled" => Some(ClientStatus::Disabled),
            _ => None,
        }
    }
}

/// A registered machine client. Holds public keys only.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ClientRecord {
    pub id: ClientId,
    pub tenant: TenantId,
    pub name: String,
    /// The registered JWK Set (public keys), canonical JSON.
    pub jwks: String,
    /// The registered SMART scopes, canonical space-separated form.
    pub scopes: String,
    pub status: ClientStatus,
    pub created_ms: i64,
}

/// An issued access token. Only the SHA-256 of the token is stored.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct AccessTokenRecord {
    pub token_hash: [u8; 32],
    pub tenant: TenantId,
    pub client: ClientId,
    pub scopes: String,
    pub issued_ms: i64,
    pub expires_ms: i64,
}

/// A token found by its hash, with the current state of its tenant and client, read in one
/// query so that quarantine and disable take effect on the very next request.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct TokenLookup {
    pub token: AccessTokenRecord,
    pub tenant_status: TenantStatus,
    pub client_status: ClientStatus,
    pub client_name: String,
}

/// One stored version of a resource. `body` is sealed; empty for a tombstone.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredVersion {
    pub resource_type: String,
    pub id: String,
    pub version: i64,
    pub last_updated_ms: i64,
    pub deleted: bool,
    pub body: Vec<u8>,
}

/// What a write expects to find, checked inside the committing transaction.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Precondition {
    /// No version of this id exists yet.
    Absent,
    /// The current version (tombstones included) is exactly this one.
    CurrentVersion(i64),
}

/// A date the services range-search on, stored as plain numbers (see the threat model).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct DateEntry {
    pub param: String,
    pub low: i64,
    pub high: i64,
}

/// A new version to commit. The store replaces the search rows of (type, id) with `tokens` and
/// `dates` (none for a tombstone), so only current versions are searchable.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ResourceWrite {
    pub version: StoredVersion,
    pub precondition: Precondition,
    pub tokens: Vec<[u8; 16]>,
    pub dates: Vec<DateEntry>,
}

/// Order of search results; ties broken by id. Paging is keyset: results strictly after `after`.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum SortBy {
    LastUpdated,
    /// Earliest `low` among the resource's entries for these date params (a parameter and
    /// those it includes, whose values are a part of its own); resources without one sort as
    /// if their value were `i64::MAX`.
    Date(Vec<String>),
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub enum CandidateFilter {
    /// The resource has at least one of these blind tokens.
    AnyToken(Vec<[u8; 16]>),
    /// The resource has an entry for one of `params` (a parameter and those it includes)
    /// matching at least one condition.
    AnyDate {
        params: Vec<String>,
        conditions: Vec<DateCondition>,
    },
    /// The resource's id is one of these.
    Ids(Vec<String>),
    /// The resource's last update matches at least one condition (as a point range [t, t+1)).
    LastUpdated(Vec<DateCondition>),
}

/// A candidate search: current, non-deleted versions of one type matching every filter.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct CandidateQuery {
    pub resource_type: String,
    pub filters: Vec<CandidateFilter>,
    pub sort: SortBy,
    pub descending: bool,
    /// Keyset position: (sort value, id) of the last row already seen.
    pub after: Option<(i64, String)>,
    pub limit: usize,
}

#[derive(Clone, PartialEq, Eq, Debug)]
pub struct Candidate {
    pub sort_value: i64,
    pub version: StoredVersion,
}

/// History listing, newest first: ordered by (last_updated desc, type, id, version desc).
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct HistoryQuery {
    pub resource_type: String,
    /// `Some` for instance history, `None` for type history.
    pub id: Option<String>,
    pub since_ms: Option<i64>,
    /// Keyset position: (last_updated, id, version) of the last row already seen.
    pub before: Option<(i64, String, i64)>,
    pub limit: usize,
}

/// Every store also serves the audit chain's reads ([`AuditStore`]: heads, rows for
/// verification and export), so one `Arc<dyn Store>` reaches both.
#[async_trait]
pub trait Store: AuditStore + Send + Sync {
    /// Which engine, for health output and logs: "sqlite" or "postgres".
    fn engine(&self) -> &'static str;

    /// A cheap round trip for the readiness check.
    async fn ping(&self) -> StoreResult<()>;

    // ---- platform records (no tenant data) ----

    /// Creates a tenant and its wrapped keys atomically.
    async fn create_tenant(&self, tenant: &TenantRecord, keys: &[WrappedKey]) -> StoreResult<()>;
    async fn list_tenants(&self) -> StoreResult<Vec<TenantRecord>>;
    async fn tenant(&self, id: TenantId) -> StoreResult<Option<TenantRecord>>;
    /// Sets the status; returns false when the tenant does not exist. Quarantine also deletes
    /// every access token of the tenant, in the same transaction, so a later release does not
    /// revive tokens issued before it.
    async fn set_tenant_status(&self, id: TenantId, status: TenantStatus) -> StoreResult<bool>;
    async fn tenant_keys(&self, id: TenantId) -> StoreResult<Vec<WrappedKey>>;

    async fn create_client(&self, client: &ClientRecord) -> StoreResult<()>;
    async fn client(&self, id: &ClientId) -> StoreResult<Option<ClientRecord>>;
    async fn list_clients(&self, tenant: Option<TenantId>) -> StoreResult<Vec<ClientRecord>>;
    /// Sets the status; disabling also deletes the client's access tokens.
    async fn set_client_status(&self, id: &ClientId, status: ClientStatus) -> StoreResult<bool>;

    /// Remembers an assertion's `jti` until `expires_ms`. Returns false if this client already
    /// used it (a replay). Expired entries may be pruned here.
    async fn remember_jti(
        &self,
        client: &ClientId,
        jti: &str,
        expires_ms: i64,
        now_ms: i64,
    ) -> StoreResult<bool>;
    async fn store_access_token(&self, token: &AccessTokenRecord) -> StoreResult<()>;
    async fn find_access_token(&self, token_hash: &[u8; 32]) -> StoreResult<Option<TokenLookup>>;

    // ---- tenant data ----

    /// The newest version (tombstone included) of one resource.
    async fn current(
        &self,
        scope: &TenantScope,
        resource_type: &str,
        id: &str,
    ) -> StoreResult<Option<StoredVersion>>;
    async fn version(
        &self,
        scope: &TenantScope,
        resource_type: &str,
        id: &str,
        version: i64,
    ) -> StoreResult<Option<StoredVersion>>;
    /// Current, non-deleted versions of the given (type, id) pairs; missing ones are skipped.
    async fn current_many(
        &self,
        scope: &TenantScope,
        refs: &[(String, String)],
    ) -> StoreResult<Vec<StoredVersion>>;
    async fn history(
        &self,
        scope: &TenantScope,
        query: &HistoryQuery,
    ) -> StoreResult<Vec<StoredVersion>>;
    async fn search(
        &self,
        scope: &TenantScope,
        query: &CandidateQuery,
    ) -> StoreResult<Vec<Candidate>>;

    /// Commits the writes and their audit records in one transaction: all or nothing.
    /// A failed precondition rolls everything back and returns `Conflict`.
    async fn commit(
        &self,
        scope: &TenantScope,
        writes: &[ResourceWrite],
        audit: &[AuditRecord],
    ) -> StoreResult<()>;

    /// Appends audit records (any tenants) durably in one transaction. Used by the group
    /// committer for reads, and for events that write nothing else.
    async fn append_audit(&self, records: &[AuditRecord]) -> StoreResult<()>;

    /// All audit records of a tenant in sequence order (tests and `audit export` until the
    /// searchable trail lands).
    async fn audit_records(&self, tenant: TenantId) -> StoreResult<Vec<AuditRecord>>;
}
