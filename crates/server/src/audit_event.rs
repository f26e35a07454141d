//! `GET /fhir/AuditEvent`: the security officer's search of the audit trail, answered as FHIR
//! AuditEvent resources shaped after the IHE Basic Audit Log Patterns (BALP): a RESTful
//! interaction's type and subtype, the CRUDE action, the outcome code, the requesting agent
//! (the principal's id as an identifier, its session as `altId`, its network address), this
//! server as the observer, and entities for every patient whose data was touched (role 1,
//! Patient) and for the resource acted on (role 4, Domain Resource).
//!
//! AuditEvent is read-only and not one of the record types: only type search is routed here
//! (ahead of the generic `/fhir/{resource_type}` handler); writes get 405. Who may search, and
//! the audit record of the search itself, are the domain's ([`Records::audit_search`]).
//!
//! [`Records::audit_search`]: carevault_domain::records::Records

use axum::extract::{RawQuery, State};
use axum::http::StatusCode;
use axum::response::Response;
use carevault_domain::audit::storage::AuditFilter;
use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::records::{RecordError, parse_query_string};
use serde_json::{Value, json};
use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

use crate::ServerState;
use crate::auth::Authenticated;
use crate::outcome::{ApiError, fhir_response};
use crate::render::encode_query;

pub const PATH: &str = "/fhir/AuditEvent";

const AUDIT_EVENT_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-event-type";
const RESTFUL_INTERACTION: &str = "http://hl7.org/fhir/restful-interaction";
const ENTITY_TYPE: &str = "http://terminology.hl7.org/CodeSystem/audit-entity-type";
const OBJECT_ROLE: &str = "http://terminology.hl7.org/CodeSystem/object-role";
const BALP: &str = "https://profiles.ihe.net/ITI/BALP/StructureDefinition/";
/// The system of the identifiers this server gives its principals (`person/…`, `client/…`).
const PRINCIPAL_SYSTEM: &str = "urn:carevault:principal";
/// The system of this server's own action names, for events that are not REST interactions.
const ACTION_SYSTEM: &str = "urn:carevault:audit-action";

pub async fn search(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let filter = parse_filter(&pairs).map_err(ApiError)?;
    let records = state
        .records
        .audit_search(&principal, &filter, state.now_ms())
        .await?;
    let next = (records.len() >= filter.limit)
        .then(|| records.last().map(|record| record.seq))
        .flatten();
    Ok(fhir_response(
        StatusCode::OK,
        &bundle(&state.fhir_base(), &pairs, &records, next),
    ))
}

fn invalid(parameter: &str, message: impl Into<String>) -> RecordError {
    RecordError::invalid(parameter, message)
}

/// The search parameters: `patient`, `agent` (a principal as recorded: `person/<id>`,
/// `client/<id>`), `client` (a client id), `session`, `address`, `action` (this server's action
/// names: read, search, create, …), `outcome` (0 or a recorded outcome name), `date` (with
/// ge/gt/le/lt/eq prefixes, repeatable), `_count` and `_cursor`.
pub(crate) fn parse_filter(pairs: &[(String, String)]) -> Result<AuditFilter, RecordError> {
    let mut filter = AuditFilter {
        limit: carevault_domain::audit::search::DEFAULT_PAGE,
        ..AuditFilter::default()
    };
    for (key, value) in pairs {
        let value = value.trim();
        let once = |slot: &Option<String>| {
            if slot.is_some() {
                Err(invalid(key, format!("{key} may be given once")))
            } else if value.is_empty() {
                Err(invalid(key, format!("{key} needs a value")))
            } else {
                Ok(Some(value.to_owned()))
            }
        };
        match key.as_str() {
            "patient" => {
                let id = value.strip_prefix("Patient/").unwrap_or(value);
                filter.patient = once(&filter.patient)?.map(|_| id.to_owned());
            }
            "agent" => filter.principal = once(&filter.principal)?,
            "client" => {
                filter.principal = once(&filter.principal)?.map(|id| format!("client/{id}"));
            }
            "session" => filter.session = once(&filter.session)?,
            "address" => filter.source = once(&filter.source)?,
            "action" | "subtype" => filter.action = once(&filter.action)?,
            "outcome" => {
                if filter.outcome.is_some() {
                    return Err(invalid(key, "outcome may be given once"));
                }
                filter.outcome = Some(parse_outcome(value)?);
            }
            "date" => apply_date(&mut filter, value)?,
            "_count" => {
                filter.limit = value
                    .parse::<usize>()
                    .ok()
                    .filter(|count| *count > 0)
                    .ok_or_else(|| invalid(key, "_count must be a positive whole number"))?
                    .min(carevault_domain::audit::search::MAX_PAGE);
            }
            "_cursor" => {
                filter.before_seq = Some(
                    value
                        .parse::<i64>()
                        .ok()
                        .filter(|seq| *seq > 0)
                        .ok_or_else(|| invalid(key, "_cursor is not one this server gave"))?,
                );
            }
            "_format" => {}
            other => {
                return Err(invalid(
                    other,
                    format!(
                        "AuditEvent has no search parameter {other}; use patient, agent, client, \
                         session, address, action, outcome, date, _count or _cursor"
                    ),
                ));
            }
        }
    }
    Ok(filter)
}

fn parse_outcome(value: &str) -> Result<Outcome, RecordError> {
    let all = [
        Outcome::Success,
        Outcome::Denied,
        Outcome::NotFound,
        Outcome::Invalid,
        Outcome::IntegrityFailure,
        Outcome::Error,
    ];
    if value == "0" {
        return Ok(Outcome::Success);
    }
    all.into_iter()
        .find(|outcome| outcome.as_str() == value)
        .ok_or_else(|| {
            invalid(
                "outcome",
                "outcome is 0 (success) or one of success, denied, not-found, invalid, \
                 integrity-failure, error",
            )
        })
}

/// The first and one-past-the-last millisecond a date or instant covers.
fn date_range(text: &str) -> Option<(i64, i64)> {
    if let Ok(instant) = OffsetDateTime::parse(text, &Rfc3339) {
        let ms = i64::try_from(instant.unix_timestamp_nanos() / 1_000_000).ok()?;
        return Some((ms, ms + 1));
    }
    let format = time::macros::format_description!("[year]-[month]-[day]");
    let day = time::Date::parse(text, &format).ok()?;
    let start = day.midnight().assume_utc().unix_timestamp() * 1000;
    Some((start, start + 86_400_000))
}

fn apply_date(filter: &mut AuditFilter, value: &str) -> Result<(), RecordError> {
    let (prefix, text) = match value.get(..2) {
        Some(prefix @ ("ge" | "gt" | "le" | "lt" | "eq")) => (prefix, &value[2..]),
        _ => ("eq", value),
    };
    let (start, end) = date_range(text).ok_or_else(|| {
        invalid(
            "date",
            "date is a day (2026-01-31) or an instant (2026-01-31T09:00:00Z), optionally \
             prefixed ge, gt, le, lt or eq",
        )
    })?;
    let raise = |slot: &mut Option<i64>, ms: i64| *slot = Some(slot.map_or(ms, |v| v.max(ms)));
    let lower = |slot: &mut Option<i64>, ms: i64| *slot = Some(slot.map_or(ms, |v| v.min(ms)));
    match prefix {
        "ge" => raise(&mut filter.since_ms, start),
        "gt" => raise(&mut filter.since_ms, end),
        "le" => lower(&mut filter.until_ms, end),
        "lt" => lower(&mut filter.until_ms, start),
        _ => {
            raise(&mut filter.since_ms, start);
            lower(&mut filter.until_ms, end);
        }
    }
    Ok(())
}

fn bundle(
    fhir_base: &str,
    pairs: &[(String, String)],
    records: &[AuditRecord],
    next: Option<i64>,
) -> Value {
    let mut links = vec![json!({
        "relation": "self",
        "url": format!("{fhir_base}/AuditEvent?{}", encode_query(pairs)),
    })];
    if let Some(seq) = next {
        let mut kept: Vec<(String, String)> = pairs
            .iter()
            .filter(|(key, _)| key != "_cursor")
            .cloned()
            .collect();
        kept.push(("_cursor".to_owned(), seq.to_string()));
        links.push(json!({
            "relation": "next",
            "url": format!("{fhir_base}/AuditEvent?{}", encode_query(&kept)),
        }));
    }
    let entries: Vec<Value> = records
        .iter()
        .map(|record| {
            json!({
                "fullUrl": format!("{fhir_base}/AuditEvent/{}", record.seq),
                "resource": audit_event(record),
                "search": {"mode": "match"},
            })
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "searchset",
        "link": links,
        "entry": entries,
    })
}

/// The RESTful interaction code of a recorded action, if it is one.
fn interaction(record: &AuditRecord) -> Option<&'static str> {
    Some(match record.action.as_str() {
        "read" => "read",
        "vread" => "vread",
        "search" | "audit.search" => "search-type",
        "history" if record.resource_id.is_some() => "history-instance",
        "history" => "history-type",
        "create" => "create",
        "update" => "update",
        "delete" => "delete",
        "transaction" => "transaction",
        "batch" => "batch",
        _ => return None,
    })
}

/// The CRUDE action code.
fn action_code(record: &AuditRecord) -> &'static str {
    match record.action.as_str() {
        "read" | "vread" | "search" | "history" | "audit.search" => "R",
        "create" => "C",
        "update" => "U",
        "delete" => "D",
        _ => "E",
    }
}

/// The AuditEvent outcome: 0 success, 4 minor failure (refused, not found, invalid), 8 serious
/// failure (an error, stored data failing its check).
fn outcome_code(outcome: Outcome) -> &'static str {
    match outcome {
        Outcome::Success => "0",
        Outcome::Denied | Outcome::NotFound | Outcome::Invalid => "4",
        Outcome::Error | Outcome::IntegrityFailure => "8",
    }
}

/// The BALP profile a patient-related REST event follows.
fn profile(record: &AuditRecord) -> Option<String> {
    if record.subjects.is_empty() {
        return None;
    }
    let name = match record.action.as_str() {
        "read" | "vread" => "IHE.BasicAudit.PatientRead",
        "search" | "history" => "IHE.BasicAudit.PatientQuery",
        "create" => "IHE.BasicAudit.PatientCreate",
        "update" => "IHE.BasicAudit.PatientUpdate",
        "delete" => "IHE.BasicAudit.PatientDelete",
        _ => return None,
    };
    Some(format!("{BALP}{name}"))
}

fn recorded(time_ms: i64) -> String {
    OffsetDateTime::from_unix_timestamp_nanos(i128::from(time_ms) * 1_000_000)
        .ok()
        .and_then(|time| time.format(&Rfc3339).ok())
        .unwrap_or_default()
}

pub(crate) fn audit_event(record: &AuditRecord) -> Value {
    let mut event = json!({
        "resourceType": "AuditEvent",
        "id": record.seq.to_string(),
        "recorded": recorded(record.time_ms),
        "action": action_code(record),
        "outcome": outcome_code(record.outcome),
        "outcomeDesc": record.outcome.as_str(),
        "source": {
            "observer": {"display": "carevault"},
            "type": [{
                "system": "http://terminology.hl7.org/CodeSystem/security-source-type",
                "code": "4",
                "display": "Application Server",
            }],
        },
    });
    match interaction(record) {
        Some(code) => {
            event["type"] =
                json!({"system": AUDIT_EVENT_TYPE, "code": "rest", "display": "RESTful Operation"});
            event["subtype"] = json!([{"system": RESTFUL_INTERACTION, "code": code}]);
        }
        None => {
            event["type"] = json!({"system": ACTION_SYSTEM, "code": record.action});
        }
    }
    if let Some(profile) = profile(record) {
        event["meta"] = json!({"profile": [profile]});
    }
    if let Some(purpose) = &record.purpose {
        event["purposeOfEvent"] = json!([{"text": purpose}]);
    }
    let person =
        record.principal.starts_with("person/") || record.principal.starts_with("operator/");
    let mut agent = json!({
        "type": if person {
            json!({"coding": [{
                "system": "http://terminology.hl7.org/CodeSystem/extra-security-role-type",
                "code": "humanuser",
                "display": "human user",
            }]})
        } else {
            json!({"coding": [{
                "system": "http://dicom.nema.org/resources/ontology/DCM",
                "code": "110153",
                "display": "Source Role ID",
            }]})
        },
        "who": {"identifier": {"system": PRINCIPAL_SYSTEM, "value": record.principal}},
        "requestor": true,
        "role": record.roles.iter().map(|role| json!({"text": role})).collect::<Vec<_>>(),
    });
    if let Some(session) = &record.session {
        agent["altId"] = json!(session);
    }
    if let Some(address) = &record.source {
        agent["network"] = json!({"address": address, "type": "2"});
    }
    event["agent"] = json!([agent]);
    let mut entities: Vec<Value> = record
        .subjects
        .iter()
        .map(|patient| {
            json!({
                "what": {"reference": format!("Patient/{patient}")},
                "type": {"system": ENTITY_TYPE, "code": "1", "display": "Person"},
                "role": {"system": OBJECT_ROLE, "code": "1", "display": "Patient"},
            })
        })
        .collect();
    if let Some(resource_type) = &record.resource_type {
        let what = match &record.resource_id {
            Some(id) => json!({"reference": format!("{resource_type}/{id}")}),
            None => json!({"type": resource_type}),
        };
        let mut entity = json!({
            "what": what,
            "type": {"system": ENTITY_TYPE, "code": "2", "display": "System Object"},
            "role": {"system": OBJECT_ROLE, "code": "4", "display": "Domain Resource"},
        });
        if !record.categories.is_empty() {
            entity["detail"] = json!(
                record
                    .categories
                    .iter()
                    .map(|category| json!({"type": "category", "valueString": category}))
                    .collect::<Vec<_>>()
            );
        }
        if let Some(detail) = &record.detail {
            entity["description"] = json!(detail);
        }
        entities.push(entity);
    }
    if !entities.is_empty() {
        event["entity"] = json!(entities);
    }
    event
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pairs(query: &str) -> Vec<(String, String)> {
        parse_query_string(query)
    }

    #[test]
    fn parameters_become_a_filter() {
        let filter = parse_filter(&pairs(
            "patient=Patient/p1&agent=person/a&date=ge2026-01-02&date=lt2026-01-03&outcome=0&_count=2&_cursor=9",
        ))
        .unwrap_or_else(|error| panic!("{error}"));
        assert_eq!(filter.patient.as_deref(), Some("p1"));
        assert_eq!(filter.principal.as_deref(), Some("person/a"));
        assert_eq!(filter.outcome, Some(Outcome::Success));
        assert_eq!(filter.since_ms, Some(1_767_312_000_000));
        assert_eq!(filter.until_ms, Some(1_767_398_400_000));
        assert_eq!((filter.limit, filter.before_seq), (2, Some(9)));
        assert!(parse_filter(&pairs("name=Smith")).is_err());
        assert!(parse_filter(&pairs("date=yesterday")).is_err());
        assert!(parse_filter(&pairs("_cursor=x")).is_err());
        let client = parse_filter(&pairs("client=c1")).unwrap_or_default();
        assert_eq!(client.principal.as_deref(), Some("client/c1"));
    }
}
