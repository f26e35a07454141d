//! Platform records: tenants, keys, clients, token replay and revocation.

use std::sync::Arc;

use carevault_domain::ids::{ClientId, TenantId};
use carevault_domain::store::{
    AccessTokenRecord, ClientRecord, ClientStatus, KeyPurpose, Store, StoreError, TenantRecord,
    TenantStatus, WrappedKey,
};

use sqlx::Row;

use crate::Raw;
use crate::fixtures::*;

conformance!(
    ping_and_engine,
    tenants_are_created_listed_and_quarantined,
    tenant_keys_round_trip,
    clients_are_created_listed_and_disabled,
    jti_replay_is_refused_until_expiry,
    access_tokens_reflect_quarantine_and_disable,
    postgres_replaces_a_pooled_connection_the_server_dropped,
    postgres_plans_a_prepared_statement_once,
);

async fn ping_and_engine(store: Arc<dyn Store>, raw: &Raw) {
    store.ping().await.unwrap();
    let expected = match raw {
        Raw::Sqlite(_) => "sqlite",
        Raw::Postgres { .. } => "postgres",
    };
    assert_eq!(store.engine(), expected);
}

/// PostgreSQL: the pool hands out a recently used connection without a ping (one round trip
/// fewer per transaction), but pings one idle for over a second first, so a connection the
/// server dropped meanwhile (a restart, a killed backend) is replaced instead of failing the
/// next request.
async fn postgres_replaces_a_pooled_connection_the_server_dropped(
    store: Arc<dyn Store>,
    raw: &Raw,
) {
    if !matches!(raw, Raw::Postgres { .. }) {
        return;
    }
    store.list_tenants().await.unwrap();
    tokio::time::sleep(std::time::Duration::from_millis(1_200)).await;
    let killed = raw
        .execute_as_owner(
            "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
             WHERE datname = current_database() AND pid <> pg_backend_pid()",
        )
        .await
        .unwrap();
    assert!(killed >= 1, "no pooled connection was there to drop");
    store.list_tenants().await.unwrap();
    store.ping().await.unwrap();
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

    // Quarantine revokes the tenant's tokens: a later release must not revive them.
    store
        .set_tenant_status(tenant, TenantStatus::Quarantined)
        .await
        .unwrap();
    assert_eq!(store.find_access_token(&[7; 32]).await.unwrap(), None);
    store
        .set_tenant_status(tenant, TenantStatus::Active)
        .await
        .unwrap();
    assert_eq!(store.find_access_token(&[7; 32]).await.unwrap(), None);

    // Disabling a client revokes its tokens too, and only its own.
    let other = client(tenant, "other machine");
    store.create_client(&other).await.unwrap();
    for (hash, owner) in [([9; 32], &machine), ([10; 32], &other)] {
        store
            .store_access_token(&AccessTokenRecord {
                token_hash: hash,
                client: owner.id.clone(),
                ..token.clone()
            })
            .await
            .unwrap();
    }
    store
        .set_client_status(&machine.id, ClientStatus::Disabled)
        .await
        .unwrap();
    assert_eq!(store.find_access_token(&[9; 32]).await.unwrap(), None);
    let kept = store.find_access_token(&[10; 32]).await.unwrap().unwrap();
    assert_eq!(kept.client_status, ClientStatus::Active);
}

/// A pooled connection plans a prepared statement once, whatever values are bound to it
/// (`PLAN_ONCE` in postgres.rs). Under PostgreSQL's default, the first five executions are
/// planned afresh, and an NHS-number search then kept being planned at every execution (0.49 ms
/// of planning for 0.07 ms of execution).
async fn postgres_plans_a_prepared_statement_once(_store: Arc<dyn Store>, raw: &Raw) {
    let Raw::Postgres { store: pg, .. } = raw else {
        return;
    };
    // The shape of a search driven by a token, as the store runs it.
    let statement = "SELECT c.id FROM resource_current c \
         WHERE c.tenant_id = $1::uuid AND c.resource_type = $2 AND c.deleted = FALSE \
           AND c.id IN (SELECT t.id FROM search_tokens t \
                        WHERE t.tenant_id = $1::uuid AND t.resource_type = $2 AND t.token IN ($3))";
    let mut connection = pg.pool_for_tests().acquire().await.unwrap();
    for round in 0u8..8 {
        sqlx::query(statement)
            .bind("00000000-0000-7000-8000-000000000001")
            .bind("Patient")
            .bind(vec![round; 16])
            .fetch_all(&mut *connection)
            .await
            .unwrap();
    }
    let row = sqlx::query(
        "SELECT generic_plans, custom_plans FROM pg_prepared_statements WHERE statement = $1",
    )
    .bind(statement)
    .fetch_one(&mut *connection)
    .await
    .unwrap();
    let (generic, custom): (i64, i64) = (row.get(0), row.get(1));
    assert_eq!(custom, 0, "planned afresh for the values bound");
    assert_eq!(generic, 8);
}
