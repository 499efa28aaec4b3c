//! `parlo-server users`: the live directory from the database, as a table (the original
//! server window's live view, for a headless box).

use std::io::{self, IsTerminal, Write};
use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use parlo_net::directory::Escaped;
use rusqlite::{Connection, OpenFlags};

use crate::error::Error;

/// One row of the table.
#[derive(Debug, Clone, PartialEq, Eq)]
struct User {
    name: String,
    ip: String,
    port: u16,
    /// `parlo` or `original`.
    dialect: String,
    /// The key the phone proved, shortened to its first characters; `-` for a plain
    /// registration (`parlo-server names` shows keys whole).
    key: String,
    /// `YYYY-MM-DD HH:MM:SS`, UTC.
    since: String,
}

fn read(db: &Connection, path: &Path) -> Result<Vec<User>, Error> {
    let failed = |source| Error::Database {
        path: path.to_owned(),
        doing: "read the presence table (is this a parlo-server database?)",
        source,
    };
    let mut stmt = db
        .prepare_cached(
            "SELECT name, ip, port, dialect,
                    strftime('%Y-%m-%d %H:%M:%S', since, 'unixepoch'), key
             FROM presence ORDER BY name",
        )
        .map_err(failed)?;
    let rows = stmt
        .query_map([], |row| {
            // Escaped: the table is shown on a terminal, and any program can write the file.
            let text = |text: String| Escaped::text(text).to_string();
            Ok(User {
                name: text(row.get(0)?),
                ip: text(row.get(1)?),
                port: row.get(2)?,
                dialect: text(row.get(3)?),
                since: row.get::<_, Option<String>>(4)?.unwrap_or_default(),
                key: match row.get::<_, Option<String>>(5)? {
                    Some(key) => text(key.chars().take(KEY_SHOWN).collect()),
                    None => "-".to_owned(),
                },
            })
        })
        .map_err(failed)?;
    rows.collect::<Result<_, _>>().map_err(failed)
}

/// Characters of a key shown: enough to tell the keys of a site apart at a glance.
const KEY_SHOWN: usize = 8;

/// The table as text: a header, one line per user, and a count.
fn render(users: &[User]) -> String {
    let width = |title: &str, column: &dyn Fn(&User) -> usize| {
        users.iter().map(column).max().unwrap_or(0).max(title.len())
    };
    let name_w = width("NAME", &|u| u.name.chars().count());
    let ip_w = width("IP", &|u| u.ip.len());
    let dialect_w = width("DIALECT", &|u| u.dialect.len());
    let key_w = width("KEY", &|u| u.key.chars().count());
    let mut text = format!(
        "{:name_w$}  {:ip_w$}  {:>5}  {:dialect_w$}  {:key_w$}  SINCE (UTC)\n",
        "NAME", "IP", "PORT", "DIALECT", "KEY"
    );
    for u in users {
        text.push_str(&format!(
            "{:name_w$}  {:ip_w$}  {:>5}  {:dialect_w$}  {:key_w$}  {}\n",
            u.name, u.ip, u.port, u.dialect, u.key, u.since
        ));
    }
    text.push_str(&match users.len() {
        0 => "nobody online\n".to_owned(),
        1 => "1 online\n".to_owned(),
        n => format!("{n} online\n"),
    });
    text
}

/// Prints the directory once, or every second with `watch` until SIGINT/SIGTERM.
pub fn run(path: &Path, watch: bool) -> Result<(), Error> {
    if !path.exists() {
        return Err(Error::NoDatabase(path.to_owned()));
    }
    let db = Connection::open_with_flags(
        path,
        OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX,
    )
    .map_err(|source| Error::Database {
        path: path.to_owned(),
        doing: "open it for reading",
        source,
    })?;
    let _ = db.busy_timeout(Duration::from_millis(500));
    let stop = Arc::new(AtomicBool::new(false));
    if watch {
        for signal in [signal_hook::consts::SIGINT, signal_hook::consts::SIGTERM] {
            signal_hook::flag::register(signal, Arc::clone(&stop)).map_err(|source| {
                Error::Poll {
                    doing: "install signal handlers",
                    source,
                }
            })?;
        }
    }
    let tty = io::stdout().is_terminal();
    loop {
        let table = render(&read(&db, path)?);
        match show(&table, watch, tty) {
            Ok(()) => {}
            // The reader went away (`users | head`): done, as any Unix filter would be.
            Err(e) if e.kind() == io::ErrorKind::BrokenPipe => return Ok(()),
            Err(e) => return Err(Error::Output(e)),
        }
        if !watch {
            return Ok(());
        }
        let next = Instant::now() + Duration::from_secs(1);
        while Instant::now() < next {
            if stop.load(Ordering::Relaxed) {
                return Ok(());
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

/// Writes one rendering of the table to stdout.
fn show(table: &str, watch: bool, tty: bool) -> io::Result<()> {
    let mut stdout = io::stdout().lock();
    if watch && tty {
        // Home the cursor and clear the screen: a live view like `watch(1)`.
        write!(stdout, "\x1b[H\x1b[2J")?;
    }
    stdout.write_all(table.as_bytes())?;
    if watch && !tty {
        writeln!(stdout)?;
    }
    stdout.flush()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn table_aligns_columns_and_counts() {
        let users = [
            User {
                name: "alice".into(),
                ip: "192.168.1.20".into(),
                port: 5001,
                dialect: "parlo".into(),
                key: "AAECAwQF".into(),
                since: "2026-11-25 19:40:01".into(),
            },
            User {
                name: "door-phone-kitchen".into(),
                ip: "10.0.0.3".into(),
                port: 5001,
                dialect: "original".into(),
                key: "-".into(),
                since: "2026-11-25 19:41:00".into(),
            },
        ];
        assert_eq!(
            render(&users),
            "NAME                IP             PORT  DIALECT   KEY       SINCE (UTC)\n\
             alice               192.168.1.20   5001  parlo     AAECAwQF  2026-11-25 19:40:01\n\
             door-phone-kitchen  10.0.0.3       5001  original  -         2026-11-25 19:41:00\n\
             2 online\n"
        );
    }

    #[test]
    fn empty_table() {
        assert_eq!(
            render(&[]),
            "NAME  IP   PORT  DIALECT  KEY  SINCE (UTC)\nnobody online\n"
        );
    }
}
