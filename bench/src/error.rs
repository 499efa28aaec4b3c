//! The load generator's errors.

use std::fmt;
use std::net::SocketAddr;

/// Why a run could not be carried out.
#[derive(Debug)]
pub enum Error {
    /// The command line is wrong; the text says what and what to write instead.
    Usage(String),
    /// A connection to the server could not be made, even after retries.
    Connect {
        /// The server address.
        server: SocketAddr,
        /// How many attempts were made.
        attempts: u32,
        /// The last failure.
        cause: std::io::Error,
    },
    /// The server refused a registration: the name is taken by someone else.
    NameTaken(String),
    /// The server answered a set-up request with something else than expected.
    SetupReply {
        /// The request that was answered.
        request: &'static str,
        /// The reply line as received.
        reply: String,
    },
    /// The server stopped answering while connections were being set up.
    SetupStalled {
        /// Connections that were still waiting.
        waiting: usize,
        /// For how long nothing progressed, in seconds.
        seconds: u64,
    },
    /// An operating-system call failed.
    Io {
        /// What was being done.
        doing: &'static str,
        /// The failure.
        cause: std::io::Error,
    },
    /// The process to watch (`--server-pid`) cannot be read in `/proc`.
    ServerProcess {
        /// Its id.
        pid: u32,
        /// The failure.
        cause: std::io::Error,
    },
    /// Another load thread failed (its own error is reported), so this one stopped.
    Aborted,
    /// A load thread panicked: a bug in the load generator.
    ThreadPanicked,
}

impl fmt::Display for Error {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Error::Usage(text) => write!(f, "{text} (see --help)"),
            Error::Connect {
                server,
                attempts,
                cause,
            } => write!(
                f,
                "cannot connect to {server} after {attempts} attempts: {cause}; is the directory server running there?"
            ),
            Error::NameTaken(name) => write!(
                f,
                "the server refused to register {name:?}: the name is taken; use another --prefix"
            ),
            Error::SetupReply { request, reply } => {
                write!(f, "the server answered {request} with {reply:?}")
            }
            Error::SetupStalled { waiting, seconds } => write!(
                f,
                "{waiting} connections got no answer for {seconds} s while setting up; is the server overloaded or limiting clients (--max-clients)?"
            ),
            Error::Io { doing, cause } => write!(f, "{doing}: {cause}"),
            Error::ServerProcess { pid, cause } => write!(
                f,
                "cannot read /proc/{pid} for --server-pid: {cause}; is that the server's process id, and is it still running?"
            ),
            Error::Aborted => write!(f, "stopped because another load thread failed"),
            Error::ThreadPanicked => write!(f, "a load thread panicked (a bug in parlo-bench)"),
        }
    }
}

impl std::error::Error for Error {}
