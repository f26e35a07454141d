//! The group writer's tests: grouping, failures and withdrawals, tenants kept apart, and
//! migration 0011's token lists.

#![allow(clippy::unwrap_used, clippy::expect_used)]

use carevault_domain::principal::TenantScope;
use carevault_domain::store::{DateEntry, Store, StoredVersion};
use carevault_domain::testing::scope_for;

use super::*;
use crate::SqliteStore;
use crate::sqlite::test_support;

fn create(id: &str) -> ResourceWrite {
    ResourceWrite {
        version: StoredVersion {
            resource_type: "Patient".to_owned(),
            id: id.to_owned(),
            version: 1,
            last_updated_ms: 1,
            deleted: false,
            body: format!("sealed {id}").into_bytes(),
        },
        precondition: Precondition::Absent,
        tokens: vec![[9; 16]],
        dates: vec![DateEntry {
            param: "birthdate".to_owned(),
            low: 0,
            high: 10,
        }],
    }
}

fn record(tenant: TenantId, detail: &str) -> AuditRecord {
    test_support::record(tenant, "create", detail)
}

fn pending(
    tenant: TenantId,
    ticket: u64,
    writes: Vec<ResourceWrite>,
) -> (PendingCommit, oneshot::Receiver<StoreResult<()>>) {
    let (done, outcome) = oneshot::channel();
    let audit = vec![record(tenant, &format!("commit {ticket}"))];
    (
        PendingCommit {
            ticket,
            tenant,
            writes,
            audit,
            done,
        },
        outcome,
    )
}

/// A store in a fresh file, with one tenant.
async fn store_with_tenant() -> (tempfile::TempDir, SqliteStore, TenantId, TenantScope) {
    let dir = tempfile::tempdir().unwrap();
    let store = SqliteStore::open(&dir.path().join("db.sqlite"))
        .await
        .unwrap();
    let (tenant, scope) = add_tenant(&store).await;
    (dir, store, tenant, scope)
}

/// A new active tenant in `store`.
async fn add_tenant(store: &SqliteStore) -> (TenantId, TenantScope) {
    let tenant = test_support::add_tenant(store).await;
    (tenant, scope_for(tenant))
}

/// Migration 0011 on a database of version 10: each current row lists its version's
/// tokens, the index of token rows by resource is gone, and an update through the store then
/// replaces exactly the tokens the migration listed.
#[tokio::test]
async fn migration_11_lists_each_resources_tokens_and_an_update_replaces_them() {
    use sqlx::{Connection as _, Row};

    let (_dir, path, mut connection) = test_support::database_through(10).await;
    let tenant = TenantId::generate();
    sqlx::query("INSERT INTO tenants (id, name, status, created_ms) VALUES (?, 't', 'active', 1)")
        .bind(tenant.as_uuid())
        .execute(&mut connection)
        .await
        .unwrap();
    for (id, tokens) in [("two", vec![[1u8; 16], [2; 16]]), ("none", Vec::new())] {
        for statement in [
            "INSERT INTO resource_versions VALUES (?1, 'Patient', ?2, 1, 1, 0, x'00')",
            "INSERT INTO resource_current VALUES (?1, 'Patient', ?2, 1, 1, 0)",
        ] {
            sqlx::query(statement)
                .bind(tenant.as_uuid())
                .bind(id)
                .execute(&mut connection)
                .await
                .unwrap();
        }
        for token in tokens {
            sqlx::query(INSERT_TOKEN)
                .bind(tenant.as_uuid())
                .bind("Patient")
                .bind(id)
                .bind(token.to_vec())
                .execute(&mut connection)
                .await
                .unwrap();
        }
    }
    crate::migrations::sqlite()
        .run(&mut connection)
        .await
        .unwrap();
    let listed =
        |id: &'static str| sqlx::query("SELECT tokens FROM resource_current WHERE id = ?").bind(id);
    let two: Vec<u8> = listed("two")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get(0);
    let mut chunks: Vec<&[u8]> = two.chunks(16).collect();
    chunks.sort();
    assert_eq!(chunks, vec![&[1u8; 16][..], &[2u8; 16][..]]);
    let none: Option<Vec<u8>> = listed("none")
        .fetch_one(&mut connection)
        .await
        .unwrap()
        .get(0);
    assert_eq!(none, None);
    let by_resource: i64 =
        sqlx::query("SELECT count(*) FROM sqlite_schema WHERE name = 'search_tokens_by_resource'")
            .fetch_one(&mut connection)
            .await
            .unwrap()
            .get(0);
    assert_eq!(by_resource, 0);
    connection.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let mut update = create("two");
    update.version.version = 2;
    update.precondition = Precondition::CurrentVersion(1);
    update.tokens = vec![[3; 16]];
    store
        .commit(&scope_for(tenant), &[update], &[])
        .await
        .unwrap();
    let connection = Connection::open(&path).unwrap();
    let mut statement = connection
        .prepare("SELECT token FROM search_tokens WHERE id = 'two'")
        .unwrap();
    let left: Vec<Vec<u8>> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![vec![3u8; 16]]);
}

/// A group whose middle commit conflicts is written again commit by commit: the commits
/// around it are written whole, the conflicting one leaves nothing, and the audit records
/// of the written ones chain on without a gap. A group with no failure is written whole.
#[tokio::test]
async fn a_failed_commit_fails_alone_in_its_group() {
    let (_dir, store, tenant, scope) = store_with_tenant().await;
    store.commit(&scope, &[create("taken")], &[]).await.unwrap();

    let (first, first_outcome) = pending(tenant, 1, vec![create("a")]);
    let (second, second_outcome) = pending(tenant, 2, vec![create("b"), create("taken")]);
    let (third, third_outcome) = pending(tenant, 3, vec![create("c")]);
    store.sync_writer.commit_group(vec![first, second, third]);
    assert!(matches!(first_outcome.await.unwrap(), Ok(())));
    assert!(matches!(
        second_outcome.await.unwrap(),
        Err(StoreError::Conflict { ref id, .. }) if id == "taken"
    ));
    assert!(matches!(third_outcome.await.unwrap(), Ok(())));
    for (id, present) in [("a", true), ("b", false), ("c", true)] {
        let current = store.current(&scope, "Patient", id).await.unwrap();
        assert_eq!(current.is_some(), present, "{id}");
    }

    let (fourth, fourth_outcome) = pending(tenant, 4, vec![create("d")]);
    let (fifth, fifth_outcome) = pending(tenant, 5, vec![create("e")]);
    store.sync_writer.commit_group(vec![fourth, fifth]);
    assert!(matches!(fourth_outcome.await.unwrap(), Ok(())));
    assert!(matches!(fifth_outcome.await.unwrap(), Ok(())));

    let records = store.audit_records(tenant).await.unwrap();
    let written: Vec<(i64, Option<&str>)> = records
        .iter()
        .map(|record| (record.seq, record.detail.as_deref()))
        .collect();
    assert_eq!(
        written,
        [
            (1, Some("commit 1")),
            (2, Some("commit 3")),
            (3, Some("commit 4")),
            (4, Some("commit 5"))
        ]
    );
}

/// A group stops before the commit that would take it past [`GROUP_WRITES`] writes, but
/// holds at least one commit, however large; commits leave the queue oldest first.
#[tokio::test]
async fn groups_are_bounded_and_oldest_first() {
    let (_dir, store, tenant, _) = store_with_tenant().await;
    let writes = |count: usize| (0..count).map(|n| create(&format!("p{n}"))).collect();
    let mut outcomes = Vec::new();
    for (ticket, count) in [
        (1, 1_200),
        (2, 700),
        (3, 200),
        (4, GROUP_WRITES + 1),
        (5, 1),
    ] {
        let (commit, outcome) = pending(tenant, ticket, writes(count));
        store.sync_writer.enqueue(commit).unwrap();
        outcomes.push(outcome);
    }
    let tickets = |group: Vec<PendingCommit>| -> Vec<u64> {
        group.iter().map(|commit| commit.ticket).collect()
    };
    assert_eq!(tickets(store.sync_writer.take()), [1, 2]);
    assert_eq!(tickets(store.sync_writer.take()), [3]);
    assert_eq!(tickets(store.sync_writer.take()), [4]);
    assert!(store.sync_writer.withdraw(5));
    assert!(!store.sync_writer.withdraw(5));
    assert!(store.sync_writer.take().is_empty());
}

/// A commit whose caller stops waiting before its group is taken is not written by the
/// next holder of the lock.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_commit_given_up_while_queued_is_not_written_later() {
    let (_dir, store, _, scope) = store_with_tenant().await;

    let lock = store.writer.acquire().await.unwrap();
    let given_up = tokio::time::timeout(
        Duration::from_millis(50),
        store.commit(&scope, &[create("given-up")], &[]),
    )
    .await;
    assert!(given_up.is_err(), "the commit should still be waiting");
    drop(lock);
    store.commit(&scope, &[create("next")], &[]).await.unwrap();

    assert!(
        store
            .current(&scope, "Patient", "next")
            .await
            .unwrap()
            .is_some()
    );
    assert_eq!(
        store.current(&scope, "Patient", "given-up").await.unwrap(),
        None
    );
    assert!(store.sync_writer.take().is_empty());
}

/// One group may hold commits of several tenants: each commit's resources land in its own
/// tenant only, and each tenant's audit records chain onto that tenant's own head.
#[tokio::test]
async fn a_group_keeps_each_tenants_commits_apart() {
    let (_dir, store, a, scope_a) = store_with_tenant().await;
    let (b, scope_b) = add_tenant(&store).await;

    let (first, first_outcome) = pending(a, 1, vec![create("a1")]);
    let (second, second_outcome) = pending(b, 2, vec![create("b1")]);
    let (third, third_outcome) = pending(a, 3, vec![create("a2")]);
    store.sync_writer.commit_group(vec![first, second, third]);
    for outcome in [first_outcome, second_outcome, third_outcome] {
        assert!(matches!(outcome.await.unwrap(), Ok(())));
    }
    for (scope, id, present) in [
        (&scope_a, "a1", true),
        (&scope_a, "b1", false),
        (&scope_b, "b1", true),
        (&scope_b, "a1", false),
        (&scope_b, "a2", false),
    ] {
        let current = store.current(scope, "Patient", id).await.unwrap();
        assert_eq!(current.is_some(), present, "{id}");
    }
    let trail = |records: Vec<AuditRecord>| -> Vec<(i64, Option<String>)> {
        records
            .into_iter()
            .map(|record| (record.seq, record.detail))
            .collect()
    };
    assert_eq!(
        trail(store.audit_records(a).await.unwrap()),
        [
            (1, Some("commit 1".to_owned())),
            (2, Some("commit 3".to_owned()))
        ]
    );
    assert_eq!(
        trail(store.audit_records(b).await.unwrap()),
        [(1, Some("commit 2".to_owned()))]
    );
}
