//! Verification of a SMART Backend Services client assertion (RFC 7523
//! `private_key_jwt` as profiled by SMART App Launch v2).

use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, Validation};
use serde::Deserialize;
use serde::de::{self, Deserializer, Visitor};
use serde_json::Value;

use crate::error::AssertionError;
use crate::jwks::ClientJwks;

/// An assertion may expire at most this far after `now` (SMART: 5 minutes).
pub const MAX_ASSERTION_LIFETIME_SECONDS: i64 = 300;
/// How far in the future `nbf` and `iat` may be, for clock skew.
pub const MAX_CLOCK_SKEW_SECONDS: i64 = 60;
/// Tolerance after `exp`: none.
const EXPIRY_LEEWAY_SECONDS: i64 = 0;
const MAX_JTI_CHARS: usize = 256;
/// Far above any real assertion; bounds the work done on hostile input.
const MAX_ASSERTION_LEN: usize = 16 * 1024;

/// Claims of an assertion whose signature and claims have been checked.
/// Only [`verify_client_assertion`] builds one.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct VerifiedAssertion {
    client_id: String,
    jti: String,
    expires_at: i64,
}

impl VerifiedAssertion {
    #[must_use]
    pub fn client_id(&self) -> &str {
        &self.client_id
    }

    /// The assertion id; remember it until [`VerifiedAssertion::expires_at`]
    /// to refuse replays.
    #[must_use]
    pub fn jti(&self) -> &str {
        &self.jti
    }

    /// `exp`, in unix seconds.
    #[must_use]
    pub fn expires_at(&self) -> i64 {
        self.expires_at
    }
}

/// The JWS header members we act on.
struct AssertionHeader {
    algorithm: Algorithm,
    kid: Option<String>,
}

/// Claims as sent. Unknown claims are ignored (RFC 7519 allows them).
#[derive(Deserialize)]
struct RawClaims {
    iss: Option<String>,
    sub: Option<String>,
    aud: Option<Value>,
    exp: Option<NumericDate>,
    nbf: Option<NumericDate>,
    iat: Option<NumericDate>,
    jti: Option<String>,
}

#[derive(Deserialize)]
struct IssuerOnly {
    iss: Option<Value>,
}

/// A JWT NumericDate in whole seconds. Integers are taken as they are;
/// fractional values are rounded down (RFC 7519 allows them).
///
/// Deserialised through `deserialize_i64`, which serde_json serves with plain
/// numbers even when `arbitrary_precision` is on (where `deserialize_any`
/// would hand over a private map instead).
struct NumericDate(i64);

impl<'de> Deserialize<'de> for NumericDate {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        struct NumericDateVisitor;

        impl Visitor<'_> for NumericDateVisitor {
            type Value = NumericDate;

            fn expecting(&self, formatter: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
                formatter.write_str("a NumericDate (seconds since 1970 as a JSON number)")
            }

            fn visit_i64<E: de::Error>(self, value: i64) -> Result<NumericDate, E> {
                Ok(NumericDate(value))
            }

            fn visit_u64<E: de::Error>(self, value: u64) -> Result<NumericDate, E> {
                i64::try_from(value)
                    .map(NumericDate)
                    .map_err(|_| E::custom("NumericDate out of range"))
            }

            fn visit_f64<E: de::Error>(self, value: f64) -> Result<NumericDate, E> {
                // i64::MAX as f64 rounds up to 2^63, so compare with `<`.
                if value.is_finite() && value >= i64::MIN as f64 && value < i64::MAX as f64 {
                    // In range and finite: the cast is exact after floor.
                    Ok(NumericDate(value.floor() as i64))
                } else {
                    Err(E::custom("NumericDate out of range"))
                }
            }
        }

        deserializer.deserialize_i64(NumericDateVisitor)
    }
}

fn malformed(reason: impl Into<String>) -> AssertionError {
    AssertionError::Malformed(reason.into())
}

fn claims_error(reason: impl Into<String>) -> AssertionError {
    AssertionError::Claims(reason.into())
}

/// Splits a compact JWS into its three parts.
fn split(assertion: &str) -> Result<[&str; 3], AssertionError> {
    if assertion.len() > MAX_ASSERTION_LEN {
        return Err(malformed(format!("longer than {MAX_ASSERTION_LEN} bytes")));
    }
    let mut parts = assertion.split('.');
    match (parts.next(), parts.next(), parts.next(), parts.next()) {
        (Some(header), Some(payload), Some(signature), None) => Ok([header, payload, signature]),
        _ => Err(malformed("a JWT has exactly three dot-separated parts")),
    }
}

fn decode_json_part(part: &str, name: &str) -> Result<Vec<u8>, AssertionError> {
    URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| malformed(format!("the {name} is not base64url without padding")))
}

fn parse_header(part: &str) -> Result<AssertionHeader, AssertionError> {
    let bytes = decode_json_part(part, "header")?;
    let header: Value = serde_json::from_slice(&bytes)
        .map_err(|error| malformed(format!("the header is not valid JSON: {error}")))?;
    let header = header
        .as_object()
        .ok_or_else(|| malformed("the header is not a JSON object"))?;
    let algorithm = match header.get("alg") {
        Some(Value::String(alg)) if alg == "RS384" => Algorithm::RS384,
        Some(Value::String(alg)) if alg == "ES384" => Algorithm::ES384,
        Some(Value::String(alg)) => {
            return Err(AssertionError::UnsupportedAlgorithm(format!(
                "alg {alg:?} is not accepted; sign client assertions with RS384 or ES384"
            )));
        }
        _ => return Err(malformed("the header has no alg")),
    };
    if header.contains_key("crit") {
        return Err(malformed(
            "critical header extensions (crit) are not supported",
        ));
    }
    let kid = match header.get("kid") {
        None => None,
        Some(Value::String(kid)) => Some(kid.clone()),
        Some(_) => return Err(malformed("kid must be a string")),
    };
    Ok(AssertionHeader { algorithm, kid })
}

/// Reads `iss` without verifying anything, only to find which client's keys
/// to verify with. Never trust it beyond that.
pub fn unverified_issuer(assertion: &str) -> Result<String, AssertionError> {
    let [_, payload, _] = split(assertion)?;
    let bytes = decode_json_part(payload, "payload")?;
    let claims: IssuerOnly = serde_json::from_slice(&bytes)
        .map_err(|error| malformed(format!("the payload is not a JSON object: {error}")))?;
    match claims.iss {
        Some(Value::String(iss)) if !iss.is_empty() => Ok(iss),
        Some(_) => Err(malformed("iss must be a non-empty string")),
        None => Err(malformed("iss is missing")),
    }
}

/// Verifies a client assertion for `client_id` against its registered keys.
/// `token_url` is this server's token endpoint; `now` is unix seconds.
///
/// The signature is checked first; no claim influences anything before that.
pub fn verify_client_assertion(
    assertion: &str,
    client_id: &str,
    jwks: &ClientJwks,
    token_url: &str,
    now: i64,
) -> Result<VerifiedAssertion, AssertionError> {
    crate::install_crypto_provider();

    let [header_part, _, signature_part] = split(assertion)?;
    let header = parse_header(header_part)?;
    if signature_part.is_empty() {
        return Err(AssertionError::BadSignature);
    }
    let claims = verify_signature(assertion, &header, jwks)?;
    check_claims(claims, client_id, token_url, now)
}

fn verify_signature(
    assertion: &str,
    header: &AssertionHeader,
    jwks: &ClientJwks,
) -> Result<RawClaims, AssertionError> {
    // jsonwebtoken checks only the signature and the algorithm; its own time
    // checks read the system clock, so every claim is checked below instead.
    let mut validation = Validation::new(header.algorithm);
    validation.required_spec_claims.clear();
    validation.validate_exp = false;
    validation.validate_nbf = false;
    validation.validate_aud = false;
    validation.leeway = 0;

    for key in jwks.candidates(header.algorithm, header.kid.as_deref())? {
        match jsonwebtoken::decode::<RawClaims>(assertion, &key.decoding_key(), &validation) {
            Ok(token) => return Ok(token.claims),
            Err(error) => match error.kind() {
                ErrorKind::InvalidSignature
                | ErrorKind::InvalidEcdsaKey
                | ErrorKind::InvalidRsaKey(_) => {}
                ErrorKind::InvalidAlgorithm | ErrorKind::UnsupportedAlgorithm => {
                    return Err(AssertionError::UnsupportedAlgorithm(format!(
                        "{:?} does not match the registered key",
                        header.algorithm
                    )));
                }
                // The signature verified (jsonwebtoken parses claims only
                // after that), but the claims are not what a JWT holds.
                ErrorKind::Json(detail) => {
                    return Err(malformed(format!("the claims are not valid: {detail}")));
                }
                ErrorKind::Base64(_) | ErrorKind::Utf8(_) | ErrorKind::InvalidToken => {
                    return Err(malformed("the token is not a well-formed JWS"));
                }
                _ => return Err(AssertionError::BadSignature),
            },
        }
    }
    Err(AssertionError::BadSignature)
}

fn check_claims(
    claims: RawClaims,
    client_id: &str,
    token_url: &str,
    now: i64,
) -> Result<VerifiedAssertion, AssertionError> {
    let iss = claims.iss.ok_or_else(|| claims_error("iss is missing"))?;
    let sub = claims.sub.ok_or_else(|| claims_error("sub is missing"))?;
    if iss != client_id || sub != client_id {
        return Err(claims_error("iss and sub must both be the client_id"));
    }

    let audience_matches = match &claims.aud {
        Some(Value::String(aud)) => aud == token_url,
        Some(Value::Array(auds)) => auds.iter().any(|aud| aud.as_str() == Some(token_url)),
        Some(_) => return Err(claims_error("aud must be a string or an array of strings")),
        None => return Err(claims_error("aud is missing")),
    };
    if !audience_matches {
        return Err(claims_error(format!(
            "aud must be this server's token URL ({token_url})"
        )));
    }

    let NumericDate(exp) = claims.exp.ok_or_else(|| claims_error("exp is missing"))?;
    if exp <= now.saturating_sub(EXPIRY_LEEWAY_SECONDS) {
        return Err(AssertionError::Expired);
    }
    if exp > now.saturating_add(MAX_ASSERTION_LIFETIME_SECONDS) {
        return Err(AssertionError::LifetimeTooLong);
    }
    let latest_allowed = now.saturating_add(MAX_CLOCK_SKEW_SECONDS);
    if let Some(NumericDate(nbf)) = claims.nbf
        && nbf > latest_allowed
    {
        return Err(claims_error("nbf is in the future"));
    }
    if let Some(NumericDate(iat)) = claims.iat
        && iat > latest_allowed
    {
        return Err(claims_error("iat is in the future"));
    }

    let jti = claims.jti.ok_or_else(|| claims_error("jti is missing"))?;
    if jti.is_empty() {
        return Err(claims_error("jti must not be empty"));
    }
    if jti.chars().count() > MAX_JTI_CHARS {
        return Err(claims_error(format!(
            "jti is longer than {MAX_JTI_CHARS} characters"
        )));
    }

    Ok(VerifiedAssertion {
        client_id: iss,
        jti,
        expires_at: exp,
    })
}
