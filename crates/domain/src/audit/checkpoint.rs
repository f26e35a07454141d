//! Signed checkpoints: `(tenant, sequence, chain hash, time)` signed with the server's Ed25519
//! key, which lives outside the database. They are written outside the database (a directory,
//! optionally syslog), so an attacker who rewrites the database (a chain rebuilt from an edited
//! record, newest records cut off with the head row moved back) cannot make the chain agree with
//! them without the signing key.
//!
//! Stored form: one JSON object per line ([`Checkpoint`], versioned by `v`, unknown fields
//! refused). The signature covers [`signed_message`], a fixed, labelled text.

use std::collections::HashMap;

use carevault_crypto::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::{ChainHash, hash_from_bytes};
use crate::clock::format_instant;
use crate::ids::TenantId;

pub const CHECKPOINT_VERSION: u32 = 1;
const SIGNED_LABEL: &str = "carevault/audit-checkpoint/v1";

/// One checkpoint line.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Checkpoint {
    pub v: u32,
    pub tenant: String,
    pub seq: i64,
    /// The chain hash after record `seq`, hex.
    pub hash: String,
    pub time_ms: i64,
    /// `time_ms` for people (RFC 3339, UTC); not signed, checked against `time_ms`.
    pub time: String,
    /// The public half of the signing key, hex.
    pub key: String,
    /// Ed25519 over [`signed_message`], hex.
    pub signature: String,
}

/// The exact bytes a checkpoint's signature covers.
pub fn signed_message(tenant: TenantId, seq: i64, hash: &ChainHash, time_ms: i64) -> Vec<u8> {
    format!(
        "{SIGNED_LABEL}\ntenant={tenant}\nseq={seq}\nhash={}\ntime_ms={time_ms}\n",
        hex::encode(hash)
    )
    .into_bytes()
}

/// A checkpoint whose signature checked out under the expected key.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct VerifiedCheckpoint {
    pub tenant: TenantId,
    pub seq: i64,
    pub hash: ChainHash,
    pub time_ms: i64,
    /// Where it was read (file and line), for reports.
    pub origin: String,
}

/// Why a checkpoint line cannot be trusted.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
pub enum CheckpointFault {
    #[error("not a checkpoint line ({0})")]
    Unreadable(String),
    #[error("checkpoint format version {0} is not one this carevault reads")]
    UnknownVersion(u32),
    #[error("signed by another key ({0}), not the expected signing key")]
    OtherKey(String),
    #[error("the signature does not match the checkpoint (forged or edited)")]
    BadSignature,
}

impl Checkpoint {
    /// Signs the head `(tenant, seq, hash)` at `time_ms`.
    pub fn sign(
        tenant: TenantId,
        seq: i64,
        hash: &ChainHash,
        time_ms: i64,
        key: &SigningKey,
    ) -> Checkpoint {
        let signature = key.sign(&signed_message(tenant, seq, hash, time_ms));
        Checkpoint {
            v: CHECKPOINT_VERSION,
            tenant: tenant.to_string(),
            seq,
            hash: hex::encode(hash),
            time_ms,
            time: format_instant(time_ms),
            key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(signature),
        }
    }

    pub fn to_line(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(line: &str) -> Result<Checkpoint, CheckpointFault> {
        serde_json::from_str(line).map_err(|error| CheckpointFault::Unreadable(error.to_string()))
    }

    /// The tenant it names, if that is a tenant id at all (for reporting a bad line).
    pub fn claimed_tenant(&self) -> Option<TenantId> {
        TenantId::parse(&self.tenant)
    }

    /// Checks version, key and signature, and that every field is well formed.
    pub fn verify(
        &self,
        key: &VerifyingKey,
        origin: String,
    ) -> Result<VerifiedCheckpoint, CheckpointFault> {
        if self.v != CHECKPOINT_VERSION {
            return Err(CheckpointFault::UnknownVersion(self.v));
        }
        let expected_key = hex::encode(key.to_bytes());
        if self.key != expected_key {
            return Err(CheckpointFault::OtherKey(self.key.clone()));
        }
        let tenant = self
            .claimed_tenant()
            .ok_or_else(|| CheckpointFault::Unreadable("tenant is not a UUID".to_owned()))?;
        let hash = hex::decode(&self.hash)
            .ok()
            .and_then(|bytes| hash_from_bytes(&bytes))
            .ok_or_else(|| CheckpointFault::Unreadable("hash is not 32 bytes of hex".to_owned()))?;
        let signature = hex::decode(&self.signature).map_err(|_| CheckpointFault::BadSignature)?;
        if !key.verify(
            &signed_message(tenant, self.seq, &hash, self.time_ms),
            &signature,
        ) {
            return Err(CheckpointFault::BadSignature);
        }
        if self.time != format_instant(self.time_ms) {
            // The readable time is not signed; a mismatch means someone edited the line.
            return Err(CheckpointFault::BadSignature);
        }
        Ok(VerifiedCheckpoint {
            tenant,
            seq: self.seq,
            hash,
            time_ms: self.time_ms,
            origin,
        })
    }
}

/// When to checkpoint: at least every `every_records` new records and every `every_ms` while a
/// chain has new records.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct CheckpointPolicy {
    pub every_records: i64,
    pub every_ms: i64,
}

impl Default for CheckpointPolicy {
    fn default() -> CheckpointPolicy {
        CheckpointPolicy {
            every_records: 1_000,
            every_ms: 60_000,
        }
    }
}

/// The checkpointer's memory of what it last signed per chain, and the rule for what to sign
/// next. Pure: heads and time come in, sequence numbers to sign come out.
#[derive(Debug, Default)]
pub struct CheckpointSchedule {
    policy: CheckpointPolicy,
    last: HashMap<TenantId, (i64, i64)>,
}

impl CheckpointSchedule {
    pub fn new(policy: CheckpointPolicy) -> CheckpointSchedule {
        CheckpointSchedule {
            policy,
            last: HashMap::new(),
        }
    }

    /// The sequence numbers to checkpoint now for a chain whose head is at `head_seq`: every
    /// multiple of `every_records` reached since the last checkpoint, then the head itself when
    /// `every_ms` has passed since the last checkpoint. A chain not seen
    /// since start-up is checkpointed at once (its head), so each run begins pinned. `force`
    /// checkpoints any chain with records not yet checkpointed.
    pub fn plan(&self, tenant: TenantId, head_seq: i64, now_ms: i64, force: bool) -> Vec<i64> {
        if head_seq <= 0 {
            return Vec::new();
        }
        let Some(&(last_seq, last_ms)) = self.last.get(&tenant) else {
            return vec![head_seq];
        };
        if head_seq <= last_seq {
            return Vec::new();
        }
        let every = self.policy.every_records.max(1);
        let mut plan: Vec<i64> = Vec::new();
        let mut next = (last_seq / every + 1) * every;
        while next <= head_seq {
            plan.push(next);
            next += every;
        }
        let due = force || now_ms.saturating_sub(last_ms) >= self.policy.every_ms;
        if due && plan.last() != Some(&head_seq) {
            plan.push(head_seq);
        }
        plan
    }

    /// Notes a checkpoint written at `seq`.
    pub fn mark(&mut self, tenant: TenantId, seq: i64, now_ms: i64) {
        self.last.insert(tenant, (seq, now_ms));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn new_key() -> (tempfile_free::Dir, SigningKey) {
        let dir = tempfile_free::Dir::new();
        let key = SigningKey::create_file(&dir.path.join("signing.key"))
            .unwrap_or_else(|error| panic!("{error}"));
        (dir, key)
    }

    /// A scratch folder without a dev-dependency: removed on drop.
    mod tempfile_free {
        use std::path::PathBuf;

        pub struct Dir {
            pub path: PathBuf,
        }

        impl Dir {
            pub fn new() -> Dir {
                let path = std::env::temp_dir()
                    .join(format!("carevault-checkpoint-{}", uuid::Uuid::new_v4()));
                std::fs::create_dir_all(&path).unwrap_or_else(|error| panic!("{error}"));
                Dir { path }
            }
        }

        impl Drop for Dir {
            fn drop(&mut self) {
                let _ = std::fs::remove_dir_all(&self.path);
            }
        }
    }

    #[test]
    fn a_signed_checkpoint_verifies_and_any_edit_breaks_it() {
        let (_dir, key) = new_key();
        let tenant = TenantId::generate();
        let checkpoint = Checkpoint::sign(tenant, 7, &[3; 32], 1_700_000_000_000, &key);
        let line = checkpoint.to_line();
        let parsed = Checkpoint::parse(&line).unwrap_or_else(|error| panic!("{error}"));
        let verified = parsed
            .verify(&key.verifying_key(), "test:1".to_owned())
            .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!((verified.tenant, verified.seq), (tenant, 7));

        for edited in [
            line.replace("\"seq\":7", "\"seq\":8"),
            line.replace(&"03".repeat(32), &"04".repeat(32)),
            line.replace("\"time_ms\":1700000000000", "\"time_ms\":1700000000001"),
            line.replace(&tenant.to_string(), &TenantId::generate().to_string()),
        ] {
            let parsed = Checkpoint::parse(&edited).unwrap_or_else(|error| panic!("{error}"));
            assert_eq!(
                parsed.verify(&key.verifying_key(), String::new()),
                Err(CheckpointFault::BadSignature),
                "{edited}"
            );
        }
        let (_other_dir, other) = new_key();
        assert!(matches!(
            parsed.verify(&other.verifying_key(), String::new()),
            Err(CheckpointFault::OtherKey(_))
        ));
        assert!(Checkpoint::parse("{\"v\":1}").is_err());
    }

    #[test]
    fn the_schedule_signs_every_thousandth_record_and_at_least_every_minute() {
        let tenant = TenantId::generate();
        let mut schedule = CheckpointSchedule::new(CheckpointPolicy::default());
        assert!(schedule.plan(tenant, 0, 0, false).is_empty());
        // First sight after start-up: the head, at once.
        assert_eq!(schedule.plan(tenant, 5, 0, false), vec![5]);
        schedule.mark(tenant, 5, 0);
        // Few new records and little time: nothing yet; forced: the head.
        assert!(schedule.plan(tenant, 6, 59_999, false).is_empty());
        assert_eq!(schedule.plan(tenant, 6, 1, true), vec![6]);
        // A minute with new records: the head.
        assert_eq!(schedule.plan(tenant, 6, 60_000, false), vec![6]);
        // Nothing new: nothing, however long it has been.
        assert!(schedule.plan(tenant, 5, 600_000, false).is_empty());
        // Thousands of records: every multiple of 1,000 reached, at once; the head after a
        // minute (or at once when a minute has passed already).
        assert_eq!(
            schedule.plan(tenant, 3_500, 10, false),
            vec![1_000, 2_000, 3_000]
        );
        assert_eq!(
            schedule.plan(tenant, 3_500, 60_000, false),
            vec![1_000, 2_000, 3_000, 3_500]
        );
        schedule.mark(tenant, 3_000, 10);
        assert_eq!(schedule.plan(tenant, 4_000, 11, false), vec![4_000]);
        assert!(schedule.plan(tenant, 3_999, 11, false).is_empty());
    }
}
