//! The web pages people use: sign-in, second factor, enrolment, their account, and the
//! administration, supplier-access, break-glass and home-entry pages.
//!
//! Guarantees:
//! - Every page is built from [`ROUTES`], one table, so the route walk in the end-to-end tests
//!   reaches every page there is ([`crate::route_paths`]).
//! - No page reaches records unless the session has proven two factors: every handler goes
//!   through one of the gates in [`session`], which send an enrolment or half-signed-in
//!   session to finish signing in and serve it nothing else.
//! - Every state-changing form carries a CSRF token (the session's, or before sign-in a
//!   double-submit cookie) and is refused without it.
//! - Pages carry no inline script or style: the HTML Content-Security-Policy allows only this
//!   origin's stylesheet and scripts.

// The gates return the page to send instead (a redirect or a refusal) as their error: it is
// returned straight from the handler, never carried far, so boxing it would buy nothing.
#![allow(clippy::result_large_err)]

mod access;
mod account;
mod admin;
mod care;
mod session;
mod signin;
mod view;

use axum::Router;
use axum::http::{HeaderValue, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, get, post};

use crate::ServerState;

/// The Content-Security-Policy of HTML pages: this origin's scripts and stylesheet only, no
/// inline code, no framing, forms post only here.
pub const HTML_CSP: &str = "default-src 'none'; script-src 'self'; style-src 'self'; \
     img-src 'self' data:; form-action 'self'; frame-ancestors 'none'; base-uri 'none'; \
     connect-src 'self'";

type Route = (&'static str, fn() -> MethodRouter<ServerState>);

/// Every web route: path template and its handlers.
pub const ROUTES: &[Route] = &[
    ("/", || get(care::home)),
    ("/static/carevault.css", || get(stylesheet)),
    ("/static/passkey.js", || get(passkey_script)),
    ("/signin", || get(signin::page).post(signin::password)),
    ("/signin/passkey/start", || post(signin::passkey_start)),
    ("/signin/passkey/finish", || post(signin::passkey_finish)),
    ("/signin/second-factor", || {
        get(signin::second_factor_page).post(signin::second_factor_totp)
    }),
    ("/signin/recovery-code", || {
        post(signin::second_factor_recovery)
    }),
    ("/signout", || post(signin::sign_out)),
    ("/invitation/{token}", || {
        get(signin::invitation_page).post(signin::invitation_accept)
    }),
    ("/account", || get(account::overview)),
    ("/account/enrol", || get(account::enrol_page)),
    ("/account/enrol/totp", || {
        get(account::totp_page).post(account::totp_confirm)
    }),
    ("/account/enrol/passkey/start", || {
        post(account::passkey_start)
    }),
    ("/account/enrol/passkey/finish", || {
        post(account::passkey_finish)
    }),
    ("/account/recovery-codes", || {
        get(account::recovery_codes_page).post(account::recovery_codes_regenerate)
    }),
    ("/account/passkeys/{credential}/remove", || {
        post(account::passkey_remove)
    }),
    ("/account/sign-out-everywhere", || {
        post(account::sign_out_everywhere)
    }),
    ("/account/step-up", || {
        get(account::step_up_page).post(account::step_up_totp)
    }),
    ("/account/step-up/passkey/start", || {
        post(account::step_up_passkey_start)
    }),
    ("/account/step-up/passkey/finish", || {
        post(account::step_up_passkey_finish)
    }),
    ("/admin/people", || get(admin::people).post(admin::invite)),
    ("/admin/people/{person}/status", || post(admin::set_status)),
    ("/admin/people/{person}/roles", || post(admin::set_roles)),
    ("/admin/people/{person}/factor-reset", || {
        post(admin::request_reset)
    }),
    ("/admin/factor-resets/{reset}/approve", || {
        post(admin::approve_reset)
    }),
    ("/admin/grants", || get(admin::grants)),
    ("/admin/grants/{grant}/decision", || {
        post(admin::decide_grant)
    }),
    ("/operator/grants", || {
        get(access::operator_grants).post(access::request_grant)
    }),
    ("/operator/grants/{grant}/use", || post(access::use_grant)),
    ("/break-glass", || {
        get(access::break_glass_page).post(access::break_glass)
    }),
    ("/visits/{patient}/entry", || {
        get(care::visit_entry_page).post(care::reveal_entry)
    }),
    ("/patients/{patient}/entry", || {
        get(care::patient_entry_page).post(care::record_entry)
    }),
];

pub fn routes() -> Router<ServerState> {
    ROUTES
        .iter()
        .fold(Router::new(), |router, (path, handlers)| {
            router.route(path, handlers())
        })
}

pub fn paths() -> impl Iterator<Item = &'static str> {
    ROUTES.iter().map(|(path, _)| *path)
}

async fn stylesheet() -> Response {
    asset(
        "text/css; charset=utf-8",
        include_str!("../../static/carevault.css"),
    )
}

async fn passkey_script() -> Response {
    asset(
        "text/javascript; charset=utf-8",
        include_str!("../../static/passkey.js"),
    )
}

fn asset(content_type: &'static str, body: &'static str) -> Response {
    let mut response = body.into_response();
    response
        .headers_mut()
        .insert(header::CONTENT_TYPE, HeaderValue::from_static(content_type));
    response
}
