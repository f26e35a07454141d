//! Promise 2: tenants cannot see each other. Tenant B tries every interaction on tenant A's
//! resources; every answer must equal the answer for a resource that never existed.

use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Reply, Server, engines, patient};

#[tokio::test]
async fn another_tenants_resources_are_indistinguishable_from_missing_ones() {
    for engine in engines() {
        cross_tenant_attempts(engine).await;
    }
}

/// Compares the other tenant's answer with the answer for a made-up id.
fn same_answer(case: &str, theirs: &Reply, missing: &Reply) {
    assert_eq!(theirs.status, missing.status, "{case}: status differs");
    assert_eq!(theirs.raw, missing.raw, "{case}: body differs");
}

fn entry_count(reply: &Reply) -> usize {
    reply.body["entry"].as_array().map_or(0, Vec::len)
}

async fn cross_tenant_attempts(engine: Engine) {
    let server = Server::start(engine).await;
    let (_a, client_a) = server.tenant_with_client("Tenant A").await;
    let (_b, client_b) = server.tenant_with_client("Tenant B").await;
    let a = Fhir::new(&server, &client_a);
    let b = Fhir::new(&server, &client_b);

    let theirs = a
        .create(&patient("Isolde", "Alpha", "9434765919", "1961-06-15"))
        .await;
    a.create(&patient("Isolde", "Beta", "9434765870", "1962-06-15"))
        .await;
    let observation = a
        .create(&json!({
            "resourceType": "Observation", "status": "final",
            "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
            "subject": {"reference": format!("Patient/{theirs}")},
            "effectiveDateTime": "2026-01-01T10:00:00Z",
            "valueQuantity": {"value": 80, "unit": "/min"}
        }))
        .await;
    let missing = "0b3c9d5e-1111-4222-8333-944455556666";
    let mut attempts = 0;

    // Reads.
    for path in ["Patient/{}", "Patient/{}/_history/1", "Patient/{}/_history"] {
        let their = b.get(&path.replace("{}", &theirs)).await;
        let none = b.get(&path.replace("{}", missing)).await;
        same_answer(path, &their, &none);
        assert_eq!(their.status, 404, "{path}");
        attempts += 1;
    }
    let their = b.get(&format!("Observation/{observation}")).await;
    same_answer(
        "observation read",
        &their,
        &b.get(&format!("Observation/{missing}")).await,
    );
    attempts += 1;

    // Searches find nothing of A's.
    for query in [
        format!("Patient?_id={theirs}"),
        "Patient?family=isolde".to_owned(),
        "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|9434765919".to_owned(),
        "Patient?birthdate=1961-06-15".to_owned(),
        format!("Observation?subject=Patient/{theirs}"),
        "Observation?code=http://loinc.org|8867-4".to_owned(),
        "Observation?date=ge2025-01-01".to_owned(),
        "Patient/_history".to_owned(),
    ] {
        let reply = b.get(&query).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        assert_eq!(entry_count(&reply), 0, "{query} leaked: {}", reply.body);
        attempts += 1;
    }

    // _include cannot reach across: B's own Observation points at A's patient id.
    b.create(&json!({
        "resourceType": "Observation", "status": "final", "code": {"text": "pulse"},
        "subject": {"reference": format!("Patient/{theirs}")}
    }))
    .await;
    let included = b.get("Observation?_include=Observation:subject").await;
    assert_eq!(included.status, 200);
    assert_eq!(
        entry_count(&included),
        1,
        "only B's observation: {}",
        included.body
    );
    assert!(
        !included.raw.windows(6).any(|w| w == b"Isolde"),
        "A's patient leaked through _include"
    );
    attempts += 1;

    // Delete.
    same_answer(
        "delete",
        &b.delete(&format!("Patient/{theirs}")).await,
        &b.delete(&format!("Patient/{missing}")).await,
    );
    attempts += 1;

    // Update with If-Match on A's resource: as for a missing one.
    let body_for = |id: &str| patient_with_id(id);
    let their = b
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{theirs}"),
            Some(&body_for(&theirs)),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    let none = b
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{missing}"),
            Some(&body_for(missing)),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    same_answer("conditional update", &their, &none);
    attempts += 1;

    // Transactions that name A's resources.
    for (method, extra) in [("DELETE", None), ("GET", None), ("PUT", Some("W/\"1\""))] {
        let bundle_for = |id: &str| {
            let mut entry = json!({"request": {"method": method, "url": format!("Patient/{id}")}});
            if method == "PUT" {
                entry["resource"] = patient_with_id(id);
                entry["request"]["ifMatch"] = json!(extra);
            }
            json!({"resourceType": "Bundle", "type": "transaction", "entry": [entry]})
        };
        let their = b.post("", &bundle_for(&theirs)).await;
        let none = b.post("", &bundle_for(missing)).await;
        same_answer(&format!("transaction {method}"), &their, &none);
        assert_ne!(
            their.status, 200,
            "transaction {method} should fail: {}",
            their.body
        );
        attempts += 1;
    }

    // A transaction in B that references A's patient creates nothing visible in A.
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [{
        "request": {"method": "POST", "url": "Observation"},
        "resource": {"resourceType": "Observation", "status": "final", "code": {"text": "x"},
                     "subject": {"reference": format!("Patient/{theirs}")}}
    }]});
    assert_eq!(b.post("", &bundle).await.status, 200);
    let a_view = a
        .get(&format!("Observation?subject=Patient/{theirs}"))
        .await;
    assert_eq!(entry_count(&a_view), 1, "A sees only its own observation");
    attempts += 1;

    // A paging cursor from A's search is refused in B exactly like a made-up cursor.
    let page = a.get("Patient?family=isolde&_count=1").await;
    let next =
        next_link(&page.body).unwrap_or_else(|| panic!("A's search should page: {}", page.body));
    let cursor = next.split("_cursor=").nth(1).unwrap_or_default().to_owned();
    assert_eq!(
        entry_count(&a.get(&next).await),
        1,
        "the cursor works in its own tenant"
    );
    let their = b
        .get(&format!("Patient?family=isolde&_count=1&_cursor={cursor}"))
        .await;
    let forged = b
        .get("Patient?family=isolde&_count=1&_cursor=eyJxIjoiIn0.AAAA")
        .await;
    same_answer("cursor", &their, &forged);
    assert_eq!(their.status, 400);
    attempts += 1;

    // A's records are untouched by all of this.
    let read = a.get(&format!("Patient/{theirs}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["meta"]["versionId"], "1");
    eprintln!(
        "{engine:?}: {attempts} cross-tenant interactions, every one indistinguishable from a missing resource"
    );
}

fn patient_with_id(id: &str) -> Value {
    let mut body = patient("Intruder", "Ivy", "9434765919", "1999-09-09");
    body["id"] = json!(id);
    body
}

fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .map(str::to_owned)
}
