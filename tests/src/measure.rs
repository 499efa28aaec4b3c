//! Small measures the benchmarks share: a process's memory from `/proc`, percentiles.

/// A `kB` field of `/proc/PID/status` (`VmHWM`, `VmRSS`, `RssAnon`, ...), 0 if absent.
pub fn status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.strip_prefix(field).is_some_and(|r| r.starts_with(':')))
                .and_then(|l| l.split_whitespace().nth(1))
                .and_then(|v| v.parse().ok())
        })
        .unwrap_or(0)
}

/// Kibibytes in mebibytes.
pub fn mb(kb: u64) -> f64 {
    kb as f64 / 1024.0
}

/// The `p` quantile (0 to 1) of `sorted`, the nearest rank; NaN when it is empty.
pub fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() - 1) as f64 * p).round() as usize]
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_and_this_process_s_memory() {
        let sorted = [1.0, 2.0, 3.0, 4.0, 5.0];
        assert_eq!(percentile(&sorted, 0.0), 1.0);
        assert_eq!(percentile(&sorted, 0.5), 3.0);
        assert_eq!(percentile(&sorted, 1.0), 5.0);
        assert!(percentile(&[], 0.5).is_nan());
        assert!(status_kb(std::process::id(), "VmRSS") > 0);
        assert_eq!(status_kb(std::process::id(), "NoSuchField"), 0);
        assert_eq!(mb(2048), 2.0);
    }
}
