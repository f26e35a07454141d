//! The durable audit trail's cost on the server's read, over HTTP (issue #4 points 2 and 9).
//!
//! - `serve`: the server exactly as `carevault serve` composes it (the `carevault-cli`
//!   library's [`Runtime`]), on loopback, with the audit trail behind reads either the server's
//!   durable one or a bare in-memory append. The switch is this benchmark's; the `carevault`
//!   binary has no such setting.
//! - `http-audit`: starts that server on a stopped server's data directory, once with each
//!   trail in turn for several rounds (the order swapped every round, so a drift of the shared
//!   machine's speed falls on both alike), drives reads by id at a fixed number of connections,
//!   and reports the durable read's share of the memory-append read's throughput, their p99
//!   latencies, and the server's CPU per read (from `/proc/<pid>/stat`).
//!
//! `inproc` measures the same comparison without HTTP, where the trail's cost is a larger share
//! of a smaller whole: a diagnostic, without a target.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use carevault_cli::config::default_public_url;
use carevault_cli::runtime::{Runtime, shutdown_signal};
use carevault_domain::audit::AuditTrail;
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::{ClientKey, TokenSource};
use crate::inproc::{MemorySink, cpu_seconds_of};
use crate::load::{LoadOptions, Op, run_phase, sample_patients};

/// The durable read's share of the memory-append read's throughput that issue #4 point 9 asks
/// for.
const TARGET_DURABLE_SHARE: f64 = 0.75;

/// The audit trail behind the bench server's reads.
#[derive(Clone, Copy, PartialEq, Eq, Debug, clap::ValueEnum)]
pub enum ServeAudit {
    /// The server's own: the group committer, durable before data leaves.
    Durable,
    /// A bare in-memory append by the request itself.
    Memory,
}

impl ServeAudit {
    fn name(self) -> &'static str {
        match self {
            ServeAudit::Durable => "durable",
            ServeAudit::Memory => "memory",
        }
    }
}

/// Serves `data_dir` on `listen` (loopback) until SIGTERM or Ctrl-C.
pub async fn serve(data_dir: &Path, listen: SocketAddr, audit: ServeAudit) -> anyhow::Result<()> {
    let mut runtime = Runtime::open(data_dir).await?;
    let listener = carevault_server::Listener::bind(listen, None)?;
    let bound = listener.local_addr()?;
    runtime.config.server.public_url = Some(default_public_url(bound, false));
    let trail = match audit {
        ServeAudit::Durable => AuditTrail::start(runtime.store.clone()),
        ServeAudit::Memory => AuditTrail::inline(Arc::new(MemorySink::default())),
    };
    let services = runtime.services_with(trail)?;
    println!(
        "carevault-bench serve: {} with the {} audit trail",
        runtime.config.public_url(),
        audit.name()
    );
    runtime
        .serve(data_dir, &services, listener, shutdown_signal())
        .await
}

pub struct HttpAuditOptions {
    pub data_dir: PathBuf,
    pub client_id: String,
    pub key: ClientKey,
    pub connections: usize,
    /// Each measured read phase.
    pub duration: Duration,
    /// Reads before each measured phase, on a freshly started server.
    pub warmup: Duration,
    pub rounds: u32,
    pub seed: u64,
    pub patients: u64,
    pub sample: usize,
}

/// What the reads of one trail measured, summed over the rounds.
struct Side {
    histogram: Histogram<u64>,
    seconds: f64,
    server_cpu_seconds: f64,
}

impl Side {
    fn new() -> anyhow::Result<Side> {
        Ok(Side {
            histogram: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            seconds: 0.0,
            server_cpu_seconds: 0.0,
        })
    }

    fn rate(&self) -> f64 {
        self.histogram.len() as f64 / self.seconds.max(f64::MIN_POSITIVE)
    }

    fn p99_ms(&self) -> f64 {
        self.histogram.value_at_quantile(0.99) as f64 / 1000.0
    }

    fn cpu_us_per_read(&self) -> f64 {
        self.server_cpu_seconds * 1e6 / (self.histogram.len().max(1) as f64)
    }
}

/// One server with one trail, reads measured against it.
struct Turn {
    rate: f64,
    p99_ms: f64,
    cpu_us: f64,
}

pub async fn run(options: HttpAuditOptions) -> anyhow::Result<Value> {
    anyhow::ensure!(options.rounds > 0, "--rounds must be at least 1");
    let executable = std::env::current_exe().context("finding this executable")?;
    let mut durable = Side::new()?;
    let mut memory = Side::new()?;
    let mut sample = None;
    let mut rounds = Vec::new();
    println!(
        "\nreads by id over HTTP, durable audit trail against a bare in-memory append \
         ({} connections, {:?} a turn, {} rounds)",
        options.connections, options.duration, options.rounds
    );
    println!(
        "  {:<6} {:<8} {:>10} {:>8} {:>14}",
        "round", "trail", "reads/s", "p99 ms", "server CPU µs"
    );
    for round in 0..options.rounds {
        let order = if round % 2 == 0 {
            [ServeAudit::Durable, ServeAudit::Memory]
        } else {
            [ServeAudit::Memory, ServeAudit::Durable]
        };
        let mut rates = [0.0; 2];
        for audit in order {
            let side = match audit {
                ServeAudit::Durable => &mut durable,
                ServeAudit::Memory => &mut memory,
            };
            let turn = measure(&executable, &options, audit, round, side, &mut sample).await?;
            println!(
                "  {:<6} {:<8} {:>10.0} {:>8.2} {:>14.1}",
                round + 1,
                audit.name(),
                turn.rate,
                turn.p99_ms,
                turn.cpu_us
            );
            rates[usize::from(audit == ServeAudit::Memory)] = turn.rate;
        }
        let share = rates[0] / rates[1].max(f64::MIN_POSITIVE);
        println!(
            "  round {}: durable keeps {:.1} %",
            round + 1,
            share * 100.0
        );
        rounds.push(share);
    }
    let share = durable.rate() / memory.rate().max(f64::MIN_POSITIVE);
    println!(
        "  durable trail, all rounds: {:.0} reads/s (p99 {:.2} ms, server CPU {:.1} µs a read) \
         against {:.0} (p99 {:.2} ms, {:.1} µs): keeps {:.1} % (target ≥ {:.0} %)",
        durable.rate(),
        durable.p99_ms(),
        durable.cpu_us_per_read(),
        memory.rate(),
        memory.p99_ms(),
        memory.cpu_us_per_read(),
        share * 100.0,
        TARGET_DURABLE_SHARE * 100.0
    );
    let side_json = |side: &Side| {
        json!({
            "reads": side.histogram.len(), "rps": side.rate(), "p99_ms": side.p99_ms(),
            "server_cpu_us_per_read": side.cpu_us_per_read(),
        })
    };
    Ok(json!({
        "connections": options.connections,
        "turn_seconds": options.duration.as_secs_f64(),
        "rounds": options.rounds,
        "patients": options.patients,
        "durable": side_json(&durable),
        "memory": side_json(&memory),
        "durable_share": share,
        "round_shares": rounds,
        "target_share": TARGET_DURABLE_SHARE,
    }))
}

/// Starts the bench server with `audit`, warms it up, measures reads for one turn, stops it.
async fn measure(
    executable: &Path,
    options: &HttpAuditOptions,
    audit: ServeAudit,
    round: u32,
    side: &mut Side,
    sample: &mut Option<Arc<Vec<crate::load::Sampled>>>,
) -> anyhow::Result<Turn> {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|listener| listener.local_addr())
        .context("finding a free loopback port")?
        .port();
    let base = format!("http://localhost:{port}");
    let mut server = Server(
        Command::new(executable)
            .arg("serve")
            .arg("--data-dir")
            .arg(&options.data_dir)
            .args(["--listen", &format!("127.0.0.1:{port}")])
            .args(["--audit", audit.name()])
            .stdout(Stdio::null())
            .spawn()
            .context("starting the bench server")?,
    );
    wait_until_up(&mut server.0, &base).await?;
    let tokens = TokenSource::new(
        &base,
        &options.client_id,
        options.key.duplicate()?,
        crate::SCOPE,
    )
    .await?;
    let load = LoadOptions {
        base: base.clone(),
        connections: options.connections,
        duration: options.duration,
        warmup: options.warmup,
        mix: Vec::new(),
        solo: Vec::new(),
        seed: options.seed,
        patients: options.patients,
        sample: options.sample,
    };
    let sample = match sample {
        Some(sample) => sample.clone(),
        None => {
            let fetched = Arc::new(sample_patients(&load, &tokens).await?);
            anyhow::ensure!(!fetched.is_empty(), "no patients sampled");
            sample.insert(fetched).clone()
        }
    };
    let reads = [(Op::Read, 1)];
    let salt = u64::from(round) << 8 | u64::from(audit == ServeAudit::Memory);
    run_phase(
        "warm-up",
        &load,
        &tokens,
        &sample,
        &reads,
        options.warmup,
        salt,
    )
    .await?;
    let cpu_before = server_cpu_seconds(&server.0)?;
    let phase = run_phase(
        "reads",
        &load,
        &tokens,
        &sample,
        &reads,
        options.duration,
        salt,
    )
    .await?;
    let cpu = server_cpu_seconds(&server.0)? - cpu_before;
    server.stop()?;
    let result = phase.ops.get(&Op::Read).context("no reads measured")?;
    if result.errors > 0 {
        anyhow::bail!(
            "{} of the reads failed against the {} trail (first: {})",
            result.errors,
            audit.name(),
            result.first_error.as_deref().unwrap_or("unknown")
        );
    }
    side.histogram
        .add(&result.histogram)
        .context("merging histograms")?;
    side.seconds += phase.seconds;
    side.server_cpu_seconds += cpu;
    let reads = result.histogram.len().max(1) as f64;
    Ok(Turn {
        rate: phase.rate(Op::Read),
        p99_ms: result.histogram.value_at_quantile(0.99) as f64 / 1000.0,
        cpu_us: cpu * 1e6 / reads,
    })
}

/// A bench server, stopped (SIGTERM, then waited for) when dropped if not before.
struct Server(Child);

impl Server {
    fn stop(&mut self) -> anyhow::Result<()> {
        if self.0.try_wait()?.is_none() {
            let status = Command::new("kill")
                .arg(self.0.id().to_string())
                .status()
                .context("running kill")?;
            anyhow::ensure!(status.success(), "kill {} failed: {status}", self.0.id());
        }
        let status = self.0.wait()?;
        anyhow::ensure!(status.success(), "the bench server ended with {status}");
        Ok(())
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.0.try_wait() {
            let _ = self.0.kill();
            let _ = self.0.wait();
        }
    }
}

async fn wait_until_up(server: &mut Child, base: &str) -> anyhow::Result<()> {
    let client = reqwest::Client::new();
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(status) = server.try_wait()? {
            anyhow::bail!(
                "the bench server exited at start ({status}); its error is printed above"
            );
        }
        if client
            .get(format!("{base}/healthz"))
            .send()
            .await
            .is_ok_and(|response| response.status().is_success())
        {
            return Ok(());
        }
        anyhow::ensure!(
            Instant::now() < deadline,
            "the bench server did not answer {base}/healthz within 60 s"
        );
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
}

fn server_cpu_seconds(server: &Child) -> anyhow::Result<f64> {
    let path = format!("/proc/{}/stat", server.id());
    let stat = std::fs::read_to_string(&path).with_context(|| format!("reading {path}"))?;
    cpu_seconds_of(&stat).with_context(|| format!("no CPU times in {path}"))
}
