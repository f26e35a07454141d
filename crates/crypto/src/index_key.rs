//! Versioned HMAC-SHA256 keys for blind indexes and for MACs over values the
//! server hands out and later takes back (paging cursors and the like).
//!
//! Blind tokens use the key directly; [`IndexKey::mac`] uses a subkey derived
//! with HKDF from a label, so a MAC made for one purpose is never valid for
//! another, nor equal to any blind token.

use aws_lc_rs::{hkdf, hmac};

use crate::secret::SecretKey;

/// HKDF salt for MAC subkeys; fixed, public, versioned.
const MAC_SUBKEY_SALT: &[u8] = b"carevault index-key mac subkey v1";
const BLIND_TOKEN_LEN: usize = 16;

pub struct IndexKey {
    version: u32,
    blind: hmac::Key,
    /// Kept (zeroizing) to derive per-label MAC subkeys.
    secret: SecretKey,
}

impl IndexKey {
    #[must_use]
    pub fn new(version: u32, key: SecretKey) -> IndexKey {
        let blind = hmac::Key::new(hmac::HMAC_SHA256, key.expose());
        IndexKey {
            version,
            blind,
            secret: key,
        }
    }

    #[must_use]
    pub fn version(&self) -> u32 {
        self.version
    }

    /// `HMAC(key, param || 0x00 || term)` truncated to 16 bytes. Deterministic,
    /// so equal (param, term) pairs give equal tokens under the same key.
    /// `param` is a search-parameter name and must not contain NUL (which
    /// keeps the encoding unambiguous); `term` is normalised by the caller.
    #[must_use]
    pub fn blind_token(&self, param: &str, term: &str) -> [u8; BLIND_TOKEN_LEN] {
        let mut context = hmac::Context::with_key(&self.blind);
        context.update(param.as_bytes());
        context.update(&[0]);
        context.update(term.as_bytes());
        let tag = context.sign();
        let mut out = [0u8; BLIND_TOKEN_LEN];
        // An HMAC-SHA256 tag is 32 bytes, longer than the 16 taken.
        out.copy_from_slice(&tag.as_ref()[..BLIND_TOKEN_LEN]);
        out
    }

    /// Full 32-byte `HMAC(subkey(label), data)`.
    #[must_use]
    pub fn mac(&self, label: &str, data: &[u8]) -> [u8; 32] {
        let tag = hmac::sign(&self.subkey(label), data);
        let mut out = [0u8; 32];
        // An HMAC-SHA256 tag is exactly 32 bytes.
        out.copy_from_slice(tag.as_ref());
        out
    }

    /// Checks a tag made by [`IndexKey::mac`] in constant time. Truncated or
    /// over-long tags are refused.
    #[must_use]
    pub fn verify_mac(&self, label: &str, data: &[u8], tag: &[u8]) -> bool {
        hmac::verify(&self.subkey(label), data, tag).is_ok()
    }

    fn subkey(&self, label: &str) -> hmac::Key {
        let prk = hkdf::Salt::new(hkdf::HKDF_SHA256, MAC_SUBKEY_SALT).extract(self.secret.expose());
        let info = [label.as_bytes()];
        match prk.expand(&info, hmac::HMAC_SHA256) {
            Ok(okm) => hmac::Key::from(okm),
            // HKDF-SHA256 can produce up to 8160 bytes; a 32-byte key never fails.
            Err(_) => unreachable!("HKDF expand to 32 bytes cannot fail"),
        }
    }
}

impl std::fmt::Debug for IndexKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("IndexKey")
            .field("version", &self.version)
            .field("key", &"[redacted]")
            .finish()
    }
}
