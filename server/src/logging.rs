//! Logging to stderr (journald under systemd) through simplelog.
//!
//! At debug level every lookup is logged; at tens of thousands of lookups a second a
//! write(2) per line would cost more than serving the lookup. Lines are therefore gathered
//! in memory and written out by [`flush`], which the event loop calls before it waits for
//! events: nothing stays buffered while the server sleeps, and a burst of N log lines costs
//! one write instead of N. The buffer is also written out whenever it passes 64 KiB.
//!
//! Every line's text is escaped ([`Escaped`]): requests carry the network's text (an
//! unknown command is echoed), and a log line must neither drive the terminal that shows
//! it nor pass for two lines.

use std::io::{self, Write};

use log::{LevelFilter, Log, Metadata, Record};
use parlo_net::directory::Escaped;
use simplelog::{ConfigBuilder, WriteLogger};

/// Bytes gathered before a write is forced even in the middle of a loop iteration.
const FLUSH_AT: usize = 64 * 1024;

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
        // A full or closed stderr must not stop the server: drop what cannot be written.
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

/// Installs the logger at `level`. Lines look like
/// `2026-11-25T19:40:01.123Z INFO  127.0.0.1:50412 REG "alice" port 5001: registered`.
pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let sink = GatheredStderr {
        buf: Vec::with_capacity(FLUSH_AT),
    };
    // Only fails when a logger is already installed, which would then be used instead.
    if log::set_boxed_logger(Box::new(Escaping(WriteLogger::new(level, config, sink)))).is_ok() {
        log::set_max_level(level);
    }
}

/// Writes out the gathered log lines.
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
        let command = "\u{1b}[2J\u{7}\u{9b}\u{202e}";
        for level in [log::Level::Warn, log::Level::Debug] {
            logger.log(
                &Record::builder()
                    .args(format_args!(
                        "127.0.0.1:5 unknown command \"{command}\"\nFAKE"
                    ))
                    .level(level)
                    .build(),
            );
        }
        let lines = logger.0.0.lock().expect("not poisoned").clone();
        assert_eq!(
            lines,
            ["127.0.0.1:5 unknown command \"\\u{1b}[2J\\u{7}\\u{9b}\\u{202e}\"\\u{a}FAKE"],
            "escaped, and debug not enabled"
        );
    }
}
