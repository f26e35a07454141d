//! The official HL7 FHIR R4 examples (npm package hl7.fhir.r4.examples@4.0.1) through the
//! running server: every example of a supported type is PUT under its own id and must be
//! accepted, or refused for a reason the R4 specification backs (the allow-list below).
//! Accepted examples must read back unchanged, decimal text included. Transaction and batch
//! Bundles of supported types are posted too (informational; only a 5xx fails).
//!
//! Needs the unpacked package: `export CAREVAULT_HL7_EXAMPLES="$(bash tests/fetch-hl7-examples.sh)"`.

use std::collections::{BTreeMap, HashSet};
use std::path::{Path, PathBuf};

use serde_json::Value;

use crate::common::{Engine, Fhir, Server};

const EXAMPLES_ENV: &str = "CAREVAULT_HL7_EXAMPLES";

/// The accepted count observed when this test was written: a floor, so a regression that
/// starts refusing valid examples fails even if someone adds it to the allow-list by mistake.
const MIN_ACCEPTED: usize = 213;

/// Examples the server may refuse, by file name, each with the R4 rule the example breaks,
/// e.g. `("Foo-bar.json", "Foo.status is 1..1 in R4 and the example has none")`.
/// A refusal of any file not listed here fails the test. Empty: all 213 examples of the 16
/// supported types were accepted when this was written, so no refusal is expected.
const EXPECTED_REFUSALS: &[(&str, &str)] = &[];

struct Example {
    file: String,
    resource_type: String,
    id: String,
    raw: Vec<u8>,
    value: Value,
}

/// The folder holding package/*.json, from CAREVAULT_HL7_EXAMPLES; fails (never skips)
/// with the way to fetch it when it is missing.
fn package_dir() -> PathBuf {
    let how = "fetch the examples with `bash tests/fetch-hl7-examples.sh` (it runs \
               `npm pack hl7.fhir.r4.examples@4.0.1` and `tar xzf` into target/hl7-examples) \
               and set CAREVAULT_HL7_EXAMPLES to the folder it prints";
    let root = std::env::var(EXAMPLES_ENV)
        .ok()
        .filter(|v| !v.is_empty())
        .unwrap_or_else(|| panic!("{EXAMPLES_ENV} is not set: {how}"));
    let package = Path::new(&root).join("package");
    assert!(
        package.join("Patient-example.json").is_file(),
        "{} holds no package/Patient-example.json: {how}",
        package.display()
    );
    package
}

/// Every example of a supported type, and every transaction/batch Bundle whose entries are
/// all of supported types, in file-name order.
fn load(package: &Path) -> (Vec<Example>, Vec<Example>) {
    let supported: HashSet<&str> = carevault_fhir::supported_types()
        .map(|t| t.name())
        .collect();
    let mut files: Vec<PathBuf> = std::fs::read_dir(package)
        .unwrap_or_else(|e| panic!("{}: {e}", package.display()))
        .filter_map(|entry| entry.ok().map(|e| e.path()))
        .filter(|path| path.extension().is_some_and(|ext| ext == "json"))
        .collect();
    files.sort();
    let mut resources = Vec::new();
    let mut bundles = Vec::new();
    for path in files {
        let raw = std::fs::read(&path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
        // package.json, .index.json and the like are not resources.
        let Ok(value) = serde_json::from_slice::<Value>(&raw) else {
            continue;
        };
        let resource_type = value["resourceType"]
            .as_str()
            .unwrap_or_default()
            .to_owned();
        let example = Example {
            file: path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default(),
            id: value["id"].as_str().unwrap_or_default().to_owned(),
            resource_type,
            raw,
            value,
        };
        if supported.contains(example.resource_type.as_str()) {
            resources.push(example);
        } else if example.resource_type == "Bundle"
            && matches!(
                example.value["type"].as_str(),
                Some("transaction" | "batch")
            )
            && bundle_types(&example.value)
                .iter()
                .all(|t| supported.contains(t.as_str()))
        {
            bundles.push(example);
        }
    }
    (resources, bundles)
}

/// The resource type of each entry: its resource's, or else the first segment of its
/// request URL (GET and DELETE entries carry no resource).
fn bundle_types(bundle: &Value) -> Vec<String> {
    let entries = bundle["entry"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    entries
        .iter()
        .map(|entry| match entry["resource"]["resourceType"].as_str() {
            Some(rt) => rt.to_owned(),
            None => {
                let url = entry["request"]["url"].as_str().unwrap_or_default();
                let path = url.trim_start_matches('/');
                path.split(['/', '?']).next().unwrap_or_default().to_owned()
            }
        })
        .collect()
}

/// All the diagnostics (and expressions) of an OperationOutcome, on one line.
fn diagnostics(outcome: &Value) -> String {
    let issues = outcome["issue"]
        .as_array()
        .map(Vec::as_slice)
        .unwrap_or_default();
    let parts: Vec<String> = issues
        .iter()
        .map(|issue| {
            let text = issue["diagnostics"].as_str().unwrap_or_default();
            match issue.get("expression") {
                Some(expression) => format!("{text} (at {expression})"),
                None => text.to_owned(),
            }
        })
        .collect();
    if parts.is_empty() {
        outcome.to_string()
    } else {
        parts.join("; ")
    }
}

/// The resource without the two meta fields the server owns (and without meta if that
/// leaves it empty).
fn without_server_meta(mut resource: Value) -> Value {
    if let Some(object) = resource.as_object_mut()
        && let Some(meta) = object.get_mut("meta").and_then(Value::as_object_mut)
    {
        meta.remove("versionId");
        meta.remove("lastUpdated");
        if meta.is_empty() {
            object.remove("meta");
        }
    }
    resource
}

/// Every JSON number literal in the text, sorted (strings are skipped, so numbers inside
/// narrative or codes do not count; sorting keeps this independent of element order, which
/// the Value comparison covers). Digits must match exactly: they are the decimal's
/// precision, which R4 requires servers to keep. Only the exponent marker is normalised, to
/// `e` with an explicit sign, because serde_json (arbitrary_precision) writes `1E-22` back
/// as `1e-22` and `1E5` as `1e+5`: the same JSON number with the same precision.
fn number_literals(text: &[u8]) -> Vec<String> {
    let mut numbers = Vec::new();
    let mut i = 0;
    while i < text.len() {
        match text[i] {
            b'"' => {
                i += 1;
                while i < text.len() && text[i] != b'"' {
                    i += if text[i] == b'\\' { 2 } else { 1 };
                }
                i += 1;
            }
            b'-' | b'0'..=b'9' => {
                let start = i;
                while i < text.len()
                    && matches!(text[i], b'-' | b'+' | b'.' | b'e' | b'E' | b'0'..=b'9')
                {
                    i += 1;
                }
                let literal = String::from_utf8_lossy(&text[start..i]).to_ascii_lowercase();
                let literal = match literal.split_once('e') {
                    Some((mantissa, exp)) if !exp.starts_with(['+', '-']) => {
                        format!("{mantissa}e+{exp}")
                    }
                    _ => literal,
                };
                numbers.push(literal);
            }
            _ => i += 1,
        }
    }
    numbers.sort();
    numbers
}

#[tokio::test]
async fn official_hl7_examples_load_or_are_refused_for_a_spec_reason() {
    let package = package_dir();
    let (examples, bundles) = load(&package);
    assert!(
        !examples.is_empty(),
        "no examples of supported types in {}",
        package.display()
    );

    let server = Server::start(Engine::Sqlite).await;
    let (_tenant, client) = server.tenant_with_client("HL7 Examples").await;
    let fhir = Fhir::new(&server, &client);

    // 1. PUT every example under its own id (update as create), exactly as published.
    let mut accepted: Vec<&Example> = Vec::new();
    let mut refused: BTreeMap<&str, String> = BTreeMap::new();
    for example in &examples {
        let path = format!("{}/{}", example.resource_type, example.id);
        let reply = fhir
            .send_raw(reqwest::Method::PUT, &path, example.raw.clone())
            .await;
        match reply.status {
            200 | 201 => accepted.push(example),
            status => {
                assert!(
                    status < 500,
                    "{}: server error {status}: {}",
                    example.file,
                    reply.body
                );
                let why = format!("{status} {}", diagnostics(&reply.body));
                refused.insert(example.file.as_str(), why);
            }
        }
    }
    for (file, why) in &refused {
        println!("refused {file}: {why}");
    }
    let allowed: BTreeMap<&str, &str> = EXPECTED_REFUSALS.iter().copied().collect();
    let unexpected: Vec<String> = refused
        .iter()
        .filter(|(file, _)| !allowed.contains_key(*file))
        .map(|(file, why)| format!("  {file}: {why}"))
        .collect();
    for file in allowed.keys().filter(|file| !refused.contains_key(*file)) {
        println!("note: {file} is in the allow-list but was accepted");
    }
    println!(
        "hl7 examples: {} accepted, {} refused",
        accepted.len(),
        refused.len()
    );
    assert!(
        unexpected.is_empty(),
        "examples refused without a spec-based reason in EXPECTED_REFUSALS:\n{}",
        unexpected.join("\n")
    );
    assert!(
        accepted.len() >= MIN_ACCEPTED,
        "only {} examples accepted, expected at least {MIN_ACCEPTED}",
        accepted.len()
    );

    // 2. Every accepted example reads back as published, apart from meta.versionId and
    //    meta.lastUpdated; number literals (decimals) keep their exact text.
    for example in &accepted {
        let path = format!("{}/{}", example.resource_type, example.id);
        let read = fhir.get(&path).await;
        assert_eq!(
            read.status, 200,
            "{}: read {path}: {}",
            example.file, read.body
        );
        let expected = without_server_meta(example.value.clone());
        let actual = without_server_meta(read.body.clone());
        assert!(
            expected == actual,
            "{} did not round-trip:\nsent: {expected}\ngot:  {actual}",
            example.file
        );
        assert_eq!(
            number_literals(&example.raw),
            number_literals(&read.raw),
            "{}: number text changed",
            example.file
        );
    }

    // 3. Decimal text, spelled out on the spec's own decimal example (an Observation whose
    //    components carry valueQuantity 1.0, 1.00, 1E-22, ... ) when it was accepted.
    if accepted
        .iter()
        .any(|e| e.file == "Observation-decimal.json")
    {
        let raw = fhir.get("Observation/decimal").await.raw;
        let text = String::from_utf8_lossy(&raw);
        // Every digit as published; the exponent marker comes back as `e` (see above).
        for literal in [
            "\"value\":1.0,",
            "\"value\":1.00,",
            "\"value\":1e-22,",
            "\"value\":1000000000000000000,",
            "\"value\":1.000000000000000000e-245,",
            "\"value\":-1.000000000000000000e+245,",
        ] {
            assert!(
                text.contains(literal),
                "decimal text lost, no {literal} in {text}"
            );
        }
    }

    // 4. Transaction and batch Bundles of supported types (informational; no 5xx allowed).
    let mut succeeded = 0;
    for bundle in &bundles {
        let reply = fhir
            .send_raw(reqwest::Method::POST, "", bundle.raw.clone())
            .await;
        assert!(
            reply.status < 500,
            "{}: server error {}: {}",
            bundle.file,
            reply.status,
            reply.body
        );
        let entries: Vec<String> = reply.body["entry"]
            .as_array()
            .map(Vec::as_slice)
            .unwrap_or_default()
            .iter()
            .map(|e| {
                let status = e["response"]["status"].as_str().unwrap_or("?");
                match e["response"].get("outcome") {
                    Some(outcome) if !status.starts_with('2') => {
                        format!("{status}: {}", diagnostics(outcome))
                    }
                    _ => status.to_owned(),
                }
            })
            .collect();
        if reply.status == 200 {
            succeeded += 1;
        }
        println!(
            "bundle {} ({}): {} entries {entries:?} {}",
            bundle.file,
            bundle.value["type"].as_str().unwrap_or_default(),
            reply.status,
            if reply.status == 200 {
                String::new()
            } else {
                diagnostics(&reply.body)
            }
        );
    }
    println!(
        "hl7 example bundles: {succeeded} of {} succeeded",
        bundles.len()
    );
}
