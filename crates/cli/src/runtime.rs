//! The composition root: opens the data directory and wires store, keys, audit trail and use
//! cases together. Nothing below this module reads configuration, files or the clock.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use carevault_crypto::{Kek, KeyEncryptionKey, SigningKey};
use carevault_domain::access::{AssertionVerifier, Authority};
use carevault_domain::admin::Administration;
use carevault_domain::audit::AuditTrail;
use carevault_domain::clock::{Clock, SystemClock};
use carevault_domain::keyring::Keyring;
use carevault_domain::records::Records;
use carevault_domain::store::Store;

use crate::config::{Config, KEK_FILE, SIGNING_KEY_FILE};

pub struct Runtime {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub keyring: Arc<Keyring>,
    pub verifier: Arc<dyn AssertionVerifier>,
    pub clock: Arc<dyn Clock>,
    /// Held so that start-up proves the signing key is present and private; audit checkpoints
    /// and backup manifests will sign with it.
    pub signing_key: Arc<SigningKey>,
}

/// Creates a data directory: configuration, key-encryption key and signing key (0600, in a
/// 0700 folder apart from the database), and the database.
pub async fn initialise(data_dir: &Path, database_url: Option<String>) -> anyhow::Result<Config> {
    if data_dir.join(crate::config::CONFIG_FILE).exists() {
        bail!(
            "{} is already initialised; use it with `carevault serve --data-dir {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    create_private_dir(data_dir)?;
    let config = Config::new_default(database_url);
    let keys_dir = config.keys_dir(data_dir);
    create_private_dir(&keys_dir)?;
    Kek::create_file(&keys_dir.join(KEK_FILE)).context("creating the key-encryption key")?;
    SigningKey::create_file(&keys_dir.join(SIGNING_KEY_FILE))
        .context("creating the signing key")?;
    config.save_new(data_dir)?;
    // Creating the store runs the migrations, so a fresh directory is ready to serve.
    carevault_store::open_store(&config.database_url(data_dir))
        .await
        .context("creating the database")?;
    Ok(config)
}

fn create_private_dir(dir: &Path) -> anyhow::Result<()> {
    std::fs::create_dir_all(dir).with_context(|| format!("creating {}", dir.display()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        std::fs::set_permissions(dir, std::fs::Permissions::from_mode(0o700))
            .with_context(|| format!("restricting {}", dir.display()))?;
    }
    Ok(())
}

impl Runtime {
    pub async fn open(data_dir: &Path) -> anyhow::Result<Runtime> {
        let config = Config::load(data_dir)?;
        let keys_dir = config.keys_dir(data_dir);
        let kek =
            Kek::load_file(&keys_dir.join(KEK_FILE)).context("loading the key-encryption key")?;
        let signing_key = SigningKey::load_file(&keys_dir.join(SIGNING_KEY_FILE))
            .context("loading the signing key")?;
        let url = config.database_url(data_dir);
        let store = carevault_store::open_store(&url)
            .await
            .with_context(|| format!("opening the {} store", engine_name(&url)))?;
        let kek: Arc<dyn KeyEncryptionKey> = Arc::new(kek);
        let keyring = Arc::new(Keyring::new(kek, store.clone()));
        carevault_auth::install_crypto_provider();
        Ok(Runtime {
            config,
            store,
            keyring,
            verifier: Arc::new(carevault_auth::SmartVerifier),
            clock: Arc::new(SystemClock),
            signing_key: Arc::new(signing_key),
        })
    }

    pub fn administration(&self) -> Administration {
        Administration::new(
            self.store.clone(),
            self.keyring.clone(),
            self.verifier.clone(),
        )
    }

    /// The server's state. Starts the audit committer, so call inside the Tokio runtime.
    pub fn server_state(&self) -> carevault_server::ServerState {
        let audit = AuditTrail::start(self.store.clone());
        let records = Arc::new(Records::new(
            self.store.clone(),
            self.keyring.clone(),
            audit.clone(),
        ));
        let authority = Arc::new(Authority::new(
            self.store.clone(),
            audit.clone(),
            self.verifier.clone(),
            self.config.server.token_lifetime_seconds,
        ));
        carevault_server::ServerState {
            records,
            authority,
            store: self.store.clone(),
            audit,
            clock: self.clock.clone(),
            base_url: self.config.public_url(),
        }
    }

    /// The signing key's public half, hex: operators record it off the box so that signed
    /// audit checkpoints and backup manifests can be verified without trusting this host.
    pub fn signing_public_key(&self) -> String {
        hex::encode(self.signing_key.verifying_key().to_bytes())
    }

    pub fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

fn engine_name(url: &str) -> &'static str {
    if url.starts_with("postgres") {
        "PostgreSQL"
    } else {
        "SQLite"
    }
}
