//! Authentication extractors: the only ways a handler obtains a [`Principal`].
//!
//! `/fhir` accepts a machine client's bearer token, or a person's session cookie from a session
//! that has proven two factors. A session that has only proven a password reaches no data: it
//! gets the same 401 as no credentials at all. Cookie-authenticated writes must also carry the
//! session's CSRF token in `X-CSRF-Token`.

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode, header};
use axum::response::Response;
use carevault_domain::access::AccessError;
use carevault_domain::people::{SessionToken, SessionView};
use carevault_domain::principal::Principal;

use crate::ServerState;
use crate::outcome::{outcome, unauthenticated};

/// The session cookie. `__Host-` pins it to this origin, path `/`, Secure.
pub const SESSION_COOKIE: &str = "__Host-carevault_session";
pub const CSRF_HEADER: &str = "x-csrf-token";

pub struct Authenticated(pub Principal);

impl FromRequestParts<ServerState> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Authenticated, Response> {
        let source = source_address(parts);
        let now = state.now_ms();
        if let Some(token) = bearer_token(parts) {
            return state
                .authority
                .authenticate_bearer(token, source, now)
                .await
                .map(Authenticated)
                .map_err(|error| unauthenticated(&error));
        }
        let Some(cookie) = cookie_value(parts, SESSION_COOKIE) else {
            return Err(unauthenticated(&AccessError::Unauthenticated(
                "no bearer token or session",
            )));
        };
        let view = state
            .identity
            .session(&SessionToken::from_cookie(cookie), now)
            .await
            .map_err(|_| unauthenticated(&AccessError::Unauthenticated("session ended")))?;
        if !safe_method(&parts.method) && !csrf_matches(parts, &view) {
            return Err(outcome(
                StatusCode::FORBIDDEN,
                "forbidden",
                "a cookie-authenticated change needs the session's X-CSRF-Token header",
            ));
        }
        match state.identity.principal(&view, source, now).await {
            Ok(Some(principal)) => Ok(Authenticated(principal)),
            Ok(None) => Err(unauthenticated(&AccessError::Unauthenticated(
                "second factor not completed",
            ))),
            Err(error) => {
                tracing::error!(%error, "building a session's principal failed");
                Err(unauthenticated(&AccessError::Unauthenticated(
                    "session unusable",
                )))
            }
        }
    }
}

fn safe_method(method: &Method) -> bool {
    matches!(*method, Method::GET | Method::HEAD | Method::OPTIONS)
}

fn csrf_matches(parts: &Parts, view: &SessionView) -> bool {
    parts
        .headers
        .get(CSRF_HEADER)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|sent| {
            carevault_crypto::constant_time_eq(sent.as_bytes(), view.session.csrf.as_bytes())
        })
}

fn bearer_token(parts: &Parts) -> Option<&str> {
    parts
        .headers
        .get(header::AUTHORIZATION)
        .and_then(|value| value.to_str().ok())
        .and_then(|value| {
            let (scheme, token) = value.split_once(' ')?;
            scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
        })
}

/// The value of a cookie in the request's Cookie headers.
pub fn cookie_value<'a>(parts: &'a Parts, name: &str) -> Option<&'a str> {
    parts
        .headers
        .get_all(header::COOKIE)
        .iter()
        .filter_map(|value| value.to_str().ok())
        .flat_map(|value| value.split(';'))
        .filter_map(|pair| pair.trim().split_once('='))
        .find(|(key, _)| *key == name)
        .map(|(_, value)| value)
}

pub fn source_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}
