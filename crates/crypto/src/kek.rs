//! The key-encryption key: wraps per-tenant data and index keys.
//!
//! Behind [`KeyEncryptionKey`] so a PKCS#11 token can replace the file later.

use std::path::Path;

use aws_lc_rs::aead::LessSafeKey;
use aws_lc_rs::hmac;

use crate::error::CryptoError;
use crate::key_file;
use crate::primitives::to_hex;
use crate::sealing;
use crate::secret::{SECRET_KEY_LEN, SecretKey};

/// What a key-encryption key can do. Implementations never reveal their key.
pub trait KeyEncryptionKey: Send + Sync {
    /// Encrypts and authenticates `secret`, bound to `aad` (which is not stored).
    fn wrap(&self, secret: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError>;
    /// Reverses [`KeyEncryptionKey::wrap`]; wrong key, wrong `aad` or altered
    /// bytes give [`CryptoError::Integrity`].
    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError>;
    /// A stable, non-secret identifier of this key, to record which KEK
    /// wrapped what.
    fn key_id(&self) -> String;
}

const FILE_KIND: &str = "carevault-kek";
/// First byte of every wrapped key: the wrapping format.
const WRAP_FORMAT_V1: u8 = 1;

/// A 32-byte key-encryption key kept in a file apart from the database.
pub struct Kek {
    key: LessSafeKey,
    key_id: String,
}

impl Kek {
    /// Generates a new key and writes it to `path`, which must not exist yet.
    /// The file is created with mode 0o600.
    pub fn create_file(path: &Path) -> Result<Kek, CryptoError> {
        let secret = SecretKey::generate();
        key_file::create(path, FILE_KIND, secret.expose())?;
        Ok(Kek::from_secret(&secret))
    }

    /// Loads a key written by [`Kek::create_file`]. Refuses files that group
    /// or others can access, and files of another kind or version.
    pub fn load_file(path: &Path) -> Result<Kek, CryptoError> {
        let bytes = key_file::load(path, FILE_KIND)?;
        if bytes.len() != SECRET_KEY_LEN {
            return Err(CryptoError::KeyFile {
                path: path.to_path_buf(),
                reason: format!(
                    "holds {} key bytes where {SECRET_KEY_LEN} are expected; the file is \
                     damaged — restore it from backup",
                    bytes.len()
                ),
            });
        }
        let secret = SecretKey::from_bytes(&bytes)?;
        Ok(Kek::from_secret(&secret))
    }

    fn from_secret(secret: &SecretKey) -> Kek {
        // The id is a MAC of a fixed label: it identifies the key without
        // revealing anything about it.
        let id_key = hmac::Key::new(hmac::HMAC_SHA256, secret.expose());
        let tag = hmac::sign(&id_key, b"carevault kek key id v1");
        let key_id = format!("file:{}", to_hex(&tag.as_ref()[..8]));
        Kek {
            key: sealing::aes_key(secret),
            key_id,
        }
    }
}

impl KeyEncryptionKey for Kek {
    fn wrap(&self, secret: &SecretKey, aad: &[u8]) -> Result<Vec<u8>, CryptoError> {
        sealing::seal(&self.key, &[WRAP_FORMAT_V1], aad, secret.expose())
    }

    fn unwrap(&self, wrapped: &[u8], aad: &[u8]) -> Result<SecretKey, CryptoError> {
        let plaintext =
            zeroize::Zeroizing::new(sealing::open(&self.key, &[WRAP_FORMAT_V1], aad, wrapped)?);
        SecretKey::from_bytes(&plaintext).map_err(|_| CryptoError::Integrity)
    }

    fn key_id(&self) -> String {
        self.key_id.clone()
    }
}

impl std::fmt::Debug for Kek {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Kek")
            .field("key_id", &self.key_id)
            .field("key", &"[redacted]")
            .finish()
    }
}
