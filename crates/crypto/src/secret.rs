//! [`SecretKey`]: 32 secret bytes that are wiped on drop and never printed.

use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::primitives::fill_random;

/// Length of every symmetric key in carevault (AES-256, HMAC-SHA256 keys).
pub(crate) const SECRET_KEY_LEN: usize = 32;

/// 32 random secret bytes. No `Debug`, no `Clone`: the only ways to see the
/// bytes are to wrap them under a key-encryption key or to hand them to a
/// [`crate::DataKey`] / [`crate::IndexKey`]. Wiped on drop.
pub struct SecretKey {
    bytes: Zeroizing<[u8; SECRET_KEY_LEN]>,
}

impl SecretKey {
    /// A fresh key from the system random generator.
    #[must_use]
    pub fn generate() -> SecretKey {
        let mut bytes = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        fill_random(bytes.as_mut_slice());
        SecretKey { bytes }
    }

    /// Copies exactly 32 bytes into a new key. The caller remains responsible
    /// for wiping its own copy.
    pub fn from_bytes(bytes: &[u8]) -> Result<SecretKey, CryptoError> {
        if bytes.len() != SECRET_KEY_LEN {
            return Err(CryptoError::InvalidKey(format!(
                "a secret key is {SECRET_KEY_LEN} bytes, got {}",
                bytes.len()
            )));
        }
        let mut key = Zeroizing::new([0u8; SECRET_KEY_LEN]);
        key.copy_from_slice(bytes);
        Ok(SecretKey { bytes: key })
    }

    /// Declassifies the key bytes. Crate-private on purpose: only the
    /// primitives in this crate may read them, to build cipher and MAC keys.
    pub(crate) fn expose(&self) -> &[u8; SECRET_KEY_LEN] {
        &self.bytes
    }
}

impl std::fmt::Debug for SecretKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SecretKey([redacted])")
    }
}
