//! `carevault audit …`: verify the tamper-evident trail, export it, sign checkpoints now; and
//! the background checkpointer `serve` runs (see `checkpoints`).

pub mod checkpoints;

use std::collections::BTreeMap;
use std::io::{BufWriter, Write as _};
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};
use carevault_crypto::VerifyingKey;
use carevault_domain::audit::checkpoint::{Checkpoint, VerifiedCheckpoint};
use carevault_domain::audit::retention::RetentionMarker;
use carevault_domain::audit::search::MAX_PAGE;
use carevault_domain::audit::storage::{AuditFilter, LinkQuery, StoredEntry};
use carevault_domain::audit::verify::{Break, Fault, TenantReport, verify_chain};
use carevault_domain::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::principal::AuthStrength;
use clap::{Subcommand, ValueEnum};
use indicatif::{ProgressBar, ProgressStyle};
use serde::Serialize;

pub use checkpoints::{AuditConfig, Checkpointer};

use crate::runtime::Runtime;

/// Rows read per round trip while verifying or exporting.
const PAGE: usize = 5_000;

#[derive(Subcommand)]
pub enum AuditCommand {
    /// Check every tenant's hash chain against its head and the signed checkpoints; report each
    /// break (tenant, sequence, what is wrong). Exits non-zero on any break.
    Verify {
        /// Only this tenant's chain (a UUID; the platform's chain is the nil UUID).
        #[arg(long)]
        tenant: Option<String>,
        /// Read checkpoints from here instead of the configured directory (e.g. a copy taken
        /// off the machine).
        #[arg(long)]
        checkpoints: Option<PathBuf>,
        /// Check signatures against this Ed25519 public key (hex, as printed at start-up)
        /// instead of the public half of keys/signing.key.
        #[arg(long)]
        public_key: Option<String>,
        /// Print the report as JSON.
        #[arg(long)]
        json: bool,
    },
    /// Stream audit records, one JSON object per line, to standard output (or --output).
    Export {
        #[arg(long)]
        tenant: Option<String>,
        /// Records at or after this time (RFC 3339, e.g. 2026-01-31T00:00:00Z).
        #[arg(long)]
        since: Option<String>,
        /// Records before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        #[arg(long, value_enum)]
        format: ExportFormat,
        /// Write here instead of standard output (created; never overwritten).
        #[arg(long)]
        output: Option<PathBuf>,
    },
    /// Sign and write a checkpoint of every chain's head now.
    Checkpoint,
    /// Remove old records: whole segments, oldest first, every record of them older than the
    /// cut-off, leaving a marker signed with the signing key so `audit verify` still passes.
    /// Refused for a chain that does not verify clean. The removal is itself recorded.
    Retain {
        /// Remove records older than this time (RFC 3339, e.g. 2020-01-01T00:00:00Z).
        #[arg(long, conflicts_with = "older_than_days")]
        before: Option<String>,
        /// Remove records older than this many days.
        #[arg(long)]
        older_than_days: Option<u32>,
        /// Only this tenant's chain (a UUID).
        #[arg(long)]
        tenant: Option<String>,
        /// Report what would be removed; remove nothing.
        #[arg(long)]
        dry_run: bool,
    },
    /// Search one tenant's trail, newest first (recorded in that trail as the operator's).
    Search {
        /// The tenant (a UUID; `carevault tenant list` shows them).
        #[arg(long)]
        tenant: String,
        /// Records touching this patient's data (a Patient id).
        #[arg(long)]
        patient: Option<String>,
        /// Records of this principal, as recorded: person/<id>, client/<id>, operator/cli.
        #[arg(long)]
        principal: Option<String>,
        /// Records of this session or token id.
        #[arg(long)]
        session: Option<String>,
        /// Records from this source address.
        #[arg(long)]
        address: Option<String>,
        /// Records of this action (read, search, create, token.issue, audit.search, …).
        #[arg(long)]
        action: Option<String>,
        /// Records with this outcome (success, denied, not-found, invalid, integrity-failure,
        /// error).
        #[arg(long)]
        outcome: Option<String>,
        /// Records at or after this time (RFC 3339).
        #[arg(long)]
        since: Option<String>,
        /// Records before this time (RFC 3339).
        #[arg(long)]
        until: Option<String>,
        /// At most this many records (1 to 1000).
        #[arg(long, default_value_t = 50)]
        limit: usize,
        /// Only records older than this sequence number (the last one of the previous page).
        #[arg(long)]
        before: Option<i64>,
        /// Print the records as a JSON array.
        #[arg(long)]
        json: bool,
    },
}

/// Both names mean newline-delimited JSON: one record per line.
#[derive(Clone, Copy, Debug, ValueEnum)]
pub enum ExportFormat {
    Ndjson,
    Jsonl,
}

pub async fn run(data_dir: &Path, command: AuditCommand) -> anyhow::Result<()> {
    let runtime = Runtime::open(data_dir).await?;
    match command {
        AuditCommand::Verify {
            tenant,
            checkpoints,
            public_key,
            json,
        } => {
            let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
            let dir = match checkpoints {
                Some(dir) => dir,
                None => checkpoints::checkpoint_dir(&runtime.config, data_dir)?,
            };
            let key = match public_key {
                Some(text) => hex::decode(text.trim())
                    .ok()
                    .and_then(|bytes| VerifyingKey::from_bytes(&bytes).ok())
                    .context("--public-key must be 64 hex digits (an Ed25519 public key)")?,
                None => runtime.signing_key.verifying_key(),
            };
            verify(&runtime, tenant, &dir, &key, json).await
        }
        AuditCommand::Export {
            tenant,
            since,
            until,
            format: _,
            output,
        } => {
            let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
            let since = since.as_deref().map(parse_time).transpose()?;
            let until = until.as_deref().map(parse_time).transpose()?;
            export(&runtime, tenant, since, until, output.as_deref()).await
        }
        AuditCommand::Search {
            tenant,
            patient,
            principal,
            session,
            address,
            action,
            outcome,
            since,
            until,
            limit,
            before,
            json,
        } => {
            let tenant = parse_tenant(&tenant)?;
            if !(1..=MAX_PAGE).contains(&limit) {
                bail!("--limit must be between 1 and {MAX_PAGE}");
            }
            let filter = AuditFilter {
                patient: patient.map(|id| id.trim_start_matches("Patient/").to_owned()),
                principal,
                session,
                source: address,
                action,
                outcome: outcome.as_deref().map(parse_outcome).transpose()?,
                since_ms: since.as_deref().map(parse_time).transpose()?,
                until_ms: until.as_deref().map(parse_time).transpose()?,
                before_seq: before,
                limit,
            };
            search(&runtime, tenant, &filter, json).await
        }
        AuditCommand::Retain {
            before,
            older_than_days,
            tenant,
            dry_run,
        } => {
            let tenant = tenant.as_deref().map(parse_tenant).transpose()?;
            let before_ms = match (before, older_than_days) {
                (Some(text), None) => parse_time(&text)?,
                (None, Some(days)) => runtime.now_ms() - i64::from(days) * 86_400_000,
                _ => bail!(
                    "say which records to remove: --before <RFC 3339 time> or --older-than-days <N>"
                ),
            };
            retain(&runtime, data_dir, tenant, before_ms, dry_run).await
        }
        AuditCommand::Checkpoint => {
            let mut checkpointer = Checkpointer::new(&runtime, data_dir)?;
            let written = checkpointer.run_once(true).await?;
            for checkpoint in &written {
                println!(
                    "signed tenant {} seq {} hash {}",
                    checkpoint.tenant, checkpoint.seq, checkpoint.hash
                );
            }
            println!(
                "{} checkpoints written to {}",
                written.len(),
                checkpointer.dir().display()
            );
            Ok(())
        }
    }
}

fn parse_outcome(text: &str) -> anyhow::Result<Outcome> {
    [
        Outcome::Success,
        Outcome::Denied,
        Outcome::NotFound,
        Outcome::Invalid,
        Outcome::IntegrityFailure,
        Outcome::Error,
    ]
    .into_iter()
    .find(|outcome| outcome.as_str() == text.trim())
    .with_context(|| {
        format!(
            "{text:?} is not an outcome; use success, denied, not-found, invalid, \
             integrity-failure or error"
        )
    })
}

async fn search(
    runtime: &Runtime,
    tenant: TenantId,
    filter: &AuditFilter,
    json: bool,
) -> anyhow::Result<()> {
    let records = runtime
        .administration()
        .search_audit(tenant, filter, runtime.now_ms())
        .await?;
    if json {
        println!("{}", serde_json::to_string_pretty(&records)?);
        return Ok(());
    }
    for record in &records {
        let time =
            time::OffsetDateTime::from_unix_timestamp_nanos(i128::from(record.time_ms) * 1_000_000)
                .ok()
                .and_then(|time| {
                    time.format(&time::format_description::well_known::Rfc3339)
                        .ok()
                })
                .unwrap_or_default();
        let resource = match (&record.resource_type, &record.resource_id) {
            (Some(rt), Some(id)) => format!("{rt}/{id}"),
            (Some(rt), None) => rt.clone(),
            _ => "-".to_owned(),
        };
        println!(
            "{:>8} {time} {} {} {} {resource} patients=[{}] session={} address={}",
            record.seq,
            record.principal,
            record.action,
            record.outcome.as_str(),
            record.subjects.join(","),
            record.session.as_deref().unwrap_or("-"),
            record.source.as_deref().unwrap_or("-"),
        );
    }
    match records.last() {
        Some(last) if records.len() >= filter.limit => {
            eprintln!("{} records; more with --before {}", records.len(), last.seq);
        }
        _ => eprintln!("{} records", records.len()),
    }
    Ok(())
}

fn parse_tenant(text: &str) -> anyhow::Result<TenantId> {
    TenantId::parse(text.trim()).with_context(|| {
        format!("{text:?} is not a tenant id (a UUID); `carevault tenant list` shows them")
    })
}

fn parse_time(text: &str) -> anyhow::Result<i64> {
    let time = time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339)
        .with_context(|| {
            format!("{text:?} is not an RFC 3339 time; write e.g. 2026-01-31T00:00:00Z")
        })?;
    i64::try_from(time.unix_timestamp_nanos() / 1_000_000).context("time out of range")
}

fn progress(total: u64, what: &'static str) -> ProgressBar {
    let bar = ProgressBar::new(total);
    let style = ProgressStyle::with_template(
        "{msg} [{bar:40}] {pos}/{len} records ({per_sec}, {eta} left)",
    )
    .unwrap_or_else(|_| ProgressStyle::default_bar())
    .progress_chars("=> ");
    bar.set_style(style);
    bar.set_message(what);
    bar
}

/// Reads every checkpoint line under `dir` (any depth, `*.jsonl`), checking each signature.
/// Lines that fail become breaks.
fn read_checkpoints(
    dir: &Path,
    key: &VerifyingKey,
    only: Option<TenantId>,
) -> anyhow::Result<(Vec<VerifiedCheckpoint>, Vec<Break>)> {
    let mut files = Vec::new();
    collect_files(dir, &mut files)?;
    files.sort();
    let mut valid = Vec::new();
    let mut invalid = Vec::new();
    for file in files {
        let text = std::fs::read_to_string(&file)
            .with_context(|| format!("reading {}", file.display()))?;
        for (index, line) in text.lines().enumerate() {
            if line.trim().is_empty() {
                continue;
            }
            let origin = format!("{}:{}", file.display(), index + 1);
            let parsed = Checkpoint::parse(line);
            let claimed = parsed
                .as_ref()
                .ok()
                .map(|c| (c.claimed_tenant(), Some(c.seq)))
                .unwrap_or((None, None));
            if only.is_some() && claimed.0.is_some() && claimed.0 != only {
                continue;
            }
            match parsed.and_then(|checkpoint| checkpoint.verify(key, origin.clone())) {
                Ok(checkpoint) => valid.push(checkpoint),
                Err(fault) => invalid.push(Break::new(
                    claimed.0,
                    claimed.1,
                    Fault::CheckpointInvalid {
                        origin,
                        reason: fault.to_string(),
                    },
                )),
            }
        }
    }
    Ok((valid, invalid))
}

fn collect_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    let entries = match std::fs::read_dir(dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(()),
        Err(error) => {
            return Err(error).with_context(|| format!("reading {}", dir.display()));
        }
    };
    for entry in entries {
        let path = entry
            .with_context(|| format!("reading {}", dir.display()))?
            .path();
        if path.is_dir() {
            collect_files(&path, out)?;
        } else if path.extension().is_some_and(|ext| ext == "jsonl") {
            out.push(path);
        }
    }
    Ok(())
}

#[derive(Serialize)]
struct VerifyReport {
    tenants: Vec<TenantReport>,
    /// Breaks in checkpoint lines that name no readable tenant.
    unattributed: Vec<Break>,
    records: u64,
    checkpoints: u64,
    breaks: usize,
}

async fn verify(
    runtime: &Runtime,
    only: Option<TenantId>,
    dir: &Path,
    key: &VerifyingKey,
    json: bool,
) -> anyhow::Result<()> {
    let (checkpoints, invalid) = read_checkpoints(dir, key, only)?;
    let heads = runtime.store.audit_heads().await?;
    // Every chain the database knows, and every chain a checkpoint names (a chain deleted
    // with its head still has its checkpoints).
    let mut tenants: BTreeMap<TenantId, Vec<VerifiedCheckpoint>> = BTreeMap::new();
    for (tenant, _) in &heads {
        tenants.entry(*tenant).or_default();
    }
    for checkpoint in checkpoints {
        tenants
            .entry(checkpoint.tenant)
            .or_default()
            .push(checkpoint);
    }
    if let Some(only) = only {
        tenants.retain(|tenant, _| *tenant == only);
        tenants.entry(only).or_default();
    }
    let total: i64 = heads
        .iter()
        .filter(|(tenant, _)| tenants.contains_key(tenant))
        .map(|(_, head)| head.seq)
        .sum();
    let bar = progress(u64::try_from(total).unwrap_or(0), "verifying");

    let mut reports = Vec::new();
    let mut unattributed = Vec::new();
    let mut invalid_by_tenant: BTreeMap<Option<String>, Vec<Break>> = BTreeMap::new();
    for found in invalid {
        invalid_by_tenant
            .entry(found.tenant.clone())
            .or_default()
            .push(found);
    }
    for (tenant, checkpoints) in tenants {
        let mut report = verify_chain(
            runtime.store.clone(),
            tenant,
            checkpoints,
            key,
            &|records| bar.inc(records),
        )
        .await
        .with_context(|| format!("reading the audit trail of tenant {tenant}"))?;
        if let Some(mut bad) = invalid_by_tenant.remove(&Some(tenant.to_string())) {
            report.breaks.append(&mut bad);
        }
        reports.push(report);
    }
    for (_, mut bad) in invalid_by_tenant {
        unattributed.append(&mut bad);
    }
    bar.finish_and_clear();

    let breaks: usize = reports.iter().map(|r| r.breaks.len()).sum::<usize>() + unattributed.len();
    let report = VerifyReport {
        records: reports.iter().map(|r| r.records).sum(),
        checkpoints: reports.iter().map(|r| r.checkpoints).sum(),
        breaks,
        tenants: reports,
        unattributed,
    };
    if json {
        println!("{}", serde_json::to_string_pretty(&report)?);
    } else {
        for tenant in &report.tenants {
            let state = if tenant.breaks.is_empty() {
                "ok".to_owned()
            } else {
                format!("{} BREAKS", tenant.breaks.len())
            };
            println!(
                "tenant {}: {} records (last seq {}), {} checkpoints matched: {state}",
                tenant.tenant, tenant.records, tenant.last_seq, tenant.checkpoints
            );
            for found in &tenant.breaks {
                println!("  BREAK {found}");
            }
        }
        for found in &report.unattributed {
            println!("  BREAK {found}");
        }
        println!(
            "verified {} tenants, {} records, {} checkpoints: {}",
            report.tenants.len(),
            report.records,
            report.checkpoints,
            if breaks == 0 {
                "the audit trail is intact".to_owned()
            } else {
                format!("{breaks} breaks")
            }
        );
    }
    if breaks > 0 {
        bail!("the audit trail has {breaks} breaks (listed above)");
    }
    Ok(())
}

async fn export(
    runtime: &Runtime,
    only: Option<TenantId>,
    since_ms: Option<i64>,
    until_ms: Option<i64>,
    output: Option<&Path>,
) -> anyhow::Result<()> {
    let heads = runtime.store.audit_heads().await?;
    let heads: Vec<_> = heads
        .into_iter()
        .filter(|(tenant, _)| only.is_none_or(|only| only == *tenant))
        .collect();
    // Reading the trail is itself recorded, durably, in each exported chain before any line
    // is written.
    let now = runtime.now_ms();
    let detail = format!(
        "export since={} until={}",
        since_ms.map_or("-".to_owned(), |ms| ms.to_string()),
        until_ms.map_or("-".to_owned(), |ms| ms.to_string())
    );
    let records: Vec<AuditRecord> = heads
        .iter()
        .map(|(tenant, _)| operator_record(*tenant, now, "audit.export", &detail))
        .collect();
    runtime
        .store
        .append_audit(&records)
        .await
        .context("recording the export in the audit trail")?;

    let sink: Box<dyn std::io::Write> = match output {
        Some(path) => Box::new(
            std::fs::OpenOptions::new()
                .write(true)
                .create_new(true)
                .open(path)
                .with_context(|| format!("creating {} (it must not exist yet)", path.display()))?,
        ),
        None => Box::new(std::io::stdout().lock()),
    };
    let mut writer = BufWriter::with_capacity(1 << 16, sink);
    let total: i64 = heads.iter().map(|(_, head)| head.seq).sum();
    let bar = progress(u64::try_from(total).unwrap_or(0), "exporting");
    let mut lines: u64 = 0;
    for (tenant, head) in heads {
        let mut after = 0;
        let start = bar.position();
        loop {
            let links = runtime
                .store
                .audit_links(
                    tenant,
                    &LinkQuery {
                        after_seq: after,
                        since_ms,
                        until_ms,
                        limit: PAGE,
                    },
                )
                .await
                .with_context(|| format!("reading the audit trail of tenant {tenant}"))?;
            if links.is_empty() {
                break;
            }
            for entry in &links {
                match entry {
                    StoredEntry::Link(link) => {
                        writer.write_all(link.text.as_bytes())?;
                        writer.write_all(b"\n")?;
                        after = link.seq;
                    }
                    StoredEntry::Damaged {
                        first_seq,
                        last_seq,
                    }
                    | StoredEntry::TimesChanged {
                        first_seq,
                        last_seq,
                    } => bail!(
                        "the stored records {first_seq} to {last_seq} of tenant {tenant} are \
                         damaged (or their time span was changed) and cannot be exported \
                         faithfully; run `carevault audit verify` for the \
                         full report"
                    ),
                }
            }
            lines += u64::try_from(links.len()).unwrap_or(0);
            bar.set_position(start + u64::try_from(after.min(head.seq)).unwrap_or(0));
        }
        bar.set_position(start + u64::try_from(head.seq).unwrap_or(0));
    }
    writer.flush()?;
    bar.finish_and_clear();
    eprintln!("exported {lines} audit records");
    Ok(())
}

/// Removes what retention may remove from each chain (see [`AuditCommand::Retain`]).
async fn retain(
    runtime: &Runtime,
    data_dir: &Path,
    only: Option<TenantId>,
    before_ms: i64,
    dry_run: bool,
) -> anyhow::Result<()> {
    let key = &runtime.signing_key;
    let dir = checkpoints::checkpoint_dir(&runtime.config, data_dir)?;
    let (checkpoints, invalid) = read_checkpoints(&dir, &key.verifying_key(), only)?;
    let heads = runtime.store.audit_heads().await?;
    let mut removed_total = 0;
    for (tenant, _) in heads
        .into_iter()
        .filter(|(tenant, _)| only.is_none_or(|only| only == *tenant))
    {
        let Some(through) = runtime
            .store
            .audit_retention_boundary(tenant, before_ms)
            .await?
        else {
            println!(
                "tenant {tenant}: no segment is wholly older than the cut-off; nothing removed"
            );
            continue;
        };
        // Retention never launders a break: the chain must verify clean first.
        let mine: Vec<VerifiedCheckpoint> = checkpoints
            .iter()
            .filter(|checkpoint| checkpoint.tenant == tenant)
            .cloned()
            .collect();
        let report = verify_chain(
            runtime.store.clone(),
            tenant,
            mine,
            &key.verifying_key(),
            &|_| {},
        )
        .await?;
        let bad_lines = invalid
            .iter()
            .filter(|found| found.tenant.as_deref() == Some(tenant.to_string().as_str()))
            .count();
        if !report.breaks.is_empty() || bad_lines > 0 {
            bail!(
                "tenant {tenant}: the audit trail has {} breaks; retention removes nothing until \
                 `carevault audit verify --tenant {tenant}` is clean",
                report.breaks.len() + bad_lines
            );
        }
        // The boundary comes from the segments' time columns, which no hash covers; the clean
        // verification above compared each span with its records' hashed times
        // (`segment-times-changed`), so the columns can be trusted here.
        let hash = runtime
            .store
            .audit_hash_at(tenant, through)
            .await?
            .with_context(|| format!("tenant {tenant}: no stored hash at record {through}"))?;
        if dry_run {
            println!("tenant {tenant}: would remove the records up to number {through}");
            continue;
        }
        let now = runtime.now_ms();
        // The removal is recorded, durably, in the chain it shortens before anything goes.
        runtime
            .store
            .append_audit(&[operator_record(
                tenant,
                now,
                "audit.retain",
                &format!("through_seq={through} before_ms={before_ms}"),
            )])
            .await
            .context("recording the retention in the audit trail")?;
        let marker = RetentionMarker::sign(tenant, through, &hash, now, key);
        let removed = runtime
            .store
            .audit_retain(tenant, &marker)
            .await
            .with_context(|| format!("removing old records of tenant {tenant}"))?;
        removed_total += removed;
        println!(
            "tenant {tenant}: removed {removed} records up to number {through}, behind a signed \
             retention marker"
        );
    }
    if !dry_run {
        println!("retention removed {removed_total} records");
    }
    Ok(())
}

/// A record of the host operator's own action on a chain (export, retention).
fn operator_record(tenant: TenantId, now_ms: i64, action: &str, detail: &str) -> AuditRecord {
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: now_ms,
        tenant,
        principal: "operator/cli".to_owned(),
        session: None,
        roles: vec!["platform_operator".to_owned()],
        auth_strength: AuthStrength::HostOperator.as_str().to_owned(),
        source: None,
        action: action.to_owned(),
        resource_type: None,
        resource_id: None,
        subjects: Vec::new(),
        categories: Vec::new(),
        purpose: None,
        outcome: Outcome::Success,
        detail: Some(detail.to_owned()),
    }
}
