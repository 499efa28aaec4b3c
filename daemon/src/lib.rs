//! parlo-daemon: what `parlo-server` and `parlo-client` share around their event loops.
//!
//! Both daemons are thin shells around pure cores; the shell pieces that are not about
//! either protocol are written once, here: the exit codes and the `main` wrapper
//! ([`main`]), the logging set-up ([`logging`]), telling the service manager how the
//! daemon is doing ([`notify`]), waiting for events ([`wait`]), reading a flag's value as
//! text ([`flag_text`]) and the rule, and its wording, for every port a flag takes
//! ([`port`]). The two daemons depend on this crate, never on each other.

pub mod identity;
pub mod logging;
pub mod notify;
pub mod port;

use std::fmt::Display;
use std::io;
use std::panic::UnwindSafe;
use std::process::ExitCode;
use std::time::Duration;

use mio::{Events, Poll};

/// Exit codes, the original project's: 0 done, 1 warning, 2 critical error, 3 unknown
/// error.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Exit {
    /// Completed: stopped on request, or the command did what was asked.
    Done = 0,
    /// Completed, but something went wrong on the way that the user or the operator
    /// should look at.
    Warning = 1,
    /// Could not run: bad command line, port in use, a resource unusable.
    Critical = 2,
    /// A bug: the program panicked.
    Unknown = 3,
}

impl From<Exit> for ExitCode {
    fn from(exit: Exit) -> ExitCode {
        ExitCode::from(exit as u8)
    }
}

/// An error that stops a daemon: printed as `program: error`, it exits with its code.
pub trait Failure: Display {
    /// The exit code for this error.
    fn exit(&self) -> Exit;
}

/// Runs a daemon's `run`, then turns its outcome into the process's exit code: the code
/// `run` returns; or, for an error, the error printed on stderr as `program: error` and
/// its code; or, for a panic, [`Exit::Unknown`] (the panic message is already on stderr,
/// from the default hook). Buffered log lines are written out in every case.
pub fn main<E: Failure>(
    program: &str,
    run: impl FnOnce() -> Result<Exit, E> + UnwindSafe,
) -> ExitCode {
    let outcome = std::panic::catch_unwind(run);
    logging::flush();
    let exit = match outcome {
        Ok(Ok(exit)) => exit,
        Ok(Err(error)) => {
            // Errors may quote the command line, a file or a server's words.
            eprintln!("{program}: {}", parlo_fsm::Escaped::text(&error));
            error.exit()
        }
        Err(_) => Exit::Unknown,
    };
    exit.into()
}

/// Waits for events on `poll` for at most `timeout` (`None`: until one comes), after
/// writing out the gathered log lines (nothing stays buffered while the daemon sleeps).
///
/// A signal arriving during the wait (`EINTR`) is not an error: the wait returns with no
/// events, and the loop goes round again (it works out its timers and waits anew).
pub fn wait(poll: &mut Poll, events: &mut Events, timeout: Option<Duration>) -> io::Result<()> {
    logging::flush();
    match poll.poll(events, timeout) {
        Err(e) if e.kind() == io::ErrorKind::Interrupted => {
            events.clear();
            Ok(())
        }
        other => other,
    }
}

/// The value of `flag` (the one the parser has just read) as text; `Err` says why not, in
/// words for a usage error.
pub fn flag_text(parser: &mut lexopt::Parser, flag: &str) -> Result<String, String> {
    let value = parser.value().map_err(|e| e.to_string())?;
    value
        .into_string()
        .map_err(|v| format!("{flag}: {} is not valid UTF-8", v.to_string_lossy()))
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Refused(Exit);

    impl Display for Refused {
        fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
            f.write_str("refused")
        }
    }

    impl Failure for Refused {
        fn exit(&self) -> Exit {
            self.0
        }
    }

    #[test]
    fn exit_codes_are_the_originals() {
        assert_eq!(Exit::Done as u8, 0);
        assert_eq!(Exit::Warning as u8, 1);
        assert_eq!(Exit::Critical as u8, 2);
        assert_eq!(Exit::Unknown as u8, 3);
    }

    #[test]
    fn main_maps_each_outcome_to_its_code() {
        let code = |exit: Exit| format!("{:?}", ExitCode::from(exit));
        let done = main("test", || Ok::<_, Refused>(Exit::Done));
        assert_eq!(format!("{done:?}"), code(Exit::Done));
        let warned = main("test", || Ok::<_, Refused>(Exit::Warning));
        assert_eq!(format!("{warned:?}"), code(Exit::Warning));
        let failed = main("test", || Err::<Exit, _>(Refused(Exit::Critical)));
        assert_eq!(format!("{failed:?}"), code(Exit::Critical));
        let panicked = main("test", || -> Result<Exit, Refused> { panic!("a bug") });
        assert_eq!(format!("{panicked:?}"), code(Exit::Unknown));
    }

    #[test]
    fn a_wait_with_nothing_ready_times_out_empty() {
        let mut poll = Poll::new().expect("epoll");
        let mut events = Events::with_capacity(4);
        wait(&mut poll, &mut events, Some(Duration::from_millis(1))).expect("waits");
        assert!(events.is_empty());
    }

    #[test]
    fn flag_values_must_be_utf8() {
        use std::ffi::OsString;
        use std::os::unix::ffi::OsStringExt;
        let args = [OsString::from("--name"), OsString::from_vec(vec![0xff])];
        let mut parser = lexopt::Parser::from_args(args);
        let _ = parser.next();
        let error = flag_text(&mut parser, "--name").expect_err("not UTF-8");
        assert!(error.contains("--name"), "{error}");
        assert!(error.contains("not valid UTF-8"), "{error}");
    }
}
