//! Audit records, and the group committer that makes them durable before data leaves.
//!
//! Records name data subjects by resource id, never by name. A data response is released only
//! after [`AuditTrail::record`] returns `Ok`, which happens only after the database committed
//! the record. Writes do not use the committer: their records commit in the same transaction as
//! the write (see [`crate::store::Store::commit`]).
//!
//! Tamper evidence hangs off `seq`, which the store assigns in commit order per tenant:
//! [`chain`] links each record to the one before it (the store computes the links inside the
//! appending transaction), [`checkpoint`] signs chain heads with a key kept outside the database,
//! and [`verify`] checks a stored chain against both. [`storage`] is what they need from a store;
//! [`search`] is how security officers (and the host operator) read the trail.

pub mod chain;
pub mod checkpoint;
pub mod retention;
pub mod search;
pub mod storage;
pub mod verify;

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use async_trait::async_trait;
use serde::{Deserialize, Serialize};
use tokio::sync::{mpsc, oneshot};

use crate::ids::TenantId;
use crate::store::{Store, StoreError, StoreResult};

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Outcome {
    Success,
    /// The request was refused for lack of rights (the client saw "not found" or 403).
    Denied,
    NotFound,
    /// The request was invalid (4xx other than the above).
    Invalid,
    /// Stored data failed its integrity check.
    IntegrityFailure,
    Error,
}

impl Outcome {
    pub fn as_str(self) -> &'static str {
        match self {
            Outcome::Success => "success",
            Outcome::Denied => "denied",
            Outcome::NotFound => "not-found",
            Outcome::Invalid => "invalid",
            Outcome::IntegrityFailure => "integrity-failure",
            Outcome::Error => "error",
        }
    }
}

/// One audit record. The stored form is this struct's JSON (versioned by `v`).
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditRecord {
    /// Format version of the record.
    pub v: u32,
    /// Per-tenant sequence number, assigned by the store when committed (0 before).
    pub seq: i64,
    pub time_ms: i64,
    #[serde(with = "tenant_text")]
    pub tenant: TenantId,
    /// `client/<id>`, `operator/cli`, later `user/<id>`.
    pub principal: String,
    /// Short id of the token or session used.
    pub session: Option<String>,
    pub roles: Vec<String>,
    pub auth_strength: String,
    pub source: Option<String>,
    /// `read`, `vread`, `search`, `history`, `create`, `update`, `delete`, `transaction`,
    /// `batch`, `token.issue`, `tenant.create`, `client.register`, …
    pub action: String,
    pub resource_type: Option<String>,
    pub resource_id: Option<String>,
    /// Patient ids whose data the action touched or returned.
    pub subjects: Vec<String>,
    /// Data categories returned or written (`demographics`, `clinical`, …).
    pub categories: Vec<String>,
    pub purpose: Option<String>,
    pub outcome: Outcome,
    /// A short, non-personal note (an error code, a query's parameter names).
    pub detail: Option<String>,
}

pub const AUDIT_RECORD_VERSION: u32 = 1;

/// A record as stored, with `seq` set, borrowed: it serialises exactly as [`AuditRecord`]
/// does (the same fields in the same order), so the chain's canonical text is written without
/// cloning the record. [`AuditRecord::stored_as`] names every field, so a field added to the
/// record and not here does not compile.
#[derive(Serialize)]
pub(crate) struct StoredRecord<'a> {
    v: u32,
    seq: i64,
    time_ms: i64,
    #[serde(with = "tenant_text")]
    tenant: TenantId,
    principal: &'a str,
    session: Option<&'a str>,
    roles: &'a [String],
    auth_strength: &'a str,
    source: Option<&'a str>,
    action: &'a str,
    resource_type: Option<&'a str>,
    resource_id: Option<&'a str>,
    subjects: &'a [String],
    categories: &'a [String],
    purpose: Option<&'a str>,
    outcome: Outcome,
    detail: Option<&'a str>,
}

impl AuditRecord {
    /// This record as stored at position `seq` of its chain.
    pub(crate) fn stored_as(&self, seq: i64) -> StoredRecord<'_> {
        let AuditRecord {
            v,
            seq: _,
            time_ms,
            tenant,
            principal,
            session,
            roles,
            auth_strength,
            source,
            action,
            resource_type,
            resource_id,
            subjects,
            categories,
            purpose,
            outcome,
            detail,
        } = self;
        StoredRecord {
            v: *v,
            seq,
            time_ms: *time_ms,
            tenant: *tenant,
            principal,
            session: session.as_deref(),
            roles,
            auth_strength,
            source: source.as_deref(),
            action,
            resource_type: resource_type.as_deref(),
            resource_id: resource_id.as_deref(),
            subjects,
            categories,
            purpose: purpose.as_deref(),
            outcome: *outcome,
            detail: detail.as_deref(),
        }
    }
}

mod tenant_text {
    use serde::{Deserialize, Deserializer, Serializer};

    use crate::ids::TenantId;

    pub fn serialize<S: Serializer>(tenant: &TenantId, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(tenant)
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(d: D) -> Result<TenantId, D::Error> {
        let text = String::deserialize(d)?;
        TenantId::parse(&text).ok_or_else(|| serde::de::Error::custom("tenant is not a UUID"))
    }
}

#[derive(Debug, thiserror::Error)]
#[error("the audit trail could not be written: {0}")]
pub struct AuditUnavailable(pub String);

type Pending = (AuditRecord, oneshot::Sender<Result<(), String>>);

/// Where the group committer sends each batch: the store ([`AuditTrail::start`]). A benchmark
/// may pass another sink to [`AuditTrail::inline`] (a bare in-memory append) to measure
/// what the durable trail costs; the server has no such setting.
#[async_trait]
pub trait AuditSink: Send + Sync {
    /// Returns once every record of the batch is durable (or fails for all of them).
    async fn append(&self, records: &[AuditRecord]) -> StoreResult<()>;
}

struct StoreSink(Arc<dyn Store>);

#[async_trait]
impl AuditSink for StoreSink {
    async fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
        self.0.append_audit(records).await
    }
}

/// Group commit for audit records that do not ride on a write transaction (reads, searches,
/// refusals). Concurrent callers' records are gathered into one transaction, so durability
/// costs one commit per batch instead of one per request.
#[derive(Clone)]
pub struct AuditTrail {
    route: Route,
    healthy: Arc<AtomicBool>,
}

/// How a record reaches its sink.
#[derive(Clone)]
enum Route {
    /// Through the group committer (the server).
    Committer(mpsc::Sender<Pending>),
    /// Appended by the caller itself, one record at a time (benchmarks only).
    Inline(Arc<dyn AuditSink>),
}

/// The most records one shared commit carries.
const MAX_BATCH: usize = 512;

/// Under load, a small shared commit begins at most this long after the one before it.
/// Committing as soon as anything waited made batches of 3 to 7 records when the server's two
/// cores were busy with reads: thousands of commits a second, each costing the committer CPU
/// (SQLite's commit, the fsync) and every SQLite reader its page cache. With the interval, over
/// HTTP at 10,000 patients, reads by id ran 1.03–1.25× faster in alternated runs, p99 from 10–11
/// to 8.3–9.3 ms, and the committer used about 37 % less CPU (bench/notes.md, "Pacing the group
/// commit"). An idle server commits at once.
const COMMIT_INTERVAL: Duration = Duration::from_micros(1_500);

/// A batch this large commits at once, interval or not: the committer is then the stage the
/// requests wait for, and waiting longer would only slow them.
const SMALL_BATCH: usize = 16;

impl AuditTrail {
    /// Starts the committer, appending to the store.
    pub fn start(store: Arc<dyn Store>) -> AuditTrail {
        AuditTrail::with_committer(Arc::new(StoreSink(store)))
    }

    /// The committer runs on a thread of its own. On the server's runtime it would be one task
    /// among hundreds: woken by the database's thread when a commit ends, it waits in the
    /// runtime's queue behind the requests (milliseconds under load), and every request waiting
    /// for that commit waits with it. On its own thread the operating system runs it as soon as
    /// it wakes. It stops when the last [`AuditTrail`] is dropped; if it cannot start, every
    /// record fails and data is refused.
    fn with_committer(sink: Arc<dyn AuditSink>) -> AuditTrail {
        let (sender, receiver) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        let healthy = Arc::new(AtomicBool::new(true));
        let committer_healthy = healthy.clone();
        let started = std::thread::Builder::new()
            .name("audit-committer".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(run_committer(sink, receiver, committer_healthy));
                    }
                    Err(error) => {
                        committer_healthy.store(false, Ordering::Relaxed);
                        tracing::error!(%error, "the audit committer could not start");
                    }
                }
            });
        if let Err(error) = started {
            healthy.store(false, Ordering::Relaxed);
            tracing::error!(%error, "the audit committer thread could not start");
        }
        AuditTrail {
            route: Route::Committer(sender),
            healthy,
        }
    }

    /// Benchmarks only: each record is appended by its caller straight to `sink`, with no
    /// committer in between. With an in-memory sink this is the bare append that the durable
    /// trail is compared with (issue #4 point 9); the server has no such setting.
    pub fn inline(sink: Arc<dyn AuditSink>) -> AuditTrail {
        AuditTrail {
            route: Route::Inline(sink),
            healthy: Arc::new(AtomicBool::new(true)),
        }
    }

    /// Returns once the record is durable. An error means the caller must not release data.
    pub async fn record(&self, record: AuditRecord) -> Result<(), AuditUnavailable> {
        let sender = match &self.route {
            Route::Committer(sender) => sender,
            Route::Inline(sink) => {
                return sink
                    .append(std::slice::from_ref(&record))
                    .await
                    .map_err(|error| AuditUnavailable(describe(&error)));
            }
        };
        let (done, wait) = oneshot::channel();
        sender
            .send((record, done))
            .await
            .map_err(|_| AuditUnavailable("the audit committer has stopped".to_owned()))?;
        match wait.await {
            Ok(Ok(())) => Ok(()),
            Ok(Err(message)) => Err(AuditUnavailable(message)),
            Err(_) => Err(AuditUnavailable(
                "the audit committer dropped the record".to_owned(),
            )),
        }
    }

    /// False after the last commit failed; true again once one succeeds. Shown by /readyz.
    pub fn is_healthy(&self) -> bool {
        self.healthy.load(Ordering::Relaxed)
    }

    /// Lets write paths report the state of their own (in-transaction) audit commits.
    pub fn note_commit(&self, ok: bool) {
        self.healthy.store(ok, Ordering::Relaxed);
    }
}

async fn run_committer(
    sink: Arc<dyn AuditSink>,
    mut receiver: mpsc::Receiver<Pending>,
    healthy: Arc<AtomicBool>,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    // Each commit takes everything that arrived while the last one was being written, and, under
    // load, what arrives until [`COMMIT_INTERVAL`] has passed since the last commit began. A lone
    // request (an idle server) is committed at once.
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some(pause) = pause_before_commit(last_commit, Instant::now(), batch.len()) {
            // A plain sleep: Tokio's timer counts whole milliseconds, and this thread runs
            // only the committer (and at most a database pool's housekeeping, delayed as long).
            std::thread::sleep(pause);
            while batch.len() < MAX_BATCH {
                match receiver.try_recv() {
                    Ok(pending) => batch.push(pending),
                    Err(_) => break,
                }
            }
        }
        last_commit = Some(Instant::now());
        let (records, waiting): (Vec<AuditRecord>, Vec<_>) = batch.drain(..).unzip();
        let result = sink.append(&records).await;
        let outcome = match &result {
            Ok(()) => Ok(()),
            Err(error) => {
                tracing::error!(%error, records = records.len(), "audit append failed");
                Err(describe(error))
            }
        };
        healthy.store(result.is_ok(), Ordering::Relaxed);
        for done in waiting {
            // A caller that gave up (its request was cancelled) no longer listens; that is fine.
            let _ = done.send(outcome.clone());
        }
    }
}

/// How long a batch of `waiting` records found at `now` waits before its commit begins: until
/// [`COMMIT_INTERVAL`] after the last commit began, unless the batch is already large or there
/// was no commit before. `None`: commit at once.
fn pause_before_commit(
    last_began: Option<Instant>,
    now: Instant,
    waiting: usize,
) -> Option<Duration> {
    let since = now.saturating_duration_since(last_began?);
    (since < COMMIT_INTERVAL && waiting < SMALL_BATCH).then(|| COMMIT_INTERVAL - since)
}

fn describe(error: &StoreError) -> String {
    match error {
        StoreError::Backend(message) => message.clone(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Mutex;

    use super::*;
    use crate::audit::chain::tests::record;

    /// Notes when each append began and how many records it carried.
    #[derive(Default)]
    struct Recording(Mutex<Vec<(Instant, usize)>>);

    #[async_trait]
    impl AuditSink for Recording {
        async fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
            self.0
                .lock()
                .map_err(|_| StoreError::Backend("poisoned".to_owned()))?
                .push((Instant::now(), records.len()));
            Ok(())
        }
    }

    /// The pacing decision: a small batch waits until the interval has passed since the last
    /// commit began, so that its commit begins no sooner; a large batch, or the first, commits at
    /// once.
    #[test]
    fn a_small_batch_waits_out_the_interval_since_the_last_commit_began() {
        let began = Instant::now();
        let at = |micros: u64| began + Duration::from_micros(micros);
        assert_eq!(pause_before_commit(None, at(0), 1), None);
        assert_eq!(
            pause_before_commit(Some(began), at(0), 1),
            Some(COMMIT_INTERVAL)
        );
        assert_eq!(
            pause_before_commit(Some(began), at(400), SMALL_BATCH - 1),
            Some(COMMIT_INTERVAL - Duration::from_micros(400))
        );
        for late in [COMMIT_INTERVAL, COMMIT_INTERVAL + Duration::from_micros(1)] {
            assert_eq!(pause_before_commit(Some(began), began + late, 1), None);
        }
        assert_eq!(pause_before_commit(Some(began), at(400), SMALL_BATCH), None);
        // Every pause ends exactly the interval after the last commit began.
        for micros in [0, 1, 700, 1_499] {
            let pause = pause_before_commit(Some(began), at(micros), 1).unwrap_or_default();
            assert_eq!(at(micros) + pause, began + COMMIT_INTERVAL, "{micros} µs");
        }
    }

    /// Records awaited one after another each get a commit of their own, and each commit after
    /// the first begins at least the interval after the one before it began. The sink sees an
    /// append some time after the committer began it (the call, and whatever the scheduler
    /// interposes), so the test bounds each beginning from below by what it can see: a commit
    /// cannot begin before its record was sent. Without the pause, a commit reached the sink
    /// about 0.1 ms after the record before it was sent.
    #[tokio::test]
    async fn small_commits_one_after_another_begin_at_least_the_interval_apart()
    -> Result<(), Box<dyn std::error::Error>> {
        let sink = Arc::new(Recording::default());
        let trail = AuditTrail::with_committer(sink.clone());
        let mut sent = Vec::new();
        for _ in 0..4 {
            sent.push(Instant::now());
            trail.record(record("read")).await?;
        }
        let appends = sink.0.lock().map_err(|_| "poisoned")?.clone();
        assert_eq!(
            appends.iter().map(|(_, count)| *count).collect::<Vec<_>>(),
            vec![1; 4],
            "each record waited for its own commit"
        );
        for (previous_sent, (seen, _)) in sent.iter().zip(appends.iter().skip(1)) {
            let gap = seen.duration_since(*previous_sent);
            assert!(
                gap >= COMMIT_INTERVAL,
                "a commit {gap:?} after the record before it"
            );
        }
        Ok(())
    }
}
