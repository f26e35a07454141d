//! AES-256-GCM with a random 96-bit nonce, shared by data keys and the KEK.
//!
//! Layout: `header || nonce (12) || ciphertext || tag (16)`. The header is
//! authenticated together with the caller's associated data, so changing the
//! format byte or key version breaks authentication too.
//!
//! Random nonces are safe for up to about 2^32 seals per key; key rotation
//! keeps every key far below that.

use aws_lc_rs::aead::{AES_256_GCM, Aad, LessSafeKey, NONCE_LEN, Nonce, UnboundKey};

use crate::error::CryptoError;
use crate::primitives::random_bytes;
use crate::secret::SecretKey;

pub(crate) const TAG_LEN: usize = 16;

/// Builds an AES-256-GCM key; AWS-LC wipes its copy when the key is dropped.
pub(crate) fn aes_key(secret: &SecretKey) -> LessSafeKey {
    match UnboundKey::new(&AES_256_GCM, secret.expose()) {
        Ok(key) => LessSafeKey::new(key),
        // A SecretKey is always 32 bytes, exactly the AES-256 key length.
        Err(_) => unreachable!("a 32-byte key is a valid AES-256 key"),
    }
}

fn associated_data(header: &[u8], aad: &[u8]) -> Vec<u8> {
    let mut combined = Vec::with_capacity(header.len() + aad.len());
    combined.extend_from_slice(header);
    combined.extend_from_slice(aad);
    combined
}

pub(crate) fn seal(
    key: &LessSafeKey,
    header: &[u8],
    aad: &[u8],
    plaintext: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    let nonce_bytes: [u8; NONCE_LEN] = random_bytes();
    let mut out = Vec::with_capacity(header.len() + NONCE_LEN + plaintext.len() + TAG_LEN);
    out.extend_from_slice(header);
    out.extend_from_slice(&nonce_bytes);
    let body_start = out.len();
    out.extend_from_slice(plaintext);
    let tag = key
        .seal_in_place_separate_tag(
            Nonce::assume_unique_for_key(nonce_bytes),
            Aad::from(associated_data(header, aad)),
            &mut out[body_start..],
        )
        // Sealing only fails for inputs beyond AES-GCM's 64 GiB limit.
        .map_err(|_| CryptoError::Integrity)?;
    out.extend_from_slice(tag.as_ref());
    Ok(out)
}

/// Opens `sealed`, whose first `header.len()` bytes must equal `header`.
/// Every failure is [`CryptoError::Integrity`].
pub(crate) fn open(
    key: &LessSafeKey,
    header: &[u8],
    aad: &[u8],
    sealed: &[u8],
) -> Result<Vec<u8>, CryptoError> {
    if sealed.len() < header.len() + NONCE_LEN + TAG_LEN || !sealed.starts_with(header) {
        return Err(CryptoError::Integrity);
    }
    let (nonce_bytes, body) = sealed[header.len()..].split_at(NONCE_LEN);
    let nonce =
        Nonce::try_assume_unique_for_key(nonce_bytes).map_err(|_| CryptoError::Integrity)?;
    let mut in_out = body.to_vec();
    let plaintext_len = key
        .open_in_place(nonce, Aad::from(associated_data(header, aad)), &mut in_out)
        .map_err(|_| CryptoError::Integrity)?
        .len();
    in_out.truncate(plaintext_len);
    Ok(in_out)
}
