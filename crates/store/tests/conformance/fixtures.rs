//! Fixtures shared by the suite's modules.

use std::sync::Arc;

use carevault_domain::audit::{AuditRecord, Outcome};
use carevault_domain::ids::TenantId;
use carevault_domain::principal::TenantScope;
use carevault_domain::store::{
    CandidateFilter, CandidateQuery, DateEntry, Precondition, ResourceWrite, SortBy, Store,
    StoredVersion, TenantRecord, TenantStatus,
};
use carevault_domain::testing::scope_for;

pub(crate) const T0: i64 = 1_700_000_000_000;

pub(crate) async fn new_tenant(store: &Arc<dyn Store>, name: &str) -> (TenantId, TenantScope) {
    let id = TenantId::generate();
    let record = TenantRecord {
        id,
        name: format!("{name}-{id}"),
        status: TenantStatus::Active,
        created_ms: T0,
    };
    store.create_tenant(&record, &[]).await.unwrap();
    (id, scope_for(id))
}

pub(crate) fn version(resource_type: &str, id: &str, version: i64, updated: i64) -> StoredVersion {
    StoredVersion {
        resource_type: resource_type.to_owned(),
        id: id.to_owned(),
        version,
        last_updated_ms: updated,
        deleted: false,
        body: format!("sealed {resource_type}/{id}/{version}").into_bytes(),
    }
}

pub(crate) fn create(resource_type: &str, id: &str, updated: i64) -> ResourceWrite {
    ResourceWrite {
        version: version(resource_type, id, 1, updated),
        precondition: Precondition::Absent,
        tokens: Vec::new(),
        dates: Vec::new(),
    }
}

pub(crate) fn update(
    resource_type: &str,
    id: &str,
    new_version: i64,
    updated: i64,
) -> ResourceWrite {
    ResourceWrite {
        version: version(resource_type, id, new_version, updated),
        precondition: Precondition::CurrentVersion(new_version - 1),
        tokens: Vec::new(),
        dates: Vec::new(),
    }
}

pub(crate) fn tombstone(
    resource_type: &str,
    id: &str,
    new_version: i64,
    updated: i64,
) -> ResourceWrite {
    let mut write = update(resource_type, id, new_version, updated);
    write.version.deleted = true;
    write.version.body = Vec::new();
    write
}

pub(crate) fn token(byte: u8) -> [u8; 16] {
    [byte; 16]
}

pub(crate) fn date(param: &str, low: i64, high: i64) -> DateEntry {
    DateEntry {
        param: param.to_owned(),
        low,
        high,
    }
}

pub(crate) fn audit(tenant: TenantId, action: &str, detail: &str) -> AuditRecord {
    AuditRecord {
        v: 1,
        seq: 0,
        time_ms: T0,
        tenant,
        principal: "operator/cli".to_owned(),
        session: None,
        roles: vec!["platform_operator".to_owned()],
        auth_strength: "host-operator".to_owned(),
        source: None,
        action: action.to_owned(),
        resource_type: Some("Patient".to_owned()),
        resource_id: Some("p1".to_owned()),
        subjects: vec!["p1".to_owned()],
        categories: vec!["demographics".to_owned()],
        purpose: None,
        outcome: Outcome::Success,
        detail: Some(detail.to_owned()),
    }
}

pub(crate) fn query(resource_type: &str, filters: Vec<CandidateFilter>) -> CandidateQuery {
    CandidateQuery {
        resource_type: resource_type.to_owned(),
        filters,
        sort: SortBy::LastUpdated,
        descending: false,
        after: None,
        limit: 100,
    }
}

pub(crate) async fn search_ids(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    query: &CandidateQuery,
) -> Vec<String> {
    store
        .search(scope, query)
        .await
        .unwrap()
        .into_iter()
        .map(|candidate| candidate.version.id)
        .collect()
}

/// The sort value and id of each candidate of `query`, in order.
pub(crate) async fn search_pairs(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    query: &CandidateQuery,
) -> Vec<(i64, String)> {
    store
        .search(scope, query)
        .await
        .unwrap()
        .into_iter()
        .map(|candidate| (candidate.sort_value, candidate.version.id))
        .collect()
}

/// Owned (sort value, id) pairs, to compare with [`search_pairs`].
pub(crate) fn pairs(expected: &[(i64, &str)]) -> Vec<(i64, String)> {
    expected
        .iter()
        .map(|(value, id)| (*value, (*id).to_owned()))
        .collect()
}

/// The ids of every page of `query`, following the keyset cursor from page to page.
pub(crate) async fn search_all_ids(
    store: &Arc<dyn Store>,
    scope: &TenantScope,
    mut query: CandidateQuery,
) -> Vec<String> {
    let mut ids = Vec::new();
    loop {
        let page = store.search(scope, &query).await.unwrap();
        ids.extend(page.iter().map(|candidate| candidate.version.id.clone()));
        match page.last() {
            Some(last) if page.len() == query.limit => {
                query.after = Some((last.sort_value, last.version.id.clone()));
            }
            _ => return ids,
        }
    }
}

pub(crate) fn sorted(mut ids: Vec<String>) -> Vec<String> {
    ids.sort();
    ids
}

pub(crate) fn strings(ids: &[&str]) -> Vec<String> {
    ids.iter().map(|id| (*id).to_owned()).collect()
}
