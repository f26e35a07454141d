//! SQLite's search keys: one row of `audit_keys (tenant_id, bucket, key, first_seq)` per
//! distinct key per segment, in a `WITHOUT ROWID` table (the rows are the index), grouped in
//! buckets of sequence numbers (see [`BUCKET_SHIFT`](crate::audit::BUCKET_SHIFT)) that a search
//! walks newest first. The layout `implement_audit_store!` is given for SQLite; the group
//! committer's append (`writer.rs`, through rusqlite) writes the same rows with the same
//! statement.

use carevault_domain::ids::TenantId;
use carevault_domain::store::StoreResult;
use sqlx::sqlite::SqliteConnection;

use super::audit_implementation::segment_insert;
use crate::audit::{
    BUCKETS_PER_QUERY, DELETE_SEGMENTS_THROUGH, INSERT_SEGMENT, NewSegment, bucket_of, keys_json,
    search_statement,
};
use crate::engine::backend;

/// A segment's search keys, from one JSON array of integers.
pub(crate) const INSERT_KEYS: &str = "INSERT INTO audit_keys (tenant_id, bucket, key, first_seq) \
     SELECT $1, $2, value, $3 FROM json_each($4)";

const DELETE_KEYS_THROUGH: &str =
    "DELETE FROM audit_keys WHERE tenant_id = $1 AND bucket <= $3 AND first_seq <= $2";

/// Stores a segment, then its keys.
pub(crate) async fn insert_segment(
    connection: &mut SqliteConnection,
    tenant: TenantId,
    segment: &NewSegment,
) -> StoreResult<()> {
    segment_insert(INSERT_SEGMENT, tenant, segment)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    if !segment.keys.is_empty() {
        sqlx::query(INSERT_KEYS)
            .bind(tenant.as_uuid())
            .bind(bucket_of(segment.first_seq))
            .bind(segment.first_seq)
            .bind(keys_json(&segment.keys))
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Retention: the keys of the segments up to `through_seq`, then the segments.
pub(crate) async fn delete_through(
    connection: &mut SqliteConnection,
    tenant: TenantId,
    through_seq: i64,
) -> StoreResult<()> {
    sqlx::query(DELETE_KEYS_THROUGH)
        .bind(tenant.as_uuid())
        .bind(through_seq)
        .bind(bucket_of(through_seq))
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    sqlx::query(DELETE_SEGMENTS_THROUGH)
        .bind(tenant.as_uuid())
        .bind(through_seq)
        .execute(&mut *connection)
        .await
        .map_err(backend)?;
    Ok(())
}

/// The buckets from `top` down a search by keys looks in next: [`BUCKETS_PER_QUERY`] of them,
/// none above `top` or below `bottom` (none at all without keys).
pub(crate) fn candidate_buckets(keys: usize, bottom: i64, top: i64) -> Vec<i64> {
    if keys == 0 {
        return Vec::new();
    }
    (bottom.max(top - BUCKETS_PER_QUERY + 1)..=top)
        .rev()
        .collect()
}

pub(crate) fn candidate_statement(keys: usize, buckets: usize) -> String {
    search_statement(keys, buckets)
}
