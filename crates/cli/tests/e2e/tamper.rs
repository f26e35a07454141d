//! Promise 3: a sealed body is bound to its tenant, type, id and version. Tampering with stored
//! rows (a flipped byte, bodies swapped between rows, a row moved to another tenant) makes the
//! read fail with an integrity error and a log line, and never returns the wrong data.

use serde_json::Value;
use sqlx::Row;

use crate::common::{Engine, Fhir, Server, engines, patient};

enum Raw {
    Sqlite(sqlx::SqlitePool),
    Postgres(sqlx::PgPool),
}

impl Raw {
    async fn connect(server: &Server) -> Raw {
        match &server.pg {
            None => {
                let options = sqlx::sqlite::SqliteConnectOptions::new()
                    .filename(server.sqlite_path())
                    .foreign_keys(false);
                Raw::Sqlite(
                    sqlx::SqlitePool::connect_with(options)
                        .await
                        .unwrap_or_else(|e| panic!("{e}")),
                )
            }
            Some(pg) => Raw::Postgres(
                sqlx::PgPool::connect(&pg.url)
                    .await
                    .unwrap_or_else(|e| panic!("{e}")),
            ),
        }
    }

    async fn body(&self, id: &str) -> Vec<u8> {
        let sql = "SELECT body FROM resource_versions WHERE id = $1 AND version = 1";
        match self {
            Raw::Sqlite(pool) => sqlx::query(sql.replace("$1", "?1").leak() as &'static str)
                .bind(id)
                .fetch_one(pool)
                .await
                .map(|row| row.get::<Vec<u8>, _>(0)),
            Raw::Postgres(pool) => sqlx::query(sql)
                .bind(id)
                .fetch_one(pool)
                .await
                .map(|row| row.get::<Vec<u8>, _>(0)),
        }
        .unwrap_or_else(|e| panic!("{e}"))
    }

    async fn set_body(&self, id: &str, body: &[u8]) {
        let sql = "UPDATE resource_versions SET body = $1 WHERE id = $2 AND version = 1";
        let done = match self {
            Raw::Sqlite(pool) => sqlx::query(sql.replace('$', "?").leak() as &'static str)
                .bind(body)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
            Raw::Postgres(pool) => sqlx::query(sql)
                .bind(body)
                .bind(id)
                .execute(pool)
                .await
                .map(|r| r.rows_affected()),
        };
        assert_eq!(done.unwrap_or_else(|e| panic!("{e}")), 1);
    }

    /// Moves every row of resource `id` into the tenant that owns resource `owner_of`.
    async fn move_to_tenant_of(&self, id: &str, owner_of: &str) {
        for table in ["resource_current", "resource_versions"] {
            let sql = format!(
                "UPDATE {table} SET tenant_id = (SELECT tenant_id FROM resource_versions WHERE id = '{owner_of}' LIMIT 1) WHERE id = '{id}'"
            );
            let sql: &'static str = sql.leak();
            let result = match self {
                Raw::Sqlite(pool) => sqlx::query(sqlx::AssertSqlSafe(sql))
                    .execute(pool)
                    .await
                    .map(|_| ()),
                Raw::Postgres(pool) => {
                    let mut tx = pool.begin().await.unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query("SET LOCAL session_replication_role = replica")
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    sqlx::query(sqlx::AssertSqlSafe(sql))
                        .execute(&mut *tx)
                        .await
                        .unwrap_or_else(|e| panic!("{e}"));
                    tx.commit().await
                }
            };
            result.unwrap_or_else(|e| panic!("{e}"));
        }
    }
}

#[tokio::test]
async fn tampered_rows_fail_their_integrity_check() {
    for engine in engines() {
        tamper_cases(engine).await;
    }
}

fn assert_integrity_failure(case: &str, status: u16, body: &Value, raw: &[u8]) {
    assert_eq!(status, 500, "{case}: {body}");
    assert!(body.to_string().contains("integrity"), "{case}: {body}");
    for name in [&b"Flipper"[..], b"Swapworth", b"Wanderer"] {
        assert!(
            !raw.windows(name.len()).any(|w| w == name),
            "{case}: data leaked"
        );
    }
}

async fn tamper_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (_a, client_a) = server.tenant_with_client("Tamper A").await;
    let (_b, client_b) = server.tenant_with_client("Tamper B").await;
    let a = Fhir::new(&server, &client_a);
    let b = Fhir::new(&server, &client_b);
    let flipped = a
        .create(&patient("Flipper", "Fay", "9434765919", "1950-01-01"))
        .await;
    let swap_one = a
        .create(&patient("Swapworth", "Sid", "9434765870", "1951-01-01"))
        .await;
    let swap_two = a
        .create(&patient("Swapworth", "Sue", "1745438912", "1952-01-01"))
        .await;
    let moved = a
        .create(&patient("Wanderer", "Wes", "9434765919", "1953-01-01"))
        .await;
    let anchor_in_b = b
        .create(&patient("Anchor", "Ann", "9434765870", "1954-01-01"))
        .await;
    let raw = Raw::connect(&server).await;

    // A flipped byte in the middle of a sealed body.
    let mut body = raw.body(&flipped).await;
    let middle = body.len() / 2;
    body[middle] ^= 0x01;
    raw.set_body(&flipped, &body).await;
    let reply = a.get(&format!("Patient/{flipped}")).await;
    assert_integrity_failure("flipped byte", reply.status, &reply.body, &reply.raw);

    // Two bodies swapped between rows of the same tenant and type.
    let first = raw.body(&swap_one).await;
    let second = raw.body(&swap_two).await;
    raw.set_body(&swap_one, &second).await;
    raw.set_body(&swap_two, &first).await;
    for id in [&swap_one, &swap_two] {
        let reply = a.get(&format!("Patient/{id}")).await;
        assert_integrity_failure("swapped bodies", reply.status, &reply.body, &reply.raw);
    }
    // A search that meets a tampered candidate fails closed rather than skipping it silently.
    let search = a.get("Patient?family=swapworth").await;
    assert_integrity_failure(
        "search over swapped bodies",
        search.status,
        &search.body,
        &search.raw,
    );

    // A row moved into another tenant cannot be opened there.
    raw.move_to_tenant_of(&moved, &anchor_in_b).await;
    let reply = b.get(&format!("Patient/{moved}")).await;
    assert_integrity_failure(
        "row moved to another tenant",
        reply.status,
        &reply.body,
        &reply.raw,
    );

    // Untampered rows still read, and the operator's log names every failure.
    assert_eq!(b.get(&format!("Patient/{anchor_in_b}")).await.status, 200);
    let log = String::from_utf8_lossy(&server.log()).into_owned();
    let failures = log.matches("integrity failure").count();
    assert!(
        failures >= 4,
        "expected an integrity log line per failure, found {failures}"
    );
    for id in [&flipped, &swap_one, &swap_two, &moved] {
        assert!(log.contains(id.as_str()), "the log should name {id}");
    }
}
