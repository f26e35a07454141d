//! The supported resource types: ONE declarative table. Adding a type means
//! adding one entry here (name, data categories, search parameters, patient
//! compartment fields) and its name in `tools/gen-fhir-schema.py`.

use crate::search::params::{self, SearchParam};

/// What reading a resource of a type discloses; the access policy speaks in these.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum DataCategory {
    Demographics,
    Contact,
    Clinical,
    Care,
    Workforce,
    Organisation,
    HomeEntry,
}

impl DataCategory {
    pub fn as_str(self) -> &'static str {
        match self {
            DataCategory::Demographics => "demographics",
            DataCategory::Contact => "contact",
            DataCategory::Clinical => "clinical",
            DataCategory::Care => "care",
            DataCategory::Workforce => "workforce",
            DataCategory::Organisation => "organisation",
            DataCategory::HomeEntry => "home-entry",
        }
    }
}

pub(crate) struct TypeDef {
    pub name: &'static str,
    pub categories: &'static [DataCategory],
    pub params: &'static [SearchParam],
    /// Element paths of the patient compartment (references to the data subject).
    pub compartment: &'static [&'static str],
}

use DataCategory::{Care, Clinical, Contact, Demographics, Organisation, Workforce};

const CLINICAL: &[DataCategory] = &[Clinical];
const CARE: &[DataCategory] = &[Care];

static TYPES: &[TypeDef] = &[
    TypeDef {
        name: "Patient",
        categories: &[Demographics, Contact],
        params: params::PATIENT,
        compartment: &[],
    },
    TypeDef {
        name: "Practitioner",
        categories: &[Workforce],
        params: params::PRACTITIONER,
        compartment: &[],
    },
    TypeDef {
        name: "Organization",
        categories: &[Organisation],
        params: params::ORGANIZATION,
        compartment: &[],
    },
    TypeDef {
        name: "Location",
        categories: &[Organisation],
        params: params::LOCATION,
        compartment: &[],
    },
    TypeDef {
        name: "Encounter",
        categories: CLINICAL,
        params: params::ENCOUNTER,
        compartment: &["subject"],
    },
    TypeDef {
        name: "EpisodeOfCare",
        categories: CARE,
        params: params::EPISODE_OF_CARE,
        compartment: &["patient"],
    },
    TypeDef {
        name: "Observation",
        categories: CLINICAL,
        params: params::OBSERVATION,
        compartment: &["subject"],
    },
    TypeDef {
        name: "Condition",
        categories: CLINICAL,
        params: params::CONDITION,
        compartment: &["subject"],
    },
    TypeDef {
        name: "AllergyIntolerance",
        categories: CLINICAL,
        params: params::ALLERGY_INTOLERANCE,
        compartment: &["patient"],
    },
    TypeDef {
        name: "MedicationStatement",
        categories: CLINICAL,
        params: params::MEDICATION_STATEMENT,
        compartment: &["subject"],
    },
    TypeDef {
        name: "MedicationRequest",
        categories: CLINICAL,
        params: params::MEDICATION_REQUEST,
        compartment: &["subject"],
    },
    TypeDef {
        name: "CarePlan",
        categories: CARE,
        params: params::CARE_PLAN,
        compartment: &["subject"],
    },
    TypeDef {
        name: "CareTeam",
        categories: CARE,
        params: params::CARE_TEAM,
        compartment: &["subject"],
    },
    TypeDef {
        name: "Appointment",
        categories: CARE,
        params: params::APPOINTMENT,
        compartment: &["participant.actor"],
    },
    TypeDef {
        name: "Flag",
        categories: CLINICAL,
        params: params::FLAG,
        compartment: &["subject"],
    },
    TypeDef {
        name: "DocumentReference",
        categories: CLINICAL,
        params: params::DOCUMENT_REFERENCE,
        compartment: &["subject"],
    },
];

/// A supported FHIR resource type (an index into the table above).
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub struct ResourceType(u8);

/// Exact, case-sensitive FHIR name.
pub fn resource_type(name: &str) -> Option<ResourceType> {
    TYPES
        .iter()
        .position(|t| t.name == name)
        .and_then(|i| u8::try_from(i).ok())
        .map(ResourceType)
}

/// Every supported type, in table order.
pub fn supported_types() -> impl Iterator<Item = ResourceType> {
    (0..TYPES.len())
        .filter_map(|i| u8::try_from(i).ok())
        .map(ResourceType)
}

impl ResourceType {
    pub(crate) fn def(self) -> &'static TypeDef {
        // Values are only built from positions in TYPES, so the index is in range.
        &TYPES[usize::from(self.0)]
    }

    pub fn name(self) -> &'static str {
        self.def().name
    }

    pub fn data_categories(self) -> &'static [DataCategory] {
        self.def().categories
    }

    /// Type-specific parameters (not `_id`, `_lastUpdated` and the other specials).
    pub fn search_params(self) -> &'static [SearchParam] {
        self.def().params
    }

    pub fn search_param(self, name: &str) -> Option<&'static SearchParam> {
        self.def().params.iter().find(|p| p.name == name)
    }

    pub fn is_patient(self) -> bool {
        self.def().name == "Patient"
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::*;

    #[test]
    fn table_is_consistent() {
        assert_eq!(supported_types().count(), 16);
        let patient = resource_type("Patient").unwrap();
        assert!(patient.is_patient());
        assert_eq!(patient.data_categories(), &[Demographics, Contact]);
        assert!(resource_type("patient").is_none());
        assert_eq!(
            resource_type("Location").unwrap().data_categories()[0].as_str(),
            "organisation"
        );
        for rt in supported_types() {
            assert_eq!(resource_type(rt.name()), Some(rt));
            assert!(
                crate::schema::schema().get(rt.name()).is_some(),
                "{} has no schema",
                rt.name()
            );
            for p in rt.search_params() {
                for path in p.paths {
                    let first = path.split('.').next().unwrap_or_default();
                    let def = crate::schema::schema().get(rt.name()).unwrap();
                    let known = def
                        .elements
                        .iter()
                        .any(|e| e.name == first.trim_end_matches("[x]"));
                    assert!(known, "{}.{} path {path} unknown", rt.name(), p.name);
                }
            }
        }
    }
}
