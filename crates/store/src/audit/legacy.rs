//! The move of schema version 5's rows (one per record, in `audit_log_v5`) into segments, done
//! once by the store right after the migrations (see `convert_legacy` in the engine
//! implementation): texts and stored hashes unchanged, so existing checkpoints still verify.

use carevault_domain::audit::chain::{self, ChainHash};
use carevault_domain::store::StoreError;

use super::{NewSegment, damaged};
use crate::audit_segment::{self, KeyKind, MAX_RECORDS, SegmentRecord, search_key};

/// A version-5 row: seq, time, record text, stored prev_hash and hash (NULL before hashing).
pub(crate) type LegacyRow = (i64, i64, String, Option<Vec<u8>>, Option<Vec<u8>>);

/// Runs of consecutive legacy rows (seq, time, text, hash) cut into segments: a gap in the
/// sequence numbers ends a segment, so a record missing before the move stays missing after.
pub(crate) fn legacy_segments(
    rows: Vec<LegacyRow>,
) -> Result<(Vec<NewSegment>, ChainHash), StoreError> {
    let mut segments = Vec::new();
    let mut running = chain::GENESIS;
    let mut current: Vec<(i64, SegmentRecord, ChainHash, Vec<i64>)> = Vec::new();
    let flush = |current: &mut Vec<(i64, SegmentRecord, ChainHash, Vec<i64>)>,
                 segments: &mut Vec<NewSegment>|
     -> Result<(), StoreError> {
        let (Some(first), Some(last)) = (current.first(), current.last()) else {
            return Ok(());
        };
        let mut keys: Vec<i64> = current.iter().flat_map(|c| c.3.iter().copied()).collect();
        keys.sort_unstable();
        keys.dedup();
        let stored: Vec<SegmentRecord> = current.iter().map(|c| c.1.clone()).collect();
        segments.push(NewSegment {
            first_seq: first.0,
            last_seq: last.0,
            min_time_ms: current.iter().map(|c| c.1.time_ms).min().unwrap_or(0),
            max_time_ms: current.iter().map(|c| c.1.time_ms).max().unwrap_or(0),
            prev_hash: first.2,
            body: audit_segment::encode(&stored).map_err(damaged)?,
            keys,
        });
        current.clear();
        Ok(())
    };
    for (seq, time_ms, text, prev_hash, hash) in rows {
        let gap = current.last().is_some_and(|last| last.0 + 1 != seq);
        if gap || current.len() >= MAX_RECORDS {
            flush(&mut current, &mut segments)?;
        }
        // Stored hashes are kept as they are (a tampered row stays detectably tampered);
        // records from before hashing get theirs now.
        let prev = prev_hash
            .as_deref()
            .and_then(chain::hash_from_bytes)
            .unwrap_or(running);
        let hash = hash
            .as_deref()
            .and_then(chain::hash_from_bytes)
            .unwrap_or_else(|| chain::link(&running, text.as_bytes()));
        let keys = legacy_keys(&text);
        current.push((
            seq,
            SegmentRecord {
                text,
                time_ms,
                hash,
            },
            prev,
            keys,
        ));
        running = hash;
    }
    flush(&mut current, &mut segments)?;
    Ok((segments, running))
}

/// The search keys of a version-5 record, read leniently: a record too damaged to parse is
/// moved as it is (the verifier reports it) and simply not found by searches.
fn legacy_keys(text: &str) -> Vec<i64> {
    let Ok(value) = serde_json::from_str::<serde_json::Value>(text) else {
        return Vec::new();
    };
    let field = |name: &str| value.get(name).and_then(serde_json::Value::as_str);
    let singles = [
        (KeyKind::Principal, field("principal")),
        (KeyKind::Session, field("session")),
        (KeyKind::Source, field("source")),
        (KeyKind::Action, field("action")),
        (KeyKind::Outcome, field("outcome")),
    ];
    let subjects = value
        .get("subjects")
        .and_then(serde_json::Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(serde_json::Value::as_str)
        .map(|patient| (KeyKind::Patient, Some(patient)));
    singles
        .into_iter()
        .chain(subjects)
        .filter_map(|(kind, value)| value.map(|value| search_key(kind, value)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit::SegmentRow;
    use carevault_domain::audit::storage::StoredEntry;

    #[test]
    fn legacy_rows_keep_their_hashes_and_a_gap_ends_a_segment() {
        let rows = vec![
            (1, 10, "a".to_owned(), None, None),
            (2, 11, "b".to_owned(), None, Some(vec![7u8; 32])),
            (
                4,
                12,
                "d".to_owned(),
                Some(vec![7u8; 32]),
                Some(vec![8u8; 32]),
            ),
        ];
        let Ok((segments, running)) = legacy_segments(rows) else {
            panic!("legacy rows");
        };
        let spans: Vec<(i64, i64)> = segments.iter().map(|s| (s.first_seq, s.last_seq)).collect();
        assert_eq!(spans, vec![(1, 2), (4, 4)]);
        assert_eq!(segments[0].prev_hash, chain::GENESIS);
        assert_eq!(segments[1].prev_hash, [7u8; 32]);
        assert_eq!(running, [8u8; 32]);
        let first = SegmentRow {
            first_seq: 1,
            last_seq: 2,
            min_time_ms: 10,
            max_time_ms: 11,
            prev_hash: segments[0].prev_hash.to_vec(),
            body: segments[0].body.clone(),
        };
        let opened = first.open().unwrap_or_default();
        assert_eq!(opened[0].1.hash, chain::link(&chain::GENESIS, b"a"));
        assert_eq!(opened[1].1.hash, [7u8; 32]);

        // A walk yields the records; a changed time span is reported before them.
        let mut entries = Vec::new();
        first.push_entries(0, i64::MIN, i64::MAX, &mut entries);
        assert_eq!(entries.len(), 2);
        let moved = SegmentRow {
            max_time_ms: 1_000,
            ..first
        };
        let mut entries = Vec::new();
        moved.push_entries(0, i64::MIN, i64::MAX, &mut entries);
        assert_eq!(
            entries.first(),
            Some(&StoredEntry::TimesChanged {
                first_seq: 1,
                last_seq: 2
            })
        );
        assert_eq!(entries.len(), 3);
    }
}

#[cfg(test)]
mod migration_tests {
    use carevault_domain::audit::chain::{self, GENESIS};
    use sqlx::Row;

    use crate::audit_segment;

    /// Records of version 5 (one row each, the first two from before hashing) move into
    /// segments with their texts and stored hashes; the head gets the hash they chain to; the
    /// old table is gone and the new guards hold.
    #[tokio::test]
    async fn version_6_moves_version_5_rows_into_segments() {
        let Ok(pool) = sqlx::SqlitePool::connect("sqlite::memory:").await else {
            panic!("in-memory SQLite");
        };
        assert!(
            crate::migrations::sqlite_through(5)
                .run(&pool)
                .await
                .is_ok()
        );
        let texts = [
            r#"{"seq":1,"principal":"person/n","subjects":["p1"]}"#,
            r#"{"seq":2,"principal":"person/n","subjects":["p2"]}"#,
            r#"{"seq":3,"principal":"person/m","subjects":[]}"#,
        ];
        let h1 = chain::link(&GENESIS, texts[0].as_bytes());
        let h2 = chain::link(&h1, texts[1].as_bytes());
        let h3 = chain::link(&h2, texts[2].as_bytes());
        for (seq, text) in texts.iter().enumerate() {
            let hashes = if seq == 2 {
                (Some(h2.to_vec()), Some(h3.to_vec()))
            } else {
                (None, None)
            };
            let inserted = sqlx::query(
                "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record, \
                 prev_hash, hash) VALUES (x'00000000000000000000000000000001', $1, 5, 'read', 'success', $2, $3, $4)",
            )
            .bind(i64::try_from(seq).unwrap_or(0) + 1)
            .bind(*text)
            .bind(hashes.0)
            .bind(hashes.1)
            .execute(&pool)
            .await;
            assert!(inserted.is_ok(), "{inserted:?}");
        }
        let head = sqlx::query("INSERT INTO audit_heads (tenant_id, seq) VALUES (x'00000000000000000000000000000001', 3)")
            .execute(&pool)
            .await;
        assert!(head.is_ok(), "{head:?}");

        assert!(crate::migrations::sqlite().run(&pool).await.is_ok());
        let Ok(mut connection) = pool.acquire().await else {
            panic!("connection");
        };
        let converted = crate::sqlite::audit_implementation::convert_legacy(&mut connection).await;
        assert!(converted.is_ok(), "{converted:?}");
        // A second start finds nothing left to move.
        let again = crate::sqlite::audit_implementation::convert_legacy(&mut connection).await;
        assert!(again.is_ok(), "{again:?}");

        let rows = sqlx::query("SELECT first_seq, last_seq, prev_hash, body FROM audit_segments")
            .fetch_all(&pool)
            .await
            .unwrap_or_default();
        assert_eq!(rows.len(), 1);
        let (first, last, prev): (i64, i64, Vec<u8>) =
            (rows[0].get(0), rows[0].get(1), rows[0].get(2));
        assert_eq!((first, last, prev), (1, 3, GENESIS.to_vec()));
        let body: Vec<u8> = rows[0].get(3);
        let records = audit_segment::decode(&body).unwrap_or_default();
        let stored: Vec<(&str, [u8; 32])> = records
            .iter()
            .map(|record| (record.text.as_str(), record.hash))
            .collect();
        assert_eq!(stored, vec![(texts[0], h1), (texts[1], h2), (texts[2], h3)]);
        let head_hash: Option<Vec<u8>> = sqlx::query(
            "SELECT hash FROM audit_heads WHERE tenant_id = x'00000000000000000000000000000001'",
        )
        .fetch_one(&pool)
        .await
        .map(|row| row.get(0))
        .unwrap_or_default();
        assert_eq!(head_hash, Some(h3.to_vec()));
        let keys: i64 = sqlx::query("SELECT count(*) FROM audit_keys")
            .fetch_one(&pool)
            .await
            .map(|row| row.get(0))
            .unwrap_or_default();
        assert!(
            keys >= 4,
            "patients p1, p2 and principals n, m are keyed ({keys})"
        );
        let old = sqlx::query("SELECT count(*) FROM audit_log_v5")
            .fetch_one(&pool)
            .await;
        assert!(old.is_err(), "the version-5 table is gone");
        let guarded = sqlx::query("DELETE FROM audit_segments")
            .execute(&pool)
            .await;
        assert!(guarded.is_err(), "the delete guard holds");
    }
}
