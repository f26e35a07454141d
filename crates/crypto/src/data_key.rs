//! Versioned AES-256-GCM keys for resource bodies.
//!
//! Sealed format: `[format 1][key version u32 BE][nonce 12][ciphertext][tag 16]`.
//! The caller's associated data (tenant|type|id|version) is authenticated but
//! not stored; the format byte and key version are authenticated as well.

use aws_lc_rs::aead::LessSafeKey;

use crate::error::CryptoError;
use crate::sealing;
use crate::secret::SecretKey;

const SEAL_FORMAT_V1: u8 = 1;
const HEADER_LEN: usize = 5;

/// A data key of one version. The AES key lives inside AWS-LC and is wiped
/// when this value is dropped.
pub struct DataKey {
    version: u32,
    key: LessSafeKey,
}

fn header(version: u32) -> [u8; HEADER_LEN] {
    let [a, b, c, d] = version.to_be_bytes();
    [SEAL_FORMAT_V1, a, b, c, d]
}

impl DataKey {
    #[must_use]
    pub fn new(version: u32, key: SecretKey) -> DataKey {
        DataKey {
            version,
            key: sealing::aes_key(&key),
        }
    }

    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Encrypts and authenticates `plaintext`, bound to `aad`.
    pub fn seal(&self, aad: &[u8], plaintext: &[u8]) -> Result<Vec<u8>, CryptoError> {
        sealing::seal(&self.key, &header(self.version), aad, plaintext)
    }

    /// Reverses [`DataKey::seal`]. Any failure, including a sealed value of
    /// another key version, is [`CryptoError::Integrity`].
    pub fn open(&self, aad: &[u8], sealed: &[u8]) -> Result<Vec<u8>, CryptoError> {
        sealing::open(&self.key, &header(self.version), aad, sealed)
    }
}

/// The key version a sealed value names, so the caller can pick that key.
/// Unauthenticated until [`DataKey::open`] succeeds.
pub fn sealed_key_version(sealed: &[u8]) -> Result<u32, CryptoError> {
    match sealed {
        [SEAL_FORMAT_V1, a, b, c, d, ..] => Ok(u32::from_be_bytes([*a, *b, *c, *d])),
        _ => Err(CryptoError::Integrity),
    }
}

impl std::fmt::Debug for DataKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("DataKey")
            .field("version", &self.version)
            .field("key", &"[redacted]")
            .finish()
    }
}
