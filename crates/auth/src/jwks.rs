//! A registered client's public keys (JWK Set): RSA keys of at least 2048 bits
//! for RS384 and EC P-384 keys for ES384. Private, symmetric and other keys
//! are refused when registered, so verification only ever sees keys it can
//! use safely.

use std::collections::HashSet;

use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED, ParsedPublicKey, RSA_PKCS1_2048_8192_SHA384, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use jsonwebtoken::{Algorithm, DecodingKey};
use serde_json::{Map, Value};

use crate::error::AssertionError;

/// A registered key set is small; a larger one is a mistake or an attack
/// (each key without `kid` may be tried on every assertion).
const MAX_KEYS: usize = 10;
const MAX_JWKS_LEN: usize = 64 * 1024;
const MAX_KID_LEN: usize = 256;
const MIN_RSA_BITS: usize = 2048;
const MAX_RSA_BITS: usize = 8192;
const P384_COORDINATE_LEN: usize = 48;
/// JWK members that only private (or symmetric) keys have.
const PRIVATE_MEMBERS: [&str; 8] = ["d", "p", "q", "dp", "dq", "qi", "oth", "k"];

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ClientJwks {
    keys: Vec<ClientKey>,
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub(crate) struct ClientKey {
    kid: Option<String>,
    material: KeyMaterial,
}

#[derive(Clone, Debug, PartialEq, Eq)]
enum KeyMaterial {
    /// Big-endian, leading zeros removed.
    Rsa {
        n: Vec<u8>,
        e: Vec<u8>,
    },
    EcP384 {
        x: Vec<u8>,
        y: Vec<u8>,
    },
}

impl ClientJwks {
    /// Parses and checks a JWK Set (`{"keys": [...]}`).
    pub fn parse(json: &str) -> Result<ClientJwks, AssertionError> {
        if json.len() > MAX_JWKS_LEN {
            return Err(jwks_error(format!(
                "the key set is larger than {MAX_JWKS_LEN} bytes"
            )));
        }
        let value: Value = serde_json::from_str(json)
            .map_err(|error| jwks_error(format!("not valid JSON: {error}")))?;
        let keys = value
            .as_object()
            .and_then(|set| set.get("keys"))
            .and_then(Value::as_array)
            .ok_or_else(|| jwks_error("expected a JWK Set: an object with a \"keys\" array"))?;
        if keys.is_empty() {
            return Err(jwks_error("the key set has no keys"));
        }
        if keys.len() > MAX_KEYS {
            return Err(jwks_error(format!(
                "at most {MAX_KEYS} keys may be registered"
            )));
        }

        let mut parsed = Vec::with_capacity(keys.len());
        let mut kids = HashSet::new();
        for (index, key) in keys.iter().enumerate() {
            let key =
                parse_key(key).map_err(|reason| jwks_error(format!("key {index}: {reason}")))?;
            if let Some(kid) = &key.kid
                && !kids.insert(kid.clone())
            {
                return Err(jwks_error(format!(
                    "key {index}: kid {kid:?} is used twice"
                )));
            }
            parsed.push(key);
        }
        Ok(ClientJwks { keys: parsed })
    }

    /// Canonical JSON for storage: members in a fixed order, `alg` always
    /// present, integers without leading zeros. `parse(to_json())` gives back
    /// an equal key set.
    #[must_use]
    pub fn to_json(&self) -> String {
        let keys: Vec<Value> = self.keys.iter().map(ClientKey::to_json).collect();
        let mut set = Map::new();
        set.insert("keys".into(), Value::Array(keys));
        Value::Object(set).to_string()
    }

    #[must_use]
    pub fn key_count(&self) -> usize {
        self.keys.len()
    }

    /// The keys to try for an assertion: the one named by `kid` if given,
    /// else every key usable with `algorithm`.
    pub(crate) fn candidates(
        &self,
        algorithm: Algorithm,
        kid: Option<&str>,
    ) -> Result<Vec<&ClientKey>, AssertionError> {
        if let Some(kid) = kid {
            let key = self
                .keys
                .iter()
                .find(|key| key.kid.as_deref() == Some(kid))
                .ok_or_else(|| jwks_error(format!("no registered key has kid {kid:?}")))?;
            if key.algorithm() != algorithm {
                return Err(AssertionError::UnsupportedAlgorithm(format!(
                    "the key with kid {kid:?} is for {:?}, but the assertion says {algorithm:?}",
                    key.algorithm()
                )));
            }
            return Ok(vec![key]);
        }
        let matching: Vec<&ClientKey> = self
            .keys
            .iter()
            .filter(|key| key.algorithm() == algorithm)
            .collect();
        if matching.is_empty() {
            return Err(jwks_error(format!(
                "no registered key can verify {algorithm:?}"
            )));
        }
        Ok(matching)
    }
}

impl ClientKey {
    pub(crate) fn algorithm(&self) -> Algorithm {
        match self.material {
            KeyMaterial::Rsa { .. } => Algorithm::RS384,
            KeyMaterial::EcP384 { .. } => Algorithm::ES384,
        }
    }

    pub(crate) fn decoding_key(&self) -> DecodingKey {
        match &self.material {
            KeyMaterial::Rsa { n, e } => DecodingKey::from_rsa_raw_components(n, e),
            KeyMaterial::EcP384 { x, y } => {
                let mut point = Vec::with_capacity(1 + x.len() + y.len());
                point.push(0x04);
                point.extend_from_slice(x);
                point.extend_from_slice(y);
                DecodingKey::from_ec_der(&point)
            }
        }
    }

    fn to_json(&self) -> Value {
        let mut jwk = Map::new();
        let (kty, alg) = match self.material {
            KeyMaterial::Rsa { .. } => ("RSA", "RS384"),
            KeyMaterial::EcP384 { .. } => ("EC", "ES384"),
        };
        jwk.insert("kty".into(), kty.into());
        if let Some(kid) = &self.kid {
            jwk.insert("kid".into(), kid.as_str().into());
        }
        jwk.insert("use".into(), "sig".into());
        jwk.insert("alg".into(), alg.into());
        match &self.material {
            KeyMaterial::Rsa { n, e } => {
                jwk.insert("n".into(), URL_SAFE_NO_PAD.encode(n).into());
                jwk.insert("e".into(), URL_SAFE_NO_PAD.encode(e).into());
            }
            KeyMaterial::EcP384 { x, y } => {
                jwk.insert("crv".into(), "P-384".into());
                jwk.insert("x".into(), URL_SAFE_NO_PAD.encode(x).into());
                jwk.insert("y".into(), URL_SAFE_NO_PAD.encode(y).into());
            }
        }
        Value::Object(jwk)
    }
}

fn jwks_error(reason: impl Into<String>) -> AssertionError {
    AssertionError::Jwks(reason.into())
}

fn parse_key(value: &Value) -> Result<ClientKey, String> {
    let jwk = value.as_object().ok_or("a key must be a JSON object")?;
    let kty = optional_string(jwk, "kty")?.ok_or("kty is missing")?;
    match kty {
        "RSA" | "EC" => {}
        "oct" => {
            return Err(
                "symmetric keys (kty \"oct\") are not accepted; register an RSA or \
                        EC P-384 public key"
                    .into(),
            );
        }
        other => {
            return Err(format!(
                "kty {other:?} is not supported; register an RSA (RS384) or EC P-384 (ES384) \
                 public key"
            ));
        }
    }
    if let Some(member) = PRIVATE_MEMBERS
        .iter()
        .find(|member| jwk.contains_key(**member))
    {
        return Err(format!(
            "contains private key material ({member:?}); register only the public key, and \
             treat this private key as exposed"
        ));
    }
    let expected_alg = if kty == "RSA" { "RS384" } else { "ES384" };
    if let Some(alg) = optional_string(jwk, "alg")?
        && alg != expected_alg
    {
        return Err(format!(
            "alg {alg:?} is not accepted for a {kty} key; only {expected_alg} is (SMART Backend \
             Services allows RS384 and ES384)"
        ));
    }
    if let Some(usage) = optional_string(jwk, "use")?
        && usage != "sig"
    {
        return Err(format!(
            "use {usage:?} is not accepted; a client assertion key has use \"sig\""
        ));
    }
    if let Some(operations) = jwk.get("key_ops") {
        let allows_verify = operations
            .as_array()
            .is_some_and(|ops| ops.iter().any(|op| op.as_str() == Some("verify")));
        if !allows_verify {
            return Err("key_ops must be an array that includes \"verify\"".into());
        }
    }
    let kid = match optional_string(jwk, "kid")? {
        Some("") => return Err("kid must not be empty".into()),
        Some(kid) if kid.chars().count() > MAX_KID_LEN => {
            return Err(format!("kid is longer than {MAX_KID_LEN} characters"));
        }
        Some(kid) => Some(kid.to_owned()),
        None => None,
    };

    let material = if kty == "RSA" {
        parse_rsa(jwk)?
    } else {
        parse_ec(jwk)?
    };
    Ok(ClientKey { kid, material })
}

fn parse_rsa(jwk: &Map<String, Value>) -> Result<KeyMaterial, String> {
    let n = strip_leading_zeros(base64_member(jwk, "n")?);
    let e = strip_leading_zeros(base64_member(jwk, "e")?);
    let bits = bit_length(&n);
    if bits < MIN_RSA_BITS {
        return Err(format!(
            "the RSA modulus has {bits} bits; at least {MIN_RSA_BITS} are required"
        ));
    }
    if bits > MAX_RSA_BITS {
        return Err(format!(
            "the RSA modulus has {bits} bits; at most {MAX_RSA_BITS} are supported"
        ));
    }
    RsaPublicKeyComponents {
        n: n.as_slice(),
        e: e.as_slice(),
    }
    .to_parsed_public_key(&RSA_PKCS1_2048_8192_SHA384)
    .map_err(|_| "n and e do not form a valid RSA public key".to_owned())?;
    Ok(KeyMaterial::Rsa { n, e })
}

fn parse_ec(jwk: &Map<String, Value>) -> Result<KeyMaterial, String> {
    match optional_string(jwk, "crv")? {
        Some("P-384") => {}
        Some(other) => {
            return Err(format!(
                "curve {other:?} is not accepted; only P-384 (ES384) is"
            ));
        }
        None => return Err("crv is missing".into()),
    }
    let x = base64_member(jwk, "x")?;
    let y = base64_member(jwk, "y")?;
    if x.len() != P384_COORDINATE_LEN || y.len() != P384_COORDINATE_LEN {
        return Err(format!(
            "P-384 coordinates x and y must be {P384_COORDINATE_LEN} bytes each"
        ));
    }
    let mut point = Vec::with_capacity(1 + 2 * P384_COORDINATE_LEN);
    point.push(0x04);
    point.extend_from_slice(&x);
    point.extend_from_slice(&y);
    ParsedPublicKey::new(&ECDSA_P384_SHA384_FIXED, &point)
        .map_err(|_| "x and y are not a point on P-384".to_owned())?;
    Ok(KeyMaterial::EcP384 { x, y })
}

fn optional_string<'a>(jwk: &'a Map<String, Value>, name: &str) -> Result<Option<&'a str>, String> {
    match jwk.get(name) {
        None => Ok(None),
        Some(Value::String(value)) => Ok(Some(value)),
        Some(_) => Err(format!("{name} must be a string")),
    }
}

fn base64_member(jwk: &Map<String, Value>, name: &str) -> Result<Vec<u8>, String> {
    let encoded = optional_string(jwk, name)?.ok_or_else(|| format!("{name} is missing"))?;
    URL_SAFE_NO_PAD
        .decode(encoded)
        .map_err(|_| format!("{name} is not base64url without padding"))
}

fn strip_leading_zeros(mut bytes: Vec<u8>) -> Vec<u8> {
    let zeros = bytes.iter().take_while(|byte| **byte == 0).count();
    bytes.drain(..zeros);
    bytes
}

/// Bit length of a big-endian unsigned integer without leading zero bytes.
fn bit_length(bytes: &[u8]) -> usize {
    match bytes.first() {
        None => 0,
        Some(first) => bytes.len() * 8 - first.leading_zeros() as usize,
    }
}
