//! People's access: supplier grants, break-glass, factor resets, security events, home-entry
//! details (tenant data), and how the people tables are stored (hashes, row-level security and
//! privileges on PostgreSQL).

use carevault_domain::ids::{PersonId, TenantId};
use carevault_domain::people::{
    BreakGlassRecord, FactorResetRecord, GrantRecord, GrantStatus, HomeEntryRecord, Role,
    SecurityEvent,
};
use carevault_domain::store::StoreError;
use sqlx::Row;

use crate::fixtures::{T0, new_tenant};
use crate::people::{person, session, stored_person};
use crate::{Engine, Raw};

conformance!(people:
    grants_are_requested_decided_and_listed,
    break_glass_expires,
    factor_reset_is_approved_once,
    security_events_are_listed_by_tenant_and_time,
    home_entry_keeps_versions_per_tenant,
    secrets_are_stored_as_hashes,
    postgres_people_tables_are_platform_tables_and_home_entry_is_tenant_data,
);

fn grant(id: &str, tenant: TenantId, operator: PersonId, requested_ms: i64) -> GrantRecord {
    GrantRecord {
        id: id.to_owned(),
        tenant,
        operator,
        reason: "investigate a sync fault".to_owned(),
        duration_ms: 3_600_000,
        status: GrantStatus::Requested,
        requested_ms,
        decided_by: None,
        decided_ms: None,
        expires_ms: None,
    }
}

async fn grants_are_requested_decided_and_listed(engine: &Engine) {
    let people = &engine.people;
    let operator = person(
        TenantId::platform(),
        "ops@supplier.example",
        &[Role::PlatformOperator],
    );
    people.create_person(&operator).await.unwrap();
    let other_operator = person(
        TenantId::platform(),
        "ops2@supplier.example",
        &[Role::PlatformOperator],
    );
    people.create_person(&other_operator).await.unwrap();
    let tenant = TenantId::generate();
    let admin = person(tenant, "admin@example.org", &[Role::TenantAdmin]);
    people.create_person(&admin).await.unwrap();
    let elsewhere = TenantId::generate();

    let later = grant("g2", tenant, operator.id, T0 + 10);
    let earlier = grant("g1", tenant, operator.id, T0);
    let other = grant("g3", elsewhere, other_operator.id, T0);
    for record in [&later, &earlier, &other] {
        people.create_grant(record).await.unwrap();
    }
    assert!(matches!(
        people.create_grant(&earlier).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(people.grant("g1").await.unwrap(), Some(earlier.clone()));
    assert_eq!(people.grant("nope").await.unwrap(), None);
    assert_eq!(
        people.grants_for_tenant(tenant).await.unwrap(),
        vec![earlier.clone(), later.clone()]
    );
    assert_eq!(
        people.grants_of_operator(operator.id).await.unwrap(),
        vec![earlier.clone(), later.clone()]
    );
    assert_eq!(
        people.grants_of_operator(other_operator.id).await.unwrap(),
        vec![other.clone()]
    );

    // Approval fills the decision; an update never moves the grant to another tenant,
    // operator, reason or duration.
    let mut approved = earlier.clone();
    approved.status = GrantStatus::Approved;
    approved.decided_by = Some(admin.id);
    approved.decided_ms = Some(T0 + 100);
    approved.expires_ms = Some(T0 + 100 + approved.duration_ms);
    let mut attempted = approved.clone();
    attempted.tenant = elsewhere;
    attempted.operator = other_operator.id;
    attempted.reason = "changed".to_owned();
    attempted.duration_ms = 1;
    attempted.requested_ms = 0;
    people.update_grant(&attempted).await.unwrap();
    assert_eq!(people.grant("g1").await.unwrap(), Some(approved.clone()));

    let mut refused = later.clone();
    refused.status = GrantStatus::Refused;
    refused.decided_by = Some(admin.id);
    refused.decided_ms = Some(T0 + 20);
    people.update_grant(&refused).await.unwrap();
    let mut revoked = approved.clone();
    revoked.status = GrantStatus::Revoked;
    people.update_grant(&revoked).await.unwrap();
    assert_eq!(
        people.grants_for_tenant(tenant).await.unwrap(),
        vec![revoked, refused]
    );
    assert_eq!(
        people.grants_for_tenant(elsewhere).await.unwrap(),
        vec![other]
    );
}

async fn break_glass_expires(engine: &Engine) {
    let people = &engine.people;
    let tenant = TenantId::generate();
    let clinician = person(tenant, "doc@example.org", &[Role::Clinician]);
    let colleague = person(tenant, "nurse@example.org", &[Role::Clinician]);
    people.create_person(&clinician).await.unwrap();
    people.create_person(&colleague).await.unwrap();
    let record =
        |person: PersonId, patient: &str, created_ms: i64, expires_ms: i64| BreakGlassRecord {
            tenant,
            person,
            patient: patient.to_owned(),
            reason: "emergency admission".to_owned(),
            created_ms,
            expires_ms,
        };
    let short = record(clinician.id, "p1", T0, T0 + 100);
    let long = record(clinician.id, "p2", T0 + 1, T0 + 1_000);
    let colleagues = record(colleague.id, "p1", T0, T0 + 1_000);
    for item in [&long, &short, &colleagues] {
        people.add_break_glass(item).await.unwrap();
    }

    assert_eq!(
        people
            .active_break_glass(tenant, clinician.id, T0 + 50)
            .await
            .unwrap(),
        vec![short.clone(), long.clone()]
    );
    // Expired at its expiry time.
    assert_eq!(
        people
            .active_break_glass(tenant, clinician.id, T0 + 100)
            .await
            .unwrap(),
        vec![long.clone()]
    );
    assert!(
        people
            .active_break_glass(tenant, clinician.id, T0 + 1_000)
            .await
            .unwrap()
            .is_empty()
    );
    // Per person and per tenant.
    assert_eq!(
        people
            .active_break_glass(tenant, colleague.id, T0 + 50)
            .await
            .unwrap(),
        vec![colleagues]
    );
    assert!(
        people
            .active_break_glass(TenantId::generate(), clinician.id, T0 + 50)
            .await
            .unwrap()
            .is_empty()
    );

    // A second break-glass on the same patient later is recorded alongside.
    let again = record(clinician.id, "p1", T0 + 200, T0 + 300);
    people.add_break_glass(&again).await.unwrap();
    assert_eq!(
        people
            .active_break_glass(tenant, clinician.id, T0 + 250)
            .await
            .unwrap(),
        vec![long, again]
    );
}

async fn factor_reset_is_approved_once(engine: &Engine) {
    let people = &engine.people;
    let tenant = TenantId::generate();
    let subject = person(tenant, "carer@example.org", &[Role::Carer]);
    let requester = person(tenant, "admin1@example.org", &[Role::TenantAdmin]);
    let approver = person(tenant, "admin2@example.org", &[Role::TenantAdmin]);
    let late_approver = person(tenant, "admin3@example.org", &[Role::SecurityOfficer]);
    for someone in [&subject, &requester, &approver, &late_approver] {
        people.create_person(someone).await.unwrap();
    }
    let reset = |id: &str, tenant: TenantId, requested_ms: i64| FactorResetRecord {
        id: id.to_owned(),
        tenant,
        person: subject.id,
        requested_by: requester.id,
        requested_ms,
        approved_by: None,
        approved_ms: None,
    };
    let second = reset("r2", tenant, T0 + 5);
    let first = reset("r1", tenant, T0);
    let foreign = reset("r3", TenantId::generate(), T0);
    for item in [&second, &first, &foreign] {
        people.create_factor_reset(item).await.unwrap();
    }
    assert!(matches!(
        people.create_factor_reset(&first).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        people.factor_reset("r1").await.unwrap(),
        Some(first.clone())
    );
    assert_eq!(people.factor_reset("nope").await.unwrap(), None);
    assert_eq!(
        people.pending_factor_resets(tenant).await.unwrap(),
        vec![first.clone(), second.clone()]
    );

    assert!(
        people
            .approve_factor_reset("r1", approver.id, T0 + 60)
            .await
            .unwrap()
    );
    assert!(
        !people
            .approve_factor_reset("r1", late_approver.id, T0 + 70)
            .await
            .unwrap()
    );
    assert!(
        !people
            .approve_factor_reset("nope", approver.id, T0 + 70)
            .await
            .unwrap()
    );
    let approved = people.factor_reset("r1").await.unwrap().unwrap();
    assert_eq!(approved.approved_by, Some(approver.id));
    assert_eq!(approved.approved_ms, Some(T0 + 60));
    assert_eq!(
        people.pending_factor_resets(tenant).await.unwrap(),
        vec![second]
    );

    // The requester can never be the approver, even if a caller forgets to check.
    assert!(
        people
            .approve_factor_reset("r2", requester.id, T0 + 80)
            .await
            .is_err()
    );
    assert_eq!(
        people
            .factor_reset("r2")
            .await
            .unwrap()
            .unwrap()
            .approved_by,
        None
    );
}

async fn security_events_are_listed_by_tenant_and_time(engine: &Engine) {
    let people = &engine.people;
    let tenant = TenantId::generate();
    let someone = PersonId::generate();
    let event =
        |tenant: TenantId, time_ms: i64, kind: &str, person: Option<PersonId>| SecurityEvent {
            tenant,
            time_ms,
            kind: kind.to_owned(),
            person,
            detail: format!("{kind} at {time_ms}"),
        };
    let late = event(tenant, T0 + 20, "break-glass", Some(someone));
    let early = event(tenant, T0, "second-factor-failed", Some(someone));
    let same_time = event(tenant, T0 + 20, "factor-reset", None);
    let platform = event(TenantId::platform(), T0, "grant-requested", None);
    for item in [&late, &early, &same_time, &platform] {
        people.record_security_event(item).await.unwrap();
    }
    // In time order; events at one time in the order recorded.
    assert_eq!(
        people.security_events(tenant, 0).await.unwrap(),
        vec![early, late.clone(), same_time.clone()]
    );
    assert_eq!(
        people.security_events(tenant, T0 + 20).await.unwrap(),
        vec![late, same_time]
    );
    assert!(
        people
            .security_events(tenant, T0 + 21)
            .await
            .unwrap()
            .is_empty()
    );
    assert_eq!(
        people
            .security_events(TenantId::platform(), 0)
            .await
            .unwrap(),
        vec![platform]
    );
}

fn home_entry(tenant: TenantId, patient: &str, version: i64) -> HomeEntryRecord {
    HomeEntryRecord {
        tenant,
        patient: patient.to_owned(),
        version,
        updated_ms: T0 + version,
        sealed: format!("sealed {patient} v{version}").into_bytes(),
    }
}

async fn home_entry_keeps_versions_per_tenant(engine: &Engine) {
    let people = &engine.people;
    let (a, scope_a) = new_tenant(&engine.store, "home-a").await;
    let (b, scope_b) = new_tenant(&engine.store, "home-b").await;

    assert_eq!(people.home_entry(&scope_a, "p1").await.unwrap(), None);
    people
        .put_home_entry(&scope_a, &home_entry(a, "p1", 1))
        .await
        .unwrap();
    people
        .put_home_entry(&scope_a, &home_entry(a, "p1", 2))
        .await
        .unwrap();
    people
        .put_home_entry(&scope_a, &home_entry(a, "p2", 1))
        .await
        .unwrap();
    // The newest version.
    assert_eq!(
        people.home_entry(&scope_a, "p1").await.unwrap(),
        Some(home_entry(a, "p1", 2))
    );
    assert_eq!(
        people.home_entry(&scope_a, "p2").await.unwrap(),
        Some(home_entry(a, "p2", 1))
    );
    // A version number taken already is a conflict, and changes nothing.
    let mut rival = home_entry(a, "p1", 2);
    rival.sealed = b"rival".to_vec();
    assert!(matches!(
        people.put_home_entry(&scope_a, &rival).await,
        Err(StoreError::Conflict { .. })
    ));
    assert_eq!(
        people.home_entry(&scope_a, "p1").await.unwrap(),
        Some(home_entry(a, "p1", 2))
    );

    // Another tenant's scope sees nothing of tenant A, and keeps its own versions apart.
    assert_eq!(people.home_entry(&scope_b, "p1").await.unwrap(), None);
    people
        .put_home_entry(&scope_b, &home_entry(b, "p1", 1))
        .await
        .unwrap();
    assert_eq!(
        people.home_entry(&scope_b, "p1").await.unwrap(),
        Some(home_entry(b, "p1", 1))
    );
    assert_eq!(
        people.home_entry(&scope_a, "p1").await.unwrap(),
        Some(home_entry(a, "p1", 2))
    );
    // A record naming another tenant than the scope is refused.
    assert!(
        people
            .put_home_entry(&scope_b, &home_entry(a, "p9", 1))
            .await
            .is_err()
    );
    assert!(
        people
            .put_home_entry(&scope_a, &home_entry(b, "p9", 1))
            .await
            .is_err()
    );
    assert_eq!(people.home_entry(&scope_a, "p9").await.unwrap(), None);
    assert_eq!(people.home_entry(&scope_b, "p9").await.unwrap(), None);
}

async fn secrets_are_stored_as_hashes(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    // The store receives hashes; it keeps exactly those bytes and nothing longer.
    let token = *b"a session token of thirty-two b.";
    let token_hash = carevault_crypto::sha256(&token);
    let mut record = session(&alice, 0, T0);
    record.token_hash = token_hash;
    people.create_session(&record).await.unwrap();
    assert_eq!(
        engine
            .raw
            .bytes_as_owner("SELECT token_hash FROM sessions")
            .await,
        vec![token_hash.to_vec()]
    );
    people
        .put_ceremony(&carevault_crypto::sha256(b"ceremony id"), "{}", T0 + 10)
        .await
        .unwrap();
    assert_eq!(
        engine
            .raw
            .bytes_as_owner("SELECT id_hash FROM ceremonies")
            .await,
        vec![carevault_crypto::sha256(b"ceremony id").to_vec()]
    );
    // Throttling keys are hashed by the store itself.
    people
        .record_failure("account:alice@example.org", T0)
        .await
        .unwrap();
    assert_eq!(
        engine
            .raw
            .count_as_owner("SELECT count(*) FROM auth_failures WHERE length(key_hash) = 32")
            .await,
        1
    );
    // Hash columns refuse anything but 32 bytes.
    for statement in [
        "INSERT INTO auth_failures (key_hash, time_ms) VALUES (x'00', 1)",
        "INSERT INTO ceremonies (id_hash, state, expires_ms) VALUES (x'00', '{}', 1)",
    ] {
        let statement = match (&engine.raw, statement.contains("auth_failures")) {
            (Raw::Postgres { .. }, true) => {
                "INSERT INTO auth_failures (key_hash, time_ms) VALUES ('\\x00', 1)"
            }
            (Raw::Postgres { .. }, false) => {
                "INSERT INTO ceremonies (id_hash, state, expires_ms) VALUES ('\\x00', '{}', 1)"
            }
            _ => statement,
        };
        assert!(
            engine.raw.execute_as_owner(statement).await.is_err(),
            "{statement} was allowed"
        );
    }
}

async fn postgres_people_tables_are_platform_tables_and_home_entry_is_tenant_data(engine: &Engine) {
    let Raw::Postgres { store: pg, .. } = &engine.raw else {
        return;
    };
    let (tenant, scope) = new_tenant(&engine.store, "rls-home").await;
    engine
        .people
        .put_home_entry(&scope, &home_entry(tenant, "p1", 1))
        .await
        .unwrap();
    let alice = stored_person(engine, "alice@example.org").await;
    engine
        .people
        .record_security_event(&SecurityEvent {
            tenant,
            time_ms: T0,
            kind: "break-glass".to_owned(),
            person: Some(alice.id),
            detail: "p1".to_owned(),
        })
        .await
        .unwrap();
    let pool = pg.pool_for_tests();

    // Row-level security: home_entry like the other tenant tables; people tables without.
    let rows = sqlx::query(
        "SELECT relname::text, relrowsecurity, relforcerowsecurity FROM pg_class \
         WHERE relkind = 'r' AND relnamespace = 'public'::regnamespace \
           AND relname IN ('people', 'invitations', 'totp_factors', 'passkeys', \
             'recovery_codes', 'sessions', 'ceremonies', 'auth_failures', 'supplier_grants', \
             'break_glass', 'factor_resets', 'security_events', 'home_entry') \
         ORDER BY relname",
    )
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(rows.len(), 13);
    for row in &rows {
        let table: String = row.get(0);
        let enabled: bool = row.get(1);
        let forced: bool = row.get(2);
        let tenant_data = table == "home_entry";
        assert_eq!(enabled, tenant_data, "{table}: row-level security");
        assert_eq!(forced, tenant_data, "{table}: forced row-level security");
    }

    let count = "SELECT count(*) FROM home_entry";
    let unset: i64 = sqlx::query(count).fetch_one(pool).await.unwrap().get(0);
    assert_eq!(unset, 0, "home_entry readable without a tenant");
    for (setting, expected) in [(TenantId::generate(), 0_i64), (tenant, 1)] {
        let mut tx = pool.begin().await.unwrap();
        sqlx::query("SELECT set_config('carevault.tenant', $1, true)")
            .bind(setting.to_string())
            .execute(&mut *tx)
            .await
            .unwrap();
        let seen: i64 = sqlx::query(count).fetch_one(&mut *tx).await.unwrap().get(0);
        assert_eq!(seen, expected, "home_entry rows seen under {setting}");
        // Writing another tenant's row under this setting is refused.
        let victim = if setting == tenant {
            new_tenant(&engine.store, "rls-victim").await.0
        } else {
            tenant
        };
        let forged = sqlx::query(
            "INSERT INTO home_entry (tenant_id, patient, version, updated_ms, sealed) \
             VALUES ($1, 'p1', 9, 0, '\\x00')",
        )
        .bind(victim.as_uuid())
        .execute(&mut *tx)
        .await;
        assert!(forged.is_err());
        drop(tx);
    }
    // People tables are readable without a tenant (sign-in happens before one exists).
    let people_rows: i64 = sqlx::query("SELECT count(*) FROM people")
        .fetch_one(pool)
        .await
        .unwrap()
        .get(0);
    assert_eq!(people_rows, 1);

    // Security events and home-entry versions are append-only for the server's role.
    for statement in [
        "UPDATE security_events SET detail = 'x'",
        "DELETE FROM security_events",
        "UPDATE home_entry SET sealed = '\\x00'",
        "DELETE FROM home_entry",
    ] {
        let error = sqlx::query(statement)
            .execute(pool)
            .await
            .unwrap_err()
            .to_string();
        assert!(error.contains("permission denied"), "{statement}: {error}");
    }
    assert_eq!(
        engine
            .people
            .security_events(tenant, 0)
            .await
            .unwrap()
            .len(),
        1
    );
}
