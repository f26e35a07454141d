//! Search and history: candidates from blind indexes, re-checked after opening, paged with
//! opaque cursors that are bound to the tenant and to the query.
//!
//! A cursor is `base64url(payload).base64url(mac)` where the MAC is keyed with the tenant's
//! index key over (tenant, payload) and the payload carries a fingerprint of the query. A
//! cursor from another tenant or another query fails the check and is refused exactly like a
//! malformed one.

use std::collections::{BTreeSet, HashSet};

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use carevault_fhir::{Lookup, ResourceType, SearchParam, SearchQuery, SortKey};
use serde::{Deserialize, Serialize};

use crate::audit::Outcome;
use crate::keyring::TenantKeys;
use crate::principal::{Principal, TenantScope};
use crate::records::{
    AuditSubject, RecordError, Records, ResourceBody, ResourceView, audit_record, categories_of,
    require,
};
use crate::scopes::Interaction;
use crate::store::{CandidateFilter, CandidateQuery, HistoryQuery, SortBy};

const DEFAULT_COUNT: usize = 20;
const MAX_COUNT: usize = 1000;
const CURSOR_LABEL: &str = "carevault/cursor/v1";

/// One page of search results.
#[derive(Debug)]
pub struct SearchPage {
    pub matches: Vec<ResourceView>,
    /// Resources added by `_include` (search mode "include").
    pub included: Vec<ResourceView>,
    /// Opaque cursor for the next page, if there is one.
    pub next_cursor: Option<String>,
}

/// One page of history, newest first.
#[derive(Debug)]
pub struct HistoryPage {
    pub entries: Vec<ResourceView>,
    pub next_cursor: Option<String>,
}

#[derive(Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
struct CursorPayload {
    /// Fingerprint of the query (type and parameters, without the cursor).
    q: String,
    /// Keyset position: sort value (or last_updated) and id, plus version for history.
    s: i64,
    i: String,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    v: Option<i64>,
}

fn query_fingerprint(
    kind: &str,
    rt: ResourceType,
    id: Option<&str>,
    pairs: &[(String, String)],
) -> String {
    let mut parts: Vec<String> = pairs
        .iter()
        .filter(|(key, _)| key != "_cursor")
        .map(|(key, value)| format!("{key}={value}"))
        .collect();
    parts.sort();
    let text = format!(
        "{kind}\u{0}{}\u{0}{}\u{0}{}",
        rt.name(),
        id.unwrap_or(""),
        parts.join("\u{0}")
    );
    hex::encode(&carevault_crypto::sha256(text.as_bytes())[..16])
}

fn seal_cursor(
    keys: &TenantKeys,
    scope: &TenantScope,
    payload: &CursorPayload,
) -> Result<String, RecordError> {
    let json =
        serde_json::to_vec(payload).map_err(|error| RecordError::Internal(error.to_string()))?;
    let tag = keys
        .index_key()
        .mac(CURSOR_LABEL, &cursor_mac_input(scope, &json));
    Ok(format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(&json),
        URL_SAFE_NO_PAD.encode(tag)
    ))
}

/// The tokens of a term look-up: each term blinded under `param` and under each parameter it
/// includes (`Lookup::Terms`).
fn blind_terms(keys: &TenantKeys, param: &str, also: &[&str], any_of: &[String]) -> Vec<[u8; 16]> {
    std::iter::once(param)
        .chain(also.iter().copied())
        .flat_map(|param| {
            any_of
                .iter()
                .map(move |term| keys.index_key().blind_token(param, term))
        })
        .collect()
}

/// A date parameter's name and those of the parameters it includes (`Lookup::Dates`).
fn with_included(param: &str, also: &[&str]) -> Vec<String> {
    std::iter::once(param)
        .chain(also.iter().copied())
        .map(str::to_owned)
        .collect()
}

/// Date parameter `param` of `rt` and those it includes (`SearchParam::includes`).
fn date_params(rt: ResourceType, param: &str) -> Vec<String> {
    let also = rt
        .search_param(param)
        .map_or(&[][..], SearchParam::includes);
    with_included(param, also)
}

fn cursor_mac_input(scope: &TenantScope, json: &[u8]) -> Vec<u8> {
    let mut input = scope.tenant().as_uuid().as_bytes().to_vec();
    input.extend_from_slice(json);
    input
}

fn open_cursor(
    keys: &TenantKeys,
    scope: &TenantScope,
    cursor: &str,
    fingerprint: &str,
) -> Result<CursorPayload, RecordError> {
    let refuse = || {
        RecordError::invalid(
            "_cursor",
            "the paging cursor is not valid for this search; start again from the first page",
        )
    };
    let (payload, tag) = cursor.split_once('.').ok_or_else(refuse)?;
    let json = URL_SAFE_NO_PAD.decode(payload).map_err(|_| refuse())?;
    let tag = URL_SAFE_NO_PAD.decode(tag).map_err(|_| refuse())?;
    if !keys
        .index_key()
        .verify_mac(CURSOR_LABEL, &cursor_mac_input(scope, &json), &tag)
    {
        return Err(refuse());
    }
    let payload: CursorPayload = serde_json::from_slice(&json).map_err(|_| refuse())?;
    if payload.q != fingerprint {
        return Err(refuse());
    }
    Ok(payload)
}

impl Records {
    /// Type-level search. `pairs` are the decoded query parameters (GET or POST _search).
    pub async fn search(
        &self,
        principal: &Principal,
        rt: ResourceType,
        pairs: &[(String, String)],
        now_ms: i64,
    ) -> Result<SearchPage, RecordError> {
        let names: BTreeSet<&str> = pairs.iter().map(|(key, _)| key.as_str()).collect();
        let detail = names.into_iter().collect::<Vec<_>>().join(",");
        let about = AuditSubject {
            action: "search",
            resource_type: Some(rt),
            resource_id: None,
        };
        match self.run_search(principal, rt, pairs).await {
            Ok(page) => {
                let subjects = page
                    .matches
                    .iter()
                    .chain(&page.included)
                    .flat_map(ResourceView::subjects)
                    .collect();
                let types = page
                    .matches
                    .iter()
                    .chain(&page.included)
                    .map(|view| view.resource_type);
                let record = audit_record(
                    principal,
                    &about,
                    subjects,
                    categories_of(types),
                    Outcome::Success,
                    Some(detail),
                    now_ms,
                );
                self.audit
                    .record(record)
                    .await
                    .map_err(|_| RecordError::AuditUnavailable)?;
                Ok(page)
            }
            Err(error) => Err(self.fail(principal, &about, error, now_ms).await),
        }
    }

    async fn run_search(
        &self,
        principal: &Principal,
        rt: ResourceType,
        pairs: &[(String, String)],
    ) -> Result<SearchPage, RecordError> {
        if !principal.allows(rt.name(), Interaction::Search)
            && matches!(principal.access(), crate::principal::Access::Roles { .. })
        {
            // A person outside the type finds nothing, as if there were nothing to find.
            return Ok(SearchPage {
                matches: Vec::new(),
                included: Vec::new(),
                next_cursor: None,
            });
        }
        require(principal, rt, Interaction::Search)?;
        let query: SearchQuery = carevault_fhir::parse_search(rt, pairs)
            .map_err(|issue| RecordError::Invalid(vec![issue]))?;
        let scope = principal.scope();
        let keys = self.keyring.keys(scope.tenant()).await?;
        let fingerprint = query_fingerprint("search", rt, None, pairs);
        let mut after = match &query.cursor {
            Some(cursor) => {
                let payload = open_cursor(&keys, scope, cursor, &fingerprint)?;
                Some((payload.s, payload.i))
            }
            None => None,
        };
        let count = query.count.unwrap_or(DEFAULT_COUNT).min(MAX_COUNT);
        let (sort, descending) = match query.sort {
            Some(SortKey::Date { param, descending }) => {
                (SortBy::Date(date_params(rt, param)), descending)
            }
            Some(SortKey::LastUpdated { descending }) => (SortBy::LastUpdated, descending),
            None => (SortBy::LastUpdated, false),
        };
        let mut filters = Vec::new();
        let mut unindexed = Vec::new();
        for param in &query.params {
            match param.lookup() {
                Lookup::Terms {
                    param,
                    also,
                    any_of,
                } => filters.push(CandidateFilter::AnyToken(blind_terms(
                    &keys, param, also, &any_of,
                ))),
                Lookup::Dates {
                    param,
                    also,
                    any_of,
                } => filters.push(CandidateFilter::AnyDate {
                    params: with_included(param, also),
                    conditions: any_of,
                }),
                Lookup::Ids(ids) => filters.push(CandidateFilter::Ids(ids)),
                Lookup::LastUpdated(conditions) => {
                    filters.push(CandidateFilter::LastUpdated(conditions))
                }
                Lookup::Unindexed => unindexed.push(param.name().to_owned()),
            }
        }
        if filters.is_empty() && !unindexed.is_empty() {
            return Err(RecordError::Invalid(vec![carevault_fhir::Issue::error(
                carevault_fhir::IssueCode::NotSupported,
                unindexed.join(","),
                format!(
                    "the search on {} cannot use an index on its own; add an indexed parameter \
                     (such as identifier, family or birthdate=eq…) to narrow it",
                    unindexed.join(", ")
                ),
            )]));
        }
        let mut matches = Vec::new();
        let mut next_cursor = None;
        if count > 0 {
            // Fetch candidates in batches until the page is full or candidates run out; the
            // re-check after opening is the authority, the index only narrows.
            let batch = (count + 1).clamp(16, 500);
            'pages: loop {
                let candidates = self
                    .store
                    .search(
                        scope,
                        &CandidateQuery {
                            resource_type: rt.name().to_owned(),
                            filters: filters.clone(),
                            sort: sort.clone(),
                            descending,
                            after: after.clone(),
                            limit: batch,
                        },
                    )
                    .await?;
                let exhausted = candidates.len() < batch;
                for candidate in candidates {
                    let position = (candidate.sort_value, candidate.version.id.clone());
                    let view = self.open(&keys, scope, rt, &candidate.version)?;
                    let body = view.body.as_ref().map(ResourceBody::value);
                    // Outside the principal's reach counts as not matching, so a carer's
                    // search finds only the patients in their care.
                    let accepted = body.is_some_and(|body| {
                        query
                            .params
                            .iter()
                            .all(|param| param.matches(body, &view.id, view.last_updated_ms))
                    }) && principal.access().reaches(&view.subjects());
                    if accepted {
                        if matches.len() == count {
                            let (s, i) = after.clone().unwrap_or(position);
                            next_cursor = Some(seal_cursor(
                                &keys,
                                scope,
                                &CursorPayload {
                                    q: fingerprint.clone(),
                                    s,
                                    i,
                                    v: None,
                                },
                            )?);
                            break 'pages;
                        }
                        matches.push(view);
                    }
                    after = Some(position);
                }
                if exhausted {
                    break;
                }
            }
        }
        let included = self
            .resolve_includes(principal, &keys, &query, &matches)
            .await?;
        Ok(SearchPage {
            matches,
            included,
            next_cursor,
        })
    }

    async fn resolve_includes(
        &self,
        principal: &Principal,
        keys: &TenantKeys,
        query: &SearchQuery,
        matches: &[ResourceView],
    ) -> Result<Vec<ResourceView>, RecordError> {
        if query.includes.is_empty() || matches.is_empty() {
            return Ok(Vec::new());
        }
        let already: HashSet<(&str, &str)> = matches
            .iter()
            .map(|view| (view.resource_type.name(), view.id.as_str()))
            .collect();
        let mut wanted = BTreeSet::new();
        for include in &query.includes {
            for view in matches {
                let Some(body) = &view.body else { continue };
                for reference in include.references(body.value()) {
                    let Some((type_name, id)) = reference.split_once('/') else {
                        continue;
                    };
                    let Some(target) = carevault_fhir::resource_type(type_name) else {
                        continue;
                    };
                    // Included resources are reads: the token must allow reading that type.
                    if !principal.allows(target.name(), Interaction::Read) {
                        continue;
                    }
                    if !already.contains(&(target.name(), id)) {
                        wanted.insert((target.name().to_owned(), id.to_owned()));
                    }
                }
            }
        }
        let wanted: Vec<(String, String)> = wanted.into_iter().collect();
        let stored = self.store.current_many(principal.scope(), &wanted).await?;
        let mut included = Vec::with_capacity(stored.len());
        for version in &stored {
            let Some(rt) = carevault_fhir::resource_type(&version.resource_type) else {
                continue;
            };
            let view = self.open(keys, principal.scope(), rt, version)?;
            if principal.access().reaches(&view.subjects()) {
                included.push(view);
            }
        }
        Ok(included)
    }

    /// Instance history (`id` given) or type history, newest first.
    pub async fn history(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: Option<&str>,
        pairs: &[(String, String)],
        now_ms: i64,
    ) -> Result<HistoryPage, RecordError> {
        let about = AuditSubject {
            action: "history",
            resource_type: Some(rt),
            resource_id: id,
        };
        match self.run_history(principal, rt, id, pairs).await {
            Ok(page) => {
                let subjects = page
                    .entries
                    .iter()
                    .flat_map(ResourceView::subjects)
                    .collect();
                let record = audit_record(
                    principal,
                    &about,
                    subjects,
                    categories_of(page.entries.iter().map(|view| view.resource_type)),
                    Outcome::Success,
                    None,
                    now_ms,
                );
                self.audit
                    .record(record)
                    .await
                    .map_err(|_| RecordError::AuditUnavailable)?;
                Ok(page)
            }
            Err(error) => Err(self.fail(principal, &about, error, now_ms).await),
        }
    }

    async fn run_history(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: Option<&str>,
        pairs: &[(String, String)],
    ) -> Result<HistoryPage, RecordError> {
        let interaction = if id.is_some() {
            Interaction::Read
        } else {
            Interaction::Search
        };
        require(principal, rt, interaction)?;
        let scope = principal.scope();
        let keys = self.keyring.keys(scope.tenant()).await?;
        let fingerprint = query_fingerprint("history", rt, id, pairs);
        let mut count = DEFAULT_COUNT;
        let mut since_ms = None;
        let mut before = None;
        for (key, value) in pairs {
            match key.as_str() {
                "_count" => {
                    count = value
                        .parse::<usize>()
                        .map_err(|_| {
                            RecordError::invalid("_count", "_count must be a whole number")
                        })?
                        .min(MAX_COUNT);
                }
                "_since" => {
                    since_ms = Some(parse_instant_ms(value).ok_or_else(|| {
                        RecordError::invalid(
                            "_since",
                            "_since must be an instant such as 2026-01-31T09:00:00Z",
                        )
                    })?);
                }
                "_cursor" => {
                    let payload = open_cursor(&keys, scope, value, &fingerprint)?;
                    before = Some((payload.s, payload.i, payload.v.unwrap_or(i64::MAX)));
                }
                "_format" if value.contains("json") => {}
                other => {
                    return Err(RecordError::Invalid(vec![carevault_fhir::Issue::error(
                        carevault_fhir::IssueCode::NotSupported,
                        other,
                        format!(
                            "the history parameter {other} is not supported (use _count, _since)"
                        ),
                    )]));
                }
            }
        }
        let restricted = principal.access().is_restricted();
        if let Some(id) = id {
            let known = self.store.current(scope, rt.name(), id).await?;
            match known {
                None => return Err(RecordError::NotFound),
                // A deleted resource's patients are unknown: out of a restricted reach.
                Some(current) if restricted && current.deleted => {
                    return Err(RecordError::NotFound);
                }
                Some(current) if restricted => {
                    self.open_within_reach(principal, &keys, rt, &current)?;
                }
                Some(_) => {}
            }
        }
        let versions = self
            .store
            .history(
                scope,
                &HistoryQuery {
                    resource_type: rt.name().to_owned(),
                    id: id.map(str::to_owned),
                    since_ms,
                    before,
                    limit: count + 1,
                },
            )
            .await?;
        let mut entries = Vec::with_capacity(versions.len().min(count));
        let mut next_cursor = None;
        for version in versions.iter().take(count) {
            let view = self.open(&keys, scope, rt, version)?;
            let visible = if restricted {
                view.body.is_some() && principal.access().reaches(&view.subjects())
            } else {
                true
            };
            if visible {
                entries.push(view);
            }
        }
        if versions.len() > count
            && count > 0
            && let Some(last) = versions.get(count - 1)
        {
            next_cursor = Some(seal_cursor(
                &keys,
                scope,
                &CursorPayload {
                    q: fingerprint,
                    s: last.last_updated_ms,
                    i: last.id.clone(),
                    v: Some(last.version),
                },
            )?);
        }
        Ok(HistoryPage {
            entries,
            next_cursor,
        })
    }
}

/// A FHIR instant (RFC 3339 with a zone) as epoch milliseconds.
fn parse_instant_ms(text: &str) -> Option<i64> {
    let parsed =
        time::OffsetDateTime::parse(text, &time::format_description::well_known::Rfc3339).ok()?;
    i64::try_from(parsed.unix_timestamp_nanos() / 1_000_000).ok()
}

impl Records {
    /// The patients a practitioner is caring for: members of their care teams (CareTeam
    /// `participant`) and patients on their visit list today. Internal: it returns ids only,
    /// never data, so it is not itself audited; the reads it enables are.
    pub async fn patients_in_care(
        &self,
        scope: &TenantScope,
        practitioner: &str,
        day_start_ms: i64,
        day_end_ms: i64,
    ) -> Result<BTreeSet<String>, RecordError> {
        let reference = practitioner_reference(practitioner);
        let mut patients = self
            .patients_from(scope, "CareTeam", "participant", &reference, None)
            .await?;
        patients.extend(
            self.patients_on_visit_list(scope, practitioner, day_start_ms, day_end_ms)
                .await?,
        );
        Ok(patients)
    }

    /// Patients with an appointment (a visit) with the practitioner within
    /// `[day_start_ms, day_end_ms)`.
    pub async fn patients_on_visit_list(
        &self,
        scope: &TenantScope,
        practitioner: &str,
        day_start_ms: i64,
        day_end_ms: i64,
    ) -> Result<BTreeSet<String>, RecordError> {
        let reference = practitioner_reference(practitioner);
        let day = carevault_fhir::DateCondition {
            prefix: carevault_fhir::DatePrefix::Eq,
            low: day_start_ms,
            high: day_end_ms,
        };
        self.patients_from(scope, "Appointment", "practitioner", &reference, Some(day))
            .await
    }

    /// Data subjects of the active resources of a type whose reference parameter points at
    /// `reference` (and, optionally, whose `date` falls in a range).
    async fn patients_from(
        &self,
        scope: &TenantScope,
        type_name: &str,
        param_name: &str,
        reference: &str,
        date: Option<carevault_fhir::DateCondition>,
    ) -> Result<BTreeSet<String>, RecordError> {
        let mut patients = BTreeSet::new();
        let Some(rt) = carevault_fhir::resource_type(type_name) else {
            return Ok(patients);
        };
        let keys = self.keyring.keys(scope.tenant()).await?;
        let pairs = [(param_name.to_owned(), reference.to_owned())];
        let query = carevault_fhir::parse_search(rt, &pairs)
            .map_err(|issue| RecordError::Internal(issue.to_string()))?;
        let mut filters = Vec::new();
        for param in &query.params {
            if let Lookup::Terms {
                param,
                also,
                any_of,
            } = param.lookup()
            {
                filters.push(CandidateFilter::AnyToken(blind_terms(
                    &keys, param, also, &any_of,
                )));
            }
        }
        if let Some(condition) = date {
            filters.push(CandidateFilter::AnyDate {
                params: date_params(rt, "date"),
                conditions: vec![condition],
            });
        }
        let mut after = None;
        loop {
            let candidates = self
                .store
                .search(
                    scope,
                    &CandidateQuery {
                        resource_type: type_name.to_owned(),
                        filters: filters.clone(),
                        sort: SortBy::LastUpdated,
                        descending: false,
                        after: after.clone(),
                        limit: 500,
                    },
                )
                .await?;
            let exhausted = candidates.len() < 500;
            for candidate in &candidates {
                after = Some((candidate.sort_value, candidate.version.id.clone()));
                let view = self.open(&keys, scope, rt, &candidate.version)?;
                let Some(body) = view.body.as_ref().map(ResourceBody::value) else {
                    continue;
                };
                let active = !matches!(
                    body.get("status").and_then(serde_json::Value::as_str),
                    Some("inactive" | "entered-in-error" | "cancelled" | "noshow")
                );
                let matched = query
                    .params
                    .iter()
                    .all(|p| p.matches(body, &view.id, view.last_updated_ms));
                if active && matched {
                    patients.extend(view.subjects());
                }
            }
            if exhausted {
                break;
            }
        }
        Ok(patients)
    }
}

fn practitioner_reference(practitioner: &str) -> String {
    format!(
        "Practitioner/{}",
        practitioner.trim_start_matches("Practitioner/")
    )
}
