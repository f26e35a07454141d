//! `/fhir/metadata`: a CapabilityStatement generated from the same table that drives
//! validation and search, so it lists exactly what is supported.

use carevault_fhir::{ParamKind, supported_types};
use serde_json::{Value, json};

use crate::ServerState;

fn kind_name(kind: ParamKind) -> &'static str {
    match kind {
        ParamKind::String | ParamKind::Phonetic => "string",
        ParamKind::Token => "token",
        ParamKind::Date => "date",
        ParamKind::Reference => "reference",
    }
}

pub fn capability_statement(state: &ServerState) -> Value {
    let resources: Vec<Value> = supported_types()
        .map(|rt| {
            let mut params = vec![
                json!({"name": "_id", "type": "token"}),
                json!({"name": "_lastUpdated", "type": "date"}),
            ];
            let mut includes = Vec::new();
            for param in rt.search_params() {
                params.push(json!({"name": param.name, "type": kind_name(param.kind)}));
                if param.kind == ParamKind::Reference {
                    includes.push(format!("{}:{}", rt.name(), param.name));
                }
            }
            json!({
                "type": rt.name(),
                "interaction": [
                    {"code": "read"}, {"code": "vread"}, {"code": "update"},
                    {"code": "delete"}, {"code": "history-instance"},
                    {"code": "history-type"}, {"code": "create"}, {"code": "search-type"}
                ],
                "versioning": "versioned-update",
                "readHistory": true,
                "updateCreate": true,
                "conditionalCreate": true,
                "conditionalUpdate": false,
                "conditionalDelete": "not-supported",
                "searchInclude": includes,
                "searchParam": params,
            })
        })
        .collect();
    let mut resources = resources;
    // The audit trail: searchable by security officers only, never writable.
    resources.push(json!({
        "type": "AuditEvent",
        "documentation": "The tenant's audit trail, for security officers only (IHE BALP shape).",
        "interaction": [{"code": "search-type"}],
        "searchParam": [
            {"name": "patient", "type": "reference"},
            {"name": "agent", "type": "token"},
            {"name": "client", "type": "token"},
            {"name": "session", "type": "token"},
            {"name": "address", "type": "token"},
            {"name": "action", "type": "token"},
            {"name": "subtype", "type": "token"},
            {"name": "outcome", "type": "token"},
            {"name": "date", "type": "date"}
        ]
    }));
    json!({
        "resourceType": "CapabilityStatement",
        "status": "active",
        "date": "2026-11-29",
        "kind": "instance",
        "software": {"name": "carevault", "version": env!("CARGO_PKG_VERSION")},
        "implementation": {"description": "carevault clinical record server", "url": state.fhir_base()},
        "fhirVersion": "4.0.1",
        "format": ["application/fhir+json", "json"],
        "rest": [{
            "mode": "server",
            "security": {
                "cors": false,
                "service": [{"coding": [{
                    "system": "http://terminology.hl7.org/CodeSystem/restful-security-service",
                    "code": "SMART-on-FHIR"
                }]}],
                "extension": [{
                    "url": "http://fhir-registry.smarthealthit.org/StructureDefinition/oauth-uris",
                    "extension": [{"url": "token", "valueUri": state.token_url()}]
                }]
            },
            "resource": resources,
            "interaction": [{"code": "transaction"}, {"code": "batch"}],
        }]
    })
}
