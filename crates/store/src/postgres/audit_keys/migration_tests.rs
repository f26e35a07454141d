//! Migration 0007 on a trail of version 6 (keys as rows of `audit_keys`) and of version 5 (one
//! row per record), and migration 0008 on reversed date ranges, migrated by a schema owner that
//! is not a superuser, so that row-level security applies to it as it would in production. Needs `CAREVAULT_TEST_POSTGRES_URL` (a
//! superuser's URL); skipped with a message when it is unset.

// A failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::str::FromStr;

use carevault_domain::audit::chain::{ChainHash, GENESIS};
use carevault_domain::audit::storage::{AuditFilter, AuditStore};
use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;
use carevault_domain::testing::scope_for;
use sqlx::migrate::Migrator;
use sqlx::postgres::PgConnectOptions;
use sqlx::{Connection, PgConnection, Row};

use crate::PgStore;
use crate::audit::{INSERT_SEGMENT, bucket_of, build_segments};
use crate::postgres::audit_implementation::segment_insert;

const POSTGRES_URL_VARIABLE: &str = "CAREVAULT_TEST_POSTGRES_URL";
const T0: i64 = 1_700_000_000_000;

/// How version 6 stored a segment's keys.
const INSERT_KEYS_V6: &str = "INSERT INTO audit_keys (tenant_id, bucket, key, first_seq) \
     SELECT $1, $2, k, $3 FROM unnest($4::bigint[]) AS k";

/// A database owned by a login role of its own that is not a superuser; both are dropped when
/// the test ends, passed or failed.
struct OwnedDatabase {
    admin_url: String,
    name: String,
    owner: String,
}

impl OwnedDatabase {
    async fn create(admin_url: String) -> OwnedDatabase {
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let database = OwnedDatabase {
            admin_url,
            name: format!("cv_{suffix}"),
            owner: format!("cv_owner_{suffix}"),
        };
        let mut admin = PgConnection::connect(&database.admin_url).await.unwrap();
        // The names are a fixed prefix and hex digits: no quoting needed.
        for statement in [
            format!(
                "CREATE ROLE {} LOGIN NOSUPERUSER NOBYPASSRLS",
                database.owner
            ),
            format!("CREATE DATABASE {} OWNER {}", database.name, database.owner),
        ] {
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                .execute(&mut admin)
                .await
                .unwrap();
        }
        admin.close().await.unwrap();
        database
    }

    /// The superuser's URL on this database.
    fn admin_url(&self) -> String {
        on_database(&self.admin_url, &self.name)
    }

    async fn connect_as_owner(&self) -> PgConnection {
        let options = PgConnectOptions::from_str(&self.admin_url())
            .unwrap()
            .username(&self.owner);
        PgConnection::connect_with(&options).await.unwrap()
    }
}

impl Drop for OwnedDatabase {
    fn drop(&mut self) {
        let admin_url = self.admin_url.clone();
        let statements = [
            format!("DROP DATABASE IF EXISTS {} WITH (FORCE)", self.name),
            format!("DROP ROLE IF EXISTS {}", self.owner),
        ];
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .unwrap();
            runtime.block_on(async {
                let mut admin = PgConnection::connect(&admin_url).await.unwrap();
                for statement in statements {
                    sqlx::raw_sql(sqlx::AssertSqlSafe(statement))
                        .execute(&mut admin)
                        .await
                        .unwrap();
                }
            });
        })
        .join();
        if dropped.is_err() && !std::thread::panicking() {
            panic!("could not drop the test database {}", self.name);
        }
    }
}

/// The URL with its database name replaced.
fn on_database(url: &str, database: &str) -> String {
    let (base, query) = url.split_once('?').unwrap_or((url, ""));
    let authority = base.find("://").map_or(0, |index| index + 3);
    let path = base[authority..]
        .find('/')
        .map_or(base.len(), |index| authority + index);
    let query = if query.is_empty() {
        String::new()
    } else {
        format!("?{query}")
    };
    format!("{}/{database}{query}", &base[..path])
}

/// The migrations up to `version`, as an older build applied them.
fn migrations_through(version: i64) -> Migrator {
    Migrator::with_migrations(
        crate::migrations::postgres()
            .iter()
            .filter(|migration| migration.version <= version)
            .cloned()
            .collect(),
    )
}

fn record(tenant: TenantId, principal: &str, patient: &str, time_ms: i64) -> AuditRecord {
    AuditRecord {
        v: 1,
        seq: 0,
        time_ms,
        tenant,
        principal: principal.to_owned(),
        session: Some(format!("session of {principal}")),
        roles: vec!["clinician".to_owned()],
        auth_strength: "mfa".to_owned(),
        source: Some("10.0.0.1".to_owned()),
        action: "read".to_owned(),
        resource_type: Some("Patient".to_owned()),
        resource_id: Some(patient.to_owned()),
        subjects: vec![patient.to_owned()],
        categories: vec!["demographics".to_owned()],
        purpose: None,
        outcome: Outcome::Success,
        detail: None,
    }
}

/// Binds the owner's session to `tenant` (row-level security applies to the owner).
async fn enter(connection: &mut PgConnection, tenant: TenantId) {
    sqlx::query("SELECT set_config('carevault.tenant', $1, false)")
        .bind(tenant.to_string())
        .execute(&mut *connection)
        .await
        .unwrap();
}

/// Stores `appends` as version 6 did (each append a segment, its keys as rows of
/// `audit_keys`), chained, and the tenant's head. Returns each segment's first sequence number
/// and keys.
async fn store_as_version_6(
    connection: &mut PgConnection,
    tenant: TenantId,
    appends: &[Vec<AuditRecord>],
) -> Vec<(i64, Vec<i64>)> {
    enter(connection, tenant).await;
    let (mut seq, mut hash): (i64, ChainHash) = (0, GENESIS);
    let mut stored = Vec::new();
    for records in appends {
        let records: Vec<&AuditRecord> = records.iter().collect();
        let (segments, head) = build_segments(seq, hash, &records).unwrap();
        for segment in &segments {
            segment_insert(INSERT_SEGMENT, tenant, segment)
                .execute(&mut *connection)
                .await
                .unwrap();
            sqlx::query(INSERT_KEYS_V6)
                .bind(tenant.as_uuid())
                .bind(bucket_of(segment.first_seq))
                .bind(segment.first_seq)
                .bind(segment.keys.as_slice())
                .execute(&mut *connection)
                .await
                .unwrap();
            stored.push((segment.first_seq, segment.keys.clone()));
            seq = segment.last_seq;
        }
        hash = head;
    }
    sqlx::query("INSERT INTO audit_heads (tenant_id, seq, hash) VALUES ($1, $2, $3)")
        .bind(tenant.as_uuid())
        .bind(seq)
        .bind(hash.to_vec())
        .execute(&mut *connection)
        .await
        .unwrap();
    stored
}

async fn search(store: &PgStore, tenant: TenantId, filter: AuditFilter) -> Vec<(i64, String)> {
    store
        .audit_search(
            &scope_for(tenant),
            &AuditFilter {
                limit: 100,
                ..filter
            },
        )
        .await
        .unwrap()
        .into_iter()
        .map(|record| (record.seq, record.principal))
        .collect()
}

fn by_patient(patient: &str) -> AuditFilter {
    AuditFilter {
        patient: Some(patient.to_owned()),
        ..AuditFilter::default()
    }
}

/// Two tenants' trails of version 6 (sharing a patient id and a principal) and one of version
/// 5 go through 0007 as a non-superuser owner: every segment's array holds exactly the keys
/// its rows held, `audit_keys` is gone, the look-up function is in place, and the store finds
/// each tenant's records (and only theirs) by patient and by principal, old records and new
/// appends alike.
#[tokio::test]
async fn version_7_moves_every_tenants_key_rows_into_arrays() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
        eprintln!("skipping the PostgreSQL migration test: {POSTGRES_URL_VARIABLE} is not set");
        return;
    };
    let database = OwnedDatabase::create(admin_url).await;
    let mut owner = database.connect_as_owner().await;
    let (a, b, c) = (
        TenantId::generate(),
        TenantId::generate(),
        TenantId::generate(),
    );

    // Version 5: tenant c's records, one row each, from before hashing.
    migrations_through(5).run(&mut owner).await.unwrap();
    enter(&mut owner, c).await;
    for seq in 1..=2_i64 {
        let mut text = record(c, "person/c", "shared", T0 + seq);
        text.seq = seq;
        sqlx::query(
            "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record) \
             VALUES ($1, $2, $3, 'read', 'success', $4)",
        )
        .bind(c.as_uuid())
        .bind(seq)
        .bind(T0 + seq)
        .bind(serde_json::to_string(&text).unwrap())
        .execute(&mut owner)
        .await
        .unwrap();
    }
    sqlx::query("INSERT INTO audit_heads (tenant_id, seq) VALUES ($1, 2)")
        .bind(c.as_uuid())
        .execute(&mut owner)
        .await
        .unwrap();

    // Version 6: tenants a and b, several segments each.
    migrations_through(6).run(&mut owner).await.unwrap();
    let appends = |tenant: TenantId, principal: &str| -> Vec<Vec<AuditRecord>> {
        (0..4_i64)
            .map(|append| {
                (0..=append)
                    .map(|n| {
                        let patient = if n == 0 { "shared" } else { "other" };
                        record(tenant, principal, patient, T0 + 10 * append + n)
                    })
                    .collect()
            })
            .collect()
    };
    let stored_a = store_as_version_6(&mut owner, a, &appends(a, "person/n")).await;
    let stored_b = store_as_version_6(&mut owner, b, &appends(b, "person/n")).await;
    assert_eq!(stored_a.len(), 4);

    // Version 7, as the same owner.
    crate::migrations::postgres().run(&mut owner).await.unwrap();
    owner.close().await.unwrap();

    let mut admin = PgConnection::connect(&database.admin_url()).await.unwrap();
    let gone: bool = sqlx::query("SELECT to_regclass('audit_keys') IS NULL")
        .fetch_one(&mut admin)
        .await
        .unwrap()
        .get(0);
    assert!(gone, "audit_keys is still there");
    for (tenant, stored) in [(a, &stored_a), (b, &stored_b)] {
        let arrays: Vec<(i64, Vec<i64>)> = sqlx::query(
            "SELECT first_seq, keys FROM audit_segment_keys WHERE tenant_id = $1 \
             ORDER BY first_seq",
        )
        .bind(tenant.as_uuid())
        .fetch_all(&mut admin)
        .await
        .unwrap()
        .iter()
        .map(|row| (row.get(0), row.get(1)))
        .collect();
        assert_eq!(&arrays, stored, "the keys of {tenant}");
    }
    // The look-up runs as the owner with its search path pinned, and only the server's role
    // (granted by the store's migrate, below) may call it.
    let (definer, settings, public): (bool, Vec<String>, bool) = sqlx::query(
        "SELECT prosecdef, proconfig, EXISTS (SELECT 1 FROM \
           aclexplode(coalesce(proacl, acldefault('f', proowner))) WHERE grantee = 0) \
         FROM pg_proc WHERE proname = 'carevault_audit_segments_with_keys'",
    )
    .fetch_one(&mut admin)
    .await
    .map(|row| (row.get(0), row.get(1), row.get(2)))
    .unwrap();
    assert!(definer && !public, "definer {definer}, public {public}");
    assert_eq!(
        settings,
        vec!["search_path=public, pg_temp", "enable_seqscan=off"]
    );
    admin.close().await.unwrap();

    // The store moves tenant c's version-5 rows (into arrays, now) and finds everything.
    let store = PgStore::connect(&database.admin_url()).await.unwrap();
    let shared = |principal: &str| {
        (1..=4_i64)
            .rev()
            .map(|append| (append * (append - 1) / 2 + 1, principal.to_owned()))
            .collect::<Vec<_>>()
    };
    assert_eq!(
        search(&store, a, by_patient("shared")).await,
        shared("person/n")
    );
    assert_eq!(
        search(&store, b, by_patient("shared")).await,
        shared("person/n")
    );
    assert_eq!(
        search(&store, c, by_patient("shared")).await,
        vec![(2, "person/c".to_owned()), (1, "person/c".to_owned())]
    );
    let by_principal = AuditFilter {
        principal: Some("person/n".to_owned()),
        ..AuditFilter::default()
    };
    assert_eq!(search(&store, a, by_principal.clone()).await.len(), 10);
    assert!(search(&store, c, by_principal).await.is_empty());

    // Appends after the migration chain on and are found beside the moved records.
    store
        .append_audit(&[record(a, "person/m", "shared", T0 + 100)])
        .await
        .unwrap();
    let found = search(&store, a, by_patient("shared")).await;
    assert_eq!(found.first(), Some(&(11, "person/m".to_owned())));
    assert_eq!(found.len(), 5);
    assert_eq!(
        store.audit_head(a).await.unwrap().map(|head| head.seq),
        Some(11)
    );
}

/// Migration 0008 as a non-superuser owner: two tenants' reversed date ranges are stored in
/// order, the others are kept, and the table's policy is forced again afterwards.
#[tokio::test]
async fn version_8_orders_every_tenants_reversed_date_ranges() {
    let Ok(admin_url) = std::env::var(POSTGRES_URL_VARIABLE) else {
        eprintln!("skipping the PostgreSQL migration test: {POSTGRES_URL_VARIABLE} is not set");
        return;
    };
    let database = OwnedDatabase::create(admin_url).await;
    let mut owner = database.connect_as_owner().await;
    migrations_through(7).run(&mut owner).await.unwrap();
    let (a, b) = (TenantId::generate(), TenantId::generate());
    for tenant in [a, b] {
        enter(&mut owner, tenant).await;
        for (id, low, high) in [
            ("reversed", 5_000_i64, 1_000_i64),
            ("ordered", 1_000, 5_000),
        ] {
            sqlx::query(crate::sql::INSERT_DATE)
                .bind(tenant.as_uuid())
                .bind("Encounter")
                .bind(id)
                .bind("date")
                .bind(low)
                .bind(high)
                .execute(&mut owner)
                .await
                .unwrap();
        }
    }
    sqlx::query("SELECT set_config('carevault.tenant', '', false)")
        .execute(&mut owner)
        .await
        .unwrap();
    crate::migrations::postgres().run(&mut owner).await.unwrap();

    for tenant in [a, b] {
        enter(&mut owner, tenant).await;
        let rows: Vec<(String, i64, i64)> =
            sqlx::query("SELECT id, low, high FROM search_dates WHERE tenant_id = $1 ORDER BY id")
                .bind(tenant.as_uuid())
                .fetch_all(&mut owner)
                .await
                .unwrap()
                .iter()
                .map(|row| (row.get(0), row.get(1), row.get(2)))
                .collect();
        assert_eq!(
            rows,
            vec![
                ("ordered".to_owned(), 1_000, 5_000),
                ("reversed".to_owned(), 1_000, 5_000),
            ]
        );
    }
    let mut admin = PgConnection::connect(&database.admin_url()).await.unwrap();
    let forced: bool =
        sqlx::query("SELECT relforcerowsecurity FROM pg_class WHERE relname = 'search_dates'")
            .fetch_one(&mut admin)
            .await
            .unwrap()
            .get(0);
    assert!(
        forced,
        "the policy binds the owner again after the migration"
    );
}
