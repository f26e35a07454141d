//! Promise 4, tamper evidence: each tenant's audit records are hash-chained, the server signs
//! checkpoints into files outside the database (and to syslog), and `carevault audit verify`
//! finds every kind of tampering done in the database by its owner, past the append-only
//! guards (a changed field, a changed field with the chain rebuilt, a deleted record, an
//! inserted record, two records swapped, a cut-off tail with the head row moved back, a flipped
//! byte in a stored segment) or in a checkpoint file (a forged line), naming tenant and sequence
//! number; an untouched trail verifies clean. `audit export` streams the records.
//!
//! Records are stored in segments, one per commit (`carevault_store::audit_segment`): the
//! requests here come one at a time, so most segments hold one record, while a transaction
//! Bundle stores its three in one body. The attacks are written against the opened segments,
//! whatever their layout; some aim inside the Bundle's body, others across segment boundaries.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Server, engines, patient};

mod attacker;

use attacker::*;

/// A stand-in syslog collector: every line received over TCP.
fn syslog_collector() -> (String, Arc<Mutex<Vec<String>>>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap_or_else(|e| panic!("{e}"));
    let address = listener
        .local_addr()
        .unwrap_or_else(|e| panic!("{e}"))
        .to_string();
    let lines = Arc::new(Mutex::new(Vec::new()));
    let sink = lines.clone();
    std::thread::spawn(move || {
        for stream in listener.incoming().flatten() {
            let sink = sink.clone();
            std::thread::spawn(move || {
                for line in BufReader::new(stream).lines().map_while(Result::ok) {
                    sink.lock().unwrap_or_else(|e| e.into_inner()).push(line);
                }
            });
        }
    });
    (address, lines)
}

fn checkpoint_files(dir: &Path, tenant: &str) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir.join(tenant))
        .map(|entries| entries.flatten().map(|e| e.path()).collect())
        .unwrap_or_default();
    files.sort();
    files
}

/// Runs `audit verify --json` (plus `extra`); returns (exit success, report).
fn verify(server: &Server, extra: &[&str]) -> (bool, Value) {
    let mut args = vec!["audit", "verify", "--json"];
    args.extend_from_slice(extra);
    let output = server.cli_output(&args);
    let stdout = String::from_utf8_lossy(&output.stdout);
    let report = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "verify printed no JSON ({e}): {stdout}\n{}",
            String::from_utf8_lossy(&output.stderr)
        )
    });
    (output.status.success(), report)
}

/// The breaks reported for one tenant, as (kind, seq, last seq).
fn breaks(report: &Value, tenant: &str) -> Vec<(String, i64, i64)> {
    report["tenants"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|t| t["tenant"] == tenant)
        .flat_map(|t| t["breaks"].as_array().cloned().unwrap_or_default())
        .map(|b| {
            (
                b["kind"].as_str().unwrap_or_default().to_owned(),
                b["seq"].as_i64().unwrap_or(-1),
                b["last_seq"].as_i64().unwrap_or(-1),
            )
        })
        .collect()
}

fn found(kind: &str, seq: i64, last_seq: i64) -> (String, i64, i64) {
    (kind.to_owned(), seq, last_seq)
}

#[tokio::test]
async fn verify_finds_every_kind_of_tampering_and_passes_an_untouched_trail() {
    for engine in engines() {
        tamper_cases(engine).await;
    }
}

async fn tamper_cases(engine: Engine) {
    let (syslog, received) = syslog_collector();
    let mut server = Server::init(engine);
    server.edit_config(|config| {
        config.replace(
            "[audit]\ncheckpoint_interval_seconds = 60",
            &format!("[audit]\nsyslog_tcp = \"{syslog}\"\ncheckpoint_interval_seconds = 1"),
        )
    });
    server.spawn();

    let names = [
        "changed",
        "rebuilt",
        "deleted",
        "inserted",
        "swapped",
        "truncated",
        "forged",
        "damaged",
        "untouched",
    ];
    let mut tenants = Vec::new();
    for name in names {
        let (tenant, client) = server.tenant_with_client(&format!("Audit {name}")).await;
        let fhir = Fhir::new(&server, &client);
        for n in 0..4 {
            let id = fhir
                .create(&patient(
                    "Chain",
                    "Cara",
                    "9434765919",
                    &format!("195{n}-01-01"),
                ))
                .await;
            assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
        }
        // One commit of three records (one segment), and a read after it.
        let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
            {"request": {"method": "POST", "url": "Patient"},
             "resource": patient("Chain", "Cleo", "9434765870", "1960-01-01")},
            {"request": {"method": "POST", "url": "Patient"},
             "resource": patient("Chain", "Cora", "1745438912", "1961-01-01")},
            {"request": {"method": "POST", "url": "Patient"},
             "resource": patient("Chain", "Cody", "9434765919", "1962-01-01")}
        ]});
        let reply = fhir.post("", &bundle).await;
        assert_eq!(reply.status, 200, "{}", reply.body);
        let id = reply.body["entry"][0]["resource"]["id"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
        tenants.push(tenant);
    }
    let tenant = |name: &str| -> String {
        names
            .iter()
            .position(|n| *n == name)
            .map(|i| tenants[i].clone())
            .unwrap_or_default()
    };

    // The running server checkpoints on its own, to files and to syslog.
    let dir = server.data_dir().join("checkpoints");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let in_files = tenants
            .iter()
            .all(|t| !checkpoint_files(&dir, t).is_empty());
        let in_syslog = received
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .iter()
            .any(|line| line.contains(&tenant("untouched")));
        if in_files && in_syslog {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoints from the server in time"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    {
        let lines = received.lock().unwrap_or_else(|e| e.into_inner());
        let line = lines.first().cloned().unwrap_or_default();
        assert!(line.starts_with("<110>1 "), "{line}");
        assert!(line.contains(" carevault ") && line.contains(" audit-checkpoint - {"));
        assert!(line.contains("\"signature\":"), "{line}");
    }
    server.stop();
    // Pin every head as it stands (the server's last pass did not run: it was killed).
    let signed = server.cli(&["audit", "checkpoint"]);
    assert!(signed.contains("checkpoints written"), "{signed}");

    let (clean, report) = verify(&server, &[]);
    assert!(clean, "an untouched trail must verify: {report:#}");
    assert_eq!(report["breaks"], 0);
    assert!(report["records"].as_u64().unwrap_or(0) >= names.len() as u64 * 15);
    let summary = server.cli(&["audit", "verify"]);
    assert!(summary.contains("the audit trail is intact"), "{summary}");

    let raw = Raw::connect(&server).await;

    // A changed field inside the Bundle's body, its stored hash kept.
    let before = raw.trail(&tenant("changed")).await;
    let changed = before.bundle().first_seq + 1;
    let mut after = before.clone();
    after.change_field(changed);
    raw.rewrite(&tenant("changed"), &before, &after).await;

    // A changed field with every later hash, prev_hash and the head recomputed, across segment
    // boundaries and through the Bundle's body: only the checkpoints see it.
    let before = raw.trail(&tenant("rebuilt")).await;
    let mut after = before.clone();
    after.change_field(3);
    after.rebuild_from(3);
    raw.rewrite(&tenant("rebuilt"), &before, &after).await;

    // A deleted record, from the middle of the Bundle's body.
    let before = raw.trail(&tenant("deleted")).await;
    let deleted = before.bundle().first_seq + 1;
    let mut after = before.clone();
    after.delete(deleted);
    raw.rewrite(&tenant("deleted"), &before, &after).await;

    // An inserted record, spliced into the Bundle's body; later records move up one.
    let before = raw.trail(&tenant("inserted")).await;
    let inserted = before.bundle().first_seq + 1;
    let mut after = before.clone();
    after.insert(inserted);
    raw.rewrite(&tenant("inserted"), &before, &after).await;

    // Two records swapped, each stored alone in its segment.
    let before = raw.trail(&tenant("swapped")).await;
    assert_ne!(
        before.position(3).0,
        before.position(4).0,
        "{}",
        before.layout()
    );
    let mut after = before.clone();
    after.swap(3, 4);
    raw.rewrite(&tenant("swapped"), &before, &after).await;

    // The newest records cut off, and the head row moved back to match.
    let before = raw.trail(&tenant("truncated")).await;
    let mut after = before.clone();
    let kept = after.truncate(3);
    raw.rewrite(&tenant("truncated"), &before, &after).await;

    // Bits flipped in stored bodies, as they are: one that leaves the Bundle's body unreadable,
    // and one that changes a character of a record stored alone. (zstd frames carry no
    // checksum here, so a flip may also open cleanly into the same records, or into another
    // binary time only, which no chain hash covers: such flips are passed over.)
    let damaged = tenant("damaged");
    let trail = raw.trail(&damaged).await;
    let bundle = trail.bundle().clone();
    let rows = raw.segment_rows(&damaged).await;
    let body_at = |first_seq: i64| {
        rows.iter()
            .find(|row| row.0 == first_seq)
            .map(|row| row.3.clone())
            .unwrap_or_default()
    };
    let unreadable = flip_bit(&body_at(bundle.first_seq), |opened| opened.is_err());
    raw.set_body(&damaged, bundle.first_seq, &unreadable).await;
    let garbled = 5;
    let alone = trail
        .segment(garbled)
        .filter(|segment| segment.records.len() == 1)
        .unwrap_or_else(|| panic!("{garbled} is not stored alone: {}", trail.layout()))
        .records[0]
        .clone();
    let changed_text = flip_bit(&body_at(garbled), |opened| {
        opened.is_ok_and(|records| {
            records.len() == 1 && records[0].hash == alone.hash && records[0].text != alone.text
        })
    });
    raw.set_body(&damaged, garbled, &changed_text).await;

    // Every guard is back in place after the attacks.
    for statement in [
        "UPDATE audit_segments SET body = body".to_owned(),
        "DELETE FROM audit_segments".to_owned(),
        format!("DELETE FROM {}", raw.keys_table()),
    ] {
        assert!(raw.execute(&statement).await.is_err(), "{statement} passed");
    }
    raw.close().await;

    // A forged checkpoint: the last line of a checkpoint file edited to claim another state.
    let forged_tenant = tenant("forged");
    let file = checkpoint_files(&dir, &forged_tenant)
        .pop()
        .unwrap_or_else(|| panic!("no checkpoint file"));
    let content = std::fs::read_to_string(&file).unwrap_or_default();
    let last = content.lines().last().unwrap_or_default().to_owned();
    let checkpoint: Value = serde_json::from_str(&last).unwrap_or(Value::Null);
    let seq = checkpoint["seq"].as_i64().unwrap_or_default();
    let edited = last.replace(&format!("\"seq\":{seq}"), &format!("\"seq\":{}", seq - 1));
    assert_ne!(edited, last);
    std::fs::write(&file, content.replace(&last, &edited)).unwrap_or_else(|e| panic!("{e}"));

    let (clean, report) = verify(&server, &[]);
    assert!(!clean, "tampering must fail verification");
    let kinds = |name: &str| breaks(&report, &tenant(name));

    assert_eq!(
        kinds("changed"),
        vec![found("content-changed", changed, changed)],
        "{report:#}"
    );
    let rebuilt = kinds("rebuilt");
    assert!(!rebuilt.is_empty(), "{report:#}");
    assert!(
        rebuilt
            .iter()
            .all(|(kind, _, _)| kind == "checkpoint-mismatch"),
        "{rebuilt:?}"
    );
    // The record is missing, and the one after it no longer links (a checkpoint on the missing
    // record may say so too).
    let deleted_found = kinds("deleted");
    assert!(
        deleted_found.contains(&found("missing", deleted, deleted)),
        "{deleted_found:?}"
    );
    assert!(
        deleted_found.contains(&found("link-broken", deleted + 1, deleted + 1)),
        "{deleted_found:?}"
    );
    assert!(
        deleted_found
            .iter()
            .all(|(_, seq, _)| *seq == deleted || *seq == deleted + 1),
        "{deleted_found:?}"
    );
    // The forged record links from its predecessor; the record after it, its old number in
    // its text, no longer hashes with the forged one before it in the body. Nothing before.
    let inserted_found = kinds("inserted");
    assert!(
        inserted_found
            .iter()
            .any(|(kind, seq, _)| kind == "wrong-seq" && *seq == inserted + 1),
        "{inserted_found:?}"
    );
    assert!(
        inserted_found.contains(&found("content-changed", inserted + 1, inserted + 1)),
        "{inserted_found:?}"
    );
    assert!(
        inserted_found.iter().all(|(_, seq, _)| *seq >= inserted),
        "{inserted_found:?}"
    );
    // Each record names the other's number and no longer hashes from the one before it; the
    // next segment's stored prev_hash no longer follows either.
    let swapped = kinds("swapped");
    assert!(swapped.contains(&found("wrong-seq", 3, 4)), "{swapped:?}");
    assert!(
        swapped
            .iter()
            .any(|(kind, seq, _)| kind == "content-changed" && *seq == 3),
        "{swapped:?}"
    );
    assert!(
        swapped.iter().all(|(_, seq, _)| (3..=5).contains(seq)),
        "{swapped:?}"
    );
    let truncated = kinds("truncated");
    assert!(!truncated.is_empty(), "{report:#}");
    assert!(
        truncated
            .iter()
            .all(|(kind, seq, _)| kind == "checkpoint-past-end" && *seq > kept),
        "{truncated:?}"
    );
    let forged = kinds("forged");
    assert_eq!(forged.len(), 1, "{forged:?}");
    assert_eq!(forged[0].0, "checkpoint-invalid");
    // The unreadable body is one break over its records, and the walk goes on past it; the
    // garbled record is changed. A checkpoint inside the unreadable records cannot be checked.
    let damaged_found = kinds("damaged");
    let (first, last) = (bundle.first_seq, bundle.last_seq());
    assert!(
        damaged_found.contains(&found("unreadable", first, last)),
        "{damaged_found:?}"
    );
    assert!(
        damaged_found.contains(&found("content-changed", garbled, garbled)),
        "{damaged_found:?}"
    );
    assert!(
        damaged_found
            .iter()
            .all(|(_, seq, _)| *seq == garbled || (first..=last).contains(seq)),
        "{damaged_found:?}"
    );
    assert!(kinds("untouched").is_empty(), "{report:#}");

    // The human-readable report names tenant, sequence and what is wrong.
    let output = server.cli_output(&["audit", "verify"]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "BREAK tenant {} seq {changed}: the record does not match its hash",
            tenant("changed")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains(&format!("BREAK tenant {damaged} seq {first}-{last}: ")),
        "{stdout}"
    );
    assert!(
        stdout.contains("the newest records were cut off"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("breaks"));

    // One chain at a time: the damaged tenant alone fails, the untouched one verifies clean.
    let (clean, report) = verify(&server, &["--tenant", &damaged]);
    assert!(!clean, "{report:#}");
    let (clean, report) = verify(&server, &["--tenant", &tenant("untouched")]);
    assert!(clean, "{report:#}");
    assert_eq!(report["tenants"].as_array().map(Vec::len), Some(1));
}

#[tokio::test]
async fn export_streams_records_as_json_lines_within_a_time_window() {
    for engine in engines() {
        let server = Server::start(engine).await;
        let (tenant, client) = server.tenant_with_client("Export").await;
        let (other, _) = server.tenant_with_client("Export other").await;
        let fhir = Fhir::new(&server, &client);
        let id = fhir
            .create(&patient("Export", "Eve", "9434765919", "1960-01-01"))
            .await;
        assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);

        let out = server.cli(&["audit", "export", "--tenant", &tenant, "--format", "ndjson"]);
        let records: Vec<Value> = out
            .lines()
            .map(|line| serde_json::from_str(line).unwrap_or_else(|e| panic!("{e}: {line}")))
            .collect();
        assert!(records.len() >= 4, "{out}");
        assert!(records.iter().all(|r| r["tenant"] == tenant.as_str()));
        let seqs: Vec<i64> = records.iter().filter_map(|r| r["seq"].as_i64()).collect();
        assert_eq!(seqs, (1..=records.len() as i64).collect::<Vec<_>>());
        assert!(
            records
                .iter()
                .any(|r| r["action"] == "read" && r["resource_id"] == id.as_str())
        );
        // The export itself is recorded in the chain it read.
        assert!(records.iter().any(|r| r["action"] == "audit.export"));
        assert!(!out.contains(&other));

        // All tenants, to a file; a window in the future holds nothing.
        let file = server.dir.path().join("export.jsonl");
        server.cli(&[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--output",
            file.to_str().unwrap_or_default(),
        ]);
        let all = std::fs::read_to_string(&file).unwrap_or_default();
        assert!(all.contains(&tenant) && all.contains(&other));
        let future = server.cli(&[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--since",
            "2999-01-01T00:00:00Z",
        ]);
        assert!(future.trim().is_empty(), "{future}");
        let refused = server.cli_output(&[
            "audit",
            "export",
            "--format",
            "jsonl",
            "--since",
            "yesterday",
        ]);
        assert!(!refused.status.success());
        assert!(String::from_utf8_lossy(&refused.stderr).contains("RFC 3339"));

        // Exports are chained like everything else: the trail still verifies.
        let (clean, report) = verify(&server, &[]);
        assert!(clean, "{report:#}");
    }
}
