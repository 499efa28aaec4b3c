//! Starting the real `parlo-server` binary for end-to-end tests, and talking to it.
//!
//! Each [`Server`] gets its own temporary directory (database and nothing else), listens on
//! its own loopback address with a port chosen by the kernel (read back from its log), and
//! is stopped (SIGKILL if still running) and cleaned up when dropped, so tests run in
//! parallel and leave no process, port or file behind.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::{Arc, Condvar, Mutex, OnceLock};
use std::time::{Duration, Instant};

/// How long any wait in these tests may last before the test fails instead of hanging.
pub const PATIENCE: Duration = Duration::from_secs(10);

/// The `parlo-server` binary of this build profile, built first if needed (so that
/// `cargo test -p parlo-tests` never runs a stale binary).
pub fn server_binary() -> &'static Path {
    static BINARY: OnceLock<PathBuf> = OnceLock::new();
    BINARY.get_or_init(|| workspace_binary("parlo-server"))
}

/// The binary of the workspace package `package` (whose binary has the same name), in
/// the build profile of the running executable, built first so that it is never stale.
pub fn workspace_binary(package: &str) -> PathBuf {
    // Tests live in target/<profile>/deps/ and examples in target/<profile>/examples/;
    // the workspace's binaries in target/<profile>/.
    let exe = std::env::current_exe().expect("the test binary knows its path");
    let profile_dir = exe
        .parent()
        .and_then(Path::parent)
        .expect("test binaries live in target/<profile>/deps");
    let profile = profile_dir
        .file_name()
        .and_then(|p| p.to_str())
        .unwrap_or("debug");
    let cargo = std::env::var_os("CARGO").unwrap_or_else(|| "cargo".into());
    let mut build = Command::new(cargo);
    build.args(["build", "--quiet", "-p", package]);
    match profile {
        "debug" => {}
        "release" => {
            build.arg("--release");
        }
        other => {
            build.args(["--profile", other]);
        }
    }
    let status = build
        .status()
        .unwrap_or_else(|e| panic!("cargo cannot be run to build {package}: {e}"));
    assert!(status.success(), "building {package} failed: {status}");
    let binary = profile_dir.join(package);
    assert!(binary.exists(), "{} missing after build", binary.display());
    binary
}

/// Makes the child receive SIGKILL when the thread that started it ends, so that a test
/// process killed from outside leaves no child behind. Start children from the test's own
/// thread: the signal follows the thread, not the process.
pub fn die_with_parent(command: &mut Command) {
    // SAFETY: the closure runs between fork and exec and calls only prctl(2), which is
    // async-signal-safe and touches no memory of the parent.
    unsafe {
        command.pre_exec(|| {
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) == -1 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
}

/// A fresh loopback address in 127.0.0.0/8, never 127.0.0.1 (clients' default source
/// address), unique within the test process; ports are left to the kernel.
pub fn loopback() -> std::net::IpAddr {
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let n = NEXT.fetch_add(1, Ordering::Relaxed);
    // The second byte keeps test processes that run at the same time apart.
    let process = (std::process::id() % 250) as u8;
    std::net::Ipv4Addr::new(127, 1 + process, (n / 250 % 250) as u8, 2 + (n % 250) as u8).into()
}

/// A temporary directory removed on drop.
#[derive(Debug)]
pub struct TempDir(PathBuf);

impl TempDir {
    /// Creates a new empty directory under the system's temp dir.
    pub fn new(tag: &str) -> TempDir {
        static NEXT: AtomicU32 = AtomicU32::new(0);
        let dir = std::env::temp_dir().join(format!(
            "parlo-test-{tag}-{}-{}",
            std::process::id(),
            NEXT.fetch_add(1, Ordering::Relaxed)
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("the temp dir is writable");
        TempDir(dir)
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// The server's stderr, collected by a thread, with a way to wait for a line.
#[derive(Debug, Default)]
struct Log {
    /// The lines so far, and whether stderr reached end of file.
    text: Mutex<(String, bool)>,
    grew: Condvar,
}

/// A running `parlo-server`.
#[derive(Debug)]
pub struct Server {
    child: Child,
    /// Where it listens.
    pub addr: SocketAddr,
    /// Its database file.
    pub db: PathBuf,
    log: Arc<Log>,
    dir: TempDir,
}

impl Server {
    /// Starts a server with these extra flags on a fresh address and database, and waits
    /// until it listens.
    pub fn start(flags: &[&str]) -> Server {
        let dir = TempDir::new("server");
        let db = dir.path().join("directory.db");
        Server::start_in(dir, db, flags)
    }

    /// Like [`Server::start`], with the database at `db` (which may be anywhere).
    pub fn start_in(dir: TempDir, db: PathBuf, flags: &[&str]) -> Server {
        let listen = SocketAddr::new(loopback(), 0);
        let (child, log) = spawn(&listen.to_string(), &db, flags);
        let server = Server {
            child,
            addr: listen,
            db,
            log,
            dir,
        };
        let line = server.wait_for_log("listening on ");
        let mut server = server;
        let addr = line
            .split("listening on ")
            .nth(1)
            .and_then(|rest| rest.split(',').next())
            .and_then(|a| a.parse().ok())
            .unwrap_or_else(|| panic!("cannot read the address from {line:?}"));
        server.addr = addr;
        server
    }

    /// The process id.
    pub fn pid(&self) -> u32 {
        self.child.id()
    }

    /// A new client connection, with a read timeout so a test fails rather than hangs.
    pub fn connect(&self) -> TcpStream {
        let stream = TcpStream::connect(self.addr).expect("the server accepts connections");
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("timeouts can be set");
        stream
    }

    /// A new client connection from the source address `from` (any 127/8 address), with a
    /// read timeout like [`Server::connect`].
    pub fn connect_from(&self, from: std::net::IpAddr) -> TcpStream {
        let socket = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)
            .expect("a socket");
        socket
            .bind(&SocketAddr::new(from, 0).into())
            .expect("any 127/8 address can be bound");
        socket
            .connect(&self.addr.into())
            .expect("the server accepts connections");
        let stream = TcpStream::from(socket);
        stream
            .set_read_timeout(Some(PATIENCE))
            .expect("timeouts can be set");
        stream
    }

    /// Everything the server logged so far (it writes its log out before it waits for
    /// events, so a line may lag an answer slightly: use [`Server::wait_for_log`] to
    /// check that something was logged).
    pub fn log(&self) -> String {
        self.log
            .text
            .lock()
            .map(|t| t.0.clone())
            .unwrap_or_default()
    }

    /// Waits for a log line containing `needle` and returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        wait_for_line(&self.log, needle)
    }

    /// Sends a signal (`"TERM"`, `"INT"`, `"HUP"`, `"KILL"`) to the server.
    pub fn signal(&self, name: &str) {
        signal(self.child.id(), name);
    }

    /// Waits for the process to exit and its whole log to be collected, failing the test
    /// after [`PATIENCE`].
    pub fn wait(&mut self) -> ExitStatus {
        let status = wait_exit(&mut self.child, PATIENCE).expect("the server exits in time");
        let deadline = Instant::now() + PATIENCE;
        let mut text = self.log.text.lock().expect("log lock");
        while !text.1 && Instant::now() < deadline {
            text = self
                .log
                .grew
                .wait_timeout(text, Duration::from_millis(50))
                .expect("log lock")
                .0;
        }
        status
    }

    /// Runs `parlo-server users --db <this db>` once and returns its stdout.
    pub fn users(&self) -> String {
        let output = Command::new(server_binary())
            .args(["users", "--db"])
            .arg(&self.db)
            .output()
            .expect("parlo-server users runs");
        assert!(output.status.success(), "users failed: {output:?}");
        String::from_utf8(output.stdout).expect("users prints UTF-8")
    }

    /// The temporary directory holding the database.
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        if let Ok(None) = self.child.try_wait() {
            let _ = self.child.kill();
            let _ = self.child.wait();
        }
    }
}

/// Starts `parlo-server --listen <listen> --db <db> <flags>` with stderr collected.
fn spawn(listen: &str, db: &Path, flags: &[&str]) -> (Child, Arc<Log>) {
    let mut command = Command::new(server_binary());
    die_with_parent(&mut command);
    let mut child = command
        .args(["--listen", listen, "--db"])
        .arg(db)
        .args(flags)
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("parlo-server starts");
    let log = Arc::new(Log::default());
    let stderr = child.stderr.take().expect("stderr is piped");
    let sink = Arc::clone(&log);
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines() {
            let Ok(line) = line else { break };
            if let Ok(mut text) = sink.text.lock() {
                text.0.push_str(&line);
                text.0.push('\n');
            }
            sink.grew.notify_all();
        }
        if let Ok(mut text) = sink.text.lock() {
            text.1 = true;
        }
        sink.grew.notify_all();
    });
    (child, log)
}

/// `/proc/net/tcp`'s spelling of an IPv4 socket address (the address as a native integer).
pub fn proc_net_tcp_addr(addr: SocketAddr) -> String {
    let SocketAddr::V4(v4) = addr else {
        panic!("IPv4 only: {addr}");
    };
    format!(
        "{:08X}:{:04X}",
        u32::from_ne_bytes(v4.ip().octets()),
        v4.port()
    )
}

/// Runs the server binary with exactly these arguments and waits for it to exit;
/// returns its exit status and stderr.
pub fn run_to_exit(args: &[&str]) -> (ExitStatus, String) {
    let output = Command::new(server_binary())
        .args(args)
        .stdin(Stdio::null())
        .output()
        .expect("parlo-server runs");
    (
        output.status,
        String::from_utf8_lossy(&output.stderr).into_owned(),
    )
}

fn wait_for_line(log: &Log, needle: &str) -> String {
    let deadline = Instant::now() + PATIENCE;
    let mut text = log.text.lock().expect("log lock");
    loop {
        if let Some(line) = text.0.lines().find(|l| l.contains(needle)) {
            return line.to_owned();
        }
        if text.1 {
            panic!(
                "parlo-server exited without logging {needle:?}:\n{}",
                text.0
            );
        }
        let now = Instant::now();
        assert!(
            now < deadline,
            "no {needle:?} in the log within {PATIENCE:?}:\n{}",
            text.0
        );
        let wait = (deadline - now).min(Duration::from_millis(100));
        text = log.grew.wait_timeout(text, wait).expect("log lock").0;
    }
}

/// Sends signal `name` to process `pid` with kill(1).
pub fn signal(pid: u32, name: &str) {
    let status = Command::new("kill")
        .arg(format!("-{name}"))
        .arg(pid.to_string())
        .status()
        .expect("kill(1) runs");
    assert!(status.success(), "kill -{name} {pid} failed");
}

/// Waits up to `patience` for `child` to exit.
pub fn wait_exit(child: &mut Child, patience: Duration) -> Option<ExitStatus> {
    let deadline = Instant::now() + patience;
    loop {
        if let Ok(Some(status)) = child.try_wait() {
            return Some(status);
        }
        if Instant::now() >= deadline {
            return None;
        }
        std::thread::sleep(Duration::from_millis(10));
    }
}

/// Polls `check` every 20 ms until it returns true; fails the test after [`PATIENCE`].
pub fn eventually(what: &str, mut check: impl FnMut() -> bool) {
    let deadline = Instant::now() + PATIENCE;
    while !check() {
        assert!(Instant::now() < deadline, "timed out waiting for: {what}");
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// A client speaking newline-separated JSON: one line out, one line back.
#[derive(Debug)]
pub struct LineClient {
    reader: BufReader<TcpStream>,
    writer: TcpStream,
}

impl LineClient {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> LineClient {
        let writer = stream.try_clone().expect("streams can be cloned");
        LineClient {
            reader: BufReader::new(stream),
            writer,
        }
    }

    /// The client side's address.
    pub fn local_addr(&self) -> SocketAddr {
        self.writer
            .local_addr()
            .expect("a connected socket has an address")
    }

    /// Sends raw bytes as they are.
    pub fn send_raw(&mut self, bytes: &[u8]) {
        self.writer.write_all(bytes).expect("the server reads");
    }

    /// Reads one response line (without its `\n`); panics on end of file.
    pub fn line(&mut self) -> String {
        self.try_line().expect("the server answers before closing")
    }

    /// Reads one response line, or `None` at end of file.
    pub fn try_line(&mut self) -> Option<String> {
        let mut line = String::new();
        match self.reader.read_line(&mut line) {
            Ok(0) => None,
            Ok(_) => {
                assert!(
                    line.ends_with('\n'),
                    "every response ends with a newline: {line:?}"
                );
                line.pop();
                Some(line)
            }
            Err(e) => panic!("reading a response: {e}"),
        }
    }

    /// Sends `json` and a newline, returns the response line.
    pub fn ask(&mut self, json: &str) -> String {
        self.send_raw(format!("{json}\n").as_bytes());
        self.line()
    }

    /// Whether the server closed the connection (end of file or reset) within [`PATIENCE`].
    pub fn is_closed_by_server(&mut self) -> bool {
        let mut rest = Vec::new();
        match self.reader.read_to_end(&mut rest) {
            Ok(_) => true,
            Err(e) => matches!(
                e.kind(),
                std::io::ErrorKind::ConnectionReset | std::io::ErrorKind::ConnectionAborted
            ),
        }
    }
}

/// A client that behaves exactly like the original Python client: `json.dumps` with
/// `", "` and `": "` spacing, one `send` per request, one `recv(1024)` per response.
#[derive(Debug)]
pub struct OriginalClient {
    stream: TcpStream,
}

impl OriginalClient {
    /// Wraps a connected stream.
    pub fn new(stream: TcpStream) -> OriginalClient {
        OriginalClient { stream }
    }

    /// `json.dumps({"command": command, "name": name})`, sent, then one `recv(1024)`.
    pub fn request(&mut self, command: &str, name: &str) -> String {
        self.send(&format!(
            "{{\"command\": \"{command}\", \"name\": \"{name}\"}}"
        ))
    }

    /// `request` sent as it is, then one `recv(1024)` (empty when the server closed).
    pub fn send(&mut self, request: &str) -> String {
        let sent = self.stream.write(request.as_bytes()).expect("send");
        assert_eq!(sent, request.len(), "one send carries the whole request");
        let mut buf = [0u8; 1024];
        let n = self.stream.read(&mut buf).expect("recv(1024)");
        String::from_utf8(buf[..n].to_vec()).expect("responses are UTF-8")
    }
}

/// A directory server that behaves as the original project's does: a thread per client,
/// one `recv(1024)` per request parsed with `json.loads`, the request's `"name"` read
/// before its command, answers written by `json.dumps` (Python's spacing, no newline),
/// and a table of the names registered.
///
/// What breaks the original breaks this one the same way, and it is recorded in its
/// [`OriginalLog`]: two requests in one read (`json.loads` fails on the extra data) and a
/// request without `"name"` (`PING`, `LIST`) make the handler fail, which drops the
/// connection and leaves its registration behind, so that every later REG of that name is
/// refused. A connection that ends normally frees its name.
///
/// Each answer waits `delay`; a request that arrives meanwhile, before the answer to the
/// one before it was sent, is recorded as an overlap: a client that does not wait for
/// its answers is seen even when the kernel delivers its requests in separate reads.
#[derive(Debug)]
pub struct OriginalServer {
    /// Where it listens.
    pub addr: SocketAddr,
    shared: Arc<OriginalShared>,
    acceptor: Option<std::thread::JoinHandle<()>>,
}

/// What an [`OriginalServer`] saw.
#[derive(Debug, Default, Clone)]
pub struct OriginalLog {
    /// Every read of every connection, as text, in the order they came.
    pub reads: Vec<String>,
    /// Why a handler failed (the original's traceback, in short), one per failure.
    pub failures: Vec<String>,
    /// Requests that arrived while the one before them was still unanswered.
    pub overlaps: Vec<String>,
}

impl OriginalLog {
    /// The `"command"` of every read that parsed, in order.
    pub fn commands(&self) -> Vec<String> {
        self.reads
            .iter()
            .filter_map(|read| serde_json::from_str::<serde_json::Value>(read).ok())
            .filter_map(|request| request.get("command")?.as_str().map(str::to_owned))
            .collect()
    }
}

#[derive(Debug, Default)]
struct OriginalShared {
    names: Mutex<std::collections::BTreeMap<String, std::net::IpAddr>>,
    /// What a [`FakeDirectory`] answers to `GET` of these names, whatever is registered.
    lies: Mutex<std::collections::BTreeMap<String, String>>,
    log: Mutex<OriginalLog>,
    stop: std::sync::atomic::AtomicBool,
}

impl OriginalServer {
    /// Starts one on a fresh loopback address; each answer waits `delay`.
    pub fn start(delay: Duration) -> OriginalServer {
        let listener = std::net::TcpListener::bind((loopback(), 0)).expect("a loopback port");
        let addr = listener.local_addr().expect("bound");
        listener
            .set_nonblocking(true)
            .expect("a listener can be non-blocking");
        let shared = Arc::new(OriginalShared::default());
        let acceptor = {
            let shared = Arc::clone(&shared);
            std::thread::spawn(move || {
                let mut handlers = Vec::new();
                while !shared.stop.load(Ordering::Relaxed) {
                    match listener.accept() {
                        Ok((stream, _)) => {
                            let shared = Arc::clone(&shared);
                            handlers.push(std::thread::spawn(move || {
                                original_handler(&stream, &shared, delay);
                            }));
                        }
                        Err(_) => std::thread::sleep(Duration::from_millis(10)),
                    }
                }
                for handler in handlers {
                    let _ = handler.join();
                }
            })
        };
        OriginalServer {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// What it saw so far.
    pub fn log(&self) -> OriginalLog {
        self.shared
            .log
            .lock()
            .map(|log| log.clone())
            .unwrap_or_default()
    }

    /// Whether `name` is in its table (registered, or left behind by a failed handler).
    pub fn is_registered(&self, name: &str) -> bool {
        self.shared
            .names
            .lock()
            .is_ok_and(|names| names.contains_key(name))
    }
}

impl Drop for OriginalServer {
    fn drop(&mut self) {
        self.shared.stop.store(true, Ordering::Relaxed);
        if let Some(acceptor) = self.acceptor.take() {
            let _ = acceptor.join();
        }
    }
}

/// The answers a [`FakeDirectory`] was told to give (a poisoned lock still holds whole
/// answers).
fn lock_lies(
    shared: &OriginalShared,
) -> std::sync::MutexGuard<'_, std::collections::BTreeMap<String, String>> {
    shared
        .lies
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner)
}

/// A directory that lies: an [`OriginalServer`] whose `GET` of a name it was told about
/// ([`FakeDirectory::claim`]) answers as a Parlo server would, with an address, a port,
/// the Parlo dialect and a key, all of the test's choosing, whatever is registered. It is
/// the directory of an attacker who took the server over or answers in its place.
///
/// Phones register with it as with the original: it answers their `KEY` request with an
/// error, as the original answers every command it does not know, so they speak plain
/// JSON to it (and a phone's own REG is recorded, and answered, as the original would).
#[derive(Debug)]
pub struct FakeDirectory {
    /// Where it listens.
    pub addr: SocketAddr,
    server: OriginalServer,
}

impl FakeDirectory {
    /// Starts one on a fresh loopback address, answering at once.
    pub fn start() -> FakeDirectory {
        let server = OriginalServer::start(Duration::ZERO);
        FakeDirectory {
            addr: server.addr,
            server,
        }
    }

    /// From now on `GET name` answers that `name` is a Parlo phone at `at` whose key is
    /// `key`: `{"ip":"…","port":…,"dialect":"parlo","key":"…"}`.
    pub fn claim(&self, name: &str, at: SocketAddr, key: &parlo_fsm::PublicKey) {
        let answer = serde_json::json!({
            "ip": at.ip().to_string(),
            "port": at.port(),
            "dialect": "parlo",
            "key": key.to_string(),
        })
        .to_string();
        lock_lies(&self.server.shared).insert(name.to_owned(), answer);
    }

    /// What it saw so far (see [`OriginalLog`]).
    pub fn log(&self) -> OriginalLog {
        self.server.log()
    }

    /// Whether a phone registered `name` with it.
    pub fn is_registered(&self, name: &str) -> bool {
        self.server.is_registered(name)
    }
}

/// One client's thread of an [`OriginalServer`].
fn original_handler(stream: &TcpStream, shared: &OriginalShared, delay: Duration) {
    let note = |what: fn(&mut OriginalLog) -> &mut Vec<String>, text: String| {
        if let Ok(mut log) = shared.log.lock() {
            what(&mut log).push(text);
        }
    };
    let Ok(peer) = stream.peer_addr() else {
        return;
    };
    // Short read timeouts, so that the thread notices when the server stops.
    let _ = stream.set_read_timeout(Some(Duration::from_millis(50)));
    let mut registered = None;
    let mut buf = [0u8; 1024];
    while !shared.stop.load(Ordering::Relaxed) {
        let n = match (&*stream).read(&mut buf) {
            Ok(0) => break,
            Ok(n) => n,
            Err(e)
                if matches!(
                    e.kind(),
                    std::io::ErrorKind::WouldBlock | std::io::ErrorKind::TimedOut
                ) =>
            {
                continue;
            }
            Err(_) => break,
        };
        let text = String::from_utf8_lossy(&buf[..n]).into_owned();
        note(|log| &mut log.reads, text.clone());
        // data = json.loads(conn.recv(1024)); name = data["name"]
        let request: serde_json::Value = match serde_json::from_str(&text) {
            Ok(request) => request,
            Err(e) => return note(|log| &mut log.failures, format!("json.loads: {e}: {text}")),
        };
        let Some(name) = request.get("name").and_then(|n| n.as_str()) else {
            return note(|log| &mut log.failures, format!("KeyError: 'name': {text}"));
        };
        std::thread::sleep(delay);
        let mut next = [0u8; 1];
        let waiting =
            stream.set_nonblocking(true).is_ok() && stream.peek(&mut next).is_ok_and(|n| n > 0);
        let _ = stream.set_nonblocking(false);
        if waiting {
            note(|log| &mut log.overlaps, text.clone());
        }
        let command = request.get("command").and_then(|c| c.as_str());
        // A fake directory's answer for this name, if it was told one.
        let lie = lock_lies(shared).get(name).cloned();
        let answer = {
            let Ok(mut names) = shared.names.lock() else {
                return;
            };
            match command {
                Some("REG") if names.contains_key(name) => {
                    r#"{"ack": "Error Registering"}"#.to_owned()
                }
                Some("REG") => {
                    names.insert(name.to_owned(), peer.ip());
                    registered = Some(name.to_owned());
                    r#"{"ack": "Registered successfully"}"#.to_owned()
                }
                Some("GET") => match (lie, names.get(name)) {
                    (Some(lie), _) => lie,
                    (None, Some(ip)) => format!(r#"{{"ip": "{ip}"}}"#),
                    (None, None) => r#"{"ip": "None"}"#.to_owned(),
                },
                Some("DISCONNECT") => {
                    names.remove(name);
                    registered = None;
                    r#"{"ack": "Disconnected"}"#.to_owned()
                }
                _ => r#"{"ack": "Error"}"#.to_owned(),
            }
        };
        if (&*stream).write_all(answer.as_bytes()).is_err() {
            break;
        }
    }
    // The connection ended normally: its name is freed.
    if let (Some(name), Ok(mut names)) = (registered, shared.names.lock()) {
        names.remove(&name);
    }
}
