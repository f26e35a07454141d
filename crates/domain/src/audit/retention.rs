//! Retention: the only way records leave the trail. Old records go in whole segments, oldest
//! first, and the store keeps a [`RetentionMarker`] in their place: `(tenant, through_seq, hash
//! after through_seq, time)` signed with the server's Ed25519 key (the checkpoint key, kept
//! outside the database). The verifier starts such a chain from the marker instead of from the
//! genesis hash, so the chain still verifies; without the signing key nobody can write a marker,
//! so removing records any other way still shows as records missing from the chain.
//!
//! The signed text carries its own label, so a checkpoint line can never pass for a marker
//! (which would license deleting everything up to a checkpoint).

use carevault_crypto::{SigningKey, VerifyingKey};
use serde::{Deserialize, Serialize};

use super::chain::{ChainHash, hash_from_bytes};
use super::checkpoint::CheckpointFault;
use crate::ids::TenantId;

pub const RETENTION_VERSION: u32 = 1;
const SIGNED_LABEL: &str = "carevault/audit-retention/v1";

/// One marker, stored (as its JSON) beside the chain it shortens.
#[derive(Clone, PartialEq, Eq, Debug, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RetentionMarker {
    pub v: u32,
    pub tenant: String,
    /// Every record up to and including this one was removed.
    pub through_seq: i64,
    /// The chain hash after record `through_seq`, hex: where the remaining chain starts.
    pub hash: String,
    /// When the records were removed.
    pub time_ms: i64,
    /// The public half of the signing key, hex.
    pub key: String,
    /// Ed25519 over [`signed_message`], hex.
    pub signature: String,
}

/// A marker whose signature checked out under the expected key.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub struct VerifiedMarker {
    pub tenant: TenantId,
    pub through_seq: i64,
    pub hash: ChainHash,
    pub time_ms: i64,
}

/// The exact bytes a marker's signature covers.
pub fn signed_message(
    tenant: TenantId,
    through_seq: i64,
    hash: &ChainHash,
    time_ms: i64,
) -> Vec<u8> {
    format!(
        "{SIGNED_LABEL}\ntenant={tenant}\nthrough_seq={through_seq}\nhash={}\ntime_ms={time_ms}\n",
        hex::encode(hash)
    )
    .into_bytes()
}

impl RetentionMarker {
    pub fn sign(
        tenant: TenantId,
        through_seq: i64,
        hash: &ChainHash,
        time_ms: i64,
        key: &SigningKey,
    ) -> RetentionMarker {
        let signature = key.sign(&signed_message(tenant, through_seq, hash, time_ms));
        RetentionMarker {
            v: RETENTION_VERSION,
            tenant: tenant.to_string(),
            through_seq,
            hash: hex::encode(hash),
            time_ms,
            key: hex::encode(key.verifying_key().to_bytes()),
            signature: hex::encode(signature),
        }
    }

    pub fn to_text(&self) -> String {
        // A struct of strings and integers always serialises.
        serde_json::to_string(self).unwrap_or_default()
    }

    pub fn parse(text: &str) -> Result<RetentionMarker, CheckpointFault> {
        serde_json::from_str(text).map_err(|error| CheckpointFault::Unreadable(error.to_string()))
    }

    /// The hash it names, if well formed (the store compares it with its own before removing).
    pub fn chain_hash(&self) -> Option<ChainHash> {
        hex::decode(&self.hash)
            .ok()
            .and_then(|bytes| hash_from_bytes(&bytes))
    }

    /// Checks version, key, signature and that it names `tenant`.
    pub fn verify(
        &self,
        tenant: TenantId,
        key: &VerifyingKey,
    ) -> Result<VerifiedMarker, CheckpointFault> {
        if self.v != RETENTION_VERSION {
            return Err(CheckpointFault::UnknownVersion(self.v));
        }
        let expected_key = hex::encode(key.to_bytes());
        if self.key != expected_key {
            return Err(CheckpointFault::OtherKey(self.key.clone()));
        }
        if TenantId::parse(&self.tenant) != Some(tenant) {
            return Err(CheckpointFault::Unreadable(format!(
                "the marker names tenant {}",
                self.tenant
            )));
        }
        let hash = self
            .chain_hash()
            .ok_or_else(|| CheckpointFault::Unreadable("hash is not 32 bytes of hex".to_owned()))?;
        let signature = hex::decode(&self.signature).map_err(|_| CheckpointFault::BadSignature)?;
        if !key.verify(
            &signed_message(tenant, self.through_seq, &hash, self.time_ms),
            &signature,
        ) {
            return Err(CheckpointFault::BadSignature);
        }
        Ok(VerifiedMarker {
            tenant,
            through_seq: self.through_seq,
            hash,
            time_ms: self.time_ms,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::checkpoint;

    #[test]
    fn a_marker_verifies_and_a_checkpoint_signature_cannot_pass_for_one() {
        let dir = std::env::temp_dir().join(format!("cv-retention-{}", uuid::Uuid::new_v4()));
        let Ok(()) = std::fs::create_dir_all(&dir) else {
            panic!("temp dir");
        };
        let Ok(key) = SigningKey::create_file(&dir.join("signing.key")) else {
            panic!("signing key");
        };
        let tenant = TenantId::generate();
        let hash = [7u8; 32];
        let marker = RetentionMarker::sign(tenant, 512, &hash, 1_000, &key);
        let verified = marker.verify(tenant, &key.verifying_key());
        assert_eq!(verified.map(|m| (m.through_seq, m.hash)), Ok((512, hash)));
        assert!(
            marker
                .verify(TenantId::generate(), &key.verifying_key())
                .is_err()
        );

        let mut moved = marker.clone();
        moved.through_seq = 4_096;
        assert_eq!(
            moved.verify(tenant, &key.verifying_key()),
            Err(CheckpointFault::BadSignature)
        );

        // A genuine checkpoint's signature over the same values is not a marker's.
        let line = checkpoint::Checkpoint::sign(tenant, 512, &hash, 1_000, &key);
        let mut borrowed = marker.clone();
        borrowed.signature = line.signature;
        assert_eq!(
            borrowed.verify(tenant, &key.verifying_key()),
            Err(CheckpointFault::BadSignature)
        );
        let _ = std::fs::remove_dir_all(&dir);
    }
}
