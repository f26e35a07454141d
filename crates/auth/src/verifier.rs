//! The domain's [`AssertionVerifier`], backed by this crate's JWT checks.

use carevault_domain::access::AssertionVerifier;

use crate::{ClientJwks, unverified_issuer, verify_client_assertion};

/// SMART Backend Services assertion checks (`private_key_jwt`, RS384/ES384).
pub struct SmartVerifier;

impl AssertionVerifier for SmartVerifier {
    fn unverified_issuer(&self, assertion: &str) -> Result<String, String> {
        unverified_issuer(assertion).map_err(|error| error.to_string())
    }

    fn verify(
        &self,
        assertion: &str,
        client_id: &str,
        jwks: &str,
        token_url: &str,
        now_s: i64,
    ) -> Result<(String, i64), String> {
        let jwks = ClientJwks::parse(jwks).map_err(|error| error.to_string())?;
        let verified = verify_client_assertion(assertion, client_id, &jwks, token_url, now_s)
            .map_err(|error| error.to_string())?;
        Ok((verified.jti().to_owned(), verified.expires_at()))
    }

    fn canonical_jwks(&self, jwks: &str) -> Result<String, String> {
        ClientJwks::parse(jwks)
            .map(|jwks| jwks.to_json())
            .map_err(|error| error.to_string())
    }
}
