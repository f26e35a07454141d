//! Time-based one-time passwords (RFC 6238): HMAC-SHA1, 6 digits, 30-second
//! steps, one step of clock skew either way. These are the settings that
//! Google Authenticator, Microsoft Authenticator and 1Password all honour
//! (several apps silently ignore other algorithms or lengths).
//!
//! Guarantees:
//! - A code is accepted once: [`verify_totp`] refuses any step at or before
//!   the last step the caller recorded, so a replayed or older code fails.
//! - Seeds are [`TotpSecret`]s: no `Debug`, wiped on drop, and readable only
//!   through methods named `reveal_*`.
//! - Time is an input (`now_s`, unix seconds); nothing here reads the clock.

use subtle::ConstantTimeEq;
use totp_rs::{Algorithm, Builder, Totp};
use zeroize::Zeroizing;

/// Length of a generated seed: 160 bits, as RFC 4226 section 4 recommends.
pub const TOTP_SECRET_BYTES: usize = 20;
/// Seconds per step.
pub const TOTP_STEP_SECONDS: i64 = 30;
/// Digits per code.
pub const TOTP_DIGITS: usize = 6;
/// Steps accepted either side of the current one.
pub const TOTP_SKEW_STEPS: i64 = 1;

/// Why a TOTP seed or enrolment link could not be made.
#[derive(Debug, thiserror::Error)]
pub enum TotpError {
    #[error("the system random number generator failed")]
    Randomness,
    #[error("a TOTP seed must be 16 to 64 bytes")]
    SeedLength,
    #[error("cannot build the enrolment link: {0}")]
    Enrolment(String),
    #[error("cannot draw the QR code: {0}")]
    QrCode(String),
}

/// A TOTP seed. Deliberately has no `Debug` or `Display`.
pub struct TotpSecret {
    bytes: Zeroizing<Vec<u8>>,
}

impl TotpSecret {
    /// A fresh 20-byte seed from the operating system's random generator.
    pub fn generate() -> Result<Self, TotpError> {
        let mut bytes = Zeroizing::new(vec![0u8; TOTP_SECRET_BYTES]);
        aws_lc_rs::rand::fill(&mut bytes[..]).map_err(|_| TotpError::Randomness)?;
        Ok(Self { bytes })
    }

    /// A seed read back from storage (after unsealing). RFC 4226 asks for
    /// at least 128 bits.
    pub fn from_bytes(bytes: &[u8]) -> Result<Self, TotpError> {
        if !(16..=64).contains(&bytes.len()) {
            return Err(TotpError::SeedLength);
        }
        Ok(Self {
            bytes: Zeroizing::new(bytes.to_vec()),
        })
    }

    /// Declassifies the seed as unpadded base32, for a person to type into
    /// an authenticator app that cannot scan the QR code. Show it once, at
    /// enrolment.
    pub fn reveal_base32(&self) -> Zeroizing<String> {
        Zeroizing::new(self.rfc_totp(None).secret().to_base32())
    }

    /// Declassifies the raw seed so it can be sealed for storage.
    pub fn reveal_bytes(&self) -> &[u8] {
        &self.bytes
    }

    /// The totp-rs generator for this seed. `Totp` derives `Debug`, so it
    /// never leaves this module; its `zeroize` feature wipes its copy.
    fn rfc_totp(&self, label: Option<(&str, &str)>) -> Totp {
        let builder = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(TOTP_DIGITS as u8)
            .with_skew(TOTP_SKEW_STEPS as u16)
            .with_step_duration(TOTP_STEP_SECONDS as u64)
            .with_secret(self.bytes.to_vec());
        let builder = match label {
            Some((issuer, account)) => builder.with_issuer(Some(issuer)).with_account_name(account),
            None => builder,
        };
        // `build_noncompliant` skips totp-rs's checks, which hold anyway: the
        // settings above are fixed RFC values, the seed length was checked on
        // construction, and `otpauth_url` checks the label first.
        builder.build_noncompliant()
    }

    /// The code for time step `step`, with `digits` digits.
    fn code_at_step(&self, step: i64, digits: u8) -> String {
        let totp = Builder::new()
            .with_algorithm(Algorithm::SHA1)
            .with_digits(digits)
            .with_step_duration(TOTP_STEP_SECONDS as u64)
            .with_secret(self.bytes.to_vec())
            .build_noncompliant();
        let seconds = u64::try_from(step.saturating_mul(TOTP_STEP_SECONDS)).unwrap_or(0);
        totp.generate(seconds).to_string()
    }
}

/// The `otpauth://totp/...` link an authenticator app reads from the QR
/// code. It contains the seed, hence `Zeroizing`. `issuer` and `account`
/// must not contain `:` (the Key URI format uses it as the separator).
pub fn otpauth_url(
    secret: &TotpSecret,
    issuer: &str,
    account: &str,
) -> Result<Zeroizing<String>, TotpError> {
    if issuer.contains(':') || account.contains(':') || account.is_empty() {
        return Err(TotpError::Enrolment(
            "issuer and account must be non-empty and contain no ':'".to_owned(),
        ));
    }
    secret
        .rfc_totp(Some((issuer, account)))
        .to_url()
        .map(Zeroizing::new)
        .map_err(|error| TotpError::Enrolment(error.to_string()))
}

/// The QR code of `url` as an `<svg>` element for inline HTML (no XML
/// declaration, no image dependency, no external resources).
pub fn qr_svg(url: &str) -> Result<String, TotpError> {
    let code = qrcode::QrCode::with_error_correction_level(url.as_bytes(), qrcode::EcLevel::M)
        .map_err(|error| TotpError::QrCode(error.to_string()))?;
    let document = code
        .render::<qrcode::render::svg::Color<'_>>()
        .min_dimensions(200, 200)
        .quiet_zone(true)
        .build();
    let svg = match document.find("<svg") {
        Some(start) => document.get(start..).unwrap_or(&document),
        None => &document,
    };
    Ok(svg.to_owned())
}

/// Checks a 6-digit code typed at `now_s` (unix seconds). Returns the time
/// step that matched, which the caller stores as the new `last_used_step`;
/// `None` if the code is malformed, wrong, outside ±1 step, or for a step at
/// or before `last_used_step` (each step is accepted once).
///
/// Spaces are ignored ("123 456" as apps display it); anything else that is
/// not exactly six ASCII digits is refused.
pub fn verify_totp(
    secret: &TotpSecret,
    code: &str,
    now_s: i64,
    last_used_step: Option<i64>,
) -> Option<i64> {
    let typed: Zeroizing<String> = Zeroizing::new(code.chars().filter(|c| *c != ' ').collect());
    if typed.len() != TOTP_DIGITS || !typed.bytes().all(|b| b.is_ascii_digit()) || now_s < 0 {
        return None;
    }
    let current = now_s / TOTP_STEP_SECONDS;
    let mut matched = None;
    // Every candidate is computed and compared, so timing does not say
    // which step matched.
    for step in (current - TOTP_SKEW_STEPS..=current + TOTP_SKEW_STEPS).rev() {
        if step < 0 {
            continue;
        }
        let expected = Zeroizing::new(secret.code_at_step(step, TOTP_DIGITS as u8));
        let fresh = last_used_step.is_none_or(|last| step > last);
        if bool::from(expected.as_bytes().ct_eq(typed.as_bytes())) && fresh {
            matched = Some(step);
        }
    }
    matched
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;

    /// RFC 6238 appendix B: the SHA1 seed is the ASCII "12345678901234567890".
    fn rfc_secret() -> TotpSecret {
        TotpSecret::from_bytes(b"12345678901234567890").unwrap()
    }

    /// RFC 6238 appendix B, SHA1 column: (time, 8-digit TOTP).
    const RFC_VECTORS: [(i64, &str); 6] = [
        (59, "94287082"),
        (1_111_111_109, "07081804"),
        (1_111_111_111, "14050471"),
        (1_234_567_890, "89005924"),
        (2_000_000_000, "69279037"),
        (20_000_000_000, "65353130"),
    ];

    #[test]
    fn rfc_6238_sha1_vectors() {
        let secret = rfc_secret();
        for (time, expected) in RFC_VECTORS {
            let step = time / TOTP_STEP_SECONDS;
            assert_eq!(secret.code_at_step(step, 8), expected, "t={time}");
            // A 6-digit code is the 8-digit value mod 10^6: its last 6 digits.
            let six = &expected[2..];
            assert_eq!(
                verify_totp(&secret, six, time, None),
                Some(step),
                "t={time}"
            );
        }
    }

    #[test]
    fn each_step_is_accepted_once() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        let step = verify_totp(&secret, "050471", now, None).unwrap();
        // Same code again, even a second later: refused.
        assert_eq!(verify_totp(&secret, "050471", now + 1, Some(step)), None);
        // The previous step's code, still within skew, is older: refused.
        let previous = secret.code_at_step(step - 1, 6);
        assert_eq!(verify_totp(&secret, &previous, now, None), Some(step - 1));
        assert_eq!(verify_totp(&secret, &previous, now, Some(step)), None);
        // The next step's code is newer: accepted.
        let next = secret.code_at_step(step + 1, 6);
        assert_eq!(verify_totp(&secret, &next, now, Some(step)), Some(step + 1));
    }

    #[test]
    fn one_step_of_skew_either_way_and_no_more() {
        let secret = rfc_secret();
        let now = 1_234_567_890;
        let current = now / TOTP_STEP_SECONDS;
        for offset in [-1, 0, 1] {
            let code = secret.code_at_step(current + offset, 6);
            assert_eq!(
                verify_totp(&secret, &code, now, None),
                Some(current + offset)
            );
        }
        for offset in [-3, -2, 2, 3] {
            let code = secret.code_at_step(current + offset, 6);
            assert_eq!(
                verify_totp(&secret, &code, now, None),
                None,
                "offset {offset}"
            );
        }
    }

    #[test]
    fn malformed_codes_are_refused() {
        let secret = rfc_secret();
        let now = 1_111_111_111;
        assert_eq!(verify_totp(&secret, "050 471", now, None), Some(now / 30));
        for code in [
            "",
            "05047",
            "0504711",
            "+50471",
            "05047a",
            "٠٥٠٤٧١",
            "050-471",
            "14050471",
        ] {
            assert_eq!(verify_totp(&secret, code, now, None), None, "{code:?}");
        }
        assert_eq!(verify_totp(&secret, "050471", -5, None), None);
    }

    #[test]
    fn generated_secrets_and_enrolment_link() {
        let secret = TotpSecret::generate().unwrap();
        assert_eq!(secret.reveal_bytes().len(), TOTP_SECRET_BYTES);
        assert_ne!(
            secret.reveal_bytes(),
            TotpSecret::generate().unwrap().reveal_bytes()
        );
        let base32 = secret.reveal_base32();
        assert_eq!(base32.len(), 32, "20 bytes are 32 base32 characters");

        let url = otpauth_url(&rfc_secret(), "carevault", "jane.doe@example.org").unwrap();
        assert_eq!(
            url.as_str(),
            "otpauth://totp/carevault:jane.doe%40example.org?secret=GEZDGNBVGY3TQOJQGEZDGNBVGY3TQOJQ&issuer=carevault"
        );
        assert!(otpauth_url(&rfc_secret(), "care:vault", "jane").is_err());
        assert!(otpauth_url(&rfc_secret(), "carevault", "").is_err());
        assert!(TotpSecret::from_bytes(&[0u8; 10]).is_err());
    }

    #[test]
    fn qr_code_is_an_inline_svg() {
        let svg = qr_svg("otpauth://totp/carevault:jane?secret=GEZDGNBVGY3TQOJQ&issuer=carevault")
            .unwrap();
        assert!(svg.starts_with("<svg"), "{}", &svg[..40]);
        assert!(svg.trim_end().ends_with("</svg>"));
        assert!(!svg.contains("<?xml") && !svg.contains("<script") && !svg.contains("href"));
    }
}
