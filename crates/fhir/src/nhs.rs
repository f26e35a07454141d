//! NHS numbers (England, Wales, Isle of Man): 10 digits, the last a Modulus 11 check digit.

/// The identifier system of NHS numbers.
pub const NHS_NUMBER_SYSTEM: &str = "https://fhir.nhs.uk/Id/nhs-number";

/// True for exactly 10 ASCII digits whose check digit passes Modulus 11
/// (weights 10..2; a remainder giving 10 is never valid, 11 means 0).
pub fn nhs_number_is_valid(s: &str) -> bool {
    let digits: Vec<u32> = s.chars().filter_map(|c| c.to_digit(10)).collect();
    if s.len() != 10 || digits.len() != 10 {
        return false;
    }
    let sum: u32 = digits
        .iter()
        .take(9)
        .zip((2..=10).rev())
        .map(|(d, w)| d * w)
        .sum();
    let check = match 11 - sum % 11 {
        11 => 0,
        10 => return false,
        c => c,
    };
    digits.get(9) == Some(&check)
}

#[cfg(test)]
#[allow(clippy::unwrap_used)]
mod tests {
    use super::nhs_number_is_valid;

    #[test]
    fn modulus_11() {
        assert!(nhs_number_is_valid("1745438912"));
        assert!(!nhs_number_is_valid("1745438913"));
        assert!(nhs_number_is_valid("9434765919"));
        assert!(!nhs_number_is_valid("943476591"));
        assert!(!nhs_number_is_valid("94347659190"));
        assert!(!nhs_number_is_valid("943 476 5919"));
        assert!(!nhs_number_is_valid("943476591x"));
        // Check digit would be 10: never issued.
        assert!(!nhs_number_is_valid("0000000060"));
    }
}
