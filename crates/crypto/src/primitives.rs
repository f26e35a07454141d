//! Small stateless primitives: randomness, hashing, constant-time comparison.

use aws_lc_rs::{constant_time, digest, rand};

/// `N` bytes from the operating system's cryptographic random generator.
///
/// # Panics
/// Only if the system random generator fails, which leaves no safe way to go
/// on (AWS-LC itself aborts the process in that case).
#[must_use]
pub fn random_bytes<const N: usize>() -> [u8; N] {
    let mut out = [0u8; N];
    fill_random(&mut out);
    out
}

/// Fills `out` from the system random generator; see [`random_bytes`] for why
/// a failure panics instead of returning an error.
pub(crate) fn fill_random(out: &mut [u8]) {
    if rand::fill(out).is_err() {
        panic!("the system random number generator failed; refusing to continue");
    }
}

/// SHA-256 of `data`.
#[must_use]
pub fn sha256(data: &[u8]) -> [u8; 32] {
    let digest = digest::digest(&digest::SHA256, data);
    let mut out = [0u8; 32];
    // SHA-256 output is always 32 bytes, so the lengths match.
    out.copy_from_slice(digest.as_ref());
    out
}

/// SHA-256 of the concatenation of `parts`, without copying them together.
#[must_use]
pub fn sha256_parts(parts: &[&[u8]]) -> [u8; 32] {
    let mut context = digest::Context::new(&digest::SHA256);
    for part in parts {
        context.update(part);
    }
    let mut out = [0u8; 32];
    out.copy_from_slice(context.finish().as_ref());
    out
}

/// Compares two byte strings in time that depends only on their lengths.
/// Different lengths compare unequal (the lengths are not secret).
#[must_use]
pub fn constant_time_eq(a: &[u8], b: &[u8]) -> bool {
    constant_time::verify_slices_are_equal(a, b).is_ok()
}

/// Lower-case hex, for identifiers derived from keys (never for key bytes).
pub(crate) fn to_hex(bytes: &[u8]) -> String {
    const DIGITS: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(bytes.len() * 2);
    for byte in bytes {
        out.push(char::from(DIGITS[usize::from(byte >> 4)]));
        out.push(char::from(DIGITS[usize::from(byte & 0x0f)]));
    }
    out
}
