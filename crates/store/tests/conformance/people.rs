//! People: accounts, invitations, factors, sessions, ceremonies and throttling, through
//! `PeopleStore`. Grants, break-glass, factor resets, security events and home-entry details
//! are in `people_access.rs`.

use carevault_domain::ids::{PersonId, TenantId};
use carevault_domain::people::{
    InvitationRecord, PasskeyRecord, PersonRecord, PersonStatus, Role, SecondFactor, SessionLevel,
    SessionRecord, TotpRecord,
};
use carevault_domain::store::StoreError;

use crate::Engine;
use crate::fixtures::T0;

conformance!(people:
    people_are_created_found_listed_and_updated,
    invitation_is_accepted_once,
    totp_steps_are_accepted_once_and_in_order,
    passkeys_are_added_updated_and_removed,
    recovery_codes_are_used_once,
    delete_factors_removes_every_factor_of_one_person,
    sessions_are_created_updated_and_ended,
    ceremonies_are_taken_once_and_expire,
    failures_are_counted_pruned_and_cleared,
);

// ---------------------------------------------------------------------------------------------
// Fixtures
// ---------------------------------------------------------------------------------------------

pub(crate) fn person(tenant: TenantId, email: &str, roles: &[Role]) -> PersonRecord {
    PersonRecord {
        id: PersonId::generate(),
        tenant,
        email: email.to_owned(),
        display_name: format!("Name of {email}"),
        roles: roles.to_vec(),
        practitioner: None,
        password_hash: Some("$argon2id$v=19$m=19456,t=2,p=1$c2FsdA$aGFzaA".to_owned()),
        status: PersonStatus::Active,
        created_ms: T0,
    }
}

/// A person stored in a fresh (unregistered) tenant.
pub(crate) async fn stored_person(engine: &Engine, email: &str) -> PersonRecord {
    let record = person(TenantId::generate(), email, &[Role::Carer]);
    engine.people.create_person(&record).await.unwrap();
    record
}

fn hash(byte: u8) -> [u8; 32] {
    [byte; 32]
}

fn invitation(tenant: TenantId, token: u8, email: &str, expires_ms: i64) -> InvitationRecord {
    InvitationRecord {
        token_hash: hash(token),
        tenant,
        email: email.to_owned(),
        display_name: "Invited".to_owned(),
        // Stored roles come back sorted, as `parse_roles` returns them.
        roles: vec![Role::Clinician, Role::Carer],
        practitioner: Some("Practitioner/pr1".to_owned()),
        invited_by: "operator/cli".to_owned(),
        created_ms: T0,
        expires_ms,
        used_ms: None,
    }
}

pub(crate) fn session(person: &PersonRecord, token: u8, created_ms: i64) -> SessionRecord {
    SessionRecord {
        token_hash: hash(token),
        person: person.id,
        tenant: person.tenant,
        level: SessionLevel::Password,
        factor: None,
        created_ms,
        last_seen_ms: created_ms,
        verified_ms: None,
        csrf: format!("csrf-{token}"),
        grant: None,
        pending: None,
        revoked: false,
    }
}

fn passkey(person: PersonId, credential_id: &str, created_ms: i64) -> PasskeyRecord {
    PasskeyRecord {
        person,
        credential_id: credential_id.to_owned(),
        name: format!("key {credential_id}"),
        passkey_json: format!("{{\"cred\":\"{credential_id}\",\"counter\":0}}"),
        created_ms,
        last_used_ms: None,
    }
}

fn totp(person: PersonId, seed: u8) -> TotpRecord {
    TotpRecord {
        person,
        sealed_secret: vec![seed; 48],
        last_step: None,
        created_ms: T0,
    }
}

fn codes(prefix: &str, count: usize) -> Vec<String> {
    (0..count).map(|n| format!("{prefix}-hash-{n}")).collect()
}

// ---------------------------------------------------------------------------------------------
// People and invitations
// ---------------------------------------------------------------------------------------------

async fn people_are_created_found_listed_and_updated(engine: &Engine) {
    let people = &engine.people;
    let tenant = TenantId::generate();
    let other_tenant = TenantId::generate();
    let mut alice = person(tenant, "alice@example.org", &[Role::Carer]);
    let bob = person(
        tenant,
        "bob@example.org",
        &[Role::Clinician, Role::TenantAdmin],
    );
    let carol = person(other_tenant, "carol@example.org", &[Role::Carer]);
    let operator = person(
        TenantId::platform(),
        "ops@supplier.example",
        &[Role::PlatformOperator],
    );
    for record in [&bob, &alice, &carol, &operator] {
        people.create_person(record).await.unwrap();
    }

    // The email is unique across the platform, whatever the tenant.
    let twin = person(other_tenant, "alice@example.org", &[Role::Carer]);
    assert!(matches!(
        people.create_person(&twin).await,
        Err(StoreError::Duplicate(_))
    ));
    // So is the id.
    let mut same_id = person(tenant, "another@example.org", &[Role::Carer]);
    same_id.id = alice.id;
    assert!(matches!(
        people.create_person(&same_id).await,
        Err(StoreError::Duplicate(_))
    ));

    assert_eq!(people.person(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(people.person(PersonId::generate()).await.unwrap(), None);
    assert_eq!(
        people.person_by_email("bob@example.org").await.unwrap(),
        Some(bob.clone())
    );
    assert_eq!(
        people
            .person_by_email("ops@supplier.example")
            .await
            .unwrap(),
        Some(operator.clone())
    );
    assert_eq!(
        people.person_by_email("nobody@example.org").await.unwrap(),
        None
    );

    // Listed by tenant, ordered by email.
    assert_eq!(
        people.list_people(tenant).await.unwrap(),
        vec![alice.clone(), bob.clone()]
    );
    assert_eq!(people.list_people(other_tenant).await.unwrap(), vec![carol]);
    assert_eq!(
        people.list_people(TenantId::platform()).await.unwrap(),
        vec![operator]
    );
    assert!(
        people
            .list_people(TenantId::generate())
            .await
            .unwrap()
            .is_empty()
    );

    // An update replaces name, roles, practitioner, password hash and status; never the email,
    // tenant or creation time.
    alice.display_name = "Alice Renamed".to_owned();
    alice.roles = vec![Role::Carer, Role::SecurityOfficer];
    alice.practitioner = Some("Practitioner/p7".to_owned());
    alice.password_hash = None;
    alice.status = PersonStatus::Disabled;
    let mut attempted = alice.clone();
    attempted.email = "stolen@example.org".to_owned();
    attempted.tenant = other_tenant;
    attempted.created_ms = T0 + 99;
    people.update_person(&attempted).await.unwrap();
    assert_eq!(people.person(alice.id).await.unwrap(), Some(alice.clone()));
    assert_eq!(
        people.person_by_email("stolen@example.org").await.unwrap(),
        None
    );
    // Updating someone who does not exist changes nothing.
    people
        .update_person(&person(tenant, "ghost@example.org", &[Role::Carer]))
        .await
        .unwrap();
    assert_eq!(people.list_people(tenant).await.unwrap().len(), 2);
}

async fn invitation_is_accepted_once(engine: &Engine) {
    let people = &engine.people;
    let tenant = TenantId::generate();
    let expires = T0 + 1_000;
    let invited = invitation(tenant, 1, "new@example.org", expires);
    people.create_invitation(&invited).await.unwrap();
    assert!(matches!(
        people.create_invitation(&invited).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        people.invitation(&hash(1)).await.unwrap(),
        Some(invited.clone())
    );
    assert_eq!(people.invitation(&hash(2)).await.unwrap(), None);

    // The roles may come in any order.
    let mut newcomer = person(tenant, "new@example.org", &[Role::Carer, Role::Clinician]);
    newcomer.practitioner = invited.practitioner.clone();
    assert!(
        people
            .accept_invitation(&hash(1), &newcomer, T0 + 10)
            .await
            .unwrap()
    );
    newcomer.roles.sort();
    assert_eq!(
        people.person(newcomer.id).await.unwrap(),
        Some(newcomer.clone())
    );
    assert_eq!(
        people.invitation(&hash(1)).await.unwrap().unwrap().used_ms,
        Some(T0 + 10)
    );

    // The second acceptance is refused and creates nobody, even under another email.
    let second = person(tenant, "second@example.org", &invited.roles);
    assert!(
        !people
            .accept_invitation(&hash(1), &second, T0 + 20)
            .await
            .unwrap()
    );
    assert_eq!(people.person(second.id).await.unwrap(), None);
    assert_eq!(people.list_people(tenant).await.unwrap(), vec![newcomer]);
    assert_eq!(
        people.invitation(&hash(1)).await.unwrap().unwrap().used_ms,
        Some(T0 + 10)
    );

    // Unknown and expired invitations are refused too, and stay unused.
    let stranger = person(tenant, "stranger@example.org", &invited.roles);
    assert!(
        !people
            .accept_invitation(&hash(9), &stranger, T0)
            .await
            .unwrap()
    );
    let late = invitation(tenant, 3, "late@example.org", expires);
    people.create_invitation(&late).await.unwrap();
    let late_person = person(tenant, "late@example.org", &late.roles);
    assert!(
        !people
            .accept_invitation(&hash(3), &late_person, expires)
            .await
            .unwrap()
    );
    assert_eq!(
        people.invitation(&hash(3)).await.unwrap().unwrap().used_ms,
        None
    );
    assert_eq!(people.person(late_person.id).await.unwrap(), None);

    // A person whose email is taken fails the whole acceptance: the invitation stays unused.
    let taken = invitation(tenant, 4, "new@example.org", expires);
    people.create_invitation(&taken).await.unwrap();
    let clash = person(tenant, "new@example.org", &taken.roles);
    assert!(matches!(
        people.accept_invitation(&hash(4), &clash, T0).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(
        people.invitation(&hash(4)).await.unwrap().unwrap().used_ms,
        None
    );

    // A person built for another tenant, or with other roles, is refused and claims nothing.
    let strict = invitation(tenant, 5, "strict@example.org", expires);
    people.create_invitation(&strict).await.unwrap();
    let elsewhere = person(TenantId::generate(), "strict@example.org", &strict.roles);
    assert!(
        people
            .accept_invitation(&hash(5), &elsewhere, T0)
            .await
            .is_err()
    );
    let escalated = person(tenant, "strict@example.org", &[Role::TenantAdmin]);
    assert!(
        people
            .accept_invitation(&hash(5), &escalated, T0)
            .await
            .is_err()
    );
    assert_eq!(
        people.invitation(&hash(5)).await.unwrap().unwrap().used_ms,
        None
    );
    assert_eq!(
        people.person_by_email("strict@example.org").await.unwrap(),
        None
    );
}

// ---------------------------------------------------------------------------------------------
// Factors
// ---------------------------------------------------------------------------------------------

async fn totp_steps_are_accepted_once_and_in_order(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    let bob = stored_person(engine, "bob@example.org").await;

    assert_eq!(people.totp(alice.id).await.unwrap(), None);
    // No factor, no step.
    assert!(!people.use_totp_step(alice.id, 100).await.unwrap());

    people.set_totp(&totp(alice.id, 1)).await.unwrap();
    people.set_totp(&totp(bob.id, 2)).await.unwrap();
    assert_eq!(
        people.totp(alice.id).await.unwrap(),
        Some(totp(alice.id, 1))
    );

    assert!(people.use_totp_step(alice.id, 100).await.unwrap());
    // Replay of the same step, and any older step, is refused.
    assert!(!people.use_totp_step(alice.id, 100).await.unwrap());
    assert!(!people.use_totp_step(alice.id, 99).await.unwrap());
    assert!(people.use_totp_step(alice.id, 101).await.unwrap());
    assert!(!people.use_totp_step(alice.id, 100).await.unwrap());
    assert_eq!(
        people.totp(alice.id).await.unwrap().unwrap().last_step,
        Some(101)
    );
    // Steps are per person.
    assert!(people.use_totp_step(bob.id, 100).await.unwrap());

    // Re-enrolment replaces the factor, step included.
    let mut replacement = totp(alice.id, 3);
    replacement.created_ms = T0 + 5;
    people.set_totp(&replacement).await.unwrap();
    assert_eq!(people.totp(alice.id).await.unwrap(), Some(replacement));
    assert!(people.use_totp_step(alice.id, 50).await.unwrap());

    // Concurrent sign-ins with the same code: exactly one wins.
    let attempts: Vec<_> = (0..8)
        .map(|_| {
            let people = people.clone();
            let id = alice.id;
            tokio::spawn(async move { people.use_totp_step(id, 60).await.unwrap() })
        })
        .collect();
    let mut accepted = 0;
    for attempt in attempts {
        if attempt.await.unwrap() {
            accepted += 1;
        }
    }
    assert_eq!(accepted, 1);

    assert!(people.remove_totp(alice.id).await.unwrap());
    assert!(!people.remove_totp(alice.id).await.unwrap());
    assert_eq!(people.totp(alice.id).await.unwrap(), None);
    assert!(!people.use_totp_step(alice.id, 1_000).await.unwrap());
    assert!(people.totp(bob.id).await.unwrap().is_some());
}

async fn passkeys_are_added_updated_and_removed(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    let bob = stored_person(engine, "bob@example.org").await;
    assert!(people.passkeys(alice.id).await.unwrap().is_empty());

    let second = passkey(alice.id, "cred-b", T0 + 2);
    let first = passkey(alice.id, "cred-a", T0 + 1);
    people.add_passkey(&second).await.unwrap();
    people.add_passkey(&first).await.unwrap();
    people
        .add_passkey(&passkey(bob.id, "cred-bob", T0))
        .await
        .unwrap();
    // Oldest first.
    assert_eq!(
        people.passkeys(alice.id).await.unwrap(),
        vec![first.clone(), second.clone()]
    );
    // One credential, one account: registering it again (for anyone) is refused.
    assert!(matches!(
        people.add_passkey(&passkey(bob.id, "cred-a", T0)).await,
        Err(StoreError::Duplicate(_))
    ));

    people
        .update_passkey(alice.id, "cred-a", "{\"counter\":7}", T0 + 50)
        .await
        .unwrap();
    // Another person cannot touch it.
    people
        .update_passkey(bob.id, "cred-b", "{\"counter\":999}", T0 + 60)
        .await
        .unwrap();
    let stored = people.passkeys(alice.id).await.unwrap();
    assert_eq!(stored[0].passkey_json, "{\"counter\":7}");
    assert_eq!(stored[0].last_used_ms, Some(T0 + 50));
    assert_eq!(stored[0].name, first.name);
    assert_eq!(stored[1], second);

    assert!(!people.remove_passkey(bob.id, "cred-a").await.unwrap());
    assert!(people.remove_passkey(alice.id, "cred-a").await.unwrap());
    assert!(!people.remove_passkey(alice.id, "cred-a").await.unwrap());
    assert_eq!(people.passkeys(alice.id).await.unwrap(), vec![second]);
    assert_eq!(people.passkeys(bob.id).await.unwrap().len(), 1);
}

async fn recovery_codes_are_used_once(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    let bob = stored_person(engine, "bob@example.org").await;
    assert!(people.recovery_codes(alice.id).await.unwrap().is_empty());

    people
        .set_recovery_codes(alice.id, &codes("first", 3), T0)
        .await
        .unwrap();
    people
        .set_recovery_codes(bob.id, &codes("bob", 2), T0)
        .await
        .unwrap();
    let stored = people.recovery_codes(alice.id).await.unwrap();
    assert_eq!(
        stored
            .iter()
            .map(|code| (
                code.person,
                code.index,
                code.code_hash.clone(),
                code.used_ms
            ))
            .collect::<Vec<_>>(),
        vec![
            (alice.id, 0, "first-hash-0".to_owned(), None),
            (alice.id, 1, "first-hash-1".to_owned(), None),
            (alice.id, 2, "first-hash-2".to_owned(), None),
        ]
    );

    assert!(people.use_recovery_code(alice.id, 1, T0 + 5).await.unwrap());
    assert!(!people.use_recovery_code(alice.id, 1, T0 + 6).await.unwrap());
    assert!(!people.use_recovery_code(alice.id, 7, T0 + 6).await.unwrap());
    let stored = people.recovery_codes(alice.id).await.unwrap();
    assert_eq!(stored[1].used_ms, Some(T0 + 5));
    assert_eq!(stored[0].used_ms, None);
    // Bob's code 1 is his own.
    assert!(people.use_recovery_code(bob.id, 1, T0 + 7).await.unwrap());

    // New codes replace the old ones, used or not.
    people
        .set_recovery_codes(alice.id, &codes("second", 2), T0 + 10)
        .await
        .unwrap();
    let stored = people.recovery_codes(alice.id).await.unwrap();
    assert_eq!(stored.len(), 2);
    assert!(
        stored
            .iter()
            .all(|code| code.used_ms.is_none() && code.code_hash.starts_with("second"))
    );
    assert!(
        people
            .use_recovery_code(alice.id, 1, T0 + 11)
            .await
            .unwrap()
    );
}

async fn delete_factors_removes_every_factor_of_one_person(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    let bob = stored_person(engine, "bob@example.org").await;
    for someone in [&alice, &bob] {
        people.set_totp(&totp(someone.id, 1)).await.unwrap();
        people
            .add_passkey(&passkey(someone.id, &format!("cred-{}", someone.id), T0))
            .await
            .unwrap();
        people
            .set_recovery_codes(someone.id, &codes("c", 4), T0)
            .await
            .unwrap();
    }

    people.delete_factors(alice.id).await.unwrap();
    assert_eq!(people.totp(alice.id).await.unwrap(), None);
    assert!(people.passkeys(alice.id).await.unwrap().is_empty());
    assert!(people.recovery_codes(alice.id).await.unwrap().is_empty());
    // Nothing to delete is fine.
    people.delete_factors(alice.id).await.unwrap();

    assert!(people.totp(bob.id).await.unwrap().is_some());
    assert_eq!(people.passkeys(bob.id).await.unwrap().len(), 1);
    assert_eq!(people.recovery_codes(bob.id).await.unwrap().len(), 4);
    // The person remains.
    assert!(people.person(alice.id).await.unwrap().is_some());
}

// ---------------------------------------------------------------------------------------------
// Sessions, ceremonies, throttling
// ---------------------------------------------------------------------------------------------

async fn sessions_are_created_updated_and_ended(engine: &Engine) {
    let people = &engine.people;
    let alice = stored_person(engine, "alice@example.org").await;
    let bob = stored_person(engine, "bob@example.org").await;

    let first = session(&alice, 1, T0);
    let second = session(&alice, 2, T0 + 1);
    let third = session(&alice, 3, T0 + 2);
    let bobs = session(&bob, 4, T0);
    for record in [&second, &first, &third, &bobs] {
        people.create_session(record).await.unwrap();
    }
    assert!(matches!(
        people.create_session(&session(&bob, 1, T0)).await,
        Err(StoreError::Duplicate(_))
    ));
    assert_eq!(people.session(&hash(1)).await.unwrap(), Some(first.clone()));
    assert_eq!(people.session(&hash(9)).await.unwrap(), None);
    assert_eq!(
        people.sessions_of(alice.id).await.unwrap(),
        vec![first.clone(), second.clone(), third.clone()]
    );

    // An update replaces the mutable fields; never the person, tenant or creation time.
    let mut upgraded = first.clone();
    upgraded.level = SessionLevel::Mfa;
    upgraded.factor = Some(SecondFactor::RecoveryCode);
    upgraded.last_seen_ms = T0 + 100;
    upgraded.verified_ms = Some(T0 + 90);
    upgraded.csrf = "rotated".to_owned();
    upgraded.grant = Some("grant-1".to_owned());
    upgraded.pending = Some("{\"challenge\":\"x\"}".to_owned());
    upgraded.revoked = true;
    let mut attempted = upgraded.clone();
    attempted.person = bob.id;
    attempted.tenant = TenantId::generate();
    attempted.created_ms = T0 + 500;
    people.update_session(&attempted).await.unwrap();
    assert_eq!(
        people.session(&hash(1)).await.unwrap(),
        Some(upgraded.clone())
    );
    for factor in [SecondFactor::Totp, SecondFactor::Passkey] {
        upgraded.factor = Some(factor);
        upgraded.level = SessionLevel::Enrolment;
        people.update_session(&upgraded).await.unwrap();
        assert_eq!(
            people.session(&hash(1)).await.unwrap(),
            Some(upgraded.clone())
        );
    }

    people.delete_session(&hash(2)).await.unwrap();
    people.delete_session(&hash(2)).await.unwrap();
    assert_eq!(people.session(&hash(2)).await.unwrap(), None);

    assert_eq!(people.delete_sessions_of(alice.id).await.unwrap(), 2);
    assert_eq!(people.delete_sessions_of(alice.id).await.unwrap(), 0);
    assert!(people.sessions_of(alice.id).await.unwrap().is_empty());
    assert_eq!(people.sessions_of(bob.id).await.unwrap(), vec![bobs]);
}

async fn ceremonies_are_taken_once_and_expire(engine: &Engine) {
    let people = &engine.people;
    people
        .put_ceremony(&hash(1), "{\"state\":1}", T0 + 100)
        .await
        .unwrap();
    people
        .put_ceremony(&hash(2), "{\"state\":2}", T0 + 100)
        .await
        .unwrap();
    people
        .put_ceremony(&hash(3), "{\"state\":3}", T0 + 10)
        .await
        .unwrap();

    assert_eq!(
        people
            .take_ceremony(&hash(1), T0 + 5)
            .await
            .unwrap()
            .as_deref(),
        Some("{\"state\":1}")
    );
    // One use only.
    assert_eq!(people.take_ceremony(&hash(1), T0 + 6).await.unwrap(), None);
    assert_eq!(people.take_ceremony(&hash(9), T0).await.unwrap(), None);
    // Expired at its expiry time, and gone after a refused take.
    assert_eq!(people.take_ceremony(&hash(3), T0 + 10).await.unwrap(), None);
    people
        .put_ceremony(&hash(3), "{\"state\":3}", T0 + 10)
        .await
        .unwrap();
    assert_eq!(people.take_ceremony(&hash(3), T0 + 50).await.unwrap(), None);
    assert_eq!(people.take_ceremony(&hash(3), T0).await.unwrap(), None);

    // Putting again under the same id replaces the state.
    people
        .put_ceremony(&hash(2), "{\"state\":\"new\"}", T0 + 200)
        .await
        .unwrap();
    assert_eq!(
        people
            .take_ceremony(&hash(2), T0 + 150)
            .await
            .unwrap()
            .as_deref(),
        Some("{\"state\":\"new\"}")
    );

    // Two concurrent takes: exactly one gets the state.
    people
        .put_ceremony(&hash(4), "once", T0 + 100)
        .await
        .unwrap();
    let takes: Vec<_> = (0..6)
        .map(|_| {
            let people = people.clone();
            tokio::spawn(async move { people.take_ceremony(&hash(4), T0).await.unwrap() })
        })
        .collect();
    let mut taken = 0;
    for take in takes {
        if take.await.unwrap().is_some() {
            taken += 1;
        }
    }
    assert_eq!(taken, 1);
    assert_eq!(
        engine
            .raw
            .count_as_owner("SELECT count(*) FROM ceremonies")
            .await,
        0
    );
}

async fn failures_are_counted_pruned_and_cleared(engine: &Engine) {
    let people = &engine.people;
    let account = "account:alice@example.org";
    let address = "address:192.0.2.7";
    for time in [T0 + 30, T0, T0 + 10, T0 + 10, T0 + 20] {
        people.record_failure(account, time).await.unwrap();
    }
    people.record_failure(address, T0 + 5).await.unwrap();

    assert_eq!(
        people.failures_since(account, T0).await.unwrap(),
        vec![T0, T0 + 10, T0 + 10, T0 + 20, T0 + 30]
    );
    assert_eq!(
        people.failures_since(account, T0 + 10).await.unwrap(),
        vec![T0 + 10, T0 + 10, T0 + 20, T0 + 30]
    );
    assert!(
        people
            .failures_since("account:nobody@example.org", 0)
            .await
            .unwrap()
            .is_empty()
    );
    // Older rows of that key are pruned: asking again from the start finds only what was kept.
    assert_eq!(
        people.failures_since(account, T0 + 25).await.unwrap(),
        vec![T0 + 30]
    );
    assert_eq!(
        people.failures_since(account, 0).await.unwrap(),
        vec![T0 + 30]
    );
    // Other keys keep theirs.
    assert_eq!(
        people.failures_since(address, 0).await.unwrap(),
        vec![T0 + 5]
    );

    people.clear_failures(account).await.unwrap();
    assert!(people.failures_since(account, 0).await.unwrap().is_empty());
    assert_eq!(
        people.failures_since(address, 0).await.unwrap(),
        vec![T0 + 5]
    );

    // The key names an email or an address: only its hash is stored.
    let stored = engine
        .raw
        .bytes_as_owner("SELECT key_hash FROM auth_failures")
        .await;
    assert_eq!(
        stored,
        vec![carevault_crypto::sha256(address.as_bytes()).to_vec()]
    );
}
