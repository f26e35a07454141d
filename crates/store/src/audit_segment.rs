//! The stored form of the audit trail: *segments*. One append (a group commit, or the records of
//! one write transaction) stores each tenant's new records as one row of `audit_segments`: the
//! sequence numbers and time span it covers, the chain hash before its first record, and a body
//! holding every record's canonical text, time and chain hash, compressed with zstd.
//!
//! Compared with a row per record (and an index entry per record and column), this is one
//! B-tree insert per commit and about a tenth of the bytes: records of one commit share most of
//! their text (field names, the tenant, principals, sessions), and zstd finds it. The chain is
//! unchanged: each record's hash is still stored and still covers its exact text, so the
//! verifier pins a change to its record.
//!
//! Each segment's search keys are stored once per distinct key, where a key is a 64-bit digest
//! of what is searched for ([`search_key`]: patient, principal, session, source address, action,
//! outcome): on SQLite as rows of `audit_keys (tenant, bucket, key, segment)`, on PostgreSQL as
//! one array per segment in `audit_segment_keys` under a GIN index. A search walks the segments
//! holding its keys, newest first, opens them and keeps the records that match exactly, so a
//! digest collision costs a little time, never a wrong answer.
//!
//! Body layout before compression: a format byte, the record count (u32, little-endian), then per
//! record its chain hash (32 bytes), its time (i64 LE, milliseconds) and its text (u32 LE length,
//! then UTF-8). Tests that play attacker use [`encode`] and [`decode`] to rewrite a body.

use carevault_crypto::sha256_parts;
use carevault_domain::audit::chain::ChainHash;
use std::cell::RefCell;

/// The body format this code writes and reads.
const FORMAT: u8 = 1;
/// zstd level 1: about 400 MB/s to compress here and 3 GB/s to open. Higher levels gain under
/// 5 % on these bodies (their bytes are mostly random ids and hashes) at up to three times the
/// cost.
const LEVEL: i32 = 1;
/// The largest body an append writes, opened: far above any segment this code writes
/// ([`MAX_RECORDS`] records of a few hundred bytes), and a bound on what a damaged or forged
/// body can make a reader allocate.
const MAX_OPENED: usize = 64 << 20;
/// Most records in one segment: a large append is split, so a search that opens a segment to
/// find one record never opens more than this many.
pub const MAX_RECORDS: usize = 1_024;

/// One record of a segment.
#[derive(Clone, PartialEq, Eq, Debug)]
pub struct SegmentRecord {
    /// The record's canonical text (its JSON, `seq` filled in): what the chain hashes.
    pub text: String,
    pub time_ms: i64,
    /// The chain hash after this record.
    pub hash: ChainHash,
}

/// Why a stored body cannot be read.
#[derive(Clone, PartialEq, Eq, Debug, thiserror::Error)]
#[error("audit segment unreadable: {0}")]
pub struct DamagedSegment(pub String);

/// The compressed body for `records`.
pub fn encode(records: &[SegmentRecord]) -> Result<Vec<u8>, DamagedSegment> {
    let size: usize = records.iter().map(|record| 44 + record.text.len()).sum();
    let mut plain = Vec::with_capacity(5 + size);
    plain.push(FORMAT);
    let count = u32::try_from(records.len())
        .map_err(|_| DamagedSegment("too many records for one segment".to_owned()))?;
    plain.extend_from_slice(&count.to_le_bytes());
    for record in records {
        plain.extend_from_slice(&record.hash);
        plain.extend_from_slice(&record.time_ms.to_le_bytes());
        let length = u32::try_from(record.text.len())
            .map_err(|_| DamagedSegment("record text too long".to_owned()))?;
        plain.extend_from_slice(&length.to_le_bytes());
        plain.extend_from_slice(record.text.as_bytes());
    }
    // One compressor per thread: creating a zstd context per segment (allocating and clearing
    // its tables) was the committer's largest single cost under load.
    thread_local! {
        static COMPRESSOR: RefCell<Option<zstd::bulk::Compressor<'static>>> =
            const { RefCell::new(None) };
    }
    COMPRESSOR.with(|cell| {
        let mut slot = cell.borrow_mut();
        let compressor = match slot.as_mut() {
            Some(compressor) => compressor,
            None => slot.insert(
                zstd::bulk::Compressor::new(LEVEL)
                    .map_err(|error| DamagedSegment(error.to_string()))?,
            ),
        };
        compressor
            .compress(&plain)
            .map_err(|error| DamagedSegment(error.to_string()))
    })
}

/// The records of a stored body, in order. Any damage (bad compression, truncation, trailing
/// bytes, text that is not UTF-8) is an error, never a panic.
pub fn decode(body: &[u8]) -> Result<Vec<SegmentRecord>, DamagedSegment> {
    open(body)?.into_records()
}

/// A body opened but not yet copied out: the plain bytes and where each record lies in them.
/// A search reads a segment of hundreds of records to keep the one or two that match, so it
/// looks at each record's text where it lies ([`OpenedSegment::text_bytes`]) and copies out
/// only those it keeps.
pub struct OpenedSegment {
    plain: Vec<u8>,
    records: Vec<Placed>,
}

/// Where one record lies in an opened body.
struct Placed {
    hash: ChainHash,
    time_ms: i64,
    text: std::ops::Range<usize>,
}

/// Opens a stored body and finds its records. Damage to the compression or the layout
/// (truncation, trailing bytes, a count that does not match) is an error, never a panic; a
/// record's text is checked to be UTF-8 when it is read ([`OpenedSegment::text`]).
pub fn open(body: &[u8]) -> Result<OpenedSegment, DamagedSegment> {
    // The buffer is as large as the frame says its content is (the compressor writes the
    // size), never more than MAX_OPENED. `zstd::bulk::decompress` reserved MAX_OPENED (64 MiB,
    // mapped and unmapped by the allocator) and created a decompression context for every
    // segment a search or a verification opened.
    let size = match zstd::zstd_safe::get_frame_content_size(body) {
        Ok(Some(size)) => usize::try_from(size)
            .ok()
            .filter(|size| *size <= MAX_OPENED)
            .ok_or_else(|| DamagedSegment(format!("a body claims {size} bytes opened")))?,
        Ok(None) => MAX_OPENED,
        Err(_) => return Err(DamagedSegment("not a compressed body".to_owned())),
    };
    thread_local! {
        static DECOMPRESSOR: RefCell<Option<zstd::bulk::Decompressor<'static>>> =
            const { RefCell::new(None) };
    }
    let mut plain = Vec::with_capacity(size);
    DECOMPRESSOR
        .with(|cell| {
            let mut slot = cell.borrow_mut();
            let decompressor = match slot.as_mut() {
                Some(decompressor) => decompressor,
                None => slot.insert(zstd::bulk::Decompressor::new()?),
            };
            decompressor.decompress_to_buffer(body, &mut plain)
        })
        .map_err(|error| DamagedSegment(format!("cannot decompress: {error}")))?;
    let mut reader = Reader {
        rest: &plain,
        at: 0,
    };
    if reader.take(1)? != [FORMAT] {
        return Err(DamagedSegment("unknown segment format".to_owned()));
    }
    let count = u32::from_le_bytes(reader.array()?);
    let mut records = Vec::with_capacity(usize::try_from(count).unwrap_or(0).min(MAX_RECORDS));
    for _ in 0..count {
        let hash: ChainHash = reader.array()?;
        let time_ms = i64::from_le_bytes(reader.array()?);
        let length = usize::try_from(u32::from_le_bytes(reader.array()?))
            .map_err(|_| DamagedSegment("record length out of range".to_owned()))?;
        let start = reader.at;
        reader.take(length)?;
        records.push(Placed {
            hash,
            time_ms,
            text: start..reader.at,
        });
    }
    if !reader.rest.is_empty() {
        return Err(DamagedSegment(
            "trailing bytes after the last record".to_owned(),
        ));
    }
    Ok(OpenedSegment { plain, records })
}

impl OpenedSegment {
    /// How many records the body holds.
    pub fn len(&self) -> usize {
        self.records.len()
    }

    pub fn is_empty(&self) -> bool {
        self.records.is_empty()
    }

    /// The time of record `index` (counted from the segment's first), if there is one.
    pub fn time_ms(&self, index: usize) -> Option<i64> {
        self.records.get(index).map(|record| record.time_ms)
    }

    /// The bytes of record `index`'s text, not yet checked to be UTF-8: for a scan.
    pub fn text_bytes(&self, index: usize) -> Option<&[u8]> {
        self.records
            .get(index)
            .and_then(|record| self.plain.get(record.text.clone()))
    }

    /// Record `index`'s text; text that is not UTF-8 is damage.
    pub fn text(&self, index: usize) -> Result<&str, DamagedSegment> {
        let bytes = self
            .text_bytes(index)
            .ok_or_else(|| DamagedSegment("no such record".to_owned()))?;
        std::str::from_utf8(bytes)
            .map_err(|_| DamagedSegment("record text is not UTF-8".to_owned()))
    }

    /// Every record, copied out.
    pub fn into_records(self) -> Result<Vec<SegmentRecord>, DamagedSegment> {
        self.records
            .iter()
            .enumerate()
            .map(|(index, record)| {
                Ok(SegmentRecord {
                    text: self.text(index)?.to_owned(),
                    time_ms: record.time_ms,
                    hash: record.hash,
                })
            })
            .collect()
    }
}

struct Reader<'a> {
    rest: &'a [u8],
    /// How far into the body `rest` starts.
    at: usize,
}

impl<'a> Reader<'a> {
    fn take(&mut self, length: usize) -> Result<&'a [u8], DamagedSegment> {
        if self.rest.len() < length {
            return Err(DamagedSegment("the body ends inside a record".to_owned()));
        }
        let (taken, rest) = self.rest.split_at(length);
        self.rest = rest;
        self.at += length;
        Ok(taken)
    }

    fn array<const N: usize>(&mut self) -> Result<[u8; N], DamagedSegment> {
        let bytes = self.take(N)?;
        let mut array = [0u8; N];
        array.copy_from_slice(bytes);
        Ok(array)
    }
}

/// What a search key names.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum KeyKind {
    Patient,
    Principal,
    Session,
    Source,
    Action,
    Outcome,
}

impl KeyKind {
    fn label(self) -> &'static [u8] {
        match self {
            KeyKind::Patient => b"patient",
            KeyKind::Principal => b"principal",
            KeyKind::Session => b"session",
            KeyKind::Source => b"source",
            KeyKind::Action => b"action",
            KeyKind::Outcome => b"outcome",
        }
    }
}

/// The 64-bit search key for `value` of `kind`: the first eight bytes of a labelled SHA-256.
/// Not secret (records hold ids only) and not unique: a search re-checks every record it opens.
pub fn search_key(kind: KeyKind, value: &str) -> i64 {
    let digest = sha256_parts(&[
        b"carevault/audit-key/v1\0",
        kind.label(),
        b"\0",
        value.as_bytes(),
    ]);
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    i64::from_be_bytes(first)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn records() -> Vec<SegmentRecord> {
        (0..3)
            .map(|n| SegmentRecord {
                text: format!("{{\"seq\":{n},\"é\":\"x\"}}"),
                time_ms: 1_700_000_000_000 + n,
                hash: [u8::try_from(n).unwrap_or(0); 32],
            })
            .collect()
    }

    #[test]
    fn a_body_round_trips_and_damage_is_an_error() {
        let body = encode(&records()).unwrap_or_default();
        assert_eq!(decode(&body), Ok(records()));
        assert!(decode(&body[..body.len() - 1]).is_err());
        assert!(decode(b"not zstd").is_err());
        for index in 0..body.len() {
            let mut flipped = body.clone();
            flipped[index] ^= 0x40;
            // Either unreadable or (if zstd's checksum-free frame still decodes) different.
            assert_ne!(decode(&flipped), Ok(records()), "byte {index}");
        }
        // A plain body with trailing bytes or a wrong count is refused.
        let mut plain = vec![FORMAT];
        plain.extend_from_slice(&2u32.to_le_bytes());
        let Ok(short) = zstd::bulk::compress(&plain, LEVEL) else {
            panic!("compress");
        };
        assert!(decode(&short).is_err());
    }

    /// A body laid out by hand: records of any bytes, compressed as an append would.
    fn body_of(texts: &[&[u8]]) -> Vec<u8> {
        let mut plain = vec![FORMAT];
        plain.extend_from_slice(&u32::try_from(texts.len()).unwrap_or(0).to_le_bytes());
        for (index, text) in texts.iter().enumerate() {
            plain.extend_from_slice(&[7u8; 32]);
            plain.extend_from_slice(&(1_000 + index as i64).to_le_bytes());
            plain.extend_from_slice(&u32::try_from(text.len()).unwrap_or(0).to_le_bytes());
            plain.extend_from_slice(text);
        }
        zstd::bulk::compress(&plain, LEVEL).unwrap_or_default()
    }

    /// An opened body gives each record's time and text where they lie. A text that is not
    /// UTF-8 is damage when that record is read, and `decode`, which reads them all, refuses
    /// the body.
    #[test]
    fn an_opened_body_reads_records_in_place_and_bad_text_is_damage_when_read() {
        let body = encode(&records()).unwrap_or_default();
        let Ok(opened) = open(&body) else {
            panic!("open");
        };
        assert_eq!(opened.len(), 3);
        for (index, record) in records().iter().enumerate() {
            assert_eq!(opened.time_ms(index), Some(record.time_ms));
            assert_eq!(opened.text_bytes(index), Some(record.text.as_bytes()));
            assert_eq!(opened.text(index), Ok(record.text.as_str()));
        }
        assert_eq!(opened.time_ms(3), None);
        assert_eq!(opened.text_bytes(3), None);
        assert!(opened.text(3).is_err());
        assert_eq!(opened.into_records(), Ok(records()));

        let body = body_of(&[b"{\"seq\":1}", b"{\"seq\":\xff}"]);
        let Ok(opened) = open(&body) else {
            panic!("open");
        };
        assert_eq!(opened.text(0), Ok("{\"seq\":1}"));
        assert_eq!(opened.text_bytes(1), Some(&b"{\"seq\":\xff}"[..]));
        assert!(opened.text(1).is_err_and(|error| error.0.contains("UTF-8")));
        assert!(decode(&body).is_err_and(|error| error.0.contains("UTF-8")));
        // A record whose length runs past the body is damage when the body is opened.
        let mut truncated = body_of(&[b"{}"]);
        truncated = zstd::bulk::decompress(&truncated, 1 << 10).unwrap_or_default();
        truncated.pop();
        let truncated = zstd::bulk::compress(&truncated, LEVEL).unwrap_or_default();
        assert!(open(&truncated).is_err_and(|error| error.0.contains("ends inside")));
    }

    /// A body is opened into a buffer of the size its frame declares (the compressor declares
    /// it); one declaring more than MAX_OPENED is refused before anything is allocated for it.
    #[test]
    fn a_body_opens_into_what_its_frame_declares_and_no_more() {
        let Ok(huge) = zstd::bulk::compress(&vec![0u8; MAX_OPENED + 1], LEVEL) else {
            panic!("compress");
        };
        let refused = decode(&huge);
        assert!(
            refused
                .as_ref()
                .is_err_and(|error| error.0.contains("claims")),
            "{refused:?}"
        );
        let body = encode(&records()).unwrap_or_default();
        let declared = zstd::zstd_safe::get_frame_content_size(&body);
        assert!(
            matches!(declared, Ok(Some(size)) if size > 0),
            "{declared:?}"
        );
        // The same records again after a refusal: the thread's decompressor is still sound.
        assert_eq!(decode(&body), Ok(records()));
    }

    /// Stored keys were computed from one buffer of label, kind, a zero byte and the value;
    /// a key computed now must equal them, or searches miss older segments.
    #[test]
    fn a_search_key_is_the_labelled_sha256_of_kind_and_value() {
        let input = b"carevault/audit-key/v1\0patient\0p-1";
        let digest = carevault_crypto::sha256(input);
        let mut first = [0u8; 8];
        first.copy_from_slice(&digest[..8]);
        assert_eq!(
            search_key(KeyKind::Patient, "p-1"),
            i64::from_be_bytes(first)
        );
    }

    #[test]
    fn search_keys_differ_by_kind_and_value() {
        assert_ne!(
            search_key(KeyKind::Patient, "a"),
            search_key(KeyKind::Principal, "a")
        );
        assert_ne!(
            search_key(KeyKind::Patient, "a"),
            search_key(KeyKind::Patient, "b")
        );
        assert_eq!(
            search_key(KeyKind::Session, "s"),
            search_key(KeyKind::Session, "s")
        );
    }
}
