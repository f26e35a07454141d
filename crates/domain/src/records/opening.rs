//! Opening sealed resource versions: the additional data each seal is bound to, and the checks
//! an opened body must pass before anyone sees it.

use carevault_crypto::CryptoError;
use carevault_fhir::ResourceType;
use serde_json::Value;

use super::{RecordError, Records, ResourceBody, ResourceView, body};
use crate::keyring::TenantKeys;
use crate::principal::{Principal, TenantScope};
use crate::store::StoredVersion;

/// The additional authenticated data of a sealed body: its tenant, type, id and version, so a
/// body moved to another row does not open.
pub(crate) fn resource_aad(
    scope: &TenantScope,
    resource_type: &str,
    id: &str,
    version: i64,
) -> Vec<u8> {
    format!(
        "carevault/resource/v1\u{0}{}\u{0}{resource_type}\u{0}{id}\u{0}{version}",
        scope.tenant()
    )
    .into_bytes()
}

impl Records {
    /// Opens a version and checks the principal's relationship to its patients: a resource
    /// outside the principal's reach is answered exactly like one that does not exist.
    pub(crate) fn open_within_reach(
        &self,
        principal: &Principal,
        keys: &TenantKeys,
        rt: ResourceType,
        stored: &StoredVersion,
    ) -> Result<ResourceView, RecordError> {
        // When the data subjects do not depend on the content (a Patient), the reach check and
        // the audit need no parsed body: it stays text, sent as stored.
        let parse = carevault_fhir::data_subjects_without_body(rt, &stored.id).is_none();
        let view = self.open_as(keys, principal.scope(), rt, stored, parse)?;
        if principal.access().reaches(&view.subjects()) {
            Ok(view)
        } else {
            Err(RecordError::NotFound)
        }
    }

    /// Opens a sealed version, its body parsed. Any failure to open (a flipped byte, a body
    /// moved from another row or tenant) is an integrity failure: logged for the operator, never
    /// returned as data.
    pub(crate) fn open(
        &self,
        keys: &TenantKeys,
        scope: &TenantScope,
        rt: ResourceType,
        stored: &StoredVersion,
    ) -> Result<ResourceView, RecordError> {
        self.open_as(keys, scope, rt, stored, true)
    }

    /// [`Records::open`], leaving the body unparsed when `parse` is false: its text is then
    /// checked to be JSON naming this type and id, and parsed only if someone asks for the
    /// parsed form.
    fn open_as(
        &self,
        keys: &TenantKeys,
        scope: &TenantScope,
        rt: ResourceType,
        stored: &StoredVersion,
        parse: bool,
    ) -> Result<ResourceView, RecordError> {
        if stored.deleted {
            return Ok(ResourceView {
                resource_type: rt,
                id: stored.id.clone(),
                version: stored.version,
                last_updated_ms: stored.last_updated_ms,
                body: None,
            });
        }
        let opened = carevault_crypto::sealed_key_version(&stored.body)
            .and_then(|version| {
                keys.data_key(version)
                    .ok_or(CryptoError::UnknownKeyVersion(version))
            })
            .and_then(|key| {
                key.open(
                    &resource_aad(scope, &stored.resource_type, &stored.id, stored.version),
                    &stored.body,
                )
            });
        let body = opened.ok().and_then(|plaintext| {
            if parse {
                let value = serde_json::from_slice::<Value>(&plaintext)
                    .ok()
                    .filter(|body| {
                        body.get("resourceType").and_then(Value::as_str) == Some(rt.name())
                            && body.get("id").and_then(Value::as_str) == Some(stored.id.as_str())
                    })?;
                let text = String::from_utf8(plaintext).ok()?;
                Some(ResourceBody::from_both(text, value))
            } else {
                if !body::identity(&plaintext, rt.name(), &stored.id) {
                    return None;
                }
                String::from_utf8(plaintext)
                    .ok()
                    .map(ResourceBody::from_text)
            }
        });
        let Some(body) = body else {
            tracing::error!(
                tenant = %scope.tenant(),
                resource_type = %stored.resource_type,
                id = %stored.id,
                version = stored.version,
                "integrity failure: a sealed resource body did not open; it was changed or moved"
            );
            return Err(RecordError::Integrity);
        };
        Ok(ResourceView {
            resource_type: rt,
            id: stored.id.clone(),
            version: stored.version,
            last_updated_ms: stored.last_updated_ms,
            body: Some(body),
        })
    }
}
