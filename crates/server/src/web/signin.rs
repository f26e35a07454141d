//! Signing in and out: email and password, the second factor (TOTP or a recovery code), a
//! passkey alone, and accepting an invitation.
//!
//! Every refusal reads the same whether the account exists or not, and whatever was wrong; a
//! throttled attempt gets 429 and says when to try again.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use carevault_domain::people::{SessionLevel, SignInError};
use serde::Deserialize;

use super::session::{
    Visitor, ceremony_options, clear_ceremony, clear_session, form_token, json_error,
    redirect_to_next_step, with_ceremony, with_form_token, with_session,
};
use super::view::{self, Errors, Layout, layout};
use crate::ServerState;

/// The one sentence for every failed sign-in.
pub const SIGN_IN_REFUSED: &str = "The email address, password or passkey is not right";
const CODE_REFUSED: &str =
    "The code is not right. Enter the newest code, or a recovery code you have not used";

#[derive(Template, WebTemplate)]
#[template(path = "signin.html")]
pub struct SignInPage {
    pub page: Layout,
    pub errors: Errors,
    pub form_csrf: String,
    pub email: String,
    pub created: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct SignInQuery {
    created: Option<String>,
}

pub async fn page(visitor: Visitor, Query(query): Query<SignInQuery>) -> Response {
    if visitor.view.is_some() {
        return redirect_to_next_step(visitor.view.as_ref());
    }
    sign_in_form(
        &visitor,
        StatusCode::OK,
        Errors::none(),
        String::new(),
        query.created.is_some(),
    )
}

fn sign_in_form(
    visitor: &Visitor,
    status: StatusCode,
    errors: Errors,
    email: String,
    created: bool,
) -> Response {
    let (token, fresh) = form_token(visitor);
    let page = SignInPage {
        page: layout("Sign in", None, &errors),
        errors,
        form_csrf: token.clone(),
        email,
        created,
    };
    with_form_token((status, page).into_response(), &token, fresh)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasswordForm {
    csrf: String,
    email: String,
    password: String,
}

pub async fn password(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<PasswordForm>,
) -> Response {
    if let Err(refusal) = visitor.check_form_token(&form.csrf) {
        return refusal;
    }
    let mut errors = Errors::none();
    if form.email.trim().is_empty() {
        errors.add("email", "Enter your email address");
    }
    if form.password.is_empty() {
        errors.add("password", "Enter your password");
    }
    if !errors.is_empty() {
        return sign_in_form(&visitor, StatusCode::BAD_REQUEST, errors, form.email, false);
    }
    match state
        .identity
        .sign_in_password(&form.email, &form.password, visitor.source, visitor.now)
        .await
    {
        Ok((token, level)) => {
            let next = match level {
                SessionLevel::Enrolment => "/account/enrol",
                SessionLevel::Password => "/signin/second-factor",
                SessionLevel::Mfa => "/",
            };
            with_session(Redirect::to(next).into_response(), &token)
        }
        Err(SignInError::Refused) => sign_in_form(
            &visitor,
            StatusCode::UNAUTHORIZED,
            Errors::one("email", SIGN_IN_REFUSED),
            form.email,
            false,
        ),
        Err(error) => view::failure(None, &error),
    }
}

/// Starts a passkey sign-in: WebAuthn options for `navigator.credentials.get`.
pub async fn passkey_start(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let sent = visitor.csrf_header.clone().unwrap_or_default();
    if visitor.check_form_token(&sent).is_err() {
        return json_error(StatusCode::FORBIDDEN, "reload the page and try again");
    }
    let (started, ceremony) = match state.identity.start_passkey_sign_in(visitor.now).await {
        Ok((options, ceremony)) => (Ok(options), Some(ceremony)),
        Err(error) => (Err(error), None),
    };
    let response = ceremony_options(started, "sign-in");
    match ceremony {
        Some(ceremony) => with_ceremony(response, &ceremony),
        None => response,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct PasskeyForm {
    pub csrf: String,
    pub response: String,
    pub name: String,
}

/// Finishes a passkey sign-in: the page's form carries the browser's response.
pub async fn passkey_finish(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<PasskeyForm>,
) -> Response {
    if let Err(refusal) = visitor.check_form_token(&form.csrf) {
        return refusal;
    }
    let Some(ceremony) = visitor.ceremony.clone() else {
        return sign_in_form(
            &visitor,
            StatusCode::UNAUTHORIZED,
            Errors::one("email", SIGN_IN_REFUSED),
            String::new(),
            false,
        );
    };
    let result = state
        .identity
        .finish_passkey_sign_in(&ceremony, &form.response, visitor.source, visitor.now)
        .await;
    let response = match result {
        Ok(token) => with_session(Redirect::to("/").into_response(), &token),
        Err(SignInError::Refused | SignInError::SessionEnded) => sign_in_form(
            &visitor,
            StatusCode::UNAUTHORIZED,
            Errors::one("email", SIGN_IN_REFUSED),
            String::new(),
            false,
        ),
        Err(error) => view::failure(None, &error),
    };
    clear_ceremony(response)
}

#[derive(Template, WebTemplate)]
#[template(path = "second_factor.html")]
pub struct SecondFactorPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub needs_passkey: bool,
    pub form_csrf: String,
}

fn second_factor_form(visitor: &Visitor, status: StatusCode, errors: Errors) -> Response {
    let Some(view) = visitor.view.as_ref() else {
        return redirect_to_next_step(None);
    };
    let (token, fresh) = form_token(visitor);
    let page = SecondFactorPage {
        page: layout("Confirm it is you", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        needs_passkey: view.needs_passkey(),
        form_csrf: token.clone(),
    };
    with_form_token((status, page).into_response(), &token, fresh)
}

pub async fn second_factor_page(visitor: Visitor) -> Response {
    if let Err(redirect) = visitor.awaiting_second_factor() {
        return redirect;
    }
    second_factor_form(&visitor, StatusCode::OK, Errors::none())
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CodeForm {
    pub csrf: String,
    pub code: String,
}

pub async fn second_factor_totp(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CodeForm>,
) -> Response {
    second_factor(state, visitor, form, false).await
}

pub async fn second_factor_recovery(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CodeForm>,
) -> Response {
    second_factor(state, visitor, form, true).await
}

async fn second_factor(
    state: ServerState,
    visitor: Visitor,
    form: CodeForm,
    recovery: bool,
) -> Response {
    let view = match visitor.awaiting_second_factor() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let field = if recovery { "recovery-code" } else { "code" };
    if form.code.trim().is_empty() {
        let message = if recovery {
            "Enter a recovery code"
        } else {
            "Enter the 6-digit code from your authenticator app"
        };
        return second_factor_form(
            &visitor,
            StatusCode::BAD_REQUEST,
            Errors::one(field, message),
        );
    }
    let token = crate::web::session::current_token(&visitor);
    let result = if recovery {
        state
            .identity
            .sign_in_recovery_code(&token, &form.code, visitor.source, visitor.now)
            .await
    } else {
        state
            .identity
            .sign_in_totp(&token, &form.code, visitor.source, visitor.now)
            .await
    };
    match result {
        Ok(token) => with_session(Redirect::to("/").into_response(), &token),
        Err(SignInError::Refused) => second_factor_form(
            &visitor,
            StatusCode::UNAUTHORIZED,
            Errors::one(field, CODE_REFUSED),
        ),
        Err(SignInError::PasskeyRequired) => second_factor_form(
            &visitor,
            StatusCode::FORBIDDEN,
            Errors::one(
                "passkey",
                "Your role needs a passkey: sign in with your passkey",
            ),
        ),
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct CsrfForm {
    pub csrf: String,
}

pub async fn sign_out(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    if let Some(view) = &visitor.view {
        if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
            return refusal;
        }
        let token = crate::web::session::current_token(&visitor);
        if let Err(error) = state
            .identity
            .sign_out(&token, visitor.source, visitor.now)
            .await
        {
            tracing::warn!(%error, "signing out failed");
        }
    }
    clear_session(Redirect::to("/signin").into_response())
}

#[derive(Template, WebTemplate)]
#[template(path = "invitation.html")]
pub struct InvitationPage {
    pub page: Layout,
    pub errors: Errors,
    pub form_csrf: String,
    pub token: String,
    pub ask_email: bool,
    pub email: String,
    pub name: String,
    pub roles: String,
}

pub async fn invitation_page(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(token): Path<String>,
) -> Response {
    match state.identity.invitation(&token, visitor.now).await {
        Ok(invitation) => invitation_form(
            &visitor,
            StatusCode::OK,
            Errors::none(),
            token,
            invitation.email.is_empty(),
            String::new(),
            invitation.display_name,
            &invitation.roles,
        ),
        Err(_) => invitation_gone(),
    }
}

fn invitation_gone() -> Response {
    view::message(
        StatusCode::NOT_FOUND,
        None,
        "This invitation link has expired or was already used",
        &["Ask your administrator for a new invitation."],
        Some(("/signin", "Sign in")),
    )
}

#[allow(clippy::too_many_arguments)]
fn invitation_form(
    visitor: &Visitor,
    status: StatusCode,
    errors: Errors,
    token: String,
    ask_email: bool,
    email: String,
    name: String,
    roles: &[carevault_domain::people::Role],
) -> Response {
    let (form_csrf, fresh) = form_token(visitor);
    let page = InvitationPage {
        page: layout("Set up your account", None, &errors),
        errors,
        form_csrf: form_csrf.clone(),
        token,
        ask_email,
        email,
        name,
        roles: roles
            .iter()
            .map(|role| role.as_str().replace('_', " "))
            .collect::<Vec<_>>()
            .join(", "),
    };
    with_form_token((status, page).into_response(), &form_csrf, fresh)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct AcceptForm {
    csrf: String,
    email: String,
    name: String,
    password: String,
}

pub async fn invitation_accept(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(token): Path<String>,
    Form(form): Form<AcceptForm>,
) -> Response {
    if let Err(refusal) = visitor.check_form_token(&form.csrf) {
        return refusal;
    }
    let Ok(invitation) = state.identity.invitation(&token, visitor.now).await else {
        return invitation_gone();
    };
    let ask_email = invitation.email.is_empty();
    let mut errors = Errors::none();
    if ask_email && form.email.trim().is_empty() {
        errors.add("email", "Enter your email address");
    }
    if form.name.trim().is_empty() && invitation.display_name.is_empty() {
        errors.add("name", "Enter your name");
    }
    if form.password.is_empty() {
        errors.add("password", "Enter a password");
    }
    if errors.is_empty() {
        match state
            .identity
            .accept_invitation(
                &token,
                &form.email,
                &form.name,
                &form.password,
                visitor.source,
                visitor.now,
            )
            .await
        {
            Ok(_) => return Redirect::to("/signin?created=1").into_response(),
            Err(SignInError::Invalid(reason)) => {
                let field = if reason.contains("email") {
                    "email"
                } else if reason.contains("your name") {
                    "name"
                } else {
                    "password"
                };
                errors.add(field, capitalise(&reason));
            }
            Err(error) => return view::failure(None, &error),
        }
    }
    invitation_form(
        &visitor,
        StatusCode::BAD_REQUEST,
        errors,
        token,
        ask_email,
        form.email,
        form.name,
        &invitation.roles,
    )
}

/// Domain sentences start in lower case; a message on a page starts with a capital.
pub fn capitalise(text: &str) -> String {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) => first.to_uppercase().chain(chars).collect(),
        None => String::new(),
    }
}
