//! The security officer's search over segments: which search keys a filter has, the statements
//! that find candidate segments (SQLite's walk of the key rows bucket by bucket, PostgreSQL's
//! look-up of the segments' key arrays), and the exact re-check of every record a candidate
//! segment holds.

use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::store::StoreError;

use super::SegmentRow;
use crate::audit_segment::{KeyKind, search_key};

/// How a search finds candidate segments: by up to six search keys (the first drives the walk,
/// the others must be present in the same segment), newest first.
pub(crate) fn filter_keys(filter: &AuditFilter) -> Vec<i64> {
    [
        filter
            .patient
            .as_deref()
            .map(|value| (KeyKind::Patient, value)),
        filter
            .session
            .as_deref()
            .map(|value| (KeyKind::Session, value)),
        filter
            .principal
            .as_deref()
            .map(|value| (KeyKind::Principal, value)),
        filter
            .source
            .as_deref()
            .map(|value| (KeyKind::Source, value)),
        filter
            .outcome
            .map(|value| (KeyKind::Outcome, value.as_str())),
        filter
            .action
            .as_deref()
            .map(|value| (KeyKind::Action, value)),
    ]
    .into_iter()
    .flatten()
    .map(|(kind, value)| search_key(kind, value))
    .collect()
}

/// The candidate-segment statement for a search with `keys` over `buckets` buckets of SQLite's
/// `audit_keys` rows, and, without keys, on either engine. Values, in
/// placeholder order: the tenant, the keys, the buckets (with keys), then `before_first_seq`,
/// `since`, `until`, `limit`. Each row is a segment and, last, whether its time span overlaps
/// `[since, until)` (a segment outside it need not be opened).
///
/// With keys, the key index drives: the candidates are chosen from `audit_keys` alone in a
/// materialised CTE, newest first, and only then joined to their segments. Left to themselves,
/// both planners may walk every segment of the tenant and probe the keys for each (SQLite always,
/// PostgreSQL before its first ANALYZE of the tables), a scan that grows with the trail. The time
/// window is therefore not a filter here but the last column, so that a page of fewer than
/// `limit` candidates still means the buckets are exhausted.
pub(crate) fn search_statement(keys: usize, buckets: usize) -> String {
    if keys == 0 {
        return "SELECT s.first_seq, s.last_seq, s.min_time_ms, s.max_time_ms, s.prev_hash, \
                s.body, (s.max_time_ms >= $3 AND s.min_time_ms < $4) FROM audit_segments s \
                WHERE s.tenant_id = $1 AND s.first_seq < $2 AND s.max_time_ms >= $3 \
                AND s.min_time_ms < $4 ORDER BY s.first_seq DESC LIMIT $5"
            .to_owned();
    }
    let mut text = String::from(
        "WITH c AS MATERIALIZED (SELECT k.first_seq FROM audit_keys k \
         WHERE k.tenant_id = $1 AND k.key = $2",
    );
    for index in 1..keys {
        text.push_str(&format!(
            " AND EXISTS (SELECT 1 FROM audit_keys k{index} WHERE k{index}.tenant_id = k.tenant_id \
             AND k{index}.bucket = k.bucket AND k{index}.key = ${} \
             AND k{index}.first_seq = k.first_seq)",
            index + 2
        ));
    }
    let first_bucket = keys + 2;
    let list: Vec<String> = (0..buckets.max(1))
        .map(|offset| format!("${}", first_bucket + offset))
        .collect();
    text.push_str(&format!(" AND k.bucket IN ({})", list.join(", ")));
    let before = first_bucket + buckets.max(1);
    let (since, until, limit) = (before + 1, before + 2, before + 3);
    text.push_str(&format!(
        " AND k.first_seq < ${before} ORDER BY k.first_seq DESC LIMIT ${limit}) \
         SELECT s.first_seq, s.last_seq, s.min_time_ms, s.max_time_ms, s.prev_hash, s.body, \
         (s.max_time_ms >= ${since} AND s.min_time_ms < ${until}) \
         FROM c CROSS JOIN audit_segments s \
         WHERE s.tenant_id = $1 AND s.first_seq = c.first_seq ORDER BY s.first_seq DESC"
    ));
    text
}

/// PostgreSQL's candidate-segment statement for a search with `keys`: the segments whose key
/// array holds every one of them, newest first, found by `carevault_audit_segments_with_keys`
/// (migration 0007: a look-up through the GIN index on the arrays, which the server's role
/// could not use directly under row-level security), then read by primary key. Values, in
/// placeholder order, as [`search_statement`]'s without buckets: the tenant, the keys, then
/// `before_first_seq`, `since`, `until`, `limit`.
///
/// One look-up covers the whole trail before `before_first_seq`, so there are no buckets to
/// walk. As in SQLite's statement, the time window is not a filter but the last column, so that
/// a page of fewer than `limit` candidates means the search is over.
pub(crate) fn array_search_statement(keys: usize) -> String {
    let list: Vec<String> = (0..keys).map(|index| format!("${}", index + 2)).collect();
    let before = keys + 2;
    let (since, until, limit) = (before + 1, before + 2, before + 3);
    format!(
        "SELECT s.first_seq, s.last_seq, s.min_time_ms, s.max_time_ms, s.prev_hash, s.body, \
         (s.max_time_ms >= ${since} AND s.min_time_ms < ${until}) FROM audit_segments s \
         WHERE s.tenant_id = $1 AND s.first_seq = ANY(ARRAY(\
         SELECT carevault_audit_segments_with_keys(ARRAY[{}]::bigint[], ${before}, ${limit}))) \
         ORDER BY s.first_seq DESC",
        list.join(", ")
    )
}

/// A filter made ready to scan opened segments: the strings every matching record's text must
/// contain (the filter's values as JSON strings, a cheap test before a record is parsed), each
/// with its searcher built once for the whole search.
pub(crate) struct RecordScan<'f> {
    filter: &'f AuditFilter,
    needles: Vec<memchr::memmem::Finder<'static>>,
}

impl<'f> RecordScan<'f> {
    pub(crate) fn new(filter: &'f AuditFilter) -> RecordScan<'f> {
        let needles = [
            filter.patient.as_ref(),
            filter.session.as_ref(),
            filter.principal.as_ref(),
            filter.source.as_ref(),
            filter.action.as_ref(),
        ]
        .into_iter()
        .flatten()
        .filter_map(|value| serde_json::to_string(value).ok())
        .map(|needle| memchr::memmem::Finder::new(needle.as_bytes()).into_owned())
        .collect();
        RecordScan { filter, needles }
    }

    /// Appends the records of an opened segment that match the filter, newest first, until
    /// the filter's page is full. Only those records are parsed (and their text checked to be
    /// UTF-8); the rest are looked at where they lie. A damaged segment cannot be searched: it
    /// is an error, for the operator's `audit verify` to locate.
    pub(crate) fn matching_records(
        &self,
        segment: &SegmentRow,
        out: &mut Vec<AuditRecord>,
    ) -> Result<(), StoreError> {
        let damaged = || {
            StoreError::Backend(format!(
                "audit records {} to {} are damaged; run `carevault audit verify`",
                segment.first_seq, segment.last_seq
            ))
        };
        let filter = self.filter;
        let opened = segment.opened().ok_or_else(damaged)?;
        for index in (0..opened.len()).rev() {
            if out.len() >= filter.limit {
                break;
            }
            let seq = segment.first_seq + index as i64;
            let (Some(time_ms), Some(text)) = (opened.time_ms(index), opened.text_bytes(index))
            else {
                return Err(damaged());
            };
            if filter.before_seq.is_some_and(|before| seq >= before)
                || filter.since_ms.is_some_and(|since| time_ms < since)
                || filter.until_ms.is_some_and(|until| time_ms >= until)
                || !self
                    .needles
                    .iter()
                    .all(|needle| needle.find(text).is_some())
            {
                continue;
            }
            let text = opened.text(index).map_err(|_| damaged())?;
            let record: AuditRecord = serde_json::from_str(text).map_err(|error| {
                StoreError::Backend(format!("stored audit record unreadable: {error}"))
            })?;
            if record.seq == seq && matches(&record, filter) {
                out.push(record);
            }
        }
        Ok(())
    }
}

/// Whether `record`, not yet chained (it has no sequence number), could be among the results of
/// a search by `filter`: everything but the filter's `before_seq` is checked.
pub(crate) fn may_match(record: &AuditRecord, filter: &AuditFilter) -> bool {
    filter.since_ms.is_none_or(|since| record.time_ms >= since)
        && filter.until_ms.is_none_or(|until| record.time_ms < until)
        && matches(record, filter)
}

fn matches(record: &AuditRecord, filter: &AuditFilter) -> bool {
    let same = |wanted: Option<&String>, actual: Option<&str>| {
        wanted.is_none_or(|wanted| Some(wanted.as_str()) == actual)
    };
    filter
        .patient
        .as_ref()
        .is_none_or(|patient| record.subjects.contains(patient))
        && same(filter.principal.as_ref(), Some(&record.principal))
        && same(filter.session.as_ref(), record.session.as_deref())
        && same(filter.source.as_ref(), record.source.as_deref())
        && same(filter.action.as_ref(), Some(&record.action))
        && filter
            .outcome
            .is_none_or(|outcome: Outcome| outcome == record.outcome)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::audit_segment::{SegmentRecord, encode};
    use carevault_domain::ids::TenantId;

    fn record(seq: i64, principal: &str, subjects: &[&str]) -> AuditRecord {
        AuditRecord {
            v: 1,
            seq,
            time_ms: 0,
            tenant: TenantId::platform(),
            principal: principal.to_owned(),
            session: None,
            roles: vec!["clinician".to_owned()],
            auth_strength: "mfa".to_owned(),
            source: None,
            action: "read".to_owned(),
            resource_type: Some("Patient".to_owned()),
            resource_id: subjects.first().map(|id| (*id).to_owned()),
            subjects: subjects.iter().map(|id| (*id).to_owned()).collect(),
            categories: vec!["demographics".to_owned()],
            purpose: None,
            outcome: Outcome::Success,
            detail: None,
        }
    }

    fn segment(first_seq: i64, texts: Vec<String>) -> SegmentRow {
        let records: Vec<SegmentRecord> = texts
            .into_iter()
            .map(|text| SegmentRecord {
                text,
                time_ms: 0,
                hash: [0; 32],
            })
            .collect();
        SegmentRow {
            first_seq,
            last_seq: first_seq + records.len() as i64 - 1,
            min_time_ms: 0,
            max_time_ms: 0,
            prev_hash: vec![0; 32],
            body: encode(&records).unwrap_or_default(),
        }
    }

    /// The scan finds records by their text, then keeps only those that match exactly: a
    /// patient's id found in another field (here, as a principal), a record outside the page's
    /// `before_seq`, or past the page's limit is not returned; the newest come first.
    #[test]
    fn a_scan_keeps_exact_matches_newest_first_within_the_page() {
        let texts = [
            record(10, "person/a", &["p1"]),
            record(11, "p1", &["p2"]),
            record(12, "person/b", &["p2", "p1"]),
            record(13, "person/a", &["p3"]),
            record(14, "person/a", &["p1"]),
        ]
        .iter()
        .map(|record| serde_json::to_string(record).unwrap_or_default())
        .collect();
        let row = segment(10, texts);
        let find = |filter: AuditFilter| {
            let mut out = Vec::new();
            let result = RecordScan::new(&filter).matching_records(&row, &mut out);
            assert!(result.is_ok(), "{result:?}");
            out.iter().map(|record| record.seq).collect::<Vec<_>>()
        };
        let by_patient = AuditFilter {
            patient: Some("p1".to_owned()),
            limit: 10,
            ..AuditFilter::default()
        };
        assert_eq!(find(by_patient.clone()), vec![14, 12, 10]);
        assert_eq!(
            find(AuditFilter {
                limit: 2,
                ..by_patient.clone()
            }),
            vec![14, 12]
        );
        assert_eq!(
            find(AuditFilter {
                before_seq: Some(14),
                ..by_patient.clone()
            }),
            vec![12, 10]
        );
        assert_eq!(
            find(AuditFilter {
                principal: Some("person/a".to_owned()),
                ..by_patient
            }),
            vec![14, 10]
        );
    }

    /// A record the scan passes over is not parsed, so damage confined to its text does not
    /// stop the search (`audit verify` reports it); damage in a record the search would return
    /// is an error, never a wrong answer; so is a body that does not open.
    #[test]
    fn a_scan_reads_only_the_records_it_keeps_and_refuses_damage_in_them() {
        let good = serde_json::to_string(&record(1, "person/a", &["p1"])).unwrap_or_default();
        let bad = "{\"subjects\":[\"p1\"]}".to_owned();
        let filter = |patient: &str| AuditFilter {
            patient: Some(patient.to_owned()),
            limit: 10,
            ..AuditFilter::default()
        };
        // Text that does not parse as a record, holding the patient's id: an error.
        let row = segment(1, vec![good.clone(), bad]);
        let mut out = Vec::new();
        let found = RecordScan::new(&filter("p1")).matching_records(&row, &mut out);
        assert!(found.is_err_and(|error| error.to_string().contains("unreadable")));
        // The same segment searched for another patient passes over it.
        let mut out = Vec::new();
        let found = RecordScan::new(&filter("p9")).matching_records(&row, &mut out);
        assert!(found.is_ok() && out.is_empty());
        // A body that does not open, or holds fewer records than its row says.
        let mut broken = segment(1, vec![good.clone()]);
        broken.body.truncate(broken.body.len() / 2);
        let found = RecordScan::new(&filter("p1")).matching_records(&broken, &mut Vec::new());
        assert!(found.is_err_and(|error| error.to_string().contains("audit verify")));
        let mut short = segment(1, vec![good]);
        short.last_seq += 1;
        let found = RecordScan::new(&filter("p1")).matching_records(&short, &mut Vec::new());
        assert!(found.is_err_and(|error| error.to_string().contains("audit verify")));
    }

    #[test]
    fn a_search_walks_the_first_key_and_requires_the_others_in_the_same_segment() {
        let filter = AuditFilter {
            patient: Some("p1".to_owned()),
            principal: Some("person/a".to_owned()),
            limit: 10,
            ..AuditFilter::default()
        };
        let keys = filter_keys(&filter);
        assert_eq!(
            keys,
            vec![
                search_key(KeyKind::Patient, "p1"),
                search_key(KeyKind::Principal, "person/a")
            ]
        );
        assert_eq!(
            search_statement(2, 3),
            "WITH c AS MATERIALIZED (SELECT k.first_seq FROM audit_keys k \
             WHERE k.tenant_id = $1 AND k.key = $2 AND EXISTS (SELECT 1 FROM audit_keys k1 \
             WHERE k1.tenant_id = k.tenant_id AND k1.bucket = k.bucket AND k1.key = $3 \
             AND k1.first_seq = k.first_seq) AND k.bucket IN ($4, $5, $6) \
             AND k.first_seq < $7 ORDER BY k.first_seq DESC LIMIT $10) \
             SELECT s.first_seq, s.last_seq, s.min_time_ms, s.max_time_ms, s.prev_hash, s.body, \
             (s.max_time_ms >= $8 AND s.min_time_ms < $9) \
             FROM c CROSS JOIN audit_segments s \
             WHERE s.tenant_id = $1 AND s.first_seq = c.first_seq ORDER BY s.first_seq DESC"
        );
        assert!(search_statement(0, 0).contains("FROM audit_segments s WHERE s.tenant_id = $1"));
    }

    #[test]
    fn postgres_looks_the_keys_up_in_the_segments_arrays() {
        assert_eq!(
            array_search_statement(2),
            "SELECT s.first_seq, s.last_seq, s.min_time_ms, s.max_time_ms, s.prev_hash, s.body, \
             (s.max_time_ms >= $5 AND s.min_time_ms < $6) FROM audit_segments s \
             WHERE s.tenant_id = $1 AND s.first_seq = ANY(ARRAY(\
             SELECT carevault_audit_segments_with_keys(ARRAY[$2, $3]::bigint[], $4, $7))) \
             ORDER BY s.first_seq DESC"
        );
        assert!(array_search_statement(1).contains("(ARRAY[$2]::bigint[], $3, $6)"));
    }
}
