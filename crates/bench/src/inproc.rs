//! `inproc`: the baselines without HTTP. The same reads and searches the load generator sends,
//! run in this process against the server's own database and keys:
//!
//! - `store read`: `Store::current` only (one indexed fetch of a sealed row): the raw store;
//! - `domain read` / `domain nhs` / `domain family`: the whole use case (scope check, store,
//!   open, re-check, durable audit) exactly as the HTTP handler calls it;
//! - `domain read (memory audit)`: the same read whose audit records go to a bare in-memory
//!   append ([`MemorySink`]) instead of the database, in the same run: the durable trail's cost
//!   is the difference (issue #4 point 2 wants the durable read at 75 % or more of this one).
//!   Which of the two reads run is a benchmark switch (`--audit`); the server has no such
//!   setting.
//!
//! The principal comes from a real bearer token (obtained over HTTP from the running server,
//! then checked here by `Authority::authenticate_bearer`), so nothing is bypassed. The server
//! should be idle meanwhile: on SQLite both processes share the one write lock for audit.

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
struct MemorySink {
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

/// The durable trail's share of the memory-append read throughput that issue #4 asks for.
const TARGET_DURABLE_SHARE: f64 = 0.75;

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

pub async fn run(
    data_dir: &Path,
    options: LoadOptions,
    read_audit: ReadAudit,
    tokens: TokenSource,
) -> anyhow::Result<Value> {
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
    let token = tokens.bearer().await?;
    let principal = authority
        .authenticate_bearer(&token, None, clock.now_ms())
        .await
        .context("checking the bearer token in process")?;
    let sample = Arc::new(sample_patients(&options, &tokens).await?);
    anyhow::ensure!(!sample.is_empty(), "no patients sampled");
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
        "  {:<26} {:>9} {:>10} {:>8} {:>8} {:>8} {:>8}",
        "operation", "requests", "req/s", "p50 ms", "p90 ms", "p99 ms", "p99.9"
    );
    let mut operations = vec![Operation::StoreRead];
    if read_audit != ReadAudit::Memory {
        operations.push(Operation::DomainRead);
    }
    if read_audit != ReadAudit::Durable {
        operations.push(Operation::DomainReadMemoryAudit);
    }
    operations.extend([Operation::DomainNhs, Operation::DomainFamily]);
    let mut reads = (None, None);
    for operation in operations {
        let (histogram, seconds, errors) = phase(
            &context,
            operation,
            options.connections,
            options.duration,
            options.seed,
        )
        .await?;
        let rate = histogram.len() as f64 / seconds;
        let ms = |q: f64| histogram.value_at_quantile(q) as f64 / 1000.0;
        println!(
            "  {:<26} {:>9} {:>10.0} {:>8.2} {:>8.2} {:>8.2} {:>8.2}{}",
            operation.name(),
            histogram.len(),
            rate,
            ms(0.5),
            ms(0.9),
            ms(0.99),
            ms(0.999),
            if errors > 0 {
                format!("  ({errors} errors)")
            } else {
                String::new()
            }
        );
        results.push(json!({
            "op": operation.name(), "requests": histogram.len(), "errors": errors, "rps": rate,
            "p50_ms": ms(0.5), "p90_ms": ms(0.9), "p99_ms": ms(0.99), "p999_ms": ms(0.999),
        }));
        match operation {
            Operation::DomainRead => reads.0 = Some((rate, ms(0.99))),
            Operation::DomainReadMemoryAudit => reads.1 = Some((rate, ms(0.99))),
            _ => {}
        }
    }
    let mut report = json!({"connections": options.connections, "inproc": results});
    if let (Some((durable_rps, durable_p99)), Some((memory_rps, memory_p99))) = reads {
        let share = durable_rps / memory_rps.max(f64::MIN_POSITIVE);
        println!(
            "  durable trail: the read keeps {:.1} % of its throughput with a bare in-memory \
             append (target at least {:.0} %, {}); p99 {durable_p99:.2} ms durable, \
             {memory_p99:.2} ms memory",
            share * 100.0,
            TARGET_DURABLE_SHARE * 100.0,
            if share >= TARGET_DURABLE_SHARE {
                "met"
            } else {
                "missed"
            }
        );
        report["audit_cost"] = json!({
            "durable_rps": durable_rps, "memory_rps": memory_rps, "share": share,
            "durable_p99_ms": durable_p99, "memory_p99_ms": memory_p99,
            "target_share": TARGET_DURABLE_SHARE,
        });
    }
    Ok(report)
}

async fn phase(
    context: &Arc<Bench>,
    operation: Operation,
    tasks: usize,
    duration: Duration,
    seed: u64,
) -> anyhow::Result<(Histogram<u64>, f64, u64)> {
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
    Ok((merged, started.elapsed().as_secs_f64(), errors))
}
