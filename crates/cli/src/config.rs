//! The versioned configuration file (`carevault.toml` in the data directory).
//!
//! Unknown fields are refused, so a typo never silently falls back to a default. Relative paths
//! are relative to the data directory.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use serde::{Deserialize, Serialize};

pub const CONFIG_FILE: &str = "carevault.toml";
pub const CONFIG_VERSION: u32 = 1;
pub const DATABASE_URL_ENV: &str = "CAREVAULT_DATABASE_URL";

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Format version of this file.
    pub version: u32,
    pub server: ServerConfig,
    pub database: DatabaseConfig,
    pub keys: KeysConfig,
    #[serde(default)]
    pub log: LogConfig,
    /// Argon2id parameters, calibrated on this machine by `init` (never below OWASP's minimum).
    #[serde(default)]
    pub passwords: PasswordConfig,
    #[serde(default)]
    pub sessions: SessionConfig,
    /// Audit checkpoints: where they go and how often (see `audit/checkpoints.rs`).
    #[serde(default)]
    pub audit: crate::audit::AuditConfig,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PasswordConfig {
    pub memory_kib: u32,
    pub iterations: u32,
    pub parallelism: u32,
}

impl Default for PasswordConfig {
    /// OWASP's minimum for Argon2id (m = 19 MiB, t = 2, p = 1).
    fn default() -> PasswordConfig {
        PasswordConfig {
            memory_kib: 19_456,
            iterations: 2,
            parallelism: 1,
        }
    }
}

/// Session timeouts. Tighter than the defaults is fine; looser is allowed with a warning in
/// the log at every start.
#[derive(Clone, Debug, Default, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SessionConfig {
    /// Idle timeout in minutes (default 15).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub idle_minutes: Option<i64>,
    /// Absolute timeout in hours (default 12).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub absolute_hours: Option<i64>,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServerConfig {
    /// Address to listen on. Anything but loopback needs `tls`.
    pub listen: SocketAddr,
    /// The URL clients use to reach this server (no trailing slash). The token endpoint, and so
    /// every client assertion's `aud`, is `{public_url}/oauth/token`. Defaults to the listen
    /// address.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub public_url: Option<String>,
    /// Lifetime of access tokens in seconds; at most 300.
    #[serde(default = "default_token_seconds")]
    pub token_lifetime_seconds: i64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub tls: Option<TlsConfig>,
}

fn default_token_seconds() -> i64 {
    300
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsConfig {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite:db/carevault.sqlite` (relative to the data directory) or `postgres://…`.
    /// The environment variable CAREVAULT_DATABASE_URL overrides it.
    pub url: String,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KeysConfig {
    /// Folder of the key-encryption key and the signing key: never inside the database folder,
    /// so copying or backing up the database never copies a key.
    pub dir: PathBuf,
}

#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LogConfig {
    /// `json` (default) or `text`.
    #[serde(default = "default_log_format")]
    pub format: String,
    /// A tracing filter such as `info` or `carevault=debug,info`. RUST_LOG overrides it.
    #[serde(default = "default_log_level")]
    pub level: String,
}

impl Default for LogConfig {
    fn default() -> LogConfig {
        LogConfig {
            format: default_log_format(),
            level: default_log_level(),
        }
    }
}

fn default_log_format() -> String {
    "json".to_owned()
}

fn default_log_level() -> String {
    "info".to_owned()
}

pub const KEK_FILE: &str = "kek.key";
pub const SIGNING_KEY_FILE: &str = "signing.key";

impl Config {
    pub fn new_default(database_url: Option<String>) -> Config {
        Config {
            version: CONFIG_VERSION,
            server: ServerConfig {
                listen: SocketAddr::from(([127, 0, 0, 1], 8080)),
                public_url: None,
                token_lifetime_seconds: default_token_seconds(),
                tls: None,
            },
            database: DatabaseConfig {
                url: database_url.unwrap_or_else(|| "sqlite:db/carevault.sqlite".to_owned()),
            },
            keys: KeysConfig {
                dir: PathBuf::from("keys"),
            },
            log: LogConfig::default(),
            passwords: PasswordConfig::default(),
            sessions: SessionConfig::default(),
            audit: crate::audit::AuditConfig::default(),
        }
    }

    pub fn load(data_dir: &Path) -> anyhow::Result<Config> {
        let path = data_dir.join(CONFIG_FILE);
        let text = std::fs::read_to_string(&path).with_context(|| {
            format!(
                "cannot read {}: run `carevault init --data-dir {}` first",
                path.display(),
                data_dir.display()
            )
        })?;
        let config: Config = toml::from_str(&text).with_context(|| {
            format!("{} is not a valid carevault configuration", path.display())
        })?;
        if config.version != CONFIG_VERSION {
            bail!(
                "{} has version {}, this carevault reads version {CONFIG_VERSION}",
                path.display(),
                config.version
            );
        }
        if !(1..=300).contains(&config.server.token_lifetime_seconds) {
            bail!(
                "{}: server.token_lifetime_seconds must be between 1 and 300",
                path.display()
            );
        }
        Ok(config)
    }

    pub fn save_new(&self, data_dir: &Path) -> anyhow::Result<()> {
        let text = format!(
            "# carevault configuration. Unknown fields are refused.\n{}",
            toml::to_string_pretty(self).context("serialising the configuration")?
        );
        let path = data_dir.join(CONFIG_FILE);
        let mut file = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
            .with_context(|| format!("creating {}", path.display()))?;
        std::io::Write::write_all(&mut file, text.as_bytes())?;
        Ok(())
    }

    /// The database URL in effect: the environment variable wins over the file; a relative
    /// SQLite path is resolved against the data directory.
    pub fn database_url(&self, data_dir: &Path) -> String {
        let url = std::env::var(DATABASE_URL_ENV)
            .ok()
            .filter(|url| !url.is_empty())
            .unwrap_or_else(|| self.database.url.clone());
        if url.starts_with("postgres://") || url.starts_with("postgresql://") {
            return url;
        }
        let path = url.strip_prefix("sqlite:").unwrap_or(&url);
        let path = Path::new(path);
        let path = if path.is_absolute() {
            path.to_path_buf()
        } else {
            data_dir.join(path)
        };
        format!("sqlite:{}", path.display())
    }

    pub fn keys_dir(&self, data_dir: &Path) -> PathBuf {
        if self.keys.dir.is_absolute() {
            self.keys.dir.clone()
        } else {
            data_dir.join(&self.keys.dir)
        }
    }

    /// The URL people and clients use. On a loopback address it is `localhost`, the one host
    /// name browsers accept for passkeys without TLS.
    pub fn public_url(&self) -> String {
        match &self.server.public_url {
            Some(url) => url.trim_end_matches('/').to_owned(),
            None => default_public_url(self.server.listen, self.server.tls.is_some()),
        }
    }
}

/// `http(s)://localhost:PORT` for a loopback address, else the address itself.
pub fn default_public_url(listen: SocketAddr, tls: bool) -> String {
    let scheme = if tls { "https" } else { "http" };
    if listen.ip().is_loopback() {
        format!("{scheme}://localhost:{}", listen.port())
    } else {
        format!("{scheme}://{listen}")
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_fields_are_refused() {
        let text = toml::to_string(&Config::new_default(None)).unwrap_or_default();
        assert!(toml::from_str::<Config>(&text).is_ok());
        let typo = text.replace("[database]", "[database]\nurll = \"x\"");
        assert!(toml::from_str::<Config>(&typo).is_err());
    }
}
