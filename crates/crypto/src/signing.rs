//! Ed25519 signing for audit checkpoints, backup manifests and journals.
//!
//! Key file: header `carevault-signing-key v1`, then the PKCS#8 v2 document in
//! base64. The private key lives inside AWS-LC, which wipes it on drop; the
//! PKCS#8 bytes pass only through zeroizing buffers.

use std::path::Path;

use aws_lc_rs::signature::{ED25519, Ed25519KeyPair, KeyPair, UnparsedPublicKey};
use zeroize::Zeroizing;

use crate::error::CryptoError;
use crate::key_file;

const FILE_KIND: &str = "carevault-signing-key";
pub const PUBLIC_KEY_LEN: usize = 32;
pub const SIGNATURE_LEN: usize = 64;

pub struct SigningKey {
    key_pair: Ed25519KeyPair,
}

impl SigningKey {
    /// Generates a new key and writes it to `path`, which must not exist yet
    /// (mode 0o600).
    pub fn create_file(path: &Path) -> Result<SigningKey, CryptoError> {
        let key_pair = Ed25519KeyPair::generate()
            .map_err(|_| CryptoError::InvalidKey("could not generate an Ed25519 key".into()))?;
        let document = key_pair
            .to_pkcs8()
            .map_err(|_| CryptoError::InvalidKey("could not encode the Ed25519 key".into()))?;
        let pkcs8 = Zeroizing::new(document.as_ref().to_vec());
        key_file::create(path, FILE_KIND, &pkcs8)?;
        Ok(SigningKey { key_pair })
    }

    /// Loads a key written by [`SigningKey::create_file`], with the same
    /// permission and format checks as the KEK.
    pub fn load_file(path: &Path) -> Result<SigningKey, CryptoError> {
        let pkcs8 = key_file::load(path, FILE_KIND)?;
        let key_pair = Ed25519KeyPair::from_pkcs8(&pkcs8).map_err(|_| CryptoError::KeyFile {
            path: path.to_path_buf(),
            reason: "does not hold a valid Ed25519 PKCS#8 v2 key; the file is damaged — \
                     restore it from backup"
                .into(),
        })?;
        Ok(SigningKey { key_pair })
    }

    #[must_use]
    pub fn sign(&self, msg: &[u8]) -> [u8; SIGNATURE_LEN] {
        let signature = self.key_pair.sign(msg);
        let mut out = [0u8; SIGNATURE_LEN];
        // Ed25519 signatures are always 64 bytes.
        out.copy_from_slice(signature.as_ref());
        out
    }

    #[must_use]
    pub fn verifying_key(&self) -> VerifyingKey {
        let mut bytes = [0u8; PUBLIC_KEY_LEN];
        // Ed25519 public keys are always 32 bytes.
        bytes.copy_from_slice(self.key_pair.public_key().as_ref());
        VerifyingKey { bytes }
    }
}

impl std::fmt::Debug for SigningKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("SigningKey([redacted])")
    }
}

/// An Ed25519 public key.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifyingKey {
    bytes: [u8; PUBLIC_KEY_LEN],
}

impl VerifyingKey {
    pub fn from_bytes(b: &[u8]) -> Result<Self, CryptoError> {
        let bytes: [u8; PUBLIC_KEY_LEN] = b.try_into().map_err(|_| {
            CryptoError::InvalidKey(format!(
                "an Ed25519 public key is {PUBLIC_KEY_LEN} bytes, got {}",
                b.len()
            ))
        })?;
        Ok(VerifyingKey { bytes })
    }

    #[must_use]
    pub fn to_bytes(&self) -> [u8; PUBLIC_KEY_LEN] {
        self.bytes
    }

    /// True only for a valid signature of exactly `msg` under this key.
    #[must_use]
    pub fn verify(&self, msg: &[u8], sig: &[u8]) -> bool {
        UnparsedPublicKey::new(&ED25519, &self.bytes)
            .verify(msg, sig)
            .is_ok()
    }
}
