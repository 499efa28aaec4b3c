//! The one error type of parlo-server, and the exit code each error maps to.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

pub use parlo_daemon::Exit;
use parlo_daemon::Failure;

/// Everything that stops parlo-server.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the text says how.
    Usage(String),
    /// The listening socket could not be set up on this address.
    Listen { addr: SocketAddr, source: io::Error },
    /// The database could not be opened, set up or written (`doing` says which). Only
    /// `users` stops on it: the server serves from memory and tries again.
    Database {
        path: PathBuf,
        doing: &'static str,
        source: rusqlite::Error,
    },
    /// `users` was pointed at a database file that does not exist.
    NoDatabase(PathBuf),
    /// Another parlo-server holds the database: starting would wipe its live directory.
    DatabaseInUse(PathBuf),
    /// The database file could not be opened, created, locked for this server, or moved
    /// aside (`doing` says which).
    DatabaseFile {
        path: PathBuf,
        doing: &'static str,
        source: io::Error,
    },
    /// The event loop's own machinery (epoll, signal handlers) failed.
    Poll {
        doing: &'static str,
        source: io::Error,
    },
    /// Writing the `users` table to stdout failed.
    Output(io::Error),
    /// A names file (`--names`) could not be read.
    NamesFile { path: PathBuf, source: io::Error },
    /// A line of a names file is not `NAME KEY` (its number, and what is wrong).
    BadNames {
        path: PathBuf,
        line: usize,
        what: String,
    },
    /// The server's identity cannot be used.
    Identity(parlo_daemon::identity::IdentityError),
}

impl Failure for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Usage(_)
            | Error::Listen { .. }
            | Error::Database { .. }
            | Error::NoDatabase(_)
            | Error::DatabaseInUse(_)
            | Error::DatabaseFile { .. }
            | Error::Poll { .. }
            | Error::NamesFile { .. }
            | Error::BadNames { .. }
            | Error::Identity(_) => Exit::Critical,
            Error::Output(_) => Exit::Warning,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => write!(f, "{text} (see --help)"),
            Error::Listen { addr, source } => {
                write!(f, "cannot listen on {addr}: {source}")?;
                match source.kind() {
                    io::ErrorKind::AddrInUse => f.write_str(
                        " (another parlo-server, or another program, holds the port: \
                         stop it or choose another with --listen)",
                    ),
                    io::ErrorKind::PermissionDenied => {
                        f.write_str(" (ports below 1024 need privileges: choose a port above 1023)")
                    }
                    io::ErrorKind::AddrNotAvailable => {
                        f.write_str(" (no interface of this machine has that address)")
                    }
                    _ => Ok(()),
                }
            }
            Error::Database {
                path,
                doing,
                source,
            } => {
                write!(f, "database {}: cannot {doing}: {source}", path.display())?;
                use rusqlite::ErrorCode as Code;
                f.write_str(match source.sqlite_error_code() {
                    Some(Code::DatabaseBusy | Code::DatabaseLocked) => {
                        " (another program holds a lock on it, a write transaction or a \
                         backup: end it)"
                    }
                    Some(Code::DiskFull) => " (the disk is full: make room)",
                    Some(Code::DatabaseCorrupt) => " (the file is damaged)",
                    Some(Code::NotADatabase) => "",
                    _ => {
                        " (check that the directory exists and is writable by this user, \
                         or choose another file with --db)"
                    }
                })
            }
            Error::DatabaseInUse(path) => write!(
                f,
                "database {} is in use by another parlo-server: stop it, or give this one \
                 another --db (starting would wipe the other's live directory)",
                path.display()
            ),
            Error::DatabaseFile {
                path,
                doing,
                source,
            } => write!(
                f,
                "database {}: cannot {doing}: {source} (check that the directory exists and \
                 is writable by this user, or choose another file with --db)",
                path.display()
            ),
            Error::NoDatabase(path) => write!(
                f,
                "no database at {} (give the server's --db path with --db)",
                path.display()
            ),
            Error::Poll { doing, source } => write!(f, "cannot {doing}: {source}"),
            Error::Output(source) => write!(f, "cannot write to stdout: {source}"),
            Error::NamesFile { path, source } => {
                write!(f, "cannot read the names file {}: {source}", path.display())
            }
            Error::BadNames { path, line, what } => write!(
                f,
                "names file {}, line {line}: {what} (each line is NAME KEY, the key as \
                 `parlo-client id` prints it; # starts a comment)",
                path.display()
            ),
            Error::Identity(error) => error.fmt(f),
        }
    }
}

impl Error {
    /// Whether this is the database saying its file is damaged or not a database at all.
    pub fn is_corrupt_database(&self) -> bool {
        use rusqlite::ErrorCode as Code;
        matches!(
            self,
            Error::Database { source, .. }
                if matches!(
                    source.sqlite_error_code(),
                    Some(Code::DatabaseCorrupt | Code::NotADatabase)
                )
        )
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_)
            | Error::NoDatabase(_)
            | Error::DatabaseInUse(_)
            | Error::BadNames { .. }
            | Error::Identity(_) => None,
            Error::NamesFile { source, .. } => Some(source),
            Error::Listen { source, .. }
            | Error::Poll { source, .. }
            | Error::DatabaseFile { source, .. }
            | Error::Output(source) => Some(source),
            Error::Database { source, .. } => Some(source),
        }
    }
}
