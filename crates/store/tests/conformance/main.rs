//! The store conformance suite: every test is written once, against `Arc<dyn Store>` or
//! `Arc<dyn PeopleStore>`, and runs on SQLite (a fresh file per test) and on PostgreSQL (a fresh
//! database per test, from `CAREVAULT_TEST_POSTGRES_URL`; skipped with a message when that is
//! unset). One test binary; one module per area, each listing its tests in `conformance!`.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::PathBuf;
use std::sync::Arc;

use carevault_domain::ids::TenantId;
use carevault_domain::people::PeopleStore;
use carevault_domain::store::Store;
use carevault_store::{PgStore, SqliteStore};
use sqlx::{Connection, Row};

// ---------------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------------

/// The number of stored audit records (each segment covers `first_seq..=last_seq`).
const AUDIT_ROWS: &str =
    "SELECT CAST(coalesce(sum(last_seq - first_seq + 1), 0) AS BIGINT) FROM audit_segments";

/// Direct access to the database under the store, for checks the trait cannot express.
enum Raw {
    Sqlite(PathBuf),
    Postgres {
        owner_url: String,
        store: Arc<PgStore>,
    },
}

impl Raw {
    /// Runs one statement as the database owner (the SQLite file's user, the PostgreSQL
    /// schema owner); returns the error text if it was refused.
    async fn execute_as_owner(&self, statement: &'static str) -> Result<u64, String> {
        match self {
            Raw::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(statement)
                    .execute(&mut connection)
                    .await
                    .map(|done| done.rows_affected())
                    .map_err(|error| error.to_string())
            }
            Raw::Postgres { owner_url, .. } => {
                let mut connection = sqlx::PgConnection::connect(owner_url).await.unwrap();
                sqlx::query(statement)
                    .execute(&mut connection)
                    .await
                    .map(|done| done.rows_affected())
                    .map_err(|error| error.to_string())
            }
        }
    }

    /// Runs a `SELECT count(*) …` as the owner (PostgreSQL: a superuser, which row-level
    /// security does not restrict).
    async fn count_as_owner(&self, statement: &'static str) -> i64 {
        match self {
            Raw::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(statement)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
                    .get(0)
            }
            Raw::Postgres { owner_url, .. } => {
                let mut connection = sqlx::PgConnection::connect(owner_url).await.unwrap();
                sqlx::query(statement)
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }

    /// The first column of every row a statement returns, as bytes, read as the owner.
    async fn bytes_as_owner(&self, statement: &'static str) -> Vec<Vec<u8>> {
        match self {
            Raw::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query(statement)
                    .fetch_all(&mut connection)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect()
            }
            Raw::Postgres { owner_url, .. } => {
                let mut connection = sqlx::PgConnection::connect(owner_url).await.unwrap();
                sqlx::query(statement)
                    .fetch_all(&mut connection)
                    .await
                    .unwrap()
                    .iter()
                    .map(|row| row.get(0))
                    .collect()
            }
        }
    }

    /// A second store on the same database, as another server process or the CLI would open.
    async fn second_store(&self) -> Arc<dyn Store> {
        match self {
            Raw::Sqlite(path) => Arc::new(SqliteStore::open(path).await.unwrap()),
            Raw::Postgres { owner_url, .. } => Arc::new(PgStore::connect(owner_url).await.unwrap()),
        }
    }

    /// Whether the store under test makes read records durable in a journal before chaining
    /// them into the trail (SQLite, in the process that holds the journal).
    fn journals_reads(&self) -> bool {
        matches!(self, Raw::Sqlite(_))
    }

    /// Counts stored audit records as the owner (PostgreSQL: a superuser, which row-level
    /// security does not restrict).
    async fn audit_rows(&self) -> i64 {
        self.count_as_owner(AUDIT_ROWS).await
    }

    /// A tenant id as an SQL literal of the engine's column type.
    fn tenant_literal(&self, tenant: TenantId) -> String {
        match self {
            Raw::Sqlite(_) => format!("X'{}'", tenant.as_uuid().simple()),
            Raw::Postgres { .. } => format!("'{tenant}'::uuid"),
        }
    }

    /// Where the engine keeps the audit trail's search keys: SQLite one row per key per
    /// segment, PostgreSQL one array per segment.
    fn keys_table(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "audit_keys",
            Raw::Postgres { .. } => "audit_segment_keys",
        }
    }

    /// The search keys stored for a tenant's segments from `first_seq` to `last_seq`, one per
    /// key per segment, counted as the owner.
    async fn audit_keys(&self, tenant: TenantId, first_seq: i64, last_seq: i64) -> i64 {
        let tenant = self.tenant_literal(tenant);
        let count = match self {
            Raw::Sqlite(_) => "count(*)",
            Raw::Postgres { .. } => "CAST(coalesce(sum(cardinality(keys)), 0) AS BIGINT)",
        };
        let statement = format!(
            "SELECT {count} FROM {} WHERE tenant_id = {tenant} \
             AND first_seq BETWEEN {first_seq} AND {last_seq}",
            self.keys_table()
        );
        self.count_as_owner(statement.leak()).await
    }
}

/// One opened store seen through both traits, and the database under it.
struct Engine {
    store: Arc<dyn Store>,
    people: Arc<dyn PeopleStore>,
    raw: Raw,
}

async fn sqlite_engine(dir: &tempfile::TempDir) -> Engine {
    // A directory that does not exist yet: `open` creates it.
    let path = dir.path().join("data").join("carevault.db");
    let store = Arc::new(SqliteStore::open(&path).await.unwrap());
    Engine {
        store: store.clone(),
        people: store,
        raw: Raw::Sqlite(path),
    }
}

const POSTGRES_URL_VARIABLE: &str = "CAREVAULT_TEST_POSTGRES_URL";

/// A database created for one test and dropped after it.
struct TestDatabase {
    admin_url: String,
    name: String,
    url: String,
}

impl TestDatabase {
    async fn create() -> Option<TestDatabase> {
        let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
            eprintln!("skipping PostgreSQL conformance: {POSTGRES_URL_VARIABLE} is not set");
            return None;
        };
        let name = format!("cv_{}", uuid::Uuid::new_v4().simple());
        let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut admin)
            .await
            .unwrap();
        admin.close().await.unwrap();
        let url = with_database(&admin_url, &name);
        Some(TestDatabase {
            admin_url,
            name,
            url,
        })
    }

    async fn engine(&self) -> Engine {
        let store = Arc::new(PgStore::connect(&self.url).await.unwrap());
        Engine {
            store: store.clone(),
            people: store.clone(),
            raw: Raw::Postgres {
                owner_url: self.url.clone(),
                store,
            },
        }
    }
}

/// Drops the test database when the test ends, passed or failed. Runs on its own thread and
/// runtime because `Drop` cannot await.
impl Drop for TestDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let name = self.name.clone();
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = sqlx::PgConnection::connect(&admin_url).await.unwrap();
                sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                    "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
                )))
                .execute(&mut admin)
                .await
                .unwrap();
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test database {}", self.name);
        }
    }
}

/// The URL with its database name replaced.
fn with_database(url: &str, database: &str) -> String {
    let (base, query) = match url.split_once('?') {
        Some((base, query)) => (base, Some(query)),
        None => (url, None),
    };
    let authority_start = base.find("://").map_or(0, |index| index + 3);
    let path_start = base[authority_start..]
        .find('/')
        .map_or(base.len(), |index| authority_start + index);
    let mut result = format!("{}/{database}", &base[..path_start]);
    if let Some(query) = query {
        result.push('?');
        result.push_str(query);
    }
    result
}

/// Generates, for every listed test, one `#[tokio::test]` per engine, in submodules `sqlite` and
/// `postgres` of the module that lists them. Resource-store tests take
/// `(Arc<dyn Store>, &Raw)`; tests listed after `people:` take `&Engine`.
macro_rules! conformance {
    (people: $($name:ident),* $(,)?) => {
        conformance!(@engines engine; $($name),*);
    };
    ($($name:ident),* $(,)?) => {
        conformance!(@engines store; $($name),*);
    };
    (@engines $kind:ident; $($name:ident),*) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let engine = crate::sqlite_engine(&dir).await;
                    conformance!(@run $kind, super::$name, engine);
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(database) = crate::TestDatabase::create().await else {
                        return;
                    };
                    let engine = database.engine().await;
                    conformance!(@run $kind, super::$name, engine);
                    // `database` drops here (or while unwinding), dropping the database.
                }
            )*
        }
    };
    (@run store, $test:path, $engine:ident) => {
        $test($engine.store, &$engine.raw).await
    };
    (@run engine, $test:path, $engine:ident) => {
        $test(&$engine).await
    };
}

mod audit_chain;
mod audit_search;
mod fixtures;
mod isolation;
mod people;
mod people_access;
mod platform;
mod search;
mod writes;
