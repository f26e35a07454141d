//! HTTP for carevault: FHIR R4 REST under `/fhir`, the OAuth token endpoint, health checks.
//!
//! Handlers are thin: extract, call one domain use case with the principal and `now`, render.
//! Authentication happens in the [`auth::Authenticated`] extractor, which is the only way a
//! handler gets a principal; every data route takes one.

mod audit_event;
mod auth;
mod capability;
mod fhir;
mod oauth;
mod outcome;
mod render;
mod web;

use std::future::Future;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{DefaultBodyLimit, MatchedPath, Request, State};
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use carevault_domain::access::Authority;
use carevault_domain::audit::AuditTrail;
use carevault_domain::clock::Clock;
use carevault_domain::people::Identity;
use carevault_domain::records::Records;
use carevault_domain::store::Store;
use serde_json::json;

/// The largest request body: a 100-entry transaction of rich resources fits with room to spare.
const BODY_LIMIT: usize = 16 * 1024 * 1024;

/// Everything the handlers need, built once by the composition root. Each request clones it
/// (axum's `State`), so it is a single `Arc`: cloned field by field, its seven reference counts
/// and the base URL's copy were about 3 % of the server's samples on a read by id, atomic
/// counts shared between both cores' caches (bench/notes.md, thirteenth session).
#[derive(Clone)]
pub struct ServerState(Arc<StateParts>);

impl ServerState {
    pub fn new(parts: StateParts) -> ServerState {
        ServerState(Arc::new(parts))
    }
}

impl std::ops::Deref for ServerState {
    type Target = StateParts;

    fn deref(&self) -> &StateParts {
        &self.0
    }
}

/// The parts of [`ServerState`].
pub struct StateParts {
    pub records: Arc<Records>,
    pub authority: Arc<Authority>,
    pub identity: Arc<Identity>,
    pub store: Arc<dyn Store>,
    pub audit: AuditTrail,
    pub clock: Arc<dyn Clock>,
    /// Public base URL without a trailing slash, such as `https://records.example.org`.
    /// FHIR links are `{base}/fhir/…`; the token endpoint (and so every assertion's `aud`) is
    /// `{base}/oauth/token`.
    pub base_url: String,
}

impl StateParts {
    pub fn fhir_base(&self) -> String {
        format!("{}/fhir", self.base_url)
    }

    pub fn token_url(&self) -> String {
        format!("{}/oauth/token", self.base_url)
    }

    fn now_ms(&self) -> i64 {
        self.clock.now_ms()
    }
}

/// Health paths, outside FHIR, OAuth and the web pages.
const HEALTH_PATHS: [&str; 2] = ["/healthz", "/readyz"];

/// Every route the server answers, as path templates (`{…}` marks a path parameter): health,
/// OAuth, FHIR and the web pages. The end-to-end route walk calls each of them with a session
/// that has proven only a password and checks that none gives out data.
pub fn route_paths() -> Vec<&'static str> {
    HEALTH_PATHS
        .into_iter()
        .chain(oauth::PATHS)
        .chain(fhir::PATHS)
        .chain(web::paths())
        .collect()
}

pub fn router(state: ServerState) -> Router {
    Router::new()
        .route(HEALTH_PATHS[0], get(healthz))
        .route(HEALTH_PATHS[1], get(readyz))
        .merge(oauth::routes())
        .merge(fhir::routes())
        .merge(web::routes())
        .fallback(not_found)
        .layer(DefaultBodyLimit::max(BODY_LIMIT))
        .layer(middleware::from_fn(log_and_harden))
        .with_state(state)
}

async fn healthz() -> &'static str {
    "ok"
}

/// Ready when the store answers and the audit trail's last commit succeeded: a server that
/// cannot audit must not be sent traffic.
async fn readyz(State(state): State<ServerState>) -> Response {
    let store_ok = state.store.ping().await.is_ok();
    let audit_ok = state.audit.is_healthy();
    let status = if store_ok && audit_ok {
        StatusCode::OK
    } else {
        StatusCode::SERVICE_UNAVAILABLE
    };
    let body = json!({
        "store": if store_ok { "ok" } else { "unavailable" },
        "engine": state.store.engine(),
        "audit": if audit_ok { "ok" } else { "failing" },
    });
    (status, axum::Json(body)).into_response()
}

async fn not_found() -> Response {
    outcome::outcome(
        StatusCode::NOT_FOUND,
        "not-found",
        "no such endpoint: FHIR is served under /fhir, tokens at /oauth/token",
    )
}

/// Logs each request by its route template (never the raw URL: search parameters can carry
/// names and identifiers) and adds the headers every answer should carry.
async fn log_and_harden(request: Request, next: Next) -> Response {
    let route = request
        .extensions()
        .get::<MatchedPath>()
        .map_or("unmatched", |path| path.as_str())
        .to_owned();
    let method = request.method().clone();
    let started = std::time::Instant::now();
    let mut response = next.run(request).await;
    let headers = response.headers_mut();
    headers.insert(
        header::X_CONTENT_TYPE_OPTIONS,
        HeaderValue::from_static("nosniff"),
    );
    headers.insert(header::CACHE_CONTROL, HeaderValue::from_static("no-store"));
    // HTML pages load this origin's stylesheet and scripts; everything else loads nothing.
    let html = headers
        .get(header::CONTENT_TYPE)
        .and_then(|value| value.to_str().ok())
        .is_some_and(|value| value.starts_with("text/html"));
    let policy = if html {
        web::HTML_CSP
    } else {
        "default-src 'none'; frame-ancestors 'none'"
    };
    headers.insert(
        header::CONTENT_SECURITY_POLICY,
        HeaderValue::from_static(policy),
    );
    if html {
        headers.insert(header::X_FRAME_OPTIONS, HeaderValue::from_static("DENY"));
    }
    headers.insert(
        header::REFERRER_POLICY,
        HeaderValue::from_static("no-referrer"),
    );
    tracing::info!(
        %method,
        route,
        status = response.status().as_u16(),
        micros = started.elapsed().as_micros() as u64,
        "request"
    );
    response
}

/// TLS certificate and key, PEM files.
#[derive(Clone, Debug)]
pub struct TlsFiles {
    pub certificate: PathBuf,
    pub private_key: PathBuf,
}

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to listen on {0} without TLS: only loopback addresses may be served in plain \
         HTTP. Configure [server.tls] certificate and private_key, or listen on 127.0.0.1"
    )]
    PlainTextOnPublicAddress(SocketAddr),
    #[error("TLS configuration failed: {0}")]
    Tls(String),
    #[error("could not listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error("server error: {0}")]
    Io(#[from] std::io::Error),
}

/// A bound listener, ready to serve. Binding first lets the caller learn the real port (tests
/// bind port 0) before serving starts.
pub struct Listener {
    inner: std::net::TcpListener,
    tls: Option<TlsFiles>,
}

impl Listener {
    /// Binds, refusing any non-loopback address unless TLS is configured.
    pub fn bind(addr: SocketAddr, tls: Option<TlsFiles>) -> Result<Listener, ServeError> {
        if tls.is_none() && !addr.ip().is_loopback() {
            return Err(ServeError::PlainTextOnPublicAddress(addr));
        }
        let inner =
            std::net::TcpListener::bind(addr).map_err(|error| ServeError::Bind(addr, error))?;
        inner.set_nonblocking(true)?;
        Ok(Listener { inner, tls })
    }

    pub fn local_addr(&self) -> Result<SocketAddr, ServeError> {
        Ok(self.inner.local_addr()?)
    }

    pub fn uses_tls(&self) -> bool {
        self.tls.is_some()
    }

    /// Serves until `shutdown` completes, then drains in-flight requests.
    pub async fn serve(
        self,
        router: Router,
        shutdown: impl Future<Output = ()> + Send + 'static,
    ) -> Result<(), ServeError> {
        let service = router.into_make_service_with_connect_info::<SocketAddr>();
        match self.tls {
            None => {
                let listener = tokio::net::TcpListener::from_std(self.inner)?;
                axum::serve(listener, service)
                    .with_graceful_shutdown(shutdown)
                    .await?;
            }
            Some(files) => {
                let config = axum_server::tls_rustls::RustlsConfig::from_pem_file(
                    &files.certificate,
                    &files.private_key,
                )
                .await
                .map_err(|error| ServeError::Tls(error.to_string()))?;
                let handle = axum_server::Handle::new();
                let stopper = handle.clone();
                tokio::spawn(async move {
                    shutdown.await;
                    stopper.graceful_shutdown(Some(Duration::from_secs(10)));
                });
                axum_server::from_tcp_rustls(self.inner, config)?
                    .handle(handle)
                    .serve(service)
                    .await?;
            }
        }
        Ok(())
    }
}
