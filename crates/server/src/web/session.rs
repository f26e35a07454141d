//! Who is at the browser: the session cookie, the pre-sign-in form cookie, CSRF checks, and
//! the gates every page passes through.
//!
//! The session cookie is `__Host-` prefixed, HttpOnly, Secure, SameSite=Strict and Path=/, and
//! is replaced whenever the domain rotates the session (every change of level). A session that
//! has not proven two factors passes only the gates of the sign-in and enrolment pages.

use std::convert::Infallible;
use std::net::IpAddr;

use axum::extract::FromRequestParts;
use axum::http::request::Parts;
use axum::http::{HeaderMap, HeaderValue, StatusCode, header};
use axum::response::{IntoResponse, Redirect, Response};
use base64::Engine as _;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carevault_domain::people::{Role, SessionLevel, SessionToken, SessionView};

use super::view;
use crate::ServerState;
use crate::auth::{CSRF_HEADER, SESSION_COOKIE, cookie_value, source_address};

/// Double-submit token for forms shown before a session exists (sign-in, invitations).
pub const FORM_COOKIE: &str = "__Host-carevault_form";
/// The id of a passkey sign-in ceremony between its start and its finish.
pub const CEREMONY_COOKIE: &str = "__Host-carevault_ceremony";

/// The person at the browser, if their session is live, and the request's source and time.
pub struct Visitor {
    pub view: Option<SessionView>,
    /// The session cookie's value, for the domain calls that take the token itself.
    token: Option<String>,
    pub source: Option<IpAddr>,
    pub now: i64,
    /// The pre-sign-in form token from its cookie, if any.
    pub form_token: Option<String>,
    pub ceremony: Option<String>,
    /// The CSRF header of a script's request (passkey ceremonies).
    pub csrf_header: Option<String>,
}

impl FromRequestParts<ServerState> for Visitor {
    type Rejection = Infallible;

    async fn from_request_parts(
        parts: &mut Parts,
        state: &ServerState,
    ) -> Result<Visitor, Infallible> {
        let now = state.now_ms();
        let token = cookie_value(parts, SESSION_COOKIE).map(str::to_owned);
        let view = match token.as_deref() {
            // Any failure (ended, revoked, store error) reads as "no session": fail closed.
            Some(cookie) => state
                .identity
                .session(&SessionToken::from_cookie(cookie), now)
                .await
                .ok(),
            None => None,
        };
        Ok(Visitor {
            view,
            token,
            source: source_address(parts),
            now,
            form_token: cookie_value(parts, FORM_COOKIE).map(str::to_owned),
            ceremony: cookie_value(parts, CEREMONY_COOKIE).map(str::to_owned),
            csrf_header: parts
                .headers
                .get(CSRF_HEADER)
                .and_then(|value| value.to_str().ok())
                .map(str::to_owned),
        })
    }
}

impl Visitor {
    /// A session that has proven two factors, or a redirect to the step it still needs.
    pub fn signed_in(&self) -> Result<&SessionView, Response> {
        match &self.view {
            Some(view) if view.session.level == SessionLevel::Mfa => Ok(view),
            other => Err(redirect_to_next_step(other.as_ref())),
        }
    }

    /// A signed-in session holding one of `roles`; anyone else gets "page not found".
    pub fn with_role(&self, roles: &[Role]) -> Result<&SessionView, Response> {
        let view = self.signed_in()?;
        if view.person.roles.iter().any(|role| roles.contains(role)) {
            Ok(view)
        } else {
            Err(view::not_found(Some(view)))
        }
    }

    /// A session that may enrol factors: at `Enrolment` level, or signed in (adding another).
    pub fn enrolling(&self) -> Result<&SessionView, Response> {
        match &self.view {
            Some(view) if view.session.level != SessionLevel::Password => Ok(view),
            other => Err(redirect_to_next_step(other.as_ref())),
        }
    }

    /// A session that has proven the password and waits for the second factor.
    pub fn awaiting_second_factor(&self) -> Result<&SessionView, Response> {
        match &self.view {
            Some(view) if view.session.level == SessionLevel::Password => Ok(view),
            other => Err(redirect_to_next_step(other.as_ref())),
        }
    }

    /// Checks a form's CSRF field against the session's token.
    pub fn check_session_csrf(&self, view: &SessionView, sent: &str) -> Result<(), Response> {
        if carevault_crypto::constant_time_eq(sent.as_bytes(), view.session.csrf.as_bytes()) {
            Ok(())
        } else {
            Err(view::form_expired())
        }
    }

    /// Checks a script's `X-CSRF-Token` header against the session's token.
    pub fn check_session_header(&self, view: &SessionView) -> Result<(), Response> {
        let sent = self.csrf_header.as_deref().unwrap_or_default();
        self.check_session_csrf(view, sent)
    }

    /// Checks a pre-sign-in form's CSRF field (or a script's header) against its cookie.
    pub fn check_form_token(&self, sent: &str) -> Result<(), Response> {
        match &self.form_token {
            Some(cookie)
                if !sent.is_empty()
                    && carevault_crypto::constant_time_eq(sent.as_bytes(), cookie.as_bytes()) =>
            {
                Ok(())
            }
            _ => Err(view::form_expired()),
        }
    }
}

/// The session token from the cookie (empty when there is none: the domain refuses it).
pub fn current_token(visitor: &Visitor) -> SessionToken {
    SessionToken::from_cookie(visitor.token.as_deref().unwrap_or_default())
}

/// Where a session that cannot see a page goes instead: sign-in, second factor, or enrolment.
pub fn redirect_to_next_step(view: Option<&SessionView>) -> Response {
    let target = match view.map(|view| view.session.level) {
        None => "/signin",
        Some(SessionLevel::Password) => "/signin/second-factor",
        Some(SessionLevel::Enrolment) => "/account/enrol",
        Some(SessionLevel::Mfa) => "/",
    };
    Redirect::to(target).into_response()
}

fn cookie(name: &str, value: &str, max_age_s: Option<i64>) -> Option<HeaderValue> {
    let age = max_age_s.map_or(String::new(), |s| format!("; Max-Age={s}"));
    HeaderValue::from_str(&format!(
        "{name}={value}; Path=/; Secure; HttpOnly; SameSite=Strict{age}"
    ))
    .ok()
}

fn append(headers: &mut HeaderMap, value: Option<HeaderValue>) {
    if let Some(value) = value {
        headers.append(header::SET_COOKIE, value);
    }
}

/// Sets the (new) session cookie on a response. A browser-session cookie: the server's idle
/// and absolute timeouts end it.
pub fn with_session(mut response: Response, token: &SessionToken) -> Response {
    append(
        response.headers_mut(),
        cookie(SESSION_COOKIE, token.reveal(), None),
    );
    response
}

pub fn clear_session(mut response: Response) -> Response {
    append(response.headers_mut(), cookie(SESSION_COOKIE, "", Some(0)));
    response
}

pub fn with_ceremony(mut response: Response, id: &str) -> Response {
    append(
        response.headers_mut(),
        cookie(CEREMONY_COOKIE, id, Some(300)),
    );
    response
}

pub fn clear_ceremony(mut response: Response) -> Response {
    append(response.headers_mut(), cookie(CEREMONY_COOKIE, "", Some(0)));
    response
}

/// The pre-sign-in form token: the one in the cookie, or a new one to set.
pub fn form_token(visitor: &Visitor) -> (String, bool) {
    match &visitor.form_token {
        Some(token) if token.len() >= 32 => (token.clone(), false),
        _ => {
            let bytes: [u8; 24] = carevault_crypto::random_bytes();
            (URL_SAFE_NO_PAD.encode(bytes), true)
        }
    }
}

pub fn with_form_token(mut response: Response, token: &str, fresh: bool) -> Response {
    if fresh {
        append(
            response.headers_mut(),
            cookie(FORM_COOKIE, token, Some(3600)),
        );
    }
    response
}

/// A relative path on this site to return to after step-up; anything else goes home.
pub fn safe_return(path: Option<&str>) -> String {
    match path {
        Some(path)
            if path.starts_with('/')
                && !path.starts_with("//")
                && path.len() <= 300
                && !path.contains(['\\', '\r', '\n', '\t'])
                && !path.contains("/..") =>
        {
            path.to_owned()
        }
        _ => "/".to_owned(),
    }
}

/// Sends the person to step up, coming back to `return_to` (a page of ours).
pub fn step_up_redirect(return_to: &str) -> Response {
    let encoded: String = form_urlencoded::byte_serialize(return_to.as_bytes()).collect();
    Redirect::to(&format!("/account/step-up?return={encoded}")).into_response()
}

/// A JSON error for the passkey scripts.
pub fn json_error(status: StatusCode, message: &str) -> Response {
    (status, axum::Json(serde_json::json!({ "error": message }))).into_response()
}

/// The WebAuthn options a ceremony start returns to passkey.js, or a JSON error that tells the
/// person to try later (the cause goes to the log).
pub fn ceremony_options<E: std::fmt::Display>(
    started: Result<serde_json::Value, E>,
    what: &str,
) -> Response {
    match started {
        Ok(options) => axum::Json(options).into_response(),
        Err(error) => {
            tracing::error!(%error, "starting a passkey {what} failed");
            json_error(
                StatusCode::SERVICE_UNAVAILABLE,
                "passkeys are unavailable; try again later",
            )
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_our_own_paths_are_returned_to() {
        assert_eq!(safe_return(Some("/admin/people")), "/admin/people");
        assert_eq!(safe_return(Some("/visits/abc/entry")), "/visits/abc/entry");
        for bad in [
            "https://evil.example/",
            "//evil.example/",
            "/\\evil.example",
            "javascript:alert(1)",
            "/a/../../etc",
            "",
        ] {
            assert_eq!(safe_return(Some(bad)), "/", "{bad}");
        }
        assert_eq!(safe_return(None), "/");
    }

    #[test]
    fn cookies_are_host_prefixed_http_only_secure_and_strict() {
        let token = SessionToken::from_cookie("cvs_abc");
        let response = with_session(Response::new(axum::body::Body::empty()), &token);
        let set = response
            .headers()
            .get(header::SET_COOKIE)
            .and_then(|value| value.to_str().ok())
            .unwrap_or_default()
            .to_owned();
        assert!(
            set.starts_with("__Host-carevault_session=cvs_abc;"),
            "{set}"
        );
        for attribute in ["Path=/", "Secure", "HttpOnly", "SameSite=Strict"] {
            assert!(set.contains(attribute), "{set} lacks {attribute}");
        }
        assert!(!set.contains("Domain"), "{set}");
    }
}
