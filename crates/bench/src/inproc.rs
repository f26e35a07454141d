//! `inproc`: the baselines without HTTP. The same reads and searches the load generator sends,
//! run in this process against the server's own database and keys:
//!
//! - `store read`: `Store::current` only (one indexed fetch of a sealed row): the raw store;
//! - `domain read` / `domain nhs` / `domain family`: the whole use case (scope check, store,
//!   open, re-check, durable audit) exactly as the HTTP handler calls it;
//! - `domain read (memory audit)`: the same read whose audit records go to a bare in-memory
//!   append ([`MemorySink`]) instead of the database, in the same run: the durable trail's cost
//!   is the difference. Which of the two reads run is a benchmark switch (`--audit`); the
//!   server has no such setting. With both, the two take turns in [`ALTERNATIONS`] rounds, and
//!   the ratio is also shown per round. This is a diagnostic: issue #4 point 9's target (the
//!   durable read at 75 % or more of this one) is for the server's read, which `http-audit`
//!   measures over HTTP. Here, without HTTP, the read is so cheap that the wait for a shared
//!   commit bounds the durable read, and the share is lower.
//!
//! Each operation's line also shows the CPU time the whole process used per operation (every
//! thread: the tasks, the audit committer, SQLite), which moves far less than the rates do when
//! the shared machine's speed changes.
//!
//! The principal comes from a real bearer token (obtained over HTTP from the running server,
//! then checked here by `Authority::authenticate_bearer`), so nothing is bypassed. The server
//! should be idle meanwhile: on SQLite both processes share the one write lock for audit. On
//! SQLite, `--stop-server PID` stops the server once the token and sample are fetched: the
//! server holds the audit journal, and the durable read measured here should pass through it
//! as the server's does (a second process appends straight to the database).

use std::path::Path;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use anyhow::Context;
use carevault_crypto::{Kek, KeyEncryptionKey};
use carevault_domain::access::{AssertionVerifier, Authority};
use carevault_domain::audit::{AuditRecord, AuditSink, AuditTrail};
use carevault_domain::clock::{Clock, SystemClock};
use carevault_domain::keyring::Keyring;
use carevault_domain::principal::Principal;
use carevault_domain::records::Records;
use carevault_domain::store::{Store, StoreError, StoreResult};
use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{Value, json};

use crate::client::TokenSource;
use crate::load::{LoadOptions, Sampled, sample_patients};
use carevault_bench::synth::Rng;

/// The part of `carevault.toml` this needs; other fields are ignored.
#[derive(Deserialize)]
struct ConfigFile {
    database: DatabaseSection,
    keys: KeysSection,
}

#[derive(Deserialize)]
struct DatabaseSection {
    url: String,
}

#[derive(Deserialize)]
struct KeysSection {
    dir: std::path::PathBuf,
}

/// Bearer checks and the operator's audit search never verify assertions; this verifier
/// refuses everything.
pub(crate) struct NoAssertions;

impl AssertionVerifier for NoAssertions {
    fn unverified_issuer(&self, _assertion: &str) -> Result<String, String> {
        Err("not used by the in-process bench".to_owned())
    }
    fn verify(
        &self,
        _assertion: &str,
        _client_id: &str,
        _jwks: &str,
        _token_url: &str,
        _now_s: i64,
    ) -> Result<(String, i64), String> {
        Err("not used by the in-process bench".to_owned())
    }
    fn canonical_jwks(&self, _jwks: &str) -> Result<String, String> {
        Err("not used by the in-process bench".to_owned())
    }
}

/// Which audit trail the domain read runs with (nhs and family always use the durable one).
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum ReadAudit {
    /// The durable trail, as the server runs.
    Durable,
    /// A bare in-memory append.
    Memory,
    /// Both, one after the other, and the ratio of their throughputs.
    Both,
}

/// The in-memory log keeps at most this many records: it is emptied when it would pass it.
const MEMORY_LOG_LIMIT: usize = 100_000;

/// A bare in-memory append: the floor the durable trail is measured against.
#[derive(Default)]
pub(crate) struct MemorySink {
    log: Mutex<Vec<AuditRecord>>,
}

#[async_trait::async_trait]
impl AuditSink for MemorySink {
    async fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        let mut log = self
            .log
            .lock()
            .map_err(|_| StoreError::Backend("the in-memory audit log is poisoned".to_owned()))?;
        if log.len() + records.len() > MEMORY_LOG_LIMIT {
            log.clear();
        }
        log.extend_from_slice(records);
        Ok(())
    }
}

/// With `--audit both`, the durable and the memory-append reads take turns this many times
/// within their --duration each. Measured one after the other for 10 s each, their ratio moved
/// from 23 to 50 % between runs on the shared machine, mostly with the memory read's rate.
const ALTERNATIONS: u32 = 4;

#[derive(Clone, Copy, PartialEq, Eq)]
enum Operation {
    StoreRead,
    DomainRead,
    DomainReadMemoryAudit,
    DomainNhs,
    DomainFamily,
}

impl Operation {
    fn name(self) -> &'static str {
        match self {
            Operation::StoreRead => "store read",
            Operation::DomainRead => "domain read",
            Operation::DomainReadMemoryAudit => "domain read (memory audit)",
            Operation::DomainNhs => "domain nhs",
            Operation::DomainFamily => "domain family",
        }
    }
}

struct Bench {
    store: Arc<dyn Store>,
    records: Arc<Records>,
    /// The same use cases with the audit records appended in memory only.
    memory_audit_records: Arc<Records>,
    principal: Principal,
    sample: Arc<Vec<Sampled>>,
    clock: SystemClock,
}

async fn once(context: &Bench, operation: Operation, patient: &Sampled) -> anyhow::Result<()> {
    let patient_type = carevault_fhir::resource_type("Patient").context("no Patient type")?;
    let now = context.clock.now_ms();
    match operation {
        Operation::StoreRead => {
            context
                .store
                .current(context.principal.scope(), "Patient", &patient.id)
                .await?
                .context("sampled patient missing")?;
        }
        Operation::DomainRead | Operation::DomainReadMemoryAudit => {
            let records = if operation == Operation::DomainRead {
                &context.records
            } else {
                &context.memory_audit_records
            };
            records
                .read(&context.principal, patient_type, &patient.id, now)
                .await?;
        }
        Operation::DomainNhs | Operation::DomainFamily => {
            let pairs = match operation {
                Operation::DomainNhs => vec![(
                    "identifier".to_owned(),
                    format!("https://fhir.nhs.uk/Id/nhs-number|{}", patient.nhs_number),
                )],
                _ => vec![
                    ("family".to_owned(), patient.family.clone()),
                    ("birthdate".to_owned(), patient.birth_date.clone()),
                ],
            };
            let page = context
                .records
                .search(&context.principal, patient_type, &pairs, now)
                .await?;
            anyhow::ensure!(!page.matches.is_empty(), "search found nothing");
        }
    }
    Ok(())
}

/// Sends SIGTERM to the server `pid` and waits (at most 30 s) until `base` no longer answers,
/// then a moment more for the process to close its files (the journal's lock goes with them).
async fn stop(pid: u32, base: &str) -> anyhow::Result<()> {
    let status = std::process::Command::new("kill")
        .arg(pid.to_string())
        .status()
        .context("running kill")?;
    anyhow::ensure!(status.success(), "kill {pid} failed: {status}");
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(30);
    while client.get(format!("{base}/healthz")).send().await.is_ok() {
        anyhow::ensure!(
            Instant::now() < deadline,
            "the server {pid} did not stop within 30 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    tokio::time::sleep(Duration::from_millis(500)).await;
    Ok(())
}

pub async fn run(
    data_dir: &Path,
    options: LoadOptions,
    read_audit: ReadAudit,
    tokens: TokenSource,
    stop_server: Option<u32>,
) -> anyhow::Result<Value> {
    // Over HTTP, while the server runs: the token (checked in process below) and the sample.
    let token = tokens.bearer().await?;
    let sample = Arc::new(sample_patients(&options, &tokens).await?);
    anyhow::ensure!(!sample.is_empty(), "no patients sampled");
    if let Some(pid) = stop_server {
        stop(pid, &options.base).await?;
    }
    let config_path = data_dir.join("carevault.toml");
    let config: ConfigFile = toml::from_str(
        &std::fs::read_to_string(&config_path)
            .with_context(|| format!("reading {}", config_path.display()))?,
    )
    .with_context(|| format!("parsing {}", config_path.display()))?;
    let url = if config.database.url.starts_with("postgres") {
        config.database.url.clone()
    } else {
        let path = config
            .database
            .url
            .strip_prefix("sqlite:")
            .unwrap_or(&config.database.url);
        format!("sqlite:{}", data_dir.join(path).display())
    };
    let keys_dir = data_dir.join(&config.keys.dir);
    let kek: Arc<dyn KeyEncryptionKey> = Arc::new(
        Kek::load_file(&keys_dir.join("kek.key")).context("loading the key-encryption key")?,
    );
    let store = carevault_store::open_store(&url)
        .await
        .context("opening the store")?;
    let keyring = Arc::new(Keyring::new(kek, store.clone()));
    let audit = AuditTrail::start(store.clone());
    let records = Arc::new(Records::new(store.clone(), keyring.clone(), audit.clone()));
    let memory_audit_records = Arc::new(Records::new(
        store.clone(),
        keyring,
        AuditTrail::inline(Arc::new(MemorySink::default())),
    ));
    let authority = Authority::new(store.clone(), audit, Arc::new(NoAssertions), 300);
    let clock = SystemClock;
    let principal = authority
        .authenticate_bearer(&token, None, clock.now_ms())
        .await
        .context("checking the bearer token in process")?;
    let context = Arc::new(Bench {
        store,
        records,
        memory_audit_records,
        principal,
        sample,
        clock,
    });
    let mut results = Vec::new();
    println!(
        "\nin process, no HTTP ({} tasks, {:?} each)",
        options.connections, options.duration
    );
    println!(
        "  {:<26} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8} {:>9}",
        "operation", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9", "CPU µs/op"
    );
    // Each entry is measured for the whole --duration; the two reads of `--audit both` take
    // turns in ALTERNATIONS rounds within theirs, so a change in the shared machine's speed
    // falls on both alike.
    let mut schedule: Vec<Vec<Operation>> = vec![vec![Operation::StoreRead]];
    match read_audit {
        ReadAudit::Durable => schedule.push(vec![Operation::DomainRead]),
        ReadAudit::Memory => schedule.push(vec![Operation::DomainReadMemoryAudit]),
        ReadAudit::Both => schedule.push(vec![
            Operation::DomainRead,
            Operation::DomainReadMemoryAudit,
        ]),
    }
    schedule.extend([vec![Operation::DomainNhs], vec![Operation::DomainFamily]]);
    let mut reads: (Option<Measured>, Option<Measured>) = (None, None);
    let mut round_shares = Vec::new();
    for operations in schedule {
        let rounds = if operations.len() > 1 {
            ALTERNATIONS
        } else {
            1
        };
        let turn = (options.duration / rounds).max(Duration::from_secs(1));
        let mut measured: Vec<Option<Measured>> = vec![None; operations.len()];
        for round in 0..rounds {
            let mut rates = Vec::new();
            for (index, operation) in operations.iter().enumerate() {
                let run = phase(
                    &context,
                    *operation,
                    options.connections,
                    turn,
                    options.seed ^ u64::from(round),
                )
                .await?;
                rates.push(run.rate());
                match &mut measured[index] {
                    Some(sum) => sum.add(run)?,
                    empty => *empty = Some(run),
                }
            }
            if let [durable, memory] = rates[..] {
                round_shares.push(durable / memory.max(f64::MIN_POSITIVE));
            }
        }
        for (operation, run) in operations.iter().zip(measured) {
            let Some(run) = run else { continue };
            let ms = |q: f64| run.quantile_ms(q);
            let cpu = run.cpu_us_per_op();
            println!(
                "  {:<26} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2} {:>9}{}",
                operation.name(),
                run.histogram.len(),
                run.rate(),
                ms(0.5),
                ms(0.9),
                ms(0.99),
                ms(0.999),
                shown(cpu),
                if run.errors > 0 {
                    format!("  ({} errors)", run.errors)
                } else {
                    String::new()
                }
            );
            results.push(json!({
                "op": operation.name(), "requests": run.histogram.len(), "errors": run.errors,
                "rps": run.rate(), "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99),
                "p999_ms": ms(0.999), "cpu_us_per_op": cpu,
            }));
            match operation {
                Operation::DomainRead => reads.0 = Some(run),
                Operation::DomainReadMemoryAudit => reads.1 = Some(run),
                _ => {}
            }
        }
    }
    let mut report = json!({"connections": options.connections, "inproc": results});
    if let (Some(durable), Some(memory)) = reads {
        let share = durable.rate() / memory.rate().max(f64::MIN_POSITIVE);
        let p99 = |run: &Measured| run.quantile_ms(0.99);
        let rounds = round_shares
            .iter()
            .map(|share| format!("{:.1}", share * 100.0))
            .collect::<Vec<_>>()
            .join(", ");
        println!(
            "  durable trail: the read keeps {:.1} % of its throughput with a bare in-memory \
             append, in process (by round: {rounds} %; a diagnostic: the target is for the \
             server's read, see `http-audit`); p99 {:.2} ms durable, {:.2} ms memory; CPU per \
             read {} µs durable, {} µs memory",
            share * 100.0,
            p99(&durable),
            p99(&memory),
            shown(durable.cpu_us_per_op()),
            shown(memory.cpu_us_per_op()),
        );
        report["audit_cost"] = json!({
            "durable_rps": durable.rate(), "memory_rps": memory.rate(), "share": share,
            "durable_p99_ms": p99(&durable), "memory_p99_ms": p99(&memory),
            "round_shares": round_shares,
            "durable_cpu_us": durable.cpu_us_per_op(), "memory_cpu_us": memory.cpu_us_per_op(),
        });
    }
    Ok(report)
}

/// What one phase measured.
#[derive(Clone)]
struct Measured {
    histogram: Histogram<u64>,
    seconds: f64,
    errors: u64,
    /// CPU time this process used meanwhile (every thread: the tasks, the audit committer,
    /// SQLite's), when `/proc` tells.
    cpu_seconds: Option<f64>,
}

impl Measured {
    fn rate(&self) -> f64 {
        self.histogram.len() as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    fn quantile_ms(&self, quantile: f64) -> f64 {
        self.histogram.value_at_quantile(quantile) as f64 / 1000.0
    }

    fn cpu_us_per_op(&self) -> Option<f64> {
        let operations = self.histogram.len();
        self.cpu_seconds
            .filter(|_| operations > 0)
            .map(|seconds| seconds * 1e6 / operations as f64)
    }

    fn add(&mut self, other: Measured) -> anyhow::Result<()> {
        self.histogram
            .add(&other.histogram)
            .context("merging histograms")?;
        self.seconds += other.seconds;
        self.errors += other.errors;
        self.cpu_seconds = self.cpu_seconds.zip(other.cpu_seconds).map(|(a, b)| a + b);
        Ok(())
    }
}

/// A CPU figure for the table, or a dash where `/proc` did not tell.
fn shown(micros: Option<f64>) -> String {
    micros.map_or("–".to_owned(), |us| format!("{us:.1}"))
}

/// The CPU time (user and system) this process has used, from `/proc/self/stat`; `None` where
/// there is no such file. Its unit is the kernel's USER_HZ, 100 per second on Linux.
fn process_cpu_seconds() -> Option<f64> {
    cpu_seconds_of(&std::fs::read_to_string("/proc/self/stat").ok()?)
}

/// User plus system time, in seconds, from the text of a `/proc/<pid>/stat` file.
pub(crate) fn cpu_seconds_of(stat: &str) -> Option<f64> {
    const USER_HZ: f64 = 100.0;
    // The command name (field 2) is in parentheses and may hold spaces; fields 14 and 15 (user
    // and system time) are the 12th and 13th after it.
    let after_name = &stat[stat.rfind(')')? + 1..];
    let mut fields = after_name.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    Some((user + system) / USER_HZ)
}

async fn phase(
    context: &Arc<Bench>,
    operation: Operation,
    tasks: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<Measured> {
    let cpu_before = process_cpu_seconds();
    let started = Instant::now();
    let deadline = started + duration;
    let mut handles = Vec::new();
    for task in 0..tasks {
        let context = context.clone();
        handles.push(tokio::spawn(async move {
            let mut histogram = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
            let mut errors = 0u64;
            let mut rng = Rng::new(seed ^ (task as u64) << 20);
            while Instant::now() < deadline {
                let patient = rng.pick(context.sample.as_slice());
                let sent = Instant::now();
                match once(&context, operation, patient).await {
                    Ok(()) => {
                        histogram.saturating_record(sent.elapsed().as_micros().max(1) as u64);
                    }
                    Err(_) => errors += 1,
                }
            }
            anyhow::Ok((histogram, errors))
        }));
    }
    let mut merged = Histogram::<u64>::new_with_bounds(1, 120_000_000, 3)?;
    let mut errors = 0;
    for handle in handles {
        let (histogram, task_errors) = handle.await??;
        merged.add(&histogram).context("merging histograms")?;
        errors += task_errors;
    }
    let seconds = started.elapsed().as_secs_f64();
    let cpu_seconds = cpu_before
        .zip(process_cpu_seconds())
        .map(|(before, after)| after - before);
    Ok(Measured {
        histogram: merged,
        seconds,
        errors,
        cpu_seconds,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    #[test]
    fn cpu_time_is_read_past_a_command_name_with_spaces_and_parentheses() {
        let stat = "4242 (bench (x) y) S 1 4242 4242 0 -1 4194560 500 0 0 0 1234 567 8 9 20 0 9";
        assert_eq!(cpu_seconds_of(stat), Some((1234.0 + 567.0) / 100.0));
        assert_eq!(cpu_seconds_of("4242 (bench) S 1"), None);
        assert_eq!(cpu_seconds_of("no name at all"), None);
        assert!(process_cpu_seconds().is_some(), "Linux has /proc/self/stat");
    }
}
