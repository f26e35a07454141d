//! The embedded SQLite store: one database file (WAL, synchronous=FULL, foreign keys on).
//!
//! Writes go through a single writer connection and take the write lock at `BEGIN IMMEDIATE`,
//! so concurrent writers queue in the pool instead of failing with `SQLITE_BUSY`; reads use a
//! separate pool and, under WAL, never wait for the writer. The hottest reads, the group
//! committer's audit append and the commits of resource writes skip sqlx's connection threads
//! (`sqlite/direct.rs`, `sqlite/writer.rs`); the group committer's records go to the audit
//! journal beside the database and reach the trail in batches (`sqlite/journal.rs`). The file
//! and its directory are created readable by the owner only.

use std::collections::HashMap;
use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::ids::TenantId;
use carevault_domain::store::{ResourceWrite, StoreError, StoreResult};
use sqlx::sqlite::{
    SqliteConnectOptions, SqliteConnection, SqliteJournalMode, SqlitePool, SqlitePoolOptions,
    SqliteRow, SqliteSynchronous,
};
use sqlx::{Connection, Sqlite, Transaction};

use crate::audit::implement_audit_store;
use crate::engine::{backend, implement_store};
use crate::migrations;
use crate::people::implement_people_store;

mod audit_keys;
pub(crate) mod direct;
mod journal;
#[cfg(test)]
pub(crate) mod test_support;
mod writer;

use direct::DirectReads;
use journal::Journal;
use writer::{PendingCommit, Writer};

/// How long a statement waits for a lock held by another process (a backup, the CLI).
const BUSY_TIMEOUT: Duration = Duration::from_secs(10);
/// Read connections; reads run in parallel with the single writer under WAL.
const READERS: u32 = 8;
/// The writer's page cache, in KiB (negative: a size rather than a page count).
const WRITER_CACHE: &str = "-32768";
/// WAL pages before the writer checkpoints by itself (about 400 MB), a backstop only: normally
/// the background checkpointer keeps the WAL far shorter.
const WRITER_AUTOCHECKPOINT: &str = "100000";
/// How often the background checkpointer copies committed pages from the WAL into the
/// database. Copying them on the writer's thread (as SQLite's automatic checkpoint does, after
/// a commit) took a fifth of the writer's time during an import; on a connection of its own it
/// runs beside the writer (a passive checkpoint never blocks writers or readers). A page that
/// several commits change between two checkpoints is copied once: every 2 s instead of every
/// 200 ms, an import wrote 34 KB to disk per resource instead of 46 KB and ran 1.06-1.33x as
/// fast (10,000 patients, three rounds), with reads unchanged within noise.
const CHECKPOINT_EVERY: Duration = Duration::from_millis(2_000);
/// How often journaled read records are chained into the trail (`sqlite/journal.rs`). Each
/// ingestion is one transaction, so the trail's commits no longer follow the reads' (thousands
/// a second under load, each resetting every read connection's page cache). Searches of the
/// trail, `audit verify` and the checkpointer ingest first, so they never miss a record.
pub(crate) const INGEST_EVERY: Duration = Duration::from_millis(250);
/// How long a process without the journal waits, once, for the server to chain its journal.
const HOLDER_WAIT: Duration = Duration::from_secs(2);
/// Records journaled and not ingested beyond which an append ingests first: a bound on the
/// journal (and on the memory its pending records take) if ingestion falls behind.
const MAX_PENDING: usize = 100_000;

type TenantQuery<'q> = sqlx::query::Query<'q, Sqlite, <Sqlite as sqlx::Database>::Arguments>;

pub struct SqliteStore {
    reader: SqlitePool,
    writer: SqlitePool,
    /// The group committer's appends and the commits of resource writes (see
    /// `sqlite/writer.rs`).
    sync_writer: Arc<Writer>,
    /// Numbers the queued commits.
    tickets: AtomicU64,
    /// The bearer check, reads by id and searches, on the caller's thread.
    direct: DirectReads,
    /// The audit journal, unless another process (the server) holds it.
    journal: Option<Arc<Ingestion>>,
    /// Without the journal: the database, and whether this store has waited once for the
    /// holder of the journal to chain what it held (see [`SqliteStore::settle_audit`]).
    path: std::path::PathBuf,
    waited_for_holder: AtomicBool,
    /// The background checkpointer stops once this is dropped.
    _checkpointer: Arc<()>,
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600, parent directory 0700) and migrates the database.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
        SqliteStore::open_with(path, INGEST_EVERY).await
    }

    /// [`SqliteStore::open`], chaining the audit journal into the trail every `ingest_every`
    /// (tests use a long one to find records still in the journal).
    async fn open_with(path: &Path, ingest_every: Duration) -> Result<SqliteStore, StoreError> {
        prepare_file(path)?;
        let options = SqliteConnectOptions::new()
            .filename(path)
            .create_if_missing(false)
            .journal_mode(SqliteJournalMode::Wal)
            .synchronous(SqliteSynchronous::Full)
            .foreign_keys(true)
            .busy_timeout(BUSY_TIMEOUT)
            .pragma("temp_store", "MEMORY");
        // The one writer gets a larger page cache (the index pages an import dirties stay in
        // memory across statements instead of spilling mid-transaction); readers keep the
        // default, so resident memory stays bounded. Neither pool pings a connection before
        // handing it out (`test_before_acquire`): an embedded connection has no far end to
        // lose, and the ping is one more round trip to the connection's thread before every
        // statement (without it, over HTTP: reads by id 1.02–1.15×, searches by NHS number
        // 1.07–1.17×, same-run pairs).
        let writer = SqlitePoolOptions::new()
            .max_connections(1)
            .test_before_acquire(false)
            .connect_with(
                options
                    .clone()
                    .pragma("cache_size", WRITER_CACHE)
                    .pragma("wal_autocheckpoint", WRITER_AUTOCHECKPOINT),
            )
            .await
            .map_err(backend)?;
        migrations::sqlite()
            .run(&writer)
            .await
            .map_err(|error| StoreError::Backend(format!("migration failed: {error}")))?;
        {
            let mut connection = writer.acquire().await.map_err(backend)?;
            audit_implementation::convert_legacy(&mut connection).await?;
        }
        let checkpointer = SqliteConnection::connect_with(&options)
            .await
            .map_err(backend)?;
        let reader = SqlitePoolOptions::new()
            .max_connections(READERS)
            .test_before_acquire(false)
            .connect_with(options)
            .await
            .map_err(backend)?;
        let direct = DirectReads::open(path, BUSY_TIMEOUT)?;
        let sync_writer = Writer::open(
            path,
            BUSY_TIMEOUT,
            audit_keys::INSERT_KEYS,
            &[
                ("synchronous", "FULL"),
                ("foreign_keys", "ON"),
                ("temp_store", "MEMORY"),
                ("cache_size", WRITER_CACHE),
                ("wal_autocheckpoint", WRITER_AUTOCHECKPOINT),
            ],
        )?;
        let sync_writer = Arc::new(sync_writer);
        let journal = match Journal::open(path, sync_writer.journal_watermark()?)? {
            Some(journal) => {
                let ingestion = Arc::new(Ingestion {
                    journal,
                    lock: writer.clone(),
                    writer: Arc::clone(&sync_writer),
                    // Tenants whose records an earlier run held back: the first ingestion
                    // tries them again, and their appends wait for it.
                    failing: Mutex::new(
                        sync_writer
                            .held_back_tenants()?
                            .into_iter()
                            .map(|tenant| {
                                (
                                    tenant,
                                    "the audit trail cannot be written: records held back \
                                     by an earlier run could not be chained yet"
                                        .to_owned(),
                                )
                            })
                            .collect(),
                    ),
                    lost: AtomicBool::new(false),
                });
                // Recovery: what the last run journaled and did not ingest.
                ingestion.settle().await?;
                tokio::spawn(ingest_in_background(
                    Arc::downgrade(&ingestion),
                    ingest_every,
                ));
                Some(ingestion)
            }
            None => None,
        };
        let alive = Arc::new(());
        tokio::spawn(checkpoint_in_background(
            checkpointer,
            Arc::downgrade(&alive),
        ));
        Ok(SqliteStore {
            reader,
            writer,
            sync_writer,
            tickets: AtomicU64::new(0),
            direct,
            journal,
            path: path.to_owned(),
            waited_for_holder: AtomicBool::new(false),
            _checkpointer: alive,
        })
    }

    /// Before a write transaction, which may append audit records of its own: the records
    /// journaled before it are chained first, so that in this process the chain keeps the
    /// order in which things happened. A failure is logged by the ingestion, and the write
    /// goes on (its own records meet the same trail).
    async fn chain_journal_first(&self) {
        if let Some(ingestion) = &self.journal {
            let _ = ingestion.settle().await;
        }
    }

    /// Chains every journaled record into the trail, so that what follows reads it all. A
    /// store without the journal (the CLI beside the server) waits, the first time, until the
    /// server has chained what it had journaled by then (a quarter of a second, normally), so
    /// that `audit search` right after a request finds its record.
    pub(crate) async fn settle_audit(&self) -> StoreResult<()> {
        if let Some(ingestion) = &self.journal {
            return ingestion.settle().await;
        }
        if !self.waited_for_holder.swap(true, Ordering::Relaxed)
            && journal::wait_for_holder(&self.path, HOLDER_WAIT).await
        {
            tracing::warn!(
                "the server has not chained its audit journal within {HOLDER_WAIT:?}; the \
                 newest read records may be missing from what follows"
            );
        }
        Ok(())
    }

    /// Before a search of `tenant`'s trail by `filter`: [`SqliteStore::settle_audit`], unless
    /// this process holds the journal and no record it has journaled and not chained could be
    /// among the results (none is of the tenant and matches the filter, no ingestion is under
    /// way, and no tenant's records are held back). An operator's search appends a record of
    /// its own, so without this every search paid for an ingestion of the one before it: a
    /// transaction and its sync.
    async fn settle_audit_for(&self, tenant: TenantId, filter: &AuditFilter) -> StoreResult<()> {
        if let Some(ingestion) = &self.journal
            && !ingestion.may_hold(tenant, filter)
        {
            return Ok(());
        }
        self.settle_audit().await
    }

    fn read_pool(&self) -> &SqlitePool {
        &self.reader
    }

    fn write_pool(&self) -> &SqlitePool {
        &self.writer
    }

    async fn begin_read(
        &self,
        _tenant: Option<TenantId>,
    ) -> StoreResult<Transaction<'static, Sqlite>> {
        self.reader.begin().await.map_err(backend)
    }

    /// One statement on a tenant's data, as its own read transaction: SQLite runs a lone
    /// statement atomically, so no `BEGIN`/`COMMIT` round trips to the connection's thread.
    async fn read_one(
        &self,
        _tenant: TenantId,
        query: TenantQuery<'_>,
    ) -> StoreResult<Option<SqliteRow>> {
        query.fetch_optional(&self.reader).await.map_err(backend)
    }

    /// Every row of one statement on a tenant's data (see [`SqliteStore::read_one`]).
    async fn read_all(
        &self,
        _tenant: TenantId,
        query: TenantQuery<'_>,
    ) -> StoreResult<Vec<SqliteRow>> {
        query.fetch_all(&self.reader).await.map_err(backend)
    }

    fn direct_reads(&self) -> Option<&DirectReads> {
        Some(&self.direct)
    }

    /// The group committer's append, on the caller's thread: to the audit journal when this
    /// process holds it, otherwise to the database while holding the store's write lock (the
    /// one writer connection of the pool).
    async fn append_audit_fast(&self, records: &[AuditRecord]) -> Option<StoreResult<()>> {
        if let Some(ingestion) = &self.journal {
            return Some(ingestion.append(records).await);
        }
        let _write_lock = match self.writer.acquire().await {
            Ok(connection) => connection,
            Err(error) => return Some(Err(backend(error))),
        };
        Some(self.sync_writer.append(records))
    }

    /// A commit of resource writes: queued, then written with every other commit queued by
    /// the time the write lock is free, in one transaction (see `sqlite/writer.rs`). Whoever
    /// takes the lock writes the queue; a caller whose commit was written meanwhile has its
    /// outcome already and does not take the lock.
    async fn commit_fast(
        &self,
        tenant: TenantId,
        writes: &[ResourceWrite],
        audit: &[AuditRecord],
    ) -> Option<StoreResult<()>> {
        self.chain_journal_first().await;
        let (done, mut outcome) = tokio::sync::oneshot::channel();
        let ticket = self.tickets.fetch_add(1, Ordering::Relaxed);
        let queued = self.sync_writer.enqueue(PendingCommit {
            ticket,
            tenant,
            writes: writes.to_vec(),
            audit: audit.to_vec(),
            done,
        });
        if let Err(error) = queued {
            return Some(Err(error));
        }
        // A caller that stops waiting (its request dropped) before a holder of the lock takes
        // its commit takes the commit back: it is not written later, behind the caller's back.
        let _withdraw = WithdrawOnDrop {
            writer: &self.sync_writer,
            ticket,
        };
        let lost = || StoreError::Backend("the SQLite writer stopped before answering".to_owned());
        let lock = tokio::select! {
            biased;
            written = &mut outcome => return Some(written.unwrap_or_else(|_| Err(lost()))),
            lock = self.writer.acquire() => lock,
        };
        let mut lock = match lock {
            Ok(lock) => lock,
            Err(error) if self.sync_writer.withdraw(ticket) => return Some(Err(backend(error))),
            // Taken by a holder of the lock: its outcome is on the way.
            Err(_) => return Some(outcome.await.unwrap_or_else(|_| Err(lost()))),
        };
        // Groups are written oldest first, so this commit is in one of the next few.
        loop {
            match outcome.try_recv() {
                Ok(written) => return Some(written),
                Err(tokio::sync::oneshot::error::TryRecvError::Closed) => return Some(Err(lost())),
                Err(tokio::sync::oneshot::error::TryRecvError::Empty) => {}
            }
            let group = self.sync_writer.take();
            if group.is_empty() {
                // Not reachable: this commit stays queued until a group holding it is written.
                return Some(Err(lost()));
            }
            let writer = Arc::clone(&self.sync_writer);
            // The lock goes with the group, so it is held until the group is written even if
            // this caller stops waiting.
            lock = match tokio::task::spawn_blocking(move || {
                writer.commit_group(group);
                lock
            })
            .await
            {
                Ok(lock) => lock,
                Err(error) => {
                    tracing::error!(%error, "the SQLite group commit failed");
                    return Some(outcome.await.unwrap_or_else(|_| Err(lost())));
                }
            };
        }
    }

    async fn begin_write(
        &self,
        _tenant: Option<TenantId>,
    ) -> StoreResult<Transaction<'static, Sqlite>> {
        self.chain_journal_first().await;
        self.writer
            .begin_with("BEGIN IMMEDIATE")
            .await
            .map_err(backend)
    }

    /// SQLite has one owner: the writer.
    async fn begin_owner(&self, tenant: TenantId) -> StoreResult<Transaction<'static, Sqlite>> {
        self.begin_write(Some(tenant)).await
    }

    /// SQLite has no row-level security; every statement names its tenant.
    async fn enter_tenant(
        _connection: &mut SqliteConnection,
        _tenant: TenantId,
    ) -> StoreResult<()> {
        Ok(())
    }
}

/// Removes a queued commit from the queue when dropped, unless a holder of the write lock has
/// taken it already (then it is written, and its outcome is sent whether or not anyone waits).
struct WithdrawOnDrop<'a> {
    writer: &'a Writer,
    ticket: u64,
}

impl Drop for WithdrawOnDrop<'_> {
    fn drop(&mut self) {
        self.writer.withdraw(self.ticket);
    }
}

/// The audit journal and what chains it into the trail.
struct Ingestion {
    journal: Journal,
    /// The store's write lock (its one sqlx writer connection), held while ingesting.
    lock: SqlitePool,
    writer: Arc<Writer>,
    /// Tenants whose records the last ingestion could not chain, and why (held back in the
    /// database, or still in the journal when the whole ingestion failed). An append holding
    /// a record of one ingests first, and fails while that tenant still fails (its trail
    /// cannot be written, so its reads are refused). Other tenants go on.
    failing: Mutex<HashMap<TenantId, String>>,
    /// An ingestion was lost mid-way (its thread died): its records are only in the journal's
    /// files now, which the next start reads. Until then every append fails.
    lost: AtomicBool,
}

impl Ingestion {
    async fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        if self.failure_among(records).is_some() || self.journal.pending() >= MAX_PENDING {
            // A failure is logged by `settle` and shows in `failure_among` below.
            let _ = self.settle().await;
            if let Some(why) = self.failure_among(records) {
                return Err(StoreError::Backend(why));
            }
            if self.journal.pending() >= MAX_PENDING {
                return Err(StoreError::Backend(format!(
                    "the audit trail cannot be written: {MAX_PENDING} records wait in the \
                     journal and cannot be chained"
                )));
            }
        }
        self.journal.append(records)
    }

    /// Whether a record journaled and not yet in the trail could match a search of `tenant`'s
    /// trail by `filter`. Held-back records and an ingestion under way count as could.
    fn may_hold(&self, tenant: TenantId, filter: &AuditFilter) -> bool {
        let held_back = self
            .failing
            .lock()
            .map_or(true, |failing| !failing.is_empty());
        held_back
            || self.journal.any_unchained(|record| {
                record.tenant == tenant && crate::audit::search::may_match(record, filter)
            })
    }

    /// Why the trail of a tenant of `records` cannot be written, if it cannot.
    fn failure_among(&self, records: &[AuditRecord]) -> Option<String> {
        let failing = self.failing.lock().ok()?;
        if failing.is_empty() {
            return None;
        }
        records
            .iter()
            .find_map(|record| failing.get(&record.tenant).cloned())
    }

    /// Ingests everything pending, in one transaction, and retries the records held back for
    /// tenants that failed before. An error means nothing was written (the frames stay
    /// pending); a tenant whose records could not be chained is noted in `failing`, its
    /// records held back in the database.
    async fn settle(&self) -> StoreResult<()> {
        if self.lost.load(Ordering::Relaxed) {
            return Err(StoreError::Backend(
                "audit journal ingestion was interrupted; restart the server to recover it"
                    .to_owned(),
            ));
        }
        let retry = self.failing.lock().is_ok_and(|failing| !failing.is_empty());
        if self.journal.pending() == 0 && !retry {
            return Ok(());
        }
        let lock = self.lock.acquire().await.map_err(backend)?;
        let batch = self.journal.take()?;
        let writer = Arc::clone(&self.writer);
        // Off the async threads: an ingestion is a transaction of up to thousands of records.
        let ingested = tokio::task::spawn_blocking(move || {
            let result = writer.ingest(&batch.frames, batch.through);
            (result, batch, lock)
        })
        .await;
        let (result, batch) = match ingested {
            Ok((result, batch, _)) => (result, batch),
            Err(error) => {
                tracing::error!(%error, "audit journal ingestion was interrupted");
                self.lost.store(true, Ordering::Relaxed);
                return Err(StoreError::Backend(format!(
                    "audit journal ingestion was interrupted: {error}"
                )));
            }
        };
        let Ok(mut failing) = self.failing.lock() else {
            return Err(StoreError::Backend(
                "the audit journal's failures are poisoned".to_owned(),
            ));
        };
        match result {
            Ok(failed) => {
                self.journal.finish(Vec::new());
                *failing = failed
                    .iter()
                    .map(|(tenant, error)| (*tenant, describe(error)))
                    .collect();
                for (tenant, why) in failing.iter() {
                    tracing::error!(%tenant, error = %why, "journaled audit records could not be chained; they are held back");
                }
                Ok(())
            }
            Err(error) => {
                tracing::error!(%error, "audit journal ingestion failed");
                let why = describe(&error);
                for (_, records) in &batch.frames {
                    for record in records {
                        failing.insert(record.tenant, why.clone());
                    }
                }
                self.journal.finish(batch.frames);
                Err(error)
            }
        }
    }
}

fn describe(error: &StoreError) -> String {
    format!("the audit trail cannot be written: {error}")
}

/// Ingests the journal every `every` while the store lives. A failure is logged (and makes
/// appends fail until an ingestion succeeds); it is tried again next time.
async fn ingest_in_background(ingestion: Weak<Ingestion>, every: Duration) {
    loop {
        tokio::time::sleep(every).await;
        let Some(ingestion) = ingestion.upgrade() else {
            break;
        };
        // The error is logged by `settle`.
        let _ = ingestion.settle().await;
    }
}

/// Checkpoints the WAL every [`CHECKPOINT_EVERY`] while the store lives. A failure is logged
/// and tried again next time: the writer's own automatic checkpoint is the backstop.
async fn checkpoint_in_background(mut connection: SqliteConnection, store: Weak<()>) {
    loop {
        tokio::time::sleep(CHECKPOINT_EVERY).await;
        if store.strong_count() == 0 {
            break;
        }
        if let Err(error) = sqlx::query("PRAGMA wal_checkpoint(PASSIVE)")
            .execute(&mut connection)
            .await
        {
            tracing::warn!(%error, "the background WAL checkpoint failed");
        }
    }
    let _ = connection.close().await;
}

/// Creates the parent directory (0700) and the file (0600) if missing, so the database, its
/// WAL and shared-memory files (which SQLite creates with the database's mode) are never
/// readable by other users.
fn prepare_file(path: &Path) -> Result<(), StoreError> {
    let io = |what: &str, error: std::io::Error| {
        StoreError::Backend(format!("cannot {what} {}: {error}", path.display()))
    };
    if let Some(parent) = path
        .parent()
        .filter(|parent| !parent.as_os_str().is_empty())
    {
        DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(parent)
            .map_err(|error| io("create the directory of", error))?;
    }
    let file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(false)
        .mode(0o600)
        .open(path)
        .map_err(|error| io("create", error))?;
    let mode = file
        .metadata()
        .map_err(|error| io("inspect", error))?
        .permissions()
        .mode();
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format_args!("{:o}", mode & 0o777),
            "the database file is readable by other users; restricting it to its owner"
        );
        file.set_permissions(std::fs::Permissions::from_mode(0o600))
            .map_err(|error| io("restrict the permissions of", error))?;
    }
    Ok(())
}

implement_store!(SqliteStore, Sqlite, SqliteConnection, SqliteRow, "sqlite");
implement_people_store!(SqliteStore, Sqlite, SqliteRow);
implement_audit_store!(
    SqliteStore,
    Sqlite,
    SqliteConnection,
    SqliteRow,
    audit_keys,
    "SELECT count(*) FROM sqlite_master WHERE type = 'table' AND name = 'audit_log_v5'"
);
