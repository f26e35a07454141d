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
use carevault_domain::audit::chain::{ChainHash, GENESIS, hash_from_bytes};
use carevault_domain::ids::TenantId;
use carevault_domain::store::{StoreError, StoreResult};
use sqlx::sqlite::{SqliteArguments, SqliteConnection};
use sqlx::{Arguments as _, Row as _};

use crate::audit::{NewSegment, SELECT_HEAD, bucket_of, build_segments, keys_json};
use crate::engine::{backend, group_by_tenant};

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
        let (text, arguments) = statement(&parts)?;
        // Sound: the text is made only of the constant fragments below and numbered placeholders.
        let result = sqlx::query_with(sqlx::AssertSqlSafe(text), arguments)
            .execute(&mut *connection)
            .await;
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
    let row = sqlx::query(SELECT_HEAD)
        .bind(tenant.as_uuid())
        .fetch_optional(&mut *connection)
        .await
        .map_err(backend)?;
    let Some(row) = row else {
        return Ok(Head {
            seq: 0,
            hash: GENESIS,
            stored: false,
        });
    };
    let seq: i64 = row.try_get(0).map_err(backend)?;
    let hash: Option<Vec<u8>> = row.try_get(1).map_err(backend)?;
    let hash = match hash {
        Some(bytes) => hash_from_bytes(&bytes)
            .ok_or_else(|| StoreError::Backend("stored audit head hash is not valid".to_owned()))?,
        None if seq == 0 => GENESIS,
        None => {
            return Err(StoreError::Backend(
                "the audit head has no hash: its records were not moved into segments".to_owned(),
            ));
        }
    };
    Ok(Head {
        seq,
        hash,
        stored: true,
    })
}

/// The whole transaction as one text, with its arguments.
fn statement(parts: &[Part]) -> StoreResult<(String, SqliteArguments)> {
    let mut text = String::from("BEGIN IMMEDIATE;\n");
    let mut arguments = SqliteArguments::default();
    let mut next = 0usize;
    let mut add = |arguments: &mut SqliteArguments, value: Value| -> StoreResult<usize> {
        next += 1;
        let bound = match value {
            Value::Uuid(uuid) => arguments.add(uuid),
            Value::Int(number) => arguments.add(number),
            Value::Bytes(bytes) => arguments.add(bytes),
            Value::Text(text) => arguments.add(text),
        };
        bound.map_err(|error| StoreError::Backend(error.to_string()))?;
        Ok(next)
    };
    for part in parts {
        let tenant = add(&mut arguments, Value::Uuid(part.tenant.as_uuid()))?;
        let seq = add(&mut arguments, Value::Int(part.to.seq))?;
        let hash = add(&mut arguments, Value::Bytes(part.to.hash.to_vec()))?;
        if part.from.stored {
            let old = add(&mut arguments, Value::Int(part.from.seq))?;
            text.push_str(&format!(
                "UPDATE audit_heads SET seq = ${seq}, hash = ${hash} \
                 WHERE tenant_id = ${tenant} AND seq = ${old};\n"
            ));
        } else {
            text.push_str(&format!(
                "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES (${tenant}, ${seq}, ${hash});\n"
            ));
        }
        for (index, segment) in part.segments.iter().enumerate() {
            let first = add(&mut arguments, Value::Int(segment.first_seq))?;
            let last = add(&mut arguments, Value::Int(segment.last_seq))?;
            let min = add(&mut arguments, Value::Int(segment.min_time_ms))?;
            let max = add(&mut arguments, Value::Int(segment.max_time_ms))?;
            let prev = add(&mut arguments, Value::Bytes(segment.prev_hash.to_vec()))?;
            let body = add(&mut arguments, Value::Bytes(segment.body.clone()))?;
            // Only the first segment follows the head statement; `changes()` is its row count.
            let first_value = if index == 0 {
                format!("CASE WHEN changes() = 1 THEN ${first} END")
            } else {
                format!("${first}")
            };
            text.push_str(&format!(
                "INSERT INTO audit_segments \
                 (tenant_id, first_seq, last_seq, min_time_ms, max_time_ms, prev_hash, body) \
                 VALUES (${tenant}, {first_value}, ${last}, ${min}, ${max}, ${prev}, ${body});\n"
            ));
            if !segment.keys.is_empty() {
                let bucket = add(&mut arguments, Value::Int(bucket_of(segment.first_seq)))?;
                let keys = add(&mut arguments, Value::Text(keys_json(&segment.keys)))?;
                text.push_str(&format!(
                    "INSERT INTO audit_keys (tenant_id, bucket, key, first_seq) \
                     SELECT ${tenant}, ${bucket}, value, ${first} FROM json_each(${keys});\n"
                ));
            }
        }
    }
    text.push_str("COMMIT;");
    Ok((text, arguments))
}

enum Value {
    Uuid(uuid::Uuid),
    Int(i64),
    Bytes(Vec<u8>),
    Text(String),
}
