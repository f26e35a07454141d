//! Access outside the everyday rules, always with a reason and a time limit: supplier staff's
//! grants (requested here, approved by the tenant's administrator) and break-glass access to
//! one patient by a clinician or carer.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Response};
use carevault_domain::ids::TenantId;
use carevault_domain::people::{Role, SessionView, SignInError};
use serde::Deserialize;

use super::admin::{GrantRow, grant_rows};
use super::session::{Visitor, step_up_redirect};
use super::signin::{CsrfForm, capitalise};
use super::view::{self, Errors, Layout, layout, when};
use crate::ServerState;

#[derive(Template, WebTemplate)]
#[template(path = "operator_grants.html")]
pub struct OperatorGrantsPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub grants: Vec<GrantRow>,
    pub tenant: String,
    pub reason: String,
    pub minutes: String,
    pub notice: Option<String>,
    pub acting_under: Option<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct GrantRequestForm {
    csrf: String,
    tenant: String,
    reason: String,
    minutes: String,
}

async fn operator_page(
    state: &ServerState,
    visitor: &Visitor,
    view: &SessionView,
    status: StatusCode,
    errors: Errors,
    form: GrantRequestForm,
    notice: Option<String>,
) -> Response {
    let grants = match state.identity.grants_for(view).await {
        Ok(grants) => grants,
        Err(error) => return view::failure(Some(view), &error),
    };
    let page = OperatorGrantsPage {
        page: layout("Access to a customer organisation", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        grants: grant_rows(&grants, visitor.now),
        tenant: form.tenant,
        reason: form.reason,
        minutes: if form.minutes.is_empty() {
            "60".to_owned()
        } else {
            form.minutes
        },
        notice,
        acting_under: view.session.grant.clone(),
    };
    (status, page).into_response()
}

pub async fn operator_grants(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.with_role(&[Role::PlatformOperator]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    operator_page(
        &state,
        &visitor,
        view,
        StatusCode::OK,
        Errors::none(),
        GrantRequestForm::default(),
        None,
    )
    .await
}

pub async fn request_grant(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<GrantRequestForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::PlatformOperator]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let mut errors = Errors::none();
    let tenant = TenantId::parse(form.tenant.trim());
    if tenant.is_none() {
        errors.add("tenant", "Enter the organisation's tenant id, like 0b5c…-…");
    }
    if form.reason.trim().chars().count() < 10 {
        errors.add("reason", "Give the reason in a sentence");
    }
    let minutes = form.minutes.trim().parse::<i64>().ok();
    if !minutes.is_some_and(|m| (1..=480).contains(&m)) {
        errors.add("minutes", "Enter a number of minutes from 1 to 480");
    }
    let (Some(tenant), Some(minutes), true) = (tenant, minutes, errors.is_empty()) else {
        return operator_page(
            &state,
            &visitor,
            view,
            StatusCode::BAD_REQUEST,
            errors,
            form,
            None,
        )
        .await;
    };
    match state
        .identity
        .request_grant(
            view,
            tenant,
            &form.reason,
            minutes * 60_000,
            visitor.source,
            visitor.now,
        )
        .await
    {
        Ok(_) => {
            operator_page(
                &state,
                &visitor,
                view,
                StatusCode::OK,
                Errors::none(),
                GrantRequestForm::default(),
                Some("Your request is sent. The organisation's administrator decides.".to_owned()),
            )
            .await
        }
        Err(SignInError::Invalid(reason)) => {
            let errors = Errors::one("tenant", capitalise(&reason));
            operator_page(
                &state,
                &visitor,
                view,
                StatusCode::BAD_REQUEST,
                errors,
                form,
                None,
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}

pub async fn use_grant(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(grant): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::PlatformOperator]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    match state
        .identity
        .use_grant(view, &grant, visitor.source, visitor.now)
        .await
    {
        Ok(()) => view::message(
            StatusCode::OK,
            Some(view),
            "You are working under an access grant",
            &[
                "Your session now reads the organisation's records under this grant, and only until it ends. Every record you open is recorded with the grant.",
            ],
            Some(("/operator/grants", "Back to access grants")),
        ),
        Err(SignInError::Invalid(reason)) => {
            let errors = Errors::one("grants", capitalise(&reason));
            operator_page(
                &state,
                &visitor,
                view,
                StatusCode::BAD_REQUEST,
                errors,
                GrantRequestForm::default(),
                None,
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "break_glass.html")]
pub struct BreakGlassPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub patient: String,
    pub reason: String,
}

fn break_glass_form(
    view: &SessionView,
    status: StatusCode,
    errors: Errors,
    patient: String,
    reason: String,
) -> Response {
    let page = BreakGlassPage {
        page: layout(
            "Break-glass access to a patient's record",
            Some(view),
            &errors,
        ),
        errors,
        csrf: view.session.csrf.clone(),
        patient,
        reason,
    };
    (status, page).into_response()
}

pub async fn break_glass_page(visitor: Visitor) -> Response {
    match visitor.with_role(&[Role::Clinician, Role::Carer]) {
        Ok(view) => break_glass_form(
            view,
            StatusCode::OK,
            Errors::none(),
            String::new(),
            String::new(),
        ),
        Err(refusal) => refusal,
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct BreakGlassForm {
    csrf: String,
    patient: String,
    reason: String,
}

pub async fn break_glass(
    State(state): State<ServerState>,
    visitor: Visitor,
    Form(form): Form<BreakGlassForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::Clinician, Role::Carer]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let mut errors = Errors::none();
    if form.patient.trim().is_empty() {
        errors.add("patient", "Enter the patient's record id");
    }
    if form.reason.trim().chars().count() < 10 {
        errors.add(
            "reason",
            "Give the reason in a sentence (at least 10 characters)",
        );
    }
    if !errors.is_empty() {
        return break_glass_form(
            view,
            StatusCode::BAD_REQUEST,
            errors,
            form.patient,
            form.reason,
        );
    }
    match state
        .identity
        .break_glass(
            view,
            &form.patient,
            &form.reason,
            visitor.source,
            visitor.now,
        )
        .await
    {
        Ok(expires) => {
            let text = format!(
                "You can open this patient's record until {}. Your reason is recorded with every access, and the security team has been told.",
                when(expires)
            );
            view::message(
                StatusCode::OK,
                Some(view),
                "Break-glass access is open",
                &[text.as_str()],
                Some(("/", "Back to the start page")),
            )
        }
        Err(SignInError::StepUpRequired) => step_up_redirect("/break-glass"),
        Err(SignInError::Invalid(reason)) => {
            let field = if reason.contains("patient") {
                "patient"
            } else {
                "reason"
            };
            break_glass_form(
                view,
                StatusCode::BAD_REQUEST,
                Errors::one(field, capitalise(&reason)),
                form.patient,
                form.reason,
            )
        }
        Err(error) => view::failure(Some(view), &error),
    }
}
