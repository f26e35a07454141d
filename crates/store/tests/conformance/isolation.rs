//! Isolation and audit: tenants never see each other, audit sequences, concurrency, the append-only audit log, the PostgreSQL role, the SQLite file mode.

use std::collections::BTreeSet;
use std::sync::Arc;

use carevault_domain::ids::TenantId;
use carevault_domain::store::{
    CandidateFilter, CandidateQuery, HistoryQuery, SortBy, Store, StoreError,
};
use carevault_fhir::{DateCondition, DatePrefix};
use carevault_store::audit_segment::{self, KeyKind};
use carevault_store::{PgStore, SqliteStore};
use sqlx::Row;

use crate::Raw;
use crate::fixtures::*;

conformance!(
    tenants_cannot_see_each_other,
    an_update_replaces_only_its_own_tenants_search_rows,
    audit_sequences_are_contiguous_per_tenant,
    concurrent_commits_serialise,
    audit_trail_refuses_update_and_delete,
    postgres_runs_as_a_role_bound_by_row_level_security,
    sqlite_file_is_private,
);

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
            params: vec!["birthdate".to_owned()],
            conditions: vec![DateCondition {
                prefix: DatePrefix::Eq,
                low: 0,
                high: 10,
            }],
        }],
        // A parameter with those it includes: a list of date parameters (`d.param IN (…)`).
        vec![CandidateFilter::AnyDate {
            params: strings(&["date", "birthdate"]),
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
            sort: SortBy::Date(vec!["birthdate".to_owned()]),
            ..query("Patient", filter.clone())
        };
        assert!(search_ids(&store, &scope_b, &by_date).await.is_empty());
        let by_dates = CandidateQuery {
            sort: SortBy::Date(strings(&["date", "birthdate"])),
            ..query("Patient", filter.clone())
        };
        assert!(search_ids(&store, &scope_b, &by_dates).await.is_empty());
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

/// Two tenants hold a resource with the same id and the same token and date. One tenant's
/// update, and then its delete, remove that tenant's search rows and never the other's (the
/// SQLite writer deletes the token rows a resource lists by key, the key's tenant included).
async fn an_update_replaces_only_its_own_tenants_search_rows(store: Arc<dyn Store>, _raw: &Raw) {
    let (_, scope_a) = new_tenant(&store, "a").await;
    let (_, scope_b) = new_tenant(&store, "b").await;
    for scope in [&scope_a, &scope_b] {
        let mut write = create("Patient", "shared-id", T0);
        write.tokens = vec![token(7)];
        write.dates = vec![date("birthdate", 0, 10)];
        store.commit(scope, &[write], &[]).await.unwrap();
    }
    let by_token = |byte: u8| {
        query(
            "Patient",
            vec![CandidateFilter::AnyToken(vec![token(byte)])],
        )
    };
    let by_date = query(
        "Patient",
        vec![CandidateFilter::AnyDate {
            params: vec!["birthdate".to_owned()],
            conditions: vec![DateCondition {
                prefix: DatePrefix::Eq,
                low: 0,
                high: 10,
            }],
        }],
    );
    let shared = strings(&["shared-id"]);

    let mut replaced = update("Patient", "shared-id", 2, T0 + 1);
    replaced.tokens = vec![token(8)];
    store.commit(&scope_a, &[replaced], &[]).await.unwrap();
    assert!(search_ids(&store, &scope_a, &by_token(7)).await.is_empty());
    assert!(search_ids(&store, &scope_a, &by_date).await.is_empty());
    assert_eq!(search_ids(&store, &scope_a, &by_token(8)).await, shared);
    assert_eq!(search_ids(&store, &scope_b, &by_token(7)).await, shared);
    assert_eq!(search_ids(&store, &scope_b, &by_date).await, shared);

    store
        .commit(
            &scope_a,
            &[tombstone("Patient", "shared-id", 3, T0 + 2)],
            &[],
        )
        .await
        .unwrap();
    assert!(search_ids(&store, &scope_a, &by_token(8)).await.is_empty());
    assert_eq!(search_ids(&store, &scope_b, &by_token(7)).await, shared);
    assert_eq!(search_ids(&store, &scope_b, &by_date).await, shared);
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

async fn audit_trail_refuses_update_and_delete(store: Arc<dyn Store>, raw: &Raw) {
    let (a, _) = new_tenant(&store, "immutable").await;
    store
        .append_audit(&[audit(a, "read", "1"), audit(a, "read", "2")])
        .await
        .unwrap();
    let before = store.audit_records(a).await.unwrap();
    let keys_before = raw.audit_keys(a, 1, 2).await;
    assert!(keys_before >= 4, "principal, action, outcome, patient");

    // Without a retention marker nobody removes or changes a record or its search keys, not
    // even the owner: the guards refuse (the statements themselves are sound). The keys are a
    // row per key on SQLite, an array per segment on PostgreSQL.
    let keys_attacks = match raw {
        Raw::Sqlite(_) => ["UPDATE audit_keys SET key = 0", "DELETE FROM audit_keys"],
        Raw::Postgres { .. } => [
            "UPDATE audit_segment_keys SET keys = keys || CAST(0 AS BIGINT)",
            "DELETE FROM audit_segment_keys",
        ],
    };
    for statement in [
        "UPDATE audit_segments SET max_time_ms = 0",
        "UPDATE audit_segments SET first_seq = 2",
        "DELETE FROM audit_segments WHERE first_seq = 1",
        "DELETE FROM audit_segments",
    ]
    .into_iter()
    .chain(keys_attacks)
    {
        let error = raw.execute_as_owner(statement).await.unwrap_err();
        assert!(error.contains("cannot be"), "{statement}: {error}");
    }
    if let Raw::Postgres { .. } = raw {
        for statement in [
            "TRUNCATE audit_segments",
            "TRUNCATE audit_segment_keys",
            "TRUNCATE audit_retention",
        ] {
            let error = raw.execute_as_owner(statement).await.unwrap_err();
            assert!(error.contains("cannot be"), "{statement}: {error}");
        }
    }
    if let Raw::Postgres { store: pg, .. } = raw {
        // The server's own role has no UPDATE or DELETE privilege at all.
        let pool = pg.pool_for_tests();
        for statement in [
            "UPDATE audit_segments SET max_time_ms = 0",
            "DELETE FROM audit_segments",
            "UPDATE audit_segment_keys SET keys = '{}'",
            "DELETE FROM audit_segment_keys",
            "DELETE FROM audit_retention",
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
    assert_eq!(raw.audit_keys(a, 1, 2).await, keys_before);
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
        "audit_segments",
        "audit_segment_keys",
        "audit_heads",
    ] {
        let count_sql = match table {
            "resource_versions" => "SELECT count(*) FROM resource_versions",
            "resource_current" => "SELECT count(*) FROM resource_current",
            "search_tokens" => "SELECT count(*) FROM search_tokens",
            "search_dates" => "SELECT count(*) FROM search_dates",
            "audit_segments" => "SELECT count(*) FROM audit_segments",
            "audit_segment_keys" => "SELECT count(*) FROM audit_segment_keys",
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

    // The search keys' look-up runs as the owner (so that it can use the GIN index, which the
    // policy would keep the server's role from) and applies the policies' tenant setting
    // itself: nothing without it, nothing for another tenant.
    let lookup = "SELECT count(*) FROM carevault_audit_segments_with_keys(\
                  ARRAY[$1]::bigint[], 9223372036854775807, 100)";
    let patient = audit_segment::search_key(KeyKind::Patient, "p1");
    for (setting, expected) in [
        (None, 0),
        (Some(TenantId::generate()), 0),
        (Some(tenant), 1),
    ] {
        let mut tx = pool.begin().await.unwrap();
        if let Some(setting) = setting {
            sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
                .bind(setting.to_string())
                .execute(&mut *tx)
                .await
                .unwrap();
        }
        let found: i64 = sqlx::query(lookup)
            .bind(patient)
            .fetch_one(&mut *tx)
            .await
            .unwrap()
            .get(0);
        assert_eq!(
            found, expected,
            "look-up with the tenant setting {setting:?}"
        );
        tx.rollback().await.unwrap();
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
