//! People over real HTTP (issue 3): the route walk with sessions that have not proven two
//! factors, second-factor rules, throttling, roles and care relationships on /fhir with the
//! session cookie, break-glass, supplier grants, sealed home-entry details, and disabling.
//! SQLite only: the rules live above the store, which its conformance suite covers on both.

use reqwest::Method;
use serde_json::{Value, json};
use sqlx::Row;

use crate::common::{
    Engine, Fhir, Page, Server, WebClient, audit_texts, current_step, patient, totp_code,
};

const FAMILY: &str = "Quixotewell";
const GIVEN: &str = "Persephone";
const NHS: &str = "9434765919";
const KEY_SAFE: &str = "KS-482916";

/// A tenant with records: a practitioner (the carer's), a patient in the carer's care team,
/// one with a visit today, and one the carer has nothing to do with.
struct World {
    server: Server,
    tenant: String,
    practitioner: String,
    in_team: String,
    visit_today: String,
    stranger: String,
}

async fn world() -> World {
    let server = Server::start(Engine::Sqlite).await;
    let (tenant, client) = server.tenant_with_client("People Trust").await;
    let fhir = Fhir::new(&server, &client);
    let practitioner = fhir
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Carer"}]}))
        .await;
    let in_team = fhir
        .create(&patient(FAMILY, GIVEN, NHS, "1950-01-01"))
        .await;
    let visit_today = fhir
        .create(&patient("Visitwhistle", "Ada", "9434765870", "1951-02-02"))
        .await;
    let stranger = fhir
        .create(&patient("Strangeway", "Bo", "1745438912", "1952-03-03"))
        .await;
    fhir.create(&json!({
        "resourceType": "CareTeam", "status": "active",
        "subject": {"reference": format!("Patient/{in_team}")},
        "participant": [{"member": {"reference": format!("Practitioner/{practitioner}")}}]
    }))
    .await;
    let start = time::OffsetDateTime::from_unix_timestamp(crate::common::now_s())
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH)
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    fhir.create(&json!({
        "resourceType": "Appointment", "status": "booked", "start": start, "end": start,
        "participant": [
            {"actor": {"reference": format!("Patient/{visit_today}")}, "status": "accepted"},
            {"actor": {"reference": format!("Practitioner/{practitioner}")}, "status": "accepted"}
        ]
    }))
    .await;
    World {
        server,
        tenant,
        practitioner,
        in_team,
        visit_today,
        stranger,
    }
}

fn person_id(server: &Server, tenant: Option<&str>, email: &str) -> String {
    let mut args = vec!["user", "list", "--json"];
    if let Some(tenant) = tenant {
        args.extend_from_slice(&["--tenant", tenant]);
    }
    let out = server.cli(&args);
    let list: Value = serde_json::from_str(out.trim()).unwrap_or(Value::Null);
    list.as_array()
        .into_iter()
        .flatten()
        .find(|person| person["email"] == email)
        .and_then(|person| person["id"].as_str())
        .unwrap_or_default()
        .to_owned()
}

async fn sqlite_texts(server: &Server, sql: &'static str) -> Vec<String> {
    let pool = sqlx::SqlitePool::connect(&format!("sqlite://{}", server.sqlite_path().display()))
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let rows = sqlx::query(sql)
        .fetch_all(&pool)
        .await
        .unwrap_or_else(|e| panic!("{sql}: {e}"));
    rows.iter()
        .map(|row| row.try_get::<String, _>(0).unwrap_or_default())
        .collect()
}

fn assert_no_patient_data(page: &Page, what: &str) {
    for secret in [FAMILY, GIVEN, NHS, KEY_SAFE] {
        assert!(
            !page.body.contains(secret),
            "{what} gave out {secret}: {}",
            page.body
        );
    }
}

fn refusal_text(body: &str) -> String {
    body.split_once("nhsuk-error-summary__list")
        .and_then(|(_, rest)| rest.split_once("</ul>"))
        .map(|(list, _)| list.to_owned())
        .unwrap_or_default()
}

#[tokio::test]
async fn a_session_without_two_factors_gets_no_data_from_any_route() {
    let w = world().await;
    let server = &w.server;
    // A clinician with TOTP enrolled, signed in again with the password only.
    let mut enrolled = server
        .person(Some(&w.tenant), "clinician", "walk.totp@example.org", None)
        .await;
    enrolled.enrol_totp().await;
    enrolled.web = WebClient::new(&server.base);
    assert_eq!(enrolled.password_step().await, "/signin/second-factor");
    let second_factor = enrolled.web.get("/signin/second-factor").await;
    let password_csrf = second_factor.hidden("csrf");
    // A clinician with no factor: an enrolment session.
    let mut fresh = server
        .person(Some(&w.tenant), "clinician", "walk.none@example.org", None)
        .await;
    assert_eq!(fresh.password_step().await, "/account/enrol");
    let enrolment_csrf = fresh.web.get("/account/enrol").await.hidden("csrf");
    // Real ids for the path parameters.
    let invitation = server.cli(&[
        "user",
        "invite",
        "--tenant",
        &w.tenant,
        "--role",
        "carer",
        "--email",
        "walk.invited@example.org",
        "--json",
    ]);
    let invitation: Value = serde_json::from_str(invitation.trim()).unwrap_or(Value::Null);
    let token = invitation["link"]
        .as_str()
        .and_then(|link| link.rsplit('/').next())
        .unwrap_or_default()
        .to_owned();
    let person = person_id(server, Some(&w.tenant), "walk.totp@example.org");
    let mut operator = server
        .person(None, "platform_operator", "walk.operator@example.org", None)
        .await;
    operator.enrol_passkey().await;
    let page = operator.web.get("/operator/grants").await;
    let requested = operator
        .web
        .submit(
            &page,
            "/operator/grants",
            &[
                ("tenant", &w.tenant),
                ("reason", "walking the routes for the test"),
                ("minutes", "30"),
            ],
        )
        .await;
    let grant = crate::common::attribute_after(&requested.body, "action=\"/operator/grants/")
        .split('/')
        .next()
        .unwrap_or_default()
        .to_owned();
    let grant = if grant.is_empty() {
        crate::common::attribute_after(&requested.body, "Request ")
    } else {
        grant
    };
    let grant = requested
        .body
        .split("<h2 class=\"nhsuk-heading-s\">Request ")
        .nth(1)
        .and_then(|rest| rest.split('<').next())
        .map_or(grant, str::to_owned);
    let credential = operator
        .passkey
        .as_ref()
        .map(|key| base64_url(&key.credential_id))
        .unwrap_or_default();

    let substitute = |path: &str| {
        path.replace("{resource_type}", "Patient")
            .replace("{id}", &w.in_team)
            .replace("{version}", "1")
            .replace("{patient}", &w.in_team)
            .replace("{token}", &token)
            .replace("{person}", &person)
            .replace("{reset}", &uuid::Uuid::new_v4().to_string())
            .replace("{grant}", &grant)
            .replace("{credential}", &credential)
    };
    let mut paths = carevault_server::route_paths();
    // Signing out last, so the sessions last the whole walk.
    paths.sort_by_key(|path| *path == "/signout");
    let mut walked = Vec::new();
    let fhir_body = serde_json::to_vec(&patient("Walkover", "Wendy", "9434765870", "1960-01-01"))
        .unwrap_or_default();
    for template in &paths {
        let path = substitute(template);
        for method in [Method::GET, Method::POST, Method::PUT, Method::DELETE] {
            for (who, client, csrf) in [
                ("password", &mut enrolled.web, password_csrf.as_str()),
                ("enrolment", &mut fresh.web, enrolment_csrf.as_str()),
            ] {
                let fhir = path.starts_with("/fhir") || path.starts_with("/oauth");
                let body = if method == Method::GET || method == Method::DELETE {
                    None
                } else if fhir {
                    Some(("application/fhir+json", fhir_body.clone()))
                } else {
                    let form = form_urlencoded::Serializer::new(String::new())
                        .extend_pairs([
                            ("csrf", csrf),
                            ("code", "123456"),
                            ("patient", w.in_team.as_str()),
                            ("reason", "walking every route of the server"),
                            ("key_safe_code", "0000"),
                            ("decision", "approve"),
                            ("status", "disabled"),
                            ("role", "clinician"),
                        ])
                        .finish();
                    Some(("application/x-www-form-urlencoded", form.into_bytes()))
                };
                let page = client
                    .send(method.clone(), &path, body, &[("x-csrf-token", csrf)])
                    .await;
                let what = format!("{method} {path} ({who} session)");
                assert_no_patient_data(&page, &what);
                let public = template.ends_with("/metadata") || template.contains(".well-known");
                if template.starts_with("/fhir") && !public {
                    assert!(
                        !(200..300).contains(&page.status),
                        "{what} answered {}: {}",
                        page.status,
                        page.body
                    );
                }
                assert!(page.status != 500, "{what} failed: {}", page.body);
            }
            walked.push(format!("{method} {template}"));
        }
    }
    // The sessions never rose: the password session still waits for its second factor.
    println!(
        "routes walked ({} paths × GET, POST, PUT, DELETE × 2 sessions):",
        paths.len()
    );
    for template in &paths {
        println!("  {template}");
    }
    assert!(paths.contains(&"/fhir/{resource_type}/{id}"));
    assert!(paths.contains(&"/visits/{patient}/entry"));
    assert_eq!(walked.len(), paths.len() * 4);
}

fn base64_url(bytes: &[u8]) -> String {
    use base64::Engine as _;
    base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(bytes)
}

#[tokio::test]
async fn second_factors_are_single_use_and_failures_are_recorded() {
    let w = world().await;
    let server = &w.server;
    let mut person = server
        .person(Some(&w.tenant), "clinician", "factors@example.org", None)
        .await;
    person.enrol_totp().await;
    let secret = person.totp_secret.clone().unwrap_or_default();
    let code = totp_code(&secret, current_step());

    // Password, then TOTP: signed in.
    person.web = WebClient::new(&server.base);
    assert_eq!(person.password_step().await, "/signin/second-factor");
    let page = person.web.get("/signin/second-factor").await;
    let half_signed_in = person.web.session();
    let done = person
        .web
        .submit(&page, "/signin/second-factor", &[("code", &code)])
        .await;
    assert_eq!(done.status, 303, "{}", done.body);
    assert_eq!(done.location(), "/");
    assert_ne!(
        person.web.session(),
        half_signed_in,
        "a new session id at each level"
    );
    // Step-up with the next step's code (the current one is spent).
    let stepped = person.step_up_totp(current_step() + 1).await;
    assert_eq!(stepped.status, 303, "step-up: {}", stepped.body);
    let read = person
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(
        read.status, 200,
        "a clinician with two factors reads: {}",
        read.body
    );

    // The same code again: refused (each time step once), and recorded as a security event.
    let mut replay = WebClient::new(&server.base);
    let page = replay
        .sign_in_password(&person.email, &person.password)
        .await;
    assert_eq!(page.location(), "/signin/second-factor");
    let page = replay.get("/signin/second-factor").await;
    let refused = replay
        .submit(&page, "/signin/second-factor", &[("code", &code)])
        .await;
    assert_eq!(
        refused.status, 401,
        "a replayed code must be refused: {}",
        refused.body
    );
    assert_no_patient_data(&refused, "a replayed code");
    let read = replay
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(read.status, 401);
    let events = sqlite_texts(server, "SELECT kind || ' ' || detail FROM security_events").await;
    assert!(
        events.iter().any(|e| e.starts_with("second-factor-failed")),
        "correct password + wrong TOTP is a security event: {events:?}"
    );

    // A recovery code works once.
    let recovery = person.recovery_codes[0].clone();
    let mut first = WebClient::new(&server.base);
    first
        .sign_in_password(&person.email, &person.password)
        .await;
    let page = first.get("/signin/second-factor").await;
    let used = first
        .submit(&page, "/signin/recovery-code", &[("code", &recovery)])
        .await;
    assert_eq!(used.status, 303, "{}", used.body);
    let mut second = WebClient::new(&server.base);
    second
        .sign_in_password(&person.email, &person.password)
        .await;
    let page = second.get("/signin/second-factor").await;
    let again = second
        .submit(&page, "/signin/recovery-code", &[("code", &recovery)])
        .await;
    assert_eq!(
        again.status, 401,
        "a recovery code works once: {}",
        again.body
    );
}

#[tokio::test]
async fn throttling_slows_guessing_and_never_tells_whether_an_account_exists() {
    let w = world().await;
    let server = &w.server;
    let known = server
        .person(Some(&w.tenant), "clinician", "known@example.org", None)
        .await;
    let mut texts = Vec::new();
    for email in ["nobody@example.org", known.email.as_str()] {
        let mut web = WebClient::new(&server.base);
        let mut statuses = Vec::new();
        for _ in 0..4 {
            let page = web.sign_in_password(email, "wrong password entirely").await;
            statuses.push(page.status);
            if page.status == 401 {
                texts.push(refusal_text(&page.body));
            } else if page.status == 429 {
                assert!(page.body.contains("Try again in"), "{}", page.body);
            }
        }
        // Three free failures, then a growing wait (429 until it passes).
        assert_eq!(statuses, [401, 401, 401, 429], "{email}: {statuses:?}");
    }
    assert!(
        texts.iter().all(|text| text == &texts[0]),
        "one refusal text: {texts:?}"
    );
    assert!(texts[0].contains("not right"), "{}", texts[0]);
}

#[tokio::test]
async fn roles_and_care_relationships_hold_on_fhir_with_a_session() {
    let w = world().await;
    let server = &w.server;
    let mut carer = server
        .person(
            Some(&w.tenant),
            "carer",
            "carer@example.org",
            Some(&w.practitioner),
        )
        .await;
    carer.enrol_totp().await;
    for (patient, expected) in [(&w.in_team, 200), (&w.visit_today, 200), (&w.stranger, 404)] {
        let read = carer
            .web
            .fhir(Method::GET, &format!("Patient/{patient}"), None, None)
            .await;
        assert_eq!(
            read.status, expected,
            "carer reading Patient/{patient}: {}",
            read.body
        );
    }
    let search = carer.web.fhir(Method::GET, "Patient", None, None).await;
    assert_eq!(search.status, 200);
    assert!(search.body.contains(&w.in_team) && search.body.contains(&w.visit_today));
    assert!(!search.body.contains(&w.stranger), "{}", search.body);
    let csrf = carer.web.csrf().await;
    let body = patient("Newcomer", "Nell", "9434765870", "1970-01-01");
    let create = carer
        .web
        .fhir(Method::POST, "Patient", Some(&body), Some(&csrf))
        .await;
    assert!(
        !(200..300).contains(&create.status),
        "a carer may not create a Patient: {}",
        create.body
    );
    let forged = carer
        .web
        .fhir(
            Method::POST,
            "Encounter",
            Some(&json!({"resourceType": "Encounter"})),
            None,
        )
        .await;
    assert_eq!(
        forged.status, 403,
        "a cookie write without the CSRF header: {}",
        forged.body
    );

    // Administrators and security officers read no clinical data.
    for role in ["tenant_admin", "security_officer"] {
        let mut person = server
            .person(Some(&w.tenant), role, &format!("{role}@example.org"), None)
            .await;
        person.enrol_passkey().await;
        // Every denial looks like nothing there: 404 for the record, an empty search.
        let read = person
            .web
            .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
            .await;
        assert_no_patient_data(&read, &format!("{role} read"));
        assert_eq!(read.status, 404, "{role}: {}", read.body);
        let search = person.web.fhir(Method::GET, "Patient", None, None).await;
        assert_no_patient_data(&search, &format!("{role} search"));
        assert_eq!(search.status, 200, "{role}: {}", search.body);
        assert!(
            !search.body.contains("\"entry\":[{"),
            "{role}: {}",
            search.body
        );
    }

    // Break-glass opens one more patient for the carer, with a reason, audited and alerted.
    let page = carer.web.get("/break-glass").await;
    let opened = carer
        .web
        .submit(
            &page,
            "/break-glass",
            &[
                ("patient", &w.stranger),
                ("reason", "fell at the day centre; no record otherwise"),
            ],
        )
        .await;
    assert_eq!(opened.status, 200, "{}", opened.body);
    let read = carer
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.stranger), None, None)
        .await;
    assert_eq!(
        read.status, 200,
        "break-glass opens the record: {}",
        read.body
    );
    let audit = audit_texts(server).await;
    assert!(
        audit
            .iter()
            .any(|r| r.contains("\"break-glass\"") && r.contains("fell at the day centre"))
    );
    let events = sqlite_texts(server, "SELECT kind FROM security_events").await;
    assert!(events.iter().any(|e| e == "break-glass"), "{events:?}");

    // Disabling the carer ends their session at once.
    let mut admin = server
        .person(
            Some(&w.tenant),
            "tenant_admin",
            "admin.disabler@example.org",
            None,
        )
        .await;
    admin.enrol_passkey().await;
    let carer_id = person_id(server, Some(&w.tenant), "carer@example.org");
    let page = admin.web.get("/admin/people").await;
    let done = admin
        .web
        .submit(
            &page,
            &format!("/admin/people/{carer_id}/status"),
            &[("status", "disabled")],
        )
        .await;
    assert_eq!(done.status, 200, "{}", done.body);
    let read = carer
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(
        read.status, 401,
        "a disabled person's session ends: {}",
        read.body
    );
    assert_eq!(carer.web.get("/").await.location(), "/signin");
}

#[tokio::test]
async fn supplier_staff_reach_a_tenant_only_under_an_approved_grant() {
    let w = world().await;
    let server = &w.server;
    let mut operator = server
        .person(None, "platform_operator", "support@supplier.example", None)
        .await;
    operator.enrol_passkey().await;
    let mut admin = server
        .person(
            Some(&w.tenant),
            "tenant_admin",
            "admin@people.example",
            None,
        )
        .await;
    admin.enrol_passkey().await;
    let path = format!("Patient/{}", w.in_team);
    let before = operator.web.fhir(Method::GET, &path, None, None).await;
    // No standing access, and the denial looks like a resource that does not exist.
    assert_eq!(before.status, 404, "no standing access: {}", before.body);
    assert_no_patient_data(&before, "an operator without a grant");

    for reason in [
        "ticket 1234: visit list missing entries",
        "ticket 5678: second look at the same problem",
    ] {
        let page = operator.web.get("/operator/grants").await;
        let done = operator
            .web
            .submit(
                &page,
                "/operator/grants",
                &[("tenant", &w.tenant), ("reason", reason), ("minutes", "30")],
            )
            .await;
        assert_eq!(done.status, 200, "{}", done.body);
    }
    // A fresh passkey sign-in, then step-up with the passkey before deciding.
    admin.web = WebClient::new(&server.base);
    let signed_in = admin.sign_in_passkey().await;
    assert_eq!(signed_in.status, 303, "{}", signed_in.body);
    admin.step_up_passkey().await;
    let grants_page = admin.web.get("/admin/grants").await;
    let ids: Vec<String> = grants_page
        .body
        .split("action=\"/admin/grants/")
        .skip(1)
        .filter_map(|rest| rest.split('/').next().map(str::to_owned))
        .collect();
    assert_eq!(ids.len(), 2, "{}", grants_page.body);
    // Newest first: refuse the second request, approve the first.
    let refused = admin
        .web
        .submit(
            &grants_page,
            &format!("/admin/grants/{}/decision", ids[0]),
            &[("decision", "refuse")],
        )
        .await;
    assert_eq!(refused.status, 200, "{}", refused.body);
    let use_refused = operator.web.get("/operator/grants").await;
    let blocked = operator
        .web
        .submit(
            &use_refused,
            &format!("/operator/grants/{}/use", ids[0]),
            &[],
        )
        .await;
    assert_eq!(
        blocked.status, 400,
        "a refused grant cannot be used: {}",
        blocked.body
    );
    let after = operator.web.fhir(Method::GET, &path, None, None).await;
    assert!(
        !(200..300).contains(&after.status),
        "a refused grant opens nothing: {}",
        after.body
    );

    let approved = admin
        .web
        .submit(
            &grants_page,
            &format!("/admin/grants/{}/decision", ids[1]),
            &[("decision", "approve")],
        )
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);
    let page = operator.web.get("/operator/grants").await;
    let used = operator
        .web
        .submit(&page, &format!("/operator/grants/{}/use", ids[1]), &[])
        .await;
    assert_eq!(used.status, 200, "{}", used.body);
    let read = operator.web.fhir(Method::GET, &path, None, None).await;
    assert_eq!(read.status, 200, "under an approved grant: {}", read.body);
    let csrf = operator.web.csrf().await;
    let write = operator
        .web
        .fhir(
            Method::POST,
            "Patient",
            Some(&patient("Supplied", "Sam", "9434765870", "1980-01-01")),
            Some(&csrf),
        )
        .await;
    assert!(
        !(200..300).contains(&write.status),
        "grants are read-only: {}",
        write.body
    );
    let audit = audit_texts(server).await;
    assert!(
        audit
            .iter()
            .any(|r| r.contains(&w.in_team) && r.contains(&ids[1])),
        "the read is audited with the grant"
    );
}

#[tokio::test]
async fn home_entry_details_are_sealed_apart_and_revealed_to_todays_carer() {
    let w = world().await;
    let server = &w.server;
    let mut clinician = server
        .person(
            Some(&w.tenant),
            "clinician",
            "coordinator@example.org",
            None,
        )
        .await;
    clinician.enrol_totp().await;
    let page = clinician
        .web
        .get(&format!("/patients/{}/entry", w.visit_today))
        .await;
    assert_eq!(page.status, 200, "{}", page.body);
    let saved = clinician
        .web
        .submit(
            &page,
            &format!("/patients/{}/entry", w.visit_today),
            &[
                ("key_safe_code", KEY_SAFE),
                ("instructions", "Blue door at the back; the dog is friendly"),
            ],
        )
        .await;
    assert_eq!(saved.status, 200, "{}", saved.body);
    assert!(!saved.body.contains(KEY_SAFE));

    // Nowhere in FHIR: search, _include, _revinclude, history, transactions.
    for path in [
        format!("Patient/{}", w.visit_today),
        format!(
            "Patient?_id={}&_revinclude=Appointment:patient",
            w.visit_today
        ),
        format!(
            "Appointment?patient={}&_include=Appointment:patient",
            w.visit_today
        ),
        format!("Patient/{}/_history", w.visit_today),
        "Patient/_history".to_owned(),
        "Appointment".to_owned(),
    ] {
        let page = clinician.web.fhir(Method::GET, &path, None, None).await;
        assert!(
            !page.body.contains(KEY_SAFE) && !page.body.contains("Blue door"),
            "{path}: {}",
            page.body
        );
    }
    // Searching for the code's text finds nothing (the self link echoes the query only).
    for path in [
        format!("Patient?name={KEY_SAFE}"),
        format!("Patient?identifier={KEY_SAFE}"),
    ] {
        let page = clinician.web.fhir(Method::GET, &path, None, None).await;
        let found: Value = serde_json::from_str(&page.body).unwrap_or(Value::Null);
        assert_eq!(found["entry"], json!([]), "{path}: {}", page.body);
    }
    let csrf = clinician.web.csrf().await;
    let bundle = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        {"request": {"method": "GET", "url": format!("Patient/{}", w.visit_today)}},
        {"request": {"method": "GET", "url": "Appointment"}}
    ]});
    let batch = clinician
        .web
        .fhir(Method::POST, "", Some(&bundle), Some(&csrf))
        .await;
    assert!(!batch.body.contains(KEY_SAFE), "{}", batch.body);
    // The database holds no plaintext of it.
    let mut files = vec![server.sqlite_path()];
    files.push(server.sqlite_path().with_extension("sqlite-wal"));
    for file in files {
        let bytes = crate::common::file_bytes(&file);
        assert!(
            !bytes
                .windows(KEY_SAFE.len())
                .any(|window| window == KEY_SAFE.as_bytes()),
            "{} holds the key-safe code in plaintext",
            file.display()
        );
    }

    // The carer visiting today sees it (fresh from signing in); not for a patient not visited.
    let mut carer = server
        .person(
            Some(&w.tenant),
            "carer",
            "visiting@example.org",
            Some(&w.practitioner),
        )
        .await;
    carer.enrol_totp().await;
    let page = carer
        .web
        .get(&format!("/visits/{}/entry", w.visit_today))
        .await;
    let revealed = carer
        .web
        .submit(&page, &format!("/visits/{}/entry", w.visit_today), &[])
        .await;
    assert_eq!(revealed.status, 200, "{}", revealed.body);
    assert!(revealed.body.contains(KEY_SAFE), "{}", revealed.body);
    let page = carer.web.get(&format!("/visits/{}/entry", w.in_team)).await;
    let refused = carer
        .web
        .submit(&page, &format!("/visits/{}/entry", w.in_team), &[])
        .await;
    assert_eq!(refused.status, 404, "{}", refused.body);
    let audit = audit_texts(server).await;
    assert!(
        audit
            .iter()
            .any(|r| r.contains("home-entry.reveal") && r.contains(&w.visit_today))
    );
    assert!(audit.iter().all(|r| !r.contains(KEY_SAFE)));
}

#[tokio::test]
async fn resetting_factors_needs_a_second_administrator_and_tells_the_person() {
    let w = world().await;
    let server = &w.server;
    let mut clinician = server
        .person(
            Some(&w.tenant),
            "clinician",
            "reset.me@people.example",
            None,
        )
        .await;
    clinician.enrol_totp().await;
    let before = clinician
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(before.status, 200, "{}", before.body);
    let mut first = server
        .person(
            Some(&w.tenant),
            "tenant_admin",
            "first.admin@people.example",
            None,
        )
        .await;
    first.enrol_passkey().await;
    let mut second = server
        .person(
            Some(&w.tenant),
            "tenant_admin",
            "second.admin@people.example",
            None,
        )
        .await;
    second.enrol_passkey().await;
    let target = person_id(server, Some(&w.tenant), "reset.me@people.example");

    let page = first.web.get("/admin/people").await;
    let requested = first
        .web
        .submit(&page, &format!("/admin/people/{target}/factor-reset"), &[])
        .await;
    assert_eq!(requested.status, 200, "{}", requested.body);
    let resets = sqlite_texts(server, "SELECT id FROM factor_resets").await;
    assert_eq!(resets.len(), 1);
    let reset = &resets[0];

    // The requester cannot approve their own request.
    let page = first.web.get("/admin/people").await;
    let own = first
        .web
        .submit(&page, &format!("/admin/factor-resets/{reset}/approve"), &[])
        .await;
    assert_eq!(own.status, 400, "{}", own.body);
    assert!(own.body.contains("second administrator"), "{}", own.body);
    let still = clinician
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(
        still.status, 200,
        "nothing happens before a second approval"
    );

    let page = second.web.get("/admin/people").await;
    let approved = second
        .web
        .submit(&page, &format!("/admin/factor-resets/{reset}/approve"), &[])
        .await;
    assert_eq!(approved.status, 200, "{}", approved.body);

    // Their session ended, their factors are gone (a password alone now only enrols), and
    // they are told: a security event names the reset.
    let after = clinician
        .web
        .fhir(Method::GET, &format!("Patient/{}", w.in_team), None, None)
        .await;
    assert_eq!(
        after.status, 401,
        "the reset must end their sessions: {}",
        after.body
    );
    assert_eq!(clinician.password_step().await, "/account/enrol");
    let events = sqlite_texts(server, "SELECT kind || ' ' || detail FROM security_events").await;
    assert!(
        events.iter().any(|event| event.starts_with("factor-reset")),
        "{events:?}"
    );
}

#[tokio::test]
async fn changing_roles_ends_the_persons_sessions() {
    let w = world().await;
    let server = &w.server;
    let mut clinician = server
        .person(
            Some(&w.tenant),
            "clinician",
            "promoted@people.example",
            None,
        )
        .await;
    clinician.enrol_totp().await;
    let path = format!("Patient/{}", w.in_team);
    assert_eq!(
        clinician
            .web
            .fhir(Method::GET, &path, None, None)
            .await
            .status,
        200
    );
    let mut admin = server
        .person(
            Some(&w.tenant),
            "tenant_admin",
            "roles.admin@people.example",
            None,
        )
        .await;
    admin.enrol_passkey().await;
    let target = person_id(server, Some(&w.tenant), "promoted@people.example");

    // A privilege change never carries over an old session.
    let page = admin.web.get("/admin/people").await;
    let changed = admin
        .web
        .submit(
            &page,
            &format!("/admin/people/{target}/roles"),
            &[("role", "carer")],
        )
        .await;
    assert_eq!(changed.status, 200, "{}", changed.body);
    let after = clinician.web.fhir(Method::GET, &path, None, None).await;
    assert_eq!(
        after.status, 401,
        "the old session must end: {}",
        after.body
    );
    let roles = sqlite_texts(
        server,
        "SELECT roles FROM people WHERE email = 'promoted@people.example'",
    )
    .await;
    assert_eq!(roles, vec!["carer".to_owned()]);
}
