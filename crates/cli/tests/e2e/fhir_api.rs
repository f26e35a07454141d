//! The FHIR REST interactions through the running server.

use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Server, engines, patient};

#[tokio::test]
async fn create_read_update_delete_history_on_every_engine() {
    for engine in engines() {
        crud_cycle(engine).await;
    }
}

async fn crud_cycle(engine: Engine) {
    let server = Server::start(engine).await;
    let (_tenant, client) = server.tenant_with_client("Crud Trust").await;
    let fhir = Fhir::new(&server, &client);

    let created = fhir
        .post(
            "Patient",
            &patient("Okonkwo", "Adaeze", "1745438912", "1970-02-03"),
        )
        .await;
    assert_eq!(created.status, 201, "{}", created.body);
    let id = created.body["id"].as_str().unwrap_or_default().to_owned();
    assert_eq!(created.body["meta"]["versionId"], "1");
    let location = created.headers["location"].to_str().unwrap_or_default();
    assert!(
        location.ends_with(&format!("/fhir/Patient/{id}/_history/1")),
        "{location}"
    );
    assert_eq!(created.headers["etag"], "W/\"1\"");

    let read = fhir.get(&format!("Patient/{id}")).await;
    assert_eq!(read.status, 200);
    assert_eq!(read.body["name"][0]["family"], "Okonkwo");
    assert_eq!(
        read.headers["content-type"],
        "application/fhir+json; charset=utf-8"
    );

    // Update with a stale If-Match is refused; with the right one it succeeds.
    let mut changed = read.body.clone();
    changed["gender"] = json!("male");
    let stale = fhir
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{id}"),
            Some(&changed),
            &[("if-match", "W/\"7\"")],
        )
        .await;
    assert_eq!(stale.status, 412, "{}", stale.body);
    let updated = fhir
        .send_with(
            reqwest::Method::PUT,
            &format!("Patient/{id}"),
            Some(&changed),
            &[("if-match", "W/\"1\"")],
        )
        .await;
    assert_eq!(updated.status, 200, "{}", updated.body);
    assert_eq!(updated.body["meta"]["versionId"], "2");

    let v1 = fhir.get(&format!("Patient/{id}/_history/1")).await;
    assert_eq!(v1.status, 200);
    assert_eq!(v1.body["gender"], "female");

    let history = fhir.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(history.status, 200);
    assert_eq!(history.body["type"], "history");
    assert_eq!(history.body["entry"].as_array().map(Vec::len), Some(2));

    let deleted = fhir.delete(&format!("Patient/{id}")).await;
    assert_eq!(deleted.status, 204);
    let gone = fhir.get(&format!("Patient/{id}")).await;
    assert_eq!(gone.status, 410);
    assert_eq!(gone.body["resourceType"], "OperationOutcome");
    let history = fhir.get(&format!("Patient/{id}/_history")).await;
    assert_eq!(history.body["entry"][0]["request"]["method"], "DELETE");

    let minimal = fhir
        .send_with(
            reqwest::Method::POST,
            "Patient",
            Some(&patient("Minimal", "Min", "9434765919", "1990-01-01")),
            &[("prefer", "return=minimal")],
        )
        .await;
    assert_eq!(minimal.status, 201);
    assert!(minimal.raw.is_empty());
    assert!(minimal.headers.contains_key("location"));
}

#[tokio::test]
async fn decimals_order_and_primitive_extensions_survive() {
    let server = Server::start(Engine::Sqlite).await;
    let (_tenant, client) = server.tenant_with_client("Precision").await;
    let fhir = Fhir::new(&server, &client);
    let patient_id = fhir
        .create(&patient("Price", "Ann", "9434765870", "1950-05-05"))
        .await;
    let body = format!(
        r#"{{"resourceType":"Observation","status":"final","code":{{"text":"weight"}},"subject":{{"reference":"Patient/{patient_id}"}},"valueQuantity":{{"value":72.50,"unit":"kg"}},"_status":{{"extension":[{{"url":"http://example.org/x","valueString":"y"}}]}}}}"#
    );
    let response = server
        .http
        .post(server.fhir("Observation"))
        .bearer_auth(&client.token)
        .header("content-type", "application/json")
        .body(body)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 201);
    let id = response
        .json::<Value>()
        .await
        .map(|v| v["id"].as_str().unwrap_or_default().to_owned())
        .unwrap_or_default();
    let raw = server
        .http
        .get(server.fhir(&format!("Observation/{id}")))
        .bearer_auth(&client.token)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"))
        .text()
        .await
        .unwrap_or_default();
    assert!(
        raw.contains("\"value\":72.50"),
        "decimal precision lost: {raw}"
    );
    let status_at = raw.find("\"status\"").unwrap_or(usize::MAX);
    let code_at = raw.find("\"code\"").unwrap_or(0);
    assert!(status_at < code_at, "element order changed: {raw}");
    assert!(
        raw.contains("\"_status\":{\"extension\""),
        "primitive extension lost: {raw}"
    );
}

#[tokio::test]
async fn bad_input_gets_an_operation_outcome_and_changes_nothing() {
    let server = Server::start(Engine::Sqlite).await;
    let (_tenant, client) = server.tenant_with_client("Bad Input").await;
    let fhir = Fhir::new(&server, &client);
    let cases: Vec<(Value, &str)> = vec![
        (
            patient("Bad", "Nhs", "1745438913", "1970-01-01"),
            "identifier",
        ),
        (
            json!({"resourceType": "Patient", "nmae": [{"family": "X"}]}),
            "nmae",
        ),
        (
            json!({"resourceType": "Patient", "birthDate": "1970-13-45"}),
            "birthDate",
        ),
        (
            json!({"resourceType": "Observation", "status": "final"}),
            "code",
        ),
        (
            json!({"resourceType": "Encounter", "status": "finished", "class": {"code": "AMB"}, "subject": {"reference": "not a reference"}}),
            "subject",
        ),
    ];
    for (resource, element) in cases {
        let rt = resource["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let reply = fhir.post(&rt, &resource).await;
        assert!(
            reply.status == 400 || reply.status == 422,
            "{element}: {} {}",
            reply.status,
            reply.body
        );
        assert_eq!(reply.body["resourceType"], "OperationOutcome");
        let text = reply.body.to_string();
        assert!(
            text.contains(element),
            "the outcome should name {element}: {text}"
        );
    }
    let not_json = server
        .http
        .post(server.fhir("Patient"))
        .bearer_auth(&client.token)
        .header("content-type", "application/fhir+json")
        .body("{not json")
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(not_json.status(), 400);
    let unknown_param = fhir.get("Patient?shoe-size=9").await;
    assert_eq!(unknown_param.status, 400);
    assert!(unknown_param.body.to_string().contains("shoe-size"));
    // Nothing was written by any of the refusals.
    let all = fhir.get("Patient").await;
    assert_eq!(
        all.body["entry"].as_array().map(Vec::len),
        Some(0),
        "{}",
        all.body
    );
}
