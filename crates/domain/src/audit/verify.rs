//! Verification of one tenant's chain against its head row and its signed checkpoints.
//!
//! [`ChainCheck`] is fed the stored rows in sequence order, one at a time (so ten million
//! records never sit in memory), and reports every break with its sequence number:
//!
//! - each row's text is hashed with its stored `prev_hash` and must give its stored `hash`
//!   (otherwise the record was changed);
//! - each row's `prev_hash` must be the previous row's `hash` (otherwise a record was removed,
//!   inserted or moved before it), and sequence numbers must run without gaps;
//! - each record must name its own tenant and sequence number;
//! - at every checkpointed sequence number the chain must have the signed hash (otherwise the
//!   chain was rebuilt from an edit onwards), and no checkpoint may lie past the end (otherwise
//!   the newest records were cut off);
//! - the head row must agree with the last record.
//!
//! After a broken link the check carries on from the stored hash, so one tampered record gives
//! one report rather than one per later record; a chain rebuilt to hide an edit has intact
//! links, and the checkpoints catch it.
//!
//! A chain shortened by retention starts after its newest valid signed marker (see
//! [`super::retention`]) instead of at the genesis hash; a marker that fails its signature
//! check is itself a break, and then the records it claims to have removed count as missing.
//! [`verify_chain`] runs the whole check of one tenant against a store.

use std::sync::Arc;

use carevault_crypto::VerifyingKey;
use serde::{Deserialize, Serialize};
use tokio::sync::mpsc;

use super::chain::{ChainHash, GENESIS, hash_from_bytes, link};
use super::checkpoint::VerifiedCheckpoint;
use super::retention::VerifiedMarker;
use super::storage::{AuditStore, ChainHead, LinkQuery, StoredEntry, StoredLink};
use crate::ids::TenantId;
use crate::store::StoreResult;

/// What is wrong at a place in the trail.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
#[serde(tag = "kind", rename_all = "kebab-case")]
pub enum Fault {
    /// The record's text does not hash, with its stored predecessor, to its stored hash.
    ContentChanged,
    /// The stored `prev_hash` is not the hash of the record before it.
    LinkBroken,
    /// Sequence numbers are missing from the chain.
    Missing,
    /// The record's own `seq` is not its position.
    WrongSeq { recorded: i64 },
    /// The record names another tenant.
    WrongTenant { recorded: String },
    /// The stored text is not an audit record.
    Unreadable,
    /// A record after the start of hashing has no hash columns.
    Unhashed,
    /// A signed checkpoint disagrees with the chain at its sequence number.
    CheckpointMismatch { origin: String },
    /// A retention marker is forged, edited or signed by another key.
    MarkerInvalid { reason: String },
    /// A signed checkpoint names a sequence number past the last record: records were cut off.
    CheckpointPastEnd { chain_end: i64, origin: String },
    /// The record's stored time differs from the time in its (hashed) text.
    TimeChanged { recorded: i64 },
    /// A segment's stored time span differs from its records' times.
    SegmentTimesChanged,
    /// A signed checkpoint names a sequence number whose record is missing.
    CheckpointOnMissing { origin: String },
    /// A checkpoint line is forged, edited, unreadable or signed by another key.
    CheckpointInvalid { origin: String, reason: String },
    /// The head row disagrees with the last record.
    HeadMismatch { head_seq: i64 },
}

impl Fault {
    /// A sentence for the operator.
    pub fn describe(&self) -> String {
        match self {
            Fault::ContentChanged => {
                "the record does not match its hash: it was changed after it was written".to_owned()
            }
            Fault::LinkBroken => "the record does not link to the record before it: a record \
                                  was removed, inserted or moved here"
                .to_owned(),
            Fault::Missing => "records are missing from the chain".to_owned(),
            Fault::WrongSeq { recorded } => format!(
                "the record says it is number {recorded}: records were renumbered or reordered"
            ),
            Fault::WrongTenant { recorded } => {
                format!("the record names tenant {recorded}: it was moved between tenants")
            }
            Fault::Unreadable => "the stored text is not an audit record".to_owned(),
            Fault::Unhashed => "the record has no chain hash although later ones do".to_owned(),
            Fault::CheckpointMismatch { origin } => format!(
                "the chain here differs from the signed checkpoint ({origin}): records up to \
                 here were changed and the chain rebuilt"
            ),
            Fault::CheckpointPastEnd { chain_end, origin } => format!(
                "a signed checkpoint ({origin}) names this record, but the chain ends at \
                 {chain_end}: the newest records were cut off"
            ),
            Fault::SegmentTimesChanged => "the time span stored for these records differs from \
                                           their own times: it was changed to move them in or \
                                           out of time-bounded searches and retention"
                .to_owned(),
            Fault::TimeChanged { recorded } => format!(
                "the time stored beside the record differs from its own ({recorded}): it was \
                 changed to move the record in or out of time-bounded searches"
            ),
            Fault::CheckpointOnMissing { origin } => {
                format!("a signed checkpoint ({origin}) names this record, which is missing")
            }
            Fault::CheckpointInvalid { origin, reason } => {
                format!("checkpoint {origin} cannot be trusted: {reason}")
            }
            Fault::MarkerInvalid { reason } => format!(
                "the retention marker for records up to here cannot be trusted ({reason}): \
                 records were removed outside retention"
            ),
            Fault::HeadMismatch { head_seq } => format!(
                "the head row (at {head_seq}) disagrees with the last record: the chain was \
                 cut or extended without it"
            ),
        }
    }

    fn groups_with(&self, other: &Fault) -> bool {
        matches!(
            (self, other),
            (Fault::ContentChanged, Fault::ContentChanged)
                | (Fault::WrongSeq { .. }, Fault::WrongSeq { .. })
                | (Fault::WrongTenant { .. }, Fault::WrongTenant { .. })
                | (Fault::Unreadable, Fault::Unreadable)
                | (Fault::Unhashed, Fault::Unhashed)
                | (Fault::TimeChanged { .. }, Fault::TimeChanged { .. })
        )
    }
}

/// One break: where (tenant, sequence numbers `seq..=last_seq`) and what.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct Break {
    /// `None` for a checkpoint line too damaged to name its tenant.
    pub tenant: Option<String>,
    pub seq: Option<i64>,
    pub last_seq: Option<i64>,
    #[serde(flatten)]
    pub fault: Fault,
    pub message: String,
}

impl Break {
    pub fn new(tenant: Option<TenantId>, seq: Option<i64>, fault: Fault) -> Break {
        Break {
            tenant: tenant.map(|tenant| tenant.to_string()),
            seq,
            last_seq: seq,
            message: fault.describe(),
            fault,
        }
    }
}

impl std::fmt::Display for Break {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match &self.tenant {
            Some(tenant) => write!(f, "tenant {tenant}")?,
            None => f.write_str("checkpoints")?,
        }
        match (self.seq, self.last_seq) {
            (Some(first), Some(last)) if last > first => write!(f, " seq {first}-{last}")?,
            (Some(seq), _) => write!(f, " seq {seq}")?,
            _ => {}
        }
        write!(f, ": {}", self.message)
    }
}

/// The outcome for one tenant.
#[derive(Clone, PartialEq, Eq, Debug, Serialize)]
pub struct TenantReport {
    pub tenant: String,
    pub records: u64,
    pub last_seq: i64,
    /// Valid checkpoints that matched the chain.
    pub checkpoints: u64,
    pub breaks: Vec<Break>,
}

/// The two fields of a stored record the walk checks against its position; the rest of the text
/// is covered by its hash (parsing only these keeps verification fast over millions of records).
#[derive(Deserialize)]
struct RecordIdentity<'a> {
    seq: i64,
    time_ms: i64,
    #[serde(borrow)]
    tenant: &'a str,
}

/// Records read per round trip while verifying.
const PAGE: usize = 8_192;

/// Checks one tenant's stored chain: from its newest valid retention marker (or the genesis
/// hash), through every stored record, against its head row and `checkpoints` (already
/// verified, any tenant's: only this one's are used). `progress` is told how many records each
/// page held. The next page is read (and its segments opened) by a task of its own while this
/// one checks the current page, so reading and hashing run side by side.
pub async fn verify_chain(
    store: Arc<dyn AuditStore>,
    tenant: TenantId,
    checkpoints: Vec<VerifiedCheckpoint>,
    key: &VerifyingKey,
    progress: &(dyn Fn(u64) + Sync),
) -> StoreResult<TenantReport> {
    let mut check = ChainCheck::new(tenant, checkpoints);
    let mut start: Option<VerifiedMarker> = None;
    let mut marker_breaks = Vec::new();
    for marker in store.audit_retention_markers(tenant).await? {
        match marker.verify(tenant, key) {
            Ok(verified) => {
                if start.is_none_or(|best| verified.through_seq > best.through_seq) {
                    start = Some(verified);
                }
            }
            Err(fault) => marker_breaks.push(Break::new(
                Some(tenant),
                Some(marker.through_seq),
                Fault::MarkerInvalid {
                    reason: fault.to_string(),
                },
            )),
        }
    }
    if let Some(marker) = &start {
        check.start_after(marker);
    }
    let (pages, mut next_page) = mpsc::channel::<StoreResult<Vec<StoredEntry>>>(2);
    let reader = tokio::spawn(read_pages(store.clone(), tenant, check.last_seq(), pages));
    while let Some(page) = next_page.recv().await {
        let entries = page?;
        for entry in &entries {
            check.push_entry(entry);
        }
        progress(u64::try_from(entries.len()).unwrap_or(0));
    }
    // The reader has ended (its channel closed); a panic in it is a failed walk.
    reader.await.map_err(|error| {
        crate::store::StoreError::Backend(format!("audit walk failed: {error}"))
    })?;
    let head = store.audit_head(tenant).await?;
    let mut report = check.finish(head);
    report.breaks.splice(0..0, marker_breaks);
    Ok(report)
}

/// Sends the pages of a walk after `after_seq`, in order, until the trail ends, the store fails
/// (the error is the last message) or nobody listens.
async fn read_pages(
    store: Arc<dyn AuditStore>,
    tenant: TenantId,
    mut after_seq: i64,
    pages: mpsc::Sender<StoreResult<Vec<StoredEntry>>>,
) {
    loop {
        let query = LinkQuery {
            after_seq,
            since_ms: None,
            until_ms: None,
            limit: PAGE,
        };
        let entries = match store.audit_links(tenant, &query).await {
            Ok(entries) => entries,
            Err(error) => {
                let _ = pages.send(Err(error)).await;
                return;
            }
        };
        let last = entries
            .iter()
            .map(|entry| match entry {
                StoredEntry::Link(link) => link.seq,
                StoredEntry::Damaged { last_seq, .. } => *last_seq,
                StoredEntry::TimesChanged { first_seq, .. } => *first_seq,
            })
            .max();
        // An empty page ends the walk; so does one that does not move on (a store that returned
        // nothing new would otherwise be asked forever).
        let Some(last) = last.filter(|last| *last > after_seq) else {
            if !entries.is_empty() {
                let _ = pages.send(Ok(entries)).await;
            }
            return;
        };
        after_seq = last;
        if pages.send(Ok(entries)).await.is_err() {
            return;
        }
    }
}

/// The running check of one tenant's chain.
pub struct ChainCheck {
    tenant: TenantId,
    expected_seq: i64,
    last_seq: i64,
    /// The hash of the chain so far (the stored hash of the last row once links are stored).
    running: ChainHash,
    hashed_started: bool,
    /// After a damaged segment the running hash is unknown: the next link is taken as it is.
    resync: bool,
    /// Verified checkpoints, by ascending sequence number.
    checkpoints: Vec<VerifiedCheckpoint>,
    next_checkpoint: usize,
    matched: u64,
    records: u64,
    breaks: Vec<Break>,
}

impl ChainCheck {
    pub fn new(tenant: TenantId, mut checkpoints: Vec<VerifiedCheckpoint>) -> ChainCheck {
        checkpoints.retain(|checkpoint| checkpoint.tenant == tenant);
        checkpoints.sort_by_key(|checkpoint| checkpoint.seq);
        ChainCheck {
            tenant,
            expected_seq: 1,
            last_seq: 0,
            running: GENESIS,
            hashed_started: false,
            resync: false,
            checkpoints,
            next_checkpoint: 0,
            matched: 0,
            records: 0,
            breaks: Vec::new(),
        }
    }

    /// The last sequence number seen (where the next page starts).
    pub fn last_seq(&self) -> i64 {
        self.last_seq
    }

    /// Starts the chain after a (verified) retention marker: the records up to it were removed
    /// by retention; checkpoints before it name removed records and are set aside, and one at
    /// the marker itself must agree with it.
    pub fn start_after(&mut self, marker: &VerifiedMarker) {
        self.expected_seq = marker.through_seq + 1;
        self.last_seq = marker.through_seq;
        self.running = marker.hash;
        self.hashed_started = true;
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.seq > marker.through_seq {
                break;
            }
            if checkpoint.seq == marker.through_seq {
                if checkpoint.hash == marker.hash {
                    self.matched += 1;
                } else {
                    self.breaks.push(Break::new(
                        Some(self.tenant),
                        Some(checkpoint.seq),
                        Fault::CheckpointMismatch {
                            origin: checkpoint.origin.clone(),
                        },
                    ));
                }
            }
            self.next_checkpoint += 1;
        }
    }

    /// Checks the next entry of a walk (entries must come in ascending `seq`).
    pub fn push_entry(&mut self, entry: &StoredEntry) {
        match entry {
            StoredEntry::Link(link) => self.push(link),
            StoredEntry::Damaged {
                first_seq,
                last_seq,
            } => self.push_damaged(*first_seq, *last_seq),
            StoredEntry::TimesChanged {
                first_seq,
                last_seq,
            } => {
                let mut changed = Break::new(
                    Some(self.tenant),
                    Some(*first_seq),
                    Fault::SegmentTimesChanged,
                );
                changed.last_seq = Some(*last_seq);
                self.breaks.push(changed);
            }
        }
    }

    /// A stored segment that cannot be read at all: its records count as unreadable.
    pub fn push_damaged(&mut self, first_seq: i64, last_seq: i64) {
        if first_seq > self.expected_seq {
            let mut gap = Break::new(Some(self.tenant), Some(self.expected_seq), Fault::Missing);
            gap.last_seq = Some(first_seq - 1);
            self.breaks.push(gap);
        }
        let mut damaged = Break::new(Some(self.tenant), Some(first_seq), Fault::Unreadable);
        damaged.last_seq = Some(last_seq.max(first_seq));
        self.breaks.push(damaged);
        self.expected_seq = last_seq.max(first_seq) + 1;
        self.last_seq = last_seq.max(first_seq);
        self.resync = true;
    }

    fn report(&mut self, seq: i64, fault: Fault) {
        // Runs of the same fault on consecutive records become one break with a range.
        // Faults of other kinds interleave, so look a few breaks back, not only at the last.
        for earlier in self.breaks.iter_mut().rev().take(8) {
            if earlier.last_seq.is_some_and(|end| end + 1 == seq)
                && earlier.fault.groups_with(&fault)
            {
                earlier.last_seq = Some(seq);
                return;
            }
        }
        self.breaks
            .push(Break::new(Some(self.tenant), Some(seq), fault));
    }

    /// Checks the next stored row (rows must come in ascending `seq`).
    pub fn push(&mut self, row: &StoredLink) {
        self.records += 1;
        if row.seq > self.expected_seq {
            let mut gap = Break::new(Some(self.tenant), Some(self.expected_seq), Fault::Missing);
            gap.last_seq = Some(row.seq - 1);
            self.breaks.push(gap);
        }
        self.expected_seq = row.seq + 1;
        self.last_seq = row.seq;

        match serde_json::from_str::<RecordIdentity>(&row.text) {
            Ok(record) => {
                if record.seq != row.seq {
                    self.report(
                        row.seq,
                        Fault::WrongSeq {
                            recorded: record.seq,
                        },
                    );
                }
                if record.time_ms != row.time_ms {
                    self.report(
                        row.seq,
                        Fault::TimeChanged {
                            recorded: record.time_ms,
                        },
                    );
                }
                if TenantId::parse(record.tenant) != Some(self.tenant) {
                    self.report(
                        row.seq,
                        Fault::WrongTenant {
                            recorded: record.tenant.to_owned(),
                        },
                    );
                }
            }
            Err(_) => self.report(row.seq, Fault::Unreadable),
        }

        let stored = (
            row.prev_hash.as_deref().and_then(hash_from_bytes),
            row.hash.as_deref().and_then(hash_from_bytes),
        );
        match stored {
            (Some(prev_hash), Some(hash)) => {
                self.hashed_started = true;
                if std::mem::take(&mut self.resync) {
                    self.running = prev_hash;
                }
                if prev_hash != self.running {
                    self.report(row.seq, Fault::LinkBroken);
                }
                if link(&prev_hash, row.text.as_bytes()) != hash {
                    self.report(row.seq, Fault::ContentChanged);
                }
                self.running = hash;
            }
            _ => {
                // Records written before hashing began form a prefix that the chain covers by
                // recomputation; a missing hash anywhere after it was removed.
                if self.hashed_started || row.prev_hash.is_some() || row.hash.is_some() {
                    self.report(row.seq, Fault::Unhashed);
                }
                self.running = link(&self.running, row.text.as_bytes());
            }
        }
        self.compare_checkpoints(row.seq);
    }

    fn compare_checkpoints(&mut self, seq: i64) {
        while let Some(checkpoint) = self.checkpoints.get(self.next_checkpoint) {
            if checkpoint.seq > seq {
                break;
            }
            let origin = checkpoint.origin.clone();
            let fault = if checkpoint.seq < seq {
                Some((checkpoint.seq, Fault::CheckpointOnMissing { origin }))
            } else if checkpoint.hash != self.running {
                Some((seq, Fault::CheckpointMismatch { origin }))
            } else {
                None
            };
            self.next_checkpoint += 1;
            match fault {
                Some((at, fault)) => {
                    self.breaks
                        .push(Break::new(Some(self.tenant), Some(at), fault))
                }
                None => self.matched += 1,
            }
        }
    }

    /// Ends the walk: compares the head row and the checkpoints past the last record.
    pub fn finish(mut self, head: Option<ChainHead>) -> TenantReport {
        let last_seq = self.last_seq;
        for checkpoint in &self.checkpoints[self.next_checkpoint..] {
            self.breaks.push(Break::new(
                Some(self.tenant),
                Some(checkpoint.seq),
                Fault::CheckpointPastEnd {
                    chain_end: last_seq,
                    origin: checkpoint.origin.clone(),
                },
            ));
        }
        let head = head.unwrap_or(ChainHead {
            seq: 0,
            hash: Some(GENESIS),
        });
        if head.seq > last_seq {
            let mut gap = Break::new(Some(self.tenant), Some(last_seq + 1), Fault::Missing);
            gap.last_seq = Some(head.seq);
            self.breaks.push(gap);
        } else if head.seq < last_seq
            || (!self.resync && head.hash.is_some_and(|hash| hash != self.running))
        {
            // (After a damaged last segment the running hash is unknown: nothing to compare.)
            self.breaks.push(Break::new(
                Some(self.tenant),
                Some(last_seq),
                Fault::HeadMismatch { head_seq: head.seq },
            ));
        }
        TenantReport {
            tenant: self.tenant.to_string(),
            records: self.records,
            last_seq,
            checkpoints: self.matched,
            breaks: self.breaks,
        }
    }
}

#[cfg(test)]
mod tests;
