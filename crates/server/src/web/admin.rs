//! Tenant administration: people (invite, disable, roles, factor resets approved by a second
//! administrator) and supplier access requests. Administrators read no clinical data here or
//! anywhere; changing roles, resetting factors and deciding grants need step-up.

use askama::Template;
use askama_web::WebTemplate;
use axum::Form;
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::StatusCode;
use axum::response::{IntoResponse, Redirect, Response};
use carevault_domain::ids::PersonId;
use carevault_domain::people::{
    GrantRecord, GrantStatus, Inviter, PersonStatus, Role, SessionView, SignInError,
};
use serde::Deserialize;

use super::session::{Visitor, step_up_redirect};
use super::signin::{CsrfForm, capitalise};
use super::view::{self, Errors, Layout, layout, when};
use crate::ServerState;

/// The roles a tenant administrator can give (supplier staff are the platform's).
pub const TENANT_ROLES: [Role; 4] = [
    Role::Clinician,
    Role::Carer,
    Role::TenantAdmin,
    Role::SecurityOfficer,
];

pub struct PersonRow {
    pub id: String,
    pub name: String,
    pub email: String,
    pub roles: Vec<&'static str>,
    pub active: bool,
    pub is_me: bool,
}

pub struct ResetRow {
    pub id: String,
    pub person: String,
    pub requested: String,
    pub mine: bool,
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_people.html")]
pub struct PeoplePage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub people: Vec<PersonRow>,
    pub resets: Vec<ResetRow>,
    pub roles: Vec<&'static str>,
    pub invitation_link: Option<String>,
    pub invitation_expires: String,
    pub notice: Option<String>,
}

impl PeoplePage {
    pub fn holds(&self, person: &PersonRow, role: &&str) -> bool {
        person.roles.contains(role)
    }
}

/// Parses a urlencoded body whose fields may repeat (checkboxes).
fn pairs(body: &[u8]) -> Vec<(String, String)> {
    form_urlencoded::parse(body).into_owned().collect()
}

fn field(pairs: &[(String, String)], name: &str) -> String {
    pairs
        .iter()
        .find(|(key, _)| key == name)
        .map(|(_, value)| value.clone())
        .unwrap_or_default()
}

fn chosen_roles(pairs: &[(String, String)]) -> Vec<Role> {
    let mut roles: Vec<Role> = pairs
        .iter()
        .filter(|(key, _)| key == "role")
        .filter_map(|(_, value)| Role::parse(value))
        .filter(|role| TENANT_ROLES.contains(role))
        .collect();
    roles.sort();
    roles.dedup();
    roles
}

async fn people_page(
    state: &ServerState,
    view: &SessionView,
    status: StatusCode,
    errors: Errors,
    invitation: Option<(String, i64)>,
    notice: Option<String>,
) -> Response {
    let people = match state.identity.list_people(view).await {
        Ok(people) => people,
        Err(error) => return view::failure(Some(view), &error),
    };
    let resets = match state.identity.pending_factor_resets(view).await {
        Ok(resets) => resets,
        Err(error) => return view::failure(Some(view), &error),
    };
    let name_of = |id: PersonId| {
        people
            .iter()
            .find(|person| person.id == id)
            .map_or_else(|| id.to_string(), |person| person.display_name.clone())
    };
    let resets = resets
        .iter()
        .map(|reset| ResetRow {
            id: reset.id.clone(),
            person: name_of(reset.person),
            requested: format!(
                "{} by {}",
                when(reset.requested_ms),
                name_of(reset.requested_by)
            ),
            mine: reset.requested_by == view.person.id || reset.person == view.person.id,
        })
        .collect();
    let (invitation_link, invitation_expires) = match invitation {
        Some((link, expires)) => (Some(link), when(expires)),
        None => (None, String::new()),
    };
    let page = PeoplePage {
        page: layout("People in your organisation", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        people: people
            .iter()
            .map(|person| PersonRow {
                id: person.id.to_string(),
                name: person.display_name.clone(),
                email: person.email.clone(),
                roles: person.roles.iter().map(|role| role.as_str()).collect(),
                active: person.status == PersonStatus::Active,
                is_me: person.id == view.person.id,
            })
            .collect(),
        resets,
        roles: TENANT_ROLES.iter().map(|role| role.as_str()).collect(),
        invitation_link,
        invitation_expires,
        notice,
    };
    (status, page).into_response()
}

pub async fn people(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    people_page(&state, view, StatusCode::OK, Errors::none(), None, None).await
}

pub async fn invite(State(state): State<ServerState>, visitor: Visitor, body: Bytes) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    let form = pairs(&body);
    if let Err(refusal) = visitor.check_session_csrf(view, &field(&form, "csrf")) {
        return refusal;
    }
    let email = field(&form, "email");
    let name = field(&form, "name");
    let practitioner = field(&form, "practitioner");
    let roles = chosen_roles(&form);
    let mut errors = Errors::none();
    if email.trim().is_empty() {
        errors.add("email", "Enter their email address");
    }
    if roles.is_empty() {
        errors.add("role-clinician", "Choose at least one role");
    }
    if !errors.is_empty() {
        return people_page(&state, view, StatusCode::BAD_REQUEST, errors, None, None).await;
    }
    let practitioner = practitioner.trim();
    match state
        .identity
        .invite(
            Inviter::Person(view),
            view.person.tenant,
            &email,
            &name,
            &roles,
            (!practitioner.is_empty()).then_some(practitioner),
            None,
            visitor.now,
        )
        .await
    {
        Ok(invitation) => {
            let link = format!("{}/invitation/{}", state.base_url, invitation.token);
            people_page(
                &state,
                view,
                StatusCode::OK,
                Errors::none(),
                Some((link, invitation.expires_ms)),
                None,
            )
            .await
        }
        Err(SignInError::Invalid(reason)) => {
            people_page(
                &state,
                view,
                StatusCode::BAD_REQUEST,
                Errors::one("email", capitalise(&reason)),
                None,
                None,
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}

fn person_id(text: &str) -> Option<PersonId> {
    PersonId::parse(text)
}

/// Finishes an administrator's action: back to the list, to step-up, or the problem shown.
async fn after_action(
    state: &ServerState,
    view: &SessionView,
    result: Result<(), SignInError>,
    notice: &str,
) -> Response {
    match result {
        Ok(()) => {
            people_page(
                state,
                view,
                StatusCode::OK,
                Errors::none(),
                None,
                Some(notice.to_owned()),
            )
            .await
        }
        Err(SignInError::StepUpRequired) => step_up_redirect("/admin/people"),
        Err(SignInError::Invalid(reason)) => {
            people_page(
                state,
                view,
                StatusCode::BAD_REQUEST,
                Errors::one("people", capitalise(&reason)),
                None,
                None,
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct StatusForm {
    csrf: String,
    status: String,
}

pub async fn set_status(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(person): Path<String>,
    Form(form): Form<StatusForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let (Some(person), Some(status)) = (person_id(&person), PersonStatus::parse(&form.status))
    else {
        return view::not_found(Some(view));
    };
    let result = state
        .identity
        .set_person_status(view, person, status, visitor.source, visitor.now)
        .await;
    let notice = match status {
        PersonStatus::Active => "The account is enabled.",
        PersonStatus::Disabled => "The account is disabled and its sessions have ended.",
    };
    after_action(&state, view, result, notice).await
}

pub async fn set_roles(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(person): Path<String>,
    body: Bytes,
) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    let form = pairs(&body);
    if let Err(refusal) = visitor.check_session_csrf(view, &field(&form, "csrf")) {
        return refusal;
    }
    let Some(person) = person_id(&person) else {
        return view::not_found(Some(view));
    };
    let result = state
        .identity
        .set_roles(
            view,
            person,
            &chosen_roles(&form),
            visitor.source,
            visitor.now,
        )
        .await;
    after_action(
        &state,
        view,
        result,
        "Their roles are changed; they must sign in again.",
    )
    .await
}

pub async fn request_reset(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(person): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let Some(person) = person_id(&person) else {
        return view::not_found(Some(view));
    };
    let result = state
        .identity
        .request_factor_reset(view, person, visitor.source, visitor.now)
        .await
        .map(|_| ());
    after_action(
        &state,
        view,
        result,
        "The reset is requested. Another administrator must approve it.",
    )
    .await
}

pub async fn approve_reset(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(reset): Path<String>,
    Form(form): Form<CsrfForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let result = state
        .identity
        .approve_factor_reset(view, &reset, visitor.source, visitor.now)
        .await;
    after_action(
        &state,
        view,
        result,
        "Their factors are reset and they have been told. They must set them up again.",
    )
    .await
}

pub struct GrantRow {
    pub id: String,
    pub tenant: String,
    pub reason: String,
    pub duration: String,
    pub status: &'static str,
    pub requested: String,
    pub expires: String,
    pub open: bool,
    pub usable: bool,
}

pub fn grant_rows(grants: &[GrantRecord], now_ms: i64) -> Vec<GrantRow> {
    grants
        .iter()
        .rev()
        .map(|grant| {
            let expired = grant.expires_ms.is_some_and(|end| end <= now_ms);
            GrantRow {
                id: grant.id.clone(),
                tenant: grant.tenant.to_string(),
                reason: grant.reason.clone(),
                duration: format!("{} minutes", grant.duration_ms / 60_000),
                status: if grant.status == GrantStatus::Approved && expired {
                    "expired"
                } else {
                    grant.status.as_str()
                },
                requested: when(grant.requested_ms),
                expires: grant.expires_ms.map_or_else(String::new, when),
                open: grant.status == GrantStatus::Requested,
                usable: grant.status == GrantStatus::Approved && !expired,
            }
        })
        .collect()
}

#[derive(Template, WebTemplate)]
#[template(path = "admin_grants.html")]
pub struct GrantsPage {
    pub page: Layout,
    pub errors: Errors,
    pub csrf: String,
    pub grants: Vec<GrantRow>,
    pub notice: Option<String>,
}

async fn grants_page(
    state: &ServerState,
    visitor: &Visitor,
    view: &SessionView,
    status: StatusCode,
    errors: Errors,
    notice: Option<String>,
) -> Response {
    let grants = match state.identity.grants_for(view).await {
        Ok(grants) => grants,
        Err(error) => return view::failure(Some(view), &error),
    };
    let page = GrantsPage {
        page: layout("Supplier access requests", Some(view), &errors),
        errors,
        csrf: view.session.csrf.clone(),
        grants: grant_rows(&grants, visitor.now),
        notice,
    };
    (status, page).into_response()
}

pub async fn grants(State(state): State<ServerState>, visitor: Visitor) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    grants_page(&state, &visitor, view, StatusCode::OK, Errors::none(), None).await
}

#[derive(Deserialize, Default)]
#[serde(default)]
pub struct DecisionForm {
    csrf: String,
    decision: String,
}

pub async fn decide_grant(
    State(state): State<ServerState>,
    visitor: Visitor,
    Path(grant): Path<String>,
    Form(form): Form<DecisionForm>,
) -> Response {
    let view = match visitor.with_role(&[Role::TenantAdmin]) {
        Ok(view) => view,
        Err(refusal) => return refusal,
    };
    if let Err(refusal) = visitor.check_session_csrf(view, &form.csrf) {
        return refusal;
    }
    let approve = match form.decision.as_str() {
        "approve" => true,
        "refuse" => false,
        _ => return Redirect::to("/admin/grants").into_response(),
    };
    match state
        .identity
        .decide_grant(view, &grant, approve, visitor.source, visitor.now)
        .await
    {
        Ok(_) => {
            let notice = if approve {
                "Access is approved. It ends by itself when its time is up."
            } else {
                "Access is refused."
            };
            grants_page(
                &state,
                &visitor,
                view,
                StatusCode::OK,
                Errors::none(),
                Some(notice.to_owned()),
            )
            .await
        }
        Err(SignInError::StepUpRequired) => step_up_redirect("/admin/grants"),
        Err(SignInError::Invalid(reason)) => {
            grants_page(
                &state,
                &visitor,
                view,
                StatusCode::BAD_REQUEST,
                Errors::one("grants", capitalise(&reason)),
                None,
            )
            .await
        }
        Err(error) => view::failure(Some(view), &error),
    }
}
