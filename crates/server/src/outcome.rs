//! Errors as FHIR OperationOutcome responses.
//!
//! Clients get a stable status, an issue code and a sentence that helps; operators get the cause
//! in the log. "Not yours" and "not there" produce byte-identical answers.

use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use carevault_domain::access::AccessError;
use carevault_domain::records::RecordError;
use carevault_fhir::Issue;
use serde_json::{Value, json};

pub const FHIR_JSON: &str = "application/fhir+json; charset=utf-8";

/// A FHIR JSON response with the security headers every API answer carries.
pub fn fhir_response(status: StatusCode, body: &Value) -> Response {
    fhir_text_response(status, serde_json::to_string(body).unwrap_or_default())
}

/// A FHIR JSON response whose body is already JSON text.
pub fn fhir_text_response(status: StatusCode, text: String) -> Response {
    let mut response = (status, text).into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(FHIR_JSON));
    response
}

pub fn outcome(status: StatusCode, code: &str, message: &str) -> Response {
    let body = json!({
        "resourceType": "OperationOutcome",
        "issue": [{"severity": "error", "code": code, "diagnostics": message}]
    });
    fhir_response(status, &body)
}

pub fn outcome_value(issues: &[Issue]) -> Value {
    let issues: Vec<Value> = issues
        .iter()
        .map(|issue| {
            let mut entry = json!({
                "severity": issue.severity.as_str(),
                "code": issue.code.as_str(),
                "diagnostics": issue.message,
            });
            if !issue.path.is_empty() {
                entry["expression"] = json!([issue.path]);
            }
            entry
        })
        .collect();
    json!({"resourceType": "OperationOutcome", "issue": issues})
}

/// The status and OperationOutcome of a domain error (also used for batch entry responses).
pub fn record_error_parts(error: &RecordError) -> (StatusCode, Value) {
    let simple = |code: &str, message: &str| {
        json!({
            "resourceType": "OperationOutcome",
            "issue": [{"severity": "error", "code": code, "diagnostics": message}]
        })
    };
    match error {
        RecordError::NotFound => (
            StatusCode::NOT_FOUND,
            simple("not-found", "the resource does not exist"),
        ),
        RecordError::Gone { .. } => (
            StatusCode::GONE,
            simple("deleted", "the resource has been deleted"),
        ),
        RecordError::Forbidden(message) => (StatusCode::FORBIDDEN, simple("forbidden", message)),
        RecordError::Invalid(issues) => (StatusCode::BAD_REQUEST, outcome_value(issues)),
        RecordError::Unprocessable(issues) => {
            (StatusCode::UNPROCESSABLE_ENTITY, outcome_value(issues))
        }
        RecordError::PreconditionFailed(message) => {
            (StatusCode::PRECONDITION_FAILED, simple("conflict", message))
        }
        RecordError::Conflict(message) => (StatusCode::CONFLICT, simple("conflict", message)),
        RecordError::Integrity => (
            StatusCode::INTERNAL_SERVER_ERROR,
            simple(
                "exception",
                "stored data failed its integrity check; no data was returned and the operator \
                 has been alerted",
            ),
        ),
        RecordError::AuditUnavailable => (
            StatusCode::SERVICE_UNAVAILABLE,
            simple(
                "transient",
                "the audit trail cannot be written, so no data is released; try again later",
            ),
        ),
        RecordError::Internal(_) => (
            StatusCode::INTERNAL_SERVER_ERROR,
            simple("exception", "the server failed to complete the request"),
        ),
    }
}

/// Converts a domain error into a response, logging what the client is not told.
pub struct ApiError(pub RecordError);

impl From<RecordError> for ApiError {
    fn from(error: RecordError) -> ApiError {
        ApiError(error)
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        match &self.0 {
            RecordError::Internal(cause) => tracing::error!(%cause, "request failed"),
            RecordError::AuditUnavailable => {
                tracing::error!("request refused: the audit trail is unavailable")
            }
            _ => {}
        }
        let (status, body) = record_error_parts(&self.0);
        let mut response = fhir_response(status, &body);
        if let RecordError::Gone { version } = &self.0
            && let Ok(value) = HeaderValue::from_str(&format!("W/\"{version}\""))
        {
            response.headers_mut().insert(header::ETAG, value);
        }
        response
    }
}

/// A bearer-token failure: 401 with a challenge, never saying which check failed.
pub fn unauthenticated(error: &AccessError) -> Response {
    match error {
        AccessError::Unauthenticated(reason) => tracing::info!(%reason, "bearer token refused"),
        other => tracing::warn!(error = %other, "bearer token check failed"),
    }
    let status = match error {
        AccessError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        _ => StatusCode::UNAUTHORIZED,
    };
    let mut response = outcome(
        status,
        "login",
        "a valid access token is required: obtain one from /oauth/token",
    );
    response.headers_mut().insert(
        header::WWW_AUTHENTICATE,
        HeaderValue::from_static("Bearer realm=\"carevault\", error=\"invalid_token\""),
    );
    response
}
