#![allow(clippy::unwrap_used, clippy::expect_used)]

//! Behaviour tests for carevault-crypto. Each test fails if the property it
//! names is broken.

use std::fs;
use std::os::unix::fs::PermissionsExt;
use std::path::Path;

use carevault_crypto::{
    CryptoError, DataKey, IndexKey, Kek, KeyEncryptionKey, SecretKey, SigningKey, VerifyingKey,
    constant_time_eq, random_bytes, sealed_key_version, sha256,
};

const AAD: &[u8] = b"tenant-1|Patient|abc|3";

fn fixed_key(byte: u8) -> SecretKey {
    SecretKey::from_bytes(&[byte; 32]).unwrap()
}

fn is_integrity(result: Result<Vec<u8>, CryptoError>) -> bool {
    matches!(result, Err(CryptoError::Integrity))
}

fn set_mode(path: &Path, mode: u32) {
    fs::set_permissions(path, fs::Permissions::from_mode(mode)).unwrap();
}

fn mode_of(path: &Path) -> u32 {
    fs::metadata(path).unwrap().permissions().mode() & 0o7777
}

// ---- data keys ----

#[test]
fn seal_open_round_trip() {
    let key = DataKey::new(7, SecretKey::generate());
    let sealed = key.seal(AAD, b"{\"resourceType\":\"Patient\"}").unwrap();
    assert_eq!(
        key.open(AAD, &sealed).unwrap(),
        b"{\"resourceType\":\"Patient\"}"
    );
    assert_eq!(sealed_key_version(&sealed).unwrap(), 7);
    assert_eq!(sealed[0], 1, "format byte");
    assert_eq!(&sealed[1..5], &7u32.to_be_bytes());
    // header 5 + nonce 12 + plaintext + tag 16
    assert_eq!(sealed.len(), 5 + 12 + 26 + 16);
}

#[test]
fn empty_plaintext_round_trips() {
    let key = DataKey::new(1, SecretKey::generate());
    let sealed = key.seal(AAD, b"").unwrap();
    assert_eq!(key.open(AAD, &sealed).unwrap(), b"");
}

#[test]
fn ciphertext_does_not_contain_plaintext() {
    let key = DataKey::new(1, SecretKey::generate());
    let plaintext = b"a very recognisable plaintext string";
    let sealed = key.seal(AAD, plaintext).unwrap();
    assert!(!sealed.windows(plaintext.len()).any(|w| w == plaintext));
}

#[test]
fn wrong_aad_is_integrity_error() {
    let key = DataKey::new(1, SecretKey::generate());
    let sealed = key.seal(AAD, b"body").unwrap();
    assert!(is_integrity(key.open(b"tenant-2|Patient|abc|3", &sealed)));
    assert!(is_integrity(key.open(b"", &sealed)));
}

#[test]
fn every_flipped_byte_is_integrity_error() {
    let key = DataKey::new(1, SecretKey::generate());
    let sealed = key.seal(AAD, b"some clinical body").unwrap();
    for index in 0..sealed.len() {
        for bit in [0x01u8, 0x80] {
            let mut altered = sealed.clone();
            altered[index] ^= bit;
            assert!(
                is_integrity(key.open(AAD, &altered)),
                "flip at byte {index} accepted"
            );
        }
    }
}

#[test]
fn truncated_or_extended_is_integrity_error() {
    let key = DataKey::new(1, SecretKey::generate());
    let sealed = key.seal(AAD, b"some clinical body").unwrap();
    for len in 0..sealed.len() {
        assert!(
            is_integrity(key.open(AAD, &sealed[..len])),
            "truncation to {len} accepted"
        );
    }
    let mut extended = sealed.clone();
    extended.push(0);
    assert!(is_integrity(key.open(AAD, &extended)));
}

#[test]
fn wrong_key_is_integrity_error() {
    let sealed = DataKey::new(1, SecretKey::generate())
        .seal(AAD, b"body")
        .unwrap();
    assert!(is_integrity(
        DataKey::new(1, SecretKey::generate()).open(AAD, &sealed)
    ));
}

#[test]
fn same_key_other_version_number_is_integrity_error() {
    let sealed = DataKey::new(1, fixed_key(9)).seal(AAD, b"body").unwrap();
    assert!(is_integrity(
        DataKey::new(2, fixed_key(9)).open(AAD, &sealed)
    ));
    // Rewriting the version in the header does not help: the header is authenticated.
    let mut relabelled = sealed.clone();
    relabelled[1..5].copy_from_slice(&2u32.to_be_bytes());
    assert!(is_integrity(
        DataKey::new(2, fixed_key(9)).open(AAD, &relabelled)
    ));
}

#[test]
fn nonces_differ_between_seals_of_same_plaintext() {
    let key = DataKey::new(1, SecretKey::generate());
    let a = key.seal(AAD, b"same").unwrap();
    let b = key.seal(AAD, b"same").unwrap();
    assert_ne!(a[5..17], b[5..17], "nonce reused");
    assert_ne!(a, b);
}

#[test]
fn sealed_key_version_rejects_garbage() {
    assert!(sealed_key_version(&[]).is_err());
    assert!(sealed_key_version(&[1, 0, 0]).is_err());
    assert!(sealed_key_version(&[2, 0, 0, 0, 1, 0]).is_err());
}

// ---- KEK ----

#[test]
fn kek_wrap_unwrap_round_trip_and_wrong_aad_fails() {
    let dir = tempfile::tempdir().unwrap();
    let kek = Kek::create_file(&dir.path().join("kek")).unwrap();
    let data_key_bytes = [42u8; 32];
    let secret = SecretKey::from_bytes(&data_key_bytes).unwrap();
    let wrapped = kek.wrap(&secret, b"tenant-1|data|1").unwrap();
    assert!(
        !wrapped.windows(32).any(|w| w == data_key_bytes),
        "wrapped key in clear"
    );

    // The unwrapped key is the same key: it opens what the original sealed.
    let sealed = DataKey::new(1, secret).seal(AAD, b"x").unwrap();
    let unwrapped = kek.unwrap(&wrapped, b"tenant-1|data|1").unwrap();
    assert_eq!(DataKey::new(1, unwrapped).open(AAD, &sealed).unwrap(), b"x");

    assert!(matches!(
        kek.unwrap(&wrapped, b"tenant-2|data|1"),
        Err(CryptoError::Integrity)
    ));
    let mut altered = wrapped.clone();
    altered[20] ^= 1;
    assert!(matches!(
        kek.unwrap(&altered, b"tenant-1|data|1"),
        Err(CryptoError::Integrity)
    ));

    let other = Kek::create_file(&dir.path().join("kek2")).unwrap();
    assert!(matches!(
        other.unwrap(&wrapped, b"tenant-1|data|1"),
        Err(CryptoError::Integrity)
    ));
    assert_ne!(kek.key_id(), other.key_id());
}

#[test]
fn kek_file_is_0600_and_reloads_to_same_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let kek = Kek::create_file(&path).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    let text = fs::read_to_string(&path).unwrap();
    assert!(text.starts_with("carevault-kek v1\n"), "{text:?}");
    assert!(text.ends_with('\n'));

    let wrapped = kek.wrap(&SecretKey::generate(), b"aad").unwrap();
    let loaded = Kek::load_file(&path).unwrap();
    assert_eq!(loaded.key_id(), kek.key_id());
    assert!(loaded.unwrap(&wrapped, b"aad").is_ok());
}

#[test]
fn kek_file_0644_refused_0600_accepted() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    Kek::create_file(&path).unwrap();
    set_mode(&path, 0o644);
    match Kek::load_file(&path) {
        Err(CryptoError::KeyFilePermissions {
            path: reported,
            mode,
        }) => {
            assert_eq!(reported, path);
            assert_eq!(mode, 0o644);
        }
        other => panic!("expected KeyFilePermissions, got {other:?}"),
    }
    for bad in [0o640, 0o604, 0o660, 0o601, 0o610] {
        set_mode(&path, bad);
        assert!(
            matches!(
                Kek::load_file(&path),
                Err(CryptoError::KeyFilePermissions { .. })
            ),
            "mode {bad:o} accepted"
        );
    }
    set_mode(&path, 0o600);
    assert!(Kek::load_file(&path).is_ok());
    set_mode(&path, 0o400);
    assert!(Kek::load_file(&path).is_ok());
}

#[test]
fn kek_create_refuses_to_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let first = Kek::create_file(&path).unwrap();
    let before = fs::read(&path).unwrap();
    assert!(matches!(
        Kek::create_file(&path),
        Err(CryptoError::KeyFile { .. })
    ));
    assert_eq!(
        fs::read(&path).unwrap(),
        before,
        "existing key file changed"
    );
    assert_eq!(Kek::load_file(&path).unwrap().key_id(), first.key_id());
}

#[test]
fn kek_unknown_version_and_format_refused_with_advice() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("kek");
    let body = "carevault-kek v2\nAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=\n";
    fs::write(&path, body).unwrap();
    set_mode(&path, 0o600);
    let message = Kek::load_file(&path).unwrap_err().to_string();
    assert!(
        message.contains("v2") && message.contains("restore"),
        "{message}"
    );

    fs::write(&path, "hello\n").unwrap();
    let message = Kek::load_file(&path).unwrap_err().to_string();
    assert!(message.contains("carevault-kek v1"), "{message}");

    // A signing key file is not a KEK.
    let signing = dir.path().join("signing");
    SigningKey::create_file(&signing).unwrap();
    assert!(matches!(
        Kek::load_file(&signing),
        Err(CryptoError::KeyFile { .. })
    ));

    // Wrong key length.
    fs::write(&path, "carevault-kek v1\nAAAA\n").unwrap();
    assert!(matches!(
        Kek::load_file(&path),
        Err(CryptoError::KeyFile { .. })
    ));
}

#[test]
fn missing_key_file_is_an_io_error_naming_the_path() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("absent");
    let error = Kek::load_file(&path).unwrap_err();
    assert!(matches!(error, CryptoError::KeyFileIo { .. }));
    assert!(error.to_string().contains("absent"));
}

// ---- index keys ----

#[test]
fn blind_token_deterministic_and_separated() {
    let key = IndexKey::new(1, fixed_key(1));
    let again = IndexKey::new(1, fixed_key(1));
    let other = IndexKey::new(1, fixed_key(2));
    let token = key.blind_token("family", "smith");
    assert_eq!(token, key.blind_token("family", "smith"));
    assert_eq!(token, again.blind_token("family", "smith"));
    assert_ne!(token, key.blind_token("given", "smith"), "param not bound");
    assert_ne!(token, key.blind_token("family", "smyth"));
    assert_ne!(token, other.blind_token("family", "smith"), "key not bound");
    // The separator keeps the split between param and term unambiguous.
    assert_ne!(key.blind_token("ab", "c"), key.blind_token("a", "bc"));
    assert_eq!(key.version(), 1);
}

#[test]
fn blind_token_matches_specified_construction() {
    use aws_lc_rs::hmac;
    let key = IndexKey::new(1, fixed_key(3));
    let reference = hmac::sign(
        &hmac::Key::new(hmac::HMAC_SHA256, &[3; 32]),
        b"family\0smith",
    );
    assert_eq!(key.blind_token("family", "smith"), reference.as_ref()[..16]);
}

#[test]
fn mac_verifies_and_rejects_tampering() {
    let key = IndexKey::new(1, SecretKey::generate());
    let tag = key.mac("cursor", b"page=2");
    assert!(key.verify_mac("cursor", b"page=2", &tag));
    for index in 0..tag.len() {
        let mut flipped = tag;
        flipped[index] ^= 1;
        assert!(
            !key.verify_mac("cursor", b"page=2", &flipped),
            "flip at {index} accepted"
        );
    }
    assert!(!key.verify_mac("cursor", b"page=3", &tag));
    assert!(
        !key.verify_mac("other-label", b"page=2", &tag),
        "label not bound"
    );
    assert!(
        !key.verify_mac("cursor", b"page=2", &tag[..16]),
        "truncated tag accepted"
    );
    assert!(!key.verify_mac("cursor", b"page=2", &[]));
    assert!(!IndexKey::new(1, SecretKey::generate()).verify_mac("cursor", b"page=2", &tag));
    // The MAC key is a derived subkey, not the blind-index key.
    use aws_lc_rs::hmac;
    let same = IndexKey::new(1, fixed_key(5));
    let direct = hmac::sign(&hmac::Key::new(hmac::HMAC_SHA256, &[5; 32]), b"page=2");
    assert_ne!(same.mac("cursor", b"page=2"), direct.as_ref());
    assert_ne!(same.mac("cursor", b"x"), same.mac("cursors", b"x"));
}

// ---- signing ----

#[test]
fn sign_verify_and_tampering_fails() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing");
    let key = SigningKey::create_file(&path).unwrap();
    assert_eq!(mode_of(&path), 0o600);
    assert!(
        fs::read_to_string(&path)
            .unwrap()
            .starts_with("carevault-signing-key v1\n")
    );
    let public = key.verifying_key();
    let signature = key.sign(b"checkpoint 1");
    assert!(public.verify(b"checkpoint 1", &signature));
    assert!(!public.verify(b"checkpoint 2", &signature));
    for index in [0, 31, 32, 63] {
        let mut flipped = signature;
        flipped[index] ^= 1;
        assert!(
            !public.verify(b"checkpoint 1", &flipped),
            "flip at {index} accepted"
        );
    }
    assert!(!public.verify(b"checkpoint 1", &signature[..63]));

    let restored = VerifyingKey::from_bytes(&public.to_bytes()).unwrap();
    assert_eq!(restored, public);
    assert!(VerifyingKey::from_bytes(&[0; 31]).is_err());

    let loaded = SigningKey::load_file(&path).unwrap();
    assert_eq!(loaded.verifying_key(), public);
    assert!(public.verify(b"m", &loaded.sign(b"m")));

    let other = SigningKey::create_file(&dir.path().join("other")).unwrap();
    assert!(!other.verifying_key().verify(b"checkpoint 1", &signature));
}

#[test]
fn signing_key_file_permissions_and_overwrite() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("signing");
    SigningKey::create_file(&path).unwrap();
    assert!(matches!(
        SigningKey::create_file(&path),
        Err(CryptoError::KeyFile { .. })
    ));
    set_mode(&path, 0o644);
    assert!(matches!(
        SigningKey::load_file(&path),
        Err(CryptoError::KeyFilePermissions { mode: 0o644, .. })
    ));
    set_mode(&path, 0o600);
    assert!(SigningKey::load_file(&path).is_ok());
}

// ---- printing secrets ----

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

fn assert_no_key_bytes(debug: &str, key: &[u8]) {
    assert!(debug.contains("[redacted]"), "{debug}");
    assert!(!debug.contains(&hex(key)), "{debug}");
    assert!(!debug.contains(&hex(key).to_uppercase()), "{debug}");
    assert!(!debug.contains(&format!("{key:?}")), "{debug}");
    assert!(!debug.contains(&format!("{:?}", &key[..4])), "{debug}");
}

#[test]
fn debug_output_never_contains_key_bytes() {
    let bytes: [u8; 32] = std::array::from_fn(|i| 0xA0 + i as u8);
    assert_no_key_bytes(
        &format!("{:?}", SecretKey::from_bytes(&bytes).unwrap()),
        &bytes,
    );
    assert_no_key_bytes(
        &format!(
            "{:?}",
            DataKey::new(3, SecretKey::from_bytes(&bytes).unwrap())
        ),
        &bytes,
    );
    assert_no_key_bytes(
        &format!(
            "{:#?}",
            IndexKey::new(3, SecretKey::from_bytes(&bytes).unwrap())
        ),
        &bytes,
    );

    let dir = tempfile::tempdir().unwrap();
    let kek_path = dir.path().join("kek");
    let kek = Kek::create_file(&kek_path).unwrap();
    let kek_text = fs::read_to_string(&kek_path).unwrap();
    let kek_b64 = kek_text.lines().nth(1).unwrap();
    let kek_debug = format!("{kek:?}");
    assert!(
        kek_debug.contains("[redacted]") && !kek_debug.contains(kek_b64),
        "{kek_debug}"
    );

    let signing_path = dir.path().join("signing");
    let signing = SigningKey::create_file(&signing_path).unwrap();
    let signing_text = fs::read_to_string(&signing_path).unwrap();
    let signing_b64 = signing_text.lines().nth(1).unwrap();
    let signing_debug = format!("{signing:?}");
    assert!(signing_debug.contains("[redacted]"), "{signing_debug}");
    assert!(
        !signing_debug.contains(&signing_b64[signing_b64.len() - 20..]),
        "{signing_debug}"
    );

    // Error messages name files, never contents.
    fs::write(&kek_path, format!("carevault-kek v1\n{kek_b64}\nextra\n")).unwrap();
    let message = format!(
        "{:?} {}",
        Kek::load_file(&kek_path).unwrap_err(),
        Kek::load_file(&kek_path).unwrap_err()
    );
    assert!(!message.contains(kek_b64), "{message}");
}

// ---- primitives ----

#[test]
fn primitives_behave() {
    let a: [u8; 32] = random_bytes();
    let b: [u8; 32] = random_bytes();
    assert_ne!(a, b);
    assert_eq!(
        hex(&sha256(b"abc")),
        "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
    );
    assert!(constant_time_eq(b"same", b"same"));
    assert!(!constant_time_eq(b"same", b"sane"));
    assert!(!constant_time_eq(b"same", b"same+"));
    assert!(constant_time_eq(b"", b""));
    assert!(SecretKey::from_bytes(&[0; 31]).is_err());
}
