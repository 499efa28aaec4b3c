//! Names bound to keys, as text: the `--names FILE` an administrator writes, the copy of
//! the bindings the server keeps beside its database, and `parlo-server names` and
//! `parlo-server release NAME`.
//!
//! The text form is one binding a line, `NAME KEY` (the key as `parlo-client id` prints
//! it, 44 characters of base64), with blank lines and `#` comments, a comment also after
//! the key (`alice KEY # since ...`). Names follow Parlo's naming rule, so they hold no
//! white space and a line splits unambiguously.

use std::collections::BTreeMap;
use std::io::Write;
use std::path::Path;
use std::time::Duration;

use parlo_net::directory::{Escaped, Name, PublicKey};
use rusqlite::{Connection, OpenFlags, OptionalExtension};

use crate::error::Error;

/// One line of a names file that is not a binding, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BadLine {
    /// Its number, from 1.
    pub line: usize,
    /// What is wrong with it.
    pub what: String,
}

/// Reads bindings in the text form (see the module docs); a name given twice is an error
/// too, since one of the two keys would be silently lost.
pub fn parse(text: &str) -> Result<Vec<(Name, PublicKey)>, BadLine> {
    let mut seen: BTreeMap<Name, usize> = BTreeMap::new();
    let mut bindings = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let number = index + 1;
        let bad = |what: String| BadLine { line: number, what };
        let mut words = line.split_whitespace();
        let Some(first) = words.next() else {
            continue;
        };
        if first.starts_with('#') {
            continue;
        }
        let name = Name::new(first)
            .map_err(|e| bad(format!("\"{}\" is not a name: {e}", Escaped::text(first))))?;
        let key = words
            .next()
            .ok_or_else(|| bad(format!("\"{name}\" has no key (expected NAME KEY)")))?;
        let key = PublicKey::parse(key).map_err(|e| bad(format!("the key of \"{name}\": {e}")))?;
        if let Some(extra) = words.next()
            && !extra.starts_with('#')
        {
            return Err(bad(format!(
                "\"{}\" after the key of \"{name}\" (expected NAME KEY, and # before a \
                 comment)",
                Escaped::text(extra)
            )));
        }
        if let Some(earlier) = seen.insert(name.clone(), number) {
            return Err(bad(format!(
                "\"{name}\" is bound already on line {earlier} (one key a name)"
            )));
        }
        bindings.push((name, key));
    }
    Ok(bindings)
}

/// Reads a names file (`--names FILE`, or the copy beside the database).
pub fn read(path: &Path) -> Result<Vec<(Name, PublicKey)>, Error> {
    let text = std::fs::read_to_string(path).map_err(|source| Error::NamesFile {
        path: path.to_owned(),
        source,
    })?;
    parse(&text).map_err(|bad| Error::BadNames {
        path: path.to_owned(),
        line: bad.line,
        what: bad.what,
    })
}

/// The text form of `bindings` with when each was made (seconds since 1970), as a comment.
pub fn render<'a>(bindings: impl Iterator<Item = (&'a Name, &'a PublicKey, i64)>) -> String {
    let mut text = String::from(
        "# Names bound to keys: parlo-server's copy of its database's bindings (the --names \
         format).\n",
    );
    for (name, key, since) in bindings {
        text.push_str(&format!("{name} {key} # since {}\n", utc_time(since)));
    }
    text
}

/// Writes `text` to `path` whole or not at all: a temporary file beside it, flushed to
/// the disk, then renamed over it.
pub fn write_atomically(path: &Path, text: &str) -> std::io::Result<()> {
    let mut temporary = path.as_os_str().to_owned();
    temporary.push(".new");
    let temporary = std::path::PathBuf::from(temporary);
    let mut file = std::fs::File::create(&temporary)?;
    file.write_all(text.as_bytes())?;
    file.sync_all()?;
    drop(file);
    std::fs::rename(&temporary, path)
}

/// `secs` since 1970 as `YYYY-MM-DD HH:MM:SS` (UTC).
fn utc_time(secs: i64) -> String {
    let stamp = crate::store::utc_stamp(secs);
    // 20261125T194001Z
    format!(
        "{}-{}-{} {}:{}:{}",
        &stamp[0..4],
        &stamp[4..6],
        &stamp[6..8],
        &stamp[9..11],
        &stamp[11..13],
        &stamp[13..15]
    )
}

/// How long `names` and `release` wait for a lock the server (or another program) holds
/// on the database.
const BUSY: Duration = Duration::from_secs(5);

fn database(path: &Path, flags: OpenFlags) -> Result<Connection, Error> {
    if !path.exists() {
        return Err(Error::NoDatabase(path.to_owned()));
    }
    let db = Connection::open_with_flags(path, flags | OpenFlags::SQLITE_OPEN_NO_MUTEX).map_err(
        |source| Error::Database {
            path: path.to_owned(),
            doing: "open it",
            source,
        },
    )?;
    let _ = db.busy_timeout(BUSY);
    Ok(db)
}

/// Whether the database has a bindings table (one of an earlier version has none).
fn has_bindings(db: &Connection, path: &Path) -> Result<bool, Error> {
    db.query_row(
        "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'bindings')",
        [],
        |row| row.get(0),
    )
    .map_err(|source| Error::Database {
        path: path.to_owned(),
        doing: "look for the bindings table",
        source,
    })
}

/// `parlo-server names`: prints every binding, name, key and since when.
pub fn list(path: &Path) -> Result<(), Error> {
    let db = database(path, OpenFlags::SQLITE_OPEN_READ_ONLY)?;
    let mut rows: Vec<(String, String, String)> = Vec::new();
    if has_bindings(&db, path)? {
        let failed = |source| Error::Database {
            path: path.to_owned(),
            doing: "read the bindings table",
            source,
        };
        let mut stmt = db
            .prepare(
                "SELECT name, key, strftime('%Y-%m-%d %H:%M:%S', since, 'unixepoch')
                 FROM bindings ORDER BY name",
            )
            .map_err(failed)?;
        let read = stmt
            .query_map([], |row| {
                // Escaped: any program can write the file, and this goes to a terminal.
                let text = |text: String| Escaped::text(text).to_string();
                Ok((
                    text(row.get(0)?),
                    text(row.get(1)?),
                    row.get::<_, Option<String>>(2)?.unwrap_or_default(),
                ))
            })
            .map_err(failed)?;
        rows = read.collect::<Result<_, _>>().map_err(failed)?;
    }
    let name_w = rows
        .iter()
        .map(|r| r.0.chars().count())
        .max()
        .unwrap_or(0)
        .max(4);
    let mut text = format!("{:name_w$}  {:44}  SINCE (UTC)\n", "NAME", "KEY");
    for (name, key, since) in &rows {
        text.push_str(&format!("{name:name_w$}  {key:44}  {since}\n"));
    }
    text.push_str(&match rows.len() {
        0 => "no name is bound to a key\n".to_owned(),
        1 => "1 name bound\n".to_owned(),
        n => format!("{n} names bound\n"),
    });
    let mut stdout = std::io::stdout().lock();
    match stdout.write_all(text.as_bytes()) {
        Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => Err(Error::Output(e)),
        _ => Ok(()),
    }
}

/// `parlo-server release NAME`: frees the name's binding; returns whether there was one.
/// A running server reads the change within a second or two.
pub fn release(path: &Path, name: &Name) -> Result<Option<String>, Error> {
    let db = database(path, OpenFlags::SQLITE_OPEN_READ_WRITE)?;
    if !has_bindings(&db, path)? {
        return Ok(None);
    }
    let failed = |source| Error::Database {
        path: path.to_owned(),
        doing: "release the name",
        source,
    };
    let key: Option<String> = db
        .query_row(
            "DELETE FROM bindings WHERE name = ?1 RETURNING key",
            [name.as_str()],
            |row| row.get(0),
        )
        .optional()
        .map_err(failed)?;
    Ok(key.map(|key| Escaped::text(key).to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    const KEY: &str = "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";

    #[test]
    fn lines_comments_and_blank_lines() {
        let text =
            format!("# the front door\n\nalice {KEY}\n   bob\t{KEY}   # the kitchen\n#{KEY}\n");
        let bindings = parse(&text).expect("valid");
        let names: Vec<&str> = bindings.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["alice", "bob"]);
        assert_eq!(bindings[0].1.to_string(), KEY);
    }

    #[test]
    fn bad_lines_say_which_and_why() {
        for (text, line, expected) in [
            (format!("alice {KEY}\nbob\n"), 2, "has no key"),
            ("\n\nalice short\n".to_owned(), 3, "the key of \"alice\""),
            (format!("alice {KEY} extra\n"), 1, "expected NAME KEY"),
            (format!("a=b {KEY}\n"), 1, "is not a name"),
            (format!("alice {KEY}\nalice {KEY}\n"), 2, "on line 1"),
            (format!("\u{1b}[2J {KEY}\n"), 1, "\\u{1b}"),
        ] {
            let bad = parse(&text).expect_err(&text);
            assert_eq!(bad.line, line, "{text}");
            assert!(bad.what.contains(expected), "{text}: {}", bad.what);
            assert!(!bad.what.contains('\u{1b}'));
        }
    }

    #[test]
    fn the_copy_reads_back_as_a_names_file() {
        let alice = Name::new("alice").expect("valid");
        let key = PublicKey::parse(KEY).expect("valid");
        let text = render([(&alice, &key, 0)].into_iter());
        assert!(text.contains("# since 1970-01-01 00:00:00"), "{text}");
        assert_eq!(parse(&text), Ok(vec![(alice, key)]));
    }
}
