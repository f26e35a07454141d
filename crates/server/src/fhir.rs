//! FHIR R4 REST routes. Each handler authenticates (extractor), parses, calls one use case of
//! [`carevault_domain::records::Records`] and renders.

use axum::Router;
use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use carevault_domain::bundle::{BundleKind, bundle_kind};
use carevault_domain::records::{RecordError, parse_query_string};
use carevault_fhir::{Issue, IssueCode, ResourceType};
use serde_json::Value;

use crate::ServerState;
use crate::auth::Authenticated;
use crate::capability::capability_statement;
use crate::outcome::{ApiError, fhir_response, fhir_text_response, outcome};
use crate::render::{bundle_response, history_bundle, prefer_return, resource_response, searchset};

/// Every FHIR path template, as [`routes`] registers them (listed for the route walk).
pub const PATHS: [&str; 10] = [
    "/fhir/metadata",
    crate::audit_event::PATH,
    "/fhir",
    "/fhir/",
    "/fhir/{resource_type}",
    "/fhir/{resource_type}/_search",
    "/fhir/{resource_type}/_history",
    "/fhir/{resource_type}/{id}",
    "/fhir/{resource_type}/{id}/_history",
    "/fhir/{resource_type}/{id}/_history/{version}",
];

pub fn routes() -> Router<ServerState> {
    Router::new()
        .route("/fhir/metadata", get(metadata))
        .route("/fhir", post(bundle))
        .route("/fhir/", post(bundle))
        // The audit trail is searched, never written: this fixed path takes precedence over
        // `/fhir/{resource_type}`, so AuditEvent never reaches the record handlers.
        .route(crate::audit_event::PATH, get(crate::audit_event::search))
        .route("/fhir/{resource_type}", get(search_get).post(create))
        .route("/fhir/{resource_type}/_search", post(search_post))
        .route("/fhir/{resource_type}/_history", get(type_history))
        .route(
            "/fhir/{resource_type}/{id}",
            get(read).put(update).delete(delete),
        )
        .route("/fhir/{resource_type}/{id}/_history", get(instance_history))
        .route("/fhir/{resource_type}/{id}/_history/{version}", get(vread))
        .method_not_allowed_fallback(method_not_allowed)
}

async fn method_not_allowed() -> Response {
    outcome(
        StatusCode::METHOD_NOT_ALLOWED,
        "not-supported",
        "this interaction is not supported on this URL; see /fhir/metadata",
    )
}

async fn metadata(State(state): State<ServerState>) -> Response {
    fhir_response(StatusCode::OK, &capability_statement(&state))
}

fn resource_type(name: &str) -> Result<ResourceType, ApiError> {
    carevault_fhir::resource_type(name).ok_or_else(|| {
        ApiError(RecordError::Invalid(vec![Issue::error(
            IssueCode::NotSupported,
            name,
            format!("resource type {name} is not supported here; see /fhir/metadata"),
        )]))
    })
}

/// Accepts `application/fhir+json` and `application/json` (any parameters); refuses others.
fn json_body(headers: &HeaderMap, body: &Bytes) -> Result<Value, Box<Response>> {
    let content_type = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .unwrap_or("");
    let media = content_type.split(';').next().unwrap_or("").trim();
    if !media.eq_ignore_ascii_case("application/fhir+json")
        && !media.eq_ignore_ascii_case("application/json")
    {
        return Err(Box::new(outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "send FHIR JSON with Content-Type: application/fhir+json (or application/json)",
        )));
    }
    carevault_fhir::parse_json(body)
        .map_err(|issues| Box::new(ApiError(RecordError::Invalid(issues)).into_response()))
}

fn if_match(headers: &HeaderMap) -> Result<Option<i64>, ApiError> {
    match headers.get(header::IF_MATCH) {
        None => Ok(None),
        Some(value) => value
            .to_str()
            .ok()
            .map(|text| text.trim().trim_start_matches("W/").trim_matches('"'))
            .and_then(|text| text.parse::<i64>().ok())
            .map(Some)
            .ok_or_else(|| {
                ApiError(RecordError::invalid(
                    "If-Match",
                    "If-Match must be an ETag such as W/\"3\"",
                ))
            }),
    }
}

/// A resource that was read: the body with its ETag and Last-Modified.
fn found(state: &ServerState, view: &carevault_domain::records::ResourceView) -> Response {
    resource_response(
        StatusCode::OK,
        view,
        &state.fhir_base(),
        false,
        crate::render::Return::Representation,
    )
}

async fn read(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path((type_name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    let view = state
        .records
        .read(&principal, rt, &id, state.now_ms())
        .await?;
    Ok(found(&state, &view))
}

async fn vread(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path((type_name, id, version)): Path<(String, String, String)>,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    let view = state
        .records
        .vread(&principal, rt, &id, &version, state.now_ms())
        .await?;
    Ok(found(&state, &view))
}

async fn create(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path(type_name): Path<String>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let rt = resource_type(&type_name).map_err(IntoResponse::into_response)?;
    let resource = json_body(&headers, &body).map_err(|response| *response)?;
    let if_none_exist = headers
        .get("if-none-exist")
        .and_then(|value| value.to_str().ok());
    let outcome = state
        .records
        .create(&principal, rt, resource, if_none_exist, state.now_ms())
        .await
        .map_err(|error| ApiError(error).into_response())?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(resource_response(
        status,
        &outcome.view,
        &state.fhir_base(),
        true,
        prefer_return(&headers),
    ))
}

async fn update(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path((type_name, id)): Path<(String, String)>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let rt = resource_type(&type_name).map_err(IntoResponse::into_response)?;
    let resource = json_body(&headers, &body).map_err(|response| *response)?;
    let if_match = if_match(&headers).map_err(IntoResponse::into_response)?;
    let outcome = state
        .records
        .update(&principal, rt, &id, resource, if_match, state.now_ms())
        .await
        .map_err(|error| ApiError(error).into_response())?;
    let status = if outcome.created {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(resource_response(
        status,
        &outcome.view,
        &state.fhir_base(),
        true,
        prefer_return(&headers),
    ))
}

async fn delete(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path((type_name, id)): Path<(String, String)>,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    state
        .records
        .delete(&principal, rt, &id, state.now_ms())
        .await?;
    Ok(StatusCode::NO_CONTENT.into_response())
}

async fn search_get(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path(type_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    run_search(&state, &principal, rt, pairs).await
}

async fn search_post(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path(type_name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let rt = resource_type(&type_name).map_err(IntoResponse::into_response)?;
    let is_form = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form && !body.is_empty() {
        return Err(outcome(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            "not-supported",
            "POST _search takes application/x-www-form-urlencoded parameters",
        ));
    }
    let mut pairs = parse_query_string(query.as_deref().unwrap_or(""));
    pairs.extend(
        form_urlencoded::parse(&body).map(|(key, value)| (key.into_owned(), value.into_owned())),
    );
    run_search(&state, &principal, rt, pairs)
        .await
        .map_err(IntoResponse::into_response)
}

async fn run_search(
    state: &ServerState,
    principal: &carevault_domain::principal::Principal,
    rt: ResourceType,
    pairs: Vec<(String, String)>,
) -> Result<Response, ApiError> {
    let page = state
        .records
        .search(principal, rt, &pairs, state.now_ms())
        .await?;
    Ok(fhir_text_response(
        StatusCode::OK,
        searchset(&state.fhir_base(), rt, &pairs, &page),
    ))
}

async fn type_history(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path(type_name): Path<String>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let page = state
        .records
        .history(&principal, rt, None, &pairs, state.now_ms())
        .await?;
    let path = format!("{}/_history", rt.name());
    Ok(fhir_response(
        StatusCode::OK,
        &history_bundle(&state.fhir_base(), &path, &pairs, &page),
    ))
}

async fn instance_history(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    Path((type_name, id)): Path<(String, String)>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let rt = resource_type(&type_name)?;
    let pairs = parse_query_string(query.as_deref().unwrap_or(""));
    let page = state
        .records
        .history(&principal, rt, Some(&id), &pairs, state.now_ms())
        .await?;
    let path = format!("{}/{id}/_history", rt.name());
    Ok(fhir_response(
        StatusCode::OK,
        &history_bundle(&state.fhir_base(), &path, &pairs, &page),
    ))
}

async fn bundle(
    State(state): State<ServerState>,
    Authenticated(principal): Authenticated,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Response, Response> {
    let bundle = json_body(&headers, &body).map_err(|response| *response)?;
    let kind = bundle_kind(&bundle).map_err(|error| ApiError(error).into_response())?;
    let now = state.now_ms();
    let (responses, name) = match kind {
        BundleKind::Transaction => (
            state.records.transaction(&principal, bundle, now).await,
            "transaction",
        ),
        BundleKind::Batch => (state.records.batch(&principal, bundle, now).await, "batch"),
    };
    let responses = responses.map_err(|error| ApiError(error).into_response())?;
    Ok(fhir_response(
        StatusCode::OK,
        &bundle_response(
            &state.fhir_base(),
            name,
            &responses,
            prefer_return(&headers),
        ),
    ))
}
