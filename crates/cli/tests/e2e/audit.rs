//! Promise 4: every interaction that touches data leaves an audit record (who, tenant, action,
//! resource, data subjects, outcome, source address), with no names in it; a write and its
//! audit record commit together; and when the audit trail cannot be written no data leaves
//! and /readyz says so.

use serde_json::{Value, json};

use crate::common::{Client, Engine, Fhir, Server, audit_texts, engines, patient};

#[tokio::test]
async fn every_interaction_leaves_an_audit_record_without_names() {
    for engine in engines() {
        audit_cases(engine).await;
    }
}

#[tokio::test]
async fn no_write_and_no_data_without_a_durable_audit_record() {
    for engine in engines() {
        audit_failure_cases(engine).await;
    }
}

/// A statement run on the server's database behind its back, as its owner.
async fn execute(server: &Server, statement: &str) {
    match &server.pg {
        None => {
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.sqlite_path());
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            sqlx::raw_sql(sqlx::AssertSqlSafe(statement.to_owned()))
                .execute(&pool)
                .await
                .unwrap_or_else(|e| panic!("{statement}: {e}"));
            pool.close().await;
        }
        Some(pg) => {
            crate::common::psql(&pg.url, statement);
        }
    }
}

/// The tenant's audit records, in sequence order, read from the stored segments.
async fn records(server: &Server, tenant: &str) -> Vec<Value> {
    audit_texts(server)
        .await
        .into_iter()
        .map(|text| serde_json::from_str(&text).unwrap_or_else(|e| panic!("{e}: {text}")))
        .filter(|record: &Value| record["tenant"] == tenant)
        .collect()
}

/// Reads the records appended since the last call.
struct Trail<'a> {
    server: &'a Server,
    tenant: String,
    seen: usize,
}

impl Trail<'_> {
    async fn new_records(&mut self) -> Vec<Value> {
        let all = records(self.server, &self.tenant).await;
        let fresh = all[self.seen.min(all.len())..].to_vec();
        self.seen = all.len();
        fresh
    }

    /// Exactly one new record, for the named action.
    async fn one(&mut self, action: &str) -> Value {
        let fresh = self.new_records().await;
        assert_eq!(
            fresh.len(),
            1,
            "{action}: expected one audit record, got {fresh:#?}"
        );
        let record = fresh.into_iter().next().unwrap_or(Value::Null);
        assert_eq!(record["action"], action, "{record:#}");
        record
    }
}

fn subjects(record: &Value) -> Vec<String> {
    let mut out: Vec<String> = record["subjects"]
        .as_array()
        .map(|s| {
            s.iter()
                .filter_map(Value::as_str)
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out
}

fn sorted(ids: &[&str]) -> Vec<String> {
    let mut out: Vec<String> = ids.iter().map(|id| (*id).to_owned()).collect();
    out.sort();
    out
}

/// Who, tenant, outcome, source: the fields every record carries.
fn check_common(record: &Value, client: &Client, tenant: &str, outcome: &str) {
    assert_eq!(
        record["principal"],
        format!("client/{}", client.id),
        "{record:#}"
    );
    assert_eq!(record["tenant"], tenant, "{record:#}");
    assert_eq!(record["outcome"], outcome, "{record:#}");
    assert_eq!(record["source"], "127.0.0.1", "{record:#}");
    assert!(
        record["time_ms"].as_i64().is_some_and(|t| t > 0),
        "{record:#}"
    );
    assert!(record["auth_strength"].is_string(), "{record:#}");
}

fn check_resource(record: &Value, resource_type: &str, id: Option<&str>) {
    assert_eq!(record["resource_type"], resource_type, "{record:#}");
    if let Some(id) = id {
        assert_eq!(record["resource_id"], id, "{record:#}");
    }
}

async fn audit_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (tenant, client) = server.tenant_with_client("Audit Trust").await;
    let mut reader = server.register_client(&tenant, "system/*.rs");
    server.token(&mut reader, "system/*.rs").await;
    let fhir = Fhir::new(&server, &client);
    let read_only = Fhir::new(&server, &reader);
    let mut trail = Trail {
        server: &server,
        tenant: tenant.clone(),
        seen: 0,
    };
    trail.new_records().await;

    // create
    let p1 = fhir
        .create(&patient(
            "Auditwhistle",
            "Quilla",
            "9434765919",
            "1959-04-04",
        ))
        .await;
    let record = trail.one("create").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p1));
    assert_eq!(subjects(&record), sorted(&[&p1]));
    assert!(
        record["categories"]
            .as_array()
            .is_some_and(|c| !c.is_empty()),
        "{record:#}"
    );

    // read
    assert_eq!(fhir.get(&format!("Patient/{p1}")).await.status, 200);
    let record = trail.one("read").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p1));
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // update
    let mut changed = patient("Auditwhistle", "Quilla", "9434765919", "1959-04-05");
    changed["id"] = json!(p1);
    assert_eq!(
        fhir.put(&format!("Patient/{p1}"), &changed).await.status,
        200
    );
    let record = trail.one("update").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p1));
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // vread
    assert_eq!(
        fhir.get(&format!("Patient/{p1}/_history/1")).await.status,
        200
    );
    let record = trail.one("vread").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p1));
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // history
    assert_eq!(
        fhir.get(&format!("Patient/{p1}/_history")).await.status,
        200
    );
    let record = trail.one("history").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p1));
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // a clinical resource names its patient as the data subject
    let observation = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": format!("Patient/{p1}")},
        "valueQuantity": {"value": 61, "unit": "/min"}
    });
    let o1 = fhir.create(&observation).await;
    let record = trail.one("create").await;
    check_resource(&record, "Observation", Some(&o1));
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // search: every patient in the results is a data subject; the query's values are not kept
    let p2 = fhir
        .create(&patient(
            "Auditwhistler",
            "Rolf",
            "9434765870",
            "1960-05-05",
        ))
        .await;
    trail.one("create").await;
    let reply = fhir.get("Patient?family=auditwhis").await;
    assert_eq!(reply.status, 200);
    assert_eq!(reply.body["entry"].as_array().map(Vec::len), Some(2));
    let record = trail.one("search").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", None);
    assert_eq!(subjects(&record), sorted(&[&p1, &p2]));
    assert!(
        record["detail"]
            .as_str()
            .is_some_and(|d| d.contains("family")),
        "{record:#}"
    );
    // _include: the included resources' subjects count too. The Observation is about p1, but
    // the Encounter it points at is p2's, so the search released data about both.
    let encounter = fhir
        .create(&json!({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{p2}")}
        }))
        .await;
    trail.one("create").await;
    let mut linked = observation.clone();
    linked["encounter"] = json!({"reference": format!("Encounter/{encounter}")});
    let linked = fhir.create(&linked).await;
    trail.one("create").await;
    let reply = fhir
        .get(&format!(
            "Observation?_id={linked}&_include=Observation:subject&_include=Observation:encounter"
        ))
        .await;
    assert_eq!(reply.status, 200);
    assert_eq!(
        reply.body["entry"].as_array().map(Vec::len),
        Some(3),
        "{}",
        reply.body
    );
    let record = trail.one("search").await;
    check_resource(&record, "Observation", None);
    assert_eq!(subjects(&record), sorted(&[&p1, &p2]));
    // A search that finds nothing has no subjects, but is still recorded.
    assert_eq!(fhir.get("Patient?family=nobodyhere").await.status, 200);
    let record = trail.one("search").await;
    assert_eq!(subjects(&record), Vec::<String>::new());

    // transaction: one record per entry, committed with the writes
    let urn = "urn:uuid:4d3c2b1a-0f9e-4d8c-b7a6-958473625140";
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": urn, "request": {"method": "POST", "url": "Patient"},
         "resource": patient("Auditwhistlest", "Sten", "1745438912", "1961-06-06")},
        {"request": {"method": "POST", "url": "Observation"},
         "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
                      "subject": {"reference": urn}}},
        {"request": {"method": "DELETE", "url": format!("Observation/{o1}")}}
    ]});
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let p3 = reply.body["entry"][0]["resource"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let o2 = reply.body["entry"][1]["resource"]["id"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let fresh = trail.new_records().await;
    assert_eq!(fresh.len(), 3, "{fresh:#?}");
    let find = |action: &str, id: &str| {
        fresh
            .iter()
            .find(|r| r["action"] == action && r["resource_id"] == id)
            .cloned()
            .unwrap_or_else(|| panic!("no {action} record for {id}: {fresh:#?}"))
    };
    let record = find("create", &p3);
    check_common(&record, &client, &tenant, "success");
    assert_eq!(subjects(&record), sorted(&[&p3]));
    assert_eq!(subjects(&find("create", &o2)), sorted(&[&p3]));
    let record = find("delete", &o1);
    check_common(&record, &client, &tenant, "success");
    assert_eq!(subjects(&record), sorted(&[&p1]));

    // delete
    assert_eq!(fhir.delete(&format!("Patient/{p2}")).await.status, 204);
    let record = trail.one("delete").await;
    check_common(&record, &client, &tenant, "success");
    check_resource(&record, "Patient", Some(&p2));
    assert_eq!(subjects(&record), sorted(&[&p2]));

    // denied: the read-only client tries to create
    let denied = read_only
        .post(
            "Patient",
            &patient("Auditwhistle", "Una", "9434765919", "1962-07-07"),
        )
        .await;
    assert_eq!(denied.status, 403, "{}", denied.body);
    let record = trail.one("create").await;
    check_common(&record, &reader, &tenant, "denied");
    check_resource(&record, "Patient", None);
    assert_eq!(subjects(&record), Vec::<String>::new());
    // ... and reads with its own identity.
    assert_eq!(read_only.get(&format!("Patient/{p1}")).await.status, 200);
    let record = trail.one("read").await;
    check_common(&record, &reader, &tenant, "success");

    // not found
    let missing = "0b3c9d5e-1111-4222-8333-944455556666";
    assert_eq!(fhir.get(&format!("Patient/{missing}")).await.status, 404);
    let record = trail.one("read").await;
    check_common(&record, &client, &tenant, "not-found");
    check_resource(&record, "Patient", Some(missing));
    // A malformed id from the URL is not copied into the trail (it could carry free text).
    assert_eq!(fhir.get("Patient/Auditwhistle%20Quilla").await.status, 404);
    let record = trail.one("read").await;
    check_common(&record, &client, &tenant, "not-found");
    assert!(record["resource_id"].is_null(), "{record:#}");
    // a deleted resource
    assert_eq!(fhir.get(&format!("Patient/{p2}")).await.status, 410);
    let record = trail.one("read").await;
    check_common(&record, &client, &tenant, "not-found");
    // an invalid search
    assert_eq!(fhir.get("Patient?foo=Auditwhistle").await.status, 400);
    let record = trail.one("search").await;
    check_common(&record, &client, &tenant, "invalid");

    // No names, birth dates or identifiers anywhere in the audit trail.
    let everything: String = audit_texts(&server).await.join("\n");
    for secret in [
        "Auditwhistle",
        "auditwhis",
        "Quilla",
        "Rolf",
        "Sten",
        "Una",
        "1959-04",
        "9434765919",
        "nobodyhere",
    ] {
        assert!(
            !everything.to_lowercase().contains(&secret.to_lowercase()),
            "{engine:?}: the audit trail holds {secret:?}"
        );
    }
}

async fn readyz(server: &Server) -> (u16, Value) {
    let response = server
        .http
        .get(format!("{}/readyz", server.base))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn audit_failure_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (tenant, client) = server.tenant_with_client("Failsafe Trust").await;
    let fhir = Fhir::new(&server, &client);
    let existing = fhir
        .create(&patient("Failsafe", "Fern", "9434765919", "1955-05-05"))
        .await;
    let observation = fhir
        .create(&json!({
            "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
            "subject": {"reference": format!("Patient/{existing}")}
        }))
        .await;
    assert_eq!(readyz(&server).await.0, 200);
    let audited_before = records(&server, &tenant).await.len();

    let (block, unblock) = match engine {
        Engine::Sqlite => (
            "CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments \
             BEGIN SELECT RAISE(ABORT, 'audit blocked by the test'); END;",
            "DROP TRIGGER audit_block;",
        ),
        Engine::Postgres => (
            "CREATE FUNCTION audit_block() RETURNS trigger LANGUAGE plpgsql AS $$ \
             BEGIN RAISE EXCEPTION 'audit blocked by the test'; END; $$; \
             CREATE TRIGGER audit_block BEFORE INSERT ON audit_segments \
             FOR EACH ROW EXECUTE FUNCTION audit_block();",
            "DROP TRIGGER audit_block ON audit_segments; DROP FUNCTION audit_block();",
        ),
    };
    execute(&server, block).await;

    // On SQLite a request's record is made durable in the audit journal and chained into the
    // trail a moment later (store/src/sqlite/journal.rs): reads are answered, each with its
    // record durable, until a chaining fails, within a quarter of a second. Then they are
    // refused, and so are the records of failed requests, as on PostgreSQL from the start.
    let mut answered_meanwhile = 0;
    if matches!(engine, Engine::Sqlite) {
        let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
        loop {
            let reply = fhir.get(&format!("Patient/{existing}")).await;
            match reply.status {
                200 => answered_meanwhile += 1,
                503 => break,
                other => panic!("{other}: {}", reply.body),
            }
            assert!(
                std::time::Instant::now() < deadline,
                "reads were still answered 10 s after the trail broke"
            );
            tokio::time::sleep(std::time::Duration::from_millis(50)).await;
        }
        // Nothing was pending when the trail broke, so the first read was journaled.
        assert!(answered_meanwhile >= 1);
    }

    // A create cannot commit without its audit record: 5xx, and nothing written.
    let created = fhir
        .post(
            "Patient",
            &patient("Blockedson", "Bly", "9434765870", "1956-06-06"),
        )
        .await;
    assert!(
        created.status >= 500,
        "{engine:?}: {} {}",
        created.status,
        created.body
    );
    assert_eq!(
        created.body["resourceType"], "OperationOutcome",
        "{}",
        created.body
    );
    // An update and a transaction fail the same way and leave the old version in place.
    let mut changed = patient("Failsafe", "Flora", "9434765919", "1955-05-05");
    changed["id"] = json!(existing);
    let updated = fhir.put(&format!("Patient/{existing}"), &changed).await;
    assert!(updated.status >= 500, "{} {}", updated.status, updated.body);
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"request": {"method": "POST", "url": "Patient"},
         "resource": patient("Blockedson", "Bea", "1745438912", "1957-07-07")}
    ]});
    let transaction = fhir.post("", &bundle).await;
    assert!(
        transaction.status >= 500,
        "{} {}",
        transaction.status,
        transaction.body
    );

    // Reads fail closed: 503 and no resource in the body.
    for path in [
        format!("Patient/{existing}"),
        format!("Patient/{existing}/_history/1"),
        format!("Patient/{existing}/_history"),
        format!("Observation/{observation}"),
        "Patient?family=failsafe".to_owned(),
        format!("Observation?patient={existing}&_include=Observation:subject"),
    ] {
        let reply = fhir.get(&path).await;
        assert_eq!(reply.status, 503, "{engine:?} {path}: {}", reply.body);
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{path}");
        let text = String::from_utf8_lossy(&reply.raw);
        for leak in ["Failsafe", "Fern", existing.as_str(), "1955"] {
            assert!(
                !text.contains(leak),
                "{path}: {leak} left without an audit record"
            );
        }
    }
    let (status, body) = readyz(&server).await;
    assert_eq!(status, 503, "{body}");
    assert_eq!(body["audit"], "failing", "{body}");

    execute(&server, unblock).await;
    // Still not ready until an audit commit succeeds again.
    let (status, body) = readyz(&server).await;
    assert_eq!(
        status, 503,
        "readiness returns only after a successful commit: {body}"
    );
    let search = fhir.get("Patient?family=blockedson").await;
    assert_eq!(search.status, 200, "{}", search.body);
    assert_eq!(
        search.body["entry"].as_array().map_or(0, Vec::len),
        0,
        "the failed creates left nothing"
    );
    assert_eq!(readyz(&server).await.0, 200);
    let read = fhir.get(&format!("Patient/{existing}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body["meta"]["versionId"], "1",
        "the failed update left nothing"
    );
    assert_eq!(read.body["name"][0]["given"][0], "Fern");
    // Nothing was audited while the trail was down (the failures could not be written either)
    // but the reads answered before that was known, and every record since is there.
    let records = records(&server, &tenant).await;
    assert_eq!(
        records.len(),
        audited_before + answered_meanwhile + 2,
        "{:#?}",
        &records[audited_before..]
    );
}
