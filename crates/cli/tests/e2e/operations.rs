//! Start-up and operation: the data directory, key files, configuration, listening rules, TLS,
//! health endpoints, and the command line's help and error messages.

use std::os::unix::fs::PermissionsExt;
use std::process::Command;

use crate::common::{BIN, Engine, Server};

#[test]
fn init_creates_config_and_keys_apart_from_the_database() {
    let server = Server::init(Engine::Sqlite);
    let data = server.data_dir();
    let config = std::fs::read_to_string(server.config_path()).unwrap_or_default();
    assert!(config.contains("version = 1"), "{config}");
    for key in ["keys/kek.key", "keys/signing.key"] {
        let mode = std::fs::metadata(data.join(key))
            .map(|m| m.permissions().mode())
            .unwrap_or(0);
        assert_eq!(
            mode & 0o777,
            0o600,
            "{key} must be readable by its owner only"
        );
    }
    let keys_dir_mode = std::fs::metadata(data.join("keys"))
        .map(|m| m.permissions().mode())
        .unwrap_or(0);
    assert_eq!(keys_dir_mode & 0o077, 0, "the keys folder must be private");
    // Copying the database folder never copies a key: no key file lives there, and the
    // key-encryption key's bytes appear in no database file.
    let kek_text = std::fs::read_to_string(data.join("keys/kek.key")).unwrap_or_default();
    let kek_b64 = kek_text
        .lines()
        .nth(1)
        .unwrap_or_default()
        .trim()
        .to_owned();
    assert!(
        kek_b64.len() >= 40,
        "unexpected key file format: {kek_text}"
    );
    for entry in std::fs::read_dir(data.join("db"))
        .into_iter()
        .flatten()
        .flatten()
    {
        let name = entry.file_name().to_string_lossy().into_owned();
        assert!(
            !name.contains("key"),
            "a key file in the database folder: {name}"
        );
        let bytes = std::fs::read(entry.path()).unwrap_or_default();
        assert!(
            !bytes
                .windows(kek_b64.len())
                .any(|w| w == kek_b64.as_bytes())
        );
    }
    // A second init refuses rather than overwriting keys.
    let again = server.cli_output(&["init"]);
    assert!(!again.status.success());
    assert!(String::from_utf8_lossy(&again.stderr).contains("already initialised"));
}

#[test]
fn start_up_refuses_readable_key_files_and_unknown_config_fields() {
    let server = Server::init(Engine::Sqlite);
    let kek = server.data_dir().join("keys/kek.key");
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o644))
        .unwrap_or_else(|e| panic!("{e}"));
    let stderr = server.serve_refusal(&["--listen", "127.0.0.1:0"]);
    assert!(stderr.contains("kek.key"), "{stderr}");
    assert!(
        stderr.to_lowercase().contains("permission")
            || stderr.contains("0644")
            || stderr.contains("644"),
        "{stderr}"
    );
    std::fs::set_permissions(&kek, std::fs::Permissions::from_mode(0o600))
        .unwrap_or_else(|e| panic!("{e}"));

    server.edit_config(|text| text.replace("[database]", "[database]\npool_size = 4"));
    let stderr = server.serve_refusal(&["--listen", "127.0.0.1:0"]);
    assert!(
        stderr.contains("pool_size"),
        "the error should name the unknown field: {stderr}"
    );
}

#[test]
fn plain_http_only_on_loopback() {
    let server = Server::init(Engine::Sqlite);
    for address in ["0.0.0.0:0", "[::]:0"] {
        let stderr = server.serve_refusal(&["--listen", address]);
        assert!(stderr.contains("without TLS"), "{address}: {stderr}");
    }
}

#[tokio::test]
async fn serves_tls_on_a_public_address_when_configured() {
    let mut server = Server::init(Engine::Sqlite);
    let certified = rcgen::generate_simple_self_signed(vec!["localhost".to_owned()])
        .unwrap_or_else(|e| panic!("{e}"));
    let cert_pem = certified.cert.pem();
    std::fs::write(server.data_dir().join("tls.crt"), &cert_pem).unwrap_or_else(|e| panic!("{e}"));
    std::fs::write(
        server.data_dir().join("tls.key"),
        certified.signing_key.serialize_pem(),
    )
    .unwrap_or_else(|e| panic!("{e}"));
    // Passkeys need a host name, so a public address comes with a public URL. Pick a port.
    let port = std::net::TcpListener::bind("0.0.0.0:0")
        .and_then(|listener| listener.local_addr())
        .map(|address| address.port())
        .unwrap_or_else(|e| panic!("{e}"));
    server.edit_config(|text| {
        let text = text.replace(
            "[server]\n",
            &format!("[server]\npublic_url = \"https://localhost:{port}\"\n"),
        );
        format!("{text}\n[server.tls]\ncertificate = \"tls.crt\"\nprivate_key = \"tls.key\"\n")
    });
    server.spawn_on(&format!("0.0.0.0:{port}"));
    assert!(server.base.starts_with("https://"), "{}", server.base);
    let client = reqwest::Client::builder()
        .add_root_certificate(
            reqwest::Certificate::from_pem(cert_pem.as_bytes()).unwrap_or_else(|e| panic!("{e}")),
        )
        .build()
        .unwrap_or_else(|e| panic!("{e}"));
    let response = client
        .get(format!("https://localhost:{port}/healthz"))
        .send()
        .await
        .unwrap_or_else(|e| panic!("TLS request failed: {e}"));
    assert_eq!(response.status(), 200);
    // Plain HTTP to the TLS port gets no answer.
    let plain = reqwest::get(format!("http://127.0.0.1:{port}/healthz")).await;
    assert!(plain.map(|r| r.status() != 200).unwrap_or(true));
}

#[tokio::test]
async fn health_and_readiness_answer() {
    for engine in crate::common::engines() {
        let server = Server::start(engine).await;
        let health = reqwest::get(format!("{}/healthz", server.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(health.status(), 200);
        let ready = reqwest::get(format!("{}/readyz", server.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(ready.status(), 200);
        let body: serde_json::Value = ready.json().await.unwrap_or_default();
        assert_eq!(body["audit"], "ok");
        let expected = if server.engine == Engine::Sqlite {
            "sqlite"
        } else {
            "postgres"
        };
        assert_eq!(body["engine"], expected);
        let metadata = reqwest::get(format!("{}/fhir/metadata", server.base))
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(metadata.status(), 200);
        let statement: serde_json::Value = metadata.json().await.unwrap_or_default();
        assert_eq!(statement["fhirVersion"], "4.0.1");
        let types: Vec<&str> = statement["rest"][0]["resource"]
            .as_array()
            .map(|list| list.iter().filter_map(|r| r["type"].as_str()).collect())
            .unwrap_or_default();
        // Every record type, then the audit trail (search only, for security officers).
        let mut supported: Vec<&str> = carevault_fhir::supported_types()
            .map(|rt| rt.name())
            .collect();
        supported.push("AuditEvent");
        assert_eq!(
            types, supported,
            "the CapabilityStatement must list exactly the supported types"
        );
    }
}

#[test]
fn serve_on_a_fresh_machine_initialises_the_data_directory() {
    let dir = tempfile::tempdir().unwrap_or_else(|e| panic!("{e}"));
    let data = dir.path().join("fresh");
    let mut child = Command::new(BIN)
        .arg("--data-dir")
        .arg(&data)
        .arg("serve")
        .arg("--listen")
        .arg("127.0.0.1:0")
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::null())
        .spawn()
        .unwrap_or_else(|e| panic!("{e}"));
    let stdout = child.stdout.take().unwrap_or_else(|| panic!("stdout"));
    let first = std::io::BufRead::lines(std::io::BufReader::new(stdout))
        .map_while(Result::ok)
        .find(|line| line.starts_with("carevault is listening on"));
    let _ = child.kill();
    let _ = child.wait();
    assert!(first.is_some(), "serve did not start on a fresh directory");
    assert!(data.join("carevault.toml").exists());
    assert!(data.join("keys/kek.key").exists());
    assert!(data.join("db/carevault.sqlite").exists());
}

#[test]
fn every_command_has_help_and_bad_input_says_how_to_mend_it() {
    for args in [
        vec!["--help"],
        vec!["init", "--help"],
        vec!["serve", "--help"],
        vec!["tenant", "--help"],
        vec!["tenant", "create", "--help"],
        vec!["tenant", "quarantine", "--help"],
        vec!["client", "--help"],
        vec!["client", "register", "--help"],
        vec!["client", "disable", "--help"],
    ] {
        let output = Command::new(BIN)
            .args(&args)
            .output()
            .unwrap_or_else(|e| panic!("{e}"));
        assert!(output.status.success(), "{args:?}");
        assert!(
            String::from_utf8_lossy(&output.stdout).contains("Usage"),
            "{args:?}"
        );
    }
    let server = Server::init(Engine::Sqlite);
    let output = server.cli_output(&["tenant", "quarantine", "--tenant", "not-a-uuid"]);
    assert!(!output.status.success());
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(stderr.contains("tenant list"), "{stderr}");
    let output = server.cli_output(&[
        "client",
        "register",
        "--tenant",
        "0b3c9d5e-1111-4222-8333-944455556666",
        "--name",
        "x",
        "--jwks",
        "/nonexistent.json",
        "--scope",
        "system/Patient.r",
    ]);
    assert!(!output.status.success());
    assert!(String::from_utf8_lossy(&output.stderr).contains("/nonexistent.json"));
    let tenant = server.create_tenant("Help Trust");
    let jwks = server.dir.path().join("bad.json");
    std::fs::write(&jwks, r#"{"keys":[{"kty":"oct","k":"c2VjcmV0"}]}"#)
        .unwrap_or_else(|e| panic!("{e}"));
    let output = server.cli_output(&[
        "client",
        "register",
        "--tenant",
        &tenant,
        "--name",
        "x",
        "--jwks",
        jwks.to_str().unwrap_or_default(),
        "--scope",
        "system/Patient.r",
    ]);
    assert!(!output.status.success(), "a symmetric key must be refused");
    let output = server.cli_output(&[
        "client",
        "register",
        "--tenant",
        &tenant,
        "--name",
        "x",
        "--jwks",
        jwks.to_str().unwrap_or_default(),
        "--scope",
        "system/Patient.sr",
    ]);
    assert!(
        !output.status.success(),
        "a malformed scope must be refused"
    );
    let output = server.cli_output(&["tenant", "create", "--name", "Help Trust"]);
    assert!(
        !output.status.success(),
        "duplicate tenant names are refused"
    );
    assert!(String::from_utf8_lossy(&output.stderr).contains("already exists"));
}
