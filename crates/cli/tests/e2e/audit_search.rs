//! Reading the trail (issue 4, point 7): security officers, and only they, in their own tenant,
//! search the audit trail as FHIR AuditEvent (BALP-shaped) by patient, agent, date, action,
//! outcome and address, with paging; the search is itself recorded; and the host operator's
//! `carevault audit search`.

use reqwest::Method;
use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Person, Server, engines, patient};

fn bundle(body: &str) -> Value {
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn events(bundle: &Value) -> Vec<Value> {
    bundle["entry"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|entry| entry["resource"].clone())
        .collect()
}

fn patients_of(event: &Value) -> Vec<String> {
    event["entity"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|entity| entity["role"]["code"] == "1")
        .filter_map(|entity| entity["what"]["reference"].as_str())
        .map(str::to_owned)
        .collect()
}

fn agent_of(event: &Value) -> String {
    event["agent"][0]["who"]["identifier"]["value"]
        .as_str()
        .unwrap_or_default()
        .to_owned()
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .and_then(|url| url.split_once("/fhir/"))
        .map(|(_, path)| path.to_owned())
}

async fn search(person: &mut Person, query: &str) -> Value {
    let page = person
        .web
        .fhir(Method::GET, &format!("AuditEvent?{query}"), None, None)
        .await;
    assert_eq!(page.status, 200, "AuditEvent?{query}: {}", page.body);
    bundle(&page.body)
}

async fn signed_in(
    server: &Server,
    tenant: &str,
    role: &str,
    email: &str,
    practitioner: Option<&str>,
) -> Person {
    let mut person = server.person(Some(tenant), role, email, practitioner).await;
    person.enrol_passkey().await;
    person
}

#[tokio::test]
async fn audit_search_security_officers_alone_read_their_tenants_trail() {
    for engine in engines() {
        only_security_officers_read_the_trail(engine).await;
    }
}

async fn only_security_officers_read_the_trail(engine: Engine) {
    let server = Server::start(engine).await;
    let started = time::OffsetDateTime::from_unix_timestamp(crate::common::now_s() - 5)
        .unwrap_or(time::OffsetDateTime::UNIX_EPOCH);
    let since = started
        .format(&time::format_description::well_known::Rfc3339)
        .unwrap_or_default();
    let (tenant, client) = server.tenant_with_client("Audit Trust").await;
    let fhir = Fhir::new(&server, &client);
    let practitioner = fhir
        .create(&json!({"resourceType": "Practitioner", "name": [{"family": "Carer"}]}))
        .await;
    let ann = fhir
        .create(&patient("Annwick", "Ada", "9434765919", "1950-01-01"))
        .await;
    let bob = fhir
        .create(&patient("Bobbington", "Bo", "9434765870", "1951-02-02"))
        .await;

    // A clinician reads Ann twice and Bob once.
    let mut clinician = signed_in(&server, &tenant, "clinician", "clin@example.org", None).await;
    for id in [&ann, &ann, &bob] {
        let read = clinician
            .web
            .fhir(Method::GET, &format!("Patient/{id}"), None, None)
            .await;
        assert_eq!(read.status, 200, "{}", read.body);
    }

    let mut officer = signed_in(&server, &tenant, "security_officer", "so@example.org", None).await;

    // By patient: exactly the reads of Ann, none of Bob's, newest first, BALP-shaped.
    let found = search(&mut officer, &format!("patient={ann}&action=read")).await;
    assert_eq!(found["resourceType"], "Bundle");
    assert_eq!(found["type"], "searchset");
    let reads = events(&found);
    assert_eq!(reads.len(), 2, "{found}");
    for event in &reads {
        assert_eq!(event["resourceType"], "AuditEvent");
        assert_eq!(
            patients_of(event),
            vec![format!("Patient/{ann}")],
            "{event}"
        );
        assert_eq!(event["type"]["code"], "rest");
        assert_eq!(
            event["type"]["system"],
            "http://terminology.hl7.org/CodeSystem/audit-event-type"
        );
        assert_eq!(event["subtype"][0]["code"], "read");
        assert_eq!(
            event["subtype"][0]["system"],
            "http://hl7.org/fhir/restful-interaction"
        );
        assert_eq!(event["action"], "R");
        assert_eq!(event["outcome"], "0");
        assert_eq!(event["agent"][0]["requestor"], true);
        assert_eq!(event["agent"][0]["network"]["address"], "127.0.0.1");
        assert_eq!(event["source"]["observer"]["display"], "carevault");
        assert!(
            event["meta"]["profile"][0]
                .as_str()
                .unwrap_or_default()
                .ends_with("IHE.BasicAudit.PatientRead"),
            "{event}"
        );
        assert!(
            event["entity"].as_array().into_iter().flatten().any(
                |entity| entity["what"]["reference"] == format!("Patient/{ann}")
                    && entity["role"]["code"] == "4"
            ),
            "the read resource as the domain resource entity: {event}"
        );
        assert!(!event.to_string().contains("Annwick"), "no names: {event}");
    }
    let first_id: i64 = reads[0]["id"].as_str().unwrap_or("0").parse().unwrap_or(0);
    let second_id: i64 = reads[1]["id"].as_str().unwrap_or("0").parse().unwrap_or(0);
    assert!(first_id > second_id, "newest first");
    let clinician_agent = agent_of(&reads[0]);
    assert!(clinician_agent.starts_with("person/"), "{clinician_agent}");

    // Every record of Ann (her creation too), never one of Bob's alone.
    let all_ann = events(&search(&mut officer, &format!("patient=Patient/{ann}")).await);
    assert!(all_ann.len() >= 3, "{all_ann:?}");
    assert!(
        all_ann
            .iter()
            .all(|event| patients_of(event).contains(&format!("Patient/{ann}")))
    );
    let bob_reads = events(&search(&mut officer, &format!("patient={bob}&action=read")).await);
    assert_eq!(bob_reads.len(), 1);
    assert_eq!(patients_of(&bob_reads[0]), vec![format!("Patient/{bob}")]);

    // By agent, address, outcome and date.
    let by_agent = events(
        &search(
            &mut officer,
            &format!("agent={clinician_agent}&action=read"),
        )
        .await,
    );
    assert_eq!(by_agent.len(), 3, "{by_agent:?}");
    assert!(
        by_agent
            .iter()
            .all(|event| agent_of(event) == clinician_agent)
    );
    let by_client =
        events(&search(&mut officer, &format!("client={}&action=create", client.id)).await);
    assert_eq!(
        by_client.len(),
        3,
        "practitioner and two patients: {by_client:?}"
    );
    let by_address = events(
        &search(
            &mut officer,
            &format!("address=127.0.0.1&agent={clinician_agent}&action=read&outcome=0"),
        )
        .await,
    );
    assert_eq!(by_address.len(), 3);
    let nowhere = events(&search(&mut officer, "address=192.0.2.1").await);
    assert!(nowhere.is_empty());
    let since_start = events(
        &search(
            &mut officer,
            &format!("patient={ann}&action=read&date=ge{}", urlencode(&since)),
        )
        .await,
    );
    assert_eq!(since_start.len(), 2);
    let long_ago = events(&search(&mut officer, &format!("patient={ann}&date=lt2001-01-01")).await);
    assert!(long_ago.is_empty(), "{long_ago:?}");
    let bad = officer
        .web
        .fhir(Method::GET, "AuditEvent?date=yesterday", None, None)
        .await;
    assert_eq!(bad.status, 400, "{}", bad.body);

    // Paging: one at a time, newest first, following the next link.
    let page1 = search(&mut officer, &format!("patient={ann}&action=read&_count=1")).await;
    assert_eq!(events(&page1).len(), 1);
    assert_eq!(events(&page1)[0]["id"], reads[0]["id"]);
    let next = next_link(&page1).unwrap_or_else(|| panic!("no next link: {page1}"));
    let page2 = bundle(&officer.web.fhir(Method::GET, &next, None, None).await.body);
    assert_eq!(events(&page2).len(), 1, "{page2}");
    assert_eq!(events(&page2)[0]["id"], reads[1]["id"]);
    if let Some(next) = next_link(&page2) {
        let page3 = bundle(&officer.web.fhir(Method::GET, &next, None, None).await.body);
        assert!(events(&page3).is_empty(), "{page3}");
    }

    // A clinician and a carer asking get nothing; a machine client is refused.
    let asked = search(&mut clinician, &format!("patient={ann}")).await;
    assert!(events(&asked).is_empty(), "clinician: {asked}");
    let mut carer = signed_in(
        &server,
        &tenant,
        "carer",
        "carer@example.org",
        Some(&practitioner),
    )
    .await;
    let asked = search(&mut carer, "").await;
    assert!(events(&asked).is_empty(), "carer: {asked}");
    let refused = fhir.get(&format!("AuditEvent?patient={ann}")).await;
    assert_eq!(refused.status, 403, "{}", refused.body);
    assert_eq!(refused.body["resourceType"], "OperationOutcome");
    // AuditEvent cannot be written.
    let write = fhir
        .post("AuditEvent", &json!({"resourceType": "AuditEvent"}))
        .await;
    assert!(
        !(200..300).contains(&write.status),
        "AuditEvent written: {}",
        write.body
    );

    // The searches themselves are in the trail: the officer's, and the refused attempts, with
    // no data subjects.
    let searches = events(&search(&mut officer, "action=audit.search&_count=200").await);
    let mine: Vec<&Value> = searches
        .iter()
        .filter(|event| event["outcome"] == "0")
        .collect();
    assert!(mine.len() >= 10, "{searches:?}");
    assert!(mine.iter().all(|event| patients_of(event).is_empty()));
    assert!(
        mine.iter()
            .all(|event| event["subtype"][0]["code"] == "search-type")
    );
    let denied = events(&search(&mut officer, "action=audit.search&outcome=denied").await);
    let denied_agents: Vec<String> = denied.iter().map(agent_of).collect();
    assert!(
        denied_agents.contains(&clinician_agent),
        "{denied_agents:?}"
    );
    assert!(
        denied_agents.contains(&format!("client/{}", client.id)),
        "{denied_agents:?}"
    );
    assert_eq!(
        denied_agents.len(),
        3,
        "clinician, carer, client: {denied_agents:?}"
    );

    // Another tenant's security officer finds nothing of this tenant.
    let other = server.create_tenant("Other Trust");
    let mut stranger =
        signed_in(&server, &other, "security_officer", "so2@example.org", None).await;
    let theirs = search(&mut stranger, &format!("patient={ann}")).await;
    assert!(events(&theirs).is_empty(), "{theirs}");
    let theirs = search(&mut stranger, &format!("agent={clinician_agent}")).await;
    assert!(events(&theirs).is_empty(), "{theirs}");
    let everything = events(&search(&mut stranger, "_count=1000").await);
    assert!(
        everything
            .iter()
            .all(|event| !event.to_string().contains(&ann) && !event.to_string().contains(&bob)),
        "{everything:?}"
    );
}

fn urlencode(text: &str) -> String {
    text.replace(':', "%3A").replace('+', "%2B")
}

#[tokio::test]
async fn audit_search_from_the_command_line() {
    let server = Server::start(Engine::Sqlite).await;
    let (tenant, client) = server.tenant_with_client("CLI Trust").await;
    let fhir = Fhir::new(&server, &client);
    let ann = fhir
        .create(&patient("Annwick", "Ada", "9434765919", "1950-01-01"))
        .await;
    let bob = fhir
        .create(&patient("Bobbington", "Bo", "9434765870", "1951-02-02"))
        .await;
    for id in [&ann, &ann, &bob] {
        assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
    }

    let out = server.cli(&[
        "audit",
        "search",
        "--tenant",
        &tenant,
        "--patient",
        &ann,
        "--action",
        "read",
        "--json",
    ]);
    let records: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let records = records.as_array().cloned().unwrap_or_default();
    assert_eq!(records.len(), 2, "{out}");
    assert!(
        records
            .iter()
            .all(|r| r["subjects"] == json!([ann.clone()]))
    );
    assert!(records[0]["seq"].as_i64() > records[1]["seq"].as_i64());

    let principal = format!("client/{}", client.id);
    let out = server.cli(&[
        "audit",
        "search",
        "--tenant",
        &tenant,
        "--principal",
        &principal,
        "--outcome",
        "success",
        "--since",
        "2001-01-01T00:00:00Z",
        "--limit",
        "2",
        "--json",
    ]);
    let page: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert_eq!(page.as_array().map(Vec::len), Some(2), "{out}");
    let before = page[1]["seq"].as_i64().unwrap_or_default().to_string();
    let out = server.cli(&[
        "audit",
        "search",
        "--tenant",
        &tenant,
        "--principal",
        &principal,
        "--before",
        &before,
        "--limit",
        "1000",
        "--json",
    ]);
    let rest: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    assert!(rest.as_array().is_some_and(|rest| {
        rest.iter()
            .all(|r| r["seq"].as_i64() < page[1]["seq"].as_i64())
    }));

    // The text form, and the operator's searches are themselves recorded.
    let text = server.cli(&["audit", "search", "--tenant", &tenant, "--patient", &bob]);
    assert!(text.contains(&format!("patients=[{bob}]")), "{text}");
    let out = server.cli(&[
        "audit",
        "search",
        "--tenant",
        &tenant,
        "--action",
        "audit.search",
        "--json",
    ]);
    let searches: Value = serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
    let searches = searches.as_array().cloned().unwrap_or_default();
    assert!(searches.len() >= 4, "{out}");
    assert!(
        searches
            .iter()
            .all(|r| r["principal"] == "operator/cli" && r["subjects"] == json!([]))
    );

    // Wrong input says how to mend it.
    let wrong = server.cli_output(&["audit", "search", "--tenant", &tenant, "--outcome", "fine"]);
    assert!(!wrong.status.success());
    assert!(String::from_utf8_lossy(&wrong.stderr).contains("not an outcome"));
    let missing = server.cli_output(&[
        "audit",
        "search",
        "--tenant",
        "00000000-0000-4000-8000-000000000001",
    ]);
    assert!(!missing.status.success());
}
