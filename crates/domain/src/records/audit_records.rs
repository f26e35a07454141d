//! The audit records of record interactions: what a read, search or write names (its data
//! subjects and categories, never its content), and what a refusal names (only its kind).

use std::collections::BTreeSet;

use carevault_fhir::ResourceType;

use super::{AuditSubject, RecordError, ResourceView};
use crate::audit::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use crate::ids::ResourceId;
use crate::principal::Principal;

pub(crate) fn categories_of(types: impl IntoIterator<Item = ResourceType>) -> Vec<String> {
    let categories: BTreeSet<&'static str> = types
        .into_iter()
        .flat_map(|rt| {
            rt.data_categories()
                .iter()
                .map(|category| category.as_str())
        })
        .collect();
    categories.into_iter().map(str::to_owned).collect()
}

pub(crate) fn audit_record(
    principal: &Principal,
    about: &AuditSubject<'_>,
    subjects: Vec<String>,
    categories: Vec<String>,
    outcome: Outcome,
    detail: Option<String>,
    now_ms: i64,
) -> AuditRecord {
    let mut subjects = subjects;
    subjects.sort();
    subjects.dedup();
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: now_ms,
        tenant: principal.scope().tenant(),
        principal: principal.actor().audit_name(),
        session: principal.session().map(str::to_owned),
        roles: principal.actor().roles(),
        auth_strength: principal.strength().as_str().to_owned(),
        source: principal.source().map(|ip| ip.to_string()),
        action: about.action.to_owned(),
        resource_type: about.resource_type.map(|rt| rt.name().to_owned()),
        // The id comes from the URL: only a well-formed FHIR id is kept, so a client cannot
        // put free text (a name, say) into the trail through a malformed one.
        resource_id: about
            .resource_id
            .and_then(ResourceId::parse)
            .map(|id| id.as_str().to_owned()),
        purpose: principal.access().purpose_for(&subjects),
        subjects,
        categories,
        outcome,
        detail,
    }
}

pub(super) fn failure_record(
    principal: &Principal,
    about: &AuditSubject<'_>,
    error: &RecordError,
    now_ms: i64,
) -> AuditRecord {
    // Only the kind of failure is recorded: never request content, which may be personal.
    let detail = match error {
        RecordError::Invalid(issues) | RecordError::Unprocessable(issues) => {
            Some(format!("{} issue(s)", issues.len()))
        }
        RecordError::Forbidden(_) => Some("scope".to_owned()),
        _ => None,
    };
    audit_record(
        principal,
        about,
        Vec::new(),
        Vec::new(),
        error.outcome(),
        detail,
        now_ms,
    )
}

pub(crate) fn write_record(
    principal: &Principal,
    action: &str,
    view: &ResourceView,
    now_ms: i64,
) -> AuditRecord {
    let about = AuditSubject {
        action,
        resource_type: Some(view.resource_type),
        resource_id: Some(&view.id),
    };
    audit_record(
        principal,
        &about,
        view.subjects(),
        categories_of([view.resource_type]),
        Outcome::Success,
        None,
        now_ms,
    )
}
