//! Tokens the way a real SMART Backend Services client gets them: an ES384 key pair whose public
//! half is registered (through the `carevault` CLI), a signed assertion per token request, and
//! a fresh token well before the 300-second expiry.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::{Context, bail};
use aws_lc_rs::rand::SystemRandom;
use aws_lc_rs::signature::{ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair};
use base64::Engine as _;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use tokio::sync::RwLock;

/// Tokens are renewed after this long (they live 300 s).
const REFRESH_AFTER: Duration = Duration::from_secs(200);

pub struct ClientKey {
    pkcs8: Vec<u8>,
    pair: EcdsaKeyPair,
    kid: String,
}

impl ClientKey {
    pub fn generate() -> anyhow::Result<ClientKey> {
        let document =
            EcdsaKeyPair::generate_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &SystemRandom::new())
                .map_err(|_| anyhow::anyhow!("cannot generate an ES384 key"))?;
        ClientKey::from_pkcs8(document.as_ref().to_vec())
    }

    fn from_pkcs8(pkcs8: Vec<u8>) -> anyhow::Result<ClientKey> {
        let pair = EcdsaKeyPair::from_pkcs8(&ECDSA_P384_SHA384_FIXED_SIGNING, &pkcs8)
            .map_err(|_| anyhow::anyhow!("not a P-384 PKCS#8 private key"))?;
        let kid = hex_prefix(&aws_lc_rs::digest::digest(
            &aws_lc_rs::digest::SHA256,
            pair.public_key().as_ref(),
        ));
        Ok(ClientKey { pkcs8, pair, kid })
    }

    /// The same key again (a token source owns its key).
    pub fn duplicate(&self) -> anyhow::Result<ClientKey> {
        ClientKey::from_pkcs8(self.pkcs8.clone())
    }

    /// Reads a PEM `PRIVATE KEY` (PKCS#8) file.
    pub fn load(path: &Path) -> anyhow::Result<ClientKey> {
        let text = std::fs::read_to_string(path)
            .with_context(|| format!("reading the client key {}", path.display()))?;
        let body: String = text
            .lines()
            .filter(|line| !line.starts_with("-----"))
            .collect();
        let der = STANDARD
            .decode(body.trim())
            .with_context(|| format!("{} is not a PEM file", path.display()))?;
        ClientKey::from_pkcs8(der)
    }

    /// Writes the private key as PEM, readable by the owner only.
    pub fn save(&self, path: &Path) -> anyhow::Result<()> {
        use std::io::Write as _;
        use std::os::unix::fs::OpenOptionsExt as _;
        let encoded = STANDARD.encode(&self.pkcs8);
        let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
        for chunk in encoded.as_bytes().chunks(64) {
            pem.push_str(&String::from_utf8_lossy(chunk));
            pem.push('\n');
        }
        pem.push_str("-----END PRIVATE KEY-----\n");
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(path)
            .with_context(|| format!("writing {}", path.display()))?;
        file.write_all(pem.as_bytes())?;
        Ok(())
    }

    pub fn jwks(&self) -> Value {
        let point = self.pair.public_key().as_ref();
        // Uncompressed SEC1 point: 0x04 || X (48 bytes) || Y (48 bytes).
        let coordinates = point.get(1..).unwrap_or_default();
        let (x, y) = coordinates.split_at(coordinates.len() / 2);
        json!({"keys": [{
            "kty": "EC", "crv": "P-384", "alg": "ES384", "use": "sig", "kid": self.kid,
            "x": URL_SAFE_NO_PAD.encode(x), "y": URL_SAFE_NO_PAD.encode(y),
        }]})
    }

    fn assertion(&self, client_id: &str, token_url: &str) -> anyhow::Result<String> {
        let mut header = jsonwebtoken::Header::new(jsonwebtoken::Algorithm::ES384);
        header.kid = Some(self.kid.clone());
        let claims = json!({
            "iss": client_id, "sub": client_id, "aud": token_url,
            "exp": unix_seconds() + 60,
            "jti": uuid::Uuid::new_v4().to_string(),
        });
        let key = jsonwebtoken::EncodingKey::from_ec_der(&self.pkcs8);
        jsonwebtoken::encode(&header, &claims, &key).context("signing the client assertion")
    }
}

fn hex_prefix(digest: &aws_lc_rs::digest::Digest) -> String {
    digest
        .as_ref()
        .iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Wall-clock seconds for the assertion's `exp`: the server checks it against its own clock.
#[allow(clippy::disallowed_methods)]
fn unix_seconds() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |elapsed| elapsed.as_secs() as i64)
}

/// What `populate` leaves for `load`: which client, which tenant, where its key is.
#[derive(Serialize, Deserialize)]
pub struct Credentials {
    pub client_id: String,
    pub tenant: String,
    pub key_file: PathBuf,
}

/// The `carevault` binary: next to this one (both built into target/release), else on PATH.
pub fn carevault_binary(given: Option<&Path>) -> PathBuf {
    if let Some(path) = given {
        return path.to_path_buf();
    }
    std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join("carevault")))
        .filter(|path| path.exists())
        .unwrap_or_else(|| PathBuf::from("carevault"))
}

fn cli_json(binary: &Path, data_dir: &Path, args: &[&str]) -> anyhow::Result<Value> {
    let output = Command::new(binary)
        .arg("--data-dir")
        .arg(data_dir)
        .args(args)
        .output()
        .with_context(|| format!("running {}", binary.display()))?;
    if !output.status.success() {
        bail!(
            "carevault {} failed: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stderr)
        );
    }
    serde_json::from_slice(&output.stdout).with_context(|| {
        format!(
            "carevault {} printed no JSON: {}",
            args.join(" "),
            String::from_utf8_lossy(&output.stdout)
        )
    })
}

/// Finds the tenant by name (or creates it) and registers a new client with a new key, through
/// the operator's CLI on the server's data directory.
pub fn register(
    binary: &Path,
    data_dir: &Path,
    tenant_name: &str,
    key_file: &Path,
) -> anyhow::Result<Credentials> {
    let tenants = cli_json(binary, data_dir, &["tenant", "list", "--json"])?;
    let existing = tenants.as_array().and_then(|list| {
        list.iter()
            .find(|tenant| tenant["name"].as_str() == Some(tenant_name))
            .and_then(|tenant| tenant["id"].as_str().map(str::to_owned))
    });
    let tenant = match existing {
        Some(id) => id,
        None => {
            let created = cli_json(
                binary,
                data_dir,
                &["tenant", "create", "--name", tenant_name, "--json"],
            )?;
            created["id"]
                .as_str()
                .context("tenant create printed no id")?
                .to_owned()
        }
    };
    let key = ClientKey::generate()?;
    key.save(key_file)?;
    let jwks_file = key_file.with_extension("jwks.json");
    std::fs::write(&jwks_file, key.jwks().to_string())?;
    let jwks_arg = jwks_file.to_string_lossy().into_owned();
    let registered = cli_json(
        binary,
        data_dir,
        &[
            "client",
            "register",
            "--tenant",
            &tenant,
            "--name",
            "carevault-bench",
            "--jwks",
            &jwks_arg,
            "--scope",
            "system/*.cruds",
            "--json",
        ],
    )?;
    let client_id = registered["client_id"]
        .as_str()
        .context("client register printed no client_id")?
        .to_owned();
    Ok(Credentials {
        client_id,
        tenant,
        key_file: key_file.to_path_buf(),
    })
}

/// A bearer token that renews itself: callers ask for the current one per request.
#[derive(Clone)]
pub struct TokenSource {
    inner: Arc<TokenInner>,
}

struct TokenInner {
    http: reqwest::Client,
    token_url: String,
    client_id: String,
    key: ClientKey,
    scope: String,
    current: RwLock<(String, Instant)>,
}

impl TokenSource {
    pub async fn new(
        base: &str,
        client_id: &str,
        key: ClientKey,
        scope: &str,
    ) -> anyhow::Result<TokenSource> {
        let inner = TokenInner {
            http: reqwest::Client::new(),
            token_url: format!("{}/oauth/token", base.trim_end_matches('/')),
            client_id: client_id.to_owned(),
            key,
            scope: scope.to_owned(),
            current: RwLock::new((String::new(), Instant::now())),
        };
        let token = inner.request().await?;
        *inner.current.write().await = (token, Instant::now());
        Ok(TokenSource {
            inner: Arc::new(inner),
        })
    }

    /// The current token, renewed first when it is older than [`REFRESH_AFTER`].
    pub async fn bearer(&self) -> anyhow::Result<String> {
        {
            let current = self.inner.current.read().await;
            if current.1.elapsed() < REFRESH_AFTER {
                return Ok(current.0.clone());
            }
        }
        let mut current = self.inner.current.write().await;
        if current.1.elapsed() >= REFRESH_AFTER {
            *current = (self.inner.request().await?, Instant::now());
        }
        Ok(current.0.clone())
    }
}

impl TokenInner {
    async fn request(&self) -> anyhow::Result<String> {
        let assertion = self.key.assertion(&self.client_id, &self.token_url)?;
        let response = self
            .http
            .post(&self.token_url)
            .form(&[
                ("grant_type", "client_credentials"),
                (
                    "client_assertion_type",
                    "urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
                ),
                ("client_assertion", assertion.as_str()),
                ("scope", self.scope.as_str()),
            ])
            .send()
            .await
            .with_context(|| format!("POST {}", self.token_url))?;
        let status = response.status();
        let body: Value = response.json().await.unwrap_or(Value::Null);
        if !status.is_success() {
            bail!("token request refused ({status}): {body}");
        }
        body["access_token"]
            .as_str()
            .map(str::to_owned)
            .context("token response has no access_token")
    }
}
