//! Search parameter definitions (FHIR R4 names and paths) per supported type.

/// How a parameter's values are compared and indexed.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ParamKind {
    String,
    Token,
    Date,
    Reference,
    Phonetic,
}

/// One search parameter of one resource type.
#[derive(Debug)]
pub struct SearchParam {
    pub name: &'static str,
    pub kind: ParamKind,
    /// Element paths from the resource root; `x[x]` matches every choice of `x`.
    pub(crate) paths: &'static [&'static str],
    /// Reference targets (Reference params) in R4 order.
    pub(crate) targets: &'static [&'static str],
    /// For ContactPoint tokens: only points with this `system` (phone, email).
    pub(crate) contact_system: Option<&'static str>,
    /// Date params indexed as exact-precision Terms (birthdate), not ranges.
    pub(crate) date_as_terms: bool,
    /// Parameters of the same type and kind whose values are a part of this one's (a
    /// Patient's `name` holds its `family` and `given`; `telecom` its `phone` and `email`; a
    /// Condition's `date` its `onset-date` and `recorded-date`). A term or date range one of
    /// them indexes for a resource is not indexed again under this parameter, and a look-up
    /// of this parameter (or a sort by it) reads theirs as well ([`crate::Lookup::Terms`],
    /// [`crate::Lookup::Dates`]), so each is written once.
    pub(crate) includes: &'static [&'static str],
}

const fn p(name: &'static str, kind: ParamKind, paths: &'static [&'static str]) -> SearchParam {
    SearchParam {
        name,
        kind,
        paths,
        targets: &[],
        contact_system: None,
        date_as_terms: false,
        includes: &[],
    }
}

const fn r(
    name: &'static str,
    paths: &'static [&'static str],
    targets: &'static [&'static str],
) -> SearchParam {
    SearchParam {
        name,
        kind: ParamKind::Reference,
        paths,
        targets,
        contact_system: None,
        date_as_terms: false,
        includes: &[],
    }
}

const fn contact(name: &'static str, system: Option<&'static str>) -> SearchParam {
    SearchParam {
        name,
        kind: ParamKind::Token,
        paths: &["telecom"],
        targets: &[],
        contact_system: system,
        date_as_terms: false,
        includes: &[],
    }
}

impl SearchParam {
    /// The parameters this one includes (see the field).
    pub fn includes(&self) -> &'static [&'static str] {
        self.includes
    }
}

/// `param`, whose values include those of `includes` (see [`SearchParam::includes`]).
const fn including(param: SearchParam, includes: &'static [&'static str]) -> SearchParam {
    SearchParam { includes, ..param }
}

use ParamKind::{Date, Phonetic, String, Token};

const NAME_PARTS: &[&str] = &["family", "given"];
/// A `subject`'s references to patients are its `patient`'s.
const PATIENT_PART: &[&str] = &["patient"];

const PATIENT_ONLY: &[&str] = &["Patient"];
const SUBJECT_TARGETS: &[&str] = &["Patient", "Group"];
const OBS_SUBJECT: &[&str] = &["Patient", "Group", "Device", "Location"];

pub(crate) const PATIENT: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    p("family", String, &["name.family"]),
    p("given", String, &["name.given"]),
    including(p("name", String, &["name"]), NAME_PARTS),
    SearchParam {
        name: "birthdate",
        kind: Date,
        paths: &["birthDate"],
        targets: &[],
        contact_system: None,
        date_as_terms: true,
        includes: &[],
    },
    p("gender", Token, &["gender"]),
    p("address-postalcode", String, &["address.postalCode"]),
    contact("phone", Some("phone")),
    contact("email", Some("email")),
    including(contact("telecom", None), &["phone", "email"]),
    p("active", Token, &["active"]),
    p("phonetic", Phonetic, &["name"]),
];

pub(crate) const PRACTITIONER: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    including(p("name", String, &["name"]), NAME_PARTS),
    p("family", String, &["name.family"]),
    p("given", String, &["name.given"]),
    p("active", Token, &["active"]),
];

pub(crate) const ORGANIZATION: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    p("name", String, &["name", "alias"]),
    p("address-postalcode", String, &["address.postalCode"]),
    p("active", Token, &["active"]),
];

pub(crate) const LOCATION: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    p("name", String, &["name", "alias"]),
    p("address-postalcode", String, &["address.postalCode"]),
    p("status", Token, &["status"]),
    r("organization", &["managingOrganization"], &["Organization"]),
];

pub(crate) const ENCOUNTER: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    p("date", Date, &["period"]),
    p("status", Token, &["status"]),
    p("class", Token, &["class"]),
    p("type", Token, &["type"]),
    r("episode-of-care", &["episodeOfCare"], &["EpisodeOfCare"]),
];

pub(crate) const EPISODE_OF_CARE: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["patient"], PATIENT_ONLY),
    p("date", Date, &["period"]),
    p("status", Token, &["status"]),
    p("type", Token, &["type"]),
    r("organization", &["managingOrganization"], &["Organization"]),
];

pub(crate) const OBSERVATION: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], OBS_SUBJECT), PATIENT_PART),
    p("date", Date, &["effective[x]"]),
    p("code", Token, &["code"]),
    p("status", Token, &["status"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
];

pub(crate) const CONDITION: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    including(
        p("date", Date, &["recordedDate", "onset[x]"]),
        &["onset-date", "recorded-date"],
    ),
    p("onset-date", Date, &["onset[x]"]),
    p("recorded-date", Date, &["recordedDate"]),
    p("code", Token, &["code"]),
    p("clinical-status", Token, &["clinicalStatus"]),
    p("verification-status", Token, &["verificationStatus"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
];

pub(crate) const ALLERGY_INTOLERANCE: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["patient"], PATIENT_ONLY),
    p("date", Date, &["recordedDate"]),
    p("code", Token, &["code", "reaction.substance"]),
    p("clinical-status", Token, &["clinicalStatus"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
];

pub(crate) const MEDICATION_STATEMENT: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    including(p("date", Date, &["effective[x]"]), &["effective"]),
    p("effective", Date, &["effective[x]"]),
    p("code", Token, &["medication[x]"]),
    p("status", Token, &["status"]),
    p("category", Token, &["category"]),
    r("context", &["context"], &["Encounter", "EpisodeOfCare"]),
];

pub(crate) const MEDICATION_REQUEST: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    including(p("date", Date, &["authoredOn"]), &["authoredon"]),
    p("authoredon", Date, &["authoredOn"]),
    p("code", Token, &["medication[x]"]),
    p("status", Token, &["status"]),
    p("intent", Token, &["intent"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
    r(
        "requester",
        &["requester"],
        &["Practitioner", "Organization", "Patient"],
    ),
];

pub(crate) const CARE_PLAN: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    p("date", Date, &["period"]),
    p("status", Token, &["status"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
];

pub(crate) const CARE_TEAM: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(r("subject", &["subject"], SUBJECT_TARGETS), PATIENT_PART),
    p("date", Date, &["period"]),
    p("status", Token, &["status"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
    r(
        "participant",
        &["participant.member"],
        &["Practitioner", "Patient", "Organization", "CareTeam"],
    ),
];

pub(crate) const APPOINTMENT: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["participant.actor"], PATIENT_ONLY),
    r("practitioner", &["participant.actor"], &["Practitioner"]),
    r("location", &["participant.actor"], &["Location"]),
    p("date", Date, &["start"]),
    p("status", Token, &["status"]),
    p("service-type", Token, &["serviceType"]),
];

pub(crate) const FLAG: &[SearchParam] = &[
    p("identifier", Token, &["identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(
        r(
            "subject",
            &["subject"],
            &[
                "Patient",
                "Location",
                "Group",
                "Organization",
                "Practitioner",
            ],
        ),
        PATIENT_PART,
    ),
    p("date", Date, &["period"]),
    p("status", Token, &["status"]),
    p("category", Token, &["category"]),
    r("encounter", &["encounter"], &["Encounter"]),
];

pub(crate) const DOCUMENT_REFERENCE: &[SearchParam] = &[
    p("identifier", Token, &["masterIdentifier", "identifier"]),
    r("patient", &["subject"], PATIENT_ONLY),
    including(
        r(
            "subject",
            &["subject"],
            &["Patient", "Practitioner", "Group", "Device"],
        ),
        PATIENT_PART,
    ),
    p("date", Date, &["date"]),
    p("status", Token, &["status"]),
    p("type", Token, &["type"]),
    p("category", Token, &["category"]),
    r(
        "encounter",
        &["context.encounter"],
        &["Encounter", "EpisodeOfCare"],
    ),
];
