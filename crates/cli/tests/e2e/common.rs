//! The test harness: a real `carevault` process on a fresh data directory (SQLite file or a
//! fresh PostgreSQL database), real HTTP on loopback, and machine clients with real key pairs.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{SystemTime, UNIX_EPOCH};

use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carevault_store::audit_segment::decode;
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

/// Every stored audit record's canonical text, tenant by tenant in sequence order, read the
/// way an auditor with access to the database would: the rows of `audit_segments` opened with
/// the store's own decoder. A segment that does not open fails the test.
pub async fn audit_texts(server: &Server) -> Vec<String> {
    const BODIES: &str = "SELECT body FROM audit_segments ORDER BY tenant_id, first_seq";
    let bodies: Vec<Vec<u8>> = match &server.pg {
        None => {
            wait_for_audit_journal(server).await;
            let options = sqlx::sqlite::SqliteConnectOptions::new().filename(server.sqlite_path());
            let pool = sqlx::SqlitePool::connect_with(options)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let bodies = sqlx::query_scalar(BODIES).fetch_all(&pool).await;
            pool.close().await;
            bodies
        }
        // The test URL's user is a superuser: row-level security does not apply to it.
        Some(pg) => {
            let pool = sqlx::PgPool::connect(&pg.url)
                .await
                .unwrap_or_else(|e| panic!("{e}"));
            let bodies = sqlx::query_scalar(BODIES).fetch_all(&pool).await;
            pool.close().await;
            bodies
        }
    }
    .unwrap_or_else(|e| panic!("{BODIES}: {e}"));
    bodies
        .iter()
        .flat_map(|body| decode(body).unwrap_or_else(|e| panic!("{e}")))
        .map(|record| record.text)
        .collect()
}

/// Waits (at most 10 s) until the SQLite server has chained every record of its audit
/// journal into the trail: then no journal file holds a frame (store/src/sqlite/journal.rs).
/// Call it once the requests whose records are wanted have been answered.
pub async fn wait_for_audit_journal(server: &Server) {
    let mut directory = server.sqlite_path().into_os_string();
    directory.push(".audit-journal");
    let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
    loop {
        // A journal file holds frames until it is retired (renamed to a spare, or deleted);
        // the one appends go to next starts with zeros until its first frame.
        let waiting: Vec<String> = std::fs::read_dir(&directory)
            .map(|entries| {
                entries
                    .flatten()
                    .filter(|entry| entry.file_name().to_string_lossy().ends_with(".frames"))
                    .filter(|entry| {
                        let mut head = [0u8; 4];
                        std::fs::File::open(entry.path())
                            .and_then(|mut file| std::io::Read::read_exact(&mut file, &mut head))
                            .is_ok_and(|()| head != [0; 4])
                    })
                    .map(|entry| entry.file_name().to_string_lossy().into_owned())
                    .collect()
            })
            .unwrap_or_default();
        if waiting.is_empty() {
            return;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "the audit journal still held frames in {waiting:?} after 10 s"
        );
        tokio::time::sleep(std::time::Duration::from_millis(25)).await;
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

// ---- people over the web pages: a cookie-keeping client, TOTP, a software passkey ----

/// A browser stand-in: keeps cookies itself (the `__Host-` cookies are Secure, which a cookie
/// store would not send to http://localhost), follows no redirects.
pub struct WebClient {
    pub base: String,
    http: reqwest::Client,
    pub cookies: std::collections::BTreeMap<String, String>,
}

pub struct Page {
    pub status: u16,
    pub headers: reqwest::header::HeaderMap,
    pub body: String,
}

impl Page {
    pub fn location(&self) -> String {
        self.headers
            .get("location")
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned()
    }

    /// The value of the first hidden input with this name.
    pub fn hidden(&self, name: &str) -> String {
        attribute_after(&self.body, &format!("name=\"{name}\" value=\""))
    }
}

pub fn attribute_after(text: &str, marker: &str) -> String {
    text.split_once(marker)
        .and_then(|(_, rest)| rest.split_once('"'))
        .map(|(value, _)| value.to_owned())
        .unwrap_or_default()
}

impl WebClient {
    pub fn new(base: &str) -> WebClient {
        WebClient {
            base: base.to_owned(),
            http: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap_or_else(|e| panic!("{e}")),
            cookies: Default::default(),
        }
    }

    pub fn session(&self) -> String {
        self.cookies
            .get("__Host-carevault_session")
            .cloned()
            .unwrap_or_default()
    }

    fn cookie_header(&self) -> String {
        self.cookies
            .iter()
            .map(|(k, v)| format!("{k}={v}"))
            .collect::<Vec<_>>()
            .join("; ")
    }

    pub async fn send(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<(&str, Vec<u8>)>,
        headers: &[(&str, &str)],
    ) -> Page {
        let url = if path.starts_with("http") {
            path.to_owned()
        } else {
            format!("{}{path}", self.base)
        };
        let mut request = self.http.request(method, url);
        if !self.cookies.is_empty() {
            request = request.header("cookie", self.cookie_header());
        }
        if let Some((content_type, bytes)) = body {
            request = request.header("content-type", content_type).body(bytes);
        }
        for (name, value) in headers {
            request = request.header(*name, *value);
        }
        let response = request
            .send()
            .await
            .unwrap_or_else(|e| panic!("request {path}: {e}"));
        let status = response.status().as_u16();
        let headers = response.headers().clone();
        for value in headers.get_all("set-cookie") {
            let text = value.to_str().unwrap_or_default();
            let pair = text.split(';').next().unwrap_or_default();
            if let Some((name, value)) = pair.split_once('=') {
                if value.is_empty() || text.contains("Max-Age=0") {
                    self.cookies.remove(name);
                } else {
                    self.cookies.insert(name.to_owned(), value.to_owned());
                }
            }
        }
        let body = response.text().await.unwrap_or_default();
        Page {
            status,
            headers,
            body,
        }
    }

    pub async fn get(&mut self, path: &str) -> Page {
        self.send(reqwest::Method::GET, path, None, &[]).await
    }

    pub async fn post_form(&mut self, path: &str, fields: &[(&str, &str)]) -> Page {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(fields)
            .finish();
        self.send(
            reqwest::Method::POST,
            path,
            Some(("application/x-www-form-urlencoded", body.into_bytes())),
            &[],
        )
        .await
    }

    /// A form post with this page's CSRF token (from `page`'s hidden field).
    pub async fn submit(&mut self, page: &Page, path: &str, fields: &[(&str, &str)]) -> Page {
        let csrf = page.hidden("csrf");
        let mut all = vec![("csrf", csrf.as_str())];
        all.extend_from_slice(fields);
        self.post_form(path, &all).await
    }

    /// Email and password at /signin; returns the redirect's target.
    pub async fn sign_in_password(&mut self, email: &str, password: &str) -> Page {
        let page = self.get("/signin").await;
        self.submit(
            &page,
            "/signin",
            &[("email", email), ("password", password)],
        )
        .await
    }

    /// A FHIR request with the session cookie (and CSRF header for writes when given).
    pub async fn fhir(
        &mut self,
        method: reqwest::Method,
        path: &str,
        body: Option<&Value>,
        csrf: Option<&str>,
    ) -> Page {
        let body = body.map(|b| {
            (
                "application/fhir+json",
                serde_json::to_vec(b).unwrap_or_default(),
            )
        });
        let headers: Vec<(&str, &str)> =
            csrf.map(|c| vec![("x-csrf-token", c)]).unwrap_or_default();
        self.send(
            method,
            &format!("/fhir/{}", path.trim_start_matches('/')),
            body,
            &headers,
        )
        .await
    }

    /// The session's CSRF token, read from the account page's sign-out form.
    pub async fn csrf(&mut self) -> String {
        self.get("/account").await.hidden("csrf")
    }
}

pub fn base32_decode(text: &str) -> Vec<u8> {
    const ALPHABET: &[u8] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZ234567";
    let mut bits = 0u64;
    let mut count = 0;
    let mut out = Vec::new();
    for c in text.bytes().filter(|c| *c != b'=' && *c != b' ') {
        let value = ALPHABET
            .iter()
            .position(|a| *a == c.to_ascii_uppercase())
            .unwrap_or_else(|| panic!("not base32: {text}")) as u64;
        bits = (bits << 5) | value;
        count += 5;
        if count >= 8 {
            count -= 8;
            out.push((bits >> count) as u8);
            bits &= (1 << count) - 1;
        }
    }
    out
}

/// RFC 6238 code (HMAC-SHA1, 6 digits, 30 s) for a time step.
pub fn totp_code(secret_base32: &str, step: i64) -> String {
    use aws_lc_rs::hmac;
    let key = hmac::Key::new(
        hmac::HMAC_SHA1_FOR_LEGACY_USE_ONLY,
        &base32_decode(secret_base32),
    );
    let tag = hmac::sign(&key, &step.to_be_bytes());
    let digest = tag.as_ref();
    let offset = (digest[19] & 0x0f) as usize;
    let number = u32::from_be_bytes([
        digest[offset] & 0x7f,
        digest[offset + 1],
        digest[offset + 2],
        digest[offset + 3],
    ]);
    format!("{:06}", number % 1_000_000)
}

pub fn current_step() -> i64 {
    now_s().div_euclid(30)
}

/// A software passkey (ES256, "none" attestation, user verified): enough of an authenticator
/// for the server's WebAuthn ceremonies, including discoverable sign-in.
pub struct SoftKey {
    pair: aws_lc_rs::signature::EcdsaKeyPair,
    pub credential_id: Vec<u8>,
    pub user_handle: String,
    origin: String,
}

fn cbor_bytes(bytes: &[u8]) -> Vec<u8> {
    let mut out = match bytes.len() {
        n if n < 24 => vec![0x40 + n as u8],
        n if n < 256 => vec![0x58, n as u8],
        n => vec![0x59, (n >> 8) as u8, n as u8],
    };
    out.extend_from_slice(bytes);
    out
}

fn cbor_text(text: &str) -> Vec<u8> {
    let mut out = vec![0x60 + text.len() as u8];
    out.extend_from_slice(text.as_bytes());
    out
}

impl SoftKey {
    pub fn new(origin: &str) -> SoftKey {
        use aws_lc_rs::signature::{ECDSA_P256_SHA256_ASN1_SIGNING, EcdsaKeyPair};
        SoftKey {
            pair: EcdsaKeyPair::generate(&ECDSA_P256_SHA256_ASN1_SIGNING)
                .unwrap_or_else(|e| panic!("{e}")),
            credential_id: uuid::Uuid::new_v4().as_bytes().to_vec(),
            user_handle: String::new(),
            origin: origin.to_owned(),
        }
    }

    fn client_data(&self, kind: &str, challenge: &str) -> Vec<u8> {
        serde_json::to_vec(&json!({
            "type": kind, "challenge": challenge, "origin": self.origin, "crossOrigin": false
        }))
        .unwrap_or_default()
    }

    fn rp_hash(options: &Value) -> Vec<u8> {
        let rp = options["publicKey"]["rpId"]
            .as_str()
            .or(options["publicKey"]["rp"]["id"].as_str())
            .unwrap_or("localhost");
        aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, rp.as_bytes())
            .as_ref()
            .to_vec()
    }

    /// The registration response to `navigator.credentials.create(options)`.
    pub fn register(&mut self, options: &Value) -> Value {
        use aws_lc_rs::signature::KeyPair as _;
        let challenge = options["publicKey"]["challenge"]
            .as_str()
            .unwrap_or_default();
        self.user_handle = options["publicKey"]["user"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let point = self.pair.public_key().as_ref();
        let (x, y) = point[1..].split_at(32);
        let mut cose = vec![0xa5, 0x01, 0x02, 0x03, 0x26, 0x20, 0x01, 0x21];
        cose.extend(cbor_bytes(x));
        cose.push(0x22);
        cose.extend(cbor_bytes(y));
        let mut auth_data = Self::rp_hash(options);
        auth_data.push(0x45); // user present, user verified, attested credential data
        auth_data.extend_from_slice(&[0, 0, 0, 0]);
        auth_data.extend_from_slice(&[0u8; 16]);
        auth_data.extend_from_slice(&(self.credential_id.len() as u16).to_be_bytes());
        auth_data.extend_from_slice(&self.credential_id);
        auth_data.extend(cose);
        let mut attestation = vec![0xa3];
        attestation.extend(cbor_text("fmt"));
        attestation.extend(cbor_text("none"));
        attestation.extend(cbor_text("attStmt"));
        attestation.push(0xa0);
        attestation.extend(cbor_text("authData"));
        attestation.extend(cbor_bytes(&auth_data));
        let id = URL_SAFE_NO_PAD.encode(&self.credential_id);
        json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "attestationObject": URL_SAFE_NO_PAD.encode(attestation),
                "clientDataJSON": URL_SAFE_NO_PAD.encode(self.client_data("webauthn.create", challenge)),
            },
            "extensions": {}
        })
    }

    /// The assertion for `navigator.credentials.get(options)`.
    pub fn assert(&self, options: &Value) -> Value {
        let challenge = options["publicKey"]["challenge"]
            .as_str()
            .unwrap_or_default();
        let client_data = self.client_data("webauthn.get", challenge);
        let mut auth_data = Self::rp_hash(options);
        auth_data.push(0x05);
        auth_data.extend_from_slice(&[0, 0, 0, 0]);
        let mut signed = auth_data.clone();
        signed.extend_from_slice(
            aws_lc_rs::digest::digest(&aws_lc_rs::digest::SHA256, &client_data).as_ref(),
        );
        let signature = self
            .pair
            .sign(&aws_lc_rs::rand::SystemRandom::new(), &signed)
            .unwrap_or_else(|e| panic!("{e}"));
        let id = URL_SAFE_NO_PAD.encode(&self.credential_id);
        json!({
            "id": id, "rawId": id, "type": "public-key",
            "response": {
                "authenticatorData": URL_SAFE_NO_PAD.encode(auth_data),
                "clientDataJSON": URL_SAFE_NO_PAD.encode(client_data),
                "signature": URL_SAFE_NO_PAD.encode(signature.as_ref()),
                "userHandle": self.user_handle,
            },
            "extensions": {}
        })
    }
}

/// A person with an account, signed in or about to be.
pub struct Person {
    pub email: String,
    pub password: String,
    pub web: WebClient,
    pub totp_secret: Option<String>,
    pub passkey: Option<SoftKey>,
    pub recovery_codes: Vec<String>,
}

pub const PASSWORD: &str = "correct horse battery staple lighthouse";

impl Server {
    /// `carevault user invite …` and accepting the link over HTTP: a person with a password
    /// and no factor yet.
    pub async fn person(
        &self,
        tenant: Option<&str>,
        roles: &str,
        email: &str,
        practitioner: Option<&str>,
    ) -> Person {
        let mut args = vec![
            "user",
            "invite",
            "--role",
            roles,
            "--email",
            email,
            "--name",
            "Test Person",
            "--json",
        ];
        if let Some(tenant) = tenant {
            args.extend_from_slice(&["--tenant", tenant]);
        }
        if let Some(practitioner) = practitioner {
            args.extend_from_slice(&["--practitioner", practitioner]);
        }
        let out = self.cli(&args);
        let value: Value =
            serde_json::from_str(out.trim()).unwrap_or_else(|e| panic!("{e}: {out}"));
        // The CLI does not know the running server's port: keep the link's path only.
        let link = value["link"].as_str().unwrap_or_default();
        let path = format!(
            "/invitation/{}",
            link.rsplit('/').next().unwrap_or_default()
        );
        let mut web = WebClient::new(&self.base);
        let page = web.get(&path).await;
        assert_eq!(page.status, 200, "invitation page: {}", page.body);
        let done = web
            .submit(
                &page,
                &path,
                &[("name", "Test Person"), ("password", PASSWORD)],
            )
            .await;
        assert_eq!(done.status, 303, "accepting the invitation: {}", done.body);
        Person {
            email: email.to_owned(),
            password: PASSWORD.to_owned(),
            web,
            totp_secret: None,
            passkey: None,
            recovery_codes: Vec::new(),
        }
    }
}

/// The recovery codes shown on a page.
pub fn recovery_codes(body: &str) -> Vec<String> {
    body.split_once("id=\"recovery-codes\"")
        .map(|(_, rest)| rest.split("</ul>").next().unwrap_or_default())
        .unwrap_or_default()
        .split("<li>")
        .skip(1)
        .map(|item| {
            item.split("</li>")
                .next()
                .unwrap_or_default()
                .trim()
                .to_owned()
        })
        .collect()
}

impl Person {
    /// Signs in with the password; returns where the server sends them next.
    pub async fn password_step(&mut self) -> String {
        let (email, password) = (self.email.clone(), self.password.clone());
        let page = self.web.sign_in_password(&email, &password).await;
        assert_eq!(page.status, 303, "sign-in refused: {}", page.body);
        page.location()
    }

    /// Signs in with the password and enrols TOTP (confirming with the previous step's code,
    /// so the current and next steps stay free for sign-in and step-up).
    pub async fn enrol_totp(&mut self) {
        assert_eq!(self.password_step().await, "/account/enrol");
        let page = self.web.get("/account/enrol/totp").await;
        assert_eq!(page.status, 200, "{}", page.body);
        let secret = attribute_after(&page.body, "data-secret=\"");
        assert!(!secret.is_empty(), "no secret on {}", page.body);
        let code = totp_code(&secret, current_step() - 1);
        let done = self
            .web
            .submit(&page, "/account/enrol/totp", &[("code", &code)])
            .await;
        assert_eq!(done.status, 200, "confirming TOTP: {}", done.body);
        self.recovery_codes = recovery_codes(&done.body);
        assert_eq!(self.recovery_codes.len(), 10, "{}", done.body);
        self.totp_secret = Some(secret);
    }

    /// Signs in with the password and registers a software passkey.
    pub async fn enrol_passkey(&mut self) {
        assert_eq!(self.password_step().await, "/account/enrol");
        let page = self.web.get("/account/enrol").await;
        let csrf = page.hidden("csrf");
        let options = self
            .web
            .send(
                reqwest::Method::POST,
                "/account/enrol/passkey/start",
                None,
                &[("x-csrf-token", &csrf)],
            )
            .await;
        assert_eq!(options.status, 200, "{}", options.body);
        let options: Value = serde_json::from_str(&options.body).unwrap_or(Value::Null);
        let mut key = SoftKey::new(&self.web.base);
        let response = key.register(&options).to_string();
        let done = self
            .web
            .post_form(
                "/account/enrol/passkey/finish",
                &[
                    ("csrf", &csrf),
                    ("name", "test key"),
                    ("response", &response),
                ],
            )
            .await;
        assert_eq!(done.status, 200, "registering the passkey: {}", done.body);
        self.recovery_codes = recovery_codes(&done.body);
        self.passkey = Some(key);
    }

    /// A fresh passkey sign-in (a new session).
    pub async fn sign_in_passkey(&mut self) -> Page {
        let page = self.web.get("/signin").await;
        let csrf = page.hidden("csrf");
        let options = self
            .web
            .send(
                reqwest::Method::POST,
                "/signin/passkey/start",
                None,
                &[("x-csrf-token", &csrf)],
            )
            .await;
        assert_eq!(options.status, 200, "{}", options.body);
        let options: Value = serde_json::from_str(&options.body).unwrap_or(Value::Null);
        let response = self
            .passkey
            .as_ref()
            .unwrap_or_else(|| panic!("no passkey"))
            .assert(&options)
            .to_string();
        self.web
            .post_form(
                "/signin/passkey/finish",
                &[("csrf", &csrf), ("response", &response)],
            )
            .await
    }

    /// Step-up with the passkey.
    pub async fn step_up_passkey(&mut self) {
        let page = self.web.get("/account/step-up?return=/account").await;
        let csrf = page.hidden("csrf");
        let options = self
            .web
            .send(
                reqwest::Method::POST,
                "/account/step-up/passkey/start",
                None,
                &[("x-csrf-token", &csrf)],
            )
            .await;
        assert_eq!(options.status, 200, "{}", options.body);
        let options: Value = serde_json::from_str(&options.body).unwrap_or(Value::Null);
        let response = self
            .passkey
            .as_ref()
            .unwrap_or_else(|| panic!("no passkey"))
            .assert(&options)
            .to_string();
        let done = self
            .web
            .post_form(
                "/account/step-up/passkey/finish",
                &[
                    ("csrf", &csrf),
                    ("return", "/account"),
                    ("response", &response),
                ],
            )
            .await;
        assert_eq!(done.status, 303, "step-up: {}", done.body);
    }

    /// Step-up with a TOTP code for `step`.
    pub async fn step_up_totp(&mut self, step: i64) -> Page {
        let secret = self.totp_secret.clone().unwrap_or_default();
        let page = self.web.get("/account/step-up?return=/account").await;
        self.web
            .submit(
                &page,
                "/account/step-up",
                &[("code", &totp_code(&secret, step)), ("return", "/account")],
            )
            .await
    }
}
