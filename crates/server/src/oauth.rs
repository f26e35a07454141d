//! `POST /oauth/token`: SMART Backend Services (client credentials with `private_key_jwt`),
//! and the SMART configuration document that advertises it.

use std::collections::HashMap;

use axum::Router;
use axum::extract::{Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use carevault_domain::access::AccessError;
use serde_json::json;

use crate::ServerState;
use crate::auth::source_address;

const ASSERTION_TYPE: &str = "urn:ietf:params:oauth:client-assertion-type:jwt-bearer";
const FORM_LIMIT: usize = 64 * 1024;

/// Every OAuth path template, as [`routes`] registers them (listed for the route walk).
pub const PATHS: [&str; 3] = [
    "/oauth/token",
    "/.well-known/smart-configuration",
    "/fhir/.well-known/smart-configuration",
];

pub fn routes() -> Router<ServerState> {
    Router::new()
        .route("/oauth/token", post(token))
        .route("/.well-known/smart-configuration", get(smart_configuration))
        .route(
            "/fhir/.well-known/smart-configuration",
            get(smart_configuration),
        )
}

fn oauth_error(status: StatusCode, error: &str, description: &str) -> Response {
    let mut response = (
        status,
        axum::Json(json!({"error": error, "error_description": description})),
    )
        .into_response();
    response
        .headers_mut()
        .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
    response
}

async fn token(State(state): State<ServerState>, request: Request) -> Response {
    let (parts, body) = request.into_parts();
    let source = source_address(&parts);
    let is_form = parts
        .headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("application/x-www-form-urlencoded"));
    if !is_form {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "send the token request as application/x-www-form-urlencoded",
        );
    }
    let Ok(bytes) = axum::body::to_bytes(body, FORM_LIMIT).await else {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "request body too large",
        );
    };
    let form: HashMap<String, String> = form_urlencoded::parse(&bytes).into_owned().collect();
    let field = |name: &str| form.get(name).map(String::as_str).unwrap_or("");
    if field("grant_type") != "client_credentials" {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "unsupported_grant_type",
            "only grant_type=client_credentials is supported",
        );
    }
    if field("client_assertion_type") != ASSERTION_TYPE {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion_type must be urn:ietf:params:oauth:client-assertion-type:jwt-bearer",
        );
    }
    if field("client_assertion").is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_request",
            "client_assertion (a signed JWT) is required",
        );
    }
    if field("scope").is_empty() {
        return oauth_error(
            StatusCode::BAD_REQUEST,
            "invalid_scope",
            "scope is required, such as system/Patient.rs",
        );
    }
    let result = state
        .authority
        .exchange_assertion(
            field("client_assertion"),
            field("scope"),
            &state.token_url(),
            source,
            state.now_ms(),
        )
        .await;
    match result {
        Ok(issued) => {
            let mut response = axum::Json(json!({
                "access_token": issued.access_token,
                "token_type": "bearer",
                "expires_in": issued.expires_in,
                "scope": issued.scope,
            }))
            .into_response();
            response
                .headers_mut()
                .insert(header::PRAGMA, HeaderValue::from_static("no-cache"));
            response
        }
        Err(AccessError::InvalidClient(reason)) => {
            tracing::info!(%reason, "client assertion refused");
            oauth_error(
                StatusCode::UNAUTHORIZED,
                "invalid_client",
                "client authentication failed",
            )
        }
        Err(AccessError::InvalidScope(reason)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_scope", &reason)
        }
        Err(AccessError::InvalidRequest(reason)) => {
            oauth_error(StatusCode::BAD_REQUEST, "invalid_request", &reason)
        }
        Err(other) => {
            tracing::error!(error = %other, "token endpoint failed");
            oauth_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "temporarily_unavailable",
                "the server cannot issue tokens right now",
            )
        }
    }
}

async fn smart_configuration(State(state): State<ServerState>) -> Response {
    axum::Json(json!({
        "token_endpoint": state.token_url(),
        "token_endpoint_auth_methods_supported": ["private_key_jwt"],
        "token_endpoint_auth_signing_alg_values_supported": ["RS384", "ES384"],
        "grant_types_supported": ["client_credentials"],
        "scopes_supported": ["system/*.cruds"],
        "capabilities": ["client-confidential-asymmetric", "permission-v2"],
    }))
    .into_response()
}
