//! Micro-benchmarks of the functions every request runs: sealing and opening bodies, blind-index
//! tokens, JSON parse and validation, search-term extraction, and the durable audit append
//! (against an in-memory `Vec` push of the same records as the floor).
//!
//! `cargo bench -p carevault-bench --bench hot_paths`

#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::hint::black_box;

use carevault_bench::synth;
use carevault_crypto::{DataKey, IndexKey, SecretKey};
use carevault_domain::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::store::Store;
use criterion::{BatchSize, Criterion, Throughput, criterion_group, criterion_main};
use serde_json::Value;

/// A typical Patient and a typical (blood pressure) Observation of the synthetic population,
/// with references made relative as the server stores them.
fn samples() -> (Value, Value) {
    let record = synth::patient(1, 12_345);
    let mut patient = record.entries[0]["resource"].clone();
    patient["id"] = Value::String("6f0c1a2b-0000-4000-8000-000000000001".into());
    let observation = record
        .entries
        .iter()
        .map(|entry| entry["resource"].clone())
        .find(|resource| {
            resource["resourceType"] == "Observation" && resource.get("component").is_some()
        })
        .expect("every patient has a blood pressure");
    let mut observation = relative(observation);
    observation["id"] = Value::String("6f0c1a2b-0000-4000-8000-000000000002".into());
    (patient, observation)
}

fn relative(mut value: Value) -> Value {
    fn walk(value: &mut Value) {
        match value {
            Value::String(text) if text.starts_with("urn:uuid:") => {
                *text = format!("Patient/{}", &text["urn:uuid:".len()..]);
            }
            Value::Array(items) => items.iter_mut().for_each(walk),
            Value::Object(map) => map.values_mut().for_each(walk),
            _ => {}
        }
    }
    walk(&mut value);
    value
}

fn sealing(c: &mut Criterion) {
    let key = DataKey::new(1, SecretKey::generate());
    let (patient, observation) = samples();
    let aad =
        b"carevault/resource/v1\x006f0c1a2b-0000-4000-8000-00000000000a\x00Patient\x00id\x001";
    let mut group = c.benchmark_group("seal");
    for (name, resource) in [("Patient", &patient), ("Observation", &observation)] {
        let plaintext = serde_json::to_vec(resource).unwrap();
        group.throughput(Throughput::Bytes(plaintext.len() as u64));
        group.bench_function(format!("seal {name} ({} B)", plaintext.len()), |b| {
            b.iter(|| key.seal(black_box(aad), black_box(&plaintext)).unwrap())
        });
        let sealed = key.seal(aad, &plaintext).unwrap();
        group.bench_function(format!("open {name} ({} B)", plaintext.len()), |b| {
            b.iter(|| key.open(black_box(aad), black_box(&sealed)).unwrap())
        });
        group.bench_function(format!("open+parse {name}"), |b| {
            b.iter(|| {
                let plain = key.open(black_box(aad), black_box(&sealed)).unwrap();
                serde_json::from_slice::<Value>(&plain).unwrap()
            })
        });
    }
    group.finish();
}

fn blind_index(c: &mut Criterion) {
    let key = IndexKey::new(1, SecretKey::generate());
    c.bench_function("blind token (HMAC-SHA256, 16 B)", |b| {
        b.iter(|| key.blind_token(black_box("family"), black_box("e:smith")))
    });
    let (patient, _) = samples();
    let rt = carevault_fhir::resource_type("Patient").unwrap();
    let entries = carevault_fhir::index_entries(rt, &patient);
    let terms: Vec<(&'static str, String)> = entries
        .iter()
        .filter_map(|entry| match entry {
            carevault_fhir::IndexEntry::Term { param, term } => Some((*param, term.clone())),
            carevault_fhir::IndexEntry::Date { .. } => None,
        })
        .collect();
    c.bench_function(
        &format!("blind tokens of one Patient ({} terms)", terms.len()),
        |b| {
            b.iter(|| {
                terms
                    .iter()
                    .map(|(param, term)| key.blind_token(param, term))
                    .collect::<Vec<_>>()
            })
        },
    );
}

fn parse_and_validate(c: &mut Criterion) {
    let (patient, observation) = samples();
    for (name, resource) in [("Patient", &patient), ("Observation", &observation)] {
        let rt = carevault_fhir::resource_type(name).unwrap();
        let bytes = serde_json::to_vec(resource).unwrap();
        c.bench_function(&format!("parse+validate {name}"), |b| {
            b.iter(|| {
                let value = carevault_fhir::parse_json(black_box(&bytes)).unwrap();
                carevault_fhir::validate(&value, Some(rt)).unwrap();
                value
            })
        });
        c.bench_function(&format!("index_entries {name}"), |b| {
            b.iter(|| carevault_fhir::index_entries(rt, black_box(resource)))
        });
    }
}

fn audit_records(tenant: TenantId, count: usize) -> Vec<AuditRecord> {
    (0..count)
        .map(|number| AuditRecord {
            v: AUDIT_RECORD_VERSION,
            seq: 0,
            time_ms: 1_767_225_600_000 + number as i64,
            tenant,
            principal: "client/2b9e0000-0000-4000-8000-000000000001".into(),
            session: Some("0011223344556677".into()),
            roles: vec!["integration".into()],
            auth_strength: "client-key".into(),
            source: Some("127.0.0.1".into()),
            action: "read".into(),
            resource_type: Some("Patient".into()),
            resource_id: Some(format!("6f0c1a2b-0000-4000-8000-{number:012}")),
            subjects: vec![format!("6f0c1a2b-0000-4000-8000-{number:012}")],
            categories: vec!["contact".into(), "demographics".into()],
            purpose: None,
            outcome: Outcome::Success,
            detail: None,
        })
        .collect()
}

fn audit_append(c: &mut Criterion) {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let store = runtime
        .block_on(carevault_store::SqliteStore::open(
            &dir.path().join("bench.sqlite"),
        ))
        .unwrap();
    let tenant = TenantId::generate();
    let batch = audit_records(tenant, 100);
    let mut group = c.benchmark_group("audit append, batch of 100");
    group.throughput(Throughput::Elements(100));
    group.bench_function("SQLite store (durable commit)", |b| {
        b.iter(|| {
            runtime
                .block_on(store.append_audit(black_box(&batch)))
                .unwrap()
        })
    });
    group.bench_function("in-memory Vec push (baseline)", |b| {
        b.iter_batched_ref(
            || Vec::with_capacity(100),
            |log: &mut Vec<AuditRecord>| {
                for record in &batch {
                    log.push(black_box(record.clone()));
                }
            },
            BatchSize::SmallInput,
        )
    });
    group.finish();
}

criterion_group! {
    name = hot_paths;
    config = Criterion::default()
        .sample_size(30)
        .warm_up_time(std::time::Duration::from_millis(500))
        .measurement_time(std::time::Duration::from_secs(2));
    targets = sealing, blind_index, parse_and_validate, audit_append
}
criterion_main!(hot_paths);
