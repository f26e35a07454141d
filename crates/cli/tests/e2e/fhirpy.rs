//! Compatibility with a third-party client: the Python library fhirpy drives the running
//! server (tests/python/fhirpy_client.py), getting its own token with a signed assertion.
//! fhirpy must be installed (`pip install -r tests/python/requirements.txt`); without it
//! this test fails rather than skipping, so CI cannot pass without proving compatibility.

use std::path::PathBuf;
use std::process::Command;

use crate::common::{Engine, Server};

const REPO_ROOT: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../..");
const INSTALL_HINT: &str = "run `pip install -r tests/python/requirements.txt`";

/// The Python interpreter: $CAREVAULT_PYTHON, or `python3`.
fn python() -> String {
    std::env::var("CAREVAULT_PYTHON")
        .ok()
        .filter(|p| !p.is_empty())
        .unwrap_or_else(|| "python3".to_owned())
}

/// Fails (does not skip) when the interpreter or the client libraries are missing.
fn require_python_deps(python: &str) {
    let probe = Command::new(python)
        .args(["-c", "import fhirpy, jwt, cryptography, requests"])
        .output()
        .unwrap_or_else(|e| panic!("cannot run {python:?} ({e}); set CAREVAULT_PYTHON"));
    assert!(
        probe.status.success(),
        "fhirpy is not importable by {python:?}: {INSTALL_HINT}\n{}",
        String::from_utf8_lossy(&probe.stderr)
    );
}

#[tokio::test]
async fn fhirpy_drives_crud_search_and_a_transaction() {
    let python = python();
    require_python_deps(&python);

    let server = Server::start(Engine::Sqlite).await;
    let tenant = server.create_tenant("Fhirpy Trust");
    let client = server.register_client(&tenant, "system/*.cruds");
    let key_path: PathBuf = server.dir.path().join("fhirpy-client.der");
    std::fs::write(&key_path, client.key.pkcs8_der()).unwrap_or_else(|e| panic!("{e}"));

    let script = PathBuf::from(REPO_ROOT).join("tests/python/fhirpy_client.py");
    let output = Command::new(&python)
        .arg(&script)
        .arg("--base")
        .arg(server.fhir(""))
        .arg("--token-url")
        .arg(server.token_url())
        .arg("--client-id")
        .arg(&client.id)
        .arg("--key")
        .arg(&key_path)
        .arg("--kid")
        .arg(&client.key.kid)
        .current_dir(REPO_ROOT)
        .output()
        .unwrap_or_else(|e| panic!("running {python:?} {}: {e}", script.display()));
    let stdout = String::from_utf8_lossy(&output.stdout);
    let stderr = String::from_utf8_lossy(&output.stderr);
    println!("{stdout}");
    eprintln!("{stderr}");
    if !output.status.success() {
        // The data directory is deleted with the server, so show the end of its log now.
        let log = String::from_utf8_lossy(&server.log()).into_owned();
        let tail: String = log
            .lines()
            .rev()
            .take(40)
            .collect::<Vec<_>>()
            .into_iter()
            .rev()
            .collect::<Vec<_>>()
            .join("\n");
        panic!(
            "fhirpy_client.py failed ({}):\n{stdout}\n{stderr}\nserver log (tail):\n{tail}",
            output.status
        );
    }
    assert!(stdout.contains("fhirpy: all steps passed"), "{stdout}");
}
