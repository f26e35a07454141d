//! What the audit chain needs from storage beyond appending: heads for checkpoints, and the
//! stored rows (text and hash columns) for verification and export.
//!
//! These are operator operations on the host (checkpointer, `carevault audit verify|export|retain`),
//! so they take a tenant id rather than a [`crate::principal::TenantScope`]; the security
//! officer's search ([`AuditStore::audit_search`]), which answers people over HTTP, takes a scope.
//!
//! Stores keep records in *segments*: the records of one tenant that one commit appended, stored
//! together (the unit a store compresses and indexes). Retention removes whole segments only,
//! oldest first, behind a signed [`RetentionMarker`](super::retention::RetentionMarker).

use async_trait::async_trait;

use super::chain::ChainHash;
use super::retention::RetentionMarker;
use super::{AuditRecord, Outcome};
use crate::ids::TenantId;
use crate::principal::TenantScope;
use crate::store::StoreResult;

/// The last link of a tenant's chain as the head row records it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct ChainHead {
    pub seq: i64,
    /// `None` only for a chain whose records predate hashing and that has had no append since
    /// (the next append adopts it); a chain with no record has `Some(GENESIS)`.
    pub hash: Option<ChainHash>,
}

/// One stored audit row, as found: the verifier trusts none of it.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct StoredLink {
    pub seq: i64,
    pub time_ms: i64,
    /// The record's JSON as stored (the text the chain hashes).
    pub text: String,
    pub prev_hash: Option<Vec<u8>>,
    pub hash: Option<Vec<u8>>,
}

/// One entry of a walk through the stored trail: a record, a stored segment that cannot be
/// read at all (its bytes were damaged), or a segment whose time span was changed, named by the
/// sequence numbers it claims.
#[derive(Clone, PartialEq, Eq, Debug)]
pub enum StoredEntry {
    Link(StoredLink),
    Damaged {
        first_seq: i64,
        last_seq: i64,
    },
    /// The segment's stored time span disagrees with its records' own times (the records
    /// follow as links): someone moved them in or out of time-bounded searches.
    TimesChanged {
        first_seq: i64,
        last_seq: i64,
    },
}

/// A page of one tenant's records in sequence order: `seq > after_seq` and, when given,
/// `since_ms <= time_ms < until_ms`; about `limit` of them (a store returns whole segments, so
/// a page may run past `limit` to the end of its last segment).
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct LinkQuery {
    pub after_seq: i64,
    pub since_ms: Option<i64>,
    pub until_ms: Option<i64>,
    pub limit: usize,
}

/// What a search of one tenant's trail asks for: every given filter must match (an absent one
/// matches everything). Results come newest first (`seq` descending), at most `limit`, only
/// with `seq < before_seq` when given (keyset paging: pass the last `seq` of the previous page).
#[derive(Clone, PartialEq, Eq, Debug, Default)]
pub struct AuditFilter {
    /// A data subject (patient id) of the record.
    pub patient: Option<String>,
    /// The record's principal exactly as recorded: `person/<id>`, `client/<id>`, `operator/cli`.
    pub principal: Option<String>,
    /// The token or session id.
    pub session: Option<String>,
    /// The source address as recorded (an IP address).
    pub source: Option<String>,
    pub action: Option<String>,
    pub outcome: Option<Outcome>,
    /// `since_ms <= time_ms`.
    pub since_ms: Option<i64>,
    /// `time_ms < until_ms`.
    pub until_ms: Option<i64>,
    pub before_seq: Option<i64>,
    pub limit: usize,
}

#[async_trait]
pub trait AuditStore: Send + Sync {
    /// The head of every chain that has one: each tenant's, and the platform's.
    async fn audit_heads(&self) -> StoreResult<Vec<(TenantId, ChainHead)>>;

    /// The head of one chain; `None` when the tenant has never had a record.
    async fn audit_head(&self, tenant: TenantId) -> StoreResult<Option<ChainHead>>;

    /// The stored hash after record `seq` (for checkpoints of earlier links than the head).
    async fn audit_hash_at(&self, tenant: TenantId, seq: i64) -> StoreResult<Option<ChainHash>>;

    /// Stored records of one chain, in sequence order (a damaged segment as one entry). An empty
    /// page means the walk is over.
    async fn audit_links(
        &self,
        tenant: TenantId,
        query: &LinkQuery,
    ) -> StoreResult<Vec<StoredEntry>>;

    /// The retention markers of one chain, oldest first, as stored (the verifier checks them).
    async fn audit_retention_markers(&self, tenant: TenantId) -> StoreResult<Vec<RetentionMarker>>;

    /// The last sequence number of the longest run of oldest segments whose every record is older
    /// than `before_ms`: how far retention may remove. `None` when not even the oldest segment
    /// qualifies.
    async fn audit_retention_boundary(
        &self,
        tenant: TenantId,
        before_ms: i64,
    ) -> StoreResult<Option<i64>>;

    /// Stores the (signed) marker and removes every segment up to and including its sequence
    /// number, in one transaction. Refused unless the marker's sequence number ends a stored
    /// segment and its hash is the stored hash there. Returns the number of records removed.
    /// PostgreSQL runs this as the schema owner: the server's role may not delete.
    async fn audit_retain(&self, tenant: TenantId, marker: &RetentionMarker) -> StoreResult<u64>;

    /// Records of the scope's tenant matching the filter, newest first. A search by patient,
    /// principal, session or source reads an index, not the whole trail.
    async fn audit_search(
        &self,
        scope: &TenantScope,
        filter: &AuditFilter,
    ) -> StoreResult<Vec<AuditRecord>>;
}
