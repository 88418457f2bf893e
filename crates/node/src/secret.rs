//! Files holding secrets (the identity key, the admin token): read only when they are regular
//! files no one but their owner may access, bounded in size; written new with mode 0600.

use std::fs::OpenOptions;
use std::io::{Read, Write};
use std::os::unix::fs::{DirBuilderExt, MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};

use types::SecretKey;

/// Largest secret file read, bytes.
pub const MAX_SECRET_FILE_BYTES: u64 = 4096;

/// Why a secret file was refused, or could not be written.
#[derive(Debug, thiserror::Error)]
pub enum SecretFileError {
    /// The file could not be opened or read.
    #[error("cannot read {path}: {source}")]
    Read {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
    /// Not a regular file (a directory, a FIFO, a device).
    #[error("{path} is not a regular file")]
    NotAFile {
        /// The file.
        path: PathBuf,
    },
    /// Group or others may access it.
    #[error(
        "{path} is readable by others (mode {mode:04o}); run `chmod 600 {path}` and check who read it"
    )]
    Permissions {
        /// The file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// Larger than [`MAX_SECRET_FILE_BYTES`].
    #[error("{path} is larger than {MAX_SECRET_FILE_BYTES} bytes: not a secret file of ours")]
    TooLarge {
        /// The file.
        path: PathBuf,
    },
    /// [`write_new`] found a file there already.
    #[error("{path} exists already; not overwriting it")]
    Exists {
        /// The file.
        path: PathBuf,
    },
    /// An identity file that does not hold 64 hex digits.
    #[error("the key file {path} must hold 64 hex digits of Ed25519 seed")]
    NotAKey {
        /// The file.
        path: PathBuf,
    },
    /// The new file could not be created or written.
    #[error("cannot write {path}: {source}")]
    Write {
        /// The file.
        path: PathBuf,
        /// The cause.
        source: std::io::Error,
    },
}

/// Reads a secret file, surrounding whitespace removed. The file is opened without blocking
/// (a FIFO in its place cannot hang the caller) and checked through the open descriptor, so it
/// cannot be swapped between the check and the read.
pub fn read(path: &Path) -> Result<Vec<u8>, SecretFileError> {
    let read = |source| SecretFileError::Read {
        path: path.to_path_buf(),
        source,
    };
    let file = OpenOptions::new()
        .read(true)
        .custom_flags(libc::O_NONBLOCK)
        .open(path)
        .map_err(read)?;
    let meta = file.metadata().map_err(read)?;
    if !meta.is_file() {
        return Err(SecretFileError::NotAFile {
            path: path.to_path_buf(),
        });
    }
    let mode = meta.mode() & 0o7777;
    if mode & 0o077 != 0 {
        return Err(SecretFileError::Permissions {
            path: path.to_path_buf(),
            mode,
        });
    }
    let mut bytes = Vec::new();
    file.take(MAX_SECRET_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(read)?;
    if bytes.len() as u64 > MAX_SECRET_FILE_BYTES {
        return Err(SecretFileError::TooLarge {
            path: path.to_path_buf(),
        });
    }
    Ok(bytes.trim_ascii().to_vec())
}

/// Creates `path` with mode 0600 holding `contents`, synced to disk; refuses to replace a file.
pub fn write_new(path: &Path, contents: &[u8]) -> Result<(), SecretFileError> {
    let write = |source| SecretFileError::Write {
        path: path.to_path_buf(),
        source,
    };
    let mut file = OpenOptions::new()
        .write(true)
        .create_new(true)
        .mode(0o600)
        .open(path)
        .map_err(|e| match e.kind() {
            std::io::ErrorKind::AlreadyExists => SecretFileError::Exists {
                path: path.to_path_buf(),
            },
            _ => write(e),
        })?;
    file.write_all(contents)
        .and_then(|()| file.sync_all())
        .map_err(write)
}

/// Creates a directory (and its parents) only its owner may enter; fine if it exists.
pub fn private_dir(path: &Path) -> Result<(), SecretFileError> {
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(path)
        .map_err(|source| SecretFileError::Write {
            path: path.to_path_buf(),
            source,
        })
}

/// Reads an identity file: the Ed25519 seed as 64 hex digits, in a private file ([`read`]).
pub fn read_key(path: &Path) -> Result<SecretKey, SecretFileError> {
    let text = read(path)?;
    let mut seed = [0u8; 32];
    hex::decode_to_slice(&text, &mut seed).map_err(|_| SecretFileError::NotAKey {
        path: path.to_path_buf(),
    })?;
    Ok(SecretKey::from_seed(seed))
}

/// Creates a new identity file at `path` (mode 0600, [`write_new`]) with a random seed.
pub fn create_key(path: &Path) -> Result<SecretKey, SecretFileError> {
    let mut seed = [0u8; 32];
    rand::fill(&mut seed);
    write_new(path, format!("{}\n", hex::encode(seed)).as_bytes())?;
    Ok(SecretKey::from_seed(seed))
}

/// The identity in `path`, or a new one created there; true when it was created.
pub fn load_or_create_key(path: &Path) -> Result<(SecretKey, bool), SecretFileError> {
    if path.exists() {
        Ok((read_key(path)?, false))
    } else {
        Ok((create_key(path)?, true))
    }
}

#[cfg(test)]
mod tests {
    use std::os::unix::fs::PermissionsExt;

    use super::*;

    #[test]
    fn a_new_secret_is_private_read_back_trimmed_and_never_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        write_new(&path, b"  abc\n").unwrap();
        let mode = std::fs::metadata(&path).unwrap().permissions().mode() & 0o777;
        assert_eq!(mode, 0o600);
        assert_eq!(read(&path).unwrap(), b"abc");
        assert!(matches!(
            write_new(&path, b"x"),
            Err(SecretFileError::Exists { .. })
        ));
        assert_eq!(read(&path).unwrap(), b"abc");
    }

    #[test]
    fn files_others_can_read_large_files_and_non_files_are_refused() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("s");
        std::fs::write(&path, "abc").unwrap();
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o640)).unwrap();
        let err = read(&path).unwrap_err();
        assert!(matches!(
            err,
            SecretFileError::Permissions { mode: 0o640, .. }
        ));
        assert!(err.to_string().contains("chmod 600"), "{err}");
        std::fs::set_permissions(&path, std::fs::Permissions::from_mode(0o600)).unwrap();
        std::fs::write(&path, vec![b'a'; MAX_SECRET_FILE_BYTES as usize + 1]).unwrap();
        assert!(matches!(read(&path), Err(SecretFileError::TooLarge { .. })));
        let sub = dir.path().join("d");
        std::fs::create_dir(&sub).unwrap();
        std::fs::set_permissions(&sub, std::fs::Permissions::from_mode(0o700)).unwrap();
        assert!(matches!(read(&sub), Err(SecretFileError::NotAFile { .. })));
        assert!(matches!(
            read(&dir.path().join("missing")),
            Err(SecretFileError::Read { .. })
        ));
    }
}
