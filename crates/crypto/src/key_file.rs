//! Key files: small versioned text files, created new with mode 0o600 and
//! refused on load when group or others have any permission bit.
//!
//! Format: a header line `<kind> v<version>`, then one line of standard base64,
//! then a newline. Nothing else is accepted.

use std::fs::{self, File, OpenOptions};
use std::io::{Read, Write};
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::Path;

use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use zeroize::Zeroizing;

use crate::error::CryptoError;

/// Key files are tiny; anything larger is not one of ours.
const MAX_KEY_FILE_LEN: u64 = 16 * 1024;

/// Permission bits that must be clear on a key file: any access by group or others.
const GROUP_OTHER_BITS: u32 = 0o077;

fn key_file_error(path: &Path, reason: impl Into<String>) -> CryptoError {
    CryptoError::KeyFile {
        path: path.to_path_buf(),
        reason: reason.into(),
    }
}

fn io_error(path: &Path, source: std::io::Error) -> CryptoError {
    CryptoError::KeyFileIo {
        path: path.to_path_buf(),
        source,
    }
}

/// Writes a new key file (`kind v1`, base64 of `secret`). Never overwrites an
/// existing file. If writing fails part-way the half-written file is removed.
pub(crate) fn create(path: &Path, kind: &str, secret: &[u8]) -> Result<(), CryptoError> {
    let mut text = Zeroizing::new(String::new());
    text.push_str(kind);
    text.push_str(" v1\n");
    STANDARD.encode_string(secret, &mut text);
    text.push('\n');

    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|source| {
            if source.kind() == std::io::ErrorKind::AlreadyExists {
                key_file_error(
                    path,
                    "already exists; refusing to overwrite a key file (data sealed under it \
                     would become unreadable). Move it aside yourself if you really mean to \
                     replace it",
                )
            } else {
                io_error(path, source)
            }
        })?;

    let written = file
        .write_all(text.as_bytes())
        .and_then(|()| file.sync_all());
    if let Err(source) = written {
        drop(file);
        // Best effort: a half-written key file must not be mistaken for a key.
        let _ = fs::remove_file(path);
        return Err(io_error(path, source));
    }
    // Best effort: make the new directory entry durable too.
    if let Some(parent) = path.parent()
        && let Ok(dir) = File::open(if parent.as_os_str().is_empty() {
            Path::new(".")
        } else {
            parent
        })
    {
        let _ = dir.sync_all();
    }
    Ok(())
}

/// Reads a key file of the given kind and returns the decoded secret bytes.
///
/// Checks the permissions of the opened file itself (not the path), so the
/// file checked is the file read.
pub(crate) fn load(path: &Path, kind: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let file = File::open(path).map_err(|source| io_error(path, source))?;
    let metadata = file.metadata().map_err(|source| io_error(path, source))?;
    if !metadata.is_file() {
        return Err(key_file_error(path, "is not a regular file"));
    }
    let mode = metadata.permissions().mode() & 0o7777;
    if mode & GROUP_OTHER_BITS != 0 {
        return Err(CryptoError::KeyFilePermissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    if metadata.len() > MAX_KEY_FILE_LEN {
        return Err(key_file_error(
            path,
            "is far too large to be a carevault key file",
        ));
    }

    let mut text = Zeroizing::new(String::new());
    file.take(MAX_KEY_FILE_LEN)
        .read_to_string(&mut text)
        .map_err(|source| io_error(path, source))?;
    parse(path, kind, &text)
}

fn parse(path: &Path, kind: &str, text: &str) -> Result<Zeroizing<Vec<u8>>, CryptoError> {
    let expected_header = format!("{kind} v1");
    let mut lines = text.lines();
    let header = lines.next().unwrap_or("").trim_end();
    if header != expected_header {
        let reason = match header
            .strip_prefix(kind)
            .and_then(|rest| rest.strip_prefix(' '))
        {
            Some(version) => format!(
                "format version {version:?} is not supported by this build, which reads \
                 {expected_header:?}; run the carevault release that wrote this file, or \
                 restore a {expected_header:?} file from backup"
            ),
            None => format!(
                "not a {kind} file (the first line should be {expected_header:?}); check that \
                 the configured path points at the right key file"
            ),
        };
        return Err(key_file_error(path, reason));
    }

    let encoded = lines.next().unwrap_or("").trim_end();
    if lines.any(|line| !line.trim().is_empty()) {
        return Err(key_file_error(
            path,
            "has unexpected lines after the key; the file is damaged or was edited — \
             restore it from backup",
        ));
    }
    let mut decoded = Zeroizing::new(Vec::new());
    STANDARD.decode_vec(encoded, &mut decoded).map_err(|_| {
        key_file_error(
            path,
            "the key line is not valid base64; the file is damaged — restore it from backup \
             (do not generate a new key: data sealed under the old one would become unreadable)",
        )
    })?;
    Ok(decoded)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn unknown_version_message_says_how_to_mend() {
        let error = parse(Path::new("k"), "carevault-kek", "carevault-kek v9\nAAAA\n")
            .err()
            .map(|e| e.to_string())
            .unwrap_or_default();
        assert!(error.contains("\"v9\""), "{error}");
        assert!(error.contains("restore"), "{error}");
    }

    #[test]
    fn foreign_file_is_refused_with_a_hint() {
        let error = parse(
            Path::new("k"),
            "carevault-kek",
            "-----BEGIN PRIVATE KEY-----\n",
        )
        .err()
        .map(|e| e.to_string())
        .unwrap_or_default();
        assert!(error.contains("first line should be"), "{error}");
    }

    #[test]
    fn trailing_garbage_is_refused() {
        assert!(
            parse(
                Path::new("k"),
                "carevault-kek",
                "carevault-kek v1\nAAAA\nmore\n"
            )
            .is_err()
        );
    }

    #[test]
    fn round_trip_text() {
        let bytes = parse(Path::new("k"), "x", "x v1\nAQID\n")
            .ok()
            .map(|b| b.to_vec());
        assert_eq!(bytes, Some(vec![1, 2, 3]));
    }
}
