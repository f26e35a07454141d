//! Audit append throughput on SQLite: records per second appended through the store in
//! batches of the group committer's size (512), hash chain included, against a bare in-memory
//! `Vec` push of the same records in the same run (the floor any durable trail is compared to).
//!
//! `cargo bench -p carevault-store --bench audit_append`; criterion prints time per batch and
//! records per second (throughput is set to the batch size).

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;
use std::sync::Arc;
use std::time::Duration;

use carevault_domain::audit::chain;
use carevault_domain::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::store::{Store, TenantRecord, TenantStatus};
use carevault_store::SqliteStore;
use criterion::{Criterion, Throughput, criterion_group, criterion_main};

const BATCH: usize = 512;

fn record(tenant: TenantId, n: usize) -> AuditRecord {
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: 1_700_000_000_000 + n as i64,
        tenant,
        principal: "client/6f1c2a8e-5d7b-4b8e-9a51-2f0c3d4e5f60".to_owned(),
        session: Some("a1b2c3d4".to_owned()),
        roles: vec!["integration".to_owned()],
        auth_strength: "client-key".to_owned(),
        source: Some("192.0.2.10".to_owned()),
        action: "read".to_owned(),
        resource_type: Some("Patient".to_owned()),
        resource_id: Some(format!("9b2f{n:028}")),
        subjects: vec![format!("9b2f{n:028}")],
        categories: vec!["demographics".to_owned(), "contact".to_owned()],
        purpose: None,
        outcome: Outcome::Success,
        detail: None,
    }
}

fn appends(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store: Arc<dyn Store> = runtime.block_on(async {
        Arc::new(
            SqliteStore::open(&dir.path().join("bench.sqlite"))
                .await
                .unwrap(),
        )
    });
    let tenant = TenantId::generate();
    runtime
        .block_on(store.create_tenant(
            &TenantRecord {
                id: tenant,
                name: "bench".to_owned(),
                status: TenantStatus::Active,
                created_ms: 0,
            },
            &[],
        ))
        .unwrap();
    let batch: Vec<AuditRecord> = (0..BATCH).map(|n| record(tenant, n)).collect();

    let mut group = c.benchmark_group("audit_append");
    group.throughput(Throughput::Elements(BATCH as u64));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    group.bench_function("baseline: Vec push (in memory)", |b| {
        let mut trail: Vec<AuditRecord> = Vec::new();
        b.iter(|| {
            for record in &batch {
                trail.push(black_box(record.clone()));
            }
        });
    });
    group.bench_function("chain only: canonical JSON + SHA-256, no database", |b| {
        b.iter(|| chain::extend(0, chain::GENESIS, black_box(&batch)).unwrap());
    });
    group.bench_function("sqlite: chained append, 512 per commit", |b| {
        b.iter(|| {
            runtime
                .block_on(store.append_audit(black_box(&batch)))
                .unwrap()
        });
    });
    group.finish();

    // Fixed cost of one commit (fsync included), for reading the batched figure.
    let single = vec![record(tenant, 0)];
    let mut group = c.benchmark_group("audit_append_single");
    group.throughput(Throughput::Elements(1));
    group.measurement_time(Duration::from_secs(5));
    group.sample_size(20);
    group.bench_function("sqlite: chained append, 1 per commit", |b| {
        b.iter(|| {
            runtime
                .block_on(store.append_audit(black_box(&single)))
                .unwrap()
        });
    });
    group.finish();
}

criterion_group!(benches, appends);
criterion_main!(benches);
