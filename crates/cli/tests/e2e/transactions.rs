//! Transaction and batch bundles through the running server: urn:uuid references rewritten,
//! all or nothing (the failing entry named), batches entry by entry, conditional create,
//! the base URL with and without a trailing slash, Prefer and content types.

use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Reply, Server, engines, patient};

#[tokio::test]
async fn transactions_are_all_or_nothing_and_batches_are_not() {
    for engine in engines() {
        bundle_cases(engine).await;
    }
}

fn entry_count(reply: &Reply) -> usize {
    reply.body["entry"].as_array().map_or(0, Vec::len)
}

async fn count(fhir: &Fhir<'_>, query: &str) -> usize {
    let reply = fhir.get(query).await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    entry_count(&reply)
}

fn transaction(entries: Vec<Value>) -> Value {
    json!({"resourceType": "Bundle", "type": "transaction", "entry": entries})
}

fn post_entry(full_url: Option<&str>, resource: Value) -> Value {
    let rt = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let mut entry = json!({"request": {"method": "POST", "url": rt}, "resource": resource});
    if let Some(url) = full_url {
        entry["fullUrl"] = json!(url);
    }
    entry
}

fn observation(subject: &str, encounter: Option<&str>) -> Value {
    let mut body = json!({
        "resourceType": "Observation", "status": "final",
        "code": {"coding": [{"system": "http://loinc.org", "code": "8867-4"}]},
        "subject": {"reference": subject},
        "effectiveDateTime": "2025-03-01T10:00:00Z",
        "valueQuantity": {"value": 72, "unit": "/min"}
    });
    if let Some(encounter) = encounter {
        body["encounter"] = json!({"reference": encounter});
    }
    body
}

fn assert_names_entry(case: &str, reply: &Reply, entry: &str) {
    assert_eq!(
        reply.body["resourceType"], "OperationOutcome",
        "{case}: {}",
        reply.body
    );
    assert!(
        reply.body.to_string().contains(entry),
        "{case}: the outcome should name {entry}: {}",
        reply.body
    );
}

async fn bundle_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (_tenant, client) = server.tenant_with_client("Bundle Trust").await;
    let fhir = Fhir::new(&server, &client);

    // ---- urn:uuid references are rewritten to the new ids ----
    let patient_urn = "urn:uuid:2f1c0a4e-9c1b-4c55-8a9e-1d2e3f405162";
    let encounter_urn = "urn:uuid:7a8b9c0d-1e2f-4a3b-8c4d-5e6f70819203";
    let bundle = transaction(vec![
        // The Observation comes first: references to later entries are rewritten too.
        post_entry(None, observation(patient_urn, Some(encounter_urn))),
        post_entry(
            Some(patient_urn),
            patient("Transacto", "Tia", "9434765919", "1960-01-01"),
        ),
        post_entry(
            Some(encounter_urn),
            json!({"resourceType": "Encounter", "status": "finished",
                   "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
                   "subject": {"reference": patient_urn}}),
        ),
    ]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["type"], "transaction-response");
    let entries = reply.body["entry"].as_array().cloned().unwrap_or_default();
    assert_eq!(entries.len(), 3);
    for entry in &entries {
        assert_eq!(entry["response"]["status"], "201 Created", "{entry}");
        assert_eq!(entry["response"]["etag"], "W/\"1\"", "{entry}");
    }
    let id_at = |i: usize| {
        entries[i]["resource"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned()
    };
    let (observation_id, patient_id, encounter_id) = (id_at(0), id_at(1), id_at(2));
    assert!(
        entries[1]["response"]["location"]
            .as_str()
            .is_some_and(|l| l.starts_with(&format!("Patient/{patient_id}/_history/1"))),
        "{}",
        entries[1]
    );
    let read = fhir.get(&format!("Observation/{observation_id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(
        read.body["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    assert_eq!(
        read.body["encounter"]["reference"],
        format!("Encounter/{encounter_id}")
    );
    let read = fhir.get(&format!("Encounter/{encounter_id}")).await;
    assert_eq!(
        read.body["subject"]["reference"],
        format!("Patient/{patient_id}")
    );
    assert!(
        !read.raw.windows(4).any(|w| w == b"urn:"),
        "no urn left: {}",
        read.body
    );
    // The rewritten references are searchable.
    assert_eq!(
        count(&fhir, &format!("Observation?patient={patient_id}")).await,
        1
    );
    assert_eq!(
        count(&fhir, &format!("Observation?encounter={encounter_id}")).await,
        1
    );

    // ---- all or nothing: an invalid third entry writes nothing ----
    let bundle = transaction(vec![
        post_entry(None, patient("Atomicus", "Ann", "9434765870", "1961-01-01")),
        post_entry(None, patient("Atomicus", "Ben", "1745438912", "1962-01-01")),
        post_entry(
            None,
            json!({"resourceType": "Patient", "name": [{"family": "Atomicus"}], "birthDate": "1961-13-45"}),
        ),
    ]);
    let reply = fhir.post("", &bundle).await;
    assert!(
        reply.status == 400 || reply.status == 422,
        "invalid entry: {} {}",
        reply.status,
        reply.body
    );
    assert_names_entry("invalid third entry", &reply, "Bundle.entry[2]");
    assert_eq!(
        count(&fhir, "Patient?family=atomicus").await,
        0,
        "nothing was written"
    );

    // An unparseable entry (no request) is named too.
    let bundle = transaction(vec![
        post_entry(None, patient("Atomicus", "Ann", "9434765870", "1961-01-01")),
        post_entry(None, patient("Atomicus", "Ben", "1745438912", "1962-01-01")),
        json!({"resource": patient("Atomicus", "Cy", "9434765919", "1963-01-01")}),
    ]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_names_entry("entry without request", &reply, "Bundle.entry[2]");
    assert_eq!(count(&fhir, "Patient?family=atomicus").await, 0);

    // An ifMatch conflict on the third entry: nothing written, the entry named, 412.
    let existing = fhir
        .create(&patient("Versioned", "Vi", "9434765919", "1970-01-01"))
        .await;
    let mut changed = patient("Versioned", "Vera", "9434765919", "1970-01-01");
    changed["id"] = json!(existing);
    let bundle = transaction(vec![
        post_entry(None, patient("Atomicus", "Ann", "9434765870", "1961-01-01")),
        json!({"request": {"method": "DELETE", "url": format!("Patient/{patient_id}")}}),
        json!({"request": {"method": "PUT", "url": format!("Patient/{existing}"), "ifMatch": "W/\"3\""},
               "resource": changed}),
    ]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 412, "{}", reply.body);
    assert_names_entry("ifMatch conflict", &reply, "Bundle.entry[2]");
    assert_eq!(count(&fhir, "Patient?family=atomicus").await, 0);
    assert_eq!(
        fhir.get(&format!("Patient/{patient_id}")).await.status,
        200,
        "delete rolled back"
    );
    let read = fhir.get(&format!("Patient/{existing}")).await;
    assert_eq!(read.body["meta"]["versionId"], "1");
    assert_eq!(read.body["name"][0]["given"][0], "Vi");

    // The same PUT with the right ifMatch succeeds.
    let bundle = transaction(vec![json!({
        "request": {"method": "PUT", "url": format!("Patient/{existing}"), "ifMatch": "W/\"1\""},
        "resource": changed
    })]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["entry"][0]["response"]["status"], "200 OK");
    assert_eq!(reply.body["entry"][0]["response"]["etag"], "W/\"2\"");

    // A GET that fails after the writes committed must not hide the writes behind an error.
    let missing = "0b3c9d5e-1111-4222-8333-944455556666";
    let bundle = transaction(vec![
        post_entry(None, patient("Readback", "Rae", "9434765870", "1964-01-01")),
        json!({"request": {"method": "GET", "url": format!("Patient/{missing}")}}),
    ]);
    let reply = fhir.post("", &bundle).await;
    let written = count(&fhir, "Patient?family=readback").await;
    if reply.status == 200 {
        assert_eq!(written, 1, "{}", reply.body);
        assert!(
            reply.body["entry"][1]["response"]["status"]
                .as_str()
                .is_some_and(|s| s.starts_with("404")),
            "{}",
            reply.body
        );
    } else {
        assert_eq!(
            written, 0,
            "a failed transaction wrote: {} {}",
            reply.status, reply.body
        );
    }
    // An invalid search in a transaction is refused before anything is written.
    let bundle = transaction(vec![
        post_entry(
            None,
            patient("Searchfirst", "Sam", "9434765870", "1964-01-01"),
        ),
        json!({"request": {"method": "GET", "url": "Patient?foo=bar"}}),
    ]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 400, "{}", reply.body);
    assert_names_entry("invalid search entry", &reply, "foo");
    assert_eq!(count(&fhir, "Patient?family=searchfirst").await, 0);

    // ---- batch: each entry on its own ----
    let batch = json!({"resourceType": "Bundle", "type": "batch", "entry": [
        post_entry(None, patient("Batchley", "Bea", "9434765870", "1971-01-01")),
        post_entry(None, json!({"resourceType": "Patient", "birthDate": "yesterday"})),
        json!({"request": {"method": "GET", "url": format!("Patient/{missing}")}}),
        json!({"request": {"method": "GET", "url": format!("Patient/{patient_id}")}}),
        post_entry(None, patient("Batchley", "Bo", "1745438912", "1972-01-01")),
    ]});
    let reply = fhir.post("", &batch).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(reply.body["type"], "batch-response");
    let statuses: Vec<String> = reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .map(|e| {
                    e["response"]["status"]
                        .as_str()
                        .unwrap_or_default()
                        .to_owned()
                })
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(statuses.len(), 5, "{}", reply.body);
    assert!(statuses[0].starts_with("201"), "{statuses:?}");
    assert!(
        statuses[1].starts_with("422") || statuses[1].starts_with("400"),
        "{statuses:?}"
    );
    assert_eq!(
        reply.body["entry"][1]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert!(statuses[2].starts_with("404"), "{statuses:?}");
    assert_eq!(
        reply.body["entry"][2]["response"]["outcome"]["resourceType"],
        "OperationOutcome"
    );
    assert!(statuses[3].starts_with("200"), "{statuses:?}");
    assert_eq!(
        reply.body["entry"][3]["resource"]["id"],
        patient_id.as_str()
    );
    assert!(statuses[4].starts_with("201"), "{statuses:?}");
    assert_eq!(count(&fhir, "Patient?family=batchley").await, 2);

    // ---- conditional create ----
    // Criteria that match more than one resource are refused (412), and nothing is created.
    for given in ["Dee", "Dot"] {
        let mut twin = patient("Duplicate", given, "9434765919", "1980-01-01");
        twin["identifier"] = json!([{"system": "https://example.org/mrn", "value": "MRN-DUP"}]);
        fhir.create(&twin).await;
    }
    let third = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&patient("Duplicate", "Dan", "9434765919", "1980-01-01")),
            &[(
                "if-none-exist",
                "identifier=https://example.org/mrn|MRN-DUP",
            )],
        )
        .await;
    assert_eq!(third.status, 412, "{}", third.body);
    assert_eq!(count(&fhir, "Patient?family=duplicate").await, 2);
    let identifier = "https://example.org/mrn|MRN-0001";
    let criteria = format!("identifier={identifier}");
    let mut body = patient("Conditional", "Cora", "9434765919", "1980-01-01");
    body["identifier"] = json!([{"system": "https://example.org/mrn", "value": "MRN-0001"}]);
    let first = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&body),
            &[("if-none-exist", &criteria)],
        )
        .await;
    assert_eq!(first.status, 201, "{}", first.body);
    let second = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&body),
            &[("if-none-exist", &criteria)],
        )
        .await;
    assert_eq!(second.status, 200, "{}", second.body);
    assert_eq!(second.body["id"], first.body["id"]);
    assert_eq!(count(&fhir, "Patient?family=conditional").await, 1);

    // request.ifNoneExist in a transaction: the existing match is reused, and references to
    // its fullUrl point at it.
    let urn = "urn:uuid:0c9b8a7f-6e5d-4c3b-9a19-283746556473";
    let mut entry = post_entry(Some(urn), body.clone());
    entry["request"]["ifNoneExist"] = json!(criteria);
    let bundle = transaction(vec![entry, post_entry(None, observation(urn, None))]);
    let reply = fhir.post("", &bundle).await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    assert_eq!(
        reply.body["entry"][0]["response"]["status"], "200 OK",
        "{}",
        reply.body
    );
    assert_eq!(reply.body["entry"][0]["resource"]["id"], first.body["id"]);
    assert_eq!(
        reply.body["entry"][1]["resource"]["subject"]["reference"],
        format!("Patient/{}", first.body["id"].as_str().unwrap_or_default())
    );
    assert_eq!(count(&fhir, "Patient?family=conditional").await, 1);
    // With no match, ifNoneExist creates.
    let mut fresh = body.clone();
    fresh["identifier"] = json!([{"system": "https://example.org/mrn", "value": "MRN-0002"}]);
    let mut entry = post_entry(None, fresh);
    entry["request"]["ifNoneExist"] = json!("identifier=https://example.org/mrn|MRN-0002");
    let reply = fhir.post("", &transaction(vec![entry])).await;
    assert_eq!(
        reply.body["entry"][0]["response"]["status"], "201 Created",
        "{}",
        reply.body
    );
    assert_eq!(count(&fhir, "Patient?family=conditional").await, 2);

    // ---- the base URL with and without a trailing slash ----
    for url in [server.fhir(""), format!("{}/fhir", server.base)] {
        let bundle = transaction(vec![post_entry(
            None,
            patient("Slashley", "Sol", "9434765919", "1990-01-01"),
        )]);
        let reply = fhir.post(&url, &bundle).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        assert_eq!(reply.body["type"], "transaction-response", "{url}");
    }
    assert!(server.fhir("").ends_with("/fhir/"));
    assert_eq!(count(&fhir, "Patient?family=slashley").await, 2);

    // ---- Prefer: return=minimal | representation ----
    let minimal = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&patient("Preferred", "Pia", "9434765919", "1991-01-01")),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, 201);
    assert!(minimal.raw.is_empty(), "minimal create has no body");
    let location = minimal.headers["location"]
        .to_str()
        .unwrap_or_default()
        .to_owned();
    let id = location
        .split("/Patient/")
        .nth(1)
        .and_then(|rest| rest.split('/').next())
        .unwrap_or_default()
        .to_owned();
    let full = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&patient("Preferred", "Pat", "9434765919", "1991-01-01")),
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(full.status, 201);
    assert_eq!(full.body["name"][0]["family"], "Preferred");
    let mut update = patient("Preferred", "Pia", "9434765919", "1991-01-02");
    update["id"] = json!(id);
    let minimal = fhir
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{id}"),
            Some(&update),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, 200);
    assert!(minimal.raw.is_empty(), "minimal update has no body");
    assert_eq!(minimal.headers["etag"], "W/\"2\"");
    let full = fhir
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{id}"),
            Some(&update),
            &[("prefer", "return=representation")],
        )
        .await;
    assert_eq!(full.status, 200);
    assert_eq!(full.body["meta"]["versionId"], "3");
    // In a transaction, minimal leaves the resources out of the response.
    let bundle = transaction(vec![post_entry(
        None,
        patient("Preferred", "Poe", "9434765919", "1991-01-01"),
    )]);
    let reply = fhir
        .send_with(
            reqwest::Method::POST,
            "",
            Some(&bundle),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(reply.status, 200);
    assert!(
        reply.body["entry"][0].get("resource").is_none(),
        "{}",
        reply.body
    );
    assert!(reply.body["entry"][0]["response"]["location"].is_string());

    // ---- application/json is accepted, in and out ----
    let response = server
        .http
        .post(server.fhir("Patient"))
        .bearer_auth(&client.token)
        .header("content-type", "application/json")
        .header("accept", "application/json")
        .body(patient("Jsonson", "Jay", "9434765919", "1992-01-01").to_string())
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 201);
    let created: Value = response.json().await.unwrap_or(Value::Null);
    let response = server
        .http
        .get(server.fhir(&format!(
            "Patient/{}",
            created["id"].as_str().unwrap_or_default()
        )))
        .bearer_auth(&client.token)
        .header("accept", "application/json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 200);
    let content_type = response
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or_default()
        .to_owned();
    assert!(content_type.contains("json"), "{content_type}");
    let read: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(read["name"][0]["family"], "Jsonson");
    // Not JSON at all is refused with an OperationOutcome.
    let response = server
        .http
        .post(server.fhir("Patient"))
        .bearer_auth(&client.token)
        .header("content-type", "application/xml")
        .body("<Patient/>")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 415);

    // ---- only transaction and batch bundles go to the base ----
    let before = count(&fhir, "Patient?family=collectable").await;
    for kind in ["collection", "document", "searchset"] {
        let bundle = json!({"resourceType": "Bundle", "type": kind, "entry": [
            {"fullUrl": "urn:uuid:11111111-2222-4333-8444-555555555555",
             "resource": patient("Collectable", "Col", "9434765919", "1993-01-01")}
        ]});
        let reply = fhir.post("", &bundle).await;
        assert_eq!(reply.status, 400, "{kind}: {}", reply.body);
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{kind}");
        assert!(
            reply.body.to_string().contains("Bundle.type"),
            "{}",
            reply.body
        );
    }
    assert_eq!(count(&fhir, "Patient?family=collectable").await, before);
    let reply = fhir
        .post(
            "",
            &patient("Notabundle", "Nat", "9434765919", "1993-01-01"),
        )
        .await;
    assert_eq!(reply.status, 400, "{}", reply.body);
}
