//! The per-tenant hash chain over audit records: one function that the store (when appending)
//! and the verifier (when checking) both call, so they cannot disagree.
//!
//! `hash(n) = SHA-256(LINK_LABEL ‖ hash(n-1) ‖ canonical text of record n)`, with `hash(0)` the
//! 32 zero bytes ([`GENESIS`]). The canonical text is the record's JSON exactly as stored (its
//! `seq` filled in): the fields in declaration order, no insignificant whitespace. Since every
//! link covers the previous hash, changing, removing, inserting or reordering any record changes
//! every later hash; signed checkpoints of the head (see [`super::checkpoint`]) pin the chain so
//! that rewriting it from the break onwards, or cutting off its newest records, is found too.

use carevault_crypto::sha256_parts;

use super::AuditRecord;

/// A link of the chain: the SHA-256 after one record.
pub type ChainHash = [u8; 32];

/// The hash before the first record of every chain.
pub const GENESIS: ChainHash = [0; 32];

/// Domain separation: these hashes can never be confused with any other SHA-256 the system
/// computes (token hashes, manifests), and a later format gets a new label.
const LINK_LABEL: &[u8] = b"carevault/audit-chain/v1\0";

/// The stored form of a record: its JSON with `seq` set. This exact text is what the chain
/// hashes and what the store keeps.
pub fn canonical_text(record: &AuditRecord, seq: i64) -> Result<String, serde_json::Error> {
    serde_json::to_string(&record.stored_as(seq))
}

/// The hash after appending the record whose canonical text is `text` to a chain ending in
/// `previous`.
pub fn link(previous: &ChainHash, text: &[u8]) -> ChainHash {
    sha256_parts(&[LINK_LABEL, previous, text])
}

/// Reads a stored hash column: exactly 32 bytes.
pub fn hash_from_bytes(bytes: &[u8]) -> Option<ChainHash> {
    bytes.try_into().ok()
}

/// One new record, ready to store: its sequence number, canonical text and both hashes.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct ChainedRecord {
    pub seq: i64,
    pub text: String,
    pub prev_hash: ChainHash,
    pub hash: ChainHash,
}

/// Chains `records` onto a chain whose head is `(head_seq, head_hash)`: the first gets
/// `head_seq + 1`. Returns the stored forms, in order; the new head is the last one's.
pub fn extend<'a>(
    head_seq: i64,
    head_hash: ChainHash,
    records: impl IntoIterator<Item = &'a AuditRecord>,
) -> Result<Vec<ChainedRecord>, serde_json::Error> {
    let mut previous = head_hash;
    let mut seq = head_seq;
    let mut out = Vec::new();
    for record in records {
        seq += 1;
        let text = canonical_text(record, seq)?;
        let hash = link(&previous, text.as_bytes());
        out.push(ChainedRecord {
            seq,
            text,
            prev_hash: previous,
            hash,
        });
        previous = hash;
    }
    Ok(out)
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use crate::audit::{AUDIT_RECORD_VERSION, Outcome};
    use crate::ids::TenantId;

    pub(crate) fn record(action: &str) -> AuditRecord {
        AuditRecord {
            v: AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms: 1_700_000_000_000,
            tenant: TenantId::platform(),
            principal: "operator/cli".to_owned(),
            session: None,
            roles: vec![],
            auth_strength: "host-operator".to_owned(),
            source: None,
            action: action.to_owned(),
            resource_type: None,
            resource_id: None,
            subjects: vec![],
            categories: vec![],
            purpose: None,
            outcome: Outcome::Success,
            detail: None,
        }
    }

    #[test]
    fn each_link_covers_the_previous_hash_and_the_stored_text() {
        let records = [record("read"), record("search")];
        let chained = extend(0, GENESIS, &records).unwrap_or_default();
        assert_eq!(chained.len(), 2);
        assert_eq!(chained[0].seq, 1);
        assert_eq!(chained[0].prev_hash, GENESIS);
        assert_eq!(chained[1].prev_hash, chained[0].hash);
        assert_eq!(
            chained[1].hash,
            link(&chained[0].hash, chained[1].text.as_bytes())
        );
        assert!(chained[1].text.contains("\"seq\":2"));
        // Continuing from a head gives the same links as chaining everything at once.
        let tail = extend(1, chained[0].hash, &records[1..]).unwrap_or_default();
        assert_eq!(tail[0], chained[1]);
        // Any change to the text, or another predecessor, gives another hash.
        let edited = chained[1].text.replace("search", "read");
        assert_ne!(link(&chained[0].hash, edited.as_bytes()), chained[1].hash);
        assert_ne!(link(&GENESIS, chained[1].text.as_bytes()), chained[1].hash);
    }

    #[test]
    fn the_stored_text_is_the_record_json_with_its_seq() {
        let mut full = record("read");
        full.session = Some("session-1".to_owned());
        full.roles = vec!["clinician".to_owned(), "carer".to_owned()];
        full.source = Some("192.0.2.7".to_owned());
        full.resource_type = Some("Patient".to_owned());
        full.resource_id = Some("p-1".to_owned());
        full.subjects = vec!["p-1".to_owned()];
        full.categories = vec!["demographics".to_owned(), "home-entry".to_owned()];
        full.purpose = Some("break-glass: \"unconscious\"".to_owned());
        full.outcome = crate::audit::Outcome::Denied;
        full.detail = Some("line\nbreak".to_owned());
        for record in [record("search"), full] {
            let mut stored = record.clone();
            stored.seq = 7;
            assert_eq!(
                canonical_text(&record, 7).ok(),
                serde_json::to_string(&stored).ok()
            );
        }
    }

    #[test]
    fn the_stored_text_reads_back_as_the_same_record() {
        let chained = extend(41, GENESIS, [&record("read")]).unwrap_or_default();
        let parsed: AuditRecord =
            serde_json::from_str(&chained[0].text).unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(parsed.seq, 42);
        assert_eq!(
            canonical_text(&parsed, 42).ok(),
            Some(chained[0].text.clone())
        );
    }
}
