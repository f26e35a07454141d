//! Reading the trail: the security officer's search (over HTTP, as FHIR AuditEvent) and the
//! host operator's (`carevault audit search`).
//!
//! Only a person holding `security_officer` in the principal's tenant may search, and only that
//! tenant's trail (the store search takes the principal's [`TenantScope`]). A machine client is
//! refused outright (no scope grants the trail); any other person gets an empty result, the same
//! answer the records routes give a person for what they may not see. Every search, allowed or
//! not, is itself recorded (`audit.search`) before any result is returned. Its record names no
//! data subjects: the officer reads metadata about access, not the records themselves. Its
//! detail lists the names of the filters used, never their values.

use super::storage::AuditFilter;
use super::{AUDIT_RECORD_VERSION, AuditRecord, Outcome};
use crate::admin::{AdminError, Administration};
use crate::ids::TenantId;
use crate::people::Role;
use crate::principal::{Actor, AuthStrength, Principal, TenantScope};
use crate::records::{RecordError, Records};

/// The action of a search's own audit record.
pub const AUDIT_SEARCH_ACTION: &str = "audit.search";

/// The most records one page carries.
pub const MAX_PAGE: usize = 1_000;

/// The page size when none is asked for.
pub const DEFAULT_PAGE: usize = 50;

/// Whether the principal may read its tenant's trail.
pub fn may_search(principal: &Principal) -> bool {
    matches!(principal.actor(), Actor::Person { roles, .. } if roles.contains(&Role::SecurityOfficer))
}

/// The names of the filters set, for the search's own audit record (values may be ids of
/// patients or people, which the record of a metadata read does not list).
pub fn filter_names(filter: &AuditFilter) -> String {
    let names = [
        ("patient", filter.patient.is_some()),
        ("principal", filter.principal.is_some()),
        ("session", filter.session.is_some()),
        ("source", filter.source.is_some()),
        ("action", filter.action.is_some()),
        ("outcome", filter.outcome.is_some()),
        ("since", filter.since_ms.is_some()),
        ("until", filter.until_ms.is_some()),
        ("cursor", filter.before_seq.is_some()),
    ];
    let used: Vec<&str> = names
        .iter()
        .filter(|(_, set)| *set)
        .map(|(name, _)| *name)
        .collect();
    if used.is_empty() {
        "filters: none".to_owned()
    } else {
        format!("filters: {}", used.join(","))
    }
}

/// A page size within bounds.
fn bounded(filter: &AuditFilter) -> AuditFilter {
    let mut filter = filter.clone();
    filter.limit = match filter.limit {
        0 => DEFAULT_PAGE,
        n => n.min(MAX_PAGE),
    };
    filter
}

fn search_record(
    tenant: TenantId,
    actor: &Actor,
    principal: Option<&Principal>,
    outcome: Outcome,
    detail: String,
    now_ms: i64,
) -> AuditRecord {
    AuditRecord {
        v: AUDIT_RECORD_VERSION,
        seq: 0,
        time_ms: now_ms,
        tenant,
        principal: actor.audit_name(),
        session: principal.and_then(|p| p.session().map(str::to_owned)),
        roles: actor.roles(),
        auth_strength: principal
            .map_or(AuthStrength::HostOperator, Principal::strength)
            .as_str()
            .to_owned(),
        source: principal.and_then(|p| p.source().map(|ip| ip.to_string())),
        action: AUDIT_SEARCH_ACTION.to_owned(),
        resource_type: Some("AuditEvent".to_owned()),
        resource_id: None,
        subjects: Vec::new(),
        categories: Vec::new(),
        purpose: None,
        outcome,
        detail: Some(detail),
    }
}

impl Records {
    /// The security officer's search of their tenant's trail, newest first. A machine client
    /// gets `Forbidden`; another person an empty page. Either way the attempt is recorded.
    pub async fn audit_search(
        &self,
        principal: &Principal,
        filter: &AuditFilter,
        now_ms: i64,
    ) -> Result<Vec<AuditRecord>, RecordError> {
        let tenant = principal.scope().tenant();
        let names = filter_names(filter);
        if !may_search(principal) {
            let record = search_record(
                tenant,
                principal.actor(),
                Some(principal),
                Outcome::Denied,
                names,
                now_ms,
            );
            self.audit
                .record(record)
                .await
                .map_err(|_| RecordError::AuditUnavailable)?;
            return match principal.actor() {
                Actor::Client { .. } => Err(RecordError::Forbidden(
                    "no scope grants the audit trail: only a tenant's security officer may \
                     search it"
                        .to_owned(),
                )),
                _ => Ok(Vec::new()),
            };
        }
        let found = self
            .store
            .audit_search(principal.scope(), &bounded(filter))
            .await?;
        let record = search_record(
            tenant,
            principal.actor(),
            Some(principal),
            Outcome::Success,
            format!("{names}; {} results", found.len()),
            now_ms,
        );
        self.audit
            .record(record)
            .await
            .map_err(|_| RecordError::AuditUnavailable)?;
        Ok(found)
    }
}

impl Administration {
    /// The host operator's search of one tenant's trail (`carevault audit search`), newest
    /// first; recorded in that tenant's trail as the operator's before it returns.
    pub async fn search_audit(
        &self,
        tenant: TenantId,
        filter: &AuditFilter,
        now_ms: i64,
    ) -> Result<Vec<AuditRecord>, AdminError> {
        if tenant != TenantId::platform() && self.store().tenant(tenant).await?.is_none() {
            return Err(AdminError::NotFound(format!("tenant {tenant}")));
        }
        let scope = TenantScope::new(tenant);
        let found = self.store().audit_search(&scope, &bounded(filter)).await?;
        let record = search_record(
            tenant,
            &Actor::Operator,
            None,
            Outcome::Success,
            format!("{}; {} results", filter_names(filter), found.len()),
            now_ms,
        );
        self.store().append_audit(&[record]).await?;
        Ok(found)
    }
}
