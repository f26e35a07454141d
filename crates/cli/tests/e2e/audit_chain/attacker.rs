//! The attacker's tools for the tamper tests: the database under the server opened as its
//! owner, the stored segments decoded, edited past the append-only guards and written back.

use carevault_domain::audit::chain::{self, ChainHash};
use carevault_store::audit_segment::{self, DamagedSegment, SegmentRecord};

use crate::common::Server;

/// The append-only guards the attacker sets aside for the length of one transaction, as
/// (table, trigger). Inserting needs no guard out of the way; changing and deleting do.
/// The search keys' table is the engine's: a row per key on SQLite, an array per segment on
/// PostgreSQL.
const SQLITE_GUARDS: &[(&str, &str)] = &[
    ("audit_segments", "audit_segments_no_update"),
    ("audit_segments", "audit_segments_no_delete"),
    ("audit_keys", "audit_keys_no_delete"),
];
const POSTGRES_GUARDS: &[(&str, &str)] = &[
    ("audit_segments", "audit_segments_no_update"),
    ("audit_segments", "audit_segments_no_delete"),
    ("audit_segment_keys", "audit_segment_keys_no_delete"),
];

/// The attacker's own connection to the database, as its owner.
pub(crate) enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    pub(crate) async fn connect(server: &Server) -> Raw {
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

    pub(crate) fn tenant(&self, tenant: &str) -> String {
        match self {
            Raw::Sqlite(_) => format!("X'{}'", tenant.replace('-', "")),
            Raw::Postgres(_) => format!("'{tenant}'::uuid"),
        }
    }

    pub(crate) fn bytes(&self, bytes: &[u8]) -> String {
        match self {
            Raw::Sqlite(_) => format!("X'{}'", hex(bytes)),
            Raw::Postgres(_) => format!("'\\x{}'::bytea", hex(bytes)),
        }
    }

    /// The table of the trail's search keys.
    pub(crate) fn keys_table(&self) -> &'static str {
        match self {
            Raw::Sqlite(_) => "audit_keys",
            Raw::Postgres(_) => "audit_segment_keys",
        }
    }

    pub(crate) async fn execute(&self, script: &str) -> Result<(), sqlx::Error> {
        let script = sqlx::AssertSqlSafe(script.to_owned());
        match self {
            Raw::Sqlite(pool) => sqlx::raw_sql(script).execute(pool).await.map(|_| ()),
            Raw::Postgres(pool) => sqlx::raw_sql(script).execute(pool).await.map(|_| ()),
        }
    }

    /// Runs `statements` in one transaction with the append-only guards out of the way for its
    /// length, as the owner can: SQLite drops the triggers and creates them again exactly as
    /// the schema holds them; PostgreSQL disables and enables them.
    pub(crate) async fn tamper(&self, statements: &[String]) {
        let mut set_aside = Vec::new();
        let mut put_back = Vec::new();
        let guards = match self {
            Raw::Sqlite(_) => SQLITE_GUARDS,
            Raw::Postgres(_) => POSTGRES_GUARDS,
        };
        for (table, trigger) in guards {
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
    pub(crate) async fn segment_rows(&self, tenant: &str) -> Vec<(i64, i64, Vec<u8>, Vec<u8>)> {
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
    pub(crate) async fn trail(&self, tenant: &str) -> Trail {
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
    pub(crate) async fn rewrite(&self, tenant: &str, before: &Trail, after: &Trail) {
        let t = self.tenant(tenant);
        let mut statements = Vec::new();
        for gone in before
            .segments
            .iter()
            .filter(|old| after.segment(old.first_seq).is_none())
        {
            for table in [self.keys_table(), "audit_segments"] {
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
    pub(crate) async fn set_body(&self, tenant: &str, first_seq: i64, body: &[u8]) {
        self.tamper(&[format!(
            "UPDATE audit_segments SET body = {} WHERE tenant_id = {} AND first_seq = {first_seq}",
            self.bytes(body),
            self.tenant(tenant)
        )])
        .await;
    }

    pub(crate) async fn close(self) {
        match self {
            Raw::Sqlite(pool) => pool.close().await,
            Raw::Postgres(pool) => pool.close().await,
        }
    }
}

/// One stored segment, opened: the chain hash before its first record, and its records (the
/// first numbered `first_seq`, the others after it without gaps).
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Segment {
    pub(crate) first_seq: i64,
    pub(crate) prev_hash: ChainHash,
    pub(crate) records: Vec<SegmentRecord>,
}

impl Segment {
    pub(crate) fn last_seq(&self) -> i64 {
        self.first_seq + self.records.len() as i64 - 1
    }

    pub(crate) fn body(&self) -> Vec<u8> {
        audit_segment::encode(&self.records).unwrap_or_else(|e| panic!("{e}"))
    }

    pub(crate) fn time_span(&self) -> (i64, i64) {
        let times = self.records.iter().map(|record| record.time_ms);
        (
            times.clone().min().unwrap_or_default(),
            times.max().unwrap_or_default(),
        )
    }
}

/// A tenant's stored trail as the attacker sees it: its segments in order and its head row.
#[derive(Clone, PartialEq, Debug)]
pub(crate) struct Trail {
    pub(crate) segments: Vec<Segment>,
    pub(crate) head_seq: i64,
    pub(crate) head_hash: ChainHash,
}

impl Trail {
    pub(crate) fn segment(&self, first_seq: i64) -> Option<&Segment> {
        self.segments
            .iter()
            .find(|segment| segment.first_seq == first_seq)
    }

    /// Where record `seq` is stored: (segment index, index in its body).
    pub(crate) fn position(&self, seq: i64) -> (usize, usize) {
        self.segments
            .iter()
            .enumerate()
            .find(|(_, segment)| segment.first_seq <= seq && seq <= segment.last_seq())
            .map(|(index, segment)| (index, (seq - segment.first_seq) as usize))
            .unwrap_or_else(|| panic!("no stored record {seq} in {}", self.layout()))
    }

    pub(crate) fn record(&self, seq: i64) -> &SegmentRecord {
        let (segment, index) = self.position(seq);
        &self.segments[segment].records[index]
    }

    pub(crate) fn record_mut(&mut self, seq: i64) -> &mut SegmentRecord {
        let (segment, index) = self.position(seq);
        &mut self.segments[segment].records[index]
    }

    /// The stored chain hash before record `seq`.
    pub(crate) fn hash_before(&self, seq: i64) -> ChainHash {
        match self.position(seq) {
            (segment, 0) => self.segments[segment].prev_hash,
            (segment, index) => self.segments[segment].records[index - 1].hash,
        }
    }

    pub(crate) fn last_seq(&self) -> i64 {
        self.segments.last().map_or(0, Segment::last_seq)
    }

    /// The transaction Bundle's segment: the one holding more than one record.
    pub(crate) fn bundle(&self) -> &Segment {
        let mut shared = self.segments.iter().filter(|s| s.records.len() > 1);
        let bundle = shared
            .next()
            .unwrap_or_else(|| panic!("no segment of several records in {}", self.layout()));
        assert!(shared.next().is_none(), "{}", self.layout());
        bundle
    }

    /// The segments' sequence numbers, for messages.
    pub(crate) fn layout(&self) -> String {
        self.segments
            .iter()
            .map(|s| format!("{}-{}", s.first_seq, s.last_seq()))
            .collect::<Vec<_>>()
            .join(" ")
    }

    /// Record `seq` with another authentication strength in its text (still a valid record),
    /// its stored hash kept.
    pub(crate) fn change_field(&mut self, seq: i64) {
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
    pub(crate) fn rebuild_from(&mut self, seq: i64) {
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
    pub(crate) fn delete(&mut self, seq: i64) {
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
    pub(crate) fn insert(&mut self, seq: i64) {
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
    pub(crate) fn swap(&mut self, a: i64, b: i64) {
        let first = self.record(a).clone();
        let second = std::mem::replace(self.record_mut(b), first);
        *self.record_mut(a) = second;
    }

    /// The newest segments cut off until at least `count` records are gone, and the head moved
    /// back onto the last record left; returns its sequence number.
    pub(crate) fn truncate(&mut self, count: i64) -> i64 {
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
pub(crate) fn flip_bit(
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

pub(crate) fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

pub(crate) fn hash32(bytes: &[u8]) -> [u8; 32] {
    bytes
        .try_into()
        .unwrap_or_else(|_| panic!("stored hash is not 32 bytes"))
}
