//! The group writer's tests: grouping, failures and withdrawals, tenants kept apart, and
//! migrations 0011 (token lists) and 0012 (search rows keyed by resource).

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

/// A token row as versions 5 to 11 held it.
const INSERT_TOKEN_V10: &str =
    "INSERT INTO search_tokens (tenant_id, resource_type, id, token) VALUES (?, ?, ?, ?)";

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
            sqlx::query(INSERT_TOKEN_V10)
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
        .prepare(
            "SELECT t.token FROM search_tokens t JOIN resource_current c ON c.rkey = t.rkey \
             WHERE c.id = 'two'",
        )
        .unwrap();
    let left: Vec<Vec<u8>> = statement
        .query_map([], |row| row.get(0))
        .unwrap()
        .collect::<Result<_, _>>()
        .unwrap();
    assert_eq!(left, vec![vec![3u8; 16]]);
}

/// A search row as the resource it names sees it: tenant, type, id, "token" or "date", the
/// token, the date's low end.
type SearchRow = (Vec<u8>, String, String, String, Vec<u8>, i64);

/// Migration 0012 on a database of version 11: every token and date row of two tenants that
/// share an id, a token and a date, in two types that share a token, names the same
/// resource afterwards, by its key; token rows hold no tenant; searches through the store find
/// each tenant's own resources, and an update replaces exactly its own rows.
#[tokio::test]
async fn migration_12_keys_search_rows_by_resource_and_keeps_tenants_and_types_apart() {
    use carevault_domain::store::{CandidateFilter, CandidateQuery, SortBy};
    use sqlx::{Connection as _, Row};

    let (_dir, path, mut connection) = test_support::database_through(11).await;
    let tenants = [TenantId::generate(), TenantId::generate()];
    let shared = [7u8; 16];
    // (type, id, tokens): the same id, token and date in both tenants; Observation shares the
    // Patient's token (blind tokens are not bound to a type).
    let resources = [
        ("Patient", "p1", vec![shared, [1; 16]]),
        ("Observation", "o1", vec![shared]),
        ("Patient", "gone", Vec::new()),
    ];
    let mut before: Vec<SearchRow> = Vec::new();
    for (position, tenant) in tenants.iter().enumerate() {
        sqlx::query(
            "INSERT INTO tenants (id, name, status, created_ms) VALUES (?, ?, 'active', 1)",
        )
        .bind(tenant.as_uuid())
        .bind(format!("t{position}"))
        .execute(&mut connection)
        .await
        .unwrap();
        for (resource_type, id, tokens) in &resources {
            let deleted = i64::from(*id == "gone");
            sqlx::query("INSERT INTO resource_versions VALUES (?1, ?2, ?3, 1, 1, ?4, x'00')")
                .bind(tenant.as_uuid())
                .bind(resource_type)
                .bind(id)
                .bind(deleted)
                .execute(&mut connection)
                .await
                .unwrap();
            sqlx::query("INSERT INTO resource_current VALUES (?1, ?2, ?3, 1, 1, ?4, ?5)")
                .bind(tenant.as_uuid())
                .bind(resource_type)
                .bind(id)
                .bind(deleted)
                .bind((!tokens.is_empty()).then(|| tokens.concat()))
                .execute(&mut connection)
                .await
                .unwrap();
            for token in tokens {
                sqlx::query(INSERT_TOKEN_V10)
                    .bind(tenant.as_uuid())
                    .bind(resource_type)
                    .bind(id)
                    .bind(token.to_vec())
                    .execute(&mut connection)
                    .await
                    .unwrap();
                before.push((
                    tenant.as_uuid().into_bytes().to_vec(),
                    (*resource_type).to_owned(),
                    (*id).to_owned(),
                    "token".to_owned(),
                    token.to_vec(),
                    0,
                ));
            }
            if !tokens.is_empty() {
                sqlx::query("INSERT INTO search_dates VALUES (?1, ?2, ?3, 'date', 5, 6)")
                    .bind(tenant.as_uuid())
                    .bind(resource_type)
                    .bind(id)
                    .execute(&mut connection)
                    .await
                    .unwrap();
                before.push((
                    tenant.as_uuid().into_bytes().to_vec(),
                    (*resource_type).to_owned(),
                    (*id).to_owned(),
                    "date".to_owned(),
                    Vec::new(),
                    5,
                ));
            }
        }
    }
    crate::migrations::sqlite()
        .run(&mut connection)
        .await
        .unwrap();
    let rows = sqlx::query(
        "SELECT c.tenant_id, c.resource_type, c.id, 'token', t.token, 0 FROM search_tokens t \
           JOIN resource_types types ON types.code = t.type_code \
           JOIN resource_current c ON c.rkey = t.rkey AND c.resource_type = types.name \
         UNION ALL \
         SELECT c.tenant_id, c.resource_type, c.id, 'date', x'', d.low FROM search_dates d \
           JOIN resource_current c ON c.rkey = d.rkey \
             AND c.tenant_id = d.tenant_id AND c.resource_type = d.resource_type \
         ORDER BY 1, 2, 3, 4, 5",
    )
    .fetch_all(&mut connection)
    .await
    .unwrap();
    let mut after: Vec<SearchRow> = rows
        .iter()
        .map(|row| {
            (
                row.get(0),
                row.get(1),
                row.get(2),
                row.get(3),
                row.get(4),
                row.get(5),
            )
        })
        .collect();
    after.sort();
    before.sort();
    assert_eq!(after, before);
    let columns: Vec<String> = sqlx::query("SELECT name FROM pragma_table_info('search_tokens')")
        .fetch_all(&mut connection)
        .await
        .unwrap()
        .iter()
        .map(|row| row.get(0))
        .collect();
    assert_eq!(columns, ["token", "type_code", "rkey"]);
    connection.close().await.unwrap();

    let store = SqliteStore::open(&path).await.unwrap();
    let by_token = |resource_type: &str| CandidateQuery {
        resource_type: resource_type.to_owned(),
        filters: vec![CandidateFilter::AnyToken(vec![shared])],
        sort: SortBy::LastUpdated,
        descending: false,
        after: None,
        limit: 10,
    };
    let found = |candidates: Vec<carevault_domain::store::Candidate>| -> Vec<String> {
        candidates
            .into_iter()
            .map(|found| found.version.id)
            .collect()
    };
    for tenant in tenants {
        for (resource_type, id) in [("Patient", "p1"), ("Observation", "o1")] {
            let candidates = store
                .search(&scope_for(tenant), &by_token(resource_type))
                .await
                .unwrap();
            assert_eq!(found(candidates), [id], "{resource_type} of {tenant}");
        }
    }
    // The first tenant's update replaces its Patient's rows, and nobody else's.
    let mut update = create("p1");
    update.version.version = 2;
    update.precondition = Precondition::CurrentVersion(1);
    update.tokens = vec![[3; 16]];
    store
        .commit(&scope_for(tenants[0]), &[update], &[])
        .await
        .unwrap();
    let first = store
        .search(&scope_for(tenants[0]), &by_token("Patient"))
        .await
        .unwrap();
    assert!(found(first).is_empty());
    let second = store
        .search(&scope_for(tenants[1]), &by_token("Patient"))
        .await
        .unwrap();
    assert_eq!(found(second), ["p1"]);
    let observation = store
        .search(&scope_for(tenants[0]), &by_token("Observation"))
        .await
        .unwrap();
    assert_eq!(found(observation), ["o1"]);
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
