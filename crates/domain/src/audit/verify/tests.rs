//! The verifier against hand-built chains: each kind of tampering found where it happened.

use super::*;
use crate::audit::chain::extend;
use crate::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};

fn record(tenant: TenantId, detail: &str) -> AuditRecord {
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: 1_700_000_000_000,
        tenant,
        principal: "client/x".to_owned(),
        session: None,
        roles: vec![],
        auth_strength: "client-key".to_owned(),
        source: None,
        action: "read".to_owned(),
        resource_type: None,
        resource_id: None,
        subjects: vec![],
        categories: vec![],
        purpose: None,
        outcome: Outcome::Success,
        detail: Some(detail.to_owned()),
    }
}

fn chain(tenant: TenantId, count: usize) -> Vec<StoredLink> {
    let records: Vec<AuditRecord> = (0..count)
        .map(|index| record(tenant, &format!("r{index}")))
        .collect();
    extend(0, GENESIS, &records)
        .unwrap_or_default()
        .into_iter()
        .map(|chained| StoredLink {
            seq: chained.seq,
            time_ms: 1_700_000_000_000,
            text: chained.text,
            prev_hash: Some(chained.prev_hash.to_vec()),
            hash: Some(chained.hash.to_vec()),
        })
        .collect()
}

fn checkpoint(tenant: TenantId, rows: &[StoredLink], seq: i64) -> VerifiedCheckpoint {
    let hash = rows
        .iter()
        .find(|row| row.seq == seq)
        .and_then(|row| row.hash.as_deref().and_then(hash_from_bytes))
        .unwrap_or(GENESIS);
    VerifiedCheckpoint {
        tenant,
        seq,
        hash,
        time_ms: 0,
        origin: format!("cp{seq}"),
    }
}

fn head(rows: &[StoredLink]) -> Option<ChainHead> {
    rows.last().map(|row| ChainHead {
        seq: row.seq,
        hash: row.hash.as_deref().and_then(hash_from_bytes),
    })
}

fn check(
    tenant: TenantId,
    rows: &[StoredLink],
    checkpoints: Vec<VerifiedCheckpoint>,
    head: Option<ChainHead>,
) -> Vec<(Option<i64>, Option<i64>, &'static str)> {
    let mut check = ChainCheck::new(tenant, checkpoints);
    for row in rows {
        check.push(row);
    }
    check
        .finish(head)
        .breaks
        .iter()
        .map(|b| (b.seq, b.last_seq, kind(&b.fault)))
        .collect()
}

fn kind(fault: &Fault) -> &'static str {
    match fault {
        Fault::ContentChanged => "changed",
        Fault::LinkBroken => "link",
        Fault::Missing => "missing",
        Fault::WrongSeq { .. } => "seq",
        Fault::WrongTenant { .. } => "tenant",
        Fault::Unreadable => "unreadable",
        Fault::Unhashed => "unhashed",
        Fault::CheckpointMismatch { .. } => "cp-mismatch",
        Fault::CheckpointPastEnd { .. } => "cp-past-end",
        Fault::TimeChanged { .. } => "time",
        Fault::SegmentTimesChanged => "segment-times",
        Fault::CheckpointOnMissing { .. } => "cp-on-missing",
        Fault::CheckpointInvalid { .. } => "cp-invalid",
        Fault::MarkerInvalid { .. } => "marker-invalid",
        Fault::HeadMismatch { .. } => "head",
    }
}

#[test]
fn an_untouched_chain_is_clean() {
    let tenant = TenantId::generate();
    let rows = chain(tenant, 10);
    let checkpoints = vec![checkpoint(tenant, &rows, 4), checkpoint(tenant, &rows, 10)];
    let mut check = ChainCheck::new(tenant, checkpoints);
    for row in &rows {
        check.push(row);
    }
    let report = check.finish(head(&rows));
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.checkpoints), (10, 2));
    assert!(check_empty(tenant).is_empty());
}

fn check_empty(tenant: TenantId) -> Vec<(Option<i64>, Option<i64>, &'static str)> {
    check(tenant, &[], vec![], None)
}

#[test]
fn each_kind_of_tampering_is_found_where_it_happened() {
    let tenant = TenantId::generate();
    let rows = chain(tenant, 10);
    let cps = || vec![checkpoint(tenant, &rows, 5), checkpoint(tenant, &rows, 10)];

    // A changed field, hashes untouched.
    let mut changed = rows.clone();
    changed[3].text = changed[3].text.replace("r3", "rX");
    assert_eq!(
        check(tenant, &changed, cps(), head(&rows)),
        vec![(Some(4), Some(4), "changed")]
    );

    // A changed field with the chain rebuilt from there: only the checkpoints see it.
    let mut records: Vec<AuditRecord> = rows
        .iter()
        .map(|row| serde_json::from_str(&row.text).unwrap_or_else(|e| panic!("{e}")))
        .collect();
    records[3].detail = Some("rX".to_owned());
    let rebuilt: Vec<StoredLink> = extend(0, GENESIS, &records)
        .unwrap_or_default()
        .into_iter()
        .map(|c| StoredLink {
            seq: c.seq,
            time_ms: 1_700_000_000_000,
            text: c.text,
            prev_hash: Some(c.prev_hash.to_vec()),
            hash: Some(c.hash.to_vec()),
        })
        .collect();
    assert_eq!(
        check(tenant, &rebuilt, cps(), head(&rebuilt)),
        vec![
            (Some(5), Some(5), "cp-mismatch"),
            (Some(10), Some(10), "cp-mismatch")
        ]
    );

    // A deleted record.
    let mut deleted = rows.clone();
    deleted.remove(6);
    assert_eq!(
        check(tenant, &deleted, cps(), head(&rows)),
        vec![(Some(7), Some(7), "missing"), (Some(8), Some(8), "link")]
    );

    // Two records swapped (their rows renumbered).
    let mut swapped = rows.clone();
    swapped.swap(1, 2);
    swapped[1].seq = 2;
    swapped[2].seq = 3;
    assert_eq!(
        check(tenant, &swapped, cps(), head(&rows)),
        vec![
            (Some(2), Some(3), "seq"),
            (Some(2), Some(2), "link"),
            (Some(3), Some(3), "link"),
            (Some(4), Some(4), "link"),
        ]
    );

    // A truncated tail with the head moved back: only the checkpoint past the end.
    let truncated = rows[..7].to_vec();
    assert_eq!(
        check(tenant, &truncated, cps(), head(&truncated)),
        vec![(Some(10), Some(10), "cp-past-end")]
    );
    // … and without moving the head, the head says so too.
    assert_eq!(
        check(tenant, &truncated, vec![], head(&rows)),
        vec![(Some(8), Some(10), "missing")]
    );

    // A record inserted in the middle, linked from its predecessor.
    let mut inserted = rows.clone();
    let forged = record(tenant, "forged");
    let forged = extend(
        5,
        hash_from_bytes(rows[4].hash.as_deref().unwrap_or_default()).unwrap_or(GENESIS),
        [&forged],
    )
    .unwrap_or_default();
    for row in inserted.iter_mut().skip(5) {
        row.seq += 1;
    }
    inserted.insert(
        5,
        StoredLink {
            seq: 6,
            time_ms: 1_700_000_000_000,
            text: forged[0].text.clone(),
            prev_hash: Some(forged[0].prev_hash.to_vec()),
            hash: Some(forged[0].hash.to_vec()),
        },
    );
    let found = check(tenant, &inserted, cps(), head(&rows));
    assert_eq!(
        found,
        vec![
            (Some(7), Some(11), "seq"),
            (Some(7), Some(7), "link"),
            (Some(10), Some(10), "cp-mismatch"),
            (Some(11), Some(11), "head"),
        ]
    );
}

#[test]
fn a_chain_shortened_by_retention_verifies_from_its_marker() {
    let tenant = TenantId::generate();
    let rows = chain(tenant, 10);
    let marker = VerifiedMarker {
        tenant,
        through_seq: 4,
        hash: hash_from_bytes(rows[3].hash.as_deref().unwrap_or_default()).unwrap_or(GENESIS),
        time_ms: 0,
    };
    let kept = &rows[4..];
    let cps = vec![
        checkpoint(tenant, &rows, 2),
        checkpoint(tenant, &rows, 4),
        checkpoint(tenant, &rows, 8),
    ];
    let mut walk = ChainCheck::new(tenant, cps.clone());
    walk.start_after(&marker);
    for row in kept {
        walk.push(row);
    }
    let report = walk.finish(head(&rows));
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.checkpoints), (6, 2));

    // Without the marker the removed records are missing.
    assert_eq!(
        check(tenant, kept, vec![], head(&rows)),
        vec![(Some(1), Some(4), "missing"), (Some(5), Some(5), "link")]
    );

    // A marker naming another hash than the checkpoint at the same place is a break.
    let mut walk = ChainCheck::new(tenant, cps);
    walk.start_after(&VerifiedMarker {
        hash: [9; 32],
        ..marker
    });
    for row in kept {
        walk.push(row);
    }
    let found: Vec<_> = walk
        .finish(head(&rows))
        .breaks
        .iter()
        .map(|b| (b.seq, kind(&b.fault)))
        .collect();
    assert_eq!(found, vec![(Some(4), "cp-mismatch"), (Some(5), "link")]);
}

#[test]
fn a_damaged_segment_is_one_break_and_the_walk_goes_on() {
    let tenant = TenantId::generate();
    let rows = chain(tenant, 10);
    let mut check = ChainCheck::new(tenant, vec![checkpoint(tenant, &rows, 10)]);
    for row in &rows[..3] {
        check.push(row);
    }
    check.push_damaged(4, 6);
    for row in &rows[6..] {
        check.push(row);
    }
    let found: Vec<_> = check
        .finish(head(&rows))
        .breaks
        .iter()
        .map(|b| (b.seq, b.last_seq, kind(&b.fault)))
        .collect();
    assert_eq!(found, vec![(Some(4), Some(6), "unreadable")]);
}
