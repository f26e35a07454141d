//! The embedded SQLite store: one database file (WAL, synchronous=FULL, foreign keys on).
//!
//! Writes go through a single writer connection and take the write lock at `BEGIN IMMEDIATE`,
//! so concurrent writers queue in the pool instead of failing with `SQLITE_BUSY`; reads use a
//! separate pool and, under WAL, never wait for the writer. The hottest reads, the group
//! committer's audit append and the commits of resource writes skip sqlx's connection threads
//! (`sqlite/direct.rs`, `sqlite/writer.rs`). The file and its directory are created readable by
//! the owner only.

use std::fs::{DirBuilder, OpenOptions};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Weak};
use std::time::Duration;

use carevault_domain::audit::AuditRecord;
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
mod writer;

use direct::DirectReads;
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
    /// The background checkpointer stops once this is dropped.
    _checkpointer: Arc<()>,
}

impl SqliteStore {
    /// Opens (creating if missing, mode 0600, parent directory 0700) and migrates the database.
    pub async fn open(path: &Path) -> Result<SqliteStore, StoreError> {
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
        let alive = Arc::new(());
        tokio::spawn(checkpoint_in_background(
            checkpointer,
            Arc::downgrade(&alive),
        ));
        Ok(SqliteStore {
            reader,
            writer,
            sync_writer: Arc::new(sync_writer),
            tickets: AtomicU64::new(0),
            direct,
            _checkpointer: alive,
        })
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

    /// The group committer's append, on the caller's thread, while it holds the store's
    /// write lock (the one writer connection of the pool).
    async fn append_audit_fast(&self, records: &[AuditRecord]) -> Option<StoreResult<()>> {
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
