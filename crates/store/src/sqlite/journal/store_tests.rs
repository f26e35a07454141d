//! The journal through the store: what a crash leaves, and what a damaged trail refuses.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use carevault_crypto::SigningKey;
use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::storage::{AuditFilter, AuditStore};
use carevault_domain::audit::verify::verify_chain;
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;
use carevault_domain::testing::scope_for;

use super::{SUFFIX, directory_of, journal_files, read_frames};
use crate::SqliteStore;
use crate::sqlite::test_support::{self, add_tenant};

/// Long enough that nothing is ingested in the background during a test.
const NEVER: Duration = Duration::from_secs(3_600);

fn record(tenant: TenantId, detail: &str) -> AuditRecord {
    test_support::record(tenant, "read", detail)
}

/// Records in the trail's segments, read past the store.
fn stored_records(database: &Path) -> i64 {
    let connection = rusqlite::Connection::open(database).unwrap();
    connection
        .query_row(
            "SELECT coalesce(sum(last_seq - first_seq + 1), 0) FROM audit_segments",
            [],
            |row| row.get(0),
        )
        .unwrap()
}

fn count(database: &Path, statement: &str) -> i64 {
    let connection = rusqlite::Connection::open(database).unwrap();
    connection
        .query_row(statement, [], |row| row.get(0))
        .unwrap()
}

fn execute(database: &Path, statement: &str) {
    let connection = rusqlite::Connection::open(database).unwrap();
    connection.execute_batch(statement).unwrap();
}

/// Verifies `tenant`'s chain (without checkpoints), failing on any break; the records checked.
async fn verified_records(store: &Arc<SqliteStore>, tenant: TenantId) -> u64 {
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::create_file(&dir.path().join("signing.key")).unwrap();
    let report = verify_chain(
        store.clone() as Arc<dyn AuditStore>,
        tenant,
        Vec::new(),
        &key.verifying_key(),
        &|_| {},
    )
    .await
    .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    report.records
}

/// The frames a journal file holds.
fn frames_in(path: &Path) -> usize {
    read_frames(&std::fs::read(path).unwrap()).0.len()
}

fn details(records: &[AuditRecord]) -> Vec<String> {
    records
        .iter()
        .map(|record| record.detail.clone().unwrap_or_default())
        .collect()
}

/// Records acknowledged by the journal and never chained (the process died) are chained when
/// the database is next opened, in order, and the chain verifies; the journal is emptied.
#[tokio::test]
async fn a_crash_before_ingestion_loses_no_acknowledged_record() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&store).await;
    let before = stored_records(&database);
    store
        .append_audit(&[record(tenant, "r1"), record(tenant, "r2")])
        .await
        .unwrap();
    store.append_audit(&[record(tenant, "r3")]).await.unwrap();
    // Durable in the journal, not yet in the trail.
    assert_eq!(stored_records(&database), before);
    drop(store);

    let store = Arc::new(SqliteStore::open_with(&database, NEVER).await.unwrap());
    assert_eq!(stored_records(&database), before + 3);
    let records = store.audit_records(tenant).await.unwrap();
    assert_eq!(details(&records), ["r1", "r2", "r3"]);
    assert_eq!(
        records.iter().map(|record| record.seq).collect::<Vec<_>>(),
        [1, 2, 3]
    );
    assert_eq!(verified_records(&store, tenant).await, 3);
    // Only the file new frames go to is left, and it holds none yet.
    let files = journal_files(&directory_of(&database), SUFFIX).unwrap();
    assert_eq!(files.len(), 1, "{files:?}");
    assert_eq!(frames_in(&files[0].1), 0);

    // Opened again, nothing is chained twice.
    drop(store);
    let _store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    assert_eq!(stored_records(&database), before + 3);
}

/// An ingestion packs a tenant's records into segments of up to `SEGMENT_RECORDS`, whatever
/// frames they came in: many small shared commits (reads from 64 connections) make a few
/// large segments, not a segment each. The chain is the same and verifies.
#[tokio::test]
async fn an_ingestion_packs_small_frames_into_large_segments() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = Arc::new(SqliteStore::open_with(&database, NEVER).await.unwrap());
    let tenant = add_tenant(&store).await;
    let other = add_tenant(&store).await;
    let tenant_bytes = tenant.as_uuid().simple();
    let segments = |database: &Path| {
        count(
            database,
            &format!("SELECT count(*) FROM audit_segments WHERE tenant_id = X'{tenant_bytes}'"),
        )
    };
    let before = segments(&database);
    // 60 frames of ten records, the other tenant's between them.
    for frame in 0..60 {
        let mut records: Vec<AuditRecord> = (0..10)
            .map(|index| record(tenant, &format!("{frame}.{index}")))
            .collect();
        records.push(record(other, &format!("other {frame}")));
        store.append_audit(&records).await.unwrap();
    }
    store.settle_audit().await.unwrap();
    // 600 records: one full segment of 512 and one of 88.
    assert_eq!(segments(&database) - before, 2);
    let stored: Vec<(i64, i64)> = {
        let connection = rusqlite::Connection::open(&database).unwrap();
        let mut statement = connection
            .prepare(&format!(
                "SELECT first_seq, last_seq FROM audit_segments \
                 WHERE tenant_id = X'{tenant_bytes}' ORDER BY first_seq DESC LIMIT 2"
            ))
            .unwrap();
        statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .unwrap()
            .collect::<Result<_, _>>()
            .unwrap()
    };
    let last = stored[0].1;
    assert_eq!(stored, [(last - 87, last), (last - 599, last - 88)]);
    let records = store.audit_records(tenant).await.unwrap();
    let expected: Vec<String> = (0..60)
        .flat_map(|frame| (0..10).map(move |index| format!("{frame}.{index}")))
        .collect();
    let mut found = details(&records);
    found.retain(|detail| detail.contains('.'));
    assert_eq!(found, expected);
    verified_records(&store, tenant).await;
    verified_records(&store, other).await;
}

/// A search chains the journal first only when a record journaled and not yet chained could
/// be among its results (of its tenant, matching its filter); otherwise it reads the trail as
/// it is, and what is journaled stays pending. What it could find, it finds.
#[tokio::test]
async fn a_search_chains_the_journal_only_for_records_it_could_find() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&store).await;
    let other = add_tenant(&store).await;
    store.settle_audit().await.unwrap();
    let before = stored_records(&database);
    let about = |tenant: TenantId, patient: &str, detail: &str| {
        let mut record = record(tenant, detail);
        record.subjects = vec![patient.to_owned()];
        record
    };
    store
        .append_audit(&[
            about(tenant, "p1", "first"),
            about(other, "p2", "elsewhere"),
        ])
        .await
        .unwrap();
    let search = |scope: TenantId, patient: &str| {
        let filter = AuditFilter {
            patient: Some(patient.to_owned()),
            limit: 10,
            ..AuditFilter::default()
        };
        let store = &store;
        async move {
            store
                .audit_search(&scope_for(scope), &filter)
                .await
                .unwrap()
        }
    };

    // Another patient of the tenant, and the other tenant's patient seen from this tenant.
    assert!(search(tenant, "p2").await.is_empty());
    assert!(search(other, "p1").await.is_empty());
    assert_eq!(stored_records(&database), before);

    // The journaled record's own patient: chained first, and found.
    assert_eq!(details(&search(tenant, "p1").await), ["first"]);
    assert_eq!(stored_records(&database), before + 2);
    assert_eq!(details(&search(other, "p2").await), ["elsewhere"]);

    // A time window that excludes a journaled record leaves it pending too.
    let mut late = about(tenant, "p1", "late");
    late.time_ms = 5_000;
    store.append_audit(&[late]).await.unwrap();
    let filter = AuditFilter {
        patient: Some("p1".to_owned()),
        until_ms: Some(5_000),
        limit: 10,
        ..AuditFilter::default()
    };
    let found = store
        .audit_search(&scope_for(tenant), &filter)
        .await
        .unwrap();
    assert_eq!(details(&found), ["first"]);
    assert_eq!(stored_records(&database), before + 2);
    let filter = AuditFilter {
        since_ms: Some(5_000),
        until_ms: None,
        ..filter
    };
    let found = store
        .audit_search(&scope_for(tenant), &filter)
        .await
        .unwrap();
    assert_eq!(details(&found), ["late"]);
    assert_eq!(stored_records(&database), before + 3);
}

/// A search of the trail chains the journal first, so it misses nothing just read.
#[tokio::test]
async fn reading_the_trail_chains_the_journal_first() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&store).await;
    store.append_audit(&[record(tenant, "r1")]).await.unwrap();
    let head = store.audit_head(tenant).await.unwrap().unwrap();
    assert_eq!(head.seq, 1);
}

/// A second store on the database (the CLI while the server runs) has no journal: its
/// appends are in the trail at once, and it leaves the first one's journal alone.
#[tokio::test]
async fn a_second_store_appends_straight_to_the_trail() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let first = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&first).await;
    first
        .append_audit(&[record(tenant, "first")])
        .await
        .unwrap();
    let before = stored_records(&database);
    let second = SqliteStore::open_with(&database, NEVER).await.unwrap();
    second
        .append_audit(&[record(tenant, "second")])
        .await
        .unwrap();
    assert_eq!(stored_records(&database), before + 1);
    let records = first.audit_records(tenant).await.unwrap();
    assert_eq!(details(&records), ["second", "first"]);
}

/// While a tenant's trail cannot be written, its appends fail (its reads are refused) once
/// an ingestion has failed, and other tenants' go on; once it can, everything journaled is
/// chained, in order.
#[tokio::test]
async fn a_tenant_whose_trail_fails_is_refused_alone_until_it_mends() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let broken = add_tenant(&store).await;
    let bystander = add_tenant(&store).await;
    execute(
        &database,
        &format!(
            "CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments \
             WHEN NEW.tenant_id = X'{}' \
             BEGIN SELECT RAISE(ABORT, 'audit blocked by the test'); END;",
            broken.as_uuid().simple()
        ),
    );
    // Journaled before anyone knows: durable, acknowledged.
    store
        .append_audit(&[record(broken, "b1"), record(bystander, "x1")])
        .await
        .unwrap();
    // The ingestion chains the bystander's and keeps the other's.
    store.settle_audit().await.unwrap();
    assert_eq!(
        details(&store.audit_records(bystander).await.unwrap()),
        ["x1"]
    );
    let refused = store.append_audit(&[record(broken, "b2")]).await;
    assert!(
        refused
            .as_ref()
            .is_err_and(|error| error.to_string().contains("audit blocked by the test")),
        "{refused:?}"
    );
    store
        .append_audit(&[record(bystander, "x2")])
        .await
        .unwrap();
    // Held back in the database, unchained.
    assert_eq!(
        count(&database, "SELECT count(*) FROM audit_journal_held"),
        1
    );
    // A restart now: the broken tenant's record is still held back, the bystander's chained
    // ones are not chained twice.
    drop(store);
    execute(&database, "DROP TRIGGER audit_block;");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    assert_eq!(
        details(&store.audit_records(bystander).await.unwrap()),
        ["x1", "x2"]
    );
    assert_eq!(details(&store.audit_records(broken).await.unwrap()), ["b1"]);
    store.append_audit(&[record(broken, "b3")]).await.unwrap();
    assert_eq!(
        details(&store.audit_records(broken).await.unwrap()),
        ["b1", "b3"]
    );
}

/// The same, without a restart: the refused tenant's next append, once the trail mends,
/// chains what waited and is accepted.
#[tokio::test]
async fn a_refused_tenant_is_accepted_again_once_its_trail_mends() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&store).await;
    execute(
        &database,
        "CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments \
         BEGIN SELECT RAISE(ABORT, 'audit blocked by the test'); END;",
    );
    store.append_audit(&[record(tenant, "r1")]).await.unwrap();
    // Nothing could be chained; the tenant's appends are refused and nothing is lost.
    let _ = store.settle_audit().await;
    assert!(store.append_audit(&[record(tenant, "r2")]).await.is_err());
    execute(&database, "DROP TRIGGER audit_block;");
    store.append_audit(&[record(tenant, "r3")]).await.unwrap();
    assert_eq!(
        details(&store.audit_records(tenant).await.unwrap()),
        ["r1", "r3"]
    );
}

/// An ingestion whose transaction fails (here, the watermark cannot move) writes nothing: every
/// frame stays in the journal, the tenants in it are refused, and the next ingestion that
/// succeeds chains them all, once.
#[tokio::test]
async fn a_failed_ingestion_keeps_every_frame_until_one_succeeds() {
    let dir = tempfile::tempdir().unwrap();
    let database = dir.path().join("db.sqlite");
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    let tenant = add_tenant(&store).await;
    let other = add_tenant(&store).await;
    execute(
        &database,
        "CREATE TRIGGER journal_block BEFORE UPDATE ON audit_journal \
         BEGIN SELECT RAISE(ABORT, 'watermark blocked by the test'); END;",
    );
    store
        .append_audit(&[record(tenant, "r1"), record(other, "o1")])
        .await
        .unwrap();
    assert!(store.settle_audit().await.is_err());
    assert_eq!(
        count(&database, "SELECT count(*) FROM audit_journal_held"),
        0
    );
    assert!(store.append_audit(&[record(tenant, "r2")]).await.is_err());
    assert!(store.append_audit(&[record(other, "o2")]).await.is_err());
    // The frame's file is kept.
    let waiting: usize = journal_files(&directory_of(&database), SUFFIX)
        .unwrap()
        .iter()
        .map(|(_, path)| frames_in(path))
        .sum();
    assert_eq!(waiting, 1);
    execute(&database, "DROP TRIGGER journal_block;");
    store.append_audit(&[record(tenant, "r3")]).await.unwrap();
    assert_eq!(
        details(&store.audit_records(tenant).await.unwrap()),
        ["r1", "r3"]
    );
    assert_eq!(details(&store.audit_records(other).await.unwrap()), ["o1"]);
    drop(store);
    // Reopened, nothing is chained twice.
    let store = SqliteStore::open_with(&database, NEVER).await.unwrap();
    assert_eq!(
        details(&store.audit_records(tenant).await.unwrap()),
        ["r1", "r3"]
    );
}
