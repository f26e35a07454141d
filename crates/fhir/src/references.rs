//! Data subjects and reference traversal.

use serde_json::Value;

use crate::search::params::{ParamKind, SearchParam};
use crate::types::ResourceType;

/// Patient ids this resource is about: a Patient → its own id; other types →
/// ids of relative `Patient/…` references in their patient-compartment fields.
/// Deduplicated and sorted.
pub fn data_subjects(rt: ResourceType, resource: &Value, own_id: &str) -> Vec<String> {
    if let Some(subjects) = data_subjects_without_body(rt, own_id) {
        return subjects;
    }
    let compartment = SearchParam {
        name: "",
        kind: ParamKind::Reference,
        paths: rt.def().compartment,
        targets: &["Patient"],
        contact_system: None,
        date_as_terms: false,
        includes: &[],
    };
    let mut ids: Vec<String> = crate::search::terms_reference_values(resource, &compartment)
        .into_iter()
        .filter_map(|r| r.strip_prefix("Patient/").map(str::to_owned))
        .collect();
    ids.sort();
    ids.dedup();
    ids
}

/// The data subjects of a resource of type `rt` when they do not depend on its content (a
/// Patient is about itself), so a caller may skip parsing the body; `None` when they do.
pub fn data_subjects_without_body(rt: ResourceType, own_id: &str) -> Option<Vec<String>> {
    rt.is_patient().then(|| vec![own_id.to_owned()])
}

/// An object holding a `reference` string is a Reference, except an
/// Expression (which has `reference` as a uri beside its required `language`).
fn is_reference_object(object: &serde_json::Map<String, Value>) -> bool {
    object.get("reference").is_some_and(Value::is_string) && !object.contains_key("language")
}

/// Every `Reference.reference` string in the resource, at any depth (including
/// contained resources), mutable so transactions can rewrite `urn:uuid:` ids.
pub fn for_each_reference_mut(resource: &mut Value, f: &mut dyn FnMut(&mut String)) {
    match resource {
        Value::Object(object) => {
            let is_reference = is_reference_object(object);
            for (key, child) in object.iter_mut() {
                match child {
                    Value::String(s) if is_reference && key == "reference" => f(s),
                    _ => for_each_reference_mut(child, f),
                }
            }
        }
        Value::Array(items) => items
            .iter_mut()
            .for_each(|item| for_each_reference_mut(item, f)),
        _ => {}
    }
}

pub fn for_each_reference(resource: &Value, f: &mut dyn FnMut(&str)) {
    match resource {
        Value::Object(object) => {
            let is_reference = is_reference_object(object);
            for (key, child) in object {
                match child {
                    Value::String(s) if is_reference && key == "reference" => f(s),
                    _ => for_each_reference(child, f),
                }
            }
        }
        Value::Array(items) => items.iter().for_each(|item| for_each_reference(item, f)),
        _ => {}
    }
}
