//! Promise 3: nothing readable at rest. Distinctive personal data goes in through every write
//! path and is searched for; then every byte of the SQLite files (the audit journal's, database,
//! -wal, -shm), a
//! pg_dump of the PostgreSQL database, and the server's log are scanned for it in the common
//! encodings.

use base64::Engine as _;
use serde_json::json;

use crate::common::{Engine, Fhir, Server, engines, file_bytes};

const FAMILY: &str = "Quillfeather";
const GIVEN: &str = "Zephyrine";
const NHS: [&str; 2] = ["9434765919", "9434765870"];
const STREET: &str = "42 Marrowbone Lane";
const CITY: &str = "Thistlewick";
const POSTCODE: &str = "QX7 3ZB";
const PHONE: &str = "07700 912345";
const EMAIL: &str = "zephyrine.quillfeather@example.org";

/// Every form in which a needle might be found: as sent, case-folded, UTF-16, base64, hex.
fn encodings(needle: &str) -> Vec<(String, Vec<u8>)> {
    let mut forms = vec![
        ("utf-8".to_owned(), needle.as_bytes().to_vec()),
        ("lower".to_owned(), needle.to_lowercase().into_bytes()),
        ("upper".to_owned(), needle.to_uppercase().into_bytes()),
        (
            "utf-16le".to_owned(),
            needle.encode_utf16().flat_map(u16::to_le_bytes).collect(),
        ),
        (
            "utf-16be".to_owned(),
            needle.encode_utf16().flat_map(u16::to_be_bytes).collect(),
        ),
        ("hex".to_owned(), hex::encode(needle).into_bytes()),
        ("HEX".to_owned(), hex::encode_upper(needle).into_bytes()),
    ];
    // Base64 at each of the three alignments: drop the characters that depend on neighbours.
    for shift in 0..3 {
        let padded = format!("{}{needle}", "\0".repeat(shift));
        let encoded = base64::engine::general_purpose::STANDARD.encode(padded.as_bytes());
        let skip = if shift == 0 {
            0
        } else {
            (shift * 4).div_ceil(3) + 1
        };
        let keep = (needle.len() * 4 / 3).saturating_sub(2);
        if encoded.len() > skip + keep && keep >= 6 {
            forms.push((
                format!("base64+{shift}"),
                encoded.as_bytes()[skip..skip + keep].to_vec(),
            ));
        }
    }
    forms
}

fn needles() -> Vec<&'static str> {
    let mut all = vec![FAMILY, GIVEN, STREET, CITY, POSTCODE, PHONE, EMAIL];
    all.extend(NHS);
    all
}

/// Returns every (needle, encoding, place) found.
fn scan(place: &str, haystack: &[u8]) -> Vec<String> {
    let mut found = Vec::new();
    for needle in needles() {
        for (encoding, bytes) in encodings(needle) {
            if memchr::memmem::find(haystack, &bytes).is_some() {
                found.push(format!("{needle:?} as {encoding} in {place}"));
            }
        }
    }
    found
}

async fn write_and_search(server: &Server, fhir: &Fhir<'_>) {
    let patient = |nhs: &str| {
        json!({
            "resourceType": "Patient",
            "identifier": [{"system": "https://fhir.nhs.uk/Id/nhs-number", "value": nhs}],
            "name": [{"family": FAMILY, "given": [GIVEN]}],
            "telecom": [{"system": "phone", "value": PHONE}, {"system": "email", "value": EMAIL}],
            "address": [{"line": [STREET], "city": CITY, "postalCode": POSTCODE}],
            "gender": "female", "birthDate": "1948-07-19"
        })
    };
    let id = fhir.create(&patient(NHS[0])).await;
    let mut changed = fhir.get(&format!("Patient/{id}")).await.body;
    changed["active"] = json!(true);
    assert_eq!(
        fhir.put(&format!("Patient/{id}"), &changed).await.status,
        200
    );
    let bundle = json!({"resourceType": "Bundle", "type": "transaction", "entry": [
        {"fullUrl": "urn:uuid:7f1c2b52-0000-4000-8000-000000000001",
         "request": {"method": "POST", "url": "Patient"}, "resource": patient(NHS[1])},
        {"request": {"method": "POST", "url": "Observation"}, "resource": {
            "resourceType": "Observation", "status": "final", "code": {"text": "note"},
            "subject": {"reference": "urn:uuid:7f1c2b52-0000-4000-8000-000000000001"},
            "valueString": format!("{GIVEN} {FAMILY} lives at {STREET}")}}
    ]});
    assert_eq!(fhir.post("", &bundle).await.status, 200);
    for query in [
        format!("Patient?family={FAMILY}"),
        format!("Patient?given={GIVEN}&birthdate=1948-07-19"),
        format!(
            "Patient?identifier=https://fhir.nhs.uk/Id/nhs-number|{}",
            NHS[0]
        ),
        format!(
            "Patient?address-postalcode={}",
            POSTCODE.replace(' ', "%20")
        ),
        format!("Patient?phone={}", PHONE.replace(' ', "%20")),
        format!("Patient?phonetic={FAMILY}"),
    ] {
        let reply = fhir.get(&query).await;
        assert_eq!(reply.status, 200, "{query}: {}", reply.body);
        assert!(
            reply.body["entry"]
                .as_array()
                .is_some_and(|entries| !entries.is_empty()),
            "{query} found nothing"
        );
    }
    let _ = server;
}

#[tokio::test]
async fn no_personal_data_in_database_files_dumps_or_logs() {
    for engine in engines() {
        let mut server = Server::start(engine).await;
        let (_tenant, client) = server.tenant_with_client("At Rest Trust").await;
        let fhir = Fhir::new(&server, &client);
        write_and_search(&server, &fhir).await;

        let mut found = Vec::new();
        let mut scanned = Vec::new();
        match engine {
            Engine::Sqlite => {
                // The audit journal first: the records of the searches just made may still be
                // there, not yet chained into the database (store/src/sqlite/journal.rs).
                let mut journal = server.sqlite_path().into_os_string();
                journal.push(".audit-journal");
                let files = std::fs::read_dir(&journal)
                    .map(|entries| entries.flatten().map(|entry| entry.path()).collect())
                    .unwrap_or_else(|_| Vec::new());
                for path in files {
                    let bytes = file_bytes(&path);
                    scanned.push(format!("{} ({} bytes)", path.display(), bytes.len()));
                    found.extend(scan(&path.display().to_string(), &bytes));
                }
                // While running (the WAL holds the newest pages), then after a clean stop.
                for suffix in ["", "-wal", "-shm"] {
                    let path = server
                        .sqlite_path()
                        .with_extension(format!("sqlite{suffix}"));
                    let bytes = file_bytes(&path);
                    scanned.push(format!("{} ({} bytes)", path.display(), bytes.len()));
                    found.extend(scan(&path.display().to_string(), &bytes));
                }
                server.stop();
                let mut total = 0;
                for suffix in ["", "-wal"] {
                    let path = server
                        .sqlite_path()
                        .with_extension(format!("sqlite{suffix}"));
                    let bytes = file_bytes(&path);
                    total += bytes.len();
                    found.extend(scan(&format!("{} after stop", path.display()), &bytes));
                }
                assert!(total > 10_000, "the database files should hold the data");
            }
            Engine::Postgres => {
                let dump = server.pg.as_ref().map(|pg| pg.dump()).unwrap_or_default();
                assert!(dump.len() > 1_000, "the dump should hold the data");
                scanned.push(format!("pg_dump ({} bytes)", dump.len()));
                found.extend(scan("pg_dump", &dump));
                server.stop();
            }
        }
        let log = server.log();
        assert!(
            log.len() > 1_000,
            "the server should have logged its requests"
        );
        scanned.push(format!("server log ({} bytes)", log.len()));
        found.extend(scan("server log", &log));
        eprintln!(
            "{engine:?}: scanned {} for {} values in {} encodings each: {} found",
            scanned.join(", "),
            needles().len(),
            encodings(FAMILY).len(),
            found.len()
        );
        assert!(
            found.is_empty(),
            "personal data at rest:\n{}",
            found.join("\n")
        );
    }
}

#[test]
fn the_scanner_finds_what_it_looks_for() {
    // Guards the guard: plaintext in any of the encodings is caught.
    for (encoding, bytes) in encodings(FAMILY) {
        let mut haystack = b"....".to_vec();
        haystack.extend_from_slice(&bytes);
        haystack.extend_from_slice(b"....");
        assert!(
            !scan("test", &haystack).is_empty(),
            "{encoding} not detected"
        );
    }
    let embedded = base64::engine::general_purpose::STANDARD.encode(format!("xx{STREET}yy"));
    assert!(
        !scan("test", embedded.as_bytes()).is_empty(),
        "embedded base64 not detected"
    );
}
