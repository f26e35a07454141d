//! `audit-trail`: the audit trail at scale, measured against the targets of issue #4 (points 2
//! and 9), each figure beside a baseline taken in the same run.
//!
//! 1. Baselines: the same synthetic records pushed into a `Vec` (a bare in-memory append), and
//!    chained in memory with [`chain::extend`] (the hash cost alone).
//! 2. Append: the records go through `Store::append_audit` in batches of `--batch`, one shared
//!    commit each, into a tenant of a fresh database. A thread generates the next batch while
//!    the current one commits; only the time inside `append_audit` counts for the rate (the
//!    wall-clock rate is reported too). The store's chain head must equal the in-memory one.
//! 3. Size: the database after appending, less the same database before (SQLite after a WAL
//!    checkpoint; PostgreSQL by `pg_database_size`).
//! 4. Search: the host operator's search by patient (`carevault audit search --patient`, through
//!    `Administration::search_audit`, which also appends the search's own audit record), for
//!    random patients; then one search by principal and one by action and outcome.
//! 5. Verify: `verify_chain` over the whole chain (the benchmark's records and the searches').
//!
//! The database is created for the run and removed after it (unless `--keep`): SQLite in a new
//! directory under `--dir`; PostgreSQL as `carevault_bench_audit_<random>` on the server that
//! `--database` names.

mod figures;
mod traffic;

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{Context, ensure};
use carevault_bench::synth::Rng;
use carevault_crypto::{Kek, KeyEncryptionKey, SigningKey};
use carevault_domain::admin::Administration;
use carevault_domain::audit::chain::{self, ChainHash, GENESIS};
use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::audit::verify::verify_chain;
use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::clock::{Clock, SystemClock};
use carevault_domain::ids::TenantId;
use carevault_domain::keyring::Keyring;
use carevault_domain::store::{Store, TenantRecord, TenantStatus};
use hdrhistogram::Histogram;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;
use sqlx::{Connection, Row};

use crate::inproc::NoAssertions;
use figures::Figures;
use traffic::{Traffic, TrafficPlan, patient_id};

/// The targets are stated for a trail of this many records.
const TARGET_RECORDS: u64 = 10_000_000;
const TARGET_APPEND_PER_S: f64 = 50_000.0;
/// For the 99th percentile of searches by patient.
const TARGET_SEARCH_MS: f64 = 50.0;
const TARGET_VERIFY_S: f64 = 30.0;
const TARGET_BYTES: u64 = 2 << 30;

/// The records span the last 30 days.
const SPAN_MS: i64 = 30 * 24 * 3_600_000;
/// The in-memory baseline empties its log past this many records, so memory stays bounded.
const BASELINE_LOG_LIMIT: usize = 1_000_000;
/// Records per page of the operator's search (its default page).
const SEARCH_LIMIT: usize = 50;

pub struct AuditTrailOptions {
    pub records: u64,
    pub batch: usize,
    pub patients: u64,
    /// A PostgreSQL server URL; `None` for a fresh SQLite file under `dir`.
    pub database: Option<String>,
    pub dir: PathBuf,
    pub searches: usize,
    pub seed: u64,
    pub keep: bool,
    pub quiet: bool,
}

pub async fn run(options: AuditTrailOptions) -> anyhow::Result<Value> {
    ensure!(options.records > 0, "--records must be at least 1");
    ensure!(options.batch > 0, "--batch must be at least 1");
    ensure!(options.patients > 0, "--patients must be at least 1");
    let work = tempfile::Builder::new()
        .prefix("carevault-bench-audit-")
        .tempdir_in(&options.dir)
        .with_context(|| format!("creating a directory under {}", options.dir.display()))?;
    let engine = Engine::create(options.database.as_deref(), work.path()).await?;
    println!(
        "audit trail: {} records in batches of {}, {} patients, {} ({})",
        options.records,
        options.batch,
        options.patients,
        engine.name(),
        engine.describe()
    );
    let result = measure(&options, &engine, work.path()).await;
    if options.keep {
        let kept = work.keep();
        println!("kept {} and {}", kept.display(), engine.describe());
    } else {
        engine.remove().await?;
    }
    result
}

/// Where the trail is stored for the run.
enum Engine {
    Sqlite {
        file: PathBuf,
    },
    Postgres {
        /// The server's maintenance database (`postgres`), to create and drop the bench's.
        server: String,
        name: String,
        url: String,
    },
}

impl Engine {
    async fn create(database: Option<&str>, work: &Path) -> anyhow::Result<Engine> {
        let Some(url) = database else {
            return Ok(Engine::Sqlite {
                file: work.join("audit.sqlite"),
            });
        };
        ensure!(
            url.starts_with("postgres://") || url.starts_with("postgresql://"),
            "--database takes a postgres:// URL (leave it out for a fresh SQLite file under --dir)"
        );
        let server = with_database(url, "postgres")?;
        let suffix = uuid::Uuid::new_v4().simple().to_string();
        let name = format!("carevault_bench_audit_{}", &suffix[..12]);
        let mut connection = sqlx::PgConnection::connect(&server)
            .await
            .with_context(|| format!("connecting to {}", redacted(&server)))?;
        // The name is ours: a fixed prefix and hex digits, so it needs no quoting.
        sqlx::raw_sql(sqlx::AssertSqlSafe(format!("CREATE DATABASE {name}")))
            .execute(&mut connection)
            .await
            .with_context(|| format!("creating database {name}"))?;
        connection.close().await?;
        Ok(Engine::Postgres {
            url: with_database(url, &name)?,
            server,
            name,
        })
    }

    fn name(&self) -> &'static str {
        match self {
            Engine::Sqlite { .. } => "sqlite",
            Engine::Postgres { .. } => "postgres",
        }
    }

    fn url(&self) -> String {
        match self {
            Engine::Sqlite { file } => format!("sqlite:{}", file.display()),
            Engine::Postgres { url, .. } => url.clone(),
        }
    }

    fn describe(&self) -> String {
        match self {
            Engine::Sqlite { file } => file.display().to_string(),
            Engine::Postgres { name, server, .. } => {
                format!("database {name} on {}", redacted(server))
            }
        }
    }

    /// Bytes the database takes on disk now (SQLite: the file and its WAL after a checkpoint).
    async fn size_bytes(&self) -> anyhow::Result<u64> {
        match self {
            Engine::Sqlite { file } => {
                let options = sqlx::sqlite::SqliteConnectOptions::new().filename(file);
                let mut connection = sqlx::SqliteConnection::connect_with(&options)
                    .await
                    .context("opening the SQLite file for a checkpoint")?;
                sqlx::query("PRAGMA wal_checkpoint(TRUNCATE)")
                    .fetch_one(&mut connection)
                    .await
                    .context("checkpointing the WAL")?;
                connection.close().await?;
                let mut bytes = std::fs::metadata(file)
                    .with_context(|| format!("reading the size of {}", file.display()))?
                    .len();
                let mut wal = file.clone().into_os_string();
                wal.push("-wal");
                if let Ok(metadata) = std::fs::metadata(&wal) {
                    bytes += metadata.len();
                }
                Ok(bytes)
            }
            Engine::Postgres { url, .. } => {
                let mut connection = sqlx::PgConnection::connect(url).await?;
                let bytes: i64 = sqlx::query("SELECT pg_database_size(current_database())")
                    .fetch_one(&mut connection)
                    .await?
                    .try_get(0)?;
                connection.close().await?;
                Ok(u64::try_from(bytes).unwrap_or(0))
            }
        }
    }

    /// Drops the PostgreSQL database (the SQLite file goes with its directory).
    async fn remove(&self) -> anyhow::Result<()> {
        if let Engine::Postgres { server, name, .. } = self {
            let mut connection = sqlx::PgConnection::connect(server).await?;
            sqlx::raw_sql(sqlx::AssertSqlSafe(format!(
                "DROP DATABASE IF EXISTS {name} WITH (FORCE)"
            )))
            .execute(&mut connection)
            .await
            .with_context(|| format!("dropping database {name}"))?;
            connection.close().await?;
        }
        Ok(())
    }
}

/// The same server URL naming another database (the query string is kept).
fn with_database(url: &str, database: &str) -> anyhow::Result<String> {
    let (scheme, rest) = url.split_once("://").context("not a URL")?;
    let (authority, tail) = rest.split_once('/').unwrap_or((rest, ""));
    let query = tail.find('?').map_or("", |at| &tail[at..]);
    Ok(format!("{scheme}://{authority}/{database}{query}"))
}

/// The URL without its user and password, for messages.
fn redacted(url: &str) -> String {
    match (url.split_once("://"), url.rfind('@')) {
        (Some((scheme, _)), Some(at)) => format!("{scheme}://…{}", &url[at..]),
        _ => url.to_owned(),
    }
}

fn progress(len: u64, message: &'static str, quiet: bool) -> ProgressBar {
    if quiet {
        return ProgressBar::hidden();
    }
    let bar = ProgressBar::new(len);
    let style = ProgressStyle::with_template(
        "{msg:>9} [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(message);
    bar
}

fn histogram() -> anyhow::Result<Histogram<u64>> {
    Ok(Histogram::<u64>::new_with_bounds(1, 600_000_000, 3)?)
}

fn ms_at(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1_000.0
}

fn micros(elapsed: Duration) -> u64 {
    u64::try_from(elapsed.as_micros())
        .unwrap_or(u64::MAX)
        .max(1)
}

/// The in-memory baselines over the same records the store gets.
struct Baselines {
    vec_push_per_s: f64,
    chain_extend_per_s: f64,
    head: ChainHash,
}

fn measure_baselines(
    plan: TrafficPlan,
    batch: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Baselines> {
    let mut traffic = Traffic::new(plan);
    let mut log: Vec<AuditRecord> = Vec::with_capacity(BASELINE_LOG_LIMIT);
    let (mut push, mut hashing) = (Duration::ZERO, Duration::ZERO);
    let (mut seq, mut head) = (0, GENESIS);
    loop {
        let records = traffic.next_batch(batch);
        if records.is_empty() {
            break;
        }
        if log.len() + records.len() > BASELINE_LOG_LIMIT {
            log.clear();
        }
        let started = Instant::now();
        log.extend_from_slice(&records);
        push += started.elapsed();
        let started = Instant::now();
        let chained = chain::extend(seq, head, &records)?;
        hashing += started.elapsed();
        if let Some(last) = chained.last() {
            (seq, head) = (last.seq, last.hash);
        }
        bar.inc(records.len() as u64);
    }
    std::hint::black_box(&log);
    let records = plan.records as f64;
    Ok(Baselines {
        vec_push_per_s: records / push.as_secs_f64().max(1e-9),
        chain_extend_per_s: records / hashing.as_secs_f64().max(1e-9),
        head,
    })
}

struct Append {
    inside: Duration,
    wall: Duration,
    commits: Histogram<u64>,
}

async fn append_all(
    store: &Arc<dyn Store>,
    plan: TrafficPlan,
    batch: usize,
    bar: &ProgressBar,
) -> anyhow::Result<Append> {
    // Two batches ready ahead: the generator never holds up a commit, and memory stays small.
    let (sender, mut receiver) = tokio::sync::mpsc::channel::<Vec<AuditRecord>>(2);
    let generator = tokio::task::spawn_blocking(move || {
        let mut traffic = Traffic::new(plan);
        loop {
            let records = traffic.next_batch(batch);
            // An empty batch ends the stream; a closed channel means the appends failed.
            if records.is_empty() || sender.blocking_send(records).is_err() {
                break;
            }
        }
    });
    let mut commits = histogram()?;
    let mut inside = Duration::ZERO;
    let wall = Instant::now();
    while let Some(records) = receiver.recv().await {
        let started = Instant::now();
        store
            .append_audit(&records)
            .await
            .context("appending audit records")?;
        let elapsed = started.elapsed();
        inside += elapsed;
        commits.saturating_record(micros(elapsed));
        bar.inc(records.len() as u64);
    }
    let wall = wall.elapsed();
    generator.await.context("the record generator failed")?;
    Ok(Append {
        inside,
        wall,
        commits,
    })
}

struct Searches {
    by_patient: Histogram<u64>,
    mean_results: f64,
    by_principal: (f64, usize),
    by_action_outcome: (f64, usize),
    /// Each search appends its own record to the trail.
    made: u64,
}

async fn search_all(
    administration: &Administration,
    tenant: TenantId,
    options: &AuditTrailOptions,
    principal: String,
    bar: &ProgressBar,
) -> anyhow::Result<Searches> {
    let clock = SystemClock;
    let mut rng = Rng::new(options.seed ^ 0x7365_6172_6368);
    let mut by_patient = histogram()?;
    let mut results = 0usize;
    let timed = async |filter: AuditFilter| -> anyhow::Result<(Duration, usize)> {
        let now = clock.now_ms();
        let started = Instant::now();
        let found = administration
            .search_audit(tenant, &filter, now)
            .await
            .context("searching the trail")?;
        Ok((started.elapsed(), found.len()))
    };
    for _ in 0..options.searches {
        let patient = patient_id(options.seed, rng.below(options.patients));
        let (elapsed, found) = timed(AuditFilter {
            patient: Some(patient),
            limit: SEARCH_LIMIT,
            ..AuditFilter::default()
        })
        .await?;
        by_patient.saturating_record(micros(elapsed));
        results += found;
        bar.inc(1);
    }
    let (elapsed, found) = timed(AuditFilter {
        principal: Some(principal),
        limit: SEARCH_LIMIT,
        ..AuditFilter::default()
    })
    .await?;
    let by_principal = (elapsed.as_secs_f64() * 1_000.0, found);
    let (elapsed, found) = timed(AuditFilter {
        action: Some("read".to_owned()),
        outcome: Some(Outcome::Denied),
        limit: SEARCH_LIMIT,
        ..AuditFilter::default()
    })
    .await?;
    let by_action_outcome = (elapsed.as_secs_f64() * 1_000.0, found);
    Ok(Searches {
        by_patient,
        mean_results: results as f64 / options.searches.max(1) as f64,
        by_principal,
        by_action_outcome,
        made: options.searches as u64 + 2,
    })
}

async fn measure(
    options: &AuditTrailOptions,
    engine: &Engine,
    work: &Path,
) -> anyhow::Result<Value> {
    let clock = SystemClock;
    let now = clock.now_ms();
    let tenant = TenantId::generate();
    let plan = TrafficPlan {
        seed: options.seed,
        tenant,
        records: options.records,
        patients: options.patients,
        start_ms: now - SPAN_MS,
        span_ms: SPAN_MS,
    };

    let bar = progress(options.records, "baseline", options.quiet);
    let baselines = {
        let bar = bar.clone();
        let batch = options.batch;
        tokio::task::spawn_blocking(move || measure_baselines(plan, batch, &bar)).await??
    };
    bar.finish_and_clear();

    let store = carevault_store::open_store(&engine.url())
        .await
        .context("opening the store")?;
    store
        .create_tenant(
            &TenantRecord {
                id: tenant,
                name: format!("Audit bench {tenant}"),
                status: TenantStatus::Active,
                created_ms: now,
            },
            &[],
        )
        .await
        .context("creating the tenant")?;
    let empty_bytes = engine.size_bytes().await?;

    let bar = progress(options.records, "append", options.quiet);
    let append = append_all(&store, plan, options.batch, &bar).await?;
    bar.finish_and_clear();
    let head = store
        .audit_head(tenant)
        .await?
        .context("the tenant has no chain after appending")?;
    ensure!(
        head.seq == options.records as i64,
        "the chain head is at {} after appending {} records",
        head.seq,
        options.records
    );
    let head_matches = head.hash == Some(baselines.head);

    let bytes = engine.size_bytes().await?;
    let trail_bytes = bytes.saturating_sub(empty_bytes);

    let kek: Arc<dyn KeyEncryptionKey> =
        Arc::new(Kek::create_file(&work.join("kek.key")).context("creating a KEK")?);
    let administration = Administration::new(
        store.clone(),
        Arc::new(Keyring::new(kek, store.clone())),
        Arc::new(NoAssertions),
    );
    let bar = progress(options.searches as u64, "search", options.quiet);
    let searches = search_all(
        &administration,
        tenant,
        options,
        Traffic::new(plan).staff_principal(),
        &bar,
    )
    .await?;
    bar.finish_and_clear();

    let key = SigningKey::create_file(&work.join("signing.key"))
        .context("creating a signing key")?
        .verifying_key();
    let expected = options.records + searches.made;
    let bar = progress(expected, "verify", options.quiet);
    let started = Instant::now();
    let report = verify_chain(store.clone(), tenant, Vec::new(), &key, &|n| bar.inc(n))
        .await
        .context("verifying the chain")?;
    let verify_s = started.elapsed().as_secs_f64();
    bar.finish_and_clear();
    ensure!(
        report.breaks.is_empty(),
        "verification found {} breaks, the first: {}",
        report.breaks.len(),
        report
            .breaks
            .first()
            .map(ToString::to_string)
            .unwrap_or_default()
    );
    ensure!(
        report.records == expected,
        "verification walked {} records where {expected} were appended",
        report.records
    );

    let figures = Figures {
        engine: engine.name(),
        records: options.records,
        options,
        baselines,
        append,
        empty_bytes,
        bytes,
        trail_bytes,
        searches,
        verify_s,
        verified: report.records,
        head_matches,
    };
    figures.print();
    ensure!(
        head_matches,
        "the store's chain head differs from the same records chained in memory"
    );
    Ok(figures.to_json())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn another_database_on_the_same_server() {
        assert_eq!(
            with_database("postgres://u:p@db:5432/postgres?sslmode=disable", "x").ok(),
            Some("postgres://u:p@db:5432/x?sslmode=disable".to_owned())
        );
        assert_eq!(
            with_database("postgresql://db", "x").ok(),
            Some("postgresql://db/x".to_owned())
        );
        assert_eq!(redacted("postgres://u:p@db/x"), "postgres://…@db/x");
    }
}
