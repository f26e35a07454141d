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

use carevault_domain::audit::chain::{self, ChainHash};
use carevault_store::audit_segment::{self, DamagedSegment, SegmentRecord};
use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Server, engines, patient};

/// The append-only guards the attacker sets aside for the length of one transaction, as
/// (table, trigger). Inserting needs no guard out of the way; changing and deleting do.
const GUARDS: [(&str, &str); 3] = [
    ("audit_segments", "audit_segments_no_update"),
    ("audit_segments", "audit_segments_no_delete"),
    ("audit_keys", "audit_keys_no_delete"),
];

/// The attacker's own connection to the database, as its owner.
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
            // The test URL's user is the schema owner and a superuser: row-level security
            // does not apply to it.
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

    async fn execute(&self, script: &str) -> Result<(), sqlx::Error> {
        let script = sqlx::AssertSqlSafe(script.to_owned());
        match self {
            Raw::Sqlite(pool) => sqlx::raw_sql(script).execute(pool).await.map(|_| ()),
            Raw::Postgres(pool) => sqlx::raw_sql(script).execute(pool).await.map(|_| ()),
        }
    }

    /// Runs `statements` in one transaction with the append-only guards out of the way for its
    /// length, as the owner can: SQLite drops the triggers and creates them again exactly as
    /// the schema holds them; PostgreSQL disables and enables them.
    async fn tamper(&self, statements: &[String]) {
        let mut set_aside = Vec::new();
        let mut put_back = Vec::new();
        for (table, trigger) in GUARDS {
            match self {
                Raw::Sqlite(pool) => {
                    let definition: String = sqlx::query_scalar(
                        "SELECT sql FROM sqlite_master WHERE type = 'trigger' AND name = ?",
                    )
                    .bind(trigger)
                    .fetch_one(pool)
                    .await
                    .unwrap_or_else(|e| panic!("{trigger}: {e}"));
                    set_aside.push(format!("DROP TRIGGER {trigger}"));
                    put_back.push(definition);
                }
                Raw::Postgres(_) => {
                    set_aside.push(format!("ALTER TABLE {table} DISABLE TRIGGER {trigger}"));
                    put_back.push(format!("ALTER TABLE {table} ENABLE TRIGGER {trigger}"));
                }
            }
        }
        let script = std::iter::once("BEGIN".to_owned())
            .chain(set_aside)
            .chain(statements.iter().cloned())
            .chain(put_back)
            .chain(std::iter::once("COMMIT".to_owned()))
            .collect::<Vec<_>>()
            .join(";\n")
            + ";";
        self.execute(&script)
            .await
            .unwrap_or_else(|e| panic!("{script}: {e}"));
    }

    /// A tenant's segment rows as stored: (first_seq, last_seq, prev_hash, body).
    async fn segment_rows(&self, tenant: &str) -> Vec<(i64, i64, Vec<u8>, Vec<u8>)> {
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT first_seq, last_seq, prev_hash, body FROM audit_segments \
             WHERE tenant_id = {} ORDER BY first_seq",
            self.tenant(tenant)
        ));
        match self {
            Raw::Sqlite(pool) => sqlx::query_as(sql).fetch_all(pool).await,
            Raw::Postgres(pool) => sqlx::query_as(sql).fetch_all(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    /// A tenant's trail as stored: its segments, opened, and its head row.
    async fn trail(&self, tenant: &str) -> Trail {
        let segments = self
            .segment_rows(tenant)
            .await
            .into_iter()
            .map(|(first_seq, last_seq, prev_hash, body)| {
                let records =
                    audit_segment::decode(&body).unwrap_or_else(|e| panic!("{first_seq}: {e}"));
                assert_eq!(records.len() as i64, last_seq - first_seq + 1);
                Segment {
                    first_seq,
                    prev_hash: hash32(&prev_hash),
                    records,
                }
            })
            .collect();
        let sql = sqlx::AssertSqlSafe(format!(
            "SELECT seq, hash FROM audit_heads WHERE tenant_id = {}",
            self.tenant(tenant)
        ));
        let (head_seq, head_hash): (i64, Vec<u8>) = match self {
            Raw::Sqlite(pool) => sqlx::query_as(sql).fetch_one(pool).await,
            Raw::Postgres(pool) => sqlx::query_as(sql).fetch_one(pool).await,
        }
        .unwrap_or_else(|e| panic!("{e}"));
        Trail {
            segments,
            head_seq,
            head_hash: hash32(&head_hash),
        }
    }

    /// Makes a tenant's stored trail `after` (read as `before`): segments that are gone are
    /// deleted with their search keys, changed ones rewritten in place, new ones inserted, and
    /// the head row moved; then checks that the database holds exactly `after`.
    async fn rewrite(&self, tenant: &str, before: &Trail, after: &Trail) {
        let t = self.tenant(tenant);
        let mut statements = Vec::new();
        for gone in before
            .segments
            .iter()
            .filter(|old| after.segment(old.first_seq).is_none())
        {
            for table in ["audit_keys", "audit_segments"] {
                statements.push(format!(
                    "DELETE FROM {table} WHERE tenant_id = {t} AND first_seq = {}",
                    gone.first_seq
                ));
            }
        }
        for segment in &after.segments {
            let body = self.bytes(&segment.body());
            let prev_hash = self.bytes(&segment.prev_hash);
            let (min_time, max_time) = segment.time_span();
            match before.segment(segment.first_seq) {
                Some(old) if old == segment => {}
                Some(_) => statements.push(format!(
                    "UPDATE audit_segments SET last_seq = {}, min_time_ms = {min_time}, \
                     max_time_ms = {max_time}, prev_hash = {prev_hash}, body = {body} \
                     WHERE tenant_id = {t} AND first_seq = {}",
                    segment.last_seq(),
                    segment.first_seq
                )),
                None => statements.push(format!(
                    "INSERT INTO audit_segments (tenant_id, first_seq, last_seq, min_time_ms, \
                     max_time_ms, prev_hash, body) VALUES ({t}, {}, {}, {min_time}, {max_time}, \
                     {prev_hash}, {body})",
                    segment.first_seq,
                    segment.last_seq()
                )),
            }
        }
        if (after.head_seq, after.head_hash) != (before.head_seq, before.head_hash) {
            statements.push(format!(
                "UPDATE audit_heads SET seq = {}, hash = {} WHERE tenant_id = {t}",
                after.head_seq,
                self.bytes(&after.head_hash)
            ));
        }
        assert!(!statements.is_empty(), "the attack changed nothing");
        self.tamper(&statements).await;
        assert_eq!(&self.trail(tenant).await, after);
    }

    /// Overwrites the stored body of the segment starting at `first_seq` with `body` as it is.
    async fn set_body(&self, tenant: &str, first_seq: i64, body: &[u8]) {
        self.tamper(&[format!(
            "UPDATE audit_segments SET body = {} WHERE tenant_id = {} AND first_seq = {first_seq}",
            self.bytes(body),
            self.tenant(tenant)
        )])
        .await;
    }

    async fn close(self) {
        match self {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    }
}

/// One stored segment, opened: the chain hash before its first record, and its records (the
/// first numbered `first_seq`, the others after it without gaps).
#[derive(Clone, PartialEq, Debug)]
struct Segment {
    first_seq: i64,
    prev_hash: ChainHash,
    records: Vec<SegmentRecord>,
}

impl Segment {
    fn last_seq(&self) -> i64 {
        self.first_seq + self.records.len() as i64 - 1
    }

    fn body(&self) -> Vec<u8> {
        audit_segment::encode(&self.records).unwrap_or_else(|e| panic!("{e}"))
    }

    fn time_span(&self) -> (i64, i64) {
        let times = self.records.iter().map(|record| record.time_ms);
        (
            times.clone().min().unwrap_or_default(),
            times.max().unwrap_or_default(),
        )
    }
}

/// A tenant's stored trail as the attacker sees it: its segments in order and its head row.
#[derive(Clone, PartialEq, Debug)]
struct Trail {
    segments: Vec<Segment>,
    head_seq: i64,
    head_hash: ChainHash,
}

impl Trail {
    fn segment(&self, first_seq: i64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|segment| segment.first_seq == first_seq)
    }

    /// Where record `seq` is stored: (segment index, index in its body).
    fn position(&self, seq: i64) -> (usize, usize) {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, segment)| segment.first_seq <= seq && seq <= segment.last_seq())
            .map(|(index, segment)| (index, (seq - segment.first_seq) as usize))
            .unwrap_or_else(|| panic!("no stored record {seq} in {}", self.layout()))
    }

    fn record(&self, seq: i64) -> &SegmentRecord {
        let (segment, index) = self.position(seq);
        &self.segments[segment].records[index]
    }

    fn record_mut(&mut self, seq: i64) -> &mut SegmentRecord {
        let (segment, index) = self.position(seq);
        &mut self.segments[segment].records[index]
    }

    /// The stored chain hash before record `seq`.
    fn hash_before(&self, seq: i64) -> ChainHash {
        match self.position(seq) {
            (segment, 0) => self.segments[segment].prev_hash,
            (segment, index) => self.segments[segment].records[index - 1].hash,
        }
    }

    fn last_seq(&self) -> i64 {
        self.segments.last().map_or(0, Segment::last_seq)
    }

    /// The transaction Bundle's segment: the one holding more than one record.
    fn bundle(&self) -> &Segment {
        let mut shared = self.segments.iter().filter(|s| s.records.len() > 1);
        let bundle = shared
            .next()
            .unwrap_or_else(|| panic!("no segment of several records in {}", self.layout()));
        assert!(shared.next().is_none(), "{}", self.layout());
        bundle
    }

    /// The segments' sequence numbers, for messages.
    fn layout(&self) -> String {
        self.segments
            .iter()
            .map(|s| format!("{}-{}", s.first_seq, s.last_seq()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Record `seq` with another authentication strength in its text (still a valid record),
    /// its stored hash kept.
    fn change_field(&mut self, seq: i64) {
        let record = self.record_mut(seq);
        let changed =
            record
                .text
                .replacen("\"auth_strength\":\"", "\"auth_strength\":\"forged-", 1);
        assert_ne!(changed, record.text);
        record.text = changed;
    }

    /// Every hash from record `seq` on computed again, each segment's `prev_hash` and the head
    /// with them: the chain links cleanly over whatever the records now say.
    fn rebuild_from(&mut self, seq: i64) {
        let mut running = self.hash_before(seq);
        for segment in &mut self.segments {
            if segment.first_seq > seq {
                segment.prev_hash = running;
            }
            let first = segment.first_seq;
            for (index, record) in segment.records.iter_mut().enumerate() {
                if first + index as i64 >= seq {
                    record.hash = chain::link(&running, record.text.as_bytes());
                    running = record.hash;
                }
            }
        }
        self.head_hash = running;
    }

    /// Record `seq` taken out and nothing else moved: its segment is cut around it, and the
    /// part after it (if any) keeps the hash before it as stored (the removed record's).
    fn delete(&mut self, seq: i64) {
        let (at, index) = self.position(seq);
        let segment = self.segments.remove(at);
        let removed = segment.records[index].hash;
        let mut parts = Vec::new();
        if index > 0 {
            parts.push(Segment {
                records: segment.records[..index].to_vec(),
                ..segment.clone()
            });
        }
        if index + 1 < segment.records.len() {
            parts.push(Segment {
                first_seq: seq + 1,
                prev_hash: removed,
                records: segment.records[index + 1..].to_vec(),
            });
        }
        self.segments.splice(at..at, parts);
    }

    /// A forged record spliced in at `seq` (a copy of the record before it, renumbered and
    /// linked from its hash) in the body that held `seq`; every later record and the head move
    /// up one.
    fn insert(&mut self, seq: i64) {
        let previous = self.record(seq - 1).clone();
        let text = previous.text.replacen(
            &format!("\"seq\":{},", seq - 1),
            &format!("\"seq\":{seq},"),
            1,
        );
        assert_ne!(text, previous.text);
        let forged = SegmentRecord {
            hash: chain::link(&previous.hash, text.as_bytes()),
            text,
            time_ms: previous.time_ms,
        };
        let (at, index) = self.position(seq);
        self.segments[at].records.insert(index, forged);
        for later in &mut self.segments[at + 1..] {
            later.first_seq += 1;
        }
        self.head_seq += 1;
    }

    /// Records `a` and `b` trade places, each with its stored time and hash.
    fn swap(&mut self, a: i64, b: i64) {
        let first = self.record(a).clone();
        let second = std::mem::replace(self.record_mut(b), first);
        *self.record_mut(a) = second;
    }

    /// The newest segments cut off until at least `count` records are gone, and the head moved
    /// back onto the last record left; returns its sequence number.
    fn truncate(&mut self, count: i64) -> i64 {
        let end = self.last_seq();
        while end - self.last_seq() < count {
            self.segments.pop();
        }
        self.head_seq = self.last_seq();
        self.head_hash = self.record(self.head_seq).hash;
        self.head_seq
    }
}

/// `body` with one bit flipped: the first flip, from the middle of the body on, after which
/// the body opens (or fails to) the way `wanted` asks.
fn flip_bit(
    body: &[u8],
    wanted: impl Fn(Result<Vec<SegmentRecord>, DamagedSegment>) -> bool,
) -> Vec<u8> {
    (body.len() / 2..body.len())
        .flat_map(|index| (0..8).map(move |bit| (index, bit)))
        .map(|(index, bit)| {
            let mut flipped = body.to_vec();
            flipped[index] ^= 1 << bit;
            flipped
        })
        .find(|flipped| wanted(audit_segment::decode(flipped)))
        .unwrap_or_else(|| panic!("no such flip in {} bytes", body.len()))
}

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
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
        "UPDATE audit_segments SET body = body",
        "DELETE FROM audit_segments",
        "DELETE FROM audit_keys",
    ] {
        assert!(raw.execute(statement).await.is_err(), "{statement} passed");
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
