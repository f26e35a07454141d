//! The test harness: a real `carevault` process on a fresh data directory (SQLite file or a
//! fresh PostgreSQL database), real HTTP on loopback, and machine clients with real key pairs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use serde_json::{Value, json};

pub const BIN: &str = env!("CARGO_BIN_EXE_carevault");
pub const PG_ENV: &str = "CAREVAULT_TEST_POSTGRES_URL";

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Engine {
    Sqlite,
    Postgres,
}

/// The engines to run a test on: SQLite always; PostgreSQL when CAREVAULT_TEST_POSTGRES_URL
/// is set (CI sets it), with one clear line when it is not.
pub fn engines() -> Vec<Engine> {
    if std::env::var(PG_ENV).is_ok_and(|url| !url.is_empty()) {
        vec![Engine::Sqlite, Engine::Postgres]
    } else {
        eprintln!("skipping PostgreSQL: {PG_ENV} is not set");
        vec![Engine::Sqlite]
    }
}

/// Wall-clock seconds: the tests talk to a real server that reads the real clock.
#[allow(clippy::disallowed_methods)]
pub fn now_s() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs() as i64)
        .unwrap_or(0)
}

/// A fresh PostgreSQL database, dropped when the value is dropped.
pub struct PgDatabase {
    pub url: String,
    admin_url: String,
    name: String,
}

impl PgDatabase {
    pub fn create() -> PgDatabase {
        let admin_url = std::env::var(PG_ENV).unwrap_or_default();
        let name = format!("cv_e2e_{}", uuid::Uuid::new_v4().simple());
        psql(&admin_url, &format!("CREATE DATABASE {name}"));
        let (base, _) = admin_url.rsplit_once('/').unwrap_or((&admin_url, ""));
        PgDatabase {
            url: format!("{base}/{name}"),
            admin_url,
            name,
        }
    }

    pub fn dump(&self) -> Vec<u8> {
        let output = Command::new("pg_dump")
            .arg("--data-only")
            .arg(&self.url)
            .output()
            .unwrap_or_else(|error| panic!("pg_dump failed to start: {error}"));
        assert!(
            output.status.success(),
            "pg_dump failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        output.stdout
    }
}

impl Drop for PgDatabase {
    fn drop(&mut self) {
        let _ = Command::new("psql")
            .arg(&self.admin_url)
            .arg("-c")
            .arg(format!(
                "DROP DATABASE IF EXISTS {} WITH (FORCE)",
                self.name
            ))
            .output();
    }
}

pub fn psql(url: &str, statement: &str) -> String {
    let output = Command::new("psql")
        .arg(url)
        .arg("-v")
        .arg("ON_ERROR_STOP=1")
        .arg("-At")
        .arg("-c")
        .arg(statement)
        .output()
        .unwrap_or_else(|error| panic!("psql failed to start: {error}"));
    assert!(
        output.status.success(),
        "psql {statement:?} failed: {}",
        String::from_utf8_lossy(&output.stderr)
    );
    String::from_utf8_lossy(&output.stdout).trim().to_owned()
}

/// A data directory and, once started, a running server.
pub struct Server {
    pub engine: Engine,
    pub dir: tempfile::TempDir,
    pub pg: Option<PgDatabase>,
    child: Option<Child>,
    pub base: String,
    pub http: reqwest::Client,
}

impl Server {
    /// Initialises a data directory for the engine and starts the server on a free port.
    pub async fn start(engine: Engine) -> Server {
        let mut server = Server::init(engine);
        server.spawn();
        server
    }

    /// Initialises a data directory without starting the server.
    pub fn init(engine: Engine) -> Server {
        let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("tempdir: {e}"));
        let pg = (engine == Engine::Postgres).then(PgDatabase::create);
        let server = Server {
            engine,
            dir,
            pg,
            child: None,
            base: String::new(),
            http: reqwest::Client::new(),
        };
        let mut init = vec!["init".to_owned()];
        if let Some(pg) = &server.pg {
            init.push("--database-url".to_owned());
            init.push(pg.url.clone());
        }
        server.cli(&init.iter().map(String::as_str).collect::<Vec<_>>());
        server
    }

    pub fn config_path(&self) -> PathBuf {
        self.data_dir().join("carevault.toml")
    }

    /// Edits the configuration file text (before `spawn`).
    pub fn edit_config(&self, edit: impl FnOnce(String) -> String) {
        let text = std::fs::read_to_string(self.config_path()).unwrap_or_default();
        std::fs::write(self.config_path(), edit(text)).unwrap_or_else(|e| panic!("{e}"));
    }

    /// Runs `serve` expecting it to refuse to start; returns its stderr.
    pub fn serve_refusal(&self, extra: &[&str]) -> String {
        let mut args = vec!["serve"];
        args.extend_from_slice(extra);
        let output = self.cli_output(&args);
        assert!(
            !output.status.success(),
            "serve should have refused to start"
        );
        String::from_utf8_lossy(&output.stderr).into_owned()
    }

    pub fn data_dir(&self) -> PathBuf {
        self.dir.path().join("data")
    }

    pub fn log_path(&self) -> PathBuf {
        self.dir.path().join("server.log")
    }

    pub fn spawn(&mut self) {
        self.spawn_on("127.0.0.1:0");
    }

    pub fn spawn_on(&mut self, listen: &str) {
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(self.log_path())
            .unwrap_or_else(|e| panic!("log file: {e}"));
        let mut child = Command::new(BIN)
            .arg("--data-dir")
            .arg(self.data_dir())
            .arg("serve")
            .arg("--listen")
            .arg(listen)
            .env_remove("CAREVAULT_DATABASE_URL")
            .env("RUST_LOG", "debug")
            .stdout(Stdio::piped())
            .stderr(Stdio::from(log))
            .spawn()
            .unwrap_or_else(|e| panic!("starting carevault: {e}"));
        let stdout = child.stdout.take().unwrap_or_else(|| panic!("no stdout"));
        let mut lines = BufReader::new(stdout).lines();
        let mut base = None;
        for line in lines.by_ref() {
            let line = line.unwrap_or_default();
            if let Some(url) = line.strip_prefix("carevault is listening on ") {
                base = Some(url.trim().to_owned());
                break;
            }
        }
        // Keep draining stdout so the server never blocks on a full pipe.
        std::thread::spawn(move || for _ in lines {});
        self.base = base.unwrap_or_else(|| {
            panic!(
                "server did not start; log:\n{}",
                std::fs::read_to_string(self.log_path()).unwrap_or_default()
            )
        });
        self.child = Some(child);
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// Runs a CLI command against this data directory; panics with its stderr on failure.
    pub fn cli(&self, args: &[&str]) -> String {
        let output = self.cli_output(args);
        assert!(
            output.status.success(),
            "carevault {args:?} failed: {}",
            String::from_utf8_lossy(&output.stderr)
        );
        String::from_utf8_lossy(&output.stdout).into_owned()
    }

    pub fn cli_output(&self, args: &[&str]) -> std::process::Output {
        Command::new(BIN)
            .arg("--data-dir")
            .arg(self.data_dir())
            .args(args)
            .env_remove("CAREVAULT_DATABASE_URL")
            .output()
            .unwrap_or_else(|e| panic!("running carevault: {e}"))
    }

    pub fn create_tenant(&self, name: &str) -> String {
        let out = self.cli(&["tenant", "create", "--name", name, "--json"]);
        let value: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        value["id"].as_str().unwrap_or_default().to_owned()
    }

    /// Registers a client with a fresh ES384 key pair and returns it.
    pub fn register_client(&self, tenant: &str, scopes: &str) -> Client {
        let key = ClientKey::generate();
        let jwks_path = self
            .dir
            .path()
            .join(format!("jwks-{}.json", uuid::Uuid::new_v4()));
        std::fs::write(&jwks_path, key.jwks().to_string()).unwrap_or_else(|e| panic!("{e}"));
        let out = self.cli(&[
            "client",
            "register",
            "--tenant",
            tenant,
            "--name",
            "test client",
            "--jwks",
            jwks_path.to_str().unwrap_or_default(),
            "--scope",
            scopes,
            "--json",
        ]);
        let value: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        Client {
            id: value["client_id"].as_str().unwrap_or_default().to_owned(),
            key,
            token: String::new(),
        }
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base)
    }

    pub fn fhir(&self, path: &str) -> String {
        format!("{}/fhir/{}", self.base, path.trim_start_matches('/'))
    }

    /// Exchanges a fresh assertion for an access token.
    pub async fn token(&self, client: &mut Client, scope: &str) {
        let assertion = client
            .key
            .assertion(&client.id, &self.token_url(), now_s() + 60);
        let response = self.request_token(&assertion, scope).await;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        assert_eq!(status, 200, "token request failed: {body}");
        client.token = body["access_token"].as_str().unwrap_or_default().to_owned();
    }

    pub async fn request_token(&self, assertion: &str, scope: &str) -> reqwest::Response {
        self.http
            .post(self.token_url())
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion),
                ("scope", scope),
            ])
            .send()
            .await
            .unwrap_or_else(|e| panic!("token request: {e}"))
    }

    /// A tenant with one client holding a token for every interaction on every type.
    pub async fn tenant_with_client(&self, name: &str) -> (String, Client) {
        let tenant = self.create_tenant(name);
        let mut client = self.register_client(&tenant, "system/*.cruds");
        self.token(&mut client, "system/*.cruds").await;
        (tenant, client)
    }

    pub fn log(&self) -> Vec<u8> {
        std::fs::read(self.log_path()).unwrap_or_default()
    }

    /// Path of the SQLite database file.
    pub fn sqlite_path(&self) -> PathBuf {
        self.data_dir().join("db").join("carevault.sqlite")
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

pub struct ClientKey {
    pair: EcdsaKeyPair,
    pub kid: String,
}

impl ClientKey {
    pub fn generate() -> ClientKey {
        let pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING)
            .unwrap_or_else(|e| panic!("keygen: {e}"));
        ClientKey {
            pair,
            kid: uuid::Uuid::new_v4().to_string(),
        }
    }

    pub fn pkcs8_der(&self) -> Vec<u8> {
        self.pair
            .to_pkcs8v1()
            .map(|doc| doc.as_ref().to_vec())
            .unwrap_or_else(|e| panic!("pkcs8: {e}"))
    }

    pub fn jwks(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || X (48 bytes) || Y (48 bytes).
        let (x, y) = point[1..].split_at(48);
        json!({"keys": [{
            "kty": "EC", "crv": "P-384", "alg": "ES384", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    pub fn sign_claims(&self, claims: &Value) -> String {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8_der());
        jsonwebtoken::encode(&header, claims, &key).unwrap_or_else(|e| panic!("sign: {e}"))
    }

    pub fn assertion(&self, client_id: &str, aud: &str, exp: i64) -> String {
        self.sign_claims(&json!({
            "iss": client_id, "sub": client_id, "aud": aud, "exp": exp,
            "jti": uuid::Uuid::new_v4().to_string(),
        }))
    }
}

pub struct Client {
    pub id: String,
    pub key: ClientKey,
    pub token: String,
}

/// A tiny FHIR HTTP client bound to one server and token.
pub struct Fhir<'a> {
    pub server: &'a Server,
    pub token: String,
}

pub struct Reply {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: Value,
    pub raw: Vec<u8>,
}

impl<'a> Fhir<'a> {
    pub fn new(server: &'a Server, client: &Client) -> Fhir<'a> {
        Fhir {
            server,
            token: client.token.clone(),
        }
    }

    pub async fn send(&self, method: reqwest::Method, path: &str, body: Option<&Value>) -> Reply {
        self.send_with(method, path, body, &[]).await
    }

    pub async fn send_with(
        &self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        headers: &[(&str, &str)],
    ) -> Reply {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            self.server.fhir(path)
        };
        let mut request = self
            .server
            .http
            .request(method, url)
            .bearer_auth(&self.token);
        if let Some(body) = body {
            request = request
                .header("content-type", "application/fhir+json")
                .body(serde_json::to_vec(body).unwrap_or_default());
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }

    pub async fn get(&self, path: &str) -> Reply {
        self.send(reqwest::Method::GET, path, None).await
    }

    pub async fn post(&self, path: &str, body: &Value) -> Reply {
        self.send(reqwest::Method::POST, path, Some(body)).await
    }

    pub async fn put(&self, path: &str, body: &Value) -> Reply {
        self.send(reqwest::Method::PUT, path, Some(body)).await
    }

    pub async fn delete(&self, path: &str) -> Reply {
        self.send(reqwest::Method::DELETE, path, None).await
    }

    /// Creates a resource and returns its id.
    pub async fn create(&self, resource: &Value) -> String {
        let rt = resource["resourceType"].as_str().unwrap_or_default();
        let reply = self.post(rt, resource).await;
        assert_eq!(reply.status, 201, "create {rt} failed: {}", reply.body);
        reply.body["id"].as_str().unwrap_or_default().to_owned()
    }
}

pub fn patient(family: &str, given: &str, nhs: &str, birth: &str) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
        "name": [{"family": family, "given": [given]}],
        "gender": "female",
        "birthDate": birth,
    })
}

pub fn file_bytes(path: &Path) -> Vec<u8> {
    std::fs::read(path).unwrap_or_default()
}

impl Fhir<'_> {
    /// Sends body bytes exactly as given (no re-serialisation, so decimal text and element
    /// order reach the server untouched) and keeps the raw reply.
    pub async fn send_raw(&self, method: reqwest::Method, path: &str, body: Vec<u8>) -> Reply {
        let response = self
            .server
            .http
            .request(method, self.server.fhir(path))
            .bearer_auth(&self.token)
            .header("content-type", "application/fhir+json")
            .body(body)
            .send()
            .await
            .unwrap_or_else(|e| panic!("request: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        let raw = response
            .bytes()
            .await
            .map(|b| b.to_vec())
            .unwrap_or_default();
        let body = serde_json::from_slice(&raw).unwrap_or(Value::Null);
        Reply {
            status,
            headers,
            body,
            raw,
        }
    }
}
