//! SMART Backend Services: the token endpoint and bearer-token checks, attacked.

use serde_json::{Value, json};

use crate::common::{ClientKey, Engine, Fhir, Server, now_s, patient};

async fn token_error(server: &Server, assertion: &str, scope: &str) -> (u16, Value) {
    let response = server.request_token(assertion, scope).await;
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn assertions_are_checked_and_used_once() {
    let server = Server::start(Engine::Sqlite).await;
    let tenant = server.create_tenant("Token Trust");
    let client = server.register_client(&tenant, "system/Patient.rs");
    let aud = server.token_url();

    // A good assertion works once; its replay is refused.
    let assertion = client.key.assertion(&client.id, &aud, now_s() + 60);
    let response = server.request_token(&assertion, "system/Patient.rs").await;
    assert_eq!(response.status(), 200);
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["token_type"], "bearer");
    assert!(body["expires_in"].as_i64().unwrap_or(999) <= 300);
    assert!(body.get("refresh_token").is_none());
    let (status, body) = token_error(&server, &assertion, "system/Patient.rs").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (401, Some("invalid_client")),
        "replay"
    );

    let cases: Vec<(&str, String)> = vec![
        ("lifetime over 5 minutes", client.key.assertion(&client.id, &aud, now_s() + 600)),
        ("expired", client.key.assertion(&client.id, &aud, now_s() - 10)),
        ("wrong audience", client.key.assertion(&client.id, "https://elsewhere.example/token", now_s() + 60)),
        ("signed by another key", ClientKey::generate().assertion(&client.id, &aud, now_s() + 60)),
        (
            "iss differs from sub",
            client.key.sign_claims(&json!({"iss": client.id, "sub": "someone", "aud": aud, "exp": now_s() + 60, "jti": "x1"})),
        ),
        (
            "no jti",
            client.key.sign_claims(&json!({"iss": client.id, "sub": client.id, "aud": aud, "exp": now_s() + 60})),
        ),
        ("alg none", unsigned_assertion(&client.id, &aud)),
        ("garbage", "not.a.jwt".to_owned()),
    ];
    for (case, assertion) in cases {
        let (status, body) = token_error(&server, &assertion, "system/Patient.rs").await;
        assert_eq!(status, 401, "{case}: {body}");
        assert_eq!(body["error"], "invalid_client", "{case}");
    }

    // Only client_credentials with a JWT assertion exists: no passwords, no static secrets.
    let response = server
        .http
        .post(server.token_url())
        .form(&[
            ("grant_type", "password"),
            ("username", "a"),
            ("password", "b"),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 400);
    let response = server
        .http
        .post(server.token_url())
        .form(&[
            ("grant_type", "client_credentials"),
            ("client_id", client.id.as_str()),
            ("client_secret", "guess"),
        ])
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(response.status(), 400);
}

fn unsigned_assertion(client_id: &str, aud: &str) -> String {
    use base64::Engine as _;
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let header = engine.encode(br#"{"alg":"none","typ":"JWT"}"#);
    let claims = engine.encode(
        json!({"iss": client_id, "sub": client_id, "aud": aud, "exp": now_s() + 60, "jti": "none-1"})
            .to_string(),
    );
    format!("{header}.{claims}.")
}

#[tokio::test]
async fn scopes_are_intersected_and_enforced_per_interaction() {
    let server = Server::start(Engine::Sqlite).await;
    let tenant = server.create_tenant("Scope Trust");
    let mut writer = server.register_client(&tenant, "system/*.cruds");
    server.token(&mut writer, "system/*.cruds").await;
    let id = Fhir::new(&server, &writer)
        .create(&patient("Scoped", "Sam", "9434765919", "1980-01-01"))
        .await;

    // Registered for Patient read+search only; asks for everything; gets the intersection.
    let mut reader = server.register_client(&tenant, "system/Patient.rs");
    let assertion = reader
        .key
        .assertion(&reader.id, &server.token_url(), now_s() + 60);
    let response = server.request_token(&assertion, "system/*.cruds").await;
    let body: Value = response.json().await.unwrap_or(Value::Null);
    assert_eq!(body["scope"], "system/Patient.rs", "{body}");
    reader.token = body["access_token"].as_str().unwrap_or_default().to_owned();
    let fhir = Fhir::new(&server, &reader);
    assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
    assert_eq!(fhir.get("Patient?family=scoped").await.status, 200);
    let refused = fhir
        .post("Patient", &patient("New", "N", "9434765870", "1990-01-01"))
        .await;
    assert_eq!(refused.status, 403);
    assert_eq!(refused.body["resourceType"], "OperationOutcome");
    assert_eq!(fhir.delete(&format!("Patient/{id}")).await.status, 403);
    assert_eq!(fhir.get("Observation?subject=Patient/x").await.status, 403);

    // A wildcard registration cut down by a narrower request.
    let mut narrow = server.register_client(&tenant, "system/*.rs");
    let assertion = narrow
        .key
        .assertion(&narrow.id, &server.token_url(), now_s() + 60);
    let body: Value = server
        .request_token(&assertion, "system/Observation.r")
        .await
        .json()
        .await
        .unwrap_or(Value::Null);
    assert_eq!(body["scope"], "system/Observation.r", "{body}");
    narrow.token = body["access_token"].as_str().unwrap_or_default().to_owned();
    assert_eq!(
        Fhir::new(&server, &narrow)
            .get(&format!("Patient/{id}"))
            .await
            .status,
        403
    );

    // Asking only for what is not registered gets nothing.
    let other = server.register_client(&tenant, "system/Patient.r");
    let assertion = other
        .key
        .assertion(&other.id, &server.token_url(), now_s() + 60);
    let (status, body) = token_error(&server, &assertion, "system/Observation.c").await;
    assert_eq!(
        (status, body["error"].as_str()),
        (400, Some("invalid_scope"))
    );
}

#[tokio::test]
async fn missing_bad_and_expired_tokens_get_401() {
    let server = Server::init(Engine::Sqlite);
    let mut server = server;
    server.edit_config(|text| {
        text.replace("token_lifetime_seconds = 300", "token_lifetime_seconds = 1")
    });
    server.spawn();
    let (_tenant, client) = server.tenant_with_client("Expiry").await;
    let fhir = Fhir::new(&server, &client);
    assert_eq!(fhir.get("Patient").await.status, 200);

    let no_token = server
        .http
        .get(server.fhir("Patient"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("{e}"));
    assert_eq!(no_token.status(), 401);
    assert!(no_token.headers().contains_key("www-authenticate"));
    let body: Value = no_token.json().await.unwrap_or(Value::Null);
    assert_eq!(body["resourceType"], "OperationOutcome");

    let forged = Fhir {
        server: &server,
        token: "cv1_forgedforgedforgedforgedforgedforgedforg".to_owned(),
    };
    assert_eq!(forged.get("Patient").await.status, 401);

    tokio::time::sleep(std::time::Duration::from_millis(1500)).await;
    let expired = fhir.get("Patient").await;
    assert_eq!(expired.status, 401, "an expired token must not work");
}

#[tokio::test]
async fn quarantine_and_disable_stop_tokens_at_once() {
    let server = Server::start(Engine::Sqlite).await;
    let (tenant_a, client_a) = server.tenant_with_client("Quarantined Trust").await;
    let (_tenant_b, client_b) = server.tenant_with_client("Neighbour Trust").await;
    let fhir_a = Fhir::new(&server, &client_a);
    let fhir_b = Fhir::new(&server, &client_b);
    assert_eq!(fhir_a.get("Patient").await.status, 200);

    server.cli(&["tenant", "quarantine", "--tenant", &tenant_a]);
    assert_eq!(
        fhir_a.get("Patient").await.status,
        401,
        "quarantined tenant's token still works"
    );
    assert_eq!(
        fhir_b.get("Patient").await.status,
        200,
        "the other tenant must keep working"
    );
    let assertion = client_a
        .key
        .assertion(&client_a.id, &server.token_url(), now_s() + 60);
    let (status, _) = token_error(&server, &assertion, "system/*.cruds").await;
    assert_eq!(
        status, 401,
        "a quarantined tenant's client must not get tokens"
    );
    let listing = server.cli(&["tenant", "list"]);
    assert!(listing.contains("quarantined"), "{listing}");

    server.cli(&["tenant", "release", "--tenant", &tenant_a]);
    assert_eq!(
        fhir_a.get("Patient").await.status,
        401,
        "release must not revive old tokens"
    );
    let mut client_a = client_a;
    server.token(&mut client_a, "system/*.cruds").await;
    let fhir_a = Fhir::new(&server, &client_a);
    assert_eq!(fhir_a.get("Patient").await.status, 200);

    server.cli(&["client", "disable", "--client", &client_b.id]);
    assert_eq!(
        fhir_b.get("Patient").await.status,
        401,
        "a disabled client's token still works"
    );
    assert_eq!(fhir_a.get("Patient").await.status, 200);
    server.cli(&["client", "enable", "--client", &client_b.id]);
    assert_eq!(
        fhir_b.get("Patient").await.status,
        401,
        "enabling must not revive old tokens"
    );
}
