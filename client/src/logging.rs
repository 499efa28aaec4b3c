//! Logging to stderr through simplelog, every line's text escaped ([`Escaped`]): log
//! lines carry text from the network (a directory server's reasons and answers, peers'
//! messages) and from the user (commands), and must neither drive the terminal that shows
//! them nor pass for two lines.

use log::{LevelFilter, Log, Metadata, Record};
use parlo_fsm::Escaped;
use simplelog::{ConfigBuilder, WriteLogger};

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

/// Installs the logger at `level`, writing to stderr.
pub fn init(level: LevelFilter) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    let logger = Escaping(WriteLogger::new(level, config, std::io::stderr()));
    // Only fails when a logger is already installed, which would then be used instead.
    if log::set_boxed_logger(Box::new(logger)).is_ok() {
        log::set_max_level(level);
    }
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
