//! carevault-crypto: the only place key material is handled.
//!
//! Guarantees:
//! - Secret key bytes live in zeroizing buffers (or inside AWS-LC, which wipes
//!   freed key structures) and no secret type prints its bytes: where a secret
//!   type has `Debug`, it prints `[redacted]`.
//! - Sealed bodies are authenticated: any change to the ciphertext, its header,
//!   the caller's associated data or the key makes opening fail with
//!   [`CryptoError::Integrity`], never with partial plaintext.
//! - Key files are created new (never overwritten) with mode 0o600 and are
//!   refused on load when group or others have any permission bit.
//! - No function here reads the clock.

mod data_key;
mod error;
mod index_key;
mod kek;
mod key_file;
mod primitives;
mod sealing;
mod secret;
mod signing;

pub use data_key::{DataKey, sealed_key_version};
pub use error::CryptoError;
pub use index_key::IndexKey;
pub use kek::{Kek, KeyEncryptionKey};
pub use primitives::{constant_time_eq, random_bytes, sha256, sha256_parts};
pub use secret::SecretKey;
pub use signing::{SigningKey, VerifyingKey};
