//! FHIR search through the running server: every supported Patient parameter, the clinical types'
//! parameters (date with every prefix, reasoned out from FHIR R4 search.html#prefix), string
//! matching rules, `_count`, `_sort`, paging until exhausted over candidates that the blind index
//! over-matches, `_include`, POST `_search`, and clear refusals.

use std::collections::BTreeSet;

use serde_json::{Value, json};

use crate::common::{Engine, Fhir, Reply, Server, engines};

#[tokio::test]
async fn search_parameters_match_fhir_semantics() {
    for engine in engines() {
        search_cases(engine).await;
    }
}

#[tokio::test]
async fn paging_returns_every_match_exactly_once() {
    for engine in engines() {
        paging_cases(engine).await;
    }
}

/// Percent-encodes a query value (RFC 3986 unreserved characters stay as they are).
pub fn enc(value: &str) -> String {
    let mut out = String::new();
    for byte in value.bytes() {
        if byte.is_ascii_alphanumeric() || b"-_.~".contains(&byte) {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Ids of the entries with search mode `mode`, in bundle order.
pub fn ids_of(reply: &Reply, mode: &str) -> Vec<String> {
    reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter(|entry| entry["search"]["mode"] == mode)
                .filter_map(|entry| entry["resource"]["id"].as_str())
                .map(str::to_owned)
                .collect()
        })
        .unwrap_or_default()
}

pub fn next_link(bundle: &Value) -> Option<String> {
    bundle["link"]
        .as_array()?
        .iter()
        .find(|link| link["relation"] == "next")
        .and_then(|link| link["url"].as_str())
        .map(str::to_owned)
}

fn set(ids: &[&String]) -> BTreeSet<String> {
    ids.iter().map(|id| (*id).clone()).collect()
}

/// Runs a search and returns the ids of its matches, as a set (asserting no duplicates).
async fn found(fhir: &Fhir<'_>, query: &str) -> BTreeSet<String> {
    let reply = fhir.get(query).await;
    assert_eq!(reply.status, 200, "{query}: {}", reply.body);
    assert_eq!(reply.body["type"], "searchset", "{query}");
    let ids = ids_of(&reply, "match");
    let unique: BTreeSet<String> = ids.iter().cloned().collect();
    assert_eq!(unique.len(), ids.len(), "{query}: duplicate entries");
    unique
}

async fn expect(fhir: &Fhir<'_>, query: &str, expected: &[&String]) {
    assert_eq!(found(fhir, query).await, set(expected), "{query}");
}

/// Creates a resource, returns (id, meta.lastUpdated), and waits a little so that every
/// resource has its own lastUpdated millisecond.
async fn make(fhir: &Fhir<'_>, resource: Value) -> (String, String) {
    let rt = resource["resourceType"]
        .as_str()
        .unwrap_or_default()
        .to_owned();
    let reply = fhir.post(&rt, &resource).await;
    assert_eq!(reply.status, 201, "create {rt}: {}", reply.body);
    tokio::time::sleep(std::time::Duration::from_millis(3)).await;
    (
        reply.body["id"].as_str().unwrap_or_default().to_owned(),
        reply.body["meta"]["lastUpdated"]
            .as_str()
            .unwrap_or_default()
            .to_owned(),
    )
}

const NHS: &str = "https://fhir.nhs.uk/Id/nhs-number";
const LOINC: &str = "http://loinc.org";
const SNOMED: &str = "http://snomed.info/sct";
const OBS_CAT: &str = "http://terminology.hl7.org/CodeSystem/observation-category";
const COND_CLIN: &str = "http://terminology.hl7.org/CodeSystem/condition-clinical";
const COND_CAT: &str = "http://terminology.hl7.org/CodeSystem/condition-category";

#[allow(clippy::too_many_arguments)]
fn person(
    family: &str,
    given: &str,
    system: &str,
    value: &str,
    birth: &str,
    gender: &str,
    postcode: &str,
    phone: &str,
) -> Value {
    json!({
        "resourceType": "Patient",
        "identifier": [{"system": system, "value": value}],
        "name": [{"family": family, "given": [given]}],
        "gender": gender,
        "birthDate": birth,
        "address": [{"line": ["1 High Street"], "postalCode": postcode}],
        "telecom": [{"system": "phone", "value": phone}, {"system": "email", "value": format!("{given}@example.org")}],
    })
}

fn observation(patient: &str, effective: Value, code: (&str, &str), category: &str) -> Value {
    let mut body = json!({
        "resourceType": "Observation",
        "status": "final",
        "category": [{"coding": [{"system": OBS_CAT, "code": category}]}],
        "code": {"coding": [{"system": code.0, "code": code.1}]},
        "subject": {"reference": format!("Patient/{patient}")},
        "valueQuantity": {"value": 1, "unit": "1"}
    });
    if let Value::Object(fields) = effective {
        for (key, value) in fields {
            body[key] = value;
        }
    }
    body
}

async fn search_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (_tenant, client) = server.tenant_with_client("Search Trust").await;
    let fhir = Fhir::new(&server, &client);

    // ---- Patients ----
    let (p1, p1_updated) = make(
        &fhir,
        person(
            "Smith",
            "José",
            NHS,
            "9434765919",
            "1974-12-25",
            "female",
            "LS1 4AP",
            "01134960000",
        ),
    )
    .await;
    let (p2, _) = make(
        &fhir,
        person(
            "Smyth",
            "Anna",
            NHS,
            "9434765870",
            "1974-03-10",
            "male",
            "M1 1AA",
            "01614960000",
        ),
    )
    .await;
    let (p3, p3_updated) = make(
        &fhir,
        person(
            "Jones",
            "Bob",
            "urn:oid:1.2.3",
            "9434765919",
            "1980",
            "other",
            "LS2 9JT",
            "02074960000",
        ),
    )
    .await;

    expect(&fhir, &format!("Patient?_id={p1}"), &[&p1]).await;
    expect(&fhir, &format!("Patient?_id={p1},{p3}"), &[&p1, &p3]).await;
    // identifier: system|value finds one; the value alone finds it whatever the system.
    expect(
        &fhir,
        &format!("Patient?identifier={}", enc(&format!("{NHS}|9434765919"))),
        &[&p1],
    )
    .await;
    expect(&fhir, "Patient?identifier=9434765919", &[&p1, &p3]).await;
    expect(
        &fhir,
        &format!("Patient?identifier={}", enc(&format!("{NHS}|"))),
        &[&p1, &p2],
    )
    .await;
    expect(
        &fhir,
        &format!("Patient?identifier={}", enc("urn:oid:1.2.3|9434765870")),
        &[],
    )
    .await;
    // Strings: starts-with, case- and accent-insensitive.
    expect(&fhir, "Patient?family=smi", &[&p1]).await;
    expect(&fhir, "Patient?family=SM", &[&p1, &p2]).await;
    expect(&fhir, "Patient?family=mith", &[]).await;
    expect(&fhir, "Patient?given=jose", &[&p1]).await;
    expect(&fhir, "Patient?given=JOS", &[&p1]).await;
    expect(&fhir, &format!("Patient?given={}", enc("JOSÉ")), &[&p1]).await;
    expect(&fhir, "Patient?name=anna", &[&p2]).await;
    expect(&fhir, "Patient?name=jones", &[&p3]).await;
    expect(&fhir, "Patient?name=anna,bob", &[&p2, &p3]).await;
    // `name` includes `family` and `given`, whose terms are written once, under the part: a
    // look-up of the name finds them there, and the re-check passes a query longer than the
    // five characters of the longest prefix term only where the whole of it matches.
    expect(&fhir, "Patient?name=smi", &[&p1]).await;
    expect(&fhir, "Patient?name:exact=Bob", &[&p3]).await;
    expect(&fhir, "Patient?name=smyth", &[&p2]).await;
    expect(&fhir, "Patient?name=smythe", &[]).await;
    // :exact is exact: case and accents matter, and a prefix is not enough.
    expect(
        &fhir,
        &format!("Patient?given:exact={}", enc("José")),
        &[&p1],
    )
    .await;
    expect(&fhir, "Patient?given:exact=jose", &[]).await;
    expect(&fhir, "Patient?given:exact=Jose", &[]).await;
    expect(&fhir, "Patient?family:exact=Smith", &[&p1]).await;
    expect(&fhir, "Patient?family:exact=smith", &[]).await;
    expect(&fhir, "Patient?family:exact=Smit", &[]).await;
    // Birth date at year, year-month and day precision (with and without eq).
    expect(&fhir, "Patient?birthdate=1974", &[&p1, &p2]).await;
    expect(&fhir, "Patient?birthdate=eq1974", &[&p1, &p2]).await;
    expect(&fhir, "Patient?birthdate=1974-12", &[&p1]).await;
    expect(&fhir, "Patient?birthdate=eq1974-03", &[&p2]).await;
    expect(&fhir, "Patient?birthdate=1974-12-25", &[&p1]).await;
    expect(&fhir, "Patient?birthdate=1974-12-24", &[]).await;
    expect(&fhir, "Patient?birthdate=1980", &[&p3]).await;
    // A year-only birth date is not contained in one day of that year.
    expect(&fhir, "Patient?birthdate=1980-01-01", &[]).await;
    expect(&fhir, "Patient?gender=male", &[&p2]).await;
    expect(&fhir, "Patient?gender=female,other", &[&p1, &p3]).await;
    expect(
        &fhir,
        &format!("Patient?address-postalcode={}", enc("LS1 4AP")),
        &[&p1],
    )
    .await;
    expect(&fhir, "Patient?address-postalcode=ls", &[&p1, &p3]).await;
    expect(&fhir, "Patient?phone=01614960000", &[&p2]).await;
    expect(&fhir, "Patient?phone=0161", &[]).await;
    // `telecom` includes `phone` and `email`.
    expect(&fhir, "Patient?telecom=01614960000", &[&p2]).await;
    expect(&fhir, "Patient?telecom=Bob@example.org", &[&p3]).await;
    // Phonetic: Smith finds Smyth and the other way round; Jones does not sound like them.
    expect(&fhir, "Patient?phonetic=Smith", &[&p1, &p2]).await;
    expect(&fhir, "Patient?phonetic=smyth", &[&p1, &p2]).await;
    expect(&fhir, "Patient?phonetic=Jonas", &[&p3]).await;
    // Several parameters are ANDed.
    expect(&fhir, "Patient?family=sm&gender=male", &[&p2]).await;
    expect(&fhir, "Patient?family=sm&birthdate=1974-12", &[&p1]).await;
    // A birthdate range is not indexed alone, but it filters beside an indexed parameter.
    expect(&fhir, "Patient?phonetic=smith&birthdate=gt1974-06", &[&p1]).await;
    // _lastUpdated.
    expect(
        &fhir,
        &format!("Patient?_lastUpdated=gt{}", enc(&p1_updated)),
        &[&p2, &p3],
    )
    .await;
    expect(
        &fhir,
        &format!("Patient?_lastUpdated=lt{}", enc(&p3_updated)),
        &[&p1, &p2],
    )
    .await;
    expect(
        &fhir,
        &format!("Patient?_lastUpdated=ge{}", enc(&p3_updated)),
        &[&p3],
    )
    .await;

    // ---- Encounters ----
    let (e1, e1_updated) = make(
        &fhir,
        json!({
            "resourceType": "Encounter", "status": "finished",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "AMB"},
            "subject": {"reference": format!("Patient/{p1}")},
            "period": {"start": "2024-06-15T09:00:00Z", "end": "2024-06-15T11:00:00Z"}
        }),
    )
    .await;
    let (e2, _) = make(
        &fhir,
        json!({
            "resourceType": "Encounter", "status": "in-progress",
            "class": {"system": "http://terminology.hl7.org/CodeSystem/v3-ActCode", "code": "HH"},
            "subject": {"reference": format!("Patient/{p2}")},
            "period": {"start": "2024-07-01T09:00:00Z"}
        }),
    )
    .await;
    expect(&fhir, &format!("Encounter?patient={p1}"), &[&e1]).await;
    expect(&fhir, &format!("Encounter?subject=Patient/{p2}"), &[&e2]).await;
    expect(&fhir, "Encounter?status=in-progress", &[&e2]).await;
    expect(&fhir, "Encounter?class=AMB", &[&e1]).await;
    expect(&fhir, "Encounter?date=2024-06-15", &[&e1]).await;
    // An open-ended period reaches past any later date, so it is gt/ge but never eq.
    expect(&fhir, "Encounter?date=ge2024-07-01", &[&e2]).await;
    expect(&fhir, "Encounter?date=gt2030", &[&e2]).await;
    expect(&fhir, "Encounter?date=eq2024-07", &[]).await;
    expect(&fhir, "Encounter?date=lt2024-06-16", &[&e1]).await;
    expect(&fhir, "Encounter?date=sa2024-06-30", &[&e2]).await;
    expect(
        &fhir,
        &format!("Encounter?_lastUpdated=gt{}", enc(&e1_updated)),
        &[&e2],
    )
    .await;
    expect(
        &fhir,
        &format!("Encounter?_lastUpdated=lt{}", enc(&e1_updated)),
        &[],
    )
    .await;

    // ---- Observations: date prefixes against Q = 2024-06-15 = [Jun 15 00:00, Jun 16 00:00) ----
    let heart = (LOINC, "8867-4");
    let temp = (LOINC, "8310-5");
    // a: one second on Jun 14, wholly before Q.
    let (oa, oa_updated) = make(
        &fhir,
        observation(
            &p1,
            json!({"effectiveDateTime": "2024-06-14T12:00:00Z"}),
            heart,
            "vital-signs",
        ),
    )
    .await;
    // b: one second inside Q.
    let mut body_b = observation(
        &p1,
        json!({"effectiveDateTime": "2024-06-15T10:00:00Z"}),
        heart,
        "vital-signs",
    );
    body_b["encounter"] = json!({"reference": format!("Encounter/{e1}")});
    let (ob, _) = make(&fhir, body_b).await;
    // c: starts inside Q, ends after it.
    let mut body_c = observation(
        &p1,
        json!({"effectivePeriod": {"start": "2024-06-15T20:00:00Z", "end": "2024-06-16T04:00:00Z"}}),
        temp,
        "vital-signs",
    );
    body_c["encounter"] = json!({"reference": format!("Encounter/{e1}")});
    let (oc, _) = make(&fhir, body_c).await;
    // d: wholly after Q.
    let (od, _) = make(
        &fhir,
        observation(
            &p1,
            json!({"effectiveDateTime": "2024-06-17T09:00:00Z"}),
            temp,
            "vital-signs",
        ),
    )
    .await;
    // e: starts before Q, ends inside it.
    let (oe, _) = make(
        &fhir,
        observation(
            &p1,
            json!({"effectivePeriod": {"start": "2024-06-14T22:00:00Z", "end": "2024-06-15T02:00:00Z"}}),
            (SNOMED, "271649006"),
            "laboratory",
        ),
    )
    .await;
    // f: month precision, June 2024, containing Q; another patient, preliminary, no system match.
    let mut body_f = observation(
        &p2,
        json!({"effectiveDateTime": "2024-06"}),
        ("urn:local", "8867-4"),
        "laboratory",
    );
    body_f["status"] = json!("preliminary");
    let (of, of_updated) = make(&fhir, body_f).await;

    let q = "2024-06-15";
    expect(&fhir, &format!("Observation?date={q}"), &[&ob]).await;
    expect(&fhir, &format!("Observation?date=eq{q}"), &[&ob]).await;
    expect(
        &fhir,
        &format!("Observation?date=ne{q}"),
        &[&oa, &oc, &od, &oe, &of],
    )
    .await;
    expect(&fhir, &format!("Observation?date=gt{q}"), &[&oc, &od, &of]).await;
    expect(&fhir, &format!("Observation?date=lt{q}"), &[&oa, &oe, &of]).await;
    expect(
        &fhir,
        &format!("Observation?date=ge{q}"),
        &[&ob, &oc, &od, &of],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?date=le{q}"),
        &[&oa, &ob, &oe, &of],
    )
    .await;
    expect(&fhir, &format!("Observation?date=sa{q}"), &[&od]).await;
    expect(&fhir, &format!("Observation?date=eb{q}"), &[&oa]).await;
    // Month and instant precision queries, and two date params ANDed (a range).
    expect(
        &fhir,
        "Observation?date=2024-06",
        &[&oa, &ob, &oc, &od, &oe, &of],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?date={}", enc("2024-06-15T10:00:00Z")),
        &[&ob],
    )
    .await;
    expect(
        &fhir,
        "Observation?date=ge2024-06-15&date=lt2024-06-16",
        &[&ob, &oc, &of],
    )
    .await;
    // A comma ORs values.
    expect(&fhir, &format!("Observation?date=sa{q},eb{q}"), &[&oa, &od]).await;

    expect(&fhir, &format!("Observation?patient={p2}"), &[&of]).await;
    expect(
        &fhir,
        &format!("Observation?patient=Patient/{p1}"),
        &[&oa, &ob, &oc, &od, &oe],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?subject=Patient/{p1}"),
        &[&oa, &ob, &oc, &od, &oe],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?code={}", enc("http://loinc.org|8867-4")),
        &[&oa, &ob],
    )
    .await;
    expect(&fhir, "Observation?code=8867-4", &[&oa, &ob, &of]).await;
    expect(
        &fhir,
        &format!("Observation?code={}", enc("http://loinc.org|")),
        &[&oa, &ob, &oc, &od],
    )
    .await;
    expect(&fhir, "Observation?status=preliminary", &[&of]).await;
    expect(
        &fhir,
        "Observation?status=final",
        &[&oa, &ob, &oc, &od, &oe],
    )
    .await;
    expect(
        &fhir,
        &format!(
            "Observation?category={}",
            enc(&format!("{OBS_CAT}|laboratory"))
        ),
        &[&oe, &of],
    )
    .await;
    expect(
        &fhir,
        "Observation?category=vital-signs",
        &[&oa, &ob, &oc, &od],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?encounter=Encounter/{e1}"),
        &[&ob, &oc],
    )
    .await;
    expect(&fhir, &format!("Observation?encounter={e1}"), &[&ob, &oc]).await;
    expect(
        &fhir,
        &format!("Observation?patient={p1}&code=8310-5&date=ge{q}"),
        &[&oc, &od],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?_lastUpdated=gt{}", enc(&oa_updated)),
        &[&ob, &oc, &od, &oe, &of],
    )
    .await;
    expect(
        &fhir,
        &format!("Observation?_lastUpdated=lt{}", enc(&of_updated)),
        &[&oa, &ob, &oc, &od, &oe],
    )
    .await;

    // ---- Conditions ----
    let (c1, c1_updated) = make(
        &fhir,
        json!({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": COND_CLIN, "code": "active"}]},
            "category": [{"coding": [{"system": COND_CAT, "code": "problem-list-item"}]}],
            "code": {"coding": [{"system": SNOMED, "code": "44054006"}]},
            "subject": {"reference": format!("Patient/{p1}")},
            "encounter": {"reference": format!("Encounter/{e1}")},
            "onsetDateTime": "2020-01-01",
            "recordedDate": "2020-02-01"
        }),
    )
    .await;
    let (c2, _) = make(
        &fhir,
        json!({
            "resourceType": "Condition",
            "clinicalStatus": {"coding": [{"system": COND_CLIN, "code": "resolved"}]},
            "category": [{"coding": [{"system": COND_CAT, "code": "encounter-diagnosis"}]}],
            "code": {"coding": [{"system": SNOMED, "code": "195967001"}]},
            "subject": {"reference": format!("Patient/{p2}")},
            "onsetDateTime": "2010"
        }),
    )
    .await;
    expect(&fhir, "Condition?clinical-status=active", &[&c1]).await;
    expect(
        &fhir,
        &format!(
            "Condition?clinical-status={}",
            enc(&format!("{COND_CLIN}|resolved"))
        ),
        &[&c2],
    )
    .await;
    expect(&fhir, "Condition?code=44054006", &[&c1]).await;
    expect(
        &fhir,
        &format!("Condition?code={}", enc(&format!("{SNOMED}|195967001"))),
        &[&c2],
    )
    .await;
    expect(&fhir, "Condition?category=encounter-diagnosis", &[&c2]).await;
    expect(&fhir, &format!("Condition?patient={p2}"), &[&c2]).await;
    expect(&fhir, &format!("Condition?subject=Patient/{p1}"), &[&c1]).await;
    expect(
        &fhir,
        &format!("Condition?encounter=Encounter/{e1}"),
        &[&c1],
    )
    .await;
    expect(&fhir, "Condition?date=lt2015", &[&c2]).await;
    expect(&fhir, "Condition?date=ge2020", &[&c1]).await;
    expect(&fhir, "Condition?date=2010", &[&c2]).await;
    // A Condition's `date` includes its `onset-date` and `recorded-date`: the ranges are
    // written once, under them, and `date` finds and sorts by either.
    expect(&fhir, "Condition?date=2020-02", &[&c1]).await;
    expect(&fhir, "Condition?onset-date=2020-01", &[&c1]).await;
    expect(&fhir, "Condition?onset-date=2020-02", &[]).await;
    expect(&fhir, "Condition?recorded-date=2020-02-01", &[&c1]).await;
    expect(
        &fhir,
        &format!("Condition?_lastUpdated=gt{}", enc(&c1_updated)),
        &[&c2],
    )
    .await;

    // ---- _count and _sort ----
    let first = fhir
        .get(&format!("Observation?patient={p1}&_count=2"))
        .await;
    assert_eq!(ids_of(&first, "match").len(), 2, "{}", first.body);
    assert!(
        next_link(&first.body).is_some(),
        "_count=2 of 5 pages: {}",
        first.body
    );
    let ordered = |query: String| {
        let fhir = &fhir;
        async move {
            let reply = fhir.get(&query).await;
            assert_eq!(reply.status, 200, "{query}: {}", reply.body);
            ids_of(&reply, "match")
        }
    };
    // c2's onset (2010) before c1's (2020), and back.
    assert_eq!(
        ordered("Condition?category=encounter-diagnosis,problem-list-item&_sort=date".to_owned())
            .await,
        vec![c2.clone(), c1.clone()]
    );
    assert_eq!(
        ordered("Condition?category=encounter-diagnosis,problem-list-item&_sort=-date".to_owned())
            .await,
        vec![c1.clone(), c2.clone()]
    );
    // Earliest start: a (Jun 14 12:00), e (Jun 14 22:00), b (Jun 15 10:00), c (Jun 15 20:00), d.
    assert_eq!(
        ordered(format!("Observation?patient={p1}&_sort=date")).await,
        vec![oa.clone(), oe.clone(), ob.clone(), oc.clone(), od.clone()]
    );
    assert_eq!(
        ordered(format!("Observation?patient={p1}&_sort=-date")).await,
        vec![od.clone(), oc.clone(), ob.clone(), oe.clone(), oa.clone()]
    );
    assert_eq!(
        ordered(format!("Observation?patient={p1}&_sort=_lastUpdated")).await,
        vec![oa.clone(), ob.clone(), oc.clone(), od.clone(), oe.clone()]
    );
    assert_eq!(
        ordered(format!("Observation?patient={p1}&_sort=-_lastUpdated")).await,
        vec![oe.clone(), od.clone(), oc.clone(), ob.clone(), oa.clone()]
    );
    // Sorted order also holds across pages.
    let mut paged = Vec::new();
    let mut next = Some(format!("Observation?patient={p1}&_sort=-date&_count=2"));
    while let Some(url) = next {
        let reply = fhir.get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        paged.extend(ids_of(&reply, "match"));
        next = next_link(&reply.body);
    }
    assert_eq!(
        paged,
        vec![od.clone(), oc.clone(), ob.clone(), oe.clone(), oa.clone()]
    );

    // ---- _include ----
    let included = fhir
        .get(&format!(
            "Observation?_id={ob}&_include=Observation:subject&_include=Observation:encounter"
        ))
        .await;
    assert_eq!(included.status, 200, "{}", included.body);
    assert_eq!(ids_of(&included, "match"), vec![ob.clone()]);
    assert_eq!(
        ids_of(&included, "include")
            .into_iter()
            .collect::<BTreeSet<_>>(),
        set(&[&p1, &e1]),
        "{}",
        included.body
    );
    let targeted = fhir
        .get(&format!(
            "Condition?patient={p1}&_include=Condition:subject:Patient"
        ))
        .await;
    assert_eq!(
        ids_of(&targeted, "include"),
        vec![p1.clone()],
        "{}",
        targeted.body
    );

    // ---- POST _search with a form body gives the same as GET ----
    for query in [
        "family=sm&gender=male".to_owned(),
        format!("given={}", enc("José")),
        format!("patient={p1}&date=ge{q}&_sort=date"),
    ] {
        let rt = if query.starts_with("patient") {
            "Observation"
        } else {
            "Patient"
        };
        let by_get = fhir.get(&format!("{rt}?{query}")).await;
        let by_post = server
            .http
            .post(server.fhir(&format!("{rt}/_search")))
            .bearer_auth(&client.token)
            .header("content-type", "application/x-www-form-urlencoded")
            .body(query.clone())
            .send()
            .await
            .unwrap_or_else(|e| panic!("{e}"));
        assert_eq!(by_post.status(), 200, "POST _search {query}");
        let by_post: Value = by_post.json().await.unwrap_or(Value::Null);
        let post_ids: Vec<String> = by_post["entry"]
            .as_array()
            .map(|entries| {
                entries
                    .iter()
                    .filter_map(|entry| entry["resource"]["id"].as_str().map(str::to_owned))
                    .collect()
            })
            .unwrap_or_default();
        assert_eq!(post_ids, ids_of(&by_get, "match"), "POST _search {query}");
        assert!(!post_ids.is_empty(), "{query} should find something");
    }

    // ---- Refusals: unsupported parameters and modifiers, unindexable searches ----
    for (query, names) in [
        ("Patient?family:contains=smi", &["family", "contains"][..]),
        ("Patient?foo=bar", &["foo"][..]),
        ("Patient?family=smi&foo=bar", &["foo"][..]),
        ("Observation?date=xx2024", &["date"][..]),
        ("Patient?_sort=family", &["_sort"][..]),
        ("Observation?_include=Observation:code", &["code"][..]),
    ] {
        let reply = fhir.get(query).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{query}");
        let text = reply.body.to_string();
        for name in names {
            assert!(
                text.contains(name),
                "{query}: the outcome should name {name}: {text}"
            );
        }
    }
    for query in ["Patient?birthdate=gt1970", "Patient?gender:missing=true"] {
        let reply = fhir.get(query).await;
        assert_eq!(reply.status, 400, "{query}: {}", reply.body);
        assert_eq!(reply.body["resourceType"], "OperationOutcome", "{query}");
        let text = reply.body.to_string();
        assert!(
            text.contains("index") && text.contains("identifier"),
            "{query}: the refusal should say how to narrow the search: {text}"
        );
    }
}

/// Follows next links from `first` until there are none; returns every match id in order.
async fn all_pages(fhir: &Fhir<'_>, first: &str, count: usize) -> Vec<String> {
    let mut ids = Vec::new();
    let mut next = Some(first.to_owned());
    let mut pages = 0;
    while let Some(url) = next {
        let reply = fhir.get(&url).await;
        assert_eq!(reply.status, 200, "{url}: {}", reply.body);
        let page = ids_of(&reply, "match");
        next = next_link(&reply.body);
        if next.is_some() {
            assert_eq!(page.len(), count, "a page before the last is full: {url}");
        }
        ids.extend(page);
        pages += 1;
        assert!(pages < 100, "paging does not end");
    }
    ids
}

fn assert_each_once(case: &str, got: &[String], expected: &BTreeSet<String>) {
    let unique: BTreeSet<String> = got.iter().cloned().collect();
    assert_eq!(
        unique.len(),
        got.len(),
        "{case}: a match was returned twice"
    );
    assert_eq!(&unique, expected, "{case}: every match exactly once");
}

async fn paging_cases(engine: Engine) {
    let server = Server::start(engine).await;
    let (_tenant, client) = server.tenant_with_client("Paging Trust").await;
    let fhir = Fhir::new(&server, &client);

    // Family names longer than the 5-character prefix token: the index over-matches
    // "Abcde…" and the re-check must drop the ones that do not start with the query.
    // Runs of non-matching candidates longer than a candidate batch sit between the matches.
    let mut matching = BTreeSet::new();
    let layout = [(3, 2), (4, 20), (7, 1), (2, 25), (9, 3), (0, 0)];
    let mut n = 0;
    for (matches, misses) in layout {
        for _ in 0..matches {
            n += 1;
            let (id, _) = make(
                &fhir,
                json!({"resourceType": "Patient", "name": [{"family": format!("Abcdefghijklmnop{n}"), "given": ["Pat"]}]}),
            )
            .await;
            matching.insert(id);
        }
        for _ in 0..misses {
            n += 1;
            make(
                &fhir,
                json!({"resourceType": "Patient", "name": [{"family": format!("Abcdefghijklxyz{n}"), "given": ["Pat"]}]}),
            )
            .await;
        }
    }
    assert_eq!(matching.len(), 25);
    for (case, query) in [
        ("default order", "Patient?family=abcdefghijklmn&_count=7"),
        (
            "oldest first",
            "Patient?family=abcdefghijklmn&_count=7&_sort=_lastUpdated",
        ),
        (
            "newest first",
            "Patient?family=ABCDEFGHIJKLMNO&_count=7&_sort=-_lastUpdated",
        ),
        ("page of one", "Patient?family=abcdefghijklmnop&_count=1"),
        ("page of 25", "Patient?family=abcdefghijklmnop&_count=25"),
    ] {
        let got = all_pages(&fhir, query, query_count(query)).await;
        assert_each_once(case, &got, &matching);
    }
    let newest_first = all_pages(
        &fhir,
        "Patient?family=abcdefghijklmn&_count=7&_sort=-_lastUpdated",
        7,
    )
    .await;
    let oldest_first = all_pages(
        &fhir,
        "Patient?family=abcdefghijklmn&_count=7&_sort=_lastUpdated",
        7,
    )
    .await;
    let mut reversed = oldest_first.clone();
    reversed.reverse();
    assert_eq!(
        newest_first, reversed,
        "descending order is the reverse of ascending"
    );

    // Many resources with the same lastUpdated (one transaction): ties are broken by id, so
    // keyset paging still returns each exactly once.
    let mut entries = Vec::new();
    for i in 0..40 {
        let family = if i % 3 == 0 {
            format!("Zyxwvutsrqponm{i}")
        } else {
            format!("Zyxwvutsrqpxx{i}")
        };
        entries.push(json!({
            "request": {"method": "POST", "url": "Patient"},
            "resource": {"resourceType": "Patient", "name": [{"family": family}]}
        }));
    }
    let reply = fhir
        .post(
            "",
            &json!({"resourceType": "Bundle", "type": "transaction", "entry": entries}),
        )
        .await;
    assert_eq!(reply.status, 200, "{}", reply.body);
    let created: Vec<String> = reply.body["entry"]
        .as_array()
        .map(|entries| {
            entries
                .iter()
                .filter_map(|entry| entry["resource"]["id"].as_str().map(str::to_owned))
                .collect()
        })
        .unwrap_or_default();
    assert_eq!(created.len(), 40);
    let tied: BTreeSet<String> = created.iter().step_by(3).cloned().collect();
    assert_eq!(tied.len(), 14);
    for query in [
        "Patient?family=zyxwvutsrqponm&_count=3",
        "Patient?family=zyxwvutsrqponm&_count=3&_sort=-_lastUpdated",
    ] {
        let got = all_pages(&fhir, query, 3).await;
        assert_each_once(query, &got, &tied);
    }
}

fn query_count(query: &str) -> usize {
    query
        .split("_count=")
        .nth(1)
        .and_then(|rest| rest.split('&').next())
        .and_then(|n| n.parse().ok())
        .unwrap_or(20)
}
