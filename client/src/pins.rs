//! Files of pinned keys: one line per party, `LABEL KEY`, as SSH's `known_hosts`.
//!
//! Two files have this form, both beside the phone's identity:
//! - `known-servers`: the directory servers' keys, `HOST:PORT KEY` ([`crate::keys`]);
//! - `known_peers`: other phones' keys, `NAME KEY` ([`KnownPeers`]).
//!
//! Blank lines and lines starting with `#` are comments. A key is 44 characters of
//! base64, as `parlo-client id` prints it. A file is rewritten whole, through a temporary
//! file renamed over it (a crash leaves the old file or the new one, never half of one),
//! with mode 0600.

use std::collections::BTreeMap;
use std::fs;
use std::io::{self, Write};
use std::os::unix::fs::OpenOptionsExt;
use std::path::{Path, PathBuf};

use parlo_fsm::{Name, PublicKey};

/// The key pinned for `label` in `file`, if any. A line that cannot be read is an error
/// only when it is `label`'s.
pub fn pinned(file: &Path, label: &str) -> Result<Option<PublicKey>, String> {
    let Some(text) = read(file)? else {
        return Ok(None);
    };
    for (number, line) in text.lines().enumerate() {
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let (first, key) = line.split_once(' ').unwrap_or((line, ""));
        if first == label {
            return PublicKey::parse(key.trim())
                .map(Some)
                .map_err(|e| format!("line {}: {e}", number + 1));
        }
    }
    Ok(None)
}

/// The file's text; `None` when there is no file.
fn read(file: &Path) -> Result<Option<String>, String> {
    match fs::read_to_string(file) {
        Ok(text) => Ok(Some(text)),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(e) => Err(e.to_string()),
    }
}

/// Pins `key` for `label` in `file`, replacing any other line for it. A new file starts
/// with `header` (a comment line, ending in a newline).
pub fn pin(file: &Path, header: &str, label: &str, key: &PublicKey) -> io::Result<()> {
    let old = match fs::read_to_string(file) {
        Ok(text) => text,
        Err(e) if e.kind() == io::ErrorKind::NotFound => header.to_owned(),
        Err(e) => return Err(e),
    };
    let mut text: String = old
        .lines()
        .filter(|line| line.split(' ').next() != Some(label))
        .flat_map(|line| [line, "\n"])
        .collect();
    text.push_str(&format!("{label} {key}\n"));
    replace(file, &text)
}

/// Writes `text` as `file`'s new content, through a temporary file renamed over it.
fn replace(file: &Path, text: &str) -> io::Result<()> {
    if let Some(dir) = file.parent().filter(|d| !d.as_os_str().is_empty()) {
        fs::create_dir_all(dir)?;
    }
    let mut temp = file.as_os_str().to_owned();
    temp.push(format!(".new.{}", std::process::id()));
    let temp = PathBuf::from(temp);
    let written = (|| {
        let mut out = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(0o600)
            .open(&temp)?;
        out.write_all(text.as_bytes())?;
        out.sync_all()?;
        fs::rename(&temp, file)
    })();
    if written.is_err() {
        let _ = fs::remove_file(&temp);
    }
    written
}

/// The first comment of a new `known_peers`.
const PEERS_HEADER: &str =
    "# Other phones' keys, pinned on first contact or by `trust`: NAME KEY\n";

/// Other phones' keys this phone trusts, by name: the `known_peers` file, read at start
/// and kept in memory; each new pin is written through at once.
#[derive(Debug, Clone)]
pub struct KnownPeers {
    path: PathBuf,
    pins: BTreeMap<Name, PublicKey>,
}

impl KnownPeers {
    /// Reads `path` (no file: no pins). A line that is not `NAME KEY` with a valid name
    /// and key, or a name given twice, is an error naming the line: a pin file that does
    /// not say what its owner thinks is worse than none.
    pub fn load(path: &Path) -> Result<KnownPeers, String> {
        let pins = match read(path)? {
            Some(text) => parse(&text)?,
            None => BTreeMap::new(),
        };
        Ok(KnownPeers {
            path: path.to_path_buf(),
            pins,
        })
    }

    /// Where the pins are kept.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The key pinned for `name`.
    pub fn get(&self, name: &Name) -> Option<PublicKey> {
        self.pins.get(name).copied()
    }

    /// Every pin, by name.
    pub fn pins(&self) -> BTreeMap<Name, PublicKey> {
        self.pins.clone()
    }

    /// How many names are pinned.
    pub fn len(&self) -> usize {
        self.pins.len()
    }

    /// Whether no name is pinned.
    pub fn is_empty(&self) -> bool {
        self.pins.is_empty()
    }

    /// Pins `key` for `name`, in memory and in the file (replacing its line, if any).
    /// The pin holds in memory even when the file cannot be written; the error says why.
    pub fn pin(&mut self, name: &Name, key: PublicKey) -> io::Result<()> {
        self.pins.insert(name.clone(), key);
        pin(&self.path, PEERS_HEADER, name.as_str(), &key)
    }
}

/// Reads the text of a `known_peers` file.
fn parse(text: &str) -> Result<BTreeMap<Name, PublicKey>, String> {
    let mut pins = BTreeMap::new();
    for (number, line) in text.lines().enumerate() {
        let number = number + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let Some((name, key)) = line.split_once(' ') else {
            return Err(format!("line {number}: expected NAME KEY"));
        };
        let name = Name::new(name).map_err(|e| format!("line {number}: {e}"))?;
        let key = PublicKey::parse(key.trim()).map_err(|e| format!("line {number}: {e}"))?;
        if pins.insert(name.clone(), key).is_some() {
            return Err(format!(
                "line {number}: {name} is pinned twice; keep the one line you trust"
            ));
        }
    }
    Ok(pins)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn name(text: &str) -> Name {
        Name::new(text).expect("a valid name")
    }

    fn temp(tag: &str) -> PathBuf {
        let dir = std::env::temp_dir().join(format!("parlo-pins-{tag}-{}", std::process::id()));
        let _ = fs::remove_dir_all(&dir);
        dir
    }

    #[test]
    fn peers_are_pinned_read_back_and_replaced() {
        let dir = temp("peers");
        let file = dir.join("known_peers");
        let mut peers = KnownPeers::load(&file).expect("no file is no pins");
        assert!(peers.is_empty());
        peers
            .pin(&name("alice"), PublicKey([1; 32]))
            .expect("pinned");
        peers.pin(&name("bob"), PublicKey([2; 32])).expect("pinned");
        peers
            .pin(&name("alice"), PublicKey([3; 32]))
            .expect("replaced");
        let again = KnownPeers::load(&file).expect("read back");
        assert_eq!(again.get(&name("alice")), Some(PublicKey([3; 32])));
        assert_eq!(again.get(&name("bob")), Some(PublicKey([2; 32])));
        assert_eq!(again.get(&name("carol")), None);
        assert_eq!(again.len(), 2);
        let text = fs::read_to_string(&file).expect("a file");
        assert!(text.starts_with("# "), "{text}");
        use std::os::unix::fs::PermissionsExt;
        let mode = fs::metadata(&file).expect("a file").permissions().mode();
        assert_eq!(mode & 0o777, 0o600);
        let _ = fs::remove_dir_all(&dir);
    }

    #[test]
    fn a_bad_line_or_a_name_twice_is_an_error_naming_the_line() {
        let key = PublicKey([7; 32]).to_string();
        assert!(parse(&format!("# comment\n\nalice {key}\n")).is_ok());
        let twice = parse(&format!("alice {key}\nalice {key}\n")).expect_err("refused");
        assert!(
            twice.contains("line 2") && twice.contains("twice"),
            "{twice}"
        );
        let no_key = parse("alice\n").expect_err("refused");
        assert!(no_key.contains("line 1"), "{no_key}");
        let bad_key = parse("alice nonsense\n").expect_err("refused");
        assert!(bad_key.contains("44 characters"), "{bad_key}");
        let bad_name = parse(&format!("al=ice {key}\n")).expect_err("refused");
        assert!(bad_name.contains("line 1"), "{bad_name}");
    }

    #[test]
    fn servers_pins_keep_other_lines() {
        let dir = temp("servers");
        let file = dir.join("known-servers");
        assert_eq!(pinned(&file, "h:1"), Ok(None));
        pin(&file, "# servers\n", "h:1", &PublicKey([1; 32])).expect("pinned");
        pin(&file, "# servers\n", "h:2", &PublicKey([2; 32])).expect("pinned");
        pin(&file, "# servers\n", "h:1", &PublicKey([3; 32])).expect("replaced");
        assert_eq!(pinned(&file, "h:1"), Ok(Some(PublicKey([3; 32]))));
        assert_eq!(pinned(&file, "h:2"), Ok(Some(PublicKey([2; 32]))));
        let _ = fs::remove_dir_all(&dir);
    }
}
