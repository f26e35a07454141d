//! The audit hash chain: every append (group commit or write commit) links its records onto the
//! tenant's chain in the same transaction; the stored chain verifies with the domain's checker;
//! heads and stored hashes agree; retention removes whole segments behind a signed marker, and
//! nothing else removes a record unnoticed.

use std::sync::Arc;

use carevault_crypto::SigningKey;
use carevault_domain::audit::AuditRecord;
use carevault_domain::audit::chain::{self, GENESIS};
use carevault_domain::audit::retention::RetentionMarker;
use carevault_domain::audit::storage::{AuditFilter, LinkQuery, StoredEntry, StoredLink};
use carevault_domain::audit::verify::{ChainCheck, Fault, TenantReport, verify_chain};
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;
use carevault_store::audit_segment;

use crate::Raw;
use crate::fixtures::*;

conformance!(
    every_append_extends_the_tenant_chain,
    appends_from_two_stores_on_one_database_chain_on,
    a_failed_append_writes_nothing_and_the_next_one_works,
    retention_removes_whole_segments_behind_a_signed_marker,
    moved_times_are_reported,
);

/// Appends `records` (of one tenant) as a segment of their own. On SQLite, reads' records are
/// journaled and chained in batches, a tenant's records of a batch packed into segments of up
/// to 512; reading the trail chains what is journaled first, so the next append starts a new
/// segment. On PostgreSQL every append is a segment already.
async fn append_as_segment(store: &Arc<dyn Store>, records: &[AuditRecord]) {
    store.append_audit(records).await.unwrap();
    store.audit_head(records[0].tenant).await.unwrap();
}

/// The records of a walk, every entry readable.
fn links_of(entries: Vec<StoredEntry>) -> Vec<StoredLink> {
    entries
        .into_iter()
        .map(|entry| match entry {
            StoredEntry::Link(link) => link,
            other => panic!("unexpected {other:?}"),
        })
        .collect()
}

/// Walks a chain page by page through the store, as `audit verify` does.
pub(crate) async fn verify(store: &Arc<dyn Store>, tenant: TenantId, page: usize) -> TenantReport {
    let mut check = ChainCheck::new(tenant, Vec::new());
    loop {
        let links = store
            .audit_links(
                tenant,
                &LinkQuery {
                    after_seq: check.last_seq(),
                    since_ms: None,
                    until_ms: None,
                    limit: page,
                },
            )
            .await
            .unwrap();
        if links.is_empty() {
            break;
        }
        for link in &links {
            check.push_entry(link);
        }
    }
    check.finish(store.audit_head(tenant).await.unwrap())
}

async fn every_append_extends_the_tenant_chain(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "chain a").await;
    let (b, _) = new_tenant(&store, "chain b").await;
    assert_eq!(store.audit_head(a).await.unwrap(), None);

    store
        .append_audit(&[
            audit(a, "read", "a1"),
            audit(b, "read", "b1"),
            audit(a, "read", "a2"),
        ])
        .await
        .unwrap();
    store
        .commit(
            &scope_a,
            &[create("Patient", "p1", T0)],
            &[audit(a, "create", "a3")],
        )
        .await
        .unwrap();
    // A batch larger than one INSERT statement carries.
    let many: Vec<_> = (0..700)
        .map(|n| audit(a, "search", &format!("m{n}")))
        .collect();
    store.append_audit(&many).await.unwrap();

    let report = verify(&store, a, 97).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.last_seq), (703, 703));
    let report_b = verify(&store, b, 1000).await;
    assert!(report_b.breaks.is_empty(), "{:?}", report_b.breaks);
    assert_eq!(report_b.records, 1);

    // The head, the stored hash at the head and the chain recomputed from the texts agree.
    let head = store.audit_head(a).await.unwrap().unwrap();
    assert_eq!(head.seq, 703);
    assert_eq!(
        Some(head.hash.unwrap()),
        store.audit_hash_at(a, 703).await.unwrap()
    );
    let links = links_of(
        store
            .audit_links(
                a,
                &LinkQuery {
                    after_seq: 0,
                    since_ms: None,
                    until_ms: None,
                    limit: 10_000,
                },
            )
            .await
            .unwrap(),
    );
    let recomputed = links.iter().fold(GENESIS, |hash, link| {
        chain::link(&hash, link.text.as_bytes())
    });
    assert_eq!(head.hash, Some(recomputed));
    assert_eq!(links[0].prev_hash.as_deref(), Some(&GENESIS[..]));
    assert!(links[2].text.contains("\"seq\":3,") && links[2].text.contains("\"a3\""));

    // Every chain with a head is listed, the platform's included once it has one.
    let heads = store.audit_heads().await.unwrap();
    assert!(heads.contains(&(a, head)));
    assert!(
        heads
            .iter()
            .any(|(tenant, head)| *tenant == b && head.seq == 1)
    );

    // Time bounds select by record time; paging continues after a sequence number.
    let mut late = audit(b, "read", "late");
    late.time_ms = T0 + 10_000;
    store.append_audit(&[late]).await.unwrap();
    let window = links_of(
        store
            .audit_links(
                b,
                &LinkQuery {
                    after_seq: 0,
                    since_ms: Some(T0 + 1),
                    until_ms: Some(T0 + 20_000),
                    limit: 10,
                },
            )
            .await
            .unwrap(),
    );
    assert_eq!(window.iter().map(|l| l.seq).collect::<Vec<_>>(), vec![2]);
}

/// Each store may remember the chain head of its last append (SQLite does, to append in one
/// round trip); another process, or a write transaction, moves the head under it. Every append
/// must still continue the chain exactly.
async fn appends_from_two_stores_on_one_database_chain_on(store: Arc<dyn Store>, raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "two stores").await;
    let other = raw.second_store().await;
    let mut expected = Vec::new();
    for round in 0..4 {
        for (name, appender) in [("first", &store), ("second", &other)] {
            let detail = format!("{name}-{round}");
            appender
                .append_audit(&[audit(a, "read", &detail)])
                .await
                .unwrap();
            expected.push(detail);
        }
        // A write transaction of the first store appends its record in the same commit.
        let detail = format!("write-{round}");
        store
            .commit(
                &scope_a,
                &[create("Patient", &format!("p{round}"), T0)],
                &[audit(a, "create", &detail)],
            )
            .await
            .unwrap();
        expected.push(detail);
    }
    let report = verify(&store, a, 5).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!(report.records, expected.len() as u64);
    // Every record is there once. Their order in the chain is the order they reached the
    // trail: on SQLite the server's reads pass through its journal first (store/src/sqlite/
    // journal.rs) and are chained after the records that committed meanwhile.
    let mut details: Vec<String> = store
        .audit_records(a)
        .await
        .unwrap()
        .into_iter()
        .map(|record| record.detail.unwrap())
        .collect();
    details.sort();
    expected.sort();
    assert_eq!(details, expected);
}

/// A segment squatting on the next sequence number (written past the store) makes the next
/// append of that tenant fail. Chained at once (PostgreSQL), the whole batch, every tenant in
/// it, is written or none of it; journaled (SQLite), the batch is durable at once and the other
/// tenants' records are chained. Either way that tenant's later appends fail and the store goes
/// on appending for others.
async fn a_failed_append_writes_nothing_and_the_next_one_works(store: Arc<dyn Store>, raw: &Raw) {
    let (a, _) = new_tenant(&store, "squatted").await;
    let (b, _) = new_tenant(&store, "bystander").await;
    store.append_audit(&[audit(a, "read", "a1")]).await.unwrap();
    assert_eq!(store.audit_head(a).await.unwrap().unwrap().seq, 1);
    raw.execute_as_owner(
        "INSERT INTO audit_segments \
         (tenant_id, first_seq, last_seq, min_time_ms, max_time_ms, prev_hash, body) \
         SELECT tenant_id, 2, 2, min_time_ms, max_time_ms, prev_hash, body \
         FROM audit_segments WHERE first_seq = 1",
    )
    .await
    .unwrap();

    let appended = store
        .append_audit(&[audit(b, "read", "b1"), audit(a, "read", "a2")])
        .await;
    assert_eq!(store.audit_head(a).await.unwrap().unwrap().seq, 1);
    let mut expected_b = vec!["b2"];
    if raw.journals_reads() {
        // Journaled (durable) at once, then chained tenant by tenant: the bystander's record
        // is chained, the squatted tenant's waits in the journal.
        assert!(appended.is_ok(), "{appended:?}");
        expected_b.insert(0, "b1");
    } else {
        // Chained at once, in one transaction: all of it fails.
        assert!(appended.is_err(), "an append onto a squatted seq succeeded");
        assert_eq!(store.audit_head(b).await.unwrap(), None);
    }

    // Nothing is left half-done on the store's connection, and the bystander goes on.
    store.append_audit(&[audit(b, "read", "b2")]).await.unwrap();
    let records_b = store.audit_records(b).await.unwrap();
    let details: Vec<&str> = records_b
        .iter()
        .map(|record| record.detail.as_deref().unwrap())
        .collect();
    assert_eq!(details, expected_b);
    assert_eq!(records_b[0].seq, 1);
    // The squatted tenant's trail cannot be written: its appends fail.
    assert!(store.append_audit(&[audit(a, "read", "a3")]).await.is_err());
}

async fn retention_removes_whole_segments_behind_a_signed_marker(store: Arc<dyn Store>, raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "retention").await;
    let (b, _) = new_tenant(&store, "retention other").await;
    let at = |time_ms: i64, detail: &str| {
        let mut record = audit(a, "read", detail);
        record.time_ms = time_ms;
        record
    };
    // Three appends, three segments: 1-3 and 4-5 are old, 6 is recent.
    append_as_segment(&store, &[at(T0, "1"), at(T0 + 1, "2"), at(T0 + 2, "3")]).await;
    append_as_segment(&store, &[at(T0 + 3, "4"), at(T0 + 4, "5")]).await;
    append_as_segment(&store, &[at(T0 + 100_000, "6")]).await;
    store.append_audit(&[audit(b, "read", "b")]).await.unwrap();

    assert_eq!(
        store
            .audit_retention_boundary(a, T0 + 50_000)
            .await
            .unwrap(),
        Some(5)
    );
    assert_eq!(
        store.audit_retention_boundary(a, T0 + 3).await.unwrap(),
        Some(3)
    );
    assert_eq!(store.audit_retention_boundary(a, T0).await.unwrap(), None);

    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::create_file(&dir.path().join("signing.key")).unwrap();
    let hash_at_5 = store.audit_hash_at(a, 5).await.unwrap().unwrap();
    let hash_at_4 = store.audit_hash_at(a, 4).await.unwrap().unwrap();

    // Only a marker at the end of a stored segment, with the stored hash there, of its tenant.
    for (tenant, marker) in [
        (a, RetentionMarker::sign(a, 4, &hash_at_4, T0, &key)),
        (a, RetentionMarker::sign(a, 5, &hash_at_4, T0, &key)),
        (b, RetentionMarker::sign(a, 5, &hash_at_5, T0, &key)),
    ] {
        assert!(store.audit_retain(tenant, &marker).await.is_err());
    }
    assert_eq!(
        raw.audit_rows().await,
        7,
        "a refused retention removes nothing"
    );

    assert!(raw.audit_keys(a, 1, 5).await > 0);
    let marker = RetentionMarker::sign(a, 5, &hash_at_5, T0 + 200_000, &key);
    assert_eq!(store.audit_retain(a, &marker).await.unwrap(), 5);
    // The search keys of the removed segments went with them; the others stay and still find.
    assert_eq!(raw.audit_keys(a, 1, 5).await, 0);
    assert!(raw.audit_keys(a, 6, 6).await > 0);
    assert!(raw.audit_keys(b, 1, 1).await > 0);
    let reads = store
        .audit_search(
            &scope_a,
            &AuditFilter {
                action: Some("read".to_owned()),
                limit: 10,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(reads.iter().map(|r| r.seq).collect::<Vec<_>>(), vec![6]);
    let left: Vec<i64> = store
        .audit_records(a)
        .await
        .unwrap()
        .iter()
        .map(|r| r.seq)
        .collect();
    assert_eq!(left, vec![6]);
    assert_eq!(store.audit_records(b).await.unwrap().len(), 1);
    assert_eq!(
        store.audit_retention_markers(a).await.unwrap(),
        vec![marker]
    );

    // The shortened chain verifies from its marker.
    let verifying = key.verifying_key();
    let report = verify_chain(store.clone(), a, Vec::new(), &verifying, &|_| {})
        .await
        .unwrap();
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    assert_eq!((report.records, report.last_seq), (1, 6));

    // The remaining segment and its keys are still guarded, and so are markers.
    let keys_delete = format!("DELETE FROM {}", raw.keys_table());
    for statement in [
        "DELETE FROM audit_segments",
        keys_delete.leak(),
        "DELETE FROM audit_retention",
        "UPDATE audit_retention SET through_seq = 6",
    ] {
        let error = raw.execute_as_owner(statement).await.unwrap_err();
        assert!(error.contains("cannot be"), "{statement}: {error}");
    }

    // A marker written without the signing key lets the owner delete, but verification names
    // the forged marker and the records it hid.
    let forged = RetentionMarker {
        signature: "00".repeat(64),
        ..RetentionMarker::sign(a, 6, &[1; 32], T0, &key)
    };
    let tenant_literal = match raw {
        Raw::Sqlite(_) => format!("X'{}'", a.as_uuid().simple()),
        Raw::Postgres { .. } => format!("'{a}'::uuid"),
    };
    let statement = format!(
        "INSERT INTO audit_retention (tenant_id, through_seq, marker) VALUES ({tenant_literal}, 6, '{}')",
        forged.to_text()
    );
    raw.execute_as_owner(statement.leak()).await.unwrap();
    for table in [raw.keys_table(), "audit_segments"] {
        let statement = format!("DELETE FROM {table} WHERE tenant_id = {tenant_literal}");
        raw.execute_as_owner(statement.leak()).await.unwrap();
    }
    let report = verify_chain(store.clone(), a, Vec::new(), &verifying, &|_| {})
        .await
        .unwrap();
    let kinds: Vec<String> = report
        .breaks
        .iter()
        .map(|found| format!("{:?}@{:?}", std::mem::discriminant(&found.fault), found.seq))
        .collect();
    assert!(
        matches!(report.breaks[0].fault, Fault::MarkerInvalid { .. }),
        "{kinds:?}"
    );
    assert!(
        report
            .breaks
            .iter()
            .any(|found| found.fault == Fault::Missing && found.seq == Some(6)),
        "{:?}",
        report.breaks
    );
}

/// Times stored beside the records (each record's, and each segment's span, which searches,
/// exports and retention use to skip segments) are checked against the records' hashed texts.
async fn moved_times_are_reported(store: Arc<dyn Store>, raw: &Raw) {
    let (a, _) = new_tenant(&store, "moved times").await;
    append_as_segment(&store, &[audit(a, "read", "1"), audit(a, "read", "2")]).await;
    append_as_segment(&store, &[audit(a, "read", "3")]).await;
    let dir = tempfile::tempdir().unwrap();
    let key = SigningKey::create_file(&dir.path().join("signing.key")).unwrap();
    let verifying = key.verifying_key();
    let clean = verify_chain(store.clone(), a, Vec::new(), &verifying, &|_| {})
        .await
        .unwrap();
    assert!(clean.breaks.is_empty(), "{:?}", clean.breaks);

    // The first segment's stored time of record 2 moved ten years on, its span with it; the
    // second segment's span alone moved.
    let tenant_literal = match raw {
        Raw::Sqlite(_) => format!("X'{}'", a.as_uuid().simple()),
        Raw::Postgres { .. } => format!("'{a}'::uuid"),
    };
    let statement = format!(
        "SELECT body FROM audit_segments WHERE tenant_id = {tenant_literal} AND first_seq = 1"
    );
    let body = raw.bytes_as_owner(statement.leak()).await.remove(0);
    let mut records = audit_segment::decode(&body).unwrap();
    records[1].time_ms += 315_360_000_000;
    let moved = audit_segment::encode(&records).unwrap();
    let hex: String = moved.iter().map(|b| format!("{b:02x}")).collect();
    let body_literal = match raw {
        Raw::Sqlite(_) => format!("X'{hex}'"),
        Raw::Postgres { .. } => format!("'\\x{hex}'::bytea"),
    };
    let (off, on) = match raw {
        Raw::Sqlite(_) => (
            "DROP TRIGGER audit_segments_no_update".to_owned(),
            "CREATE TRIGGER audit_segments_no_update BEFORE UPDATE ON audit_segments \
             BEGIN SELECT RAISE(ABORT, 'audit records cannot be changed'); END"
                .to_owned(),
        ),
        Raw::Postgres { .. } => (
            "ALTER TABLE audit_segments DISABLE TRIGGER audit_segments_no_update".to_owned(),
            "ALTER TABLE audit_segments ENABLE TRIGGER audit_segments_no_update".to_owned(),
        ),
    };
    raw.execute_as_owner(off.leak()).await.unwrap();
    for statement in [
        format!(
            "UPDATE audit_segments SET body = {body_literal}, max_time_ms = max_time_ms + \
             315360000000 WHERE tenant_id = {tenant_literal} AND first_seq = 1"
        ),
        format!(
            "UPDATE audit_segments SET min_time_ms = 0 WHERE tenant_id = {tenant_literal} \
             AND first_seq = 3"
        ),
    ] {
        raw.execute_as_owner(statement.leak()).await.unwrap();
    }
    raw.execute_as_owner(on.leak()).await.unwrap();

    let report = verify_chain(store.clone(), a, Vec::new(), &verifying, &|_| {})
        .await
        .unwrap();
    let found: Vec<(Option<i64>, Option<i64>, bool)> = report
        .breaks
        .iter()
        .map(|b| {
            (
                b.seq,
                b.last_seq,
                matches!(b.fault, Fault::TimeChanged { .. }),
            )
        })
        .collect();
    assert_eq!(
        found,
        vec![(Some(2), Some(2), true), (Some(3), Some(3), false)],
        "{:?}",
        report.breaks
    );
    assert_eq!(report.breaks[1].fault, Fault::SegmentTimesChanged);
}
