//! The composition root: opens the data directory and wires store, keys, audit trail and use
//! cases together. Nothing below this module reads configuration, files or the clock.

use std::path::Path;
use std::sync::Arc;

use anyhow::{Context, bail};
use carevault_auth::PeopleCredentials;
use carevault_auth::password::PasswordParams;
use carevault_crypto::{Kek, KeyEncryptionKey, SigningKey};
use carevault_domain::access::{AssertionVerifier, Authority};
use carevault_domain::admin::Administration;
use carevault_domain::audit::AuditTrail;
use carevault_domain::clock::{Clock, SystemClock};
use carevault_domain::ids::TenantId;
use carevault_domain::keyring::Keyring;
use carevault_domain::people::{
    Identity, IdentitySettings, Invitation, Inviter, LogNotifier, PeopleStore, Role,
};
use carevault_domain::records::Records;
use carevault_domain::store::Store;

use crate::config::{Config, KEK_FILE, PasswordConfig, SIGNING_KEY_FILE};

pub struct Runtime {
    pub config: Config,
    pub store: Arc<dyn Store>,
    pub people: Arc<dyn PeopleStore>,
    pub keyring: Arc<Keyring>,
    pub verifier: Arc<dyn AssertionVerifier>,
    pub clock: Arc<dyn Clock>,
    /// Held so that start-up proves the signing key is present and private; audit checkpoints
    /// and backup manifests sign with it.
    pub signing_key: Arc<SigningKey>,
}

/// The use cases over one runtime, with a running audit committer.
pub struct Services {
    pub audit: AuditTrail,
    pub records: Arc<Records>,
    pub authority: Arc<Authority>,
    pub identity: Arc<Identity>,
}

/// Creates a data directory: configuration, key-encryption key and signing key (0600, in a
/// 0700 folder apart from the database), the database, and calibrated password parameters.
pub async fn initialise(data_dir: &Path, database_url: Option<String>) -> anyhow::Result<Config> {
    if data_dir.join(crate::config::CONFIG_FILE).exists() {
        bail!(
            "{} is already initialised; use it with `carevault serve --data-dir {}`",
            data_dir.display(),
            data_dir.display()
        );
    }
    create_private_dir(data_dir)?;
    let mut config = Config::new_default(database_url);
    config.passwords = calibrate_passwords();
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

/// Argon2id costs about a quarter of a second here, and never less than OWASP's minimum.
fn calibrate_passwords() -> PasswordConfig {
    let measure = |params: &PasswordParams| {
        let started = std::time::Instant::now();
        let _ = carevault_auth::password::hash_password("calibration password", params);
        u64::try_from(started.elapsed().as_millis()).unwrap_or(u64::MAX)
    };
    let params = PasswordParams::calibrate(250, &measure);
    PasswordConfig {
        memory_kib: params.memory_kib(),
        iterations: params.iterations(),
        parallelism: params.parallelism(),
    }
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
        let (store, people) = carevault_store::open_stores(&url)
            .await
            .with_context(|| format!("opening the {} store", engine_name(&url)))?;
        let kek: Arc<dyn KeyEncryptionKey> = Arc::new(kek);
        let keyring = Arc::new(Keyring::new(kek, store.clone()));
        carevault_auth::install_crypto_provider();
        Ok(Runtime {
            config,
            store,
            people,
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

    fn identity_settings(&self) -> IdentitySettings {
        let mut settings = IdentitySettings::defaults(&self.config.public_url());
        let sessions = &self.config.sessions;
        if let Some(minutes) = sessions.idle_minutes {
            if minutes > 15 {
                tracing::warn!(
                    minutes,
                    "sessions.idle_minutes is looser than the default of 15"
                );
            }
            settings.idle_ms = minutes.max(1) * 60_000;
        }
        if let Some(hours) = sessions.absolute_hours {
            if hours > 12 {
                tracing::warn!(
                    hours,
                    "sessions.absolute_hours is looser than the default of 12"
                );
            }
            settings.absolute_ms = hours.max(1) * 3_600_000;
        }
        settings
    }

    /// Builds the use cases. Starts the audit committer, so call inside the Tokio runtime.
    pub fn services(&self) -> anyhow::Result<Services> {
        self.services_with(AuditTrail::start(self.store.clone()))
    }

    /// The use cases over `audit`: the server's is [`AuditTrail::start`]'s, durable; a
    /// benchmark may give a bare in-memory append to measure what the durable trail costs.
    pub fn services_with(&self, audit: AuditTrail) -> anyhow::Result<Services> {
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
        let passwords = &self.config.passwords;
        let params = PasswordParams::new(
            passwords.memory_kib,
            passwords.iterations,
            passwords.parallelism,
        )
        .map_err(|error| anyhow::anyhow!("[passwords] in the configuration: {error}"))?;
        let credentials =
            PeopleCredentials::new(params, &self.config.public_url()).map_err(|error| {
                anyhow::anyhow!(
                    "passkeys need a public URL with a host name ({error}); set [server] \
                     public_url = \"https://records.example.org\" in carevault.toml"
                )
            })?;
        let identity = Arc::new(Identity::new(
            self.people.clone(),
            self.store.clone(),
            self.keyring.clone(),
            audit.clone(),
            Arc::new(credentials),
            records.clone(),
            Arc::new(LogNotifier),
            self.identity_settings(),
        ));
        Ok(Services {
            audit,
            records,
            authority,
            identity,
        })
    }

    /// The server's state.
    pub fn server_state(&self, services: &Services) -> carevault_server::ServerState {
        carevault_server::ServerState::new(carevault_server::StateParts {
            records: services.records.clone(),
            authority: services.authority.clone(),
            identity: services.identity.clone(),
            store: self.store.clone(),
            audit: services.audit.clone(),
            clock: self.clock.clone(),
            base_url: self.config.public_url(),
        })
    }

    /// Serves the API on `listener` until `shutdown` completes, signing audit checkpoints
    /// meanwhile (and once more at the end).
    pub async fn serve(
        &self,
        data_dir: &Path,
        services: &Services,
        listener: carevault_server::Listener,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> anyhow::Result<()> {
        let checkpoints = crate::audit::Checkpointer::new(self, data_dir)?.start();
        let served = listener
            .serve(
                carevault_server::router(self.server_state(services)),
                shutdown,
            )
            .await;
        checkpoints.finish().await;
        served?;
        Ok(())
    }

    /// A one-time link for the first platform administrator (supplier staff), valid for 15
    /// minutes.
    pub async fn setup_link(&self, services: &Services) -> anyhow::Result<String> {
        let identity = &services.identity;
        let lifetime = identity.settings().setup_link_ms;
        let invitation = identity
            .invite(
                Inviter::Operator,
                TenantId::platform(),
                "",
                "",
                &[Role::PlatformOperator],
                None,
                Some(lifetime),
                self.now_ms(),
            )
            .await
            .map_err(|error| anyhow::anyhow!("creating the setup link: {error}"))?;
        Ok(self.invitation_link(&invitation))
    }

    pub fn invitation_link(&self, invitation: &Invitation) -> String {
        format!(
            "{}/invitation/{}",
            self.config.public_url(),
            invitation.token
        )
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

/// Completes on Ctrl-C or (on Unix) SIGTERM: when a server started by [`Runtime::serve`] stops.
pub async fn shutdown_signal() {
    let ctrl_c = tokio::signal::ctrl_c();
    #[cfg(unix)]
    {
        let mut terminate =
            match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                Ok(signal) => signal,
                Err(_) => {
                    let _ = ctrl_c.await;
                    return;
                }
            };
        tokio::select! {
            _ = ctrl_c => {},
            _ = terminate.recv() => {},
        }
    }
    #[cfg(not(unix))]
    {
        let _ = ctrl_c.await;
    }
}
