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

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, OnceLock};
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
    Committer {
        sender: mpsc::Sender<Pending>,
        gathering: Arc<Gathering>,
    },
    /// Appended by the caller itself, one record at a time (benchmarks only).
    Inline(Arc<dyn AuditSink>),
}

/// The most records one shared commit carries.
const MAX_BATCH: usize = 512;

/// When the committer begins a shared commit.
#[derive(Clone, Copy, Debug)]
struct Pacing {
    /// Under load, a small shared commit begins at most this long after the one before it.
    interval: Duration,
    /// A batch this large commits at once, interval or not.
    enough: usize,
}

/// Committing as soon as anything waited made batches of 3 to 7 records when the server's two
/// cores were busy with reads: thousands of commits a second, each costing the committer CPU
/// (the commit, the sync) and every SQLite reader its page cache. With an interval of 1.5 ms,
/// over HTTP at 10,000 patients, reads by id ran 1.03–1.25× faster in alternated runs, p99 from
/// 10–11 to 8.3–9.3 ms, and the committer used about 37 % less CPU (bench/notes.md, "Pacing the
/// group commit"). An idle server commits at once.
///
/// A pause ends early once 32 records wait: on a machine fast enough to gather them sooner, the
/// requests would otherwise wait out the interval with the cores idle. Measured at 100,000
/// patients (bench/notes.md, thirteenth session), reads by id 0.386–0.393 × `/healthz` against
/// 0.319–0.359 × when every pause ran its whole interval, searches unchanged.
const PACING: Pacing = Pacing {
    interval: Duration::from_micros(1_500),
    enough: 32,
};

/// What a sender needs to end the committer's pause: its thread, and how many records its
/// batch already holds (the channel counts only those not yet taken).
struct Gathering {
    committer: OnceLock<std::thread::Thread>,
    taken: AtomicUsize,
    enough: usize,
}

impl Gathering {
    /// Called after each send: wakes a pausing committer once its batch would be large enough.
    /// Unparking a thread that is not parked costs an atomic swap, and makes its next park
    /// return at once (the committer then counts again and parks anew).
    fn sent(&self, sender: &mpsc::Sender<Pending>) {
        let queued = sender.max_capacity() - sender.capacity();
        if queued + self.taken.load(Ordering::Relaxed) >= self.enough
            && let Some(committer) = self.committer.get()
        {
            committer.unpark();
        }
    }
}

impl AuditTrail {
    /// Starts the committer, appending to the store.
    pub fn start(store: Arc<dyn Store>) -> AuditTrail {
        AuditTrail::with_committer(Arc::new(StoreSink(store)), PACING)
    }

    /// The committer runs on a thread of its own. On the server's runtime it would be one task
    /// among hundreds: woken by the database's thread when a commit ends, it waits in the
    /// runtime's queue behind the requests (milliseconds under load), and every request waiting
    /// for that commit waits with it. On its own thread the operating system runs it as soon as
    /// it wakes. It stops when the last [`AuditTrail`] is dropped; if it cannot start, every
    /// record fails and data is refused.
    fn with_committer(sink: Arc<dyn AuditSink>, pacing: Pacing) -> AuditTrail {
        let (sender, receiver) = mpsc::channel::<Pending>(MAX_BATCH * 8);
        let healthy = Arc::new(AtomicBool::new(true));
        let committer_healthy = healthy.clone();
        let gathering = Arc::new(Gathering {
            committer: OnceLock::new(),
            taken: AtomicUsize::new(0),
            enough: pacing.enough,
        });
        let committer_gathering = gathering.clone();
        let started = std::thread::Builder::new()
            .name("audit-committer".to_owned())
            .spawn(move || {
                match tokio::runtime::Builder::new_current_thread()
                    .enable_all()
                    .build()
                {
                    Ok(runtime) => {
                        runtime.block_on(run_committer(
                            sink,
                            receiver,
                            committer_healthy,
                            &committer_gathering,
                            pacing,
                        ));
                    }
                    Err(error) => {
                        committer_healthy.store(false, Ordering::Relaxed);
                        tracing::error!(%error, "the audit committer could not start");
                    }
                }
            });
        match started {
            Ok(handle) => {
                // Set before any record can be sent: the trail is not yet returned.
                let _ = gathering.committer.set(handle.thread().clone());
            }
            Err(error) => {
                // The receiver is dropped with the closure: every send fails, and data is
                // refused.
                healthy.store(false, Ordering::Relaxed);
                tracing::error!(%error, "the audit committer thread could not start");
            }
        }
        AuditTrail {
            route: Route::Committer { sender, gathering },
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
        let (sender, gathering) = match &self.route {
            Route::Committer { sender, gathering } => (sender, gathering),
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
        gathering.sent(sender);
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
    gathering: &Gathering,
    pacing: Pacing,
) {
    let mut batch: Vec<Pending> = Vec::with_capacity(MAX_BATCH);
    let mut last_commit: Option<Instant> = None;
    // Each commit takes everything that arrived while the last one was being written, and, under
    // load, what arrives until the interval has passed since the last commit began, or until
    // enough records wait. A lone request (an idle server) is committed at once.
    while receiver.recv_many(&mut batch, MAX_BATCH).await > 0 {
        if let Some(pause) = pause_before_commit(pacing, last_commit, Instant::now(), batch.len()) {
            // A plain park: Tokio's timer counts whole milliseconds, and this thread runs only
            // the committer (and at most a database pool's housekeeping, delayed as long). A
            // sender unparks it once enough records wait; a wake-up that finds fewer (an
            // unpark left from before, or a spurious one) parks again until the pause is over.
            let until = Instant::now() + pause;
            loop {
                gathering.taken.store(batch.len(), Ordering::Relaxed);
                std::thread::park_timeout(until.saturating_duration_since(Instant::now()));
                while batch.len() < MAX_BATCH {
                    match receiver.try_recv() {
                        Ok(pending) => batch.push(pending),
                        Err(_) => break,
                    }
                }
                if batch.len() >= pacing.enough || Instant::now() >= until {
                    break;
                }
            }
            gathering.taken.store(0, Ordering::Relaxed);
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
/// the interval after the last commit began, unless the batch is already large enough or there
/// was no commit before. `None`: commit at once.
fn pause_before_commit(
    pacing: Pacing,
    last_began: Option<Instant>,
    now: Instant,
    waiting: usize,
) -> Option<Duration> {
    let since = now.saturating_duration_since(last_began?);
    (since < pacing.interval && waiting < pacing.enough).then(|| pacing.interval - since)
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
        assert_eq!(pause_before_commit(PACING, None, at(0), 1), None);
        assert_eq!(
            pause_before_commit(PACING, Some(began), at(0), 1),
            Some(PACING.interval)
        );
        assert_eq!(
            pause_before_commit(PACING, Some(began), at(400), PACING.enough - 1),
            Some(PACING.interval - Duration::from_micros(400))
        );
        for late in [PACING.interval, PACING.interval + Duration::from_micros(1)] {
            assert_eq!(
                pause_before_commit(PACING, Some(began), began + late, 1),
                None
            );
        }
        assert_eq!(
            pause_before_commit(PACING, Some(began), at(400), PACING.enough),
            None
        );
        // Every pause ends exactly the interval after the last commit began.
        for micros in [0, 1, 700, 1_499] {
            let pause = pause_before_commit(PACING, Some(began), at(micros), 1).unwrap_or_default();
            assert_eq!(at(micros) + pause, began + PACING.interval, "{micros} µs");
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
        let trail = AuditTrail::with_committer(sink.clone(), PACING);
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
                gap >= PACING.interval,
                "a commit {gap:?} after the record before it"
            );
        }
        Ok(())
    }

    /// A pause ends as soon as enough records wait, and not before: seven records of a pacing
    /// that wants eight wait out (here) a minute's interval, and the eighth sends all eight
    /// into one commit at once. Without the wake-up the eight would wait the minute and the
    /// test would time out.
    #[tokio::test]
    async fn a_pause_ends_once_enough_records_wait() -> Result<(), Box<dyn std::error::Error>> {
        let pacing = Pacing {
            interval: Duration::from_secs(60),
            enough: 8,
        };
        let sink = Arc::new(Recording::default());
        let trail = AuditTrail::with_committer(sink.clone(), pacing);
        // The first commit begins at once; the next small one pauses.
        trail.record(record("read")).await?;
        let waiting: Vec<_> = (0..pacing.enough - 1)
            .map(|_| {
                let trail = trail.clone();
                tokio::spawn(async move { trail.record(record("read")).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert!(
            waiting.iter().all(|task| !task.is_finished()),
            "fewer records than enough ended the pause"
        );
        let last = Duration::from_secs(20);
        tokio::time::timeout(last, trail.record(record("read"))).await??;
        for task in waiting {
            tokio::time::timeout(last, task).await???;
        }
        let appends = sink.0.lock().map_err(|_| "poisoned")?.clone();
        assert_eq!(
            appends.iter().map(|(_, count)| *count).collect::<Vec<_>>(),
            vec![1, pacing.enough]
        );
        Ok(())
    }

    /// Notes each append as it begins, then holds the committer's thread `.1` long: a commit
    /// in progress, during which records queue.
    struct Slow(Arc<Recording>, Duration);

    #[async_trait]
    impl AuditSink for Slow {
        async fn append(&self, records: &[AuditRecord]) -> StoreResult<()> {
            self.0.append(records).await?;
            std::thread::sleep(self.1);
            Ok(())
        }
    }

    /// A wake-up that finds too few records parks again. Eight records sent during one commit
    /// wake the committer while it is not parked, which leaves its next park to return at once;
    /// three records sent during the next commit then find that wake-up, and must still wait
    /// for five more (or the interval) rather than commit on their own.
    #[tokio::test]
    async fn a_wake_up_that_finds_too_few_records_parks_again()
    -> Result<(), Box<dyn std::error::Error>> {
        let pacing = Pacing {
            interval: Duration::from_secs(60),
            enough: 8,
        };
        let commit = Duration::from_millis(600);
        let recording = Arc::new(Recording::default());
        let trail = AuditTrail::with_committer(Arc::new(Slow(recording.clone(), commit)), pacing);
        let send = |count: usize| -> Vec<_> {
            (0..count)
                .map(|_| {
                    let trail = trail.clone();
                    tokio::spawn(async move { trail.record(record("read")).await })
                })
                .collect()
        };
        let start = tokio::time::Instant::now();
        let first = send(1);
        tokio::time::sleep_until(start + commit / 3).await;
        let during_first = send(pacing.enough);
        tokio::time::sleep_until(start + commit + commit / 3).await;
        let during_second = send(3);
        tokio::time::sleep_until(start + commit * 2 + commit / 2).await;
        let counts = |recording: &Recording| -> Result<Vec<usize>, &'static str> {
            Ok(recording
                .0
                .lock()
                .map_err(|_| "poisoned")?
                .iter()
                .map(|(_, count)| *count)
                .collect())
        };
        assert_eq!(
            counts(&recording)?,
            vec![1, pacing.enough],
            "three committed alone"
        );
        let last = send(pacing.enough - 3);
        for task in first
            .into_iter()
            .chain(during_first)
            .chain(during_second)
            .chain(last)
        {
            tokio::time::timeout(Duration::from_secs(20), task).await???;
        }
        assert_eq!(counts(&recording)?, vec![1, pacing.enough, pacing.enough]);
        Ok(())
    }
}
