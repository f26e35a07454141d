use std::path::PathBuf;

/// Everything that can go wrong in this crate.
///
/// Messages never contain key material; they name files and say how to mend
/// the problem where there is something an operator can do.
#[derive(Debug, thiserror::Error)]
pub enum CryptoError {
    /// Authentication failed: wrong key, wrong associated data, or the data
    /// was altered or truncated. Deliberately says nothing more.
    #[error("integrity check failed: the data was altered, or the wrong key or context was used")]
    Integrity,
    /// A key file is readable or writable by group or others.
    #[error(
        "key file {} has mode {mode:04o}; group and others must have no access \
         (fix with: chmod 600 {})",
        path.display(),
        path.display()
    )]
    KeyFilePermissions { path: PathBuf, mode: u32 },
    /// A key file is missing, already exists, or has content we cannot use.
    #[error("key file {}: {reason}", path.display())]
    KeyFile { path: PathBuf, reason: String },
    /// An I/O error while reading or writing a key file.
    #[error("key file {}: {source}", path.display())]
    KeyFileIo {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    /// Any other I/O error.
    #[error("i/o error: {0}")]
    Io(#[from] std::io::Error),
    /// Sealed data names a key version this key (ring) does not have.
    #[error("no key with version {0} is available")]
    UnknownKeyVersion(u32),
    /// Key bytes of the wrong length or shape were supplied.
    #[error("invalid key: {0}")]
    InvalidKey(String),
}
