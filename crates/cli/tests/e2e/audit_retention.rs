//! Retention (issue 4, point 6): `carevault audit retain` removes old records in whole segments
//! behind a signed marker, through the real binary, on both engines; the shortened trail still
//! verifies, searches no longer find what was removed, the removal is itself recorded, and a
//! trail that does not verify is never shortened.

use crate::common::{Engine, Fhir, Server, engines, patient};

#[tokio::test]
async fn retention_removes_old_segments_and_the_trail_still_verifies() {
    for engine in engines() {
        retention(engine).await;
    }
}

fn count_records(search_output: &str) -> usize {
    search_output
        .lines()
        .filter(|line| line.contains("patients="))
        .count()
}

async fn retention(engine: Engine) {
    let mut server = Server::start(engine).await;
    let (tenant, mut client) = server.tenant_with_client("Retention").await;
    server.token(&mut client, "system/Patient.crus").await;
    let fhir = Fhir::new(&server, &client);
    let id = fhir
        .create(&patient("Retained", "Rita", "9434765919", "1950-02-03"))
        .await;
    for _ in 0..4 {
        assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
    }
    server.cli(&["audit", "checkpoint"]);
    let search = |server: &Server| {
        server.cli(&[
            "audit",
            "search",
            "--tenant",
            &tenant,
            "--patient",
            &id,
            "--limit",
            "100",
        ])
    };
    let before = count_records(&search(&server));
    assert!(
        before >= 5,
        "a create and four reads are recorded: {before}"
    );

    // Nothing is a day old yet.
    let out = server.cli(&[
        "audit",
        "retain",
        "--tenant",
        &tenant,
        "--older-than-days",
        "1",
    ]);
    assert!(out.contains("nothing removed"), "{out}");
    let dry = server.cli(&[
        "audit",
        "retain",
        "--tenant",
        &tenant,
        "--older-than-days",
        "0",
        "--dry-run",
    ]);
    assert!(dry.contains("would remove"), "{dry}");
    assert_eq!(
        count_records(&search(&server)),
        before,
        "a dry run removes nothing"
    );

    // Everything recorded so far is older than now.
    std::thread::sleep(std::time::Duration::from_millis(20));
    let out = server.cli(&[
        "audit",
        "retain",
        "--tenant",
        &tenant,
        "--older-than-days",
        "0",
    ]);
    assert!(out.contains("behind a signed retention marker"), "{out}");
    let verified = server.cli_output(&["audit", "verify"]);
    assert!(
        verified.status.success(),
        "the shortened trail verifies: {}{}",
        String::from_utf8_lossy(&verified.stdout),
        String::from_utf8_lossy(&verified.stderr)
    );
    assert_eq!(
        count_records(&search(&server)),
        0,
        "the removed reads are gone"
    );
    let recorded = server.cli(&[
        "audit",
        "search",
        "--tenant",
        &tenant,
        "--action",
        "audit.retain",
    ]);
    assert!(
        recorded.contains("audit.retain"),
        "the removal is recorded: {recorded}"
    );

    // New records chain on after the marker and verify; a checkpoint of them too.
    assert_eq!(fhir.get(&format!("Patient/{id}")).await.status, 200);
    server.cli(&["audit", "checkpoint"]);
    assert_eq!(count_records(&search(&server)), 1);
    assert!(server.cli_output(&["audit", "verify"]).status.success());

    // A trail that does not verify is not shortened: forge a checkpoint line for the tenant.
    let dir = server.data_dir().join("checkpoints").join(&tenant);
    let forged = format!(
        "{{\"v\":1,\"tenant\":\"{tenant}\",\"seq\":1,\"hash\":\"{}\",\"time_ms\":0,\
         \"time\":\"1970-01-01T00:00:00.000Z\",\"key\":\"{}\",\"signature\":\"{}\"}}\n",
        "00".repeat(32),
        "11".repeat(32),
        "22".repeat(64)
    );
    std::fs::create_dir_all(&dir).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(dir.join("zz-forged.jsonl"), forged).unwrap_or_else(|e| panic!("{e}"));
    std::thread::sleep(std::time::Duration::from_millis(20));
    let refused = server.cli_output(&[
        "audit",
        "retain",
        "--tenant",
        &tenant,
        "--older-than-days",
        "0",
    ]);
    assert!(!refused.status.success());
    let message = String::from_utf8_lossy(&refused.stderr);
    assert!(message.contains("retention removes nothing"), "{message}");
    assert_eq!(count_records(&search(&server)), 1, "nothing was removed");
    server.stop();
}
