//! Promise 4, tamper evidence: each tenant's audit records are hash-chained, the server signs
//! checkpoints into files outside the database (and to syslog), and `carevault audit verify`
//! finds every kind of tampering done with raw SQL (a changed field, a changed field with the
//! chain rebuilt, a deleted record, an inserted record, two records swapped, a cut-off tail with
//! the head row moved back) or in a checkpoint file (a forged line), naming tenant and sequence
//! number; an untouched trail verifies clean. `audit export` streams the records.

use std::io::{BufRead, BufReader};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use carevault_domain::audit::chain;
use serde_json::Value;
use sqlx::Row;

use crate::common::{Engine, Fhir, Server, engines, patient};

const SQLITE_TRIGGERS: &str = "CREATE TRIGGER audit_log_no_update BEFORE UPDATE ON audit_log \
     BEGIN SELECT RAISE(ABORT, 'audit records cannot be changed'); END; \
     CREATE TRIGGER audit_log_no_delete BEFORE DELETE ON audit_log \
     BEGIN SELECT RAISE(ABORT, 'audit records cannot be deleted'); END;";

/// The attacker's own connection to the database, past the append-only guards.
enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        match &server.pg {
            None => Raw::Sqlite(
                sqlx::SqlitePool::connect_with(
                    sqlx::sqlite::SqliteConnectOptions::new().filename(server.sqlite_path()),
                )
                .await
                .unwrap_or_else(|e| panic!("{e}")),
            ),
            // The test URL's user is a superuser: row-level security does not apply to it.
            Some(pg) => Raw::Postgres(
                sqlx::PgPool::connect(&pg.url)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
        }
    }

    fn tenant(&self, tenant: &str) -> String {
        match self {
            Raw::Sqlite(_) => format!("X'{}'", tenant.replace('-', "")),
            Raw::Postgres(_) => format!("'{tenant}'::uuid"),
        }
    }

    fn bytes(&self, bytes: &[u8]) -> String {
        match self {
            Raw::Sqlite(_) => format!("X'{}'", hex(bytes)),
            Raw::Postgres(_) => format!("'\\x{}'::bytea", hex(bytes)),
        }
    }

    /// Runs statements with the append-only triggers out of the way (SQLite: dropped and put
    /// back; PostgreSQL: replica mode, which skips ordinary triggers), in one transaction.
    async fn tamper(&self, statements: &str) {
        let script = match self {
            Raw::Sqlite(_) => format!(
                "BEGIN; DROP TRIGGER audit_log_no_update; DROP TRIGGER audit_log_no_delete; \
                 {statements}; {SQLITE_TRIGGERS} COMMIT;"
            ),
            Raw::Postgres(_) => format!(
                "BEGIN; SET LOCAL session_replication_role = replica; {statements}; COMMIT;"
            ),
        };
        let result = match self {
            Raw::Sqlite(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(script.clone()))
                .execute(pool)
                .await
                .map(|_| ()),
            Raw::Postgres(pool) => sqlx::raw_sql(sqlx::AssertSqlSafe(script.clone()))
                .execute(pool)
                .await
                .map(|_| ()),
        };
        result.unwrap_or_else(|e| panic!("{script}: {e}"));
    }

    /// A tenant's rows: (seq, record text, hash).
    async fn rows(&self, tenant: &str) -> Vec<(i64, String, Vec<u8>)> {
        let sql = format!(
            "SELECT seq, record, hash FROM audit_log WHERE tenant_id = {} ORDER BY seq",
            self.tenant(tenant)
        );
        let sql = sqlx::AssertSqlSafe(sql);
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql).fetch_all(pool).await.map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            }),
            Raw::Postgres(pool) => sqlx::query(sql).fetch_all(pool).await.map(|rows| {
                rows.iter()
                    .map(|r| (r.get(0), r.get(1), r.get(2)))
                    .collect()
            }),
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn close(self) {
        match self {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    }
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn text(value: &str) -> String {
    format!("'{}'", value.replace('\'', "''"))
}

fn hash32(bytes: &[u8]) -> [u8; 32] {
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("stored hash is not 32 bytes"))
}

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

/// The breaks reported for one tenant, as (kind, seq).
fn breaks(report: &Value, tenant: &str) -> Vec<(String, i64)> {
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
            )
        })
        .collect()
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
    assert!(report["records"].as_u64().unwrap_or(0) >= 8 * 10);
    let summary = server.cli(&["audit", "verify"]);
    assert!(summary.contains("the audit trail is intact"), "{summary}");

    let raw = Raw::connect(&server).await;

    // A changed field (hashes untouched).
    let t = raw.tenant(&tenant("changed"));
    raw.tamper(&format!(
        "UPDATE audit_log SET record = replace(record, '\"time_ms\":', '\"time_ms\":9') \
         WHERE tenant_id = {t} AND seq = 3"
    ))
    .await;

    // A changed field with every later hash and the head recomputed: only checkpoints see it.
    let rebuilt = tenant("rebuilt");
    let rows = raw.rows(&rebuilt).await;
    let mut previous = hash32(&rows[1].2);
    let mut script = Vec::new();
    let t = raw.tenant(&rebuilt);
    for (seq, record, _) in rows.iter().skip(2) {
        let record = if *seq == 3 {
            record.replace("\"time_ms\":", "\"time_ms\":9")
        } else {
            record.clone()
        };
        let hash = chain::link(&previous, record.as_bytes());
        script.push(format!(
            "UPDATE audit_log SET record = {}, prev_hash = {}, hash = {} \
             WHERE tenant_id = {t} AND seq = {seq}",
            text(&record),
            raw.bytes(&previous),
            raw.bytes(&hash)
        ));
        previous = hash;
    }
    script.push(format!(
        "UPDATE audit_heads SET hash = {} WHERE tenant_id = {t}",
        raw.bytes(&previous)
    ));
    raw.tamper(&script.join("; ")).await;

    // A deleted record.
    let t = raw.tenant(&tenant("deleted"));
    raw.tamper(&format!(
        "DELETE FROM audit_log WHERE tenant_id = {t} AND seq = 4"
    ))
    .await;

    // An inserted record: later rows moved up one, a forged record linked from its predecessor.
    let inserted = tenant("inserted");
    let rows = raw.rows(&inserted).await;
    let forged = rows[3].1.replace("\"seq\":4", "\"seq\":5");
    let forged_hash = chain::link(&hash32(&rows[3].2), forged.as_bytes());
    let t = raw.tenant(&inserted);
    raw.tamper(&format!(
        "UPDATE audit_log SET seq = seq + 1000000 WHERE tenant_id = {t} AND seq > 4; \
         UPDATE audit_log SET seq = seq - 999999 WHERE tenant_id = {t} AND seq > 1000000; \
         INSERT INTO audit_log (tenant_id, seq, time_ms, action, outcome, record, prev_hash, hash) \
           VALUES ({t}, 5, 0, 'read', 'success', {}, {}, {}); \
         UPDATE audit_heads SET seq = seq + 1 WHERE tenant_id = {t}",
        text(&forged),
        raw.bytes(&hash32(&rows[3].2)),
        raw.bytes(&forged_hash)
    ))
    .await;

    // Two records swapped.
    let t = raw.tenant(&tenant("swapped"));
    raw.tamper(&format!(
        "UPDATE audit_log SET seq = -1 WHERE tenant_id = {t} AND seq = 3; \
         UPDATE audit_log SET seq = 3 WHERE tenant_id = {t} AND seq = 4; \
         UPDATE audit_log SET seq = 4 WHERE tenant_id = {t} AND seq = -1"
    ))
    .await;

    // The newest records cut off, and the head row moved back to match.
    let truncated = tenant("truncated");
    let rows = raw.rows(&truncated).await;
    let keep = rows.len() - 3;
    let (keep_seq, _, keep_hash) = &rows[keep - 1];
    let t = raw.tenant(&truncated);
    raw.tamper(&format!(
        "DELETE FROM audit_log WHERE tenant_id = {t} AND seq > {keep_seq}; \
         UPDATE audit_heads SET seq = {keep_seq}, hash = {} WHERE tenant_id = {t}",
        raw.bytes(keep_hash)
    ))
    .await;
    let rows_left = raw.rows(&truncated).await;
    assert_eq!(rows_left.len(), keep);
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
        vec![("content-changed".to_owned(), 3)],
        "{report:#}"
    );
    let rebuilt = kinds("rebuilt");
    assert!(!rebuilt.is_empty(), "{report:#}");
    assert!(
        rebuilt
            .iter()
            .all(|(kind, _)| kind == "checkpoint-mismatch"),
        "{rebuilt:?}"
    );
    let deleted = kinds("deleted");
    assert!(deleted.contains(&("missing".to_owned(), 4)), "{deleted:?}");
    assert!(
        deleted.contains(&("link-broken".to_owned(), 5)),
        "{deleted:?}"
    );
    let inserted = kinds("inserted");
    assert!(
        inserted.contains(&("link-broken".to_owned(), 6)),
        "{inserted:?}"
    );
    assert!(
        inserted.contains(&("wrong-seq".to_owned(), 6)),
        "{inserted:?}"
    );
    let swapped = kinds("swapped");
    assert!(
        swapped.contains(&("wrong-seq".to_owned(), 3)),
        "{swapped:?}"
    );
    assert!(
        swapped.contains(&("link-broken".to_owned(), 3)),
        "{swapped:?}"
    );
    let truncated = kinds("truncated");
    assert!(!truncated.is_empty(), "{report:#}");
    assert!(
        truncated
            .iter()
            .all(|(kind, seq)| kind == "checkpoint-past-end" && *seq > *keep_seq),
        "{truncated:?}"
    );
    let forged = kinds("forged");
    assert_eq!(forged.len(), 1, "{forged:?}");
    assert_eq!(forged[0].0, "checkpoint-invalid");
    assert!(kinds("untouched").is_empty(), "{report:#}");

    // The human-readable report names tenant, sequence and what is wrong.
    let output = server.cli_output(&["audit", "verify"]);
    assert!(!output.status.success());
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        stdout.contains(&format!(
            "BREAK tenant {} seq 3: the record does not match its hash",
            tenant("changed")
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("the newest records were cut off"),
        "{stdout}"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("breaks"));

    // One chain at a time: the untouched tenant verifies clean.
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
