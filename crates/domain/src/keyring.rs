//! Tenant keys: generated at tenant creation, stored only wrapped by the key-encryption key,
//! unwrapped on first use and kept in memory for the life of the process.

use std::collections::HashMap;
use std::sync::{Arc, RwLock};

use carevault_crypto::{CryptoError, DataKey, IndexKey, KeyEncryptionKey, SecretKey};

use crate::ids::TenantId;
use crate::store::{KeyPurpose, Store, StoreError, WrappedKey};

#[derive(Debug, thiserror::Error)]
pub enum KeyError {
    #[error("tenant {0} has no usable {1} key")]
    Missing(TenantId, &'static str),
    #[error("a tenant key could not be unwrapped: {0}")]
    Unwrap(#[from] CryptoError),
    #[error(transparent)]
    Store(#[from] StoreError),
}

/// One tenant's unwrapped keys. Data keys by version (every version stays readable until
/// re-sealing ends); the newest seals. One index key (rotation re-indexes).
pub struct TenantKeys {
    data: Vec<DataKey>,
    index: IndexKey,
}

impl TenantKeys {
    pub fn sealing_key(&self) -> &DataKey {
        // The constructor refuses an empty list, so there is always a last key.
        &self.data[self.data.len() - 1]
    }

    pub fn data_key(&self, version: u32) -> Option<&DataKey> {
        self.data.iter().find(|key| key.version() == version)
    }

    pub fn index_key(&self) -> &IndexKey {
        &self.index
    }
}

fn wrap_aad(tenant: TenantId, purpose: KeyPurpose, version: u32) -> Vec<u8> {
    format!(
        "carevault/tenant-key/v1|{tenant}|{}|{version}",
        purpose.as_str()
    )
    .into_bytes()
}

pub struct Keyring {
    kek: Arc<dyn KeyEncryptionKey>,
    store: Arc<dyn Store>,
    cache: RwLock<HashMap<TenantId, Arc<TenantKeys>>>,
}

impl Keyring {
    pub fn new(kek: Arc<dyn KeyEncryptionKey>, store: Arc<dyn Store>) -> Keyring {
        Keyring {
            kek,
            store,
            cache: RwLock::new(HashMap::new()),
        }
    }

    /// Fresh version-1 data and index keys for a new tenant, wrapped for storage.
    pub fn new_tenant_keys(
        &self,
        tenant: TenantId,
        now_ms: i64,
    ) -> Result<Vec<WrappedKey>, KeyError> {
        [KeyPurpose::Data, KeyPurpose::Index]
            .into_iter()
            .map(|purpose| {
                let wrapped = self
                    .kek
                    .wrap(&SecretKey::generate(), &wrap_aad(tenant, purpose, 1))?;
                Ok(WrappedKey {
                    tenant,
                    purpose,
                    version: 1,
                    wrapped,
                    kek_id: self.kek.key_id(),
                    created_ms: now_ms,
                })
            })
            .collect()
    }

    pub async fn keys(&self, tenant: TenantId) -> Result<Arc<TenantKeys>, KeyError> {
        if let Some(keys) = self.read_cache(tenant) {
            return Ok(keys);
        }
        let mut wrapped = self.store.tenant_keys(tenant).await?;
        wrapped.sort_by_key(|key| key.version);
        let mut data = Vec::new();
        let mut index = None;
        for key in &wrapped {
            let secret = self
                .kek
                .unwrap(&key.wrapped, &wrap_aad(tenant, key.purpose, key.version))?;
            match key.purpose {
                KeyPurpose::Data => data.push(DataKey::new(key.version, secret)),
                KeyPurpose::Index => index = Some(IndexKey::new(key.version, secret)),
            }
        }
        if data.is_empty() {
            return Err(KeyError::Missing(tenant, "data"));
        }
        let index = index.ok_or(KeyError::Missing(tenant, "index"))?;
        let keys = Arc::new(TenantKeys { data, index });
        if let Ok(mut cache) = self.cache.write() {
            cache.insert(tenant, keys.clone());
        }
        Ok(keys)
    }

    fn read_cache(&self, tenant: TenantId) -> Option<Arc<TenantKeys>> {
        self.cache.read().ok()?.get(&tenant).cloned()
    }
}
