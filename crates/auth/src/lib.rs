//! carevault-auth: the authentication primitives. Pure: no storage, no
//! HTTP, no clock.
//!
//! - [`password`]: Argon2id hashing and the policy for new passwords.
//! - [`totp`]: RFC 6238 codes, accepted once per time step.
//! - [`recovery`]: single-use recovery codes, stored hashed.
//! - [`passkeys`]: WebAuthn passkeys with user verification required.
//! - [`throttle`]: growing delays after failures (no lockout).
//! - SMART Backend Services client assertions (`private_key_jwt`), below.
//!
//! Client-assertion guarantees:
//! - Only RS384 and ES384 assertions are accepted, only against the public
//!   keys a client registered ([`ClientJwks`]); `none`, HMAC and every other
//!   algorithm are refused before any key is touched, so a public key can
//!   never be used as an HMAC secret.
//! - No claim is trusted before the signature checks out, except the issuer
//!   read by [`unverified_issuer`] to find which client's keys to use.
//! - Time is an input: every check uses the `now` passed in; nothing here
//!   reads the clock.
//! - `jti` replay is the caller's job (it needs storage): [`VerifiedAssertion`]
//!   gives the `jti` and expiry to remember.

mod assertion;
mod error;
mod jwks;
pub mod passkeys;
pub mod password;
mod people;
pub mod recovery;
pub mod totp;
mod verifier;

pub use assertion::{
    MAX_ASSERTION_LIFETIME_SECONDS, MAX_CLOCK_SKEW_SECONDS, VerifiedAssertion, unverified_issuer,
    verify_client_assertion,
};
pub use error::AssertionError;
pub use jwks::ClientJwks;
pub use passkeys::{AuthenticatedPasskey, PasskeyError, Passkeys, StoredPasskey};
pub use password::{
    PasswordError, PasswordParams, PasswordRejection, check_new_password, dummy_verify,
    hash_password, needs_rehash, verify_password,
};
pub use people::PeopleCredentials;
pub use recovery::{RecoveryError, find_recovery_code, generate_recovery_codes};
pub use totp::{TotpError, TotpSecret, otpauth_url, qr_svg, verify_totp};
pub use verifier::SmartVerifier;

/// Installs jsonwebtoken's AWS-LC crypto provider for this process.
///
/// jsonwebtoken panics at run time unless exactly one provider is available;
/// the server calls this at start-up, and verification calls it too so a
/// forgotten call cannot become a panic. Calling it again does nothing.
pub fn install_crypto_provider() {
    use jsonwebtoken::crypto::{CryptoProvider, aws_lc};
    // An error only means a provider is already installed, which is the
    // state we want.
    let _already_installed = CryptoProvider::install_default(&aws_lc::DEFAULT_PROVIDER);
}
