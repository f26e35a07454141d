/// Why a client assertion or a registered key set was refused.
///
/// Messages are safe to show to the client: they describe what was wrong
/// with what the client sent, never key material or server state.
#[derive(Debug, thiserror::Error)]
pub enum AssertionError {
    #[error("malformed client assertion: {0}")]
    Malformed(String),
    #[error("unsupported algorithm: {0}")]
    UnsupportedAlgorithm(String),
    #[error("the client assertion signature does not verify with any registered key")]
    BadSignature,
    #[error("invalid client assertion claims: {0}")]
    Claims(String),
    #[error("the client assertion has expired")]
    Expired,
    #[error("the client assertion lifetime is too long: exp may be at most 5 minutes ahead")]
    LifetimeTooLong,
    #[error("unacceptable client key set: {0}")]
    Jwks(String),
}
