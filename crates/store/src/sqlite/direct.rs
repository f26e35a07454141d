//! The hottest SQLite reads, run on the caller's own thread.
//!
//! sqlx runs every SQLite connection on a thread of its own, so each statement is a hand-off:
//! the caller's task wakes the connection's thread and sleeps until that thread wakes it
//! back. On this two-core machine an HTTP read by id made three such round trips (the bearer
//! token, the resource, the audit commit) and the context switches took about a third of the
//! server's time. The bearer check, the read by id and the search's candidate statement (the
//! statements every request of the load makes) therefore run here instead, through rusqlite on
//! read-only connections, synchronously: each is one indexed lookup over pages that are
//! normally in memory (tens of microseconds), far shorter than the hand-off it replaces. A page
//! not in memory costs a disk read on the caller's thread.
//!
//! The statements are the shared ones in `sql.rs`, so both paths read the same rows; the rows
//! are decoded into the same types by the same helpers (`engine::token_lookup`).

use std::path::{Path, PathBuf};
use std::sync::Mutex;
use std::time::Duration;

use carevault_domain::ids::TenantId;
use carevault_domain::store::{Candidate, StoreError, StoreResult, StoredVersion, TokenLookup};
use rusqlite::config::DbConfig;
use rusqlite::types::{ToSqlOutput, ValueRef};
use rusqlite::{Connection, OpenFlags, Row, ToSql, params};

use crate::engine::{TokenColumns, token_lookup};
use crate::sql::{self, Sql, Value, sqlite_placeholders};

/// Prepared statements kept per connection: the fixed reads plus the shapes of search a
/// workload repeats.
const STATEMENTS_PER_CONNECTION: usize = 64;
/// Idle connections kept for reuse; more may be open while more threads read at once.
const IDLE_CONNECTIONS: usize = 8;

/// Read-only connections to one database file, opened on demand and reused.
pub(crate) struct DirectReads {
    path: PathBuf,
    busy_timeout: Duration,
    idle: Mutex<Vec<Connection>>,
    /// `sql::FIND_ACCESS_TOKEN` and `sql::SELECT_CURRENT` with SQLite's `?n` placeholders.
    find_access_token: String,
    select_current: String,
}

fn backend(error: rusqlite::Error) -> StoreError {
    StoreError::Backend(error.to_string())
}

impl ToSql for Value {
    fn to_sql(&self) -> rusqlite::Result<ToSqlOutput<'_>> {
        // The encodings sqlx uses for the same values, so both paths match the same rows.
        Ok(match self {
            Value::Uuid(uuid) => ToSqlOutput::Borrowed(ValueRef::Blob(uuid.as_bytes())),
            Value::Text(text) => ToSqlOutput::Borrowed(ValueRef::Text(text.as_bytes())),
            Value::Int(number) => ToSqlOutput::from(*number),
            Value::Bool(flag) => ToSqlOutput::from(i64::from(*flag)),
            Value::Bytes(bytes) => ToSqlOutput::Borrowed(ValueRef::Blob(bytes)),
        })
    }
}

/// Reads `sql::VERSION_COLUMNS` starting at column `first`.
fn version_from(row: &Row<'_>, first: usize) -> rusqlite::Result<StoredVersion> {
    Ok(StoredVersion {
        resource_type: row.get(first)?,
        id: row.get(first + 1)?,
        version: row.get(first + 2)?,
        last_updated_ms: row.get(first + 3)?,
        deleted: row.get(first + 4)?,
        body: row.get(first + 5)?,
    })
}

/// Plans that do not depend on the values bound. SQLite is built with STAT4 here, and a
/// statement whose plan could use a bound value is prepared again whenever the value changes:
/// without this, every read by id was parsed and planned afresh (a seventh of the time of the
/// threads running reads). The statistics hold no per-value samples anyway.
pub(crate) fn stable_plans(connection: &Connection) -> StoreResult<()> {
    connection
        .set_db_config(DbConfig::SQLITE_DBCONFIG_ENABLE_QPSG, true)
        .map(|_| ())
        .map_err(backend)
}

impl DirectReads {
    /// Opens one connection now, so that a file that cannot be read fails at start-up.
    pub(crate) fn open(path: &Path, busy_timeout: Duration) -> StoreResult<DirectReads> {
        let reads = DirectReads {
            path: path.to_owned(),
            busy_timeout,
            idle: Mutex::new(Vec::new()),
            find_access_token: sqlite_placeholders(sql::FIND_ACCESS_TOKEN),
            select_current: sqlite_placeholders(sql::SELECT_CURRENT),
        };
        let connection = reads.connect()?;
        reads.put_back(connection);
        Ok(reads)
    }

    fn connect(&self) -> StoreResult<Connection> {
        let connection = Connection::open_with_flags(
            &self.path,
            OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
        )
        .map_err(backend)?;
        connection
            .busy_timeout(self.busy_timeout)
            .map_err(backend)?;
        connection.set_prepared_statement_cache_capacity(STATEMENTS_PER_CONNECTION);
        stable_plans(&connection)?;
        Ok(connection)
    }

    fn put_back(&self, connection: Connection) {
        if let Ok(mut idle) = self.idle.lock()
            && idle.len() < IDLE_CONNECTIONS
        {
            idle.push(connection);
        }
    }

    /// Runs `read` on an idle connection (or a new one), then returns the connection.
    fn with<T>(&self, read: impl FnOnce(&Connection) -> rusqlite::Result<T>) -> StoreResult<T> {
        let reused = self.idle.lock().ok().and_then(|mut idle| idle.pop());
        let connection = match reused {
            Some(connection) => connection,
            None => self.connect()?,
        };
        let result = read(&connection).map_err(backend);
        self.put_back(connection);
        result
    }

    /// `Store::find_access_token`.
    pub(crate) fn find_access_token(
        &self,
        token_hash: &[u8; 32],
    ) -> StoreResult<Option<TokenLookup>> {
        let columns = self.with(|connection| {
            let mut statement = connection.prepare_cached(&self.find_access_token)?;
            let mut rows = statement.query(params![token_hash.as_slice()])?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            Ok(Some(TokenColumns {
                token_hash: row.get(0)?,
                tenant: row.get(1)?,
                client: row.get(2)?,
                scopes: row.get(3)?,
                issued_ms: row.get(4)?,
                expires_ms: row.get(5)?,
                tenant_status: row.get(6)?,
                client_status: row.get(7)?,
                client_name: row.get(8)?,
            }))
        })?;
        columns.map(token_lookup).transpose()
    }

    /// `Store::current`.
    pub(crate) fn current(
        &self,
        tenant: TenantId,
        resource_type: &str,
        id: &str,
    ) -> StoreResult<Option<StoredVersion>> {
        self.with(|connection| {
            let mut statement = connection.prepare_cached(&self.select_current)?;
            let mut rows =
                statement.query(params![tenant.as_uuid().as_bytes(), resource_type, id])?;
            rows.next()?.map(|row| version_from(row, 0)).transpose()
        })
    }

    /// The first row of `statement`, its first `count` columns as integers (the filter sizes
    /// of `sql::filter_sizes`).
    pub(crate) fn integers(&self, statement: &Sql, count: usize) -> StoreResult<Option<Vec<i64>>> {
        let text = statement.sqlite_text();
        self.with(|connection| {
            let mut prepared = connection.prepare_cached(&text)?;
            let mut rows = prepared.query(rusqlite::params_from_iter(statement.values()))?;
            let Some(row) = rows.next()? else {
                return Ok(None);
            };
            (0..count)
                .map(|index| row.get(index))
                .collect::<rusqlite::Result<Vec<i64>>>()
                .map(Some)
        })
    }

    /// The candidate statement of `Store::search` (`sql::search`): rows of the sort value and
    /// the version.
    pub(crate) fn candidates(&self, statement: &Sql) -> StoreResult<Vec<Candidate>> {
        let text = statement.sqlite_text();
        self.with(|connection| {
            let mut prepared = connection.prepare_cached(&text)?;
            let rows =
                prepared.query_map(rusqlite::params_from_iter(statement.values()), |row| {
                    Ok(Candidate {
                        sort_value: row.get(0)?,
                        version: version_from(row, 1)?,
                    })
                })?;
            rows.collect()
        })
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use rusqlite::Connection;

    /// The SQLite linked in is built as `.cargo/config.toml` asks: no memory statistics, and
    /// a page cache of its own per connection (no process-wide page-cache mutex). Both were
    /// measured on the read path (bench/notes.md); a build without the config would lose them
    /// silently.
    #[test]
    fn sqlite_is_built_without_process_wide_memory_locks() {
        let connection = Connection::open_in_memory().unwrap();
        let mut statement = connection.prepare("PRAGMA compile_options").unwrap();
        let options: Vec<String> = statement
            .query_map([], |row| row.get(0))
            .unwrap()
            .collect::<rusqlite::Result<_>>()
            .unwrap();
        assert!(
            options.iter().any(|option| option == "DEFAULT_MEMSTATUS=0"),
            "{options:?}"
        );
        assert!(
            !options
                .iter()
                .any(|option| option.starts_with("ENABLE_MEMORY_MANAGEMENT")),
            "{options:?}"
        );
    }
}
