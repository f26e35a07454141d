//! Transaction and batch bundles.
//!
//! A transaction is all or nothing: every entry is checked, validated and sealed first, then
//! all writes and their audit records commit in one database transaction. `urn:uuid:` (and
//! other) `fullUrl`s of created resources are replaced by the new `Type/id` everywhere in the
//! bundle. A batch runs each entry on its own, as if it were a separate request.

use std::collections::{HashMap, HashSet};

use carevault_fhir::{Issue, IssueCode, ResourceType};
use serde_json::Value;

use crate::audit::{AuditRecord, Outcome};
use crate::ids::ResourceId;
use crate::principal::Principal;
use crate::records::{
    AuditSubject, RecordError, Records, ResourceView, audit_record, parse_query_string, require,
    validate, write_record,
};
use crate::scopes::Interaction;
use crate::search::SearchPage;
use crate::store::{Precondition, ResourceWrite, StoreError};

/// What one entry of a transaction or batch produced.
#[derive(Debug)]
pub struct EntryResponse {
    /// HTTP status code of the entry.
    pub status: u16,
    /// `Type/id/_history/version` of a written resource.
    pub location: Option<String>,
    pub version: Option<i64>,
    pub last_modified_ms: Option<i64>,
    pub body: EntryBody,
}

#[derive(Debug)]
pub enum EntryBody {
    None,
    Resource(ResourceView),
    Search(ResourceType, Box<SearchPage>),
    /// The entry failed (batch only): the error to render as an OperationOutcome.
    Failed(RecordError),
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Method {
    Get,
    Post,
    Put,
    Delete,
}

/// One parsed bundle entry.
struct Operation {
    index: usize,
    method: Method,
    rt: ResourceType,
    id: Option<String>,
    version: Option<String>,
    query: Option<String>,
    resource: Option<Value>,
    full_url: Option<String>,
    if_match: Option<i64>,
    if_none_exist: Option<String>,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
pub enum BundleKind {
    Transaction,
    Batch,
}

fn entry_issue(index: usize, element: &str, message: impl Into<String>) -> RecordError {
    RecordError::Invalid(vec![Issue::error(
        IssueCode::Invalid,
        format!("Bundle.entry[{index}]{element}"),
        message,
    )])
}

/// Reads a bundle's kind and entries, refusing anything that is not a transaction or batch.
pub fn bundle_kind(bundle: &Value) -> Result<BundleKind, RecordError> {
    if bundle.get("resourceType").and_then(Value::as_str) != Some("Bundle") {
        return Err(RecordError::invalid(
            "Bundle.resourceType",
            "POST to the base URL takes a Bundle of type transaction or batch",
        ));
    }
    match bundle.get("type").and_then(Value::as_str) {
        Some("transaction") => Ok(BundleKind::Transaction),
        Some("batch") => Ok(BundleKind::Batch),
        _ => Err(RecordError::invalid(
            "Bundle.type",
            "only transaction and batch bundles can be posted to the base URL",
        )),
    }
}

/// Strips a base URL, leaving `Type[/id[/_history/v]][?query]`.
fn relative_url(url: &str) -> &str {
    let url = match url.find("://") {
        Some(_) => url
            .rfind("/fhir/")
            .map_or(url, |at| &url[at + "/fhir/".len()..]),
        None => url,
    };
    url.trim_start_matches('/')
}

fn parse_etag(text: &str) -> Option<i64> {
    text.trim()
        .trim_start_matches("W/")
        .trim_matches('"')
        .parse()
        .ok()
}

/// Parses one entry, taking its resource out of it (a transaction moves each resource from the
/// parsed Bundle into its write instead of copying the tree).
fn parse_operation(index: usize, mut entry: Value) -> Result<Operation, RecordError> {
    let resource = entry
        .as_object_mut()
        .and_then(|members| members.remove("resource"));
    let request = entry
        .get("request")
        .ok_or_else(|| entry_issue(index, ".request", "every entry needs a request"))?;
    let method = match request.get("method").and_then(Value::as_str) {
        Some("GET") => Method::Get,
        Some("POST") => Method::Post,
        Some("PUT") => Method::Put,
        Some("DELETE") => Method::Delete,
        Some(other) => {
            return Err(entry_issue(
                index,
                ".request.method",
                format!("method {other} is not supported in a bundle (GET, POST, PUT, DELETE)"),
            ));
        }
        None => {
            return Err(entry_issue(
                index,
                ".request.method",
                "request.method is required",
            ));
        }
    };
    let url = request
        .get("url")
        .and_then(Value::as_str)
        .ok_or_else(|| entry_issue(index, ".request.url", "request.url is required"))?;
    let url = relative_url(url);
    let (path, query) = match url.split_once('?') {
        Some((path, query)) => (path, Some(query.to_owned())),
        None => (url, None),
    };
    let segments: Vec<&str> = path.split('/').collect();
    let rt = segments
        .first()
        .and_then(|name| carevault_fhir::resource_type(name))
        .ok_or_else(|| {
            entry_issue(
                index,
                ".request.url",
                "the URL must start with a supported resource type",
            )
        })?;
    let (id, version) = match segments.as_slice() {
        [_] => (None, None),
        [_, id] => (Some((*id).to_owned()), None),
        [_, id, "_history", version] if method == Method::Get => {
            (Some((*id).to_owned()), Some((*version).to_owned()))
        }
        _ => {
            return Err(entry_issue(
                index,
                ".request.url",
                "the URL must be Type, Type/id or Type/id/_history/version",
            ));
        }
    };
    let needs_id = matches!(method, Method::Put | Method::Delete);
    if needs_id && id.is_none() {
        return Err(entry_issue(
            index,
            ".request.url",
            "PUT and DELETE need Type/id (conditional update and delete are not supported)",
        ));
    }
    if method == Method::Post && id.is_some() {
        return Err(entry_issue(
            index,
            ".request.url",
            "POST takes the type only",
        ));
    }
    if matches!(method, Method::Post | Method::Put) && resource.is_none() {
        return Err(entry_issue(
            index,
            ".resource",
            "POST and PUT entries need a resource",
        ));
    }
    let if_match = match request.get("ifMatch").and_then(Value::as_str) {
        Some(text) => Some(parse_etag(text).ok_or_else(|| {
            entry_issue(
                index,
                ".request.ifMatch",
                "ifMatch must be an ETag such as W/\"3\"",
            )
        })?),
        None => None,
    };
    Ok(Operation {
        index,
        method,
        rt,
        id,
        version,
        query,
        resource,
        full_url: entry
            .get("fullUrl")
            .and_then(Value::as_str)
            .map(str::to_owned),
        if_match,
        if_none_exist: request
            .get("ifNoneExist")
            .and_then(Value::as_str)
            .map(str::to_owned),
    })
}

/// Refuses a GET entry of a transaction up front: the token must allow it, and a search must
/// parse (unknown parameters and modifiers are named with the entry).
fn check_get(principal: &Principal, operation: &Operation) -> Result<(), RecordError> {
    if operation.id.is_some() {
        return require(principal, operation.rt, Interaction::Read);
    }
    require(principal, operation.rt, Interaction::Search)?;
    let pairs = parse_query_string(operation.query.as_deref().unwrap_or(""));
    carevault_fhir::parse_search(operation.rt, &pairs)
        .map(|_| ())
        .map_err(|mut issue| {
            issue.path = format!("Bundle.entry[{}].request.url", operation.index);
            RecordError::Invalid(vec![issue])
        })
}

fn entries(mut bundle: Value) -> Result<Vec<Value>, RecordError> {
    let entry = bundle
        .as_object_mut()
        .and_then(|members| members.remove("entry"));
    match entry {
        None => Ok(Vec::new()),
        Some(Value::Array(entries)) => Ok(entries),
        Some(_) => Err(RecordError::invalid(
            "Bundle.entry",
            "entry must be an array",
        )),
    }
}

fn written(status: u16, view: ResourceView) -> EntryResponse {
    EntryResponse {
        status,
        location: Some(format!(
            "{}/{}/_history/{}",
            view.resource_type.name(),
            view.id,
            view.version
        )),
        version: Some(view.version),
        last_modified_ms: Some(view.last_updated_ms),
        body: EntryBody::Resource(view),
    }
}

impl Records {
    pub async fn transaction(
        &self,
        principal: &Principal,
        bundle: Value,
        now_ms: i64,
    ) -> Result<Vec<EntryResponse>, RecordError> {
        let about = AuditSubject {
            action: "transaction",
            resource_type: None,
            resource_id: None,
        };
        match self.run_transaction(principal, bundle, now_ms).await {
            Ok(responses) => Ok(responses),
            Err(error) => Err(self.fail(principal, &about, error, now_ms).await),
        }
    }

    async fn run_transaction(
        &self,
        principal: &Principal,
        bundle: Value,
        now_ms: i64,
    ) -> Result<Vec<EntryResponse>, RecordError> {
        let mut operations = entries(bundle)?
            .into_iter()
            .enumerate()
            .map(|(index, entry)| parse_operation(index, entry))
            .collect::<Result<Vec<_>, _>>()?;
        let scope = principal.scope();
        let keys = self.keyring.keys(scope.tenant()).await?;

        // Ids for created resources first, so every reference to them can be rewritten.
        let mut new_references: HashMap<String, String> = HashMap::new();
        let mut existing_matches: HashMap<usize, ResourceView> = HashMap::new();
        for operation in &mut operations {
            if operation.method != Method::Post {
                if let (Some(full_url), Some(id)) = (&operation.full_url, &operation.id)
                    && full_url.starts_with("urn:")
                {
                    new_references
                        .insert(full_url.clone(), format!("{}/{id}", operation.rt.name()));
                }
                continue;
            }
            let id = match &operation.if_none_exist {
                Some(criteria) => {
                    require(principal, operation.rt, Interaction::Create)?;
                    match self
                        .find_existing(principal, operation.rt, criteria, "ifNoneExist", now_ms)
                        .await?
                    {
                        Some(existing) => {
                            let id = existing.id.clone();
                            existing_matches.insert(operation.index, existing);
                            id
                        }
                        None => ResourceId::generate().as_str().to_owned(),
                    }
                }
                None => ResourceId::generate().as_str().to_owned(),
            };
            if let Some(full_url) = &operation.full_url {
                new_references.insert(full_url.clone(), format!("{}/{id}", operation.rt.name()));
            }
            operation.id = Some(id);
        }
        for operation in &mut operations {
            if let Some(resource) = &mut operation.resource {
                carevault_fhir::for_each_reference_mut(resource, &mut |reference: &mut String| {
                    if let Some(replacement) = new_references.get(reference.as_str()) {
                        *reference = replacement.clone();
                    }
                });
            }
        }

        // Check, validate and seal every write before anything is committed.
        let mut targets = HashSet::new();
        let mut writes: Vec<ResourceWrite> = Vec::new();
        let mut records: Vec<AuditRecord> = Vec::new();
        let mut responses: Vec<Option<EntryResponse>> = operations.iter().map(|_| None).collect();
        for operation in &mut operations {
            let index = operation.index;
            let rt = operation.rt;
            if operation.method == Method::Get {
                // Reads run after the commit; anything that would refuse them is refused now,
                // before a write can land.
                check_get(principal, operation)?;
                continue;
            }
            let Some(id) = operation.id.clone() else {
                return Err(entry_issue(
                    index,
                    ".request.url",
                    "the entry names no resource",
                ));
            };
            if !targets.insert((rt.name(), id.clone())) {
                return Err(entry_issue(
                    index,
                    ".request.url",
                    format!("{}/{id} appears twice in one transaction", rt.name()),
                ));
            }
            if let Some(existing) = existing_matches.remove(&index) {
                responses[index] = Some(written(200, existing));
                continue;
            }
            let prefix = format!("Bundle.entry[{index}].resource.");
            match operation.method {
                Method::Post | Method::Put => {
                    let interaction = if operation.method == Method::Post {
                        Interaction::Create
                    } else {
                        Interaction::Update
                    };
                    require(principal, rt, interaction)?;
                    let resource = operation.resource.take().unwrap_or(Value::Null);
                    validate(&resource, rt, &prefix)?;
                    if operation.method == Method::Put
                        && resource.get("id").and_then(Value::as_str) != Some(id.as_str())
                    {
                        return Err(entry_issue(
                            index,
                            ".resource.id",
                            "a PUT entry's resource id must equal the id in request.url",
                        ));
                    }
                    let current = match operation.method {
                        Method::Put => self.store.current(scope, rt.name(), &id).await?,
                        _ => None,
                    };
                    if ResourceId::parse(&id).is_none() {
                        return Err(entry_issue(index, ".request.url", "not a valid FHIR id"));
                    }
                    let (version, precondition, created) = match (&current, operation.if_match) {
                        (None, Some(_)) => {
                            return Err(RecordError::PreconditionFailed(format!(
                                "Bundle.entry[{index}]: ifMatch names a resource that does not exist"
                            )));
                        }
                        (Some(current), Some(expected)) if current.version != expected => {
                            return Err(RecordError::PreconditionFailed(format!(
                                "Bundle.entry[{index}]: ifMatch expected version {expected}, the \
                                 current version is {}",
                                current.version
                            )));
                        }
                        (None, None) => {
                            require(principal, rt, Interaction::Create)?;
                            (1, Precondition::Absent, true)
                        }
                        (Some(current), _) => (
                            current.version + 1,
                            Precondition::CurrentVersion(current.version),
                            current.deleted,
                        ),
                    };
                    self.check_write_reach(principal, &keys, rt, &id, &resource, current.as_ref())?;
                    let (write, view) = self.prepare_write(
                        &keys,
                        scope,
                        rt,
                        &id,
                        version,
                        precondition,
                        resource,
                        now_ms,
                    )?;
                    let action = if created { "create" } else { "update" };
                    records.push(write_record(principal, action, &view, now_ms));
                    writes.push(write);
                    responses[index] = Some(written(if created { 201 } else { 200 }, view));
                }
                Method::Delete => {
                    require(principal, rt, Interaction::Delete)?;
                    let current = self.store.current(scope, rt.name(), &id).await?;
                    match current {
                        Some(current) if !current.deleted => {
                            let opened = self.open_within_reach(principal, &keys, rt, &current)?;
                            let about = AuditSubject {
                                action: "delete",
                                resource_type: Some(rt),
                                resource_id: Some(&id),
                            };
                            records.push(audit_record(
                                principal,
                                &about,
                                opened.subjects(),
                                crate::records::categories_of([rt]),
                                Outcome::Success,
                                None,
                                now_ms,
                            ));
                            writes.push(self.tombstone(rt, &current, now_ms));
                            responses[index] = Some(EntryResponse {
                                status: 204,
                                location: None,
                                version: Some(current.version + 1),
                                last_modified_ms: Some(now_ms),
                                body: EntryBody::None,
                            });
                        }
                        Some(_) => {
                            responses[index] = Some(EntryResponse {
                                status: 204,
                                location: None,
                                version: None,
                                last_modified_ms: None,
                                body: EntryBody::None,
                            })
                        }
                        None => {
                            return Err(RecordError::NotFound);
                        }
                    }
                }
                Method::Get => {}
            }
        }
        if !writes.is_empty() {
            let result = self.store.commit(scope, &writes, &records).await;
            self.audit
                .note_commit(!matches!(result, Err(StoreError::Backend(_))));
            result?;
        }
        // Reads run after the writes, so they see them. Once writes have committed, a read that
        // still fails (the resource is not there, the audit trail failed) is reported in its own
        // entry: answering with an error would tell the client that nothing was written.
        for operation in &operations {
            if operation.method == Method::Get {
                let response = match self.run_get(principal, operation, now_ms).await {
                    Ok(response) => response,
                    Err(error) if !writes.is_empty() => EntryResponse {
                        status: 0,
                        location: None,
                        version: None,
                        last_modified_ms: None,
                        body: EntryBody::Failed(error),
                    },
                    Err(error) => return Err(error),
                };
                responses[operation.index] = Some(response);
            }
        }
        Ok(responses
            .into_iter()
            .map(|response| {
                response.unwrap_or(EntryResponse {
                    status: 500,
                    location: None,
                    version: None,
                    last_modified_ms: None,
                    body: EntryBody::None,
                })
            })
            .collect())
    }

    async fn run_get(
        &self,
        principal: &Principal,
        operation: &Operation,
        now_ms: i64,
    ) -> Result<EntryResponse, RecordError> {
        match (&operation.id, &operation.version) {
            (Some(id), Some(version)) => {
                let view = self
                    .vread(principal, operation.rt, id, version, now_ms)
                    .await?;
                Ok(written(200, view))
            }
            (Some(id), None) => {
                let view = self.read(principal, operation.rt, id, now_ms).await?;
                Ok(written(200, view))
            }
            (None, _) => {
                let pairs = parse_query_string(operation.query.as_deref().unwrap_or(""));
                let page = self.search(principal, operation.rt, &pairs, now_ms).await?;
                Ok(EntryResponse {
                    status: 200,
                    location: None,
                    version: None,
                    last_modified_ms: None,
                    body: EntryBody::Search(operation.rt, Box::new(page)),
                })
            }
        }
    }

    pub async fn batch(
        &self,
        principal: &Principal,
        bundle: Value,
        now_ms: i64,
    ) -> Result<Vec<EntryResponse>, RecordError> {
        let mut responses = Vec::new();
        for (index, entry) in entries(bundle)?.into_iter().enumerate() {
            let response = match parse_operation(index, entry) {
                Ok(operation) => self.run_batch_entry(principal, operation, now_ms).await,
                Err(error) => Err(error),
            };
            responses.push(response.unwrap_or_else(|error| EntryResponse {
                status: 0,
                location: None,
                version: None,
                last_modified_ms: None,
                body: EntryBody::Failed(error),
            }));
        }
        Ok(responses)
    }

    async fn run_batch_entry(
        &self,
        principal: &Principal,
        operation: Operation,
        now_ms: i64,
    ) -> Result<EntryResponse, RecordError> {
        let rt = operation.rt;
        match operation.method {
            Method::Get => self.run_get(principal, &operation, now_ms).await,
            Method::Post => {
                let resource = operation.resource.unwrap_or(Value::Null);
                let outcome = self
                    .create(
                        principal,
                        rt,
                        resource,
                        operation.if_none_exist.as_deref(),
                        now_ms,
                    )
                    .await?;
                Ok(written(
                    if outcome.created { 201 } else { 200 },
                    outcome.view,
                ))
            }
            Method::Put => {
                let id = operation.id.unwrap_or_default();
                let resource = operation.resource.unwrap_or(Value::Null);
                let outcome = self
                    .update(principal, rt, &id, resource, operation.if_match, now_ms)
                    .await?;
                Ok(written(
                    if outcome.created { 201 } else { 200 },
                    outcome.view,
                ))
            }
            Method::Delete => {
                let id = operation.id.unwrap_or_default();
                self.delete(principal, rt, &id, now_ms).await?;
                Ok(EntryResponse {
                    status: 204,
                    location: None,
                    version: None,
                    last_modified_ms: None,
                    body: EntryBody::None,
                })
            }
        }
    }
}
