//! The bearer-token extractor: the only way a handler obtains a [`Principal`].

use std::net::SocketAddr;

use axum::extract::{ConnectInfo, FromRequestParts};
use axum::http::header;
use axum::http::request::Parts;
use axum::response::Response;
use carevault_domain::access::AccessError;
use carevault_domain::principal::Principal;

use crate::ServerState;
use crate::outcome::unauthenticated;

pub struct Authenticated(pub Principal);

impl FromRequestParts<ServerState> for Authenticated {
    type Rejection = Response;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Authenticated, Response> {
        let token = parts
            .headers
            .get(header::AUTHORIZATION)
            .and_then(|value| value.to_str().ok())
            .and_then(|value| {
                let (scheme, token) = value.split_once(' ')?;
                scheme.eq_ignore_ascii_case("bearer").then(|| token.trim())
            });
        let Some(token) = token else {
            return Err(unauthenticated(&AccessError::Unauthenticated(
                "no bearer token",
            )));
        };
        let source = source_address(parts);
        state
            .authority
            .authenticate_bearer(token, source, state.now_ms())
            .await
            .map(Authenticated)
            .map_err(|error| unauthenticated(&error))
    }
}

pub fn source_address(parts: &Parts) -> Option<std::net::IpAddr> {
    parts
        .extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|info| info.0.ip())
}
