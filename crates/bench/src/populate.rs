//! `populate`: writes patients `first..patients` of a seeded population as FHIR transaction
//! Bundles over HTTP, several bundles in flight, with a progress bar.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};
use std::time::{Duration, Instant};

use anyhow::{Context, bail};
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::{Value, json};
use tokio::sync::mpsc;

use crate::client::TokenSource;
use carevault_bench::synth;

pub struct PopulateOptions {
    pub base: String,
    pub seed: u64,
    pub first: u64,
    pub patients: u64,
    pub batch: usize,
    pub connections: usize,
    pub quiet: bool,
}

struct Bundle {
    body: Vec<u8>,
    patients: u64,
    resources: u64,
}

/// Groups whole patients (their internal references must stay in one bundle) into bundles of at
/// most `batch` entries; a patient larger than `batch` goes alone.
fn produce(options: &PopulateOptions, sender: &mpsc::Sender<Bundle>) -> anyhow::Result<()> {
    let mut entries: Vec<Value> = Vec::with_capacity(options.batch);
    let mut patients = 0;
    let send = |entries: &mut Vec<Value>, patients: &mut u64| -> anyhow::Result<()> {
        if entries.is_empty() {
            return Ok(());
        }
        let resources = entries.len() as u64;
        let bundle = synth::transaction(std::mem::take(entries));
        let body = serde_json::to_vec(&bundle)?;
        sender
            .blocking_send(Bundle {
                body,
                patients: *patients,
                resources,
            })
            .map_err(|_| anyhow::anyhow!("the senders stopped"))?;
        *patients = 0;
        Ok(())
    };
    for index in options.first..options.patients {
        let record = synth::patient(options.seed, index);
        if !entries.is_empty() && entries.len() + record.entries.len() > options.batch {
            send(&mut entries, &mut patients)?;
        }
        entries.extend(record.entries);
        patients += 1;
    }
    send(&mut entries, &mut patients)
}

pub struct PopulateReport {
    pub patients: u64,
    pub resources: u64,
    pub bundles: u64,
    pub seconds: f64,
}

impl PopulateReport {
    pub fn to_json(&self) -> Value {
        json!({
            "patients": self.patients,
            "resources": self.resources,
            "bundles": self.bundles,
            "seconds": self.seconds,
            "patients_per_second": self.patients as f64 / self.seconds,
            "resources_per_second": self.resources as f64 / self.seconds,
        })
    }
}

pub async fn populate(
    options: PopulateOptions,
    tokens: TokenSource,
) -> anyhow::Result<PopulateReport> {
    if options.first >= options.patients {
        bail!(
            "nothing to do: --first {} is not below --patients {}",
            options.first,
            options.patients
        );
    }
    let total = options.patients - options.first;
    let progress = if options.quiet {
        ProgressBar::hidden()
    } else {
        ProgressBar::new(total)
    };
    progress.set_style(
        ProgressStyle::with_template(
            "{elapsed_precise} [{wide_bar}] {pos}/{len} patients ({per_sec}, eta {eta}) {msg}",
        )
        .unwrap_or_else(|_| ProgressStyle::default_bar()),
    );
    let (sender, receiver) = mpsc::channel::<Bundle>(options.connections * 2);
    let receiver = Arc::new(tokio::sync::Mutex::new(receiver));
    let resources = Arc::new(AtomicU64::new(0));
    let bundles = Arc::new(AtomicU64::new(0));
    let started = Instant::now();
    let url = format!("{}/fhir", options.base.trim_end_matches('/'));
    let mut workers = Vec::new();
    for _ in 0..options.connections {
        let receiver = receiver.clone();
        let tokens = tokens.clone();
        let url = url.clone();
        let progress = progress.clone();
        let resources = resources.clone();
        let bundles = bundles.clone();
        workers.push(tokio::spawn(async move {
            let http = reqwest::Client::builder()
                .pool_max_idle_per_host(1)
                .timeout(Duration::from_secs(300))
                .build()?;
            loop {
                let next = receiver.lock().await.recv().await;
                let Some(bundle) = next else { break };
                post_bundle(&http, &url, &tokens, &bundle).await?;
                let done =
                    resources.fetch_add(bundle.resources, Ordering::Relaxed) + bundle.resources;
                bundles.fetch_add(1, Ordering::Relaxed);
                progress.inc(bundle.patients);
                let seconds = started.elapsed().as_secs_f64().max(0.001);
                progress.set_message(format!("{done} resources, {:.0}/s", done as f64 / seconds));
            }
            anyhow::Ok(())
        }));
    }
    // Only the workers hold the receiver: if they all stop, the generator's sends fail and it
    // stops too.
    drop(receiver);
    let producer_options = options;
    let producer = tokio::task::spawn_blocking(move || produce(&producer_options, &sender));
    let mut failure = None;
    for worker in workers {
        if let Err(error) = worker.await.context("a sender task panicked")? {
            failure.get_or_insert(error);
        }
    }
    if let Some(error) = failure {
        // The producer stops on its own once the channel closes.
        let _ = producer.await;
        return Err(error);
    }
    producer.await.context("the generator panicked")??;
    progress.finish();
    Ok(PopulateReport {
        patients: total,
        resources: resources.load(Ordering::Relaxed),
        bundles: bundles.load(Ordering::Relaxed),
        seconds: started.elapsed().as_secs_f64(),
    })
}

/// Posts one transaction, retrying a few times on a server-side failure or a dropped
/// connection (a failed transaction wrote nothing, so a retry cannot duplicate data).
async fn post_bundle(
    http: &reqwest::Client,
    url: &str,
    tokens: &TokenSource,
    bundle: &Bundle,
) -> anyhow::Result<()> {
    let mut attempt = 0;
    loop {
        attempt += 1;
        let token = tokens.bearer().await?;
        let result = http
            .post(url)
            .bearer_auth(token)
            .header("content-type", "application/fhir+json")
            .header("prefer", "return=minimal")
            .body(bundle.body.clone())
            .send()
            .await;
        let retry_reason = match result {
            Ok(response) if response.status().is_success() => {
                // Drain the body so the connection is reused.
                let _ = response.bytes().await;
                return Ok(());
            }
            Ok(response) if response.status().is_server_error() || response.status() == 409 => {
                let status = response.status();
                format!("{status}: {}", response.text().await.unwrap_or_default())
            }
            Ok(response) => {
                let status = response.status();
                let text = response.text().await.unwrap_or_default();
                bail!("the server refused a bundle ({status}): {text}");
            }
            Err(error) => error.to_string(),
        };
        if attempt >= 4 {
            bail!("a bundle failed {attempt} times; last: {retry_reason}");
        }
        tokio::time::sleep(Duration::from_millis(200 * attempt)).await;
    }
}
