//! Writes and reads: preconditions, atomic commits, tombstones and history.

use std::sync::Arc;

use carevault_domain::principal::TenantScope;
use carevault_domain::store::{
    CandidateFilter, HistoryQuery, Precondition, ResourceWrite, Store, StoreError,
};

use carevault_fhir::{DateCondition, DatePrefix};

use crate::Raw;
use crate::fixtures::*;

conformance!(
    commit_checks_preconditions,
    conflict_rolls_back_the_whole_commit,
    a_large_commit_writes_every_resource_and_its_search_rows,
    a_commit_naming_one_id_twice_conflicts_and_writes_nothing,
    concurrent_commits_succeed_or_fail_alone,
    sqlite_checkpoints_the_wal_in_the_background,
    tombstones_are_current_but_not_searchable,
    history_is_newest_first_and_pages,
);

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
    let paged = paged_history(&store, &scope, &all, 2).await;
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
    // Instance history pages by version, one at a time, to the same sequence.
    let paged = paged_history(&store, &scope, &instance, 1).await;
    assert_eq!(
        paged
            .iter()
            .map(|(_, _, version)| *version)
            .collect::<Vec<_>>(),
        vec![3, 2, 1]
    );
    // An instance's history is in version order even when the clock stepped back between two
    // updates (version 2 written "before" version 1), and `_since` still filters by time.
    store
        .commit(&scope, &[create("Encounter", "e", 100)], &[])
        .await
        .unwrap();
    store
        .commit(&scope, &[update("Encounter", "e", 2, 90)], &[])
        .await
        .unwrap();
    let encounter = HistoryQuery {
        resource_type: "Encounter".to_owned(),
        id: Some("e".to_owned()),
        ..all.clone()
    };
    let versions = |page: Vec<carevault_domain::store::StoredVersion>| -> Vec<i64> {
        page.iter().map(|v| v.version).collect()
    };
    assert_eq!(
        versions(store.history(&scope, &encounter).await.unwrap()),
        vec![2, 1]
    );
    assert_eq!(
        paged_history(&store, &scope, &encounter, 1).await,
        vec![(90, "e".to_owned(), 2), (100, "e".to_owned(), 1)]
    );
    let recent = HistoryQuery {
        since_ms: Some(95),
        ..encounter
    };
    assert_eq!(
        versions(store.history(&scope, &recent).await.unwrap()),
        vec![1]
    );
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

/// Every entry of `query`'s history, fetched `size` at a time, each page after the last entry
/// of the one before, as (last updated, id, version).
async fn paged_history(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    query: &HistoryQuery,
    size: usize,
) -> Vec<(i64, String, i64)> {
    let mut paged = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .history(
                scope,
                &HistoryQuery {
                    before: before.clone(),
                    limit: size,
                    ..query.clone()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else {
            return paged;
        };
        assert!(page.len() <= size);
        before = Some((last.last_updated_ms, last.id.clone(), last.version));
        paged.extend(
            page.into_iter()
                .map(|v| (v.last_updated_ms, v.id, v.version)),
        );
    }
}

/// A blind token unique to `index`.
fn token_of(index: usize) -> [u8; 16] {
    let mut token = [0xAB; 16];
    token[..8].copy_from_slice(&(index as u64).to_be_bytes());
    token
}

/// More creates than one multi-row statement carries, with an update between them: every
/// resource, its current row and its search rows are written, across the statements' seams.
async fn a_large_commit_writes_every_resource_and_its_search_rows(
    store: Arc<dyn Store>,
    _raw: &Raw,
) {
    let (tenant, scope) = new_tenant(&store, "large commit").await;
    store
        .commit(&scope, &[create("Patient", "existing", T0)], &[])
        .await
        .unwrap();
    let count = 1_203;
    let creates: Vec<ResourceWrite> = (0..count)
        .map(|index| {
            let mut write = create("Observation", &format!("o{index}"), T0 + index as i64);
            write.tokens = vec![token(7), token_of(index), token(8)];
            write.dates = vec![date("date", index as i64 * 10, index as i64 * 10 + 5)];
            write
        })
        .collect();
    let mut writes = creates[..700].to_vec();
    let mut changed = update("Patient", "existing", 2, T0 + 1);
    changed.tokens = vec![token(9)];
    writes.push(changed);
    writes.extend_from_slice(&creates[700..]);
    store
        .commit(&scope, &writes, &[audit(tenant, "create", "many")])
        .await
        .unwrap();

    for index in [0, 499, 500, 699, 700, 999, 1_000, count - 1] {
        let id = format!("o{index}");
        assert_eq!(
            store.current(&scope, "Observation", &id).await.unwrap(),
            Some(creates[index].version.clone()),
            "{id}"
        );
        let by_token = CandidateFilter::AnyToken(vec![token_of(index)]);
        assert_eq!(
            search_ids(&store, &scope, &query("Observation", vec![by_token])).await,
            vec![id.clone()],
            "{id}"
        );
        let by_date = CandidateFilter::AnyDate {
            params: vec!["date".to_owned()],
            conditions: vec![DateCondition {
                prefix: DatePrefix::Eq,
                low: index as i64 * 10,
                high: index as i64 * 10 + 5,
            }],
        };
        assert_eq!(
            search_ids(&store, &scope, &query("Observation", vec![by_date])).await,
            vec![id.clone()],
            "{id}"
        );
    }
    // Every resource carries the shared tokens: page through all of them.
    let shared = query(
        "Observation",
        vec![CandidateFilter::AnyToken(vec![token(8)])],
    );
    assert_eq!(search_all_ids(&store, &scope, shared).await.len(), count);
    assert_eq!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(9)])])
        )
        .await,
        strings(&["existing"])
    );
}

/// A commit that creates one id twice, or creates an id that exists in a later statement's
/// chunk, is a conflict naming that id, and writes nothing.
async fn a_commit_naming_one_id_twice_conflicts_and_writes_nothing(
    store: Arc<dyn Store>,
    raw: &Raw,
) {
    let (tenant, scope) = new_tenant(&store, "twice").await;
    store
        .commit(&scope, &[create("Patient", "taken", T0)], &[])
        .await
        .unwrap();
    let rows_before = raw.audit_rows().await;

    let mut twice = vec![create("Patient", "p1", T0), create("Patient", "p2", T0)];
    twice[1].tokens = vec![token(4)];
    twice.push(create("Patient", "p1", T0 + 1));
    let outcome = store
        .commit(&scope, &twice, &[audit(tenant, "create", "twice")])
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict { ref id, .. }) if id == "p1"),
        "{outcome:?}"
    );

    let mut late: Vec<ResourceWrite> = (0..800)
        .map(|index| create("Patient", &format!("n{index}"), T0))
        .collect();
    late[650] = create("Patient", "taken", T0 + 2);
    let outcome = store
        .commit(&scope, &late, &[audit(tenant, "create", "late")])
        .await;
    assert!(
        matches!(outcome, Err(StoreError::Conflict { ref id, .. }) if id == "taken"),
        "{outcome:?}"
    );

    for id in ["p1", "p2", "n0", "n499", "n799"] {
        assert_eq!(
            store.current(&scope, "Patient", id).await.unwrap(),
            None,
            "{id}"
        );
    }
    assert!(
        search_ids(
            &store,
            &scope,
            &query("Patient", vec![CandidateFilter::AnyToken(vec![token(4)])])
        )
        .await
        .is_empty()
    );
    assert_eq!(raw.audit_rows().await, rows_before);
}

/// Many commits at once (SQLite writes those that wait for its one writer together, in one
/// transaction): each commit still succeeds or fails alone. Every fifth commit also creates an
/// id that exists, and must conflict and leave nothing behind (neither its other resource, nor
/// its search rows, nor its audit record), while every other commit is written whole, and the
/// audit sequence has no gap.
async fn concurrent_commits_succeed_or_fail_alone(store: Arc<dyn Store>, raw: &Raw) {
    let (tenant, scope) = new_tenant(&store, "concurrent").await;
    store
        .commit(&scope, &[create("Patient", "taken", T0)], &[])
        .await
        .unwrap();
    let rows_before = raw.audit_rows().await;
    let commits = 40;
    let mut running = Vec::new();
    for index in 0..commits {
        let (store, scope) = (store.clone(), scope.clone());
        running.push(tokio::spawn(async move {
            let mut mine = create("Patient", &format!("c{index}"), T0 + 1);
            mine.tokens = vec![token(7)];
            mine.dates = vec![date("birthdate", 0, 10)];
            let mut writes = vec![mine];
            if index % 5 == 0 {
                writes.push(create("Patient", "taken", T0 + 1));
            }
            let records = [audit(tenant, "create", &format!("commit {index}"))];
            store.commit(&scope, &writes, &records).await
        }));
    }
    let mut written = Vec::new();
    for (index, commit) in running.into_iter().enumerate() {
        let outcome = commit.await.unwrap();
        if index % 5 == 0 {
            assert!(
                matches!(outcome, Err(StoreError::Conflict { ref id, .. }) if id == "taken"),
                "commit {index}: {outcome:?}"
            );
            let id = format!("c{index}");
            assert_eq!(store.current(&scope, "Patient", &id).await.unwrap(), None);
        } else {
            outcome.unwrap_or_else(|error| panic!("commit {index}: {error}"));
            written.push(format!("c{index}"));
        }
    }
    assert_eq!(
        sorted(
            search_all_ids(
                &store,
                &scope,
                query("Patient", vec![CandidateFilter::AnyToken(vec![token(7)])])
            )
            .await
        ),
        sorted(written.clone())
    );
    let records = store.audit_records(tenant).await.unwrap();
    let seqs: Vec<i64> = records.iter().map(|record| record.seq).collect();
    assert_eq!(seqs, (1..=written.len() as i64).collect::<Vec<_>>());
    let mut details: Vec<String> = records
        .iter()
        .filter_map(|record| record.detail.clone())
        .collect();
    details.sort();
    let mut expected: Vec<String> = (0..commits)
        .filter(|index| index % 5 != 0)
        .map(|index| format!("commit {index}"))
        .collect();
    expected.sort();
    assert_eq!(details, expected);
    let report = crate::audit_chain::verify(&store, tenant, 100).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.records, written.len() as u64);
    assert!(raw.audit_rows().await > rows_before);
}

/// SQLite: committed pages reach the database file without waiting for the writer's own
/// automatic checkpoint (a backstop at 16,000 pages): a background task checkpoints the WAL.
/// Under WAL the main file grows only when a checkpoint copies pages into it.
async fn sqlite_checkpoints_the_wal_in_the_background(store: Arc<dyn Store>, raw: &Raw) {
    let Raw::Sqlite(path) = raw else {
        return;
    };
    let (_, scope) = new_tenant(&store, "checkpoint").await;
    tokio::time::sleep(std::time::Duration::from_millis(500)).await;
    let before = std::fs::metadata(path).unwrap().len();
    // About 2 MB of pages: far below the backstop's 400 MB.
    let writes: Vec<ResourceWrite> = (0..2_000)
        .map(|index| {
            let mut write = create("Observation", &format!("c{index}"), T0);
            write.version.body = vec![7; 1_000];
            write
        })
        .collect();
    store.commit(&scope, &writes, &[]).await.unwrap();
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        let now = std::fs::metadata(path).unwrap().len();
        if now >= before + 2_000_000 {
            break;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the database file stayed at {now} bytes (from {before}): nothing checkpointed the WAL"
        );
        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
    }
}
