//! The figures of a run, merged over the load threads, printed as text or one JSON object.

use std::fmt::Write as _;
use std::net::SocketAddr;
use std::time::Duration;

use crate::histogram::Histogram;
use crate::load::{Errors, Mode, Outcome, Plan};

/// The directory server's resource use during the run (`--server-pid`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ServerUse {
    /// Its process id.
    pub pid: u32,
    /// Resident memory before the load generator connected, in KiB.
    pub rss_before_kib: u64,
    /// Resident memory at the end of the measured window, in KiB.
    pub rss_kib: u64,
    /// Peak resident memory since it started, at the end of the window, in KiB.
    pub peak_rss_kib: u64,
    /// CPU time (user + system) used in the measured window.
    pub cpu: Duration,
}

/// The whole machine's CPU use during the run: shows whether other programs took CPU
/// time from the server or the load generator.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct MachineUse {
    /// Processors.
    pub cores: u32,
    /// Busy time in the measured window, summed over processors.
    pub busy: Duration,
}

/// Everything a run measured.
#[derive(Debug)]
pub struct Report {
    mode: Mode,
    /// Over Noise connections.
    noise: bool,
    server_addr: SocketAddr,
    connections: u32,
    active: u32,
    threads: u32,
    warmup: Duration,
    duration: Duration,
    /// From start-up to every connection set up.
    setup: Duration,
    latency: Histogram,
    /// Bad answers and lost connections.
    pub errors: Errors,
    reconnects: u64,
    /// The load generator's own CPU time in the measured window.
    bench_cpu: Duration,
    /// The server's resource use, when its pid was given.
    pub server: Option<ServerUse>,
    /// The machine's CPU use, when /proc/stat could be read.
    pub machine: Option<MachineUse>,
}

impl Report {
    /// An empty report for `plan`.
    pub fn new(plan: &Plan, setup: Duration, bench_cpu: Duration) -> Self {
        Self {
            mode: plan.mode,
            noise: plan.noise.is_some(),
            server_addr: plan.server,
            connections: plan.connections,
            active: plan.active,
            threads: plan.threads,
            warmup: plan.warmup,
            duration: plan.duration,
            setup,
            latency: Histogram::new(),
            errors: Errors::default(),
            reconnects: 0,
            bench_cpu,
            server: None,
            machine: None,
        }
    }

    /// Adds one thread's figures.
    pub fn add(&mut self, outcome: &Outcome) {
        self.latency.merge(&outcome.latency);
        self.errors.merge(&outcome.errors);
        self.reconnects += outcome.reconnects;
    }

    /// Lookups (or pairs) per second over the measured window.
    fn rate(&self) -> f64 {
        self.latency.count() as f64 / self.duration.as_secs_f64()
    }

    /// The latency at quantile `q`, in milliseconds.
    fn ms(&self, q: f64) -> f64 {
        self.latency.quantile(q) as f64 / 1e6
    }

    fn what(&self) -> &'static str {
        match self.mode {
            Mode::Lookup => "lookups",
            Mode::Churn => "pairs",
            Mode::Connect => "connects",
        }
    }

    /// The report as a few aligned lines of text.
    pub fn text(&self) -> String {
        let mut out = String::new();
        let secs = self.duration.as_secs_f64();
        let _ = writeln!(
            out,
            "parlo-bench: {} mode, {} connection{}, {} thread{}, server {}{}",
            match self.mode {
                Mode::Lookup => "lookup",
                Mode::Churn => "churn (REG + DISCONNECT pairs)",
                Mode::Connect => "connect (new connection + PING)",
            },
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            self.threads,
            if self.threads == 1 { "" } else { "s" },
            self.server_addr,
            if self.noise {
                ", encrypted (Noise)"
            } else {
                ""
            }
        );
        let _ = writeln!(
            out,
            "  set-up     {} connection{} {} in {:.2} s",
            self.connections,
            if self.connections == 1 { "" } else { "s" },
            match self.mode {
                Mode::Lookup => "connected and registered",
                Mode::Churn | Mode::Connect => "connected",
            },
            self.setup.as_secs_f64()
        );
        if self.active < self.connections {
            let _ = writeln!(
                out,
                "  active     {} connection{} send requests, the others hold their registration",
                self.active,
                if self.active == 1 { "" } else { "s" },
            );
        }
        let _ = writeln!(
            out,
            "  measured   {secs:.1} s after {:.1} s of warm-up",
            self.warmup.as_secs_f64()
        );
        let _ = write!(
            out,
            "  {:<10} {} ({:.0}/s",
            self.what(),
            self.latency.count(),
            self.rate()
        );
        if self.mode == Mode::Churn {
            let _ = write!(out, ", {:.0} writes/s", 2.0 * self.rate());
        }
        let _ = writeln!(out, ")");
        let _ = writeln!(
            out,
            "  latency    p50 {:.3} ms  p99 {:.3} ms  p99.9 {:.3} ms  max {:.3} ms  (mean {:.3} ms)",
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1e6,
            self.latency.mean() as f64 / 1e6
        );
        let e = &self.errors;
        let _ = write!(out, "  errors     {}", e.total());
        if e.total() > 0 {
            let _ = write!(
                out,
                " (wrong answer {}, error reply {}, unexpected {}, connections lost {})",
                e.wrong_answer, e.error_reply, e.unexpected, e.lost
            );
        }
        let _ = writeln!(out);
        if let Some(first) = &e.first {
            let _ = writeln!(out, "  first bad  {first}");
        }
        if self.reconnects > 0 {
            let _ = writeln!(
                out,
                "  reconnects {} (the server closed connections after DISCONNECT)",
                self.reconnects
            );
        }
        if let Some(s) = &self.server {
            let _ = writeln!(
                out,
                "  server     pid {}: RSS {:.1} MiB before, {:.1} MiB at the end (peak {:.1} MiB); CPU {:.2} s in {secs:.1} s ({:.0} % of a core)",
                s.pid,
                s.rss_before_kib as f64 / 1024.0,
                s.rss_kib as f64 / 1024.0,
                s.peak_rss_kib as f64 / 1024.0,
                s.cpu.as_secs_f64(),
                100.0 * s.cpu.as_secs_f64() / secs
            );
        }
        let _ = writeln!(
            out,
            "  bench      CPU {:.2} s in {secs:.1} s ({:.0} % of a core)",
            self.bench_cpu.as_secs_f64(),
            100.0 * self.bench_cpu.as_secs_f64() / secs
        );
        if let Some(m) = &self.machine {
            let server = self.server.map_or(Duration::ZERO, |s| s.cpu);
            let others = m.busy.saturating_sub(server + self.bench_cpu);
            let _ = writeln!(
                out,
                "  machine    {} cores, busy {:.0} % of a core; other processes {:.0} %",
                m.cores,
                100.0 * m.busy.as_secs_f64() / secs,
                100.0 * others.as_secs_f64() / secs
            );
        }
        out
    }

    /// The report as one JSON object (latencies in milliseconds, memory in KiB).
    pub fn json(&self) -> String {
        let e = &self.errors;
        let mut out = String::new();
        let _ = write!(
            out,
            r#"{{"mode":"{}","noise":{},"server":"{}","connections":{},"active":{},"threads":{},"warmup_s":{},"duration_s":{},"setup_s":{:.3},"#,
            match self.mode {
                Mode::Lookup => "lookup",
                Mode::Churn => "churn",
                Mode::Connect => "connect",
            },
            self.noise,
            self.server_addr,
            self.connections,
            self.active,
            self.threads,
            self.warmup.as_secs_f64(),
            self.duration.as_secs_f64(),
            self.setup.as_secs_f64()
        );
        let _ = write!(
            out,
            r#""completed":{},"per_second":{:.1},"#,
            self.latency.count(),
            self.rate()
        );
        if self.mode == Mode::Churn {
            let _ = write!(out, r#""writes_per_second":{:.1},"#, 2.0 * self.rate());
        }
        let _ = write!(
            out,
            r#""latency_ms":{{"min":{:.4},"p50":{:.4},"p99":{:.4},"p999":{:.4},"max":{:.4},"mean":{:.4}}},"#,
            self.latency.min() as f64 / 1e6,
            self.ms(0.50),
            self.ms(0.99),
            self.ms(0.999),
            self.latency.max() as f64 / 1e6,
            self.latency.mean() as f64 / 1e6
        );
        let _ = write!(
            out,
            r#""errors":{{"total":{},"wrong_answer":{},"error_reply":{},"unexpected":{},"lost":{},"first":{}}},"reconnects":{},"bench_cpu_s":{:.3}"#,
            e.total(),
            e.wrong_answer,
            e.error_reply,
            e.unexpected,
            e.lost,
            e.first.as_deref().map_or("null".into(), json_string),
            self.reconnects,
            self.bench_cpu.as_secs_f64()
        );
        if let Some(m) = &self.machine {
            let _ = write!(
                out,
                r#","machine":{{"cores":{},"busy_cpu_s":{:.3}}}"#,
                m.cores,
                m.busy.as_secs_f64()
            );
        }
        if let Some(s) = &self.server {
            let _ = write!(
                out,
                r#","server_process":{{"pid":{},"rss_before_kib":{},"rss_kib":{},"peak_rss_kib":{},"cpu_s":{:.3}}}"#,
                s.pid,
                s.rss_before_kib,
                s.rss_kib,
                s.peak_rss_kib,
                s.cpu.as_secs_f64()
            );
        }
        out.push('}');
        out
    }
}

/// `text` as a JSON string literal.
fn json_string(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            c if u32::from(c) < 0x20 => {
                let _ = write!(out, "\\u{:04x}", u32::from(c));
            }
            c => out.push(c),
        }
    }
    out.push('"');
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plan(mode: Mode) -> Plan {
        Plan {
            server: ([127, 0, 0, 9], 10000).into(),
            sources: Vec::new(),
            mode,
            prefix: "t-".into(),
            connections: 100,
            active: 100,
            threads: 2,
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(4),
            seed: 1,
            noise: None,
        }
    }

    fn outcome(latencies_us: &[u64]) -> Outcome {
        let mut latency = Histogram::new();
        for us in latencies_us {
            latency.record(us * 1000);
        }
        Outcome {
            latency,
            errors: Errors::default(),
            reconnects: 0,
        }
    }

    #[test]
    fn threads_are_merged_and_rates_use_the_measured_window() {
        let mut report = Report::new(&plan(Mode::Lookup), Duration::ZERO, Duration::ZERO);
        report.add(&outcome(&[100; 6]));
        let mut second = outcome(&[100, 100]);
        second.errors.wrong_answer = 1;
        second.errors.first = Some("{\"ip\":\"None\"}".into());
        report.add(&second);
        let text = report.text();
        assert!(text.contains("lookups    8 (2/s)"), "{text}");
        assert!(text.contains("p50 0.100 ms"), "{text}");
        assert!(text.contains("errors     1 (wrong answer 1"), "{text}");
        let json = report.json();
        assert!(
            json.contains(r#""completed":8,"per_second":2.0,"#),
            "{json}"
        );
        assert!(json.contains(r#""first":"{\"ip\":\"None\"}""#), "{json}");
        assert!(!json.contains("server_process"), "{json}");
    }

    #[test]
    fn churn_reports_writes_and_server_use() {
        let mut report = Report::new(&plan(Mode::Churn), Duration::ZERO, Duration::from_secs(2));
        report.add(&outcome(&[50; 40]));
        report.server = Some(ServerUse {
            pid: 7,
            rss_before_kib: 2048,
            rss_kib: 4096,
            peak_rss_kib: 5120,
            cpu: Duration::from_secs(3),
        });
        let text = report.text();
        assert!(text.contains("pairs      40 (10/s, 20 writes/s)"), "{text}");
        assert!(text.contains("RSS 2.0 MiB before, 4.0 MiB"), "{text}");
        assert!(text.contains("(75 % of a core)"), "{text}");
        assert!(
            text.contains("bench      CPU 2.00 s in 4.0 s (50 % of a core)"),
            "{text}"
        );
        report.machine = Some(MachineUse {
            cores: 2,
            busy: Duration::from_secs(6),
        });
        let text = report.text();
        assert!(
            text.contains("machine    2 cores, busy 150 % of a core; other processes 25 %"),
            "{text}"
        );
        let json = report.json();
        assert!(
            json.contains(r#""machine":{"cores":2,"busy_cpu_s":6.000}"#),
            "{json}"
        );
        assert!(json.contains(r#""writes_per_second":20.0"#), "{json}");
        assert!(json.contains(r#""server_process":{"pid":7,"rss_before_kib":2048,"rss_kib":4096,"peak_rss_kib":5120,"cpu_s":3.000}}"#), "{json}");
    }

    #[test]
    fn json_strings_are_escaped() {
        assert_eq!(json_string("a\"b\\c\nd"), r#""a\"b\\c\u000ad""#);
    }
}
