//! SQLite's writes that matter for throughput, through rusqlite on a connection of their own:
//! the group committer's audit append and the commits of resource writes.
//!
//! sqlx runs each SQLite connection on a thread of its own, and every statement is a hand-off
//! to that thread and back; its multi-row statements are parsed afresh each time (their text
//! changes with the number of rows) and bind each value by looking its name up in a list, a
//! cost that grows with the square of the values. During an import the writer spent a fifth of
//! its time parsing and binding. Here every statement is a single-row one, prepared once and
//! kept in the connection's cache.
//!
//! **Audit append.** The committer's append runs synchronously on the committer's thread: `BEGIN
//! IMMEDIATE`, each tenant's head read afresh, the records chained onto it and stored as
//! segments with their search keys, the head moved forward, `COMMIT`. The head is read inside
//! the transaction that moves it, so an append never chains onto a stale head, whoever wrote
//! since (a write transaction, retention, another process).
//!
//! **Resource commits, grouped.** A commit queues itself and waits for the store's write lock;
//! whoever takes the lock commits every commit queued by then in one SQLite transaction, each
//! inside a savepoint of its own. A commit that fails (a version conflict) rolls back to its
//! savepoint and fails alone; the others commit. One transaction writes each page a group
//! touches once, where one per commit wrote the shared index pages (the right edge of each
//! table, the tokens many resources share) once per commit. If SQLite abandons the whole
//! transaction (a full disk, an I/O error), or `COMMIT` fails, every commit of the group fails:
//! none is reported written unless the transaction that holds it committed.
//!
//! The caller holds the store's write lock (its one sqlx writer connection) meanwhile, so this
//! connection and the writer never wait on each other inside SQLite (whose busy handler sleeps
//! for milliseconds); another process still meets the busy timeout.

use std::path::Path;
use std::sync::Mutex;
use std::time::Duration;

use carevault_domain::audit::AuditRecord;
use carevault_domain::ids::TenantId;
use carevault_domain::store::{Precondition, ResourceWrite, StoreError, StoreResult};
use rusqlite::{Connection, OpenFlags, OptionalExtension, TransactionBehavior, params};
use tokio::sync::oneshot;

use super::direct::stable_plans;
use crate::audit::{
    INSERT_SEGMENT, SELECT_HEAD, bucket_of, build_segments, keys_json, previous_hash,
};
use crate::engine::group_by_tenant;
use crate::sql::sqlite_placeholders;

mod ingest;

/// Sets a tenant's head (creating it for the tenant's first record).
const UPSERT_HEAD: &str = "INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, $2, $3) \
     ON CONFLICT (tenant_id) DO UPDATE SET seq = excluded.seq, hash = excluded.hash";
/// A new version; nothing is written when the version exists (the caller reports a conflict).
const INSERT_VERSION: &str = "INSERT INTO resource_versions \
     (tenant_id, resource_type, id, version, last_updated_ms, deleted, body) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING";
/// The current row, with the current version's blind tokens listed (16 bytes each, NULL for
/// none): an update or a delete finds the tokens it replaces there (migration 0011). An update
/// keeps the row, and so the resource's key, which the search rows name (migration 0012).
const UPSERT_CURRENT: &str = "INSERT INTO resource_current \
     (tenant_id, resource_type, id, version, last_updated_ms, deleted, tokens) \
     VALUES ($1, $2, $3, $4, $5, $6, $7) \
     ON CONFLICT (tenant_id, resource_type, id) DO UPDATE SET \
       version = excluded.version, last_updated_ms = excluded.last_updated_ms, \
       deleted = excluded.deleted, tokens = excluded.tokens \
     RETURNING rkey";
/// The current version number, the tokens listed for it and the resource's key.
const SELECT_CURRENT_TOKENS: &str = "SELECT version, tokens, rkey FROM resource_current \
     WHERE tenant_id = $1 AND resource_type = $2 AND id = $3";
/// A type's code, and a new type's.
const SELECT_TYPE_CODE: &str = "SELECT code FROM resource_types WHERE name = $1";
const INSERT_TYPE_CODE: &str = "INSERT INTO resource_types (name) VALUES ($1) RETURNING code";
/// One token row, by the table's key.
const DELETE_TOKEN: &str =
    "DELETE FROM search_tokens WHERE token = $1 AND type_code = $2 AND rkey = $3";
const INSERT_TOKEN: &str = "INSERT INTO search_tokens (token, type_code, rkey) \
     VALUES ($1, $2, $3) ON CONFLICT DO NOTHING";
/// A resource's date rows, and one of them (nothing is written when the row exists).
const DELETE_DATES: &str = "DELETE FROM search_dates WHERE rkey = $1";
const INSERT_DATE: &str = "INSERT INTO search_dates \
     (rkey, param, low, high, tenant_id, resource_type) \
     VALUES ($1, $2, $3, $4, $5, $6) ON CONFLICT DO NOTHING";

/// Most resource writes in one group, so that a commit waits for at most this many others
/// (about a fifth of a second of writing here).
const GROUP_WRITES: usize = 2_000;

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

/// Why a group written whole was not written.
enum Failure {
    /// One of its commits failed: written one by one, the others may still succeed.
    Commit,
    /// The transaction could not begin or commit: nothing of the group can be written.
    Group(StoreError),
}

/// One commit of resource writes and their audit records, waiting to be written.
pub(crate) struct PendingCommit {
    pub(crate) ticket: u64,
    pub(crate) tenant: TenantId,
    pub(crate) writes: Vec<ResourceWrite>,
    pub(crate) audit: Vec<AuditRecord>,
    pub(crate) done: oneshot::Sender<StoreResult<()>>,
}

/// The statements, with SQLite's `?n` placeholders.
struct Statements {
    select_head: String,
    upsert_head: String,
    insert_segment: String,
    insert_keys: String,
    select_current_tokens: String,
    select_type_code: String,
    insert_type_code: String,
    delete_token: String,
    delete_dates: String,
    insert_version: String,
    upsert_current: String,
    insert_token: String,
    insert_date: String,
}

/// The connection the group committer appends through and resource commits are written by.
pub(crate) struct Writer {
    connection: Mutex<Connection>,
    statements: Statements,
    /// Commits waiting for the write lock, in the order they queued.
    pending: Mutex<Vec<PendingCommit>>,
}

impl Writer {
    /// `pragmas` are the writer's: the same durability (`synchronous`) and checkpoint backstop.
    pub(crate) fn open(
        path: &Path,
        busy_timeout: Duration,
        insert_keys: &str,
        pragmas: &[(&str, &str)],
    ) -> StoreResult<Writer> {
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
        Ok(Writer {
            connection: Mutex::new(connection),
            statements: Statements {
                select_head: sqlite_placeholders(SELECT_HEAD),
                upsert_head: sqlite_placeholders(UPSERT_HEAD),
                insert_segment: sqlite_placeholders(INSERT_SEGMENT),
                insert_keys: sqlite_placeholders(insert_keys),
                select_current_tokens: sqlite_placeholders(SELECT_CURRENT_TOKENS),
                select_type_code: sqlite_placeholders(SELECT_TYPE_CODE),
                insert_type_code: sqlite_placeholders(INSERT_TYPE_CODE),
                delete_token: sqlite_placeholders(DELETE_TOKEN),
                delete_dates: sqlite_placeholders(DELETE_DATES),
                insert_version: sqlite_placeholders(INSERT_VERSION),
                upsert_current: sqlite_placeholders(UPSERT_CURRENT),
                insert_token: sqlite_placeholders(INSERT_TOKEN),
                insert_date: sqlite_placeholders(INSERT_DATE),
            },
            pending: Mutex::new(Vec::new()),
        })
    }

    fn connection(&self) -> StoreResult<std::sync::MutexGuard<'_, Connection>> {
        self.connection
            .lock()
            .map_err(|_| StoreError::Backend("the SQLite writer is poisoned".to_owned()))
    }

    /// Appends `records` (any tenants), chained, in one transaction. The caller holds the
    /// store's write lock.
    pub(crate) fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let groups = group_by_tenant(records);
        if groups.is_empty() {
            return Ok(());
        }
        let mut connection = self.connection()?;
        // Dropped without `commit`, the transaction rolls back.
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(backend)?;
        for (tenant, group) in &groups {
            self.append_chained(&tx, *tenant, group)?;
        }
        tx.commit().map_err(backend)
    }

    /// Chains `records` of one tenant onto its head, inside the caller's transaction.
    fn append_chained(
        &self,
        connection: &Connection,
        tenant: TenantId,
        records: &[&AuditRecord],
    ) -> StoreResult<()> {
        let statements = &self.statements;
        let tenant_bytes = tenant.as_uuid().into_bytes();
        let head: Option<(i64, Option<Vec<u8>>)> = {
            let mut statement = connection
                .prepare_cached(&statements.select_head)
                .map_err(backend)?;
            let mut rows = statement.query(params![tenant_bytes]).map_err(backend)?;
            match rows.next().map_err(backend)? {
                Some(row) => Some((row.get(0).map_err(backend)?, row.get(1).map_err(backend)?)),
                None => None,
            }
        };
        let (seq, stored) = head.unwrap_or((0, None));
        let (segments, hash) = build_segments(seq, previous_hash(seq, stored)?, records)?;
        let count = i64::try_from(records.len())
            .map_err(|_| StoreError::Backend("audit batch too large".to_owned()))?;
        connection
            .prepare_cached(&statements.upsert_head)
            .and_then(|mut statement| {
                statement.execute(params![tenant_bytes, seq + count, hash.as_slice()])
            })
            .map_err(backend)?;
        for segment in &segments {
            connection
                .prepare_cached(&statements.insert_segment)
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
                connection
                    .prepare_cached(&statements.insert_keys)
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
        Ok(())
    }

    /// Queues a commit; the next holder of the write lock writes it (see [`Writer::take`]).
    pub(crate) fn enqueue(&self, commit: PendingCommit) -> StoreResult<()> {
        self.pending
            .lock()
            .map_err(|_| StoreError::Backend("the SQLite commit queue is poisoned".to_owned()))?
            .push(commit);
        Ok(())
    }

    /// The queued commits to write next, oldest first: as many as fit in [`GROUP_WRITES`]
    /// writes, and always at least one. The caller holds the write lock.
    pub(crate) fn take(&self) -> Vec<PendingCommit> {
        let Ok(mut pending) = self.pending.lock() else {
            return Vec::new();
        };
        let mut writes = 0;
        let fit = pending
            .iter()
            .take_while(|commit| {
                writes += commit.writes.len();
                writes <= GROUP_WRITES
            })
            .count()
            .max(1)
            .min(pending.len());
        pending.drain(..fit).collect()
    }

    /// Removes the queued commit `ticket`, if it is still queued (its caller gave up waiting
    /// for the write lock, or stopped waiting); `false` when it is not queued (a holder of the
    /// lock has taken it).
    pub(crate) fn withdraw(&self, ticket: u64) -> bool {
        self.pending.lock().is_ok_and(|mut pending| {
            let before = pending.len();
            pending.retain(|commit| commit.ticket != ticket);
            pending.len() < before
        })
    }

    /// Writes `group` in one transaction and tells each commit's caller its outcome (see
    /// [`Writer::write_group`]). The caller holds the store's write lock.
    pub(crate) fn commit_group(&self, group: Vec<PendingCommit>) {
        let outcomes = self.write_group(&group);
        for (commit, outcome) in group.into_iter().zip(outcomes) {
            // A caller that stopped waiting is not told.
            let _ = commit.done.send(outcome);
        }
    }

    /// Each commit's outcome: the group written whole, or, when a commit in it fails, each
    /// commit in a savepoint of its own so the failed one leaves nothing and the others stay.
    fn write_group(&self, group: &[PendingCommit]) -> Vec<StoreResult<()>> {
        let everyone = |error: &StoreError| -> Vec<StoreResult<()>> {
            group
                .iter()
                .map(|_| Err(StoreError::Backend(error.to_string())))
                .collect()
        };
        let mut connection = match self.connection() {
            Ok(connection) => connection,
            Err(error) => return everyone(&error),
        };
        // Most groups fail nowhere: write them whole, without savepoints (a savepoint copies
        // every page it changes first, a tenth of the writer's time). If any commit fails,
        // nothing is kept and the group is written again, each commit in a savepoint of its own.
        match self.write_whole(&mut connection, group) {
            Ok(()) => return group.iter().map(|_| Ok(())).collect(),
            Err(Failure::Commit) => {}
            Err(Failure::Group(error)) => return everyone(&error),
        }
        let mut tx = match connection.transaction_with_behavior(TransactionBehavior::Immediate) {
            Ok(tx) => tx,
            Err(error) => return everyone(&backend(error)),
        };
        let mut outcomes = Vec::with_capacity(group.len());
        for commit in group {
            let outcome = match tx.savepoint() {
                Ok(mut savepoint) => match self.write_one(&savepoint, commit) {
                    Ok(()) => savepoint.commit().map_err(backend),
                    Err(error) => {
                        // A failed commit leaves nothing behind; the transaction goes on.
                        let undone = savepoint.rollback().and_then(|()| savepoint.commit());
                        match undone {
                            Ok(()) => Err(error),
                            // The transaction itself is gone.
                            Err(_) => return everyone(&error),
                        }
                    }
                },
                Err(error) => return everyone(&backend(error)),
            };
            // SQLite abandons the whole transaction on some errors (a full disk, I/O): then
            // nothing of this group is written, and later statements would run outside any
            // transaction.
            if tx.is_autocommit() {
                let error = outcome.err().unwrap_or_else(|| {
                    StoreError::Backend("SQLite abandoned the write transaction".to_owned())
                });
                return everyone(&error);
            }
            outcomes.push(outcome);
        }
        match tx.commit() {
            Ok(()) => outcomes,
            Err(error) => everyone(&backend(error)),
        }
    }

    /// Writes every commit of `group` in one transaction, or none of them.
    fn write_whole(
        &self,
        connection: &mut Connection,
        group: &[PendingCommit],
    ) -> Result<(), Failure> {
        let group_failed = |error: rusqlite::Error| Failure::Group(backend(error));
        let tx = connection
            .transaction_with_behavior(TransactionBehavior::Immediate)
            .map_err(group_failed)?;
        for commit in group {
            if self.write_one(&tx, commit).is_err() {
                // Dropped, the transaction rolls back; the caller finds which commit failed.
                return Err(Failure::Commit);
            }
        }
        tx.commit().map_err(group_failed)
    }

    /// One commit's writes, in order, then its audit records.
    fn write_one(&self, connection: &Connection, commit: &PendingCommit) -> StoreResult<()> {
        let statements = &self.statements;
        let tenant = commit.tenant.as_uuid().into_bytes();
        let run = |text: &str, values: &[&dyn rusqlite::ToSql]| -> StoreResult<usize> {
            connection
                .prepare_cached(text)
                .and_then(|mut statement| statement.execute(values))
                .map_err(backend)
        };
        // Type codes looked up in this commit, asked for only by writes with search rows to write
        // or replace: a Bundle writes a handful of types (a savepoint that rolls this commit back
        // takes any code it gave with it, and this list with it).
        let mut codes: Vec<(&str, i64)> = Vec::new();
        for write in &commit.writes {
            let version = &write.version;
            let (resource_type, id) = (version.resource_type.as_str(), version.id.as_str());
            let conflict = || StoreError::Conflict {
                resource_type: version.resource_type.clone(),
                id: version.id.clone(),
            };
            // A create of version 1 needs no look-up: every resource has a version 1 once it
            // exists (versions are never removed), so the primary key of `resource_versions`
            // refuses a create of an existing id, and a new id has no search rows to replace.
            let creates = write.precondition == Precondition::Absent && version.version == 1;
            if !creates {
                let current: Option<(i64, Option<Vec<u8>>, i64)> = connection
                    .prepare_cached(&statements.select_current_tokens)
                    .and_then(|mut statement| {
                        statement
                            .query_row(params![tenant, resource_type, id], |row| {
                                Ok((row.get(0)?, row.get(1)?, row.get(2)?))
                            })
                            .optional()
                    })
                    .map_err(backend)?;
                let holds = match write.precondition {
                    Precondition::Absent => current.is_none(),
                    Precondition::CurrentVersion(expected) => {
                        current.as_ref().map(|(version, _, _)| *version) == Some(expected)
                    }
                };
                if !holds {
                    return Err(conflict());
                }
                if let Some((_, listed, key)) = current {
                    let listed = listed.unwrap_or_default();
                    if !listed.len().is_multiple_of(16) {
                        return Err(StoreError::Backend(format!(
                            "the token list of {resource_type}/{id} is {} bytes, not a multiple \
                             of 16",
                            listed.len()
                        )));
                    }
                    if !listed.is_empty() {
                        let code = self.type_code(connection, resource_type, &mut codes)?;
                        for token in listed.chunks_exact(16) {
                            run(&statements.delete_token, params![token, code, key])?;
                        }
                    }
                    run(&statements.delete_dates, params![key])?;
                }
            }
            let inserted = run(
                &statements.insert_version,
                params![
                    tenant,
                    resource_type,
                    id,
                    version.version,
                    version.last_updated_ms,
                    version.deleted,
                    version.body,
                ],
            )?;
            if inserted == 0 {
                return Err(conflict());
            }
            let tokens: Option<Vec<u8>> =
                (!version.deleted && !write.tokens.is_empty()).then(|| write.tokens.concat());
            let key: i64 = connection
                .prepare_cached(&statements.upsert_current)
                .and_then(|mut statement| {
                    statement.query_row(
                        params![
                            tenant,
                            resource_type,
                            id,
                            version.version,
                            version.last_updated_ms,
                            version.deleted,
                            tokens,
                        ],
                        |row| row.get(0),
                    )
                })
                .map_err(backend)?;
            if version.deleted {
                continue;
            }
            if !write.tokens.is_empty() {
                let code = self.type_code(connection, resource_type, &mut codes)?;
                for token in &write.tokens {
                    run(
                        &statements.insert_token,
                        params![token.as_slice(), code, key],
                    )?;
                }
            }
            for date in &write.dates {
                run(
                    &statements.insert_date,
                    params![key, date.param, date.low, date.high, tenant, resource_type],
                )?;
            }
        }
        let records: Vec<&AuditRecord> = commit.audit.iter().collect();
        if !records.is_empty() {
            self.append_chained(connection, commit.tenant, &records)?;
        }
        Ok(())
    }

    /// The code of `resource_type` in `resource_types`, given it on first use (inside the
    /// caller's transaction: a code given in a transaction that rolls back goes with it).
    /// `known` holds the codes this commit looked up already.
    fn type_code<'a>(
        &self,
        connection: &Connection,
        resource_type: &'a str,
        known: &mut Vec<(&'a str, i64)>,
    ) -> StoreResult<i64> {
        if let Some((_, code)) = known.iter().find(|(name, _)| *name == resource_type) {
            return Ok(*code);
        }
        let code = self.look_up_type_code(connection, resource_type)?;
        known.push((resource_type, code));
        Ok(code)
    }

    /// The code of `resource_type` from the database, given it if it has none.
    fn look_up_type_code(&self, connection: &Connection, resource_type: &str) -> StoreResult<i64> {
        let statements = &self.statements;
        let known: Option<i64> = connection
            .prepare_cached(&statements.select_type_code)
            .and_then(|mut statement| {
                statement
                    .query_row(params![resource_type], |row| row.get(0))
                    .optional()
            })
            .map_err(backend)?;
        match known {
            Some(code) => Ok(code),
            None => connection
                .prepare_cached(&statements.insert_type_code)
                .and_then(|mut statement| {
                    statement.query_row(params![resource_type], |row| row.get(0))
                })
                .map_err(backend),
        }
    }
}

#[cfg(test)]
mod tests;
