//! The SQLite audit append in one round trip.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is a hand-off
//! to that thread and back. Under load those hand-offs wait for a core, and every read waiting
//! on the shared commit waits with them. So the group committer's append is one multi-statement
//! query, `BEGIN IMMEDIATE` … `COMMIT`, chained onto a head this store remembers from its last
//! append instead of reading it inside the transaction.
//!
//! A remembered head can be stale: a write transaction (whose records commit with it), retention
//! or another process may have appended since. Then the first segment starts where the segment
//! of whoever appended since already starts (the primary key refuses it), and in any case the
//! statement that advances the head only matches the remembered sequence number, and the first
//! segment's `first_seq` is `NULL` (refused) unless that statement changed exactly one row. So a
//! stale head writes nothing; the append rolls back, reads the head afresh and tries once more.
//! Any other failure is returned as it is.

use std::collections::HashMap;
use std::sync::Mutex;

use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::chain::{ChainHash, GENESIS};
use carevault_domain::audit::storage::ChainHead;
use carevault_domain::ids::TenantId;
use carevault_domain::store::{StoreError, StoreResult};
use sqlx::sqlite::SqliteConnection;

use super::audit_implementation::head_on;
use super::shared_implementation::dynamic;
use crate::audit::{NewSegment, bucket_of, build_segments, keys_json};
use crate::engine::{backend, group_by_tenant};
use crate::sql::{Sql, Value, tenant_value};

/// A tenant's chain head as this store last wrote or read it.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
struct Head {
    seq: i64,
    hash: ChainHash,
    /// False for a tenant that has no `audit_heads` row yet.
    stored: bool,
}

/// The heads this store's appends left behind, per tenant.
#[derive(Default)]
pub(crate) struct HeadCache(Mutex<HashMap<TenantId, Head>>);

impl HeadCache {
    fn get(&self, tenant: TenantId) -> Option<Head> {
        self.0.lock().ok()?.get(&tenant).copied()
    }

    fn set(&self, tenant: TenantId, head: Head) {
        if let Ok(mut heads) = self.0.lock() {
            heads.insert(tenant, head);
        }
    }

    fn forget(&self, tenant: TenantId) {
        if let Ok(mut heads) = self.0.lock() {
            heads.remove(&tenant);
        }
    }
}

/// One tenant's part of an append: where it starts and what it writes.
struct Part {
    tenant: TenantId,
    from: Head,
    to: Head,
    segments: Vec<NewSegment>,
}

/// Appends `records` (any tenants), chained, in one transaction and one round trip.
pub(crate) async fn append(
    connection: &mut SqliteConnection,
    heads: &HeadCache,
    records: &[AuditRecord],
) -> StoreResult<()> {
    let groups = group_by_tenant(records);
    if groups.is_empty() {
        return Ok(());
    }
    let mut retried = false;
    loop {
        let mut parts = Vec::with_capacity(groups.len());
        for (tenant, group) in &groups {
            let from = match heads.get(*tenant) {
                Some(head) => head,
                None => read_head(connection, *tenant).await?,
            };
            let count = i64::try_from(group.len())
                .map_err(|_| StoreError::Backend("audit batch too large".to_owned()))?;
            let (segments, hash) = build_segments(from.seq, from.hash, group)?;
            parts.push(Part {
                tenant: *tenant,
                from,
                to: Head {
                    seq: from.seq + count,
                    hash,
                    stored: true,
                },
                segments,
            });
        }
        let result = dynamic(&statement(&parts)).execute(&mut *connection).await;
        match result {
            Ok(_) => {
                for part in &parts {
                    heads.set(part.tenant, part.to);
                }
                return Ok(());
            }
            Err(error) => {
                // The statements stop at the first failure with the transaction still open.
                let _ = sqlx::query("ROLLBACK").execute(&mut *connection).await;
                // Remember the heads as they are now: the retry starts from them.
                let mut moved = false;
                for part in &parts {
                    heads.forget(part.tenant);
                    let now = read_head(connection, part.tenant).await?;
                    heads.set(part.tenant, now);
                    moved |= now != part.from;
                }
                if moved && !retried {
                    retried = true;
                    continue;
                }
                return Err(backend(error));
            }
        }
    }
}

async fn read_head(connection: &mut SqliteConnection, tenant: TenantId) -> StoreResult<Head> {
    Ok(match head_on(connection, tenant).await? {
        None => Head {
            seq: 0,
            hash: GENESIS,
            stored: false,
        },
        Some(ChainHead {
            seq,
            hash: Some(hash),
        }) => Head {
            seq,
            hash,
            stored: true,
        },
        Some(ChainHead { hash: None, .. }) => {
            return Err(StoreError::Backend(
                "the audit head has no hash: its records were not moved into segments".to_owned(),
            ));
        }
    })
}

/// The whole transaction as one statement.
fn statement(parts: &[Part]) -> Sql {
    let mut sql = Sql::new();
    sql.push("BEGIN IMMEDIATE;\n");
    for part in parts {
        let tenant = sql.preset(tenant_value(part.tenant));
        if part.from.stored {
            sql.push("UPDATE audit_heads SET seq = ")
                .bind(Value::Int(part.to.seq))
                .push(", hash = ")
                .bind(Value::Bytes(part.to.hash.to_vec()))
                .push(" WHERE tenant_id = ")
                .again(tenant)
                .push(" AND seq = ")
                .bind(Value::Int(part.from.seq))
                .push(";\n");
        } else {
            sql.push("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (")
                .again(tenant)
                .push(", ")
                .bind(Value::Int(part.to.seq))
                .push(", ")
                .bind(Value::Bytes(part.to.hash.to_vec()))
                .push(");\n");
        }
        for (index, segment) in part.segments.iter().enumerate() {
            sql.push(
                "INSERT INTO audit_segments \
                 (tenant_id, first_seq, last_seq, min_time_ms, max_time_ms, prev_hash, body) \
                 VALUES (",
            )
            .again(tenant)
            .push(", ");
            // Only the first segment follows the head statement; `changes()` is its row count.
            if index == 0 {
                sql.push("CASE WHEN changes() = 1 THEN ")
                    .bind(Value::Int(segment.first_seq))
                    .push(" END");
            } else {
                sql.bind(Value::Int(segment.first_seq));
            }
            let first = sql.last();
            sql.push(", ")
                .bind_list([
                    Value::Int(segment.last_seq),
                    Value::Int(segment.min_time_ms),
                    Value::Int(segment.max_time_ms),
                    Value::Bytes(segment.prev_hash.to_vec()),
                    Value::Bytes(segment.body.clone()),
                ])
                .push(");\n");
            if !segment.keys.is_empty() {
                sql.push("INSERT INTO audit_keys (tenant_id, bucket, key, first_seq) SELECT ")
                    .again(tenant)
                    .push(", ")
                    .bind(Value::Int(bucket_of(segment.first_seq)))
                    .push(", value, ")
                    .again(first)
                    .push(" FROM json_each(")
                    .bind(Value::Text(keys_json(&segment.keys)))
                    .push(");\n");
            }
        }
    }
    sql.push("COMMIT;");
    sql
}
