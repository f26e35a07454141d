//! carevault-fhir: the FHIR R4 knowledge of carevault, pure (no I/O).
//!
//! * [`types`]: the one table of supported resource types and what reading
//!   each discloses ([`DataCategory`]);
//! * [`validate()`]: structural validation against element tables generated
//!   from HL7's StructureDefinitions (`tools/gen-fhir-schema.py`);
//! * [`search`]: parameters, index terms (see `search::terms` for the term
//!   design) and query parsing/matching;
//! * NHS number checking, data subjects and reference traversal.

mod datetime;
mod nhs;
mod primitives;
mod references;
mod schema;
pub mod search;
pub mod types;
mod validate;

pub use nhs::{NHS_NUMBER_SYSTEM, nhs_number_is_valid};
pub use references::{
    data_subjects, data_subjects_without_body, for_each_reference, for_each_reference_mut,
};
pub use search::{
    DateCondition, DatePrefix, Include, IndexEntry, Lookup, ParamFilter, ParamKind, SearchParam,
    SearchQuery, SortKey, index_entries, parse_search,
};
pub use types::{DataCategory, ResourceType, resource_type, supported_types};
pub use validate::{Issue, IssueCode, Severity, parse_json, validate};

#[cfg(test)]
mod tests;
