//! Logging to stderr (journald under systemd) through simplelog.
//!
//! At debug level every lookup is logged; at tens of thousands of lookups a second a
//! write(2) per line would cost more than serving the lookup. Lines are therefore gathered
//! in memory and written out by [`flush`], which the event loop calls before it waits for
//! events: nothing stays buffered while the server sleeps, and a burst of N log lines costs
//! one write instead of N. The buffer is also written out whenever it passes 64 KiB.

use std::io::{self, Write};

use log::LevelFilter;
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
    let _ = WriteLogger::init(level, config, sink);
}

/// Writes out the gathered log lines.
pub fn flush() {
    log::logger().flush();
}
