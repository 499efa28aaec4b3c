//! Starting real `parlo-client` phones for end-to-end tests, talking to them as a user
//! would, and the pieces the call tests share: a peer speaking the original protocol, WAV
//! files and the alignment of a received recording against what was sent.
//!
//! A [`Phone`] is a child process with piped stdin (commands) and stdout (events), on its
//! own loopback address (see [`loopback`]) and UDP port, so tests run in parallel. Its
//! stdout and stderr are collected by reader threads; every wait has a deadline
//! ([`PATIENCE`] unless told otherwise) and fails with everything the phone printed so far,
//! never hangs. The process is killed and reaped when the `Phone` is dropped, panicking
//! test included, and dies with the test process if that is killed.

use std::fmt;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{IpAddr, SocketAddr, TcpStream, UdpSocket};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use crate::server_harness::{
    PATIENCE, Server, TempDir, die_with_parent, loopback, signal, wait_exit, workspace_binary,
};

pub use parlo_fsm::{FRAME_SAMPLES, SAMPLE_RATE};
/// The UDP port the original project always uses for its peers.
pub const ORIGINAL_PORT: u16 = 5001;

/// The `parlo-client` binary of this build profile, built first if needed (so that
/// `cargo test -p parlo-tests` never runs a stale binary).
pub fn client_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("parlo-client"))
}

/// A free UDP port on `ip`. The address is this test's own, so nobody else takes the port
/// between this probe and the phone binding it.
pub fn free_udp_port(ip: IpAddr) -> u16 {
    UdpSocket::bind((ip, 0))
        .and_then(|s| s.local_addr())
        .map(|a| a.port())
        .expect("a loopback UDP port is free")
}

/// Lines written by a child to one of its pipes, collected by a thread, each with the time
/// it was read.
#[derive(Debug, Default)]
struct Lines {
    lines: Mutex<Vec<(Instant, String)>>,
    grew: Condvar,
    closed: AtomicBool,
}

impl Lines {
    fn collect(pipe: impl Read + Send + 'static) -> (Arc<Lines>, JoinHandle<()>) {
        let lines = Arc::new(Lines::default());
        let sink = Arc::clone(&lines);
        let reader = std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines() {
                let Ok(line) = line else { break };
                if let Ok(mut all) = sink.lines.lock() {
                    all.push((Instant::now(), line));
                }
                sink.grew.notify_all();
            }
            sink.closed.store(true, Ordering::SeqCst);
            sink.grew.notify_all();
        });
        (lines, reader)
    }

    fn snapshot(&self) -> Vec<String> {
        self.lines
            .lock()
            .map(|l| l.iter().map(|(_, line)| line.clone()).collect())
            .unwrap_or_default()
    }
}

/// One event line of a phone, text or JSON.
#[derive(Debug, Clone, PartialEq)]
pub struct Event {
    /// The event's name: `registered`, `calling`, `connected`, `ended`, ...
    pub kind: String,
    /// The whole line as printed.
    pub line: String,
    /// The parsed object, for a phone started with `--json`.
    pub json: Option<serde_json::Value>,
    /// When the harness read the line.
    pub at: Instant,
}

impl Event {
    /// Parses a line: with `json`, an object with an `"event"` field; otherwise the first
    /// word is the event's name. `None` for a line that is not an event.
    pub fn parse(line: &str, json: bool, at: Instant) -> Option<Event> {
        if json {
            let value: serde_json::Value = serde_json::from_str(line).ok()?;
            let kind = value.get("event")?.as_str()?.to_owned();
            Some(Event {
                kind,
                line: line.to_owned(),
                json: Some(value),
                at,
            })
        } else {
            let kind = line.split_whitespace().next()?.trim_end_matches(':');
            Some(Event {
                kind: kind.to_owned(),
                line: line.to_owned(),
                json: None,
                at,
            })
        }
    }

    /// A field as text: in JSON the member `key` (a string as is, other values as JSON:
    /// `true`, `null`, `12`); in text the `key=value` word, except `reason`, which runs to
    /// the end of the line.
    pub fn field(&self, key: &str) -> Option<String> {
        match &self.json {
            Some(value) => match value.get(key)? {
                serde_json::Value::String(s) => Some(s.clone()),
                other => Some(other.to_string()),
            },
            None => {
                let prefix = format!("{key}=");
                if key == "reason" {
                    let at = self.line.find(" reason=")?;
                    return Some(self.line[at + " reason=".len()..].to_owned());
                }
                self.line
                    .split(' ')
                    .skip(1)
                    .find_map(|w| w.strip_prefix(&prefix))
                    .map(str::to_owned)
            }
        }
    }

    /// The peer's name: `"peer"` in JSON, else the word after the event's name (when it is
    /// not a `key=value` field).
    pub fn peer(&self) -> Option<&str> {
        match &self.json {
            Some(value) => value.get("peer")?.as_str(),
            None => self
                .line
                .split(' ')
                .nth(1)
                .filter(|w| !w.contains('=') && !w.is_empty()),
        }
    }

    /// Why a call ended, or what an error says: the `reason` field.
    pub fn reason(&self) -> Option<String> {
        self.field("reason")
    }

    /// A numeric field (`status` counters).
    pub fn number(&self, key: &str) -> Option<u64> {
        self.field(key)?.parse().ok()
    }
}

impl fmt::Display for Event {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.line)
    }
}

/// How to start a phone; see [`Phone::builder`].
#[derive(Debug, Clone)]
pub struct PhoneBuilder {
    name: String,
    server: Option<String>,
    ip: Option<IpAddr>,
    port: Option<u16>,
    json: bool,
    auto_answer: bool,
    answer_timeout: Option<u32>,
    audio: Option<String>,
    control: bool,
    stdin_null: bool,
    stdin_file: Option<PathBuf>,
    by_env: bool,
    log_level: String,
    extra: Vec<String>,
    env: Vec<(String, String)>,
    pins: Vec<(String, String)>,
}

impl PhoneBuilder {
    /// `--security MODE`: `required` (the phone's default), `preferred` or `off`.
    pub fn security(self, mode: &str) -> Self {
        self.arg("--security").arg(mode)
    }

    /// Pins `key` (its text form) for `name` in the phone's `known_peers` before it
    /// starts, as a user who knows that phone's key would.
    pub fn pin(mut self, name: &str, key: &str) -> Self {
        self.pins.push((name.to_owned(), key.to_owned()));
        self
    }

    /// The directory server to register with.
    pub fn server(mut self, server: &Server) -> Self {
        self.server = Some(server.addr.to_string());
        self
    }

    /// The directory server as the user writes it: `HOST[:PORT]`, `IP[:PORT]`.
    pub fn server_text(mut self, server: &str) -> Self {
        self.server = Some(server.to_owned());
        self
    }

    /// The directory server's address, which need not be listening.
    pub fn server_addr(mut self, addr: SocketAddr) -> Self {
        self.server = Some(addr.to_string());
        self
    }

    /// Listen on this loopback address instead of a fresh one.
    pub fn ip(mut self, ip: IpAddr) -> Self {
        self.ip = Some(ip);
        self
    }

    /// Listen on this UDP port instead of a free one (e.g. [`ORIGINAL_PORT`]).
    pub fn port(mut self, port: u16) -> Self {
        self.port = Some(port);
        self
    }

    /// Events as JSON lines (`--json`).
    pub fn json(mut self) -> Self {
        self.json = true;
        self
    }

    /// `--auto-answer`.
    pub fn auto_answer(mut self) -> Self {
        self.auto_answer = true;
        self
    }

    /// `--answer-timeout SECS`.
    pub fn answer_timeout(mut self, secs: u32) -> Self {
        self.answer_timeout = Some(secs);
        self
    }

    /// `--audio SPEC`; without it the phone gets `--audio null`.
    pub fn audio(mut self, spec: impl Into<String>) -> Self {
        self.audio = Some(spec.into());
        self
    }

    /// `--control PATH` with a socket in the phone's temporary directory.
    pub fn control(mut self) -> Self {
        self.control = true;
        self
    }

    /// Stdin is `/dev/null`, as under systemd: the phone is driven through `--control`.
    pub fn stdin_null(mut self) -> Self {
        self.stdin_null = true;
        self
    }

    /// Stdin is this regular file.
    pub fn stdin_file(mut self, path: &Path) -> Self {
        self.stdin_file = Some(path.to_owned());
        self
    }

    /// Gives every setting through the environment (`PARLO_SERVER`, `PARLO_NAME`, ...), as
    /// a systemd `EnvironmentFile=` would, instead of flags.
    pub fn configured_by_environment(mut self) -> Self {
        self.by_env = true;
        self
    }

    /// `--log-level LEVEL` (default `debug`, so that a failing test shows what happened).
    pub fn log_level(mut self, level: &str) -> Self {
        level.clone_into(&mut self.log_level);
        self
    }

    /// Any other argument, passed as is after the others.
    pub fn arg(mut self, arg: impl Into<String>) -> Self {
        self.extra.push(arg.into());
        self
    }

    /// An environment variable for the phone (e.g. `NOTIFY_SOCKET`).
    pub fn env(mut self, key: &str, value: impl Into<String>) -> Self {
        self.env.push((key.to_owned(), value.into()));
        self
    }

    /// Starts the phone. Does not wait for anything: see [`Phone::expect_event`].
    pub fn start(self) -> Phone {
        let ip = self.ip.unwrap_or_else(loopback);
        let port = self.port.unwrap_or_else(|| free_udp_port(ip));
        let listen = SocketAddr::new(ip, port);
        let dir = TempDir::new(&format!("phone-{}", self.name));
        let control = self.control.then(|| dir.path().join("control.sock"));
        let server = self
            .server
            .expect("a phone needs a server address: PhoneBuilder::server");
        let mut settings: Vec<(&str, &str, String)> = vec![
            ("--server", "PARLO_SERVER", server),
            ("--name", "PARLO_NAME", self.name.clone()),
            ("--listen", "PARLO_LISTEN", listen.to_string()),
            (
                "--audio",
                "PARLO_AUDIO",
                self.audio.unwrap_or_else(|| "null".into()),
            ),
            ("--log-level", "PARLO_LOG_LEVEL", self.log_level),
        ];
        if let Some(secs) = self.answer_timeout {
            settings.push(("--answer-timeout", "PARLO_ANSWER_TIMEOUT", secs.to_string()));
        }
        if let Some(path) = &control {
            settings.push(("--control", "PARLO_CONTROL", path.display().to_string()));
        }
        let mut args: Vec<String> = Vec::new();
        let mut env: Vec<(&str, String)> = Vec::new();
        for (flag, var, value) in settings {
            if self.by_env {
                env.push((var, value));
            } else {
                args.push(flag.into());
                args.push(value);
            }
        }
        for (on, flag, var) in [
            (self.json, "--json", "PARLO_JSON"),
            (self.auto_answer, "--auto-answer", "PARLO_AUTO_ANSWER"),
        ] {
            if on && self.by_env {
                env.push((var, "1".into()));
            } else if on {
                args.push(flag.into());
            }
        }
        args.extend(self.extra);
        // Each phone has its own state: its identity and its pins of servers' and other
        // phones' keys.
        env.push((
            "XDG_STATE_HOME",
            dir.path().join("state").display().to_string(),
        ));
        if !self.pins.is_empty() {
            let state = dir.path().join("state/parlo");
            std::fs::create_dir_all(&state).expect("the phone's state directory");
            let pins: String = self
                .pins
                .iter()
                .map(|(name, key)| format!("{name} {key}\n"))
                .collect();
            std::fs::write(state.join("known_peers"), pins).expect("known_peers written");
        }
        env.extend(self.env.iter().map(|(k, v)| (k.as_str(), v.clone())));

        let mut command = client_command();
        let stdin = match (&self.stdin_file, self.stdin_null) {
            (Some(path), _) => {
                Stdio::from(std::fs::File::open(path).expect("the file for stdin can be opened"))
            }
            (None, true) => Stdio::null(),
            (None, false) => Stdio::piped(),
        };
        command
            .args(&args)
            .envs(env.iter().map(|(k, v)| (k, v)))
            .stdin(stdin)
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let started = Instant::now();
        let mut child = command.spawn().expect("parlo-client starts");
        let stdin = child.stdin.take();
        let (stdout, stdout_reader) = Lines::collect(child.stdout.take().expect("stdout is piped"));
        let (stderr, stderr_reader) = Lines::collect(child.stderr.take().expect("stderr is piped"));
        Phone {
            child,
            stdin,
            stdout,
            readers: vec![stdout_reader, stderr_reader],
            stderr,
            read: 0,
            name: self.name,
            addr: listen,
            json: self.json,
            args,
            control,
            started,
            dir,
        }
    }
}

/// The environment variables parlo-client reads its settings from.
const SETTINGS_ENV: [&str; 17] = [
    "PARLO_SERVER",
    "PARLO_NAME",
    "PARLO_LISTEN",
    "PARLO_AUDIO",
    "PARLO_CONTROL",
    "PARLO_JSON",
    "PARLO_AUTO_ANSWER",
    "PARLO_ANSWER_TIMEOUT",
    "PARLO_LOG_LEVEL",
    "PARLO_CODECS",
    "PARLO_IDENTITY",
    "PARLO_SERVER_KEY",
    "PARLO_SECURITY",
    "PARLO_ORIGINAL_PHONES",
    "PARLO_ANSWER_FROM",
    "PARLO_KNOWN_PEERS",
    "STATE_DIRECTORY",
];

/// A command running parlo-client with none of its settings inherited from the
/// environment of the tests (nor the service manager's socket, should the tests run under
/// one), dying with the thread that starts it.
pub fn client_command() -> Command {
    let mut command = Command::new(client_binary());
    for var in SETTINGS_ENV {
        command.env_remove(var);
    }
    command.env_remove("NOTIFY_SOCKET");
    die_with_parent(&mut command);
    command
}

/// A running `parlo-client`.
#[derive(Debug)]
pub struct Phone {
    child: Child,
    stdin: Option<ChildStdin>,
    stdout: Arc<Lines>,
    /// The threads reading stdout and stderr: joined once the process exits, so that
    /// every line it wrote is there.
    readers: Vec<JoinHandle<()>>,
    stderr: Arc<Lines>,
    /// Stdout lines already consumed by `expect_*`.
    read: usize,
    /// The name it registers.
    pub name: String,
    /// The UDP address it listens on.
    pub addr: SocketAddr,
    json: bool,
    args: Vec<String>,
    control: Option<PathBuf>,
    started: Instant,
    dir: TempDir,
}

impl Phone {
    /// A phone called `name`, to be configured and started.
    pub fn builder(name: &str) -> PhoneBuilder {
        PhoneBuilder {
            name: name.to_owned(),
            server: None,
            ip: None,
            port: None,
            json: false,
            auto_answer: false,
            answer_timeout: None,
            audio: None,
            control: false,
            stdin_null: false,
            stdin_file: None,
            by_env: false,
            log_level: "debug".into(),
            extra: Vec::new(),
            env: Vec::new(),
            pins: Vec::new(),
        }
    }

    /// Starts a phone called `name` on `server` with default flags and waits until it is
    /// registered.
    pub fn registered(name: &str, server: &Server) -> Phone {
        let mut phone = Phone::builder(name).server(server).start();
        phone.expect_event("registered");
        phone
    }

    /// Starts a phone from `builder` and waits until it is registered.
    pub fn start_registered(builder: PhoneBuilder) -> Phone {
        let mut phone = builder.start();
        phone.expect_event("registered");
        phone
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// The phone's temporary directory (control socket, files of the test).
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    /// The control socket's path, for a phone started with [`PhoneBuilder::control`].
    pub fn control_path(&self) -> &Path {
        self.control
            .as_deref()
            .expect("the phone was started with PhoneBuilder::control")
    }

    /// When the process was started.
    pub fn started(&self) -> Instant {
        self.started
    }

    /// Writes one command line to the phone's stdin.
    pub fn send(&mut self, command: &str) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the phone's stdin is a pipe (not stdin_null)");
        if let Err(e) = stdin
            .write_all(command.as_bytes())
            .and_then(|()| stdin.write_all(b"\n"))
            .and_then(|()| stdin.flush())
        {
            panic!(
                "{}: writing {command:?} to stdin failed: {e}\n{}",
                self.name,
                self.transcript()
            );
        }
    }

    /// Writes raw bytes to the phone's stdin, as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        let stdin = self
            .stdin
            .as_mut()
            .expect("the phone's stdin is a pipe (not stdin_null)");
        let written = stdin.write_all(bytes).and_then(|()| stdin.flush());
        assert!(
            written.is_ok(),
            "{}: writing to stdin: {written:?}",
            self.name
        );
    }

    /// Closes the phone's stdin (end of file).
    pub fn close_stdin(&mut self) {
        self.stdin = None;
    }

    /// Everything the phone printed so far, stdout and stderr, for failure messages.
    pub fn transcript(&self) -> String {
        let out = self.stdout.snapshot();
        let err = self.stderr.snapshot();
        format!(
            "--- {} ({}) stdout, {} lines ---\n{}\n--- {} stderr ---\n{}\n--- end of {} ---",
            self.name,
            self.args.join(" "),
            out.len(),
            out.join("\n"),
            self.name,
            err.join("\n"),
            self.name
        )
    }

    /// Every stdout line so far.
    pub fn stdout_lines(&self) -> Vec<String> {
        self.stdout.snapshot()
    }

    /// Every stderr line so far.
    pub fn stderr_lines(&self) -> Vec<String> {
        self.stderr.snapshot()
    }

    /// The phone's public key (text form), as it logs it at start.
    pub fn public_key(&self) -> String {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let key = self.stderr_lines().iter().find_map(|line| {
                let (_, rest) = line.split_once("phone key ")?;
                rest.split(' ').next().map(str::to_owned)
            });
            if let Some(key) = key {
                return key;
            }
            assert!(
                Instant::now() < deadline,
                "{}: no `phone key` in its log",
                self.name
            );
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    /// Every event so far, read or not.
    pub fn events(&self) -> Vec<Event> {
        let now = Instant::now();
        self.stdout
            .snapshot()
            .iter()
            .filter_map(|l| Event::parse(l, self.json, now))
            .collect()
    }

    /// Waits for the next unread stdout line for which `pick` returns true, consuming it
    /// and every line before it, and returns it with the time it was read from the pipe.
    /// `None` after `patience` or when stdout closes.
    fn wait_line(
        &mut self,
        patience: Duration,
        mut pick: impl FnMut(&str) -> bool,
    ) -> Option<(String, Instant)> {
        let deadline = Instant::now() + patience;
        let mut lines = self.stdout.lines.lock().expect("stdout lock");
        loop {
            let now = Instant::now();
            if let Some(i) = lines[self.read..].iter().position(|(_, l)| pick(l)) {
                let index = self.read + i;
                self.read = index + 1;
                let (at, line) = &lines[index];
                return Some((line.clone(), *at));
            }
            self.read = lines.len().max(self.read);
            if self.stdout.closed.load(Ordering::SeqCst) || now >= deadline {
                return None;
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            lines = self.stdout.grew.wait_timeout(lines, wait).expect("lock").0;
        }
    }

    /// Waits for the next event of this kind (skipping others) and returns it. Fails the
    /// test, with everything the phone printed, after [`PATIENCE`].
    pub fn expect_event(&mut self, kind: &str) -> Event {
        self.expect_event_within(kind, PATIENCE)
    }

    /// Like [`Phone::expect_event`], with a deadline of `patience`.
    pub fn expect_event_within(&mut self, kind: &str, patience: Duration) -> Event {
        let json = self.json;
        let start = self.read;
        match self.wait_line(patience, |l| {
            Event::parse(l, json, Instant::now()).is_some_and(|e| e.kind == kind)
        }) {
            Some((line, at)) => {
                Event::parse(&line, json, at).expect("the line was picked as an event")
            }
            None => {
                let skipped = self.stdout.snapshot()[start.min(self.read)..].join("\n");
                let exited = self.exit_status();
                panic!(
                    "{}: no {kind:?} event within {patience:?} (process {}); unread lines \
                     skipped:\n{skipped}\n{}",
                    self.name,
                    match exited {
                        Some(s) => format!("exited: {s}"),
                        None => "still running".into(),
                    },
                    self.transcript()
                )
            }
        }
    }

    /// Waits for an `ended` event and checks its reason.
    pub fn expect_ended(&mut self, reason: &str) -> Event {
        let event = self.expect_event("ended");
        assert_eq!(
            event.reason().as_deref(),
            Some(reason),
            "{}: ended for another reason: {event}\n{}",
            self.name,
            self.transcript()
        );
        event
    }

    /// Waits for the next event, whatever it is.
    pub fn next_event(&mut self) -> Event {
        let json = self.json;
        match self.wait_line(PATIENCE, |l| {
            Event::parse(l, json, Instant::now()).is_some()
        }) {
            Some((line, at)) => Event::parse(&line, json, at).expect("picked as an event"),
            None => panic!(
                "{}: no event within {PATIENCE:?}\n{}",
                self.name,
                self.transcript()
            ),
        }
    }

    /// Sends `command` and waits for the event `kind` that answers it.
    pub fn ask(&mut self, command: &str, kind: &str) -> Event {
        self.send(command);
        self.expect_event(kind)
    }

    /// Fails if an event of this kind arrives within `quiet`; consumes nothing.
    pub fn expect_no_event(&mut self, kind: &str, quiet: Duration) {
        std::thread::sleep(quiet);
        let json = self.json;
        let now = Instant::now();
        let unread: Vec<String> = self.stdout.snapshot()[self.read..].to_vec();
        if let Some(line) = unread
            .iter()
            .find(|l| Event::parse(l, json, now).is_some_and(|e| e.kind == kind))
        {
            panic!(
                "{}: unexpected {kind:?} event: {line}\n{}",
                self.name,
                self.transcript()
            );
        }
    }

    /// Unread lines are dropped: later waits only see what comes after this call.
    pub fn skip_unread(&mut self) {
        self.read = self.stdout.snapshot().len();
    }

    /// Runs `parlo-client ctl --control <this phone's socket> <args>` to completion (failing
    /// the test after [`PATIENCE`]); `input` is written to its stdin.
    pub fn ctl(&self, args: &[&str], input: &str) -> Output {
        ctl(self.control_path(), args, input)
    }

    /// Starts `parlo-client ctl --control <this phone's socket> <args>`, `watch` among
    /// the args, and waits for its first line (the answer to `watch`): from then on it
    /// sees every event. `json` says how to read its lines.
    pub fn watch(&self, args: &[&str], json: bool) -> Watch {
        Watch::start(self.control_path(), args, json)
    }

    /// Sends `quit` and waits for the process to exit.
    pub fn quit(&mut self) -> ExitStatus {
        self.send("quit");
        self.wait()
    }

    /// Waits for the process to exit, failing the test after [`PATIENCE`]; stdout is read
    /// to its end.
    pub fn wait(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child, PATIENCE).unwrap_or_else(|| {
            panic!(
                "{}: still running after {PATIENCE:?}\n{}",
                self.name,
                self.transcript()
            )
        });
        for reader in self.readers.drain(..) {
            let _ = reader.join();
        }
        status
    }

    /// The exit status, if the process has exited.
    pub fn exit_status(&mut self) -> Option<ExitStatus> {
        self.child.try_wait().ok().flatten()
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"KILL"`, `"STOP"`, ...) to the phone.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Kills the phone at once (SIGKILL) and reaps it: a phone that crashed or lost power.
    pub fn kill(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }

    /// The phone's answer to `status`.
    pub fn status(&mut self) -> Event {
        self.ask("status", "status")
    }
}

/// The `status` of two phones in a call with each other, printed, each checked to say the
/// call is still up.
pub fn statuses_in_call(a: &mut Phone, b: &mut Phone) -> [Event; 2] {
    let statuses = [a.status(), b.status()];
    println!("{}: {}\n{}: {}", a.name, statuses[0], b.name, statuses[1]);
    for status in &statuses {
        assert_eq!(
            status.field("state").as_deref(),
            Some("in-call"),
            "{status}"
        );
    }
    statuses
}

impl Drop for Phone {
    fn drop(&mut self) {
        self.stdin = None;
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Places a call from `caller` to `callee` and answers it by `accept`: both phones report
/// `connected` with each other's name.
pub fn connect_call(caller: &mut Phone, callee: &mut Phone) {
    caller.send(&format!("call {}", callee.name));
    let incoming = callee.expect_event("incoming");
    assert_eq!(incoming.peer(), Some(caller.name.as_str()), "{incoming}");
    callee.send("accept");
    let connected = caller.expect_event("connected");
    assert_eq!(connected.peer(), Some(callee.name.as_str()), "{connected}");
    let connected = callee.expect_event("connected");
    assert_eq!(connected.peer(), Some(caller.name.as_str()), "{connected}");
}

/// A running `parlo-client ctl ... watch`: the events it prints, collected. Killed when
/// dropped.
#[derive(Debug)]
pub struct Watch {
    child: Child,
    stdout: Arc<Lines>,
    stderr: Arc<Lines>,
    /// Lines already consumed.
    read: usize,
    json: bool,
    args: Vec<String>,
}

impl Watch {
    fn start(control: &Path, args: &[&str], json: bool) -> Watch {
        let mut command = client_command();
        command
            .arg("ctl")
            .arg("--control")
            .arg(control)
            .args(args)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped());
        let mut child = command.spawn().expect("parlo-client ctl starts");
        let (stdout, _) = Lines::collect(child.stdout.take().expect("stdout is piped"));
        let (stderr, _) = Lines::collect(child.stderr.take().expect("stderr is piped"));
        let mut watch = Watch {
            child,
            stdout,
            stderr,
            read: 0,
            json,
            args: args.iter().map(|a| (*a).to_owned()).collect(),
        };
        let first = watch.next_event();
        assert_eq!(first.kind, "status", "the answer to watch: {first}");
        watch
    }

    /// Everything it printed so far, for failure messages.
    pub fn transcript(&self) -> String {
        format!(
            "--- ctl {} stdout ---\n{}\n--- stderr ---\n{}\n--- end ---",
            self.args.join(" "),
            self.stdout.snapshot().join("\n"),
            self.stderr.snapshot().join("\n")
        )
    }

    /// The next line, as an event; fails the test after [`PATIENCE`] or when it ends.
    pub fn next_event(&mut self) -> Event {
        let deadline = Instant::now() + PATIENCE;
        let mut lines = self.stdout.lines.lock().expect("stdout lock");
        loop {
            if let Some((at, line)) = lines.get(self.read) {
                self.read += 1;
                return Event::parse(line, self.json, *at)
                    .unwrap_or_else(|| panic!("not an event: {line:?}\n{}", self.transcript()));
            }
            let now = Instant::now();
            if self.stdout.closed.load(Ordering::SeqCst) || now >= deadline {
                drop(lines);
                panic!("no more lines from ctl watch\n{}", self.transcript());
            }
            let wait = (deadline - now).min(Duration::from_millis(50));
            lines = self.stdout.grew.wait_timeout(lines, wait).expect("lock").0;
        }
    }

    /// Waits for its process to end (the phone stopped), failing after [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        wait_exit(&mut self.child, PATIENCE)
            .unwrap_or_else(|| panic!("ctl watch still running\n{}", self.transcript()))
    }
}

impl Drop for Watch {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Runs `parlo-client ctl --control PATH <args>` with `input` on its stdin and returns its
/// output, failing the test after [`PATIENCE`].
pub fn ctl(control: &Path, args: &[&str], input: &str) -> Output {
    let mut command = client_command();
    command
        .arg("ctl")
        .arg("--control")
        .arg(control)
        .args(args)
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_with_input(command, input)
}

/// Runs `parlo-client <args>` (no phone started by the harness), with stdin from
/// `/dev/null`, failing the test after [`PATIENCE`].
pub fn run_client(args: &[&str]) -> Output {
    run_client_with_env(args, &[])
}

/// Runs `parlo-client <args>` as [`run_client`] does, with the variables of `env` set.
pub fn run_client_with_env(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = client_command();
    command
        .args(args)
        .envs(env.iter().copied())
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped());
    run_with_input(command, "")
}

fn run_with_input(mut command: Command, input: &str) -> Output {
    let mut child = command.spawn().expect("parlo-client runs");
    if let Some(mut stdin) = child.stdin.take() {
        let _ = stdin.write_all(input.as_bytes());
    }
    let (out, out_reader) = Lines::collect(child.stdout.take().expect("piped"));
    let (err, err_reader) = Lines::collect(child.stderr.take().expect("piped"));
    let Some(status) = wait_exit(&mut child, PATIENCE) else {
        let _ = child.kill();
        let _ = child.wait();
        panic!(
            "{command:?} still running after {PATIENCE:?}\nstdout:\n{}\nstderr:\n{}",
            out.snapshot().join("\n"),
            err.snapshot().join("\n")
        );
    };
    let _ = out_reader.join();
    let _ = err_reader.join();
    let join = |lines: &Lines| {
        let mut text = lines.snapshot().join("\n");
        if !text.is_empty() {
            text.push('\n');
        }
        text.into_bytes()
    };
    Output {
        status,
        stdout: join(&out),
        stderr: join(&err),
    }
}

/// A phone of the original project, emulated step by step as its report describes it:
/// the directory by `json.dumps` requests on TCP, one UDP socket on port 5001, bare
/// `START <name>`, `ACCEPT` sent ten times, `REJECT`, several `CLOSE`, and audio as raw
/// 1024-byte datagrams of 512 little-endian samples.
///
/// It binds its own loopback address (port [`ORIGINAL_PORT`]) and connects to the
/// directory from that address, so the directory records where it really is. Like the
/// original, it sends to whatever address the directory gives for a name, always on port
/// 5001.
#[derive(Debug)]
pub struct OriginalPeer {
    /// The name it registers.
    pub name: String,
    /// Its UDP socket, on `ip:5001`.
    pub udp: UdpSocket,
    directory: TcpStream,
}

/// What an original peer received while it was waiting for an answer to its `START`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Answer {
    /// A datagram starting with `ACCEPT`.
    Accept,
    /// A datagram starting with `REJECT`.
    Reject,
    /// Nothing within 7 s, the original's answer timeout.
    Timeout,
}

/// The audio an original peer exchanged during a call.
#[derive(Debug, Default, Clone)]
pub struct OriginalMedia {
    /// Every sample received in 1024-byte datagrams, in arrival order.
    pub received: Vec<i16>,
    /// Frames it sent.
    pub frames_sent: usize,
    /// Datagrams received that were not 1024 bytes and not signalling (e.g. RTP).
    pub odd_datagrams: usize,
    /// Signalling lines received during the call.
    pub signalling: Vec<String>,
    /// Whether a `CLOSE` ended the call.
    pub closed_by_peer: bool,
}

impl OriginalPeer {
    /// Binds `ip:5001` and registers `name` with the directory at `server`.
    pub fn register(name: &str, ip: IpAddr, server: SocketAddr) -> OriginalPeer {
        let udp = UdpSocket::bind((ip, ORIGINAL_PORT)).expect("the original's port 5001 is free");
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeouts can be set");
        let socket = socket2::Socket::new(
            socket2::Domain::IPV4,
            socket2::Type::STREAM,
            Some(socket2::Protocol::TCP),
        )
        .expect("a TCP socket");
        socket
            .bind(&SocketAddr::new(ip, 0).into())
            .expect("binding the peer's own address");
        socket
            .connect_timeout(&server.into(), Duration::from_secs(1))
            .expect("the directory accepts connections");
        let directory: TcpStream = socket.into();
        directory
            .set_read_timeout(Some(PATIENCE))
            .expect("timeouts can be set");
        let mut peer = OriginalPeer {
            name: name.to_owned(),
            udp,
            directory,
        };
        let reply = peer.directory_request("REG", name);
        assert!(
            reply.contains("Registered successfully"),
            "the original peer {name} could not register: {reply}"
        );
        peer
    }

    /// The UDP address it listens on.
    pub fn addr(&self) -> SocketAddr {
        self.udp.local_addr().expect("the socket is bound")
    }

    /// `json.dumps({"command": command, "name": name})` in one send, then one `recv(1024)`.
    fn directory_request(&mut self, command: &str, name: &str) -> String {
        let request = format!("{{\"command\": \"{command}\", \"name\": \"{name}\"}}");
        self.directory
            .write_all(request.as_bytes())
            .expect("the directory reads");
        let mut buf = [0u8; 1024];
        let n = self
            .directory
            .read(&mut buf)
            .expect("the directory answers");
        String::from_utf8_lossy(&buf[..n]).into_owned()
    }

    /// `GET name`: the IP the directory gives, or `None` for `{"ip": "None"}`.
    pub fn lookup(&mut self, name: &str) -> Option<IpAddr> {
        let reply = self.directory_request("GET", name);
        let value: serde_json::Value = serde_json::from_str(reply.trim())
            .unwrap_or_else(|e| panic!("GET answer {reply:?} is not JSON: {e}"));
        value.get("ip")?.as_str()?.parse().ok()
    }

    /// Where the original sends to reach `name`: the directory's IP, port 5001.
    fn target(&mut self, name: &str) -> SocketAddr {
        let ip = self
            .lookup(name)
            .unwrap_or_else(|| panic!("{name} is not in the directory"));
        SocketAddr::new(ip, ORIGINAL_PORT)
    }

    /// Sends one datagram.
    pub fn send_to(&self, bytes: &[u8], to: SocketAddr) {
        self.udp.send_to(bytes, to).expect("sending on loopback");
    }

    /// Receives one datagram within `patience`.
    pub fn recv(&self, patience: Duration) -> Option<(Vec<u8>, SocketAddr)> {
        let deadline = Instant::now() + patience;
        let mut buf = [0u8; 2048];
        while Instant::now() < deadline {
            if let Ok((n, from)) = self.udp.recv_from(&mut buf) {
                return Some((buf[..n].to_vec(), from));
            }
        }
        None
    }

    /// Calls `callee` as the original does: GET, `START <name>`, then waits up to 7 s for a
    /// reply starting with `ACCEPT` or `REJECT`. Returns the answer and the address it
    /// came from.
    pub fn call(&mut self, callee: &str) -> (Answer, Option<SocketAddr>) {
        let to = self.target(callee);
        let start = format!("START {}", self.name);
        self.send_to(start.as_bytes(), to);
        let deadline = Instant::now() + Duration::from_secs(7);
        while Instant::now() < deadline {
            let Some((bytes, from)) = self.recv(deadline - Instant::now()) else {
                break;
            };
            if bytes.starts_with(b"ACCEPT") {
                return (Answer::Accept, Some(from));
            }
            if bytes.starts_with(b"REJECT") {
                return (Answer::Reject, Some(from));
            }
        }
        (Answer::Timeout, None)
    }

    /// Waits for a `START`; returns the whole line and where it came from.
    pub fn wait_start(&self, patience: Duration) -> Option<(String, SocketAddr)> {
        let deadline = Instant::now() + patience;
        while Instant::now() < deadline {
            let (bytes, from) = self.recv(deadline - Instant::now())?;
            if bytes.starts_with(b"START") {
                return Some((String::from_utf8_lossy(&bytes).into_owned(), from));
            }
        }
        None
    }

    /// Accepts a call from `caller` as the original does: GET the caller's IP, then send
    /// `ACCEPT` ten times to it on port 5001. Returns that address.
    pub fn accept(&mut self, caller: &str) -> SocketAddr {
        let to = self.target(caller);
        for _ in 0..10 {
            self.send_to(b"ACCEPT", to);
        }
        to
    }

    /// Rejects a call from `caller`: GET its IP, send `REJECT` once.
    pub fn reject(&mut self, caller: &str) -> SocketAddr {
        let to = self.target(caller);
        self.send_to(b"REJECT", to);
        to
    }

    /// Hangs up: `CLOSE` several times.
    pub fn hangup(&self, to: SocketAddr) {
        for _ in 0..5 {
            self.send_to(b"CLOSE", to);
        }
    }

    /// Carries a call's audio with `peer`: sends `samples` as raw 1024-byte little-endian
    /// datagrams paced every 64 ms (then silence), and collects what arrives, until a
    /// `CLOSE` arrives or `duration` has passed.
    pub fn talk(&self, peer: SocketAddr, samples: &[i16], duration: Duration) -> OriginalMedia {
        let mut media = OriginalMedia::default();
        let start = Instant::now();
        let frame_time = Duration::from_millis(64);
        let mut next_frame = start;
        let mut sent = 0usize;
        let mut buf = [0u8; 2048];
        self.udp
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeouts can be set");
        while start.elapsed() < duration {
            if Instant::now() >= next_frame {
                let mut datagram = [0u8; FRAME_SAMPLES * 2];
                for (i, pair) in datagram.chunks_exact_mut(2).enumerate() {
                    let sample = samples.get(sent + i).copied().unwrap_or(0);
                    pair.copy_from_slice(&sample.to_le_bytes());
                }
                self.send_to(&datagram, peer);
                sent += FRAME_SAMPLES;
                media.frames_sent += 1;
                next_frame += frame_time;
            }
            let Ok((n, from)) = self.udp.recv_from(&mut buf) else {
                continue;
            };
            if from != peer {
                continue;
            }
            let bytes = &buf[..n];
            if n == FRAME_SAMPLES * 2 {
                media.received.extend(
                    bytes
                        .chunks_exact(2)
                        .map(|p| i16::from_le_bytes([p[0], p[1]])),
                );
            } else if bytes.first().is_some_and(u8::is_ascii_uppercase) {
                let line = String::from_utf8_lossy(bytes).into_owned();
                let close = line.starts_with("CLOSE");
                media.signalling.push(line);
                if close {
                    media.closed_by_peer = true;
                    break;
                }
            } else {
                media.odd_datagrams += 1;
            }
        }
        self.udp
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeouts can be set");
        media
    }

    /// Streams near-silence to `peer` every 64 ms for `duration` like an original that
    /// missed the call's end (its two threads reading one socket), deaf to everything it
    /// gets. Returns when each `CLOSE` arrived. Each datagram starts with the byte `A`
    /// (a first sample of 65, little-endian), as raw PCM may: only a receiver that
    /// expects raw PCM from this address can tell it from signalling.
    pub fn stream_deaf(&self, peer: SocketAddr, duration: Duration) -> Vec<Instant> {
        let mut closes = Vec::new();
        let start = Instant::now();
        let mut next_frame = start;
        let mut buf = [0u8; 2048];
        let mut frame = [0u8; FRAME_SAMPLES * 2];
        frame[0] = b'A';
        self.udp
            .set_read_timeout(Some(Duration::from_millis(1)))
            .expect("timeouts can be set");
        while start.elapsed() < duration {
            if Instant::now() >= next_frame {
                self.send_to(&frame, peer);
                next_frame += Duration::from_millis(64);
            }
            if let Ok((n, from)) = self.udp.recv_from(&mut buf) {
                if from == peer && &buf[..n] == b"CLOSE" {
                    closes.push(Instant::now());
                }
            }
        }
        self.udp
            .set_read_timeout(Some(Duration::from_millis(50)))
            .expect("timeouts can be set");
        closes
    }

    /// Leaves the directory: `DISCONNECT`.
    pub fn disconnect(mut self) {
        let name = self.name.clone();
        let _ = self.directory_request("DISCONNECT", &name);
    }
}

/// What a [`Relay`] does to the media packets (RTP) going from the caller to the callee,
/// by their index in that stream (0 for the first); signalling passes untouched.
#[derive(Debug, Clone, Copy, Default)]
pub struct Impairment {
    /// Every N-th packet (index N-1, 2N-1, ...) is held back and sent after the next one.
    pub reorder_every: usize,
    /// Every N-th packet (index N-1, 2N-1, ...) is sent twice.
    pub duplicate_every: usize,
    /// Every N-th packet (index N-1, 2N-1, ...) is dropped.
    pub drop_every: usize,
    /// The first N signalling datagrams from the caller are dropped.
    pub drop_first_requests: usize,
    /// The first N signalling datagrams from the callee are dropped.
    pub drop_first_answers: usize,
    /// Each media packet is delayed by a pseudo-random 0 to N milliseconds (uniform,
    /// seeded by its index), so packets arrive unevenly and, past 64 ms, out of order.
    pub jitter_ms: u64,
    /// After each media packet, forged ones from the same address (see [`forgeries`]).
    pub forge: bool,
}

impl Impairment {
    fn hits(every: usize, index: usize) -> bool {
        every > 0 && index % every == every - 1
    }

    /// The extra delay of media packet `index`.
    fn delay(&self, index: usize) -> Duration {
        if self.jitter_ms == 0 {
            return Duration::ZERO;
        }
        let mut x = (index as u64 + 1).wrapping_mul(0x9E37_79B9_7F4A_7C15);
        x ^= x >> 31;
        x = x.wrapping_mul(0xBF58_476D_1CE4_E5B9);
        x ^= x >> 29;
        Duration::from_millis(x % (self.jitter_ms + 1))
    }
}

/// What a [`Relay`] did.
#[derive(Debug, Clone, Default)]
pub struct RelayReport {
    /// Media packets from the caller.
    pub media: usize,
    /// Indices of the media packets dropped.
    pub dropped: Vec<usize>,
    /// Media packets sent out of order.
    pub reordered: usize,
    /// Media packets sent twice.
    pub duplicated: usize,
    /// Forged media packets sent.
    pub forged: usize,
    /// Signalling lines from the caller, as forwarded or dropped (`dropped: ` prefix).
    pub requests: Vec<String>,
    /// The first media packets from the caller, as they arrived (at most 64).
    pub packets: Vec<Vec<u8>>,
    /// Signalling lines from the callee, likewise.
    pub answers: Vec<String>,
}

/// The sockets of a man in the middle registered as `name` on `server`: the caller-facing
/// UDP socket (whose address the directory now gives for `name`), a second UDP socket
/// towards the real callee, and the directory connection that keeps the registration
/// alive.
pub fn man_in_the_middle(name: &str, server: &Server) -> (UdpSocket, UdpSocket, TcpStream) {
    let front = UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
    let back = UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket");
    let addr = front.local_addr().expect("bound");
    let socket = socket2::Socket::new(
        socket2::Domain::IPV4,
        socket2::Type::STREAM,
        Some(socket2::Protocol::TCP),
    )
    .expect("a TCP socket");
    socket
        .bind(&SocketAddr::new(addr.ip(), 0).into())
        .expect("binding the man in the middle's address");
    socket
        .connect_timeout(&server.addr.into(), Duration::from_secs(1))
        .expect("the directory accepts connections");
    let mut directory: TcpStream = socket.into();
    directory
        .set_read_timeout(Some(PATIENCE))
        .expect("timeouts can be set");
    let request = format!(
        "{{\"command\":\"REG\",\"name\":\"{name}\",\"port\":{}}}\n",
        addr.port()
    );
    directory
        .write_all(request.as_bytes())
        .expect("the directory reads");
    let mut buf = [0u8; 1024];
    let n = directory.read(&mut buf).expect("the directory answers");
    let reply = String::from_utf8_lossy(&buf[..n]);
    assert!(
        reply.contains("Registered successfully"),
        "{name} in the middle: {reply}"
    );
    (front, back, directory)
}

/// A man in the middle for one call: registers `name` in the directory with the address of
/// its caller-facing socket, forwards everything from the caller to `callee` (from a second
/// socket) and back, and impairs the media towards the callee as told — the network
/// impairments this kernel cannot emulate (no netem), done in user space.
#[derive(Debug)]
pub struct Relay {
    /// The address callers reach: what the directory gives for its name.
    pub addr: SocketAddr,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<RelayReport>>,
    _directory: TcpStream,
}

impl Relay {
    /// Starts a relay registered as `name` on `server`, forwarding to `callee`.
    pub fn start(name: &str, server: &Server, callee: SocketAddr, impair: Impairment) -> Relay {
        let (front, back, directory) = man_in_the_middle(name, server);
        let addr = front.local_addr().expect("bound");
        let stop = Arc::new(AtomicBool::new(false));
        let stopping = Arc::clone(&stop);
        let thread = std::thread::spawn(move || relay(&front, &back, callee, impair, &stopping));
        Relay {
            addr,
            stop,
            thread: Some(thread),
            _directory: directory,
        }
    }

    /// Stops forwarding and says what was done.
    pub fn finish(mut self) -> RelayReport {
        self.stop.store(true, Ordering::SeqCst);
        self.thread
            .take()
            .and_then(|t| t.join().ok())
            .unwrap_or_default()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::SeqCst);
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

fn relay(
    front: &UdpSocket,
    back: &UdpSocket,
    callee: SocketAddr,
    impair: Impairment,
    stop: &AtomicBool,
) -> RelayReport {
    let mut report = RelayReport::default();
    let mut caller: Option<SocketAddr> = None;
    let mut held: Option<Vec<u8>> = None;
    // Media waiting for its release time (jitter), in arrival order.
    let mut delayed: Vec<(Instant, Vec<u8>)> = Vec::new();
    let mut buf = [0u8; 2048];
    let _ = front.set_nonblocking(true);
    let _ = back.set_nonblocking(true);
    while !stop.load(Ordering::SeqCst) {
        let mut busy = false;
        let now = Instant::now();
        delayed.retain(|(due, packet)| {
            if *due <= now {
                let _ = back.send_to(packet, callee);
                false
            } else {
                true
            }
        });
        while let Ok((n, from)) = front.recv_from(&mut buf) {
            busy = true;
            caller = Some(from);
            let datagram = &buf[..n];
            let is_rtp = datagram.first().is_some_and(|b| (0x80..=0xBF).contains(b));
            if !is_rtp {
                let line = String::from_utf8_lossy(datagram).into_owned();
                if report.requests.len() < impair.drop_first_requests {
                    report.requests.push(format!("dropped: {line}"));
                } else {
                    report.requests.push(line);
                    let _ = back.send_to(datagram, callee);
                }
                continue;
            }
            let index = report.media;
            report.media += 1;
            if report.packets.len() < 64 {
                report.packets.push(datagram.to_vec());
            }
            if Impairment::hits(impair.drop_every, index) {
                report.dropped.push(index);
                continue;
            }
            if held.is_none() && Impairment::hits(impair.reorder_every, index) {
                held = Some(datagram.to_vec());
                report.reordered += 1;
                continue;
            }
            if impair.jitter_ms > 0 {
                delayed.push((Instant::now() + impair.delay(index), datagram.to_vec()));
                continue;
            }
            let _ = back.send_to(datagram, callee);
            if impair.forge {
                for forged in forgeries(datagram) {
                    let _ = back.send_to(&forged, callee);
                    report.forged += 1;
                }
            }
            if Impairment::hits(impair.duplicate_every, index) {
                let _ = back.send_to(datagram, callee);
                report.duplicated += 1;
            }
            if let Some(late) = held.take() {
                let _ = back.send_to(&late, callee);
            }
        }
        while let Ok((n, from)) = back.recv_from(&mut buf) {
            busy = true;
            if let (true, Some(caller)) = (from == callee, caller) {
                let datagram = &buf[..n];
                let is_rtp = datagram.first().is_some_and(|b| (0x80..=0xBF).contains(b));
                if !is_rtp {
                    let line = String::from_utf8_lossy(datagram).into_owned();
                    if report.answers.len() < impair.drop_first_answers {
                        report.answers.push(format!("dropped: {line}"));
                        continue;
                    }
                    report.answers.push(line);
                }
                let _ = front.send_to(datagram, caller);
            }
        }
        if !busy {
            std::thread::sleep(Duration::from_millis(1));
        }
    }
    report
}

/// Forged RTP packets to follow `packet` (a minimal RTP header, L16 or PCMU), as if from
/// its sender, each a frame of loud noise: the next frame under another SSRC, the next
/// frame under the sender's SSRC but the other payload type (each would pre-empt the
/// real next frame in a phone that took them), and a frame 30,000 sequence numbers away
/// under another SSRC (in sequence from one packet to the next: a restarted stream, for
/// a phone that took it). Nothing for a datagram that is not such a packet.
pub fn forgeries(packet: &[u8]) -> Vec<Vec<u8>> {
    if packet.len() < 12 || packet[0] != 0x80 {
        return Vec::new();
    }
    let payload_type = packet[1] & 0x7f;
    let other = match payload_type {
        96 => 0,
        0 => 96,
        _ => return Vec::new(),
    };
    let seq = u16::from_be_bytes([packet[2], packet[3]]);
    let ts = u32::from_be_bytes([packet[4], packet[5], packet[6], packet[7]]);
    let ssrc = u32::from_be_bytes([packet[8], packet[9], packet[10], packet[11]]);
    let forge = |payload_type: u8, seq: u16, ts: u32, ssrc: u32| {
        let mut forged = vec![0x80, payload_type];
        forged.extend_from_slice(&seq.to_be_bytes());
        forged.extend_from_slice(&ts.to_be_bytes());
        forged.extend_from_slice(&ssrc.to_be_bytes());
        let len = if payload_type == 0 { 512 } else { 1024 };
        // Loud, and like nothing a test sends: a square wave at full scale.
        forged.extend((0..len).map(|i| if i % 16 < 8 { 0x7f } else { 0x80 }));
        forged
    };
    let stranger = ssrc ^ 0x5a5a_5a5a;
    let next = (seq.wrapping_add(1), ts.wrapping_add(512));
    vec![
        forge(payload_type, next.0, next.1, stranger),
        forge(other, next.0, next.1, ssrc),
        forge(
            payload_type,
            seq.wrapping_add(30_000),
            ts.wrapping_add(0x4000_0000),
            stranger,
        ),
    ]
}

/// A loopback address of its own for a third party (a forger), not used by any phone.
pub fn third_party() -> UdpSocket {
    UdpSocket::bind((loopback(), 0)).expect("a loopback UDP socket")
}

/// A speech-like test signal of `samples` samples at 8 kHz: a voiced buzz whose pitch
/// glides (harmonics of 90–220 Hz shaped by two moving formants), chopped into syllables by
/// an envelope, plus a little deterministic noise so that no stretch of it repeats — an
/// alignment search finds exactly one offset. Never zero over a whole frame.
pub fn speechlike(samples: usize, seed: u32) -> Vec<i16> {
    let mut noise = seed.wrapping_mul(2_654_435_761).wrapping_add(1);
    let mut phase = 0.0f64;
    (0..samples)
        .map(|n| {
            let t = n as f64 / f64::from(SAMPLE_RATE);
            let pitch = 155.0 + 65.0 * (2.0 * std::f64::consts::PI * 0.7 * t).sin();
            phase += 2.0 * std::f64::consts::PI * pitch / f64::from(SAMPLE_RATE);
            let f1 = 500.0 + 300.0 * (2.0 * std::f64::consts::PI * 1.3 * t).sin();
            let f2 = 1500.0 + 600.0 * (2.0 * std::f64::consts::PI * 0.9 * t).cos();
            let mut voiced = 0.0;
            for h in 1..=12 {
                let freq = pitch * f64::from(h);
                let formants = (-((freq - f1) / 250.0).powi(2)).exp()
                    + 0.6 * (-((freq - f2) / 350.0).powi(2)).exp()
                    + 0.05;
                voiced += formants * (phase * f64::from(h)).sin();
            }
            let syllable = 0.35 + 0.65 * (std::f64::consts::PI * 4.0 * t).sin().abs();
            noise ^= noise << 13;
            noise ^= noise >> 17;
            noise ^= noise << 5;
            let hiss = f64::from((noise >> 16) as u16) / 65_536.0 - 0.5;
            let value = 6_000.0 * syllable * voiced + 600.0 * hiss;
            value.clamp(-32_000.0, 32_000.0) as i16
        })
        .collect()
}

/// Writes `samples` as an 8 kHz mono 16-bit WAV file.
pub fn write_wav(path: &Path, samples: &[i16]) {
    let spec = hound::WavSpec {
        channels: 1,
        sample_rate: SAMPLE_RATE,
        bits_per_sample: 16,
        sample_format: hound::SampleFormat::Int,
    };
    let mut writer = hound::WavWriter::create(path, spec).expect("the WAV file can be created");
    for &s in samples {
        writer.write_sample(s).expect("writing a sample");
    }
    writer.finalize().expect("finalizing the WAV file");
}

/// Reads an 8 kHz mono 16-bit WAV file.
pub fn read_wav(path: &Path) -> Vec<i16> {
    let reader = hound::WavReader::open(path)
        .unwrap_or_else(|e| panic!("{} is not a readable WAV file: {e}", path.display()));
    let spec = reader.spec();
    assert_eq!(
        (spec.channels, spec.sample_rate, spec.bits_per_sample),
        (1, SAMPLE_RATE, 16),
        "{} is not 8 kHz mono 16-bit",
        path.display()
    );
    reader
        .into_samples::<i16>()
        .collect::<Result<_, _>>()
        .expect("every sample reads")
}

/// Where a recording contains what was sent.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Alignment {
    /// Index in the recording of the first sample sent: the latency, in samples.
    pub offset: usize,
    /// Samples of `sent` present in the recording from `offset` on (the overlap).
    pub overlap: usize,
    /// How many of those differ from what was sent.
    pub mismatches: usize,
}

impl Alignment {
    /// The offset in milliseconds at 8 kHz.
    pub fn offset_ms(&self) -> f64 {
        self.offset as f64 * 1000.0 / f64::from(SAMPLE_RATE)
    }
}

/// Finds where the first [`FRAME_SAMPLES`] samples of `sent` appear exactly in `received`
/// and compares the whole overlap from there. `None` if the opening frame appears nowhere.
pub fn align(sent: &[i16], received: &[i16]) -> Option<Alignment> {
    let probe = &sent[..sent.len().min(FRAME_SAMPLES)];
    if probe.is_empty() || received.len() < probe.len() {
        return None;
    }
    let offset = received.windows(probe.len()).position(|w| w == probe)?;
    let overlap = sent.len().min(received.len() - offset);
    let mismatches = sent[..overlap]
        .iter()
        .zip(&received[offset..offset + overlap])
        .filter(|(a, b)| a != b)
        .count();
    Some(Alignment {
        offset,
        overlap,
        mismatches,
    })
}

/// Seconds of audio each phone sends in [`two_way_call`].
pub const SECONDS: f64 = 2.5;

/// A `file:IN,OUT` device spec in `dir`, with IN holding `samples`; returns the spec and
/// OUT's path.
pub fn file_device(dir: &Path, who: &str, samples: &[i16]) -> (String, std::path::PathBuf) {
    let input = dir.join(format!("{who}-says.wav"));
    let output = dir.join(format!("{who}-hears.wav"));
    write_wav(&input, samples);
    (
        format!("file:{},{}", input.display(), output.display()),
        output,
    )
}

/// Checks that `recording` holds all of `sent` exactly; returns the offset in samples.
pub fn assert_arrived_intact(what: &str, sent: &[i16], recording: &[i16]) -> usize {
    let found = align(sent, recording).unwrap_or_else(|| {
        let loud = recording.iter().filter(|s| s.unsigned_abs() > 100).count();
        panic!(
            "{what}: the start of what was sent is nowhere in the {} samples recorded \
             ({loud} of them not near silence)",
            recording.len()
        )
    });
    assert_eq!(
        (found.overlap, found.mismatches),
        (sent.len(), 0),
        "{what}: {} of {} samples arrived from offset {}, {} of them differ; frame by \
         frame:\n{}",
        found.overlap,
        sent.len(),
        found.offset,
        found.mismatches,
        damage_report(sent, recording, found.offset)
    );
    // What came before the stream is silence (or nothing), not noise.
    assert!(
        recording[..found.offset].iter().all(|&s| s == 0),
        "{what}: something other than silence before the stream"
    );
    println!(
        "{what}: {} samples intact, starting at sample {} ({:.1} ms)",
        sent.len(),
        found.offset,
        found.offset_ms()
    );
    found.offset
}

/// What [`two_way_call`] sent and recorded.
#[derive(Debug)]
pub struct TwoWay {
    /// Alice's microphone.
    pub alice_says: Vec<i16>,
    /// Bob's microphone.
    pub bob_says: Vec<i16>,
    /// Alice's recording of the call.
    pub alice_heard: Vec<i16>,
    /// Bob's recording of the call.
    pub bob_heard: Vec<i16>,
    /// Alice's then Bob's answer to `status` at the end of the call.
    pub statuses: Vec<Event>,
}

/// Alice calls bob (auto-answer), both with the file device, for [`SECONDS`] of speech-like
/// audio each way, then hangs up; checks the media counters (no loss, duplicate or late
/// packet on loopback) and that both phones quit with 0.
pub fn two_way_call() -> TwoWay {
    let server = Server::start(&[]);
    let alice_says = speechlike((SECONDS * f64::from(SAMPLE_RATE)) as usize, 11);
    let bob_says = speechlike((SECONDS * f64::from(SAMPLE_RATE)) as usize, 12);
    let dir = TempDir::new("audio");
    let (alice_audio, alice_hears) = file_device(dir.path(), "alice", &alice_says);
    let (bob_audio, bob_hears) = file_device(dir.path(), "bob", &bob_says);
    let mut alice =
        Phone::start_registered(Phone::builder("alice").server(&server).audio(alice_audio));
    let mut bob = Phone::start_registered(
        Phone::builder("bob")
            .server(&server)
            .audio(bob_audio)
            .auto_answer(),
    );
    alice.send("call bob");
    alice.expect_event("connected");
    bob.expect_event("connected");
    std::thread::sleep(Duration::from_secs_f64(SECONDS + 1.0));
    let frames = alice_says.len().div_ceil(FRAME_SAMPLES) as u64;
    let mut statuses = Vec::new();
    for phone in [&mut alice, &mut bob] {
        let status = phone.status();
        assert!(
            status.number("sent").is_some_and(|n| n >= frames)
                && status.number("received").is_some_and(|n| n >= frames),
            "{}: {frames} frames each way expected by now: {status}",
            phone.name
        );
        assert_eq!(status.number("lost"), Some(0), "{status}");
        assert_eq!(status.number("duplicate"), Some(0), "{status}");
        assert_eq!(status.number("late"), Some(0), "{status}");
        statuses.push(status);
    }
    alice.send("hangup");
    alice.expect_ended("hangup");
    bob.expect_ended("remote-hangup");
    // Recordings are finalized when the devices stop: at the latest when the phones quit.
    assert_eq!(alice.quit().code(), Some(0), "{}", alice.transcript());
    assert_eq!(bob.quit().code(), Some(0), "{}", bob.transcript());
    TwoWay {
        alice_says,
        bob_says,
        alice_heard: read_wav(&alice_hears),
        bob_heard: read_wav(&bob_hears),
        statuses,
    }
}

/// How the frames of a sent stream were played, found by walking the recording frame by
/// frame (see [`walk_frames`]).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct FrameWalk {
    /// Where the first frame found starts in the recording, in samples.
    pub offset: usize,
    /// Frames of the sent stream played exactly, in order.
    pub played: usize,
    /// Indices of sent frames never played (or played out of order).
    pub missing: Vec<usize>,
    /// Frames of something else (concealment, silence) played between sent frames: each
    /// one is a glitch and adds a frame of delay.
    pub inserted: usize,
    /// Indices of sent frames after which something was inserted.
    pub inserted_after: Vec<usize>,
}

/// Walks `received` frame by frame against `sent` (both cut in 512-sample frames): each
/// sent frame must be played exactly, after the previous one, with possibly some other
/// frames (concealment, silence) in between; a sent frame not found within 8 frames is
/// missing. The walk starts where the first sent frame is found. Only the sent frames
/// whose playout fits in the recording are judged.
pub fn walk_frames(sent: &[i16], received: &[i16]) -> Option<FrameWalk> {
    const LOOKAHEAD: usize = 8;
    let frames: Vec<&[i16]> = sent.chunks_exact(FRAME_SAMPLES).collect();
    let frame_at = |pos: usize| received.get(pos..pos + FRAME_SAMPLES);
    let (first, offset) = frames.iter().enumerate().find_map(|(k, f)| {
        received
            .windows(FRAME_SAMPLES)
            .position(|w| w == *f)
            .map(|p| (k, p))
    })?;
    let mut walk = FrameWalk {
        offset,
        missing: (0..first).collect(),
        ..FrameWalk::default()
    };
    let mut pos = offset;
    for (k, frame) in frames.iter().enumerate().skip(first) {
        if frame_at(pos).is_none() {
            break;
        }
        match (0..=LOOKAHEAD).find(|j| frame_at(pos + j * FRAME_SAMPLES) == Some(*frame)) {
            Some(j) => {
                if j > 0 {
                    walk.inserted += j;
                    walk.inserted_after.push(k.saturating_sub(1));
                }
                walk.played += 1;
                pos += (j + 1) * FRAME_SAMPLES;
            }
            None => walk.missing.push(k),
        }
    }
    Some(walk)
}

/// The frames of `sent` are played in order, with at most `glitches` frames missing
/// (dropped by the jitter buffer to shrink its delay) or inserted (concealment while it
/// stalls to grow); everything else sample-exact. Returns the walk.
pub fn assert_in_order(what: &str, sent: &[i16], heard: &[i16], glitches: usize) -> FrameWalk {
    let walk = walk_frames(sent, heard)
        .unwrap_or_else(|| panic!("{what}: no frame of what was sent arrived"));
    let frames = sent.len() / FRAME_SAMPLES;
    assert_eq!(
        walk.played + walk.missing.len(),
        frames,
        "{what}: the recording ends before the last frame: {walk:?}"
    );
    assert!(
        walk.missing.len() + walk.inserted <= glitches,
        "{what}: {} frames missing, {} inserted: {walk:?}\n{}",
        walk.missing.len(),
        walk.inserted,
        damage_report(sent, heard, walk.offset)
    );
    println!(
        "{what}: {} of {frames} frames in order from sample {} ({:.1} ms); missing {:?}, {} \
         inserted after frames {:?}",
        walk.played,
        walk.offset,
        walk.offset as f64 * 1000.0 / f64::from(SAMPLE_RATE),
        walk.missing,
        walk.inserted,
        walk.inserted_after
    );
    walk
}

/// Frame by frame, what became of `sent` in `received` from `offset` on: for each
/// 512-sample frame, `=` played as sent, `0` silence, `~` something else; where the
/// recording slips (a frame of the sent stream shows up at another place), the first such
/// slip is described. For failure messages.
pub fn damage_report(sent: &[i16], received: &[i16], offset: usize) -> String {
    let mut map = String::new();
    let mut slip = None;
    for (k, frame) in sent.chunks(FRAME_SAMPLES).enumerate() {
        let at = offset + k * FRAME_SAMPLES;
        let Some(played) = received.get(at..at + frame.len()) else {
            map.push('.');
            continue;
        };
        if played == frame {
            map.push('=');
            continue;
        }
        map.push(if played.iter().all(|&s| s == 0) {
            '0'
        } else {
            '~'
        });
        if slip.is_none() {
            let first_diff = played
                .iter()
                .zip(frame)
                .position(|(a, b)| a != b)
                .unwrap_or(0);
            let found = received
                .windows(frame.len())
                .position(|w| w == frame)
                .map(|p| p as i64 - at as i64);
            slip = Some(format!(
                "frame {k} first differs at sample {first_diff} of the frame; it shows up {}",
                match found {
                    Some(d) => format!("{d:+} samples away"),
                    None => "nowhere".into(),
                }
            ));
        }
    }
    format!("{map}\n{}", slip.unwrap_or_default())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn speechlike_is_deterministic_loud_and_never_repeats_a_frame() {
        let a = speechlike(8000, 1);
        assert_eq!(a, speechlike(8000, 1));
        assert_ne!(a, speechlike(8000, 2));
        for frame in a.chunks(FRAME_SAMPLES) {
            let peak = frame.iter().map(|s| s.unsigned_abs()).max().unwrap_or(0);
            assert!(peak > 1000, "a quiet frame: peak {peak}");
        }
        let first = &a[..FRAME_SAMPLES];
        assert_eq!(a.windows(FRAME_SAMPLES).filter(|w| *w == first).count(), 1);
    }

    #[test]
    fn align_finds_the_offset_and_counts_differences() {
        let sent = speechlike(3000, 7);
        let mut received = vec![0i16; 777];
        received.extend_from_slice(&sent);
        received.extend_from_slice(&[0; 100]);
        let found = align(&sent, &received).expect("aligned");
        assert_eq!(
            found,
            Alignment {
                offset: 777,
                overlap: 3000,
                mismatches: 0
            }
        );
        received[777 + 2000] ^= 1;
        assert_eq!(align(&sent, &received).map(|a| a.mismatches), Some(1));
        // Cut short: the overlap is what arrived.
        assert_eq!(
            align(&sent, &received[..1777]).map(|a| a.overlap),
            Some(1000)
        );
        assert_eq!(align(&sent, &[0; 5000]), None);
    }

    #[test]
    fn walk_frames_sees_insertions_and_losses() {
        let f = FRAME_SAMPLES;
        let sent = speechlike(6 * f, 9);
        let mut received = vec![0i16; 100];
        received.extend_from_slice(&sent[..2 * f]);
        received.extend_from_slice(&[0; FRAME_SAMPLES]); // a stall
        received.extend_from_slice(&sent[2 * f..3 * f]);
        received.extend_from_slice(&sent[4 * f..]); // frame 3 lost
        let walk = walk_frames(&sent, &received).expect("found");
        assert_eq!(
            walk,
            FrameWalk {
                offset: 100,
                played: 5,
                missing: vec![3],
                inserted: 1,
                inserted_after: vec![1],
            }
        );
        let exact = walk_frames(&sent, &sent).expect("found");
        assert_eq!(
            (exact.played, exact.inserted, exact.missing.len()),
            (6, 0, 0)
        );
    }

    #[test]
    fn wav_round_trip() {
        let dir = TempDir::new("wav");
        let path = dir.path().join("x.wav");
        let samples = speechlike(1234, 3);
        write_wav(&path, &samples);
        assert_eq!(read_wav(&path), samples);
    }

    #[test]
    fn events_parse_in_both_forms() {
        let now = Instant::now();
        let e = Event::parse(
            r#"{"event":"ended","peer":"bob","reason":"hangup"}"#,
            true,
            now,
        )
        .expect("an event");
        assert_eq!(
            (e.kind.as_str(), e.peer(), e.reason().as_deref()),
            ("ended", Some("bob"), Some("hangup"))
        );
        assert_eq!(Event::parse("not json", true, now), None);
        assert_eq!(Event::parse(r#"{"peer":"bob"}"#, true, now), None);
        let t = Event::parse("ended bob reason=hangup", false, now).expect("an event");
        assert_eq!(
            (t.kind.as_str(), t.peer(), t.reason().as_deref()),
            ("ended", Some("bob"), Some("hangup"))
        );
        let t = Event::parse("error reason=no call to hang up", false, now).expect("event");
        assert_eq!(t.peer(), None);
        assert_eq!(t.reason().as_deref(), Some("no call to hang up"));
        let t = Event::parse("status state=in-call peer=bob sent=12", false, now).expect("e");
        assert_eq!(
            (t.number("sent"), t.field("peer")),
            (Some(12), Some("bob".into()))
        );
        let j = Event::parse(
            r#"{"event":"incoming","peer":"a","verified":true}"#,
            true,
            now,
        )
        .expect("an event");
        assert_eq!(j.field("verified").as_deref(), Some("true"));
    }
}
