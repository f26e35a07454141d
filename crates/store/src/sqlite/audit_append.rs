//! The SQLite group append, on the caller's thread.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is a hand-off
//! to that thread and back; the group committer waited for two such wake-ups per commit, and
//! every read waiting on the commit waited with it. So the committer's append runs here instead,
//! through rusqlite on a connection of its own, synchronously on the committer's thread: `BEGIN
//! IMMEDIATE`, each tenant's head read afresh, the records chained onto it and stored as
//! segments with their search keys, the head moved forward, `COMMIT`. The head is read inside
//! the transaction that moves it, so an append never chains onto a stale head, whoever wrote
//! since (a write transaction, retention, another process).
//!
//! The caller holds the store's write lock (its one sqlx writer connection) meanwhile, so this
//! connection and the writer never wait on each other inside SQLite (whose busy handler sleeps
//! for milliseconds); another process still meets the busy timeout.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use carevault_domain::audit::AuditRecord;
use carevault_domain::store::{StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, TransactionBehavior, params};

use super::direct::stable_plans;
use crate::audit::{
    INSERT_SEGMENT, SELECT_HEAD, bucket_of, build_segments, keys_json, previous_hash,
};
use crate::engine::group_by_tenant;
use crate::sql::sqlite_placeholders;

/// Sets a tenant's head (creating it for the tenant's first record).
const UPSERT_HEAD: &str = "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// The connection the group committer appends through.
pub(crate) struct AuditWriter {
    connection: Mutex<Connection>,
    /// The statements, with SQLite's `?n` placeholders.
    select_head: String,
    upsert_head: String,
    insert_segment: String,
    insert_keys: String,
}

impl AuditWriter {
    /// `pragmas` are the writer's: the same durability (`synchronous`) and checkpoint backstop.
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        insert_keys: &str,
        pragmas: &[(&str, &str)],
    ) -> StoreResult<AuditWriter> {
        let connection = Connection::open_with_flags(
            path,
            OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        connection.busy_timeout(busy_timeout).map_err(backend)?;
        stable_plans(&connection)?;
        for (name, value) in pragmas {
            connection
                .pragma_update(None, name, value)
                .map_err(backend)?;
        }
        Ok(AuditWriter {
            connection: Mutex::new(connection),
            select_head: sqlite_placeholders(SELECT_HEAD),
            upsert_head: sqlite_placeholders(UPSERT_HEAD),
            insert_segment: sqlite_placeholders(INSERT_SEGMENT),
            insert_keys: sqlite_placeholders(insert_keys),
        })
    }

    /// Appends `records` (any tenants), chained, in one transaction. The caller holds the
    /// store's write lock.
    pub(crate) fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let groups = group_by_tenant(records);
        if groups.is_empty() {
            return Ok(());
        }
        let mut connection = self
            .connection
            .lock()
            .map_err(|_| StoreError::Backend("the audit writer is poisoned".to_owned()))?;
        // Dropped without `commit`, the transaction rolls back.
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for (tenant, group) in &groups {
            let tenant_bytes = tenant.as_uuid().into_bytes();
            let head: Option<(i64, Option<Vec<u8>>)> = {
                let mut statement = tx.prepare_cached(&self.select_head).map_err(backend)?;
                let mut rows = statement.query(params![tenant_bytes]).map_err(backend)?;
                match rows.next().map_err(backend)? {
                    Some(row) => Some((row.get(0).map_err(backend)?, row.get(1).map_err(backend)?)),
                    None => None,
                }
            };
            let (seq, stored) = head.unwrap_or((0, None));
            let (segments, hash) = build_segments(seq, previous_hash(seq, stored)?, group)?;
            let count = i64::try_from(group.len())
                .map_err(|_| StoreError::Backend("audit batch too large".to_owned()))?;
            tx.prepare_cached(&self.upsert_head)
                .and_then(|mut statement| {
                    statement.execute(params![tenant_bytes, seq + count, hash.as_slice()])
                })
                .map_err(backend)?;
            for segment in &segments {
                tx.prepare_cached(&self.insert_segment)
                    .and_then(|mut statement| {
                        statement.execute(params![
                            tenant_bytes,
                            segment.first_seq,
                            segment.last_seq,
                            segment.min_time_ms,
                            segment.max_time_ms,
                            segment.prev_hash.as_slice(),
                            segment.body,
                        ])
                    })
                    .map_err(backend)?;
                if !segment.keys.is_empty() {
                    tx.prepare_cached(&self.insert_keys)
                        .and_then(|mut statement| {
                            statement.execute(params![
                                tenant_bytes,
                                bucket_of(segment.first_seq),
                                segment.first_seq,
                                keys_json(&segment.keys),
                            ])
                        })
                        .map_err(backend)?;
                }
            }
        }
        tx.commit().map_err(backend)
    }
}
