//! Logging to stderr (journald under systemd) through simplelog, the same way in both
//! daemons: `2026-11-25T19:40:01.123Z INFO  text`, with no target, thread or location.
//!
//! A busy daemon logs much: at debug level the directory server logs every lookup, and at
//! tens of thousands a second a write(2) per line would cost more than serving the lookup.
//! [`Sink::Gathered`] therefore keeps lines in memory until [`flush`], which the event
//! loop calls before it waits for events (so nothing stays buffered while the daemon
//! sleeps, and a burst of N lines costs one write), or until 64 KiB have gathered.
//! [`Sink::Direct`] writes each line at once, for a daemon whose other threads log too.

use std::io::{self, Write};

use log::LevelFilter;
use simplelog::{ConfigBuilder, WriteLogger};

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

/// Installs the logger at `level`, writing to `sink`.
pub fn init(level: LevelFilter, sink: Sink) {
    let config = ConfigBuilder::new()
        .set_time_format_rfc3339()
        .set_target_level(LevelFilter::Off)
        .set_thread_level(LevelFilter::Off)
        .set_location_level(LevelFilter::Off)
        .build();
    // Either only fails when a logger is already installed, which is then used instead.
    let _ = match sink {
        Sink::Direct => WriteLogger::init(level, config, io::stderr()),
        Sink::Gathered => WriteLogger::init(
            level,
            config,
            GatheredStderr {
                buf: Vec::with_capacity(FLUSH_AT),
            },
        ),
    };
}

/// Writes out the gathered log lines (nothing to do for [`Sink::Direct`]).
pub fn flush() {
    log::logger().flush();
}
