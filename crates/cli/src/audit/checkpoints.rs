//! Signed checkpoints of the audit chains, written outside the database: append-only JSON-line
//! files (one per tenant per day) in the configured checkpoint directory, and optionally
//! syslog over TCP (RFC 5424, one line per checkpoint) so a copy leaves the machine at once.
//!
//! `carevault serve` runs a [`Checkpointer`] in the background: every second it reads the chain
//! heads and signs what the [`CheckpointSchedule`] asks for (every 1,000th record, and the head
//! at least every minute while a chain grows), and signs every head once more at shutdown.
//! Files are opened for appending only; nothing here ever truncates or rewrites one.

use std::io::Write as _;
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use anyhow::{Context, bail};
use carevault_crypto::SigningKey;
use carevault_domain::audit::checkpoint::{Checkpoint, CheckpointPolicy, CheckpointSchedule};
use carevault_domain::clock::{Clock, format_instant};
use carevault_domain::store::Store;
use serde::{Deserialize, Serialize};
use tokio::io::AsyncWriteExt as _;
use tokio::sync::{mpsc, oneshot};
use tokio::task::JoinHandle;

use crate::config::Config;
use crate::runtime::Runtime;

/// `[audit]` in carevault.toml. Every field has a default, so files without the section load.
#[derive(Clone, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// Where checkpoint files go (relative paths: under the data directory). Default
    /// `checkpoints`. Never inside the database's directory: the point is a second place.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub checkpoint_dir: Option<PathBuf>,
    /// Also send each checkpoint to this syslog collector over TCP (`host:port`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub syslog_tcp: Option<String>,
    /// Sign each growing chain's head at least this often (1 to 60 seconds).
    #[serde(default = "default_interval_seconds")]
    pub checkpoint_interval_seconds: u64,
    /// Sign every this-many-th record of each chain (1 to 1,000).
    #[serde(default = "default_every_records")]
    pub checkpoint_every_records: i64,
}

fn default_interval_seconds() -> u64 {
    60
}

fn default_every_records() -> i64 {
    1_000
}

impl Default for AuditConfig {
    fn default() -> AuditConfig {
        AuditConfig {
            checkpoint_dir: None,
            syslog_tcp: None,
            checkpoint_interval_seconds: default_interval_seconds(),
            checkpoint_every_records: default_every_records(),
        }
    }
}

impl AuditConfig {
    pub fn policy(&self) -> anyhow::Result<CheckpointPolicy> {
        if !(1..=60).contains(&self.checkpoint_interval_seconds) {
            bail!("audit.checkpoint_interval_seconds must be between 1 and 60");
        }
        if !(1..=1_000).contains(&self.checkpoint_every_records) {
            bail!("audit.checkpoint_every_records must be between 1 and 1000");
        }
        Ok(CheckpointPolicy {
            every_records: self.checkpoint_every_records,
            every_ms: i64::try_from(self.checkpoint_interval_seconds * 1_000).unwrap_or(60_000),
        })
    }
}

/// The checkpoint directory in effect, refused when it lies inside the SQLite database's
/// directory (a copy of the database must not carry the checkpoints that judge it).
pub fn checkpoint_dir(config: &Config, data_dir: &Path) -> anyhow::Result<PathBuf> {
    let configured = config
        .audit
        .checkpoint_dir
        .clone()
        .unwrap_or_else(|| PathBuf::from("checkpoints"));
    let dir = absolute(&if configured.is_absolute() {
        configured
    } else {
        data_dir.join(configured)
    })?;
    let url = config.database_url(data_dir);
    if let Some(database) = url.strip_prefix("sqlite:")
        && let Some(database_dir) = Path::new(database).parent()
    {
        let database_dir = absolute(database_dir)?;
        if dir.starts_with(&database_dir) {
            bail!(
                "audit.checkpoint_dir {} is inside the database directory {}: checkpoints must \
                 be kept apart from the database they protect; choose another directory",
                dir.display(),
                database_dir.display()
            );
        }
    }
    Ok(dir)
}

/// An absolute path, with symbolic links resolved as far as the path exists.
fn absolute(path: &Path) -> anyhow::Result<PathBuf> {
    let path =
        std::path::absolute(path).with_context(|| format!("resolving {}", path.display()))?;
    let mut existing = path.clone();
    let mut rest = Vec::new();
    while !existing.exists() {
        match (existing.parent(), existing.file_name()) {
            (Some(parent), Some(name)) => {
                rest.push(name.to_owned());
                existing = parent.to_path_buf();
            }
            _ => return Ok(path),
        }
    }
    let mut resolved = existing.canonicalize().unwrap_or(existing);
    for name in rest.into_iter().rev() {
        resolved.push(name);
    }
    Ok(resolved)
}

/// Where checkpoints are written: files always, syslog when configured.
pub struct CheckpointSink {
    dir: PathBuf,
    syslog: Option<mpsc::Sender<String>>,
}

impl CheckpointSink {
    /// Creates the directory (0700) if needed. Starts the syslog sender when configured, so
    /// call inside the Tokio runtime.
    pub fn open(dir: PathBuf, syslog_tcp: Option<String>) -> anyhow::Result<CheckpointSink> {
        std::fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(&dir)
            .with_context(|| format!("creating the checkpoint directory {}", dir.display()))?;
        let syslog = syslog_tcp.map(start_syslog);
        Ok(CheckpointSink { dir, syslog })
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// Appends the checkpoints to their files (and flushes them to disk), then hands them to
    /// syslog. A file error is returned; a syslog failure is logged by the sender.
    pub async fn write(&self, checkpoints: Vec<Checkpoint>) -> anyhow::Result<()> {
        if checkpoints.is_empty() {
            return Ok(());
        }
        let dir = self.dir.clone();
        let lines: Vec<String> = checkpoints.iter().map(Checkpoint::to_line).collect();
        let written = checkpoints.clone();
        tokio::task::spawn_blocking(move || append_files(&dir, &written))
            .await
            .context("the checkpoint writer stopped")??;
        if let Some(syslog) = &self.syslog {
            for (checkpoint, line) in checkpoints.iter().zip(lines) {
                let message = syslog_line(checkpoint, &line);
                if syslog.try_send(message).is_err() {
                    tracing::warn!("syslog checkpoint queue full; checkpoint kept in files only");
                }
            }
        }
        Ok(())
    }
}

/// `<dir>/<tenant>/<YYYY-MM-DD>.jsonl`, by the checkpoint's own time.
pub fn checkpoint_file(dir: &Path, checkpoint: &Checkpoint) -> PathBuf {
    let day = format_instant(checkpoint.time_ms);
    let day = day.get(..10).unwrap_or("unknown-day");
    dir.join(&checkpoint.tenant).join(format!("{day}.jsonl"))
}

fn append_files(dir: &Path, checkpoints: &[Checkpoint]) -> anyhow::Result<()> {
    let mut grouped: Vec<(PathBuf, String)> = Vec::new();
    for checkpoint in checkpoints {
        let path = checkpoint_file(dir, checkpoint);
        let line = checkpoint.to_line() + "\n";
        match grouped.iter_mut().find(|(existing, _)| *existing == path) {
            Some((_, text)) => text.push_str(&line),
            None => grouped.push((path, line)),
        }
    }
    for (path, text) in grouped {
        if let Some(parent) = path.parent() {
            std::fs::DirBuilder::new()
                .recursive(true)
                .mode(0o700)
                .create(parent)
                .with_context(|| format!("creating {}", parent.display()))?;
        }
        // Append only: never truncate, never seek. One write per batch of lines.
        let mut file = std::fs::OpenOptions::new()
            .append(true)
            .create(true)
            .mode(0o600)
            .open(&path)
            .with_context(|| format!("opening {}", path.display()))?;
        file.write_all(text.as_bytes())
            .with_context(|| format!("appending to {}", path.display()))?;
        file.sync_data()
            .with_context(|| format!("flushing {}", path.display()))?;
    }
    Ok(())
}

/// RFC 5424: `<PRI>1 TIMESTAMP HOSTNAME APP-NAME PROCID MSGID SD MSG`, facility 13 (log
/// audit), severity 6 (informational), newline-framed for TCP (RFC 6587 non-transparent).
pub fn syslog_line(checkpoint: &Checkpoint, json: &str) -> String {
    format!(
        "<110>1 {} {} carevault {} audit-checkpoint - {json}\n",
        checkpoint.time,
        hostname(),
        std::process::id()
    )
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .ok()
        .map(|name| name.trim().to_owned())
        .filter(|name| !name.is_empty() && name.bytes().all(|b| b.is_ascii_graphic()))
        .unwrap_or_else(|| "-".to_owned())
}

/// Sends lines to the collector over one TCP connection, reconnecting when it drops. Lines
/// that cannot be delivered are logged as lost (the files still hold them).
fn start_syslog(address: String) -> mpsc::Sender<String> {
    let (sender, mut receiver) = mpsc::channel::<String>(4_096);
    tokio::spawn(async move {
        let mut stream: Option<tokio::net::TcpStream> = None;
        while let Some(line) = receiver.recv().await {
            let mut delivered = false;
            for _attempt in 0..2 {
                if stream.is_none() {
                    stream = match tokio::time::timeout(
                        Duration::from_secs(5),
                        tokio::net::TcpStream::connect(&address),
                    )
                    .await
                    {
                        Ok(Ok(connected)) => Some(connected),
                        Ok(Err(error)) => {
                            tracing::warn!(%error, %address, "cannot reach the syslog collector");
                            None
                        }
                        Err(_) => {
                            tracing::warn!(%address, "the syslog collector did not answer");
                            None
                        }
                    };
                }
                let Some(connection) = stream.as_mut() else {
                    break;
                };
                if connection.write_all(line.as_bytes()).await.is_ok() {
                    delivered = true;
                    break;
                }
                stream = None;
            }
            if !delivered {
                tracing::warn!(%address, "an audit checkpoint did not reach syslog");
            }
        }
    });
    sender
}

/// Signs chain heads on a schedule.
pub struct Checkpointer {
    store: Arc<dyn Store>,
    key: Arc<SigningKey>,
    clock: Arc<dyn Clock>,
    sink: CheckpointSink,
    schedule: CheckpointSchedule,
}

impl Checkpointer {
    pub fn new(runtime: &Runtime, data_dir: &Path) -> anyhow::Result<Checkpointer> {
        let policy = runtime.config.audit.policy()?;
        let dir = checkpoint_dir(&runtime.config, data_dir)?;
        let sink = CheckpointSink::open(dir, runtime.config.audit.syslog_tcp.clone())?;
        Ok(Checkpointer {
            store: runtime.store.clone(),
            key: runtime.signing_key.clone(),
            clock: runtime.clock.clone(),
            sink,
            schedule: CheckpointSchedule::new(policy),
        })
    }

    pub fn dir(&self) -> &Path {
        self.sink.dir()
    }

    /// One pass over every chain: signs and writes what is due (with `force`, every head not
    /// yet signed). Returns the checkpoints written.
    pub async fn run_once(&mut self, force: bool) -> anyhow::Result<Vec<Checkpoint>> {
        let now = self.clock.now_ms();
        let heads = self
            .store
            .audit_heads()
            .await
            .context("reading the audit chain heads")?;
        let mut signed = Vec::new();
        for (tenant, head) in heads {
            let Some(head_hash) = head.hash else {
                // Records from before hashing, not yet adopted by an append: nothing to pin.
                continue;
            };
            for seq in self.schedule.plan(tenant, head.seq, now, force) {
                let hash = if seq == head.seq {
                    Some(head_hash)
                } else {
                    self.store.audit_hash_at(tenant, seq).await?
                };
                if let Some(hash) = hash {
                    signed.push((
                        tenant,
                        seq,
                        Checkpoint::sign(tenant, seq, &hash, now, &self.key),
                    ));
                }
            }
        }
        let checkpoints: Vec<Checkpoint> = signed.iter().map(|(_, _, c)| c.clone()).collect();
        self.sink.write(checkpoints.clone()).await?;
        for (tenant, seq, _) in signed {
            self.schedule.mark(tenant, seq, now);
        }
        Ok(checkpoints)
    }

    /// Runs in the background until [`CheckpointTask::finish`].
    pub fn start(mut self) -> CheckpointTask {
        let (stop, mut stopped) = oneshot::channel::<()>();
        let handle = tokio::spawn(async move {
            let mut tick = tokio::time::interval(Duration::from_secs(1));
            tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
            loop {
                tokio::select! {
                    _ = tick.tick() => {
                        if let Err(error) = self.run_once(false).await {
                            tracing::error!(error = format!("{error:#}"), "audit checkpoint failed");
                        }
                    }
                    _ = &mut stopped => break,
                }
            }
            match self.run_once(true).await {
                Ok(written) => tracing::info!(
                    checkpoints = written.len(),
                    "final audit checkpoints written"
                ),
                Err(error) => tracing::error!(
                    error = format!("{error:#}"),
                    "final audit checkpoint failed"
                ),
            }
        });
        CheckpointTask { stop, handle }
    }
}

/// The running checkpointer.
pub struct CheckpointTask {
    stop: oneshot::Sender<()>,
    handle: JoinHandle<()>,
}

impl CheckpointTask {
    /// Stops the loop after a last pass that signs every chain's head.
    pub async fn finish(self) {
        let _ = self.stop.send(());
        let _ = self.handle.await;
    }
}
