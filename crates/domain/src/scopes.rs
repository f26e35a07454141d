//! SMART App Launch v2 scopes for machine clients (`system/`).
//!
//! Guarantees:
//! - Parsing is strict: unknown resource types, out-of-order or repeated
//!   interaction letters, empty permissions and contexts other than `system`
//!   are refused with a message that says what to send instead.
//! - [`ScopeSet::intersect`] never grants more than both sets allow, and
//!   grants everything both allow (per resource type and per interaction,
//!   with `*` handled on either side).
//! - [`ScopeSet`]'s `Display` is canonical (sorted, merged) and parses back
//!   to an equal set.

use std::collections::BTreeMap;
use std::fmt;

/// A FHIR interaction a scope can grant, with its SMART v2 letter.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Debug)]
pub enum Interaction {
    Create,
    Read,
    Update,
    Delete,
    Search,
}

impl Interaction {
    /// All interactions, in SMART v2 canonical order (c, r, u, d, s).
    pub const ALL: [Interaction; 5] = [
        Interaction::Create,
        Interaction::Read,
        Interaction::Update,
        Interaction::Delete,
        Interaction::Search,
    ];

    #[must_use]
    pub fn letter(self) -> char {
        match self {
            Interaction::Create => 'c',
            Interaction::Read => 'r',
            Interaction::Update => 'u',
            Interaction::Delete => 'd',
            Interaction::Search => 's',
        }
    }

    fn from_letter(letter: char) -> Option<Interaction> {
        Interaction::ALL
            .into_iter()
            .find(|interaction| interaction.letter() == letter)
    }

    fn bit(self) -> u8 {
        match self {
            Interaction::Create => 1,
            Interaction::Read => 2,
            Interaction::Update => 4,
            Interaction::Delete => 8,
            Interaction::Search => 16,
        }
    }
}

/// A set of interactions, as a bit set in canonical order.
#[derive(Clone, Copy, PartialEq, Eq, Hash, Default)]
struct Interactions(u8);

impl Interactions {
    fn contains(self, interaction: Interaction) -> bool {
        self.0 & interaction.bit() != 0
    }

    fn is_empty(self) -> bool {
        self.0 == 0
    }

    fn letters(self) -> String {
        Interaction::ALL
            .into_iter()
            .filter(|interaction| self.contains(*interaction))
            .map(Interaction::letter)
            .collect()
    }
}

impl fmt::Debug for Interactions {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.letters())
    }
}

/// One SMART v2 scope: `system/<Type or *>.<cruds>`.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Scope {
    /// `None` is the wildcard `*`.
    resource: Option<String>,
    interactions: Interactions,
}

impl Scope {
    /// The resource type, or `None` for `*` (every type).
    #[must_use]
    pub fn resource_type(&self) -> Option<&str> {
        self.resource.as_deref()
    }

    #[must_use]
    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        self.interactions.contains(interaction)
            && self
                .resource
                .as_deref()
                .is_none_or(|resource| resource == resource_type)
    }

    /// The interactions granted, in canonical order.
    #[must_use]
    pub fn interactions(&self) -> Vec<Interaction> {
        Interaction::ALL
            .into_iter()
            .filter(|i| self.interactions.contains(*i))
            .collect()
    }
}

impl fmt::Display for Scope {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let resource = self.resource.as_deref().unwrap_or("*");
        write!(f, "system/{resource}.{}", self.interactions.letters())
    }
}

/// Why a scope string was refused. Messages are safe to return to clients.
#[derive(Clone, Debug, PartialEq, Eq, thiserror::Error)]
pub enum ScopeError {
    #[error("scope {scope:?}: {reason}")]
    Invalid { scope: String, reason: String },
    #[error("no scopes were given")]
    Empty,
}

fn invalid(scope: &str, reason: impl Into<String>) -> ScopeError {
    ScopeError::Invalid {
        scope: scope.to_owned(),
        reason: reason.into(),
    }
}

/// A normalised set of `system/` scopes: at most one entry per resource type
/// (and one for `*`), never with an empty permission.
#[derive(Clone, Debug, PartialEq, Eq, Default)]
pub struct ScopeSet {
    /// Key `None` is `*`; it sorts first.
    grants: BTreeMap<Option<String>, Interactions>,
}

impl ScopeSet {
    /// Parses a space-separated scope string such as
    /// `"system/Patient.rs system/Observation.cruds system/*.r"`.
    ///
    /// SMART v1 forms are translated: `.read` → `rs`, `.write` → `cud`,
    /// `.*` → `cruds`. Resource types must satisfy `is_known_type` (or be `*`).
    /// Repeated scopes for one type are merged.
    pub fn parse(s: &str, is_known_type: &dyn Fn(&str) -> bool) -> Result<ScopeSet, ScopeError> {
        let mut set = ScopeSet::default();
        for token in s.split_ascii_whitespace() {
            let scope = parse_scope(token, is_known_type)?;
            set.add(scope.resource, scope.interactions);
        }
        if set.is_empty() {
            return Err(ScopeError::Empty);
        }
        Ok(set)
    }

    #[must_use]
    pub fn allows(&self, resource_type: &str, interaction: Interaction) -> bool {
        let granted = |key: &Option<String>| {
            self.grants
                .get(key)
                .is_some_and(|interactions| interactions.contains(interaction))
        };
        granted(&None) || granted(&Some(resource_type.to_owned()))
    }

    /// What a token gets: each requested scope cut down to what `registered`
    /// allows. `system/*.rs` requested against `system/Patient.r` registered
    /// gives `system/Patient.r`, and the other way round.
    #[must_use]
    pub fn intersect(&self, registered: &ScopeSet) -> ScopeSet {
        let mut result = ScopeSet::default();
        for (requested_resource, requested) in &self.grants {
            for (registered_resource, allowed) in &registered.grants {
                // The narrower of the two resources, if they overlap at all.
                let resource = match (requested_resource, registered_resource) {
                    (None, other) | (other, None) => other.clone(),
                    (Some(a), Some(b)) if a == b => Some(a.clone()),
                    _ => continue,
                };
                result.add(resource, Interactions(requested.0 & allowed.0));
            }
        }
        result
    }

    #[must_use]
    pub fn is_empty(&self) -> bool {
        self.grants.is_empty()
    }

    /// The scopes, in canonical order (`*` first, then types by name).
    #[must_use]
    pub fn scopes(&self) -> Vec<Scope> {
        self.grants
            .iter()
            .map(|(resource, interactions)| Scope {
                resource: resource.clone(),
                interactions: *interactions,
            })
            .collect()
    }

    fn add(&mut self, resource: Option<String>, interactions: Interactions) {
        if interactions.is_empty() {
            return;
        }
        let entry = self.grants.entry(resource).or_default();
        entry.0 |= interactions.0;
    }
}

impl fmt::Display for ScopeSet {
    /// Canonical: space-separated, sorted, one scope per resource type.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (index, scope) in self.scopes().iter().enumerate() {
            if index > 0 {
                f.write_str(" ")?;
            }
            write!(f, "{scope}")?;
        }
        Ok(())
    }
}

fn parse_scope(token: &str, is_known_type: &dyn Fn(&str) -> bool) -> Result<Scope, ScopeError> {
    let (context, rest) = token.split_once('/').ok_or_else(|| {
        invalid(
            token,
            "expected the form system/<ResourceType>.<permissions>, e.g. system/Patient.rs",
        )
    })?;
    match context {
        "system" => {}
        "patient" | "user" => {
            return Err(invalid(
                token,
                format!(
                    "{context}/ scopes are for apps acting for a person; machine clients request \
                     system/ scopes"
                ),
            ));
        }
        _ => {
            return Err(invalid(
                token,
                "the context must be system/ (e.g. system/Patient.rs)",
            ));
        }
    }
    let (resource, permissions) = rest.split_once('.').ok_or_else(|| {
        invalid(
            token,
            "expected <ResourceType>.<permissions>, e.g. Patient.rs",
        )
    })?;
    let resource = match resource {
        "*" => None,
        name if is_known_type(name) => Some(name.to_owned()),
        "" => return Err(invalid(token, "the resource type is missing")),
        name => {
            return Err(invalid(
                token,
                format!("{name:?} is not a resource type this server knows"),
            ));
        }
    };
    let interactions = parse_permissions(token, permissions)?;
    Ok(Scope {
        resource,
        interactions,
    })
}

fn parse_permissions(token: &str, permissions: &str) -> Result<Interactions, ScopeError> {
    // SMART v1 forms.
    let v1 = match permissions {
        "read" => Some("rs"),
        "write" => Some("cud"),
        "*" => Some("cruds"),
        _ => None,
    };
    let letters = v1.unwrap_or(permissions);
    if letters.is_empty() {
        return Err(invalid(
            token,
            "no permissions given; use letters from c r u d s, e.g. .rs",
        ));
    }
    if letters.contains('?') {
        return Err(invalid(token, "scope parameters (?...) are not supported"));
    }
    let mut interactions = Interactions::default();
    let mut last_position = None;
    for letter in letters.chars() {
        let interaction = Interaction::from_letter(letter).ok_or_else(|| {
            invalid(
                token,
                format!("{letter:?} is not a permission; use letters from c r u d s"),
            )
        })?;
        let position = Interaction::ALL.iter().position(|i| *i == interaction);
        if position <= last_position {
            return Err(invalid(
                token,
                "permission letters must appear once each, in the order c r u d s (e.g. .cruds, .rs)",
            ));
        }
        last_position = position;
        interactions.0 |= interaction.bit();
    }
    Ok(interactions)
}

#[cfg(test)]
mod tests {
    use super::*;

    const TYPES: [&str; 4] = ["Patient", "Observation", "Encounter", "Condition"];

    fn known(name: &str) -> bool {
        TYPES.contains(&name)
    }

    fn parse(s: &str) -> Result<ScopeSet, ScopeError> {
        ScopeSet::parse(s, &known)
    }

    fn set(s: &str) -> ScopeSet {
        match parse(s) {
            Ok(set) => set,
            Err(error) => panic!("{s:?} should parse: {error}"),
        }
    }

    use Interaction::{Create, Delete, Read, Search, Update};

    #[test]
    fn parses_v2_scopes_and_allows_exactly_them() {
        let scopes = set("system/Patient.rs system/Observation.cruds");
        assert!(scopes.allows("Patient", Read));
        assert!(scopes.allows("Patient", Search));
        assert!(!scopes.allows("Patient", Create));
        assert!(!scopes.allows("Patient", Update));
        assert!(!scopes.allows("Patient", Delete));
        for interaction in Interaction::ALL {
            assert!(scopes.allows("Observation", interaction));
            assert!(!scopes.allows("Encounter", interaction));
        }
    }

    #[test]
    fn wildcard_allows_every_type() {
        let scopes = set("system/*.r");
        assert!(scopes.allows("Patient", Read));
        assert!(scopes.allows("Encounter", Read));
        assert!(!scopes.allows("Patient", Search));
    }

    #[test]
    fn v1_forms_translate() {
        assert_eq!(set("system/Patient.read"), set("system/Patient.rs"));
        assert_eq!(set("system/Patient.write"), set("system/Patient.cud"));
        assert_eq!(set("system/Patient.*"), set("system/Patient.cruds"));
        assert_eq!(set("system/*.read"), set("system/*.rs"));
    }

    #[test]
    fn bad_order_repeats_and_unknown_letters_refused() {
        for bad in [
            "system/Patient.sr",
            "system/Patient.rr",
            "system/Patient.rc",
            "system/Patient.sdurc",
            "system/Patient.rx",
            "system/Patient.",
            "system/Patient.R",
            "system/Patient.rs?category=x",
            "system/Patient.readwrite",
        ] {
            assert!(
                matches!(parse(bad), Err(ScopeError::Invalid { .. })),
                "{bad}"
            );
        }
    }

    #[test]
    fn unknown_type_and_other_contexts_refused() {
        assert!(parse("system/Spaceship.rs").is_err());
        assert!(
            parse("system/patient.rs").is_err(),
            "type names are case-sensitive"
        );
        assert!(parse("system/.rs").is_err());
        let message = parse("patient/Patient.rs")
            .map(|_| ())
            .err()
            .map(|e| e.to_string());
        assert!(message.is_some_and(|m| m.contains("system/")));
        assert!(parse("user/Observation.rs").is_err());
        assert!(parse("launch/patient").is_err());
        assert!(parse("openid").is_err());
        assert!(parse("system/Patient").is_err());
        // One bad scope spoils the request.
        assert!(parse("system/Patient.rs system/Spaceship.r").is_err());
    }

    #[test]
    fn empty_refused() {
        assert_eq!(parse(""), Err(ScopeError::Empty));
        assert_eq!(parse("   "), Err(ScopeError::Empty));
        assert!(ScopeSet::default().is_empty());
    }

    #[test]
    fn display_is_canonical_and_round_trips() {
        let scopes = set("system/Patient.s  system/Observation.cruds system/*.r system/Patient.r");
        assert_eq!(
            scopes.to_string(),
            "system/*.r system/Observation.cruds system/Patient.rs"
        );
        assert_eq!(set(&scopes.to_string()), scopes);
        assert_eq!(set("system/Patient.read").to_string(), "system/Patient.rs");
    }

    #[test]
    fn intersect_cuts_requests_down() {
        let requested = set("system/Patient.cruds system/Observation.rs");
        let registered = set("system/Patient.rs system/Encounter.r");
        assert_eq!(requested.intersect(&registered), set("system/Patient.rs"));
    }

    #[test]
    fn intersect_wildcard_both_ways() {
        // Requested wildcard, registered specific.
        let granted = set("system/*.rs").intersect(&set("system/Patient.r"));
        assert_eq!(granted.to_string(), "system/Patient.r");
        // Requested specific, registered wildcard.
        let granted = set("system/Patient.cruds").intersect(&set("system/*.rs"));
        assert_eq!(granted.to_string(), "system/Patient.rs");
        // Both wildcards.
        let granted = set("system/*.cruds").intersect(&set("system/*.r system/Patient.s"));
        assert_eq!(granted.to_string(), "system/*.r system/Patient.s");
        // Nothing in common.
        assert!(
            set("system/Patient.c")
                .intersect(&set("system/*.rs"))
                .is_empty()
        );
        assert!(
            set("system/Patient.rs")
                .intersect(&set("system/Observation.rs"))
                .is_empty()
        );
    }

    /// A small deterministic generator (xorshift), so the property below
    /// needs no extra dependency.
    struct Generator(u64);

    impl Generator {
        fn next(&mut self) -> u64 {
            self.0 ^= self.0 << 13;
            self.0 ^= self.0 >> 7;
            self.0 ^= self.0 << 17;
            self.0
        }

        fn scope_set(&mut self) -> ScopeSet {
            let resources = [
                None,
                Some("Patient"),
                Some("Observation"),
                Some("Encounter"),
            ];
            let mut set = ScopeSet::default();
            for resource in resources {
                if self.next().is_multiple_of(3) {
                    let bits = u8::try_from(self.next() % 32).unwrap_or(0);
                    set.add(resource.map(str::to_owned), Interactions(bits));
                }
            }
            set
        }
    }

    #[test]
    fn intersection_is_exactly_what_both_allow() {
        let mut generator = Generator(0x9E37_79B9_7F4A_7C15);
        let types = ["Patient", "Observation", "Encounter", "Condition"];
        for _ in 0..20_000 {
            let requested = generator.scope_set();
            let registered = generator.scope_set();
            let granted = requested.intersect(&registered);
            for resource_type in types {
                for interaction in Interaction::ALL {
                    let both = requested.allows(resource_type, interaction)
                        && registered.allows(resource_type, interaction);
                    assert_eq!(
                        granted.allows(resource_type, interaction),
                        both,
                        "{requested} ∩ {registered} = {granted}: {resource_type} {interaction:?}"
                    );
                }
            }
            // Canonical text parses back to the same set.
            if !granted.is_empty() {
                assert_eq!(set(&granted.to_string()), granted);
            }
        }
    }
}
