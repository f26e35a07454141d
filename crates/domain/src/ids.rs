//! Identifiers. Each is a newtype with a private field and no `Default`, so an id of one kind
//! cannot be passed where another is expected, and none can be made up from nothing.

use std::fmt;

use uuid::Uuid;

/// A customer organisation. The nil UUID is reserved for the platform's own audit chain.
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct TenantId(Uuid);

impl TenantId {
    pub fn generate() -> TenantId {
        TenantId(Uuid::new_v4())
    }

    /// The platform pseudo-tenant: records about actions that belong to no customer.
    pub fn platform() -> TenantId {
        TenantId(Uuid::nil())
    }

    pub fn parse(text: &str) -> Option<TenantId> {
        Uuid::parse_str(text).ok().map(TenantId)
    }

    pub fn from_uuid(uuid: Uuid) -> TenantId {
        TenantId(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }

    pub fn is_platform(&self) -> bool {
        self.0.is_nil()
    }
}

impl fmt::Display for TenantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

/// A FHIR logical id: `[A-Za-z0-9\-\.]{1,64}`.
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ResourceId(String);

impl ResourceId {
    pub fn parse(text: &str) -> Option<ResourceId> {
        let valid = !text.is_empty()
            && text.len() <= 64
            && text
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'.');
        valid.then(|| ResourceId(text.to_owned()))
    }

    /// A new server-assigned id: a UUIDv7, whose leading bits are the creation time in
    /// milliseconds and the rest random. Time-ordered ids make every index keyed by id grow at
    /// its right edge, so an import writes a few pages per index rather than one random page
    /// per resource. The cost, accepted in the threat model: an id tells when its resource was
    /// created (version 1's `meta.lastUpdated` tells any reader the same).
    pub fn generate() -> ResourceId {
        ResourceId(Uuid::now_v7().to_string())
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ResourceId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A machine client's id (`iss`/`sub` of its assertions).
#[derive(Clone, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct ClientId(String);

impl ClientId {
    pub fn generate() -> ClientId {
        ClientId(Uuid::new_v4().to_string())
    }

    pub fn parse(text: &str) -> Option<ClientId> {
        Uuid::parse_str(text).ok().map(|u| ClientId(u.to_string()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for ClientId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// A person with an account (staff of a tenant, or supplier staff).
#[derive(Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Debug)]
pub struct PersonId(Uuid);

impl PersonId {
    pub fn generate() -> PersonId {
        PersonId(Uuid::new_v4())
    }

    pub fn parse(text: &str) -> Option<PersonId> {
        Uuid::parse_str(text).ok().map(PersonId)
    }

    pub fn from_uuid(uuid: Uuid) -> PersonId {
        PersonId(uuid)
    }

    pub fn as_uuid(&self) -> Uuid {
        self.0
    }
}

impl fmt::Display for PersonId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        self.0.fmt(f)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resource_ids_follow_the_fhir_rule() {
        assert!(ResourceId::parse("abc-123.x").is_some());
        assert!(ResourceId::parse("").is_none());
        assert!(ResourceId::parse("a/b").is_none());
        assert!(ResourceId::parse(&"a".repeat(65)).is_none());
        assert!(ResourceId::parse(&"a".repeat(64)).is_some());
    }

    #[test]
    fn generated_resource_ids_are_distinct_and_in_creation_order() {
        let ids: Vec<String> = (0..2_000)
            .map(|_| ResourceId::generate().as_str().to_owned())
            .collect();
        let mut ordered = ids.clone();
        ordered.sort();
        ordered.dedup();
        assert_eq!(ordered, ids);
        assert!(ids.iter().all(|id| ResourceId::parse(id).is_some()));
    }

    #[test]
    fn client_ids_are_uuids() {
        assert!(ClientId::parse("not-a-uuid").is_none());
        let id = ClientId::generate();
        assert_eq!(ClientId::parse(id.as_str()), Some(id));
    }
}
