//! parlo-bench: a load generator for the Parlo directory server.
//!
//! It speaks the directory's wire protocol (JSON lines over TCP) from many concurrent
//! connections and reports throughput and latency percentiles:
//!
//! - `lookup` mode: every connection registers a name of its own, then looks up random
//!   registered names in a closed loop (one request outstanding per connection);
//! - `churn` mode: every connection registers its name and disconnects it, over and over;
//! - `connect` mode: every connection is closed and made again, over and over, with a PING
//!   on each new one.
//!
//! With `--noise KEY` every connection speaks Noise to the server (a handshake, then the
//! same requests sealed), as a Parlo phone does.
//!
//! Load threads each run one mio event loop over their share of the connections; see
//! [`load`]. With `--server-pid` it also reports the server's memory and CPU time, read
//! from `/proc`, and always its own CPU time, so that a run shows whether the load
//! generator or the server was the limit.

mod error;
mod histogram;
mod load;
mod report;
mod system;
mod wire;

use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::{Duration, Instant};

use error::Error;
use load::{Mode, Plan, StartLine};
use report::{MachineUse, Report, ServerUse};

const HELP: &str = "\
parlo-bench: load generator for the Parlo directory server

USAGE:
    parlo-bench [OPTIONS]

OPTIONS:
    --server ADDR:PORT    Directory server to load [default: 127.0.0.1:10000]
    --connections C       Concurrent connections [default: 100]. In lookup mode each
                          registers a name and holds it for the whole run.
    --active A            Only the first A connections send requests; the others just hold
                          their registration (e.g. 10000 registered, 100 looking up)
                          [default: all]
    --mode MODE           lookup: each connection looks up random registered names in a
                          closed loop (send, wait for the answer, send again) and checks
                          each answer (the name's port must come back).
                          churn: each connection registers its name and disconnects it,
                          over and over; a REG + DISCONNECT pair is one operation.
                          connect: each connection is closed and made again, over and
                          over, with a PING on each new one; a new connection answered
                          is one operation (with --noise: a handshake).
                          [default: lookup]
    --noise KEY           Encrypt every connection with Noise to the server's public key
                          KEY (`parlo-server id`), as a Parlo phone does
    --duration SECS       Measured time, after the warm-up [default: 10]
    --warmup SECS         Load applied before measuring starts [default: 2]
    --threads T           Load threads, each with its own event loop and 1/T of the
                          connections [default: 1]
    --prefix NAME         Names are NAME0, NAME1, ...: two runs at once need different
                          prefixes [default: bench<process id>-]
    --bind IP[,IP...]     Connect from these local addresses in turn (e.g. several
                          127.0.0.x to have more than ~28,000 ephemeral ports to one
                          server) [default: chosen by the kernel]
    --server-pid PID      Also report this process's memory (VmRSS, VmHWM) and CPU time
                          from /proc: the directory server's id
    --seed N              Seed of the random choice of names to look up [default: 1]
    --json                Print the report as one JSON object instead of text
    -h, --help            Print this help

Connections are opened in batches of 128 (refused connects are retried), then the load
starts on all of them at once. Latency is measured from sending a request to reading its
whole answer. The report also gives the CPU time the load generator and the whole machine
used while measuring: when the server uses a whole core and the load generator less, the
server is the limit. The soft limit on open files is raised to the hard limit at start-up;
each connection needs one.

EXIT STATUS:
    0 the run completed without errors, 1 it completed but some answers were wrong or
    connections were lost, 2 the run could not be carried out (bad option, server
    unreachable, set-up refused).
";

/// The command line, parsed.
#[derive(Debug)]
struct Options {
    plan: Plan,
    server_pid: Option<u32>,
    json: bool,
}

fn main() {
    let options = match parse_args() {
        Ok(Some(options)) => options,
        Ok(None) => {
            print!("{HELP}");
            return;
        }
        Err(e) => {
            eprintln!("parlo-bench: {e}");
            std::process::exit(2);
        }
    };
    match run(options) {
        Ok(report) if report.errors.total() == 0 => {}
        Ok(_) => std::process::exit(1),
        Err(e) => {
            eprintln!("parlo-bench: {e}");
            std::process::exit(2);
        }
    }
}

fn parse_args() -> Result<Option<Options>, Error> {
    use lexopt::prelude::*;
    let usage = |e: lexopt::Error| Error::Usage(e.to_string());
    let mut parser = lexopt::Parser::from_env();
    let mut server: SocketAddr = ([127, 0, 0, 1], 10000).into();
    let mut connections: u32 = 100;
    let mut active = None;
    let mut mode = Mode::Lookup;
    let mut duration = Duration::from_secs(10);
    let mut warmup = Duration::from_secs(2);
    let mut threads: u32 = 1;
    let mut prefix = None;
    let mut sources = Vec::new();
    let mut server_pid = None;
    let mut seed: u64 = 1;
    let mut json = false;
    let mut noise = None;
    while let Some(arg) = parser.next().map_err(usage)? {
        match arg {
            Long("server") => server = parser.value().map_err(usage)?.parse().map_err(usage)?,
            Long("connections") => {
                connections = parser.value().map_err(usage)?.parse().map_err(usage)?;
            }
            Long("active") => {
                active = Some(parser.value().map_err(usage)?.parse().map_err(usage)?);
            }
            Long("mode") => {
                let value: String = parser.value().map_err(usage)?.parse().map_err(usage)?;
                mode = match value.as_str() {
                    "lookup" => Mode::Lookup,
                    "churn" => Mode::Churn,
                    "connect" => Mode::Connect,
                    other => {
                        return Err(Error::Usage(format!(
                            "--mode {other:?}: use lookup, churn or connect"
                        )));
                    }
                };
            }
            Long("duration") => duration = seconds(&mut parser, "--duration")?,
            Long("warmup") => warmup = seconds(&mut parser, "--warmup")?,
            Long("threads") => threads = parser.value().map_err(usage)?.parse().map_err(usage)?,
            Long("prefix") => {
                prefix = Some(parser.value().map_err(usage)?.parse().map_err(usage)?);
            }
            Long("bind") => {
                let value: String = parser.value().map_err(usage)?.parse().map_err(usage)?;
                for part in value.split(',') {
                    let ip: IpAddr = part.trim().parse().map_err(|_| {
                        Error::Usage(format!("--bind {part:?} is not an IP address"))
                    })?;
                    sources.push(ip);
                }
            }
            Long("server-pid") => {
                server_pid = Some(parser.value().map_err(usage)?.parse().map_err(usage)?);
            }
            Long("seed") => seed = parser.value().map_err(usage)?.parse().map_err(usage)?,
            Long("json") => json = true,
            Long("noise") => {
                let value: String = parser.value().map_err(usage)?.parse().map_err(usage)?;
                let server = parlo_net::directory::PublicKey::parse(value.trim())
                    .map_err(|e| Error::Usage(format!("--noise: {e}")))?;
                let mut secret = [0u8; 32];
                getrandom::fill(&mut secret)
                    .map_err(|e| Error::Usage(format!("no random source for a key: {e}")))?;
                noise = Some(load::NoisePlan {
                    server,
                    identity: parlo_net::noise::SecretKey::from_bytes(secret),
                });
            }
            Short('h') | Long("help") => return Ok(None),
            _ => return Err(usage(arg.unexpected())),
        }
    }
    if connections == 0 {
        return Err(Error::Usage("--connections must be at least 1".into()));
    }
    let active = active.unwrap_or(connections);
    if active == 0 || active > connections {
        return Err(Error::Usage(format!(
            "--active {active}: use 1 to {connections} (the number of connections)"
        )));
    }
    if threads == 0 || threads > connections {
        return Err(Error::Usage(format!(
            "--threads {threads}: use 1 to {connections} (the number of connections)"
        )));
    }
    if duration.is_zero() {
        return Err(Error::Usage("--duration must be more than 0".into()));
    }
    if let Some(bad) = sources.iter().find(|ip| ip.is_ipv4() != server.is_ipv4()) {
        return Err(Error::Usage(format!(
            "--bind {bad} is not of the same family as --server {server}"
        )));
    }
    let prefix = prefix.unwrap_or_else(|| format!("bench{}-", std::process::id()));
    wire::check_prefix(&prefix, connections - 1).map_err(Error::Usage)?;
    Ok(Some(Options {
        plan: Plan {
            server,
            sources,
            mode,
            prefix,
            connections,
            active,
            threads,
            warmup,
            duration,
            seed,
            noise,
        },
        server_pid,
        json,
    }))
}

/// A number of seconds (decimals allowed) as the value of `flag`.
fn seconds(parser: &mut lexopt::Parser, flag: &str) -> Result<Duration, Error> {
    use lexopt::ValueExt as _;
    let value = parser
        .value()
        .map_err(|e| Error::Usage(e.to_string()))?
        .string()
        .map_err(|e| Error::Usage(e.to_string()))?;
    value
        .parse::<f64>()
        .ok()
        .and_then(|s| Duration::try_from_secs_f64(s).ok())
        .ok_or_else(|| Error::Usage(format!("{flag} {value:?}: give a number of seconds")))
}

fn run(options: Options) -> Result<Report, Error> {
    let Options {
        plan,
        server_pid,
        json,
    } = options;
    let fd_limit = system::raise_fd_limit().map_err(|cause| Error::Io {
        doing: "raising the open-files limit",
        cause,
    })?;
    // Each connection takes a descriptor; the event loops and std streams a few more.
    if u64::from(plan.connections) + 64 > fd_limit {
        eprintln!(
            "parlo-bench: warning: the open-files limit is {fd_limit}, too low for {} connections; raise the hard limit (ulimit -Hn) first",
            plan.connections
        );
    }
    let sample =
        |pid: u32| system::sample_process(pid).map_err(|cause| Error::ServerProcess { pid, cause });
    let server_before = server_pid.map(sample).transpose()?;

    let plan = Arc::new(plan);
    let start = Arc::new(StartLine::new(plan.threads));
    let setup_began = Instant::now();
    let threads: Vec<_> = (0..plan.threads)
        .map(|t| {
            let (plan, start) = (Arc::clone(&plan), Arc::clone(&start));
            std::thread::Builder::new()
                .name(format!("load-{t}"))
                .spawn(move || load::run_thread(&plan, t, &start))
        })
        .collect::<Result<_, _>>()
        .map_err(|cause| Error::Io {
            doing: "starting the load threads",
            cause,
        })?;

    let go = start.wait(true);
    let setup = setup_began.elapsed();
    let began = Instant::now();
    let warm_end = began + plan.warmup;
    let end = warm_end + plan.duration;
    let mut during = None;
    if go {
        std::thread::sleep(warm_end.saturating_duration_since(Instant::now()));
        let own_start = system::own_cpu();
        let machine_start = system::sample_machine().ok();
        let server_start = server_pid.map(sample).transpose()?;
        std::thread::sleep(end.saturating_duration_since(Instant::now()));
        let own_end = system::own_cpu();
        let machine_end = system::sample_machine().ok();
        let server_end = server_pid.map(sample).transpose()?;
        let machine = machine_start
            .zip(machine_end)
            .map(|(start, end)| MachineUse {
                cores: end.cores,
                busy: end.busy.saturating_sub(start.busy),
            });
        during = Some((
            own_end.saturating_sub(own_start),
            machine,
            server_start,
            server_end,
        ));
    }

    let mut outcomes = Vec::new();
    let mut failure = None;
    for thread in threads {
        match thread.join() {
            Ok(Ok(outcome)) => outcomes.push(outcome),
            Ok(Err(Error::Aborted)) => {}
            Ok(Err(e)) => failure = failure.or(Some(e)),
            Err(_) => failure = failure.or(Some(Error::ThreadPanicked)),
        }
    }
    if let Some(e) = failure {
        return Err(e);
    }
    let Some((bench_cpu, machine, server_start, server_end)) = during else {
        return Err(Error::Aborted);
    };

    let mut report = Report::new(&plan, setup, bench_cpu);
    report.machine = machine;
    for outcome in &outcomes {
        report.add(outcome);
    }
    if let (Some(pid), Some(before), Some(start), Some(end)) =
        (server_pid, server_before, server_start, server_end)
    {
        report.server = Some(ServerUse {
            pid,
            rss_before_kib: before.rss_kib,
            rss_kib: end.rss_kib,
            peak_rss_kib: end.peak_rss_kib,
            cpu: end.cpu.saturating_sub(start.cpu),
        });
    }
    if json {
        println!("{}", report.json());
    } else {
        print!("{}", report.text());
    }
    Ok(report)
}
