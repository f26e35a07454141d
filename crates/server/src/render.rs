//! Resource and Bundle rendering, and the HTTP headers that go with them.

use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::Response;
use carevault_domain::bundle::{EntryBody, EntryResponse};
use carevault_domain::clock::format_instant;
use carevault_domain::records::ResourceView;
use carevault_domain::search::{HistoryPage, SearchPage};
use carevault_fhir::ResourceType;
use serde_json::{Value, json};

use crate::outcome::{fhir_response, fhir_text_response, record_error_parts};

/// What the client asked for with `Prefer: return=…`.
#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum Return {
    Minimal,
    Representation,
    OperationOutcome,
}

pub fn prefer_return(headers: &HeaderMap) -> Return {
    let prefer = headers
        .get_all("prefer")
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(','))
        .map(str::trim)
        .find_map(|item| item.strip_prefix("return="));
    match prefer {
        Some("minimal") => Return::Minimal,
        Some("OperationOutcome") => Return::OperationOutcome,
        _ => Return::Representation,
    }
}

fn http_date(ms: i64) -> Option<String> {
    let t = time::OffsetDateTime::from_unix_timestamp(ms.div_euclid(1000)).ok()?;
    let format = time::macros::format_description!(
        "[weekday repr:short], [day] [month repr:short] [year] [hour]:[minute]:[second] GMT"
    );
    t.format(&format).ok()
}

fn etag(version: i64) -> String {
    format!("W/\"{version}\"")
}

/// A single resource (read, vread, create, update) with ETag, Last-Modified and, for writes,
/// Location.
pub fn resource_response(
    status: StatusCode,
    view: &ResourceView,
    fhir_base: &str,
    with_location: bool,
    prefer: Return,
) -> Response {
    let mut response = match (prefer, &view.body) {
        // The resource's text as stored (or as the write serialised it), not parsed and
        // written out again.
        (Return::Representation, Some(body)) => fhir_text_response(status, body.text().to_owned()),
        (Return::OperationOutcome, _) => fhir_response(
            status,
            &json!({
                "resourceType": "OperationOutcome",
                "issue": [{"severity": "information", "code": "informational",
                           "diagnostics": "the request succeeded"}]
            }),
        ),
        (Return::Representation, None) | (Return::Minimal, _) => {
            let mut response = Response::new(axum::body::Body::empty());
            *response.status_mut() = status;
            response
        }
    };
    let headers = response.headers_mut();
    if let Ok(value) = HeaderValue::from_str(&etag(view.version)) {
        headers.insert(header::ETAG, value);
    }
    if let Some(value) =
        http_date(view.last_updated_ms).and_then(|d| HeaderValue::from_str(&d).ok())
    {
        headers.insert(header::LAST_MODIFIED, value);
    }
    if with_location {
        let location = format!(
            "{fhir_base}/{}/{}/_history/{}",
            view.resource_type.name(),
            view.id,
            view.version
        );
        if let Ok(value) = HeaderValue::from_str(&location) {
            headers.insert(header::LOCATION, value.clone());
            headers.insert(header::CONTENT_LOCATION, value);
        }
    }
    response
}

fn full_url(fhir_base: &str, view: &ResourceView) -> String {
    format!("{fhir_base}/{}/{}", view.resource_type.name(), view.id)
}

pub(crate) fn encode_query(pairs: &[(String, String)]) -> String {
    let mut serializer = form_urlencoded::Serializer::new(String::new());
    for (key, value) in pairs {
        serializer.append_pair(key, value);
    }
    serializer.finish()
}

/// A searchset Bundle with self and next links (the next link carries the opaque cursor), as
/// JSON text. Each resource goes in as the text it was sealed as, the way a read sends it, not
/// copied as a tree into the Bundle's own tree and written out again: that copy and its
/// serialisation were a tenth of the server's CPU in an NHS-number search at 100,000 patients.
pub fn searchset(
    fhir_base: &str,
    rt: ResourceType,
    pairs: &[(String, String)],
    page: &SearchPage,
) -> String {
    let kept: Vec<(String, String)> = pairs
        .iter()
        .filter(|(key, _)| key != "_cursor")
        .cloned()
        .collect();
    let self_url = format!("{fhir_base}/{}?{}", rt.name(), encode_query(pairs));
    let mut links = vec![json!({"relation": "self", "url": self_url})];
    if let Some(cursor) = &page.next_cursor {
        let mut next = kept.clone();
        next.push(("_cursor".to_owned(), cursor.clone()));
        links.push(json!({
            "relation": "next",
            "url": format!("{fhir_base}/{}?{}", rt.name(), encode_query(&next)),
        }));
    }
    let entries = page
        .matches
        .iter()
        .map(|view| (view, "match"))
        .chain(page.included.iter().map(|view| (view, "include")));
    let resources: usize = entries
        .clone()
        .filter_map(|(view, _)| view.body.as_ref())
        .map(|body| body.text().len() + 128)
        .sum();
    let mut text = String::with_capacity(resources + 256);
    text.push_str(r#"{"resourceType":"Bundle","type":"searchset","link":"#);
    text.push_str(&Value::Array(links).to_string());
    text.push_str(r#","entry":["#);
    for (index, (view, mode)) in entries.enumerate() {
        if index > 0 {
            text.push(',');
        }
        text.push_str(r#"{"fullUrl":"#);
        text.push_str(&Value::from(full_url(fhir_base, view)).to_string());
        if let Some(body) = &view.body {
            text.push_str(r#","resource":"#);
            text.push_str(body.text());
        }
        text.push_str(r#","search":{"mode":""#);
        text.push_str(mode);
        text.push_str(r#""}}"#);
    }
    text.push_str("]}");
    text
}

pub fn history_bundle(
    fhir_base: &str,
    path: &str,
    pairs: &[(String, String)],
    page: &HistoryPage,
) -> Value {
    let mut links = vec![
        json!({"relation": "self", "url": format!("{fhir_base}/{path}?{}", encode_query(pairs))}),
    ];
    if let Some(cursor) = &page.next_cursor {
        let mut next: Vec<(String, String)> = pairs
            .iter()
            .filter(|(key, _)| key != "_cursor")
            .cloned()
            .collect();
        next.push(("_cursor".to_owned(), cursor.clone()));
        links.push(json!({"relation": "next", "url": format!("{fhir_base}/{path}?{}", encode_query(&next))}));
    }
    let entries: Vec<Value> = page
        .entries
        .iter()
        .map(|view| {
            let url = format!("{}/{}", view.resource_type.name(), view.id);
            let mut entry = json!({
                "fullUrl": full_url(fhir_base, view),
                "response": {
                    "status": if view.body.is_some() { "200" } else { "204" },
                    "etag": etag(view.version),
                    "lastModified": format_instant(view.last_updated_ms),
                },
            });
            match &view.body {
                Some(body) => {
                    entry["resource"] = body.value().clone();
                    let method = if view.version == 1 { "POST" } else { "PUT" };
                    let url = if view.version == 1 {
                        view.resource_type.name().to_owned()
                    } else {
                        url
                    };
                    entry["request"] = json!({"method": method, "url": url});
                }
                None => entry["request"] = json!({"method": "DELETE", "url": url}),
            }
            entry
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": "history",
        "link": links,
        "entry": entries,
    })
}

fn status_line(status: u16) -> String {
    let reason = StatusCode::from_u16(status)
        .ok()
        .and_then(|code| code.canonical_reason())
        .unwrap_or("");
    format!("{status} {reason}").trim_end().to_owned()
}

/// The response Bundle of a transaction or batch.
pub fn bundle_response(
    fhir_base: &str,
    kind: &str,
    responses: &[EntryResponse],
    prefer: Return,
) -> Value {
    let entries: Vec<Value> = responses
        .iter()
        .map(|entry| {
            let mut response = json!({});
            let mut resource = None;
            match &entry.body {
                EntryBody::Failed(error) => {
                    let (status, outcome) = record_error_parts(error);
                    response["status"] = json!(status_line(status.as_u16()));
                    response["outcome"] = outcome;
                }
                EntryBody::Resource(view) => {
                    response["status"] = json!(status_line(entry.status));
                    if prefer == Return::Representation {
                        resource = view.body.as_ref().map(|body| body.value().clone());
                    }
                }
                EntryBody::Search(rt, page) => {
                    response["status"] = json!(status_line(entry.status));
                    // The searchset's text is JSON by construction; parsed here to sit in the
                    // response's tree (a search inside a batch is rare).
                    resource = serde_json::from_str(&searchset(fhir_base, *rt, &[], page)).ok();
                }
                EntryBody::None => response["status"] = json!(status_line(entry.status)),
            }
            if let Some(location) = &entry.location {
                response["location"] = json!(location);
            }
            if let Some(version) = entry.version {
                response["etag"] = json!(etag(version));
            }
            if let Some(ms) = entry.last_modified_ms {
                response["lastModified"] = json!(format_instant(ms));
            }
            let mut out = json!({"response": response});
            if let EntryBody::Resource(view) = &entry.body {
                out["fullUrl"] = json!(full_url(fhir_base, view));
            }
            if let Some(resource) = resource {
                out["resource"] = resource;
            }
            out
        })
        .collect();
    json!({
        "resourceType": "Bundle",
        "type": format!("{kind}-response"),
        "entry": entries,
    })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use carevault_domain::records::ResourceBody;

    use super::*;

    fn patient() -> ResourceType {
        carevault_fhir::resource_type("Patient").unwrap()
    }

    fn view(id: &str, body: Value) -> ResourceView {
        ResourceView {
            resource_type: patient(),
            id: id.to_owned(),
            version: 3,
            last_updated_ms: 1_700_000_000_000,
            body: Some(ResourceBody::from_value(body)),
        }
    }

    #[test]
    fn a_searchset_written_as_text_is_the_bundle_with_each_resource_as_stored() {
        // Text that needs escaping, numbers written as given (arbitrary precision), members
        // in their own order: each must come back exactly.
        let first: Value = serde_json::from_str(
            r#"{"resourceType":"Patient","id":"a1","name":[{"family":"O\"Brien \\ \u00e9\n"}],
                "extension":[{"url":"x","valueDecimal":1.50}]}"#,
        )
        .unwrap();
        let second = json!({"resourceType": "Patient", "id": "b2", "active": true});
        let page = SearchPage {
            matches: vec![view("a1", first.clone())],
            included: vec![view("b2", second.clone())],
            next_cursor: Some("c&d=e".to_owned()),
        };
        let pairs = vec![
            ("family".to_owned(), "O'Brien & Sons".to_owned()),
            ("_cursor".to_owned(), "old".to_owned()),
        ];
        let text = searchset("https://cv.example/fhir", patient(), &pairs, &page);
        let bundle: Value = serde_json::from_str(&text).expect("the searchset is JSON");
        assert_eq!(
            bundle,
            json!({
                "resourceType": "Bundle",
                "type": "searchset",
                "link": [
                    {"relation": "self", "url": "https://cv.example/fhir/Patient?family=O%27Brien+%26+Sons&_cursor=old"},
                    {"relation": "next", "url": "https://cv.example/fhir/Patient?family=O%27Brien+%26+Sons&_cursor=c%26d%3De"},
                ],
                "entry": [
                    {"fullUrl": "https://cv.example/fhir/Patient/a1", "resource": first, "search": {"mode": "match"}},
                    {"fullUrl": "https://cv.example/fhir/Patient/b2", "resource": second, "search": {"mode": "include"}},
                ],
            })
        );
        assert!(text.contains(r#""valueDecimal":1.50"#), "{text}");

        let empty = SearchPage {
            matches: Vec::new(),
            included: Vec::new(),
            next_cursor: None,
        };
        let text = searchset("https://cv.example/fhir", patient(), &[], &empty);
        let bundle: Value = serde_json::from_str(&text).expect("the searchset is JSON");
        assert_eq!(bundle["entry"], json!([]));
        assert_eq!(bundle["link"].as_array().map(Vec::len), Some(1));
    }
}
