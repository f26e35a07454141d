//! The audit hash chain: every append (group commit or write commit) links its records onto the
//! tenant's chain in the same transaction; the stored chain verifies with the domain's checker;
//! heads and stored hashes agree; records stored before hashing began are adopted.

use std::sync::Arc;

use carevault_domain::audit::chain::{self, GENESIS};
use carevault_domain::audit::storage::{ChainHead, LinkQuery, StoredEntry, StoredLink};
use carevault_domain::audit::verify::{ChainCheck, TenantReport};
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;

use crate::Raw;
use crate::fixtures::*;

conformance!(
    every_append_extends_the_tenant_chain,
    records_from_before_hashing_are_adopted,
);

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
async fn verify(store: &Arc<dyn Store>, tenant: TenantId, page: usize) -> TenantReport {
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

async fn records_from_before_hashing_are_adopted(store: Arc<dyn Store>, raw: &Raw) {
    let (a, _) = new_tenant(&store, "legacy").await;
    // Two records as version 1 of the schema stored them: no hashes, head without a hash.
    let texts: Vec<String> = (1..=2)
        .map(|seq| chain::canonical_text(&audit(a, "read", &format!("old{seq}")), seq).unwrap())
        .collect();
    let tenant_literal = match raw {
        Raw::Sqlite(_) => format!("X'{}'", a.as_uuid().simple()),
        Raw::Postgres { .. } => format!("'{a}'::uuid"),
    };
    for (index, text) in texts.iter().enumerate() {
        let statement = format!(
            "INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record) \
             VALUES ({tenant_literal}, {}, {T0}, 'read', 'success', '{text}')",
            index + 1
        );
        raw.execute_as_owner(statement.leak()).await.unwrap();
    }
    let statement =
        format!("INSERT INTO audit_heads (tenant_id, seq) VALUES ({tenant_literal}, 2)");
    raw.execute_as_owner(statement.leak()).await.unwrap();
    assert_eq!(
        store.audit_head(a).await.unwrap(),
        Some(ChainHead { seq: 2, hash: None })
    );
    let unhashed = verify(&store, a, 10).await;
    assert!(unhashed.breaks.is_empty(), "{:?}", unhashed.breaks);

    store
        .append_audit(&[audit(a, "read", "new3")])
        .await
        .unwrap();
    let report = verify(&store, a, 10).await;
    assert!(report.breaks.is_empty(), "{:?}", report.breaks);
    let adopted = texts
        .iter()
        .fold(GENESIS, |hash, text| chain::link(&hash, text.as_bytes()));
    let third = &links_of(
        store
            .audit_links(
                a,
                &LinkQuery {
                    after_seq: 2,
                    since_ms: None,
                    until_ms: None,
                    limit: 10,
                },
            )
            .await
            .unwrap(),
    )[0];
    assert_eq!(third.prev_hash.as_deref(), Some(&adopted[..]));
}
