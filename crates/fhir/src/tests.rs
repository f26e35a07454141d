//! Crate-level tests: validation, terms/query symmetry, date prefixes, references.
#![allow(clippy::unwrap_used, clippy::panic)]

use serde_json::{Value, json};

use crate::*;

fn rt(name: &str) -> ResourceType {
    resource_type(name).unwrap()
}

fn issues_of(resource: Value) -> Vec<Issue> {
    validate(&resource, None).unwrap_err()
}

fn has_issue(issues: &[Issue], code: IssueCode, path: &str) -> bool {
    issues.iter().any(|i| i.code == code && i.path == path)
}

fn patient() -> Value {
    json!({
        "resourceType": "Patient",
        "id": "example",
        "meta": {"versionId": "1", "lastUpdated": "2024-01-02T10:00:00Z"},
        "text": {"status": "generated", "div": "<div xmlns=\"http://www.w3.org/1999/xhtml\">José</div>"},
        "identifier": [{"system": NHS_NUMBER_SYSTEM, "value": "1745438912"}],
        "active": true,
        "name": [{"use": "official", "family": "Smith-Jones", "given": ["José", "Luis"]}],
        "telecom": [{"system": "phone", "value": "01234 567890"}, {"system": "email", "value": "jose@example.org"}],
        "gender": "male",
        "birthDate": "1974-12-25",
        "_birthDate": {"extension": [{"url": "http://hl7.org/fhir/StructureDefinition/patient-birthTime", "valueDateTime": "1974-12-25T14:35:45-05:00"}]},
        "deceasedBoolean": false,
        "address": [{"line": ["1 High St"], "city": "Leeds", "postalCode": "LS1 4AP"}],
        "contact": [{"relationship": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/v2-0131", "code": "N"}]}], "name": {"family": "Smith"}}],
        "managingOrganization": {"reference": "Organization/1"}
    })
}

fn observation() -> Value {
    json!({
        "resourceType": "Observation",
        "id": "bp",
        "status": "final",
        "category": [{"coding": [{"system": "http://terminology.hl7.org/CodeSystem/observation-category", "code": "vital-signs"}]}],
        "code": {"coding": [{"system": "http://loinc.org", "code": "29463-7", "display": "Body Weight"}]},
        "subject": {"reference": "Patient/example"},
        "encounter": {"reference": "Encounter/e1"},
        "effectiveDateTime": "2024-03-01T10:00:00Z",
        "valueQuantity": {"value": 72.50, "unit": "kg", "system": "http://unitsofmeasure.org", "code": "kg"},
        "component": [{"code": {"text": "x"}, "valueString": "y"}]
    })
}

#[test]
fn accepts_official_looking_resources() {
    assert_eq!(validate(&patient(), Some(rt("Patient"))), Ok(rt("Patient")));
    assert_eq!(validate(&observation(), None), Ok(rt("Observation")));
    let contained = json!({"resourceType": "MedicationRequest", "status": "active", "intent": "order",
        "contained": [{"resourceType": "Medication", "id": "med1", "code": {"text": "Aspirin"}}],
        "medicationReference": {"reference": "#med1"}, "subject": {"reference": "urn:uuid:4a5b6c7d-1234-4abc-8def-0123456789ab"},
        "dosageInstruction": [{"timing": {"repeat": {"frequency": 1, "period": 1, "periodUnit": "d"}},
            "doseAndRate": [{"doseQuantity": {"value": 75, "unit": "mg"}}]}]});
    assert_eq!(validate(&contained, None), Ok(rt("MedicationRequest")));
}

#[test]
fn rejects_wrong_shapes_with_paths() {
    let mut p = patient();
    p["nickname"] = json!("Joe");
    p["name"][0]["given"][1] = json!("");
    p["birthDate"] = json!("1974-13-01");
    p["gender"] = json!(["male"]);
    p["address"] = json!({"city": "Leeds"});
    p["identifier"][0]["value"] = json!("1745438913");
    p["managingOrganization"]["reference"] = json!("Organization 1");
    p["active"] = json!("true");
    p["contact"][0]["name"] = json!({});
    p["deceasedDateTime"] = json!("2020-01-01");
    let issues = issues_of(p);
    assert!(
        has_issue(&issues, IssueCode::Structure, "Patient.nickname"),
        "{issues:#?}"
    );
    assert!(has_issue(
        &issues,
        IssueCode::Value,
        "Patient.name[0].given[1]"
    ));
    assert!(has_issue(&issues, IssueCode::Value, "Patient.birthDate"));
    assert!(has_issue(&issues, IssueCode::Structure, "Patient.gender"));
    assert!(has_issue(&issues, IssueCode::Structure, "Patient.address"));
    assert!(has_issue(
        &issues,
        IssueCode::Value,
        "Patient.identifier[0].value"
    ));
    assert!(has_issue(
        &issues,
        IssueCode::Value,
        "Patient.managingOrganization.reference"
    ));
    assert!(has_issue(&issues, IssueCode::Value, "Patient.active"));
    assert!(has_issue(
        &issues,
        IssueCode::Structure,
        "Patient.contact[0].name"
    ));
    assert!(has_issue(
        &issues,
        IssueCode::Structure,
        "Patient.deceasedDateTime"
    ));
}

#[test]
fn rejects_missing_required_and_double_choice() {
    let mut o = observation();
    let object = o.as_object_mut().unwrap();
    object.remove("status");
    object.remove("code");
    object.insert("valueString".into(), json!("heavy"));
    let issues = issues_of(o);
    assert!(
        has_issue(&issues, IssueCode::Required, "Observation.status"),
        "{issues:#?}"
    );
    assert!(has_issue(&issues, IssueCode::Required, "Observation.code"));
    assert!(has_issue(
        &issues,
        IssueCode::Structure,
        "Observation.valueString"
    ));
    let issues = issues_of(
        json!({"resourceType": "Observation", "status": "final", "code": {"text": "x"},
        "component": [{"valueString": "y"}], "valueFoo": 1}),
    );
    assert!(
        has_issue(
            &issues,
            IssueCode::Required,
            "Observation.component[0].code"
        ),
        "{issues:#?}"
    );
    assert!(has_issue(
        &issues,
        IssueCode::Structure,
        "Observation.valueFoo"
    ));
}

#[test]
fn rejects_resource_level_mistakes() {
    assert_eq!(issues_of(json!([]))[0].code, IssueCode::Structure);
    assert_eq!(
        issues_of(json!({"resourceType": "Basic"}))[0].code,
        IssueCode::NotSupported
    );
    assert_eq!(issues_of(json!({"id": "x"}))[0].code, IssueCode::Required);
    let err = validate(&patient(), Some(rt("Observation"))).unwrap_err();
    assert_eq!(err[0].code, IssueCode::Invalid);
    let issues = issues_of(
        json!({"resourceType": "Patient", "id": "bad id", "extension": [{"url": "http://x"}]}),
    );
    assert!(has_issue(&issues, IssueCode::Value, "Patient.id"));
    assert!(has_issue(
        &issues,
        IssueCode::Invariant,
        "Patient.extension[0]"
    ));
    let issues =
        issues_of(json!({"resourceType": "Patient", "name": [], "_gender": {"extension": []}}));
    assert!(has_issue(&issues, IssueCode::Structure, "Patient.name"));
    assert!(has_issue(
        &issues,
        IssueCode::Structure,
        "Patient._gender.extension"
    ));
}

#[test]
fn primitive_extension_arrays_align() {
    let ok = json!({"resourceType": "Patient", "name": [{"given": ["A", null],
        "_given": [null, {"extension": [{"url": "http://x", "valueCode": "z"}]}]}]});
    assert!(validate(&ok, None).is_ok());
    let bad = json!({"resourceType": "Patient", "name": [{"given": ["A", null]}]});
    assert!(validate(&bad, None).is_err());
}

#[test]
fn parse_json_keeps_decimals_order_and_extensions() {
    let text = r#"{"resourceType":"Observation","status":"final","code":{"text":"w"},"valueQuantity":{"value":72.50,"unit":"kg"},"_status":{"extension":[{"url":"http://x","valueDecimal":1.000}]}}"#;
    let value = parse_json(text.as_bytes()).unwrap();
    assert!(validate(&value, None).is_ok());
    assert_eq!(serde_json::to_string(&value).unwrap(), text);
    let err = parse_json(b"{\n  \"a\": }").unwrap_err();
    assert_eq!(err[0].path, "");
    assert!(err[0].message.contains("line 2"), "{}", err[0].message);
}

fn terms(rt_name: &str, resource: &Value, param: &str) -> Vec<String> {
    index_entries(rt(rt_name), resource)
        .into_iter()
        .filter_map(|e| match e {
            IndexEntry::Term { param: p, term } if p == param => Some(term),
            _ => None,
        })
        .collect()
}

fn query(rt_name: &str, key: &str, value: &str) -> SearchQuery {
    parse_search(rt(rt_name), &[(key.to_owned(), value.to_owned())]).unwrap()
}

/// The filter's lookup terms are found in the index, and matches() agrees.
fn found(rt_name: &str, resource: &Value, key: &str, value: &str) -> bool {
    let q = query(rt_name, key, value);
    let filter = &q.params[0];
    let indexed = match filter.lookup() {
        Lookup::Terms {
            param,
            also,
            any_of,
        } => std::iter::once(param)
            .chain(also.iter().copied())
            .any(|param| {
                let have = terms(rt_name, resource, param);
                any_of.iter().any(|t| have.contains(t))
            }),
        other => panic!("expected terms for {key}, got {other:?}"),
    };
    let matched = filter.matches(resource, "example", 0);
    assert!(
        !matched || indexed,
        "{key}={value} matches but the index would not find it"
    );
    matched
}

#[test]
fn term_symmetry() {
    let p = patient();
    assert!(found("Patient", &p, "name", "jose"));
    assert!(found("Patient", &p, "name", "JOSÉ"));
    assert!(found("Patient", &p, "family", "smi"));
    assert!(found("Patient", &p, "family", "jones"));
    assert!(!found("Patient", &p, "family", "smyth"));
    assert!(found("Patient", &p, "phonetic", "Smyth"));
    assert!(found("Patient", &p, "phonetic", "Jonez"));
    assert!(!found("Patient", &p, "phonetic", "Brown"));
    assert!(found("Patient", &p, "name:exact", "José"));
    assert!(!found("Patient", &p, "name:exact", "jose"));
    assert!(found("Patient", &p, "given", "lu,zz"));
    assert!(found(
        "Patient",
        &p,
        "identifier",
        &format!("{NHS_NUMBER_SYSTEM}|1745438912")
    ));
    assert!(found("Patient", &p, "identifier", "1745438912"));
    assert!(!found("Patient", &p, "identifier", "|1745438912"));
    assert!(found(
        "Patient",
        &p,
        "identifier",
        &format!("{NHS_NUMBER_SYSTEM}|")
    ));
    assert!(found("Patient", &p, "gender", "male"));
    assert!(found("Patient", &p, "active", "true"));
    assert!(found("Patient", &p, "phone", "01234 567890"));
    assert!(!found("Patient", &p, "email", "01234 567890"));
    assert!(found("Patient", &p, "address-postalcode", "ls1"));
    assert!(found("Patient", &p, "birthdate", "1974"));
    assert!(found("Patient", &p, "birthdate", "1974-12-25"));
    assert!(!found("Patient", &p, "birthdate", "1974-11"));
    // Longer than the longest prefix term: its first five characters are looked up (under
    // the name and the parts it includes), and the re-check decides.
    let long = query("Patient", "name", "Smith-Jonesxyzabc");
    assert_eq!(
        long.params[0].lookup(),
        Lookup::Terms {
            param: "name",
            also: &["family", "given"],
            any_of: vec!["p:smith".into()]
        }
    );
    assert!(!long.params[0].matches(&p, "example", 0));
    let lt = query("Patient", "birthdate", "lt1975");
    assert_eq!(lt.params[0].lookup(), Lookup::Unindexed);
    assert!(lt.params[0].matches(&p, "example", 0));
}

/// A Patient's `name` includes its `family` and `given`, and `telecom` its `phone` and
/// `email`: their terms are written once, under the part, and a look-up of the whole finds
/// them there; what only the whole holds (a prefix, a text, a fax number) stays under it.
#[test]
fn a_term_of_an_included_parameter_is_written_once_and_found_through_it() {
    let mut p = patient();
    p["name"][0]["prefix"] = json!(["Dr"]);
    p["telecom"]
        .as_array_mut()
        .unwrap()
        .push(json!({"system": "fax", "value": "0113 496 0000"}));
    let name = terms("Patient", &p, "name");
    let parts = [
        terms("Patient", &p, "family"),
        terms("Patient", &p, "given"),
    ]
    .concat();
    assert!(parts.contains(&"p:smith".to_owned()) && parts.contains(&"e:jose".to_owned()));
    assert!(
        name.iter().all(|term| !parts.contains(term)),
        "{name:?} repeats a term of {parts:?}"
    );
    assert!(name.contains(&"e:dr".to_owned()), "{name:?}");
    assert!(found("Patient", &p, "name", "dr"));
    assert!(found("Patient", &p, "name", "smith-jo"));
    assert!(found("Patient", &p, "name", "lu"));
    assert!(found("Patient", &p, "name:exact", "José"));
    assert!(!found("Patient", &p, "name", "brown"));

    let telecom = terms("Patient", &p, "telecom");
    let contacts = [terms("Patient", &p, "phone"), terms("Patient", &p, "email")].concat();
    assert!(contacts.contains(&"t:|01234 567890".to_owned()));
    assert!(
        telecom.iter().all(|term| !contacts.contains(term)),
        "{telecom:?}"
    );
    assert!(
        telecom.contains(&"t:|0113 496 0000".to_owned()),
        "{telecom:?}"
    );
    assert!(found("Patient", &p, "telecom", "01234 567890"));
    assert!(found("Patient", &p, "telecom", "jose@example.org"));
    assert!(found("Patient", &p, "telecom", "0113 496 0000"));
    assert!(!found("Patient", &p, "phone", "0113 496 0000"));

    // A `subject`'s references to patients are its `patient`'s.
    let o = observation();
    let patient_ref = "r:Patient/example".to_owned();
    assert!(terms("Observation", &o, "patient").contains(&patient_ref));
    assert!(!terms("Observation", &o, "subject").contains(&patient_ref));
    assert!(found("Observation", &o, "subject", "Patient/example"));
}

/// An included parameter is one the type has, of the same kind (so a query's terms mean the
/// same under it), whose paths lie within the including one's (so a sort by the including
/// parameter over both sets of rows takes the same earliest date), and includes nothing
/// itself: its own terms are all written, which is what a look-up of the including
/// parameter relies on.
#[test]
fn included_parameters_are_of_the_same_type_and_kind_and_include_nothing() {
    let mut seen = Vec::new();
    for rt in supported_types() {
        for param in rt.search_params() {
            for name in param.includes {
                let what = format!("{}.{} includes {name}", rt.name(), param.name);
                let included = rt
                    .search_param(name)
                    .unwrap_or_else(|| panic!("{what}: unknown"));
                assert_eq!(included.kind, param.kind, "{what}");
                assert!(
                    included.includes.is_empty(),
                    "{what}, which includes others"
                );
                assert!(
                    included.paths.iter().all(|path| param
                        .paths
                        .iter()
                        .any(|outer| path == outer || path.starts_with(&format!("{outer}.")))),
                    "{what}: {:?} outside {:?}",
                    included.paths,
                    param.paths
                );
                seen.push(what);
            }
        }
    }
    assert_eq!(seen.len(), 19, "{seen:#?}");
}

/// The date parameters of `resource`'s index entries, in order.
fn date_params(rt_name: &str, resource: &Value) -> Vec<&'static str> {
    index_entries(rt(rt_name), resource)
        .into_iter()
        .filter_map(|e| match e {
            IndexEntry::Date { param, .. } => Some(param),
            IndexEntry::Term { .. } => None,
        })
        .collect()
}

/// A Condition's `date` is its onset or its recorded date: those ranges are written once,
/// under `onset-date` and `recorded-date`, and a `date` look-up reads them there. A
/// MedicationStatement's `date` is its `effective`.
#[test]
fn a_date_range_of_an_included_parameter_is_written_once_and_found_through_it() {
    let condition = json!({
        "resourceType": "Condition",
        "subject": {"reference": "Patient/example"},
        "onsetDateTime": "2024-03-01",
        "recordedDate": "2024-03-04"
    });
    assert_eq!(
        date_params("Condition", &condition),
        ["onset-date", "recorded-date"]
    );
    for value in ["2024-03-01", "2024-03-04", "ge2024-03-02"] {
        let q = query("Condition", "date", value);
        let Lookup::Dates { param, also, .. } = q.params[0].lookup() else {
            panic!("date={value}: {:?}", q.params[0].lookup());
        };
        assert_eq!(
            (param, also),
            ("date", &["onset-date", "recorded-date"][..])
        );
        assert!(q.params[0].matches(&condition, "c", 0), "date={value}");
    }
    let statement = json!({
        "resourceType": "MedicationStatement",
        "status": "active",
        "medicationCodeableConcept": {"text": "x"},
        "subject": {"reference": "Patient/example"},
        "effectiveDateTime": "2024-03-01"
    });
    assert_eq!(
        date_params("MedicationStatement", &statement),
        ["effective"]
    );
}

#[test]
fn clinical_terms_and_dates() {
    let o = observation();
    assert!(found("Observation", &o, "code", "http://loinc.org|29463-7"));
    assert!(found("Observation", &o, "code", "29463-7"));
    assert!(found("Observation", &o, "patient", "example"));
    assert!(found("Observation", &o, "subject", "Patient/example"));
    assert!(found("Observation", &o, "category", "vital-signs"));
    assert!(found("Observation", &o, "status", "final"));
    assert!(found("Observation", &o, "encounter", "e1"));
    let entries = index_entries(rt("Observation"), &o);
    let day = 1_709_251_200_000;
    let at = day + 10 * 3_600_000;
    assert!(entries.contains(&IndexEntry::Date {
        param: "date",
        low: at,
        high: at + 1000
    }));
    let q = query("Observation", "date", "ge2024-03-01");
    assert!(matches!(
        q.params[0].lookup(),
        Lookup::Dates { param: "date", .. }
    ));
    assert!(q.params[0].matches(&o, "bp", 0));
    assert!(!query("Observation", "date", "gt2024-03-01").params[0].matches(&o, "bp", 0));
    assert_eq!(data_subjects(rt("Observation"), &o, "bp"), vec!["example"]);
    assert_eq!(data_subjects(rt("Patient"), &patient(), "p1"), vec!["p1"]);
    assert_eq!(
        crate::data_subjects_without_body(rt("Patient"), "p1"),
        Some(vec!["p1".to_owned()])
    );
    assert_eq!(
        crate::data_subjects_without_body(rt("Observation"), "bp"),
        None
    );
    let appt = json!({"resourceType": "Appointment", "participant": [
        {"actor": {"reference": "Patient/b"}}, {"actor": {"reference": "Practitioner/x"}}, {"actor": {"reference": "Patient/a"}}, {"actor": {"reference": "Patient/a"}}]});
    assert_eq!(
        data_subjects(rt("Appointment"), &appt, "ap"),
        vec!["a", "b"]
    );
}

#[test]
fn date_prefix_semantics() {
    // Query: the day 2024-03-01 = [q, q + DAY).
    const DAY: i64 = 86_400_000;
    let q = 1_709_251_200_000;
    let inside = (q + 1000, q + 2000);
    let before = (q - DAY, q - 1);
    let after = (q + DAY, q + 2 * DAY);
    let spanning = (q - DAY, q + 2 * DAY);
    let cases = [
        (DatePrefix::Eq, [true, false, false, false]),
        (DatePrefix::Ne, [false, true, true, true]),
        (DatePrefix::Lt, [false, true, false, true]),
        (DatePrefix::Le, [true, true, false, true]),
        (DatePrefix::Gt, [false, false, true, true]),
        (DatePrefix::Ge, [true, false, true, true]),
        (DatePrefix::Sa, [false, false, true, false]),
        (DatePrefix::Eb, [false, true, false, false]),
    ];
    for (prefix, expected) in cases {
        let c = DateCondition {
            prefix,
            low: q,
            high: q + DAY,
        };
        let got = [inside, before, after, spanning].map(|(l, h)| c.matches(l, h));
        assert_eq!(got, expected, "{prefix:?}");
    }
}

#[test]
fn parse_search_specials_and_errors() {
    let pairs: Vec<(String, String)> = [
        ("_id", "a,b"),
        ("_count", "5000"),
        ("_sort", "-date"),
        ("_include", "Observation:subject:Patient"),
        ("_cursor", "abc"),
        ("_format", "json"),
        ("_lastUpdated", "gt2024-01-01"),
    ]
    .iter()
    .map(|(k, v)| ((*k).to_owned(), (*v).to_owned()))
    .collect();
    let q = parse_search(rt("Observation"), &pairs).unwrap();
    assert_eq!(q.count, Some(1000));
    assert!(matches!(
        q.sort,
        Some(SortKey::Date {
            param: "date",
            descending: true
        })
    ));
    assert_eq!(q.cursor.as_deref(), Some("abc"));
    assert_eq!(
        q.params[0].lookup(),
        Lookup::Ids(vec!["a".into(), "b".into()])
    );
    assert!(q.params[0].matches(&Value::Null, "b", 0));
    assert!(q.params[1].matches(&Value::Null, "x", 1_800_000_000_000));
    assert_eq!(
        q.includes[0].references(&observation()),
        vec!["Patient/example"]
    );
    let err = |k: &str, v: &str| {
        parse_search(rt("Observation"), &[(k.to_owned(), v.to_owned())]).unwrap_err()
    };
    for (k, v, code) in [
        ("foo", "1", IssueCode::NotSupported),
        ("code:text", "x", IssueCode::NotSupported),
        ("date", "xx2024", IssueCode::NotSupported),
        ("date", "2024-13", IssueCode::Invalid),
        ("subject", "123", IssueCode::Invalid),
        ("_sort", "status", IssueCode::NotSupported),
        ("_include", "Observation:code", IssueCode::NotSupported),
        ("_include", "Patient:subject", IssueCode::NotSupported),
        ("_count", "-1", IssueCode::Invalid),
        ("_format", "xml", IssueCode::NotSupported),
    ] {
        let issue = err(k, v);
        assert_eq!(issue.code, code, "{k}={v}");
        assert!(
            issue.message.contains(k.split(':').next().unwrap_or(k)) || issue.message.contains(v),
            "{}",
            issue.message
        );
    }
    let missing = query("Observation", "encounter:missing", "true");
    assert_eq!(missing.params[0].lookup(), Lookup::Unindexed);
    assert!(!missing.params[0].matches(&observation(), "bp", 0));
}

#[test]
fn references_are_visited_and_rewritten() {
    let mut o = observation();
    o["subject"]["reference"] = json!("urn:uuid:4a5b6c7d-1234-4abc-8def-0123456789ab");
    o["extension"] = json!([{"url": "http://x", "valueExpression": {"language": "text/fhirpath", "reference": "http://e"}}]);
    let mut seen = Vec::new();
    for_each_reference(&o, &mut |r| seen.push(r.to_owned()));
    assert_eq!(
        seen,
        vec![
            "urn:uuid:4a5b6c7d-1234-4abc-8def-0123456789ab",
            "Encounter/e1"
        ]
    );
    for_each_reference_mut(&mut o, &mut |r| {
        if r.starts_with("urn:uuid:") {
            *r = "Patient/new".into();
        }
    });
    assert_eq!(data_subjects(rt("Observation"), &o, "bp"), vec!["new"]);
}
