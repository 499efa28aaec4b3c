//! The live directory: an in-memory map that answers the protocol, mirrored into SQLite.
//!
//! Why two copies: lookups are the hot path (tens of thousands a second) and must not wait
//! on a disk; the database is for the outside world (`parlo-server users`, a dashboard)
//! and for nothing the protocol depends on, since presence is cleared at every start-up
//! anyway. So the map is the truth and every change is also written to the `presence`
//! table with cached prepared statements, inside one transaction that stays open for at
//! most [`COMMIT_EVERY`]: under registration churn one commit carries hundreds of writes,
//! which is what makes tens of thousands of writes a second possible with WAL and
//! `synchronous=NORMAL` (a commit per write costs ~15 µs, a write inside a transaction ~2).
//! The database lags the map by at most [`COMMIT_EVERY`].
//!
//! The one write that can stall on the disk is the WAL checkpoint, which fsyncs (a few
//! milliseconds here). It is taken off the event loop: automatic checkpoints are disabled
//! on the loop's connection and a [`Checkpointer`] thread, with its own connection, runs a
//! passive checkpoint every [`CHECKPOINT_EVERY`] (passive: it never blocks the writer).
//!
//! The database is a mirror, so nothing that goes wrong with it stops the directory, at
//! start-up or later: a database locked by another program (beyond the busy timeout), a
//! full disk, a file deleted, replaced, unwritable or damaged. The failure is logged as an
//! error, the server serves from memory, and every [`RESYNC_EVERY`] it tries again: it
//! opens the file anew if it has to (a replaced file is locked again) and rewrites the
//! whole table from the map. A file that is damaged or not a database at all is moved
//! aside, never deleted (`directory.db.corrupt-20261125T194001Z`, with its `-wal`), and a
//! fresh one is made. What stops the server is only what configuration must fix: a
//! database path that cannot be opened or created at all, and a database another
//! parlo-server holds ([`lock`]).
//!
//! Names bound to keys are the one thing the database holds that the map cannot rebuild:
//! the `bindings` table is never cleared, and it is the truth. The store reads it at
//! start-up and keeps it in memory ([`Registry::owner`] is a lookup), writes a new binding
//! in the same transactions as presence, and once a second looks whether another program
//! changed the file (`PRAGMA data_version`: `parlo-server release` deletes a row), and
//! then reads the bindings again. A binding made while the database cannot be written
//! stays in memory and is written at the next successful retry, with any the file lacks
//! (a replaced or deleted file gets them all back).
//!
//! Beside the database the store keeps a copy of the bindings in the `--names` format
//! (`directory.db.bindings`), rewritten whole (atomically) at most once a second when they
//! changed. It is read only when the database cannot be read at start-up (locked by
//! another program, or damaged and moved aside after its bindings could not be read), so
//! that a name is never handed to another key because its binding was unreadable. When
//! neither can be read (the copy is unreadable), names not bound in memory are
//! [`Owner::Unknown`] and nobody registers them until the bindings are read; a missing
//! copy means no name was ever bound.

use std::collections::{BTreeMap, BTreeSet};
use std::fs::{File, OpenOptions};
use std::net::IpAddr;
use std::os::fd::AsRawFd;
use std::os::unix::fs::{MetadataExt, OpenOptionsExt};
use std::path::{Path, PathBuf};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use parlo_net::directory::{Contact, Dialect, Name, Owner, Page, PublicKey, Registry};
use rusqlite::{Connection, OpenFlags, params};

use crate::error::Error;

/// Longest time a change waits in an open transaction before it is committed.
pub const COMMIT_EVERY: Duration = Duration::from_millis(10);

/// How often the WAL is copied back into the database file, off the event loop.
const CHECKPOINT_EVERY: Duration = Duration::from_secs(1);

/// How often a database that failed is tried again and rewritten from memory.
const RESYNC_EVERY: Duration = Duration::from_secs(5);

/// How long a write waits for a lock another program holds on the database. The checkpoint
/// thread and `users` never hold one a writer waits for (WAL), so waiting means another
/// program writes: after this the write fails and is retried later. Retries do not wait.
const BUSY_TIMEOUT: Duration = Duration::from_millis(200);

/// How often the same database failure is logged again while retries keep failing.
const RELOG_EVERY: Duration = Duration::from_secs(60);

const SCHEMA: &str = "
    CREATE TABLE IF NOT EXISTS presence (
        name    TEXT    NOT NULL PRIMARY KEY,  -- registered name
        ip      TEXT    NOT NULL,              -- the connection's peer address
        port    INTEGER NOT NULL,              -- the phone's UDP port
        since   INTEGER NOT NULL,              -- registration time, seconds since 1970 UTC
        dialect TEXT    NOT NULL,              -- 'parlo' (REG with a port) or 'original'
        key     TEXT                           -- the key the phone proved, base64; NULL
                                               -- for a plain registration
    ) WITHOUT ROWID;
    CREATE TABLE IF NOT EXISTS bindings (
        name    TEXT    NOT NULL PRIMARY KEY,  -- a name bound to a key
        key     TEXT    NOT NULL,              -- the key, base64 (44 characters)
        since   INTEGER NOT NULL               -- when it was bound, seconds since 1970 UTC
    ) WITHOUT ROWID;
";

/// Whether `presence` exists without the `key` column (or the `dialect` column), as a
/// database of an earlier version holds it.
const OUTDATED_PRESENCE: &str =
    "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'presence')
    AND NOT EXISTS (SELECT 1 FROM pragma_table_info('presence') WHERE name = 'key')";

const INSERT: &str = "INSERT INTO presence (name, ip, port, since, dialect, key)
    VALUES (?1, ?2, ?3, ?4, ?5, ?6)
    ON CONFLICT (name) DO UPDATE
    SET ip = excluded.ip, port = excluded.port, dialect = excluded.dialect, key = excluded.key";
const DELETE: &str = "DELETE FROM presence WHERE name = ?1";
const BIND: &str = "INSERT INTO bindings (name, key, since) VALUES (?1, ?2, ?3)
    ON CONFLICT (name) DO UPDATE SET key = excluded.key, since = excluded.since";
const BINDINGS: &str = "SELECT name, key, since FROM bindings";

/// One registration as the store keeps it.
#[derive(Debug, Clone, Copy)]
struct Entry {
    contact: Contact,
    /// Seconds since 1970 UTC.
    since: i64,
}

/// One name's binding to a key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Binding {
    key: PublicKey,
    /// Seconds since 1970 UTC.
    since: i64,
}

/// The live directory (see the module docs).
#[derive(Debug)]
pub struct Store {
    path: PathBuf,
    /// The connection to the database; `None` while it cannot be opened.
    db: Option<Connection>,
    live: BTreeMap<Name, Entry>,
    /// When the open transaction began, if one is open.
    open_since: Option<Instant>,
    /// When the database last failed, if it is out of step with `live` (always while `db`
    /// is `None`).
    stale_since: Option<Instant>,
    /// Writes, and attempts to restore the database, that failed since start-up.
    failures: u64,
    /// When a failure was last logged, and what it said.
    last_logged: Option<(Instant, String)>,
    /// The time of the current loop iteration.
    now: Instant,
    checkpointer: Option<Checkpointer>,
    /// The database file, locked for as long as the store lives ([`lock`]); locked anew
    /// when the file at `path` is another one.
    lock: File,
    /// Names bound to keys (see the module docs).
    bindings: BTreeMap<Name, Binding>,
    /// Bindings made or assigned here that the database does not hold yet.
    unwritten: BTreeSet<Name>,
    /// Whether `bindings` holds every binding there is: read from the database or its
    /// copy. Until then names not in `bindings` are [`Owner::Unknown`].
    bindings_read: bool,
    /// The bindings of a damaged file could be read neither from it nor from the copy:
    /// they stay unknown for the rest of the run.
    bindings_lost: bool,
    /// `PRAGMA data_version` when the bindings were last read: another program's change
    /// to the file changes it.
    data_version: Option<i64>,
    /// The copy beside the database is older than `bindings`.
    copy_stale: bool,
    /// Writing the copy failed (logged once until it works again).
    copy_failing: bool,
    /// REGs must come with a key (`--require-keys`).
    keys_required: bool,
}

/// Opens the database file, creating it if missing, and locks it (`flock`, exclusive,
/// without waiting) for this server's lifetime: a second server on the same file would
/// clear the presence table under the first. The lock is advisory and separate from
/// SQLite's own locks, so `parlo-server users` still reads the file; it ends with the
/// process, however that ends.
fn lock(path: &Path) -> Result<File, Error> {
    let failed = |doing| {
        move |source| Error::DatabaseFile {
            path: path.to_owned(),
            doing,
            source,
        }
    };
    // An empty file is an empty database; the mode is SQLite's own.
    let file = match OpenOptions::new()
        .read(true)
        .write(true)
        .create(true)
        .truncate(false) // never: it is the database
        .mode(0o644)
        .open(path)
    {
        // A file this user may only read can still be locked (and its writes retried).
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied && path.is_file() => {
            File::open(path).map_err(failed("open it"))?
        }
        other => other.map_err(failed("open or create it"))?,
    };
    // SAFETY: flock on a descriptor this function owns; it stays open as long as `file`.
    let locked = unsafe { libc::flock(file.as_raw_fd(), libc::LOCK_EX | libc::LOCK_NB) };
    if locked == 0 {
        return Ok(file);
    }
    let error = std::io::Error::last_os_error();
    if error.kind() == std::io::ErrorKind::WouldBlock {
        return Err(Error::DatabaseInUse(path.to_owned()));
    }
    Err(failed("lock it for this server")(error))
}

/// Whether `lock` is a lock on the file now at `path`: a file moved away, deleted or
/// replaced leaves it on the old one.
fn locks(lock: &File, path: &Path) -> bool {
    match (lock.metadata(), std::fs::metadata(path)) {
        (Ok(held), Ok(current)) => held.dev() == current.dev() && held.ino() == current.ino(),
        _ => false,
    }
}

/// Opens `path` for writing, in WAL mode, with the schema in place; a lock another
/// program holds is waited for up to `busy`.
fn open(path: &Path, busy: Duration) -> Result<Connection, Error> {
    let failed = |doing| {
        move |source| Error::Database {
            path: path.to_owned(),
            doing,
            source,
        }
    };
    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE
        | OpenFlags::SQLITE_OPEN_CREATE
        | OpenFlags::SQLITE_OPEN_NO_MUTEX;
    let db = Connection::open_with_flags(path, flags).map_err(failed("open it"))?;
    db.busy_timeout(busy)
        .map_err(failed("set a busy timeout"))?;
    let mode: String = db
        .pragma_update_and_check(None, "journal_mode", "WAL", |row| row.get(0))
        .map_err(failed("switch it to WAL mode"))?;
    if !mode.eq_ignore_ascii_case("wal") {
        log::warn!(
            "database {}: WAL mode unavailable here (journal mode {mode}); writes will be slower",
            path.display()
        );
    }
    db.pragma_update(None, "synchronous", "NORMAL")
        .map_err(failed("set synchronous=NORMAL"))?;
    // The table holds nothing but live presence, cleared at every start and rewritten
    // from memory at every reopen: an earlier version's table is simply made again.
    let outdated: bool = db
        .query_row(OUTDATED_PRESENCE, [], |row| row.get(0))
        .map_err(failed("read the presence table's columns"))?;
    if outdated {
        db.execute_batch("DROP TABLE presence")
            .map_err(failed("replace an earlier version's presence table"))?;
    }
    db.execute_batch(SCHEMA)
        .map_err(failed("create the presence and bindings tables"))?;
    // The checkpointer thread does it instead (see the module docs).
    db.pragma_update(None, "wal_autocheckpoint", 0)
        .map_err(failed("turn off automatic checkpoints"))?;
    db.set_prepared_statement_cache_capacity(8);
    Ok(db)
}

/// Where a damaged database file is kept: beside it, named for the time it was found,
/// and never over an earlier one.
fn aside_path(path: &Path, now_unix: i64) -> PathBuf {
    let stem = path.as_os_str().to_string_lossy().into_owned();
    let stamp = utc_stamp(now_unix);
    let mut aside = PathBuf::from(format!("{stem}.corrupt-{stamp}"));
    let mut n = 1;
    while aside.symlink_metadata().is_ok() {
        aside = PathBuf::from(format!("{stem}.corrupt-{stamp}-{n}"));
        n += 1;
    }
    aside
}

/// `secs` since 1970 as a UTC time for a file name: `20261125T194001Z`.
pub fn utc_stamp(secs: i64) -> String {
    let (days, rem) = (secs.div_euclid(86_400), secs.rem_euclid(86_400));
    // Days to a civil date (proleptic Gregorian), after Howard Hinnant's algorithm.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}Z",
        rem / 3600,
        rem % 3600 / 60,
        rem % 60
    )
}

/// The thread that checkpoints the WAL every [`CHECKPOINT_EVERY`] (see the module docs).
#[derive(Debug)]
struct Checkpointer {
    stop: mpsc::Sender<()>,
    thread: std::thread::JoinHandle<()>,
}

impl Checkpointer {
    /// Starts the thread, or says why it could not.
    fn start(path: &Path) -> std::io::Result<Checkpointer> {
        let (stop, stopped) = mpsc::channel::<()>();
        let path = path.to_owned();
        let thread = std::thread::Builder::new()
            .name("parlo-checkpoint".into())
            .spawn(move || {
                let mut failing = false;
                while let Err(mpsc::RecvTimeoutError::Timeout) =
                    stopped.recv_timeout(CHECKPOINT_EVERY)
                {
                    // A fresh connection each time follows the file through a reopen.
                    let flags = OpenFlags::SQLITE_OPEN_READ_WRITE | OpenFlags::SQLITE_OPEN_NO_MUTEX;
                    let result = Connection::open_with_flags(&path, flags).and_then(|db| {
                        db.query_row("PRAGMA wal_checkpoint(PASSIVE)", [], |_| Ok(()))
                    });
                    match result {
                        Err(e) if !failing => {
                            log::warn!("database {}: checkpoint failed: {e}", path.display());
                            failing = true;
                        }
                        Err(_) => {}
                        Ok(()) => failing = false,
                    }
                }
            })?;
        Ok(Checkpointer { stop, thread })
    }

    /// Stops the thread and waits for it (at most one checkpoint).
    fn stop(self) {
        drop(self.stop);
        let _ = self.thread.join();
    }
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
}

impl Store {
    /// Locks the database file (creating it if missing), and clears the presence a
    /// previous run left in it. Fails only when the file cannot be opened or created at
    /// all, or another parlo-server holds it; any other trouble with the database is
    /// logged, and the store serves from memory and tries again later.
    pub fn open(path: &Path, now: Instant) -> Result<Store, Error> {
        let lock = lock(path)?;
        let mut store = Store {
            path: path.to_owned(),
            db: None,
            live: BTreeMap::new(),
            open_since: None,
            stale_since: None,
            failures: 0,
            last_logged: None,
            now,
            checkpointer: None,
            lock,
            bindings: BTreeMap::new(),
            unwritten: BTreeSet::new(),
            bindings_read: false,
            bindings_lost: false,
            data_version: None,
            copy_stale: false,
            copy_failing: false,
            keys_required: false,
        };
        // The table is rewritten from the (empty) map: the previous run's presence goes.
        match store.restore(BUSY_TIMEOUT) {
            Ok(()) => {}
            // A fresh file (after a damaged one) taken by another server meanwhile.
            Err(e @ Error::DatabaseInUse(_)) => return Err(e),
            Err(e) => {
                store.failed_restore(&e);
                if !store.bindings_read {
                    store.read_copy();
                }
            }
        }
        store.checkpointer = match Checkpointer::start(path) {
            Ok(checkpointer) => Some(checkpointer),
            Err(e) => {
                log::warn!("cannot start the checkpoint thread ({e}); checkpointing inline");
                None
            }
        };
        store.set_autocheckpoint();
        Ok(store)
    }

    /// Sets the time of the current loop iteration.
    pub fn set_now(&mut self, now: Instant) {
        self.now = now;
    }

    /// Registered names.
    pub fn len(&self) -> usize {
        self.live.len()
    }

    /// REGs must come with a key (`--require-keys`).
    pub fn set_keys_required(&mut self, required: bool) {
        self.keys_required = required;
    }

    /// Binds names to keys as an administrator's `--names` file says: over whatever the
    /// database held for them (the file is the administrator's word), at every start.
    pub fn assign(&mut self, assigned: &[(Name, PublicKey)]) {
        let now = unix_now();
        for (name, key) in assigned {
            match self.bindings.get(name) {
                Some(bound) if bound.key == *key => continue,
                Some(bound) => log::warn!(
                    "{name:?} was bound to {}, --names binds it to {key}",
                    bound.key
                ),
                None => {}
            }
            self.bind_at(name, key, now);
        }
    }

    /// Names bound to keys.
    pub fn bindings_len(&self) -> usize {
        self.bindings.len()
    }

    /// Whether every binding is known (read from the database or its copy).
    pub fn bindings_read(&self) -> bool {
        self.bindings_read
    }

    /// Where the copy of the bindings is kept: beside the database.
    fn copy_path(&self) -> PathBuf {
        let mut path = self.path.as_os_str().to_owned();
        path.push(".bindings");
        PathBuf::from(path)
    }

    /// The database cannot be read at start-up: the bindings come from the copy, and are
    /// written into the database once it can be. Without a copy no name was ever bound;
    /// an unreadable copy leaves them unknown.
    fn read_copy(&mut self) {
        let path = self.copy_path();
        if !path.exists() {
            self.bindings_read = !self.bindings_lost;
            return;
        }
        match crate::names::read(&path) {
            Ok(copied) => {
                let now = unix_now();
                for (name, key) in copied {
                    self.bindings
                        .entry(name)
                        .or_insert(Binding { key, since: now });
                }
                self.bindings_read = true;
                self.bindings_lost = false;
                log::warn!(
                    "{} name bindings read from the copy {} until the database can be read",
                    self.bindings.len(),
                    path.display()
                );
            }
            Err(e) => {
                self.bindings_lost = true;
                self.bindings_read = false;
                log::error!(
                    "{e}: the name bindings are unknown, so only names bound by --names \
                     can be registered until the database can be read"
                );
            }
        }
    }

    /// Rewrites the copy of the bindings if they changed since (at most once a second,
    /// from the server's sweep).
    pub fn save_copy(&mut self) {
        if !self.copy_stale || !self.bindings_read {
            return;
        }
        let text = crate::names::render(
            self.bindings
                .iter()
                .map(|(name, binding)| (name, &binding.key, binding.since)),
        );
        match crate::names::write_atomically(&self.copy_path(), &text) {
            Ok(()) => {
                self.copy_stale = false;
                self.copy_failing = false;
            }
            Err(e) if !self.copy_failing => {
                self.copy_failing = true;
                log::error!(
                    "cannot write the copy of the name bindings {}: {e}; retrying every second",
                    self.copy_path().display()
                );
            }
            Err(_) => {}
        }
    }

    /// Reads the bindings again if another program changed the database since they were
    /// last read (`parlo-server release`): called once a second, after a commit.
    pub fn refresh_bindings(&mut self) {
        if self.stale_since.is_some() || self.open_since.is_some() {
            return;
        }
        let Some(db) = &self.db else {
            return;
        };
        let read = data_version(db).and_then(|version| {
            if Some(version) == self.data_version {
                return Ok(None);
            }
            read_bindings(db).map(|stored| Some((version, stored)))
        });
        let (version, stored) = match read {
            Ok(Some(read)) => read,
            Ok(None) => return,
            Err(e) => return self.failed("read the name bindings", e),
        };
        let mut fresh = stored;
        // Ours not written yet stay (none, after a commit, unless the database failed).
        for name in &self.unwritten {
            if let Some(binding) = self.bindings.get(name) {
                fresh.insert(name.clone(), *binding);
            }
        }
        for (name, binding) in &self.bindings {
            if !fresh.contains_key(name) {
                log::info!("{name:?} released: no longer bound to {}", binding.key);
            }
        }
        for (name, binding) in &fresh {
            if self.bindings.get(name) != Some(binding) {
                log::info!("{name:?} bound to {} in the database", binding.key);
            }
        }
        if fresh != self.bindings {
            self.copy_stale = true;
        }
        self.bindings = fresh;
        self.data_version = Some(version);
    }

    /// Binds `name` to `key` since `since`, in memory now and in the database at the next
    /// commit (or retry).
    fn bind_at(&mut self, name: &Name, key: &PublicKey, since: i64) {
        self.bindings
            .insert(name.clone(), Binding { key: *key, since });
        self.unwritten.insert(name.clone());
        self.copy_stale = true;
        self.write("record a name's binding", |db| {
            db.prepare_cached(BIND)?
                .execute(params![name.as_str(), key.to_string(), since])?;
            Ok(())
        });
    }

    /// Writes that failed since start-up.
    pub fn failures(&self) -> u64 {
        self.failures
    }

    /// When [`Store::commit_if_due`] next has work to do, if ever.
    pub fn next_deadline(&self) -> Option<Instant> {
        match (self.open_since, self.stale_since) {
            (Some(open), _) => Some(open + COMMIT_EVERY),
            (None, Some(failed)) => Some(failed + RESYNC_EVERY),
            (None, None) => None,
        }
    }

    /// Commits the open transaction once it is [`COMMIT_EVERY`] old, and retries a
    /// failed database once it has rested [`RESYNC_EVERY`].
    pub fn commit_if_due(&mut self) {
        if let Some(since) = self.open_since
            && self.now >= since + COMMIT_EVERY
        {
            self.commit();
        }
        if let Some(failed) = self.stale_since
            && self.now >= failed + RESYNC_EVERY
        {
            self.resync();
        }
    }

    /// Commits the open transaction now.
    pub fn commit(&mut self) {
        if self.open_since.take().is_some()
            && let Some(db) = &self.db
        {
            match db.execute_batch("COMMIT") {
                // Every binding made since the last commit was in the transaction.
                Ok(()) => self.unwritten.clear(),
                Err(e) => self.failed("commit", e),
            }
        }
    }

    /// Runs one write inside the open transaction, opening it if needed.
    fn write(
        &mut self,
        doing: &'static str,
        run: impl FnOnce(&Connection) -> rusqlite::Result<()>,
    ) {
        if self.stale_since.is_some() {
            return; // the whole table is rewritten at the next resync
        }
        let Some(db) = &self.db else {
            return; // unreachable: no connection means stale
        };
        if self.open_since.is_none() {
            if let Err(e) = db.execute_batch("BEGIN") {
                self.failed("begin a transaction", e);
                return;
            }
            self.open_since = Some(self.now);
        }
        if let Err(e) = run(db) {
            self.failed(doing, e);
        }
    }

    /// A write failed: the transaction is dropped, and the table will be rewritten.
    fn failed(&mut self, doing: &'static str, source: rusqlite::Error) {
        self.failures += 1;
        let error = Error::Database {
            path: self.path.clone(),
            doing,
            source,
        };
        if self.stale_since.is_none() {
            self.log_failure(&error);
        }
        if self.open_since.take().is_some()
            && let Some(db) = &self.db
        {
            let _ = db.execute_batch("ROLLBACK");
        }
        self.stale_since = Some(self.now);
    }

    /// Trying to restore the database failed: the store serves from memory.
    fn failed_restore(&mut self, error: &Error) {
        self.failures += 1;
        self.stale_since = Some(self.now);
        self.log_failure(error);
    }

    /// Logs a database failure as an error, unless the same was logged less than
    /// [`RELOG_EVERY`] ago (a long outage is not one line every [`RESYNC_EVERY`]).
    fn log_failure(&mut self, error: &Error) {
        let text = error.to_string();
        if let Some((at, logged)) = &self.last_logged
            && *logged == text
            && self.now < *at + RELOG_EVERY
        {
            return;
        }
        log::error!(
            "{text}; the directory is served from memory and the database tried again every \
             {} s",
            RESYNC_EVERY.as_secs()
        );
        self.last_logged = Some((self.now, text));
    }

    /// Rewrites the whole presence table from memory in one transaction.
    fn rewrite(&mut self) -> Result<(), Error> {
        self.commit();
        let failed = |source| Error::Database {
            path: self.path.clone(),
            doing: "rewrite the live directory",
            source,
        };
        let Some(db) = &mut self.db else {
            return Ok(()); // unreachable: restore opens it first
        };
        let tx = db.transaction().map_err(failed)?;
        tx.execute("DELETE FROM presence", []).map_err(failed)?;
        {
            let mut insert = tx.prepare_cached(INSERT).map_err(failed)?;
            for (name, entry) in &self.live {
                insert
                    .execute(params![
                        name.as_str(),
                        ip_text(entry.contact.ip),
                        entry.contact.port,
                        entry.since,
                        dialect_text(entry.contact),
                        entry.contact.key.map(|key| key.to_string())
                    ])
                    .map_err(failed)?;
            }
        }
        // The file's bindings, with ours it lacks (made while it could not be written, or
        // it is a new file) or that are not written yet; the file's win over ours.
        let stored = read_bindings(&tx).map_err(failed)?;
        let mut merged = stored.clone();
        for (name, binding) in &self.bindings {
            if self.unwritten.contains(name) || !stored.contains_key(name) {
                merged.insert(name.clone(), *binding);
            }
        }
        {
            let mut bind = tx.prepare_cached(BIND).map_err(failed)?;
            for (name, binding) in &merged {
                if stored.get(name) != Some(binding) {
                    bind.execute(params![
                        name.as_str(),
                        binding.key.to_string(),
                        binding.since
                    ])
                    .map_err(failed)?;
                }
            }
        }
        tx.commit().map_err(failed)?;
        let version = data_version(db).map_err(failed)?;
        if merged != self.bindings || !self.copy_path().exists() {
            self.copy_stale = true;
        }
        self.bindings = merged;
        self.unwritten.clear();
        self.bindings_read = !self.bindings_lost;
        self.data_version = Some(version);
        Ok(())
    }

    /// Brings the database back in step with the map: locks the file now at the path if
    /// the lock is on another, opens it if there is no connection, and rewrites the
    /// table. A damaged file is moved aside first, and a fresh one made.
    fn restore(&mut self, busy: Duration) -> Result<(), Error> {
        match self.try_restore(busy) {
            Err(e) if e.is_corrupt_database() => {
                self.db = None;
                self.salvage_bindings();
                let aside = aside_path(&self.path, unix_now());
                self.move_aside(&aside)?;
                log::error!(
                    "{e}: moved it aside to {} (kept for inspection) and made a new one",
                    aside.display()
                );
                self.try_restore(busy)
            }
            other => other,
        }
    }

    fn try_restore(&mut self, busy: Duration) -> Result<(), Error> {
        if !locks(&self.lock, &self.path) {
            self.db = None; // a connection to the old file goes with the old lock
            self.lock = lock(&self.path)?;
        }
        if self.db.is_none() {
            self.db = Some(open(&self.path, busy)?);
            self.set_autocheckpoint();
        }
        self.stale_since = None;
        let rewritten = self.rewrite();
        if rewritten.is_err() {
            self.stale_since = Some(self.now);
        }
        rewritten
    }

    /// The database file is damaged: reads what bindings it still gives, to carry them into
    /// the new file; when it gives none, from the copy.
    fn salvage_bindings(&mut self) {
        let flags = OpenFlags::SQLITE_OPEN_READ_ONLY | OpenFlags::SQLITE_OPEN_NO_MUTEX;
        let salvaged = Connection::open_with_flags(&self.path, flags).and_then(|db| {
            let exists: bool = db.query_row(
                "SELECT EXISTS (SELECT 1 FROM sqlite_master WHERE name = 'bindings')",
                [],
                |row| row.get(0),
            )?;
            if exists {
                read_bindings(&db)
            } else {
                Ok(BTreeMap::new())
            }
        });
        match salvaged {
            Ok(stored) => {
                log::warn!(
                    "database {}: {} name bindings read from the damaged file",
                    self.path.display(),
                    stored.len()
                );
                for (name, binding) in stored {
                    self.bindings.entry(name).or_insert(binding);
                }
                // Every binding there was is known, even if the new file fails too.
                self.bindings_read = !self.bindings_lost;
            }
            // Read before (the file was damaged later): memory holds every binding.
            Err(e) if self.bindings_read => log::warn!(
                "database {}: the name bindings cannot be read from the damaged file ({e}); \
                 the {} in memory are written into the new one",
                self.path.display(),
                self.bindings.len()
            ),
            Err(e) => {
                log::error!(
                    "database {}: the name bindings cannot be read from the damaged file \
                     ({e}); reading them from the copy",
                    self.path.display()
                );
                self.read_copy();
            }
        }
    }

    /// Moves the database file and its write-ahead log to `aside`.
    fn move_aside(&self, aside: &Path) -> Result<(), Error> {
        let moving = |source| Error::DatabaseFile {
            path: self.path.clone(),
            doing: "move it aside",
            source,
        };
        std::fs::rename(&self.path, aside).map_err(moving)?;
        // The log belongs to the damaged file: left here, it would be replayed into the
        // new one. The shared-memory index is rebuilt from the log, but is kept with it.
        for suffix in ["-wal", "-shm"] {
            let from = PathBuf::from(format!("{}{suffix}", self.path.display()));
            if from.symlink_metadata().is_ok() {
                let to = PathBuf::from(format!("{}{suffix}", aside.display()));
                std::fs::rename(&from, &to).map_err(moving)?;
            }
        }
        Ok(())
    }

    /// Without the checkpoint thread, the loop's connection checkpoints as SQLite does by
    /// default.
    fn set_autocheckpoint(&self) {
        if self.checkpointer.is_none()
            && let Some(db) = &self.db
        {
            let _ = db.pragma_update(None, "wal_autocheckpoint", 1000);
        }
    }

    /// Tries the database again, without waiting for another program's lock (the loop
    /// waits on this).
    fn resync(&mut self) {
        if let Some(db) = &self.db {
            let _ = db.busy_timeout(Duration::ZERO);
        }
        let restored = self.restore(Duration::ZERO);
        if let Some(db) = &self.db {
            let _ = db.busy_timeout(BUSY_TIMEOUT);
        }
        match restored {
            Ok(()) => {
                log::info!(
                    "database {}: rewritten with the {} live registrations",
                    self.path.display(),
                    self.live.len()
                );
                self.last_logged = None;
            }
            Err(e) => self.failed_restore(&e),
        }
    }

    /// Closes and reopens the database file (the one now at the path: locked anew if it
    /// is another), then rewrites the live directory into it. On failure the store
    /// serves from memory and tries again every [`RESYNC_EVERY`].
    pub fn reopen(&mut self) -> Result<(), Error> {
        self.commit();
        self.db = None;
        let restored = self.restore(BUSY_TIMEOUT);
        if let Err(e) = &restored {
            self.failures += 1;
            self.stale_since = Some(self.now);
            self.last_logged = Some((self.now, e.to_string()));
        } else {
            self.last_logged = None;
        }
        restored
    }

    /// Empties the presence table (nobody is online once the server stops) and checkpoints
    /// the WAL into the database file. Nothing to do without a database.
    pub fn close(mut self) -> Result<(), Error> {
        self.commit();
        self.save_copy();
        if let Some(checkpointer) = self.checkpointer.take() {
            checkpointer.stop();
        }
        let Some(db) = self.db.take() else {
            return Ok(());
        };
        let failed = |doing| {
            let path = self.path.clone();
            move |source| Error::Database {
                path,
                doing,
                source,
            }
        };
        db.execute("DELETE FROM presence", [])
            .map_err(failed("clear the presence table"))?;
        db.query_row("PRAGMA wal_checkpoint(TRUNCATE)", [], |_| Ok(()))
            .map_err(failed("checkpoint the write-ahead log"))?;
        db.close().map_err(|(_, source)| failed("close it")(source))
    }
}

/// `PRAGMA data_version`: changes when another connection commits a change to the file.
fn data_version(db: &Connection) -> rusqlite::Result<i64> {
    db.query_row("PRAGMA data_version", [], |row| row.get(0))
}

/// The bindings table. A row that is not a binding (the file edited by hand) is skipped
/// with a warning.
fn read_bindings(db: &Connection) -> rusqlite::Result<BTreeMap<Name, Binding>> {
    let mut stmt = db.prepare_cached(BINDINGS)?;
    let mut rows = stmt.query([])?;
    let mut bindings = BTreeMap::new();
    while let Some(row) = rows.next()? {
        let (name, key, since): (String, String, i64) = (row.get(0)?, row.get(1)?, row.get(2)?);
        match (Name::new(&name), PublicKey::parse(&key)) {
            (Ok(name), Ok(key)) => {
                bindings.insert(name, Binding { key, since });
            }
            (Err(e), _) => log::warn!(
                "bindings table: {:?} skipped, not a name: {e}",
                parlo_net::directory::Escaped::text(&name).to_string()
            ),
            (_, Err(e)) => log::warn!("bindings table: {name:?} skipped, its key: {e}"),
        }
    }
    Ok(bindings)
}

/// How an address is stored: v4 peers seen through a dual-stack socket as plain v4.
fn ip_text(ip: IpAddr) -> String {
    ip.to_canonical().to_string()
}

/// How a dialect is stored: its name (the server always knows it: a REG has a port or not).
fn dialect_text(contact: Contact) -> &'static str {
    contact.dialect.map_or("unknown", Dialect::name)
}

impl Registry for Store {
    fn find(&self, name: &Name) -> Option<Contact> {
        self.live.get(name).map(|entry| entry.contact)
    }

    fn insert(&mut self, name: &Name, contact: Contact) {
        let since = match self.live.get(name) {
            Some(entry) => entry.since,
            None => unix_now(),
        };
        self.live.insert(name.clone(), Entry { contact, since });
        self.write("record a registration", |db| {
            db.prepare_cached(INSERT)?.execute(params![
                name.as_str(),
                ip_text(contact.ip),
                contact.port,
                since,
                dialect_text(contact),
                contact.key.map(|key| key.to_string())
            ])?;
            Ok(())
        });
    }

    fn owner(&self, name: &Name) -> Owner {
        match self.bindings.get(name) {
            Some(binding) => Owner::Key(binding.key),
            None if self.bindings_read => Owner::Free,
            None => Owner::Unknown,
        }
    }

    fn bind(&mut self, name: &Name, key: &PublicKey) {
        log::info!("{name:?} bound to {key}: only this key registers it from now on");
        self.bind_at(name, key, unix_now());
    }

    fn keys_required(&self) -> bool {
        self.keys_required
    }

    fn remove(&mut self, name: &Name) {
        if self.live.remove(name).is_some() {
            self.write("remove a registration", |db| {
                db.prepare_cached(DELETE)?.execute(params![name.as_str()])?;
                Ok(())
            });
        }
    }

    fn page(&self, after: Option<&Name>, skip: u32, page: &mut Page) -> bool {
        use std::ops::Bound::{Excluded, Unbounded};
        // From the cursor: a walk down the tree, whatever the number of names.
        let from = after.map_or(Unbounded, Excluded);
        let mut names = self
            .live
            .range::<Name, _>((from, Unbounded))
            .map(|(name, _)| name)
            .skip(skip as usize);
        for name in names.by_ref() {
            if page.push(name.clone()).is_err() {
                return true;
            }
        }
        false
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::Ipv4Addr;

    fn name(s: &str) -> Name {
        Name::new(s).expect("test names are valid")
    }

    fn contact(last: u8, port: u16) -> Contact {
        Contact::registered(IpAddr::V4(Ipv4Addr::new(127, 0, 0, last)), Some(port))
    }

    /// A fresh temporary directory for one test, removed when dropped.
    struct TempDir(PathBuf);

    impl TempDir {
        fn new(tag: &str) -> TempDir {
            let dir = std::env::temp_dir().join(format!(
                "parlo-store-{tag}-{}-{:?}",
                std::process::id(),
                Instant::now()
            ));
            std::fs::create_dir_all(&dir).expect("temp dir is writable");
            TempDir(dir)
        }
        fn db(&self) -> PathBuf {
            self.0.join("directory.db")
        }
    }

    impl Drop for TempDir {
        fn drop(&mut self) {
            let _ = std::fs::remove_dir_all(&self.0);
        }
    }

    fn rows(path: &Path) -> Vec<(String, String, u16)> {
        let db = Connection::open(path).expect("database exists");
        let mut stmt = db
            .prepare("SELECT name, ip, port FROM presence ORDER BY name")
            .expect("valid query");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?, row.get(2)?)))
            .expect("query runs")
            .collect::<Result<_, _>>()
            .expect("rows decode")
    }

    #[test]
    fn writes_reach_the_table_at_commit_and_lookups_are_immediate() {
        let dir = TempDir::new("commit");
        let start = Instant::now();
        let mut store = Store::open(&dir.db(), start).expect("open");
        store.insert(&name("alice"), contact(1, 5001));
        store.insert(&name("bob"), contact(2, 6000));
        assert_eq!(store.find(&name("bob")), Some(contact(2, 6000)));
        assert_eq!(rows(&dir.db()), [], "not committed yet");
        assert_eq!(store.next_deadline(), Some(start + COMMIT_EVERY));
        store.set_now(start + COMMIT_EVERY);
        store.commit_if_due();
        assert_eq!(store.next_deadline(), None);
        assert_eq!(
            rows(&dir.db()),
            [
                ("alice".into(), "127.0.0.1".into(), 5001),
                ("bob".into(), "127.0.0.2".into(), 6000)
            ]
        );
        store.remove(&name("alice"));
        store.commit();
        assert_eq!(rows(&dir.db()), [("bob".into(), "127.0.0.2".into(), 6000)]);
    }

    #[test]
    fn names_are_parameters_never_sql() {
        let dir = TempDir::new("inject");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        store.insert(&name("x\"OR\"1\"<>\"1"), contact(1, 1));
        store.insert(&name("x');DROP_TABLE_presence;--"), contact(1, 2));
        store.commit();
        assert_eq!(rows(&dir.db()).len(), 2);
        store.remove(&name("x\"OR\"1\"<>\"1"));
        store.commit();
        assert_eq!(rows(&dir.db()).len(), 1);
    }

    #[test]
    fn a_second_store_on_a_database_in_use_is_refused_and_wipes_nothing() {
        let dir = TempDir::new("in-use");
        let mut first = Store::open(&dir.db(), Instant::now()).expect("open");
        first.insert(&name("alice"), contact(1, 5001));
        first.commit();
        assert!(matches!(
            Store::open(&dir.db(), Instant::now()),
            Err(Error::DatabaseInUse(_))
        ));
        assert_eq!(rows(&dir.db()).len(), 1, "the first's directory is intact");
        drop(first);
        Store::open(&dir.db(), Instant::now()).expect("free once the first is gone");
    }

    #[test]
    fn start_up_clears_and_close_empties_presence() {
        let dir = TempDir::new("clear");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        store.insert(&name("alice"), contact(1, 5001));
        store.commit();
        drop(store); // a crash: no close
        assert_eq!(rows(&dir.db()).len(), 1);
        let mut store = Store::open(&dir.db(), Instant::now()).expect("reopen");
        assert_eq!(rows(&dir.db()), []);
        store.insert(&name("bob"), contact(2, 5001));
        store.commit();
        store.close().expect("close");
        assert_eq!(rows(&dir.db()), []);
    }

    #[test]
    fn reopen_rewrites_a_deleted_file() {
        let dir = TempDir::new("reopen");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        store.insert(&name("alice"), contact(1, 5001));
        store.commit();
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(format!("{}{suffix}", dir.db().display()));
        }
        store.reopen().expect("reopen");
        assert_eq!(
            rows(&dir.db()),
            [("alice".into(), "127.0.0.1".into(), 5001)]
        );
    }

    #[test]
    fn reregistering_keeps_since_and_updates_port() {
        let dir = TempDir::new("since");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        store.insert(&name("alice"), contact(1, 5001));
        let since = store.live[&name("alice")].since;
        store.insert(&name("alice"), contact(1, 7000));
        assert_eq!(store.live[&name("alice")].since, since);
        store.commit();
        assert_eq!(
            rows(&dir.db()),
            [("alice".into(), "127.0.0.1".into(), 7000)]
        );
    }

    /// The two text columns `query` selects, row by row.
    fn pairs(path: &Path, query: &str) -> Vec<(String, String)> {
        let db = Connection::open(path).expect("database exists");
        let mut stmt = db.prepare(query).expect("valid query");
        stmt.query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .expect("query runs")
            .collect::<Result<_, _>>()
            .expect("rows decode")
    }

    fn dialects(path: &Path) -> Vec<(String, String)> {
        pairs(path, "SELECT name, dialect FROM presence ORDER BY name")
    }

    #[test]
    fn the_dialect_of_each_registration_is_mirrored() {
        let dir = TempDir::new("dialect");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        let old = Contact::registered(IpAddr::V4(Ipv4Addr::new(127, 0, 0, 3)), None);
        store.insert(&name("oldphone"), old);
        store.insert(&name("alice"), contact(1, 5001));
        assert_eq!(store.find(&name("oldphone")), Some(old));
        store.commit();
        assert_eq!(
            dialects(&dir.db()),
            [
                ("alice".into(), "parlo".into()),
                ("oldphone".into(), "original".into())
            ]
        );
        // The same connection registering again with a port is a Parlo phone after all.
        store.insert(&name("oldphone"), contact(3, 5001));
        store.commit();
        assert_eq!(dialects(&dir.db())[1], ("oldphone".into(), "parlo".into()));
        store.reopen().expect("reopen");
        assert_eq!(dialects(&dir.db()).len(), 2, "rewritten with dialects");
    }

    #[test]
    fn an_earlier_versions_table_is_made_again_with_the_dialect() {
        let dir = TempDir::new("upgrade");
        {
            let db = Connection::open(dir.db()).expect("create");
            db.execute_batch(
                "CREATE TABLE presence (name TEXT NOT NULL PRIMARY KEY, ip TEXT NOT NULL,
                     port INTEGER NOT NULL, since INTEGER NOT NULL) WITHOUT ROWID;
                 INSERT INTO presence VALUES ('ghost', '127.0.0.9', 5001, 0);",
            )
            .expect("an earlier version's table");
        }
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        store.insert(&name("alice"), contact(1, 5001));
        store.commit();
        assert_eq!(store.failures(), 0);
        assert_eq!(dialects(&dir.db()), [("alice".into(), "parlo".into())]);
    }

    #[test]
    fn unwritable_database_is_a_start_up_error() {
        let dir = TempDir::new("missing");
        let path = dir.0.join("no-such-dir").join("directory.db");
        let error = Store::open(&path, Instant::now()).expect_err("cannot create");
        assert!(error.to_string().contains("no-such-dir"), "{error}");
    }

    mod bindings {
        use super::*;

        fn key(byte: u8) -> PublicKey {
            PublicKey([byte; PublicKey::LEN])
        }

        fn stored(path: &Path) -> Vec<(String, String)> {
            pairs(path, "SELECT name, key FROM bindings ORDER BY name")
        }

        #[test]
        fn a_binding_outlives_the_store_and_presence_does_not() {
            let dir = TempDir::new("bind-restart");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
            assert_eq!(store.owner(&name("alice")), Owner::Free);
            store.bind(&name("alice"), &key(1));
            store.insert(&name("alice"), contact(1, 5001).with_key(Some(key(1))));
            store.commit();
            assert_eq!(stored(&dir.db()), [("alice".into(), key(1).to_string())]);
            store.close().expect("close");
            let store = Store::open(&dir.db(), Instant::now()).expect("reopen");
            assert_eq!(store.find(&name("alice")), None);
            assert_eq!(store.owner(&name("alice")), Owner::Key(key(1)));
        }

        #[test]
        fn a_binding_made_while_the_database_is_locked_is_written_once_it_lets_go() {
            let dir = TempDir::new("bind-locked");
            let start = Instant::now();
            drop(Store::open(&dir.db(), start).expect("the file exists"));
            let other = Connection::open(dir.db()).expect("another program opens it");
            other
                .execute_batch("BEGIN EXCLUSIVE")
                .expect("and holds a lock");
            let mut store = Store::open(&dir.db(), start).expect("starts anyway");
            // No copy, no binding was ever made: names are free.
            assert_eq!(store.owner(&name("alice")), Owner::Free);
            store.bind(&name("alice"), &key(1));
            store.set_now(start + RESYNC_EVERY);
            store.commit_if_due();
            other.execute_batch("COMMIT").expect("the lock ends");
            drop(other);
            store.set_now(start + RESYNC_EVERY * 2);
            store.commit_if_due();
            assert_eq!(stored(&dir.db()), [("alice".into(), key(1).to_string())]);
        }

        #[test]
        fn a_release_by_another_program_is_seen_at_the_next_refresh() {
            let dir = TempDir::new("bind-release");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
            store.assign(&[(name("alice"), key(1)), (name("bob"), key(2))]);
            store.commit();
            store.refresh_bindings();
            assert_eq!(store.owner(&name("alice")), Owner::Key(key(1)));
            let released = crate::names::release(&dir.db(), &name("alice")).expect("released");
            assert_eq!(released, Some(key(1).to_string()));
            store.refresh_bindings();
            assert_eq!(store.owner(&name("alice")), Owner::Free);
            assert_eq!(store.owner(&name("bob")), Owner::Key(key(2)));
        }

        #[test]
        fn a_damaged_database_s_bindings_come_from_the_copy_or_stay_unknown() {
            let dir = TempDir::new("bind-damaged");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
            store.bind(&name("alice"), &key(1));
            store.commit();
            store.save_copy();
            drop(store);
            let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
            std::fs::write(dir.db(), &garbage).expect("garbage written");
            let store = Store::open(&dir.db(), Instant::now()).expect("starts anyway");
            assert_eq!(store.owner(&name("alice")), Owner::Key(key(1)));
            assert_eq!(store.owner(&name("bob")), Owner::Free);
            // Carried into the new file.
            assert_eq!(stored(&dir.db()), [("alice".into(), key(1).to_string())]);
            drop(store);
            std::fs::write(dir.db(), &garbage).expect("garbage again");
            std::fs::write(dir.0.join("directory.db.bindings"), "alice ???\n").expect("copy");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("starts anyway");
            assert!(!store.bindings_read());
            assert_eq!(store.owner(&name("bob")), Owner::Unknown);
            // Even a working database does not make them known for this run.
            store.reopen().expect("reopen");
            assert_eq!(store.owner(&name("bob")), Owner::Unknown);
        }

        #[test]
        fn a_file_damaged_while_running_keeps_the_bindings_in_memory() {
            let dir = TempDir::new("bind-damaged-later");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
            store.bind(&name("alice"), &key(1));
            store.commit();
            // No copy to fall back on, and the file turns to garbage.
            drop(store.db.take());
            let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
            std::fs::write(dir.db(), &garbage).expect("garbage written");
            let _ = std::fs::remove_file(format!("{}-wal", dir.db().display()));
            let _ = std::fs::remove_file(format!("{}-shm", dir.db().display()));
            store.reopen().expect("a new file");
            assert!(store.bindings_read());
            assert_eq!(store.owner(&name("alice")), Owner::Key(key(1)));
            assert_eq!(store.owner(&name("bob")), Owner::Free);
            assert_eq!(stored(&dir.db()), [("alice".into(), key(1).to_string())]);
        }

        #[test]
        fn the_names_file_wins_over_the_database() {
            let dir = TempDir::new("bind-assign");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
            store.bind(&name("alice"), &key(1));
            store.assign(&[(name("alice"), key(2))]);
            store.commit();
            assert_eq!(store.owner(&name("alice")), Owner::Key(key(2)));
            assert_eq!(stored(&dir.db()), [("alice".into(), key(2).to_string())]);
        }
    }

    mod failures {
        use super::*;

        /// Lets `store` reach its next retry of the database, and makes it.
        fn retry(store: &mut Store, start: Instant, nth: u32) {
            store.set_now(start + RESYNC_EVERY * nth);
            store.commit_if_due();
        }

        #[test]
        fn a_database_locked_by_another_program_is_served_from_memory_then_rewritten() {
            let dir = TempDir::new("locked");
            let other = Connection::open(dir.db()).expect("another program opens it");
            other
                .execute_batch("BEGIN EXCLUSIVE")
                .expect("and holds a lock");
            let start = Instant::now();
            let mut store = Store::open(&dir.db(), start).expect("starts anyway");
            assert!(store.failures() > 0);
            store.insert(&name("alice"), contact(1, 5001));
            assert_eq!(store.find(&name("alice")), Some(contact(1, 5001)));
            assert_eq!(store.next_deadline(), Some(start + RESYNC_EVERY));
            retry(&mut store, start, 1);
            assert!(store.db.is_none(), "still locked");
            other.execute_batch("COMMIT").expect("the lock ends");
            drop(other);
            retry(&mut store, start, 2);
            assert_eq!(
                rows(&dir.db()),
                [("alice".into(), "127.0.0.1".into(), 5001)]
            );
            assert_eq!(store.next_deadline(), None, "in step again");
        }

        #[test]
        fn a_damaged_file_is_moved_aside_kept_and_replaced() {
            let dir = TempDir::new("garbage");
            let garbage: Vec<u8> = (0..=255u8).cycle().take(10_000).collect();
            std::fs::write(dir.db(), &garbage).expect("garbage written");
            let mut store = Store::open(&dir.db(), Instant::now()).expect("starts anyway");
            store.insert(&name("alice"), contact(1, 5001));
            store.commit();
            assert_eq!(
                rows(&dir.db()),
                [("alice".into(), "127.0.0.1".into(), 5001)]
            );
            let kept: Vec<PathBuf> = std::fs::read_dir(&dir.0)
                .expect("listable")
                .map(|entry| entry.expect("an entry").path())
                .filter(|p| p.to_string_lossy().contains("directory.db.corrupt-"))
                .collect();
            assert_eq!(kept.len(), 1, "{kept:?}");
            assert_eq!(std::fs::read(&kept[0]).expect("kept"), garbage);
            // Still one server per database: the new file is locked too.
            assert!(matches!(
                Store::open(&dir.db(), Instant::now()),
                Err(Error::DatabaseInUse(_))
            ));
        }

        #[test]
        fn a_full_disk_is_served_from_memory_then_rewritten() {
            let dir = TempDir::new("full");
            let start = Instant::now();
            let mut store = Store::open(&dir.db(), start).expect("open");
            let pages: i64 = {
                let db = store.db.as_ref().expect("open");
                db.query_row("PRAGMA page_count", [], |row| row.get(0))
                    .expect("page count")
            };
            // No page more for this connection: as good as a full disk.
            let db = store.db.as_ref().expect("open");
            db.pragma_update(None, "max_page_count", pages)
                .expect("limit");
            for i in 0..200 {
                store.insert(&name(&format!("phone-{i:03}")), contact(1, 5001));
            }
            store.commit();
            assert!(store.failures() > 0, "the disk filled up");
            assert_eq!(store.find(&name("phone-199")), Some(contact(1, 5001)));
            let db = store.db.as_ref().expect("open");
            db.pragma_update(None, "max_page_count", 1_000_000)
                .expect("room again");
            retry(&mut store, start, 1);
            assert_eq!(rows(&dir.db()).len(), 200);
        }

        #[test]
        fn a_replaced_file_is_locked_and_written_again() {
            let dir = TempDir::new("replaced");
            let start = Instant::now();
            let mut store = Store::open(&dir.db(), start).expect("open");
            store.insert(&name("alice"), contact(1, 5001));
            store.commit();
            std::fs::rename(dir.db(), dir.0.join("moved.db")).expect("moved away");
            let _ = std::fs::remove_file(format!("{}-wal", dir.db().display()));
            let _ = std::fs::remove_file(format!("{}-shm", dir.db().display()));
            store.reopen().expect("a new file");
            assert_eq!(
                rows(&dir.db()),
                [("alice".into(), "127.0.0.1".into(), 5001)]
            );
            assert!(matches!(
                Store::open(&dir.db(), Instant::now()),
                Err(Error::DatabaseInUse(_))
            ));
        }

        #[test]
        fn a_file_moved_aside_takes_its_log_along() {
            let dir = TempDir::new("log-along");
            let store = Store::open(&dir.db(), Instant::now()).expect("open");
            for suffix in ["-wal", "-shm"] {
                std::fs::write(format!("{}{suffix}", dir.db().display()), suffix).expect("written");
            }
            let aside = dir.0.join("aside");
            store.move_aside(&aside).expect("moved");
            for suffix in ["", "-wal", "-shm"] {
                assert!(!PathBuf::from(format!("{}{suffix}", dir.db().display())).exists());
                assert!(PathBuf::from(format!("{}{suffix}", aside.display())).exists());
            }
        }

        #[test]
        fn damaged_files_are_kept_under_the_time_they_were_found() {
            assert_eq!(utc_stamp(0), "19700101T000000Z");
            assert_eq!(utc_stamp(1_764_099_601), "20251125T194001Z");
            assert_eq!(utc_stamp(951_782_400), "20000229T000000Z");
            assert_eq!(utc_stamp(4_102_444_799), "20991231T235959Z");
            let dir = TempDir::new("aside");
            let first = aside_path(&dir.db(), 0);
            assert!(first.ends_with("directory.db.corrupt-19700101T000000Z"));
            std::fs::write(&first, b"x").expect("written");
            let second = aside_path(&dir.db(), 0);
            assert!(second.ends_with("directory.db.corrupt-19700101T000000Z-1"));
        }
    }

    #[test]
    fn page_starts_after_the_cursor_or_skips_and_reports_more() {
        let dir = TempDir::new("page");
        let mut store = Store::open(&dir.db(), Instant::now()).expect("open");
        for i in 0..40 {
            store.insert(&name(&format!("n{i:02}")), contact(1, 1));
        }
        let mut page = Page::new();
        assert!(store.page(None, 0, &mut page));
        assert_eq!(page.first().map(Name::as_str), Some("n00"));
        page.clear();
        assert!(!store.page(None, 35, &mut page));
        assert_eq!(page.len(), 5);
        page.clear();
        assert!(!store.page(Some(&name("n34")), 0, &mut page));
        assert_eq!(page.first().map(Name::as_str), Some("n35"));
        assert_eq!(page.len(), 5);
        page.clear();
        assert!(
            store.page(Some(&name("m")), 0, &mut page),
            "a cursor need not be a name"
        );
        assert_eq!(page.first().map(Name::as_str), Some("n00"));
    }
}
