//! The store conformance suite: every test is written once, against `Arc<dyn Store>`, and runs
//! on SQLite (a fresh file per test) and on PostgreSQL (a fresh database per test, from
//! `CAREVAULT_TEST_POSTGRES_URL`; skipped with a message when that is unset).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::collections::BTreeSet;
use std::path::PathBuf;
use std::sync::Arc;

use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::ids::{ClientId, TenantId};
use carevault_domain::principal::TenantScope;
use carevault_domain::store::{
    AccessTokenRecord, CandidateFilter, CandidateQuery, ClientRecord, ClientStatus, DateEntry,
    HistoryQuery, KeyPurpose, Precondition, ResourceWrite, SortBy, Store, StoreError,
    StoredVersion, TenantRecord, TenantStatus, WrappedKey,
};
use carevault_domain::testing::scope_for;
use carevault_fhir::{DateCondition, DatePrefix};
use carevault_store::{PgStore, SqliteStore};
use sqlx::{Connection, Row};

// ---------------------------------------------------------------------------------------------
// Engines
// ---------------------------------------------------------------------------------------------

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

    /// Counts audit rows as the owner (PostgreSQL: a superuser, which row-level security does
    /// not restrict).
    async fn audit_rows(&self) -> i64 {
        match self {
            Raw::Sqlite(path) => {
                let url = format!("sqlite://{}", path.display());
                let mut connection = sqlx::SqliteConnection::connect(&url).await.unwrap();
                sqlx::query("SELECT count(*) FROM audit_log")
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
                    .get(0)
            }
            Raw::Postgres { owner_url, .. } => {
                let mut connection = sqlx::PgConnection::connect(owner_url).await.unwrap();
                sqlx::query("SELECT count(*) FROM audit_log")
                    .fetch_one(&mut connection)
                    .await
                    .unwrap()
                    .get(0)
            }
        }
    }
}

async fn sqlite_engine(dir: &tempfile::TempDir) -> (Arc<dyn Store>, Raw) {
    // A directory that does not exist yet: `open` creates it.
    let path = dir.path().join("data").join("carevault.db");
    let store = SqliteStore::open(&path).await.unwrap();
    (Arc::new(store), Raw::Sqlite(path))
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

    async fn engine(&self) -> (Arc<dyn Store>, Raw) {
        let store = Arc::new(PgStore::connect(&self.url).await.unwrap());
        let raw = Raw::Postgres {
            owner_url: self.url.clone(),
            store: store.clone(),
        };
        (store, raw)
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

/// Generates, for every listed test, one `#[tokio::test]` per engine.
macro_rules! conformance {
    ($($name:ident),* $(,)?) => {
        mod sqlite {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let dir = tempfile::tempdir().unwrap();
                    let (store, raw) = super::sqlite_engine(&dir).await;
                    super::$name(store, &raw).await;
                }
            )*
        }
        mod postgres {
            $(
                #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
                async fn $name() {
                    let Some(database) = super::TestDatabase::create().await else {
                        return;
                    };
                    let (store, raw) = database.engine().await;
                    super::$name(store, &raw).await;
                    // `database` drops here (or while unwinding), dropping the database.
                }
            )*
        }
    };
}

conformance!(
    ping_and_engine,
    tenants_are_created_listed_and_quarantined,
    tenant_keys_round_trip,
    clients_are_created_listed_and_disabled,
    jti_replay_is_refused_until_expiry,
    access_tokens_reflect_quarantine_and_disable,
    commit_checks_preconditions,
    conflict_rolls_back_the_whole_commit,
    tombstones_are_current_but_not_searchable,
    history_is_newest_first_and_pages,
    search_by_tokens,
    search_by_date_follows_fhir_prefixes,
    search_by_last_updated_and_ids,
    search_sorts_and_pages,
    tenants_cannot_see_each_other,
    audit_sequences_are_contiguous_per_tenant,
    concurrent_commits_serialise,
    audit_log_refuses_update_and_delete,
    postgres_runs_as_a_role_bound_by_row_level_security,
    sqlite_file_is_private,
);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

const T0: i64 = 1_700_000_000_000;

async fn new_tenant(store: &Arc<dyn Store>, name: &str) -> (TenantId, TenantScope) {
    let id = TenantId::generate();
    let record = TenantRecord {
        id,
        name: format!("{name}-{id}"),
        status: TenantStatus::Active,
        created_ms: T0,
    };
    store.create_tenant(&record, &[]).await.unwrap();
    (id, scope_for(id))
}

fn version(resource_type: &str, id: &str, version: i64, updated: i64) -> StoredVersion {
    StoredVersion {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version,
        last_updated_ms: updated,
        deleted: false,
        body: format!("sealed {resource_type}/{id}/{version}").into_bytes(),
    }
}

fn create(resource_type: &str, id: &str, updated: i64) -> ResourceWrite {
    ResourceWrite {
        version: version(resource_type, id, 1, updated),
        precondition: Precondition::Absent,
        tokens: Vec::new(),
        dates: Vec::new(),
    }
}

fn update(resource_type: &str, id: &str, new_version: i64, updated: i64) -> ResourceWrite {
    ResourceWrite {
        version: version(resource_type, id, new_version, updated),
        precondition: Precondition::CurrentVersion(new_version - 1),
        tokens: Vec::new(),
        dates: Vec::new(),
    }
}

fn tombstone(resource_type: &str, id: &str, new_version: i64, updated: i64) -> ResourceWrite {
    let mut write = update(resource_type, id, new_version, updated);
    write.version.deleted = true;
    write.version.body = Vec::new();
    write
}

fn token(byte: u8) -> [u8; 16] {
    [byte; 16]
}

fn date(param: &str, low: i64, high: i64) -> DateEntry {
    DateEntry {
        param: param.to_owned(),
        low,
        high,
    }
}

fn audit(tenant: TenantId, action: &str, detail: &str) -> AuditRecord {
    AuditRecord {
        v: 1,
        seq: 0,
        time_ms: T0,
        tenant,
        principal: "operator/cli".to_owned(),
        session: None,
        roles: vec!["platform_operator".to_owned()],
        auth_strength: "host-operator".to_owned(),
        source: None,
        action: action.to_owned(),
        resource_type: Some("Patient".to_owned()),
        resource_id: Some("p1".to_owned()),
        subjects: vec!["p1".to_owned()],
        categories: vec!["demographics".to_owned()],
        purpose: None,
        outcome: Outcome::Success,
        detail: Some(detail.to_owned()),
    }
}

fn query(resource_type: &str, filters: Vec<CandidateFilter>) -> CandidateQuery {
    CandidateQuery {
        resource_type: resource_type.to_owned(),
        filters,
        sort: SortBy::LastUpdated,
        descending: false,
        after: None,
        limit: 100,
    }
}

async fn search_ids(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    query: &CandidateQuery,
) -> Vec<String> {
    store
        .search(scope, query)
        .await
        .unwrap()
        .into_iter()
        .map(|candidate| candidate.version.id)
        .collect()
}

fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}

// ---------------------------------------------------------------------------------------------
// Platform records
// ---------------------------------------------------------------------------------------------

async fn ping_and_engine(store: Arc<dyn Store>, raw: &Raw) {
    store.ping().await.unwrap();
    let expected = match raw {
        Raw::Sqlite(_) => "sqlite",
        Raw::Postgres { .. } => "postgres",
    };
    assert_eq!(store.engine(), expected);
}

async fn tenants_are_created_listed_and_quarantined(store: Arc<dyn Store>, _raw: &Raw) {
    let first = TenantRecord {
        id: TenantId::generate(),
        name: "alpha".to_owned(),
        status: TenantStatus::Active,
        created_ms: T0,
    };
    let second = TenantRecord {
        id: TenantId::generate(),
        name: "beta".to_owned(),
        status: TenantStatus::Active,
        created_ms: T0 + 1,
    };
    store.create_tenant(&first, &[]).await.unwrap();
    store.create_tenant(&second, &[]).await.unwrap();
    assert_eq!(
        store.list_tenants().await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(store.tenant(first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.tenant(TenantId::generate()).await.unwrap(), None);

    let same_name = TenantRecord {
        id: TenantId::generate(),
        ..first.clone()
    };
    assert!(matches!(
        store.create_tenant(&same_name, &[]).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(matches!(
        store.create_tenant(&first, &[]).await,
        Err(StoreError::Duplicate(_))
    ));

    assert!(
        store
            .set_tenant_status(first.id, TenantStatus::Quarantined)
            .await
            .unwrap()
    );
    assert_eq!(
        store.tenant(first.id).await.unwrap().unwrap().status,
        TenantStatus::Quarantined
    );
    assert_eq!(
        store.tenant(second.id).await.unwrap().unwrap().status,
        TenantStatus::Active
    );
    assert!(
        !store
            .set_tenant_status(TenantId::generate(), TenantStatus::Active)
            .await
            .unwrap()
    );
}

async fn tenant_keys_round_trip(store: Arc<dyn Store>, _raw: &Raw) {
    let id = TenantId::generate();
    let key = |purpose, version: u32| WrappedKey {
        tenant: id,
        purpose,
        version,
        wrapped: vec![version as u8; 60],
        kek_id: "kek-1".to_owned(),
        created_ms: T0 + i64::from(version),
    };
    let keys = vec![
        key(KeyPurpose::Index, 1),
        key(KeyPurpose::Data, 2),
        key(KeyPurpose::Data, 1),
    ];
    let record = TenantRecord {
        id,
        name: "keys".to_owned(),
        status: TenantStatus::Active,
        created_ms: T0,
    };
    store.create_tenant(&record, &keys).await.unwrap();
    assert_eq!(
        store.tenant_keys(id).await.unwrap(),
        vec![
            key(KeyPurpose::Data, 1),
            key(KeyPurpose::Data, 2),
            key(KeyPurpose::Index, 1)
        ]
    );
    assert!(
        store
            .tenant_keys(TenantId::generate())
            .await
            .unwrap()
            .is_empty()
    );

    // A failed key insert leaves no tenant behind (atomic).
    let other = TenantId::generate();
    let record = TenantRecord {
        id: other,
        name: "twice".to_owned(),
        status: TenantStatus::Active,
        created_ms: T0,
    };
    let doubled = vec![
        WrappedKey {
            tenant: other,
            ..key(KeyPurpose::Data, 1)
        },
        WrappedKey {
            tenant: other,
            ..key(KeyPurpose::Data, 1)
        },
    ];
    assert!(store.create_tenant(&record, &doubled).await.is_err());
    assert_eq!(store.tenant(other).await.unwrap(), None);
}

fn client(tenant: TenantId, name: &str) -> ClientRecord {
    ClientRecord {
        id: ClientId::generate(),
        tenant,
        name: name.to_owned(),
        jwks: r#"{"keys":[]}"#.to_owned(),
        scopes: "system/Patient.rs".to_owned(),
        status: ClientStatus::Active,
        created_ms: T0,
    }
}

async fn clients_are_created_listed_and_disabled(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, _) = new_tenant(&store, "a").await;
    let (b, _) = new_tenant(&store, "b").await;
    let first = client(a, "first");
    let second = client(a, "second");
    let third = client(b, "third");
    for record in [&first, &second, &third] {
        store.create_client(record).await.unwrap();
    }
    assert!(matches!(
        store.create_client(&first).await,
        Err(StoreError::Duplicate(_))
    ));
    assert!(
        store
            .create_client(&client(TenantId::generate(), "orphan"))
            .await
            .is_err()
    );

    assert_eq!(store.client(&first.id).await.unwrap(), Some(first.clone()));
    assert_eq!(store.client(&ClientId::generate()).await.unwrap(), None);
    assert_eq!(
        store.list_clients(Some(a)).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    assert_eq!(
        store.list_clients(Some(b)).await.unwrap(),
        vec![third.clone()]
    );
    assert_eq!(store.list_clients(None).await.unwrap().len(), 3);

    assert!(
        store
            .set_client_status(&first.id, ClientStatus::Disabled)
            .await
            .unwrap()
    );
    assert_eq!(
        store.client(&first.id).await.unwrap().unwrap().status,
        ClientStatus::Disabled
    );
    assert!(
        !store
            .set_client_status(&ClientId::generate(), ClientStatus::Active)
            .await
            .unwrap()
    );
}

async fn jti_replay_is_refused_until_expiry(store: Arc<dyn Store>, _raw: &Raw) {
    let (tenant, _) = new_tenant(&store, "jti").await;
    let one = client(tenant, "one");
    let two = client(tenant, "two");
    store.create_client(&one).await.unwrap();
    store.create_client(&two).await.unwrap();

    assert!(
        store
            .remember_jti(&one.id, "j1", T0 + 300_000, T0)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_jti(&one.id, "j1", T0 + 300_000, T0 + 1)
            .await
            .unwrap()
    );
    // Another client may use the same jti.
    assert!(
        store
            .remember_jti(&two.id, "j1", T0 + 300_000, T0 + 2)
            .await
            .unwrap()
    );
    assert!(
        store
            .remember_jti(&one.id, "j2", T0 + 300_000, T0 + 3)
            .await
            .unwrap()
    );
    // After expiry the entry is pruned (the assertion itself is then refused as expired).
    assert!(
        store
            .remember_jti(&one.id, "j1", T0 + 900_000, T0 + 300_000)
            .await
            .unwrap()
    );
    assert!(
        !store
            .remember_jti(&one.id, "j1", T0 + 900_000, T0 + 300_001)
            .await
            .unwrap()
    );
}

async fn access_tokens_reflect_quarantine_and_disable(store: Arc<dyn Store>, _raw: &Raw) {
    let (tenant, _) = new_tenant(&store, "tokens").await;
    let machine = client(tenant, "machine");
    store.create_client(&machine).await.unwrap();
    let token = AccessTokenRecord {
        token_hash: [7; 32],
        tenant,
        client: machine.id.clone(),
        scopes: "system/Patient.rs".to_owned(),
        issued_ms: T0,
        expires_ms: T0 + 300_000,
    };
    store.store_access_token(&token).await.unwrap();
    assert!(matches!(
        store.store_access_token(&token).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(store.find_access_token(&[8; 32]).await.unwrap(), None);

    let found = store.find_access_token(&[7; 32]).await.unwrap().unwrap();
    assert_eq!(found.token, token);
    assert_eq!(found.tenant_status, TenantStatus::Active);
    assert_eq!(found.client_status, ClientStatus::Active);
    assert_eq!(found.client_name, "machine");

    store
        .set_tenant_status(tenant, TenantStatus::Quarantined)
        .await
        .unwrap();
    let found = store.find_access_token(&[7; 32]).await.unwrap().unwrap();
    assert_eq!(found.tenant_status, TenantStatus::Quarantined);

    store
        .set_client_status(&machine.id, ClientStatus::Disabled)
        .await
        .unwrap();
    let found = store.find_access_token(&[7; 32]).await.unwrap().unwrap();
    assert_eq!(found.client_status, ClientStatus::Disabled);
}

// ---------------------------------------------------------------------------------------------
// Writes and reads
// ---------------------------------------------------------------------------------------------

async fn commit_checks_preconditions(store: Arc<dyn Store>, _raw: &Raw) {
    let (tenant, scope) = new_tenant(&store, "writes").await;
    let first = create("Patient", "p1", T0);
    store
        .commit(
            &scope,
            std::slice::from_ref(&first),
            &[audit(tenant, "create", "1")],
        )
        .await
        .unwrap();
    assert_eq!(
        store.current(&scope, "Patient", "p1").await.unwrap(),
        Some(first.version.clone())
    );

    let again = store
        .commit(&scope, &[create("Patient", "p1", T0 + 1)], &[])
        .await;
    assert!(matches!(again, Err(StoreError::Conflict { ref id, .. }) if id == "p1"));

    let second = update("Patient", "p1", 2, T0 + 10);
    store
        .commit(&scope, std::slice::from_ref(&second), &[])
        .await
        .unwrap();
    let stale = store
        .commit(&scope, &[update("Patient", "p1", 2, T0 + 20)], &[])
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict { .. })));
    let wrong = ResourceWrite {
        precondition: Precondition::CurrentVersion(5),
        ..update("Patient", "p1", 3, T0 + 20)
    };
    assert!(matches!(
        store.commit(&scope, &[wrong], &[]).await,
        Err(StoreError::Conflict { .. })
    ));
    let missing = update("Patient", "nobody", 2, T0);
    assert!(matches!(
        store.commit(&scope, &[missing], &[]).await,
        Err(StoreError::Conflict { .. })
    ));

    assert_eq!(
        store.current(&scope, "Patient", "p1").await.unwrap(),
        Some(second.version.clone())
    );
    assert_eq!(
        store.version(&scope, "Patient", "p1", 1).await.unwrap(),
        Some(first.version)
    );
    assert_eq!(
        store.version(&scope, "Patient", "p1", 2).await.unwrap(),
        Some(second.version)
    );
    assert_eq!(
        store.version(&scope, "Patient", "p1", 3).await.unwrap(),
        None
    );
    assert_eq!(store.current(&scope, "Patient", "p2").await.unwrap(), None);
    // Same id, other type: a different resource.
    assert_eq!(
        store.current(&scope, "Observation", "p1").await.unwrap(),
        None
    );

    // Two writes to one resource in one commit see each other.
    store
        .commit(
            &scope,
            &[
                create("Patient", "p3", T0),
                update("Patient", "p3", 2, T0 + 1),
            ],
            &[],
        )
        .await
        .unwrap();
    assert_eq!(
        store
            .current(&scope, "Patient", "p3")
            .await
            .unwrap()
            .unwrap()
            .version,
        2
    );
    assert_eq!(store.audit_records(tenant).await.unwrap().len(), 1);
}

async fn conflict_rolls_back_the_whole_commit(store: Arc<dyn Store>, raw: &Raw) {
    let (tenant, scope) = new_tenant(&store, "rollback").await;
    let mut existing = create("Patient", "p1", T0);
    existing.tokens = vec![token(1)];
    store
        .commit(&scope, &[existing], &[audit(tenant, "create", "first")])
        .await
        .unwrap();
    let rows_before = raw.audit_rows().await;

    let mut fresh = create("Patient", "p2", T0 + 5);
    fresh.tokens = vec![token(1)];
    fresh.dates = vec![date("birthdate", 0, 10)];
    let mut conflicting = create("Patient", "p1", T0 + 5);
    conflicting.tokens = vec![token(2)];
    let outcome = store
        .commit(
            &scope,
            &[fresh, conflicting],
            &[audit(tenant, "create", "a"), audit(tenant, "create", "b")],
        )
        .await;
    assert!(matches!(outcome, Err(StoreError::Conflict { ref id, .. }) if id == "p1"));

    assert_eq!(store.current(&scope, "Patient", "p2").await.unwrap(), None);
    assert_eq!(
        store.version(&scope, "Patient", "p2", 1).await.unwrap(),
        None
    );
    assert_eq!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(1)])])
        )
        .await,
        strings(&["p1"])
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(2)])])
        )
        .await
        .is_empty()
    );
    let history = HistoryQuery {
        resource_type: "Patient".to_owned(),
        id: None,
        since_ms: None,
        before: None,
        limit: 10,
    };
    assert_eq!(store.history(&scope, &history).await.unwrap().len(), 1);
    assert_eq!(store.audit_records(tenant).await.unwrap().len(), 1);
    assert_eq!(raw.audit_rows().await, rows_before);

    // The next successful commit continues the sequence without a gap.
    store
        .commit(&scope, &[], &[audit(tenant, "read", "next")])
        .await
        .unwrap();
    let seqs: Vec<i64> = store
        .audit_records(tenant)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(seqs, vec![1, 2]);
}

async fn tombstones_are_current_but_not_searchable(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "tombstones").await;
    let mut live = create("Patient", "p1", T0);
    live.tokens = vec![token(3)];
    live.dates = vec![date("birthdate", 100, 200)];
    store
        .commit(&scope, &[live.clone(), create("Patient", "p2", T0)], &[])
        .await
        .unwrap();

    let mut deleted = tombstone("Patient", "p1", 2, T0 + 10);
    // Search rows sent with a tombstone are ignored: tombstones are never searchable.
    deleted.tokens = vec![token(3)];
    store.commit(&scope, &[deleted.clone()], &[]).await.unwrap();

    assert_eq!(
        store.current(&scope, "Patient", "p1").await.unwrap(),
        Some(deleted.version.clone())
    );
    assert_eq!(
        store.version(&scope, "Patient", "p1", 1).await.unwrap(),
        Some(live.version.clone())
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(3)])])
        )
        .await
        .is_empty()
    );
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![])).await,
        strings(&["p2"])
    );
    let refs = vec![
        ("Patient".to_owned(), "p1".to_owned()),
        ("Patient".to_owned(), "p2".to_owned()),
        ("Patient".to_owned(), "missing".to_owned()),
    ];
    let many = store.current_many(&scope, &refs).await.unwrap();
    assert_eq!(
        many.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        vec!["p2"]
    );

    // A resource can come back after deletion.
    let mut revived = update("Patient", "p1", 3, T0 + 20);
    revived.tokens = vec![token(3)];
    store.commit(&scope, &[revived], &[]).await.unwrap();
    assert_eq!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(3)])])
        )
        .await,
        strings(&["p1"])
    );
    let many = store.current_many(&scope, &refs).await.unwrap();
    assert_eq!(
        many.iter().map(|v| v.id.as_str()).collect::<Vec<_>>(),
        vec!["p1", "p2"]
    );
    assert!(store.current_many(&scope, &[]).await.unwrap().is_empty());
}

async fn history_is_newest_first_and_pages(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "history").await;
    // a: v1@10, v2@30, v3(tombstone)@50; b: v1@30, v2@40; c: v1@30; an Observation in between.
    store
        .commit(&scope, &[create("Patient", "a", 10)], &[])
        .await
        .unwrap();
    store
        .commit(
            &scope,
            &[
                update("Patient", "a", 2, 30),
                create("Patient", "b", 30),
                create("Patient", "c", 30),
            ],
            &[],
        )
        .await
        .unwrap();
    store
        .commit(&scope, &[create("Observation", "o", 35)], &[])
        .await
        .unwrap();
    store
        .commit(&scope, &[update("Patient", "b", 2, 40)], &[])
        .await
        .unwrap();
    store
        .commit(&scope, &[tombstone("Patient", "a", 3, 50)], &[])
        .await
        .unwrap();

    let all = HistoryQuery {
        resource_type: "Patient".to_owned(),
        id: None,
        since_ms: None,
        before: None,
        limit: 100,
    };
    let listed: Vec<(i64, String, i64)> = store
        .history(&scope, &all)
        .await
        .unwrap()
        .into_iter()
        .map(|v| (v.last_updated_ms, v.id, v.version))
        .collect();
    let expected: Vec<(i64, String, i64)> = vec![
        (50, "a".to_owned(), 3),
        (40, "b".to_owned(), 2),
        (30, "a".to_owned(), 2),
        (30, "b".to_owned(), 1),
        (30, "c".to_owned(), 1),
        (10, "a".to_owned(), 1),
    ];
    assert_eq!(listed, expected);
    let first = store.history(&scope, &all).await.unwrap();
    assert!(first[0].deleted && first[0].body.is_empty());

    // Keyset paging, two at a time, gives the same sequence.
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(
                &scope,
                &HistoryQuery {
                    before: before.clone(),
                    limit: 2,
                    ..all.clone()
                },
            )
            .await
            .unwrap();
        if page.is_empty() {
            break;
        }
        assert!(page.len() <= 2);
        let last = page.last().unwrap();
        before = Some((last.last_updated_ms, last.id.clone(), last.version));
        paged.extend(
            page.into_iter()
                .map(|v| (v.last_updated_ms, v.id, v.version)),
        );
    }
    assert_eq!(paged, expected);

    let instance = HistoryQuery {
        id: Some("a".to_owned()),
        ..all.clone()
    };
    let versions: Vec<i64> = store
        .history(&scope, &instance)
        .await
        .unwrap()
        .iter()
        .map(|v| v.version)
        .collect();
    assert_eq!(versions, vec![3, 2, 1]);
    let since = HistoryQuery {
        since_ms: Some(30),
        ..all.clone()
    };
    assert_eq!(store.history(&scope, &since).await.unwrap().len(), 5);
    let observations = HistoryQuery {
        resource_type: "Observation".to_owned(),
        ..all.clone()
    };
    assert_eq!(store.history(&scope, &observations).await.unwrap().len(), 1);
    assert!(
        store
            .history(&scope, &HistoryQuery { limit: 0, ..all })
            .await
            .unwrap()
            .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Search
// ---------------------------------------------------------------------------------------------

async fn search_by_tokens(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "tokens").await;
    let with = |id: &str, tokens: &[u8]| {
        let mut write = create("Patient", id, T0);
        write.tokens = tokens.iter().map(|byte| token(*byte)).collect();
        write
    };
    store
        .commit(
            &scope,
            &[
                with("p1", &[1, 2]),
                with("p2", &[2, 3]),
                with("p3", &[3, 3]),
            ],
            &[],
        )
        .await
        .unwrap();
    let mut observation = create("Observation", "o1", T0);
    observation.tokens = vec![token(1)];
    store.commit(&scope, &[observation], &[]).await.unwrap();

    let any = |bytes: &[u8]| CandidateFilter::AnyToken(bytes.iter().map(|b| token(*b)).collect());
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[1])])).await,
        strings(&["p1"])
    );
    assert_eq!(
        sorted(search_ids(&store, &scope, &query("Patient", vec![any(&[1, 3])])).await),
        strings(&["p1", "p2", "p3"])
    );
    // Every filter must match.
    assert_eq!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![any(&[2]), any(&[3])])
        )
        .await,
        strings(&["p2"])
    );
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[9])]))
            .await
            .is_empty()
    );
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[])]))
            .await
            .is_empty()
    );
    assert_eq!(
        search_ids(&store, &scope, &query("Observation", vec![any(&[1])])).await,
        strings(&["o1"])
    );

    // An update replaces the resource's tokens.
    let mut changed = update("Patient", "p1", 2, T0 + 1);
    changed.tokens = vec![token(4)];
    store.commit(&scope, &[changed], &[]).await.unwrap();
    assert!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[1])]))
            .await
            .is_empty()
    );
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![any(&[4])])).await,
        strings(&["p1"])
    );
    let found = store
        .search(&scope, &query("Patient", vec![any(&[4])]))
        .await
        .unwrap();
    assert_eq!(found[0].version.version, 2);
    assert_eq!(found[0].sort_value, T0 + 1);
}

async fn search_by_date_follows_fhir_prefixes(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "dates").await;
    // Resource ranges around the query ranges below, including ones touching their edges.
    let ranges: Vec<(i64, i64)> = vec![
        (0, 10),
        (10, 20),
        (15, 18),
        (5, 25),
        (20, 30),
        (25, 26),
        (30, 40),
        (0, 100),
        (19, 21),
        (10, 11),
    ];
    let mut writes = Vec::new();
    for (index, (low, high)) in ranges.iter().enumerate() {
        let mut write = create("Encounter", &format!("e{index}"), T0);
        write.dates = vec![date("date", *low, *high), date("other", 1000, 2000)];
        writes.push(write);
    }
    // Two entries for one param: matches when either does.
    let mut two = create("Encounter", "two", T0);
    two.dates = vec![date("date", 0, 5), date("date", 50, 60)];
    writes.push(two);
    store.commit(&scope, &writes, &[]).await.unwrap();

    let entries = |id: &str| -> Vec<(i64, i64)> {
        if id == "two" {
            return vec![(0, 5), (50, 60)];
        }
        let index: usize = id[1..].parse().unwrap();
        vec![ranges[index]]
    };
    let all_ids: Vec<String> = (0..ranges.len())
        .map(|i| format!("e{i}"))
        .chain(["two".to_owned()])
        .collect();
    let prefixes = [
        DatePrefix::Eq,
        DatePrefix::Ne,
        DatePrefix::Lt,
        DatePrefix::Le,
        DatePrefix::Gt,
        DatePrefix::Ge,
        DatePrefix::Sa,
        DatePrefix::Eb,
    ];
    for prefix in prefixes {
        for (low, high) in [(10, 20), (0, 100), (20, 21), (55, 56)] {
            let condition = DateCondition { prefix, low, high };
            let expected: Vec<String> = all_ids
                .iter()
                .filter(|id| entries(id).iter().any(|(l, h)| condition.matches(*l, *h)))
                .cloned()
                .collect();
            let filter = CandidateFilter::AnyDate {
                param: "date".to_owned(),
                conditions: vec![condition],
            };
            let found = sorted(search_ids(&store, &scope, &query("Encounter", vec![filter])).await);
            assert_eq!(found, sorted(expected), "{prefix:?} [{low}, {high})");
        }
    }
    // Several conditions: any may match.
    let either = CandidateFilter::AnyDate {
        param: "date".to_owned(),
        conditions: vec![
            DateCondition {
                prefix: DatePrefix::Eq,
                low: 30,
                high: 40,
            },
            DateCondition {
                prefix: DatePrefix::Eq,
                low: 25,
                high: 26,
            },
        ],
    };
    assert_eq!(
        sorted(search_ids(&store, &scope, &query("Encounter", vec![either])).await),
        strings(&["e5", "e6"])
    );
    // The param must match too.
    let other = CandidateFilter::AnyDate {
        param: "other".to_owned(),
        conditions: vec![DateCondition {
            prefix: DatePrefix::Eq,
            low: 10,
            high: 20,
        }],
    };
    assert!(
        search_ids(&store, &scope, &query("Encounter", vec![other]))
            .await
            .is_empty()
    );
    let none = CandidateFilter::AnyDate {
        param: "date".to_owned(),
        conditions: vec![],
    };
    assert!(
        search_ids(&store, &scope, &query("Encounter", vec![none]))
            .await
            .is_empty()
    );
}

async fn search_by_last_updated_and_ids(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "updated").await;
    let times = [100, 200, 300, 400];
    let writes: Vec<ResourceWrite> = times
        .iter()
        .enumerate()
        .map(|(i, t)| create("Patient", &format!("p{i}"), *t))
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();

    let prefixes = [
        DatePrefix::Eq,
        DatePrefix::Ne,
        DatePrefix::Lt,
        DatePrefix::Le,
        DatePrefix::Gt,
        DatePrefix::Ge,
        DatePrefix::Sa,
        DatePrefix::Eb,
    ];
    for prefix in prefixes {
        for (low, high) in [(200, 201), (150, 350), (300, 1000), (0, 100)] {
            let condition = DateCondition { prefix, low, high };
            let expected: Vec<String> = times
                .iter()
                .enumerate()
                .filter(|(_, t)| condition.matches(**t, **t + 1))
                .map(|(i, _)| format!("p{i}"))
                .collect();
            let filter = CandidateFilter::LastUpdated(vec![condition]);
            assert_eq!(
                search_ids(&store, &scope, &query("Patient", vec![filter])).await,
                expected,
                "{prefix:?} [{low}, {high})"
            );
        }
    }

    let ids = CandidateFilter::Ids(strings(&["p3", "p1", "nope"]));
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![ids.clone()])).await,
        strings(&["p1", "p3"])
    );
    let recent = CandidateFilter::LastUpdated(vec![DateCondition {
        prefix: DatePrefix::Ge,
        low: 250,
        high: 251,
    }]);
    assert_eq!(
        search_ids(&store, &scope, &query("Patient", vec![ids, recent])).await,
        strings(&["p3"])
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::Ids(vec![])])
        )
        .await
        .is_empty()
    );
}

async fn search_sorts_and_pages(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope) = new_tenant(&store, "sorting").await;
    // (id, last updated, birthdate lows): equal sort values are ordered by id.
    let rows: Vec<(&str, i64, Vec<i64>)> = vec![
        ("a", 300, vec![50]),
        ("b", 100, vec![70, 10]),
        ("c", 200, vec![]),
        ("d", 100, vec![50]),
        ("e", 400, vec![]),
        ("f", 200, vec![90]),
    ];
    let writes: Vec<ResourceWrite> = rows
        .iter()
        .map(|(id, updated, lows)| {
            let mut write = create("Patient", id, *updated);
            write.dates = lows
                .iter()
                .map(|low| date("birthdate", *low, low + 1))
                .collect();
            write.dates.push(date("death", 0, 1));
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();

    let by_updated = query("Patient", vec![]);
    let found = store.search(&scope, &by_updated).await.unwrap();
    let pairs: Vec<(i64, &str)> = found
        .iter()
        .map(|c| (c.sort_value, c.version.id.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (100, "b"),
            (100, "d"),
            (200, "c"),
            (200, "f"),
            (300, "a"),
            (400, "e")
        ]
    );

    let descending = CandidateQuery {
        descending: true,
        ..by_updated.clone()
    };
    assert_eq!(
        search_ids(&store, &scope, &descending).await,
        strings(&["e", "a", "f", "c", "d", "b"])
    );

    let by_birthdate = CandidateQuery {
        sort: SortBy::Date("birthdate".to_owned()),
        ..by_updated.clone()
    };
    let found = store.search(&scope, &by_birthdate).await.unwrap();
    let pairs: Vec<(i64, &str)> = found
        .iter()
        .map(|c| (c.sort_value, c.version.id.as_str()))
        .collect();
    assert_eq!(
        pairs,
        vec![
            (10, "b"),
            (50, "a"),
            (50, "d"),
            (90, "f"),
            (i64::MAX, "c"),
            (i64::MAX, "e")
        ]
    );

    // Keyset paging, both directions, both sorts, page sizes 1 to 4: same order as unpaged.
    for base in [by_updated.clone(), by_birthdate.clone()] {
        for descending in [false, true] {
            let whole = CandidateQuery {
                descending,
                ..base.clone()
            };
            let expected = search_ids(&store, &scope, &whole).await;
            for limit in 1..=4 {
                let mut after = None;
                let mut paged = Vec::new();
                loop {
                    let page = store
                        .search(
                            &scope,
                            &CandidateQuery {
                                after: after.clone(),
                                limit,
                                ..whole.clone()
                            },
                        )
                        .await
                        .unwrap();
                    if page.is_empty() {
                        break;
                    }
                    assert!(page.len() <= limit);
                    let last = page.last().unwrap();
                    after = Some((last.sort_value, last.version.id.clone()));
                    paged.extend(page.into_iter().map(|c| c.version.id));
                }
                assert_eq!(
                    paged, expected,
                    "{:?} descending={descending} limit={limit}",
                    base.sort
                );
            }
        }
    }
    let limited = CandidateQuery {
        limit: 2,
        ..by_updated.clone()
    };
    assert_eq!(
        search_ids(&store, &scope, &limited).await,
        strings(&["b", "d"])
    );
    assert!(
        search_ids(
            &store,
            &scope,
            &CandidateQuery {
                limit: 0,
                ..by_updated
            }
        )
        .await
        .is_empty()
    );
}

// ---------------------------------------------------------------------------------------------
// Isolation and audit
// ---------------------------------------------------------------------------------------------

async fn tenants_cannot_see_each_other(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "a").await;
    let (_, scope_b) = new_tenant(&store, "b").await;
    let mut write = create("Patient", "shared-id", T0);
    write.tokens = vec![token(5)];
    write.dates = vec![date("birthdate", 0, 10)];
    store
        .commit(
            &scope_a,
            &[write.clone(), update("Patient", "shared-id", 2, T0 + 1)],
            &[audit(a, "create", "x")],
        )
        .await
        .unwrap();
    let mut tokened = update("Patient", "shared-id", 3, T0 + 2);
    tokened.tokens = vec![token(5)];
    tokened.dates = vec![date("birthdate", 0, 10)];
    store.commit(&scope_a, &[tokened], &[]).await.unwrap();

    assert_eq!(
        store
            .current(&scope_b, "Patient", "shared-id")
            .await
            .unwrap(),
        None
    );
    assert_eq!(
        store
            .version(&scope_b, "Patient", "shared-id", 1)
            .await
            .unwrap(),
        None
    );
    let refs = vec![("Patient".to_owned(), "shared-id".to_owned())];
    assert!(
        store
            .current_many(&scope_b, &refs)
            .await
            .unwrap()
            .is_empty()
    );
    let history = HistoryQuery {
        resource_type: "Patient".to_owned(),
        id: None,
        since_ms: None,
        before: None,
        limit: 100,
    };
    assert!(store.history(&scope_b, &history).await.unwrap().is_empty());
    let instance = HistoryQuery {
        id: Some("shared-id".to_owned()),
        ..history.clone()
    };
    assert!(store.history(&scope_b, &instance).await.unwrap().is_empty());
    let filters: Vec<Vec<CandidateFilter>> = vec![
        vec![],
        vec![CandidateFilter::AnyToken(vec![token(5)])],
        vec![CandidateFilter::AnyDate {
            param: "birthdate".to_owned(),
            conditions: vec![DateCondition {
                prefix: DatePrefix::Eq,
                low: 0,
                high: 10,
            }],
        }],
        vec![CandidateFilter::Ids(strings(&["shared-id"]))],
        vec![CandidateFilter::LastUpdated(vec![DateCondition {
            prefix: DatePrefix::Ge,
            low: 0,
            high: 1,
        }])],
    ];
    for filter in &filters {
        assert!(
            search_ids(&store, &scope_b, &query("Patient", filter.clone()))
                .await
                .is_empty()
        );
        let by_date = CandidateQuery {
            sort: SortBy::Date("birthdate".to_owned()),
            ..query("Patient", filter.clone())
        };
        assert!(search_ids(&store, &scope_b, &by_date).await.is_empty());
        // Tenant A sees its own resource through the same filter.
        assert_eq!(
            search_ids(&store, &scope_a, &query("Patient", filter.clone())).await,
            strings(&["shared-id"])
        );
    }
    assert!(
        store
            .audit_records(scope_b.tenant())
            .await
            .unwrap()
            .is_empty()
    );

    // B's precondition sees only B's rows: the same id is absent there.
    store
        .commit(&scope_b, &[create("Patient", "shared-id", T0 + 5)], &[])
        .await
        .unwrap();
    assert_eq!(
        store
            .current(&scope_b, "Patient", "shared-id")
            .await
            .unwrap()
            .unwrap()
            .version,
        1
    );
    assert_eq!(
        store
            .current(&scope_a, "Patient", "shared-id")
            .await
            .unwrap()
            .unwrap()
            .version,
        3
    );
    // And B's new resource does not carry A's search rows.
    assert!(
        search_ids(&store, &scope_b, &query("Patient", filters[1].clone()))
            .await
            .is_empty()
    );
    assert_eq!(store.history(&scope_a, &instance).await.unwrap().len(), 3);
    assert_eq!(store.history(&scope_b, &instance).await.unwrap().len(), 1);
}

async fn audit_sequences_are_contiguous_per_tenant(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "a").await;
    let (b, _) = new_tenant(&store, "b").await;
    let platform = TenantId::platform();
    store.append_audit(&[]).await.unwrap();
    store
        .append_audit(&[
            audit(a, "read", "a1"),
            audit(b, "read", "b1"),
            audit(a, "search", "a2"),
            audit(platform, "tenant.create", "p1"),
            audit(b, "read", "b2"),
            audit(a, "read", "a3"),
        ])
        .await
        .unwrap();
    store
        .commit(
            &scope_a,
            &[create("Patient", "p1", T0)],
            &[audit(a, "create", "a4"), audit(a, "create", "a5")],
        )
        .await
        .unwrap();
    store.append_audit(&[audit(b, "read", "b3")]).await.unwrap();

    let records_a = store.audit_records(a).await.unwrap();
    let summary: Vec<(i64, String)> = records_a
        .iter()
        .map(|r| (r.seq, r.detail.clone().unwrap()))
        .collect();
    assert_eq!(
        summary,
        vec![
            (1, "a1".into()),
            (2, "a2".into()),
            (3, "a3".into()),
            (4, "a4".into()),
            (5, "a5".into())
        ]
    );
    // The stored record is the given record with its sequence number.
    let mut expected = audit(a, "search", "a2");
    expected.seq = 2;
    assert_eq!(records_a[1], expected);
    let summary_b: Vec<(i64, String)> = store
        .audit_records(b)
        .await
        .unwrap()
        .iter()
        .map(|r| (r.seq, r.detail.clone().unwrap()))
        .collect();
    assert_eq!(
        summary_b,
        vec![(1, "b1".into()), (2, "b2".into()), (3, "b3".into())]
    );
    let platform_records = store.audit_records(platform).await.unwrap();
    assert_eq!(platform_records.len(), 1);
    assert_eq!(platform_records[0].seq, 1);

    // A commit cannot carry another tenant's audit records.
    let outcome = store
        .commit(
            &scope_a,
            &[create("Patient", "p2", T0)],
            &[audit(b, "create", "x")],
        )
        .await;
    assert!(outcome.is_err());
    assert_eq!(
        store.current(&scope_a, "Patient", "p2").await.unwrap(),
        None
    );
    assert_eq!(store.audit_records(b).await.unwrap().len(), 3);
}

async fn concurrent_commits_serialise(store: Arc<dyn Store>, _raw: &Raw) {
    let (tenant, scope) = new_tenant(&store, "busy").await;
    store
        .commit(&scope, &[create("Patient", "hot", T0)], &[])
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for worker in 0..16 {
        let store = store.clone();
        let scope = scope.clone();
        tasks.push(tokio::spawn(async move {
            let mut conflicts = 0;
            for step in 0..5 {
                let id = format!("w{worker}-{step}");
                store
                    .commit(
                        &scope,
                        &[create("Patient", &id, T0)],
                        &[audit(tenant, "create", &id)],
                    )
                    .await
                    .unwrap();
                store
                    .append_audit(&[audit(tenant, "read", &id)])
                    .await
                    .unwrap();
                // Everyone races to update the same resource; exactly the winners succeed.
                let current = store
                    .current(&scope, "Patient", "hot")
                    .await
                    .unwrap()
                    .unwrap()
                    .version;
                match store
                    .commit(
                        &scope,
                        &[update("Patient", "hot", current + 1, T0)],
                        &[audit(tenant, "update", "hot")],
                    )
                    .await
                {
                    Ok(()) => {}
                    Err(StoreError::Conflict { .. }) => conflicts += 1,
                    Err(other) => panic!("unexpected error: {other}"),
                }
            }
            conflicts
        }));
    }
    let mut conflicts = 0;
    for task in tasks {
        conflicts += task.await.unwrap();
    }
    let updates = 16 * 5 - conflicts;
    let hot = store
        .current(&scope, "Patient", "hot")
        .await
        .unwrap()
        .unwrap();
    assert_eq!(hot.version, 1 + updates);
    let seqs: Vec<i64> = store
        .audit_records(tenant)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    let expected_count = 16 * 5 * 2 + updates;
    assert_eq!(seqs, (1..=expected_count).collect::<Vec<i64>>());
}

async fn audit_log_refuses_update_and_delete(store: Arc<dyn Store>, raw: &Raw) {
    let (a, _) = new_tenant(&store, "immutable").await;
    store
        .append_audit(&[audit(a, "read", "1"), audit(a, "read", "2")])
        .await
        .unwrap();
    let before = store.audit_records(a).await.unwrap();

    for statement in [
        "UPDATE audit_log SET outcome = 'denied'",
        "UPDATE audit_log SET record = '{}' WHERE seq = 1",
        "DELETE FROM audit_log WHERE seq = 2",
        "DELETE FROM audit_log",
    ] {
        assert!(
            raw.execute_as_owner(statement).await.is_err(),
            "{statement} was allowed"
        );
    }
    if let Raw::Postgres { .. } = raw {
        assert!(raw.execute_as_owner("TRUNCATE audit_log").await.is_err());
    }
    if let Raw::Postgres { store: pg, .. } = raw {
        // The server's own role has no UPDATE or DELETE privilege at all.
        let pool = pg.pool_for_tests();
        for statement in [
            "UPDATE audit_log SET outcome = 'denied'",
            "DELETE FROM audit_log",
        ] {
            let error = sqlx::query(statement)
                .execute(pool)
                .await
                .unwrap_err()
                .to_string();
            assert!(error.contains("permission denied"), "{statement}: {error}");
        }
    }
    assert_eq!(store.audit_records(a).await.unwrap(), before);
    assert_eq!(raw.audit_rows().await, 2);
}

async fn postgres_runs_as_a_role_bound_by_row_level_security(store: Arc<dyn Store>, raw: &Raw) {
    let Raw::Postgres {
        store: pg,
        owner_url,
    } = raw
    else {
        return;
    };
    let (tenant, scope) = new_tenant(&store, "rls").await;
    let mut write = create("Patient", "p1", T0);
    write.tokens = vec![token(1)];
    write.dates = vec![date("birthdate", 0, 1)];
    store
        .commit(&scope, &[write], &[audit(tenant, "create", "x")])
        .await
        .unwrap();

    let pool = pg.pool_for_tests();
    let row = sqlx::query(
        "SELECT current_user::text, rolsuper, rolbypassrls FROM pg_roles WHERE rolname = current_user",
    )
    .fetch_one(pool)
    .await
    .unwrap();
    assert_eq!(row.get::<String, _>(0), "carevault_app");
    assert!(!row.get::<bool, _>(1), "the pooled role is a superuser");
    assert!(
        !row.get::<bool, _>(2),
        "the pooled role bypasses row-level security"
    );

    for table in [
        "resource_versions",
        "resource_current",
        "search_tokens",
        "search_dates",
        "audit_log",
        "audit_heads",
    ] {
        let count_sql = match table {
            "resource_versions" => "SELECT count(*) FROM resource_versions",
            "resource_current" => "SELECT count(*) FROM resource_current",
            "search_tokens" => "SELECT count(*) FROM search_tokens",
            "search_dates" => "SELECT count(*) FROM search_dates",
            "audit_log" => "SELECT count(*) FROM audit_log",
            _ => "SELECT count(*) FROM audit_heads",
        };
        // Without the tenant setting: nothing.
        let unset: i64 = sqlx::query(count_sql).fetch_one(pool).await.unwrap().get(0);
        assert_eq!(unset, 0, "{table} readable without a tenant");
        // With another tenant: nothing.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
            .bind(TenantId::generate().to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let other: i64 = sqlx::query(count_sql)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        assert_eq!(other, 0, "{table} readable by another tenant");
        tx.rollback().await.unwrap();
        // With the owning tenant: the rows are there.
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
            .bind(tenant.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let own: i64 = sqlx::query(count_sql)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        assert!(own > 0, "{table} has no rows for its tenant");
        tx.rollback().await.unwrap();
        // After that transaction the setting is reset (''), which still matches nothing.
        let reset: i64 = sqlx::query(count_sql).fetch_one(pool).await.unwrap().get(0);
        assert_eq!(reset, 0, "{table} readable after a tenant transaction");
    }

    // Writing another tenant's rows under one tenant's setting is refused.
    let mut tx = pool.begin().await.unwrap();
    sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
        .bind(tenant.to_string())
        .execute(&mut *tx)
        .await
        .unwrap();
    let forged = sqlx::query("INSERT INTO audit_heads (tenant_id, seq) VALUES ($1, 0)")
        .bind(TenantId::generate().as_uuid())
        .execute(&mut *tx)
        .await;
    assert!(forged.is_err());
    drop(tx);

    // Connecting as the app role itself skips migrations and role switching, and works.
    let app_url = owner_url.replacen("://postgres@", "://carevault_app@", 1);
    if app_url != *owner_url {
        // carevault_app is NOLOGIN here, so this is refused: the server cannot log in as it
        // unless an operator grants LOGIN.
        assert!(PgStore::connect(&app_url).await.is_err());
    }
}

async fn sqlite_file_is_private(_store: Arc<dyn Store>, raw: &Raw) {
    use std::os::unix::fs::PermissionsExt;
    let Raw::Sqlite(path) = raw else {
        return;
    };
    let mode = std::fs::metadata(path).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600);
    let dir_mode = std::fs::metadata(path.parent().unwrap())
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(dir_mode & 0o077, 0);
    // Reopening an existing database applies no migration twice and keeps the data.
    let reopened = SqliteStore::open(path).await.unwrap();
    reopened.ping().await.unwrap();
    let names: BTreeSet<String> =
        carevault_store::open_store(&format!("sqlite:{}", path.display()))
            .await
            .unwrap()
            .list_tenants()
            .await
            .unwrap()
            .into_iter()
            .map(|t| t.name)
            .collect();
    assert!(names.is_empty());
}
