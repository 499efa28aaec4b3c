//! The identity file: a daemon's static X25519 private key, kept between runs.
//!
//! One line of standard base64 (44 characters, the text form of every Parlo key), after
//! comment lines starting with `#`. The file is the daemon's own: mode 0600, and a file
//! that its group or others may read or write is refused rather than used, since anyone
//! who reads it can pass for the daemon. A missing file is created on first start
//! ([`load_or_create`]), with its directory (mode 0700) if need be; the key is written to
//! a temporary file first and linked into place, so two daemons starting at once never
//! read a half-written key, and an existing identity is never overwritten except by
//! `keygen --force` ([`create`]).

use std::fmt;
use std::fs::{self, OpenOptions};
use std::io::{self, Write};
use std::os::unix::fs::{DirBuilderExt, OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use parlo_fsm::PublicKey;

/// The first lines of an identity file.
const HEADER: &str = "# Parlo identity: an X25519 private key. Keep it secret (mode 0600).\n";

/// Why an identity cannot be used. Each stops the daemon (exit 2).
#[derive(Debug)]
pub enum IdentityError {
    /// The file could not be read, created or written (`doing` says which).
    File {
        /// The identity file.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// What the system said.
        source: io::Error,
    },
    /// Its group or others may read or write it (its mode).
    Exposed {
        /// The identity file.
        path: PathBuf,
        /// Its permission bits.
        mode: u32,
    },
    /// It holds no key in the expected form (what is wrong).
    Malformed {
        /// The identity file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// `keygen` without `--force` on an existing identity.
    Exists(PathBuf),
    /// The operating system's random source failed.
    Random(String),
}

impl fmt::Display for IdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            IdentityError::File {
                path,
                doing,
                source,
            } => write!(
                f,
                "cannot {doing} the identity {}: {source}",
                path.display()
            ),
            IdentityError::Exposed { path, mode } => write!(
                f,
                "the identity {} is open to its group or others (mode {:04o}): anyone who \
                 reads it can pass for this daemon. Run `chmod 600 {}` (and make a new key \
                 with keygen --force if others may have read it)",
                path.display(),
                mode & 0o7777,
                path.display()
            ),
            IdentityError::Malformed { path, why } => write!(
                f,
                "the identity {} is not a Parlo identity ({why}); move it away to have a new \
                 one made, or restore the right file",
                path.display()
            ),
            IdentityError::Exists(path) => write!(
                f,
                "an identity exists already at {} (its key is what others know this daemon \
                 by): keygen --force replaces it",
                path.display()
            ),
            IdentityError::Random(why) => {
                write!(f, "the operating system's random source failed: {why}")
            }
        }
    }
}

impl std::error::Error for IdentityError {}

/// The private key at `path`; a new one, stored there, if there is no file. Returns
/// whether it was made now.
pub fn load_or_create(path: &Path) -> Result<([u8; 32], bool), IdentityError> {
    match load(path) {
        Err(IdentityError::File { source, .. }) if source.kind() == io::ErrorKind::NotFound => {
            match write_new(path, false) {
                Ok(key) => Ok((key, true)),
                // Made by another process meanwhile: take that one.
                Err(IdentityError::Exists(_)) => load(path).map(|key| (key, false)),
                Err(e) => Err(e),
            }
        }
        other => other.map(|key| (key, false)),
    }
}

/// A new private key stored at `path`; an existing identity is replaced only if `force`.
pub fn create(path: &Path, force: bool) -> Result<[u8; 32], IdentityError> {
    write_new(path, force)
}

/// The private key at `path`, refused if the file is open to others or malformed.
pub fn load(path: &Path) -> Result<[u8; 32], IdentityError> {
    let failed = |doing| {
        move |source| IdentityError::File {
            path: path.to_owned(),
            doing,
            source,
        }
    };
    let meta = fs::metadata(path).map_err(failed("read"))?;
    let mode = meta.permissions().mode();
    if mode & 0o077 != 0 {
        return Err(IdentityError::Exposed {
            path: path.to_owned(),
            mode,
        });
    }
    let text = fs::read_to_string(path).map_err(failed("read"))?;
    parse(&text).map_err(|why| IdentityError::Malformed {
        path: path.to_owned(),
        why,
    })
}

/// The key in an identity file's text.
fn parse(text: &str) -> Result<[u8; 32], String> {
    let mut lines = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with('#'));
    let Some(line) = lines.next() else {
        return Err("no key in it".into());
    };
    if lines.next().is_some() {
        return Err("more than one line besides comments".into());
    }
    // A private key has the same text form as a public one: 32 bytes in base64.
    PublicKey::parse(line)
        .map(|key| key.0)
        .map_err(|e| e.to_string())
}

/// Writes a fresh key to `path` (through a temporary file, linked or renamed into place).
fn write_new(path: &Path, force: bool) -> Result<[u8; 32], IdentityError> {
    let failed = |doing| {
        move |source| IdentityError::File {
            path: path.to_owned(),
            doing,
            source,
        }
    };
    let mut key = [0u8; 32];
    getrandom::fill(&mut key).map_err(|e| IdentityError::Random(e.to_string()))?;
    if !force && fs::symlink_metadata(path).is_ok() {
        return Err(IdentityError::Exists(path.to_owned()));
    }
    if let Some(dir) = path.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::DirBuilder::new()
            .recursive(true)
            .mode(0o700)
            .create(dir)
            .map_err(failed("create the directory of"))?;
    }
    let mut temp = path.as_os_str().to_owned();
    temp.push(format!(".new.{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = (|| -> io::Result<()> {
        let mut file = OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&temp)?;
        writeln!(file, "{HEADER}{}", PublicKey(key))?;
        file.sync_all()?;
        if force {
            fs::rename(&temp, path)
        } else {
            fs::hard_link(&temp, path)
        }
    })();
    let _ = fs::remove_file(&temp);
    match written {
        Ok(()) => Ok(key),
        Err(e) if e.kind() == io::ErrorKind::AlreadyExists => {
            Err(IdentityError::Exists(path.to_owned()))
        }
        Err(e) => Err(failed("write")(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A fresh directory for one test, removed at the end.
    struct Dir(PathBuf);

    impl Dir {
        fn new(name: &str) -> Dir {
            let dir =
                std::env::temp_dir().join(format!("parlo-identity-{name}-{}", std::process::id()));
            let _ = fs::remove_dir_all(&dir);
            Dir(dir)
        }
    }

    impl Drop for Dir {
        fn drop(&mut self) {
            let _ = fs::remove_dir_all(&self.0);
        }
    }

    #[test]
    fn made_once_with_mode_0600_then_the_same_key() {
        let dir = Dir::new("made");
        let path = dir.0.join("state/identity");
        let (key, made) = load_or_create(&path).expect("made");
        assert!(made);
        let mode = fs::metadata(&path).expect("exists").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let dir_mode = fs::metadata(dir.0.join("state"))
            .expect("dir")
            .permissions()
            .mode();
        assert_eq!(dir_mode & 0o777, 0o700);
        assert_eq!(load_or_create(&path).expect("loaded"), (key, false));
    }

    #[test]
    fn an_identity_open_to_others_or_malformed_is_refused() {
        let dir = Dir::new("refused");
        let path = dir.0.join("identity");
        load_or_create(&path).expect("made");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o644)).expect("chmod");
        let error = load(&path).expect_err("world-readable");
        assert!(error.to_string().contains("chmod 600"), "{error}");
        fs::write(&path, "not a key\n").expect("write");
        fs::set_permissions(&path, fs::Permissions::from_mode(0o600)).expect("chmod");
        assert!(matches!(load(&path), Err(IdentityError::Malformed { .. })));
    }

    #[test]
    fn keygen_replaces_only_when_forced() {
        let dir = Dir::new("keygen");
        let path = dir.0.join("identity");
        let first = create(&path, false).expect("made");
        assert!(matches!(
            create(&path, false),
            Err(IdentityError::Exists(_))
        ));
        assert_eq!(load(&path).expect("kept"), first);
        let second = create(&path, true).expect("replaced");
        assert_ne!(first, second);
        assert_eq!(load(&path).expect("new"), second);
    }
}
