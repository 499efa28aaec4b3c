//! The one error type of parlo-client, and the exit code each error maps to.

use std::fmt;
use std::io;
use std::net::SocketAddr;
use std::path::PathBuf;

/// Exit codes: [`Exit::Warning`] when the audio device reported an error or `ctl` got an
/// `error` answer; [`Exit::Critical`] for a bad command line, a port in use, a control
/// socket that cannot be used.
pub use parlo_daemon::Exit;
use parlo_daemon::Failure;

/// Everything that stops parlo-client.
#[derive(Debug)]
pub enum Error {
    /// The command line or the environment is wrong; the text says how.
    Usage(String),
    /// The UDP socket for calls could not be bound.
    Listen {
        /// The address asked for.
        addr: SocketAddr,
        /// Why.
        source: io::Error,
    },
    /// The control socket could not be created or reached.
    Control {
        /// Its path.
        path: PathBuf,
        /// What was being done.
        doing: &'static str,
        /// Why.
        source: io::Error,
    },
    /// Another daemon already answers on the control socket.
    ControlInUse(PathBuf),
    /// Something that is not a socket (a file, a directory, a link) is at the control
    /// socket's path: it is left alone.
    ControlNotSocket(PathBuf),
    /// The event loop's own machinery (epoll, signal handlers, threads) failed.
    Poll {
        /// What was being done.
        doing: &'static str,
        /// Why.
        source: io::Error,
    },
    /// The audio device cannot be used (bad `--audio`, missing WAV file, no sound card).
    Audio(parlo_audio::Error),
    /// Writing to stdout failed.
    Output(io::Error),
    /// The operating system's random source cannot be read: call ids and SSRCs would be
    /// guessable.
    Random(getrandom::Error),
    /// The phone's identity (its key pair) cannot be used.
    Identity(parlo_daemon::identity::IdentityError),
    /// The file of pinned server keys cannot be read (why).
    KnownServers {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
    /// The file of other phones' pinned keys cannot be read (why).
    KnownPeers {
        /// The file.
        path: PathBuf,
        /// What is wrong.
        why: String,
    },
}

impl Failure for Error {
    fn exit(&self) -> Exit {
        match self {
            Error::Output(_) => Exit::Warning,
            _ => Exit::Critical,
        }
    }
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => write!(f, "{text} (see --help)"),
            Error::Listen { addr, source } => {
                write!(f, "cannot listen for calls on UDP {addr}: {source}")?;
                match source.kind() {
                    io::ErrorKind::AddrInUse => f.write_str(
                        " (another phone, or another program, holds the port: stop it or \
                         choose another with --listen)",
                    ),
                    io::ErrorKind::AddrNotAvailable => {
                        f.write_str(" (no interface of this machine has that address)")
                    }
                    io::ErrorKind::PermissionDenied => {
                        f.write_str(" (ports below 1024 need privileges)")
                    }
                    _ => Ok(()),
                }
            }
            Error::Control {
                path,
                doing,
                source,
            } => write!(
                f,
                "control socket {}: cannot {doing}: {source}",
                path.display()
            ),
            Error::ControlNotSocket(path) => write!(
                f,
                "control socket {}: something that is not a socket is there, and is left \
                 alone: choose another --control path, or move it away",
                path.display()
            ),
            Error::ControlInUse(path) => write!(
                f,
                "control socket {} is in use by a running parlo-client: stop it or choose \
                 another --control path",
                path.display()
            ),
            Error::Poll { doing, source } => write!(f, "cannot {doing}: {source}"),
            Error::Audio(error) => write!(
                f,
                "audio: {error} (`parlo-client devices` lists the sound devices; \
                 --audio file:IN.wav, tone or null need none)"
            ),
            Error::Output(source) => write!(f, "cannot write to stdout: {source}"),
            Error::Random(error) => write!(
                f,
                "cannot read the operating system's random source ({error}): without it call \
                 ids and media SSRCs could be guessed, so the phone does not start"
            ),
            Error::Identity(error) => error.fmt(f),
            Error::KnownServers { path, why } => write!(
                f,
                "cannot read the pinned server keys in {}: {why} (fix or remove the line)",
                path.display()
            ),
            Error::KnownPeers { path, why } => write!(
                f,
                "cannot read the pinned keys of other phones in {}: {why} (fix or remove \
                 the line; --known-peers names another file)",
                path.display()
            ),
        }
    }
}

impl std::error::Error for Error {
    fn source(&self) -> Option<&(dyn std::error::Error + 'static)> {
        match self {
            Error::Usage(_)
            | Error::ControlInUse(_)
            | Error::ControlNotSocket(_)
            | Error::Identity(_)
            | Error::KnownServers { .. }
            | Error::KnownPeers { .. } => None,
            Error::Listen { source, .. }
            | Error::Control { source, .. }
            | Error::Poll { source, .. }
            | Error::Output(source) => Some(source),
            Error::Audio(error) => Some(error),
            Error::Random(error) => Some(error),
        }
    }
}
