//! The start page, and home-entry details: recorded by clinicians, revealed one home at a time
//! to the carer visiting today (or under break-glass) after step-up. The details are never
//! shown back on the recording page and never reach /fhir.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::extract::{Path, Query, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use carevault_domain::ids::ResourceId;
use carevault_domain::people::{HomeEntryDetails, Role, SessionView, SignInError};
use carevault_domain::principal::{Access, PatientReach, Principal};
use serde::Deserialize;

use super::session::{Visitor, redirect_to_next_step, step_up_redirect};
use super::signin::{CsrfForm, capitalise};
use super::view::{self, Errors, Layout, layout};
use crate::ServerState;

#[derive(Template, WebTemplate)]
#[template(path = "home.html")]
pub struct HomePage {
    pub page: Layout,
    pub errors: Errors,
    pub name: String,
    pub clinician: bool,
    pub carer: bool,
    /// Record ids of the patients a carer may see today (ids only, no names).
    pub visits: Vec<String>,
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct HomeQuery {
    patient: Option<String>,
}

/// The start page: each person goes where their roles fit.
pub async fn home(
    State(state): State<ServerState>,
    visitor: Visitor,
    Query(query): Query<HomeQuery>,
) -> Response {
    let view = match visitor.signed_in() {
        Ok(view) => view,
        Err(redirect) => return redirect,
    };
    let roles = &view.person.roles;
    let clinician = roles.contains(&Role::Clinician);
    let carer = roles.contains(&Role::Carer);
    if !clinician && !carer {
        let target = if roles.contains(&Role::TenantAdmin) {
            "/admin/people"
        } else if roles.contains(&Role::PlatformOperator) {
            "/operator/grants"
        } else {
            "/account"
        };
        return Redirect::to(target).into_response();
    }
    if let Some(patient) = query.patient.as_deref().map(str::trim)
        && clinician
        && ResourceId::parse(patient).is_some()
    {
        return Redirect::to(&format!("/patients/{patient}/entry")).into_response();
    }
    let visits = if carer && !clinician {
        match principal(&state, &visitor, view).await {
            Ok(principal) => match principal.access() {
                Access::Roles {
                    reach: PatientReach::Only(patients),
                    ..
                } => patients.iter().cloned().collect(),
                _ => Vec::new(),
            },
            Err(response) => return response,
        }
    } else {
        Vec::new()
    };
    HomePage {
        page: layout("Start page", Some(view), &Errors::none()),
        errors: Errors::none(),
        name: view.person.display_name.clone(),
        clinician,
        carer,
        visits,
    }
    .into_response()
}

async fn principal(
    state: &ServerState,
    visitor: &Visitor,
    view: &SessionView,
) -> Result<Principal, Response> {
    match state
        .identity
        .principal(view, visitor.source, visitor.now)
        .await
    {
        Ok(Some(principal)) => Ok(principal),
        Ok(None) => Err(redirect_to_next_step(Some(view))),
        Err(error) => Err(view::failure(Some(view), &error)),
    }
}

fn patient_id(text: &str) -> Option<String> {
    ResourceId::parse(text).map(|_| text.to_owned())
}

#[derive(Template, WebTemplate)]
#[template(path = "visit_entry.html")]
pub struct VisitEntryPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub patient: String,
    pub details: Option<HomeEntryDetails>,
}

pub async fn visit_entry_page(visitor: Visitor, Path(patient): Path<String>) -> Response {
    let view = match visitor.with_role(&[Role::Carer, Role::Clinician]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    let Some(patient) = patient_id(&patient) else {
        return view::not_found(Some(view));
    };
    VisitEntryPage {
        page: layout("Entry details for a visit", Some(view), &Errors::none()),
        errors: Errors::none(),
        csrf: view.session.csrf.clone(),
        patient,
        details: None,
    }
    .into_response()
}

pub async fn reveal_entry(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(patient): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::Carer, Role::Clinician]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let Some(patient) = patient_id(&patient) else {
        return view::not_found(Some(view));
    };
    let principal = match principal(&state, &visitor, view).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    match state
        .identity
        .reveal_home_entry(view, &principal, &patient, visitor.now)
        .await
    {
        Ok(details) => VisitEntryPage {
            page: layout("Entry details revealed", Some(view), &Errors::none()),
            errors: Errors::none(),
            csrf: view.session.csrf.clone(),
            patient,
            details: Some(details),
        }
        .into_response(),
        Err(SignInError::StepUpRequired) => step_up_redirect(&format!("/visits/{patient}/entry")),
        Err(SignInError::Invalid(_)) => view::message(
            StatusCode::NOT_FOUND,
            Some(view),
            "No entry details for you here",
            &[
                "Entry details are shown only to the carer visiting this home today, or with break-glass access.",
            ],
            Some(("/", "Back to the start page")),
        ),
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Template, WebTemplate)]
#[template(path = "patient_entry.html")]
pub struct PatientEntryPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub patient: String,
    pub saved: bool,
}

fn patient_entry_form(
    view: &SessionView,
    status: StatusCode,
    errors: Errors,
    patient: String,
    saved: bool,
) -> Response {
    let page = PatientEntryPage {
        page: layout("Record entry details for a home", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        patient,
        saved,
    };
    (status, page).into_response()
}

pub async fn patient_entry_page(visitor: Visitor, Path(patient): Path<String>) -> Response {
    let view = match visitor.with_role(&[Role::Clinician]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    let Some(patient) = patient_id(&patient) else {
        return view::not_found(Some(view));
    };
    patient_entry_form(view, StatusCode::OK, Errors::none(), patient, false)
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct EntryForm {
    csrf: String,
    key_safe_code: String,
    instructions: String,
}

pub async fn record_entry(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(patient): Path<String>,
    Form(form): Form<EntryForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::Clinician]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let Some(patient) = patient_id(&patient) else {
        return view::not_found(Some(view));
    };
    let principal = match principal(&state, &visitor, view).await {
        Ok(principal) => principal,
        Err(response) => return response,
    };
    let details = HomeEntryDetails {
        key_safe_code: form.key_safe_code.trim().to_owned(),
        instructions: form.instructions.trim().to_owned(),
    };
    match state
        .identity
        .put_home_entry(&principal, &patient, &details, visitor.now)
        .await
    {
        Ok(()) => patient_entry_form(view, StatusCode::OK, Errors::none(), patient, true),
        Err(SignInError::Invalid(reason)) => patient_entry_form(
            view,
            StatusCode::BAD_REQUEST,
            Errors::one("key-safe-code", capitalise(&reason)),
            patient,
            false,
        ),
        Err(error) => view::failure(Some(view), &error),
    }
}
