//! FHIR interactions on one tenant's records: read, vread, create, update, delete, history and
//! search. (Transaction and batch bundles are in [`crate::bundle`].)
//!
//! Every interaction follows the same path, and fails closed at each step:
//! scope check → store (sealed bodies) → open and re-check → audit committed → result.
//! A resource of another tenant, a resource that never existed, and a resource the caller may
//! not read all produce the same `NotFound`.

use std::collections::BTreeSet;
use std::sync::Arc;

use carevault_fhir::{Issue, IssueCode, ResourceType};
use serde_json::{Map, Value};

use crate::audit::{AuditRecord, AuditTrail, Outcome};
use crate::clock::format_instant;
use crate::ids::ResourceId;
use crate::keyring::{KeyError, Keyring, TenantKeys};
use crate::principal::{Principal, TenantScope};
use crate::scopes::Interaction;
use crate::store::{DateEntry, Precondition, ResourceWrite, Store, StoreError, StoredVersion};

mod audit_records;
mod body;
mod opening;

use audit_records::failure_record;
pub(crate) use audit_records::{audit_record, categories_of, write_record};
pub use body::ResourceBody;
pub(crate) use opening::resource_aad;

#[derive(Debug, thiserror::Error)]
pub enum RecordError {
    /// No such resource in the caller's tenant (or the caller may not know it exists).
    #[error("resource not found")]
    NotFound,
    /// The resource was deleted (the tombstone's version).
    #[error("resource deleted")]
    Gone { version: i64 },
    /// The token's scopes do not allow this interaction on this type.
    #[error("{0}")]
    Forbidden(String),
    /// The request is malformed (400).
    #[error("invalid request")]
    Invalid(Vec<Issue>),
    /// The resource is well-formed JSON but breaks a FHIR rule (422).
    #[error("unprocessable resource")]
    Unprocessable(Vec<Issue>),
    #[error("precondition failed: {0}")]
    PreconditionFailed(String),
    #[error("conflict: {0}")]
    Conflict(String),
    /// A sealed body failed to open: tampered with or moved. Never returns data.
    #[error("stored data failed its integrity check")]
    Integrity,
    #[error("the audit trail could not be written")]
    AuditUnavailable,
    #[error("internal error: {0}")]
    Internal(String),
}

impl From<StoreError> for RecordError {
    fn from(error: StoreError) -> RecordError {
        match error {
            StoreError::Conflict { resource_type, id } => {
                RecordError::Conflict(format!("{resource_type}/{id} was changed concurrently"))
            }
            other => RecordError::Internal(other.to_string()),
        }
    }
}

impl From<KeyError> for RecordError {
    fn from(error: KeyError) -> RecordError {
        RecordError::Internal(error.to_string())
    }
}

impl RecordError {
    pub fn invalid(path: &str, message: impl Into<String>) -> RecordError {
        RecordError::Invalid(vec![Issue::error(IssueCode::Invalid, path, message)])
    }

    fn outcome(&self) -> Outcome {
        match self {
            RecordError::NotFound | RecordError::Gone { .. } => Outcome::NotFound,
            RecordError::Forbidden(_) => Outcome::Denied,
            RecordError::Invalid(_)
            | RecordError::Unprocessable(_)
            | RecordError::PreconditionFailed(_)
            | RecordError::Conflict(_) => Outcome::Invalid,
            RecordError::Integrity => Outcome::IntegrityFailure,
            RecordError::AuditUnavailable | RecordError::Internal(_) => Outcome::Error,
        }
    }
}

/// An opened resource version, as the client will see it.
#[derive(Clone, Debug)]
pub struct ResourceView {
    pub resource_type: ResourceType,
    pub id: String,
    pub version: i64,
    pub last_updated_ms: i64,
    /// `None` for a tombstone (a deleted version in a history listing).
    pub body: Option<ResourceBody>,
}

impl ResourceView {
    /// The patients whose data this is, parsing the body only when they depend on it.
    pub fn subjects(&self) -> Vec<String> {
        let Some(body) = &self.body else {
            return Vec::new();
        };
        carevault_fhir::data_subjects_without_body(self.resource_type, &self.id).unwrap_or_else(
            || carevault_fhir::data_subjects(self.resource_type, body.value(), &self.id),
        )
    }
}

/// The result of a create or update.
#[derive(Clone, Debug)]
pub struct WriteOutcome {
    pub view: ResourceView,
    /// True when a new resource came into being (201), false for a new version or an existing
    /// match of a conditional create (200).
    pub created: bool,
}

/// What an interaction is about, for its audit record.
pub(crate) struct AuditSubject<'a> {
    pub action: &'a str,
    pub resource_type: Option<ResourceType>,
    pub resource_id: Option<&'a str>,
}

pub struct Records {
    pub(crate) store: Arc<dyn Store>,
    pub(crate) keyring: Arc<Keyring>,
    pub(crate) audit: AuditTrail,
}

impl Records {
    pub fn new(store: Arc<dyn Store>, keyring: Arc<Keyring>, audit: AuditTrail) -> Records {
        Records {
            store,
            keyring,
            audit,
        }
    }

    pub fn audit_trail(&self) -> &AuditTrail {
        &self.audit
    }

    // ---- the interactions ----

    pub async fn read(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        now_ms: i64,
    ) -> Result<ResourceView, RecordError> {
        let about = AuditSubject {
            action: "read",
            resource_type: Some(rt),
            resource_id: Some(id),
        };
        let result = self.read_stored(principal, rt, id, None).await;
        self.finish_read(principal, &about, result, now_ms).await
    }

    pub async fn vread(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        version: &str,
        now_ms: i64,
    ) -> Result<ResourceView, RecordError> {
        let about = AuditSubject {
            action: "vread",
            resource_type: Some(rt),
            resource_id: Some(id),
        };
        let result = self.read_stored(principal, rt, id, Some(version)).await;
        self.finish_read(principal, &about, result, now_ms).await
    }

    /// The current version (`version` None) or a given one, opened within the principal's
    /// reach. A deleted version answers `Gone`.
    async fn read_stored(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        version: Option<&str>,
    ) -> Result<ResourceView, RecordError> {
        require(principal, rt, Interaction::Read)?;
        let id = ResourceId::parse(id).ok_or(RecordError::NotFound)?;
        let scope = principal.scope();
        let stored = match version {
            None => self.store.current(scope, rt.name(), id.as_str()).await?,
            Some(version) => {
                let version: i64 = version.parse().map_err(|_| RecordError::NotFound)?;
                self.store
                    .version(scope, rt.name(), id.as_str(), version)
                    .await?
            }
        }
        .ok_or(RecordError::NotFound)?;
        if stored.deleted {
            return Err(RecordError::Gone {
                version: stored.version,
            });
        }
        let keys = self.keyring.keys(scope.tenant()).await?;
        self.open_within_reach(principal, &keys, rt, &stored)
    }

    /// Audits a single-resource read (success or failure) and releases the result only once
    /// the record is durable.
    async fn finish_read(
        &self,
        principal: &Principal,
        about: &AuditSubject<'_>,
        result: Result<ResourceView, RecordError>,
        now_ms: i64,
    ) -> Result<ResourceView, RecordError> {
        let record = match &result {
            Ok(view) => audit_record(
                principal,
                about,
                view.subjects(),
                categories_of([view.resource_type]),
                Outcome::Success,
                None,
                now_ms,
            ),
            Err(error) => failure_record(principal, about, error, now_ms),
        };
        self.audit
            .record(record)
            .await
            .map_err(|_| RecordError::AuditUnavailable)?;
        result
    }

    pub async fn create(
        &self,
        principal: &Principal,
        rt: ResourceType,
        body: Value,
        if_none_exist: Option<&str>,
        now_ms: i64,
    ) -> Result<WriteOutcome, RecordError> {
        let about = AuditSubject {
            action: "create",
            resource_type: Some(rt),
            resource_id: None,
        };
        let prepared = async {
            require(principal, rt, Interaction::Create)?;
            validate(&body, rt, "")?;
            if let Some(query) = if_none_exist
                && let Some(existing) = self
                    .find_existing(principal, rt, query, "If-None-Exist", now_ms)
                    .await?
            {
                return Ok(Err(existing));
            }
            let id = ResourceId::generate();
            let keys = self.keyring.keys(principal.scope().tenant()).await?;
            self.check_write_reach(principal, &keys, rt, id.as_str(), &body, None)?;
            let (write, view) = self.prepare_write(
                &keys,
                principal.scope(),
                rt,
                id.as_str(),
                1,
                Precondition::Absent,
                body,
                now_ms,
            )?;
            Ok(Ok((write, view)))
        }
        .await;
        match prepared {
            Ok(Err(existing)) => Ok(WriteOutcome {
                view: existing,
                created: false,
            }),
            Ok(Ok((write, view))) => {
                let record = write_record(principal, "create", &view, now_ms);
                self.commit_one(principal, write, record).await?;
                Ok(WriteOutcome {
                    view,
                    created: true,
                })
            }
            Err(error) => Err(self.fail(principal, &about, error, now_ms).await),
        }
    }

    /// Conditional create: the one existing match, none, or a refusal when the criteria match
    /// more than one. `element` names where the criteria came from (`If-None-Exist`, or
    /// `ifNoneExist` in a bundle entry) for the error.
    pub(crate) async fn find_existing(
        &self,
        principal: &Principal,
        rt: ResourceType,
        query: &str,
        element: &str,
        now_ms: i64,
    ) -> Result<Option<ResourceView>, RecordError> {
        let query = query.strip_prefix('?').unwrap_or(query);
        let query = query.rsplit_once('?').map_or(query, |(_, params)| params);
        let mut pairs = parse_query_string(query);
        if pairs.is_empty() {
            return Err(RecordError::invalid(
                element,
                format!("{element} needs search parameters, such as identifier=system|value"),
            ));
        }
        pairs.push(("_count".to_owned(), "2".to_owned()));
        let found = self.search(principal, rt, &pairs, now_ms).await?;
        match found.matches.len() {
            0 => Ok(None),
            1 => Ok(found.matches.into_iter().next()),
            _ => Err(RecordError::PreconditionFailed(format!(
                "the {element} criteria match more than one resource"
            ))),
        }
    }

    pub async fn update(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        body: Value,
        if_match: Option<i64>,
        now_ms: i64,
    ) -> Result<WriteOutcome, RecordError> {
        let about = AuditSubject {
            action: "update",
            resource_type: Some(rt),
            resource_id: Some(id),
        };
        // A concurrent writer may slip in between our read and our commit; without If-Match
        // the last writer wins, so retry a few times before giving up.
        let mut attempts = 0;
        loop {
            attempts += 1;
            let result = self
                .try_update(principal, rt, id, body.clone(), if_match, now_ms)
                .await;
            match result {
                Err(RecordError::Conflict(_)) if if_match.is_none() && attempts < 4 => continue,
                Err(RecordError::Conflict(_)) if if_match.is_some() => {
                    let error = RecordError::PreconditionFailed(
                        "the resource changed since the version named in If-Match".into(),
                    );
                    return Err(self.fail(principal, &about, error, now_ms).await);
                }
                Err(error) => return Err(self.fail(principal, &about, error, now_ms).await),
                Ok(outcome) => return Ok(outcome),
            }
        }
    }

    async fn try_update(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        body: Value,
        if_match: Option<i64>,
        now_ms: i64,
    ) -> Result<WriteOutcome, RecordError> {
        require(principal, rt, Interaction::Update)?;
        validate(&body, rt, "")?;
        let resource_id = ResourceId::parse(id).ok_or_else(|| {
            RecordError::invalid("id", "the id in the URL is not a valid FHIR id")
        })?;
        match body.get("id").and_then(Value::as_str) {
            Some(body_id) if body_id == id => {}
            Some(_) => {
                return Err(RecordError::invalid(
                    &format!("{}.id", rt.name()),
                    "the resource's id does not match the id in the URL",
                ));
            }
            None => {
                return Err(RecordError::invalid(
                    &format!("{}.id", rt.name()),
                    "an update must carry the resource's id, the same as in the URL",
                ));
            }
        }
        let scope = principal.scope();
        let current = self
            .store
            .current(scope, rt.name(), resource_id.as_str())
            .await?;
        let (version, precondition, created) = match (&current, if_match) {
            (None, Some(_)) => {
                return Err(RecordError::PreconditionFailed(
                    "If-Match names a version of a resource that does not exist".into(),
                ));
            }
            (Some(current), Some(expected)) if current.version != expected => {
                return Err(RecordError::PreconditionFailed(format!(
                    "If-Match expected version {expected}, the current version is {}",
                    current.version
                )));
            }
            (None, None) => {
                // Update as create: the client chose the id. It still needs the right to create.
                require(principal, rt, Interaction::Create)?;
                (1, Precondition::Absent, true)
            }
            (Some(current), _) => (
                current.version + 1,
                Precondition::CurrentVersion(current.version),
                current.deleted,
            ),
        };
        let keys = self.keyring.keys(scope.tenant()).await?;
        self.check_write_reach(
            principal,
            &keys,
            rt,
            resource_id.as_str(),
            &body,
            current.as_ref(),
        )?;
        let (write, view) = self.prepare_write(
            &keys,
            scope,
            rt,
            resource_id.as_str(),
            version,
            precondition,
            body,
            now_ms,
        )?;
        let action = if created { "create" } else { "update" };
        let record = write_record(principal, action, &view, now_ms);
        self.commit_one(principal, write, record).await?;
        Ok(WriteOutcome { view, created })
    }

    pub async fn delete(
        &self,
        principal: &Principal,
        rt: ResourceType,
        id: &str,
        now_ms: i64,
    ) -> Result<(), RecordError> {
        let about = AuditSubject {
            action: "delete",
            resource_type: Some(rt),
            resource_id: Some(id),
        };
        let result = async {
            require(principal, rt, Interaction::Delete)?;
            let scope = principal.scope();
            let resource_id = ResourceId::parse(id).ok_or(RecordError::NotFound)?;
            let current = self
                .store
                .current(scope, rt.name(), resource_id.as_str())
                .await?
                .ok_or(RecordError::NotFound)?;
            if current.deleted {
                // Deleting a deleted resource changes nothing and is not an error.
                return Ok(None);
            }
            let keys = self.keyring.keys(scope.tenant()).await?;
            let opened = self.open_within_reach(principal, &keys, rt, &current)?;
            Ok(Some((self.tombstone(rt, &current, now_ms), opened)))
        }
        .await;
        match result {
            Ok(None) => Ok(()),
            Ok(Some((write, opened))) => {
                let record = audit_record(
                    principal,
                    &about,
                    opened.subjects(),
                    categories_of([rt]),
                    Outcome::Success,
                    None,
                    now_ms,
                );
                self.commit_one(principal, write, record).await
            }
            Err(error) => Err(self.fail(principal, &about, error, now_ms).await),
        }
    }

    pub(crate) fn tombstone(
        &self,
        rt: ResourceType,
        current: &StoredVersion,
        now_ms: i64,
    ) -> ResourceWrite {
        ResourceWrite {
            version: StoredVersion {
                resource_type: rt.name().to_owned(),
                id: current.id.clone(),
                version: current.version + 1,
                last_updated_ms: now_ms,
                deleted: true,
                body: Vec::new(),
            },
            precondition: Precondition::CurrentVersion(current.version),
            tokens: Vec::new(),
            dates: Vec::new(),
        }
    }

    async fn commit_one(
        &self,
        principal: &Principal,
        write: ResourceWrite,
        record: AuditRecord,
    ) -> Result<(), RecordError> {
        let result = self
            .store
            .commit(principal.scope(), std::slice::from_ref(&write), &[record])
            .await;
        self.audit
            .note_commit(!matches!(result, Err(StoreError::Backend(_))));
        result.map_err(RecordError::from)
    }

    /// Records a failed interaction, then hands the error back. If even that record cannot be
    /// written, the caller learns that the trail is down.
    pub(crate) async fn fail(
        &self,
        principal: &Principal,
        about: &AuditSubject<'_>,
        error: RecordError,
        now_ms: i64,
    ) -> RecordError {
        let record = failure_record(principal, about, &error, now_ms);
        match self.audit.record(record).await {
            Ok(()) => error,
            Err(_) => RecordError::AuditUnavailable,
        }
    }

    /// A write must be about patients within the principal's reach (a carer records only for
    /// the patients in their care); an update must also start from a version within reach.
    pub(crate) fn check_write_reach(
        &self,
        principal: &Principal,
        keys: &TenantKeys,
        rt: ResourceType,
        id: &str,
        body: &Value,
        current: Option<&StoredVersion>,
    ) -> Result<(), RecordError> {
        if matches!(principal.access(), crate::principal::Access::Scopes(_)) {
            return Ok(());
        }
        if let Some(current) = current.filter(|current| !current.deleted) {
            self.open_within_reach(principal, keys, rt, current)?;
        }
        let subjects = carevault_fhir::data_subjects(rt, body, id);
        if principal.access().reaches_all(&subjects) {
            Ok(())
        } else {
            Err(RecordError::Forbidden(
                "you may record only for patients in your care".to_owned(),
            ))
        }
    }

    // ---- sealing ----

    /// Stamps id and meta into the accepted body, seals it, and computes its search rows.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn prepare_write(
        &self,
        keys: &TenantKeys,
        scope: &TenantScope,
        rt: ResourceType,
        id: &str,
        version: i64,
        precondition: Precondition,
        mut body: Value,
        now_ms: i64,
    ) -> Result<(ResourceWrite, ResourceView), RecordError> {
        stamp(&mut body, id, version, now_ms)?;
        let plaintext = serde_json::to_vec(&body)
            .map_err(|error| RecordError::Internal(format!("serialising a resource: {error}")))?;
        let sealed = keys
            .sealing_key()
            .seal(&resource_aad(scope, rt.name(), id, version), &plaintext)
            .map_err(|error| RecordError::Internal(format!("sealing: {error}")))?;
        let mut tokens = BTreeSet::new();
        let mut dates = Vec::new();
        for entry in carevault_fhir::index_entries(rt, &body) {
            match entry {
                carevault_fhir::IndexEntry::Term { param, term } => {
                    tokens.insert(keys.index_key().blind_token(param, &term));
                }
                carevault_fhir::IndexEntry::Date { param, low, high } => dates.push(DateEntry {
                    param: param.to_owned(),
                    low,
                    high,
                }),
            }
        }
        let write = ResourceWrite {
            version: StoredVersion {
                resource_type: rt.name().to_owned(),
                id: id.to_owned(),
                version,
                last_updated_ms: now_ms,
                deleted: false,
                body: sealed,
            },
            precondition,
            tokens: tokens.into_iter().collect(),
            dates,
        };
        let view = ResourceView {
            resource_type: rt,
            id: id.to_owned(),
            version,
            last_updated_ms: now_ms,
            body: Some(ResourceBody::from_value(body)),
        };
        Ok((write, view))
    }
}

pub(crate) fn require(
    principal: &Principal,
    rt: ResourceType,
    interaction: Interaction,
) -> Result<(), RecordError> {
    if principal.allows(rt.name(), interaction) {
        return Ok(());
    }
    match principal.access() {
        // A machine client learns which scope it lacks (SMART: 403).
        crate::principal::Access::Scopes(_) => Err(RecordError::Forbidden(format!(
            "the token's scopes do not allow {} on {}",
            interaction_name(interaction),
            rt.name()
        ))),
        // A person's denial on an existing-resource interaction looks like a resource that
        // does not exist; only a create, which names no resource, says it is not allowed.
        crate::principal::Access::Roles { .. } => match interaction {
            Interaction::Create => Err(RecordError::Forbidden(format!(
                "your role does not record {} resources",
                rt.name()
            ))),
            _ => Err(RecordError::NotFound),
        },
    }
}

fn interaction_name(interaction: Interaction) -> &'static str {
    match interaction {
        Interaction::Create => "create",
        Interaction::Read => "read",
        Interaction::Update => "update",
        Interaction::Delete => "delete",
        Interaction::Search => "search",
    }
}

/// Validates a resource for a write. JSON-level mistakes and FHIR-rule breaches both name the
/// element path; `path_prefix` places them inside a bundle entry.
pub(crate) fn validate(
    body: &Value,
    rt: ResourceType,
    path_prefix: &str,
) -> Result<(), RecordError> {
    carevault_fhir::validate(body, Some(rt))
        .map(|_| ())
        .map_err(|issues| {
            let issues = issues
                .into_iter()
                .map(|mut issue| {
                    if !path_prefix.is_empty() {
                        issue.path = format!("{path_prefix}{}", issue.path);
                    }
                    issue
                })
                .collect();
            RecordError::Unprocessable(issues)
        })
}

/// Sets `id` (right after `resourceType`), `meta.versionId` and `meta.lastUpdated`, keeping
/// everything else the client sent, in its order.
pub(crate) fn stamp(
    body: &mut Value,
    id: &str,
    version: i64,
    now_ms: i64,
) -> Result<(), RecordError> {
    let Value::Object(object) = body else {
        return Err(RecordError::invalid("", "a resource must be a JSON object"));
    };
    if object.contains_key("id") {
        object.insert("id".to_owned(), Value::String(id.to_owned()));
    } else {
        object.shift_insert(
            1.min(object.len()),
            "id".to_owned(),
            Value::String(id.to_owned()),
        );
    }
    let meta = object
        .entry("meta")
        .or_insert_with(|| Value::Object(Map::new()));
    let Value::Object(meta) = meta else {
        return Err(RecordError::invalid("meta", "meta must be an object"));
    };
    meta.insert("versionId".to_owned(), Value::String(version.to_string()));
    meta.insert(
        "lastUpdated".to_owned(),
        Value::String(format_instant(now_ms)),
    );
    Ok(())
}

/// Splits `a=1&b=2` into decoded pairs (form encoding: `+` is a space).
pub fn parse_query_string(query: &str) -> Vec<(String, String)> {
    form_urlencoded::parse(query.as_bytes())
        .map(|(key, value)| (key.into_owned(), value.into_owned()))
        .collect()
}
