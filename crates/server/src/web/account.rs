//! A person's own account: enrolling factors (TOTP with a QR code, passkeys), recovery codes,
//! their passkeys and sessions, and step-up (the second factor again before a sensitive
//! action).

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use carevault_domain::people::{AccountOverview, SessionLevel, SessionView, SignInError};
use serde::Deserialize;

use super::session::{
    Visitor, ceremony_options, clear_session, json_error, safe_return, step_up_redirect,
    with_session,
};
use super::signin::{CodeForm, CsrfForm, PasskeyForm, capitalise};
use super::view::{self, Errors, Layout, layout, when};
use crate::ServerState;

#[derive(Template, WebTemplate)]
#[template(path = "enrol.html")]
pub struct EnrolPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub first_factor: bool,
    pub totp_allowed: bool,
}

fn enrol_form(view: &SessionView, status: StatusCode, errors: Errors) -> Response {
    let page = EnrolPage {
        page: layout("Set up a way to confirm it is you", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        first_factor: view.session.level == SessionLevel::Enrolment,
        totp_allowed: !view.needs_passkey(),
    };
    (status, page).into_response()
}

pub async fn enrol_page(visitor: Visitor) -> Response {
    match visitor.enrolling() {
        Ok(view) => enrol_form(view, StatusCode::OK, Errors::none()),
        Err(redirect) => redirect,
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "enrol_totp.html")]
pub struct TotpPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    /// The QR code (an `<svg>` element built by the server, not from input).
    pub qr_svg: String,
    /// The secret in groups of four for typing into an app.
    pub secret_groups: Vec<String>,
    pub shown: bool,
}

pub async fn totp_page(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.enrolling() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    match state.identity.start_totp_enrolment(view).await {
        Ok(enrolment) => {
            let secret = enrolment.secret_base32.clone();
            let page = TotpPage {
                page: layout("Set up an authenticator app", Some(view), &Errors::none()),
                errors: Errors::none(),
                csrf: view.session.csrf.clone(),
                qr_svg: enrolment.qr_svg,
                secret_groups: secret
                    .as_bytes()
                    .chunks(4)
                    .map(|chunk| String::from_utf8_lossy(chunk).into_owned())
                    .collect(),
                shown: true,
            };
            page.into_response()
        }
        Err(SignInError::Invalid(reason)) => enrol_form(
            view,
            StatusCode::BAD_REQUEST,
            Errors::one("passkey-name", capitalise(&reason)),
        ),
        Err(error) => view::failure(Some(view), &error),
    }
}

pub async fn totp_confirm(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CodeForm>,
) -> Response {
    let view = match visitor.enrolling() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let problem = if form.code.trim().is_empty() {
        "Enter the 6-digit code from your authenticator app".to_owned()
    } else {
        match state
            .identity
            .confirm_totp_enrolment(view, &form.code, visitor.source, visitor.now)
            .await
        {
            Ok((token, codes)) => return enrolled(view, &token, codes),
            Err(SignInError::Invalid(reason)) => capitalise(&reason),
            Err(error) => return view::failure(Some(view), &error),
        }
    };
    let errors = Errors::one("code", problem);
    let page = TotpPage {
        page: layout("Set up an authenticator app", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        qr_svg: String::new(),
        secret_groups: Vec::new(),
        shown: false,
    };
    (StatusCode::BAD_REQUEST, page).into_response()
}

/// After a factor is enrolled: the new session cookie, and the recovery codes if these are
/// the first (shown once, never stored readable).
fn enrolled(
    view: &SessionView,
    token: &carevault_domain::people::SessionToken,
    codes: Option<Vec<String>>,
) -> Response {
    let response = match codes {
        Some(codes) => recovery_codes_shown(view, codes, true),
        None => Redirect::to("/account").into_response(),
    };
    with_session(response, token)
}

#[derive(Template, WebTemplate)]
#[template(path = "recovery_codes.html")]
pub struct RecoveryCodesPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub codes: Vec<String>,
    pub first: bool,
    pub left: usize,
}

fn recovery_codes_shown(view: &SessionView, codes: Vec<String>, first: bool) -> Response {
    let mut furniture = layout("Your recovery codes", Some(view), &Errors::none());
    if first {
        // The session was just rotated: the old CSRF token is void, so no sign-out form.
        furniture.csrf.clear();
        furniture.nav.clear();
    }
    let page = RecoveryCodesPage {
        page: furniture,
        errors: Errors::none(),
        csrf: String::new(),
        left: codes.len(),
        codes,
        first,
    };
    page.into_response()
}

pub async fn passkey_start(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.enrolling() {
        Ok(view) => view,
        Err(_) => return json_error(StatusCode::UNAUTHORIZED, "sign in again"),
    };
    if visitor.check_session_header(view).is_err() {
        return json_error(StatusCode::FORBIDDEN, "reload the page and try again");
    }
    ceremony_options(
        state.identity.start_passkey_enrolment(view).await,
        "registration",
    )
}

pub async fn passkey_finish(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<PasskeyForm>,
) -> Response {
    let view = match visitor.enrolling() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    match state
        .identity
        .finish_passkey_enrolment(
            view,
            &form.name,
            &form.response,
            visitor.source,
            visitor.now,
        )
        .await
    {
        Ok((token, codes)) => enrolled(view, &token, codes),
        Err(SignInError::Invalid(_) | SignInError::SessionEnded) => enrol_form(
            view,
            StatusCode::BAD_REQUEST,
            Errors::one(
                "passkey-name",
                "Your passkey was not registered. Try again, and confirm with your fingerprint, face or PIN when asked",
            ),
        ),
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "account.html")]
pub struct AccountPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub email: String,
    pub roles: String,
    pub overview: AccountOverview,
    pub totp_allowed: bool,
}

impl AccountPage {
    pub fn when(&self, ms: &i64) -> String {
        when(*ms)
    }

    pub fn last_used(&self, ms: &Option<i64>) -> String {
        ms.map_or_else(|| "never".to_owned(), when)
    }
}

pub async fn overview(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    match state.identity.account_overview(view, visitor.now).await {
        Ok(overview) => AccountPage {
            page: layout("Your account", Some(view), &Errors::none()),
            errors: Errors::none(),
            csrf: view.session.csrf.clone(),
            email: view.person.email.clone(),
            roles: view
                .person
                .roles
                .iter()
                .map(|role| role.as_str().replace('_', " "))
                .collect::<Vec<_>>()
                .join(", "),
            overview,
            totp_allowed: !view.needs_passkey(),
        }
        .into_response(),
        Err(error) => view::failure(Some(view), &error),
    }
}

pub async fn recovery_codes_page(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    let left = match state.identity.account_overview(view, visitor.now).await {
        Ok(overview) => overview.recovery_codes_left,
        Err(error) => return view::failure(Some(view), &error),
    };
    RecoveryCodesPage {
        page: layout("Recovery codes", Some(view), &Errors::none()),
        errors: Errors::none(),
        csrf: view.session.csrf.clone(),
        codes: Vec::new(),
        first: false,
        left,
    }
    .into_response()
}

pub async fn recovery_codes_regenerate(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    match state
        .identity
        .regenerate_recovery_codes(view, visitor.source, visitor.now)
        .await
    {
        Ok(codes) => recovery_codes_shown(view, codes, false),
        Err(SignInError::StepUpRequired) => step_up_redirect("/account/recovery-codes"),
        Err(error) => view::failure(Some(view), &error),
    }
}

pub async fn passkey_remove(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(credential): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    match state
        .identity
        .remove_passkey(view, &credential, visitor.source, visitor.now)
        .await
    {
        Ok(()) => Redirect::to("/account").into_response(),
        Err(SignInError::StepUpRequired) => step_up_redirect("/account"),
        Err(error) => view::failure(Some(view), &error),
    }
}

pub async fn sign_out_everywhere(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    match state
        .identity
        .sign_out_everywhere(view, visitor.source, visitor.now)
        .await
    {
        Ok(_) => clear_session(Redirect::to("/signin").into_response()),
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "step_up.html")]
pub struct StepUpPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub return_to: String,
    pub totp: bool,
    pub passkey: bool,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct ReturnQuery {
    #[serde(rename = "return")]
    return_to: Option<String>,
}

async fn step_up_form(
    state: &ServerState,
    visitor: &Visitor,
    view: &SessionView,
    return_to: String,
    status: StatusCode,
    errors: Errors,
) -> Response {
    let overview = match state.identity.account_overview(view, visitor.now).await {
        Ok(overview) => overview,
        Err(error) => return view::failure(Some(view), &error),
    };
    let page = StepUpPage {
        page: layout("Confirm it is you again", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        return_to,
        totp: overview.totp && !view.needs_passkey(),
        passkey: !overview.passkeys.is_empty(),
    };
    (status, page).into_response()
}

pub async fn step_up_page(
    State(state): State<ServerState>,
    visitor: Visitor,
    Query(query): Query<ReturnQuery>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    let return_to = safe_return(query.return_to.as_deref());
    step_up_form(
        &state,
        &visitor,
        view,
        return_to,
        StatusCode::OK,
        Errors::none(),
    )
    .await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StepUpForm {
    csrf: String,
    code: String,
    #[serde(rename = "return")]
    return_to: String,
    response: String,
}

pub async fn step_up_totp(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<StepUpForm>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let return_to = safe_return(Some(&form.return_to));
    let problem = if form.code.trim().is_empty() {
        "Enter the 6-digit code from your authenticator app"
    } else {
        match state
            .identity
            .step_up_totp(view, &form.code, visitor.source, visitor.now)
            .await
        {
            Ok(()) => return Redirect::to(&return_to).into_response(),
            Err(SignInError::Refused) => "The code is not right. Enter the newest code",
            Err(SignInError::PasskeyRequired) => "Your role needs a passkey: use your passkey",
            Err(error) => return view::failure(Some(view), &error),
        }
    };
    step_up_form(
        &state,
        &visitor,
        view,
        return_to,
        StatusCode::UNAUTHORIZED,
        Errors::one("code", problem),
    )
    .await
}

pub async fn step_up_passkey_start(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(_) => return json_error(StatusCode::UNAUTHORIZED, "sign in again"),
    };
    if visitor.check_session_header(view).is_err() {
        return json_error(StatusCode::FORBIDDEN, "reload the page and try again");
    }
    ceremony_options(state.identity.start_passkey_step_up(view).await, "step-up")
}

pub async fn step_up_passkey_finish(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<StepUpForm>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let return_to = safe_return(Some(&form.return_to));
    match state
        .identity
        .finish_passkey_step_up(view, &form.response, visitor.source, visitor.now)
        .await
    {
        Ok(()) => Redirect::to(&return_to).into_response(),
        Err(SignInError::Refused | SignInError::SessionEnded) => {
            step_up_form(
                &state,
                &visitor,
                view,
                return_to,
                StatusCode::UNAUTHORIZED,
                Errors::one(
                    "passkey",
                    "Your passkey did not confirm it is you. Try again",
                ),
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}
