//! Logging to stderr (journald under systemd) through simplelog, the same way in both
//! daemons: `2026-11-25T19:40:01.123Z INFO  text`, with no target, thread or location.
//!
//! A busy daemon logs much: at debug level the directory server logs every lookup, and at
//! tens of thousands a second a write(2) per line would cost more than serving the lookup.
//! [`Sink::Gathered`] therefore keeps lines in memory until [`flush`], which the event
//! loop calls before it waits for events (so nothing stays buffered while the daemon
//! sleeps, and a burst of N lines costs one write), or until 64 KiB have gathered.
//! [`Sink::Direct`] writes each line at once, for a daemon whose other threads log too.
//!
//! Every line's text is escaped ([`Escaped`]): log lines carry text from the network (a
//! request's unknown command, a directory server's reasons, peers' messages) and from the
//! user, and must neither drive the terminal that shows them nor pass for two lines.

use std::io::{self, Write};

use log::{LevelFilter, Log, Metadata, Record};
use parlo_fsm::Escaped;
use simplelog::{ConfigBuilder, SharedLogger, WriteLogger};

/// Bytes gathered before a write is forced even in the middle of a loop iteration.
const FLUSH_AT: usize = 64 * 1024;

/// Where log lines go.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Sink {
    /// stderr, one write a line.
    Direct,
    /// stderr, gathered and written out by [`flush`] (or when 64 KiB have gathered).
    Gathered,
}

/// stderr with a buffer that is only written out on `flush` or when full.
#[derive(Debug)]
struct GatheredStderr {
    buf: Vec<u8>,
}

impl Write for GatheredStderr {
    fn write(&mut self, bytes: &[u8]) -> io::Result<usize> {
        self.buf.extend_from_slice(bytes);
        if self.buf.len() >= FLUSH_AT {
            self.flush()?;
        }
        Ok(bytes.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        if self.buf.is_empty() {
            return Ok(());
        }
        // A full or closed stderr must not stop the daemon: drop what cannot be written.
        let _ = io::stderr().lock().write_all(&self.buf);
        self.buf.clear();
        Ok(())
    }
}

/// A logger that hands `L` each record with its text escaped.
#[derive(Debug)]
struct Escaping<L>(L);

impl<L: Log> Log for Escaping<L> {
    fn enabled(&self, metadata: &Metadata<'_>) -> bool {
        self.0.enabled(metadata)
    }

    fn log(&self, record: &Record<'_>) {
        if !self.0.enabled(record.metadata()) {
            return;
        }
        self.0.log(
            &Record::builder()
                .args(format_args!("{}", Escaped::text(record.args())))
                .metadata(record.metadata().clone())
                .module_path(record.module_path())
                .file(record.file())
                .line(record.line())
                .build(),
        );
    }

    fn flush(&self) {
        self.0.flush();
    }
}

/// Installs the logger at `level`, writing to `sink`.
pub fn init(level: LevelFilter, sink: Sink) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let logger: Box<dyn SharedLogger> = match sink {
        Sink::Direct => WriteLogger::new(level, config, io::stderr()),
        Sink::Gathered => WriteLogger::new(
            level,
            config,
            GatheredStderr {
                buf: Vec::with_capacity(FLUSH_AT),
            },
        ),
    };
    // Only fails when a logger is already installed, which is then used instead.
    if log::set_boxed_logger(Box::new(Escaping(logger))).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes out the gathered log lines (nothing to do for [`Sink::Direct`]).
pub fn flush() {
    log::logger().flush();
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Mutex;

    /// Keeps the text of each record it is given.
    #[derive(Debug, Default)]
    struct Kept(Mutex<Vec<String>>);

    impl Log for Kept {
        fn enabled(&self, metadata: &Metadata<'_>) -> bool {
            metadata.level() <= log::Level::Info
        }

        fn log(&self, record: &Record<'_>) {
            if let Ok(mut lines) = self.0.lock() {
                lines.push(record.args().to_string());
            }
        }

        fn flush(&self) {}
    }

    #[test]
    fn log_lines_hold_no_raw_control_or_invisible_character() {
        let logger = Escaping(Kept::default());
        let reason = "\u{1b}[2J\u{7}\u{9b}\u{202e}";
        for level in [log::Level::Info, log::Level::Debug] {
            logger.log(
                &Record::builder()
                    .args(format_args!("the server refused: {reason}\nFAKE café"))
                    .level(level)
                    .build(),
            );
        }
        let lines = logger.0.0.lock().expect("not poisoned").clone();
        assert_eq!(
            lines,
            ["the server refused: \\u{1b}[2J\\u{7}\\u{9b}\\u{202e}\\u{a}FAKE café"],
            "escaped, and debug not enabled"
        );
    }
}
