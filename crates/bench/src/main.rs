//! `carevault-bench`: the measuring instruments of carevault.
//!
//! - `populate`: a seeded synthetic population written as FHIR transaction Bundles over HTTP;
//! - `load`: a closed-loop HTTP load at a fixed number of connections for a fixed time, with
//!   per-operation throughput and latency beside the same server's `/healthz` ceiling;
//! - `inproc`: the same reads and searches through the domain and the store in this process,
//!   without HTTP (the "raw store" baseline), and the read with its audit records appended in
//!   memory only (the durable trail's cost);
//! - `serve` and `http-audit`: the server as `carevault serve` composes it, with the durable
//!   audit trail or a bare in-memory append behind reads, and reads by id over HTTP against
//!   each in turn (the durable trail's cost on the server's read);
//! - `audit-trail`: the audit trail at scale (append, size, search, verify) in a fresh
//!   database, beside in-memory baselines of the same records.
//!
//! Every client obtains its token as a real one does (ES384 assertion, `/oauth/token`).

mod audit_trail;
mod client;
mod http_audit;
mod inproc;
mod load;
mod populate;

use std::path::PathBuf;
use std::process::ExitCode;

use anyhow::Context;
use clap::{Parser, Subcommand};

use crate::client::{ClientKey, Credentials, TokenSource};

/// The server's allocator, so the in-process baselines run the server's code as it runs there.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Parser)]
#[command(
    name = "carevault-bench",
    version,
    about = "Measuring instruments for carevault"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Write a seeded synthetic population to a running server as transaction Bundles.
    Populate {
        /// The server's data directory: used to register the bench client through the
        /// `carevault` CLI (unless --client-id and --key are given).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Tenant name (found, or created).
        #[arg(long, default_value = "Bench Urgent Care")]
        tenant: String,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        /// Total population size: patients `first..patients` are written.
        #[arg(long, default_value_t = 10_000)]
        patients: u64,
        /// Start at this patient index (to grow an existing population).
        #[arg(long, default_value_t = 0)]
        first: u64,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Most entries per transaction Bundle (whole patients are never split).
        #[arg(long, default_value_t = 100)]
        batch: usize,
        /// Bundles in flight at once. The SQLite server writes the bundles that wait for its
        /// writer together, in one transaction, so more in flight import faster (32: about
        /// 1.3x the rate of 4).
        #[arg(long, default_value_t = 32)]
        connections: usize,
        #[arg(long)]
        client_id: Option<String>,
        /// PEM PKCS#8 ES384 private key of --client-id; with --data-dir and no --client-id, a
        /// new key is written here (default DATA_DIR/bench-client.pem).
        #[arg(long)]
        key: Option<PathBuf>,
        /// The `carevault` binary (default: next to this one, else on PATH).
        #[arg(long)]
        carevault: Option<PathBuf>,
        /// Write the figures as JSON here.
        #[arg(long)]
        json_out: Option<PathBuf>,
        /// No progress bar.
        #[arg(long)]
        quiet: bool,
    },
    /// Drive a running server with a mix of operations for a fixed time.
    Load {
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        #[command(flatten)]
        who: Who,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Length of every measured phase (20s, 500ms, 2m).
        #[arg(long, default_value = "20s")]
        duration: String,
        #[arg(long, default_value = "3s")]
        warmup: String,
        /// Weighted operations of the mixed phase (empty: no mixed phase).
        #[arg(
            long,
            default_value = "read=60,nhs=15,family=10,create=10,transaction=3,history=2"
        )]
        mix: String,
        /// Operations also measured alone, each for --duration, before the mix.
        #[arg(long, default_value = "")]
        solo: String,
        /// The population's seed and size (as given to populate).
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 10_000)]
        patients: u64,
        /// Patients sampled (ids fetched by NHS number) for reads and searches.
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Reads and searches through the domain and store in this process (no HTTP), against the
    /// data directory of a server that is running (for its token endpoint) but idle.
    Inproc {
        #[arg(long)]
        data_dir: PathBuf,
        #[arg(long, default_value = "http://127.0.0.1:8080")]
        base: String,
        #[command(flatten)]
        who: Who,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        #[arg(long, default_value = "10s")]
        duration: String,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 10_000)]
        patients: u64,
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        /// The audit trail behind the domain read: the durable one, a bare in-memory append,
        /// or both in turn with the ratio of their throughputs (a benchmark switch only; nhs
        /// and family always use the durable trail).
        #[arg(long, value_enum, default_value = "both")]
        audit: inproc::ReadAudit,
        /// Stop the server with this process id (SIGTERM) once the token and the sample are
        /// fetched, and open the store after it has gone. On SQLite the server holds the audit
        /// journal, and a second process appends straight to the database: to measure the
        /// durable read the server makes, the server must be gone.
        #[arg(long)]
        stop_server: Option<u32>,
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Serve a data directory on loopback as `carevault serve` does, with the audit trail
    /// behind reads chosen (a benchmark switch: the `carevault` binary has none). Stops on
    /// SIGTERM or Ctrl-C. `http-audit` starts it; stop the data directory's own server first.
    Serve {
        #[arg(long)]
        data_dir: PathBuf,
        /// A loopback address, e.g. 127.0.0.1:8080.
        #[arg(long)]
        listen: std::net::SocketAddr,
        #[arg(long, value_enum)]
        audit: http_audit::ServeAudit,
    },
    /// Reads by id over HTTP against the same data directory served with the durable audit
    /// trail and with a bare in-memory append, in turn for --rounds rounds: the durable read's
    /// share of the memory-append read (issue #4 wants at least 75 %), p99 and server CPU per
    /// read. The data directory's own server must be stopped (on SQLite it holds the audit
    /// journal the durable reads should pass through).
    HttpAudit {
        #[arg(long)]
        data_dir: PathBuf,
        #[command(flatten)]
        who: Who,
        #[arg(long, default_value_t = 64)]
        connections: usize,
        /// Each measured turn (one trail, one round).
        #[arg(long, default_value = "5s")]
        duration: String,
        /// Reads before each turn, on the freshly started server.
        #[arg(long, default_value = "2s")]
        warmup: String,
        #[arg(long, default_value_t = 4)]
        rounds: u32,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        #[arg(long, default_value_t = 10_000)]
        patients: u64,
        #[arg(long, default_value_t = 1000)]
        sample: usize,
        #[arg(long)]
        json_out: Option<PathBuf>,
    },
    /// Append, size, search and verify a synthetic audit trail in a fresh database, against the
    /// targets for 10 million records (50,000 records/s appended, a search by patient in under
    /// 50 ms, verification in under 30 s, under 2 GiB on disk), beside in-memory baselines of
    /// the same records (a `Vec` push, the hash chain alone) measured in the same run.
    ///
    /// No server is needed: the command opens the store itself. The database is removed at the
    /// end unless --keep is given.
    AuditTrail {
        /// Records to append.
        #[arg(long, default_value_t = 10_000_000)]
        records: u64,
        /// Records per `append_audit` call, that is per shared commit (the server's group
        /// committer carries at most 512).
        #[arg(long, default_value_t = 512)]
        batch: usize,
        /// Patients the records are about (a pool of UUIDs derived from --seed).
        #[arg(long, default_value_t = 100_000)]
        patients: u64,
        /// A PostgreSQL server, e.g. postgres://postgres@127.0.0.1:5432/postgres: a fresh
        /// database carevault_bench_audit_<random> is created on it (through the `postgres`
        /// maintenance database) and dropped at the end. Without it: a fresh SQLite file.
        #[arg(long)]
        database: Option<String>,
        /// Where the run's temporary directory goes (the SQLite file, the throwaway keys).
        #[arg(long, default_value = "/tmp")]
        dir: PathBuf,
        /// Searches by patient to time (random patients of the pool).
        #[arg(long, default_value_t = 1000)]
        searches: usize,
        #[arg(long, default_value_t = 1)]
        seed: u64,
        /// Write the figures as JSON here (for bench/report.py).
        #[arg(long, alias = "json-out")]
        json: Option<PathBuf>,
        /// Keep the database and the temporary directory, and print where they are.
        #[arg(long)]
        keep: bool,
        /// No progress bars.
        #[arg(long)]
        quiet: bool,
    },
}

#[derive(clap::Args)]
struct Who {
    /// The client id (or take it from --credentials).
    #[arg(long)]
    client_id: Option<String>,
    /// The client's PEM PKCS#8 ES384 private key.
    #[arg(long)]
    key: Option<PathBuf>,
    /// A credentials file written by `populate` (DATA_DIR/bench-client.json).
    #[arg(long)]
    credentials: Option<PathBuf>,
}

impl Who {
    fn resolve(&self) -> anyhow::Result<(String, ClientKey)> {
        if let (Some(id), Some(key)) = (&self.client_id, &self.key) {
            return Ok((id.clone(), ClientKey::load(key)?));
        }
        let path = self
            .credentials
            .as_ref()
            .context("give --client-id and --key, or --credentials")?;
        let text =
            std::fs::read_to_string(path).with_context(|| format!("reading {}", path.display()))?;
        let credentials: Credentials = serde_json::from_str(&text)?;
        Ok((
            credentials.client_id,
            ClientKey::load(&credentials.key_file)?,
        ))
    }
}

const SCOPE: &str = "system/*.cruds";

fn write_json(path: Option<&PathBuf>, value: &serde_json::Value) -> anyhow::Result<()> {
    if let Some(path) = path {
        std::fs::write(path, serde_json::to_string_pretty(value)?)
            .with_context(|| format!("writing {}", path.display()))?;
    }
    Ok(())
}

async fn run(cli: Cli) -> anyhow::Result<()> {
    match cli.command {
        Command::Populate {
            data_dir,
            tenant,
            base,
            patients,
            first,
            seed,
            batch,
            connections,
            client_id,
            key,
            carevault,
            json_out,
            quiet,
        } => {
            let (client_id, key) = match (client_id, key, data_dir) {
                (Some(id), Some(key), _) => (id, ClientKey::load(&key)?),
                (None, key, Some(data_dir)) => {
                    let key_file = key.unwrap_or_else(|| data_dir.join("bench-client.pem"));
                    let binary = client::carevault_binary(carevault.as_deref());
                    let credentials = client::register(&binary, &data_dir, &tenant, &key_file)?;
                    let saved = data_dir.join("bench-client.json");
                    std::fs::write(&saved, serde_json::to_string_pretty(&credentials)?)?;
                    println!(
                        "registered client {} in tenant {} ({}); credentials in {}",
                        credentials.client_id,
                        credentials.tenant,
                        tenant,
                        saved.display()
                    );
                    (credentials.client_id, ClientKey::load(&key_file)?)
                }
                _ => {
                    anyhow::bail!("give --data-dir (to register a client) or --client-id and --key")
                }
            };
            let tokens = TokenSource::new(&base, &client_id, key, SCOPE).await?;
            let report = populate::populate(
                populate::PopulateOptions {
                    base,
                    seed,
                    first,
                    patients,
                    batch: batch.max(1),
                    connections: connections.max(1),
                    quiet,
                },
                tokens,
            )
            .await?;
            println!(
                "wrote {} patients, {} resources in {} bundles in {:.1} s: {:.0} patients/s, {:.0} resources/s",
                report.patients,
                report.resources,
                report.bundles,
                report.seconds,
                report.patients as f64 / report.seconds,
                report.resources as f64 / report.seconds
            );
            write_json(json_out.as_ref(), &report.to_json())
        }
        Command::Load {
            base,
            who,
            connections,
            duration,
            warmup,
            mix,
            solo,
            seed,
            patients,
            sample,
            json_out,
        } => {
            let (client_id, key) = who.resolve()?;
            let tokens = TokenSource::new(&base, &client_id, key, SCOPE).await?;
            let mix = if mix.trim().is_empty() {
                Vec::new()
            } else {
                load::parse_mix(&mix)?
            };
            let options = load::LoadOptions {
                base,
                connections: connections.max(1),
                duration: load::parse_duration(&duration)?,
                warmup: load::parse_duration(&warmup)?,
                mix,
                solo: load::parse_ops(&solo)?,
                seed,
                patients,
                sample: sample.max(1),
            };
            let report = load::run(options, tokens).await?;
            write_json(json_out.as_ref(), &report)
        }
        Command::Inproc {
            data_dir,
            base,
            who,
            connections,
            duration,
            seed,
            patients,
            sample,
            audit,
            stop_server,
            json_out,
        } => {
            let (client_id, key) = who.resolve()?;
            let tokens = TokenSource::new(&base, &client_id, key, SCOPE).await?;
            let options = load::LoadOptions {
                base,
                connections: connections.max(1),
                duration: load::parse_duration(&duration)?,
                warmup: std::time::Duration::ZERO,
                mix: Vec::new(),
                solo: Vec::new(),
                seed,
                patients,
                sample: sample.max(1),
            };
            let report = inproc::run(&data_dir, options, audit, tokens, stop_server).await?;
            write_json(json_out.as_ref(), &report)
        }
        Command::Serve {
            data_dir,
            listen,
            audit,
        } => {
            anyhow::ensure!(
                listen.ip().is_loopback(),
                "--listen {listen}: the bench server serves loopback only (e.g. 127.0.0.1:8080)"
            );
            http_audit::serve(&data_dir, listen, audit).await
        }
        Command::HttpAudit {
            data_dir,
            who,
            connections,
            duration,
            warmup,
            rounds,
            seed,
            patients,
            sample,
            json_out,
        } => {
            let (client_id, key) = who.resolve()?;
            let report = http_audit::run(http_audit::HttpAuditOptions {
                data_dir,
                client_id,
                key,
                connections: connections.max(1),
                duration: load::parse_duration(&duration)?,
                warmup: load::parse_duration(&warmup)?,
                rounds,
                seed,
                patients,
                sample: sample.max(1),
            })
            .await?;
            write_json(json_out.as_ref(), &report)
        }
        Command::AuditTrail {
            records,
            batch,
            patients,
            database,
            dir,
            searches,
            seed,
            json,
            keep,
            quiet,
        } => {
            let report = audit_trail::run(audit_trail::AuditTrailOptions {
                records,
                batch,
                patients,
                database,
                dir,
                searches,
                seed,
                keep,
                quiet,
            })
            .await?;
            write_json(json.as_ref(), &report)
        }
    }
}

fn main() -> ExitCode {
    // jsonwebtoken needs exactly one crypto backend installed before it signs.
    let _already = jsonwebtoken::crypto::CryptoProvider::install_default(
        &jsonwebtoken::crypto::aws_lc::DEFAULT_PROVIDER,
    );
    let cli = Cli::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(runtime) => runtime,
        Err(error) => {
            eprintln!("error: cannot start the async runtime: {error}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(cli)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::Cli;

    /// The command lines `bench/run` gives: a flag taken for a positional argument (as
    /// `inproc --json-out` once was) fails here rather than in the middle of a benchmark run.
    #[test]
    fn bench_run_command_lines_parse() {
        let lines: [&[&str]; 6] = [
            &[
                "populate",
                "--data-dir",
                "d",
                "--base",
                "http://localhost:1",
                "--patients",
                "10",
                "--first",
                "0",
                "--seed",
                "1",
                "--quiet",
                "--json-out",
                "p.json",
            ],
            &[
                "load",
                "--credentials",
                "c.json",
                "--base",
                "http://localhost:1",
                "--patients",
                "10",
                "--seed",
                "1",
                "--connections",
                "64",
                "--duration",
                "1s",
                "--solo",
                "read,nhs",
                "--mix",
                "",
                "--json-out",
                "l.json",
            ],
            &[
                "inproc",
                "--data-dir",
                "d",
                "--credentials",
                "c.json",
                "--base",
                "http://localhost:1",
                "--patients",
                "10",
                "--seed",
                "1",
                "--connections",
                "64",
                "--duration",
                "1s",
                "--stop-server",
                "1",
                "--json-out",
                "i.json",
            ],
            &[
                "http-audit",
                "--data-dir",
                "d",
                "--credentials",
                "c.json",
                "--patients",
                "10",
                "--seed",
                "1",
                "--connections",
                "64",
                "--duration",
                "1s",
                "--json-out",
                "h.json",
            ],
            &[
                "serve",
                "--data-dir",
                "d",
                "--listen",
                "127.0.0.1:8080",
                "--audit",
                "memory",
            ],
            &[
                "audit-trail",
                "--records",
                "10",
                "--seed",
                "1",
                "--quiet",
                "--json",
                "a.json",
                "--dir",
                "d",
            ],
        ];
        for line in lines {
            let args = std::iter::once("carevault-bench").chain(line.iter().copied());
            if let Err(error) = Cli::try_parse_from(args) {
                panic!("{line:?}: {error}");
            }
        }
    }
}
