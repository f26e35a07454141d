//! Structural validation of resources against the generated R4 element tables.
//!
//! Guarantees for an accepted resource: a JSON object of a supported type whose
//! every element is known to R4 for its position, with the right cardinality
//! (arrays exactly where max is `*`), required elements present, primitives in
//! their R4 formats, no empty objects/arrays/strings, at most one type per
//! choice element, well-formed `Reference.reference` strings and valid NHS
//! numbers. `contained` resources of a supported type are validated fully;
//! other contained resources are only checked to be objects with a
//! `resourceType` string (their R4 tables are not embedded).
//! Terminology bindings and FHIRPath invariants (other than ext-1) are not checked.

use serde_json::{Map, Value};

use crate::primitives;
use crate::schema::{Kind, TypeDef, schema};
use crate::types::{ResourceType, resource_type};
use crate::{NHS_NUMBER_SYSTEM, nhs_number_is_valid};

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Severity {
    Error,
    Warning,
}

impl Severity {
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Error => "error",
            Severity::Warning => "warning",
        }
    }
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum IssueCode {
    Structure,
    Required,
    Value,
    Invariant,
    NotSupported,
    Invalid,
}

impl IssueCode {
    /// The OperationOutcome `issue.code` string.
    pub fn as_str(self) -> &'static str {
        match self {
            IssueCode::Structure => "structure",
            IssueCode::Required => "required",
            IssueCode::Value => "value",
            IssueCode::Invariant => "invariant",
            IssueCode::NotSupported => "not-supported",
            IssueCode::Invalid => "invalid",
        }
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Issue {
    pub severity: Severity,
    pub code: IssueCode,
    /// FHIRPath-like location, e.g. `Patient.name[0].given[1]`; empty for the body itself.
    pub path: String,
    pub message: String,
}

impl Issue {
    pub fn error(code: IssueCode, path: impl Into<String>, message: impl Into<String>) -> Issue {
        Issue {
            severity: Severity::Error,
            code,
            path: path.into(),
            message: message.into(),
        }
    }
}

impl std::fmt::Display for Issue {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "{} at {}: {}",
            self.code.as_str(),
            self.path,
            self.message
        )
    }
}

/// Parses a request body. Numbers keep their text (`72.50` stays `72.50`) and
/// object keys keep their order, so the stored resource is what was sent.
pub fn parse_json(body: &[u8]) -> Result<Value, Vec<Issue>> {
    serde_json::from_slice(body).map_err(|e| {
        vec![Issue::error(
            IssueCode::Structure,
            "",
            format!(
                "invalid JSON at line {}, column {}: {e}",
                e.line(),
                e.column()
            ),
        )]
    })
}

/// Validates a resource of a supported type. `expected` (from the URL) must
/// equal `resourceType` when given.
pub fn validate(
    resource: &Value,
    expected: Option<ResourceType>,
) -> Result<ResourceType, Vec<Issue>> {
    let Some(object) = resource.as_object() else {
        return Err(vec![Issue::error(
            IssueCode::Structure,
            "",
            "a resource must be a JSON object",
        )]);
    };
    let name = match object.get("resourceType") {
        Some(Value::String(name)) => name.as_str(),
        Some(_) => {
            return Err(vec![Issue::error(
                IssueCode::Structure,
                "resourceType",
                "resourceType must be a string",
            )]);
        }
        None => {
            return Err(vec![Issue::error(
                IssueCode::Required,
                "resourceType",
                "resourceType is missing",
            )]);
        }
    };
    let Some(rt) = resource_type(name) else {
        return Err(vec![Issue::error(
            IssueCode::NotSupported,
            "resourceType",
            format!("resource type {name:?} is not supported"),
        )]);
    };
    if let Some(expected) = expected.filter(|e| *e != rt) {
        return Err(vec![Issue::error(
            IssueCode::Invalid,
            "resourceType",
            format!(
                "resourceType {name} does not match the {} endpoint",
                expected.name()
            ),
        )]);
    }
    let mut issues = Vec::new();
    check_resource(object, rt.name(), rt.name(), &mut issues);
    if issues.iter().any(|i| i.severity == Severity::Error) {
        Err(issues)
    } else {
        Ok(rt)
    }
}

fn check_resource(
    object: &Map<String, Value>,
    type_name: &str,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    match schema().get(type_name) {
        Some(def) if def.kind == Kind::Resource => {
            check_object(object, type_name, def, path, issues)
        }
        _ => issues.push(Issue::error(
            IssueCode::NotSupported,
            path,
            format!("resource type {type_name} is not supported"),
        )),
    }
}

/// Validates the members of one object whose FHIR type is `type_name`.
fn check_object(
    object: &Map<String, Value>,
    type_name: &str,
    def: &TypeDef,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    if object.is_empty() {
        issues.push(Issue::error(
            IssueCode::Structure,
            path,
            "empty objects are not allowed in FHIR",
        ));
        return;
    }
    let mut choices_seen: Vec<(&str, &str)> = Vec::new();
    for (key, value) in object {
        if key == "resourceType" && def.kind == Kind::Resource {
            continue;
        }
        let child_path = format!("{path}.{key}");
        if let Some(base) = key.strip_prefix('_') {
            check_primitive_extension(object, def, base, value, &child_path, issues);
            continue;
        }
        let Some((element, concrete)) = def.element_for_key(key) else {
            issues.push(Issue::error(
                IssueCode::Structure,
                child_path,
                format!("unknown element {key:?} in {type_name}"),
            ));
            continue;
        };
        if element.choice {
            if let Some((_, other)) = choices_seen.iter().find(|(base, _)| *base == element.name) {
                issues.push(Issue::error(
                    IssueCode::Structure,
                    child_path,
                    format!(
                        "only one of {}[x] is allowed, found {other} and {key}",
                        element.name
                    ),
                ));
                continue;
            }
            choices_seen.push((element.name.as_str(), key.as_str()));
        }
        let has_extension_twin = object.contains_key(&format!("_{key}"));
        match (element.many, value) {
            (true, Value::Array(items)) => {
                if items.is_empty() {
                    issues.push(Issue::error(
                        IssueCode::Structure,
                        child_path.clone(),
                        "empty arrays are not allowed in FHIR",
                    ));
                }
                for (i, item) in items.iter().enumerate() {
                    let item_path = format!("{child_path}[{i}]");
                    // A null keeps a primitive array aligned with its `_name` extension twin.
                    if item.is_null() && has_extension_twin && schema().is_primitive(concrete) {
                        continue;
                    }
                    check_value(concrete, item, &item_path, issues);
                }
            }
            (true, _) => issues.push(Issue::error(
                IssueCode::Structure,
                child_path,
                format!("{key} repeats (max *) and must be a JSON array"),
            )),
            (false, Value::Array(_)) => issues.push(Issue::error(
                IssueCode::Structure,
                child_path,
                format!("{key} has max 1 and must not be an array"),
            )),
            (false, _) => check_value(concrete, value, &child_path, issues),
        }
    }
    check_required(object, def, path, issues);
    check_type_rules(object, type_name, path, issues);
}

fn check_required(object: &Map<String, Value>, def: &TypeDef, path: &str, issues: &mut Vec<Issue>) {
    for element in def.elements.iter().filter(|e| e.min > 0) {
        let present = object.keys().any(|key| {
            let key = key.strip_prefix('_').unwrap_or(key);
            if element.choice {
                def.element_for_key(key)
                    .is_some_and(|(e, _)| std::ptr::eq(e, element))
            } else {
                key == element.name
            }
        });
        if !present {
            let suffix = if element.choice { "[x]" } else { "" };
            issues.push(Issue::error(
                IssueCode::Required,
                format!("{path}.{}{suffix}", element.name),
                format!("required element {}{suffix} is missing", element.name),
            ));
        }
    }
}

fn check_value(type_code: &str, value: &Value, path: &str, issues: &mut Vec<Issue>) {
    if type_code == "Resource" {
        check_contained(value, path, issues);
        return;
    }
    let Some(def) = schema().get(type_code) else {
        issues.push(Issue::error(
            IssueCode::NotSupported,
            path,
            format!("type {type_code} is not supported"),
        ));
        return;
    };
    if def.kind == Kind::Primitive {
        if let Err(message) = primitives::check(type_code, value) {
            issues.push(Issue::error(IssueCode::Value, path, message));
        }
        return;
    }
    match value.as_object() {
        Some(object) => check_object(object, type_code, def, path, issues),
        None => issues.push(Issue::error(
            IssueCode::Structure,
            path,
            format!("{type_code} must be a JSON object"),
        )),
    }
}

fn check_contained(value: &Value, path: &str, issues: &mut Vec<Issue>) {
    let Some(object) = value.as_object() else {
        issues.push(Issue::error(
            IssueCode::Structure,
            path,
            "a contained resource must be a JSON object",
        ));
        return;
    };
    match object.get("resourceType") {
        Some(Value::String(name)) if resource_type(name).is_some() => {
            check_resource(object, name, path, issues)
        }
        // Types whose tables are not embedded are accepted as opaque resources.
        Some(Value::String(name)) if is_type_name(name) => {}
        _ => issues.push(Issue::error(
            IssueCode::Required,
            format!("{path}.resourceType"),
            "contained resource needs a resourceType",
        )),
    }
}

/// `_name` siblings carry the id/extensions of primitive `name`.
fn check_primitive_extension(
    object: &Map<String, Value>,
    def: &TypeDef,
    base: &str,
    value: &Value,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    let Some((element, concrete)) = def.element_for_key(base) else {
        issues.push(Issue::error(
            IssueCode::Structure,
            path,
            format!("unknown element {base:?}"),
        ));
        return;
    };
    if !schema().is_primitive(concrete) {
        issues.push(Issue::error(
            IssueCode::Structure,
            path,
            format!("{base} is not a primitive and takes no _{base}"),
        ));
        return;
    }
    let element_def = schema().get("Element");
    let check_one = |v: &Value, p: &str, issues: &mut Vec<Issue>| match (v.as_object(), element_def)
    {
        (Some(o), Some(def)) => check_object(o, "Element", def, p, issues),
        _ => issues.push(Issue::error(
            IssueCode::Structure,
            p,
            "primitive extensions must be objects",
        )),
    };
    match (element.many, value) {
        (true, Value::Array(items)) => {
            let twin_len = object.get(base).and_then(Value::as_array).map(Vec::len);
            if twin_len.is_some_and(|n| n != items.len()) {
                issues.push(Issue::error(
                    IssueCode::Structure,
                    path,
                    format!("_{base} must align with {base}"),
                ));
            }
            for (i, item) in items.iter().enumerate() {
                if !item.is_null() {
                    check_one(item, &format!("{path}[{i}]"), issues);
                }
            }
        }
        (false, v) if !v.is_array() => check_one(v, path, issues),
        _ => issues.push(Issue::error(
            IssueCode::Structure,
            path,
            format!("_{base} must have the shape of {base}"),
        )),
    }
}

/// Rules attached to a datatype rather than to an element table.
fn check_type_rules(
    object: &Map<String, Value>,
    type_name: &str,
    path: &str,
    issues: &mut Vec<Issue>,
) {
    match type_name {
        "Reference" => {
            if let Some(Value::String(reference)) = object.get("reference")
                && !reference_is_well_formed(reference)
            {
                issues.push(Issue::error(
                    IssueCode::Value,
                    format!("{path}.reference"),
                    format!("invalid reference {reference:?}: expected Type/id, an absolute URL, urn:uuid:, urn:oid: or #id"),
                ));
            }
        }
        "Identifier" => {
            if object.get("system").and_then(Value::as_str) == Some(NHS_NUMBER_SYSTEM)
                && let Some(Value::String(value)) = object.get("value")
                && !nhs_number_is_valid(value)
            {
                issues.push(Issue::error(
                    IssueCode::Value,
                    format!("{path}.value"),
                    "not a valid NHS number (10 digits with a Modulus 11 check digit)",
                ));
            }
        }
        "Extension" => {
            // ext-1: an extension has either a value or nested extensions, not both.
            let has_value = object.keys().any(|k| k.starts_with("value"));
            let has_nested = object.contains_key("extension");
            if has_value == has_nested {
                issues.push(Issue::error(
                    IssueCode::Invariant,
                    path,
                    "ext-1: an extension must have either extensions or value[x], not both",
                ));
            }
        }
        _ => {}
    }
}

fn is_type_name(s: &str) -> bool {
    s.starts_with(|c: char| c.is_ascii_uppercase()) && s.bytes().all(|b| b.is_ascii_alphanumeric())
}

/// Relative `Type/id[/_history/v]`, absolute URL, `urn:uuid:`, `urn:oid:` or `#local`.
pub(crate) fn reference_is_well_formed(reference: &str) -> bool {
    if let Some(local) = reference.strip_prefix('#') {
        return local.is_empty() || primitives::is_id(local);
    }
    if let Some(uuid) = reference.strip_prefix("urn:uuid:") {
        return primitives::is_uuid(uuid);
    }
    if reference.starts_with("urn:oid:") {
        return primitives::is_oid(reference);
    }
    if reference.starts_with("http://") || reference.starts_with("https://") {
        return reference.len() > 8 && !reference.chars().any(char::is_whitespace);
    }
    let parts: Vec<&str> = reference.split('/').collect();
    match parts.as_slice() {
        [t, id] => is_type_name(t) && primitives::is_id(id),
        [t, id, "_history", v] => is_type_name(t) && primitives::is_id(id) && primitives::is_id(v),
        _ => false,
    }
}
