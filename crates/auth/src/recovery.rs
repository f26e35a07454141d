//! Single-use recovery codes, for a person who has lost their second factor.
//!
//! Guarantees:
//! - Each code carries 60 random bits: 12 characters from Crockford's base32
//!   alphabet (no i, l, o, u), shown as `k7p2-9xqa-m3vd`.
//! - Only SHA-256 hashes of the normalised codes are stored. A fast hash is
//!   enough here, unlike for passwords: a code is uniformly random with 60
//!   bits, so guessing one from its hash costs about 2^59 hashes per code,
//!   and online guessing is throttled. No salt is needed for the same reason.
//! - Lookup normalises what a person types (case, spaces, dashes, and the
//!   letters Crockford treats as digits: o→0, i/l→1) and compares every
//!   stored hash in constant time.
//! - Single use is the caller's job: remove (or mark) the matched hash in the
//!   same transaction that accepts it.

use subtle::ConstantTimeEq;
use zeroize::Zeroizing;

/// Codes issued at a time.
pub const RECOVERY_CODE_COUNT: usize = 10;
/// Characters per code, without the dashes (5 bits each: 60 bits).
const CODE_CHARS: usize = 12;
/// Crockford's base32 alphabet, lower case: 32 symbols, so 5 random bits map
/// to one symbol without bias.
const ALPHABET: &[u8; 32] = b"0123456789abcdefghjkmnpqrstvwxyz";

/// Why codes could not be generated.
#[derive(Debug, thiserror::Error)]
pub enum RecoveryError {
    #[error("the system random number generator failed")]
    Randomness,
}

/// A fresh set of codes: `(shown once to the person, stored hashes)`, in
/// the same order. The shown codes are wiped when dropped.
pub fn generate_recovery_codes() -> Result<(Vec<Zeroizing<String>>, Vec<String>), RecoveryError> {
    let mut shown = Vec::with_capacity(RECOVERY_CODE_COUNT);
    let mut stored = Vec::with_capacity(RECOVERY_CODE_COUNT);
    for _ in 0..RECOVERY_CODE_COUNT {
        let mut random = Zeroizing::new([0u8; CODE_CHARS]);
        aws_lc_rs::rand::fill(&mut random[..]).map_err(|_| RecoveryError::Randomness)?;
        let mut code = Zeroizing::new(String::with_capacity(CODE_CHARS + 2));
        for (position, byte) in random.iter().enumerate() {
            if position > 0 && position % 4 == 0 {
                code.push('-');
            }
            // `byte & 0x1f` is below 32, the alphabet's length.
            code.push(char::from(ALPHABET[usize::from(byte & 0x1f)]));
        }
        let normalised = normalise(&code).ok_or(RecoveryError::Randomness)?;
        stored.push(hash_code(&normalised));
        shown.push(code);
    }
    Ok((shown, stored))
}

/// The index in `stored` of the hash matching `input`, if any. Every stored
/// hash is compared, whatever matches first.
pub fn find_recovery_code(input: &str, stored: &[String]) -> Option<usize> {
    let normalised = normalise(input)?;
    let candidate = hash_code(&normalised);
    let mut found = None;
    for (index, hash) in stored.iter().enumerate() {
        let same = bool::from(candidate.as_bytes().ct_eq(hash.as_bytes()));
        if same && found.is_none() {
            found = Some(index);
        }
    }
    found
}

/// Lower case; spaces and dashes dropped; o→0 and i, l→1 (Crockford).
/// `None` if the result is not 12 alphabet characters.
fn normalise(input: &str) -> Option<Zeroizing<String>> {
    let mut out = Zeroizing::new(String::with_capacity(CODE_CHARS));
    for c in input.chars() {
        let c = match c.to_ascii_lowercase() {
            ' ' | '-' | '\t' => continue,
            'o' => '0',
            'i' | 'l' => '1',
            c => c,
        };
        if !c.is_ascii() || !ALPHABET.contains(&(c as u8)) {
            return None;
        }
        out.push(c);
    }
    (out.len() == CODE_CHARS).then_some(out)
}

fn hash_code(normalised: &str) -> String {
    hex::encode(aws_lc_rs::digest::digest(
        &aws_lc_rs::digest::SHA256,
        normalised.as_bytes(),
    ))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, clippy::expect_used)]
mod tests {
    use super::*;
    use std::collections::HashSet;

    #[test]
    fn ten_distinct_codes_in_the_display_format() {
        let (shown, stored) = generate_recovery_codes().unwrap();
        assert_eq!(shown.len(), 10);
        assert_eq!(stored.len(), 10);
        for code in &shown {
            let groups: Vec<&str> = code.split('-').collect();
            assert_eq!(groups.len(), 3, "{}", code.as_str());
            assert!(
                groups
                    .iter()
                    .all(|g| g.len() == 4 && g.bytes().all(|b| ALPHABET.contains(&b)))
            );
        }
        let distinct: HashSet<&str> = shown.iter().map(|c| c.as_str()).collect();
        assert_eq!(distinct.len(), 10);
        for (index, code) in shown.iter().enumerate() {
            assert_eq!(find_recovery_code(code, &stored), Some(index));
            assert_ne!(stored[index], code.as_str());
            assert_eq!(stored[index].len(), 64, "SHA-256 hex");
        }
    }

    #[test]
    fn sixty_bits_per_code() {
        assert!((CODE_CHARS as f64) * (ALPHABET.len() as f64).log2() >= 60.0);
        // Over many codes every symbol turns up in every position.
        let mut seen = [[false; 32]; CODE_CHARS];
        for _ in 0..60 {
            let (shown, _) = generate_recovery_codes().unwrap();
            for code in &shown {
                let chars: Vec<u8> = code.bytes().filter(|b| *b != b'-').collect();
                for (position, c) in chars.iter().enumerate() {
                    let symbol = ALPHABET.iter().position(|a| a == c).unwrap();
                    seen[position][symbol] = true;
                }
            }
        }
        assert!(seen.iter().all(|position| position.iter().all(|s| *s)));
    }

    #[test]
    fn typing_variations_are_forgiven() {
        let stored = vec![hash_code("k7p29xqam3vd"), hash_code("0123456789ab")];
        for typed in [
            "k7p2-9xqa-m3vd",
            "K7P2 9XQA M3VD",
            "k7p29xqam3vd",
            " k7p2-9xqa-m3vd ",
        ] {
            assert_eq!(find_recovery_code(typed, &stored), Some(0), "{typed:?}");
        }
        assert_eq!(find_recovery_code("OI23-4567-89AB", &stored), Some(1));
        assert_eq!(find_recovery_code("Ol23-4567-89ab", &stored), Some(1));
    }

    #[test]
    fn wrong_or_malformed_codes_match_nothing() {
        let stored = vec![hash_code("k7p29xqam3vd")];
        for typed in [
            "k7p2-9xqa-m3ve",
            "k7p2-9xqa-m3v",
            "k7p2-9xqa-m3vdd",
            "k7p2-9xqa-m3vu",
            "",
            "k7p2_9xqa_m3vd",
        ] {
            assert_eq!(find_recovery_code(typed, &stored), None, "{typed:?}");
        }
        assert_eq!(find_recovery_code("k7p2-9xqa-m3vd", &[]), None);
    }
}
