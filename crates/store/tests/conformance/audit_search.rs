//! The security officer's search of the trail: the indexes are written by every append (group
//! commit and write commit), each filter narrows the result, pages run newest first, one
//! tenant's scope finds nothing of another's (the keys refuse change like the segments: see
//! isolation.rs).

use std::sync::Arc;

use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;

use crate::Raw;
use crate::fixtures::*;

conformance!(
    audit_search_filters_pages_and_stays_in_its_tenant,
    audit_search_pages_across_index_buckets,
    audit_search_finds_every_key_kind_across_segments_and_pages,
);

/// A record of `who` (principal, session, source) doing `action` to `subjects` at `time_ms`.
fn event(
    tenant: TenantId,
    who: (&str, Option<&str>, Option<&str>),
    action: &str,
    subjects: &[&str],
    time_ms: i64,
) -> AuditRecord {
    let (principal, session, source) = who;
    let mut record = audit(tenant, action, "d");
    record.principal = principal.to_owned();
    record.session = session.map(str::to_owned);
    record.source = source.map(str::to_owned);
    record.subjects = subjects.iter().map(|s| (*s).to_owned()).collect();
    record.outcome = Outcome::Success;
    record.time_ms = time_ms;
    record
}

fn seqs(records: &[AuditRecord]) -> Vec<i64> {
    records.iter().map(|record| record.seq).collect()
}

async fn audit_search_filters_pages_and_stays_in_its_tenant(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, scope_a) = new_tenant(&store, "search a").await;
    let (b, scope_b) = new_tenant(&store, "search b").await;
    let n = ("person/n", Some("s1"), Some("10.0.0.1"));
    store
        .append_audit(&[
            event(a, n, "read", &["p1"], T0),
            event(a, n, "read", &["p2"], T0 + 10),
            event(
                b,
                ("person/x", Some("s9"), Some("10.0.0.1")),
                "read",
                &["p1"],
                T0 + 10,
            ),
            event(
                a,
                ("client/c", None, None),
                "search",
                &["p1", "p2", "p1"],
                T0 + 20,
            ),
        ])
        .await
        .unwrap();
    // The write path's records are indexed too.
    let mut refused = event(
        a,
        ("person/m", Some("s2"), Some("10.0.0.2")),
        "read",
        &["p1"],
        T0 + 30,
    );
    refused.outcome = Outcome::Denied;
    store.commit(&scope_a, &[], &[refused]).await.unwrap();

    let find = |filter: AuditFilter| {
        let store = store.clone();
        let scope = scope_a.clone();
        async move {
            store
                .audit_search(
                    &scope,
                    &AuditFilter {
                        limit: 100,
                        ..filter
                    },
                )
                .await
                .unwrap()
        }
    };
    let all = find(AuditFilter::default()).await;
    assert_eq!(seqs(&all), vec![4, 3, 2, 1], "newest first, tenant a only");
    assert!(all.iter().all(|record| record.tenant == a));
    let p1 = find(AuditFilter {
        patient: Some("p1".to_owned()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&p1), vec![4, 3, 1]);
    assert!(p1.iter().all(|r| r.subjects.contains(&"p1".to_owned())));
    let p2_by_n = find(AuditFilter {
        patient: Some("p2".to_owned()),
        principal: Some("person/n".to_owned()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&p2_by_n), vec![2]);
    let by_session = find(AuditFilter {
        session: Some("s1".to_owned()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&by_session), vec![2, 1]);
    let by_source = find(AuditFilter {
        source: Some("10.0.0.2".to_owned()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&by_source), vec![4]);
    let searches = find(AuditFilter {
        action: Some("search".to_owned()),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&searches), vec![3]);
    let denied = find(AuditFilter {
        outcome: Some(Outcome::Denied),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&denied), vec![4]);
    let window = find(AuditFilter {
        since_ms: Some(T0 + 10),
        until_ms: Some(T0 + 30),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&window), vec![3, 2]);

    // Keyset pages, by patient and without.
    let first = store
        .audit_search(
            &scope_a,
            &AuditFilter {
                patient: Some("p1".to_owned()),
                limit: 2,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&first), vec![4, 3]);
    let second = find(AuditFilter {
        patient: Some("p1".to_owned()),
        before_seq: Some(3),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&second), vec![1]);
    let older = find(AuditFilter {
        before_seq: Some(2),
        ..AuditFilter::default()
    })
    .await;
    assert_eq!(seqs(&older), vec![1]);

    // Tenant b's scope sees only b's record, whatever the filter names.
    let theirs = store
        .audit_search(
            &scope_b,
            &AuditFilter {
                patient: Some("p1".to_owned()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(theirs.len(), 1);
    assert_eq!(theirs[0].tenant, b);
    assert_eq!(theirs[0].principal, "person/x");
    let none = store
        .audit_search(
            &scope_b,
            &AuditFilter {
                principal: Some("person/n".to_owned()),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert!(none.is_empty());
}

/// A long trail: a patient's records far apart (in different buckets of the key index, which
/// groups 8,192 sequence numbers), found newest first, page by page, none missed or repeated.
async fn audit_search_pages_across_index_buckets(store: Arc<dyn Store>, _raw: &Raw) {
    let (a, scope) = new_tenant(&store, "long trail").await;
    let who = ("person/n", Some("s1"), Some("10.0.0.1"));
    let wanted = [7_i64, 8_191, 8_192, 8_193, 17_000, 25_000];
    let mut batch = Vec::new();
    for seq in 1..=25_001_i64 {
        let patient = if wanted.contains(&seq) { "px" } else { "other" };
        batch.push(event(a, who, "read", &[patient], T0 + seq));
        if batch.len() == 700 || seq == 25_001 {
            store.append_audit(&batch).await.unwrap();
            batch.clear();
        }
    }
    let mut found = Vec::new();
    let mut before = None;
    loop {
        let page = store
            .audit_search(
                &scope,
                &AuditFilter {
                    patient: Some("px".to_owned()),
                    before_seq: before,
                    limit: 4,
                    ..AuditFilter::default()
                },
            )
            .await
            .unwrap();
        let Some(last) = page.last() else {
            break;
        };
        before = Some(last.seq);
        found.extend(seqs(&page));
    }
    let mut expected = wanted.to_vec();
    expected.reverse();
    assert_eq!(found, expected);
    // A time window narrows it.
    let windowed = store
        .audit_search(
            &scope,
            &AuditFilter {
                patient: Some("px".to_owned()),
                since_ms: Some(T0 + 8_192),
                until_ms: Some(T0 + 17_001),
                limit: 100,
                ..AuditFilter::default()
            },
        )
        .await
        .unwrap();
    assert_eq!(seqs(&windowed), vec![17_000, 8_193, 8_192]);
}

/// Record `index` of a mixed trail: every key kind takes values that recur in other segments,
/// sessions and sources are sometimes absent, a few records are refused.
fn mixed(tenant: TenantId, index: i64) -> AuditRecord {
    let session = format!("s{}", index % 17);
    let source = format!("10.0.{}.{}", index % 3, index % 11);
    let mut record = event(
        tenant,
        (
            &format!("person/{}", index % 13),
            (index % 5 != 0).then_some(session.as_str()),
            (index % 7 != 0).then_some(source.as_str()),
        ),
        ["read", "search", "create"][usize::try_from(index % 3).unwrap()],
        &[
            &format!("p{}", index % 29),
            &format!("p{}", (index * 7) % 31),
        ],
        T0 + index,
    );
    if index % 19 == 0 {
        record.outcome = Outcome::Denied;
    }
    record
}

/// Many segments of different sizes, each key kind (patient, principal, session, source,
/// action, outcome) alone and combined: every search finds exactly the records that match,
/// newest first, the same whether read in one page or page by page, and none of the other
/// tenant's records with the same values.
async fn audit_search_finds_every_key_kind_across_segments_and_pages(
    store: Arc<dyn Store>,
    _raw: &Raw,
) {
    let (a, scope) = new_tenant(&store, "mixed a").await;
    let (b, _) = new_tenant(&store, "mixed b").await;
    let mut appended = Vec::new();
    let mut index = 0;
    for append in 0..240 {
        let mut batch = Vec::new();
        for _ in 0..=append % 7 {
            index += 1;
            batch.push(mixed(a, index));
            appended.push(mixed(a, index));
        }
        // The other tenant's records carry the same values.
        batch.push(mixed(b, index));
        if append % 40 == 39 {
            // The write path's records too.
            let id = format!("w{append}");
            let (write, audit) = batch.split_at(batch.len() - 1);
            store
                .commit(&scope, &[create("Patient", &id, T0)], write)
                .await
                .unwrap();
            store.append_audit(audit).await.unwrap();
        } else {
            store.append_audit(&batch).await.unwrap();
        }
    }
    assert!(appended.len() > 900);

    let filters = [
        AuditFilter {
            patient: Some("p3".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            patient: Some("p30".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            principal: Some("person/4".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            session: Some("s5".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            source: Some("10.0.1.5".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            action: Some("create".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            outcome: Some(Outcome::Denied),
            ..AuditFilter::default()
        },
        AuditFilter {
            patient: Some("p3".to_owned()),
            principal: Some("person/3".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            action: Some("read".to_owned()),
            outcome: Some(Outcome::Denied),
            session: Some("s14".to_owned()),
            ..AuditFilter::default()
        },
        AuditFilter {
            patient: Some("p7".to_owned()),
            since_ms: Some(T0 + 200),
            until_ms: Some(T0 + 700),
            ..AuditFilter::default()
        },
        AuditFilter {
            patient: Some("nobody".to_owned()),
            ..AuditFilter::default()
        },
    ];
    for filter in filters {
        let expected: Vec<i64> = appended
            .iter()
            .enumerate()
            .rev()
            .filter(|(_, record)| {
                filter
                    .patient
                    .as_ref()
                    .is_none_or(|patient| record.subjects.contains(patient))
                    && filter
                        .principal
                        .as_ref()
                        .is_none_or(|p| *p == record.principal)
                    && filter
                        .session
                        .as_ref()
                        .is_none_or(|s| Some(s) == record.session.as_ref())
                    && filter
                        .source
                        .as_ref()
                        .is_none_or(|s| Some(s) == record.source.as_ref())
                    && filter.action.as_ref().is_none_or(|a| *a == record.action)
                    && filter.outcome.is_none_or(|o| o == record.outcome)
                    && filter.since_ms.is_none_or(|since| record.time_ms >= since)
                    && filter.until_ms.is_none_or(|until| record.time_ms < until)
            })
            .map(|(position, _)| i64::try_from(position).unwrap() + 1)
            .collect();
        let whole = store
            .audit_search(
                &scope,
                &AuditFilter {
                    limit: 10_000,
                    ..filter.clone()
                },
            )
            .await
            .unwrap();
        assert_eq!(seqs(&whole), expected, "{filter:?} in one page");
        assert!(whole.iter().all(|record| record.tenant == a));
        let mut paged = Vec::new();
        let mut before = None;
        loop {
            let page = store
                .audit_search(
                    &scope,
                    &AuditFilter {
                        before_seq: before,
                        limit: 7,
                        ..filter.clone()
                    },
                )
                .await
                .unwrap();
            let Some(last) = page.last() else {
                break;
            };
            before = Some(last.seq);
            paged.extend(seqs(&page));
        }
        assert_eq!(paged, expected, "{filter:?} page by page");
    }
}
