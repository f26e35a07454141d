//! `load`: drives a running server over HTTP at a fixed number of connections for a fixed time
//! and reports per-operation throughput and latency percentiles, beside the same server's
//! `/healthz` ceiling measured in the same run with the same connections.
//!
//! Each connection is one task with its own HTTP client (one kept-alive TCP connection), so
//! `--connections 64` means 64 connections, each sending its next request as soon as the last
//! answer arrived (a closed loop).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use hdrhistogram::Histogram;
use serde_json::{Value, json};

use crate::client::TokenSource;
use carevault_bench::synth::{self, Rng};

#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Debug)]
pub enum Op {
    Healthz,
    Read,
    Nhs,
    Family,
    Create,
    Transaction,
    History,
}

impl Op {
    pub fn name(self) -> &'static str {
        match self {
            Op::Healthz => "healthz",
            Op::Read => "read",
            Op::Nhs => "nhs",
            Op::Family => "family",
            Op::Create => "create",
            Op::Transaction => "transaction",
            Op::History => "history",
        }
    }

    fn parse(name: &str) -> anyhow::Result<Op> {
        Ok(match name.trim() {
            "healthz" => Op::Healthz,
            "read" => Op::Read,
            "nhs" => Op::Nhs,
            "family" => Op::Family,
            "create" => Op::Create,
            "transaction" => Op::Transaction,
            "history" => Op::History,
            other => bail!(
                "unknown operation {other:?} (healthz, read, nhs, family, create, transaction, history)"
            ),
        })
    }

    /// What one request of this operation writes or reads, in resources (for resources/s).
    fn resources(self) -> u64 {
        match self {
            Op::Transaction => TRANSACTION_ENTRIES as u64,
            _ => 1,
        }
    }
}

const TRANSACTION_ENTRIES: usize = 100;

/// `read=60,nhs=15,…` → weighted operations.
pub fn parse_mix(text: &str) -> anyhow::Result<Vec<(Op, u32)>> {
    let mut mix = Vec::new();
    for part in text.split(',').filter(|part| !part.trim().is_empty()) {
        let (name, weight) = part
            .split_once('=')
            .with_context(|| format!("{part:?}: write operation=weight"))?;
        let weight: u32 = weight
            .trim()
            .parse()
            .with_context(|| format!("{part:?}: the weight must be a whole number"))?;
        if weight > 0 {
            mix.push((Op::parse(name)?, weight));
        }
    }
    if mix.is_empty() {
        bail!("the mix names no operation with a weight above 0");
    }
    Ok(mix)
}

pub fn parse_ops(text: &str) -> anyhow::Result<Vec<Op>> {
    text.split(',')
        .filter(|part| !part.trim().is_empty())
        .map(Op::parse)
        .collect()
}

/// `20s`, `500ms`, `2m` or plain seconds.
pub fn parse_duration(text: &str) -> anyhow::Result<Duration> {
    let text = text.trim();
    let (number, unit) = match text.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(at) => text.split_at(at),
        None => (text, "s"),
    };
    let value: f64 = number
        .parse()
        .with_context(|| format!("{text:?} is not a duration such as 20s"))?;
    let seconds = match unit {
        "ms" => value / 1000.0,
        "s" => value,
        "m" => value * 60.0,
        other => bail!("unknown duration unit {other:?} (ms, s, m)"),
    };
    Ok(Duration::from_secs_f64(seconds))
}

/// Patients the load reads: their ids (fetched once by NHS number) and what the seed says.
#[derive(Clone)]
pub struct Sampled {
    pub id: String,
    pub nhs_number: String,
    pub family: String,
    pub birth_date: String,
}

pub struct LoadOptions {
    pub base: String,
    pub connections: usize,
    pub duration: Duration,
    pub warmup: Duration,
    pub mix: Vec<(Op, u32)>,
    pub solo: Vec<Op>,
    pub seed: u64,
    pub patients: u64,
    pub sample: usize,
}

/// One operation's results in one phase.
pub struct OpResult {
    pub op: Op,
    pub histogram: Histogram<u64>,
    pub errors: u64,
    pub first_error: Option<String>,
}

pub struct Phase {
    pub name: String,
    pub seconds: f64,
    pub ops: BTreeMap<Op, OpResult>,
}

impl Phase {
    pub fn rate(&self, op: Op) -> f64 {
        self.ops
            .get(&op)
            .map_or(0.0, |result| result.histogram.len() as f64 / self.seconds)
    }
}

fn new_histogram() -> anyhow::Result<Histogram<u64>> {
    // Microseconds, 1 µs to 120 s, three significant digits.
    Histogram::new_with_bounds(1, 120_000_000, 3).context("histogram bounds")
}

/// Fetches ids of `sample` seeded patients by searching their NHS numbers.
pub async fn sample_patients(
    options: &LoadOptions,
    tokens: &TokenSource,
) -> anyhow::Result<Vec<Sampled>> {
    let mut rng = Rng::new(options.seed ^ 0x5a5a);
    let wanted: Vec<u64> = (0..options.sample.min(options.patients as usize))
        .map(|_| rng.below(options.patients))
        .collect();
    let http = reqwest::Client::new();
    let base = options.base.trim_end_matches('/').to_owned();
    let mut found = Vec::new();
    for chunk in wanted.chunks(16) {
        let mut requests = Vec::new();
        for &index in chunk {
            let record = synth::patient(options.seed, index);
            let http = http.clone();
            let url = format!(
                "{base}/fhir/Patient?identifier={}%7C{}",
                "https://fhir.nhs.uk/Id/nhs-number", record.identity.nhs_number
            );
            let token = tokens.bearer().await?;
            requests.push(tokio::spawn(async move {
                let response = http.get(&url).bearer_auth(token).send().await?;
                let status = response.status();
                let body: Value = response.json().await?;
                anyhow::Ok((status, body, record.identity))
            }));
        }
        for request in requests {
            let (status, body, identity) = request.await??;
            if !status.is_success() {
                bail!("sampling failed ({status}): {body}");
            }
            let entries = body["entry"].as_array().map_or(0, Vec::len);
            if entries != 1 {
                bail!(
                    "NHS number {} of the seeded population matched {entries} patients: was the \
                     server populated with --seed {} and --patients {}?",
                    identity.nhs_number,
                    options.seed,
                    options.patients
                );
            }
            let id = body["entry"][0]["resource"]["id"]
                .as_str()
                .context("search entry without id")?
                .to_owned();
            found.push(Sampled {
                id,
                nhs_number: identity.nhs_number,
                family: identity.family,
                birth_date: identity.birth_date,
            });
        }
    }
    Ok(found)
}

struct Worker {
    http: reqwest::Client,
    base: String,
    tokens: TokenSource,
    rng: Rng,
    sample: std::sync::Arc<Vec<Sampled>>,
    seed: u64,
    /// Patient indices for new patients: far above the population, distinct per worker.
    next_new: u64,
}

impl Worker {
    async fn request(&mut self, op: Op) -> anyhow::Result<reqwest::StatusCode> {
        let base = &self.base;
        let pick = |rng: &mut Rng, sample: &[Sampled]| -> Option<Sampled> {
            (!sample.is_empty()).then(|| rng.pick(sample).clone())
        };
        let request = match op {
            Op::Healthz => self.http.get(format!("{base}/healthz")),
            Op::Read | Op::Nhs | Op::Family | Op::History => {
                let patient =
                    pick(&mut self.rng, self.sample.as_slice()).context("no sampled patients")?;
                let url = match op {
                    Op::Read => format!("{base}/fhir/Patient/{}", patient.id),
                    Op::History => format!("{base}/fhir/Patient/{}/_history", patient.id),
                    Op::Nhs => format!(
                        "{base}/fhir/Patient?identifier=https://fhir.nhs.uk/Id/nhs-number%7C{}",
                        patient.nhs_number
                    ),
                    _ => format!(
                        "{base}/fhir/Patient?family={}&birthdate={}",
                        encode(&patient.family),
                        patient.birth_date
                    ),
                };
                self.http.get(url).bearer_auth(self.tokens.bearer().await?)
            }
            Op::Create => {
                let record = synth::patient(self.seed, self.next_new);
                self.next_new += 1;
                let patient = record
                    .entries
                    .into_iter()
                    .next()
                    .map(|mut entry| entry["resource"].take())
                    .context("a generated patient has no entries")?;
                self.http
                    .post(format!("{base}/fhir/Patient"))
                    .bearer_auth(self.tokens.bearer().await?)
                    .header("content-type", "application/fhir+json")
                    .body(serde_json::to_vec(&patient)?)
            }
            Op::Transaction => {
                let mut entries = Vec::with_capacity(TRANSACTION_ENTRIES + 60);
                while entries.len() < TRANSACTION_ENTRIES {
                    entries.extend(synth::patient(self.seed, self.next_new).entries);
                    self.next_new += 1;
                }
                // Entries only refer back to earlier ones, so cutting the tail is safe.
                entries.truncate(TRANSACTION_ENTRIES);
                self.http
                    .post(format!("{base}/fhir"))
                    .bearer_auth(self.tokens.bearer().await?)
                    .header("content-type", "application/fhir+json")
                    .header("prefer", "return=minimal")
                    .body(serde_json::to_vec(&synth::transaction(entries))?)
            }
        };
        let response = request.send().await?;
        let status = response.status();
        // Read the whole answer: a client is not served until it has the body.
        response.bytes().await?;
        Ok(status)
    }
}

fn encode(text: &str) -> String {
    text.bytes()
        .map(|byte| match byte {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' => {
                char::from(byte).to_string()
            }
            other => format!("%{other:02X}"),
        })
        .collect()
}

/// Runs `mix` on every connection for `duration`; `record` false makes it a warm-up.
pub async fn run_phase(
    name: &str,
    options: &LoadOptions,
    tokens: &TokenSource,
    sample: &std::sync::Arc<Vec<Sampled>>,
    mix: &[(Op, u32)],
    duration: Duration,
    run_salt: u64,
) -> anyhow::Result<Phase> {
    let total_weight: u32 = mix.iter().map(|(_, weight)| weight).sum();
    let started = Instant::now();
    let deadline = started + duration;
    let mut tasks = Vec::with_capacity(options.connections);
    for connection in 0..options.connections {
        let mut worker = Worker {
            http: reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(60))
                .build()?,
            base: options.base.trim_end_matches('/').to_owned(),
            tokens: tokens.clone(),
            rng: Rng::new(options.seed ^ run_salt ^ ((connection as u64) << 32)),
            sample: sample.clone(),
            seed: options.seed,
            // NHS numbers are unique below 20 million indices: new patients take 10M..20M,
            // so they never share a number with the population (at most 10 million).
            next_new: 10_000_000 + ((run_salt % 7) * 64 + connection as u64 % 64) * 20_000,
        };
        let mix = mix.to_vec();
        tasks.push(tokio::spawn(async move {
            let mut results: BTreeMap<Op, OpResult> = BTreeMap::new();
            for (op, _) in &mix {
                results.insert(
                    *op,
                    OpResult {
                        op: *op,
                        histogram: new_histogram()?,
                        errors: 0,
                        first_error: None,
                    },
                );
            }
            while Instant::now() < deadline {
                let mut draw = worker.rng.below(u64::from(total_weight)) as u32;
                let mut op = mix[0].0;
                for (candidate, weight) in &mix {
                    if draw < *weight {
                        op = *candidate;
                        break;
                    }
                    draw -= weight;
                }
                let sent = Instant::now();
                let outcome = worker.request(op).await;
                let micros = sent.elapsed().as_micros().max(1) as u64;
                let Some(result) = results.get_mut(&op) else {
                    continue;
                };
                match outcome {
                    Ok(status) if status.is_success() => {
                        result.histogram.saturating_record(micros);
                    }
                    Ok(status) => {
                        result.errors += 1;
                        result
                            .first_error
                            .get_or_insert_with(|| format!("HTTP {status}"));
                    }
                    Err(error) => {
                        result.errors += 1;
                        result.first_error.get_or_insert_with(|| error.to_string());
                    }
                }
            }
            anyhow::Ok(results)
        }));
    }
    let mut merged: BTreeMap<Op, OpResult> = BTreeMap::new();
    for task in tasks {
        for (op, result) in task.await.context("a connection task panicked")?? {
            match merged.get_mut(&op) {
                Some(existing) => {
                    existing
                        .histogram
                        .add(&result.histogram)
                        .context("merging histograms")?;
                    existing.errors += result.errors;
                    if existing.first_error.is_none() {
                        existing.first_error = result.first_error;
                    }
                }
                None => {
                    merged.insert(op, result);
                }
            }
        }
    }
    Ok(Phase {
        name: name.to_owned(),
        seconds: started.elapsed().as_secs_f64(),
        ops: merged,
    })
}

fn millis(histogram: &Histogram<u64>, quantile: f64) -> f64 {
    histogram.value_at_quantile(quantile) as f64 / 1000.0
}

pub fn phase_json(phase: &Phase, ceiling: f64) -> Value {
    let ops: Vec<Value> = phase
        .ops
        .values()
        .map(|result| {
            let rate = result.histogram.len() as f64 / phase.seconds;
            json!({
                "op": result.op.name(),
                "requests": result.histogram.len(),
                "errors": result.errors,
                "first_error": result.first_error,
                "rps": rate,
                "resources_per_second": rate * result.op.resources() as f64,
                "ratio_to_healthz": if ceiling > 0.0 { rate / ceiling } else { 0.0 },
                "p50_ms": millis(&result.histogram, 0.50),
                "p90_ms": millis(&result.histogram, 0.90),
                "p99_ms": millis(&result.histogram, 0.99),
                "p999_ms": millis(&result.histogram, 0.999),
                "max_ms": result.histogram.max() as f64 / 1000.0,
            })
        })
        .collect();
    json!({"phase": phase.name, "seconds": phase.seconds, "ops": ops})
}

pub fn print_phase(phase: &Phase, ceiling: f64) {
    println!("\n{} ({:.1} s)", phase.name, phase.seconds);
    println!(
        "  {:<12} {:>9} {:>7} {:>10} {:>8} {:>8} {:>8} {:>8} {:>8}",
        "operation",
        "requests",
        "errors",
        "req/s",
        "×healthz",
        "p50 ms",
        "p90 ms",
        "p99 ms",
        "p99.9"
    );
    for result in phase.ops.values() {
        let rate = result.histogram.len() as f64 / phase.seconds;
        println!(
            "  {:<12} {:>9} {:>7} {:>10.0} {:>8.3} {:>8.2} {:>8.2} {:>8.2} {:>8.2}",
            result.op.name(),
            result.histogram.len(),
            result.errors,
            rate,
            if ceiling > 0.0 { rate / ceiling } else { 0.0 },
            millis(&result.histogram, 0.50),
            millis(&result.histogram, 0.90),
            millis(&result.histogram, 0.99),
            millis(&result.histogram, 0.999),
        );
        if let Some(error) = &result.first_error {
            println!("    first error: {error}");
        }
    }
}

/// The whole run: sample, warm up, ceiling, each solo operation, then the mix.
pub async fn run(options: LoadOptions, tokens: TokenSource) -> anyhow::Result<Value> {
    let sample = std::sync::Arc::new(sample_patients(&options, &tokens).await?);
    println!(
        "sampled {} patients of the seeded population; {} connections, {:?} per phase",
        sample.len(),
        options.connections,
        options.duration
    );
    // Different per run, so creates of two runs do not reuse NHS numbers.
    let run_salt = u64::from(std::process::id());
    if !options.warmup.is_zero() {
        run_phase(
            "warm-up",
            &options,
            &tokens,
            &sample,
            &[(Op::Healthz, 1), (Op::Read, 1)],
            options.warmup,
            run_salt,
        )
        .await?;
    }
    let healthz = run_phase(
        "healthz ceiling",
        &options,
        &tokens,
        &sample,
        &[(Op::Healthz, 1)],
        options.duration,
        run_salt,
    )
    .await?;
    let ceiling = healthz.rate(Op::Healthz);
    print_phase(&healthz, ceiling);
    let mut phases = vec![phase_json(&healthz, ceiling)];
    for (position, op) in options.solo.iter().enumerate() {
        let phase = run_phase(
            &format!("{} alone", op.name()),
            &options,
            &tokens,
            &sample,
            &[(*op, 1)],
            options.duration,
            run_salt.wrapping_add(position as u64 + 1),
        )
        .await?;
        print_phase(&phase, ceiling);
        phases.push(phase_json(&phase, ceiling));
    }
    if !options.mix.is_empty() {
        let phase = run_phase(
            "mix",
            &options,
            &tokens,
            &sample,
            &options.mix,
            options.duration,
            run_salt.wrapping_add(97),
        )
        .await?;
        print_phase(&phase, ceiling);
        phases.push(phase_json(&phase, ceiling));
    }
    Ok(json!({
        "connections": options.connections,
        "duration_seconds": options.duration.as_secs_f64(),
        "patients": options.patients,
        "seed": options.seed,
        "healthz_rps": ceiling,
        "phases": phases,
    }))
}
