//! What the load generator asks of the operating system: a file-descriptor limit high
//! enough for its connections, and CPU and memory figures of a process (the directory
//! server's, read from `/proc`, and its own).

use std::time::Duration;

/// Raises the soft RLIMIT_NOFILE to the hard limit and returns the new soft limit.
pub fn raise_fd_limit() -> std::io::Result<u64> {
    let mut limit = libc::rlimit {
        rlim_cur: 0,
        rlim_max: 0,
    };
    // SAFETY: getrlimit writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrlimit(libc::RLIMIT_NOFILE, &mut limit) } != 0 {
        return Err(std::io::Error::last_os_error());
    }
    if limit.rlim_cur < limit.rlim_max {
        let raised = libc::rlimit {
            rlim_cur: limit.rlim_max,
            rlim_max: limit.rlim_max,
        };
        // SAFETY: setrlimit only reads the struct we pass by valid pointer.
        if unsafe { libc::setrlimit(libc::RLIMIT_NOFILE, &raised) } != 0 {
            return Err(std::io::Error::last_os_error());
        }
        limit = raised;
    }
    // rlim_t is u64 on 64-bit targets and may be narrower elsewhere.
    #[allow(clippy::unnecessary_cast)]
    Ok(limit.rlim_cur as u64)
}

/// CPU time (user + system) this process has used so far.
pub fn own_cpu() -> Duration {
    // SAFETY: rusage is plain old data; all-zero bytes are a valid value.
    let mut usage: libc::rusage = unsafe { std::mem::zeroed() };
    // SAFETY: getrusage writes into the struct we own and pass by valid pointer.
    if unsafe { libc::getrusage(libc::RUSAGE_SELF, &mut usage) } != 0 {
        return Duration::ZERO;
    }
    let micros = |t: libc::timeval| t.tv_sec as u64 * 1_000_000 + t.tv_usec as u64;
    Duration::from_micros(micros(usage.ru_utime) + micros(usage.ru_stime))
}

/// A snapshot of another process's resource use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ProcessSample {
    /// Resident set size (VmRSS), in KiB.
    pub rss_kib: u64,
    /// Peak resident set size so far (VmHWM), in KiB.
    pub peak_rss_kib: u64,
    /// User + system CPU time since it started.
    pub cpu: Duration,
}

/// Reads `/proc/PID/status` and `/proc/PID/stat`.
pub fn sample_process(pid: u32) -> std::io::Result<ProcessSample> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status"))?;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    let bad = |what: &str| {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("/proc/{pid}: no {what}"),
        )
    };
    let ticks = cpu_ticks(&stat).ok_or_else(|| bad("utime/stime in stat"))?;
    Ok(ProcessSample {
        rss_kib: status_kib(&status, "VmRSS").ok_or_else(|| bad("VmRSS in status"))?,
        peak_rss_kib: status_kib(&status, "VmHWM").ok_or_else(|| bad("VmHWM in status"))?,
        cpu: Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64),
    })
}

/// CPU time the whole machine has spent busy (any process, kernel included) and idle.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct MachineSample {
    /// Processors.
    pub cores: u32,
    /// Busy time, summed over processors.
    pub busy: Duration,
    /// Idle time (waiting for input/output included), summed over processors.
    pub idle: Duration,
}

/// Reads `/proc/stat`.
pub fn sample_machine() -> std::io::Result<MachineSample> {
    let stat = std::fs::read_to_string("/proc/stat")?;
    machine_ticks(&stat)
        .map(|(cores, busy, idle)| {
            let secs = |ticks: u64| {
                Duration::from_secs_f64(ticks as f64 / clock_ticks_per_second() as f64)
            };
            MachineSample {
                cores,
                busy: secs(busy),
                idle: secs(idle),
            }
        })
        .ok_or_else(|| {
            std::io::Error::new(std::io::ErrorKind::InvalidData, "/proc/stat: no cpu line")
        })
}

/// Processors, busy and idle ticks from the text of `/proc/stat`.
fn machine_ticks(stat: &str) -> Option<(u32, u64, u64)> {
    let total = stat.lines().find(|line| line.starts_with("cpu "))?;
    let ticks: Vec<u64> = total
        .split_whitespace()
        .skip(1)
        .map(|field| field.parse().unwrap_or(0))
        .collect();
    // user nice system idle iowait irq softirq steal (guest time is inside user already).
    let tick = |i: usize| ticks.get(i).copied().unwrap_or(0);
    let busy = tick(0) + tick(1) + tick(2) + tick(5) + tick(6) + tick(7);
    let idle = tick(3) + tick(4);
    let cores = stat
        .lines()
        .filter(|line| {
            line.strip_prefix("cpu")
                .is_some_and(|rest| rest.starts_with(|c: char| c.is_ascii_digit()))
        })
        .count();
    Some((u32::try_from(cores).ok()?, busy, idle))
}

fn clock_ticks_per_second() -> u64 {
    // SAFETY: sysconf has no preconditions.
    let ticks = unsafe { libc::sysconf(libc::_SC_CLK_TCK) };
    if ticks > 0 { ticks as u64 } else { 100 }
}

/// The value in KiB of a `Key:   1234 kB` line of `/proc/PID/status`.
fn status_kib(status: &str, key: &str) -> Option<u64> {
    status.lines().find_map(|line| {
        let value = line.strip_prefix(key)?.strip_prefix(':')?;
        value.split_whitespace().next()?.parse().ok()
    })
}

/// utime + stime, in clock ticks, from the text of `/proc/PID/stat`.
fn cpu_ticks(stat: &str) -> Option<u64> {
    // The command name (field 2) is in parentheses and may hold spaces and ')': fields
    // are counted from the last ')'. After it come state (field 3) ... utime (14), stime (15).
    let rest = &stat[stat.rfind(')')? + 1..];
    let mut fields = rest.split_whitespace().skip(11);
    let utime: u64 = fields.next()?.parse().ok()?;
    let stime: u64 = fields.next()?.parse().ok()?;
    Some(utime + stime)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_are_read_in_kib() {
        let status = "Name:\tparlo-server\nVmPeak:\t   12000 kB\nVmHWM:\t    5120 kB\nVmRSS:\t    4096 kB\nVmRSSx:\t1 kB\n";
        assert_eq!(status_kib(status, "VmRSS"), Some(4096));
        assert_eq!(status_kib(status, "VmHWM"), Some(5120));
        assert_eq!(status_kib(status, "VmSwap"), None);
    }

    #[test]
    fn cpu_ticks_skip_a_command_name_with_spaces_and_parens() {
        let stat = "4242 (odd) name) S 1 4242 4242 0 -1 4194560 300 0 0 0 1234 567 0 0 20 0 1 0 99 1000 200 18446744073709551615";
        assert_eq!(cpu_ticks(stat), Some(1234 + 567));
        assert_eq!(cpu_ticks("4242 (short) S 1 2"), None);
        assert_eq!(cpu_ticks("no parenthesis"), None);
    }

    #[test]
    fn machine_ticks_sum_busy_and_idle_fields() {
        let stat = "cpu  100 5 50 1000 20 3 7 1 0 0\ncpu0 50 0 25 500 10 1 3 0 0 0\ncpu1 50 5 25 500 10 2 4 1 0 0\nintr 12345\n";
        assert_eq!(
            machine_ticks(stat),
            Some((2, 100 + 5 + 50 + 3 + 7 + 1, 1020))
        );
        assert_eq!(machine_ticks("intr 1\n"), None);
        let sample = sample_machine().expect("/proc/stat of this machine");
        assert!(sample.cores >= 1);
    }

    #[test]
    fn this_process_can_be_sampled() {
        let sample = sample_process(std::process::id()).expect("/proc of this process");
        assert!(sample.rss_kib > 0 && sample.peak_rss_kib >= sample.rss_kib);
    }

    #[test]
    fn fd_limit_is_at_least_what_it_was() {
        let raised = raise_fd_limit().expect("raising to the hard limit is allowed");
        assert!(raised >= 256);
    }
}
