//! PostgreSQL's search keys: one `bigint[]` of a segment's distinct keys per segment, in
//! `audit_segment_keys (tenant_id, first_seq, keys)` under a GIN index, looked up through
//! `carevault_audit_segments_with_keys` (migration 0007 says why a function, and why one that
//! runs as the table's owner). The layout `implement_audit_store!` is given for PostgreSQL.
//!
//! A row of its own per key (`audit_keys`, as SQLite keeps them) cost about 145 bytes here: a
//! heap tuple header and line pointer, the tenant and segment again, and a B-tree entry, for
//! about two keys per record. An array of the segment's keys costs 8 bytes a key, and the GIN
//! index stores each key once with a compressed list of the segments holding it.

use carevault_domain::ids::TenantId;
use carevault_domain::store::StoreResult;
use sqlx::postgres::PgConnection;

use super::audit_implementation::segment_insert;
use crate::audit::{
    DELETE_SEGMENTS_THROUGH, INSERT_SEGMENT, NewSegment, array_search_statement, search_statement,
};
use crate::engine::backend;

/// A segment's search keys, as one array.
const INSERT_KEYS: &str =
    "INSERT INTO audit_segment_keys (tenant_id, first_seq, keys) VALUES ($1, $2, $3)";

const DELETE_KEYS_THROUGH: &str =
    "DELETE FROM audit_segment_keys WHERE tenant_id = $1 AND first_seq <= $2";

/// Stores a segment, then its keys.
pub(crate) async fn insert_segment(
    connection: &mut PgConnection,
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
            .bind(segment.first_seq)
            .bind(segment.keys.as_slice())
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// Retention: the keys of the segments up to `through_seq`, then the segments.
pub(crate) async fn delete_through(
    connection: &mut PgConnection,
    tenant: TenantId,
    through_seq: i64,
) -> StoreResult<()> {
    for statement in [DELETE_KEYS_THROUGH, DELETE_SEGMENTS_THROUGH] {
        sqlx::query(statement)
            .bind(tenant.as_uuid())
            .bind(through_seq)
            .execute(&mut *connection)
            .await
            .map_err(backend)?;
    }
    Ok(())
}

/// None: one look-up covers the whole trail before `before_first_seq` (see
/// [`array_search_statement`]).
pub(crate) fn candidate_buckets(_keys: usize, _bottom: i64, _top: i64) -> Vec<i64> {
    Vec::new()
}

pub(crate) fn candidate_statement(keys: usize, _buckets: usize) -> String {
    if keys == 0 {
        search_statement(0, 0)
    } else {
        array_search_statement(keys)
    }
}

#[cfg(test)]
mod migration_tests;
