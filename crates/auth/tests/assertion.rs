#![allow(clippy::unwrap_used, clippy::expect_used)]
//! Client assertion verification against real keys generated here.

use std::sync::OnceLock;

use aws_lc_rs::encoding::AsDer;
use aws_lc_rs::rsa::{KeyPair as RsaKeyPair, KeySize};
use aws_lc_rs::signature::{
    ECDSA_P384_SHA384_FIXED_SIGNING, EcdsaKeyPair, KeyPair, RsaPublicKeyComponents,
};
use base64::Engine;
use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use carevault_auth::{
    AssertionError, ClientJwks, install_crypto_provider, unverified_issuer, verify_client_assertion,
};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const CLIENT: &str = "client-123";
const TOKEN_URL: &str = "https://ehr.example/auth/token";
const NOW: i64 = 1_750_000_000;

struct TestKey {
    /// Private key for jsonwebtoken (PEM for RSA, PKCS#8 DER for EC).
    private: Vec<u8>,
    /// The public JWK, without kid.
    public_jwk: Value,
    algorithm: Algorithm,
}

impl TestKey {
    fn encoding_key(&self) -> EncodingKey {
        match self.algorithm {
            Algorithm::RS384 => EncodingKey::from_rsa_pem(&self.private).unwrap(),
            _ => EncodingKey::from_ec_der(&self.private),
        }
    }

    fn jwk(&self, kid: Option<&str>) -> Value {
        let mut jwk = self.public_jwk.clone();
        if let Some(kid) = kid {
            jwk["kid"] = json!(kid);
        }
        jwk
    }
}

fn b64url(bytes: &[u8]) -> String {
    URL_SAFE_NO_PAD.encode(bytes)
}

fn new_rsa_key() -> TestKey {
    let key_pair = RsaKeyPair::generate(KeySize::Rsa2048).unwrap();
    let pkcs8 = AsDer::<aws_lc_rs::encoding::Pkcs8V1Der>::as_der(&key_pair).unwrap();
    let body = STANDARD.encode(pkcs8.as_ref());
    let mut pem = String::from("-----BEGIN PRIVATE KEY-----\n");
    for line in body.as_bytes().chunks(64) {
        pem.push_str(std::str::from_utf8(line).unwrap());
        pem.push('\n');
    }
    pem.push_str("-----END PRIVATE KEY-----\n");
    let components = RsaPublicKeyComponents::<Vec<u8>>::from(key_pair.public_key());
    TestKey {
        private: pem.into_bytes(),
        public_jwk: json!({"kty": "RSA", "n": b64url(&components.n), "e": b64url(&components.e)}),
        algorithm: Algorithm::RS384,
    }
}

fn new_ec_key() -> TestKey {
    let key_pair = EcdsaKeyPair::generate(&ECDSA_P384_SHA384_FIXED_SIGNING).unwrap();
    let pkcs8 = key_pair.to_pkcs8v1().unwrap();
    let point = key_pair.public_key().as_ref();
    assert_eq!(point.len(), 97);
    TestKey {
        private: pkcs8.as_ref().to_vec(),
        public_jwk: json!({
            "kty": "EC", "crv": "P-384",
            "x": b64url(&point[1..49]), "y": b64url(&point[49..97]),
        }),
        algorithm: Algorithm::ES384,
    }
}

fn rsa_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(new_rsa_key)
}

fn other_rsa_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(new_rsa_key)
}

fn ec_key() -> &'static TestKey {
    static KEY: OnceLock<TestKey> = OnceLock::new();
    KEY.get_or_init(new_ec_key)
}

fn jwks(keys: &[Value]) -> ClientJwks {
    ClientJwks::parse(&json!({ "keys": keys }).to_string()).unwrap()
}

fn good_claims() -> Value {
    json!({
        "iss": CLIENT,
        "sub": CLIENT,
        "aud": TOKEN_URL,
        "exp": NOW + 240,
        "iat": NOW - 10,
        "jti": "2b4d6f1e-8a7c-4e59-9d3b-0c1f2e3a4b5c",
    })
}

fn sign(key: &TestKey, kid: Option<&str>, claims: &Value) -> String {
    let mut header = Header::new(key.algorithm);
    header.kid = kid.map(str::to_owned);
    jsonwebtoken::encode(&header, claims, &key.encoding_key()).unwrap()
}

fn verify(
    assertion: &str,
    set: &ClientJwks,
) -> Result<carevault_auth::VerifiedAssertion, AssertionError> {
    verify_client_assertion(assertion, CLIENT, set, TOKEN_URL, NOW)
}

fn verify_claims(claims: Value) -> Result<carevault_auth::VerifiedAssertion, AssertionError> {
    let key = rsa_key();
    verify(&sign(key, None, &claims), &jwks(&[key.jwk(None)]))
}

fn with(mut claims: Value, name: &str, value: Value) -> Value {
    claims[name] = value;
    claims
}

fn without(mut claims: Value, name: &str) -> Value {
    claims.as_object_mut().unwrap().remove(name);
    claims
}

/// An unsigned token with the given header, for attacks jsonwebtoken won't sign.
fn forge(header: &Value, claims: &Value, signature: &[u8]) -> String {
    format!(
        "{}.{}.{}",
        b64url(header.to_string().as_bytes()),
        b64url(claims.to_string().as_bytes()),
        b64url(signature)
    )
}

// ---- accepted ----

#[test]
fn valid_rs384_passes() {
    let key = rsa_key();
    let verified = verify(
        &sign(key, Some("rsa-1"), &good_claims()),
        &jwks(&[key.jwk(Some("rsa-1"))]),
    )
    .unwrap();
    assert_eq!(verified.client_id(), CLIENT);
    assert_eq!(verified.jti(), "2b4d6f1e-8a7c-4e59-9d3b-0c1f2e3a4b5c");
    assert_eq!(verified.expires_at(), NOW + 240);
}

#[test]
fn valid_es384_passes_with_and_without_kid() {
    let key = ec_key();
    let set = jwks(&[rsa_key().jwk(Some("rsa-1")), key.jwk(Some("ec-1"))]);
    assert!(verify(&sign(key, Some("ec-1"), &good_claims()), &set).is_ok());
    // Without kid, every key of the matching type is tried.
    let no_kids = jwks(&[
        other_rsa_key().jwk(None),
        rsa_key().jwk(None),
        key.jwk(None),
    ]);
    assert_eq!(
        verify(&sign(key, None, &good_claims()), &no_kids)
            .unwrap()
            .expires_at(),
        NOW + 240
    );
    assert!(
        verify(&sign(rsa_key(), None, &good_claims()), &no_kids).is_ok(),
        "second RSA key not tried"
    );
}

#[test]
fn numbers_survive_arbitrary_precision() {
    // The workspace turns on serde_json's arbitrary_precision; integer,
    // fractional and exponent-form NumericDates must all decode.
    let decimal: Value = serde_json::from_str("72.50").unwrap();
    assert_eq!(
        decimal.to_string(),
        "72.50",
        "arbitrary_precision is not on in this build"
    );
    let verified = verify_claims(with(good_claims(), "exp", json!(NOW + 100))).unwrap();
    assert_eq!(verified.expires_at(), NOW + 100);
    let key = rsa_key();
    let set = jwks(&[key.jwk(None)]);
    for (raw_exp, expected) in [
        (format!("{}.75", NOW + 100), NOW + 100),
        (format!("{}e0", NOW + 100), NOW + 100),
        (format!("{}", NOW + 1), NOW + 1),
    ] {
        let claims_json = format!(
            r#"{{"iss":"{CLIENT}","sub":"{CLIENT}","aud":"{TOKEN_URL}","exp":{raw_exp},"iat":{NOW}.5,"jti":"j"}}"#
        );
        let claims: Value = serde_json::from_str(&claims_json).unwrap();
        let verified = verify(&sign(key, None, &claims), &set).unwrap();
        assert_eq!(verified.expires_at(), expected, "exp {raw_exp}");
    }
    // Numbers that do not fit, and non-numbers, are malformed rather than ignored.
    for bad in [json!(u64::MAX), json!("1750000100"), json!(true)] {
        let result = verify_claims(with(good_claims(), "exp", bad.clone()));
        assert!(
            matches!(result, Err(AssertionError::Malformed(_))),
            "exp {bad}: {result:?}"
        );
    }
    let huge: Value = serde_json::from_str("1e400").unwrap();
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", huge)),
        Err(AssertionError::Malformed(_))
    ));
}

#[test]
fn aud_array_containing_token_url_passes() {
    let claims = with(
        good_claims(),
        "aud",
        json!(["https://other.example", TOKEN_URL]),
    );
    assert!(verify_claims(claims).is_ok());
}

#[test]
fn lifetime_boundaries() {
    assert!(verify_claims(with(good_claims(), "exp", json!(NOW + 300))).is_ok());
    assert!(verify_claims(with(good_claims(), "exp", json!(NOW + 1))).is_ok());
    assert!(verify_claims(with(good_claims(), "nbf", json!(NOW + 60))).is_ok());
    assert!(verify_claims(with(good_claims(), "iat", json!(NOW + 60))).is_ok());
}

// ---- refused: keys and algorithms ----

#[test]
fn wrong_key_refused() {
    let assertion = sign(other_rsa_key(), None, &good_claims());
    assert!(matches!(
        verify(&assertion, &jwks(&[rsa_key().jwk(None)])),
        Err(AssertionError::BadSignature)
    ));
    let ec_other = new_ec_key();
    let assertion = sign(&ec_other, Some("ec-1"), &good_claims());
    assert!(matches!(
        verify(&assertion, &jwks(&[ec_key().jwk(Some("ec-1"))])),
        Err(AssertionError::BadSignature)
    ));
}

#[test]
fn tampered_payload_or_signature_refused() {
    let key = rsa_key();
    let set = jwks(&[key.jwk(None)]);
    let assertion = sign(key, None, &good_claims());
    let parts: Vec<&str> = assertion.split('.').collect();
    let other_payload = b64url(
        with(good_claims(), "sub", json!("someone-else"))
            .to_string()
            .as_bytes(),
    );
    let swapped = format!("{}.{}.{}", parts[0], other_payload, parts[2]);
    assert!(matches!(
        verify(&swapped, &set),
        Err(AssertionError::BadSignature)
    ));
    let mut signature = URL_SAFE_NO_PAD.decode(parts[2]).unwrap();
    signature[10] ^= 1;
    let flipped = format!("{}.{}.{}", parts[0], parts[1], b64url(&signature));
    assert!(matches!(
        verify(&flipped, &set),
        Err(AssertionError::BadSignature)
    ));
    let stripped = format!("{}.{}.", parts[0], parts[1]);
    assert!(matches!(
        verify(&stripped, &set),
        Err(AssertionError::BadSignature)
    ));
}

#[test]
fn alg_none_refused() {
    let set = jwks(&[rsa_key().jwk(None)]);
    for alg in ["none", "None", "NONE"] {
        let token = forge(&json!({"alg": alg, "typ": "JWT"}), &good_claims(), b"");
        assert!(
            matches!(
                verify(&token, &set),
                Err(AssertionError::UnsupportedAlgorithm(_))
            ),
            "{alg}"
        );
    }
    let no_alg = forge(&json!({"typ": "JWT"}), &good_claims(), b"sig");
    assert!(verify(&no_alg, &set).is_err());
}

#[test]
fn hs256_with_public_key_as_secret_refused() {
    let key = rsa_key();
    let set = jwks(&[key.jwk(None)]);
    let n = URL_SAFE_NO_PAD
        .decode(key.public_jwk["n"].as_str().unwrap())
        .unwrap();
    let secrets: Vec<Vec<u8>> = vec![
        set.to_json().into_bytes(),
        key.public_jwk.to_string().into_bytes(),
        n,
    ];
    for secret in secrets {
        for alg in [Algorithm::HS256, Algorithm::HS384, Algorithm::HS512] {
            let token = jsonwebtoken::encode(
                &Header::new(alg),
                &good_claims(),
                &EncodingKey::from_secret(&secret).unwrap(),
            )
            .unwrap();
            assert!(
                matches!(
                    verify(&token, &set),
                    Err(AssertionError::UnsupportedAlgorithm(_))
                ),
                "{alg:?}"
            );
        }
    }
}

#[test]
fn other_asymmetric_algorithms_refused() {
    let key = rsa_key();
    let set = jwks(&[key.jwk(None)]);
    for alg in [Algorithm::RS256, Algorithm::RS512, Algorithm::PS384] {
        let token =
            jsonwebtoken::encode(&Header::new(alg), &good_claims(), &key.encoding_key()).unwrap();
        assert!(
            matches!(
                verify(&token, &set),
                Err(AssertionError::UnsupportedAlgorithm(_))
            ),
            "{alg:?}"
        );
    }
}

#[test]
fn alg_must_match_key_selected_by_kid() {
    // ES384 header naming an RSA key's kid.
    let set = jwks(&[rsa_key().jwk(Some("k1")), ec_key().jwk(Some("k2"))]);
    let token = sign(ec_key(), Some("k1"), &good_claims());
    assert!(matches!(
        verify(&token, &set),
        Err(AssertionError::UnsupportedAlgorithm(_))
    ));
    let unknown_kid = sign(ec_key(), Some("k9"), &good_claims());
    assert!(verify(&unknown_kid, &set).is_err());
    // No key of the matching type at all.
    let rsa_only = jwks(&[rsa_key().jwk(None)]);
    assert!(verify(&sign(ec_key(), None, &good_claims()), &rsa_only).is_err());
}

#[test]
fn crit_header_refused() {
    let key = rsa_key();
    let token = forge(
        &json!({"alg": "RS384", "crit": ["exp"]}),
        &good_claims(),
        b"x",
    );
    assert!(matches!(
        verify(&token, &jwks(&[key.jwk(None)])),
        Err(AssertionError::Malformed(_))
    ));
}

#[test]
fn malformed_tokens_refused() {
    let set = jwks(&[rsa_key().jwk(None)]);
    for token in ["", "a", "a.b", "a.b.c.d", "!!!.b.c", &"a".repeat(20_000)] {
        assert!(
            matches!(verify(token, &set), Err(AssertionError::Malformed(_))),
            "{token:.20}"
        );
    }
}

// ---- refused: claims ----

#[test]
fn expired_refused() {
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(NOW))),
        Err(AssertionError::Expired)
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(NOW - 1))),
        Err(AssertionError::Expired)
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(0))),
        Err(AssertionError::Expired)
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(-5))),
        Err(AssertionError::Expired)
    ));
}

#[test]
fn exp_ten_minutes_ahead_refused() {
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(NOW + 600))),
        Err(AssertionError::LifetimeTooLong)
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(NOW + 301))),
        Err(AssertionError::LifetimeTooLong)
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", json!(i64::MAX))),
        Err(AssertionError::LifetimeTooLong)
    ));
}

#[test]
fn missing_exp_refused() {
    assert!(matches!(
        verify_claims(without(good_claims(), "exp")),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "exp", Value::Null)),
        Err(AssertionError::Claims(_))
    ));
}

#[test]
fn future_nbf_or_iat_refused() {
    assert!(matches!(
        verify_claims(with(good_claims(), "nbf", json!(NOW + 61))),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "iat", json!(NOW + 61))),
        Err(AssertionError::Claims(_))
    ));
}

#[test]
fn aud_mismatch_refused() {
    for aud in [
        json!("https://ehr.example/auth/token/"),
        json!("https://evil.example/auth/token"),
        json!(["https://other.example"]),
        json!([]),
        json!(42),
    ] {
        let result = verify_claims(with(good_claims(), "aud", aud.clone()));
        assert!(
            matches!(result, Err(AssertionError::Claims(_))),
            "aud {aud}: {result:?}"
        );
    }
    assert!(matches!(
        verify_claims(without(good_claims(), "aud")),
        Err(AssertionError::Claims(_))
    ));
}

#[test]
fn iss_sub_must_equal_client_id() {
    let iss_differs = with(good_claims(), "sub", json!("client-999"));
    assert!(matches!(
        verify_claims(iss_differs),
        Err(AssertionError::Claims(_))
    ));
    let both_other = with(
        with(good_claims(), "sub", json!("client-999")),
        "iss",
        json!("client-999"),
    );
    assert!(matches!(
        verify_claims(both_other),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(without(good_claims(), "sub")),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(without(good_claims(), "iss")),
        Err(AssertionError::Claims(_))
    ));
}

#[test]
fn jti_required_non_empty_and_bounded() {
    assert!(matches!(
        verify_claims(without(good_claims(), "jti")),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "jti", json!(""))),
        Err(AssertionError::Claims(_))
    ));
    assert!(matches!(
        verify_claims(with(good_claims(), "jti", json!("x".repeat(257)))),
        Err(AssertionError::Claims(_))
    ));
    assert!(verify_claims(with(good_claims(), "jti", json!("é".repeat(256)))).is_ok());
}

// ---- key sets ----

#[test]
fn jwks_with_private_key_refused() {
    let mut private = rsa_key().jwk(None);
    private["d"] = json!(b64url(&[7; 256]));
    let error = ClientJwks::parse(&json!({"keys": [private]}).to_string()).unwrap_err();
    assert!(
        matches!(&error, AssertionError::Jwks(m) if m.contains("private")),
        "{error}"
    );
    let mut private_ec = ec_key().jwk(None);
    private_ec["d"] = json!(b64url(&[7; 48]));
    assert!(matches!(
        ClientJwks::parse(&json!({"keys": [private_ec]}).to_string()),
        Err(AssertionError::Jwks(_))
    ));
}

#[test]
fn jwks_refuses_unusable_keys() {
    let refused = |key: Value, needle: &str| {
        let error = ClientJwks::parse(&json!({"keys": [key]}).to_string()).unwrap_err();
        assert!(
            matches!(&error, AssertionError::Jwks(m) if m.contains(needle)),
            "{error}"
        );
    };
    refused(json!({"kty": "oct", "k": b64url(b"secret")}), "symmetric");
    refused(
        json!({"kty": "OKP", "crv": "Ed25519", "x": b64url(&[1; 32])}),
        "OKP",
    );
    refused(with(rsa_key().jwk(None), "alg", json!("RS256")), "RS256");
    refused(with(ec_key().jwk(None), "alg", json!("ES256")), "ES256");
    refused(with(ec_key().jwk(None), "crv", json!("P-256")), "P-256");
    refused(with(rsa_key().jwk(None), "use", json!("enc")), "enc");
    // A 1024-bit modulus.
    let n = URL_SAFE_NO_PAD
        .decode(rsa_key().public_jwk["n"].as_str().unwrap())
        .unwrap();
    refused(
        with(rsa_key().jwk(None), "n", json!(b64url(&n[..128]))),
        "1024 bits",
    );
    // A point not on the curve.
    refused(
        with(ec_key().jwk(None), "y", json!(b64url(&[1; 48]))),
        "P-384",
    );
    assert!(ClientJwks::parse("[]").is_err());
    assert!(ClientJwks::parse(r#"{"keys": []}"#).is_err());
    assert!(ClientJwks::parse("not json").is_err());
    let duplicate = json!({"keys": [rsa_key().jwk(Some("a")), ec_key().jwk(Some("a"))]});
    assert!(ClientJwks::parse(&duplicate.to_string()).is_err());
}

#[test]
fn jwks_canonical_json_round_trips() {
    let set = jwks(&[
        with(rsa_key().jwk(Some("r")), "alg", json!("RS384")),
        ec_key().jwk(None),
    ]);
    assert_eq!(set.key_count(), 2);
    let stored = set.to_json();
    let reparsed = ClientJwks::parse(&stored).unwrap();
    assert_eq!(reparsed, set);
    assert_eq!(reparsed.to_json(), stored);
    assert!(
        stored.contains(r#""alg":"RS384""#) && stored.contains(r#""alg":"ES384""#),
        "{stored}"
    );
    // The stored set still verifies.
    assert!(verify(&sign(ec_key(), None, &good_claims()), &reparsed).is_ok());
}

// ---- helpers ----

#[test]
fn unverified_issuer_reads_iss_only() {
    let token = sign(rsa_key(), None, &good_claims());
    assert_eq!(unverified_issuer(&token).unwrap(), CLIENT);
    // It does not verify: a forged token still yields its claimed issuer.
    let forged = forge(&json!({"alg": "none"}), &json!({"iss": "anyone"}), b"");
    assert_eq!(unverified_issuer(&forged).unwrap(), "anyone");
    assert!(unverified_issuer("garbage").is_err());
    assert!(unverified_issuer(&forge(&json!({}), &json!({"sub": "x"}), b"")).is_err());
    assert!(unverified_issuer(&forge(&json!({}), &json!({"iss": 5}), b"")).is_err());
}

#[test]
fn crypto_provider_install_is_idempotent() {
    use jsonwebtoken::crypto::{CryptoProvider, aws_lc};
    install_crypto_provider();
    install_crypto_provider();
    let provider = CryptoProvider::try_get_default().expect("a provider is installed");
    assert!(std::ptr::eq(provider, &aws_lc::DEFAULT_PROVIDER));
    assert!(verify_claims(good_claims()).is_ok());
}
