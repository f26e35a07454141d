//! Password hashing (Argon2id) and the policy for new passwords.
//!
//! Guarantees:
//! - Hashes are Argon2id PHC strings with a fresh random salt; the cost never
//!   goes below OWASP's minimum for Argon2id (19 MiB memory, 2 iterations,
//!   1 lane: OWASP Password Storage Cheat Sheet, "Argon2id", checked 2026).
//!   [`PasswordParams`] cannot be built below it.
//! - Verification compares in constant time (the argon2 crate compares the
//!   derived output with `subtle`), and [`dummy_verify`] costs the same work
//!   for unknown accounts, so timing does not reveal whether an account exists.
//! - Calibration takes the timer as a function, so nothing here reads the clock.
//! - New passwords follow NIST SP 800-63B: length 12 to 128 characters, no
//!   composition rules, and a refusal of guessable passwords (zxcvbn score
//!   below 3, plus widely published example passphrases) with a sentence the
//!   person can act on.

use argon2::{Algorithm, Argon2, PasswordHash, PasswordHasher, PasswordVerifier, Version};
use zeroize::Zeroizing;

/// Fewest characters a new password may have (counted as Unicode scalar values).
pub const MIN_PASSWORD_CHARS: usize = 12;
/// Most characters a new password may have; long enough for any passphrase.
pub const MAX_PASSWORD_CHARS: usize = 128;

/// Calibration stops growing memory here: the server hashes several logins at
/// once, and 64 MiB each is what RFC 9106's second recommended option uses.
const MAX_CALIBRATED_MEMORY_KIB: u32 = 64 * 1024;
/// Calibration stops adding passes here.
const MAX_CALIBRATED_ITERATIONS: u32 = 10;
/// Salt used only by [`dummy_verify`]; its output is thrown away.
const DUMMY_SALT: &[u8; 16] = b"carevault-dummy!";

/// Argon2id cost parameters. Always at least [`PasswordParams::OWASP_MINIMUM`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PasswordParams {
    memory_kib: u32,
    iterations: u32,
    parallelism: u32,
}

/// Why hashing failed (never because of the password's content).
#[derive(Debug, thiserror::Error)]
pub enum PasswordError {
    #[error("Argon2id parameters below the OWASP minimum (m=19456 KiB, t=2, p=1)")]
    BelowMinimum,
    #[error("password hashing failed: {0}")]
    Hashing(String),
}

impl PasswordParams {
    /// OWASP Password Storage Cheat Sheet: "Use Argon2id with a minimum
    /// configuration of 19 MiB of memory, an iteration count of 2, and 1
    /// degree of parallelism."
    pub const OWASP_MINIMUM: PasswordParams = PasswordParams {
        memory_kib: 19_456,
        iterations: 2,
        parallelism: 1,
    };

    /// Parameters as given, refused if any is below the OWASP minimum.
    pub fn new(memory_kib: u32, iterations: u32, parallelism: u32) -> Result<Self, PasswordError> {
        let floor = Self::OWASP_MINIMUM;
        if memory_kib < floor.memory_kib
            || iterations < floor.iterations
            || parallelism < floor.parallelism
        {
            return Err(PasswordError::BelowMinimum);
        }
        Ok(Self {
            memory_kib,
            iterations,
            parallelism,
        })
    }

    pub fn memory_kib(&self) -> u32 {
        self.memory_kib
    }

    pub fn iterations(&self) -> u32 {
        self.iterations
    }

    pub fn parallelism(&self) -> u32 {
        self.parallelism
    }

    /// The strongest parameters whose measured cost stays within `target_ms`,
    /// never below the OWASP minimum (which is returned even if it is slower
    /// than the target).
    ///
    /// `measure` hashes once with the given parameters and returns the
    /// milliseconds it took; the caller owns the clock. Memory doubles first
    /// (memory hardness is what slows GPU attackers) up to 64 MiB, then
    /// iterations grow one at a time up to 10. One lane, because this build
    /// computes lanes one after another.
    pub fn calibrate(target_ms: u64, measure: &dyn Fn(&PasswordParams) -> u64) -> PasswordParams {
        let mut chosen = Self::OWASP_MINIMUM;
        if measure(&chosen) >= target_ms {
            return chosen;
        }
        loop {
            let candidate = if chosen.memory_kib < MAX_CALIBRATED_MEMORY_KIB {
                PasswordParams {
                    memory_kib: (chosen.memory_kib.saturating_mul(2))
                        .min(MAX_CALIBRATED_MEMORY_KIB),
                    ..chosen
                }
            } else if chosen.iterations < MAX_CALIBRATED_ITERATIONS {
                PasswordParams {
                    iterations: chosen.iterations + 1,
                    ..chosen
                }
            } else {
                return chosen;
            };
            if measure(&candidate) > target_ms {
                return chosen;
            }
            chosen = candidate;
        }
    }

    fn hasher(&self) -> Result<Argon2<'static>, PasswordError> {
        let params = argon2::Params::new(self.memory_kib, self.iterations, self.parallelism, None)
            .map_err(|error| PasswordError::Hashing(error.to_string()))?;
        Ok(Argon2::new(Algorithm::Argon2id, Version::V0x13, params))
    }
}

/// Hashes `password` with a fresh random salt; returns a PHC string such as
/// `$argon2id$v=19$m=19456,t=2,p=1$<salt>$<hash>`.
pub fn hash_password(password: &str, params: &PasswordParams) -> Result<String, PasswordError> {
    let hash = params
        .hasher()?
        .hash_password(password.as_bytes())
        .map_err(|error| PasswordError::Hashing(error.to_string()))?;
    Ok(hash.to_string())
}

/// True only if `phc` is an Argon2id hash of `password`. A malformed hash, or
/// one made with another algorithm, is false.
pub fn verify_password(password: &str, phc: &str) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return false;
    };
    if hash.algorithm != argon2::ARGON2ID_IDENT {
        return false;
    }
    // The verifier takes its cost parameters from the PHC string.
    Argon2::default()
        .verify_password(password.as_bytes(), &hash)
        .is_ok()
}

/// Does the work of one verification and always fails: call it when the
/// account does not exist, with the parameters new hashes use, so the answer
/// takes as long as a wrong password on a real account.
pub fn dummy_verify(password: &str, params: &PasswordParams) -> bool {
    let mut output = Zeroizing::new([0u8; 32]);
    if let Ok(hasher) = params.hasher() {
        let _ignored = hasher.hash_password_into(password.as_bytes(), DUMMY_SALT, &mut output[..]);
    }
    // Keep the computation from being optimised away.
    std::hint::black_box(&output);
    false
}

/// True if `phc` was made with parameters other than `params` (or cannot be
/// read): rehash after the next successful login.
pub fn needs_rehash(phc: &str, params: &PasswordParams) -> bool {
    let Ok(hash) = PasswordHash::new(phc) else {
        return true;
    };
    match argon2::Params::try_from(&hash) {
        Ok(stored) => {
            hash.algorithm != argon2::ARGON2ID_IDENT
                || stored.m_cost() != params.memory_kib
                || stored.t_cost() != params.iterations
                || stored.p_cost() != params.parallelism
        }
        Err(_) => true,
    }
}

/// Why a new password was refused. `Display` is a sentence for the person
/// choosing it; it never contains the password.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PasswordRejection {
    #[error("Use at least {MIN_PASSWORD_CHARS} characters; a few unrelated words work well.")]
    TooShort,
    #[error("Use at most {MAX_PASSWORD_CHARS} characters.")]
    TooLong,
    #[error("{reason}")]
    TooGuessable { reason: String },
}

/// Passphrases published as examples so widely that attackers try them first
/// (and their spaced, capitalised, punctuated or digit-suffixed variants).
/// zxcvbn scores some of them as strong because it sees four uncommon words.
const PUBLISHED_EXAMPLES: &[&str] = &[
    "correcthorsebatterystaple",
    "thequickbrownfoxjumpsoverthelazydog",
    "iwanttobelieve",
    "maytheforcebewithyou",
];

/// Checks a password someone is choosing. `context_words` are things an
/// attacker would know (email, name, organisation): passwords built from
/// them are refused.
pub fn check_new_password(password: &str, context_words: &[&str]) -> Result<(), PasswordRejection> {
    let length = password.chars().count();
    if length < MIN_PASSWORD_CHARS {
        return Err(PasswordRejection::TooShort);
    }
    if length > MAX_PASSWORD_CHARS {
        return Err(PasswordRejection::TooLong);
    }
    if is_published_example(password) {
        return Err(PasswordRejection::TooGuessable {
            reason: "This is a well-known example passphrase that attackers try first. \
                     Choose your own unrelated words."
                .to_owned(),
        });
    }
    let user_inputs = expand_context_words(context_words);
    let user_inputs: Vec<&str> = user_inputs.iter().map(String::as_str).collect();
    let estimate = zxcvbn::zxcvbn(password, &user_inputs);
    if estimate.score() < zxcvbn::Score::Three {
        return Err(PasswordRejection::TooGuessable {
            reason: guessable_reason(estimate.feedback()),
        });
    }
    // zxcvbn gives a name plus a year about 10^8 guesses, just enough for
    // score 3; an attacker who knows the person starts there. So a password
    // that contains a context word must be strong without it.
    let remainder = without_context_words(password, &user_inputs);
    if remainder.len() < password.len()
        && zxcvbn::zxcvbn(&remainder, &user_inputs).score() < zxcvbn::Score::Three
    {
        return Err(PasswordRejection::TooGuessable {
            reason: "Your name, email address or organisation makes this easy to guess for \
                     someone who knows you. Leave them out or add a few unrelated words."
                .to_owned(),
        });
    }
    Ok(())
}

/// `password` lower-cased with every context word of 3 or more characters removed.
fn without_context_words(password: &str, context_words: &[&str]) -> Zeroizing<String> {
    let mut remainder = Zeroizing::new(password.to_lowercase());
    for word in context_words
        .iter()
        .filter(|word| word.chars().count() >= 3)
    {
        *remainder = remainder.replace(word, "");
    }
    remainder
}

/// Letters and digits of the password, lower-cased, with common digit and
/// symbol substitutions undone, then compared with the published examples
/// allowing up to 4 extra characters (a year, "1!", ...).
fn is_published_example(password: &str) -> bool {
    let reduced: String = password
        .chars()
        .filter_map(|c| match c.to_ascii_lowercase() {
            '@' | '4' => Some('a'),
            '3' => Some('e'),
            '1' | '!' => Some('i'),
            '0' => Some('o'),
            '$' | '5' => Some('s'),
            '7' => Some('t'),
            c if c.is_alphanumeric() => Some(c),
            _ => None,
        })
        .collect();
    PUBLISHED_EXAMPLES
        .iter()
        .any(|example| reduced.contains(example) && reduced.len() <= example.len() + 4)
}

/// Each context word, and its pieces split at non-alphanumerics
/// ("jane.doe@example.org" gives "jane", "doe", "example", "org").
fn expand_context_words(context_words: &[&str]) -> Vec<String> {
    let mut inputs = Vec::new();
    for word in context_words {
        let lower = word.to_lowercase();
        for piece in lower.split(|c: char| !c.is_alphanumeric()) {
            if piece.chars().count() >= 3 && piece != lower {
                inputs.push(piece.to_owned());
            }
        }
        if !lower.is_empty() {
            inputs.push(lower);
        }
    }
    inputs
}

fn guessable_reason(feedback: Option<&zxcvbn::feedback::Feedback>) -> String {
    let mut sentences: Vec<String> = Vec::new();
    if let Some(feedback) = feedback {
        if let Some(warning) = feedback.warning() {
            sentences.push(warning.to_string());
        }
        sentences.extend(feedback.suggestions().iter().map(ToString::to_string));
    }
    if sentences.is_empty() {
        sentences.push("This password would be easy to guess. Add another word or two; uncommon words are better.".to_owned());
    }
    sentences.join(" ")
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::cell::RefCell;

    fn guessable(password: &str) -> String {
        match check_new_password(password, &[]) {
            Err(PasswordRejection::TooGuessable { reason }) => reason,
            other => panic!("{password:?} should be refused as guessable, got {other:?}"),
        }
    }

    #[test]
    fn common_and_published_passwords_are_refused_with_a_reason() {
        for password in [
            "correct horse battery staple",
            "correcthorsebatterystaple",
            "Correct-Horse-Battery-Staple",
            "CorrectHorseBatteryStaple1!",
            "c0rrect h0rse b4ttery st4ple",
            "Password1234",
            "aaaaaaaaaaaa",
            "qwertyuiopasdf",
            "123456789012",
        ] {
            let reason = guessable(password);
            assert!(reason.ends_with('.'), "{password:?}: {reason:?}");
            assert!(
                !reason.contains(password),
                "the reason must not echo the password"
            );
        }
        assert!(guessable("aaaaaaaaaaaa").contains("Repeats"));
    }

    #[test]
    fn length_is_counted_in_characters() {
        assert_eq!(
            check_new_password("short words", &[]),
            Err(PasswordRejection::TooShort)
        );
        // 11 characters but 22 bytes: still too short.
        assert_eq!(
            check_new_password("éééééééééé!", &[]),
            Err(PasswordRejection::TooShort)
        );
        let long = "vivid lantern ".repeat(10);
        assert_eq!(
            check_new_password(&long, &[]),
            Err(PasswordRejection::TooLong)
        );
        assert_eq!(
            PasswordRejection::TooShort.to_string(),
            "Use at least 12 characters; a few unrelated words work well."
        );
    }

    #[test]
    fn random_passphrases_are_accepted_without_composition_rules() {
        assert_eq!(
            check_new_password("gravel orbit tundra pickle saxophone", &[]),
            Ok(())
        );
        assert_eq!(check_new_password("mqz7 vlot krafe dunsib", &[]), Ok(()));
    }

    #[test]
    fn context_words_make_personal_passwords_guessable() {
        let context = [
            "margaret.halloway@stmarys-care.example",
            "Margaret Halloway",
        ];
        // zxcvbn alone scores this 3 (about 10^8 guesses).
        assert_eq!(check_new_password("margarethalloway1987", &[]), Ok(()));
        for password in [
            "margarethalloway1987",
            "MargaretHalloway1987",
            "Halloway.Margaret",
            "stmarys-care2026!",
        ] {
            assert!(
                matches!(
                    check_new_password(password, &context),
                    Err(PasswordRejection::TooGuessable { .. })
                ),
                "{password}"
            );
        }
        // Context words are fine inside an otherwise strong password.
        assert_eq!(
            check_new_password("margaret gravel orbit tundra pickle", &context),
            Ok(())
        );
    }

    #[test]
    fn hash_and_verify() {
        let params = PasswordParams::OWASP_MINIMUM;
        let phc = hash_password("gravel orbit tundra pickle", &params).unwrap();
        assert!(phc.starts_with("$argon2id$v=19$m=19456,t=2,p=1$"), "{phc}");
        assert_ne!(phc, "gravel orbit tundra pickle");
        assert!(verify_password("gravel orbit tundra pickle", &phc));
        assert!(!verify_password("gravel orbit tundra pickles", &phc));
        assert!(!verify_password("", &phc));
        assert!(!verify_password(
            "gravel orbit tundra pickle",
            "not a phc string"
        ));
        // Same password, new salt, different hash.
        assert_ne!(
            phc,
            hash_password("gravel orbit tundra pickle", &params).unwrap()
        );
        assert!(!dummy_verify("gravel orbit tundra pickle", &params));
        assert!(!needs_rehash(&phc, &params));
        assert!(needs_rehash(
            &phc,
            &PasswordParams::new(40_000, 2, 1).unwrap()
        ));
    }

    #[test]
    fn other_argon2_variants_are_not_accepted() {
        let params = argon2::Params::new(19_456, 2, 1, None).unwrap();
        let argon2i = Argon2::new(Algorithm::Argon2i, Version::V0x13, params);
        let phc = argon2i
            .hash_password(b"gravel orbit tundra pickle")
            .unwrap()
            .to_string();
        assert!(phc.starts_with("$argon2i$"));
        assert!(!verify_password("gravel orbit tundra pickle", &phc));
    }

    #[test]
    fn parameters_never_go_below_the_owasp_minimum() {
        assert!(PasswordParams::new(19_455, 2, 1).is_err());
        assert!(PasswordParams::new(19_456, 1, 1).is_err());
        assert!(PasswordParams::new(19_456, 2, 0).is_err());
        assert_eq!(
            PasswordParams::new(19_456, 2, 1).unwrap(),
            PasswordParams::OWASP_MINIMUM
        );
        // A slow machine keeps the minimum even over the target.
        let slow = |_: &PasswordParams| 5_000;
        assert_eq!(
            PasswordParams::calibrate(500, &slow),
            PasswordParams::OWASP_MINIMUM
        );
    }

    #[test]
    fn calibration_picks_the_strongest_within_target() {
        // A fake machine: 1 ms per MiB per pass.
        let measured = RefCell::new(Vec::new());
        let model = |p: &PasswordParams| {
            measured.borrow_mut().push(*p);
            u64::from(p.memory_kib / 1024 * p.iterations)
        };
        let chosen = PasswordParams::calibrate(300, &model);
        // 19 -> 38 -> 64 MiB, then passes: 64*4 = 256 <= 300 < 64*5.
        assert_eq!(chosen, PasswordParams::new(65_536, 4, 1).unwrap());
        assert_eq!(
            measured.borrow().first(),
            Some(&PasswordParams::OWASP_MINIMUM)
        );
        // 19 MiB * 2 = 38 ms fits 80 ms; 38 MiB * 2 = 76 ms fits; 64 MiB * 2 does not.
        let modest = PasswordParams::calibrate(80, &model);
        assert_eq!(modest, PasswordParams::new(38_912, 2, 1).unwrap());
    }
}
